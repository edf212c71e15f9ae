//! KServe V2 / Open Inference Protocol: what its gRPC and REST front ends share (version
//! strings, readiness, metadata, the infer pipeline, the classification extension).

pub mod grpc;
pub mod rest;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::core::Origin;
use crate::error::{Code, ErrorKind, ServingError};
use crate::memory::RequestBudget;
use crate::model::{
    Servable, ServableState, Signature, TensorSpec, VersionChoice, CLASSIFY_METHOD_NAME, DEFAULT_SIGNATURE,
};
use crate::repository::ModelManager;
use crate::serving::{CallContext, ServingCore};
use crate::tensor::v2::{datatype_name, input_datatype};
use crate::tensor::{DataType, Tensor, TensorData};

/// The name server metadata reports.
pub const SERVER_NAME: &str = "tensorserve";

/// The version server metadata reports.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The protocol extensions both front ends implement, as server metadata lists them.
pub const EXTENSIONS: [&str; 4] = ["binary_tensor_data", "classification", "model_repository", "statistics"];

/// The request parameter naming the signature to run (V2 has none of its own).
pub const SIGNATURE_PARAMETER: &str = "signature_name";

/// The version a V2 version string asks for: empty = latest, digits = that version, else a label.
pub fn version_choice(version: &str) -> VersionChoice {
    if version.is_empty() {
        VersionChoice::Latest
    } else if let Ok(v) = version.parse::<i64>() {
        VersionChoice::Specific(v)
    } else {
        VersionChoice::Label(version.to_string())
    }
}

/// Readiness of the server: not draining, and every configured model has an AVAILABLE version.
pub fn server_ready(core: &ServingCore) -> bool {
    !core.is_draining()
        && core.registry().model_names().iter().all(|name| {
            core.registry().statuses(name).is_some_and(|s| s.iter().any(|v| v.state == ServableState::Available))
        })
}

/// Readiness of one model version; an unknown model is NOT_FOUND, a known one not serving is `false`.
pub fn model_ready(core: &ServingCore, name: &str, version: &str) -> Result<bool, ServingError> {
    known_model(core, name)?;
    Ok(!core.is_draining() && core.resolve(name, &version_choice(version)).is_ok())
}

fn known_model(core: &ServingCore, name: &str) -> Result<(), ServingError> {
    if name.is_empty() {
        return Err(ServingError::invalid_argument("the model name is empty"));
    }
    match core.registry().statuses(name) {
        Some(s) if !s.is_empty() => Ok(()),
        _ => Err(ServingError::not_found(format!("Model with name {name} does not exist."))),
    }
}

/// One input or output as V2 metadata shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorMetadata {
    /// The signature alias, the name requests use.
    pub name: String,
    /// V2 datatype name.
    pub datatype: &'static str,
    /// Dimensions, -1 where any size goes (`[-1]` when even the rank is unknown).
    pub shape: Vec<i64>,
}

/// What V2 model metadata reports.
#[derive(Clone, Debug)]
pub struct ModelMetadata {
    /// The model name.
    pub name: String,
    /// Every version that serves now, ascending.
    pub versions: Vec<String>,
    /// `onnx_onnxv1` for ONNX models, `tensorserve_native` for models written in Rust.
    pub platform: &'static str,
    /// The engine serving the version (`onnxruntime`, `tract`), if any.
    pub engine: Option<&'static str>,
    /// Inputs of the default signature.
    pub inputs: Vec<TensorMetadata>,
    /// Outputs of the default signature.
    pub outputs: Vec<TensorMetadata>,
}

fn tensor_metadata(alias: &str, spec: &TensorSpec) -> TensorMetadata {
    TensorMetadata {
        name: alias.to_string(),
        datatype: datatype_name(spec.dtype),
        shape: spec.shape.clone().unwrap_or_else(|| vec![-1]),
    }
}

