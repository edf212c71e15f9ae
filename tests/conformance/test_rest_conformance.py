"""TF Serving's REST golden cases and KServe's V1 protocol table, over plain HTTP."""
import os
import requests


def test_tf_serving_rest_golden_cases(server):
    u = server.rest_url
    r = requests.post(f"{u}/v1/models/half_plus_two:predict", data='{"instances": [2, 3, 4]}', timeout=10)
    assert r.status_code == 200 and r.text == '{"predictions": [3.0, 3.5, 4.0]}', r.text
    assert r.headers["content-type"] == "application/json"
    r = requests.post(f"{u}/v1/models/half_plus_two:predict", json={"inputs": [2, 3, 4]}, timeout=10)
    assert r.json() == {"outputs": [3.0, 3.5, 4.0]}
    r = requests.post(f"{u}/v1/models/half_plus_two:predict", json={"instances": [[1.0, 2.0], [3.0, 4.0]]}, timeout=10)
    assert r.json() == {"predictions": [[2.5, 3.0], [3.5, 4.0]]}
    r = requests.post(f"{u}/v1/models/half_plus_two/versions/123:predict", json={"instances": [[2.0]]}, timeout=10)
    assert r.json() == {"predictions": [[3.0]]}
    r = requests.get(f"{u}/v1/models/half_plus_two", timeout=10)
    assert r.status_code == 200
    versions = r.json()["model_version_status"]
    # TF Serving's fields, plus the engine serving the version.
    expected_engine = os.environ.get("TENSORSERVE_ONNX_ENGINE")
    engine = versions[0].pop("engine")
    assert engine in ("tract", "onnxruntime") and engine == (expected_engine or engine)
    assert versions == [{"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]
    r = requests.get(f"{u}/v1/models/half_plus_two/metadata", timeout=10)
    meta = r.json()
    assert meta["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT" and sig["method_name"] == "tensorflow/serving/predict"
    r = requests.post(f"{u}/v1/models/nope:predict", json={"instances": [1]}, timeout=10)
    assert r.status_code == 404 and "error" in r.json()
    r = requests.post(f"{u}/v1/models/half_plus_two:predict", data="", timeout=10)
    assert r.status_code == 400 and r.json() == {"error": "JSON Parse error: The document is empty"}


def test_kserve_v1_table(server):
    u = server.rest_url
    r = requests.get(f"{u}/v1/models", timeout=10)
    assert r.status_code == 200 and {"half_plus_two", "digits_mlp"} <= set(r.json()["models"])
    r = requests.get(f"{u}/v1/models/half_plus_two", timeout=10)
    assert r.json()["name"] == "half_plus_two" and r.json()["ready"] is True
    # curl's default form content type, as in KServe's samples.
    r = requests.post(f"{u}/v1/models/half_plus_two:predict", data='{"instances": [[2.0]]}',
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    assert r.json() == {"predictions": [[3.0]]}
    r = requests.post(f"{u}/v1/models/half_plus_two:explain", json={"instances": [[2.0]]}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["predictions"] == [[3.0]]
    assert body["explanations"] == [{"importance_scores": [1.0]}]
    r = requests.get(f"{u}/", timeout=10)
    assert r.json() == {"status": "alive"}
