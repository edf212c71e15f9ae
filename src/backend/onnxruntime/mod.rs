//! The ONNX Runtime engine, through the `ort` crate with the library loaded at run time.
//!
//! One process-wide environment owns one intra-op thread pool shared by every session, so N
//! concurrent requests use the cores instead of starting N pools. `Session::run` needs
//! `&mut`, so each version keeps a small pool of sessions; a run takes one, borrows the
//! request's buffers as input tensors and lends ONNX Runtime's output buffers to the response.

mod library;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use bytes::Bytes;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{DynValue, PrimitiveTensorElementType, TensorElementType, TensorRef, ValueType};

pub use library::{candidates, Candidate};

use super::onnx::{load_error, load_reason, GraphIo, GraphTensor, OnnxSource};
use crate::error::ServingError;
use crate::model::{Model, Signature, TensorMap};
use crate::tensor::{Buffer, DataType, Element, Tensor, TensorData};

/// Graph inputs backed by an initializer with at most this many elements are offered as
/// optional signature inputs; larger ones (weights exported as inputs) stay internal.
const MAX_OPTIONAL_INPUT_ELEMENTS: i64 = 4096;

/// A graph with more initializer-backed inputs than this exported its weights as inputs
/// (old exporters did); none of them is offered, so the signature lists what callers send.
const MAX_OPTIONAL_INPUTS: usize = 16;

/// How ONNX Runtime is found and set up; fixed for the process at the first load.
#[derive(Clone, Debug)]
pub struct OrtOptions {
    /// `--onnxruntime_library`: the only file tried when set.
    pub library: Option<PathBuf>,
    /// Threads of the shared intra-op pool (the calling thread counts as one); 0 = the machine's cores.
    pub intra_op_threads: usize,
    /// Threads for running independent nodes in parallel; 0 or 1 = sequential execution.
    pub inter_op_threads: usize,
    /// Sessions per version, the most runs of one version at once; 0 = the machine's cores.
    pub sessions: usize,
    /// Graph optimisations applied at load.
    pub optimization: OptimizationLevel,
    /// Where optimised graphs are kept between loads, keyed by the model file's content.
    pub optimized_model_dir: Option<PathBuf>,
    /// Let pool threads spin briefly while waiting for work (ONNX Runtime's default: lower latency, busier cores).
    pub spin: bool,
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            library: None,
            intra_op_threads: 0,
            inter_op_threads: 0,
            sessions: 0,
            optimization: OptimizationLevel::All,
            optimized_model_dir: None,
            spin: true,
        }
    }
}

/// ONNX Runtime's graph optimisation levels, by their flag names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizationLevel {
    /// No graph rewrites.
    Disable,
    /// Semantics-preserving rewrites (constant folding, redundant nodes).
    Basic,
    /// Plus node fusions.
    Extended,
    /// Plus memory-layout changes (the default).
    All,
}

impl std::str::FromStr for OptimizationLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => OptimizationLevel::Disable,
            "basic" => OptimizationLevel::Basic,
            "extended" => OptimizationLevel::Extended,
            "all" => OptimizationLevel::All,
            other => return Err(format!("unknown optimization level {other:?}: use disable, basic, extended or all")),
        })
    }
}

impl OptimizationLevel {
    fn to_ort(self) -> GraphOptimizationLevel {
        match self {
            OptimizationLevel::Disable => GraphOptimizationLevel::Disable,
            OptimizationLevel::Basic => GraphOptimizationLevel::Level1,
            OptimizationLevel::Extended => GraphOptimizationLevel::Level2,
            OptimizationLevel::All => GraphOptimizationLevel::All,
        }
    }

    fn name(self) -> &'static str {
        match self {
            OptimizationLevel::Disable => "disable",
            OptimizationLevel::Basic => "basic",
            OptimizationLevel::Extended => "extended",
            OptimizationLevel::All => "all",
        }
    }
}

static OPTIONS: OnceLock<OrtOptions> = OnceLock::new();
static RUNTIME: OnceLock<Result<OrtRuntime, String>> = OnceLock::new();

/// Sets the options; only the first call before the first load counts (the library is loaded once per process).
pub fn configure(options: OrtOptions) -> bool {
    OPTIONS.set(options).is_ok()
}