/// Metadata of `name` at `version`: the default signature's tensors, by alias.
pub fn model_metadata(core: &ServingCore, name: &str, version: &str) -> Result<ModelMetadata, ServingError> {
    known_model(core, name)?;
    let servable = resolve(core, name, version)?;
    let signature = default_signature(&servable)?;
    let mut versions: Vec<i64> = core
        .registry()
        .statuses(name)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.state == ServableState::Available)
        .map(|s| s.version)
        .collect();
    versions.sort_unstable();
    let engine = servable.model.engine();
    Ok(ModelMetadata {
        name: name.to_string(),
        versions: versions.iter().map(i64::to_string).collect(),
        platform: if engine.is_some() { "onnx_onnxv1" } else { "tensorserve_native" },
        engine,
        inputs: signature.inputs.iter().map(|(k, v)| tensor_metadata(k, v)).collect(),
        outputs: signature.outputs.iter().map(|(k, v)| tensor_metadata(k, v)).collect(),
    })
}

fn default_signature(servable: &Servable) -> Result<&Signature, ServingError> {
    servable.model.signatures().get(DEFAULT_SIGNATURE).ok_or_else(|| {
        ServingError::invalid_argument(format!(
            "model {} has no \"{DEFAULT_SIGNATURE}\" signature; name one with the \"{SIGNATURE_PARAMETER}\" parameter",
            servable.name
        ))
    })
}

/// Resolves a model for a run: a known model with nothing serving yet is UNAVAILABLE (not ready).
pub fn resolve(core: &ServingCore, name: &str, version: &str) -> Result<Servable, ServingError> {
    core.resolve_for_run(name, &version_choice(version))
}

/// One input of an infer request; `data` is the front end's still-undecoded payload.
pub struct InferInput<D> {
    /// The signature alias.
    pub name: String,
    /// The V2 datatype name the client declared.
    pub datatype: String,
    /// The declared shape.
    pub shape: Vec<i64>,
    /// The payload (JSON, raw bytes, typed contents).
    pub data: D,
}

/// One output an infer request asks for.
#[derive(Clone, Debug, Default)]
pub struct RequestedOutput {
    /// The signature alias.
    pub name: String,
    /// The classification extension: answer the top N classes instead of the tensor.
    pub classification: Option<usize>,
}

/// A decoded infer request, minus the input payloads' wire form.
pub struct InferRequest<D> {
    /// The model name.
    pub model: String,
    /// The version string (empty = latest).
    pub version: String,
    /// The signature, from the `signature_name` parameter; `serving_default` when absent.
    pub signature: Option<String>,
    /// Inputs in request order.
    pub inputs: Vec<InferInput<D>>,
    /// Outputs asked for; empty = every output of the signature.
    pub outputs: Vec<RequestedOutput>,
}

/// What an infer request produced.
pub struct InferAnswer {
    /// The version that ran, held until the response is encoded (an unload waits for it).
    pub servable: Servable,
    /// The outputs, in the order asked for (signature order when none was named).
    pub outputs: Vec<(String, Tensor)>,
}

/// Decodes one input's payload given its checked dtype and declared shape.
pub type DecodeInput<'a, D> = dyn FnMut(&str, DataType, &[i64], D) -> Result<Tensor, ServingError> + Send + 'a;

