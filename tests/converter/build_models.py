#!/usr/bin/env python3
"""Builds a TF Serving model tree for the converter's end-to-end test, and TensorFlow's answers.

usage: build_models.py OUT     (run in the convert venv: tools/requirements-convert.txt)

Writes
  OUT/saved_models/half_plus_two/1/   TF1 graph as TF Serving's saved_model_half_plus_two.py builds it:
                                      predict, classify and regress signatures over serialized
                                      tf.Examples, plus a warmup file (a predict and a classify record)
  OUT/saved_models/mnist_cnn/{1,2}/   a small Keras CNN (seeds 1 and 2) saved by model.export
  OUT/models.config                   TF Serving's text-format ModelServerConfig for both
  OUT/expected.json                   what TensorFlow answers on fixed inputs, and each SavedModel's
                                      signatures, for test_converted_models.py to hold tensorserve to
"""
import json
import os
import struct
import sys

# Keeps TensorFlow's C++ start-up chatter out of CI's log; set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

tf.get_logger().setLevel("ERROR")  # TF1 API deprecation warnings

v1 = tf.compat.v1
PREDICT_X = [[1.0], [2.0], [5.0]]
EXAMPLE_X = [0.0, 1.0, -3.5, 10.0]  # one classify/regress tf.Example per value, feature x


def half_plus_two(export_dir):
    """TF Serving's test model: y = 0.5x + 2, y2 = 0.5x + 3, y3 = 0.5x2 + 3, x and x2 parsed from tf.Examples."""
    with tf.Graph().as_default():
        a, b, c = v1.Variable(0.5, name="a"), v1.Variable(2.0, name="b"), v1.Variable(3.0, name="c")
        serialized = v1.placeholder(tf.string, name="tf_example")
        parsed = tf.io.parse_example(serialized, {
            "x": tf.io.FixedLenFeature([1], tf.float32),
            "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])})
        x = tf.identity(parsed["x"], name="x")
        x2 = tf.identity(parsed["x2"], name="x2")
        y = tf.add(tf.multiply(a, x), b, name="y")
        y2 = tf.add(tf.multiply(a, x), c, name="y2")
        y3 = tf.add(tf.multiply(a, x2), c, name="y3")

        info, sdu = v1.saved_model.utils.build_tensor_info, v1.saved_model.signature_def_utils
        regress = lambda i, o: sdu.build_signature_def({"inputs": info(i)}, {"outputs": info(o)},
                                                       "tensorflow/serving/regress")
        classify = lambda i, o: sdu.build_signature_def({"inputs": info(i)}, {"scores": info(o)},
                                                        "tensorflow/serving/classify")
        signatures = {
            "serving_default": sdu.predict_signature_def({"x": x}, {"y": y}),
            "regress_x_to_y": regress(serialized, y), "regress_x_to_y2": regress(serialized, y2),
            "regress_x2_to_y3": regress(x2, y3),
            "classify_x_to_y": classify(serialized, y), "classify_x2_to_y3": classify(x2, y3)}
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(export_dir)
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=signatures)
            builder.save()
    write_warmup(export_dir)


def _field(number, payload):
    """One length-delimited protobuf field: the convert venv has no tensorflow_serving protos."""
    def varint(n):
        out = b""
        while True:
            out += struct.pack("B", (n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return out
    payload = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def example(x):
    return tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}))


def write_warmup(export_dir):
    """assets.extra/tf_serving_warmup_requests: the converter copies it and tensorserve replays it at load."""
    spec = lambda sig: _field(1, _field(1, "half_plus_two") + _field(3, sig))  # request.model_spec
    x = tf.make_tensor_proto(np.array(PREDICT_X, np.float32)).SerializeToString()
    # PredictionLog.predict_log(6).request(1){model_spec, inputs(2) {"x": TensorProto}}
    predict = _field(6, _field(1, spec("serving_default") + _field(2, _field(1, "x") + _field(2, x))))
    # PredictionLog{log_metadata(1){model_spec}, classify_log(2).request(1){model_spec,
    # input(2).example_list(1).examples(1)...}}: log_metadata as TF Serving's request logger writes it.
    examples = b"".join(_field(1, example(v).SerializeToString()) for v in EXAMPLE_X)
    classify = (_field(1, _field(1, _field(1, "half_plus_two")))
                + _field(2, _field(1, spec("classify_x_to_y") + _field(2, _field(1, examples)))))
    os.makedirs(os.path.join(export_dir, "assets.extra"))
    with tf.io.TFRecordWriter(os.path.join(export_dir, "assets.extra", "tf_serving_warmup_requests")) as w:
        w.write(predict)
        w.write(classify)


