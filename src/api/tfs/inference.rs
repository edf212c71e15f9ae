//! Classify, Regress and MultiInference: tf.Examples in, TF Serving's result messages out.
//!
//! The examples become one batched tensor per signature input ([`Examples::to_inputs`]), the
//! signature runs like a Predict, and its `classes`/`scores` or `outputs` tensors are read back
//! into `ClassificationResult` / `RegressionResult` with TF Serving's checks and messages.

use std::collections::BTreeSet;

use crate::core::{Job, Origin};
use crate::error::ServingError;
use crate::memory::RequestBudget;
use crate::model::{Servable, Signature, TensorMap, CLASSIFY_METHOD_NAME, DEFAULT_SIGNATURE, REGRESS_METHOD_NAME};
use crate::proto::tensorflow::serving as pb;
use crate::serving::{CallContext, PredictCall, ServingCore, ServingOptions};
use crate::tensor::example::Examples;
use crate::tensor::{DataType, Tensor};

/// Output alias of class labels in a classify signature.
pub const CLASSES: &str = "classes";
/// Output alias of class scores in a classify signature.
pub const SCORES: &str = "scores";
/// Output alias of the value in a regress signature.
pub const OUTPUTS: &str = "outputs";

/// Which of the two example-based methods a call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `tensorflow/serving/classify`.
    Classify,
    /// `tensorflow/serving/regress`.
    Regress,
}

impl Method {
    /// The method from a MultiInference task's `method_name`.
    pub fn from_name(name: &str) -> Option<Method> {
        match name {
            CLASSIFY_METHOD_NAME => Some(Method::Classify),
            REGRESS_METHOD_NAME => Some(Method::Regress),
            _ => None,
        }
    }

    /// The API verb, for logs.
    pub fn api(self) -> &'static str {
        match self {
            Method::Classify => "classify",
            Method::Regress => "regress",
        }
    }

    fn method_name(self) -> &'static str {
        match self {
            Method::Classify => CLASSIFY_METHOD_NAME,
            Method::Regress => REGRESS_METHOD_NAME,
        }
    }
}

/// The result of one classify or regress task.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskResult {
    /// One `Classifications` per example.
    Classification(pb::ClassificationResult),
    /// One `Regression` per example.
    Regression(pb::RegressionResult),
}

/// A short description of a signature for error messages (TF prints the whole `SignatureDef`).
fn describe(signature: &Signature) -> String {
    let names = |m: &std::collections::BTreeMap<String, crate::model::TensorSpec>| {
        m.iter().map(|(k, v)| format!("{k}: {}", v.name)).collect::<Vec<_>>().join(", ")
    };
    format!(
        "{{method_name: \"{}\", inputs: {{{}}}, outputs: {{{}}}}}",
        signature.method_name,
        names(&signature.inputs),
        names(&signature.outputs)
    )
}

/// Checks that `signature` can serve `method` and returns the output aliases to fetch.
///
/// With `--enable_signature_method_name_check` the method name must match; the output
/// structure TF Serving needs (`classes`/`scores`, or exactly `outputs`) is always checked.
pub fn check_signature(
    signature: &Signature,
    method: Method,
    check_method_name: bool,
) -> Result<Vec<String>, ServingError> {
    if check_method_name && signature.method_name != method.method_name() {
        let what = match method {
            Method::Classify => "classification",
            Method::Regress => "regression",
        };
        return Err(ServingError::invalid_argument(format!(
            "Expected {what} signature method_name to be {}. Was: {}",
            method.method_name(),
            signature.method_name
        )));
    }
    match method {
        Method::Classify => {
            let n = signature.outputs.len();
            let wanted: Vec<String> = [CLASSES, SCORES]
                .into_iter()
                .filter(|k| signature.outputs.contains_key(*k))
                .map(str::to_string)
                .collect();
            if wanted.is_empty() {
                return Err(ServingError::invalid_argument(format!(
                    "Expected classification signature outputs to contain at least one of \"classes\" or \"scores\". Signature was: {}",
                    describe(signature)
                )));
            }
            if n != 1 && n != 2 {
                return Err(ServingError::invalid_argument(format!("Expected one or two output Tensors, found {n}")));
            }
            Ok(wanted)
        }
        Method::Regress => {
            if signature.outputs.len() != 1 {
                return Err(ServingError::invalid_argument("Expected one output Tensor."));
            }
            if !signature.outputs.contains_key(OUTPUTS) {
                return Err(ServingError::invalid_argument(format!(
                    "No regression outputs found in SignatureDef: {}",
                    describe(signature)
                )));
            }
            Ok(vec![OUTPUTS.to_string()])
        }
    }
}

