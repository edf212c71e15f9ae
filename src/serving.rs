//! Where a request meets a model: resolution and checks; the run itself is the executor's.
//!
//! Front ends decode their wire format into [`TensorMap`]s and call
//! [`ServingCore::predict`], which hands an owned [`Job`] to the version's [`crate::core::Executor`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use crate::core::{Job, Origin};
use crate::error::ServingError;
use crate::memory::{MemoryLimits, MemoryPool, RequestBudget};
use crate::model::{
    ModelRegistry, Servable, ServableState, Signature, TensorMap, VersionChoice, CLASSIFY_METHOD_NAME,
    DEFAULT_SIGNATURE, PREDICT_METHOD_NAME, REGRESS_METHOD_NAME,
};
use crate::tensor::proto::DecodeLimits;
use crate::tensor::Tensor;

/// Settings shared by every front end.
#[derive(Clone, Debug)]
pub struct ServingOptions {
    /// Emit outputs as `tensor_content` instead of typed fields.
    pub tensor_content_output: bool,
    /// Limits for decoding request tensors.
    pub decode_limits: DecodeLimits,
    /// `--enable_signature_method_name_check`: a signature serves only its own method.
    pub signature_method_name_check: bool,
    /// The memory budget of one request and the limit over all requests in flight.
    pub memory: MemoryLimits,
    /// Most pixels one encoded image may declare (`--max_image_pixels`).
    pub max_image_pixels: u64,
}

impl Default for ServingOptions {
    fn default() -> Self {
        crate::config::ServerConfig::default().serve.serving
    }
}

/// A checked Predict call, ready to run.
pub struct PredictCall<'a> {
    /// The resolved servable.
    pub servable: &'a Servable,
    /// The resolved signature name.
    pub signature_name: &'a str,
    /// The signature.
    pub signature: &'a Signature,
    /// Inputs by alias, complete and type-checked.
    pub inputs: TensorMap,
    /// Output aliases to return (the answer is sorted by alias).
    pub outputs: Vec<String>,
    /// When the caller stops waiting (gRPC `grpc-timeout`, the REST timeout).
    pub deadline: Option<Instant>,
    /// Who asked (API verb, front end), for the request's log line.
    pub origin: Origin,
}

/// What a front end knows of a request beyond its payload.
#[derive(Clone, Copy, Debug)]
pub struct CallContext {
    /// When the caller stops waiting.
    pub deadline: Option<Instant>,
    /// `grpc` or `rest`.
    pub front_end: &'static str,
}

/// The registry plus the shared request logic.
pub struct ServingCore {
    /// Where models live.
    registry: Arc<ModelRegistry>,
    /// Shared settings.
    options: ServingOptions,
    /// What requests in flight hold.
    memory: Arc<MemoryPool>,
    /// Set at shutdown: readiness reports false while requests are still served.
    draining: std::sync::atomic::AtomicBool,
}

impl ServingCore {
    /// A core over `registry`.
    pub fn new(registry: Arc<ModelRegistry>, options: ServingOptions) -> Self {
        let memory = MemoryPool::new(options.memory);
        ServingCore { registry, options, memory, draining: Default::default() }
    }

