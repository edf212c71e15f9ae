//! The executor end to end: dynamic batching (merged runs, results equal to unbatched ones,
//! timeout-triggered batches, padding, large-batch splitting, a full queue, deadlines and
//! cancellation, per-model parameters) and admission control of unbatched runs.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tensorserve::core::{BatchingParameters, ExecutorOptions, RunLimits};
use tensorserve::memory::RequestBudget;
use tensorserve::model::{ModelRegistry, Signature, TensorMap, TensorSpec, VersionChoice};
use tensorserve::serving::{ServingCore, ServingOptions};
use tensorserve::{Code, DataType, Model, ServingError, Tensor};

/// y = 2x + 1 on [n, 2] floats, row by row; records the rows of every run and can be slow.
struct Rows {
    signatures: BTreeMap<String, Signature>,
    runs: Mutex<Vec<usize>>,
    delay: Duration,
}

impl Rows {
    fn new(delay: Duration) -> Arc<Rows> {
        let sig = Signature::predict(
            [("x".to_string(), TensorSpec::new("x", DataType::Float, &[-1, 2]))],
            [
                ("y".to_string(), TensorSpec::new("y", DataType::Float, &[-1, 2])),
                ("n".to_string(), TensorSpec::new("n", DataType::Int64, &[-1])),
            ],
        );
        Arc::new(Rows {
            signatures: BTreeMap::from([("serving_default".to_string(), sig)]),
            runs: Mutex::default(),
            delay,
        })
    }

    fn runs(&self) -> Vec<usize> {
        self.runs.lock().unwrap().clone()
    }
}

impl Model for Rows {
    fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.signatures
    }
    fn run(&self, _: &str, inputs: TensorMap, _: &[String]) -> Result<TensorMap, ServingError> {
        let x = &inputs["x"];
        let rows = x.shape()[0];
        self.runs.lock().unwrap().push(rows);
        std::thread::sleep(self.delay);
        let y: Vec<f32> = x.as_slice::<f32>().unwrap().iter().map(|v| 2.0 * v + 1.0).collect();
        // `n`: each row's index within the run, so a test can see rows were not mixed up.
        let n: Vec<i64> = (0..rows as i64).collect();
        Ok(TensorMap::from([
            ("y".to_string(), Tensor::from_vec(vec![rows, 2], y).unwrap()),
            ("n".to_string(), Tensor::from_vec(vec![rows], n).unwrap()),
        ]))
    }
}

fn params(text: &str) -> BatchingParameters {
    tensorserve::repository::batching::parse(text, "test").unwrap()
}

fn core_with(model: Arc<Rows>, batching: Option<BatchingParameters>) -> Arc<ServingCore> {
    let options = ExecutorOptions { batching, ..ExecutorOptions::default() };
    let registry = Arc::new(ModelRegistry::with_executor_options(options));
    registry.insert("rows", 1, model);
    Arc::new(ServingCore::new(registry, ServingOptions::default()))
}

/// `rows` rows of x, numbered from `start`.
fn x(rows: usize, start: f32) -> Tensor {
    Tensor::from_vec(vec![rows, 2], (0..rows * 2).map(|i| start + i as f32).collect()).unwrap()
}

async fn predict(
    core: &ServingCore,
    x: Tensor,
    outputs: &[&str],
    deadline: Option<Instant>,
) -> Result<TensorMap, ServingError> {
    let servable = core.resolve("rows", &VersionChoice::Latest)?;
    let filter: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
    let mut call =
        core.prepare_predict(&servable, "", BTreeMap::from([("x".to_string(), x)]), &filter, |_, t| Ok(t))?;
    call.deadline = deadline;
    core.predict(call, &RequestBudget::unlimited()).await
}

