"""ONNX models tract cannot load, served from a model config file with the official client, and
compared with onnxruntime run in this process on the same inputs; then the same command with
no usable onnxruntime library still serves every model tract can."""
import os
import tempfile

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from conftest import ROOT, Server

ort = pytest.importorskip("onnxruntime")

FIXTURES = os.path.join(ROOT, "tests", "data", "onnx")
# name -> inputs; the first three are graphs tract cannot load.
CASES = {
    "if_branch": [{"cond": np.array(False), "x": np.array([1.5, -2.0, 3.0], np.float32)},
                  {"cond": np.array(True), "x": np.array([4.0], np.float32)}],
    "resize_scales": [{"x": np.random.default_rng(1).standard_normal((2, 3, 8, 6)).astype(np.float32)}],
    "symbolic_reshape": [{"x": np.random.default_rng(2).standard_normal((3, 5, 4)).astype(np.float32)}],
    "optional_bias": [{"x": np.arange(6, dtype=np.float32).reshape(2, 3)},
                      {"x": np.ones((1, 3), np.float32), "bias": np.array([-1, 0, 1], np.float32)}],
    "dtypes": [{f"in_{k}": v for k, v in {
        "f16": np.array([1.5, -0.25], np.float16), "f64": np.array([1e-300, 2.5]), "b": np.array([True, False]),
        "s": np.array([b"abc", "h\u00e9".encode()], object), "i8": np.array([-5, 5], np.int8),
        "u8": np.array([0, 255], np.uint8), "i16": np.array([-300, 300], np.int16),
        "u16": np.array([0, 65535], np.uint16), "i32": np.array([-(2**31), 7], np.int32),
        "u32": np.array([2**32 - 1, 7], np.uint32), "i64": np.array([-(2**63), 7], np.int64),
        "u64": np.array([2**64 - 1, 7], np.uint64)}.items()}],
}
TRACT_CANNOT = {"if_branch", "resize_scales", "symbolic_reshape"}


def config_file():
    entries = "".join(
        f"config {{ name: '{n}' base_path: '{os.path.join(FIXTURES, n)}' model_platform: 'onnx' }}\n" for n in CASES)
    f = tempfile.NamedTemporaryFile("w", suffix=".config", delete=False)
    f.write(f"model_config_list {{\n{entries}}}\n")
    f.close()
    return f.name


def status(address, name):
    with grpc.insecure_channel(address) as ch:
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = name
        return model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(req, timeout=10).model_version_status[0]


def wait_loaded(address, names):
    import time
    deadline = time.time() + 30
    while time.time() < deadline:
        states = [status(address, n).state for n in names]
        if all(s in (30, 50) for s in states):  # AVAILABLE or END
            return
        time.sleep(0.1)
    raise AssertionError("models did not finish loading")


def predict(address, name, inputs):
    with grpc.insecure_channel(address) as ch:
        req = predict_pb2.PredictRequest()
        req.model_spec.name = name
        for k, v in inputs.items():
            req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
        resp = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, timeout=30)
        return {k: tf.make_ndarray(v) for k, v in resp.outputs.items()}


def test_models_tract_cannot_load_match_onnxruntime():
    if os.environ.get("TENSORSERVE_ONNX_ENGINE") == "tract":
        pytest.skip("this case is about onnxruntime")
    server = Server(f"--model_config_file={config_file()}")
    try:
        wait_loaded(server.address, CASES)
        for name, cases in CASES.items():
            assert status(server.address, name).state == 30, (name, status(server.address, name))
            session = ort.InferenceSession(os.path.join(FIXTURES, name, "1", "model.onnx"))
            outputs = [o.name for o in session.get_outputs()]
            for inputs in cases:
                feeds = {k: (np.array([x.decode() for x in v], object) if v.dtype == object else v) for k, v in inputs.items()}
                want = dict(zip(outputs, session.run(None, feeds)))
                got = predict(server.address, name, inputs)
                assert sorted(got) == sorted(want), name
                for k, w in want.items():
                    g = got[k]
                    if w.dtype.kind in "OU":
                        assert [x.decode() if isinstance(x, bytes) else x for x in g.ravel()] == list(w.ravel()), k
                    else:
                        assert g.dtype == w.dtype and g.shape == w.shape, (name, k, g.dtype, w.dtype, g.shape, w.shape)
                        np.testing.assert_array_equal(g, w, err_msg=f"{name}/{k}")
    finally:
        assert server.stop() == 0


def test_without_onnxruntime_tract_serves_what_it_can():
    server = Server(f"--model_config_file={config_file()}", "--onnxruntime_library=/nonexistent/libonnxruntime.so",
                    "--max_num_load_retries=0", "--onnx_engine=auto")
    try:
        wait_loaded(server.address, CASES)
        for name in CASES:
            s = status(server.address, name)
            if name in TRACT_CANNOT:
                assert s.state == 50 and "tract" in s.status.error_message, (name, s)
            else:
                assert s.state == 30, (name, s)
        got = predict(server.address, "optional_bias", {"x": np.ones((1, 3), np.float32)})
        np.testing.assert_array_equal(got["y"], [[11, 21, 31]])
        assert "pip install onnxruntime" in server.stderr()
    finally:
        server.stop()


def test_an_onnxruntime_too_old_for_ort_is_refused_clearly():
    # ONNX Runtime 1.14 (from npm's onnxruntime-node; .ci/run fetches it) predates the C API we need.
    old = os.environ.get("TENSORSERVE_OLD_ORT_LIBRARY")
    if not old:
        pytest.skip("TENSORSERVE_OLD_ORT_LIBRARY not set")
    server = Server(f"--onnxruntime_library={old}", "--onnx_engine=auto")
    try:
        log = server.stderr()
        assert "expected version >= '1.17.x', but got '1.14.0'" in log, log
        assert "pip install onnxruntime" in log, log
        got = predict(server.address, "half_plus_two", {"x": np.array([[2.0]], np.float32)})
        np.testing.assert_array_equal(got["y"], [[3.0]])
    finally:
        assert server.stop() == 0
