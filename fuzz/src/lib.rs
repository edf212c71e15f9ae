//! What the fuzz targets share: native Rust models, the registry and the serving cores they are
//! served from, the REST routers and gRPC front ends over those cores, and one tokio runtime.
//!
//! Everything is built once per process and is deterministic: the models compute plain
//! functions of their inputs, and their run statistics are seeded so every run goes inline
//! on the runtime's thread (no timing-dependent choice between inline and the blocking pool).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use half::{bf16, f16};
use tensorserve::api::grpc::GrpcApi;
use tensorserve::api::rest::{router, RestOptions};
use tensorserve::core::ExecutorOptions;
use tensorserve::explain::ExplainOptions;
use tensorserve::memory::{MemoryLimits, MemoryPool, RequestBudget};
use tensorserve::model::{
    parse_signature_defs, signatures_from_defs, ModelRegistry, ServableState, Signature, TensorMap, TensorSpec,
    CLASSIFY_METHOD_NAME, PREDICT_METHOD_NAME, REGRESS_METHOD_NAME,
};
use tensorserve::serving::{ServingCore, ServingOptions};
use tensorserve::tensor::proto::DecodeLimits;
use tensorserve::tensor::TensorData;
use tensorserve::{Code, DataType, Model, ServingError, Tensor};

/// The per-tensor byte limit every target decodes with: small, so that legal but huge shapes
/// are refused instead of allocated (the server's default is 2 GiB).
pub const MAX_TENSOR_BYTES: usize = 1 << 20;

/// The largest batch a native model builds outputs for. A tensor of shape `[10^12, 0]` holds
/// no values and passes any byte limit; a model sizing an output by its first dimension alone
/// would then allocate without bound, which is the harness's fault, not the server's.
const MAX_ROWS: usize = 1 << 16;

/// The memory limits of the fuzzed cores and of [`budget`]: small, so refusals are fuzzed too.
pub const MEMORY: MemoryLimits = MemoryLimits { per_request: 8 << 20, in_flight: 64 << 20 };

/// A request budget for targets that call a decoder directly (one shared pool, [`MEMORY`]).
pub fn budget() -> RequestBudget {
    static POOL: OnceLock<Arc<MemoryPool>> = OnceLock::new();
    POOL.get_or_init(|| MemoryPool::new(MEMORY)).budget()
}

/// After a request has been answered, its budget must have given everything back: memory
/// still held would be refused to every later request (an accounting leak).
pub fn assert_nothing_held(core: &ServingCore, what: &str) {
    let held = core.memory().in_use();
    assert!(held == 0, "{what}: {held} bytes of the memory pool are still held after the answer");
}

/// The decode limits of every target. The one place `DecodeLimits` is built.
pub fn decode_limits() -> DecodeLimits {
    DecodeLimits { max_tensor_bytes: MAX_TENSOR_BYTES, ..DecodeLimits::default() }
}

/// Serving options: `strict` turns on `--enable_signature_method_name_check` and
/// `tensor_content` outputs, so both settings' code paths are fuzzed.
pub fn serving_options(strict: bool) -> ServingOptions {
    ServingOptions {
        tensor_content_output: strict,
        decode_limits: decode_limits(),
        signature_method_name_check: strict,
        memory: MEMORY,
        // Anything added later keeps the server's defaults.
        ..ServingOptions::default()
    }
}

/// The tokio runtime every target that calls async code runs on (current-thread, built once).
pub fn block_on<F: Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a tokio runtime"))
        .block_on(future)
}

/// The served models and every front end over them.
pub struct Fixture {
    /// The models: see [`build_registry`].
    pub registry: Arc<ModelRegistry>,
    /// `[default options, strict options]`.
    pub cores: [Arc<ServingCore>; 2],
    /// gRPC front ends over `cores`.
    pub grpc: [GrpcApi; 2],
    /// REST routers over `cores`: `RestOptions::default()`, and CORS with a 64 KiB body limit and
    /// a coarse explainer.
    pub rest: [axum::Router; 2],
}

/// The fixture, built on first use.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let registry = Arc::new(build_registry());
        let cores = [false, true].map(|strict| Arc::new(ServingCore::new(registry.clone(), serving_options(strict))));
        let grpc = [GrpcApi::new(cores[0].clone(), None), GrpcApi::new(cores[1].clone(), None)];
        let strict_rest = RestOptions {
            cors: true,
            max_body_bytes: 64 << 10,
            explain: ExplainOptions { baseline: 1.0, max_features: 3 },
            ..RestOptions::default()
        };
        let rest = [router(cores[0].clone(), RestOptions::default()), router(cores[1].clone(), strict_rest)];
        Fixture { registry, cores, grpc, rest }
    })
}