/// The process's ONNX Runtime, loaded on first use; `Err` says why there is none.
pub fn runtime() -> Result<&'static OrtRuntime, &'static str> {
    RUNTIME.get_or_init(|| OrtRuntime::start(OPTIONS.get_or_init(OrtOptions::default))).as_ref().map_err(String::as_str)
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The loaded library and its environment.
pub struct OrtRuntime {
    /// The file loaded.
    pub library: PathBuf,
    /// ONNX Runtime's version string, e.g. `1.32.0`.
    pub version: String,
    /// The options it was started with.
    options: OrtOptions,
    /// The environment (one per process; sessions refer to it).
    environment: ort::environment::Environment,
}

impl OrtRuntime {
    fn start(options: &OrtOptions) -> Result<OrtRuntime, String> {
        let mut refused = Vec::new();
        for candidate in candidates(options.library.as_deref()) {
            match Self::start_from(&candidate.path, options) {
                Ok(rt) => {
                    tracing::info!(
                        "onnxruntime {} loaded from {} (found via {})",
                        rt.version,
                        rt.library.display(),
                        candidate.origin
                    );
                    return Ok(rt);
                }
                Err(why) => refused.push(format!("{} ({}): {why}", candidate.path.display(), candidate.origin)),
            }
        }
        let why = format!(
            "onnxruntime not found or refused [{}]; add it with `pip install onnxruntime`, or name the library with \
             --onnxruntime_library PATH or ORT_DYLIB_PATH",
            refused.join("; ")
        );
        Err(why)
    }

    fn start_from(path: &Path, options: &OrtOptions) -> Result<OrtRuntime, String> {
        // Refuses files that are not ONNX Runtime, and ONNX Runtime older than `ort`'s API, before touching its API.
        let builder = ort::init_from(path).map_err(|e| e.to_string())?;
        let library = if path.is_absolute() { path.to_path_buf() } else { resolved(path) };
        let version = std::panic::catch_unwind(|| ort::info().to_string()).map_err(|_| {
            "the library does not offer ONNX Runtime's C API at the version tensorserve needs".to_string()
        })?;
        let version = version
            .split(',')
            .find_map(|part| part.trim().strip_prefix("git-branch=rel-"))
            .map(str::to_string)
            .or_else(|| version_in_name(&library))
            .unwrap_or_else(|| "(unknown version)".into());
        let intra = if options.intra_op_threads == 0 { cores() } else { options.intra_op_threads };
        let mut pool = ort::environment::GlobalThreadPoolOptions::default()
            .with_intra_threads(intra)
            .and_then(|p| p.with_spin_control(options.spin))
            .map_err(|e| e.to_string())?;
        if options.inter_op_threads > 1 {
            pool = pool.with_inter_threads(options.inter_op_threads).map_err(|e| e.to_string())?;
        }
        let environment = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            builder.with_name("tensorserve").with_telemetry(false).with_global_thread_pool(pool).build()
        }))
        .map_err(|_| "ONNX Runtime refused to create an environment".to_string())?
        .map_err(|e| e.to_string())?;
        Ok(OrtRuntime { library, version, options: options.clone(), environment })
    }

    /// Loads `source` as one version: its signatures, and a pool of sessions for each distinct
    /// set of inputs and outputs they name (the graph pruned to it, since ONNX Runtime runs every node).
    pub fn load(&self, source: &OnnxSource) -> Result<OrtModel, ServingError> {
        let sessions = if self.options.sessions == 0 { cores() } else { self.options.sessions };
        let whole = ModelBytes { path: source.path.as_deref(), bytes: &source.bytes };
        let first = self.session(whole)?;
        let io = graph_io(&first)?;
        let signatures = io.signatures(source.declared.as_ref())?;
        let required: BTreeSet<&str> = io.inputs.iter().map(|t| t.name.as_str()).collect();
        let all_outputs: BTreeSet<&str> = io.outputs.iter().map(|t| t.name.as_str()).collect();
        let mut first = Some(first);
        let mut by_tensors: BTreeMap<(BTreeSet<String>, BTreeSet<String>), Arc<Head>> = BTreeMap::new();
        let mut heads = BTreeMap::new();
        for (name, sig) in &signatures {
            let inputs: BTreeSet<String> = sig.inputs.values().map(|s| s.name.clone()).collect();
            let outputs: BTreeSet<String> = sig.outputs.values().map(|s| s.name.clone()).collect();
            let key = (inputs, outputs);
            if let Some(head) = by_tensors.get(&key) {
                heads.insert(name.clone(), head.clone());
                continue;
            }
            let (inputs, outputs) = &key;
            let whole_graph = outputs.iter().map(String::as_str).collect::<BTreeSet<_>>() == all_outputs
                && required.iter().all(|r| inputs.contains(*r));
            let head = if whole_graph {
                let mut pool = Vec::with_capacity(sessions);
                pool.extend(first.take());
                while pool.len() < sessions.max(1) {
                    pool.push(self.session(whole)?);
                }
                // A model read from a file is read again if the relaxed graph is ever needed, not kept in memory.
                let graph = match &source.path {
                    Some(path) => GraphSource::File(path.clone()),
                    None => GraphSource::Bytes(source.bytes.clone()),
                };
                Head::new(pool, graph)?
            } else {
                let ins: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let outs: Vec<&str> = outputs.iter().map(String::as_str).collect();
                let fail = |e: String| load_error(format!("signature {name}: {e}"));
                let pruned = super::onnx::graph::prune(&source.bytes, &ins, &outs).map_err(fail)?;
                let pool = (0..sessions.max(1))
                    .map(|_| self.session(ModelBytes { path: None, bytes: &pruned }))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| fail(load_reason(&e).to_string()))?;
                Head::new(pool, GraphSource::Bytes(pruned))?
            };
            let head = Arc::new(head);
            by_tensors.insert(key, head.clone());
            heads.insert(name.clone(), head);
        }
        Ok(OrtModel { signatures, heads })
    }

    /// Builds one session, from the optimised-graph cache when it has this graph.
    fn session(&self, model: ModelBytes<'_>) -> Result<Session, ServingError> {
        let fail = load_error;
        let cached = self.optimized_file(model);
        if let Some(cache) = &cached {
            if cache.is_file() {
                match self.builder(OptimizationLevel::Disable).and_then(|mut b| b.commit_from_file(cache)) {
                    Ok(s) => return Ok(s),
                    Err(e) => tracing::warn!("optimized graph {} unusable, rebuilding: {e}", cache.display()),
                }
            }
        }
        let mut builder = self.builder(self.options.optimization).map_err(|e| fail(e.to_string()))?;
        let staged = cached.as_ref().map(|c| c.with_extension(format!("tmp{}", std::process::id())));
        if let Some(staged) = &staged {
            builder = builder.with_optimized_model_path(staged).map_err(|e| fail(e.to_string()))?;
        }
        let session = match model.path {
            // From the file, so external data beside it is found.
            Some(path) => builder.commit_from_file(path),
            None => builder.commit_from_memory(model.bytes),
        }
        .map_err(|e| fail(e.to_string()))?;
        if let (Some(staged), Some(cache)) = (&staged, &cached) {
            // Renamed into place whole, so a reader never sees half a graph.
            match std::fs::rename(staged, cache) {
                Ok(()) => tracing::info!("optimized graph cached at {}", cache.display()),
                Err(e) => tracing::warn!("could not cache the optimized graph at {}: {e}", cache.display()),
            }
        }
        Ok(session)
    }

    fn builder(&self, level: OptimizationLevel) -> ort::Result<SessionBuilder> {
        let mut builder = Session::builder(&self.environment)?;
        builder = builder.with_optimization_level(level.to_ort()).map_err(Into::<ort::Error>::into)?;
        if self.options.inter_op_threads > 1 {
            builder = builder.with_parallel_execution(true).map_err(Into::<ort::Error>::into)?;
        }
        Ok(builder)
    }

    /// The cache file for a graph: named by a hash of its bytes, the level and ONNX Runtime's version.
    fn optimized_file(&self, model: ModelBytes<'_>) -> Option<PathBuf> {
        let dir = self.options.optimized_model_dir.as_ref()?;
        // External data would be left behind by the cache; such models are optimised at every load.
        if model.path.is_some_and(has_external_data) {
            return None;
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(model.bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!("optimized model dir {}: {e}", dir.display());
            return None;
        }
        Some(dir.join(format!("{hex}.{}.ort{}.onnx", self.options.optimization.name(), self.version)))
    }
}

