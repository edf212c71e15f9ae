//! Classify, Regress and MultiInference end to end over gRPC and REST: TF Serving's own cases on
//! the bundled half_plus_two, the iris classifier's named classes, and every tf.Example error path.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use tensorserve::model::{ModelRegistry, Signature, TensorMap, TensorSpec, REGRESS_METHOD_NAME};
use tensorserve::proto::tensorflow as tf;
use tensorserve::proto::tensorflow::serving as pb;
use tensorserve::server::{GrpcServices, DEFAULT_MAX_MESSAGE_SIZE};
use tensorserve::serving::{ServingCore, ServingOptions};
use tensorserve::{DataType, Model, ServingError, Tensor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic::Code;

type Predict = pb::prediction_service_client::PredictionServiceClient<Channel>;

/// A regress model over every feature kind:
/// outputs = age + sum(weights) + 100 * flag + len(tags[0]) + len(tags[1]).
struct Features(BTreeMap<String, Signature>);

impl Features {
    fn new() -> Self {
        let mut sig = Signature {
            inputs: [
                ("age".to_string(), TensorSpec::new("age", DataType::Int32, &[-1])),
                ("tags".to_string(), TensorSpec::new("tags", DataType::String, &[-1, 2])),
                ("weights".to_string(), TensorSpec::new("weights", DataType::Float, &[-1, 3])),
                ("flag".to_string(), TensorSpec::new("flag", DataType::Bool, &[-1])),
            ]
            .into_iter()
            .collect(),
            outputs: [("outputs".to_string(), TensorSpec::new("out", DataType::Float, &[-1]))].into_iter().collect(),
            method_name: REGRESS_METHOD_NAME.to_string(),
            defaults: BTreeMap::new(),
            optional: Default::default(),
        };
        // One value stands for all three weights; flag defaults to false.
        sig.defaults.insert("weights".into(), Tensor::from_vec(vec![1], vec![1.0f32]).unwrap());
        sig.defaults.insert("flag".into(), Tensor::from_bools(vec![1], vec![false]).unwrap());
        // Signatures a tf.Example cannot fill, each for its own error.
        let mut unfixed = sig.clone();
        unfixed.inputs.insert("age".into(), TensorSpec::new("age", DataType::Int32, &[-1, -1]));
        let mut half = sig.clone();
        half.inputs.insert("age".into(), TensorSpec::new("age", DataType::Half, &[-1]));
        let mut bad_default = sig.clone();
        bad_default.defaults.insert("weights".into(), Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap());
        let mut wide = sig.clone();
        // A feature of 100k floats per example with a default: the batch size decides the allocation.
        wide.inputs.insert("big".into(), TensorSpec::new("big", DataType::Float, &[-1, 100_000]));
        wide.defaults.insert("big".into(), Tensor::from_vec(vec![1], vec![0.0f32]).unwrap());
        Features(BTreeMap::from([
            ("serving_default".to_string(), sig),
            ("wide".to_string(), wide),
            ("unfixed".to_string(), unfixed),
            ("half".to_string(), half),
            ("bad_default".to_string(), bad_default),
        ]))
    }
}

impl Model for Features {
    fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.0
    }
    fn run(&self, _: &str, inputs: TensorMap, _: &[String]) -> Result<TensorMap, ServingError> {
        let age = inputs["age"].as_slice::<i32>().unwrap();
        let weights = inputs["weights"].view::<f32>().unwrap();
        let flag = inputs["flag"].view_bools().unwrap();
        let tags = inputs["tags"].view_strings().unwrap();
        let out: Vec<f32> = (0..age.len())
            .map(|i| {
                age[i] as f32
                    + weights.index_axis(ndarray::Axis(0), i).sum()
                    + if flag[[i]] { 100.0 } else { 0.0 }
                    + (tags[[i, 0]].len() + tags[[i, 1]].len()) as f32
            })
            .collect();
        Ok(TensorMap::from([("outputs".to_string(), Tensor::from_vec(vec![out.len()], out).unwrap())]))
    }
}