def cnn(export_dir, seed):
    """28x28x1 -> Conv2D -> Dense 10 softmax, weights fixed by the seed."""
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([
        tf.keras.Input((28, 28, 1), name="image"),
        tf.keras.layers.Conv2D(8, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(10, activation="softmax")])
    model.export(export_dir, verbose=False)


def signatures(export_dir):
    """{key: (method_name, sorted output aliases)} of the SavedModel; __-keys are TF-internal, not served."""
    from tensorflow.core.protobuf import saved_model_pb2
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        (meta_graph,) = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs
    return {k: [s.method_name, sorted(s.outputs)] for k, s in meta_graph.signature_def.items()
            if not k.startswith("__")}


def predict_case(loaded, model, version, sig, inputs, atol):
    outputs = loaded.signatures[sig](**{k: tf.constant(v) for k, v in inputs.items()})
    return {"model": model, "version": version, "signature": sig, "atol": atol,
            "inputs": {k: np.asarray(v).tolist() for k, v in inputs.items()},
            "outputs": {k: v.numpy().tolist() for k, v in outputs.items()}}


def main(out):
    models, predict, examples_cases = {}, [], []
    hpt = os.path.join(out, "saved_models", "half_plus_two", "1")
    half_plus_two(hpt)
    loaded = tf.saved_model.load(hpt)
    x = np.array(PREDICT_X, np.float32)
    # half_plus_two is exact arithmetic on exactly representable values: atol 0.
    predict.append(predict_case(loaded, "half_plus_two", 1, "serving_default", {"x": x}, 0))
    predict.append(predict_case(loaded, "half_plus_two", 1, "regress_x2_to_y3", {"inputs": x}, 0))
    serialized = tf.constant([example(v).SerializeToString() for v in EXAMPLE_X])
    for sig, kind, alias in (("classify_x_to_y", "classify", "scores"), ("regress_x_to_y", "regress", "outputs"),
                             ("regress_x_to_y2", "regress", "outputs")):
        want = loaded.signatures[sig](inputs=serialized)[alias].numpy().reshape(len(EXAMPLE_X))
        examples_cases.append({"model": "half_plus_two", "version": 1, "signature": sig, "kind": kind,
                               "x": EXAMPLE_X, "expected": want.tolist()})
    models["half_plus_two"] = {"versions": [1], "signatures": signatures(hpt)}

    images = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    for version in (1, 2):
        path = os.path.join(out, "saved_models", "mnist_cnn", str(version))
        cnn(path, seed=version)
        loaded = tf.saved_model.load(path)
        for sig in ("serving_default", "serve"):
            predict.append(predict_case(loaded, "mnist_cnn", version, sig, {"image": images}, 1e-5))
    models["mnist_cnn"] = {"versions": [1, 2], "signatures": signatures(path)}

    # Absolute base paths: the converter and tensorserve may run from any directory.
    root = os.path.abspath(os.path.join(out, "saved_models"))
    with open(os.path.join(out, "models.config"), "w") as f:
        f.write("model_config_list {\n"
                f"  config {{ name: 'half_plus_two' base_path: '{root}/half_plus_two' model_platform: 'tensorflow' }}\n"
                f"  config {{ name: 'mnist_cnn' base_path: '{root}/mnist_cnn' model_platform: 'tensorflow'\n"
                "           model_version_policy { all {} } }\n"
                "}\n")
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"models": models, "predict": predict, "examples": examples_cases}, f)
    print("built", ", ".join(f"{m} {v['versions']}" for m, v in models.items()), "and expected.json in", out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
