"""TLS and mTLS on both ports (--ssl_config_file, --rest_api_ssl_config_file): the official
client over grpc.ssl_channel_credentials and curl with --cacert/--cert get real answers; a wrong
CA, a missing or foreign client certificate and plaintext are refused, and the server serves on.
Certificates are made per run by the make_certs example: no key is committed."""
import json
import os
import shutil
import subprocess

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from conftest import BIN, Server

MAKE_CERTS = os.path.join(os.path.dirname(BIN), "examples", "make_certs")
HALF_PLUS_TWO = {"instances": [1.0, 2.0, 5.0]}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    assert os.path.exists(MAKE_CERTS), f"{MAKE_CERTS} missing: cargo build --release --examples"
    d = tmp_path_factory.mktemp("pki")
    subprocess.run([MAKE_CERTS, str(d)], check=True, capture_output=True)
    read = lambda name: (d / name).read_text()

    def ssl_config(name, client_verify):
        # Text format takes JSON's string escapes for the PEM's newlines.
        text = (f"server_key: {json.dumps(read('server.key'))}\n"
                f"server_cert: {json.dumps(read('server.pem'))}\n"
                f"custom_ca: {json.dumps(read('ca.pem'))}\n"
                f"client_verify: {'true' if client_verify else 'false'}\n")
        (d / name).write_text(text)
        return str(d / name)

    return {"dir": d, "read": read, "tls": ssl_config("tls.config", False), "mtls": ssl_config("mtls.config", True)}


def tls_server(config):
    s = Server(f"--ssl_config_file={config}", f"--rest_api_ssl_config_file={config}", rest=True, tls=True)
    s.rest_url = f"https://127.0.0.1:{s.rest_port}"
    return s


@pytest.fixture(scope="module")
def tls(pki):
    s = tls_server(pki["tls"])
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def mtls(pki):
    s = tls_server(pki["mtls"])
    yield s
    assert s.stop() == 0


def predict(channel):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "half_plus_two"
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0, 2.0, 5.0], np.float32)))
    resp = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(req, 10)
    return tf.make_ndarray(resp.outputs["y"]).tolist()


def secure(server, pki, ca="ca.pem", client=None):
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki["read"](ca).encode(),
        private_key=pki["read"](f"{client}.key").encode() if client else None,
        certificate_chain=pki["read"](f"{client}.pem").encode() if client else None)
    return grpc.secure_channel(server.address, creds)


def refused(channel):
    with channel, pytest.raises(grpc.RpcError) as e:
        predict(channel)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
    return e.value


def curl(*args):
    assert shutil.which("curl"), "curl is needed for the REST TLS tests"
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True)


def curl_predict(server, *args):
    return curl(*args, "-H", "content-type: application/json", "-d", json.dumps(HALF_PLUS_TWO),
                f"{server.rest_url}/v1/models/half_plus_two:predict")


def test_official_client_over_tls(tls, pki):
    with secure(tls, pki) as ch:
        assert predict(ch) == [2.5, 3.0, 4.5]


def test_grpc_wrong_ca_and_plaintext_are_refused(tls, pki):
    refused(secure(tls, pki, ca="other_ca.pem"))
    refused(grpc.insecure_channel(tls.address))
    with secure(tls, pki) as ch:
        assert predict(ch) == [2.5, 3.0, 4.5], "the port serves on after refusing"


def test_curl_over_tls(tls, pki):
    d = pki["dir"]
    ok = curl_predict(tls, "--cacert", str(d / "ca.pem"))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"predictions": [2.5, 3.0, 4.5]}
    # curl's exit code 60: the peer's certificate is not signed by the CA it was given.
    wrong = curl_predict(tls, "--cacert", str(d / "other_ca.pem"))
    assert wrong.returncode == 60, (wrong.returncode, wrong.stderr)
    plain = curl_predict(tls, "--http1.1")
    assert plain.returncode != 0
    plain = curl("--http1.1", f"http://127.0.0.1:{tls.rest_port}/v1/models/half_plus_two")
    assert plain.returncode != 0 and "2.5" not in plain.stdout, (plain.returncode, plain.stdout)
    again = curl("--cacert", str(d / "ca.pem"), f"{tls.rest_url}/v1/models/half_plus_two")
    assert again.returncode == 0 and json.loads(again.stdout)["model_version_status"][0]["state"] == "AVAILABLE"


def test_official_client_over_mtls(mtls, pki):
    with secure(mtls, pki, client="client") as ch:
        assert predict(ch) == [2.5, 3.0, 4.5]


def test_mtls_refuses_clients_without_a_trusted_certificate(mtls, pki):
    refused(secure(mtls, pki))
    refused(secure(mtls, pki, client="other_client"))
    refused(grpc.insecure_channel(mtls.address))
    with secure(mtls, pki, client="client") as ch:
        assert predict(ch) == [2.5, 3.0, 4.5]


def test_curl_over_mtls(mtls, pki):
    d = pki["dir"]
    ok = curl_predict(mtls, "--cacert", str(d / "ca.pem"), "--cert", str(d / "client.pem"),
                      "--key", str(d / "client.key"))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"predictions": [2.5, 3.0, 4.5]}
    without = curl_predict(mtls, "--cacert", str(d / "ca.pem"))
    assert without.returncode != 0 and "predictions" not in without.stdout, (without.returncode, without.stdout)
    foreign = curl_predict(mtls, "--cacert", str(d / "ca.pem"), "--cert", str(d / "other_client.pem"),
                           "--key", str(d / "other_client.key"))
    assert foreign.returncode != 0 and "predictions" not in foreign.stdout, (foreign.returncode, foreign.stdout)


def test_bad_ssl_config_stops_start_up_with_the_reason(pki, tmp_path):
    bad = tmp_path / "bad.config"
    bad.write_text(f"server_cert: {json.dumps(pki['read']('server.pem'))}\n"
                   f"server_key: {json.dumps(pki['read']('client.key'))}\n")
    proc = subprocess.run([BIN, f"--ssl_config_file={bad}", "--port=0"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "server_key does not fit server_cert" in proc.stderr, proc.stderr
    no_ca = tmp_path / "no_ca.config"
    no_ca.write_text(f"server_cert: {json.dumps(pki['read']('server.pem'))}\n"
                     f"server_key: {json.dumps(pki['read']('server.key'))}\nclient_verify: true\n")
    proc = subprocess.run([BIN, f"--ssl_config_file={no_ca}", "--port=0"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "client_verify needs custom_ca" in proc.stderr, proc.stderr
