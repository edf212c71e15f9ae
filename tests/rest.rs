//! The REST API end to end: TF Serving's routes and KServe V1 over plain HTTP/1.1 on 127.0.0.1.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};
use tensorserve::api::rest::{router, RestOptions};
use tensorserve::model::{ModelRegistry, ServableState, Signature, TensorMap, TensorSpec};
use tensorserve::serving::{ServingCore, ServingOptions};
use tensorserve::{DataType, Model, ServingError, Tensor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// y = 2*x0 + x1; x2 is ignored, so the explainer must give it 0.
struct Linear(BTreeMap<String, Signature>);

impl Linear {
    fn new() -> Self {
        let sig = Signature::predict(
            [("x".to_string(), TensorSpec::new("x", DataType::Float, &[-1, 3]))],
            [("y".to_string(), TensorSpec::new("y", DataType::Float, &[-1]))],
        );
        Linear(BTreeMap::from([("serving_default".to_string(), sig)]))
    }
}

impl Model for Linear {
    fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.0
    }
    fn run(&self, _: &str, inputs: TensorMap, _: &[String]) -> Result<TensorMap, ServingError> {
        let x = inputs["x"].view::<f32>().unwrap();
        let y: Vec<f32> = x.outer_iter().map(|r| 2.0 * r[0] + r[1]).collect();
        Ok(TensorMap::from([("y".to_string(), Tensor::from_vec(vec![y.len()], y).unwrap())]))
    }
}

/// Two named inputs (a float, s string) and two outputs, to exercise objects and b64.
struct Named(BTreeMap<String, Signature>);

impl Named {
    fn new() -> Self {
        let sig = Signature::predict(
            [
                ("a".to_string(), TensorSpec::new("a", DataType::Float, &[-1])),
                ("s".to_string(), TensorSpec::new("s", DataType::String, &[-1])),
            ],
            [
                ("double".to_string(), TensorSpec::new("double", DataType::Float, &[-1])),
                ("echo_bytes".to_string(), TensorSpec::new("echo_bytes", DataType::String, &[-1])),
            ],
        );
        Named(BTreeMap::from([("serving_default".to_string(), sig)]))
    }
}

impl Model for Named {
    fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.0
    }
    fn run(&self, _: &str, mut inputs: TensorMap, _: &[String]) -> Result<TensorMap, ServingError> {
        let a: Vec<f32> = inputs["a"].as_slice::<f32>().unwrap().iter().map(|v| v * 2.0).collect();
        let s = inputs.remove("s").unwrap();
        Ok(TensorMap::from([
            ("double".to_string(), Tensor::from_vec(vec![a.len()], a).unwrap()),
            ("echo_bytes".to_string(), s),
        ]))
    }
}

