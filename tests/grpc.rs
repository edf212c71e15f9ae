//! The gRPC API end to end: a server on 127.0.0.1:0 in-process, driven by the generated client.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tensorserve::model::{ModelRegistry, Signature, TensorMap, TensorSpec};
use tensorserve::proto::tensorflow as tf;
use tensorserve::proto::tensorflow::serving as pb;
use tensorserve::server::{GrpcServices, DEFAULT_MAX_MESSAGE_SIZE};
use tensorserve::serving::{ServingCore, ServingOptions};
use tensorserve::{DataType, Model, ServingError, Tensor};
use tonic::transport::Channel;
use tonic::Code;

type Predict = pb::prediction_service_client::PredictionServiceClient<Channel>;
type Status_ = pb::model_service_client::ModelServiceClient<Channel>;

/// A native model with two float inputs, `a` required and `b` defaulting to 10: out = a + b.
struct AddModel(BTreeMap<String, Signature>);

impl AddModel {
    fn new() -> Self {
        let mut sig = Signature::predict(
            [
                ("a".to_string(), TensorSpec::new("a:0", DataType::Float, &[-1])),
                ("b".to_string(), TensorSpec::new("b:0", DataType::Float, &[-1])),
            ],
            [("sum".to_string(), TensorSpec::new("sum:0", DataType::Float, &[-1]))],
        );
        sig.defaults.insert("b".into(), Tensor::from_vec(vec![1], vec![10.0f32]).unwrap());
        AddModel(BTreeMap::from([("serving_default".to_string(), sig)]))
    }
}

impl Model for AddModel {
    fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.0
    }
    fn run(&self, _: &str, inputs: TensorMap, _: &[String]) -> Result<TensorMap, ServingError> {
        let a = inputs["a"].view::<f32>().unwrap();
        let b = inputs["b"].view::<f32>().unwrap();
        if a.len() != b.len() && b.len() != 1 {
            return Err(ServingError::invalid_argument("a and b differ in length"));
        }
        let sum: Vec<f32> = a.iter().enumerate().map(|(i, x)| x + b[[if b.len() == 1 { 0 } else { i }]]).collect();
        Ok(TensorMap::from([("sum".to_string(), Tensor::from_vec(vec![sum.len()], sum).unwrap())]))
    }
}

/// A native model whose run always panics, as a buggy one might.
struct PanicModel(BTreeMap<String, Signature>);

impl Model for PanicModel {
    fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.0
    }
    fn run(&self, _: &str, _: TensorMap, _: &[String]) -> Result<TensorMap, ServingError> {
        panic!("boom\nsecond line");
    }
}

struct TestServer {
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_with(options: ServingOptions) -> TestServer {
    let registry = Arc::new(ModelRegistry::new());
    common::register_bundled(&registry);
    registry.insert("add", 1, Arc::new(AddModel::new()));
    registry.insert("add", 2, Arc::new(AddModel::new()));
    registry.set_labels("add", [("stable".to_string(), 1)].into_iter().collect());
    let sig = Signature::predict(
        [("a".to_string(), TensorSpec::new("a", DataType::Float, &[-1]))],
        [("b".to_string(), TensorSpec::new("b", DataType::Float, &[-1]))],
    );
    registry.insert("panics", 1, Arc::new(PanicModel(BTreeMap::from([("serving_default".to_string(), sig)]))));
    let core = Arc::new(ServingCore::new(registry, options));
    let services = GrpcServices::new(core, DEFAULT_MAX_MESSAGE_SIZE, None).await.unwrap();
    let (addr, tx) = common::spawn_grpc(services).await;
    TestServer { addr, _stop: tx }
}

async fn start() -> TestServer {
    start_with(ServingOptions::default()).await
}

impl TestServer {
    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.unwrap()
    }
    async fn predict(&self) -> Predict {
        Predict::new(self.channel().await).max_decoding_message_size(usize::MAX)
    }
    async fn status(&self) -> Status_ {
        Status_::new(self.channel().await)
    }
}