    /// Marks the server as shutting down: readiness turns false, requests are still served.
    pub fn begin_drain(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// True once [`ServingCore::begin_drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The memory every request in flight draws from.
    pub fn memory(&self) -> &Arc<MemoryPool> {
        &self.memory
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<ModelRegistry> {
        &self.registry
    }

    /// The settings.
    pub fn options(&self) -> &ServingOptions {
        &self.options
    }

    /// Resolves a model name and version choice, with TF Serving's errors.
    pub fn resolve(&self, name: &str, choice: &VersionChoice) -> Result<Servable, ServingError> {
        if name.is_empty() {
            return Err(ServingError::invalid_argument("ModelSpec has no name specified."));
        }
        self.registry.resolve(name, choice)
    }

    /// Resolves a model to run: a known model with no version serving yet (still loading) is
    /// UNAVAILABLE rather than NOT_FOUND, so clients retry (KServe's 503).
    pub fn resolve_for_run(&self, name: &str, choice: &VersionChoice) -> Result<Servable, ServingError> {
        self.resolve(name, choice).map_err(|e| {
            let loading = e.code == crate::error::Code::NotFound
                && self.registry.statuses(name).is_some_and(|s| {
                    !s.is_empty()
                        && s.iter().all(|v| v.state != ServableState::Available)
                        && s.iter().any(|v| v.state != ServableState::End)
                });
            if loading {
                ServingError::new(
                    crate::error::Code::Unavailable,
                    format!("Model {name} is not ready yet: it is still loading"),
                )
            } else {
                e
            }
        })
    }

    /// Checks a Predict request against the signature and the method-name flag; see [`prepare_predict`].
    pub fn prepare_predict<'a, R>(
        &self,
        servable: &'a Servable,
        signature_name: &'a str,
        request_inputs: BTreeMap<String, R>,
        output_filter: &[String],
        decode: impl FnMut(&str, R) -> Result<Tensor, ServingError>,
    ) -> Result<PredictCall<'a>, ServingError> {
        let start = Instant::now();
        let call = prepare_predict(servable, signature_name, request_inputs, output_filter, decode)?;
        check_predict_method(&self.options, call.signature)?;
        servable.runtime.stats().statistics.compute_input.add(start.elapsed());
        Ok(call)
    }

    /// Runs a prepared call on its version's executor (never blocking the reactor with a slow
    /// model). The outputs are charged to `budget` before the caller encodes them.
    pub async fn predict(&self, call: PredictCall<'_>, budget: &RequestBudget) -> Result<TensorMap, ServingError> {
        let PredictCall { servable, signature_name, inputs, outputs, deadline, origin, .. } = call;
        let held = servable.model.reserve(signature_name, &inputs)?;
        budget.charge(held, || "the model's working memory".to_string())?;
        let job = Job { signature: signature_name.to_string(), inputs, outputs, deadline, origin };
        let (outputs, _outcome) = servable.runtime.run(job).await?;
        budget.charge(outputs.values().map(Tensor::held_bytes).sum(), || "the model's outputs".to_string())?;
        Ok(outputs)
    }
}

/// `--enable_signature_method_name_check`: Predict serves only the three TF Serving methods.
pub fn check_predict_method(options: &ServingOptions, signature: &Signature) -> Result<(), ServingError> {
    let method = signature.method_name.as_str();
    if options.signature_method_name_check
        && ![PREDICT_METHOD_NAME, CLASSIFY_METHOD_NAME, REGRESS_METHOD_NAME].contains(&method)
    {
        return Err(ServingError::internal(format!(
            "Expected prediction signature method_name to be one of {{{PREDICT_METHOD_NAME}, {CLASSIFY_METHOD_NAME}, {REGRESS_METHOD_NAME}}}. Was: {method}"
        )));
    }
    Ok(())
}