async fn start() -> std::net::SocketAddr {
    let registry = Arc::new(ModelRegistry::new());
    common::register_bundled(&registry);
    registry.insert("linear", 1, Arc::new(Linear::new()));
    registry.insert("named", 1, Arc::new(Named::new()));
    registry.set_labels("half_plus_two", [("stable".to_string(), 123)].into_iter().collect());
    registry.set_status("loading", 1, ServableState::Loading, None);
    let core = Arc::new(ServingCore::new(registry, ServingOptions::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(core, RestOptions { cors: true, ..Default::default() });
    tokio::spawn(tensorserve::server::serve_rest(listener, app, Default::default(), std::future::pending()));
    addr
}

/// A minimal HTTP/1.1 client: one request per connection.
async fn call(addr: std::net::SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    // curl's default form content type, as KServe's samples send it.
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

async fn json_call(addr: std::net::SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, _, body) = call(addr, method, path, body).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

#[tokio::test]
async fn tf_serving_golden_predict_cases() {
    let addr = start().await;
    let (s, _, body) =
        call(addr, "POST", "/v1/models/half_plus_two:predict", Some(r#"{"instances": [2, 3, 4]}"#)).await;
    assert_eq!((s, body.as_str()), (200, r#"{"predictions": [3.0, 3.5, 4.0]}"#));
    let (s, _, body) = call(addr, "POST", "/v1/models/half_plus_two:predict", Some(r#"{"inputs": [2, 3, 4]}"#)).await;
    assert_eq!((s, body.as_str()), (200, r#"{"outputs": [3.0, 3.5, 4.0]}"#));
    let (s, _, body) =
        call(addr, "POST", "/v1/models/half_plus_two:predict", Some(r#"{"instances": [[1.0, 2.0], [3.0, 4.0]]}"#))
            .await;
    assert_eq!((s, body.as_str()), (200, r#"{"predictions": [[2.5, 3.0], [3.5, 4.0]]}"#));
    for path in ["/v1/models/half_plus_two/versions/123:predict", "/v1/models/half_plus_two/labels/stable:predict"] {
        let (s, v) =
            json_call(addr, "POST", path, Some(r#"{"signature_name": "serving_default", "instances": [[2.0]]}"#)).await;
        assert_eq!((s, v), (200, json!({"predictions": [[3.0]]})));
    }
    let (s, _, body) =
        call(addr, "POST", "/v1/models/half_plus_two:predict", Some(r#"{"instances": [NaN, Infinity]}"#)).await;
    assert_eq!((s, body.as_str()), (200, r#"{"predictions": [NaN, Infinity]}"#));
}

#[tokio::test]
async fn named_inputs_b64_and_several_outputs() {
    let addr = start().await;
    let body = r#"{"instances": [{"a": 1.5, "s": {"b64": "aGk="}}, {"a": 2, "s": "yo"}]}"#;
    let (s, v) = json_call(addr, "POST", "/v1/models/named:predict", Some(body)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"predictions": [{"double": 3.0, "echo_bytes": {"b64": "aGk="}}, {"double": 4.0, "echo_bytes": {"b64": "eW8="}}]})
    );
    let body = r#"{"inputs": {"a": [1], "s": ["z"]}}"#;
    let (s, v) = json_call(addr, "POST", "/v1/models/named:predict", Some(body)).await;
    assert_eq!((s, v), (200, json!({"outputs": {"double": [2.0], "echo_bytes": [{"b64": "eg=="}]}})));
}

#[tokio::test]
async fn status_metadata_list_and_ready() {
    let addr = start().await;
    let (s, v) = json_call(addr, "GET", "/v1/models/half_plus_two", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["name"], "half_plus_two");
    assert_eq!(v["ready"], true);
    // Beside TF Serving's fields, the engine serving the version.
    let mut versions = v["model_version_status"].clone();
    let engine = versions[0].as_object_mut().unwrap().remove("engine").unwrap();
    assert!(engine == "tract" || engine == "onnxruntime", "{engine}");
    assert_eq!(
        versions,
        json!([{"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}])
    );
    let (s, v) = json_call(addr, "GET", "/v1/models/half_plus_two/versions/123", None).await;
    assert_eq!((s, v["ready"].clone()), (200, json!(true)));
    let (s, v) = json_call(addr, "GET", "/v1/models", None).await;
    assert_eq!(
        (s, v),
        (200, json!({"models": ["digits_image", "digits_mlp", "half_plus_two", "iris", "linear", "loading", "named"]}))
    );
    let (s, v) = json_call(addr, "GET", "/v1/models/half_plus_two/metadata", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["model_spec"], json!({"name": "half_plus_two", "signature_name": "", "version": "123"}));
    let x = &v["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["x"];
    assert_eq!(x["dtype"], "DT_FLOAT");
    assert_eq!(x["tensor_shape"]["dim"][0]["size"], "-1");
    assert!(["tract", "onnxruntime"].contains(&v["metadata"]["engine"].as_str().unwrap()), "{v}");
    let (s, v) = json_call(addr, "GET", "/", None).await;
    assert_eq!((s, v), (200, json!({"status": "alive"})));
}

#[tokio::test]
async fn a_loading_model_is_503_and_unknown_is_404() {
    let addr = start().await;
    let (s, v) = json_call(addr, "GET", "/v1/models/loading", None).await;
    assert_eq!((s, v["ready"].clone()), (503, json!(false)));
    let (s, _) = json_call(addr, "POST", "/v1/models/loading:predict", Some(r#"{"instances": [1]}"#)).await;
    assert_eq!(s, 503);
    let (s, _) = json_call(addr, "POST", "/v1/models/loading:explain", Some(r#"{"instances": [1]}"#)).await;
    assert_eq!(s, 503);
    let (s, v) = json_call(addr, "GET", "/v1/models/nope", None).await;
    assert_eq!((s, v["error"].clone()), (404, json!("Could not find any versions of model nope")));
    let (s, v) = json_call(addr, "POST", "/v1/models/nope:predict", Some(r#"{"instances": [1]}"#)).await;
    assert_eq!((s, v["error"].clone()), (404, json!("Servable not found for request: Latest(nope)")));
    let (s, _) =
        json_call(addr, "POST", "/v1/models/half_plus_two/versions/99:predict", Some(r#"{"instances": [1]}"#)).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn errors_carry_tf_serving_status_and_message() {
    let addr = start().await;
    let p = "/v1/models/half_plus_two:predict";
    let cases: Vec<(&str, &str, u16, &str)> = vec![
        ("POST", "", 400, "JSON Parse error: The document is empty"),
        (
            "POST",
            r#"{"instances": [1], "inputs": [1]}"#,
            400,
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist",
        ),
        ("POST", r#"{"foo": 1}"#, 400, "Missing 'inputs' or 'instances' key"),
        (
            "POST",
            r#"{"signature_name": "foo", "instances": [1]}"#,
            400,
            "Serving signature name: \"foo\" not found in signature def",
        ),
    ];
    for (method, body, status, message) in cases {
        let (s, v) = json_call(addr, method, p, Some(body)).await;
        assert_eq!((s, v["error"].as_str().unwrap()), (status, message));
    }
    let (s, v) = json_call(addr, "POST", p, Some(r#"{"instances": ["x"]}"#)).await;
    assert_eq!(s, 400);
    assert!(
        v["error"].as_str().unwrap().contains("JSON Value: \"x\" Type: String is not of expected type: float"),
        "{v}"
    );
    let (s, _) = json_call(addr, "POST", p, Some(r#"{"instances": [[1, 2], [3]]}"#)).await;
    assert_eq!(s, 400);
    let (s, v) = json_call(addr, "GET", "/v1/foo", None).await;
    assert_eq!((s, v["error"].clone()), (400, json!("Malformed request: GET /v1/foo")));
    let (s, v) = json_call(addr, "POST", "/v1/models/half_plus_two:classify", Some(r#"{"examples": []}"#)).await;
    assert_eq!((s, v["error"].clone()), (400, json!("Input is empty.")));
    let (s, head, _) = call(addr, "OPTIONS", p, None).await;
    assert_eq!(s, 204);
    assert!(head.to_ascii_lowercase().contains("access-control-allow-origin: *"));
}

#[tokio::test]
async fn explain_scores_sum_to_one_and_ignore_unused_features() {
    let addr = start().await;
    let (s, v) =
        json_call(addr, "POST", "/v1/models/linear:explain", Some(r#"{"instances": [[1, 1, 5], [0, 3, 1]]}"#)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["predictions"], json!([3.0, 3.0]));
    let rows = v["explanations"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let scores: Vec<f64> =
        rows[0]["importance_scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(scores.len(), 3);
    assert!((scores.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert!((scores[0] - 2.0 / 3.0).abs() < 1e-9 && (scores[1] - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(scores[2], 0.0, "x2 is ignored by the model");
    let second: Vec<f64> =
        rows[1]["importance_scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(second, vec![0.0, 1.0, 0.0]);
    // Works for a bundled ONNX model too (64 features, one per pixel).
    let x: Vec<f32> = (0..64).map(|i| (i % 16) as f32 / 16.0).collect();
    let (s, v) =
        json_call(addr, "POST", "/v1/models/digits_mlp:explain", Some(&json!({"instances": [x]}).to_string())).await;
    assert_eq!(s, 200, "{v}");
    let scores = v["explanations"][0]["importance_scores"].as_array().unwrap();
    assert_eq!(scores.len(), 64);
    let total: f64 = scores.iter().map(|x| x.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-6);
}

/// Sleeps past the REST timeout.
struct Slow(BTreeMap<String, Signature>);

impl Model for Slow {
    fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.0
    }
    fn run(&self, _: &str, inputs: TensorMap, _: &[String]) -> Result<TensorMap, ServingError> {
        std::thread::sleep(std::time::Duration::from_millis(300));
        Ok(TensorMap::from([("y".to_string(), inputs["x"].clone())]))
    }
}

#[tokio::test]
async fn a_slow_model_gets_504_after_the_rest_timeout() {
    let registry = Arc::new(ModelRegistry::new());
    let sig = Signature::predict(
        [("x".to_string(), TensorSpec::new("x", DataType::Float, &[-1]))],
        [("y".to_string(), TensorSpec::new("y", DataType::Float, &[-1]))],
    );
    registry.insert("slow", 1, Arc::new(Slow(BTreeMap::from([("serving_default".to_string(), sig)]))));
    let core = Arc::new(ServingCore::new(registry, ServingOptions::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(core, RestOptions { timeout: std::time::Duration::from_millis(50), ..Default::default() });
    tokio::spawn(tensorserve::server::serve_rest(listener, app, Default::default(), std::future::pending()));
    let (s, v) = json_call(addr, "POST", "/v1/models/slow:predict", Some(r#"{"instances": [1]}"#)).await;
    assert_eq!(s, 504, "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("Deadline exceeded"));
}