fn expect_y(out: &TensorMap, rows: usize, start: f32) {
    let want: Vec<f32> = (0..rows * 2).map(|i| 2.0 * (start + i as f32) + 1.0).collect();
    assert_eq!(out["y"].shape(), &[rows, 2]);
    assert_eq!(out["y"].as_slice::<f32>().unwrap(), want.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_merge_into_one_run_and_get_their_own_rows() {
    let model = Rows::new(Duration::ZERO);
    let core = core_with(
        model.clone(),
        Some(params(
            "max_batch_size { value: 64 } batch_timeout_micros { value: 200000 } num_batch_threads { value: 1 }",
        )),
    );
    let mut tasks = Vec::new();
    for i in 0..12 {
        let core = core.clone();
        let rows = i % 3 + 1;
        // Half the requests ask only for `y`: each must get exactly what it asked for.
        let outputs: &'static [&'static str] = if i % 2 == 0 { &["y"] } else { &["y", "n"] };
        tasks.push(tokio::spawn(async move {
            let out = predict(&core, x(rows, 100.0 * i as f32), outputs, None).await.unwrap();
            expect_y(&out, rows, 100.0 * i as f32);
            assert_eq!(out.len(), outputs.len());
            (rows, out.get("n").map(|n| n.as_slice::<i64>().unwrap().to_vec()))
        }));
    }
    let mut total = 0;
    for t in tasks {
        let (rows, n) = t.await.unwrap();
        total += rows;
        if let Some(n) = n {
            // Consecutive rows of one run.
            assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "{n:?}");
        }
    }
    let runs = model.runs();
    assert_eq!(runs.iter().sum::<usize>(), total);
    assert!(runs.len() < 4, "12 requests within the timeout ran as {runs:?}");
}

#[tokio::test]
async fn a_partial_batch_runs_when_its_oldest_request_has_waited_the_timeout() {
    let model = Rows::new(Duration::ZERO);
    let core = core_with(
        model.clone(),
        Some(params(
            "max_batch_size { value: 100 } batch_timeout_micros { value: 150000 } num_batch_threads { value: 1 }",
        )),
    );
    let start = Instant::now();
    let (a, b) = tokio::join!(predict(&core, x(2, 0.0), &[], None), predict(&core, x(3, 10.0), &[], None));
    let waited = start.elapsed();
    expect_y(&a.unwrap(), 2, 0.0);
    expect_y(&b.unwrap(), 3, 10.0);
    assert_eq!(model.runs(), vec![5]);
    assert!(waited >= Duration::from_millis(150) && waited < Duration::from_secs(2), "{waited:?}");
    // A full batch does not wait for the timeout.
    let full = core_with(
        Rows::new(Duration::ZERO),
        Some(params(
            "max_batch_size { value: 4 } batch_timeout_micros { value: 5000000 } num_batch_threads { value: 1 }",
        )),
    );
    let start = Instant::now();
    expect_y(&predict(&full, x(4, 0.0), &[], None).await.unwrap(), 4, 0.0);
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn batches_pad_up_to_an_allowed_size() {
    let model = Rows::new(Duration::ZERO);
    let core = core_with(
        model.clone(),
        Some(params("max_batch_size { value: 8 } allowed_batch_sizes: [2, 4, 8] num_batch_threads { value: 1 }")),
    );
    let out = predict(&core, x(3, 1.0), &["y", "n"], None).await.unwrap();
    expect_y(&out, 3, 1.0);
    assert_eq!(out["n"].as_slice::<i64>().unwrap(), &[0, 1, 2]);
    let out = predict(&core, x(5, 1.0), &[], None).await.unwrap();
    expect_y(&out, 5, 1.0);
    assert_eq!(model.runs(), vec![4, 8]);
}

#[tokio::test]
async fn large_requests_split_across_batches_and_join_back() {
    let model = Rows::new(Duration::ZERO);
    let core = core_with(model.clone(), Some(params("max_batch_size { value: 10 } enable_large_batch_splitting { value: true } max_execution_batch_size { value: 4 } num_batch_threads { value: 1 }")));
    let out = predict(&core, x(10, 3.0), &["y", "n"], None).await.unwrap();
    expect_y(&out, 10, 3.0);
    assert_eq!(out["n"].as_slice::<i64>().unwrap(), &[0, 1, 2, 3, 0, 1, 2, 3, 0, 1]);
    assert_eq!(model.runs(), vec![4, 4, 2]);
    let e = predict(&core, x(11, 0.0), &[], None).await.unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (Code::InvalidArgument, "Task size 11 is larger than maximum input batch size 10")
    );
    // Without splitting, the execution size is max_batch_size.
    let plain = core_with(Rows::new(Duration::ZERO), Some(params("max_batch_size { value: 4 }")));
    let e = predict(&plain, x(5, 0.0), &[], None).await.unwrap_err();
    assert_eq!(e.message, "Task size 5 is larger than maximum input batch size 4");
}

