"""Request logging, TF Serving's way: a model's logging_config samples requests into
PredictionLog records (TFRecord files that rotate by size), read back here with TensorFlow,
and a log file replays unchanged as a version's warmup file."""
import glob
import os
import shutil
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, inference_pb2, predict_pb2, prediction_log_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from conftest import ROOT, Server

HALF_PLUS_TWO = os.path.join(ROOT, "examples", "models", "half_plus_two")


def model_dir(tmp_path):
    base = tmp_path / "half_plus_two"
    shutil.copytree(HALF_PLUS_TWO, base)
    return base


def config(tmp_path, base, rate, prefix):
    path = tmp_path / "models.config"
    path.write_text(f"""model_config_list {{ config {{
  name: "half_plus_two" base_path: "{base}" model_platform: "onnx"
  logging_config {{
    log_collector_config {{ type: "file" filename_prefix: "{prefix}" }}
    sampling_config {{ sampling_rate: {rate} }}
  }}
}} }}""")
    return path


def stub(address):
    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))


def predict(s, x):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "half_plus_two"
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[x]], np.float32)))
    return s.Predict(req, 10)


def records(prefix):
    files = sorted(glob.glob(f"{prefix}.*.tfrecord"))
    out = []
    for f in files:
        for raw in tf.data.TFRecordDataset(f):
            out.append(prediction_log_pb2.PredictionLog.FromString(raw.numpy()))
    return files, out


def stop_flushed(server):
    time.sleep(0.5)  # the writer flushes when idle for 100 ms
    assert server.stop() == 0


def test_every_api_is_logged_and_replays_as_warmup(tmp_path):
    base, prefix = model_dir(tmp_path), tmp_path / "logs" / "hpt"
    s = Server(f"--model_config_file={config(tmp_path, base, 1.0, prefix)}")
    try:
        st = stub(s.address)
        for i in range(5):
            assert predict(st, float(i)).outputs["y"].float_val[0] == 0.5 * i + 2
        c = classification_pb2.ClassificationRequest()
        c.model_spec.name, c.model_spec.signature_name = "half_plus_two", "classify_x_to_y"
        c.input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)
        st.Classify(c, 10)
        r = regression_pb2.RegressionRequest()
        r.model_spec.name, r.model_spec.signature_name = "half_plus_two", "regress_x_to_y"
        r.input.example_list.examples.add().features.feature["x"].float_list.value.append(4.0)
        st.Regress(r, 10)
        m = inference_pb2.MultiInferenceRequest()
        m.tasks.add().model_spec.name = "half_plus_two"
        m.tasks[0].model_spec.signature_name = "regress_x_to_y"
        m.tasks[0].method_name = "tensorflow/serving/regress"
        m.input.example_list.examples.add().features.feature["x"].float_list.value.append(6.0)
        st.MultiInference(m, 10)
        with pytest.raises(grpc.RpcError):  # failed requests are not logged
            bad = predict_pb2.PredictRequest()
            bad.model_spec.name = "half_plus_two"
            bad.inputs["nope"].CopyFrom(tf.make_tensor_proto([1.0]))
            st.Predict(bad, 10)
    finally:
        stop_flushed(s)
    files, logs = records(prefix)
    assert len(files) == 1, files
    kinds = [l.WhichOneof("log_type") for l in logs]
    assert kinds == ["predict_log"] * 5 + ["classify_log", "regress_log", "multi_inference_log"], kinds
    for i, l in enumerate(logs[:5]):
        assert list(l.predict_log.request.inputs["x"].float_val) == [float(i)]
        assert list(l.predict_log.response.outputs["y"].float_val) == [0.5 * i + 2]
        assert l.log_metadata.model_spec.name == "half_plus_two"
        assert l.log_metadata.model_spec.version.value == 123
        assert l.log_metadata.sampling_config.sampling_rate == 1.0
    assert logs[6].regress_log.response.result.regressions[0].value == 4.0
    # The file, unchanged, is the warmup data of a new version.
    v124 = base / "124"
    shutil.copytree(base / "123", v124)
    (v124 / "assets.extra").mkdir()
    shutil.copyfile(files[0], v124 / "assets.extra" / "tf_serving_warmup_requests")
    w = Server(f"--model_base_path={base}", "--model_name=half_plus_two", env={"RUST_LOG": "info"})
    try:
        assert predict(stub(w.address), 2.0).model_spec.version.value == 124
        assert "warmup: 8 records" in w.stderr(), w.stderr()[-2000:]
    finally:
        w.stop()


