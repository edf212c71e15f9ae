"""Coverage sweep: every ONNX backend *node* test case through gRPC Predict, per engine.

The `onnx` wheel builds the 1,884 cases offline (`collect_testcases`): a one-node model, inputs
and the expected outputs. For each engine (`--onnx_engine onnxruntime`, `tract`, `auto`) one
tensorserve process serves every case from a model config file; each case is then one Predict
with the official client, compared with the expected outputs as ONNX's own backend tests do
(same dtype and shape, values within the case's rtol/atol).

    python benches/onnx_node_sweep.py --bin target/release/tensorserve [--out results.tsv]

Prints per-engine totals, the cases `auto` misses although an engine serves them, and the
misses of `auto` grouped by cause; `--out` writes one line per case and engine.
"""
import argparse
import collections
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings

import grpc
import numpy as np

warnings.filterwarnings("ignore")
import onnx  # noqa: E402
from onnx import TensorProto  # noqa: E402
from onnx.backend.test.case.node import collect_testcases  # noqa: E402

# Element types TF Serving's TensorProto can carry (and tensorserve serves).
CARRIED = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT8, TensorProto.INT16, TensorProto.INT32,
           TensorProto.INT64, TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64,
           TensorProto.BOOL, TensorProto.STRING, TensorProto.FLOAT16, TensorProto.BFLOAT16}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def io_problem(model):
    """Why a case cannot travel over TF Serving's API at all, or None."""
    for vi in list(model.graph.input) + list(model.graph.output):
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            return f"{kind} values"
        if vi.type.tensor_type.elem_type not in CARRIED:
            return f"dtype {TensorProto.DataType.Name(vi.type.tensor_type.elem_type).lower()}"
    return None


def write_repository(cases, root):
    lines = []
    for c in cases:
        d = os.path.join(root, c.name, "1")
        os.makedirs(d, exist_ok=True)
        onnx.save(c.model, os.path.join(d, "model.onnx"))
        lines.append(f"config {{ name: '{c.name}' base_path: '{os.path.join(root, c.name)}' model_platform: 'onnx' }}")
    config = os.path.join(root, "models.config")
    with open(config, "w") as f:
        f.write("model_config_list {\n" + "\n".join(lines) + "\n}\n")
    return config


def start(binary, config, engine, log):
    port = free_port()
    cmd = [binary, f"--port={port}", "--grpc_bind_address=127.0.0.1", "--rest_api_port=0",
           f"--model_config_file={config}", f"--onnx_engine={engine}", "--max_num_load_retries=0",
           "--file_system_poll_wait_seconds=0", "--onnxruntime_sessions=1", "--enable_model_warmup=false"]
    proc = subprocess.Popen(cmd, stderr=log, env=dict(os.environ, RUST_LOG="error"))
    return proc, f"127.0.0.1:{port}"


def wait_loaded(address, names, proc, timeout=1200):
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
    deadline = time.time() + timeout
    channel = grpc.insecure_channel(address)
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    pending = list(names)
    errors = {}
    while pending and time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("tensorserve exited during loading")
        still = []
        for name in pending:
            req = get_model_status_pb2.GetModelStatusRequest()
            req.model_spec.name = name
            try:
                st = stub.GetModelStatus(req, timeout=10).model_version_status[0]
            except grpc.RpcError:
                still.append(name)
                continue
            if st.state == 30:
                errors[name] = None
            elif st.state == 50:
                errors[name] = st.status.error_message
            else:
                still.append(name)
        pending = still
        if pending:
            time.sleep(0.5)
    channel.close()
    for name in pending:
        errors[name] = "did not finish loading"
    return errors


def compare(case, expected, got):
    if got.dtype != expected.dtype and not (expected.dtype == object and got.dtype.kind in "OSU"):
        return f"dtype {got.dtype} != {expected.dtype}"
    if got.shape != expected.shape:
        return f"shape {got.shape} != {expected.shape}"
    if expected.dtype == object or expected.dtype.kind in "SU":
        norm = lambda a: [x.decode() if isinstance(x, bytes) else str(x) for x in a.ravel()]  # noqa: E731
        return None if norm(got) == norm(expected) else "values differ"
    try:
        np.testing.assert_allclose(got.astype(np.float64) if got.dtype == np.float16 else got,
                                   expected.astype(np.float64) if expected.dtype == np.float16 else expected,
                                   rtol=case.rtol, atol=case.atol, equal_nan=True)
    except AssertionError:
        return "values differ"
    return None


def as_array(value):
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    return np.asarray(value)


def run_case(stub, case):
    try:
        return send_case(stub, case)
    except Exception as e:  # an input TensorFlow's TensorProto cannot hold
        return "skip", f"not sendable: {type(e).__name__}: {str(e).splitlines()[0][:100]}"


