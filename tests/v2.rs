//! KServe V2 / Open Inference Protocol end to end: REST (JSON and the binary tensor extension)
//! and gRPC (raw and typed contents), every datatype, the extensions and the errors.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};
use tensorserve::api::rest::{router, RestOptions};
use tensorserve::model::{ModelRegistry, ServableState, Signature, TensorMap, TensorSpec};
use tensorserve::proto::inference as pb;
use tensorserve::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use tensorserve::server::{GrpcServices, DEFAULT_MAX_MESSAGE_SIZE};
use tensorserve::serving::{ServingCore, ServingOptions};
use tensorserve::{DataType, Model, ServingError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers its input `x` unchanged as `y`, for one dtype.
struct Echo(BTreeMap<String, Signature>);

impl Echo {
    fn new(dtype: DataType) -> Self {
        let sig = Signature::predict(
            [("x".to_string(), TensorSpec::new("x", dtype, &[-1]))],
            [("y".to_string(), TensorSpec::new("y", dtype, &[-1]))],
        );
        Echo(BTreeMap::from([("serving_default".to_string(), sig)]))
    }
}

impl Model for Echo {
    fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.0
    }
    fn run(&self, _: &str, mut inputs: TensorMap, _: &[String]) -> Result<TensorMap, ServingError> {
        Ok(TensorMap::from([("y".to_string(), inputs.remove("x").unwrap())]))
    }
}

/// Tells whether its FP32 input `x` borrows the request's bytes (`shared`) instead of a copy.
struct BorrowCheck(BTreeMap<String, Signature>);

impl BorrowCheck {
    fn new() -> Self {
        let sig = Signature::predict(
            [("x".to_string(), TensorSpec::new("x", DataType::Float, &[-1]))],
            [("shared".to_string(), TensorSpec::new("shared", DataType::Bool, &[1]))],
        );
        BorrowCheck(BTreeMap::from([("serving_default".to_string(), sig)]))
    }
}

impl Model for BorrowCheck {
    fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.0
    }
    fn run(&self, _: &str, inputs: TensorMap, _: &[String]) -> Result<TensorMap, ServingError> {
        let shared = matches!(inputs["x"].data(), tensorserve::tensor::TensorData::Float(b) if b.is_shared());
        Ok(TensorMap::from([("shared".to_string(), tensorserve::Tensor::from_bools(vec![1], vec![shared]).unwrap())]))
    }
}

/// Every V2 datatype, with the echo model serving it.
const DATATYPES: [(&str, DataType); 14] = [
    ("BOOL", DataType::Bool),
    ("UINT8", DataType::UInt8),
    ("UINT16", DataType::UInt16),
    ("UINT32", DataType::UInt32),
    ("UINT64", DataType::UInt64),
    ("INT8", DataType::Int8),
    ("INT16", DataType::Int16),
    ("INT32", DataType::Int32),
    ("INT64", DataType::Int64),
    ("FP16", DataType::Half),
    ("BF16", DataType::BFloat16),
    ("FP32", DataType::Float),
    ("FP64", DataType::Double),
    ("BYTES", DataType::String),
];

fn echo_name(datatype: &str) -> String {
    format!("echo_{}", datatype.to_ascii_lowercase())
}

fn core() -> Arc<ServingCore> {
    let registry = Arc::new(ModelRegistry::new());
    common::register_bundled(&registry);
    for (name, dtype) in DATATYPES {
        registry.insert(&echo_name(name), 1, Arc::new(Echo::new(dtype)));
    }
    registry.insert("borrow_check", 1, Arc::new(BorrowCheck::new()));
    registry.set_labels("half_plus_two", [("stable".to_string(), 123)].into_iter().collect());
    registry.set_status("loading", 1, ServableState::Loading, None);
    Arc::new(ServingCore::new(registry, ServingOptions::default()))
}

async fn start_rest(core: Arc<ServingCore>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(core, RestOptions::default());
    tokio::spawn(tensorserve::server::serve_rest(listener, app, Default::default(), std::future::pending()));
    addr
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// One HTTP/1.1 request per connection, with extra header lines.
async fn call(addr: std::net::SocketAddr, method: &str, path: &str, extra: &str, body: &[u8]) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply { status, head, body: raw[split + 4..].to_vec() }
}

async fn get(addr: std::net::SocketAddr, path: &str) -> Reply {
    call(addr, "GET", path, "", b"").await
}

async fn post(addr: std::net::SocketAddr, path: &str, body: Value) -> Reply {
    call(addr, "POST", path, "Content-Type: application/json\r\n", body.to_string().as_bytes()).await
}