async fn start_with(options: ServingOptions) -> (std::net::SocketAddr, std::net::SocketAddr) {
    let registry = Arc::new(ModelRegistry::new());
    common::register_bundled(&registry);
    registry.insert("features", 1, Arc::new(Features::new()));
    let core = Arc::new(ServingCore::new(registry, options));
    let services = GrpcServices::new(core.clone(), DEFAULT_MAX_MESSAGE_SIZE, None).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = listener.local_addr().unwrap();
    tokio::spawn(async move { services.serve_tcp(listener, std::future::pending()).await.unwrap() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rest = listener.local_addr().unwrap();
    let app = tensorserve::api::rest::router(core, Default::default());
    tokio::spawn(tensorserve::server::serve_rest(listener, app, Default::default(), std::future::pending()));
    (grpc, rest)
}

async fn client(addr: std::net::SocketAddr) -> Predict {
    Predict::new(Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap())
}

fn spec(name: &str, signature: &str) -> Option<pb::ModelSpec> {
    Some(pb::ModelSpec { name: name.into(), signature_name: signature.into(), version_choice: None })
}

fn floats(v: &[f32]) -> tf::Feature {
    tf::Feature { kind: Some(tf::feature::Kind::FloatList(tf::FloatList { value: v.to_vec() })) }
}

fn ints(v: &[i64]) -> tf::Feature {
    tf::Feature { kind: Some(tf::feature::Kind::Int64List(tf::Int64List { value: v.to_vec() })) }
}

fn strings(v: &[&str]) -> tf::Feature {
    tf::Feature {
        kind: Some(tf::feature::Kind::BytesList(tf::BytesList {
            value: v.iter().map(|s| bytes::Bytes::from(s.to_string())).collect(),
        })),
    }
}

fn example(features: &[(&str, tf::Feature)]) -> tf::Example {
    tf::Example {
        features: Some(tf::Features { feature: features.iter().map(|(k, f)| (k.to_string(), f.clone())).collect() }),
    }
}

fn input(examples: Vec<tf::Example>) -> Option<pb::Input> {
    Some(pb::Input { kind: Some(pb::input::Kind::ExampleList(pb::ExampleList { examples })) })
}

fn x_is_two() -> Option<pb::Input> {
    input(vec![example(&[("x", floats(&[2.0]))])])
}

fn version(spec: &Option<pb::ModelSpec>) -> Option<i64> {
    match spec.as_ref()?.version_choice {
        Some(pb::model_spec::VersionChoice::Version(v)) => Some(v),
        _ => None,
    }
}

#[tokio::test]
async fn tf_serving_classify_regress_and_multi_inference_cases() {
    let (addr, _) = start_with(ServingOptions::default()).await;
    let mut c = client(addr).await;

    // testClassify: classify_x_to_y, x = 2.0 -> score 3.0, no label.
    let r = c
        .classify(pb::ClassificationRequest { model_spec: spec("half_plus_two", "classify_x_to_y"), input: x_is_two() })
        .await
        .unwrap()
        .into_inner();
    let classes = &r.result.unwrap().classifications;
    assert_eq!(classes.len(), 1);
    assert_eq!(classes[0].classes, vec![pb::Class { label: String::new(), score: 3.0 }]);
    let ms = r.model_spec.as_ref().unwrap();
    assert_eq!(
        (ms.name.as_str(), ms.signature_name.as_str(), version(&r.model_spec)),
        ("half_plus_two", "classify_x_to_y", Some(123))
    );

    // testRegress, and the other heads of the test model.
    for (signature, feature, want) in
        [("regress_x_to_y", "x", 3.0), ("regress_x_to_y2", "x", 4.0), ("regress_x2_to_y3", "x2", 4.0)]
    {
        let r = c
            .regress(pb::RegressionRequest {
                model_spec: spec("half_plus_two", signature),
                input: input(vec![example(&[(feature, floats(&[2.0]))])]),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.result.unwrap().regressions, vec![pb::Regression { value: want }], "{signature}");
        assert_eq!(r.model_spec.unwrap().signature_name, signature);
    }

    // testMultiInference: regress and classify over one input -> 3.0 and 3.0, a model_spec per result.
    let task = |sig: &str, method: &str| pb::InferenceTask {
        model_spec: spec("half_plus_two", sig),
        method_name: method.into(),
    };
    let r = c
        .multi_inference(pb::MultiInferenceRequest {
            tasks: vec![
                task("regress_x_to_y", "tensorflow/serving/regress"),
                task("classify_x_to_y", "tensorflow/serving/classify"),
            ],
            input: x_is_two(),
        })
        .await
        .unwrap()
        .into_inner();
    use pb::inference_result::Result as R;
    assert_eq!(r.results.len(), 2);
    match &r.results[0].result {
        Some(R::RegressionResult(reg)) => assert_eq!(reg.regressions, vec![pb::Regression { value: 3.0 }]),
        other => panic!("{other:?}"),
    }
    match &r.results[1].result {
        Some(R::ClassificationResult(cl)) => assert_eq!(cl.classifications[0].classes[0].score, 3.0),
        other => panic!("{other:?}"),
    }
    for (res, sig) in r.results.iter().zip(["regress_x_to_y", "classify_x_to_y"]) {
        let ms = res.model_spec.as_ref().unwrap();
        assert_eq!(
            (ms.name.as_str(), ms.signature_name.as_str(), version(&res.model_spec)),
            ("half_plus_two", sig, Some(123))
        );
    }
}

#[tokio::test]
async fn batches_and_context() {
    let (addr, _) = start_with(ServingOptions::default()).await;
    let mut c = client(addr).await;
    // Three examples in one run.
    let xs = input((0..3).map(|i| example(&[("x", floats(&[i as f32]))])).collect());
    let r = c
        .regress(pb::RegressionRequest { model_spec: spec("half_plus_two", "regress_x_to_y"), input: xs })
        .await
        .unwrap();
    let values: Vec<f32> = r.into_inner().result.unwrap().regressions.iter().map(|r| r.value).collect();
    assert_eq!(values, vec![2.0, 2.5, 3.0]);

    // Context features fill every example; an example's own feature wins.
    let with_context = Some(pb::Input {
        kind: Some(pb::input::Kind::ExampleListWithContext(pb::ExampleListWithContext {
            examples: vec![example(&[]), example(&[("x", floats(&[4.0]))])],
            context: Some(example(&[("x", floats(&[2.0]))])),
        })),
    });
    let r = c
        .regress(pb::RegressionRequest { model_spec: spec("half_plus_two", "regress_x_to_y"), input: with_context })
        .await
        .unwrap();
    let values: Vec<f32> = r.into_inner().result.unwrap().regressions.iter().map(|r| r.value).collect();
    assert_eq!(values, vec![3.0, 4.0]);

    // Every feature kind, with defaults: 30 + 3*1 + 0 + (2 + 3) and 1 + (0.5+0.5+1) + 100 + (0 + 1).
    let r = c
        .regress(pb::RegressionRequest {
            model_spec: spec("features", ""),
            input: input(vec![
                example(&[("age", ints(&[30])), ("tags", strings(&["ab", "cde"]))]),
                example(&[
                    ("age", ints(&[1])),
                    ("tags", strings(&["", "z"])),
                    ("weights", floats(&[0.5, 0.5, 1.0])),
                    ("flag", ints(&[1])),
                ]),
            ]),
        })
        .await
        .unwrap()
        .into_inner();
    let values: Vec<f32> = r.result.unwrap().regressions.iter().map(|r| r.value).collect();
    assert_eq!(values, vec![38.0, 104.0]);
    assert_eq!(r.model_spec.unwrap().signature_name, "serving_default");
}

#[tokio::test]
async fn iris_classify_returns_named_classes() {
    let (addr, _) = start_with(ServingOptions::default()).await;
    let mut c = client(addr).await;
    // A setosa (short, wide sepals; tiny petals) and a virginica (long petals).
    let flower = |v: [f32; 4]| {
        example(&[
            ("sepal_length", floats(&[v[0]])),
            ("sepal_width", floats(&[v[1]])),
            ("petal_length", floats(&[v[2]])),
            ("petal_width", floats(&[v[3]])),
        ])
    };
    let r = c
        .classify(pb::ClassificationRequest {
            model_spec: spec("iris", ""),
            input: input(vec![flower([5.1, 3.5, 1.4, 0.2]), flower([7.7, 3.0, 6.1, 2.3])]),
        })
        .await
        .unwrap()
        .into_inner();
    let result = r.result.unwrap();
    for (classes, want) in result.classifications.iter().zip(["setosa", "virginica"]) {
        let labels: Vec<&str> = classes.classes.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, vec!["setosa", "versicolor", "virginica"]);
        let total: f32 = classes.classes.iter().map(|c| c.score).sum();
        assert!((total - 1.0).abs() < 1e-4, "softmax scores sum to 1: {total}");
        let best = classes.classes.iter().max_by(|a, b| a.score.total_cmp(&b.score)).unwrap();
        assert_eq!(best.label, want);
    }
}

/// Every tf.Example and signature error, with its gRPC code and TF Serving's message.
#[tokio::test]
async fn example_and_signature_errors() {
    let (addr, _) = start_with(ServingOptions {
        decode_limits: tensorserve::tensor::proto::DecodeLimits { max_tensor_bytes: 1 << 20 },
        ..Default::default()
    })
    .await;
    let mut c = client(addr).await;
    let regress = |model: &str, sig: &str, input: Option<pb::Input>| pb::RegressionRequest {
        model_spec: spec(model, sig),
        input,
    };
    let features = |e: Vec<tf::Example>| input(e);
    let good = || example(&[("age", ints(&[1])), ("tags", strings(&["a", "b"]))]);
    let cases: Vec<(pb::RegressionRequest, Code, &str)> = vec![
        (pb::RegressionRequest { model_spec: None, input: x_is_two() }, Code::InvalidArgument, "Missing ModelSpec"),
        (regress("half_plus_two", "regress_x_to_y", None), Code::InvalidArgument, "Input is empty."),
        (regress("half_plus_two", "regress_x_to_y", input(vec![])), Code::InvalidArgument, "Input is empty."),
        (regress("half_plus_two", "nope", x_is_two()), Code::InvalidArgument, "No signature was found with the name: nope"),
        (
            regress("half_plus_two", "regress_x_to_y", input(vec![example(&[("x", floats(&[2.0]))]), example(&[])])),
            Code::InvalidArgument,
            "Name: <unknown>, Key: x, Index: 1.  Feature: x (data type: float) is required but could not be found.",
        ),
        (
            regress("half_plus_two", "regress_x_to_y", input(vec![example(&[("x", ints(&[2]))])])),
            Code::InvalidArgument,
            "Name: <unknown>, Key: x, Index: 0.  Data types don't match. Data type: int64 but expected type: float",
        ),
        (
            regress("half_plus_two", "regress_x_to_y", input(vec![example(&[("x", strings(&["2"]))])])),
            Code::InvalidArgument,
            "Name: <unknown>, Key: x, Index: 0.  Data types don't match. Data type: string but expected type: float",
        ),
        (
            regress("half_plus_two", "regress_x_to_y", input(vec![example(&[("x", floats(&[2.0, 3.0]))])])),
            Code::InvalidArgument,
            "Name: <unknown>, Key: x, Index: 0.  Number of float values != expected.  Values size: 2 but output shape: [1]",
        ),
        (
            regress("features", "", features(vec![good(), example(&[("age", ints(&[1 << 40])), ("tags", strings(&["a", "b"]))])])),
            Code::InvalidArgument,
            "Name: <unknown>, Key: age, Index: 1.  Value 1099511627776 does not fit int32",
        ),
        (
            regress("features", "", features(vec![example(&[("age", ints(&[1])), ("tags", strings(&["a"]))])])),
            Code::InvalidArgument,
            "Name: <unknown>, Key: tags, Index: 0.  Number of string values != expected.  Values size: 1 but output shape: [2]",
        ),
        (
            regress("features", "", features(vec![example(&[("age", floats(&[1.0])), ("tags", strings(&["a", "b"]))])])),
            Code::InvalidArgument,
            "Name: <unknown>, Key: age, Index: 0.  Data types don't match. Data type: float but expected type: int64",
        ),
        // 20 examples x 100,000 floats is over the 1 MiB limit: refused before anything is allocated.
        (
            regress("features", "wide", features((0..20).map(|_| good()).collect())),
            Code::ResourceExhausted,
            "feature big: 20 examples x 100000 values exceed the 1048576-byte tensor limit",
        ),
        // Signatures no tf.Example can fill are the model's fault: FAILED_PRECONDITION.
        (
            regress("features", "unfixed", features(vec![good()])),
            Code::FailedPrecondition,
            "signature input age has shape Some([-1, -1]); a tf.Example feature needs [batch, fixed dims...]",
        ),
        (
            regress("features", "half", features(vec![good()])),
            Code::FailedPrecondition,
            "signature input age is half: tf.Example features fill float, double, int64, int32, bool or string inputs",
        ),
        (
            regress("features", "bad_default", features(vec![good()])),
            Code::FailedPrecondition,
            "the default of feature weights has 2 values of float; it needs 3 (or 1)",
        ),
        // A classify signature has no `outputs`; half_plus_two's serving_default has `y`.
        (
            regress("half_plus_two", "classify_x_to_y", x_is_two()),
            Code::InvalidArgument,
            "No regression outputs found in SignatureDef: {method_name: \"tensorflow/serving/classify\", inputs: {x: x}, outputs: {scores: y}}",
        ),
        (regress("nope", "", x_is_two()), Code::NotFound, "Servable not found for request: Latest(nope)"),
    ];
    for (req, code, message) in cases {
        let status = c.regress(req.clone()).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message), "{req:?}");
    }

    let status = c
        .classify(pb::ClassificationRequest { model_spec: spec("half_plus_two", "regress_x_to_y"), input: x_is_two() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with(
            "Expected classification signature outputs to contain at least one of \"classes\" or \"scores\". Signature was: "
        ),
        "{}",
        status.message()
    );

    // The server keeps serving after all of that.
    let r = c.regress(regress("half_plus_two", "regress_x_to_y", x_is_two())).await.unwrap();
    assert_eq!(r.into_inner().result.unwrap().regressions[0].value, 3.0);
}

#[tokio::test]
async fn multi_inference_errors() {
    let (addr, _) = start_with(ServingOptions::default()).await;
    let mut c = client(addr).await;
    let task = |model: &str, sig: &str, method: &str| pb::InferenceTask {
        model_spec: spec(model, sig),
        method_name: method.into(),
    };
    let (classify, regress) = ("tensorflow/serving/classify", "tensorflow/serving/regress");
    let cases = vec![
        (
            vec![task("half_plus_two", "regress_x_to_y", regress), task("iris", "serving_default", classify)],
            Code::InvalidArgument,
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
        ),
        (
            vec![task("half_plus_two", "regress_x_to_y", regress), task("", "regress_x_to_y", regress)],
            Code::InvalidArgument,
            "Found ModelSpec with an empty model name.",
        ),
        (
            vec![task("half_plus_two", "regress_x_to_y", regress), task("half_plus_two", "regress_x_to_y", regress)],
            Code::InvalidArgument,
            "Duplicate evaluation of signature: regress_x_to_y",
        ),
        (
            vec![task("half_plus_two", "nope", regress)],
            Code::InvalidArgument,
            "Requested signature not found in model graph: nope",
        ),
        (
            vec![task("half_plus_two", "serving_default", "tensorflow/serving/predict")],
            Code::Unimplemented,
            "Unsupported signature method_name: tensorflow/serving/predict",
        ),
        (vec![], Code::InvalidArgument, "ModelSpec has no name specified."),
    ];
    for (tasks, code, message) in cases {
        let status =
            c.multi_inference(pb::MultiInferenceRequest { tasks: tasks.clone(), input: x_is_two() }).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message), "{tasks:?}");
    }
    let status = c
        .multi_inference(pb::MultiInferenceRequest {
            tasks: vec![task("half_plus_two", "regress_x_to_y", regress)],
            input: None,
        })
        .await
        .unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "Input is empty."));
}

