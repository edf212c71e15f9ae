//! The model repository end to end: config files, version policies, labels, lifecycle,
//! polling, reload (RPC and file), warmup and failed loads, on real directories.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use tensorserve::model::{ModelRegistry, ServableState, VersionChoice};
use tensorserve::proto::tensorflow as tf;
use tensorserve::proto::tensorflow::serving as pb;
use tensorserve::repository::{config, warmup, ManagerOptions, ModelConfig, ModelManager, Platforms, VersionPolicy};
use tensorserve::server::{GrpcServices, DEFAULT_MAX_MESSAGE_SIZE};
use tensorserve::serving::{ServingCore, ServingOptions};
use tensorserve::{Code, Model, ServingError};
use tonic::transport::Channel;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tensorserve-repo-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `base/<version>/` with the bundled half_plus_two graph and its signatures, all at
/// once (staged, then renamed) so a poll never sees half a version.
fn add_version(base: &Path, version: &str) -> PathBuf {
    let staging = base.join(format!(".staging-{version}"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("signatures.pbtxt"), tensorserve::examples::HALF_PLUS_TWO_SIGNATURES).unwrap();
    std::fs::write(staging.join("model.onnx"), tensorserve::examples::HALF_PLUS_TWO_ONNX).unwrap();
    let dir = base.join(version);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::rename(&staging, &dir).unwrap();
    dir
}

fn model(name: &str, base: &Path, policy: VersionPolicy) -> ModelConfig {
    ModelConfig {
        name: name.into(),
        base_path: base.into(),
        platform: "onnx".into(),
        policy,
        labels: BTreeMap::new(),
        logging: None,
    }
}

/// Options for deterministic tests: no background polling, no retries.
fn manual() -> ManagerOptions {
    ManagerOptions {
        file_system_poll: Duration::ZERO,
        max_load_retries: 0,
        drain_timeout: Duration::from_secs(5),
        ..ManagerOptions::default()
    }
}

fn start(options: ManagerOptions, models: Vec<ModelConfig>) -> (Arc<ModelRegistry>, Arc<ModelManager>) {
    start_with(common::platforms(), options, models)
}

fn start_with(
    platforms: Platforms,
    options: ManagerOptions,
    models: Vec<ModelConfig>,
) -> (Arc<ModelRegistry>, Arc<ModelManager>) {
    let registry = Arc::new(ModelRegistry::new());
    let manager = ModelManager::start(registry.clone(), platforms, options, models, None).unwrap();
    (registry, manager)
}

/// (version, state) pairs, highest version first, as GetModelStatus lists them.
fn states(registry: &ModelRegistry, name: &str) -> Vec<(i64, ServableState)> {
    registry.statuses(name).unwrap_or_default().into_iter().map(|s| (s.version, s.state)).collect()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

use ServableState::{Available, End, Loading, Unloading};

#[test]
fn each_version_policy_selects_its_versions() {
    let dir = TempDir::new("policies");
    for v in ["1", "2", "3", "not_a_version"] {
        add_version(dir.path(), v);
    }
    let (registry, _m) = start(
        manual(),
        vec![
            model("latest1", dir.path(), VersionPolicy::Latest(1)),
            model("latest2", dir.path(), VersionPolicy::Latest(2)),
            model("all", dir.path(), VersionPolicy::All),
            model("specific", dir.path(), VersionPolicy::Specific([1, 3, 9].into_iter().collect())),
        ],
    );
    assert_eq!(states(&registry, "latest1"), vec![(3, Available)]);
    assert_eq!(states(&registry, "latest2"), vec![(3, Available), (2, Available)]);
    assert_eq!(states(&registry, "all"), vec![(3, Available), (2, Available), (1, Available)]);
    assert_eq!(states(&registry, "specific"), vec![(3, Available), (1, Available)]);
    assert_eq!(registry.resolve("specific", &VersionChoice::Latest).unwrap().version, 3);
}

#[test]
fn leading_zeros_name_the_same_version() {
    let dir = TempDir::new("zeros");
    add_version(dir.path(), "00000123");
    let (registry, _m) = start(manual(), vec![model("m", dir.path(), VersionPolicy::Latest(1))]);
    assert_eq!(states(&registry, "m"), vec![(123, Available)]);
}

#[test]
fn a_new_version_loads_before_the_old_one_unloads() {
    let dir = TempDir::new("swap");
    add_version(dir.path(), "1");
    let (registry, manager) = start(manual(), vec![model("m", dir.path(), VersionPolicy::Latest(1))]);
    assert_eq!(states(&registry, "m"), vec![(1, Available)]);
    add_version(dir.path(), "2");
    manager.poll();
    assert_eq!(states(&registry, "m"), vec![(2, Available), (1, End)]);
    assert_eq!(registry.resolve("m", &VersionChoice::Latest).unwrap().version, 2);
    // Removing the newest directory brings the older one back, again load-then-unload.
    add_version(dir.path(), "1");
    std::fs::remove_dir_all(dir.path().join("2")).unwrap();
    manager.poll();
    assert_eq!(states(&registry, "m"), vec![(2, End), (1, Available)]);
    // Removing every version unloads the model: nothing is aspired.
    std::fs::remove_dir_all(dir.path().join("1")).unwrap();
    manager.poll();
    assert_eq!(states(&registry, "m"), vec![(2, End), (1, End)]);
    let e = registry.resolve("m", &VersionChoice::Latest).err().unwrap();
    assert_eq!(e.message, "Servable not found for request: Latest(m)");
}

#[test]
fn a_failed_load_shows_end_with_its_error_and_the_old_version_keeps_serving() {
    let dir = TempDir::new("failed");
    add_version(dir.path(), "1");
    let (registry, manager) = start(manual(), vec![model("m", dir.path(), VersionPolicy::Latest(1))]);
    std::fs::create_dir_all(dir.path().join("2")).unwrap();
    std::fs::write(dir.path().join("2/model.onnx"), b"this is not an ONNX model").unwrap();
    manager.poll();
    let statuses = registry.statuses("m").unwrap();
    assert_eq!((statuses[0].version, statuses[0].state), (2, End));
    let error = statuses[0].error.as_ref().expect("the failed version carries its error");
    assert_eq!(error.code, Code::FailedPrecondition);
    assert!(error.message.starts_with("could not load ONNX model"), "{}", error.message);
    assert_eq!((statuses[1].version, statuses[1].state), (1, Available));
    assert_eq!(registry.resolve("m", &VersionChoice::Latest).unwrap().version, 1);
    // A failed version is not retried on every poll while its directory stays.
    manager.poll();
    assert_eq!(states(&registry, "m"), vec![(2, End), (1, Available)]);
    // A good newer version replaces both.
    add_version(dir.path(), "3");
    manager.poll();
    assert_eq!(states(&registry, "m"), vec![(3, Available), (2, End), (1, End)]);
}

#[test]
fn a_missing_base_path_is_reported_and_the_other_models_load() {
    let dir = TempDir::new("missing");
    add_version(dir.path(), "5");
    let registry = Arc::new(ModelRegistry::new());
    let manager = ModelManager::start(registry.clone(), common::platforms(), manual(), Vec::new(), None).unwrap();
    let e = manager
        .apply(vec![
            model("gone", Path::new("/nonexistent/tensorserve/models"), VersionPolicy::Latest(1)),
            model("good", dir.path(), VersionPolicy::Latest(1)),
        ])
        .unwrap_err();
    assert_eq!(e.code, Code::NotFound);
    assert!(
        e.message.starts_with("Could not find base path /nonexistent/tensorserve/models for servable gone"),
        "{}",
        e.message
    );
    assert_eq!(states(&registry, "good"), vec![(5, Available)]);
    assert_eq!(registry.model_names(), vec!["gone".to_string(), "good".to_string()]);
}

#[test]
fn labels_resolve_and_must_point_at_available_versions() {
    let dir = TempDir::new("labels");
    add_version(dir.path(), "1");
    add_version(dir.path(), "2");
    let mut m = model("m", dir.path(), VersionPolicy::All);
    m.labels = BTreeMap::from([("stable".into(), 1), ("canary".into(), 2)]);
    let (registry, manager) = start(manual(), vec![m.clone()]);
    assert_eq!(registry.resolve("m", &VersionChoice::Label("stable".into())).unwrap().version, 1);
    assert_eq!(registry.resolve("m", &VersionChoice::Label("canary".into())).unwrap().version, 2);

    m.labels.insert("canary".into(), 7);
    let e = manager.apply(vec![m.clone()]).unwrap_err();
    assert_eq!(e.code, Code::FailedPrecondition);
    assert_eq!(
        e.message,
        "Request to assign label to version 7 of model m, which is not currently available for inference"
    );
    let e = registry.resolve("m", &VersionChoice::Label("canary".into())).err().unwrap();
    assert_eq!(e.message, "Unrecognized servable version label: canary");

    // --allow_version_labels_for_unavailable_models: the label is set; requests on it find nothing yet.
    let options = ManagerOptions { allow_labels_for_unavailable: true, ..manual() };
    let (registry, manager) = start(options, vec![m]);
    let e = registry.resolve("m", &VersionChoice::Label("canary".into())).err().unwrap();
    assert_eq!((e.code, e.message.as_str()), (Code::NotFound, "Servable not found for request: Specific(m, 7)"));
    add_version(dir.path(), "7");
    manager.poll();
    assert_eq!(registry.resolve("m", &VersionChoice::Label("canary".into())).unwrap().version, 7);
}

/// A platform whose loads wait for the test to let them finish, to watch LOADING.
struct Gated {
    /// Releases one load per message.
    gate: Mutex<mpsc::Receiver<()>>,
}

impl tensorserve::repository::Platform for Gated {
    fn load(&self, dir: &Path) -> Result<Arc<dyn Model>, ServingError> {
        self.gate.lock().unwrap().recv().unwrap();
        if dir.join("broken").exists() {
            return Err(ServingError::internal("this version is broken on purpose"));
        }
        common::loader().load_dir(dir)
    }
}

#[test]
fn status_walks_through_loading_available_unloading_end() {
    let dir = TempDir::new("lifecycle");
    add_version(dir.path(), "1");
    let (open, gate) = mpsc::channel();
    let mut platforms = common::platforms();
    platforms.register("gated", Gated { gate: Mutex::new(gate) });
    let mut m = model("m", dir.path(), VersionPolicy::Latest(1));
    m.platform = "gated".into();
    let registry = Arc::new(ModelRegistry::new());
    let manager = ModelManager::start(registry.clone(), platforms, manual(), Vec::new(), None).unwrap();

    // A load: LOADING while the platform works, then AVAILABLE.
    let m1 = manager.clone();
    let first = std::thread::spawn(move || m1.apply(vec![m]));
    wait_for("LOADING", Duration::from_secs(10), || states(&registry, "m") == vec![(1, Loading)]);
    open.send(()).unwrap();
    first.join().unwrap().unwrap();
    assert_eq!(states(&registry, "m"), vec![(1, Available)]);

    // A failed load: LOADING, then END with the error; version 1 serves throughout.
    add_version(dir.path(), "2");
    std::fs::write(dir.path().join("2/broken"), b"").unwrap();
    let m2 = manager.clone();
    let poll = std::thread::spawn(move || m2.poll());
    wait_for("LOADING of 2", Duration::from_secs(10), || states(&registry, "m") == vec![(2, Loading), (1, Available)]);
    open.send(()).unwrap();
    poll.join().unwrap();
    let statuses = registry.statuses("m").unwrap();
    assert_eq!(statuses[0].state, End);
    assert_eq!(statuses[0].error.as_ref().unwrap().message, "this version is broken on purpose");

    // An unload waits (UNLOADING) for a request that holds the version, then ends.
    add_version(dir.path(), "3");
    let in_flight = registry.resolve("m", &VersionChoice::Latest).unwrap();
    assert_eq!(in_flight.version, 1);
    let m3 = manager.clone();
    let poll = std::thread::spawn(move || m3.poll());
    open.send(()).unwrap();
    wait_for("UNLOADING of 1", Duration::from_secs(10), || {
        states(&registry, "m") == vec![(3, Available), (2, End), (1, Unloading)]
    });
    // The request still runs on the version being unloaded.
    let input = tensorserve::Tensor::from_vec(vec![1], vec![2.0f32]).unwrap();
    let out = in_flight.model.run("serving_default", [("x".to_string(), input)].into(), &["y".to_string()]).unwrap();
    assert_eq!(out["y"].view::<f32>().unwrap()[[0]], 3.0);
    // The manager is not held up by the wait: its poll has returned while version 1 drains.
    poll.join().unwrap();
    assert_eq!(states(&registry, "m"), vec![(3, Available), (2, End), (1, Unloading)]);
    drop(in_flight);
    wait_for("END of 1", Duration::from_secs(10), || {
        states(&registry, "m") == vec![(3, Available), (2, End), (1, End)]
    });
}

fn predict_log(x: f32) -> Vec<u8> {
    let request = pb::PredictRequest {
        model_spec: Some(pb::ModelSpec { name: "m".into(), ..Default::default() }),
        inputs: [("x".to_string(), x_of(x))].into(),
        output_filter: Vec::new(),
        ..Default::default()
    };
    pb::PredictionLog {
        log_metadata: None,
        log_type: Some(pb::prediction_log::LogType::PredictLog(pb::PredictLog {
            request: Some(request),
            response: None,
        })),
    }
    .encode_to_vec()
}

#[test]
fn warmup_records_run_before_available_and_a_bad_one_fails_the_load() {
    let dir = TempDir::new("warmup");
    let v1 = add_version(dir.path(), "1");
    std::fs::create_dir_all(v1.join("assets.extra")).unwrap();
    std::fs::write(v1.join(warmup::WARMUP_FILE), warmup::write_tfrecord(&[predict_log(1.0), predict_log(2.0)]))
        .unwrap();
    let (registry, manager) = start(manual(), vec![model("m", dir.path(), VersionPolicy::Latest(1))]);
    // The warmup runs were timed, so the first real request already knows how fast the model is.
    let servable = registry.resolve("m", &VersionChoice::Latest).unwrap();
    assert!(servable.runtime.stats().average() > Duration::ZERO);
    drop(servable);

    // A record naming an input the model lacks fails version 2's load; version 1 keeps serving.
    let v2 = add_version(dir.path(), "2");
    let mut bad = pb::PredictionLog::decode(predict_log(1.0).as_slice()).unwrap();
    if let Some(pb::prediction_log::LogType::PredictLog(p)) = &mut bad.log_type {
        let request = p.request.as_mut().unwrap();
        let x = request.inputs.remove("x").unwrap();
        request.inputs.insert("nope".into(), x);
    }
    std::fs::create_dir_all(v2.join("assets.extra")).unwrap();
    std::fs::write(v2.join(warmup::WARMUP_FILE), warmup::write_tfrecord(&[predict_log(1.0), bad.encode_to_vec()]))
        .unwrap();
    manager.poll();
    let statuses = registry.statuses("m").unwrap();
    assert_eq!((statuses[0].version, statuses[0].state), (2, End));
    let message = &statuses[0].error.as_ref().unwrap().message;
    assert!(message.contains("tf_serving_warmup_requests: record 1: "), "{message}");
    assert!(message.contains("Inputs contains invalid name") || message.contains("nope"), "{message}");
    assert_eq!(registry.resolve("m", &VersionChoice::Latest).unwrap().version, 1);

    // A corrupted file fails too, with the reason.
    let v3 = add_version(dir.path(), "3");
    std::fs::create_dir_all(v3.join("assets.extra")).unwrap();
    let mut corrupt = warmup::write_tfrecord(&[predict_log(1.0)]);
    let n = corrupt.len();
    corrupt[n - 6] ^= 0x40;
    std::fs::write(v3.join(warmup::WARMUP_FILE), corrupt).unwrap();
    manager.poll();
    let statuses = registry.statuses("m").unwrap();
    assert!(statuses[0].error.as_ref().unwrap().message.contains("checksum mismatch"));
}

#[test]
fn a_saved_model_gets_conversion_advice() {
    let dir = TempDir::new("savedmodel");
    std::fs::create_dir_all(dir.path().join("1/variables")).unwrap();
    std::fs::write(dir.path().join("1/saved_model.pb"), b"").unwrap();
    let mut m = model("tf", dir.path(), VersionPolicy::Latest(1));
    m.platform = "tensorflow".into();
    let (registry, _manager) = start(manual(), vec![m]);
    let status = &registry.statuses("tf").unwrap()[0];
    assert_eq!(status.state, End);
    let message = &status.error.as_ref().unwrap().message;
    assert!(
        message.contains("TensorFlow SavedModel") && message.contains("tf2onnx.convert --saved-model"),
        "{message}"
    );
}

#[test]
fn failed_loads_are_retried_as_configured() {
    let dir = TempDir::new("retry");
    std::fs::create_dir_all(dir.path().join("1")).unwrap();
    std::fs::write(dir.path().join("1/model.onnx"), b"not yet").unwrap();
    let options = ManagerOptions { max_load_retries: 3, load_retry_interval: Duration::from_millis(200), ..manual() };
    let (registry, _manager) = start(options, vec![model("m", dir.path(), VersionPolicy::Latest(1))]);
    assert_eq!(states(&registry, "m"), vec![(1, Loading)]);
    // The file is fixed before the retries run out: the next attempt loads it.
    std::fs::write(dir.path().join("1/signatures.pbtxt"), tensorserve::examples::HALF_PLUS_TWO_SIGNATURES).unwrap();
    std::fs::write(dir.path().join("1/model.onnx"), tensorserve::examples::HALF_PLUS_TWO_ONNX).unwrap();
    wait_for("a retry to load version 1", Duration::from_secs(10), || states(&registry, "m") == vec![(1, Available)]);
}

#[test]
fn the_file_system_is_polled_for_new_versions() {
    let dir = TempDir::new("fspoll");
    add_version(dir.path(), "1");
    let options = ManagerOptions { file_system_poll: Duration::from_millis(100), ..manual() };
    let (registry, _manager) = start(options, vec![model("m", dir.path(), VersionPolicy::Latest(1))]);
    add_version(dir.path(), "2");
    wait_for("version 2 from the poll", Duration::from_secs(10), || {
        states(&registry, "m") == vec![(2, Available), (1, End)]
    });
}

#[test]
fn the_config_file_is_polled_and_a_bad_edit_keeps_the_running_config() {
    let dir = TempDir::new("cfgpoll");
    add_version(&dir.path().join("a"), "1");
    add_version(&dir.path().join("b"), "4");
    let file = dir.path().join("models.config");
    let write = |names: &[&str]| {
        let entries: String = names
            .iter()
            .map(|n| {
                format!(
                    "config {{ name: '{n}' base_path: '{}' model_platform: 'onnx' }}\n",
                    dir.path().join(n).display()
                )
            })
            .collect();
        std::fs::write(&file, format!("model_config_list {{\n{entries}}}\n")).unwrap();
    };
    write(&["a"]);
    let text = std::fs::read_to_string(&file).unwrap();
    let models = config::validate(&config::parse_text(&text, "f").unwrap(), &common::platforms().names()).unwrap();
    let options =
        ManagerOptions { config_file: Some(file.clone()), config_file_poll: Duration::from_millis(100), ..manual() };
    let registry = Arc::new(ModelRegistry::new());
    let _manager = ModelManager::start(registry.clone(), common::platforms(), options, models, Some(text)).unwrap();
    assert_eq!(registry.model_names(), vec!["a"]);
    write(&["b"]);
    wait_for("model b from the edited file", Duration::from_secs(10), || {
        registry.model_names() == vec!["b"] && states(&registry, "b") == vec![(4, Available)]
    });
    // The unload finishes on its own thread once nothing holds the version.
    wait_for("END of a", Duration::from_secs(10), || states(&registry, "a") == vec![(1, End)]);
    // Written aside and renamed in: a poll must not catch the file empty, half written.
    std::fs::write(file.with_extension("new"), "model_config_list { config { name: 'c' base_path: ").unwrap();
    std::fs::rename(file.with_extension("new"), &file).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(registry.model_names(), vec!["b"]);
    assert_eq!(states(&registry, "b"), vec![(4, Available)]);
}

#[test]
fn bad_configs_are_refused_with_their_messages() {
    let platforms = common::platforms().names();
    let parse = |text: &str| config::parse_text(text, "/etc/m.config").and_then(|c| config::validate(&c, &platforms));
    let cases = [
        (
            "model_config_list { config { name: 'a' base_path: 'relative' } }",
            Code::InvalidArgument,
            "Expected model a to have an absolute path; got base_path()=relative",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/x' } config { name: 'a' base_path: '/y' } }",
            Code::InvalidArgument,
            "Illegal to list model a multiple times in config list",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/x' model_platform: 'pytorch' } }",
            Code::InvalidArgument,
            "Model a has unknown model_platform \"pytorch\"; this server knows onnx, onnxruntime, tensorflow, tract",
        ),
        (
            "model_config_list { config { name: 'a/../../b' base_path: '/x' } }",
            Code::InvalidArgument,
            "Invalid model name \"a/../../b\"",
        ),
        (
            "model_config_list {\n  config {\n    name: 'a'\n    base_path: '/x'\n    policy: 1\n  }\n}",
            Code::InvalidArgument,
            "Error parsing text-format tensorflow.serving.ModelServerConfig: /etc/m.config:5:5: ",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/x'",
            Code::InvalidArgument,
            "Error parsing text-format tensorflow.serving.ModelServerConfig: /etc/m.config:1:",
        ),
    ];
    for (text, code, want) in cases {
        let e = parse(text).unwrap_err();
        assert_eq!(e.code, code, "{text}");
        assert!(e.message.starts_with(want), "{text}\n  got:  {}\n  want: {want}", e.message);
    }
}

/// A gRPC server over a manager, on 127.0.0.1:0.
async fn serve(manager: Arc<ModelManager>) -> (Channel, tokio::sync::oneshot::Sender<()>) {
    let core = Arc::new(ServingCore::new(manager.registry().clone(), ServingOptions::default()));
    let services = GrpcServices::new(core, DEFAULT_MAX_MESSAGE_SIZE, Some(manager)).await.unwrap();
    let (addr, tx) = common::spawn_grpc(services).await;
    (Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap(), tx)
}

/// `x` = [value], as TF Serving's own tests send it.
fn x_of(value: f32) -> tf::TensorProto {
    tf::TensorProto {
        dtype: tf::DataType::DtFloat as i32,
        tensor_shape: Some(tf::TensorShapeProto {
            dim: vec![tf::tensor_shape_proto::Dim { size: 1, name: String::new() }],
            unknown_rank: false,
        }),
        float_val: vec![value],
        ..Default::default()
    }
}

fn reload_request(text: &str) -> pb::ReloadConfigRequest {
    pb::ReloadConfigRequest { config: Some(config::parse_text(text, "request").unwrap()), metric_names: Vec::new() }
}

async fn status_of(
    client: &mut pb::model_service_client::ModelServiceClient<Channel>,
    name: &str,
) -> Result<Vec<(i64, i32, i32)>, tonic::Status> {
    let request =
        pb::GetModelStatusRequest { model_spec: Some(pb::ModelSpec { name: name.into(), ..Default::default() }) };
    let response = client.get_model_status(request).await?.into_inner();
    Ok(response
        .model_version_status
        .into_iter()
        .map(|s| (s.version, s.state, s.status.map_or(-1, |st| st.error_code)))
        .collect())
}

#[tokio::test]
async fn tf_serving_config_example_and_reload_over_grpc() {
    let dir = TempDir::new("grpc");
    let (first, second) = (dir.path().join("my_first_model"), dir.path().join("my_second_model"));
    for v in ["42", "43", "44"] {
        add_version(&first, v);
    }
    add_version(&second, "1");
    // TF Serving's documented example, unchanged but for the paths.
    let text = format!(
        r#"model_config_list {{
  config {{
    name: 'my_first_model'
    base_path: '{}/'
    model_platform: 'tensorflow'
    model_version_policy {{
      specific {{
        versions: 42
        versions: 43
      }}
    }}
    version_labels {{
      key: 'stable'
      value: 42
    }}
    version_labels {{
      key: 'canary'
      value: 43
    }}
  }}
  config {{
    name: 'my_second_model'
    base_path: '{}/'
    model_platform: 'tensorflow'
  }}
}}
"#,
        first.display(),
        second.display()
    );
    let models =
        config::validate(&config::parse_text(&text, "models.config").unwrap(), &common::platforms().names()).unwrap();
    let registry = Arc::new(ModelRegistry::new());
    let manager = ModelManager::start(registry, common::platforms(), manual(), models, Some(text)).unwrap();
    let (channel, _stop) = serve(manager).await;
    let mut status = pb::model_service_client::ModelServiceClient::new(channel.clone());
    let mut predict = pb::prediction_service_client::PredictionServiceClient::new(channel);

    let (available, end) = (ServableState::Available as i32, ServableState::End as i32);
    assert_eq!(status_of(&mut status, "my_first_model").await.unwrap(), vec![(43, available, 0), (42, available, 0)]);
    assert_eq!(status_of(&mut status, "my_second_model").await.unwrap(), vec![(1, available, 0)]);
    for (label, version) in [("stable", 42), ("canary", 43)] {
        let request = pb::PredictRequest {
            model_spec: Some(pb::ModelSpec {
                name: "my_first_model".into(),
                version_choice: Some(pb::model_spec::VersionChoice::VersionLabel(label.into())),
                ..Default::default()
            }),
            inputs: [("x".to_string(), x_of(2.0))].into(),
            output_filter: Vec::new(),
            ..Default::default()
        };
        let response = predict.predict(request).await.unwrap().into_inner();
        assert_eq!(response.model_spec.unwrap().version_choice, Some(pb::model_spec::VersionChoice::Version(version)));
        assert_eq!(response.outputs["y"].float_val, vec![3.0]);
    }

    // Reload: the second model is left out (unloaded, END), a third arrives; status says OK.
    let third = dir.path().join("third");
    add_version(&third, "7");
    let reload = format!(
        "model_config_list {{ config {{ name: 'my_first_model' base_path: '{}' model_platform: 'tensorflow' model_version_policy {{ latest {{ num_versions: 1 }} }} }} config {{ name: 'third' base_path: '{}' model_platform: 'onnx' }} }}",
        first.display(),
        third.display()
    );
    let response = status.handle_reload_config_request(reload_request(&reload)).await.unwrap().into_inner();
    assert_eq!(response.status.unwrap().error_code, 0);
    assert_eq!(
        status_of(&mut status, "my_first_model").await.unwrap(),
        vec![(44, available, 0), (43, end, 0), (42, end, 0)]
    );
    assert_eq!(status_of(&mut status, "my_second_model").await.unwrap(), vec![(1, end, 0)]);
    assert_eq!(status_of(&mut status, "third").await.unwrap(), vec![(7, available, 0)]);
    let gone = pb::PredictRequest {
        model_spec: Some(pb::ModelSpec { name: "my_second_model".into(), ..Default::default() }),
        inputs: [("x".to_string(), x_of(2.0))].into(),
        output_filter: Vec::new(),
        ..Default::default()
    };
    let e = predict.predict(gone).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::NotFound, "Servable not found for request: Latest(my_second_model)")
    );

    // Bad reloads: the error is the gRPC status, and the running config stays.
    let bad = [
        (format!("model_config_list {{ config {{ name: 'third' base_path: '{}' model_platform: 'tensorflow' }} }}", third.display()), tonic::Code::InvalidArgument, "Illegal to change a model's platform. For model third platform was onnx and new platform requested is tensorflow"),
        ("model_config_list { config { name: 'x' base_path: 'relative/path' } }".to_string(), tonic::Code::InvalidArgument, "Expected model x to have an absolute path; got base_path()=relative/path"),
    ];
    for (text, code, message) in bad {
        let e = status.handle_reload_config_request(reload_request(&text)).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (code, message));
    }
    assert_eq!(status_of(&mut status, "third").await.unwrap(), vec![(7, available, 0)]);
    // A reload whose model cannot load answers with that load's error; the status shows it too.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(broken.join("3")).unwrap();
    std::fs::write(broken.join("3/model.onnx"), b"garbage").unwrap();
    let text = format!(
        "model_config_list {{ config {{ name: 'third' base_path: '{}' model_platform: 'onnx' }} config {{ name: 'broken' base_path: '{}' model_platform: 'onnx' }} }}",
        third.display(),
        broken.display()
    );
    let e = status.handle_reload_config_request(reload_request(&text)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().starts_with("version 3 of model broken failed to load: could not load ONNX model"),
        "{}",
        e.message()
    );
    assert_eq!(status_of(&mut status, "broken").await.unwrap(), vec![(3, end, Code::FailedPrecondition as i32)]);
    assert_eq!(status_of(&mut status, "third").await.unwrap(), vec![(7, available, 0)]);
}