/// A graph to build a session from: its bytes, and its file when it is the model's own.
#[derive(Clone, Copy)]
struct ModelBytes<'a> {
    path: Option<&'a Path>,
    bytes: &'a [u8],
}

/// True when the model keeps tensors in files beside it (`*.data`, ONNX's external data convention).
fn has_external_data(model: &Path) -> bool {
    model.parent().is_some_and(|dir| {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "data")))
            .unwrap_or(false)
    })
}

/// The file the system's loader resolved a bare library name to, from /proc/self/maps.
fn resolved(name: &Path) -> PathBuf {
    let wanted = name.to_string_lossy();
    std::fs::read_to_string("/proc/self/maps")
        .ok()
        .and_then(|maps| {
            maps.lines()
                .filter_map(|l| l.split_whitespace().nth(5))
                .find(|p| Path::new(p).file_name().is_some_and(|f| f.to_string_lossy().starts_with(&*wanted)))
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| name.to_path_buf())
}

/// The version in a library file name (`libonnxruntime.so.1.32.0` -> `1.32.0`).
fn version_in_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let version = name.strip_prefix("libonnxruntime.so.")?;
    (!version.is_empty()).then(|| version.to_string())
}

/// A version's sessions; a run waits when all are busy.
struct SessionPool {
    idle: Mutex<Vec<Session>>,
    freed: Condvar,
}