/// Checks a Predict request's input names and output filter against the signature.
///
/// `decode` turns one request input into a tensor and is called in TF Serving's
/// order (sorted by alias), so its errors surface as TF Serving's would.
pub fn prepare_predict<'a, R>(
    servable: &'a Servable,
    signature_name: &'a str,
    mut request_inputs: BTreeMap<String, R>,
    output_filter: &[String],
    mut decode: impl FnMut(&str, R) -> Result<Tensor, ServingError>,
) -> Result<PredictCall<'a>, ServingError> {
    let signature_name = if signature_name.is_empty() { DEFAULT_SIGNATURE } else { signature_name };
    let signature = servable.model.signatures().get(signature_name).ok_or_else(|| {
        ServingError::failed_precondition(format!("Serving signature key \"{signature_name}\" not found."))
    })?;
    check_input_count(signature, &request_inputs)?;

    let request_count = request_inputs.len();
    // Aliases taken from the request (not from defaults), for TF Serving's messages.
    let mut used: Vec<&String> = Vec::with_capacity(request_count);
    let mut inputs = TensorMap::new();
    for (alias, spec) in &signature.inputs {
        let tensor = match request_inputs.remove(alias) {
            Some(raw) => {
                used.push(alias);
                decode(alias, raw)?
            }
            None => match signature.defaults.get(alias) {
                Some(t) => t.clone(),
                // The model runs without it (an ONNX input backed by an initializer).
                None if signature.optional.contains(alias) => continue,
                None => {
                    let mut names: Vec<&String> = request_inputs.keys().chain(used.iter().copied()).collect();
                    names.sort();
                    return Err(ServingError::invalid_argument(format!(
                        "Signature input alias: {alias}(feed name: {}) not found in request and no default value provided. Inputs expected to be in the request {{{}}}, or default input alias set: {}",
                        spec.name,
                        join(names.into_iter()),
                        join(signature.defaults.keys()),
                    )));
                }
            },
        };
        inputs.insert(alias.clone(), tensor);
    }
    if request_count != 0 && used.len() != request_count {
        let mut all: Vec<&String> = request_inputs.keys().chain(used.iter().copied()).collect();
        all.sort();
        return Err(ServingError::invalid_argument(format!(
            "Inputs contains invalid name. Used request inputs: {}, request input: {}",
            join(used.into_iter()),
            join(all.into_iter())
        )));
    }
    // TensorFlow checks feed types in the signature's input order: arg[i].
    for (i, (alias, spec)) in signature.inputs.iter().enumerate() {
        let Some(input) = inputs.get(alias) else { continue };
        let got = input.dtype();
        if got != spec.dtype {
            return Err(ServingError::invalid_argument(format!(
                "Expects arg[{i}] to be {} but {} is provided",
                spec.dtype.name(),
                got.name()
            )));
        }
    }
    let outputs = select_outputs(signature, output_filter)?;
    Ok(PredictCall { servable, signature_name, signature, inputs, outputs, deadline: None, origin: Origin::default() })
}

fn join<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names.map(String::as_str).collect::<Vec<_>>().join(",")
}

fn check_input_count<R>(signature: &Signature, request: &BTreeMap<String, R>) -> Result<(), ServingError> {
    let (sent, wanted) = (request.len(), signature.inputs.len());
    if sent > wanted || (sent < wanted && signature.defaults.is_empty() && signature.optional.is_empty()) {
        let extra: Vec<&String> = request.keys().filter(|k| !signature.inputs.contains_key(*k)).collect();
        let missing: Vec<&String> = signature.inputs.keys().filter(|k| !request.contains_key(*k)).collect();
        return Err(ServingError::invalid_argument(format!(
            "input size does not match signature: {sent}!={wanted} len({{{}}}) != len({{{}}}). Sent extra: {{{}}}. Missing but required: {{{}}}.",
            join(request.keys()),
            join(signature.inputs.keys()),
            join(extra.into_iter()),
            join(missing.into_iter()),
        )));
    }
    Ok(())
}

fn select_outputs(signature: &Signature, filter: &[String]) -> Result<Vec<String>, ServingError> {
    if filter.is_empty() {
        return Ok(signature.outputs.keys().cloned().collect());
    }
    let mut seen = BTreeSet::new();
    for alias in filter {
        if !signature.outputs.contains_key(alias) {
            return Err(ServingError::invalid_argument(format!(
                "output tensor alias not found in signature: {alias} Outputs expected to be in the set {{{}}}.",
                join(signature.outputs.keys())
            )));
        }
        if !seen.insert(alias) {
            return Err(ServingError::invalid_argument(format!("duplicate output tensor alias: {alias}")));
        }
    }
    Ok(filter.to_vec())
}