/// Runs an infer request: resolve, check every input against the signature, decode, run on the
/// version's executor, then apply the classification extension.
pub async fn infer<D>(
    core: &ServingCore,
    request: InferRequest<D>,
    context: CallContext,
    budget: &RequestBudget,
    decode: &mut DecodeInput<'_, D>,
) -> Result<InferAnswer, ServingError> {
    let InferRequest { model, version, signature, inputs, outputs } = request;
    let servable = resolve(core, &model, &version)?;
    let signature_name = signature.filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_SIGNATURE.to_string());
    let Some(sig) = servable.model.signatures().get(&signature_name) else {
        return Err(ServingError::invalid_argument(format!("model {model} has no signature \"{signature_name}\"")));
    };
    let mut by_alias = BTreeMap::new();
    for input in inputs {
        let InferInput { name, datatype, shape, data } = input;
        if by_alias.contains_key(&name) {
            return Err(ServingError::invalid_argument(format!("input '{name}' is given more than once")));
        }
        by_alias.insert(name, (datatype, shape, data));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(o) = outputs.iter().find(|o| !seen.insert(o.name.as_str())) {
        return Err(ServingError::invalid_argument(format!("output '{}' is requested more than once", o.name)));
    }
    let mut wanted: Vec<String> = outputs.iter().map(|o| o.name.clone()).collect();
    // Classification labels come from a classify signature's `classes` output, run beside `scores`.
    let labels = labels_output(sig, &outputs);
    if let Some(l) = &labels {
        if !wanted.is_empty() && !wanted.contains(l) {
            wanted.push(l.clone());
        }
    }
    let mut call =
        core.prepare_predict(&servable, &signature_name, by_alias, &wanted, |alias, (datatype, shape, data)| {
            let expected = sig.inputs.get(alias).map(|s| s.dtype).unwrap_or(DataType::Float);
            let dtype = input_datatype(alias, &datatype)?;
            if dtype != expected {
                return Err(ServingError::invalid_argument(format!(
                    "input '{alias}': datatype {datatype} does not match the model's {}",
                    datatype_name(expected)
                )));
            }
            decode(alias, dtype, &shape, data)
        })?;
    call.deadline = context.deadline;
    call.origin = Origin { api: "infer", front_end: context.front_end };
    let mut produced = core.predict(call, budget).await?;
    let label_tensor = labels.as_ref().and_then(|l| produced.get(l).cloned());
    let order: Vec<RequestedOutput> = if outputs.is_empty() {
        sig.outputs.keys().map(|name| RequestedOutput { name: name.clone(), classification: None }).collect()
    } else {
        outputs
    };
    let mut answer = Vec::with_capacity(order.len());
    for o in order {
        let tensor = produced
            .remove(&o.name)
            .ok_or_else(|| ServingError::internal(format!("the model did not produce output '{}'", o.name)))?;
        let tensor = match o.classification {
            Some(n) => classify(&o.name, &tensor, n, label_tensor.as_ref(), budget)?,
            None => tensor,
        };
        answer.push((o.name, tensor));
    }
    Ok(InferAnswer { servable, outputs: answer })
}

/// The output holding class labels, when some output asks for classification and the signature
/// is a classify signature with a BYTES `classes` output.
fn labels_output(sig: &Signature, outputs: &[RequestedOutput]) -> Option<String> {
    let classes = sig.outputs.get("classes")?;
    (outputs.iter().any(|o| o.classification.is_some())
        && sig.method_name == CLASSIFY_METHOD_NAME
        && classes.dtype == DataType::String)
        .then(|| "classes".to_string())
}

/// Values of a numeric tensor as f64, for ranking classes.
fn ranked_values(t: &Tensor) -> Option<Vec<f64>> {
    fn widen<T: Copy>(values: &[T], f: impl Fn(T) -> f64) -> Option<Vec<f64>> {
        Some(values.iter().map(|v| f(*v)).collect())
    }
    match t.data() {
        TensorData::Float(b) => widen(b.as_slice(), f64::from),
        TensorData::Double(b) => widen(b.as_slice(), |v| v),
        TensorData::Half(b) => widen(b.as_slice(), |v| v.to_f64()),
        TensorData::BFloat16(b) => widen(b.as_slice(), |v| v.to_f64()),
        TensorData::Int8(b) => widen(b.as_slice(), f64::from),
        TensorData::Int16(b) => widen(b.as_slice(), f64::from),
        TensorData::Int32(b) => widen(b.as_slice(), f64::from),
        TensorData::Int64(b) => widen(b.as_slice(), |v| v as f64),
        TensorData::UInt8(b) => widen(b.as_slice(), f64::from),
        TensorData::UInt16(b) => widen(b.as_slice(), f64::from),
        TensorData::UInt32(b) => widen(b.as_slice(), f64::from),
        TensorData::UInt64(b) => widen(b.as_slice(), |v| v as f64),
        TensorData::Bool(_) | TensorData::String(_) => None,
    }
}

