"""KServe V2 with the real clients from PyPI: tritonclient (HTTP and gRPC, defaults included) and
KServe's InferenceRESTClient (v1 and v2) and InferenceGRPCClient, against the built binary with
model control on. Every answer is checked against TF Serving's Predict on the same server."""
import json
import os
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tritonclient.utils import InferenceServerException

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import ROOT, Server  # noqa: E402

FIXTURES = os.path.join(ROOT, "tests", "data", "onnx")
DIGITS = np.array(json.load(open(os.path.join(ROOT, "examples", "models", "digits_mlp", "sample_inputs.json")))
                  ["instances"], np.float32)
DTYPES = {
    "f16": (np.array([1.5, -0.25], np.float16), "FP16"), "f64": (np.array([1e-300, 2.5]), "FP64"),
    "b": (np.array([True, False]), "BOOL"), "s": (np.array([b"abc", "h\u00e9".encode()], object), "BYTES"),
    "i8": (np.array([-5, 5], np.int8), "INT8"), "u8": (np.array([0, 255], np.uint8), "UINT8"),
    "i16": (np.array([-300, 300], np.int16), "INT16"), "u16": (np.array([0, 65535], np.uint16), "UINT16"),
    "i32": (np.array([-(2**31), 7], np.int32), "INT32"), "u32": (np.array([2**32 - 1, 7], np.uint32), "UINT32"),
    "i64": (np.array([-(2**63), 7], np.int64), "INT64"), "u64": (np.array([2**64 - 1, 7], np.uint64), "UINT64"),
}


@pytest.fixture(scope="module")
def v2_server():
    s = Server("--model_control_mode=explicit", f"--model_repository={FIXTURES}", rest=True)
    yield s
    assert s.stop() == 0


def http(server):
    return httpclient.InferenceServerClient(url=f"127.0.0.1:{server.rest_port}")


def grpc_client(server):
    return grpcclient.InferenceServerClient(url=server.address)


def tf_predict(server, model, x, output):
    """TF Serving's answer on the same server, for comparison."""
    import tensorflow as tf
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    with grpc.insecure_channel(server.address) as ch:
        resp = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, 10.0)
    return tf.make_ndarray(resp.outputs[output])