/// Model names requests can address: the served ones, ones in other states, and unknown ones.
pub const MODEL_NAMES: [&str; 8] = ["fuzz", "half_plus_two", "iris", "loading", "failed", "retired", "nope", ""];

/// Every signature of every served model, for targets that fill one signature (sorted, stable).
pub fn all_signatures() -> &'static [(String, Signature)] {
    static ALL: OnceLock<Vec<(String, Signature)>> = OnceLock::new();
    ALL.get_or_init(|| {
        let registry = &fixture().registry;
        let mut out = Vec::new();
        for name in ["fuzz", "half_plus_two", "iris"] {
            let servable =
                registry.resolve(name, &tensorserve::model::VersionChoice::Latest).expect("fixture model loaded");
            for (sig_name, sig) in servable.model.signatures() {
                out.push((format!("{name}/{sig_name}"), sig.clone()));
            }
        }
        out
    })
}

/// The registry:
///
/// * `fuzz` v1 (no engine name) and v2 (engine `fuzz`), labels `stable` -> 1, `canary` -> 2,
///   `gone` -> 3; v3 failed to load (END with an error). See [`FuzzModel`] for its signatures.
/// * `half_plus_two` v123 and `iris` v1: native versions of the bundled models, with the
///   bundled `signatures.pbtxt` files run through the real signature-file code.
/// * `loading` (v1 LOADING: REST answers 503), `failed` (v1 END with an error), `retired`
///   (unloaded and removed from the config).
pub fn build_registry() -> ModelRegistry {
    // Far above any run: every run goes inline (deterministic; see RunStats::run_inline).
    let options = ExecutorOptions { inline_run_threshold: Duration::from_secs(3600), ..ExecutorOptions::default() };
    let registry = ModelRegistry::with_executor_options(options);
    let insert = |name: &str, version: i64, model: Arc<dyn Model>| {
        let runtime = registry.executor(name, version, model);
        runtime.stats().seed(Duration::from_nanos(1));
        registry.insert_runtime(name, version, runtime);
    };
    insert("fuzz", 1, Arc::new(FuzzModel::new(None)));
    insert("fuzz", 2, Arc::new(FuzzModel::new(Some("fuzz"))));
    registry.set_status("fuzz", 3, ServableState::End, Some(ServingError::failed_precondition("v3 did not load")));
    registry.set_labels(
        "fuzz",
        HashMap::from([("stable".to_string(), 1), ("canary".to_string(), 2), ("gone".to_string(), 3)]),
    );
    insert("half_plus_two", 123, Arc::new(HalfPlusTwo::new()));
    insert("iris", 1, Arc::new(Iris::new()));
    registry.declare("loading");
    registry.set_status("loading", 1, ServableState::Loading, None);
    registry.declare("failed");
    registry.set_status("failed", 1, ServableState::End, Some(ServingError::new(Code::Internal, "it broke")));
    insert("retired", 1, Arc::new(HalfPlusTwo::new()));
    drop(registry.begin_unload("retired", 1));
    registry.set_status("retired", 1, ServableState::End, None);
    registry.retire("retired");
    registry
}

fn bad(message: impl Into<String>) -> ServingError {
    ServingError::invalid_argument(message)
}

fn spec(name: &str, dtype: DataType, shape: &[i64]) -> (String, TensorSpec) {
    (name.to_string(), TensorSpec::new(name, dtype, shape))
}

fn input<'a>(inputs: &'a TensorMap, alias: &str) -> Result<&'a Tensor, ServingError> {
    inputs.get(alias).ok_or_else(|| bad(format!("native model: no input {alias}")))
}

fn floats<'a>(inputs: &'a TensorMap, alias: &str) -> Result<&'a [f32], ServingError> {
    input(inputs, alias)?.as_slice::<f32>().ok_or_else(|| bad(format!("native model: {alias} is not float")))
}

/// The first dimension, bounded (see [`MAX_ROWS`]); a scalar is an error.
fn rows(t: &Tensor) -> Result<usize, ServingError> {
    let n = *t.shape().first().ok_or_else(|| bad("native model: the input needs a batch dimension"))?;
    if n > MAX_ROWS {
        return Err(bad(format!("native model: batch {n} is above {MAX_ROWS}")));
    }
    Ok(n)
}

fn vec_tensor<T: tensorserve::tensor::Element>(shape: Vec<usize>, values: Vec<T>) -> Result<Tensor, ServingError> {
    Tensor::from_vec(shape, values).map_err(|e| ServingError::internal(format!("native model: {e}")))
}

fn string_tensor(shape: Vec<usize>, values: Vec<Bytes>) -> Result<Tensor, ServingError> {
    Tensor::from_strings(shape, values).map_err(|e| ServingError::internal(format!("native model: {e}")))
}

