//! What a servable model is ([`Model`], [`Signature`]) and where they live ([`ModelRegistry`]).

pub mod images;
mod registry;
mod signature_def;

pub use crate::core::RunStats;
pub use registry::{ModelRegistry, Servable, ServableState, VersionChoice, VersionStatus};
pub use signature_def::{parse_signature_defs, signatures_from_defs, SIGNATURES_FILE};

use std::collections::{BTreeMap, BTreeSet};

use crate::error::ServingError;
use crate::tensor::{DataType, Tensor};

/// Named tensors, keyed by signature alias; sorted, as TF Serving reports names.
pub type TensorMap = BTreeMap<String, Tensor>;

/// The signature TF Serving uses when a request names none.
pub const DEFAULT_SIGNATURE: &str = "serving_default";

/// TF Serving's method name for prediction signatures.
pub const PREDICT_METHOD_NAME: &str = "tensorflow/serving/predict";

/// TF Serving's method name for classification signatures.
pub const CLASSIFY_METHOD_NAME: &str = "tensorflow/serving/classify";

/// TF Serving's method name for regression signatures.
pub const REGRESS_METHOD_NAME: &str = "tensorflow/serving/regress";

/// One input or output of a signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's name inside the model (TF's "feed name"), e.g. the ONNX tensor name.
    pub name: String,
    /// Element type; requests must send exactly this type.
    pub dtype: DataType,
    /// Dimensions with -1 for unknown sizes; `None` when even the rank is unknown.
    pub shape: Option<Vec<i64>>,
}

impl TensorSpec {
    /// A spec with a known rank.
    pub fn new(name: impl Into<String>, dtype: DataType, shape: &[i64]) -> Self {
        TensorSpec { name: name.into(), dtype, shape: Some(shape.to_vec()) }
    }
}

/// A named entry point of a model: aliases to tensor specs, as in TF's `SignatureDef`.
///
/// For classify and regress signatures each input alias is also the tf.Example feature that
/// fills it: its dtype picks the feature kind (float, int64 or bytes list) and its shape after
/// the batch dimension is the fixed number of values per example.
#[derive(Clone, Debug, Default)]
pub struct Signature {
    /// Inputs by alias.
    pub inputs: BTreeMap<String, TensorSpec>,
    /// Outputs by alias.
    pub outputs: BTreeMap<String, TensorSpec>,
    /// `tensorflow/serving/predict`, `.../classify` or `.../regress`.
    pub method_name: String,
    /// Values used for inputs a request leaves out; for classify and regress, the value
    /// of a tf.Example feature an example leaves out (one example's worth).
    pub defaults: BTreeMap<String, Tensor>,
    /// Inputs a request may leave out with no default: the model runs without them (ONNX graph
    /// inputs backed by an initializer).
    pub optional: BTreeSet<String>,
}

impl Signature {
    /// A prediction signature with the given inputs and outputs.
    pub fn predict(
        inputs: impl IntoIterator<Item = (String, TensorSpec)>,
        outputs: impl IntoIterator<Item = (String, TensorSpec)>,
    ) -> Self {
        Signature {
            inputs: inputs.into_iter().collect(),
            outputs: outputs.into_iter().collect(),
            method_name: PREDICT_METHOD_NAME.to_string(),
            defaults: BTreeMap::new(),
            optional: BTreeSet::new(),
        }
    }
}

/// A loaded model version that can answer requests.
///
/// Implement it to serve your own Rust code beside the ONNX models. `run` is
/// called with inputs already checked against the signature (every alias
/// present but the signature's `optional` ones, dtypes equal); it may block, since
/// the server moves models measured as slow off the async reactor.
pub trait Model: Send + Sync + 'static {
    /// The signatures this model serves, by name (`serving_default` is the default).
    fn signatures(&self) -> &BTreeMap<String, Signature>;

    /// Runs `signature` on `inputs` and returns at least the aliases in `outputs`.
    fn run(&self, signature: &str, inputs: TensorMap, outputs: &[String]) -> Result<TensorMap, ServingError>;

    /// The engine that runs this model (`onnxruntime`, `tract`), shown in logs and metadata; `None` for Rust models.
    fn engine(&self) -> Option<&'static str> {
        None
    }

    /// False when running `inputs` would first build something slow (a plan for shapes the
    /// graph does not declare); the server then runs it on the blocking pool, never on the reactor.
    fn is_prepared_for(&self, _signature: &str, _inputs: &TensorMap) -> bool {
        true
    }

    /// Memory a run on `inputs` will hold beyond the inputs themselves, known before the
    /// request is queued; it is charged to the request's budget. An error refuses the request
    /// (an encoded image too large, say) before anything is allocated.
    fn reserve(&self, _signature: &str, _inputs: &TensorMap) -> Result<usize, ServingError> {
        Ok(0)
    }

    /// Importance scores per instance (one list per batch row) for REST `:explain`.
    ///
    /// `None` (the default) hands the request to the built-in occlusion explainer.
    fn explain(&self, _signature: &str, _inputs: &TensorMap) -> Option<Result<Vec<Vec<f64>>, ServingError>> {
        None
    }
}

/// Runs `model`, turning a panic inside it into INTERNAL: one bad run must not take down
/// the worker thread or the HTTP/2 connection it shares with other requests.
pub fn run_guarded(
    model: &dyn Model,
    signature: &str,
    inputs: TensorMap,
    outputs: &[String],
) -> Result<TensorMap, ServingError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.run(signature, inputs, outputs))).unwrap_or_else(
        |payload| Err(ServingError::internal(format!("model run panicked: {}", panic_message(payload.as_ref())))),
    )
}

/// The first line of a panic's message (the rest is often a backtrace).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    text.lines().next().unwrap_or("")
}