fn shape(dims: &[i64]) -> Option<tf::TensorShapeProto> {
    Some(tf::TensorShapeProto {
        dim: dims.iter().map(|&size| tf::tensor_shape_proto::Dim { size, name: String::new() }).collect(),
        unknown_rank: false,
    })
}

fn floats(dims: &[i64], values: &[f32]) -> tf::TensorProto {
    tf::TensorProto { dtype: 1, tensor_shape: shape(dims), float_val: values.to_vec(), ..Default::default() }
}

fn spec(name: &str) -> Option<pb::ModelSpec> {
    Some(pb::ModelSpec { name: name.into(), ..Default::default() })
}

fn request(name: &str, inputs: Vec<(&str, tf::TensorProto)>) -> pb::PredictRequest {
    pb::PredictRequest {
        model_spec: spec(name),
        inputs: inputs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ..Default::default()
    }
}

async fn predict_err(server: &TestServer, req: pb::PredictRequest) -> tonic::Status {
    server.predict().await.predict(req).await.expect_err("the request must fail")
}

#[tokio::test]
async fn half_plus_two_typed_values() {
    let server = start().await;
    let resp = server
        .predict()
        .await
        .predict(request("half_plus_two", vec![("x", floats(&[1, 1], &[2.0]))]))
        .await
        .unwrap()
        .into_inner();
    let y = &resp.outputs["y"];
    assert_eq!(y.dtype, 1);
    assert_eq!(y.float_val, vec![3.0]);
    assert!(y.tensor_content.is_empty());
    assert_eq!(y.tensor_shape, shape(&[1, 1]));
    let ms = resp.model_spec.unwrap();
    assert_eq!(ms.name, "half_plus_two");
    assert_eq!(ms.signature_name, "serving_default");
    assert_eq!(ms.version_choice, Some(pb::model_spec::VersionChoice::Version(123)));
}

#[tokio::test]
async fn tensor_content_input_and_output() {
    let server = start_with(ServingOptions { tensor_content_output: true, ..Default::default() }).await;
    let x = tf::TensorProto {
        dtype: 1,
        tensor_shape: shape(&[3, 1]),
        tensor_content: Bytes::copy_from_slice(bytemuck::cast_slice(&[2.0f32, 3.0, 4.0])),
        ..Default::default()
    };
    let mut req = request("half_plus_two", vec![("x", x)]);
    req.output_filter = vec!["y".into()];
    req.model_spec.as_mut().unwrap().version_choice = Some(pb::model_spec::VersionChoice::Version(123));
    let resp = server.predict().await.predict(req).await.unwrap().into_inner();
    let y = &resp.outputs["y"];
    assert!(y.float_val.is_empty());
    let values: Vec<f32> =
        y.tensor_content.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(values, vec![3.0, 3.5, 4.0]);
}

#[tokio::test]
async fn digits_mlp_batch_of_64() {
    let server = start().await;
    let values: Vec<f32> = (0..64 * 64).map(|i| ((i * 7) % 17) as f32 / 16.0).collect();
    let resp = server
        .predict()
        .await
        .predict(request("digits_mlp", vec![("x", floats(&[64, 64], &values))]))
        .await
        .unwrap()
        .into_inner();
    let scores = &resp.outputs["scores"];
    assert_eq!(scores.tensor_shape, shape(&[64, 10]));
    assert_eq!(scores.float_val.len(), 640);
    let classes = &resp.outputs["classes"];
    assert_eq!(classes.dtype, 9);
    for (row, class) in scores.float_val.chunks(10).zip(&classes.int64_val) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "softmax rows sum to 1, got {sum}");
        let argmax = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(argmax as i64, *class);
    }
}

