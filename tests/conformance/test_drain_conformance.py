"""Graceful drain under load on every front end: after SIGTERM readiness turns false at once on
each protocol, requests keep being answered for the drain window (a load balancer's time to
take the server out), in-flight ones finish, and the process exits 0. No request is lost."""
import signal
import threading
import time

import grpc
import numpy as np
import requests
import tensorflow as tf
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from conftest import Server

DRAIN = 3.0


def test_sigterm_under_load_loses_no_request():
    s = Server(f"--drain_seconds={DRAIN:g}", "--shutdown_grace_seconds=5", rest=True)
    stop_sending = threading.Event()
    counts = {}
    failures = []
    lock = threading.Lock()

    def loop(name, call):
        while not stop_sending.is_set():
            try:
                call()
                with lock:
                    counts[name] = counts.get(name, 0) + 1
            except Exception as e:  # noqa: BLE001 - every failure is the finding
                with lock:
                    failures.append(f"{name}: {e!r}"[:300])

    channel = grpc.insecure_channel(s.address)
    tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "half_plus_two"
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))

    def tfs_grpc():
        assert list(tfs.Predict(req, 10).outputs["y"].float_val) == [3.0]

    session = requests.Session()

    def tfs_rest():
        r = session.post(f"{s.rest_url}/v1/models/half_plus_two:predict", json={"instances": [2.0]}, timeout=10)
        assert r.status_code == 200 and r.json()["predictions"] == [3.0], r.text

    v2_session = requests.Session()

    def v2_rest():
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [2.0]}]}
        r = v2_session.post(f"{s.rest_url}/v2/models/half_plus_two/infer", json=body, timeout=10)
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [3.0], r.text

    triton = grpcclient.InferenceServerClient(s.address)

    def v2_grpc():
        x = grpcclient.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.array([[2.0]], np.float32))
        assert triton.infer("half_plus_two", [x]).as_numpy("y").tolist() == [[3.0]]

    workers = [threading.Thread(target=loop, args=(name, f)) for name, f in
               [("tfs_grpc", tfs_grpc), ("tfs_rest", tfs_rest), ("v2_rest", v2_rest), ("v2_grpc", v2_grpc)]]
    try:
        for w in workers:
            w.start()
        time.sleep(1.0)
        assert not failures, failures[:3]
        with lock:
            before = dict(counts)
        s.proc.send_signal(signal.SIGTERM)
        start = time.time()
        time.sleep(0.3)
        # Readiness is false on every protocol while requests are still answered.
        with grpc.insecure_channel(s.address) as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert requests.get(f"{s.rest_url}/v2/health/ready", timeout=2).status_code == 503
        assert requests.get(f"{s.rest_url}/v1/models/half_plus_two", timeout=2).json()["ready"] is False
        assert triton.is_server_ready() is False
        assert requests.get(f"{s.rest_url}/v2/health/live", timeout=2).json() == {"live": True}
        # The load balancer has taken the server out before the window ends; clients stop.
        time.sleep(max(0.0, DRAIN - 1.0 - (time.time() - start)))
        stop_sending.set()
        for w in workers:
            w.join(15)
        code = s.proc.wait(15)
        took = time.time() - start
        assert code == 0, s.stderr()[-2000:]
        assert DRAIN - 0.5 <= took <= DRAIN + 5 + 1.5, f"exited {took:.1f} s after SIGTERM"
        assert not failures, f"{len(failures)} failed requests: {failures[:5]}"
        # Every front end kept answering during the drain window.
        assert sorted(counts) == ["tfs_grpc", "tfs_rest", "v2_grpc", "v2_rest"], counts
        assert all(counts[k] > before.get(k, 0) for k in counts), (before, counts)
    finally:
        stop_sending.set()
        channel.close()
        if s.proc.poll() is None:
            s.proc.kill()
