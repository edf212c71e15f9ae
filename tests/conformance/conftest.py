"""Starts the built tensorserve binary for the conformance suite (127.0.0.1 only)."""
import os
import shutil
import socket
import subprocess
import tempfile
import time

import grpc
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("TENSORSERVE_BIN", os.path.join(ROOT, "target", "release", "tensorserve"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One tensorserve process and the address to reach it."""

    def __init__(self, *flags, rest=False, preexec_fn=None, env=None, tls=False):
        self.port = free_port()
        self.rest_port = free_port() if rest else 0
        self.rest_url = f"http://127.0.0.1:{self.rest_port}"
        self.socket_path = os.path.join(tempfile.gettempdir(), f"tensorserve-test-{os.getpid()}-{self.port}.sock")
        self.address = f"127.0.0.1:{self.port}"
        # With TLS on the TCP port, readiness is asked over the (plaintext) Unix socket.
        self.ready_address = f"unix:{self.socket_path}" if tls else self.address
        env = {**os.environ, "RUST_LOG": "warn", **(env or {})}
        cmd = [BIN, f"--port={self.port}", "--grpc_bind_address=127.0.0.1",
               f"--grpc_socket_path={self.socket_path}", f"--rest_api_port={self.rest_port}", *flags]
        # The suite runs once per engine: TENSORSERVE_ONNX_ENGINE=tract|onnxruntime (default: the server's auto).
        # Stopping is immediate unless a test asks for the drain window.
        if not any(f.startswith("--drain_seconds") for f in flags):
            cmd.append("--drain_seconds=0")
        engine = os.environ.get("TENSORSERVE_ONNX_ENGINE")
        if engine and not any(f.startswith("--onnx_engine") for f in flags):
            cmd.append(f"--onnx_engine={engine}")
        # A file, not a pipe: nobody drains a pipe, and a full one would block the server's logging.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, env=env, stderr=self.log, preexec_fn=preexec_fn)
        self.wait_ready()

    def wait_ready(self, timeout=30.0):
        # TF Serving's harness: ready once a Predict for a missing model fails naming "Servable".
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tensorserve exited: {self.stderr()}")
            try:
                # grpc-core's default authority for a unix: target ("tmp%2F...") is refused by h2.
                with grpc.insecure_channel(self.ready_address, options=[("grpc.default_authority", "localhost")]) as ch:
                    req = predict_pb2.PredictRequest()
                    req.model_spec.name = "intentionally_missing_model"
                    prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, 1.0)
            except grpc.RpcError as e:
                if "Servable" in (e.details() or ""):
                    return
            time.sleep(0.1)
        raise RuntimeError("tensorserve did not become ready in time")

    def stderr(self):
        """What the server has logged so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.proc.returncode


@pytest.fixture(scope="session")
def server():
    s = Server(rest=True)
    yield s
    assert s.stop() == 0, "SIGTERM must shut tensorserve down cleanly"


@pytest.fixture(scope="session")
def content_server():
    s = Server("--enable_serialization_as_tensor_content=true")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def base_path_server():
    base = tempfile.mkdtemp()
    shutil.copytree(os.path.join(ROOT, "examples", "models", "half_plus_two"), os.path.join(base, "half"))
    s = Server("--model_name=half", f"--model_base_path={os.path.join(base, 'half')}")
    yield s
    s.stop()
    shutil.rmtree(base)


@pytest.fixture(scope="session")
def stub(server):
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    ch = grpc.insecure_channel(server.address, options=[
        ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
    yield prediction_service_pb2_grpc.PredictionServiceStub(ch)
    ch.close()


@pytest.fixture(scope="session")
def model_stub(server):
    from tensorflow_serving.apis import model_service_pb2_grpc
    ch = grpc.insecure_channel(server.address)
    yield model_service_pb2_grpc.ModelServiceStub(ch)
    ch.close()