def send_case(stub, case):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    inputs, outputs = case.data_sets[0]
    req = predict_pb2.PredictRequest()
    req.model_spec.name = case.name
    graph_inputs = [i.name for i in case.model.graph.input]
    for name, value in zip(graph_inputs, inputs):
        arr = as_array(value)
        req.inputs[name].CopyFrom(tf.make_tensor_proto(arr))
    try:
        resp = stub.Predict(req, timeout=60)
    except grpc.RpcError as e:
        return "fail", f"{e.code().name}: {(e.details() or '')[:160]}"
    for vi, want in zip(case.model.graph.output, outputs):
        if vi.name not in resp.outputs:
            return "fail", f"missing output {vi.name}"
        got = tf.make_ndarray(resp.outputs[vi.name])
        why = compare(case, as_array(want), got)
        if why:
            return "wrong", f"{vi.name}: {why}"
    return "pass", ""


def cause(detail):
    """A short cause for a miss, to group them."""
    d = detail.lower()
    for key, label in [("not sendable", "unsupported I/O: not a TensorFlow tensor"),
                       ("_type values", "unsupported I/O: sequence/optional/map values"),
                       ("dtype float8", "unsupported I/O: float8"), ("dtype uint4", "unsupported I/O: 4-bit ints"),
                       ("dtype int4", "unsupported I/O: 4-bit ints"), ("dtype float4", "unsupported I/O: float4"),
                       ("dtype uint2", "unsupported I/O: 2-bit ints"), ("dtype int2", "unsupported I/O: 2-bit ints"),
                       ("dtype bfloat16", "unsupported I/O: bfloat16"), ("dtype complex", "unsupported I/O: complex"),
                       ("not implemented", "engine: operator not implemented"),
                       ("could not find an implementation", "engine: operator not implemented"),
                       ("opset", "engine: opset not supported"),
                       ("values differ", "wrong values"), ("dtype ", "wrong dtype"), ("shape ", "wrong shape")]:
        if key in d:
            return label
    if d.startswith("load:"):
        return "engine: could not load the graph"
    return "engine: run failed"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tensorserve")
    ap.add_argument("--engines", default="onnxruntime,tract,auto")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args()
    cases = sorted(collect_testcases(None), key=lambda c: c.name)
    if args.limit:
        cases = cases[: args.limit]
    root = tempfile.mkdtemp(prefix="onnx-sweep-")
    sendable = [c for c in cases if io_problem(c.model) is None]
    config = write_repository(sendable, root)
    results = {}  # engine -> name -> (status, detail)
    for engine in args.engines.split(","):
        started = time.time()
        log = tempfile.TemporaryFile()
        proc, address = start(args.bin, config, engine, log)
        try:
            load = wait_loaded(address, [c.name for c in sendable], proc)
            from tensorflow_serving.apis import prediction_service_pb2_grpc
            channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", -1)])
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            r = {}
            for c in cases:
                problem = io_problem(c.model)
                if problem:
                    r[c.name] = ("skip", problem)
                elif load.get(c.name):
                    r[c.name] = ("fail", "load: " + load[c.name][:200])
                else:
                    r[c.name] = run_case(stub, c)
            channel.close()
        finally:
            proc.terminate()
            proc.wait(30)
        results[engine] = r
        n = collections.Counter(s for s, _ in r.values())
        print(f"{engine:12s} pass {n['pass']:5d} / {len(cases)} ({100 * n['pass'] / len(cases):.1f} %)  "
              f"wrong {n['wrong']}  failed {n['fail']}  not sendable {n['skip']}  ({time.time() - started:.0f} s)",
              flush=True)
    engines = list(results)
    if "auto" in results:
        others = [e for e in engines if e != "auto"]
        any_pass = {c.name for c in cases if any(results[e][c.name][0] == "pass" for e in others)}
        auto_pass = {c.name for c in cases if results["auto"][c.name][0] == "pass"}
        lost = sorted(any_pass - auto_pass)
        print(f"served by some engine: {len(any_pass)}; by auto: {len(auto_pass)}; auto misses {len(lost)} of those")
        for name in lost:
            print(f"  {name}: {results['auto'][name][1]}")
        misses = collections.Counter(cause(results["auto"][c.name][1]) for c in cases if c.name not in auto_pass)
        print("auto's misses by cause:")
        for label, count in misses.most_common():
            print(f"  {count:5d}  {label}")
    if args.out:
        with open(args.out, "w") as f:
            f.write("case\t" + "\t".join(engines) + "\t" + "\t".join(f"{e}_detail" for e in engines) + "\n")
            for c in cases:
                row = [results[e][c.name][0] for e in engines] + [results[e][c.name][1].replace("\t", " ").replace("\n", " ") for e in engines]
                f.write(c.name + "\t" + "\t".join(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