/// A session taken from the pool, given back when dropped.
struct Lease<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
}

impl SessionPool {
    fn take(&self) -> Lease<'_> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(session) = idle.pop() {
                return Lease { pool: self, session: Some(session) };
            }
            idle = self.freed.wait(idle).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(session);
            self.pool.freed.notify_one();
        }
    }
}

/// An ONNX model run by ONNX Runtime.
pub struct OrtModel {
    /// The signatures, as served.
    signatures: BTreeMap<String, Signature>,
    /// The graph each signature runs; signatures naming the same tensors share one.
    heads: BTreeMap<String, Arc<Head>>,
}

/// Where a head's graph comes from.
enum GraphSource {
    /// The model file itself.
    File(PathBuf),
    /// Bytes held in memory (a bundled model, or a graph pruned to a signature).
    Bytes(Vec<u8>),
}

/// One graph (the model's, or pruned to a signature) and its sessions.
struct Head {
    /// Declared dims of each input, -1 where free, to see when a request needs the relaxed graph.
    declared: BTreeMap<String, Vec<i64>>,
    /// The graph's outputs, to ask for a subset only when a request wants one.
    outputs: BTreeSet<String>,
    /// Sessions over the graph as declared.
    pool: SessionPool,
    /// Where the graph's bytes are, to build the relaxed graph when first needed.
    graph: GraphSource,
    /// A session over the graph without declared shapes, for requests whose shapes differ
    /// (TF Serving does not check shapes against the signature; the graph decides).
    relaxed: OnceLock<Result<SessionPool, String>>,
}

impl Head {
    fn new(sessions: Vec<Session>, graph: GraphSource) -> Result<Head, ServingError> {
        let io = graph_io(&sessions[0])?;
        let declared = io.inputs.iter().chain(&io.optional_inputs).map(|t| (t.name.clone(), t.shape.clone())).collect();
        let outputs = io.outputs.iter().map(|t| t.name.clone()).collect();
        let pool = SessionPool { idle: Mutex::new(sessions), freed: Condvar::new() };
        Ok(Head { declared, outputs, pool, graph, relaxed: OnceLock::new() })
    }

    /// True when every input fits its declared rank and fixed dims.
    fn fits(&self, feeds: &[(&str, &Tensor)]) -> bool {
        feeds.iter().all(|(name, t)| {
            self.declared.get(*name).is_none_or(|dims| {
                dims.len() == t.shape().len()
                    && dims.iter().zip(t.shape()).all(|(d, got)| *d < 0 || *d as usize == *got)
            })
        })
    }