#[tokio::test]
async fn native_model_with_defaults_and_labels() {
    let server = start().await;
    let mut client = server.predict().await;
    let resp = client.predict(request("add", vec![("a", floats(&[2], &[1.0, 2.0]))])).await.unwrap().into_inner();
    assert_eq!(resp.outputs["sum"].float_val, vec![11.0, 12.0]);
    assert_eq!(resp.model_spec.unwrap().version_choice, Some(pb::model_spec::VersionChoice::Version(2)));
    let mut req = request("add", vec![("a", floats(&[1], &[1.0])), ("b", floats(&[1], &[1.0]))]);
    req.model_spec.as_mut().unwrap().version_choice =
        Some(pb::model_spec::VersionChoice::VersionLabel("stable".into()));
    let resp = client.predict(req).await.unwrap().into_inner();
    assert_eq!(resp.outputs["sum"].float_val, vec![2.0]);
    assert_eq!(resp.model_spec.unwrap().version_choice, Some(pb::model_spec::VersionChoice::Version(1)));
}

#[tokio::test]
async fn predict_errors_match_tf_serving() {
    let server = start().await;
    let x = || floats(&[1, 1], &[2.0]);
    let cases: Vec<(pb::PredictRequest, Code, &str)> = vec![
        (pb::PredictRequest { model_spec: None, ..Default::default() }, Code::InvalidArgument, "Missing ModelSpec"),
        (request("", vec![("x", x())]), Code::InvalidArgument, "ModelSpec has no name specified."),
        (request("foo", vec![("x", x())]), Code::NotFound, "Servable not found for request: Latest(foo)"),
        (
            {
                let mut r = request("half_plus_two", vec![("x", x())]);
                r.model_spec.as_mut().unwrap().version_choice = Some(pb::model_spec::VersionChoice::Version(99));
                r
            },
            Code::NotFound,
            "Servable not found for request: Specific(half_plus_two, 99)",
        ),
        (
            {
                let mut r = request("half_plus_two", vec![("x", x())]);
                r.model_spec.as_mut().unwrap().version_choice = Some(pb::model_spec::VersionChoice::VersionLabel("foo".into()));
                r
            },
            Code::InvalidArgument,
            "Unrecognized servable version label: foo",
        ),
        (
            {
                let mut r = request("half_plus_two", vec![("x", x())]);
                r.model_spec.as_mut().unwrap().signature_name = "foo".into();
                r
            },
            Code::FailedPrecondition,
            "Serving signature key \"foo\" not found.",
        ),
        (
            request("half_plus_two", vec![("x", x()), ("a", x())]),
            Code::InvalidArgument,
            "input size does not match signature: 2!=1 len({a,x}) != len({x}). Sent extra: {a}. Missing but required: {}.",
        ),
        (
            request("half_plus_two", vec![]),
            Code::InvalidArgument,
            "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. Missing but required: {x}.",
        ),
        (
            request("half_plus_two", vec![("a", x())]),
            Code::InvalidArgument,
            "Signature input alias: x(feed name: x) not found in request and no default value provided. Inputs expected to be in the request {a}, or default input alias set: ",
        ),
        (
            request("add", vec![("a", floats(&[1], &[1.0])), ("c", floats(&[1], &[1.0]))]),
            Code::InvalidArgument,
            "Inputs contains invalid name. Used request inputs: a, request input: a,c",
        ),
        (
            request("half_plus_two", vec![("x", tf::TensorProto { dtype: 7, string_val: vec![Bytes::from_static(b"hi")], ..Default::default() })]),
            Code::InvalidArgument,
            "Expects arg[0] to be float but string is provided",
        ),
        (
            {
                let mut r = request("half_plus_two", vec![("x", x())]);
                r.output_filter = vec!["z".into()];
                r
            },
            Code::InvalidArgument,
            "output tensor alias not found in signature: z Outputs expected to be in the set {y}.",
        ),
        (
            {
                let mut r = request("half_plus_two", vec![("x", x())]);
                r.output_filter = vec!["y".into(), "y".into()];
                r
            },
            Code::InvalidArgument,
            "duplicate output tensor alias: y",
        ),
    ];
    for (req, code, message) in cases {
        let status = predict_err(&server, req).await;
        assert_eq!((status.code(), status.message()), (code, message));
    }
}