#[tokio::test]
async fn method_name_check_flag() {
    // Off (TF Serving's default): Predict runs a classify signature with its feature aliases as tensors.
    let (addr, _) = start_with(ServingOptions::default()).await;
    let mut c = client(addr).await;
    let x = tf::TensorProto {
        dtype: DataType::Float.to_proto(),
        tensor_shape: Some(tf::TensorShapeProto {
            dim: [1, 1].iter().map(|&size| tf::tensor_shape_proto::Dim { size, name: String::new() }).collect(),
            unknown_rank: false,
        }),
        float_val: vec![2.0],
        ..Default::default()
    };
    let req = pb::PredictRequest {
        model_spec: spec("half_plus_two", "classify_x_to_y"),
        inputs: [("x".to_string(), x)].into_iter().collect(),
        ..Default::default()
    };
    let r = c.predict(req.clone()).await.unwrap().into_inner();
    assert_eq!(r.outputs["scores"].float_val, vec![3.0]);

    // On: Classify needs a classify signature.
    let (addr, _) = start_with(ServingOptions { signature_method_name_check: true, ..Default::default() }).await;
    let mut c = client(addr).await;
    let status = c
        .classify(pb::ClassificationRequest { model_spec: spec("half_plus_two", "serving_default"), input: x_is_two() })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "Expected classification signature method_name to be tensorflow/serving/classify. Was: tensorflow/serving/predict")
    );
    let status = c
        .regress(pb::RegressionRequest { model_spec: spec("half_plus_two", "classify_x_to_y"), input: x_is_two() })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "Expected regression signature method_name to be tensorflow/serving/regress. Was: tensorflow/serving/classify")
    );
    // Predict on a classify signature is still allowed, as in TF Serving.
    assert_eq!(c.predict(req).await.unwrap().into_inner().outputs["scores"].float_val, vec![3.0]);
}

