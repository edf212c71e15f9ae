"""Model repository conformance with the official client: config file, labels, reload, polling."""
import os
import shutil
import subprocess
import tempfile
import time

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_status_pb2, model_management_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2

from conftest import BIN, ROOT, Server

HALF = os.path.join(ROOT, "examples", "models", "half_plus_two", "123")


def add_version(model_dir, version):
    """Copies half_plus_two to `model_dir/<version>` atomically (staged, then renamed), as deployments should."""
    os.makedirs(model_dir, exist_ok=True)
    staging = os.path.join(model_dir, f".staging-{version}")
    shutil.copytree(HALF, staging)
    os.rename(staging, os.path.join(model_dir, str(version)))


def make_model(base, name, versions):
    """Copies half_plus_two under `base/name/<v>` for each version."""
    for v in versions:
        add_version(os.path.join(base, name), v)
    return os.path.join(base, name)


def predict(address, name, **spec):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    if "version" in spec:
        req.model_spec.version.value = spec["version"]
    if "label" in spec:
        req.model_spec.version_label = spec["label"]
    req.inputs["x"].CopyFrom(tf.make_tensor_proto([[2.0]], dtype=tf.float32))
    with grpc.insecure_channel(address) as ch:
        resp = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, 10.0)
    return resp.model_spec.version.value, list(resp.outputs["y"].float_val)


def states(address, name):
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = name
    with grpc.insecure_channel(address) as ch:
        resp = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(req, 10.0)
    return {s.version: get_model_status_pb2.ModelVersionStatus.State.Name(s.state) for s in resp.model_version_status}


@pytest.fixture
def base():
    d = tempfile.mkdtemp()
    yield d
    shutil.rmtree(d)


def test_tf_serving_config_example(base):
    # TF Serving's documented example: two models, a specific policy, labels stable/canary.
    make_model(base, "model1", [42, 43])
    make_model(base, "model2", [1])
    path = os.path.join(base, "models.config")
    with open(path, "w") as f:
        f.write(f"""
model_config_list {{
  config {{
    name: 'model1'
    base_path: '{base}/model1'
    model_platform: 'tensorflow'
    model_version_policy {{ specific {{ versions: 42 versions: 43 }} }}
    version_labels {{ key: 'stable' value: 42 }}
    version_labels {{ key: 'canary' value: 43 }}
  }}
  config {{
    name: 'model2'
    base_path: '{base}/model2'
    model_platform: 'onnx'
  }}
}}
""")
    s = Server(f"--model_config_file={path}")
    try:
        assert predict(s.address, "model1", label="stable") == (42, [3.0])
        assert predict(s.address, "model1", label="canary") == (43, [3.0])
        assert predict(s.address, "model1") == (43, [3.0])
        assert predict(s.address, "model2") == (1, [3.0])
        assert states(s.address, "model1") == {42: "AVAILABLE", 43: "AVAILABLE"}
        with pytest.raises(grpc.RpcError) as info:
            predict(s.address, "model1", label="nightly")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        s.stop()


def test_bad_config_names_file_line_and_column(base):
    path = os.path.join(base, "bad.config")
    with open(path, "w") as f:
        f.write("model_config_list {\n  config { name: 'a' bogus_field: 1 }\n}\n")
    proc = subprocess.run([BIN, f"--model_config_file={path}", "--port=0", "--grpc_bind_address=127.0.0.1"],
                          capture_output=True, timeout=30)
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in err, err
    assert f"{path}:2:" in err, err


def test_reload_config_over_grpc(base):
    a = make_model(base, "a", [1])
    b = make_model(base, "b", [7])
    path = os.path.join(base, "models.config")
    with open(path, "w") as f:
        f.write(f"model_config_list {{ config {{ name: 'a' base_path: '{a}' model_platform: 'onnx' }} }}\n")
    s = Server(f"--model_config_file={path}")
    try:
        assert predict(s.address, "a") == (1, [3.0])
        config = model_server_config_pb2.ModelServerConfig()
        c = config.model_config_list.config.add()
        c.name, c.base_path, c.model_platform = "b", b, "onnx"
        req = model_management_pb2.ReloadConfigRequest(config=config)
        with grpc.insecure_channel(s.address) as ch:
            resp = model_service_pb2_grpc.ModelServiceStub(ch).HandleReloadConfigRequest(req, 30.0)
        assert resp.status.error_code == 0
        assert predict(s.address, "b") == (7, [3.0])
        assert states(s.address, "a") == {1: "END"}
        with pytest.raises(grpc.RpcError) as info:
            predict(s.address, "a")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        # A relative base path is refused and the running config stays.
        c.base_path = "relative/b"
        req = model_management_pb2.ReloadConfigRequest(config=config)
        with pytest.raises(grpc.RpcError) as info:
            with grpc.insecure_channel(s.address) as ch:
                model_service_pb2_grpc.ModelServiceStub(ch).HandleReloadConfigRequest(req, 30.0)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Expected model b to have an absolute path" in info.value.details()
        assert predict(s.address, "b") == (7, [3.0])
    finally:
        s.stop()


def test_config_file_poll_and_version_directories(base):
    a = make_model(base, "a", [1])
    path = os.path.join(base, "models.config")
    with open(path, "w") as f:
        f.write(f"model_config_list {{ config {{ name: 'a' base_path: '{a}' model_platform: 'onnx' }} }}\n")
    s = Server(f"--model_config_file={path}", "--model_config_file_poll_wait_seconds=1",
               "--file_system_poll_wait_seconds=1")
    try:
        # A new version directory is picked up, loaded, then the old one unloaded.
        add_version(a, 2)
        deadline = time.time() + 15
        while time.time() < deadline and states(s.address, "a").get(1) != "END":
            time.sleep(0.2)
        assert states(s.address, "a") == {1: "END", 2: "AVAILABLE"}
        assert predict(s.address, "a") == (2, [3.0])

        # A new model in the config file is served after the next poll.
        b = make_model(base, "b", [5])
        with open(path, "w") as f:
            f.write(f"model_config_list {{\n config {{ name: 'a' base_path: '{a}' model_platform: 'onnx' }}\n"
                    f" config {{ name: 'b' base_path: '{b}' }}\n}}\n")
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                assert predict(s.address, "b") == (5, [3.0])
                break
            except grpc.RpcError:
                time.sleep(0.2)
        else:
            pytest.fail("model b was not loaded after the config file changed")
    finally:
        s.stop()