    /// The relaxed graph's sessions, built on first use.
    fn relaxed(&self) -> Result<&SessionPool, ServingError> {
        let built = self.relaxed.get_or_init(|| {
            let rt = runtime().map_err(str::to_string)?;
            let original = match &self.graph {
                GraphSource::File(path) => {
                    Cow::Owned(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?)
                }
                GraphSource::Bytes(bytes) => Cow::Borrowed(bytes.as_slice()),
            };
            let bytes = super::onnx::graph::relax_shapes(&original)?;
            let session = rt.session(ModelBytes { path: None, bytes: &bytes }).map_err(|e| e.message)?;
            Ok(SessionPool { idle: Mutex::new(vec![session]), freed: Condvar::new() })
        });
        built
            .as_ref()
            .map_err(|e| ServingError::invalid_argument(format!("the model cannot take these input shapes: {e}")))
    }
}

fn tensor_type(what: &str, name: &str, ty: &ValueType) -> Result<(DataType, Vec<i64>), ServingError> {
    let unsupported = |kind: String| load_error(format!("{what} {name} is {kind}, which tensorserve cannot carry"));
    match ty {
        ValueType::Tensor { ty, shape, .. } => {
            let dtype = dtype_of(*ty).ok_or_else(|| unsupported(format!("a tensor of {ty:?}")))?;
            Ok((dtype, shape.iter().map(|d| if *d < 0 { -1 } else { *d }).collect()))
        }
        other => Err(unsupported(format!("a {other}"))),
    }
}

/// The session's inputs, small overridable initializers as optional inputs, and outputs.
fn graph_io(session: &Session) -> Result<GraphIo, ServingError> {
    let mut io = GraphIo::default();
    for input in session.inputs() {
        let (dtype, shape) = tensor_type("input", input.name(), input.dtype())?;
        io.inputs.push(GraphTensor { name: input.name().to_string(), dtype, shape });
    }
    let overridable = session.overridable_initializers();
    for init in overridable.iter().filter(|_| overridable.len() <= MAX_OPTIONAL_INPUTS) {
        let Ok((dtype, shape)) = tensor_type("input", init.name(), init.dtype()) else { continue };
        let elements = shape.iter().try_fold(1i64, |n, d| if *d < 0 { None } else { n.checked_mul(*d) });
        if elements.is_some_and(|n| n <= MAX_OPTIONAL_INPUT_ELEMENTS) {
            io.optional_inputs.push(GraphTensor { name: init.name().to_string(), dtype, shape });
        }
    }
    for output in session.outputs() {
        let (dtype, shape) = tensor_type("output", output.name(), output.dtype())?;
        io.outputs.push(GraphTensor { name: output.name().to_string(), dtype, shape });
    }
    Ok(io)
}

fn dtype_of(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Float32 => DataType::Float,
        TensorElementType::Float64 => DataType::Double,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Uint8 => DataType::UInt8,
        TensorElementType::Uint16 => DataType::UInt16,
        TensorElementType::Uint32 => DataType::UInt32,
        TensorElementType::Uint64 => DataType::UInt64,
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::String => DataType::String,
        TensorElementType::Float16 => DataType::Half,
        TensorElementType::Bfloat16 => DataType::BFloat16,
        _ => return None,
    })
}