@pytest.mark.parametrize("client", [http, grpc_client])
def test_triton_health_metadata_and_index(v2_server, client):
    c = client(v2_server)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("half_plus_two") and not c.is_model_ready("half_plus_two", "7")
    meta = c.get_server_metadata()
    extensions = meta["extensions"] if isinstance(meta, dict) else list(meta.extensions)
    assert {"binary_tensor_data", "classification", "model_repository", "statistics"} <= set(extensions)
    m = c.get_model_metadata("digits_mlp")
    if not isinstance(m, dict):
        m = {"inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in m.inputs],
             "versions": list(m.versions)}
    assert m["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    assert m["versions"] == ["1"]
    index = c.get_model_repository_index()
    names = {e["name"] for e in index} if isinstance(index, list) else {e.name for e in index.models}
    assert {"half_plus_two", "iris", "digits_mlp"} <= names


@pytest.mark.parametrize("binary", [True, False])
def test_triton_http_infer_matches_tf_serving(v2_server, binary):
    c = http(v2_server)
    i = httpclient.InferInput("x", list(DIGITS.shape), "FP32")
    i.set_data_from_numpy(DIGITS, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("scores", "classes")]
    r = c.infer("digits_mlp", [i], outputs=outputs, request_id="7")
    assert r.get_response()["id"] == "7"
    np.testing.assert_allclose(r.as_numpy("scores"), tf_predict(v2_server, "digits_mlp", DIGITS, "scores"), rtol=1e-6)
    np.testing.assert_array_equal(r.as_numpy("classes"), tf_predict(v2_server, "digits_mlp", DIGITS, "classes"))
    # The client's defaults: binary inputs, no outputs named -> every output, binary.
    r = c.infer("digits_mlp", [i])
    assert r.as_numpy("classes").shape == (len(DIGITS),)


def test_triton_grpc_infer_raw_matches_tf_serving(v2_server):
    c = grpc_client(v2_server)
    x = np.array([[1.0], [2.0], [5.0]], np.float32)
    i = grpcclient.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    r = c.infer("half_plus_two", [i], outputs=[grpcclient.InferRequestedOutput("y")])
    np.testing.assert_array_equal(r.as_numpy("y"), tf_predict(v2_server, "half_plus_two", x, "y"))
    assert r.get_response().model_version == "123"
    # A version label and a version number.
    r = c.infer("half_plus_two", [i], model_version="123")
    np.testing.assert_array_equal(r.as_numpy("y"), 0.5 * x + 2)


@pytest.mark.parametrize("client", [http, grpc_client])
def test_triton_classification_extension(v2_server, client):
    c = client(v2_server)
    mod = httpclient if client is http else grpcclient
    feats = dict(sepal_length=5.1, sepal_width=3.5, petal_length=1.4, petal_width=0.2)
    inputs = []
    for k, v in feats.items():
        i = mod.InferInput(k, [1, 1], "FP32")
        i.set_data_from_numpy(np.array([[v]], np.float32))
        inputs.append(i)
    r = c.infer("iris", inputs, outputs=[mod.InferRequestedOutput("scores", class_count=3)])
    top = [t.decode() for t in r.as_numpy("scores").ravel()]
    assert len(top) == 3 and top[0].endswith(":0:setosa"), top
    scores = [float(t.split(":")[0]) for t in top]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5


@pytest.mark.parametrize("client", [http, grpc_client])
def test_triton_every_datatype_after_loading_the_model(v2_server, client):
    c = client(v2_server)
    mod = httpclient if client is http else grpcclient
    c.load_model("dtypes")
    assert c.is_model_ready("dtypes")
    inputs, outputs = [], []
    for k, (v, datatype) in DTYPES.items():
        i = mod.InferInput(f"in_{k}", list(v.shape), datatype)
        i.set_data_from_numpy(v)
        inputs.append(i)
        outputs.append(mod.InferRequestedOutput(f"out_{k}"))
    r = c.infer("dtypes", inputs, outputs=outputs)
    for k, (v, _) in DTYPES.items():
        got = r.as_numpy(f"out_{k}")
        assert got.dtype == v.dtype or (v.dtype == object and got.dtype == object), k
        np.testing.assert_array_equal(got, v, err_msg=k)


def test_triton_statistics(v2_server):
    c = http(v2_server)
    before = c.get_inference_statistics("half_plus_two")["model_stats"][0]
    x = np.array([[1.0], [2.0]], np.float32)
    for _ in range(3):
        i = httpclient.InferInput("x", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        c.infer("half_plus_two", [i])
    after = c.get_inference_statistics("half_plus_two")["model_stats"][0]
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 3
    assert after["inference_count"] - before["inference_count"] == 6
    g = grpc_client(v2_server).get_inference_statistics("half_plus_two", as_json=True)
    assert int(g["model_stats"][0]["inference_count"]) >= after["inference_count"]


@pytest.mark.parametrize("client", [http, grpc_client])
def test_triton_errors(v2_server, client):
    c = client(v2_server)
    mod = httpclient if client is http else grpcclient
    i = mod.InferInput("x", [1], "FP32")
    i.set_data_from_numpy(np.array([1], np.float32))
    with pytest.raises(InferenceServerException) as e:
        c.infer("nope", [i])
    assert "404" in str(e.value) or "NOT_FOUND" in str(e.value)
    bad = mod.InferInput("x", [1], "INT32")
    bad.set_data_from_numpy(np.array([1], np.int32))
    with pytest.raises(InferenceServerException) as e:
        c.infer("half_plus_two", [bad])
    assert "INT32" in str(e.value)
    with pytest.raises(InferenceServerException):
        c.load_model("../etc")
    assert c.is_server_live()


def test_model_control_under_load_drops_no_request(v2_server):
    """Load and unload `dtypes` ten times while half_plus_two serves a steady stream, and while
    requests to `dtypes` itself are in flight: every half_plus_two request succeeds, and a
    `dtypes` request either succeeds or is refused cleanly (NOT_FOUND/UNAVAILABLE) once unloaded."""
    stop = threading.Event()
    failures, answered, refused = [], [0], [0]
    x = np.array([[1.0]], np.float32)

    def steady():
        c = grpc_client(v2_server)
        while not stop.is_set():
            i = grpcclient.InferInput("x", [1, 1], "FP32")
            i.set_data_from_numpy(x)
            try:
                assert c.infer("half_plus_two", [i]).as_numpy("y")[0, 0] == 2.5
                answered[0] += 1
            except Exception as e:  # noqa: BLE001
                failures.append(repr(e))

    def churned():
        c = grpc_client(v2_server)
        while not stop.is_set():
            inputs = []
            for k, (v, datatype) in DTYPES.items():
                i = grpcclient.InferInput(f"in_{k}", [1], datatype)
                i.set_data_from_numpy(v[:1])
                inputs.append(i)
            try:
                assert c.infer("dtypes", inputs).as_numpy("out_i32")[0] == DTYPES["i32"][0][0]
            except InferenceServerException as e:
                if e.status() in ("StatusCode.NOT_FOUND", "StatusCode.UNAVAILABLE"):
                    refused[0] += 1
                else:
                    failures.append(repr(e))

    threads = [threading.Thread(target=steady) for _ in range(3)] + [threading.Thread(target=churned)]
    for t in threads:
        t.start()
    control = http(v2_server)
    try:
        for _ in range(10):
            control.load_model("dtypes")
            time.sleep(0.05)
            control.unload_model("dtypes")
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    assert answered[0] > 50, answered
    control.load_model("dtypes")
    assert control.is_model_ready("dtypes")


def test_kserve_clients_v1_v2_and_grpc(v2_server):
    x = np.array([[1.0], [2.0]], np.float32)
    expected = tf_predict(v2_server, "half_plus_two", x, "y").tolist()
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kserve_clients.py")
    run = subprocess.run([sys.executable, script, v2_server.rest_url, v2_server.address, "half_plus_two",
                          json.dumps(x.tolist())], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    for check in ("v1_live", "v1_ready", "v2_live", "v2_server_ready", "v2_ready", "grpc_live", "grpc_server_ready",
                  "grpc_ready"):
        assert got[check] is True, check
    assert got["v1"] == expected
    assert got["v2_binary_False"] == {"id": "r1", "y": expected}
    assert got["v2_binary_True"] == {"id": "r1", "y": expected}
    assert got["grpc"] == {"id": "g1", "y": expected}
