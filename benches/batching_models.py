"""Writes the batching benchmark's models and request frames.

  python benches/batching_models.py DIR

DIR/models/mlp/1/model.onnx  an MLP 256 -> 1024 -> 1024 -> 10 (ReLU), batch dimension N
DIR/models/cnn/1/model.onnx  a small CNN on [N, 3, 32, 32]: conv 16 -> conv 32 (stride 2) -> pool -> dense 10
DIR/models.config            a ModelServerConfig serving both
DIR/mlp.grpc, DIR/cnn.grpc   one gRPC-framed PredictRequest each (batch 1, tensor_content)
Weights are seeded random values: the benchmark measures work, not accuracy.
"""
import os
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(7)


def weights(name, *shape):
    scale = 1.0 / np.sqrt(np.prod(shape[1:]) if len(shape) > 1 else shape[0])
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def save(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.opset_import[0].version = 17
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def mlp():
    sizes = [256, 1024, 1024, 10]
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        inits += [weights(f"w{i}", a, b), weights(f"b{i}", b)]
        out = "y" if i == len(sizes) - 2 else f"h{i}"
        mm = f"mm{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [mm]))
        if out == "y":
            nodes.append(helper.make_node("Add", [mm, f"b{i}"], ["y"]))
        else:
            nodes.append(helper.make_node("Add", [mm, f"b{i}"], [f"a{i}"]))
            nodes.append(helper.make_node("Relu", [f"a{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph)


def cnn():
    inits = [weights("c1", 16, 3, 3, 3), weights("c1b", 16), weights("c2", 32, 16, 3, 3), weights("c2b", 32),
             weights("d", 32, 10), weights("db", 10)]
    nodes = [
        helper.make_node("Conv", ["x", "c1", "c1b"], ["h1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2", "c2b"], ["h2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "d"], ["m"]),
        helper.make_node("Add", ["m", "db"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph)


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint((num << 3) | wire)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)


def predict_frame(model, shape):
    """PredictRequest{model_spec{name}, inputs{"x": DT_FLOAT tensor_content}} as a gRPC frame."""
    values = rng.standard_normal(shape).astype(np.float32)
    dims = b"".join(field(2, 2, field(1, 0, varint(d))) for d in shape)
    tensor = field(1, 0, varint(1)) + field(2, 2, dims) + field(4, 2, values.tobytes())
    msg = field(1, 2, field(1, 2, model.encode())) + field(2, 2, field(1, 2, b"x") + field(2, 2, tensor))
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def main(out):
    save(mlp(), f"{out}/models/mlp/1/model.onnx")
    save(cnn(), f"{out}/models/cnn/1/model.onnx")
    with open(f"{out}/models.config", "w") as f:
        configs = "".join(f'  config {{ name: "{n}" base_path: "{out}/models/{n}" model_platform: "onnx" }}\n'
                          for n in ("mlp", "cnn"))
        f.write("model_config_list {\n" + configs + "}\n")
    with open(f"{out}/mlp.grpc", "wb") as f:
        f.write(predict_frame("mlp", [1, 256]))
    with open(f"{out}/cnn.grpc", "wb") as f:
        f.write(predict_frame("cnn", [1, 3, 32, 32]))


if __name__ == "__main__":
    main(sys.argv[1])