/// An input tensor for ONNX Runtime; numeric data is borrowed, not copied.
fn to_ort<'t>(alias: &str, tensor: &'t Tensor) -> Result<SessionInputValue<'t>, ServingError> {
    fn view<'t, T: Element + PrimitiveTensorElementType + std::fmt::Debug>(
        shape: Vec<i64>,
        b: &'t Buffer<T>,
    ) -> ort::Result<SessionInputValue<'t>> {
        TensorRef::from_array_view((shape, b.as_slice())).map(SessionInputValue::from)
    }
    let shape: Vec<i64> = tensor.shape().iter().map(|&d| d as i64).collect();
    let value = match tensor.data() {
        TensorData::Float(b) => view(shape, b),
        TensorData::Double(b) => view(shape, b),
        TensorData::Int8(b) => view(shape, b),
        TensorData::Int16(b) => view(shape, b),
        TensorData::Int32(b) => view(shape, b),
        TensorData::Int64(b) => view(shape, b),
        TensorData::UInt8(b) => view(shape, b),
        TensorData::UInt16(b) => view(shape, b),
        TensorData::UInt32(b) => view(shape, b),
        TensorData::UInt64(b) => view(shape, b),
        TensorData::Half(b) => view(shape, b),
        TensorData::BFloat16(b) => view(shape, b),
        TensorData::Bool(v) => TensorRef::from_array_view((shape, v.as_slice())).map(SessionInputValue::from),
        TensorData::String(v) => {
            let strings =
                v.iter().map(|s| String::from_utf8(s.to_vec())).collect::<Result<Vec<String>, _>>().map_err(|_| {
                    ServingError::invalid_argument(format!("input {alias}: ONNX string tensors must be UTF-8"))
                })?;
            ort::value::Tensor::from_string_array((shape, strings.as_slice())).map(SessionInputValue::from)
        }
    };
    value.map_err(|e| ServingError::invalid_argument(format!("input {alias}: {e}")))
}

/// Lends an ONNX Runtime output's bytes to a `Bytes` without copying them.
struct OrtBytes<T> {
    value: DynValue,
    element: std::marker::PhantomData<fn() -> T>,
}

impl<T: PrimitiveTensorElementType + bytemuck::Pod> AsRef<[u8]> for OrtBytes<T> {
    fn as_ref(&self) -> &[u8] {
        self.value.try_extract_tensor::<T>().map(|(_, data)| bytemuck::cast_slice(data)).unwrap_or(&[])
    }
}

fn from_ort(name: &str, value: DynValue) -> Result<Tensor, ServingError> {
    fn plain<T: Element + PrimitiveTensorElementType>(value: DynValue) -> ort::Result<Tensor> {
        let (shape, len) = {
            let (shape, data) = value.try_extract_tensor::<T>()?;
            (shape.iter().map(|&d| d as usize).collect::<Vec<usize>>(), data.len())
        };
        if len == 0 {
            return Tensor::from_vec::<T>(shape, Vec::new()).map_err(|e| ort::Error::new(e.to_string()));
        }
        let bytes = Bytes::from_owner(OrtBytes::<T> { value, element: std::marker::PhantomData });
        let buffer = match Buffer::<T>::from_bytes_aligned(bytes.clone()) {
            Some(b) => b,
            None => Buffer::from_vec(
                bytes.chunks_exact(std::mem::size_of::<T>()).map(bytemuck::pod_read_unaligned).collect(),
            ),
        };
        Tensor::new(shape, T::wrap(buffer)).map_err(|e| ort::Error::new(e.to_string()))
    }
    let ty = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => {
            return Err(ServingError::internal(format!("output {name} is a {other}, which tensorserve cannot return")))
        }
    };
    let result = match ty {
        TensorElementType::Float32 => plain::<f32>(value),
        TensorElementType::Float64 => plain::<f64>(value),
        TensorElementType::Int8 => plain::<i8>(value),
        TensorElementType::Int16 => plain::<i16>(value),
        TensorElementType::Int32 => plain::<i32>(value),
        TensorElementType::Int64 => plain::<i64>(value),
        TensorElementType::Uint8 => plain::<u8>(value),
        TensorElementType::Uint16 => plain::<u16>(value),
        TensorElementType::Uint32 => plain::<u32>(value),
        TensorElementType::Uint64 => plain::<u64>(value),
        TensorElementType::Float16 => plain::<half::f16>(value),
        TensorElementType::Bfloat16 => plain::<half::bf16>(value),
        TensorElementType::Bool => value.try_extract_tensor::<bool>().and_then(|(shape, data)| {
            let shape = shape.iter().map(|&d| d as usize).collect();
            Tensor::from_bools(shape, data.to_vec()).map_err(|e| ort::Error::new(e.to_string()))
        }),
        TensorElementType::String => value.try_extract_strings().and_then(|(shape, strings)| {
            let shape = shape.iter().map(|&d| d as usize).collect();
            Tensor::from_strings(shape, strings.into_iter().map(Bytes::from).collect())
                .map_err(|e| ort::Error::new(e.to_string()))
        }),
        other => return Err(ServingError::internal(format!("output {name} has unsupported type {other:?}"))),
    };
    result.map_err(|e| ServingError::internal(format!("output {name}: {e}")))
}

