"""The live status page (/monitoring/status): its JSON twin counts the requests sent in the last
minute per version; the HTML renders every bundled model in headless Chromium (a screenshot is
taken, outside the repository); and --monitoring_address moves metrics, the page and model
control off the inference ports."""
import os
import shutil
import subprocess
import tempfile

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
import tritonclient.grpc as grpcclient
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tritonclient.utils import InferenceServerException

from conftest import ROOT, Server, free_port

REQUIRE_CHROMIUM = os.environ.get("TENSORSERVE_REQUIRE_CHROMIUM") == "1"
BUNDLED = ["half_plus_two", "iris", "digits_mlp", "digits_image"]
FIXTURES = os.path.join(ROOT, "tests", "data", "onnx")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("status")
    (d / "monitoring.config").write_text("prometheus_config { enable: true }\n")
    s = Server(f"--monitoring_config_file={d / 'monitoring.config'}", rest=True)
    yield s
    assert s.stop() == 0


def predict(address, n):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "half_plus_two"
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0, 2.0], np.float32)))
    with grpc.insecure_channel(address) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        for _ in range(n):
            stub.Predict(req, 10)


def status_json(url):
    r = requests.get(f"{url}/monitoring/status?format=json", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
    return r.json()


def version(report, model):
    m = next(m for m in report["models"] if m["name"] == model)
    return m["versions"][0]


def test_json_counts_the_last_minute(server):
    before = version(status_json(server.rest_url), "half_plus_two")["last_minute"]["requests"]
    predict(server.address, 25)
    for _ in range(5):
        r = requests.post(f"{server.rest_url}/v1/models/half_plus_two:predict", json={"instances": [1.0]}, timeout=10)
        assert r.status_code == 200
    report = status_json(server.rest_url)
    v = version(report, "half_plus_two")
    assert v["last_minute"]["requests"] - before == 30, v
    assert v["state"] == "AVAILABLE" and v["engine"] in ("onnxruntime", "tract")
    assert v["last_minute"]["p50_ms"] > 0 and v["last_minute"]["p99_ms"] >= v["last_minute"]["p50_ms"]
    assert v["last_minute"]["mean_batch_size"] >= 1
    assert "serving_default" in {sig["name"] for sig in v["signatures"]}
    assert report["server"]["state"] == "SERVING"
    assert {m["name"] for m in report["models"]} >= set(BUNDLED)
    # Accept: application/json gets the same twin.
    r = requests.get(f"{server.rest_url}/monitoring/status", headers={"accept": "application/json"}, timeout=10)
    assert r.headers["content-type"] == "application/json" and "models" in r.json()


def test_html_is_self_contained(server):
    r = requests.get(f"{server.rest_url}/monitoring/status", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    for name in BUNDLED:
        assert f"data-model='{name}'" in page
    # Works offline: nothing is fetched from anywhere but the page's own path.
    assert "http://" not in page and "https://" not in page and "<link" not in page and " src=" not in page


def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        if REQUIRE_CHROMIUM:
            pytest.fail("chromium is not installed (TENSORSERVE_REQUIRE_CHROMIUM=1)")
        pytest.skip("chromium is not installed")
    return exe


def headless(exe, *args):
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        return subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1366,800", "--virtual-time-budget=4000", *args],
            capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_page_renders_in_headless_chromium(server):
    exe = chromium()
    predict(server.address, 10)
    url = f"{server.rest_url}/monitoring/status"
    dom = headless(exe, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for name in BUNDLED:
        assert f'data-model="{name}"' in dom.stdout, dom.stdout[:2000]
    assert "AVAILABLE" in dom.stdout and "tensorserve" in dom.stdout
    # The screenshot stays out of the repository: CI may keep it as an artifact.
    out = os.environ.get("TENSORSERVE_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="tensorserve-status-")
    png = os.path.join(out, "status.png")
    shot = headless(exe, f"--screenshot={png}", url)
    assert shot.returncode == 0 and os.path.getsize(png) > 10_000, shot.stderr[-2000:]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    print(f"status page screenshot: {png}")


def test_admin_surfaces_move_to_the_monitoring_address(tmp_path):
    (tmp_path / "monitoring.config").write_text("prometheus_config { enable: true }\n")
    admin_port = free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    s = Server(f"--monitoring_config_file={tmp_path / 'monitoring.config'}", f"--monitoring_address=127.0.0.1:{admin_port}",
               "--model_control_mode=explicit", f"--model_repository={FIXTURES}", rest=True)
    try:
        # The inference port keeps inference and drops every admin surface.
        r = requests.post(f"{s.rest_url}/v1/models/half_plus_two:predict", json={"instances": [1.0]}, timeout=10)
        assert r.json() == {"predictions": [2.5]}
        for path in ("/monitoring/status", "/monitoring/prometheus/metrics"):
            assert requests.get(f"{s.rest_url}{path}", timeout=10).status_code in (400, 404), path
        r = requests.post(f"{s.rest_url}/v2/repository/index", json={}, timeout=10)
        assert r.status_code == 403 and "--monitoring_address" in r.json()["error"], r.text
        with grpcclient.InferenceServerClient(url=s.address) as c, pytest.raises(InferenceServerException) as e:
            c.load_model("dtypes")
        assert "--monitoring_address" in str(e.value)
        with grpcclient.InferenceServerClient(url=s.address) as c, pytest.raises(InferenceServerException) as e:
            c.get_model_repository_index()
        assert "--monitoring_address" in str(e.value)
        # The admin listener serves them, and only them.
        assert ":tensorflow:serving:request_count" in requests.get(f"{admin}/monitoring/prometheus/metrics", timeout=10).text
        assert "half_plus_two" in requests.get(f"{admin}/monitoring/status", timeout=10).text
        r = requests.post(f"{admin}/v2/repository/models/dtypes/load", json={}, timeout=30)
        assert r.status_code == 200, r.text
        assert requests.get(f"{s.rest_url}/v2/models/dtypes/ready", timeout=10).status_code == 200
        r = requests.post(f"{admin}/v1/models/half_plus_two:predict", json={"instances": [1.0]}, timeout=10)
        assert r.status_code == 404
    finally:
        assert s.stop() == 0


def test_status_page_can_be_turned_off():
    s = Server("--enable_status_page=false", rest=True)
    try:
        assert requests.get(f"{s.rest_url}/monitoring/status", timeout=10).status_code in (400, 404)
    finally:
        s.stop()