def test_sampling_and_rotation(tmp_path):
    base, prefix = model_dir(tmp_path), tmp_path / "logs" / "sampled"
    s = Server(f"--model_config_file={config(tmp_path, base, 0.25, prefix)}", "--request_log_max_file_bytes=2000")
    n = 400
    try:
        st = stub(s.address)
        for i in range(n):
            predict(st, float(i))
    finally:
        stop_flushed(s)
    files, logs = records(prefix)
    # Binomial(400, 0.25): mean 100, sd 8.7; these bounds are 4.6 sd wide.
    assert 60 <= len(logs) <= 140, len(logs)
    assert len(files) > 1 and all(os.path.getsize(f) <= 2000 for f in files), [os.path.getsize(f) for f in files]
    sent = {float(i) for i in range(n)}
    assert all(l.predict_log.request.inputs["x"].float_val[0] in sent for l in logs)


def test_rest_predict_is_logged_like_grpc(tmp_path):
    import requests
    base, prefix = model_dir(tmp_path), tmp_path / "logs" / "rest"
    s = Server(f"--model_config_file={config(tmp_path, base, 1.0, prefix)}", rest=True)
    try:
        r = requests.post(f"{s.rest_url}/v1/models/half_plus_two:predict", json={"instances": [[1.0], [3.0]]})
        assert r.status_code == 200, r.text
    finally:
        stop_flushed(s)
    _, logs = records(prefix)
    assert len(logs) == 1 and logs[0].WhichOneof("log_type") == "predict_log"
    p = logs[0].predict_log
    assert tf.make_ndarray(p.request.inputs["x"]).tolist() == [[1.0], [3.0]]
    assert tf.make_ndarray(p.response.outputs["y"]).tolist() == [[2.5], [3.5]]
    assert p.response.model_spec.version.value == 123


def test_rest_classify_and_regress_are_logged_like_grpc(tmp_path):
    import requests
    base, prefix = model_dir(tmp_path), tmp_path / "logs" / "rest_tasks"
    s = Server(f"--model_config_file={config(tmp_path, base, 1.0, prefix)}", rest=True)
    try:
        url = f"{s.rest_url}/v1/models/half_plus_two"
        r = requests.post(f"{url}:classify", json={"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
        assert r.status_code == 200, r.text
        r = requests.post(f"{url}:regress", json={"signature_name": "regress_x_to_y",
                                                  "context": {"x": 1.0}, "examples": [{"x": 4.0}, {}]})
        assert r.status_code == 200 and r.json() == {"results": [4.0, 2.5]}, r.text
    finally:
        stop_flushed(s)
    _, logs = records(prefix)
    assert [l.WhichOneof("log_type") for l in logs] == ["classify_log", "regress_log"]
    c = logs[0].classify_log
    assert c.request.model_spec.signature_name == "classify_x_to_y"
    assert list(c.request.input.example_list.examples[0].features.feature["x"].float_list.value) == [2.0]
    assert c.response.result.classifications[0].classes[0].score == 3.0
    reg = logs[1].regress_log
    assert reg.request.input.WhichOneof("kind") == "example_list_with_context"
    assert list(reg.request.input.example_list_with_context.context.features.feature["x"].float_list.value) == [1.0]
    assert [v.value for v in reg.response.result.regressions] == [4.0, 2.5]
    assert reg.response.model_spec.version.value == 123 and logs[1].log_metadata.model_spec.version.value == 123