/// The classification extension: the top `n` classes of each row of `scores` (the first
/// dimension is the batch when there are two or more) as `"value:index[:label]"` strings.
pub fn classify(
    name: &str,
    scores: &Tensor,
    n: usize,
    labels: Option<&Tensor>,
    budget: &RequestBudget,
) -> Result<Tensor, ServingError> {
    let values = ranked_values(scores).ok_or_else(|| {
        ServingError::invalid_argument(format!(
            "output '{name}': classification needs a numeric output, not {}",
            datatype_name(scores.dtype())
        ))
    })?;
    // Single-precision scores print at their own precision, as clients parse them back.
    let narrow = matches!(scores.dtype(), DataType::Float | DataType::Half | DataType::BFloat16);
    let show = |v: f64| if narrow { (v as f32).to_string() } else { v.to_string() };
    let shape = scores.shape();
    let (rows, cols) = match shape {
        [] => (1, 1),
        [c] => (1, *c),
        [b, rest @ ..] => (*b, rest.iter().product()),
    };
    let k = n.min(cols);
    budget.charge(rows.saturating_mul(k).saturating_mul(48), || format!("the classes of output {name}"))?;
    let labels = labels.and_then(|l| match l.data() {
        TensorData::String(v) if v.len() == values.len() => Some(v),
        _ => None,
    });
    let mut out = Vec::with_capacity(rows * k);
    let mut order: Vec<usize> = Vec::with_capacity(cols);
    for row in 0..rows {
        let base = row * cols;
        let row_values = &values[base..base + cols];
        order.clear();
        order.extend(0..cols);
        // Highest first; ties keep the lower index first, NaN last.
        order.sort_by(|a, b| {
            row_values[*b]
                .partial_cmp(&row_values[*a])
                .unwrap_or_else(|| row_values[*a].is_nan().cmp(&row_values[*b].is_nan()))
        });
        for &i in &order[..k] {
            let text = match labels {
                Some(l) => format!("{}:{i}:{}", show(row_values[i]), String::from_utf8_lossy(&l[base + i])),
                None => format!("{}:{i}", show(row_values[i])),
            };
            out.push(Bytes::from(text));
        }
    }
    let dims = if shape.len() >= 2 { vec![rows, k] } else { vec![k] };
    Tensor::from_strings(dims, out).map_err(|e| ServingError::internal(e.to_string()))
}

/// The versions a statistics request covers: every serving version of `name` (of every model
/// when `name` is empty), or the one `version` names.
pub fn statistics_of(core: &ServingCore, name: &str, version: &str) -> Result<Vec<Servable>, ServingError> {
    if name.is_empty() {
        if !version.is_empty() {
            return Err(ServingError::invalid_argument("a version needs a model name"));
        }
        let mut out = Vec::new();
        for model in core.registry().model_names() {
            out.extend(serving_versions(core, &model));
        }
        return Ok(out);
    }
    known_model(core, name)?;
    if version.is_empty() {
        return Ok(serving_versions(core, name));
    }
    Ok(vec![core.resolve(name, &version_choice(version))?])
}

fn serving_versions(core: &ServingCore, name: &str) -> Vec<Servable> {
    let mut statuses = core.registry().statuses(name).unwrap_or_default();
    statuses.reverse();
    statuses
        .into_iter()
        .filter(|s| s.state == ServableState::Available)
        .filter_map(|s| core.resolve(name, &VersionChoice::Specific(s.version)).ok())
        .collect()
}

/// Model control: loads `name` from the model repository, off the async workers (loading reads
/// files and may compile a model).
pub async fn load_model(manager: Option<&Arc<ModelManager>>, name: &str) -> Result<(), ServingError> {
    let manager = control(manager)?;
    let name = name.to_string();
    tokio::task::spawn_blocking(move || manager.load_model(&name))
        .await
        .map_err(|e| ServingError::internal(format!("model load failed: {e}")))?
}