/// Sample values of each datatype as JSON and as little-endian bytes.
fn sample(datatype: &str) -> (Value, Vec<u8>) {
    match datatype {
        "BOOL" => (json!([true, false, true]), vec![1, 0, 1]),
        "UINT8" => (json!([0, 7, 255]), vec![0, 7, 255]),
        "UINT16" => (json!([0, 7, 65535]), [0u16, 7, 65535].iter().flat_map(|v| v.to_le_bytes()).collect()),
        "UINT32" => (json!([0, 7, 4294967295u32]), [0u32, 7, u32::MAX].iter().flat_map(|v| v.to_le_bytes()).collect()),
        "UINT64" => (json!([0, 7, u64::MAX]), [0u64, 7, u64::MAX].iter().flat_map(|v| v.to_le_bytes()).collect()),
        "INT8" => (json!([-128, 7, 127]), [-128i8, 7, 127].iter().flat_map(|v| v.to_le_bytes()).collect()),
        "INT16" => (json!([-32768, 7, 32767]), [i16::MIN, 7, i16::MAX].iter().flat_map(|v| v.to_le_bytes()).collect()),
        "INT32" => {
            (json!([i32::MIN, 7, i32::MAX]), [i32::MIN, 7, i32::MAX].iter().flat_map(|v| v.to_le_bytes()).collect())
        }
        "INT64" => {
            (json!([i64::MIN, 7, i64::MAX]), [i64::MIN, 7, i64::MAX].iter().flat_map(|v| v.to_le_bytes()).collect())
        }
        "FP16" => {
            (Value::Null, [1.5f32, -2.0, 65504.0].iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect())
        }
        "BF16" => {
            (Value::Null, [1.5f32, -2.0, 3.0].iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect())
        }
        "FP32" => (json!([1.5, -2.0, 0.25]), [1.5f32, -2.0, 0.25].iter().flat_map(|v| v.to_le_bytes()).collect()),
        "FP64" => (json!([1.5, -2.0, 1e300]), [1.5f64, -2.0, 1e300].iter().flat_map(|v| v.to_le_bytes()).collect()),
        "BYTES" => (json!(["a", "", "héllo"]), {
            let mut out = Vec::new();
            for s in ["a", "", "héllo"] {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            out
        }),
        other => panic!("no sample for {other}"),
    }
}

#[tokio::test]
async fn rest_health_metadata_ready_and_index() {
    let addr = start_rest(core()).await;
    let r = get(addr, "/v2/health/live").await;
    assert_eq!((r.status, r.json()), (200, json!({"live": true})));
    // The `loading` model has no AVAILABLE version, so the server is not ready.
    let r = get(addr, "/v2/health/ready").await;
    assert_eq!((r.status, r.json()), (503, json!({"ready": false})));
    let r = get(addr, "/v2").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "tensorserve");
    assert!(r.json()["extensions"].as_array().unwrap().contains(&json!("binary_tensor_data")));
    let r = get(addr, "/v2/models").await;
    assert!(r.json()["models"].as_array().unwrap().contains(&json!("half_plus_two")));

    for path in [
        "/v2/models/half_plus_two",
        "/v2/models/half_plus_two/versions/123",
        "/v2/models/half_plus_two/versions/stable",
    ] {
        let r = get(addr, path).await;
        assert_eq!(r.status, 200, "{path}");
        let v = r.json();
        assert_eq!(v["name"], "half_plus_two");
        assert_eq!(v["versions"], json!(["123"]));
        assert_eq!(v["platform"], "onnx_onnxv1");
        assert_eq!(v["inputs"], json!([{"name": "x", "datatype": "FP32", "shape": [-1, 1]}]));
        assert_eq!(v["outputs"], json!([{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]));
    }
    let r = get(addr, "/v2/models/echo_bytes").await;
    assert_eq!(
        (r.json()["platform"].clone(), r.json()["inputs"][0]["datatype"].clone()),
        (json!("tensorserve_native"), json!("BYTES"))
    );

    let r = get(addr, "/v2/models/half_plus_two/ready").await;
    assert_eq!((r.status, r.json()), (200, json!({"name": "half_plus_two", "ready": true})));
    let r = get(addr, "/v2/models/half_plus_two/versions/7/ready").await;
    assert_eq!((r.status, r.json()["ready"].clone()), (503, json!(false)));
    let r = get(addr, "/v2/models/loading/ready").await;
    assert_eq!(r.status, 503);
    for path in ["/v2/models/nope", "/v2/models/nope/ready"] {
        let r = get(addr, path).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["error"].as_str().unwrap().contains("nope"));
    }
    let r = get(addr, "/v2/models/half_plus_two/versions/7").await;
    assert_eq!(r.status, 404);

    let r = post(addr, "/v2/repository/index", json!({})).await;
    assert_eq!(r.status, 200);
    let index = r.json();
    let entries = index.as_array().unwrap();
    assert!(entries.contains(&json!({"name": "half_plus_two", "version": "123", "state": "READY"})));
    assert!(entries.contains(&json!({"name": "loading", "version": "1", "state": "LOADING"})));
    let r = post(addr, "/v2/repository/index", json!({"ready": true})).await;
    assert!(!r.json().as_array().unwrap().iter().any(|e| e["name"] == "loading"));
    let r = get(addr, "/v2/unknown").await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn rest_json_infer_flat_nested_id_and_outputs() {
    let addr = start_rest(core()).await;
    let flat = json!({"id": "42", "inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [1, 2]}]});
    let r = post(addr, "/v2/models/half_plus_two/infer", flat).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({"model_name": "half_plus_two", "model_version": "123", "id": "42",
               "outputs": [{"name": "y", "datatype": "FP32", "shape": [2, 1], "data": [2.5, 3.0]}]})
    );
    let nested = json!({"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [[1], [2]]}],
                        "outputs": [{"name": "y"}]});
    let r = post(addr, "/v2/models/half_plus_two/versions/123/infer", nested).await;
    assert_eq!(r.json()["outputs"][0]["data"], json!([2.5, 3.0]));
    assert!(r.json().get("id").is_none());
    // A label names a version too.
    let body = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [4]}]});
    let r = post(addr, "/v2/models/half_plus_two/versions/stable/infer", body.clone()).await;
    assert_eq!(r.json()["outputs"][0]["data"], json!([4.0]));
    // Another signature, by parameter.
    let body = json!({"parameters": {"signature_name": "regress_x_to_y2"},
                      "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [2]}]});
    let r = post(addr, "/v2/models/half_plus_two/infer", body).await;
    assert_eq!(r.json()["outputs"], json!([{"name": "outputs", "datatype": "FP32", "shape": [1], "data": [4.0]}]));
    let body = json!({"parameters": {"signature_name": "nope"},
                      "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [2]}]});
    assert_eq!(post(addr, "/v2/models/half_plus_two/infer", body).await.status, 400);
}

#[tokio::test]
async fn rest_every_datatype_as_json_and_binary() {
    let addr = start_rest(core()).await;
    for (datatype, _) in DATATYPES {
        let (data, raw) = sample(datatype);
        let path = format!("/v2/models/{}/infer", echo_name(datatype));
        if !data.is_null() {
            let body = json!({"inputs": [{"name": "x", "shape": [3], "datatype": datatype, "data": data}]});
            let r = post(addr, &path, body).await;
            assert_eq!(r.status, 200, "{datatype}: {}", String::from_utf8_lossy(&r.body));
            let out = &r.json()["outputs"][0];
            assert_eq!((out["datatype"].as_str(), &out["data"]), (Some(datatype), &data), "{datatype}");
        }
        // Binary in, binary out (request-wide), then per output.
        for outputs in [json!(null), json!([{"name": "y", "parameters": {"binary_data": true}}])] {
            let mut header = json!({
                "inputs": [{"name": "x", "shape": [3], "datatype": datatype, "parameters": {"binary_data_size": raw.len()}}],
                "parameters": {"binary_data_output": true},
            });
            if !outputs.is_null() {
                header["outputs"] = outputs;
                header["parameters"] = json!({});
            }
            let header = header.to_string();
            let mut body = header.clone().into_bytes();
            body.extend_from_slice(&raw);
            let extra = format!(
                "Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {}\r\n",
                header.len()
            );
            let r = call(addr, "POST", &path, &extra, &body).await;
            assert_eq!(r.status, 200, "{datatype}: {}", String::from_utf8_lossy(&r.body));
            let n: usize = r.header("inference-header-content-length").unwrap().parse().unwrap();
            let answer: Value = serde_json::from_slice(&r.body[..n]).unwrap();
            let out = &answer["outputs"][0];
            assert_eq!(out["parameters"]["binary_data_size"], json!(raw.len()), "{datatype}");
            assert!(out.get("data").is_none());
            assert_eq!(&r.body[n..], &raw[..], "{datatype}");
        }
    }
    // A binary FP32 input reaches the model borrowed from the body, whatever the JSON header's length.
    for pad in 0..4 {
        let header = json!({"id": "x".repeat(pad), "inputs": [{"name": "x", "shape": [4], "datatype": "FP32",
                            "parameters": {"binary_data_size": 16}}]})
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(&[0u8; 16]);
        let extra = format!("Inference-Header-Content-Length: {}\r\n", header.len());
        let r = call(addr, "POST", "/v2/models/borrow_check/infer", &extra, &body).await;
        assert_eq!(r.json()["outputs"][0]["data"], json!([true]), "header of {} bytes", header.len());
    }
    // FP16 cannot travel as JSON, in or out.
    let body = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP16", "data": [1.0]}]});
    assert_eq!(post(addr, "/v2/models/echo_fp16/infer", body).await.status, 400);
    let (_, raw) = sample("FP16");
    let header =
        json!({"inputs": [{"name": "x", "shape": [3], "datatype": "FP16", "parameters": {"binary_data_size": 6}}]})
            .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&raw);
    let extra = format!("Inference-Header-Content-Length: {}\r\n", header.len());
    let r = call(addr, "POST", "/v2/models/echo_fp16/infer", &extra, &body).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("binary_data"));
}

#[tokio::test]
async fn rest_classification_extension_uses_class_labels() {
    let addr = start_rest(core()).await;
    let input = |name: &str, v: f32| json!({"name": name, "shape": [1, 1], "datatype": "FP32", "data": [v]});
    let body = json!({
        "inputs": [input("sepal_length", 5.1), input("sepal_width", 3.5), input("petal_length", 1.4), input("petal_width", 0.2)],
        "outputs": [{"name": "scores", "parameters": {"classification": 2}}],
    });
    let r = post(addr, "/v2/models/iris/infer", body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let out = &r.json()["outputs"][0];
    assert_eq!(
        (out["name"].as_str(), out["datatype"].as_str(), &out["shape"]),
        (Some("scores"), Some("BYTES"), &json!([1, 2]))
    );
    let top: Vec<String> = out["data"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert!(top[0].ends_with(":0:setosa"), "{top:?}");
    assert!(top[1].contains(":versicolor") || top[1].contains(":virginica"), "{top:?}");
    let score: f32 = top[0].split(':').next().unwrap().parse().unwrap();
    assert!(score > 0.5 && score <= 1.0);
    // Without labels: value:index, highest first.
    let body = json!({"inputs": [{"name": "x", "shape": [4], "datatype": "INT32", "data": [3, 9, 1, 9]}],
                      "outputs": [{"name": "y", "parameters": {"classification": 3}}]});
    let r = post(addr, "/v2/models/echo_int32/infer", body).await;
    assert_eq!(r.json()["outputs"][0]["data"], json!(["9:1", "9:3", "3:0"]));
}

#[tokio::test]
async fn rest_errors_are_json_with_v2_statuses() {
    let addr = start_rest(core()).await;
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("nope", json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}), 404, "nope"),
        ("loading", json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}), 503, "loading"),
        (
            "half_plus_two",
            json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP99", "data": [1]}]}),
            400,
            "FP99",
        ),
        (
            "half_plus_two",
            json!({"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]}),
            400,
            "INT32",
        ),
        (
            "half_plus_two",
            json!({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}),
            400,
            "x",
        ),
        ("half_plus_two", json!({"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}), 400, "x"),
        ("half_plus_two", json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}), 400, "no data"),
        ("half_plus_two", json!({"inputs": [{"name": "z", "shape": [1], "datatype": "FP32", "data": [1]}]}), 400, "z"),
        ("half_plus_two", json!({"inputs": []}), 400, "x"),
        (
            "half_plus_two",
            json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                                 "outputs": [{"name": "nope"}]}),
            400,
            "nope",
        ),
        (
            "half_plus_two",
            json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}),
            400,
            "x",
        ),
        (
            "half_plus_two",
            json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},
                                            {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}),
            400,
            "more than once",
        ),
        ("half_plus_two", json!({"nothing": 1}), 400, "inputs"),
    ];
    for (model, body, status, needle) in cases {
        let r = post(addr, &format!("/v2/models/{model}/infer"), body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", String::from_utf8_lossy(&r.body));
        let message = r.json()["error"].as_str().unwrap().to_string();
        assert!(message.contains(needle), "{body}: {message}");
    }
    let r = call(addr, "POST", "/v2/models/half_plus_two/infer", "", b"{not json").await;
    assert_eq!(r.status, 400);
    // A binary part that does not add up.
    let header =
        json!({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]})
            .to_string();
    for extra_bytes in [4usize, 12] {
        let mut body = header.clone().into_bytes();
        body.extend(std::iter::repeat_n(0u8, extra_bytes));
        let extra = format!("Inference-Header-Content-Length: {}\r\n", header.len());
        let r = call(addr, "POST", "/v2/models/half_plus_two/infer", &extra, &body).await;
        assert_eq!(r.status, 400, "{extra_bytes}");
    }
    let r =
        call(addr, "POST", "/v2/models/half_plus_two/infer", "Inference-Header-Content-Length: 999\r\n", b"{}").await;
    assert_eq!(r.status, 400);
    let r = call(addr, "POST", "/v2/models/half_plus_two/infer", "Inference-Header-Content-Length: x\r\n", b"{}").await;
    assert_eq!(r.status, 400);
    // Still serving.
    let body = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [2]}]});
    assert_eq!(post(addr, "/v2/models/half_plus_two/infer", body).await.status, 200);
}

