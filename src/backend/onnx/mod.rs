//! ONNX models, whatever engine runs them: the version directory, the choice of engine, and how
//! a graph's inputs and outputs become signatures.
//!
//! A version directory holds `model.onnx`. Without a `signatures.pbtxt` beside it the model has
//! one signature, `serving_default`, whose aliases are the graph's input and output names; with
//! one, each declared signature serves the tensors it names. The engines
//! ([`crate::backend::tract`], [`crate::backend::onnxruntime`]) only report their graph's
//! inputs and outputs and run it.

pub mod graph;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::ServingError;
use crate::model::SIGNATURES_FILE;
use crate::model::{parse_signature_defs, signatures_from_defs, Model, Signature, TensorSpec, DEFAULT_SIGNATURE};
use crate::proto::tensorflow as tf;
use crate::tensor::DataType;

/// The file name tensorserve looks for inside a version directory.
pub const MODEL_FILE: &str = "model.onnx";

/// Which engine runs an ONNX model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OnnxEngine {
    /// ONNX Runtime when its library is present, else tract; each falls back to the other.
    Auto,
    /// ONNX Runtime only.
    OnnxRuntime,
    /// tract only.
    Tract,
}

impl OnnxEngine {
    /// The flag and `model_platform` spelling: `auto`, `onnxruntime`, `tract`.
    pub fn name(self) -> &'static str {
        match self {
            OnnxEngine::Auto => "auto",
            OnnxEngine::OnnxRuntime => "onnxruntime",
            OnnxEngine::Tract => "tract",
        }
    }

    /// Parses [`OnnxEngine::name`]'s spelling.
    pub fn parse(text: &str) -> Option<OnnxEngine> {
        [OnnxEngine::Auto, OnnxEngine::OnnxRuntime, OnnxEngine::Tract].into_iter().find(|e| e.name() == text)
    }

    /// The engines to try, in order; engines left out of this build are skipped.
    fn candidates(self) -> Vec<OnnxEngine> {
        match self {
            OnnxEngine::Auto => vec![OnnxEngine::OnnxRuntime, OnnxEngine::Tract],
            one => vec![one],
        }
    }
}

impl std::fmt::Display for OnnxEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for OnnxEngine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OnnxEngine::parse(s).ok_or_else(|| format!("unknown ONNX engine {s:?}: use auto, onnxruntime or tract"))
    }
}

/// One version's files: the model and, when declared, its signatures.
pub struct OnnxSource {
    /// The model file on disk (engines that resolve external data need it); `None` for bundled bytes.
    pub path: Option<PathBuf>,
    /// The serialized `ModelProto`.
    pub bytes: Vec<u8>,
    /// Declared signatures and the file they came from.
    pub declared: Option<(BTreeMap<String, tf::SignatureDef>, String)>,
}

/// The FAILED_PRECONDITION a version that cannot load gets, as TF Serving reports load errors.
pub(crate) fn load_error(what: impl std::fmt::Display) -> ServingError {
    ServingError::failed_precondition(format!("{LOAD_ERROR}{what}"))
}

/// How every ONNX load error begins.
const LOAD_ERROR: &str = "could not load ONNX model: ";

/// A load error's reason, without [`load_error`]'s opening, to nest it in another.
pub(crate) fn load_reason(e: &ServingError) -> &str {
    e.message.strip_prefix(LOAD_ERROR).unwrap_or(&e.message)
}

impl OnnxSource {
    /// Reads `dir/model.onnx`, and `dir/signatures.pbtxt` when it exists.
    pub fn from_dir(dir: &Path) -> Result<OnnxSource, ServingError> {
        let path = crate::repository::confined_file(dir, MODEL_FILE)
            .map_err(|e| load_error(format!("{}: {e}", dir.join(MODEL_FILE).display())))?;
        let bytes = std::fs::read(&path).map_err(|e| load_error(format!("{}: {e}", path.display())))?;
        let declared_path = dir.join(SIGNATURES_FILE);
        let declared = if declared_path.exists() {
            let file = crate::repository::confined_file(dir, SIGNATURES_FILE)
                .map_err(|e| load_error(format!("{}: {e}", declared_path.display())))?;
            let text = std::fs::read_to_string(&file).map_err(|e| load_error(format!("{}: {e}", file.display())))?;
            Some(Self::parse_declared(&text, &file.display().to_string())?)
        } else {
            None
        };
        Ok(OnnxSource { path: Some(path), bytes, declared })
    }

    /// A model from its bytes, with the signatures of `signatures` (text-format
    /// `SignatureDefMap`, named `origin` in errors) when given.
    pub fn from_bytes(bytes: &[u8], signatures: Option<(&str, &str)>) -> Result<OnnxSource, ServingError> {
        let declared = signatures.map(|(text, origin)| Self::parse_declared(text, origin)).transpose()?;
        Ok(OnnxSource { path: None, bytes: bytes.to_vec(), declared })
    }

    fn parse_declared(text: &str, origin: &str) -> Result<(BTreeMap<String, tf::SignatureDef>, String), ServingError> {
        // A broken signature file is a load failure, like a broken model file.
        let defs = parse_signature_defs(text, origin).map_err(|e| ServingError::failed_precondition(e.message))?;
        Ok((defs, origin.to_string()))
    }
}