/// Model control: unloads `name`; requests in flight finish first.
pub async fn unload_model(manager: Option<&Arc<ModelManager>>, name: &str) -> Result<(), ServingError> {
    let manager = control(manager)?;
    let name = name.to_string();
    tokio::task::spawn_blocking(move || manager.unload_model(&name))
        .await
        .map_err(|e| ServingError::internal(format!("model unload failed: {e}")))?
}

fn control(manager: Option<&Arc<ModelManager>>) -> Result<Arc<ModelManager>, ServingError> {
    manager.filter(|m| m.model_control_enabled()).cloned().ok_or_else(|| {
        ServingError::new(
            Code::PermissionDenied,
            "model control is off: start tensorserve with --model_control_mode=explicit and --model_repository",
        )
    })
}

/// The gRPC status of an error under V2's mapping (KServe's interceptor, Triton's codes).
pub fn grpc_status(e: &ServingError) -> tonic::Status {
    use tonic::Code as G;
    let code = match e.kind {
        ErrorKind::InvalidInput => G::InvalidArgument,
        ErrorKind::ModelNotFound => G::NotFound,
        ErrorKind::ModelNotReady | ErrorKind::Overloaded => G::Unavailable,
        ErrorKind::TooLarge | ErrorKind::LimitExceeded => G::ResourceExhausted,
        ErrorKind::DeadlineExceeded => G::DeadlineExceeded,
        ErrorKind::Cancelled => G::Cancelled,
        ErrorKind::Unsupported => G::Unimplemented,
        ErrorKind::Conflict => G::AlreadyExists,
        ErrorKind::PermissionDenied => G::PermissionDenied,
        ErrorKind::Unauthenticated => G::Unauthenticated,
        ErrorKind::Internal => G::Internal,
    };
    tonic::Status::new(code, e.wire_message())
}

/// The deadline V2 REST requests get: now plus the REST timeout.
pub fn rest_deadline(timeout: std::time::Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// The error a run that outlived `--rest_api_timeout_in_ms` gets.
pub fn rest_timed_out() -> ServingError {
    ServingError::new(
        Code::DeadlineExceeded,
        "Deadline exceeded: the model did not answer within --rest_api_timeout_in_ms",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_strings() {
        assert_eq!(version_choice(""), VersionChoice::Latest);
        assert_eq!(version_choice("123"), VersionChoice::Specific(123));
        assert_eq!(version_choice("stable"), VersionChoice::Label("stable".into()));
    }

    #[test]
    fn classification_ranks_rows_with_labels() {
        let budget = crate::memory::MemoryPool::new(Default::default()).budget();
        let scores = Tensor::from_vec(vec![2, 3], vec![0.1f32, 0.7, 0.2, 0.5, 0.25, 0.25]).unwrap();
        let top = classify("scores", &scores, 2, None, &budget).unwrap();
        assert_eq!(top.shape(), &[2, 2]);
        let text: Vec<&[u8]> = match top.data() {
            TensorData::String(v) => v.iter().map(|b| b.as_ref()).collect(),
            _ => unreachable!(),
        };
        assert_eq!(text, [&b"0.7:1"[..], b"0.2:2", b"0.5:0", b"0.25:1"]);
        let labels = Tensor::from_strings(
            vec![2, 3],
            ["a", "b", "c", "a", "b", "c"].iter().map(|s| Bytes::from_static(s.as_bytes())).collect(),
        )
        .unwrap();
        let top = classify("scores", &scores, 5, Some(&labels), &budget).unwrap();
        assert_eq!(top.shape(), &[2, 3]);
        let TensorData::String(v) = top.data() else { unreachable!() };
        assert_eq!(v[0].as_ref(), b"0.7:1:b");
        let bad = Tensor::from_strings(vec![1], vec![Bytes::new()]).unwrap();
        assert_eq!(classify("x", &bad, 1, None, &budget).unwrap_err().kind, ErrorKind::InvalidInput);
    }
}
