"""Builds the example ONNX models bundled with tensorserve.

Writes, next to this file:
  half_plus_two/123/model.onnx  y = 0.5 x + 2, y2 = 0.5 x + 3 for x float32 [N, 1]; y3 = 0.5 x2 + 3
                                (TF Serving's classic test model; signatures.pbtxt beside it names its heads)
  iris/1/model.onnx             logistic regression on scikit-learn's iris: four float [N, 1] features ->
                                scores [N, 3], classes (string names) [N, 3]
  digits_mlp/1/model.onnx       a 64-32-10 MLP trained here on scikit-learn's bundled 8x8 digits
                                (x float32 [N, 64], pixels / 16) -> scores [N, 10] softmax, classes int64 [N]
  digits_mlp/sample_inputs.json eight held-out digits with their labels

Run from the repository root: `pip install onnx numpy scikit-learn && python examples/models/make_models.py`.
Deterministic (fixed seeds). Not needed to build or test the project: the .onnx files are committed.
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = [helper.make_opsetid("", 13)]


def save(model, *parts):
    path = os.path.join(HERE, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    print("wrote", os.path.relpath(path), os.path.getsize(path), "bytes")


def half_plus_two():
    # One graph holds every head TF Serving's half_plus_two test model has; signatures.pbtxt picks them.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])
    x2 = helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["M", 1])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [d, 1]) for n, d in [("y", "N"), ("y2", "N"), ("y3", "M")]]
    consts = [numpy_helper.from_array(np.array([v], np.float32), n) for n, v in [("a", 0.5), ("b", 2.0), ("c", 3.0)]]
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "a"], ["ax"]), helper.make_node("Add", ["ax", "b"], ["y"]),
         helper.make_node("Add", ["ax", "c"], ["y2"]),
         helper.make_node("Mul", ["x2", "a"], ["ax2"]), helper.make_node("Add", ["ax2", "c"], ["y3"])],
        "half_plus_two", [x, x2], outs, consts)
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="tensorserve-examples")
    model.ir_version = 8
    save(model, "half_plus_two", "123", "model.onnx")


IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def iris():
    """A logistic regression on scikit-learn's bundled iris data, with its class names as a string output."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    clf = LogisticRegression(max_iter=1000, random_state=0).fit(data.data, data.target)
    print("iris training accuracy: %.4f" % clf.score(data.data, data.target))
    w = clf.coef_.T.astype(np.float32)
    b = clf.intercept_.astype(np.float32)
    names = [n.encode() for n in data.target_names]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
             helper.make_tensor("labels", TensorProto.STRING, [1, len(names)], names),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    nodes = [
        helper.make_node("Concat", IRIS_FEATURES, ["features"], axis=1),
        helper.make_node("MatMul", ["features", "w"], ["z0"]),
        helper.make_node("Add", ["z0", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
        # classes = the label row repeated once per example: Tile(labels, [batch, 1]).
        helper.make_node("Shape", ["features"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "one"], ["reps"], axis=0),
        helper.make_node("Tile", ["labels", "reps"], ["classes"]),
    ]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "zero"))
    graph = helper.make_graph(
        nodes, "iris",
        [helper.make_tensor_value_info(f, TensorProto.FLOAT, ["N", 1]) for f in IRIS_FEATURES],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", len(names)]),
         helper.make_tensor_value_info("classes", TensorProto.STRING, ["N", len(names)])],
        inits)
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="tensorserve-examples")
    model.ir_version = 8
    save(model, "iris", "1", "model.onnx")
    # The graph must agree with scikit-learn.
    probs = clf.predict_proba(data.data[:3])
    print("iris first rows:", [data.target_names[i] for i in probs.argmax(1)])


def digits_mlp():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    features = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(features, digits.target, test_size=0.25, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(32,), activation="relu", max_iter=600, random_state=0)
    clf.fit(x_train, y_train)
    print("digits_mlp test accuracy: %.4f" % clf.score(x_test, y_test))

    w1, w2 = (w.astype(np.float32) for w in clf.coefs_)
    b1, b2 = (b.astype(np.float32) for b in clf.intercepts_)
    inits = [numpy_helper.from_array(v, n) for v, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["l0"]),
        helper.make_node("Add", ["l0", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["classes"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "digits_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 10]),
         helper.make_tensor_value_info("classes", TensorProto.INT64, ["N"])],
        inits)
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="tensorserve-examples")
    model.ir_version = 8
    save(model, "digits_mlp", "1", "model.onnx")

    # The exported graph must agree with scikit-learn on held-out data.
    h = np.maximum(x_test @ w1 + b1, 0)
    logits = h @ w2 + b2
    assert (logits.argmax(1) == clf.predict(x_test)).all()
    sample = {"instances": x_test[:8].round(4).tolist(), "labels": y_test[:8].tolist()}
    with open(os.path.join(HERE, "digits_mlp", "sample_inputs.json"), "w") as f:
        json.dump(sample, f)


if __name__ == "__main__":
    half_plus_two()
    iris()
    digits_mlp()