async fn grpc_client(
    core: Arc<ServingCore>,
) -> (GrpcInferenceServiceClient<tonic::transport::Channel>, tokio::sync::oneshot::Sender<()>) {
    let services = GrpcServices::new(core, DEFAULT_MAX_MESSAGE_SIZE, None).await.unwrap();
    let (addr, stop) = common::spawn_grpc(services).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    (GrpcInferenceServiceClient::new(channel), stop)
}

fn infer_request(
    model: &str,
    datatype: &str,
    raw: Option<Vec<u8>>,
    contents: Option<pb::InferTensorContents>,
) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.to_string(),
        id: "req-1".to_string(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "x".to_string(),
            datatype: datatype.to_string(),
            shape: vec![3],
            contents,
            ..Default::default()
        }],
        raw_input_contents: raw.map(|r| vec![r.into()]).unwrap_or_default(),
        ..Default::default()
    }
}

/// Typed contents of each datatype's sample (none for FP16 and BF16).
fn typed(datatype: &str) -> Option<pb::InferTensorContents> {
    let mut c = pb::InferTensorContents::default();
    match datatype {
        "BOOL" => c.bool_contents = vec![true, false, true],
        "UINT8" => c.uint_contents = vec![0, 7, 255],
        "UINT16" => c.uint_contents = vec![0, 7, 65535],
        "UINT32" => c.uint_contents = vec![0, 7, u32::MAX],
        "UINT64" => c.uint64_contents = vec![0, 7, u64::MAX],
        "INT8" => c.int_contents = vec![-128, 7, 127],
        "INT16" => c.int_contents = vec![-32768, 7, 32767],
        "INT32" => c.int_contents = vec![i32::MIN, 7, i32::MAX],
        "INT64" => c.int64_contents = vec![i64::MIN, 7, i64::MAX],
        "FP32" => c.fp32_contents = vec![1.5, -2.0, 0.25],
        "FP64" => c.fp64_contents = vec![1.5, -2.0, 1e300],
        "BYTES" => {
            c.bytes_contents = ["a", "", "héllo"].iter().map(|s| bytes::Bytes::from(s.as_bytes().to_vec())).collect()
        }
        _ => return None,
    }
    Some(c)
}

