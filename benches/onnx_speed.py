"""Speed of real architectures: in-process onnxruntime (Python) vs tensorserve on onnxruntime vs
tensorserve on tract, measured in one run on the same inputs.

Models: CNNs from the `onnx` wheel's backend/test/data/light set (weights built in the graph),
a 2-layer transformer encoder and an MLP built here with onnx.helper. For each: latency at
concurrency 1 (median of calls) and throughput at concurrency 8 (8 threads, calls/s). The gRPC
round trip of a trivial model (half_plus_two over the same client) is measured too, so the
latency target reads: tensorserve <= 1.1 x (in-process + trivial round trip).

    python benches/onnx_speed.py --bin target/release/tensorserve [--models resnet50,encoder] [--seconds 3]
"""
import argparse
import collections
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import grpc
import numpy as np

warnings.filterwarnings("ignore")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
PREDICT = "/tensorflow.serving.PredictionService/Predict"


def encoder(path, d=128, heads=4, seq=64, layers=2):
    """A post-norm transformer encoder: self-attention and a ReLU feed-forward, batch and sequence symbolic."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def w(name, *shape):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.05).astype(np.float32), name))
        return name

    inits.append(numpy_helper.from_array(np.array([0, 0, heads, d // heads], np.int64), "split_heads"))
    inits.append(numpy_helper.from_array(np.array([0, 0, d], np.int64), "merge_heads"))
    inits.append(numpy_helper.from_array(np.array(1 / np.sqrt(d // heads), np.float32), "scale"))
    x = "x"
    for i in range(layers):
        p = f"l{i}_"
        for n in "qkv":
            nodes.append(helper.make_node("MatMul", [x, w(p + n + "_w", d, d)], [p + n]))
            nodes.append(helper.make_node("Reshape", [p + n, "split_heads"], [p + n + "_h"]))
        nodes.append(helper.make_node("Transpose", [p + "q_h"], [p + "qt"], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Transpose", [p + "k_h"], [p + "kt"], perm=[0, 2, 3, 1]))
        nodes.append(helper.make_node("Transpose", [p + "v_h"], [p + "vt"], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("MatMul", [p + "qt", p + "kt"], [p + "s0"]))
        nodes.append(helper.make_node("Mul", [p + "s0", "scale"], [p + "s"]))
        nodes.append(helper.make_node("Softmax", [p + "s"], [p + "a"], axis=-1))
        nodes.append(helper.make_node("MatMul", [p + "a", p + "vt"], [p + "o"]))
        nodes.append(helper.make_node("Transpose", [p + "o"], [p + "ot"], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [p + "ot", "merge_heads"], [p + "om"]))
        nodes.append(helper.make_node("MatMul", [p + "om", w(p + "o_w", d, d)], [p + "proj"]))
        nodes.append(helper.make_node("Add", [x, p + "proj"], [p + "r1"]))
        nodes.append(helper.make_node("LayerNormalization", [p + "r1", w(p + "g1", d), w(p + "b1", d)], [p + "n1"], axis=-1))
        nodes.append(helper.make_node("MatMul", [p + "n1", w(p + "f1", d, 4 * d)], [p + "h1"]))
        nodes.append(helper.make_node("Relu", [p + "h1"], [p + "h2"]))
        nodes.append(helper.make_node("MatMul", [p + "h2", w(p + "f2", 4 * d, d)], [p + "h3"]))
        nodes.append(helper.make_node("Add", [p + "n1", p + "h3"], [p + "r2"]))
        out = "y" if i == layers - 1 else p + "out"
        nodes.append(helper.make_node("LayerNormalization", [p + "r2", w(p + "g2", d), w(p + "b2", d)], [out], axis=-1))
        x = out
    g = helper.make_graph(nodes, "encoder", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", d])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", d])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return {"x": rng.standard_normal((1, seq, d)).astype(np.float32)}


def mlp(path, sizes=(784, 512, 512, 10)):
    rng = np.random.default_rng(1)
    inits, nodes, x = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        inits += [numpy_helper.from_array((rng.standard_normal((a, b)) * 0.05).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"g{i}"]))
        last = i == len(sizes) - 2
        nodes.append(helper.make_node("Softmax" if last else "Relu", [f"g{i}"], ["y" if last else f"h{i}"]))
        x = f"h{i}"
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", sizes[0]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", sizes[-1]])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return {"x": rng.standard_normal((1, sizes[0])).astype(np.float32)}


def sink(path):
    """The transfer alone: a 1x3x224x224 image in, its mean out (no real compute)."""
    g = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["y"], keepdims=0)], "sink",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 224, 224])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return {"x": np.random.default_rng(3).standard_normal((1, 3, 224, 224)).astype(np.float32)}


def light(name):
    def make(path):
        m = onnx.load(os.path.join(LIGHT, f"light_{name}.onnx"))
        onnx.save(m, path)
        init = {i.name for i in m.graph.initializer}
        feeds = {}
        for i in m.graph.input:
            if i.name not in init:
                shape = [d.dim_value or 1 for d in i.type.tensor_type.shape.dim]
                feeds[i.name] = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
        return feeds
    return make


MODELS = {"resnet50": light("resnet50"), "squeezenet": light("squeezenet"), "inception_v1": light("inception_v1"),
          "densenet121": light("densenet121"), "encoder": encoder, "mlp": mlp,
          "image_transfer": sink}


def ort_library():
    """The library of the onnxruntime this script imports, so both sides run the same build."""
    capi = os.path.join(os.path.dirname(ort.__file__), "capi")
    return os.path.join(capi, sorted(f for f in os.listdir(capi) if f.startswith("libonnxruntime.so"))[-1])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_bytes(name, feeds):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    for k, v in feeds.items():
        req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    return req.SerializeToString()


def latency(call, seconds):
    call()  # warm
    times, end = [], time.time() + seconds
    while time.time() < end or len(times) < 20:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def throughput(make_call, seconds, threads=8):
    counts = [0] * threads
    stop = time.time() + seconds

    def worker(i):
        call = make_call()
        call()
        while time.time() < stop:
            call()
            counts[i] += 1
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    start = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.time() - start)


class Server:
    def __init__(self, binary, config, engine, extra=()):
        self.port = free_port()
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([binary, f"--port={self.port}", "--grpc_bind_address=127.0.0.1",
                                      "--rest_api_port=0", f"--model_config_file={config}", f"--onnx_engine={engine}",
                                      "--file_system_poll_wait_seconds=0", "--max_num_load_retries=0",
                                      f"--onnxruntime_library={ort_library()}", *extra],
                                     stderr=self.log, env=dict(os.environ, RUST_LOG="warn"))
        self.address = f"127.0.0.1:{self.port}"

    def caller(self, body):
        channel = grpc.insecure_channel(self.address, options=[("grpc.max_receive_message_length", -1),
                                                               ("grpc.max_send_message_length", -1)])
        rpc = channel.unary_unary(PREDICT)
        return lambda: rpc(body, timeout=120)

    def ready(self, body, timeout=120):
        call, deadline = self.caller(body), time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"tensorserve exited: {self.log.read().decode()[-2000:]}")
            try:
                return call()
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                    raise
                time.sleep(0.2)
        raise RuntimeError("not ready")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def check(resp, want, name):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    r = predict_pb2.PredictResponse.FromString(resp)
    for k, v in want.items():
        np.testing.assert_allclose(tf.make_ndarray(r.outputs[k]), v, rtol=1e-3, atol=1e-4, err_msg=name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tensorserve")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seconds", type=float, default=6.0, help="per measurement, split over the rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--server-flags", default="", help="extra tensorserve flags, space-separated")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="onnx-speed-")
    names = args.models.split(",")
    feeds, lines = {}, []
    for n in names:
        os.makedirs(os.path.join(root, n, "1"))
        feeds[n] = MODELS[n](os.path.join(root, n, "1", "model.onnx"))
        lines.append(f"config {{ name: '{n}' base_path: '{os.path.join(root, n)}' model_platform: 'onnx' }}")
    half = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "models", "half_plus_two")
    lines.append(f"config {{ name: 'half_plus_two' base_path: '{os.path.abspath(half)}' }}")
    config = os.path.join(root, "models.config")
    with open(config, "w") as f:
        f.write("model_config_list {\n" + "\n".join(lines) + "\n}\n")
    bodies = {n: request_bytes(n, feeds[n]) for n in names}
    trivial = request_bytes("half_plus_two", {"x": np.array([[1.0]], np.float32)})

    rows = {n: {} for n in names}
    sessions = {}
    for n in names:
        path = os.path.join(root, n, "1", "model.onnx")
        sessions[n] = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in sessions[n].get_outputs()]
        rows[n]["want"] = dict(zip(outputs, sessions[n].run(None, feeds[n])))
    # Both servers run at once and every measurement is interleaved in rounds, so the machine's
    # drift over the run hits all three sides alike; each figure is the median of its rounds.
    servers = {e: Server(args.bin, config, e, args.server_flags.split()) for e in ("onnxruntime", "tract")}
    try:
        for server in servers.values():
            server.ready(trivial)
        usable = {e: [] for e in servers}
        for n in names:
            for e, server in servers.items():
                try:
                    check(server.ready(bodies[n]), rows[n]["want"], f"{n} on {e}")
                    usable[e].append(n)
                except Exception as ex:  # a model this engine cannot load or run
                    rows[n][f"{e}_err"] = str(ex).splitlines()[0][:100]
        slot = args.seconds / args.rounds
        samples = collections.defaultdict(list)
        for _ in range(args.rounds):
            for e, server in servers.items():
                samples[("rtt", e)].append(latency(server.caller(trivial), slot))
            for n in names:
                samples[(n, "ort_c1")].append(latency(lambda: sessions[n].run(None, feeds[n]), slot))
                samples[(n, "ort_c8")].append(throughput(lambda: (lambda: sessions[n].run(None, feeds[n])), slot))
                for e, server in servers.items():
                    if n in usable[e]:
                        samples[(n, f"{e}_c1")].append(latency(server.caller(bodies[n]), slot))
                        samples[(n, f"{e}_c8")].append(throughput(lambda: server.caller(bodies[n]), slot))
    finally:
        for server in servers.values():
            server.stop()
    rtt = {e: float(np.median(samples[("rtt", e)])) for e in servers}
    for n in names:
        for key in ("ort_c1", "ort_c8", "onnxruntime_c1", "onnxruntime_c8", "tract_c1", "tract_c8"):
            rows[n][key] = float(np.median(samples[(n, key)])) if samples[(n, key)] else None
    print(f"trivial-model gRPC round trip (half_plus_two, this client): {rtt['onnxruntime']:.3f} ms "
          f"(server on tract: {rtt['tract']:.3f} ms)")
    print("| model | ORT in-process c1 ms | tensorserve+ORT c1 ms | ratio to ORT+RTT | tract c1 ms | "
          "ORT in-process c8 /s | tensorserve+ORT c8 /s | ratio | tract c8 /s |")
    print("|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v, spec: "fails" if v is None else format(v, spec)  # noqa: E731
    for n in names:
        r = rows[n]
        ratio1 = None if r["onnxruntime_c1"] is None else r["onnxruntime_c1"] / (r["ort_c1"] + rtt["onnxruntime"])
        ratio8 = None if r["onnxruntime_c8"] is None else r["onnxruntime_c8"] / r["ort_c8"]
        print(f"| {n} | {r['ort_c1']:.3f} | {fmt(r['onnxruntime_c1'], '.3f')} | {fmt(ratio1, '.2f')} | "
              f"{fmt(r['tract_c1'], '.3f')} | {r['ort_c8']:.0f} | {fmt(r['onnxruntime_c8'], '.0f')} | "
              f"{fmt(ratio8, '.2f')} | {fmt(r['tract_c8'], '.0f')} |")
        for e in ("onnxruntime", "tract"):
            if r.get(f"{e}_err"):
                print(f"    {n} on {e}: {r[e + '_err']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