/// One graph input or output as an engine sees it.
#[derive(Clone, Debug)]
pub struct GraphTensor {
    /// The ONNX tensor name.
    pub name: String,
    /// Element type.
    pub dtype: DataType,
    /// Dimensions, -1 where symbolic or unknown.
    pub shape: Vec<i64>,
}

/// A graph's interface, in the engine's order.
#[derive(Clone, Debug, Default)]
pub struct GraphIo {
    /// Inputs a run needs.
    pub inputs: Vec<GraphTensor>,
    /// Inputs a run may leave out (backed by an initializer); the engine then uses the initializer.
    pub optional_inputs: Vec<GraphTensor>,
    /// Outputs.
    pub outputs: Vec<GraphTensor>,
}

impl GraphIo {
    /// The served signatures: `serving_default` over the whole graph, or the declared ones.
    pub fn signatures(
        &self,
        declared: Option<&(BTreeMap<String, tf::SignatureDef>, String)>,
    ) -> Result<BTreeMap<String, Signature>, ServingError> {
        let spec = |t: &GraphTensor| (t.name.clone(), TensorSpec::new(t.name.clone(), t.dtype, &t.shape));
        let inputs: BTreeMap<String, TensorSpec> = self.inputs.iter().chain(&self.optional_inputs).map(spec).collect();
        let outputs: BTreeMap<String, TensorSpec> = self.outputs.iter().map(spec).collect();
        let optional: BTreeSet<String> = self.optional_inputs.iter().map(|t| t.name.clone()).collect();
        let Some((defs, origin)) = declared else {
            let mut sig = Signature::predict(inputs, outputs);
            sig.optional = optional;
            return Ok(BTreeMap::from([(DEFAULT_SIGNATURE.to_string(), sig)]));
        };
        signatures_from_defs(defs, &inputs, &outputs, &optional)
            .map_err(|e| load_error(format!("{origin}: {}", e.message)))
    }
}

/// Loads ONNX versions with the engines a server allows.
#[derive(Clone, Copy, Debug)]
pub struct OnnxLoader {
    /// The engine to use, or `Auto`.
    pub engine: OnnxEngine,
}

impl Default for OnnxLoader {
    fn default() -> Self {
        OnnxLoader { engine: OnnxEngine::Auto }
    }
}

impl OnnxLoader {
    /// A loader for `engine`.
    pub fn new(engine: OnnxEngine) -> Self {
        OnnxLoader { engine }
    }

    /// Loads `dir/model.onnx` (and its signatures file).
    pub fn load_dir(&self, dir: &Path) -> Result<Arc<dyn Model>, ServingError> {
        self.load(&OnnxSource::from_dir(dir)?)
    }

    /// Loads a model with the first engine that can; fails only when every allowed engine did,
    /// with each engine's reason.
    pub fn load(&self, source: &OnnxSource) -> Result<Arc<dyn Model>, ServingError> {
        let auto = self.engine == OnnxEngine::Auto;
        let mut failures: Vec<(OnnxEngine, ServingError)> = Vec::new();
        for engine in self.engine.candidates() {
            // An engine that panics on an odd graph has failed to load it; the next one may not.
            let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load_with(engine, source, auto)))
                .unwrap_or_else(|payload| {
                    Err(load_error(format!("panicked: {}", crate::model::panic_message(payload.as_ref()))))
                });
            match attempt {
                Ok(Some(model)) => return Ok(model),
                Ok(None) => {}
                Err(e) => failures.push((engine, e)),
            }
        }
        match failures.len() {
            0 => Err(load_error(format!("no ONNX engine is available for {}", self.engine))),
            // The one engine asked for: its own error, unchanged.
            1 if !auto => Err(failures.remove(0).1),
            _ => {
                let reasons: Vec<String> =
                    failures.iter().map(|(engine, e)| format!("{engine}: {}", load_reason(e))).collect();
                let what = if reasons.len() == 1 { String::new() } else { "no engine could load it; ".into() };
                Err(load_error(format!("{what}{}", reasons.join("; "))))
            }
        }
    }
}

/// Tries one engine. `Ok(None)`: the engine is absent and `auto` skips it silently.
fn load_with(engine: OnnxEngine, source: &OnnxSource, auto: bool) -> Result<Option<Arc<dyn Model>>, ServingError> {
    match engine {
        OnnxEngine::OnnxRuntime => {
            #[cfg(feature = "onnxruntime")]
            {
                match crate::backend::onnxruntime::runtime() {
                    Ok(rt) => Ok(Some(Arc::new(rt.load(source)?))),
                    Err(_) if auto => Ok(None),
                    Err(why) => Err(load_error(why)),
                }
            }
            #[cfg(not(feature = "onnxruntime"))]
            {
                if auto {
                    return Ok(None);
                }
                let _ = source;
                Err(load_error("this build of tensorserve has no onnxruntime engine (cargo feature `onnxruntime`)"))
            }
        }
        OnnxEngine::Tract => {
            #[cfg(feature = "tract")]
            {
                let _ = auto;
                Ok(Some(Arc::new(crate::backend::tract::TractModel::load(source)?)))
            }
            #[cfg(not(feature = "tract"))]
            {
                if auto {
                    return Ok(None);
                }
                let _ = source;
                Err(load_error("this build of tensorserve has no tract engine (cargo feature `tract`)"))
            }
        }
        OnnxEngine::Auto => unreachable!("candidates() never yields Auto"),
    }
}