/// TensorFlow's `TensorShape::DebugString`: `[2,3]`.
fn shape_string(shape: &[usize]) -> String {
    format!("[{}]", shape.iter().map(usize::to_string).collect::<Vec<_>>().join(","))
}

/// Reads `classes` and/or `scores` ([batch, k]) into one `Classifications` per example.
pub fn classification_result(outputs: &TensorMap, batch: usize) -> Result<pb::ClassificationResult, ServingError> {
    let classes = outputs.get(CLASSES);
    let scores = outputs.get(SCORES);
    let check = |t: &Tensor, what: &str, dtype: DataType| -> Result<usize, ServingError> {
        if t.shape().len() != 2 {
            return Err(ServingError::invalid_argument(format!(
                "Expected Tensor shape: [batch_size num_classes] but got {}",
                shape_string(t.shape())
            )));
        }
        if t.dtype() != dtype {
            return Err(ServingError::invalid_argument(format!(
                "Expected {what} Tensor of DT_{}. Got: DT_{}",
                dtype.name().to_uppercase(),
                t.dtype().name().to_uppercase()
            )));
        }
        if t.shape()[0] != batch {
            return Err(ServingError::invalid_argument(format!(
                "Expected {what} output batch size of {batch}. Got: {}",
                t.shape()[0]
            )));
        }
        Ok(t.shape()[1])
    };
    let k_classes = classes.map(|t| check(t, "classes", DataType::String)).transpose()?;
    let k_scores = scores.map(|t| check(t, "scores", DataType::Float)).transpose()?;
    let k = match (k_classes, k_scores) {
        (Some(a), Some(b)) if a != b => {
            return Err(ServingError::invalid_argument(format!(
                "Tensors class and score should match in dim_size(1). Got {a} vs. {b}"
            )))
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => 0,
    };
    let labels = classes.and_then(Tensor::view_strings);
    let labels = labels.as_ref().and_then(|v| v.as_slice());
    let scores = scores.and_then(|t| t.as_slice::<f32>());
    let classifications = (0..batch)
        .map(|i| pb::Classifications {
            classes: (0..k)
                .map(|c| pb::Class {
                    label: labels.map(|l| String::from_utf8_lossy(&l[i * k + c]).into_owned()).unwrap_or_default(),
                    score: scores.map(|s| s[i * k + c]).unwrap_or_default(),
                })
                .collect(),
        })
        .collect();
    Ok(pb::ClassificationResult { classifications })
}

/// Reads `outputs` ([batch] or [batch, 1], float) into one `Regression` per example.
pub fn regression_result(outputs: &TensorMap, batch: usize) -> Result<pb::RegressionResult, ServingError> {
    let t = outputs
        .get(OUTPUTS)
        .ok_or_else(|| ServingError::invalid_argument(format!("Could not find output tensor '{OUTPUTS}'")))?;
    let shape = t.shape();
    if !(shape.len() == 1 || (shape.len() == 2 && shape[1] == 1)) {
        return Err(ServingError::invalid_argument(format!(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {}",
            shape_string(shape)
        )));
    }
    if shape[0] != batch {
        return Err(ServingError::invalid_argument(format!(
            "Input batch size did not match output batch size: {batch} vs. {}",
            shape[0]
        )));
    }
    let values = t.as_slice::<f32>().filter(|_| t.dtype() == DataType::Float).ok_or_else(|| {
        ServingError::invalid_argument(format!(
            "Expected output Tensor of DT_FLOAT.  Got: DT_{}",
            t.dtype().name().to_uppercase()
        ))
    })?;
    Ok(pb::RegressionResult { regressions: values.iter().map(|v| pb::Regression { value: *v }).collect() })
}

/// A checked classify or regress task on one servable, ready to run.
pub struct TaskCall<'a> {
    /// What to run.
    pub call: PredictCall<'a>,
    /// Which result to build.
    pub method: Method,
    /// Number of examples.
    pub batch: usize,
}

