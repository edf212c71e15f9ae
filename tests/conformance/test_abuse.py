"""The abuse suite: hostile inputs and hostile peers against the real binary (127.0.0.1 only).

Each case asserts the code or status it gets, then that the server still answers a normal
Predict within its usual latency and that its RSS is back within 10 % of its steady value.
Peak memory (VmHWM) shows what a refused request made the server hold.
"""
import json
import os
import resource
import signal
import socket
import struct
import threading
import time

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from conftest import Server

MIB = 1 << 20
BUDGET = 256 * MIB
PREDICT = "/tensorflow.serving.PredictionService/Predict"


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss(pid):
    return status_kib(pid, "VmRSS") * 1024


def peak(pid):
    return status_kib(pid, "VmHWM") * 1024


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def half_plus_two(values):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "half_plus_two"
    t = req.inputs["x"]
    t.dtype = types_pb2.DT_FLOAT
    t.tensor_shape.dim.add(size=len(values))
    t.float_val.extend(values)
    return req


def raw_call(channel, path=PREDICT):
    """A unary call that sends bytes as they are."""
    return channel.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def map_entry(field, key, value=b""):
    """One protobuf map entry (key 1, value 2) under field `field`."""
    k = key.encode()
    entry = b"\x0a" + varint(len(k)) + k + (b"\x12" + varint(len(value)) + value)
    return bytes([field << 3 | 2]) + varint(len(entry)) + entry


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class Target:
    """The abuse server, its clients, and its steady latency and RSS."""

    def __init__(self, server):
        self.server = server
        self.pid = server.proc.pid
        opts = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self.channel = grpc.insecure_channel(server.address, options=opts)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.url = server.rest_url
        # Warm both protocols, then take the steady state.
        for _ in range(200):
            self.predict()
            requests.post(f"{self.url}/v1/models/half_plus_two:predict", json={"instances": [1.0, 2.0]})
        latencies = sorted(self.predict() for _ in range(50))
        self.latency = latencies[len(latencies) // 2]
        self.rss = rss(self.pid)

    def predict(self):
        start = time.perf_counter()
        out = self.stub.Predict(half_plus_two([1.0, 2.0, 3.0]), 10)
        elapsed = time.perf_counter() - start
        assert list(out.outputs["y"].float_val) == [2.5, 3.0, 3.5]
        return elapsed

    def assert_healthy(self):
        """A normal Predict answers within its usual latency, and RSS returns to its steady state."""
        assert self.server.proc.poll() is None, self.server.stderr()
        latencies = sorted(self.predict() for _ in range(11))
        assert latencies[5] <= 3 * self.latency + 0.02, (latencies[5], self.latency)
        r = requests.post(f"{self.url}/v1/models/half_plus_two:predict", json={"instances": [1.0]})
        assert r.status_code == 200 and r.json() == {"predictions": [2.5]}, r.text
        # The allocator returns freed memory to the OS as it keeps working: keep traffic going.
        # Steady state plus 10 % and 16 MiB: allocator slack per worker thread, not the GBs a leak shows.
        settled = 1.10 * self.rss + 16 * MIB
        deadline = time.time() + 20
        while rss(self.pid) > settled and time.time() < deadline:
            for _ in range(25):
                self.predict()
                requests.post(f"{self.url}/v1/models/half_plus_two:predict", json={"instances": [1.0]})
            time.sleep(0.2)
        assert rss(self.pid) <= settled, (rss(self.pid) / MIB, self.rss / MIB)

    def assert_peak_below(self, before, limit, what):
        grown = peak(self.pid) - before
        assert grown <= limit, f"{what}: peak RSS grew by {grown / MIB:.0f} MiB"


@pytest.fixture(scope="module")
def target():
    s = Server(f"--request_memory_budget_bytes={BUDGET}", "--rest_header_read_timeout_seconds=2",
               "--handshake_timeout_seconds=2", rest=True)
    t = Target(s)
    yield t
    t.channel.close()
    assert s.stop() == 0, s.stderr()


def test_a_44_byte_typed_fill_bomb_is_refused_before_allocation(target):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "half_plus_two"
    t = req.inputs["x"]
    t.dtype = types_pb2.DT_FLOAT
    t.tensor_shape.dim.add(size=500_000_000)
    t.float_val.append(1.0)
    assert len(req.SerializeToString()) <= 44
    before = peak(target.pid)
    errors = []

    def send():
        try:
            target.stub.Predict(req, 10)
        except grpc.RpcError as e:
            errors.append(e)

    threads = [threading.Thread(target=send) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(errors) == 3
    for e in errors:
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
        assert "per-request memory budget of 268435456 bytes" in e.details(), e.details()
        assert "filling float values of shape [500000000]" in e.details(), e.details()
    target.assert_peak_below(before, 16 * MIB, "three fill bombs")
    target.assert_healthy()


def test_decode_amplification_is_charged_before_decoding(target):
    before = peak(target.pid)
    # 13 MB of input names: about 1.1 M empty map entries, each a key and a TensorProto.
    names = b"".join(map_entry(2, f"{i:07d}") for i in range(1_100_000))
    with pytest.raises(grpc.RpcError) as e:
        raw_call(target.channel)(names, timeout=30)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
    assert "decoding the request" in e.value.details(), e.value.details()
    # 30 M empty strings in one string tensor: 60 MB on the wire, ~2 GB once decoded.
    tensor = b"\x38\x07" + b"\x42\x00" * 30_000_000  # dtype DT_STRING, string_val ""...
    with pytest.raises(grpc.RpcError) as e:
        raw_call(target.channel)(map_entry(2, "x", tensor), timeout=60)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
    target.assert_peak_below(before, 2 * BUDGET, "map and string amplification")
    target.assert_healthy()


def test_a_large_tensor_content_is_refused_while_it_arrives(target):
    before = peak(target.pid)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "half_plus_two"
    t = req.inputs["x"]
    t.dtype = types_pb2.DT_FLOAT
    t.tensor_shape.dim.add(size=150 * MIB)
    t.tensor_content = bytes(600 * MIB)
    with pytest.raises(grpc.RpcError) as e:
        target.stub.Predict(req, 60)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
    assert "memory budget" in e.value.details(), e.value.details()
    del req, t
    target.assert_peak_below(before, BUDGET + 64 * MIB, "600 MB tensor_content")
    target.assert_healthy()


def test_undecodable_messages_are_invalid_argument(target):
    for garbage in [b"\xff\xff\xff", b"\x12\x05\x0a", os.urandom(64) + b"\x0f"]:
        with pytest.raises(grpc.RpcError) as e:
            raw_call(target.channel)(garbage, timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    target.assert_healthy()


def test_rest_bodies_are_bounded(target):
    before = peak(target.pid)
    url = target.url
    # :classify builds a JSON value tree: charged from its token count before parsing.
    examples = ",".join(['{"x": [1.0]}'] * 1_300_000)
    body = '{"examples": [' + examples + "]}"
    assert len(body) > 15_000_000
    r = requests.post(f"{url}/v1/models/half_plus_two:classify", data=body)
    assert r.status_code == 413, r.text
    assert "memory budget" in r.json()["error"]
    # A 200 MB :predict body: charged as it arrives, then per parsed value.
    big = '{"instances": [' + ",".join(["1.5"] * 50_000_000) + "]}"
    r = requests.post(f"{url}/v1/models/half_plus_two:predict", data=big)
    assert r.status_code == 413, r.text[:300]
    del big
    # :explain's perturbed copies are charged before they are made.
    rows = [[0.5] * 64 for _ in range(20_000)]
    r = requests.post(f"{url}/v1/models/digits_mlp:explain", json={"instances": rows})
    assert r.status_code == 413, r.text[:300]
    assert "explaining 20000 instances" in r.json()["error"], r.text[:300]
    # A body above the message limit is refused from its Content-Length alone.
    s = socket.create_connection(("127.0.0.1", server_port(url)))
    s.sendall(b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999999\r\n\r\n")
    assert b" 413 " in s.recv(4096).split(b"\r\n")[0]
    s.close()
    target.assert_peak_below(before, 2 * BUDGET + 64 * MIB, "REST bodies")
    target.assert_healthy()


def server_port(url):
    return int(url.rsplit(":", 1)[1])


def test_slow_rest_clients_are_dropped(target):
    port = server_port(target.url)
    slow = []
    for _ in range(500):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nhost: x\r\n")
        slow.append(s)
    # Others are served meanwhile.
    target.assert_healthy()
    time.sleep(3.5)
    for s in slow:
        assert closed_by_server(s), "a client stuck in its headers must be dropped"
        s.close()
    target.assert_healthy()


def closed_by_server(s):
    """True when the server answered (e.g. 408) and closed, or reset, the connection."""
    s.settimeout(2)
    try:
        while s.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_quiet_grpc_connections_are_closed_after_the_handshake_timeout(target):
    quiet = [socket.create_connection(("127.0.0.1", target.server.port)) for _ in range(300)]
    target.assert_healthy()
    time.sleep(3)
    for s in quiet:
        assert closed_by_server(s), "a connection that sent nothing must be closed"
        s.close()
    target.assert_healthy()


def h2_client(port):
    s = socket.create_connection(("127.0.0.1", port))
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    return s, c


def grpc_headers(path=PREDICT):
    return [(":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", path),
            ("content-type", "application/grpc"), ("te", "trailers")]


def h2_read_until(s, c, want, timeout=10):
    """Feeds received frames to `c` until an event of type `want` arrives; returns the events."""
    s.settimeout(timeout)
    events = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        data = s.recv(65536)
        if not data:
            break
        got = c.receive_data(data)
        events.extend(got)
        s.sendall(c.data_to_send())
        if any(isinstance(e, want) for e in got):
            break
    return events


def test_a_frame_header_declaring_2_gib_reserves_nothing(target):
    before = peak(target.pid)
    s, c = h2_client(target.server.port)
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, grpc_headers())
    c.send_data(sid, b"\x00\x7f\xff\xff\xff")  # uncompressed, 2,147,483,647 bytes to follow
    s.sendall(c.data_to_send())
    time.sleep(0.5)
    target.assert_peak_below(before, 16 * MIB, "a 2 GiB frame header")
    target.assert_healthy()
    # Ending the stream there gets an error, and still nothing reserved.
    c.end_stream(sid)
    s.sendall(c.data_to_send())
    events = h2_read_until(s, c, h2.events.StreamEnded)
    headers = dict(kv for e in events if isinstance(e, (h2.events.ResponseReceived, h2.events.TrailersReceived))
                   for kv in e.headers)
    assert headers.get("grpc-status") not in (None, "0"), events
    s.close()
    target.assert_peak_below(before, 16 * MIB, "a 2 GiB frame header, ended")
    target.assert_healthy()


def test_rapid_reset_does_not_disturb_others(target):
    s, c = h2_client(target.server.port)
    s.setblocking(False)
    for i in range(5000):
        try:
            # After the server's GOAWAY (the defence) the client's connection is closed: stop.
            sid = c.get_next_available_stream_id()
            c.send_headers(sid, grpc_headers())
            c.reset_stream(sid)
            s.sendall(c.data_to_send())
            data = s.recv(65536)
            if not data:
                break  # the server closed the connection: the defence
            if any(isinstance(e, h2.events.ConnectionTerminated) for e in c.receive_data(data)):
                break
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError, h2.exceptions.ProtocolError):
            break
    s.close()
    target.assert_healthy()


def test_the_in_flight_limit_turns_requests_away_and_recovers():
    s = Server("--max_in_flight_memory_bytes=67108864", rest=True)  # 64 MiB for every request together
    try:
        t = Target(s)
        port = server_port(t.url)
        # One request holds 50 MB in flight: its body is half sent.
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nhost: x\r\ncontent-length: 60000000\r\n\r\n")
        slow.sendall(b" " * 50_000_000)
        time.sleep(0.5)
        r = requests.post(f"{t.url}/v1/models/half_plus_two:predict", data=b" " * 20_000_000)
        assert r.status_code == 503, r.text
        assert "memory limit for requests in flight" in r.json()["error"]
        req = half_plus_two([1.0])
        req.inputs["x"].ClearField("float_val")
        req.inputs["x"].tensor_shape.dim[0].size = 5_000_000
        req.inputs["x"].tensor_content = bytes(20_000_000)
        with pytest.raises(grpc.RpcError) as e:
            t.stub.Predict(req, 30)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
        assert "in flight" in e.value.details()
        slow.close()
        time.sleep(0.5)
        # Once the first request is gone, the same large request is served.
        out = t.stub.Predict(req, 30)
        assert out.outputs["y"].tensor_shape.dim[0].size == 5_000_000
        t.assert_healthy()
    finally:
        s.stop()


def test_a_memory_limited_process_survives_a_huge_declared_length():
    limit = 4_000_000 * 1024  # ulimit -v 4000000

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    s = Server(preexec_fn=limit_memory)
    try:
        t = Target.__new__(Target)
        t.server, t.pid = s, s.proc.pid
        t.channel = grpc.insecure_channel(s.address)
        t.stub = prediction_service_pb2_grpc.PredictionServiceStub(t.channel)
        for _ in range(3):
            sock, c = h2_client(s.port)
            sid = c.get_next_available_stream_id()
            c.send_headers(sid, grpc_headers())
            c.send_data(sid, b"\x00\x7f\xff\xff\xff", end_stream=True)
            sock.sendall(c.data_to_send())
            h2_read_until(sock, c, h2.events.StreamEnded)
            sock.close()
        assert s.proc.poll() is None, s.stderr()
        t.predict()
        t.channel.close()
    finally:
        assert s.stop() == 0, s.stderr()


def test_descriptor_exhaustion_is_logged_and_does_not_spin():
    def few_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    s = Server("--max_connections=10000", "--handshake_timeout_seconds=0", preexec_fn=few_files)
    held = []
    try:
        for _ in range(300):
            held.append(socket.create_connection(("127.0.0.1", s.port)))
        time.sleep(0.5)
        cpu = cpu_seconds(s.proc.pid)
        time.sleep(2)
        spent = cpu_seconds(s.proc.pid) - cpu
        assert spent < 0.3, f"the accept loop spent {spent:.2f} s of CPU in 2 s"
        assert "cannot accept connections" in s.stderr()
        for sock in held:
            sock.close()
        held.clear()
        time.sleep(1)
        with grpc.insecure_channel(s.address) as ch:
            out = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(half_plus_two([2.0]), 10)
            assert list(out.outputs["y"].float_val) == [3.0]
    finally:
        for sock in held:
            sock.close()
        s.stop()


def test_a_connection_cap_refuses_clearly_and_recovers():
    s = Server("--max_connections=20", rest=True)
    held = []
    try:
        port = server_port(s.rest_url)
        for _ in range(20):
            held.append(socket.create_connection(("127.0.0.1", port)))
        extra = socket.create_connection(("127.0.0.1", port))
        extra.settimeout(5)
        assert extra.recv(4096).startswith(b"HTTP/1.1 503"), "a connection over the cap is told so"
        extra.close()
        assert "connections are open, the limit (--max_connections)" in s.stderr()
        for sock in held:
            sock.close()
        held.clear()
        time.sleep(0.5)
        assert requests.post(f"{s.rest_url}/v1/models/half_plus_two:predict", json={"instances": [1.0]}).ok
    finally:
        for sock in held:
            sock.close()
        s.stop()


def health(address):
    with grpc.insecure_channel(address) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status


def test_sigterm_drains_then_exits_whatever_peers_do():
    s = Server("--drain_seconds=2", "--shutdown_grace_seconds=2", rest=True)
    quiet = []
    try:
        # An idle TCP connection, an HTTP/2 stream left open, a half-sent REST request.
        quiet.append(socket.create_connection(("127.0.0.1", s.port)))
        sock, c = h2_client(s.port)
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, grpc_headers())
        c.send_data(sid, b"\x00\x00\x00\x00\x10")
        sock.sendall(c.data_to_send())
        quiet.append(sock)
        half = socket.create_connection(("127.0.0.1", server_port(s.rest_url)))
        half.sendall(b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
        quiet.append(half)
        assert health(s.address) == health_pb2.HealthCheckResponse.SERVING
        start = time.time()
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # Draining: health says NOT_SERVING, KServe readiness is false, requests are served.
        assert health(s.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        status = requests.get(f"{s.rest_url}/v1/models/half_plus_two").json()
        assert status["ready"] is False and status["model_version_status"][0]["state"] == "AVAILABLE"
        with grpc.insecure_channel(s.address) as ch:
            out = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(half_plus_two([4.0]), 5)
            assert list(out.outputs["y"].float_val) == [4.0]
        code = s.proc.wait(10)
        took = time.time() - start
        assert code == 0, s.stderr()
        assert 2 <= took <= 2 + 2 + 1.5, f"exited {took:.1f} s after SIGTERM"
    finally:
        for q in quiet:
            q.close()
        if s.proc.poll() is None:
            s.proc.kill()


def test_explain_obeys_the_rest_timeout():
    s = Server("--rest_api_timeout_in_ms=100", rest=True)
    try:
        rows = [[0.5] * 64 for _ in range(20_000)]
        start = time.time()
        r = requests.post(f"{s.rest_url}/v1/models/digits_mlp:explain", json={"instances": rows})
        took = time.time() - start
        assert r.status_code in (200, 504), r.text[:300]
        if r.status_code == 200:
            assert took < 1.0, f"a 200 after {took:.1f} s with a 100 ms timeout"
        else:
            assert "Deadline exceeded" in r.json()["error"]
    finally:
        s.stop()


def test_message_limit_and_compression_are_clear():
    s = Server("--max_message_size_bytes=1000000")
    try:
        with grpc.insecure_channel(s.address, compression=grpc.Compression.Gzip) as ch:
            with pytest.raises(grpc.RpcError) as e:
                prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(half_plus_two([1.0]), 5)
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "gzip" in e.value.details()
        big = half_plus_two([1.0])
        big.inputs["x"].ClearField("float_val")
        big.inputs["x"].tensor_shape.dim[0].size = 1 << 20
        big.inputs["x"].tensor_content = bytes(4 << 20)
        with grpc.insecure_channel(s.address, options=[("grpc.max_send_message_length", -1)]) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            with pytest.raises(grpc.RpcError) as e:
                stub.Predict(big, 5)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert e.value.details().startswith("Received message larger than max (4194")
            assert list(stub.Predict(half_plus_two([2.0]), 5).outputs["y"].float_val) == [3.0]
    finally:
        s.stop()