/// One HTTP/1.1 request per connection; returns status and body.
async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req =
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_string())
}

#[tokio::test]
async fn rest_classify_and_regress() {
    let (_, addr) = start_with(ServingOptions::default()).await;
    // TF Serving's testClassifyREST / testRegressREST golden answers.
    let body = r#"{"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}"#;
    assert_eq!(
        post(addr, "/v1/models/half_plus_two:classify", body).await,
        (200, r#"{"results": [[["", 3.0]]]}"#.to_string())
    );
    let body = r#"{"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}"#;
    assert_eq!(post(addr, "/v1/models/half_plus_two:regress", body).await, (200, r#"{"results": [3.0]}"#.to_string()));
    // Context, lists, version paths.
    let body = r#"{"signature_name": "regress_x_to_y", "context": {"x": 2.0}, "examples": [{}, {"x": [4.0]}]}"#;
    assert_eq!(
        post(addr, "/v1/models/half_plus_two/versions/123:regress", body).await,
        (200, r#"{"results": [3.0, 4.0]}"#.to_string())
    );
    // JSON typing: `2` is an int64 feature, so a float feature refuses it, as in TF Serving.
    let (s, body) = post(
        addr,
        "/v1/models/half_plus_two:regress",
        r#"{"signature_name": "regress_x_to_y", "examples": [{"x": 2}]}"#,
    )
    .await;
    assert_eq!(s, 400);
    assert!(body.contains("Data types don't match. Data type: int64 but expected type: float"), "{body}");
    // ints, bools, strings and b64 in one request.
    let body =
        r#"{"examples": [{"age": 30, "tags": ["ab", {"b64": "Y2Rl"}], "flag": true, "weights": [1.0, 1, 0.5]}]}"#;
    assert_eq!(post(addr, "/v1/models/features:regress", body).await, (200, r#"{"results": [137.5]}"#.to_string()));
    // Named classes.
    let body = r#"{"examples": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}"#;
    let (s, body) = post(addr, "/v1/models/iris:classify", body).await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let labels: Vec<&str> = v["results"][0].as_array().unwrap().iter().map(|p| p[0].as_str().unwrap()).collect();
    assert_eq!(labels, vec!["setosa", "versicolor", "virginica"]);
    // Errors.
    let (s, body) = post(addr, "/v1/models/half_plus_two:classify", r#"{"signature_name": "classify_x_to_y"}"#).await;
    assert_eq!(s, 400);
    assert!(body.contains("When method is classify, key 'examples' is expected and was not found"), "{body}");
    let (s, body) =
        post(addr, "/v1/models/half_plus_two:regress", r#"{"signature_name": "regress_x_to_y", "examples": []}"#).await;
    assert_eq!((s, body.contains("Input is empty.")), (400, true), "{body}");
    let (s, _) = post(addr, "/v1/models/nope:regress", r#"{"examples": [{"x": 1.0}]}"#).await;
    assert_eq!(s, 404);
    for (bad, want) in [
        (
            r#"{"examples": [{"x": [[1.0]]}]}"#,
            "examples[0]: feature x: JSON Value: [1.0] is not a number, bool, string or {\"b64\": ...}",
        ),
        (
            r#"{"examples": [{"x": [1.0, "a"]}]}"#,
            "examples[0]: feature x: a feature's values must all be numbers or all be strings",
        ),
        (r#"{"examples": [3]}"#, "examples[0]: an example must be a JSON object of features"),
        (r#"{"examples": {"x": 1.0}}"#, "'examples' must be an array of objects"),
        (r#"{"context": 1, "examples": [{"x": 1.0}]}"#, "context: an example must be a JSON object of features"),
        (r#"{"examples": [{"x": {"b64": "!!"}}]}"#, "examples[0]: feature x: Unable to base64 decode: "),
        (r#"{"examples": [{"x": 1.0}"#, "JSON Parse error: "),
    ] {
        let (s, body) = post(addr, "/v1/models/half_plus_two:regress", bad).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(s, 400, "{bad}: {body}");
        assert!(v["error"].as_str().unwrap().starts_with(want), "{bad}: {body}");
    }
}

#[tokio::test]
async fn metadata_shows_every_signature() {
    let (addr, rest) = start_with(ServingOptions::default()).await;
    let mut c = client(addr).await;
    let r = c
        .get_model_metadata(pb::GetModelMetadataRequest {
            model_spec: spec("half_plus_two", ""),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let map = <pb::SignatureDefMap as prost::Message>::decode(r.metadata["signature_def"].value.as_slice()).unwrap();
    let names: Vec<&str> = map.signature_def.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        vec![
            "classify_x2_to_y3",
            "classify_x_to_y",
            "regress_x2_to_y3",
            "regress_x_to_y",
            "regress_x_to_y2",
            "serving_default"
        ]
    );
    let classify = &map.signature_def["classify_x_to_y"];
    assert_eq!(classify.method_name, "tensorflow/serving/classify");
    let x = &classify.inputs["x"];
    assert_eq!(
        (x.dtype, x.encoding.clone()),
        (DataType::Float.to_proto(), Some(tf::tensor_info::Encoding::Name("x".into())))
    );
    let dims: Vec<i64> = x.tensor_shape.as_ref().unwrap().dim.iter().map(|d| d.size).collect();
    assert_eq!(dims, vec![-1, 1], "shape completed from the graph");
    assert_eq!(
        map.signature_def["regress_x2_to_y3"].outputs["outputs"].encoding,
        Some(tf::tensor_info::Encoding::Name("y3".into()))
    );

    let mut stream = tokio::net::TcpStream::connect(rest).await.unwrap();
    stream.write_all(b"GET /v1/models/iris/metadata HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(raw.split_once("\r\n\r\n").unwrap().1).unwrap();
    let sig = &v["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["method_name"], "tensorflow/serving/classify");
    assert_eq!(sig["outputs"]["classes"]["dtype"], "DT_STRING");
    assert_eq!(sig["inputs"].as_object().unwrap().len(), 4);
}
