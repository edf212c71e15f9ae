"""Builds the example ONNX models bundled with tensorserve.

Writes, next to this file:
  half_plus_two/123/model.onnx  y = 0.5 x + 2, y2 = 0.5 x + 3 for x float32 [N, 1]; y3 = 0.5 x2 + 3
                                (TF Serving's classic test model; signatures.pbtxt beside it names its heads)
  iris/1/model.onnx             logistic regression on scikit-learn's iris: four float [N, 1] features ->
                                scores [N, 3], classes (string names) [N, 3]
  digits_mlp/1/model.onnx       a 64-32-10 MLP trained here on scikit-learn's bundled 8x8 digits
                                (x float32 [N, 64], pixels / 16) -> scores [N, 10] softmax, classes int64 [N]
  digits_mlp/sample_inputs.json eight held-out digits with their labels
  digits_image/1/               KServe's image-classifier contract on the same digits: model.onnx takes
                                image float32 [N, 8, 8, 1] (pixels / 255) and key string [N], answers
                                scores [N, 10], prediction int64 [N], key [N]; image_inputs.pbtxt makes
                                `image_bytes` (encoded JPEG/PNG) fill `image`; signatures.pbtxt names them
  digits_image/samples/         held-out digits as PNG and JPEG files of several sizes, and input.json
                                in KServe's sample format ({"instances": [{"image_bytes": {"b64"}, "key"}]})

Run from the repository root: `pip install onnx numpy scikit-learn pillow && python examples/models/make_models.py`.
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


def mlp_nodes(argmax_name):
    """x -> ReLU hidden layer (w1, b1) -> logits (w2, b2) -> softmax `scores` and ArgMax `argmax_name`."""
    return [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["l0"]),
        helper.make_node("Add", ["l0", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
        helper.make_node("ArgMax", ["logits"], [argmax_name], axis=1, keepdims=0),
    ]


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
    nodes = mlp_nodes("classes")
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


def digit_picture(row, size):
    """One 8x8 digit (0..16 ink) as a white-on-black greyscale picture of size x size pixels."""
    from PIL import Image

    pixels = np.clip(np.round(row.reshape(8, 8) / 16.0 * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "L").resize((size, size), Image.NEAREST)


def server_view(picture):
    """What the server feeds the model for a picture: bilinear resize to 8x8, pixels / 255."""
    from PIL import Image

    small = picture.convert("L").resize((8, 8), Image.BILINEAR)
    return np.asarray(small, np.float32).reshape(8, 8, 1) / 255.0


def digits_image():
    import base64
    import io

    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    train_rows, test_rows, y_train, y_test = train_test_split(digits.data, digits.target, test_size=0.25, random_state=0)
    # Trained on what the server makes of pictures of several sizes, so any of them classifies.
    sizes = (8, 16, 28, 32, 64)
    x = np.concatenate([[server_view(digit_picture(r, s)).ravel() for r in train_rows] for s in sizes])
    y = np.concatenate([y_train] * len(sizes))
    clf = MLPClassifier(hidden_layer_sizes=(64,), activation="relu", max_iter=800, random_state=0)
    clf.fit(x, y)
    for s in sizes:
        xt = np.array([server_view(digit_picture(r, s)).ravel() for r in test_rows])
        print("digits_image test accuracy at %dx%d: %.4f" % (s, s, clf.score(xt, y_test)))

    w1, w2 = (w.astype(np.float32) for w in clf.coefs_)
    b1, b2 = (b.astype(np.float32) for b in clf.intercepts_)
    inits = [numpy_helper.from_array(v, n) for v, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]]
    inits.append(numpy_helper.from_array(np.array([-1, 64], np.int64), "flat"))
    nodes = [
        helper.make_node("Reshape", ["image", "flat"], ["x"]),
        *mlp_nodes("prediction"),
        # The client's key comes back with its answer (KServe's sample passes it through the graph).
        helper.make_node("Identity", ["key"], ["key_out"]),
    ]
    graph = helper.make_graph(
        nodes, "digits_image",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 8, 8, 1]),
         helper.make_tensor_value_info("key", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 10]),
         helper.make_tensor_value_info("prediction", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("key_out", TensorProto.STRING, ["N"])],
        inits)
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="tensorserve-examples")
    model.ir_version = 8
    save(model, "digits_image", "1", "model.onnx")

    # Held-out samples the model gets right, as files and in KServe's request format.
    out = os.path.join(HERE, "digits_image", "samples")
    os.makedirs(out, exist_ok=True)
    instances, picked = [], 0
    for row, label in zip(test_rows, y_test):
        if picked == 4:
            break
        size, fmt = [(28, "png"), (64, "jpeg"), (8, "png"), (32, "jpeg")][picked]
        picture = digit_picture(row, size)
        buf = io.BytesIO()
        picture.save(buf, format=fmt.upper(), **({"quality": 95} if fmt == "jpeg" else {}))
        data = buf.getvalue()
        view = server_view(Image_open(data))
        if clf.predict(view.reshape(1, -1))[0] != label:
            continue
        name = "%d_%s_%dx%d.%s" % (picked, label, size, size, "jpg" if fmt == "jpeg" else "png")
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        instances.append({"image_bytes": {"b64": base64.b64encode(data).decode()}, "key": str(picked + 1)})
        print("sample", name, "label", label)
        picked += 1
    with open(os.path.join(out, "input.json"), "w") as f:
        json.dump({"instances": instances}, f)


def Image_open(data):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data))


if __name__ == "__main__":
    half_plus_two()
    iris()
    digits_mlp()
    digits_image()
