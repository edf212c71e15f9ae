//! Platforms: how a version directory becomes a [`Model`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use crate::backend::onnx::{OnnxEngine, OnnxLoader, MODEL_FILE};
use crate::error::ServingError;
use crate::model::Model;

/// Loads one version directory (`BASE/<version>/`) of a model.
///
/// Register your own with [`Platforms::register`] to serve Rust-native models
/// from a config file's `model_platform`.
pub trait Platform: Send + Sync + 'static {
    /// Loads the model in `version_dir`; may block (it runs on the manager thread).
    fn load(&self, version_dir: &Path) -> Result<Arc<dyn Model>, ServingError>;
}

impl<F> Platform for F
where
    F: Fn(&Path) -> Result<Arc<dyn Model>, ServingError> + Send + Sync + 'static,
{
    fn load(&self, version_dir: &Path) -> Result<Arc<dyn Model>, ServingError> {
        self(version_dir)
    }
}

/// ONNX: `<version>/model.onnx`, run by the loader's engine (or the first that can, for `auto`).
pub struct OnnxPlatform(pub OnnxLoader);

impl Platform for OnnxPlatform {
    fn load(&self, version_dir: &Path) -> Result<Arc<dyn Model>, ServingError> {
        self.0.load_dir(version_dir)
    }
}

/// `model_platform: "tensorflow"`: TF Serving configs say this, so a converted
/// `model.onnx` in the version directory is served; a SavedModel alone gets advice.
pub struct TensorflowPlatform(pub OnnxLoader);

impl Platform for TensorflowPlatform {
    fn load(&self, version_dir: &Path) -> Result<Arc<dyn Model>, ServingError> {
        if version_dir.join(MODEL_FILE).is_file() {
            return self.0.load_dir(version_dir);
        }
        let saved_model = ["saved_model.pb", "saved_model.pbtxt"].iter().any(|f| version_dir.join(f).is_file());
        let dir = version_dir.display();
        Err(ServingError::failed_precondition(if saved_model {
            format!(
                "{dir} holds a TensorFlow SavedModel, which tensorserve cannot run; convert it to ONNX beside it: \
                 pip install tf2onnx && python -m tf2onnx.convert --saved-model {dir} --output {dir}/{MODEL_FILE}"
            )
        } else {
            format!("{dir} has no {MODEL_FILE}")
        }))
    }
}

/// Platform name -> loader.
#[derive(Clone)]
pub struct Platforms {
    /// Loaders by `model_platform` name.
    by_name: BTreeMap<String, Arc<dyn Platform>>,
}

impl Default for Platforms {
    fn default() -> Self {
        Platforms::with_onnx_engine(OnnxEngine::Auto)
    }
}

impl Platforms {
    /// `onnx` and `tensorflow` (ONNX files in TF Serving layouts) with the `auto` engine,
    /// `onnxruntime` and `tract` with that engine only.
    pub fn new() -> Self {
        Self::default()
    }

    /// As [`Platforms::new`], with `engine` (the `--onnx_engine` flag) for `onnx` and `tensorflow`.
    pub fn with_onnx_engine(engine: OnnxEngine) -> Self {
        let mut p = Platforms { by_name: BTreeMap::new() };
        p.register("onnx", OnnxPlatform(OnnxLoader::new(engine)));
        p.register("tensorflow", TensorflowPlatform(OnnxLoader::new(engine)));
        p.register("onnxruntime", OnnxPlatform(OnnxLoader::new(OnnxEngine::OnnxRuntime)));
        p.register("tract", OnnxPlatform(OnnxLoader::new(OnnxEngine::Tract)));
        p
    }

    /// Adds (or replaces) a platform.
    pub fn register(&mut self, name: &str, platform: impl Platform) -> &mut Self {
        self.by_name.insert(name.to_string(), Arc::new(platform));
        self
    }

    /// The loader for `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Platform>> {
        self.by_name.get(name)
    }

    /// The names this server can load.
    pub fn names(&self) -> BTreeSet<String> {
        self.by_name.keys().cloned().collect()
    }
}