#[tokio::test]
async fn malformed_tensors_are_invalid_argument() {
    let server = start().await;
    let bad = [
        tf::TensorProto { dtype: 1, tensor_shape: shape(&[-1, 1]), ..Default::default() },
        tf::TensorProto {
            dtype: 1,
            tensor_shape: shape(&[2, 1]),
            tensor_content: Bytes::from_static(&[0; 7]),
            ..Default::default()
        },
        tf::TensorProto { dtype: 8, tensor_shape: shape(&[1, 1]), ..Default::default() },
    ];
    for t in bad {
        let status = predict_err(&server, request("half_plus_two", vec![("x", t)])).await;
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("tensor parsing error: x"), "{}", status.message());
    }
    // A shape the ONNX graph cannot take is refused with a clear message.
    let status = predict_err(&server, request("digits_mlp", vec![("x", floats(&[1, 3], &[1.0, 2.0, 3.0]))])).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("cannot take input shapes x [1, 3]"), "{}", status.message());
    // tract panics planning a rank-1 input into the MLP's matmul; that is still the request's fault.
    let status = predict_err(&server, request("digits_mlp", vec![("x", floats(&[64], &[0.0; 64]))])).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("cannot take input shapes x [64]"), "{}", status.message());
    // Like TF Serving, an undeclared but workable shape is served: x of shape [3] for [-1,1].
    let resp = server
        .predict()
        .await
        .predict(request("half_plus_two", vec![("x", floats(&[3], &[2.0, 3.0, 4.0]))]))
        .await
        .unwrap();
    let y = &resp.get_ref().outputs["y"];
    assert_eq!((y.float_val.clone(), y.tensor_shape.clone()), (vec![3.0, 3.5, 4.0], shape(&[3])));
}

#[tokio::test]
async fn a_panicking_model_is_internal_and_the_connection_keeps_serving() {
    let server = start().await;
    let mut client = server.predict().await;
    // Enough runs that the fast-failing model is moved onto the inline path too.
    for _ in 0..20 {
        let status = client.predict(request("panics", vec![("a", floats(&[1], &[1.0]))])).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::Internal, "model run panicked: boom"));
    }
    let resp = client.predict(request("half_plus_two", vec![("x", floats(&[1, 1], &[2.0]))])).await.unwrap();
    assert_eq!(resp.get_ref().outputs["y"].float_val, vec![3.0]);
}

#[tokio::test]
async fn shape_bomb_is_refused_fast_and_the_server_keeps_serving() {
    let server = start().await;
    let mut client = server.predict().await;
    let bomb = floats(&[1 << 40, 1], &[1.0]);
    let start = Instant::now();
    let status = client.predict(request("half_plus_two", vec![("x", bomb)])).await.unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    assert!(status.message().starts_with("tensor parsing error: x"));
    assert!(elapsed < Duration::from_millis(10), "refused in {elapsed:?}");
    let resp = client.predict(request("half_plus_two", vec![("x", floats(&[1, 1], &[2.0]))])).await.unwrap();
    assert_eq!(resp.into_inner().outputs["y"].float_val, vec![3.0]);
}

#[tokio::test]
async fn long_error_messages_are_truncated() {
    let server = start().await;
    let name = "m".repeat(3000);
    let status = predict_err(&server, request(&name, vec![("x", floats(&[1, 1], &[2.0]))])).await;
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message().len(), 1024 + "...TRUNCATED".len());
    assert!(status.message().ends_with("...TRUNCATED"));
}