/// An empty `[0]` tensor of `dtype`, echoed for an optional input a request left out.
fn empty(dtype: DataType) -> Tensor {
    let shape = vec![0];
    let data = match dtype {
        DataType::Float => TensorData::Float(tensorserve::tensor::Buffer::from_vec(Vec::new())),
        DataType::Double => TensorData::Double(tensorserve::tensor::Buffer::from_vec(Vec::new())),
        DataType::Int8 => TensorData::Int8(tensorserve::tensor::Buffer::from_vec(Vec::new())),
        DataType::Int16 => TensorData::Int16(tensorserve::tensor::Buffer::from_vec(Vec::new())),
        DataType::Int32 => TensorData::Int32(tensorserve::tensor::Buffer::from_vec(Vec::new())),
        DataType::Int64 => TensorData::Int64(tensorserve::tensor::Buffer::from_vec(Vec::new())),
        DataType::UInt8 => TensorData::UInt8(tensorserve::tensor::Buffer::from_vec(Vec::new())),
        DataType::UInt16 => TensorData::UInt16(tensorserve::tensor::Buffer::from_vec(Vec::new())),
        DataType::UInt32 => TensorData::UInt32(tensorserve::tensor::Buffer::from_vec(Vec::new())),
        DataType::UInt64 => TensorData::UInt64(tensorserve::tensor::Buffer::from_vec(Vec::new())),
        DataType::Half => TensorData::Half(tensorserve::tensor::Buffer::<f16>::from_vec(Vec::new())),
        DataType::BFloat16 => TensorData::BFloat16(tensorserve::tensor::Buffer::<bf16>::from_vec(Vec::new())),
        DataType::Bool => TensorData::Bool(Vec::new()),
        DataType::String => TensorData::String(Vec::new()),
    };
    Tensor::new(shape, data).expect("an empty tensor")
}

/// Outputs named by graph tensor: the model computes tensors by graph name and the signature
/// maps them to aliases (as the ONNX models' signature files do).
fn by_alias(signature: &Signature, mut graph: BTreeMap<&str, Tensor>) -> Result<TensorMap, ServingError> {
    let mut out = TensorMap::new();
    for (alias, spec) in &signature.outputs {
        let t = graph.get(spec.name.as_str()).cloned().ok_or_else(|| bad(format!("no graph output {}", spec.name)))?;
        out.insert(alias.clone(), t);
    }
    graph.clear();
    Ok(out)
}

/// The graph input named `name`, found through the signature's aliases.
fn graph_input<'a>(signature: &Signature, inputs: &'a TensorMap, name: &str) -> Option<&'a Tensor> {
    signature.inputs.iter().find(|(_, s)| s.name == name).and_then(|(alias, _)| inputs.get(alias))
}

/// `half_plus_two` in Rust: y = 0.5 x + 2, y2 = 0.5 x + 3, y3 = 0.5 x2 + 3, with the bundled
/// signatures file run through `parse_signature_defs` / `signatures_from_defs`.
pub struct HalfPlusTwo(BTreeMap<String, Signature>);

impl HalfPlusTwo {
    /// With the bundled signatures.
    pub fn new() -> Self {
        let defs = parse_signature_defs(tensorserve::examples::HALF_PLUS_TWO_SIGNATURES, "half_plus_two")
            .expect("the bundled signatures parse");
        let graph_in = BTreeMap::from([spec("x", DataType::Float, &[-1, 1]), spec("x2", DataType::Float, &[-1, 1])]);
        let graph_out = BTreeMap::from([
            spec("y", DataType::Float, &[-1, 1]),
            spec("y2", DataType::Float, &[-1, 1]),
            spec("y3", DataType::Float, &[-1, 1]),
        ]);
        let sigs = signatures_from_defs(&defs, &graph_in, &graph_out, &BTreeSet::new()).expect("bundled signatures");
        HalfPlusTwo(sigs)
    }
}

impl Default for HalfPlusTwo {
    fn default() -> Self {
        Self::new()
    }
}

impl Model for HalfPlusTwo {
    fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.0
    }

    fn run(&self, signature: &str, inputs: TensorMap, _outputs: &[String]) -> Result<TensorMap, ServingError> {
        let sig = self.0.get(signature).ok_or_else(|| bad("no such signature"))?;
        let mut graph = BTreeMap::new();
        let affine = |t: &Tensor, add: f32| -> Result<Tensor, ServingError> {
            let x = t.as_slice::<f32>().ok_or_else(|| bad("not float"))?;
            vec_tensor(t.shape().to_vec(), x.iter().map(|v| 0.5 * v + add).collect())
        };
        if let Some(x) = graph_input(sig, &inputs, "x") {
            graph.insert("y", affine(x, 2.0)?);
            graph.insert("y2", affine(x, 3.0)?);
        }
        if let Some(x2) = graph_input(sig, &inputs, "x2") {
            graph.insert("y3", affine(x2, 3.0)?);
        }
        by_alias(sig, graph)
    }
}