/// Counts live models of the `counted` platform, to prove unloads free them.
static LIVE_MODELS: AtomicUsize = AtomicUsize::new(0);

struct Counted(Arc<dyn Model>);

impl Drop for Counted {
    fn drop(&mut self) {
        LIVE_MODELS.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Model for Counted {
    fn signatures(&self) -> &BTreeMap<String, tensorserve::Signature> {
        self.0.signatures()
    }
    fn run(&self, s: &str, i: tensorserve::TensorMap, o: &[String]) -> Result<tensorserve::TensorMap, ServingError> {
        self.0.run(s, i, o)
    }
}

#[test]
fn unloaded_versions_are_freed() {
    let dir = TempDir::new("freed");
    add_version(dir.path(), "1");
    let mut platforms = common::platforms();
    platforms.register("counted", |d: &Path| -> Result<Arc<dyn Model>, ServingError> {
        LIVE_MODELS.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(Counted(common::loader().load_dir(d)?)))
    });
    let mut m = model("m", dir.path(), VersionPolicy::Latest(1));
    m.platform = "counted".into();
    let (registry, manager) = start_with(platforms, manual(), vec![m]);
    for v in 2..=20 {
        add_version(dir.path(), &v.to_string());
        std::fs::remove_dir_all(dir.path().join((v - 1).to_string())).unwrap();
        manager.poll();
        assert_eq!(LIVE_MODELS.load(Ordering::SeqCst), 1, "after swap to {v}");
    }
    assert_eq!(states(&registry, "m")[0], (20, Available));
}

fn x_example_input(x: f32) -> Option<pb::Input> {
    let feature = tf::Feature { kind: Some(tf::feature::Kind::FloatList(tf::FloatList { value: vec![x] })) };
    let example = tf::Example { features: Some(tf::Features { feature: [("x".to_string(), feature)].into() }) };
    Some(pb::Input { kind: Some(pb::input::Kind::ExampleList(pb::ExampleList { examples: vec![example] })) })
}

fn spec_for(signature: &str) -> Option<pb::ModelSpec> {
    Some(pb::ModelSpec { name: "m".into(), signature_name: signature.into(), version_choice: None })
}

#[test]
fn warmup_replays_classify_regress_and_multi_inference_logs() {
    use pb::prediction_log::LogType;
    let log = |t: LogType| pb::PredictionLog { log_metadata: None, log_type: Some(t) }.encode_to_vec();
    let classify = log(LogType::ClassifyLog(pb::ClassifyLog {
        request: Some(pb::ClassificationRequest {
            model_spec: spec_for("classify_x_to_y"),
            input: x_example_input(2.0),
        }),
        response: None,
    }));
    let regress = log(LogType::RegressLog(pb::RegressLog {
        request: Some(pb::RegressionRequest { model_spec: spec_for("regress_x_to_y"), input: x_example_input(2.0) }),
        response: None,
    }));
    let task = |sig: &str, method: &str| pb::InferenceTask { model_spec: spec_for(sig), method_name: method.into() };
    let multi = |tasks| {
        log(LogType::MultiInferenceLog(pb::MultiInferenceLog {
            request: Some(pb::MultiInferenceRequest { tasks, input: x_example_input(2.0) }),
            response: None,
        }))
    };
    let good_multi = multi(vec![
        task("regress_x_to_y", "tensorflow/serving/regress"),
        task("classify_x_to_y", "tensorflow/serving/classify"),
    ]);
    let dir = TempDir::new("warmup-examples");
    let v1 = add_version(dir.path(), "1");
    std::fs::create_dir_all(v1.join("assets.extra")).unwrap();
    std::fs::write(v1.join(warmup::WARMUP_FILE), warmup::write_tfrecord(&[classify, regress, good_multi])).unwrap();
    let (registry, manager) = start(manual(), vec![model("m", dir.path(), VersionPolicy::Latest(1))]);
    assert_eq!(states(&registry, "m"), vec![(1, Available)]);
    assert!(registry.resolve("m", &VersionChoice::Latest).unwrap().runtime.stats().average() > Duration::ZERO);

    // A multi-inference record with a predict task fails the load with TF Serving's message.
    let v2 = add_version(dir.path(), "2");
    std::fs::create_dir_all(v2.join("assets.extra")).unwrap();
    let bad = multi(vec![task("serving_default", "tensorflow/serving/predict")]);
    std::fs::write(v2.join(warmup::WARMUP_FILE), warmup::write_tfrecord(&[bad])).unwrap();
    manager.poll();
    let statuses = registry.statuses("m").unwrap();
    assert_eq!((statuses[0].version, statuses[0].state), (2, End));
    let message = &statuses[0].error.as_ref().unwrap().message;
    assert!(message.contains("record 0: Unsupported signature method_name: tensorflow/serving/predict"), "{message}");
}

#[test]
fn signature_files_are_checked_at_load() {
    let dir = TempDir::new("signatures");
    let cases = [
        ("signature_def { key: 'a' value { inputs { key: 'x' value { name: 'x' } } outputs { key: 'y' value { name: 'nope' } } } }",
         "output y names tensor nope, which is not a graph output (y, y2, y3)"),
        ("signature_def { key: 'a' value { inputs { key: 'x' value { name: 'x' dtype: DT_INT64 } } outputs { key: 'y' value { name: 'y' } } } }",
         "input x is declared int64 but the graph's x is float"),
        ("signature_def { key: 'a' value { inputs { key: 'x' value { name: 'x' } }\n bogus: 1 } }",
         "Error parsing text-format tensorflow.serving.SignatureDefMap: "),
        ("", "declares no signature_def"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let v = add_version(dir.path(), &(i + 1).to_string());
        std::fs::write(v.join("signatures.pbtxt"), text).unwrap();
        let err = match common::loader().load_dir(&v) {
            Ok(_) => panic!("{text} loaded"),
            Err(e) => e,
        };
        assert_eq!(err.code, tensorserve::Code::FailedPrecondition);
        assert!(err.message.contains(want), "{}", err.message);
        assert!(err.message.contains("signatures.pbtxt"), "{}", err.message);
    }
    // The parse error names the line and column.
    let v = add_version(dir.path(), "9");
    std::fs::write(v.join("signatures.pbtxt"), cases[2].0).unwrap();
    let err = common::loader().load_dir(&v).err().unwrap();
    assert!(err.message.contains("signatures.pbtxt:2:2: "), "{}", err.message);
}