#[tokio::test]
async fn model_metadata() {
    let server = start().await;
    let mut client = server.predict().await;
    let resp = client
        .get_model_metadata(pb::GetModelMetadataRequest {
            model_spec: spec("half_plus_two"),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let ms = resp.model_spec.unwrap();
    assert_eq!((ms.name.as_str(), ms.signature_name.as_str()), ("half_plus_two", ""));
    assert_eq!(ms.version_choice, Some(pb::model_spec::VersionChoice::Version(123)));
    let any = &resp.metadata["signature_def"];
    assert_eq!(any.type_url, "type.googleapis.com/tensorflow.serving.SignatureDefMap");
    let map = pb::SignatureDefMap::decode(any.value.as_slice()).unwrap();
    let sig = &map.signature_def["serving_default"];
    assert_eq!(sig.method_name, "tensorflow/serving/predict");
    let x = &sig.inputs["x"];
    assert_eq!(x.dtype, 1);
    assert_eq!(x.tensor_shape, shape(&[-1, 1]));
    assert_eq!(x.encoding, Some(tf::tensor_info::Encoding::Name("x".into())));
    assert_eq!(sig.outputs["y"].dtype, 1);

    let cases = [
        (
            pb::GetModelMetadataRequest { model_spec: None, metadata_field: vec!["signature_def".into()] },
            Code::InvalidArgument,
            "Missing ModelSpec",
        ),
        (
            pb::GetModelMetadataRequest { model_spec: spec("half_plus_two"), metadata_field: vec![] },
            Code::InvalidArgument,
            "GetModelMetadataRequest must specify at least one metadata_field",
        ),
        (
            pb::GetModelMetadataRequest { model_spec: spec("half_plus_two"), metadata_field: vec!["foo".into()] },
            Code::InvalidArgument,
            "Metadata field foo is not supported",
        ),
        (
            pb::GetModelMetadataRequest { model_spec: spec("nope"), metadata_field: vec!["signature_def".into()] },
            Code::NotFound,
            "Servable not found for request: Latest(nope)",
        ),
    ];
    for (req, code, message) in cases {
        let status = client.get_model_metadata(req).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message));
    }
}

#[tokio::test]
async fn model_status() {
    let server = start().await;
    let mut client = server.status().await;
    let resp =
        client.get_model_status(pb::GetModelStatusRequest { model_spec: spec("add") }).await.unwrap().into_inner();
    let versions: Vec<i64> = resp.model_version_status.iter().map(|s| s.version).collect();
    assert_eq!(versions, vec![2, 1]);
    for s in &resp.model_version_status {
        assert_eq!(s.state, pb::model_version_status::State::Available as i32);
        assert_eq!(s.status, Some(pb::StatusProto { error_code: 0, error_message: String::new() }));
    }
    let mut one = spec("half_plus_two");
    one.as_mut().unwrap().version_choice = Some(pb::model_spec::VersionChoice::Version(123));
    let resp = client.get_model_status(pb::GetModelStatusRequest { model_spec: one }).await.unwrap().into_inner();
    assert_eq!(resp.model_version_status.len(), 1);
    let mut missing = spec("half_plus_two");
    missing.as_mut().unwrap().version_choice = Some(pb::model_spec::VersionChoice::Version(5));
    let cases = [
        (missing, Code::NotFound, "Could not find version 5 of model half_plus_two"),
        (spec("foo"), Code::NotFound, "Could not find any versions of model foo"),
        (None, Code::InvalidArgument, "Missing ModelSpec"),
    ];
    for (model_spec, code, message) in cases {
        let status = client.get_model_status(pb::GetModelStatusRequest { model_spec }).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message));
    }
}

#[tokio::test]
async fn reload_without_a_manager_is_a_failed_precondition() {
    let server = start().await;
    let s = server.status().await.handle_reload_config_request(pb::ReloadConfigRequest::default()).await.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert!(s.message().contains("cannot be reloaded"), "{}", s.message());
}

#[tokio::test]
async fn health_for_full_and_short_names() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let server = start().await;
    let mut client = HealthClient::new(server.channel().await);
    for name in [
        "",
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
        "PredictionService",
        "ModelService",
    ] {
        let resp = client.check(HealthCheckRequest { service: name.into() }).await.unwrap().into_inner();
        assert_eq!(resp.status, 1, "{name} is SERVING");
    }
    let s = client.check(HealthCheckRequest { service: "nope".into() }).await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let server = start().await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else { panic!("unexpected answer") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["tensorflow.serving.PredictionService", "tensorflow.serving.ModelService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
}

#[tokio::test]
async fn many_concurrent_requests() {
    let server = start().await;
    let client = server.predict().await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let x = i as f32;
            let resp =
                c.predict(request("half_plus_two", vec![("x", floats(&[1, 1], &[x]))])).await.unwrap().into_inner();
            assert_eq!(resp.outputs["y"].float_val, vec![0.5 * x + 2.0]);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