#[tokio::test]
async fn a_request_without_rows_runs_alone_as_sent() {
    let model = Rows::new(Duration::ZERO);
    let core = core_with(model.clone(), Some(params("max_batch_size { value: 8 } allowed_batch_sizes: [8]")));
    // Zero rows leave nothing to pad with: not batched, not padded.
    let out = predict(&core, x(0, 0.0), &["y"], None).await.unwrap();
    assert_eq!(out["y"].shape(), &[0, 2]);
    assert_eq!(model.runs(), vec![0]);
}

/// Waits until the model has started `n` runs.
async fn until_runs(model: &Rows, n: usize) {
    let start = Instant::now();
    while model.runs().len() < n {
        assert!(start.elapsed() < Duration::from_secs(5), "the model never started run {n}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_unavailable_at_once_and_admitted_requests_complete() {
    let model = Rows::new(Duration::from_millis(300));
    let core = core_with(
        model.clone(),
        Some(params("max_batch_size { value: 1 } max_enqueued_batches { value: 1 } num_batch_threads { value: 1 }")),
    );
    let running = tokio::spawn({
        let core = core.clone();
        async move { predict(&core, x(1, 0.0), &[], None).await }
    });
    until_runs(&model, 1).await;
    let queued = tokio::spawn({
        let core = core.clone();
        async move { predict(&core, x(1, 5.0), &[], None).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let start = Instant::now();
    let e = predict(&core, x(1, 9.0), &[], None).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(50), "{:?}", start.elapsed());
    assert_eq!(e.code, Code::Unavailable);
    assert_eq!(e.message, "The batch scheduling queue to which this task was submitted is full");
    expect_y(&running.await.unwrap().unwrap(), 1, 0.0);
    expect_y(&queued.await.unwrap().unwrap(), 1, 5.0);
    assert_eq!(model.runs(), vec![1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_their_deadline_or_cancelled_never_run() {
    let model = Rows::new(Duration::from_millis(300));
    let core = core_with(model.clone(), Some(params("max_batch_size { value: 1 } num_batch_threads { value: 1 }")));
    let running = tokio::spawn({
        let core = core.clone();
        async move { predict(&core, x(1, 0.0), &[], None).await }
    });
    until_runs(&model, 1).await;
    let start = Instant::now();
    let deadline = Instant::now() + Duration::from_millis(50);
    let e = predict(&core, x(1, 1.0), &[], Some(deadline)).await.unwrap_err();
    assert_eq!(e.code, Code::DeadlineExceeded, "{}", e.message);
    assert!(start.elapsed() < Duration::from_millis(250), "answered after {:?}", start.elapsed());
    // A caller that goes away (a client disconnecting drops its request future).
    let gone = tokio::time::timeout(Duration::from_millis(20), predict(&core, x(1, 2.0), &[], None)).await;
    assert!(gone.is_err());
    expect_y(&running.await.unwrap().unwrap(), 1, 0.0);
    // Neither queued request ran once the thread was free.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(model.runs(), vec![1]);
    expect_y(&predict(&core, x(1, 3.0), &[], None).await.unwrap(), 1, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_at_once_while_every_admitted_request_completes() {
    let model = Rows::new(Duration::from_millis(100));
    let limits = RunLimits { max_concurrent_runs: 1, max_queued_per_version: 2, ..RunLimits::default() };
    let registry = Arc::new(ModelRegistry::with_executor_options(ExecutorOptions { limits, ..Default::default() }));
    registry.insert("rows", 1, model.clone());
    let core = Arc::new(ServingCore::new(registry, ServingOptions::default()));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let core = core.clone();
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let r = predict(&core, x(1, i as f32), &[], None).await;
            (i, r, start.elapsed())
        }));
        // In order: the first takes the slot, the next two wait, the rest are refused.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (mut served, mut refused) = (0, 0);
    for t in tasks {
        let (i, r, took) = t.await.unwrap();
        match r {
            Ok(out) => {
                expect_y(&out, 1, i as f32);
                served += 1;
            }
            Err(e) => {
                assert_eq!(e.code, Code::ResourceExhausted, "{}", e.message);
                assert!(e.message.contains("waiting for this model version"), "{}", e.message);
                assert!(took < Duration::from_millis(50), "refused after {took:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((served, refused), (3, 7));
    assert_eq!(model.runs().len(), 3);
    // The line is empty again: the next request runs.
    expect_y(&predict(&core, x(1, 0.5), &[], None).await.unwrap(), 1, 0.5);
}

/// A model whose run never ends (until released): it holds its version's run slot, its callers
/// get DEADLINE_EXCEEDED, the line stays bounded, and other models keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_never_returns_only_hurts_its_own_requests() {
    struct Stuck(BTreeMap<String, Signature>, Arc<std::sync::atomic::AtomicBool>);
    impl Model for Stuck {
        fn signatures(&self) -> &BTreeMap<String, Signature> {
            &self.0
        }
        fn run(&self, _: &str, inputs: TensorMap, _: &[String]) -> Result<TensorMap, ServingError> {
            while !self.1.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(TensorMap::from([("y".to_string(), inputs["x"].clone())]))
        }
    }
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let limits = RunLimits { max_concurrent_runs: 1, max_queued_per_version: 4, ..RunLimits::default() };
    let registry = Arc::new(ModelRegistry::with_executor_options(ExecutorOptions { limits, ..Default::default() }));
    registry.insert("stuck", 1, Arc::new(Stuck(Rows::new(Duration::ZERO).signatures.clone(), release.clone())));
    registry.insert("rows", 1, Rows::new(Duration::ZERO));
    let core = Arc::new(ServingCore::new(registry, ServingOptions::default()));
    let stuck = |deadline_ms: u64| {
        let core = core.clone();
        async move {
            let servable = core.resolve("stuck", &VersionChoice::Latest)?;
            let input = BTreeMap::from([("x".to_string(), x(1, 0.0))]);
            let mut call = core.prepare_predict(&servable, "", input, &["y".to_string()], |_, t| Ok(t))?;
            call.deadline = Some(Instant::now() + Duration::from_millis(deadline_ms));
            core.predict(call, &RequestBudget::unlimited()).await
        }
    };
    for _ in 0..3 {
        let start = Instant::now();
        let e = stuck(50).await.unwrap_err();
        assert_eq!(e.code, Code::DeadlineExceeded, "{}", e.message);
        assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
        // Meanwhile another model answers at once.
        let start = Instant::now();
        expect_y(&predict(&core, x(2, 1.0), &[], None).await.unwrap(), 2, 1.0);
        assert!(start.elapsed() < Duration::from_millis(200));
    }
    release.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(stuck(5000).await.unwrap()["y"].shape(), &[1, 2]);
}

/// Classify requests batch like Predict: their tf.Examples are rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_requests_batch_too() {
    use tensorserve::api::tfs::inference::{run_task, Method, TaskResult};
    use tensorserve::proto::tensorflow as tf;
    use tensorserve::proto::tensorflow::serving as pb;
    use tensorserve::serving::CallContext;
    use tensorserve::tensor::example::Examples;

    /// scores = 2x + 1 on [n, 2]: one row per example, recording each run's rows.
    struct Scores(BTreeMap<String, Signature>, Mutex<Vec<usize>>);
    impl Model for Scores {
        fn signatures(&self) -> &BTreeMap<String, Signature> {
            &self.0
        }
        fn run(&self, _: &str, inputs: TensorMap, _: &[String]) -> Result<TensorMap, ServingError> {
            let x = &inputs["x"];
            self.1.lock().unwrap().push(x.shape()[0]);
            let y: Vec<f32> = x.as_slice::<f32>().unwrap().iter().map(|v| 2.0 * v + 1.0).collect();
            Ok(TensorMap::from([("scores".to_string(), Tensor::from_vec(x.shape().to_vec(), y).unwrap())]))
        }
    }
    let mut sig = Signature::predict(
        [("x".to_string(), TensorSpec::new("x", DataType::Float, &[-1, 2]))],
        [("scores".to_string(), TensorSpec::new("scores", DataType::Float, &[-1, 2]))],
    );
    sig.method_name = tensorserve::model::CLASSIFY_METHOD_NAME.to_string();
    let model = Arc::new(Scores(BTreeMap::from([("serving_default".to_string(), sig)]), Mutex::default()));
    let batching =
        params("max_batch_size { value: 64 } batch_timeout_micros { value: 200000 } num_batch_threads { value: 1 }");
    let registry = Arc::new(ModelRegistry::with_executor_options(ExecutorOptions {
        batching: Some(batching),
        ..Default::default()
    }));
    registry.insert("cls", 1, model.clone());
    let core = Arc::new(ServingCore::new(registry, ServingOptions::default()));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let core = core.clone();
        tasks.push(tokio::spawn(async move {
            let examples = (0..i % 2 + 1)
                .map(|j| {
                    let v = vec![i as f32, j as f32];
                    let feature = tf::Feature { kind: Some(tf::feature::Kind::FloatList(tf::FloatList { value: v })) };
                    tf::Example {
                        features: Some(tf::Features { feature: BTreeMap::from([("x".to_string(), feature)]) }),
                    }
                })
                .collect();
            let input = pb::Input { kind: Some(pb::input::Kind::ExampleList(pb::ExampleList { examples })) };
            let spec = pb::ModelSpec { name: "cls".into(), ..Default::default() };
            let context = CallContext { deadline: None, front_end: "test" };
            let budget = RequestBudget::unlimited();
            let (result, _) =
                run_task(&core, &spec, Examples::of(Some(&input)), Method::Classify, &budget, context).await.unwrap();
            let TaskResult::Classification(c) = result else { panic!("not a classification") };
            for (j, classes) in c.classifications.iter().enumerate() {
                let scores: Vec<f32> = classes.classes.iter().map(|c| c.score).collect();
                assert_eq!(scores, vec![2.0 * i as f32 + 1.0, 2.0 * j as f32 + 1.0]);
            }
            c.classifications.len()
        }));
    }
    let mut examples = 0;
    for t in tasks {
        examples += t.await.unwrap();
    }
    assert_eq!(model.1.lock().unwrap().clone(), vec![examples]);
}

#[test]
fn batching_parameters_follow_tf_serving() {
    let p = params("max_batch_size { value: 128 } batch_timeout_micros { value: 0 } max_enqueued_batches { value: 1000000 } num_batch_threads { value: 8 }");
    assert_eq!((p.max_batch_size, p.max_enqueued_batches, p.num_batch_threads), (128, 1_000_000, 8));
    assert_eq!(p.max_execution_batch_size, 128);
    let d = params("");
    assert_eq!((d.max_batch_size, d.batch_timeout, d.max_enqueued_batches), (1000, Duration::ZERO, 10));
    for (text, error) in [
        ("max_batch_size { value: 0 }", "max_batch_size must be positive"),
        ("num_batch_threads { value: -1 }", "num_batch_threads must be positive"),
        ("max_batch_size { value: 8 } allowed_batch_sizes: [4, 2, 8]", "monotonically increasing"),
        ("max_batch_size { value: 8 } allowed_batch_sizes: [2, 4]", "final entry in allowed_batch_sizes must equal max_batch_size"),
        (
            "max_batch_size { value: 8 } enable_large_batch_splitting { value: true } max_execution_batch_size { value: 4 } allowed_batch_sizes: [2, 8]",
            "must equal max_execution_batch_size",
        ),
        ("max_batch_size { value: 4 } enable_large_batch_splitting { value: true } max_execution_batch_size { value: 8 }", "must not exceed"),
        ("max_batch_size { valu: 4 }", "Error parsing text-format tensorflow.serving.BatchingParameters: test:1:"),
        ("pad_variable_length_inputs: true", "not supported"),
    ] {
        let e = tensorserve::repository::batching::parse(text, "test").unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        assert!(e.message.contains(error), "{text}: {}", e.message);
    }
}

/// The bundled models answer the same batched as unbatched, over gRPC, for every row of
/// requests of different sizes sent together.
#[cfg(any(feature = "tract", feature = "onnxruntime"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_models_answer_the_same_batched_and_unbatched() {
    use tensorserve::proto::tensorflow::serving as pb;
    use tensorserve::server::{GrpcServices, DEFAULT_MAX_MESSAGE_SIZE};
    let serve = |batching: Option<BatchingParameters>| async move {
        let registry =
            Arc::new(ModelRegistry::with_executor_options(ExecutorOptions { batching, ..Default::default() }));
        common::register_bundled(&registry);
        let core = Arc::new(ServingCore::new(registry, ServingOptions::default()));
        let services = GrpcServices::new(core, DEFAULT_MAX_MESSAGE_SIZE, None).await.unwrap();
        common::spawn_grpc(services).await
    };
    let (plain, _a) = serve(None).await;
    let (batched, _b) = serve(Some(params(
        "max_batch_size { value: 64 } batch_timeout_micros { value: 20000 } num_batch_threads { value: 1 }",
    )))
    .await;
    let client = |addr: std::net::SocketAddr| async move {
        pb::prediction_service_client::PredictionServiceClient::connect(format!("http://{addr}")).await.unwrap()
    };
    let (plain, batched) = (client(plain).await, client(batched).await);
    let registry = ModelRegistry::new();
    common::register_bundled(&registry);
    for name in registry.model_names() {
        let servable = registry.resolve(&name, &VersionChoice::Latest).unwrap();
        for (sig_name, sig) in servable.model.signatures() {
            // Float inputs of shape [-1, k] only: the ones a batch of rows can fill.
            let Some(inputs) = sig
                .inputs
                .iter()
                .map(|(alias, spec)| match spec.shape.as_deref() {
                    Some([-1, k]) if *k > 0 && spec.dtype == DataType::Float => Some((alias.clone(), *k as usize)),
                    Some([-1]) if spec.dtype == DataType::Float => Some((alias.clone(), 0)),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            let request = |rows: usize, seed: usize| {
                let mut req = pb::PredictRequest {
                    model_spec: Some(pb::ModelSpec {
                        name: name.clone(),
                        signature_name: sig_name.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                for (alias, k) in &inputs {
                    let width = (*k).max(1);
                    let values: Vec<f32> =
                        (0..rows * width).map(|i| ((seed * 31 + i * 7) % 17) as f32 / 4.0 - 2.0).collect();
                    let mut dims = vec![rows];
                    if *k > 0 {
                        dims.push(*k);
                    }
                    let t = Tensor::from_vec(dims, values).unwrap();
                    req.inputs.insert(alias.clone(), tensorserve::tensor::proto::encode(&t, false));
                }
                req
            };
            let mut sent = Vec::new();
            for seed in 0..8 {
                let mut c = batched.clone();
                let req = request(seed % 3 + 1, seed);
                sent.push((req.clone(), tokio::spawn(async move { c.predict(req).await })));
            }
            // onnxruntime's kernels sum each row in the same order whatever the batch size, so
            // its answers are equal bit for bit. tract picks a different matrix kernel for one row
            // than for several, so a matmul row can differ in its last bits (measured: at most
            // 2.2e-7 relative); the batcher itself adds nothing, as the tract-free models show.
            let exact = servable.model.engine() != Some("tract");
            for (req, answer) in sent {
                let got = answer.await.unwrap().unwrap().into_inner();
                let want = plain.clone().predict(req).await.unwrap().into_inner();
                assert!(!want.outputs.is_empty());
                if exact {
                    assert_eq!(got.outputs, want.outputs, "{name}/{sig_name}");
                    continue;
                }
                assert_eq!(got.outputs.keys().collect::<Vec<_>>(), want.outputs.keys().collect::<Vec<_>>());
                for (alias, g) in &got.outputs {
                    let limits = tensorserve::tensor::proto::DecodeLimits::default();
                    let g = tensorserve::tensor::proto::decode(g.clone(), &limits).unwrap();
                    let w = tensorserve::tensor::proto::decode(want.outputs[alias].clone(), &limits).unwrap();
                    assert_eq!(g.shape(), w.shape(), "{name}/{sig_name}/{alias}");
                    match (g.as_slice::<f32>(), w.as_slice::<f32>()) {
                        (Some(a), Some(b)) => {
                            for (x, y) in a.iter().zip(b) {
                                let ulps = (x.to_bits() as i64 - y.to_bits() as i64).abs();
                                assert!(ulps <= 4, "{name}/{sig_name}/{alias}: {x} vs {y}");
                            }
                        }
                        _ => assert_eq!(got.outputs[alias], want.outputs[alias], "{name}/{sig_name}/{alias}"),
                    }
                }
            }
        }
    }
}

#[cfg(any(feature = "tract", feature = "onnxruntime"))]
#[test]
fn a_version_directory_can_bring_its_own_batching_parameters_and_limits() {
    use tensorserve::repository::{config, ManagerOptions, ModelManager};
    let root = std::env::temp_dir().join(format!("tensorserve-batching-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/half_plus_two/123");
    for v in ["1", "2"] {
        let dir = root.join(v);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["model.onnx", "signatures.pbtxt"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
    }
    std::fs::write(
        root.join("2").join("batching_params.pbtxt"),
        "max_batch_size { value: 16 } batch_timeout_micros { value: 1000 }",
    )
    .unwrap();
    std::fs::write(root.join("2").join("limits.pbtxt"), "max_concurrent_runs: 1\nmax_queued_requests: 3\n").unwrap();
    let server = params("max_batch_size { value: 32 }");
    let options = ExecutorOptions { batching: Some(server.clone()), per_model_batching: true, ..Default::default() };
    let registry = Arc::new(ModelRegistry::with_executor_options(options));
    let models = vec![config::ModelConfig {
        policy: tensorserve::repository::VersionPolicy::All,
        ..config::single_model("hpt", &root).unwrap().remove(0)
    }];
    let _manager =
        ModelManager::start(registry.clone(), common::platforms(), ManagerOptions::default(), models, None).unwrap();
    let batching = |v| registry.resolve("hpt", &VersionChoice::Specific(v)).unwrap().runtime.batching().cloned();
    assert_eq!(batching(1), Some(server));
    assert_eq!(batching(2).map(|p| (p.max_batch_size, p.batch_timeout)), Some((16, Duration::from_millis(1))));
    let limits = |v| {
        let l = registry.resolve("hpt", &VersionChoice::Specific(v)).unwrap().runtime.limits().clone();
        (l.max_concurrent_runs, l.max_queued_per_version)
    };
    let server = RunLimits::default();
    assert_eq!(limits(1), (server.max_concurrent_runs, server.max_queued_per_version));
    assert_eq!(limits(2), (1, 3));
    let _ = std::fs::remove_dir_all(&root);
}
