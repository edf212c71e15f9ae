"""Writes the ONNX fixtures of the onnxruntime tests: graphs tract cannot load or serve, each
in a TF Serving layout (<name>/1/model.onnx). Run with the `onnx` package:
    python tests/data/make_onnx_fixtures.py tests/data/onnx
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "onnx")


def save(name, graph, opset, ir_version=8):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tensorserve-tests")
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    path = os.path.join(OUT, name, "1")
    os.makedirs(path, exist_ok=True)
    onnx.save(model, os.path.join(path, "model.onnx"))


def if_branch():
    # y = cond ? x : concat(x, x): branches of different shapes, which tract's analysis refuses.
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["then_y"])], "then", [],
                               [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, ["A"])])
    else_g = helper.make_graph([helper.make_node("Concat", ["x", "x"], ["else_y"], axis=0)], "else", [],
                               [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, ["B"])])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)
    g = helper.make_graph([node], "if_branch",
                          [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                           helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M"])])
    save("if_branch", g, 18)


def resize_scales():
    # Antialiased linear 2x downsampling of an NCHW image with symbolic dims (antialias is opset 18+).
    scales = numpy_helper.from_array(np.array([1, 1, 0.5, 0.5], dtype=np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear", antialias=1)
    g = helper.make_graph([node], "resize_scales",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C", "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "C", "H2", "W2"])], [scales])
    save("resize_scales", g, 19, ir_version=9)


def symbolic_reshape():
    # [N, T, 4] -> [N, T * 4] through Shape/Slice/ReduceProd/Concat on symbolic dims, opset 18.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "one"], ["n"]),
        helper.make_node("Slice", ["s", "one", "three"], ["rest"]),
        helper.make_node("ReduceProd", ["rest"], ["flat"], keepdims=1),
        helper.make_node("Concat", ["n", "flat"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([v], dtype=np.int64), n) for n, v in (("zero", 0), ("one", 1), ("three", 3))]
    g = helper.make_graph(nodes, "symbolic_reshape",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "M"])], inits)
    save("symbolic_reshape", g, 18)


def optional_bias():
    # y = x + bias, where bias is a graph input backed by an initializer: requests may leave it out.
    bias = numpy_helper.from_array(np.array([10.0, 20.0, 30.0], dtype=np.float32), "bias")
    g = helper.make_graph([helper.make_node("Add", ["x", "bias"], ["y"])], "optional_bias",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
                           helper.make_tensor_value_info("bias", TensorProto.FLOAT, [3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [bias])
    save("optional_bias", g, 17)


def dtypes():
    # Identity of every dtype tensorserve carries and ONNX Runtime's Identity takes.
    kinds = [("f16", TensorProto.FLOAT16), ("f64", TensorProto.DOUBLE), ("b", TensorProto.BOOL),
             ("s", TensorProto.STRING), ("i8", TensorProto.INT8), ("u8", TensorProto.UINT8),
             ("i16", TensorProto.INT16), ("u16", TensorProto.UINT16), ("i32", TensorProto.INT32),
             ("u32", TensorProto.UINT32), ("i64", TensorProto.INT64), ("u64", TensorProto.UINT64)]
    nodes = [helper.make_node("Identity", [f"in_{k}"], [f"out_{k}"]) for k, _ in kinds]
    g = helper.make_graph(nodes, "dtypes",
                          [helper.make_tensor_value_info(f"in_{k}", t, ["N"]) for k, t in kinds],
                          [helper.make_tensor_value_info(f"out_{k}", t, ["N"]) for k, t in kinds])
    save("dtypes", g, 19, ir_version=9)


if __name__ == "__main__":
    for make in (if_branch, resize_scales, symbolic_reshape, optional_bias, dtypes):
        make()
    print("wrote", sorted(os.listdir(OUT)))