/// A failed run: the request's inputs did not fit the graph (ONNX Runtime checks shapes and
/// kernels refuse what they cannot take), unless ONNX Runtime itself broke.
fn run_error(e: ort::Error) -> ServingError {
    use ort::ErrorCode as C;
    match e.code() {
        C::InvalidArgument | C::GenericFailure | C::RuntimeException | C::Ok => {
            ServingError::invalid_argument(format!("model run failed: {}", e.message()))
        }
        C::NotImplemented => {
            ServingError::new(crate::Code::Unimplemented, format!("model run failed: {}", e.message()))
        }
        _ => ServingError::internal(format!("model run failed: {}", e.message())),
    }
}

impl Model for OrtModel {
    fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.signatures
    }

    fn engine(&self) -> Option<&'static str> {
        Some("onnxruntime")
    }

    fn run(&self, signature: &str, inputs: TensorMap, outputs: &[String]) -> Result<TensorMap, ServingError> {
        let (Some(sig), Some(head)) = (self.signatures.get(signature), self.heads.get(signature)) else {
            return Err(ServingError::failed_precondition(format!("Serving signature key \"{signature}\" not found.")));
        };
        let mut named: Vec<(&str, &Tensor)> = Vec::with_capacity(inputs.len());
        for (alias, tensor) in &inputs {
            let spec = sig
                .inputs
                .get(alias)
                .ok_or_else(|| ServingError::invalid_argument(format!("unknown input {alias}")))?;
            named.push((spec.name.as_str(), tensor));
        }
        let mut feeds: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(named.len());
        for (name, tensor) in &named {
            feeds.push((Cow::Borrowed(*name), to_ort(name, tensor)?));
        }
        // The graph tensors the wanted aliases name (two aliases may share one).
        let mut wanted: Vec<&str> = Vec::with_capacity(outputs.len());
        for alias in outputs {
            let spec =
                sig.outputs.get(alias).ok_or_else(|| ServingError::internal(format!("unknown output {alias}")))?;
            if !wanted.contains(&spec.name.as_str()) {
                wanted.push(&spec.name);
            }
        }
        // Only a strict subset of the graph's outputs is worth a selector (ONNX Runtime then skips the rest).
        let subset = if wanted.len() == head.outputs.len() {
            None
        } else {
            let selector = wanted.iter().fold(OutputSelector::no_default(), |s, name| s.with(*name));
            Some(RunOptions::new().map_err(|e| ServingError::internal(e.to_string()))?.with_outputs(selector))
        };
        let fits = head.fits(&named);
        // Said like tract's path, so a client sees one wording whatever the engine.
        let misfit = |e: ServingError| {
            let got: Vec<String> = named.iter().map(|(n, t)| format!("{n} {:?}", t.shape())).collect();
            let reason = e.message.strip_prefix("model run failed: ").unwrap_or(&e.message).to_string();
            ServingError::new(e.code, format!("the model cannot take input shapes {}: {reason}", got.join(", ")))
        };
        let pool = if fits { &head.pool } else { head.relaxed().map_err(misfit)? };
        let mut lease = pool.take();
        let session = lease.session.as_mut().expect("a lease holds its session until dropped");
        let mut results = match &subset {
            None => session.run(feeds),
            Some(options) => session.run_with_options(feeds, options),
        }
        .map_err(run_error)
        .map_err(|e| if fits { e } else { misfit(e) })?;
        let mut by_name: BTreeMap<&str, Tensor> = BTreeMap::new();
        for name in &wanted {
            let value =
                results.remove(*name).ok_or_else(|| ServingError::internal(format!("model did not produce {name}")))?;
            by_name.insert(name, from_ort(name, value)?);
        }
        drop(results);
        drop(lease);
        let mut out = TensorMap::new();
        for alias in outputs {
            let tensor = &by_name[sig.outputs[alias].name.as_str()];
            out.insert(alias.clone(), tensor.clone());
        }
        Ok(out)
    }
}