/// `iris` in Rust: a fixed softmax regression over the four features, classes as names.
pub struct Iris(BTreeMap<String, Signature>);

/// The four features, in the order the weights use.
const IRIS_FEATURES: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

impl Iris {
    /// With the bundled signatures.
    pub fn new() -> Self {
        let defs =
            parse_signature_defs(tensorserve::examples::IRIS_SIGNATURES, "iris").expect("the bundled signatures parse");
        let graph_in: BTreeMap<String, TensorSpec> =
            IRIS_FEATURES.iter().map(|f| spec(f, DataType::Float, &[-1, 1])).collect();
        let graph_out =
            BTreeMap::from([spec("classes", DataType::String, &[-1, 3]), spec("scores", DataType::Float, &[-1, 3])]);
        Iris(signatures_from_defs(&defs, &graph_in, &graph_out, &BTreeSet::new()).expect("bundled signatures"))
    }
}

impl Default for Iris {
    fn default() -> Self {
        Self::new()
    }
}

impl Model for Iris {
    fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.0
    }

    fn run(&self, signature: &str, inputs: TensorMap, _outputs: &[String]) -> Result<TensorMap, ServingError> {
        let sig = self.0.get(signature).ok_or_else(|| bad("no such signature"))?;
        const W: [[f32; 3]; 4] = [[0.4, 0.1, -0.5], [1.0, -0.3, -0.7], [-1.3, 0.2, 1.1], [-0.6, -0.4, 1.0]];
        let columns = IRIS_FEATURES
            .iter()
            .map(|f| graph_input(sig, &inputs, f).and_then(|t| t.as_slice::<f32>()).ok_or_else(|| bad("feature")))
            .collect::<Result<Vec<&[f32]>, _>>()?;
        let n = columns[0].len();
        if columns.iter().any(|c| c.len() != n) || n > MAX_ROWS {
            return Err(bad("iris: the features must hold one value per row"));
        }
        let mut scores = Vec::with_capacity(3 * n);
        let mut classes = Vec::with_capacity(3 * n);
        for row in 0..n {
            let logits: Vec<f32> = (0..3).map(|k| (0..4).map(|f| W[f][k] * columns[f][row]).sum()).collect();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
            let total: f32 = exp.iter().sum();
            scores.extend(exp.iter().map(|e| e / total));
            classes.extend([&b"setosa"[..], b"versicolor", b"virginica"].map(Bytes::from_static));
        }
        let graph = BTreeMap::from([
            ("scores", vec_tensor(vec![n, 3], scores)?),
            ("classes", string_tensor(vec![n, 3], classes)?),
        ]);
        by_alias(sig, graph)
    }
}

/// The model most targets aim at: signatures for every dtype, defaults, optional inputs, and
/// classify/regress signatures whose outputs are sometimes malformed on purpose (the server's
/// result checks are decoders too). Every output is a deterministic function of the inputs.
///
/// | signature | method | inputs | outputs |
/// |---|---|---|---|
/// | `serving_default` | predict | `x` float [-1,-1], `n` int64 [-1], `s` string [-1] | `y` = 0.5x+2, `total` = sum n, `lengths` of s, `echo_bytes` = s |
/// | `single` | predict | `x` float [-1,-1] | `y` row sums [-1], `probs` [-1,2] (the explainer's case) |
/// | `single_double` | predict | `x` double [-1,-1] | `y` row sums; explained by the model itself |
/// | `all_types` | predict | `<dtype>` for the 12 JSON dtypes, all optional | `<dtype>_out` echoes (`string_out_bytes` as b64) |
/// | `half_types` | predict | `half`, `bfloat16`, optional | echoes |
/// | `with_defaults` | predict | `x` float [-1]; defaults `scale`, `offset` (int32), `tag`, `flag` | `y` = x*scale+offset |
/// | `wrong_method` | `tensorflow/serving/unknown` | `x` float [-1] | `y` echo |
/// | `classify` | classify | `f` float [-1,2], `d` double, `i` int64, `n32` int32, `b` bool, `s` string (each [-1,1]; defaults for i, n32, b, s) | `classes`, `scores` [-1,2] |
/// | `classify_scores` | classify | `x` float [-1,1] | `scores` [-1,3] |
/// | `classify_classes` | classify | `s` string [-1,1] | `classes` [-1,1] |
/// | `classify_bad` | classify | `x` float [-1,1] | malformed `classes`/`scores`, chosen by x |
/// | `regress` | regress | `f` float [-1,1], `x2` double [-1,1] (default) | `outputs` [-1] |
/// | `regress_column` | regress | `x` int64 [-1,1], `flag` bool [-1,1] | `outputs` [-1,1] |
/// | `regress_bad` | regress | `x` float [-1,1], `z` float [-1,2] (a default of the wrong size) | malformed `outputs`, chosen by x |
/// | `regress_two_outputs` | regress | `x` float [-1,1] | `outputs`, `extra` |
/// | `unknown_rank`, `scalar`, `half_feature` | classify/regress | inputs tf.Example cannot fill | - |
pub struct FuzzModel {
    signatures: BTreeMap<String, Signature>,
    engine: Option<&'static str>,
}

