"""Prometheus metrics: TF Serving's series count exactly the requests sent on every front end,
`promtool check metrics` parses the exposition, and a real Prometheus scrapes it."""
import os
import re
import shutil
import subprocess
import tempfile
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_service_pb2_grpc

from conftest import Server, free_port

REQUIRE = os.environ.get("TENSORSERVE_REQUIRE_PROMETHEUS") == "1"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(url):
    r = requests.get(url, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return r.text


def samples(text):
    """{(name, frozenset(labels)): value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(s, name, **labels):
    want = frozenset(labels.items())
    return sum(v for (n, l), v in s.items() if n == name and want <= l)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    d = tmp_path_factory.mktemp("monitoring")
    config = d / "monitoring.config"
    config.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n')
    s = Server(f"--monitoring_config_file={config}", "--monitoring_per_version_labels", rest=True)
    s.metrics_url = f"{s.rest_url}/monitoring/prometheus/metrics"
    yield s
    s.stop()


def grpc_predict(address, model, x):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(x, np.float32)))
    with grpc.insecure_channel(address) as ch:
        return prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, 10)


def test_counts_equal_the_requests_sent(monitored):
    before = samples(scrape(monitored.metrics_url))
    grpc_ok, rest_ok, bad, examples = 7, 5, 3, [4, 2]
    for i in range(grpc_ok):
        assert grpc_predict(monitored.address, "half_plus_two", [[float(i)]]).outputs["y"].float_val[0] == 0.5 * i + 2
    for i in range(rest_ok):
        r = requests.post(f"{monitored.rest_url}/v1/models/half_plus_two:predict", json={"instances": [[1.0]]})
        assert r.status_code == 200
    for _ in range(bad):  # a wrong dtype: INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError):
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "half_plus_two"
            req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1]], np.int32)))
            with grpc.insecure_channel(monitored.address) as ch:
                prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, 10)
    with grpc.insecure_channel(monitored.address) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        for n in examples:
            req = classification_pb2.ClassificationRequest()
            req.model_spec.name = "half_plus_two"
            req.model_spec.signature_name = "classify_x_to_y"
            for i in range(n):
                req.input.example_list.examples.add().features.feature["x"].float_list.value.append(float(i))
            stub.Classify(req, 10)
    # V2 over REST, and a model nobody serves (counted under an empty name, not a new series).
    r = requests.post(f"{monitored.rest_url}/v2/models/half_plus_two/infer",
                      json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [3.0]}]})
    assert r.status_code == 200
    requests.post(f"{monitored.rest_url}/v1/models/no_such_model_{os.getpid()}:predict", json={"instances": [1]})
    after = samples(scrape(monitored.metrics_url))

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    count = ":tensorflow:serving:request_count"
    assert delta(count, model_name="half_plus_two", status="OK") == grpc_ok + rest_ok + len(examples) + 1
    assert delta(count, model_name="half_plus_two", status="INVALID_ARGUMENT") == bad
    assert delta(count, model_name="", status="NOT_FOUND") == 1
    assert not any(f"no_such_model_{os.getpid()}" in str(k) for k in after)
    latency = ":tensorflow:serving:request_latency_count"
    assert delta(latency, model_name="half_plus_two", API="predict", entrypoint="GRPC") == grpc_ok + bad
    assert delta(latency, model_name="half_plus_two", API="predict", entrypoint="REST") == rest_ok
    assert delta(latency, model_name="half_plus_two", API="classify", entrypoint="GRPC") == len(examples)
    assert delta(latency, model_name="half_plus_two", API="infer", entrypoint="REST") == 1
    # TF Serving's bucket layout: 33 buckets from 10 us by 1.8x, plus +Inf.
    les = sorted({dict(k[1])["le"] for k in after if k[0] == ":tensorflow:serving:request_latency_bucket"},
                 key=lambda v: float(v))
    assert len(les) == 34 and float(les[0]) == 10 and abs(float(les[1]) - 18) < 1e-9 and les[-1] == "+Inf"
    runtime = ":tensorflow:serving:runtime_latency_count"
    # The bad requests never reached the model; V2 infer runs as predict in the core.
    assert delta(runtime, model_name="half_plus_two", API="predict") == grpc_ok + rest_ok
    assert delta(runtime, model_name="half_plus_two", API="infer") == 1
    assert delta(":tensorflow:serving:request_example_count_total", model="half_plus_two") == sum(examples)
    assert delta(":tensorflow:serving:request_example_counts_count", model="half_plus_two") == len(examples)
    # Ours: per version and signature, in flight, versions by state.
    assert delta("tensorserve_requests_total", model_name="half_plus_two", version="123",
                 signature="classify_x_to_y", status="OK") == len(examples)
    assert value(after, "tensorserve_requests_in_flight", model_name="half_plus_two") == 0
    assert value(after, "tensorserve_model_versions", model_name="iris", state="AVAILABLE") == 1
    assert value(after, "process_resident_memory_bytes") > 0


def test_promtool_parses_the_exposition(monitored):
    promtool = shutil.which("promtool")
    if promtool is None:
        if REQUIRE:
            pytest.fail("promtool not found (apt-get install prometheus)")
        pytest.skip("promtool not found (apt-get install prometheus)")
    text = scrape(monitored.metrics_url)
    run = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    # 0: clean; 3: lint findings only (1 would be a parse error). The only findings allowed are
    # the ones TF Serving's own names carry (colons, a counter named request_count).
    assert run.returncode in (0, 3), run.stdout + run.stderr
    findings = [l for l in (run.stdout + run.stderr).splitlines() if l.strip()]
    assert findings, "TF Serving's names always draw promtool's naming findings"
    for line in findings:
        assert line.startswith(":tensorflow:"), f"a finding on our own series: {line}"


def test_a_real_prometheus_scrapes_it(monitored):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        if REQUIRE:
            pytest.fail("prometheus not found (apt-get install prometheus)")
        pytest.skip("prometheus not found (apt-get install prometheus)")
    d = tempfile.mkdtemp()
    port = free_port()
    with open(os.path.join(d, "prometheus.yml"), "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: tensorserve
    metrics_path: /monitoring/prometheus/metrics
    static_configs:
      - targets: ["127.0.0.1:{monitored.rest_port}"]
""")
    proc = subprocess.Popen([prometheus, f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/data",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        grpc_predict(monitored.address, "half_plus_two", [[1.0]])
        deadline, result = time.time() + 60, None
        while time.time() < deadline:
            try:
                targets = requests.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=2).json()
                active = targets["data"]["activeTargets"]
                if active and active[0]["health"] == "up":
                    q = requests.get(f"http://127.0.0.1:{port}/api/v1/query",
                                     params={"query": '{__name__=":tensorflow:serving:request_count",'
                                                      'model_name="half_plus_two",status="OK"}'}, timeout=2).json()
                    if q["data"]["result"]:
                        result = q["data"]["result"]
                        break
            except (requests.RequestException, KeyError, ValueError):
                pass
            time.sleep(0.5)
        assert result, "Prometheus never scraped tensorserve successfully"
        assert float(result[0]["value"][1]) >= 1
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(d, ignore_errors=True)


def test_metrics_are_off_without_the_config(server):
    r = requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=10)
    assert r.status_code == 400