/// Resolves the signature of a Classify or Regress request and builds its call.
pub fn prepare_task<'a>(
    servable: &'a Servable,
    signature_name: &'a str,
    method: Method,
    examples: &Examples,
    options: &ServingOptions,
    budget: &RequestBudget,
) -> Result<TaskCall<'a>, ServingError> {
    let signature_name = if signature_name.is_empty() { DEFAULT_SIGNATURE } else { signature_name };
    let signature = servable.model.signatures().get(signature_name).ok_or_else(|| {
        ServingError::invalid_argument(format!("No signature was found with the name: {signature_name}"))
    })?;
    let outputs = check_signature(signature, method, options.signature_method_name_check)?;
    let inputs = examples.to_inputs(signature, options.decode_limits.max_tensor_bytes, budget)?;
    Ok(TaskCall::new(servable, signature_name, signature, inputs, outputs, method, examples.len(), method.api()))
}

/// The checked tasks of a MultiInference request, all on one servable.
pub fn prepare_multi<'a>(
    servable: &'a Servable,
    request: &'a pb::MultiInferenceRequest,
    options: &ServingOptions,
    budget: &RequestBudget,
) -> Result<Vec<TaskCall<'a>>, ServingError> {
    let mut model_name: Option<&str> = None;
    let mut seen = BTreeSet::new();
    let mut checked = Vec::with_capacity(request.tasks.len());
    for task in &request.tasks {
        let spec = task.model_spec.as_ref();
        let name = spec.map(|s| s.name.as_str()).unwrap_or_default();
        if name.is_empty() {
            return Err(ServingError::invalid_argument("Found ModelSpec with an empty model name."));
        }
        if *model_name.get_or_insert(name) != name {
            return Err(ServingError::invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
            ));
        }
        let signature_name =
            spec.map(|s| s.signature_name.as_str()).filter(|s| !s.is_empty()).unwrap_or(DEFAULT_SIGNATURE);
        if !seen.insert(signature_name) {
            return Err(ServingError::invalid_argument(format!("Duplicate evaluation of signature: {signature_name}")));
        }
        let signature = servable.model.signatures().get(signature_name).ok_or_else(|| {
            ServingError::invalid_argument(format!("Requested signature not found in model graph: {signature_name}"))
        })?;
        let method = Method::from_name(&task.method_name).ok_or_else(|| {
            ServingError::unimplemented(format!("Unsupported signature method_name: {}", task.method_name))
        })?;
        let outputs = check_signature(signature, method, options.signature_method_name_check)?;
        checked.push((signature_name, signature, method, outputs));
    }
    if checked.is_empty() {
        return Err(ServingError::invalid_argument("MultiInferenceRequest has no tasks"));
    }
    let examples = Examples::of(request.input.as_ref())?;
    if let Some(metrics) = crate::core::metrics::get() {
        metrics.record_examples(&servable.name, examples.len());
    }
    checked
        .into_iter()
        .map(|(signature_name, signature, method, outputs)| {
            let inputs = examples.to_inputs(signature, options.decode_limits.max_tensor_bytes, budget)?;
            Ok(TaskCall::new(
                servable,
                signature_name,
                signature,
                inputs,
                outputs,
                method,
                examples.len(),
                "multi_inference",
            ))
        })
        .collect()
}

/// The response `model_spec` TF Serving fills: name as asked, the version served, the signature used.
pub fn response_spec(name: &str, signature_name: &str, version: i64) -> pb::ModelSpec {
    pb::ModelSpec {
        name: name.to_string(),
        signature_name: signature_name.to_string(),
        version_choice: Some(pb::model_spec::VersionChoice::Version(version)),
    }
}

/// Runs one Classify or Regress request; returns the result and the response's model spec.
///
/// `examples` is checked after the servable resolves, so a missing model is reported first, as TF Serving does.
pub async fn run_task(
    core: &ServingCore,
    spec: &pb::ModelSpec,
    examples: Result<Examples<'_>, ServingError>,
    method: Method,
    budget: &RequestBudget,
    context: CallContext,
) -> Result<(TaskResult, pb::ModelSpec), ServingError> {
    let servable = core.resolve(&spec.name, &super::version_choice(spec))?;
    let examples = examples?;
    if let Some(metrics) = crate::core::metrics::get() {
        metrics.record_examples(&servable.name, examples.len());
    }
    let task = prepare_task(&servable, &spec.signature_name, method, &examples, core.options(), budget)?;
    let model_spec = response_spec(&spec.name, task.call.signature_name, servable.version);
    let TaskCall { mut call, method, batch } = task;
    call.deadline = context.deadline;
    call.origin.front_end = context.front_end;
    let outputs = core.predict(call, budget).await?;
    let result = TaskCall::result_of(method, batch, &outputs)?;
    Ok((result, model_spec))
}