/// The dtypes JSON can carry, with the aliases `all_types` uses.
const JSON_TYPES: [(&str, DataType); 12] = [
    ("float", DataType::Float),
    ("double", DataType::Double),
    ("int8", DataType::Int8),
    ("int16", DataType::Int16),
    ("int32", DataType::Int32),
    ("int64", DataType::Int64),
    ("uint8", DataType::UInt8),
    ("uint16", DataType::UInt16),
    ("uint32", DataType::UInt32),
    ("uint64", DataType::UInt64),
    ("bool", DataType::Bool),
    ("string", DataType::String),
];

fn echo_alias(name: &str) -> String {
    if name == "string" {
        "string_out_bytes".to_string()
    } else {
        format!("{name}_out")
    }
}

fn sig(
    method: &str,
    inputs: impl IntoIterator<Item = (String, TensorSpec)>,
    outputs: impl IntoIterator<Item = (String, TensorSpec)>,
) -> Signature {
    Signature {
        inputs: inputs.into_iter().collect(),
        outputs: outputs.into_iter().collect(),
        method_name: method.to_string(),
        defaults: BTreeMap::new(),
        optional: BTreeSet::new(),
    }
}

fn scalar<T: tensorserve::tensor::Element>(shape: Vec<usize>, v: T) -> Tensor {
    Tensor::from_vec(shape, vec![v]).expect("one value")
}

