"""tensorserve serving what tools/tfserving_to_onnx.py converted answers as TensorFlow does.

Run in the conformance venv (official tensorflow-serving-api client) with
TENSORSERVE_CONVERTED_TREE=DIR, where DIR is what build_models.py wrote (models.config,
expected.json, saved_models/) and DIR/converted the converter's --output_base. run.sh does all of it.
Without the variable the tests skip, unless TENSORSERVE_REQUIRE_CONVERTER=1 (CI) makes that a failure.
"""
import importlib.util
import json
import os
import time

import grpc
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
# The conformance suite's Server (starts the built binary on 127.0.0.1); loaded by path, not as "conftest".
_spec = importlib.util.spec_from_file_location("conformance_conftest",
                                               os.path.join(HERE, "..", "conformance", "conftest.py"))
conformance = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conformance)


@pytest.fixture(scope="module")
def tree():
    path = os.environ.get("TENSORSERVE_CONVERTED_TREE")
    if not path:
        message = "TENSORSERVE_CONVERTED_TREE is not set (tests/converter/run.sh sets it)"
        if os.environ.get("TENSORSERVE_REQUIRE_CONVERTER") == "1":
            pytest.fail(message + " and TENSORSERVE_REQUIRE_CONVERTER=1", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def expected(tree):
    with open(os.path.join(tree, "expected.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def channel(tree, expected, tmp_path_factory):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    # TF Serving's config for the SavedModels, pointed at the converted tree: nothing else changes.
    config = model_server_config_pb2.ModelServerConfig()
    with open(os.path.join(tree, "models.config")) as f:
        text_format.Parse(f.read(), config)
    for model in config.model_config_list.config:
        model.base_path = os.path.join(tree, "converted", model.name)
    config_file = tmp_path_factory.mktemp("config") / "models.config"
    config_file.write_text(text_format.MessageToString(config))

    server = conformance.Server(f"--model_config_file={config_file}")
    ch = grpc.insecure_channel(server.address)
    try:
        wait_available(ch, expected["models"], server)
        yield ch
    finally:
        ch.close()
        server.stop()


def wait_available(ch, models, server, timeout=60.0):
    """Until every expected version is AVAILABLE (loaded and warmed up); fails with the load error."""
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    stub, deadline = model_service_pb2_grpc.ModelServiceStub(ch), time.time() + timeout
    AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    for name, model in models.items():
        while True:
            try:
                req = get_model_status_pb2.GetModelStatusRequest()
                req.model_spec.name = name
                states = {s.version: s for s in stub.GetModelStatus(req, timeout=5).model_version_status}
            except grpc.RpcError:
                states = {}  # not yet known to the manager
            if all(v in states and states[v].state == AVAILABLE for v in model["versions"]):
                break
            # Any load error fails now: a retry would only fail the same way, after its interval.
            if any(s.status.error_code for s in states.values()) or time.time() > deadline:
                pytest.fail(f"{name} versions {model['versions']} not AVAILABLE: {list(states.values())}\n"
                            f"server log:\n{server.stderr()}", pytrace=False)
            time.sleep(0.2)


def spec(msg, case):
    msg.model_spec.name = case["model"]
    msg.model_spec.version.value = case["version"]
    msg.model_spec.signature_name = case["signature"]


def test_metadata_lists_the_saved_model_signatures(channel, expected):
    from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for name, model in expected["models"].items():
        for version in model["versions"]:
            req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            req.model_spec.name, req.model_spec.version.value = name, version
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            stub.GetModelMetadata(req, timeout=30).metadata["signature_def"].Unpack(sig_map)
            got = {k: [s.method_name, sorted(s.outputs)] for k, s in sig_map.signature_def.items()}
            # Input aliases may differ by design: classify/regress over tf.Examples now take the features.
            assert got == model["signatures"], f"{name}/{version}"


def test_predict_equals_tensorflow(channel, expected):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for case in expected["predict"]:
        req = predict_pb2.PredictRequest()
        spec(req, case)
        for alias, value in case["inputs"].items():
            req.inputs[alias].CopyFrom(tf.make_tensor_proto(np.array(value, np.float32)))
        resp = stub.Predict(req, timeout=30)
        where = f"{case['model']}/{case['version']} {case['signature']}"
        assert resp.model_spec.version.value == case["version"], where
        assert sorted(resp.outputs) == sorted(case["outputs"]), where
        for alias, want in case["outputs"].items():
            got, want = tf.make_ndarray(resp.outputs[alias]), np.array(want, np.float32)
            assert got.shape == want.shape, f"{where} {alias}"
            # atol 0 (half_plus_two) demands bit equality; the CNN gets TF-vs-ONNX float slack.
            np.testing.assert_allclose(got, want, rtol=0, atol=case["atol"], err_msg=f"{where} {alias}")


def test_classify_and_regress_on_tf_examples_equal_tensorflow(channel, expected):
    from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc, regression_pb2

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for case in expected["examples"]:
        cls = classification_pb2.ClassificationRequest if case["kind"] == "classify" else regression_pb2.RegressionRequest
        req = cls()
        spec(req, case)
        for x in case["x"]:  # the same serialized tf.Examples TensorFlow parsed
            req.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
        where = f"{case['model']}/{case['version']} {case['signature']}"
        if case["kind"] == "classify":
            result = stub.Classify(req, timeout=30).result
            got = [[c.score for c in r.classes] for r in result.classifications]
            want = [[v] for v in case["expected"]]
        else:
            got = [r.value for r in stub.Regress(req, timeout=30).result.regressions]
            want = case["expected"]
        assert got == want, where  # exact: float32 scores against TensorFlow's float32


def test_warmup_file_copied(channel, tree):
    # Copied, and replayed: a failing warmup record would have failed the load in `channel`.
    assert os.path.isfile(os.path.join(tree, "converted", "half_plus_two", "1", "assets.extra",
                                       "tf_serving_warmup_requests"))
