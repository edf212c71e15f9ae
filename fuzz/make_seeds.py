#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets to fuzz/corpus/<target>/ (and fuzz/dicts/).

Requests are serialized with the official clients, as in tests/conformance: the
`tensorflow-serving-api` stubs, `tf.make_tensor_proto`, `tf.train.Example` and TensorFlow's
own `TFRecordWriter` for warmup files. Config and signature files, REST bodies and the ONNX
models come from tests/*.rs, tests/conformance/*.py, tests/data and examples/models.

    /work/venv/bin/python fuzz/make_seeds.py        # then: fuzz/run.sh --cmin (optional)

Each target's first bytes select things (see the header of each fuzz_targets/*.rs); the
selectors below must match them.
"""
import base64
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.framework import tensor_pb2, types_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2, get_model_metadata_pb2, get_model_status_pb2, inference_pb2, input_pb2,
    model_management_pb2, predict_pb2, prediction_log_pb2, regression_pb2)
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)
CORPUS = os.path.join(FUZZ, "corpus")


def write(target, data, name=None):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    name = name or hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- tensors

NUMPY_TYPES = [np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
               np.uint32, np.uint64, np.float16]


def tensors():
    """TensorProtos of every dtype, typed fields and tensor_content, edge shapes."""
    out = []
    for t in NUMPY_TYPES:
        out.append(tf.make_tensor_proto(np.arange(6, dtype=t).reshape(2, 3)))  # tensor_content
        out.append(tf.make_tensor_proto(np.array([1], dtype=t)))
        out.append(tf.make_tensor_proto(np.array(7, dtype=t)))  # scalar, typed field
    out.append(tf.make_tensor_proto(np.array([True, False, True])))
    out.append(tf.make_tensor_proto([b"ab", b"", "\u00e9".encode()], dtype=tf.string))
    out.append(tf.make_tensor_proto([[1.5, -2.0]], dtype=tf.bfloat16))
    out.append(tf.make_tensor_proto(np.zeros((0, 3), np.float32)))
    # Typed fields by hand, with TensorFlow's count rules (fewer values repeat the last).
    def typed(dtype, dims, **fields):
        p = tensor_pb2.TensorProto(dtype=dtype, **fields)
        for d in dims:
            p.tensor_shape.dim.add().size = d
        return p
    out += [
        typed(types_pb2.DT_FLOAT, [2, 2], float_val=[1.0, 2.0]),
        typed(types_pb2.DT_FLOAT, [2, 2]),
        typed(types_pb2.DT_DOUBLE, [3], double_val=[float("nan"), float("inf"), -0.0]),
        typed(types_pb2.DT_INT8, [4], int_val=[300, -129, 5]),
        typed(types_pb2.DT_UINT16, [2], int_val=[70000]),
        typed(types_pb2.DT_INT64, [], int64_val=[7]),
        typed(types_pb2.DT_UINT32, [2], uint32_val=[1, 2 ** 32 - 1]),
        typed(types_pb2.DT_UINT64, [1], uint64_val=[2 ** 64 - 1]),
        typed(types_pb2.DT_HALF, [2], half_val=[0x3C00, 0x7E00]),
        typed(types_pb2.DT_BFLOAT16, [2], half_val=[0x3F80]),
        typed(types_pb2.DT_BOOL, [3], bool_val=[True]),
        typed(types_pb2.DT_STRING, [2, 1], string_val=[b"x"]),
        typed(types_pb2.DT_FLOAT, [0, 3], float_val=[1.0]),
        typed(types_pb2.DT_FLOAT, [-1, 1]),  # tests/grpc.rs: a negative dim
        typed(types_pb2.DT_FLOAT, [1, 2], tensor_content=bytes(7)),  # wrong content size
        typed(types_pb2.DT_COMPLEX64, [1, 1]),  # unsupported dtype
        typed(types_pb2.DT_BOOL, [2], tensor_content=b"\x01\x02"),  # a bool byte other than 0/1
        # DT_STRING tensor_content: varint lengths, then the bytes.
        typed(types_pb2.DT_STRING, [2], tensor_content=b"\x02\x01hiz"),
        typed(types_pb2.DT_FLOAT, [1 << 20, 1 << 20]),  # over the byte limit
    ]
    return out


def tensor_proto_seeds():
    for t in tensors():
        write("tensor_proto", t.SerializeToString())


# ---------------------------------------------------------------- gRPC requests

PREDICT, CLASSIFY, REGRESS, MULTI, METADATA, STATUS, RELOAD = 0, 1, 2, 3, 4, 5, 7
STRICT = 0x80


def grpc(method, message, strict=False):
    wire = message.SerializeToString()
    write("predict", bytes([method | (STRICT if strict else 0)]) + wire)
    # decode_cost: the same message, whole and in small chunks (fuzz_targets/decode_cost.rs METHODS).
    index = {PREDICT: 0, CLASSIFY: 1, REGRESS: 2, MULTI: 3, METADATA: 4, STATUS: 5, RELOAD: 6}[method]
    write("decode_cost", bytes([index, len(wire) % 7]) + wire)
    # grpc_stack: the same message as an HTTP/2 body (one gRPC frame), whole or in chunks.
    write("grpc_stack", bytes([index, (len(wire) % 5) * 3]) + b"\0" + struct.pack(">I", len(wire)) + wire)


def spec(m, name, signature="", version=None, label=None):
    m.model_spec.name = name
    if signature:
        m.model_spec.signature_name = signature
    if version is not None:
        m.model_spec.version.value = version
    if label is not None:
        m.model_spec.version_label = label


def predict(name, inputs, signature="", version=None, label=None, output_filter=()):
    r = predict_pb2.PredictRequest()
    spec(r, name, signature, version, label)
    for k, v in inputs.items():
        r.inputs[k].CopyFrom(v if isinstance(v, tensor_pb2.TensorProto) else tf.make_tensor_proto(v))
    r.output_filter.extend(output_filter)
    return r


def example(**features):
    e = tf.train.Example()
    for k, v in features.items():
        f = e.features.feature[k]
        vs = v if isinstance(v, list) else [v]
        if vs and isinstance(vs[0], (bytes, str)):
            f.bytes_list.value.extend([x.encode() if isinstance(x, str) else x for x in vs])
        elif vs and isinstance(vs[0], float):
            f.float_list.value.extend(vs)
        else:
            f.int64_list.value.extend(vs)
    return e


def input_of(examples, context=None):
    i = input_pb2.Input()
    if context is None:
        i.example_list.examples.extend(examples)
    else:
        i.example_list_with_context.examples.extend(examples)
        i.example_list_with_context.context.CopyFrom(context)
    return i


def classify(name, signature, inp, **kw):
    r = classification_pb2.ClassificationRequest()
    spec(r, name, signature, **kw)
    r.input.CopyFrom(inp)
    return r


def regress(name, signature, inp, **kw):
    r = regression_pb2.RegressionRequest()
    spec(r, name, signature, **kw)
    r.input.CopyFrom(inp)
    return r


def multi(name, tasks, inp):
    r = inference_pb2.MultiInferenceRequest()
    for sig, method in tasks:
        t = r.tasks.add()
        t.model_spec.name = name
        t.model_spec.signature_name = sig
        t.method_name = method
    r.input.CopyFrom(inp)
    return r


CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

F32 = np.float32


def predict_requests():
    """(request, strict) pairs: every signature of every fixture model, and error cases."""
    sd = {"x": np.array([[1, 2], [3, 4]], F32), "n": np.array([1, 2, 3], np.int64),
          "s": tf.make_tensor_proto([b"hi", b"\xff"], dtype=tf.string)}
    all_types = {name: np.array([1, 0, 2], t) for name, t in [
        ("float", np.float32), ("double", np.float64), ("int8", np.int8), ("int16", np.int16),
        ("int32", np.int32), ("int64", np.int64), ("uint8", np.uint8), ("uint16", np.uint16),
        ("uint32", np.uint32), ("uint64", np.uint64), ("bool", np.bool_)]}
    all_types["string"] = tf.make_tensor_proto([b"a", b"b", b""], dtype=tf.string)
    out = [
        predict("half_plus_two", {"x": np.array([[1.0], [2.0]], F32)}),  # test_fuzz_conformance
        predict("half_plus_two", {"x": np.array([[2.0]], F32)}, "regress_x_to_y2"),
        predict("half_plus_two", {"x2": np.array([[2.0]], F32)}, "classify_x2_to_y3", version=123),
        predict("half_plus_two", {"x": tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"hi"])}),
        predict("iris", {f: np.array([[0.1]], F32) for f in
                         ("sepal_length", "sepal_width", "petal_length", "petal_width")}),
        predict("fuzz", sd),
        predict("fuzz", sd, version=1, output_filter=["y", "total"]),
        predict("fuzz", sd, label="canary", output_filter=["y", "y"]),
        predict("fuzz", {"x": np.array([[1, 1, 5], [0, 3, 1]], F32)}, "single"),
        predict("fuzz", {"x": np.array([[1, 2]], np.float64)}, "single_double"),
        predict("fuzz", all_types, "all_types"),
        predict("fuzz", {"int8": np.array([1], np.int8)}, "all_types"),
        predict("fuzz", {"half": np.array([1.5], np.float16),
                         "bfloat16": tf.make_tensor_proto([2.5], dtype=tf.bfloat16)}, "half_types"),
        predict("fuzz", {"x": np.array([1, 2], F32)}, "with_defaults"),
        predict("fuzz", {"x": np.array([1, 2], F32), "scale": np.array(2, F32)}, "with_defaults"),
        predict("fuzz", {"x": np.array([1], F32)}, "wrong_method"),
        predict("fuzz", {"x": np.array([[0.5]], F32)}, "classify_bad"),
        predict("fuzz", {"nope": np.array([1], F32)}),
        predict("fuzz", {"x": np.array([[1]], F32)}, "nope"),
        predict("fuzz", sd, version=3),
        predict("loading", {"x": np.array([1], F32)}),
        predict("", {}),
    ]
    return [(r, False) for r in out] + [(out[5], True), (out[15], True), (out[10], True)]


def task_requests():
    """(method, request, strict) for Classify, Regress and MultiInference."""
    x = lambda v: example(x=[v])  # noqa: E731
    fuzz_row = example(f=[1.0, 2.0], d=[0.5], i=[3], n32=[4], b=[1], s=["label"])
    out = [
        (CLASSIFY, classify("half_plus_two", "classify_x_to_y", input_of([x(2.0), x(4.0)])), False),
        (CLASSIFY, classify("iris", "", input_of(
            [example(sepal_length=0.1, sepal_width=0.1, petal_length=0.1)], example(petal_width=0.2))), False),
        (CLASSIFY, classify("fuzz", "classify", input_of([fuzz_row, example(f=[0.0, 1.0], d=[1.0])])), False),
        (CLASSIFY, classify("fuzz", "classify", input_of([example(f=[1.0, 2.0])], example(d=[2.0], s=["ctx"]))), True),
        (CLASSIFY, classify("fuzz", "classify_scores", input_of([x(1.0)])), False),
        (CLASSIFY, classify("fuzz", "classify_classes", input_of([example(s=["a"])])), False),
        (CLASSIFY, classify("fuzz", "unknown_rank", input_of([x(1.0)])), False),
        (CLASSIFY, classify("fuzz", "regress", input_of([example(f=[1.0])])), True),
        (REGRESS, regress("half_plus_two", "regress_x2_to_y3", input_of([example(x2=[1.0])])), False),
        (REGRESS, regress("fuzz", "regress", input_of([example(f=[1.0], x2=[2.0]), example(f=[3.0])])), False),
        (REGRESS, regress("fuzz", "regress_column", input_of([example(x=[1], flag=[0])])), False),
        (REGRESS, regress("fuzz", "regress_two_outputs", input_of([x(1.0)])), False),
        (REGRESS, regress("fuzz", "scalar", input_of([x(1.0)])), False),
        (REGRESS, regress("fuzz", "half_feature", input_of([x(1.0)])), False),
        (REGRESS, regress("fuzz", "regress", input_of([])), False),
        (MULTI, multi("half_plus_two", [("regress_x_to_y", REGRESS_METHOD), ("classify_x_to_y", CLASSIFY_METHOD)],
                      input_of([x(2.0)])), False),
        (MULTI, multi("fuzz", [("regress", REGRESS_METHOD), ("classify", CLASSIFY_METHOD)],
                      input_of([fuzz_row])), True),
        (MULTI, multi("fuzz", [("serving_default", "tensorflow/serving/predict")], input_of([x(1.0)])), False),
    ]
    for v in (2.0, -2.0, 0.0, 0.5, -0.5):
        out.append((CLASSIFY, classify("fuzz", "classify_bad", input_of([x(v)])), False))
        out.append((REGRESS, regress("fuzz", "regress_bad", input_of([example(x=[v], z=[1.0, 2.0])])), False))
    return out


def other_requests():
    out = []
    for name, fields, version in [("iris", ["signature_def"], None), ("fuzz", ["signature_def", "engine"], 2),
                                  ("fuzz", [], None), ("fuzz", ["bogus"], None)]:
        g = get_model_metadata_pb2.GetModelMetadataRequest()
        spec(g, name, version=version)
        g.metadata_field.extend(fields)
        out.append((METADATA, g))
    for name, version in [("fuzz", None), ("fuzz", 3), ("loading", None), ("retired", None), ("nope", 1)]:
        s = get_model_status_pb2.GetModelStatusRequest()
        spec(s, name, version=version)
        out.append((STATUS, s))
    r = model_management_pb2.ReloadConfigRequest()
    c = r.config.model_config_list.config.add()
    c.name, c.base_path = "m", "/models/m"
    out.append((RELOAD, r))
    return out


def predict_seeds():
    for r, strict in predict_requests():
        grpc(PREDICT, r, strict)
    for method, r, strict in task_requests():
        grpc(method, r, strict)
    for method, r in other_requests():
        grpc(method, r)


# ---------------------------------------------------------------- REST

# Indices into fuzz_targets/rest.rs TEMPLATES, MODEL_NAMES, VERSIONS and LABELS.
T = {name: i for i, name in enumerate([
    "predict", "classify", "regress", "explain", "v_predict", "l_predict", "v_classify", "l_regress",
    "v_explain", "status", "metadata", "v_status", "v_metadata", "l_metadata", "models", "root", "options", "raw"])}
M = {name: i for i, name in enumerate(["fuzz", "half_plus_two", "iris", "loading", "failed", "retired", "nope", ""])}
V = {"1": 0, "2": 1, "3": 2, "123": 3}
L = {"stable": 0, "canary": 1, "gone": 2, "st%61ble": 3}


# Indices into V2_TEMPLATES, from byte 128.
T2 = {name: 128 + i for i, name in enumerate([
    "v2_infer", "v2_v_infer", "v2_bin", "v2_l_bin", "v2_metadata", "v2_v_ready", "v2_stats", "v2_health", "v2_index",
    "v2_load"])}


def rest(template, model="fuzz", body="", version="1", label="stable", strict=False):
    fill = M[model] | V[version] << 3 | L[label] << 5 | (0x80 if strict else 0)
    if template in T2:
        if not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        write("rest", bytes([T2[template], fill]) + body)
        return
    if not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    write("rest", bytes([T[template], fill]) + body)


def grpc_stack_seeds():
    r = predict_requests()[5][0].SerializeToString()
    frame = b"\0" + struct.pack(">I", len(r)) + r
    write("grpc_stack", bytes([0, 0]) + frame + frame)  # two messages for a unary method
    write("grpc_stack", bytes([0, 1]) + frame[:-4])  # cut short
    write("grpc_stack", bytes([0, 0]) + frame + b"\0\0")  # a partial header after it
    write("grpc_stack", bytes([0, 2]) + b"\1" + frame[1:])  # compressed flag, no compression
    write("grpc_stack", bytes([8, 0]) + frame)  # grpc-encoding: gzip
    write("grpc_stack", bytes([0, 0]) + b"\0\x7f\xff\xff\xff")  # 2 GiB declared
    write("grpc_stack", bytes([7, 0]) + frame)  # a method we do not serve
    write("grpc_stack", bytes([0, 0]))  # no message at all
    write("grpc_stack", bytes([5, 0]) + b"\0\0\0\0\0")  # an empty message


def v2_binary(header, raw):
    header = json.dumps(header).encode()
    return struct.pack("<H", len(header)) + header + raw


def rest_v2_seeds():
    # tests/v2.rs: JSON and binary infer over the fixture's all_types signature and half_plus_two.
    x = {"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [[1], [2]]}
    rest("v2_infer", "half_plus_two", {"id": "7", "inputs": [x], "outputs": [{"name": "y"}]})
    rest("v2_v_infer", "half_plus_two", {"inputs": [x]}, version="123")
    rest("v2_infer", "iris", {"inputs": [{"name": n, "shape": [1, 1], "datatype": "FP32", "data": [1]} for n in
                                         ["sepal_length", "sepal_width", "petal_length", "petal_width"]],
                              "outputs": [{"name": "scores", "parameters": {"classification": 2}}]})
    v2_types = {"float": "FP32", "double": "FP64", "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
                "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64", "bool": "BOOL",
                "string": "BYTES"}
    inputs = [{"name": k, "shape": [1], "datatype": t, "data": ["a"] if t == "BYTES" else [True] if t == "BOOL" else [1]}
              for k, t in v2_types.items()]
    rest("v2_infer", body={"parameters": {"signature_name": "all_types", "binary_data_output": True}, "inputs": inputs})
    raw = struct.pack("<ff", 1.5, 2.5)
    rest("v2_bin", "half_plus_two", v2_binary(
        {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}],
         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}, raw))
    rest("v2_l_bin", "half_plus_two", v2_binary(
        {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}, raw))
    strings = b"".join(struct.pack("<I", len(s)) + s for s in [b"ab", b""])
    rest("v2_bin", "fuzz", v2_binary(
        {"parameters": {"signature_name": "all_types"},
         "inputs": [{"name": "string", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(strings)}}]},
        strings))
    rest("v2_bin", "fuzz", v2_binary(
        {"parameters": {"signature_name": "half_types", "binary_data_output": True},
         "inputs": [{"name": "half", "shape": [1], "datatype": "FP16", "parameters": {"binary_data_size": 2}}]}, b"\x00\x3c"))
    for path in ["v2_metadata", "v2_v_ready", "v2_stats", "v2_health"]:
        rest(path, "half_plus_two")
    rest("v2_index", body={"ready": True})
    rest("v2_load", "half_plus_two", {})


def rest_seeds():
    rest_v2_seeds()
    # tests/rest.rs and the README, on half_plus_two.
    for body in ['{"instances": [2, 3, 4]}', '{"inputs": [2, 3, 4]}', '{"instances": [[1.0, 2.0], [3.0, 4.0]]}',
                 '{"signature_name": "serving_default", "instances": [[2.0]]}', '{"instances": [NaN, Infinity, -Infinity]}',
                 '{"instances": [1], "inputs": [1]}', '{"foo": 1}', '{"signature_name": "foo", "instances": [1]}',
                 '{"instances": ["x"]}', '{"instances": [[1, 2], [3]]}', '', '{"instances": [1]']:
        rest("predict", "half_plus_two", body)
    rest("v_predict", "half_plus_two", '{"instances": [1]}', version="123")
    rest("v_predict", "half_plus_two", '{"instances": [1]}', version="3")
    rest("predict", "loading", '{"instances": [1]}')
    rest("explain", "loading", '{"instances": [1]}')
    rest("predict", "nope", '{"instances": [1]}')
    # The fuzz model: row and columnar formats, named inputs, b64, every dtype.
    rest("predict", body={"instances": [{"x": [1.0, 2.0], "n": 3, "s": "hi"}, {"x": [3, 4], "n": -4, "s": {"b64": "aGk="}}]})
    rest("predict", body={"inputs": {"x": [[1, 2]], "n": [1], "s": ["z"]}}, strict=True)
    rest("l_predict", body={"inputs": {"x": [[1.5]], "n": [1, 2], "s": [{"b64": "/w=="}]}}, label="canary")
    rest("predict", body={"inputs": {"x": [[]], "n": [], "s": []}})
    types = {"float": [1.5], "double": [2.25], "int8": [-8], "int16": [300], "int32": [-70000], "int64": [2 ** 40],
             "uint8": [255], "uint16": [65535], "uint32": [2 ** 32 - 1], "uint64": [2 ** 64 - 1], "bool": [True],
             "string": [{"b64": "AAE="}]}
    rest("predict", body={"signature_name": "all_types", "inputs": types})
    rest("predict", body={"signature_name": "all_types", "instances": [{k: v[0] for k, v in types.items()}]})
    rest("predict", body={"signature_name": "all_types", "instances": [{"int8": 1000}]})
    rest("predict", body={"signature_name": "half_types", "instances": [{"half": 1.0}]})
    rest("predict", body={"signature_name": "with_defaults", "instances": [1.0, 2.0]})
    rest("predict", body={"signature_name": "with_defaults", "inputs": {"x": [1.0], "scale": 2.0, "tag": "t"}})
    rest("predict", body={"signature_name": "wrong_method", "instances": [1.0]}, strict=True)
    rest("predict", body={"signature_name": "single", "instances": [{"b64": "aGk="}]})
    rest("predict", body={"signature_name": "single", "inputs": {"b64": "aGk="}})
    # :explain, tests/rest.rs and examples/models/digits_mlp/sample_inputs.json
    rest("explain", body={"signature_name": "single", "instances": [[1, 1, 5], [0, 3, 1]]})
    rest("explain", body={"signature_name": "single", "instances": [[[1, 2], [3, 4]]]}, strict=True)
    rest("v_explain", body={"signature_name": "single_double", "instances": [[1, 2]]}, version="2")
    rest("explain", body='{"instances": [1]}')
    with open(os.path.join(ROOT, "examples/models/digits_mlp/sample_inputs.json"), "rb") as f:
        digits = json.load(f)
    digits["signature_name"] = "single"
    rest("explain", body=digits)
    # :classify / :regress, tests/classify.rs
    for model, body in [
        ("half_plus_two", '{"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}'),
        ("iris", '{"examples": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}'),
        ("fuzz", '{"signature_name": "classify", "examples": [{"f": [1.0, 2], "d": 0.5, "s": {"b64": "Y2Rl"}, "b": true}]}'),
        ("fuzz", '{"signature_name": "classify", "context": {"d": 1e3}, "examples": [{"f": [1, 2.5]}, {"f": [0.0, 1.0], "i": 4}]}'),
        ("fuzz", '{"signature_name": "classify_bad", "examples": [{"x": 2.0}]}'),
        ("half_plus_two", '{"examples": [{"x": [[1.0]]}]}'),
        ("half_plus_two", '{"examples": [{"x": [1.0, "a"]}]}'),
        ("half_plus_two", '{"examples": [3]}'),
        ("half_plus_two", '{"examples": {"x": 1.0}}'),
    ]:
        rest("classify", model, body)
    rest("v_classify", "fuzz", '{"signature_name": "classify_scores", "examples": [{"x": 1.0}]}', version="2", strict=True)
    for model, body in [
        ("half_plus_two", '{"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}'),
        ("half_plus_two", '{"signature_name": "regress_x_to_y", "context": {"x": 2.0}, "examples": [{}, {"x": [4.0]}]}'),
        ("half_plus_two", '{"signature_name": "regress_x_to_y", "examples": [{"x": 2}]}'),
        ("half_plus_two", '{"signature_name": "regress_x_to_y", "examples": []}'),
        ("fuzz", '{"signature_name": "regress", "examples": [{"f": 1.5, "x2": 2.5}]}'),
        ("fuzz", '{"signature_name": "regress_column", "examples": [{"x": 7, "flag": false}]}'),
        ("fuzz", '{"signature_name": "regress_bad", "examples": [{"x": -1.0, "z": [1.0, 2.0]}]}'),
        ("nope", '{"examples": [{"x": 1.0}]}'),
        ("fuzz", '{"context": 1, "examples": [{"x": 1.0}]}'),
        ("fuzz", '{"examples": [{"x": {"b64": "!!"}}]}'),
    ]:
        rest("regress", model, body)
    rest("l_regress", "fuzz", '{"signature_name": "regress", "examples": [{"f": 1.0}]}', label="gone")
    # GETs and the rest.
    for model in ("fuzz", "half_plus_two", "iris", "loading", "failed", "retired", "nope"):
        rest("status", model)
        rest("metadata", model)
    rest("v_status", "fuzz", version="3")
    rest("v_metadata", "fuzz", version="2")
    rest("l_metadata", "fuzz", label="st%61ble")
    rest("models")
    rest("root")
    rest("options", strict=True)
    for line, body in [("POST /v1/models/fuzz/versions/2:PREDICT", '{"instances": [[1.0]]}'),
                       ("GET /v1/models/fuzz/labels/stable", ""), ("POST /v1/models/my%20model:predict", "{}"),
                       ("DELETE /v1/models/fuzz", ""), ("GET /v1/models/", ""), ("POST /v1/models", "{}"),
                       ("GET /v1/models/fuzz/versions/abc", ""), ("GET /v1/models/fuzz/foo/bar", ""),
                       ("POST /v2/models/fuzz/infer", "{}")]:
        rest("raw", body=line + "\n" + body)


# ---------------------------------------------------------------- tf.Example

FUZZ_SIGS = sorted(["serving_default", "single", "single_double", "all_types", "half_types", "with_defaults",
                    "wrong_method", "classify", "classify_scores", "classify_classes", "classify_bad", "regress",
                    "regress_column", "regress_bad", "regress_two_outputs", "unknown_rank", "scalar", "half_feature"])
HPT_SIGS = sorted(["serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x_to_y2", "regress_x2_to_y3",
                   "classify_x2_to_y3"])
ALL_SIGS = ["fuzz/" + s for s in FUZZ_SIGS] + ["half_plus_two/" + s for s in HPT_SIGS] + ["iris/serving_default"]


def tf_example(signature, data, as_json=False, regress=False):
    selector = ALL_SIGS.index(signature) << 2 | (2 if regress else 0) | (1 if as_json else 0)
    if not isinstance(data, (bytes, str)):
        data = data.SerializeToString()
    write("tf_example", bytes([selector]) + (data.encode() if isinstance(data, str) else data))


def tf_example_seeds():
    fuzz_row = example(f=[1.0, 2.0], d=[0.5], i=[3], n32=[4], b=[1], s=["label"])
    tf_example("fuzz/classify", input_of([fuzz_row, example(f=[0.0, 1.0], d=[1.0])]))
    tf_example("fuzz/classify", input_of([example(f=[1.0, 2.0])], example(d=[2.0], s=["ctx"], n32=[2 ** 40])))
    tf_example("fuzz/classify", input_of([example(f=[1.0], d=[1.0])]))
    tf_example("fuzz/regress", input_of([example(f=[1.0], x2=[2.0]), example(f=[3.0])]))
    tf_example("fuzz/regress_column", input_of([example(x=[1], flag=[5])]))
    tf_example("fuzz/regress_bad", input_of([example(x=[1.0])]))
    tf_example("fuzz/classify_classes", input_of([example(s=[b"\xff"])]))
    tf_example("fuzz/all_types", input_of([example(float=[1.0], int64=[1], string=["s"], bool=[1])]))
    tf_example("fuzz/unknown_rank", input_of([example(x=[1.0])]))
    tf_example("fuzz/scalar", input_of([example(x=[1.0])]))
    tf_example("fuzz/half_feature", input_of([example(x=[1.0])]))
    tf_example("half_plus_two/classify_x_to_y", input_of([example(x=[2.0]), example(x=[4.0])]))
    tf_example("iris/serving_default", input_of(
        [example(sepal_length=0.1, sepal_width=0.1, petal_length=0.1)], example(petal_width=0.2)))
    tf_example("fuzz/regress", input_of([]))
    for sig, body, regress_ in [
        ("fuzz/classify", '{"signature_name": "classify", "examples": [{"f": [1.0, 2], "d": 0.5, "s": {"b64": "Y2Rl"}, "b": true}]}', False),
        ("fuzz/classify", '{"context": {"d": 1e3, "i": 9223372036854775807}, "examples": [{"f": [1, 2.5]}, {"f": [0.0, 1.0], "i": 4}]}', False),
        ("half_plus_two/regress_x_to_y", '{"signature_name": "regress_x_to_y", "context": {"x": 2.0}, "examples": [{}, {"x": [4.0]}]}', True),
        ("half_plus_two/regress_x_to_y", '{"examples": [{"x": 2}]}', True),
        ("fuzz/regress_column", '{"examples": [{"x": 18446744073709551615, "flag": false}]}', True),
        ("fuzz/all_types", '{"examples": [{"age": 30, "tags": ["ab", {"b64": "Y2Rl"}], "flag": true, "weights": [1.0, 1, 0.5]}]}', False),
        ("iris/serving_default", '{"examples": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}', False),
        ("fuzz/classify", '{"examples": [{"x": [1.0, "a"]}]}', False),
        ("fuzz/classify", '{"examples": [{"x": {"b64": "!!"}}]}', False),
        ("fuzz/classify", '{"signature_name": 1, "examples": []}', False),
    ]:
        tf_example(sig, body, as_json=True, regress=regress_)


# ---------------------------------------------------------------- text formats

CONFIGS = [
    # src/repository/config.rs: TF Serving's own example.
    """model_config_list {
  config {
    name: 'my_first_model'
    base_path: '/tmp/my_first_model/'
    model_platform: 'tensorflow'
    model_version_policy { specific { versions: 42 versions: 43 } }
    version_labels { key: 'stable' value: 42 }
    version_labels { key: 'canary' value: 43 }
  }
  config {
    name: "my_second_model"
    base_path: "/tmp/my_second_model"
    model_platform: "tensorflow"
    model_version_policy: { latest: { num_versions: 2 } }
  }
}""",
    "model_config_list {\n  config {\n    nmae: 'x'\n  }\n}\n",
    "model_config_list { config { name: 'a' base_path: 'rel/path' } }",
    "model_config_list { config { name: 'a' base_path: '/x' } config { name: 'a' base_path: '/y' } }",
    "model_config_list { config { name: 'a' base_path: '/x' model_platform: 'pytorch' } }",
    "model_config_list { config { name: '../etc' base_path: '/x' } }",
    "model_config_list { config { name: 'a' base_path: '/x' version_labels { key: 'a/b' value: 1 } } }",
    "model_config_list { config { name: 'a' base_path: '/x' model_version_policy { specific { } } } }",
    "model_config_list { config { name: 'a' base_path: '/x' model_version_policy { all { } } } }",
    "model_config_list { config { name: 'a' base_path: '/x' model_version_policy { latest { } } model_platform: 'onnx' } }",
    "model_config_list {\n  config {\n    name: 'a'\n    base_path: '/x'\n    policy: 1\n  }\n}",
    "model_config_list { config { name: 'c' base_path: ",
    "custom_model_config { type_url: 'x' value: '\\001' }",
    "# only a comment\n",
    "",
]


def text_seeds():
    for c in CONFIGS:
        write("model_config", c)
    # The official text format of a config, as TF Serving's tools write it.
    cfg = model_server_config_pb2.ModelServerConfig()
    c = cfg.model_config_list.config.add()
    c.name, c.base_path, c.model_platform = "m", "/models/m", "onnx"
    c.model_version_policy.specific.versions.extend([1, 2])
    c.version_labels["stable"] = 1
    from google.protobuf import text_format
    write("model_config", text_format.MessageToString(cfg))

    with open(os.path.join(ROOT, "examples/models/half_plus_two/123/signatures.pbtxt")) as f:
        write("signature_defs", f.read())
    with open(os.path.join(ROOT, "examples/models/iris/1/signatures.pbtxt")) as f:
        write("signature_defs", f.read())
    for s in [
        # tests/repository.rs
        "signature_def { key: 'a' value { inputs { key: 'x' value { name: 'x' } } outputs { key: 'y' value { name: 'nope' } } } }",
        "signature_def { key: 'a' value { inputs { key: 'x' value { name: 'x' dtype: DT_INT64 } } outputs { key: 'y' value { name: 'y' } } } }",
        "signature_def { key: 'a' value { inputs { key: 'x' value { name: 'x' } }\n bogus: 1 } }",
        "",
        # defaults, optional inputs, unknown rank, every dtype, coo encodings
        """signature_def { key: "serving_default" value {
  method_name: "tensorflow/serving/predict"
  inputs { key: "a" value { name: "in_int64" } }
  inputs { key: "b" value { name: "in_string" dtype: DT_STRING tensor_shape { unknown_rank: true } } }
  inputs { key: "c" value { name: "x2" tensor_shape { dim { size: -1 } dim { size: 2 } } } }
  outputs { key: "o" value { name: "out_half" dtype: DT_HALF } }
  defaults { key: "a" value { dtype: DT_INT64 tensor_shape { dim { size: 1 } } int64_val: 7 } }
  defaults { key: "c" value { dtype: DT_FLOAT tensor_shape { dim { size: 2 } } tensor_content: "\\000\\000\\200?\\000\\000\\000@" } }
} }""",
        """signature_def { key: "d" value {
  inputs { key: "x" value { name: "x" } }
  outputs { key: "y" value { name: "y" } }
  defaults { key: "x" value { dtype: DT_DOUBLE double_val: 1 } }
} }""",
        """signature_def { key: "e" value {
  inputs { key: "x" value { coo_sparse { values_tensor_name: "x" } } }
  outputs { key: "y" value { name: "y" } }
} }""",
        'signature_def { key: "" value { inputs { key: "x" value { name: "any" dtype: DT_COMPLEX64 } } outputs { key: "y" value { name: "out_bfloat16" } } } }',
    ]:
        write("signature_defs", s)


# ---------------------------------------------------------------- warmup files

def prediction_logs():
    logs = []
    for r, _ in predict_requests()[:8]:
        log = prediction_log_pb2.PredictionLog()
        log.predict_log.request.CopyFrom(r)
        logs.append(log)
    for method, r, _ in task_requests():
        log = prediction_log_pb2.PredictionLog()
        {CLASSIFY: log.classify_log, REGRESS: log.regress_log, MULTI: log.multi_inference_log}[method].request.CopyFrom(r)
        logs.append(log)
    log = prediction_log_pb2.PredictionLog()
    log.session_run_log.SetInParent()
    logs.append(log)
    logs.append(prediction_log_pb2.PredictionLog())
    return logs


def tfrecord(records):
    """A TFRecord file written by TensorFlow itself."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "tf_serving_warmup_requests")
        with tf.io.TFRecordWriter(path) as w:
            for r in records:
                w.write(r)
        with open(path, "rb") as f:
            return f.read()


def warmup_seeds():
    logs = [log.SerializeToString() for log in prediction_logs()]
    # Mode 0: the file as is. Groups of records that go together (one model's), and one each.
    for group in [logs[0:3], logs[3:8], logs[8:12], [logs[-3], logs[-2]], [logs[-1]], []]:
        write("warmup_records", b"\x00" + tfrecord(group))
    good = tfrecord(logs[:2])
    write("warmup_records", b"\x00" + good[:-3])  # truncated
    bad = bytearray(good)
    bad[14] ^= 1  # tests/repository.rs: a flipped data byte
    write("warmup_records", b"\x00" + bytes(bad))
    huge = struct.pack("<Q", 2 ** 64 - 1)
    write("warmup_records", b"\x00" + huge + struct.pack("<I", masked_crc(huge)))
    # Mode 1: length-prefixed records, framed with valid checksums by the target.
    for log in logs:
        write("warmup_records", b"\x01" + struct.pack("<H", len(log)) + log)
    write("warmup_records", b"\x01" + b"".join(struct.pack("<H", len(log)) + log for log in logs[:4]))
    write("warmup_records", b"\x07" + struct.pack("<H", len(logs[0])) + logs[0])  # framed, 3 bytes cut


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked_crc(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------- ONNX graphs

ONNX_INPUTS = ["x", "x2", "bias", "cond", "sepal_length", "in_f16", "in_s", "in_i64"]
ONNX_OUTPUTS = ["y", "y2", "y3", "scores", "classes", "out_f16", "out_s", "out_i64"]


def mask(names, vocab):
    return sum(1 << vocab.index(n) for n in names if n in vocab)


def onnx_seeds():
    models = {
        "examples/models/half_plus_two/123/model.onnx": [(["x"], ["y"]), (["x2"], ["y3"]), (["x", "x2"], ["y", "y2", "y3"]), (["x2"], ["y"])],
        "examples/models/iris/1/model.onnx": [(["sepal_length"], ["scores", "classes"])],
        "examples/models/digits_mlp/1/model.onnx": [(["x"], ["scores"])],
        "tests/data/onnx/dtypes/1/model.onnx": [(["in_f16", "in_s", "in_i64"], ["out_f16", "out_s", "out_i64"])],
        "tests/data/onnx/if_branch/1/model.onnx": [(["cond", "x"], ["y"]), (["x"], ["y"])],
        "tests/data/onnx/optional_bias/1/model.onnx": [(["x"], ["y"]), (["x", "bias"], ["y"])],
        "tests/data/onnx/resize_scales/1/model.onnx": [(["x"], ["y"])],
        "tests/data/onnx/symbolic_reshape/1/model.onnx": [(["x"], ["y"])],
    }
    for path, sigs in models.items():
        with open(os.path.join(ROOT, path), "rb") as f:
            model = f.read()
        for ins, outs in sigs:
            write("onnx_graph", bytes([mask(ins, ONNX_INPUTS), mask(outs, ONNX_OUTPUTS)]) + model)
    write("onnx_graph", bytes([1, 1]) + bytes([0x3A, 0xFF, 0xFF, 0xFF, 0x0F]))  # graph.rs tests: garbage
    write("onnx_graph", bytes([1, 1]) + b"\x08\x08")  # no graph


# ---------------------------------------------------------------- dictionaries

DICTS = {
    "json": ['"instances"', '"inputs"', '"signature_name"', '"examples"', '"context"', '"b64"', "NaN", "Infinity",
             "-Infinity", "true", "false", "null", "1e308", "-0.0", "18446744073709551616", "9223372036854775808",
             '"serving_default"', '"single"', '"single_double"', '"all_types"', '"half_types"', '"with_defaults"',
             '"classify"', '"regress"', '"classify_bad"', '"regress_bad"', '"x"', '"x2"', '"n"', '"s"', '"f"',
             '"scale"', '"int8"', '"uint64"', '"bool"', '"string"', "[[", "]]", "{\"b64\": \"AA==\"}",
             ":predict", ":classify", ":regress", ":explain", "/versions/", "/labels/", "/metadata", "%2F", "%"],
    "textproto": ["model_config_list", "config", "name:", "base_path:", "model_platform:", "model_version_policy",
                  "specific", "latest", "all", "versions:", "num_versions:", "version_labels", "key:", "value:",
                  "custom_model_config", "signature_def", "inputs", "outputs", "defaults", "method_name:",
                  "tensor_shape", "dim", "size:", "unknown_rank:", "dtype:", "DT_FLOAT", "DT_STRING", "DT_HALF",
                  "DT_BFLOAT16", "DT_INT64", "DT_BOOL", "tensor_content:", "float_val:", "int64_val:",
                  "string_val:", "half_val:", "coo_sparse", "composite_tensor", "'onnx'", "'tensorflow'",
                  "\"in_string\"", "\"x2\"", "\"out_float\"", "{", "}", "<", ">", "[", "]", "#", "\\x", "\\0"],
}


def dict_seeds():
    d = os.path.join(FUZZ, "dicts")
    os.makedirs(d, exist_ok=True)
    for name, tokens in DICTS.items():
        with open(os.path.join(d, name + ".dict"), "w") as f:
            f.write("# libFuzzer dictionary, written by fuzz/make_seeds.py\n")
            for t in tokens:
                f.write(json.dumps(t) + "\n")


def main():
    if "--clean" in sys.argv:
        shutil.rmtree(CORPUS, ignore_errors=True)
    tensor_proto_seeds()
    predict_seeds()
    grpc_stack_seeds()
    rest_seeds()
    tf_example_seeds()
    text_seeds()
    warmup_seeds()
    onnx_seeds()
    dict_seeds()
    for t in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, t))
        size = sum(os.path.getsize(os.path.join(CORPUS, t, f)) for f in files)
        print(f"{t}: {len(files)} seeds, {size} bytes")


if __name__ == "__main__":
    main()