impl FuzzModel {
    /// The model; `engine` is what metadata and status report.
    pub fn new(engine: Option<&'static str>) -> Self {
        use DataType::*;
        let f11 = |n: &str| spec(n, Float, &[-1, 1]);
        let mut s = BTreeMap::new();
        s.insert(
            "serving_default".to_string(),
            sig(
                PREDICT_METHOD_NAME,
                [spec("x", Float, &[-1, -1]), spec("n", Int64, &[-1]), spec("s", String, &[-1])],
                [
                    spec("y", Float, &[-1, -1]),
                    spec("total", Int64, &[]),
                    spec("lengths", Int64, &[-1]),
                    spec("echo_bytes", String, &[-1]),
                ],
            ),
        );
        s.insert(
            "single".to_string(),
            sig(
                PREDICT_METHOD_NAME,
                [spec("x", Float, &[-1, -1])],
                [spec("y", Float, &[-1]), spec("probs", Float, &[-1, 2])],
            ),
        );
        s.insert(
            "single_double".to_string(),
            sig(PREDICT_METHOD_NAME, [spec("x", Double, &[-1, -1])], [spec("y", Double, &[-1])]),
        );
        let mut all = sig(
            PREDICT_METHOD_NAME,
            JSON_TYPES.iter().map(|(n, d)| spec(n, *d, &[-1])),
            JSON_TYPES.iter().map(|(n, d)| (echo_alias(n), TensorSpec::new(echo_alias(n), *d, &[-1]))),
        );
        all.optional = JSON_TYPES.iter().map(|(n, _)| n.to_string()).collect();
        s.insert("all_types".to_string(), all);
        let mut halves = sig(
            PREDICT_METHOD_NAME,
            [spec("half", Half, &[-1]), spec("bfloat16", BFloat16, &[-1])],
            [spec("half_out", Half, &[-1]), spec("bfloat16_out", BFloat16, &[-1])],
        );
        halves.optional = ["half", "bfloat16"].map(str::to_string).into();
        s.insert("half_types".to_string(), halves);
        let mut with_defaults = sig(
            PREDICT_METHOD_NAME,
            [
                spec("x", Float, &[-1]),
                spec("scale", Float, &[]),
                spec("offset", Int32, &[]),
                spec("tag", String, &[]),
                spec("flag", Bool, &[]),
            ],
            [spec("y", Float, &[-1])],
        );
        with_defaults.defaults = BTreeMap::from([
            ("scale".to_string(), scalar(vec![], 3.0f32)),
            ("offset".to_string(), scalar(vec![], 1i32)),
            ("tag".to_string(), Tensor::from_strings(vec![], vec![Bytes::from_static(b"t")]).expect("one")),
            ("flag".to_string(), Tensor::from_bools(vec![], vec![true]).expect("one")),
        ]);
        s.insert("with_defaults".to_string(), with_defaults);
        s.insert(
            "wrong_method".to_string(),
            sig("tensorflow/serving/unknown", [spec("x", Float, &[-1])], [spec("y", Float, &[-1])]),
        );
        let mut classify = sig(
            CLASSIFY_METHOD_NAME,
            [
                spec("f", Float, &[-1, 2]),
                spec("d", Double, &[-1, 1]),
                spec("i", Int64, &[-1, 1]),
                spec("n32", Int32, &[-1, 1]),
                spec("b", Bool, &[-1, 1]),
                spec("s", String, &[-1, 1]),
            ],
            [spec("classes", String, &[-1, 2]), spec("scores", Float, &[-1, 2])],
        );
        classify.defaults = BTreeMap::from([
            ("i".to_string(), scalar(vec![1], 7i64)),
            ("n32".to_string(), scalar(vec![], 3i32)),
            ("b".to_string(), Tensor::from_bools(vec![1], vec![false]).expect("one")),
            ("s".to_string(), Tensor::from_strings(vec![1], vec![Bytes::from_static(b"d")]).expect("one")),
        ]);
        s.insert("classify".to_string(), classify);
        s.insert(
            "classify_scores".to_string(),
            sig(CLASSIFY_METHOD_NAME, [f11("x")], [spec("scores", Float, &[-1, 3])]),
        );
        s.insert(
            "classify_classes".to_string(),
            sig(CLASSIFY_METHOD_NAME, [spec("s", String, &[-1, 1])], [spec("classes", String, &[-1, 1])]),
        );
        s.insert(
            "classify_bad".to_string(),
            sig(CLASSIFY_METHOD_NAME, [f11("x")], [spec("classes", String, &[-1, 2]), spec("scores", Float, &[-1, 2])]),
        );
        let mut regress =
            sig(REGRESS_METHOD_NAME, [f11("f"), spec("x2", Double, &[-1, 1])], [spec("outputs", Float, &[-1])]);
        regress.defaults = BTreeMap::from([("x2".to_string(), scalar(vec![1], 0.5f64))]);
        s.insert("regress".to_string(), regress);
        s.insert(
            "regress_column".to_string(),
            sig(
                REGRESS_METHOD_NAME,
                [spec("x", Int64, &[-1, 1]), spec("flag", Bool, &[-1, 1])],
                [spec("outputs", Float, &[-1, 1])],
            ),
        );
        let mut regress_bad =
            sig(REGRESS_METHOD_NAME, [f11("x"), spec("z", Float, &[-1, 2])], [spec("outputs", Float, &[-1])]);
        regress_bad.defaults =
            BTreeMap::from([("z".to_string(), Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0]).expect("three"))]);
        s.insert("regress_bad".to_string(), regress_bad);
        s.insert(
            "regress_two_outputs".to_string(),
            sig(REGRESS_METHOD_NAME, [f11("x")], [spec("outputs", Float, &[-1]), spec("extra", Float, &[-1])]),
        );
        let mut unknown_rank = sig(CLASSIFY_METHOD_NAME, [f11("x")], [spec("scores", Float, &[-1, 1])]);
        unknown_rank.inputs.get_mut("x").expect("x").shape = None;
        s.insert("unknown_rank".to_string(), unknown_rank);
        s.insert(
            "scalar".to_string(),
            sig(REGRESS_METHOD_NAME, [spec("x", Float, &[])], [spec("outputs", Float, &[-1])]),
        );
        s.insert(
            "half_feature".to_string(),
            sig(REGRESS_METHOD_NAME, [spec("x", Half, &[-1, 1])], [spec("outputs", Float, &[-1])]),
        );
        FuzzModel { signatures: s, engine }
    }
}

/// Row sums of a [rows, ...] tensor's values.
fn row_sums<T: Copy + Into<f64>>(shape: &[usize], values: &[T]) -> Result<(usize, Vec<f64>), ServingError> {
    let n = *shape.first().ok_or_else(|| bad("native model: the input needs a batch dimension"))?;
    if n > MAX_ROWS {
        return Err(bad("native model: batch too large"));
    }
    let per = if n == 0 { 0 } else { values.len() / n };
    Ok((n, (0..n).map(|r| values[r * per..(r + 1) * per].iter().map(|v| (*v).into()).sum()).collect()))
}