/// Runs a MultiInference request: one model run per task, all on the first task's version.
pub async fn multi_inference(
    core: &ServingCore,
    request: &pb::MultiInferenceRequest,
    budget: &RequestBudget,
    context: CallContext,
) -> Result<pb::MultiInferenceResponse, ServingError> {
    let first = request.tasks.first().and_then(|t| t.model_spec.clone()).unwrap_or_default();
    let servable = core.resolve(&first.name, &super::version_choice(&first))?;
    let tasks = prepare_multi(&servable, request, core.options(), budget)?;
    let mut results = Vec::with_capacity(tasks.len());
    for TaskCall { mut call, method, batch } in tasks {
        call.deadline = context.deadline;
        call.origin.front_end = context.front_end;
        let model_spec = response_spec(&first.name, call.signature_name, servable.version);
        let outputs = core.predict(call, budget).await?;
        results.push(multi_result(TaskCall::result_of(method, batch, &outputs)?, model_spec));
    }
    Ok(pb::MultiInferenceResponse { results })
}

impl<'a> TaskCall<'a> {
    /// A task over `servable`'s `signature`, logged as `api`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        servable: &'a Servable,
        signature_name: &'a str,
        signature: &'a Signature,
        inputs: TensorMap,
        outputs: Vec<String>,
        method: Method,
        batch: usize,
        api: &'static str,
    ) -> Self {
        let origin = Origin { api, front_end: "internal" };
        let call = PredictCall { servable, signature_name, signature, inputs, outputs, deadline: None, origin };
        TaskCall { call, method, batch }
    }

    fn result_of(method: Method, batch: usize, outputs: &TensorMap) -> Result<TaskResult, ServingError> {
        Ok(match method {
            Method::Classify => TaskResult::Classification(classification_result(outputs, batch)?),
            Method::Regress => TaskResult::Regression(regression_result(outputs, batch)?),
        })
    }
}

fn multi_result(result: TaskResult, model_spec: pb::ModelSpec) -> pb::InferenceResult {
    use pb::inference_result::Result as R;
    pb::InferenceResult {
        model_spec: Some(model_spec),
        result: Some(match result {
            TaskResult::Classification(c) => R::ClassificationResult(c),
            TaskResult::Regression(r) => R::RegressionResult(r),
        }),
    }
}

/// Runs a classify, regress or multi-inference log record on the calling thread (warmup).
pub fn run_log_blocking(
    servable: &Servable,
    log: &pb::PredictionLog,
    options: &ServingOptions,
) -> Result<(), ServingError> {
    use pb::prediction_log::LogType;
    // Warmup records come from the model's own directory, bounded by the decode limits.
    let budget = RequestBudget::unlimited();
    let budget = &budget;
    let run = |task: TaskCall| -> Result<(), ServingError> {
        let TaskCall { call, method, batch } = task;
        let job = Job {
            signature: call.signature_name.to_string(),
            inputs: call.inputs,
            outputs: call.outputs,
            deadline: None,
            origin: Origin { api: "warmup", front_end: "internal" },
        };
        let (outputs, _) = servable.runtime.run_here(job)?;
        TaskCall::result_of(method, batch, &outputs).map(drop)
    };
    match &log.log_type {
        Some(LogType::ClassifyLog(l)) => {
            let request = l.request.clone().unwrap_or_default();
            let examples = Examples::of(request.input.as_ref())?;
            let signature = request.model_spec.map(|s| s.signature_name).unwrap_or_default();
            run(prepare_task(servable, &signature, Method::Classify, &examples, options, budget)?)
        }
        Some(LogType::RegressLog(l)) => {
            let request = l.request.clone().unwrap_or_default();
            let examples = Examples::of(request.input.as_ref())?;
            let signature = request.model_spec.map(|s| s.signature_name).unwrap_or_default();
            run(prepare_task(servable, &signature, Method::Regress, &examples, options, budget)?)
        }
        Some(LogType::MultiInferenceLog(l)) => {
            let request = l.request.clone().unwrap_or_default();
            for task in prepare_multi(servable, &request, options, budget)? {
                run(task)?;
            }
            Ok(())
        }
        _ => Err(ServingError::unimplemented(
            "only predict, classify, regress and multi_inference warmup records are supported",
        )),
    }
}