#[tokio::test]
async fn grpc_every_datatype_raw_and_typed() {
    let (mut client, _stop) = grpc_client(core()).await;
    for (datatype, _) in DATATYPES {
        let model = echo_name(datatype);
        let (_, raw) = sample(datatype);
        let r =
            client.model_infer(infer_request(&model, datatype, Some(raw.clone()), None)).await.unwrap().into_inner();
        assert_eq!((r.model_name.as_str(), r.model_version.as_str(), r.id.as_str()), (model.as_str(), "1", "req-1"));
        assert_eq!(r.outputs.len(), 1);
        assert_eq!((r.outputs[0].datatype.as_str(), &r.outputs[0].shape[..]), (datatype, &[3i64][..]));
        assert_eq!(r.raw_output_contents.len(), 1, "{datatype}: a raw request gets raw outputs");
        assert_eq!(&r.raw_output_contents[0][..], &raw[..], "{datatype}");
        if let Some(c) = typed(datatype) {
            let r =
                client.model_infer(infer_request(&model, datatype, None, Some(c.clone()))).await.unwrap().into_inner();
            assert!(r.raw_output_contents.is_empty(), "{datatype}: a typed request gets typed outputs");
            assert_eq!(r.outputs[0].contents.as_ref(), Some(&c), "{datatype}");
        }
    }
    // FP16 has no typed contents field: it travels raw only.
    let e = client
        .model_infer(infer_request(
            "echo_fp16",
            "FP16",
            None,
            Some(pb::InferTensorContents { fp32_contents: vec![1.0; 3], ..Default::default() }),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn grpc_health_metadata_and_errors() {
    let (mut client, _stop) = grpc_client(core()).await;
    assert!(client.server_live(pb::ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(
        !client.server_ready(pb::ServerReadyRequest {}).await.unwrap().into_inner().ready,
        "`loading` is not ready"
    );
    let m = client.server_metadata(pb::ServerMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!(m.name, "tensorserve");
    assert!(m.extensions.contains(&"classification".to_string()));
    let ready = |name: &str, version: &str| pb::ModelReadyRequest { name: name.into(), version: version.into() };
    assert!(client.model_ready(ready("half_plus_two", "")).await.unwrap().into_inner().ready);
    assert!(!client.model_ready(ready("half_plus_two", "7")).await.unwrap().into_inner().ready);
    assert!(!client.model_ready(ready("loading", "")).await.unwrap().into_inner().ready);
    assert_eq!(client.model_ready(ready("nope", "")).await.unwrap_err().code(), tonic::Code::NotFound);
    let m = client
        .model_metadata(pb::ModelMetadataRequest { name: "half_plus_two".into(), version: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((m.versions, m.platform.as_str()), (vec!["123".to_string()], "onnx_onnxv1"));
    assert_eq!(
        m.inputs,
        vec![pb::model_metadata_response::TensorMetadata {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![-1, 1]
        }]
    );

    let fp32 = |v: Vec<f32>| Some(pb::InferTensorContents { fp32_contents: v, ..Default::default() });
    let mut two_raw = infer_request("half_plus_two", "FP32", Some(vec![0; 12]), None);
    two_raw.raw_input_contents.push(vec![0u8; 12].into());
    let mut both = infer_request("half_plus_two", "FP32", Some(vec![0; 12]), None);
    both.inputs[0].contents = fp32(vec![1.0; 3]);
    let cases = [
        (infer_request("nope", "FP32", None, fp32(vec![1.0; 3])), tonic::Code::NotFound),
        (infer_request("loading", "FP32", None, fp32(vec![1.0; 3])), tonic::Code::Unavailable),
        (two_raw, tonic::Code::InvalidArgument),
        (both, tonic::Code::InvalidArgument),
        (infer_request("half_plus_two", "FP32", None, None), tonic::Code::InvalidArgument),
        (infer_request("half_plus_two", "FP32", None, fp32(vec![1.0; 2])), tonic::Code::InvalidArgument),
        (infer_request("half_plus_two", "FP32", Some(vec![0; 5]), None), tonic::Code::InvalidArgument),
        (infer_request("half_plus_two", "INT32", Some(vec![0; 12]), None), tonic::Code::InvalidArgument),
        (
            infer_request(
                "half_plus_two",
                "FP32",
                None,
                Some(pb::InferTensorContents { int_contents: vec![1; 3], ..Default::default() }),
            ),
            tonic::Code::InvalidArgument,
        ),
    ];
    for (request, code) in cases {
        let e = client.model_infer(request.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{request:?}: {}", e.message());
    }
    let r = client
        .model_infer(infer_request("half_plus_two", "FP32", None, fp32(vec![1.0, 2.0, 3.0])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outputs[0].contents.as_ref().unwrap().fp32_contents, vec![2.5, 3.0, 3.5]);
}

#[tokio::test]
async fn grpc_stream_infer_answers_each_request_in_order() {
    let (mut client, _stop) = grpc_client(core()).await;
    let fp32 = |v: Vec<f32>| Some(pb::InferTensorContents { fp32_contents: v, ..Default::default() });
    let requests = vec![
        infer_request("half_plus_two", "FP32", None, fp32(vec![2.0, 4.0, 6.0])),
        infer_request("nope", "FP32", None, fp32(vec![1.0; 3])),
        infer_request("half_plus_two", "FP32", None, fp32(vec![0.0; 3])),
    ];
    let mut answers = client.model_stream_infer(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let first = answers.message().await.unwrap().unwrap();
    assert_eq!(first.infer_response.unwrap().outputs[0].contents.as_ref().unwrap().fp32_contents, vec![3.0, 4.0, 5.0]);
    let second = answers.message().await.unwrap().unwrap();
    assert!(second.infer_response.is_none());
    assert!(second.error_message.contains("nope"), "{}", second.error_message);
    let third = answers.message().await.unwrap().unwrap();
    assert_eq!(third.infer_response.unwrap().outputs[0].contents.as_ref().unwrap().fp32_contents, vec![2.0; 3]);
    assert!(answers.message().await.unwrap().is_none());
}

#[tokio::test]
async fn statistics_count_requests_rows_and_runs() {
    let core = core();
    let addr = start_rest(core.clone()).await;
    let (mut client, _stop) = grpc_client(core).await;
    let r = get(addr, "/v2/models/echo_fp32/stats").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model_stats"][0]["inference_count"], 0);
    for rows in [1usize, 3] {
        let data: Vec<f32> = vec![1.0; rows];
        let body = json!({"inputs": [{"name": "x", "shape": [rows], "datatype": "FP32", "data": data}]});
        assert_eq!(post(addr, "/v2/models/echo_fp32/infer", body).await.status, 200);
    }
    let fp32 = Some(pb::InferTensorContents { fp32_contents: vec![1.0; 3], ..Default::default() });
    client.model_infer(infer_request("echo_fp32", "FP32", None, fp32)).await.unwrap();
    let r = get(addr, "/v2/models/echo_fp32/versions/1/stats").await;
    let s = &r.json()["model_stats"][0];
    assert_eq!((s["name"].as_str(), s["version"].as_str()), (Some("echo_fp32"), Some("1")));
    assert_eq!((s["inference_count"].as_u64(), s["execution_count"].as_u64()), (Some(7), Some(3)));
    assert_eq!(s["inference_stats"]["success"]["count"], 3);
    assert_eq!(s["inference_stats"]["fail"]["count"], 0);
    assert_eq!(s["inference_stats"]["compute_infer"]["count"], 3);
    assert_eq!(s["inference_stats"]["compute_output"]["count"], 3);
    assert!(s["inference_stats"]["success"]["ns"].as_u64().unwrap() > 0);
    assert!(s["last_inference"].as_u64().unwrap() > 1_700_000_000_000);
    let sizes: Vec<u64> =
        s["batch_stats"].as_array().unwrap().iter().map(|b| b["batch_size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, vec![1, 3]);
    let all = get(addr, "/v2/models/stats").await.json();
    assert!(all["model_stats"].as_array().unwrap().len() >= DATATYPES.len());
    assert_eq!(get(addr, "/v2/models/nope/stats").await.status, 404);
    let g = client
        .model_statistics(pb::ModelStatisticsRequest { name: "echo_fp32".into(), version: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.model_stats.len(), 1);
    assert_eq!((g.model_stats[0].inference_count, g.model_stats[0].execution_count), (7, 3));
    assert_eq!(g.model_stats[0].inference_stats.as_ref().unwrap().success.as_ref().unwrap().count, 3);
    let e = client
        .model_statistics(pb::ModelStatisticsRequest { name: "nope".into(), version: String::new() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

/// A model repository under the temp dir holding `half_plus_two` as `hp2`, removed on drop.
struct Repository(std::path::PathBuf);

impl Repository {
    fn new(tag: &str) -> Self {
        let root = std::env::temp_dir().join(format!("tensorserve-v2-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let version = root.join("hp2").join("1");
        std::fs::create_dir_all(&version).unwrap();
        std::fs::write(version.join("model.onnx"), tensorserve::examples::HALF_PLUS_TWO_ONNX).unwrap();
        std::fs::write(version.join("signatures.pbtxt"), tensorserve::examples::HALF_PLUS_TWO_SIGNATURES).unwrap();
        std::fs::create_dir_all(root.join("broken").join("1")).unwrap();
        std::fs::write(root.join("broken").join("1").join("model.onnx"), b"not onnx").unwrap();
        Repository(root)
    }
}

impl Drop for Repository {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start_controlled(
    repository: Option<&std::path::Path>,
) -> (std::net::SocketAddr, GrpcInferenceServiceClient<tonic::transport::Channel>, tokio::sync::oneshot::Sender<()>) {
    let registry = Arc::new(ModelRegistry::new());
    common::register_bundled(&registry);
    let options = tensorserve::repository::ManagerOptions {
        file_system_poll: std::time::Duration::ZERO,
        max_load_retries: 0,
        model_repository: repository.map(|p| p.to_path_buf()),
        ..Default::default()
    };
    let manager =
        tensorserve::repository::ModelManager::start(registry.clone(), common::platforms(), options, vec![], None)
            .unwrap();
    let core = Arc::new(ServingCore::new(registry, ServingOptions::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = tensorserve::api::rest::router_with_manager(core.clone(), RestOptions::default(), Some(manager.clone()));
    tokio::spawn(tensorserve::server::serve_rest(listener, app, Default::default(), std::future::pending()));
    let services = GrpcServices::new(core, DEFAULT_MAX_MESSAGE_SIZE, Some(manager)).await.unwrap();
    let (grpc, stop) = common::spawn_grpc(services).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
    (addr, GrpcInferenceServiceClient::new(channel), stop)
}

#[tokio::test]
async fn model_control_loads_and_unloads_inside_the_repository_only() {
    let repository = Repository::new("control");
    let (addr, mut client, _stop) = start_controlled(Some(&repository.0)).await;
    let infer = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [2]}]});
    assert_eq!(post(addr, "/v2/models/hp2/infer", infer.clone()).await.status, 404);
    let r = post(addr, "/v2/repository/models/hp2/load", json!({})).await;
    assert_eq!((r.status, r.json()), (200, json!({"name": "hp2", "load": true})));
    let r = post(addr, "/v2/models/hp2/infer", infer.clone()).await;
    assert_eq!(r.json()["outputs"][0]["data"], json!([3.0]));
    let index = post(addr, "/v2/repository/index", json!({})).await.json();
    assert!(index.as_array().unwrap().contains(&json!({"name": "hp2", "version": "1", "state": "READY"})));
    // Loading again re-reads it and keeps serving.
    assert_eq!(post(addr, "/v2/repository/models/hp2/load", json!({})).await.status, 200);
    assert_eq!(post(addr, "/v2/models/hp2/infer", infer.clone()).await.status, 200);
    let r = post(addr, "/v2/repository/models/hp2/unload", json!({})).await;
    assert_eq!((r.status, r.json()), (200, json!({"name": "hp2", "unload": true})));
    assert_eq!(post(addr, "/v2/models/hp2/infer", infer.clone()).await.status, 404);
    assert_eq!(post(addr, "/v2/repository/models/hp2/unload", json!({})).await.status, 404);

    // Names that are not a directory of the repository, models that fail to load, file uploads.
    for (name, status) in [("nope", 404u16), ("..", 400), (".hidden", 400), ("a%2Fb", 400), ("broken", 400)] {
        let r = post(addr, &format!("/v2/repository/models/{name}/load"), json!({})).await;
        assert_eq!(r.status, status, "{name}: {}", String::from_utf8_lossy(&r.body));
        assert!(r.json()["error"].is_string());
    }
    let r = post(addr, "/v2/repository/models/hp2/load", json!({"parameters": {"file:1/model.onnx": "AAAA"}})).await;
    assert_eq!(r.status, 501);
    // A bundled model unloads too.
    assert_eq!(post(addr, "/v2/repository/models/iris/unload", json!({})).await.status, 200);
    // Unloaded, it is known but not ready (its versions are END).
    let r = get(addr, "/v2/models/iris/ready").await;
    assert_eq!((r.status, r.json()["ready"].clone()), (503, json!(false)));

    // The same over gRPC.
    let load = |name: &str| pb::RepositoryModelLoadRequest { model_name: name.into(), ..Default::default() };
    client.repository_model_load(load("hp2")).await.unwrap();
    let ready = pb::ModelReadyRequest { name: "hp2".into(), version: String::new() };
    assert!(client.model_ready(ready.clone()).await.unwrap().into_inner().ready);
    assert_eq!(client.repository_model_load(load("nope")).await.unwrap_err().code(), tonic::Code::NotFound);
    assert_eq!(client.repository_model_load(load("../etc")).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let unload = pb::RepositoryModelUnloadRequest { model_name: "hp2".into(), ..Default::default() };
    client.repository_model_unload(unload).await.unwrap();
    assert!(!client.model_ready(ready).await.unwrap().into_inner().ready);
}

#[tokio::test]
async fn model_control_is_off_unless_enabled() {
    let repository = Repository::new("off");
    let (addr, mut client, _stop) = start_controlled(None).await;
    let r = post(addr, "/v2/repository/models/hp2/load", json!({})).await;
    assert_eq!(r.status, 403);
    assert!(r.json()["error"].as_str().unwrap().contains("--model_control_mode=explicit"));
    assert_eq!(post(addr, "/v2/repository/models/half_plus_two/unload", json!({})).await.status, 403);
    let load = pb::RepositoryModelLoadRequest { model_name: "hp2".into(), ..Default::default() };
    assert_eq!(client.repository_model_load(load).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    // The index is read-only and always there.
    assert_eq!(post(addr, "/v2/repository/index", json!({})).await.status, 200);
    assert_eq!(get(addr, "/v2/models/half_plus_two/ready").await.status, 200);
    drop(repository);
}