/// The first value of a float input, 0 when empty: picks which malformed output a `_bad` signature returns.
fn first(t: &Tensor) -> f32 {
    t.as_slice::<f32>().and_then(|s| s.first().copied()).unwrap_or(0.0)
}

impl Model for FuzzModel {
    fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.signatures
    }

    fn engine(&self) -> Option<&'static str> {
        self.engine
    }

    fn explain(&self, signature: &str, inputs: &TensorMap) -> Option<Result<Vec<Vec<f64>>, ServingError>> {
        if signature != "single_double" {
            return None;
        }
        let x = inputs.get("x")?;
        let values = x.as_slice::<f64>()?;
        Some(row_sums(x.shape(), values).map(|(n, sums)| (0..n).map(|r| vec![sums[r].abs()]).collect()))
    }

    fn run(&self, signature: &str, inputs: TensorMap, _outputs: &[String]) -> Result<TensorMap, ServingError> {
        let mut out = TensorMap::new();
        match signature {
            "serving_default" => {
                let x = input(&inputs, "x")?;
                let y = floats(&inputs, "x")?.iter().map(|v| 0.5 * v + 2.0).collect();
                out.insert("y".into(), vec_tensor(x.shape().to_vec(), y)?);
                let n = input(&inputs, "n")?.as_slice::<i64>().ok_or_else(|| bad("n"))?;
                out.insert("total".into(), scalar(vec![], n.iter().fold(0i64, |a, b| a.wrapping_add(*b))));
                let s = input(&inputs, "s")?;
                let strings: Vec<Bytes> = match s.data() {
                    TensorData::String(v) => v.clone(),
                    _ => return Err(bad("s")),
                };
                out.insert(
                    "lengths".into(),
                    vec_tensor(vec![strings.len()], strings.iter().map(|b| b.len() as i64).collect())?,
                );
                out.insert("echo_bytes".into(), string_tensor(vec![strings.len()], strings)?);
            }
            "single" => {
                let x = input(&inputs, "x")?;
                let (n, sums) = row_sums(x.shape(), floats(&inputs, "x")?)?;
                let probs = sums.iter().flat_map(|s| {
                    let p = 1.0 / (1.0 + (-s).exp());
                    [p as f32, (1.0 - p) as f32]
                });
                out.insert("probs".into(), vec_tensor(vec![n, 2], probs.collect())?);
                out.insert("y".into(), vec_tensor(vec![n], sums.iter().map(|s| *s as f32).collect())?);
            }
            "single_double" => {
                let x = input(&inputs, "x")?;
                let (n, sums) = row_sums(x.shape(), x.as_slice::<f64>().ok_or_else(|| bad("x"))?)?;
                out.insert("y".into(), vec_tensor(vec![n], sums)?);
            }
            "all_types" | "half_types" => {
                let sig = &self.signatures[signature];
                for (alias, spec) in &sig.inputs {
                    let t = inputs.get(alias).cloned().unwrap_or_else(|| empty(spec.dtype));
                    out.insert(echo_alias(alias), t);
                }
            }
            "with_defaults" => {
                let x = input(&inputs, "x")?;
                let scale = floats(&inputs, "scale")?.first().copied().unwrap_or(1.0);
                let offset = input(&inputs, "offset")?.as_slice::<i32>().and_then(|s| s.first().copied()).unwrap_or(0);
                let y = floats(&inputs, "x")?.iter().map(|v| v * scale + offset as f32).collect();
                out.insert("y".into(), vec_tensor(x.shape().to_vec(), y)?);
            }
            "wrong_method" => {
                out.insert("y".into(), input(&inputs, "x")?.clone());
            }
            "classify" => {
                let f = input(&inputs, "f")?;
                let n = rows(f)?;
                let fv = floats(&inputs, "f")?;
                let d = input(&inputs, "d")?.as_slice::<f64>().ok_or_else(|| bad("d"))?;
                let i = input(&inputs, "i")?.as_slice::<i64>().ok_or_else(|| bad("i"))?;
                let n32 = input(&inputs, "n32")?.as_slice::<i32>().ok_or_else(|| bad("n32"))?;
                let b = match input(&inputs, "b")?.data() {
                    TensorData::Bool(v) => v.clone(),
                    _ => return Err(bad("b")),
                };
                let s = match input(&inputs, "s")?.data() {
                    TensorData::String(v) => v.clone(),
                    _ => return Err(bad("s")),
                };
                if fv.len() != 2 * n || [d.len(), i.len(), n32.len(), b.len(), s.len()].iter().any(|l| *l != n) {
                    return Err(bad("classify: every input needs one row per example"));
                }
                let mut scores = Vec::with_capacity(2 * n);
                let mut classes = Vec::with_capacity(2 * n);
                for r in 0..n {
                    scores.push(fv[2 * r] + fv[2 * r + 1] + d[r] as f32 + i[r] as f32);
                    scores.push(s[r].len() as f32 + b[r] as u8 as f32 + n32[r] as f32);
                    classes.push(s[r].clone());
                    classes.push(Bytes::from_static(b"other"));
                }
                out.insert("scores".into(), vec_tensor(vec![n, 2], scores)?);
                out.insert("classes".into(), string_tensor(vec![n, 2], classes)?);
            }
            "classify_scores" => {
                let x = floats(&inputs, "x")?;
                if x.len() > MAX_ROWS {
                    return Err(bad("too many rows"));
                }
                let scores = x.iter().flat_map(|v| [*v, 1.0 - v, v * v]).collect();
                out.insert("scores".into(), vec_tensor(vec![x.len(), 3], scores)?);
            }
            "classify_classes" => {
                let s = input(&inputs, "s")?;
                out.insert("classes".into(), s.clone());
            }
            "classify_bad" => {
                let x = input(&inputs, "x")?;
                let n = floats(&inputs, "x")?.len().min(MAX_ROWS);
                let v = first(x);
                let classes = |rows: usize| string_tensor(vec![rows, 2], vec![Bytes::from_static(b"c"); 2 * rows]);
                if v > 1.0 {
                    // classes of the wrong dtype
                    out.insert("classes".into(), vec_tensor(vec![n, 2], vec![v; 2 * n])?);
                    out.insert("scores".into(), vec_tensor(vec![n, 2], vec![v; 2 * n])?);
                } else if v < -1.0 {
                    // a batch that does not match the examples
                    out.insert("classes".into(), classes(n + 1)?);
                    out.insert("scores".into(), vec_tensor(vec![n + 1, 2], vec![v; 2 * n + 2])?);
                } else if v == 0.0 {
                    // rank 1 where [batch, classes] is needed
                    out.insert("classes".into(), classes(n)?);
                    out.insert("scores".into(), vec_tensor(vec![n], vec![v; n])?);
                } else if v > 0.0 {
                    // classes and scores disagree on the number of classes
                    out.insert("classes".into(), classes(n)?);
                    out.insert("scores".into(), vec_tensor(vec![n, 3], vec![v; 3 * n])?);
                } else {
                    // scores only: "model did not produce output classes"
                    out.insert("scores".into(), vec_tensor(vec![n, 2], vec![v; 2 * n])?);
                }
            }
            "regress" => {
                let f = floats(&inputs, "f")?;
                let x2 = input(&inputs, "x2")?.as_slice::<f64>().ok_or_else(|| bad("x2"))?;
                if f.len() != x2.len() || f.len() > MAX_ROWS {
                    return Err(bad("regress: f and x2 need one value per example"));
                }
                let values = f.iter().zip(x2).map(|(a, b)| a + *b as f32).collect();
                out.insert("outputs".into(), vec_tensor(vec![f.len()], values)?);
            }
            "regress_column" => {
                let x = input(&inputs, "x")?.as_slice::<i64>().ok_or_else(|| bad("x"))?;
                let n = x.len().min(MAX_ROWS);
                out.insert("outputs".into(), vec_tensor(vec![n, 1], x[..n].iter().map(|v| *v as f32).collect())?);
            }
            "regress_bad" => {
                let x = input(&inputs, "x")?;
                let n = floats(&inputs, "x")?.len().min(MAX_ROWS);
                let v = first(x);
                if v > 0.0 {
                    out.insert("outputs".into(), vec_tensor(vec![n], vec![v as f64; n])?);
                } else if v < 0.0 {
                    out.insert("outputs".into(), vec_tensor(vec![n, 2], vec![v; 2 * n])?);
                } else {
                    out.insert("outputs".into(), vec_tensor(vec![n + 1], vec![v; n + 1])?);
                }
            }
            "regress_two_outputs" => {
                let x = input(&inputs, "x")?;
                out.insert("outputs".into(), x.clone());
                out.insert("extra".into(), x.clone());
            }
            "unknown_rank" | "scalar" | "half_feature" => {
                let x = input(&inputs, "x")?;
                out.insert("scores".into(), x.clone());
                out.insert("outputs".into(), x.clone());
            }
            other => return Err(bad(format!("native model: no signature {other}"))),
        }
        Ok(out)
    }
}

/// Prints `what()` when `FUZZ_DEBUG` is set: to check by hand which seeds reach a model
/// (`FUZZ_DEBUG=1 target corpus/target/* -runs=0`... see README.md). Off, it costs one load.
pub fn debug(what: impl FnOnce() -> String) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("FUZZ_DEBUG").is_some()) {
        eprintln!("FUZZ_DEBUG {}", what());
    }
}
