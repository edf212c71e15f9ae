//! REST front end: TF Serving's REST API and KServe's V1 protocol on one port (axum).
//!
//! Paths are parsed by hand: TF Serving's `/v1/models/{name}:predict` puts a
//! parameter and a literal in one segment, which axum's router cannot express.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::api::tfs::inference;
use crate::api::tfs::model_status;
use crate::core::metrics::observe;
use crate::error::{Code, ErrorKind, ServingError};
use crate::explain::{explain, ExplainOptions};
use crate::memory::RequestBudget;
use crate::model::{ServableState, VersionChoice, DEFAULT_SIGNATURE};
use crate::proto::tensorflow::serving as pb;
use crate::repository::ModelManager;
use crate::serving::{CallContext, ServingCore};
use crate::tensor::json::{
    parse_inputs, parse_instances, quote_non_finite, write_outputs, write_predictions, InputBuilders,
};
use crate::tensor::{DataType, Tensor};

/// REST settings.
#[derive(Clone, Debug)]
pub struct RestOptions {
    /// Run timeout of one predict (`--rest_api_timeout_in_ms`).
    pub timeout: Duration,
    /// Add `Access-Control-Allow-Origin: *` and answer preflights.
    pub cors: bool,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// The built-in explainer's settings.
    pub explain: ExplainOptions,
    /// The admin surfaces this port serves (metrics, status page, V2 model control).
    pub admin: crate::api::admin::AdminRoutes,
}

impl Default for RestOptions {
    fn default() -> Self {
        crate::config::ServerConfig::default().serve.rest
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
struct Rest {
    /// The request logic shared with gRPC.
    core: Arc<ServingCore>,
    /// Settings.
    options: Arc<RestOptions>,
    /// Loads and unloads models for V2's repository extension.
    manager: Option<Arc<ModelManager>>,
}

/// The REST router over `core`, without model control.
pub fn router(core: Arc<ServingCore>, options: RestOptions) -> axum::Router {
    router_with_manager(core, options, None)
}

/// The REST router over `core`, with `manager` for V2's model control (when its flag allows).
pub fn router_with_manager(
    core: Arc<ServingCore>,
    options: RestOptions,
    manager: Option<Arc<ModelManager>>,
) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(Rest { core, options: Arc::new(options), manager })
}

/// Reads a request body, charging each chunk to `budget` as it arrives and refusing past `limit` bytes.
/// `lead` zero bytes go first (and are cut off after), so a part of the body lands aligned.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    budget: &RequestBudget,
    lead: usize,
) -> Result<Bytes, ServingError> {
    use http_body_util::BodyExt as _;
    let too_large = || {
        ServingError::resource_exhausted(format!(
            "the request body is larger than the limit of {limit} bytes (--max_message_size_bytes)"
        ))
        .with_kind(ErrorKind::TooLarge)
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // JSON is parsed from one slice: chunks are copied into one buffer as they arrive. It grows
    // (charged first) only as bytes come, never to a declared length the peer has not sent.
    let ceiling = declared.map_or(limit, |n| n as usize);
    let mut joined: Vec<u8> = vec![0; lead];
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ServingError::invalid_argument(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        let needed = joined.len() + data.len();
        if needed - lead > limit {
            return Err(too_large());
        }
        let capacity = joined.capacity();
        if needed > capacity {
            let grown = needed.max(capacity.saturating_mul(2).min(ceiling.max(needed)));
            budget.charge(grown - capacity, || "the request body".to_string())?;
            joined.reserve_exact(grown - joined.len());
        }
        joined.extend_from_slice(&data);
    }
    Ok(Bytes::from(joined).slice(lead..))
}

/// What serde_json's value tree costs for `text`, read off its tokens before it is built
/// (about 128 bytes per scalar, array or object entry: value, key, node, and their copies).
fn value_tree_cost(text: &str) -> usize {
    let (mut tokens, mut in_string, mut escaped) = (1usize, false, false);
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b',' | b':' | b'[' | b'{' => tokens += 1,
                _ => {}
            }
        }
    }
    tokens.saturating_mul(128).saturating_add(text.len())
}

/// TF Serving's status-code -> HTTP table, told apart by kind where one code covers several cases.
pub fn http_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::ModelNotFound => StatusCode::NOT_FOUND,
        ErrorKind::ModelNotReady | ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

pub(crate) fn error_response(e: ServingError) -> Response {
    let body = format!("{{ \"error\": {} }}", serde_json::to_string(&e.message).expect("a string serialises"));
    json_response(http_status(e.kind), body)
}

/// What a `/v1/models/...` path names.
#[derive(Debug, PartialEq)]
struct ModelPath {
    /// Model name, URL-decoded.
    name: String,
    /// Version or label segment.
    version: VersionChoice,
    /// `:predict`, `:explain`, ... without the colon.
    verb: Option<String>,
    /// Ends in `/metadata`.
    metadata: bool,
}

pub(crate) fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(h), Some(l)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
            {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_model_path(rest: &str) -> Option<ModelPath> {
    let (path, verb) = match rest.rsplit_once(':') {
        Some((p, v)) if !v.contains('/') => (p, Some(v.to_ascii_lowercase())),
        _ => (rest, None),
    };
    let segments: Vec<&str> = path.split('/').collect();
    let (name, tail) = segments.split_first()?;
    if name.is_empty() {
        return None;
    }
    let (version, tail) = match tail {
        [kind, v, tail @ ..] if kind.eq_ignore_ascii_case("versions") => {
            (VersionChoice::Specific(v.parse().ok()?), tail)
        }
        [kind, l, tail @ ..] if kind.eq_ignore_ascii_case("labels") => (VersionChoice::Label(percent_decode(l)), tail),
        tail => (VersionChoice::Latest, tail),
    };
    let metadata = match tail {
        [] => false,
        [m] if m.eq_ignore_ascii_case("metadata") && verb.is_none() => true,
        _ => return None,
    };
    Some(ModelPath { name: percent_decode(name), version, verb, metadata })
}

async fn dispatch(State(rest): State<Rest>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    if let Some(response) = crate::api::admin::respond(&rest.core, &rest.options.admin, &method, &uri, &headers) {
        return response;
    }
    let budget = Arc::new(rest.core.memory().budget());
    let v2 = is_v2(uri.path());
    let lead = if v2 { crate::api::v2::rest::body_lead(&headers) } else { 0 };
    let mut response = match read_body(&headers, body, rest.options.max_body_bytes, &budget, lead).await {
        Ok(body) if v2 => {
            let v2 = crate::api::v2::rest::V2Rest {
                core: &rest.core,
                options: &rest.options,
                manager: rest.manager.as_ref(),
            };
            v2.route(&method, uri.path(), &headers, body, &budget).await
        }
        Ok(body) => route(&rest, &method, uri.path(), body, &budget).await,
        Err(e) => error_response(e),
    };
    if rest.options.cors {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type, Inference-Header-Content-Length"),
        );
    }
    response
}

/// True for KServe V2 paths: `/v2` and below.
fn is_v2(path: &str) -> bool {
    let b = path.as_bytes();
    b.len() >= 3 && b[..3].eq_ignore_ascii_case(b"/v2") && (b.len() == 3 || b[3] == b'/')
}

async fn route(rest: &Rest, method: &Method, path: &str, body: Bytes, budget: &Arc<RequestBudget>) -> Response {
    let malformed = || error_response(ServingError::invalid_argument(format!("Malformed request: {method} {path}")));
    if method == Method::OPTIONS {
        return StatusCode::NO_CONTENT.into_response();
    }
    if path == "/" && method == Method::GET {
        return json_response(StatusCode::OK, json!({"status": "alive"}).to_string());
    }
    let lower = path.to_ascii_lowercase();
    if lower == "/v1/models" || lower == "/v1/models/" {
        if method != Method::GET {
            return malformed();
        }
        return json_response(StatusCode::OK, json!({"models": rest.core.registry().model_names()}).to_string());
    }
    if !lower.starts_with("/v1/models/") {
        return malformed();
    }
    let Some(target) = parse_model_path(&path["/v1/models/".len()..]) else { return malformed() };
    let (registry, name) = (rest.core.registry(), target.name.as_str());
    let result = match (method.clone(), target.verb.as_deref(), target.metadata) {
        (Method::GET, None, false) => status(rest, &target),
        (Method::GET, None, true) => metadata(rest, &target),
        (Method::POST, Some("predict"), _) => {
            observe(registry, name, "predict", "REST", predict(rest, &target, &body, false, budget)).await
        }
        (Method::POST, Some("explain"), _) => {
            observe(registry, name, "explain", "REST", predict(rest, &target, &body, true, budget)).await
        }
        (Method::POST, Some("classify"), _) => {
            let call = classify_or_regress(rest, &target, &body, inference::Method::Classify, budget);
            observe(registry, name, "classify", "REST", call).await
        }
        (Method::POST, Some("regress"), _) => {
            let call = classify_or_regress(rest, &target, &body, inference::Method::Regress, budget);
            observe(registry, name, "regress", "REST", call).await
        }
        _ => return malformed(),
    };
    match result {
        Ok(r) => r,
        Err(e) => error_response(e),
    }
}

/// Writes a REST predict to its model's request log as the PredictRequest/Response TF Serving
/// would have handled (TF Serving's REST API logs the same records as gRPC).
fn log_predict(
    log: &crate::api::tfs::request_log::ModelLog,
    name: &str,
    signature_name: &str,
    version: i64,
    inputs: crate::model::TensorMap,
    outputs: &crate::model::TensorMap,
) {
    use crate::proto::tensorflow::serving::prediction_log::LogType;
    let spec = |version: Option<i64>| pb::ModelSpec {
        name: name.to_string(),
        signature_name: signature_name.to_string(),
        version_choice: version.map(pb::model_spec::VersionChoice::Version),
    };
    let request = pb::PredictRequest {
        model_spec: Some(spec(None)),
        inputs: inputs.into_iter().map(|(alias, t)| (alias, crate::tensor::proto::encode_owned(t, false))).collect(),
        ..Default::default()
    };
    let response = pb::PredictResponse {
        model_spec: Some(spec(Some(version))),
        outputs: outputs.iter().map(|(alias, t)| (alias.clone(), crate::tensor::proto::encode(t, false))).collect(),
    };
    log.write(&pb::PredictionLog {
        log_metadata: log.metadata(response.model_spec.clone()),
        log_type: Some(LogType::PredictLog(pb::PredictLog { request: Some(request), response: Some(response) })),
    });
}

fn spec_of(target: &ModelPath) -> pb::ModelSpec {
    pb::ModelSpec {
        name: target.name.clone(),
        signature_name: String::new(),
        version_choice: match &target.version {
            VersionChoice::Specific(v) => Some(pb::model_spec::VersionChoice::Version(*v)),
            VersionChoice::Label(l) => Some(pb::model_spec::VersionChoice::VersionLabel(l.clone())),
            VersionChoice::Latest => None,
        },
    }
}

/// TF Serving's status JSON plus KServe's `name` and `ready`, in one object both clients read.
fn status(rest: &Rest, target: &ModelPath) -> Result<Response, ServingError> {
    let resp = model_status(&rest.core, Some(spec_of(target)))?;
    // KServe's readiness turns false while the server drains for shutdown.
    let ready = !rest.core.is_draining()
        && resp.model_version_status.iter().any(|s| s.state == ServableState::Available as i32);
    let versions: Vec<Value> = resp
        .model_version_status
        .iter()
        .map(|s| {
            let status = s.status.clone().unwrap_or_default();
            let mut entry = json!({
                "version": s.version.to_string(),
                "state": state_name(s.state),
                "status": {"error_code": code_name(status.error_code), "error_message": status.error_message},
            });
            // Beside TF Serving's fields: the engine serving an available version.
            if s.state == ServableState::Available as i32 {
                let engine = rest.core.resolve(&target.name, &VersionChoice::Specific(s.version)).ok();
                if let Some(engine) = engine.and_then(|v| v.model.engine()) {
                    entry["engine"] = json!(engine);
                }
            }
            entry
        })
        .collect();
    let body = json!({"name": target.name, "ready": ready, "model_version_status": versions});
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok(json_response(code, serde_json::to_string_pretty(&body).expect("json")))
}

fn state_name(state: i32) -> &'static str {
    match state {
        10 => "START",
        20 => "LOADING",
        30 => "AVAILABLE",
        40 => "UNLOADING",
        50 => "END",
        _ => "UNKNOWN",
    }
}

fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

fn dtype_name(d: i32) -> String {
    match DataType::from_proto(d) {
        Some(dt) => format!("DT_{}", dt.name().to_ascii_uppercase()),
        None => "DT_INVALID".into(),
    }
}

/// Resolves a model for predict/explain; a known model with nothing loaded yet is 503 (KServe's rule).
fn resolve(rest: &Rest, target: &ModelPath) -> Result<crate::model::Servable, ServingError> {
    rest.core.resolve_for_run(&target.name, &target.version)
}

fn metadata(rest: &Rest, target: &ModelPath) -> Result<Response, ServingError> {
    let servable = rest.core.resolve(&target.name, &target.version)?;
    let tensor_info = |spec: &crate::model::TensorSpec| {
        let dims: Vec<Value> =
            spec.shape.iter().flatten().map(|d| json!({"size": d.to_string(), "name": ""})).collect();
        json!({
            "dtype": dtype_name(spec.dtype.to_proto()),
            "tensor_shape": {"dim": dims, "unknown_rank": spec.shape.is_none()},
            "name": spec.name,
        })
    };
    let mut sigs = serde_json::Map::new();
    for (name, sig) in servable.model.signatures() {
        let inputs: serde_json::Map<String, Value> =
            sig.inputs.iter().map(|(k, v)| (k.clone(), tensor_info(v))).collect();
        let outputs: serde_json::Map<String, Value> =
            sig.outputs.iter().map(|(k, v)| (k.clone(), tensor_info(v))).collect();
        sigs.insert(
            name.clone(),
            json!({"inputs": inputs, "outputs": outputs, "method_name": sig.method_name, "defaults": {}}),
        );
    }
    let body = json!({
        "model_spec": {"name": target.name, "signature_name": "", "version": servable.version.to_string()},
        "metadata": {"signature_def": {"signature_def": sigs}, "engine": servable.model.engine()},
    });
    Ok(json_response(StatusCode::OK, serde_json::to_string_pretty(&body).expect("json")))
}

/// The top level of a predict/explain body; the tensors stay raw until the signature is known.
#[derive(Deserialize)]
struct PredictBody<'a> {
    /// Signature to run; empty or missing means `serving_default`.
    #[serde(default)]
    signature_name: Option<String>,
    /// Row format.
    #[serde(borrow, default)]
    instances: Option<&'a RawValue>,
    /// Columnar format.
    #[serde(borrow, default)]
    inputs: Option<&'a RawValue>,
}

/// `:classify` / `:regress`: `{"signature_name", "context", "examples"}` -> `{"results": ...}`.
async fn classify_or_regress(
    rest: &Rest,
    target: &ModelPath,
    body: &[u8],
    method: inference::Method,
    budget: &RequestBudget,
) -> Result<Response, ServingError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ServingError::invalid_argument("JSON Parse error: the body is not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(ServingError::invalid_argument("JSON Parse error: The document is empty"));
    }
    budget.charge(value_tree_cost(text), || "parsing the examples' JSON".to_string())?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| ServingError::invalid_argument(format!("JSON Parse error: {e}")))?;
    let verb = match method {
        inference::Method::Classify => "classify",
        inference::Method::Regress => "regress",
    };
    let batch = crate::tensor::example::examples_from_json(&value, verb)?;
    let mut spec = spec_of(target);
    spec.signature_name = batch.signature_name.clone();
    let log = rest.manager.as_ref().and_then(|m| m.request_logs().sample(&target.name));
    let deadline = std::time::Instant::now().checked_add(rest.options.timeout);
    let (result, answered_spec) = tokio::time::timeout(
        rest.options.timeout,
        inference::run_task(
            &rest.core,
            &spec,
            batch.examples(),
            method,
            budget,
            CallContext { deadline, front_end: "rest" },
        ),
    )
    .await
    .map_err(|_| {
        ServingError::new(
            Code::DeadlineExceeded,
            "Deadline exceeded: the model did not answer within --rest_api_timeout_in_ms",
        )
    })??;
    if let Some(log) = log {
        log_task(&log, spec, batch, answered_spec, &result);
    }
    let float = |v: f32| crate::tensor::json::format_float(v as f64, true);
    let mut out = String::from("{\"results\": [");
    match result {
        inference::TaskResult::Classification(c) => {
            for (i, classes) in c.classifications.iter().enumerate() {
                out.push_str(if i > 0 { ", [" } else { "[" });
                for (k, class) in classes.classes.iter().enumerate() {
                    if k > 0 {
                        out.push_str(", ");
                    }
                    out.push('[');
                    out.push_str(&Value::String(class.label.clone()).to_string());
                    out.push_str(", ");
                    out.push_str(&float(class.score));
                    out.push(']');
                }
                out.push(']');
            }
        }
        inference::TaskResult::Regression(r) => {
            let values: Vec<String> = r.regressions.iter().map(|v| float(v.value)).collect();
            out.push_str(&values.join(", "));
        }
    }
    out.push_str("]}");
    Ok(json_response(StatusCode::OK, out))
}

/// Writes a REST classify or regress to its model's request log as the gRPC request and
/// response TF Serving would have logged for it.
fn log_task(
    log: &crate::api::tfs::request_log::ModelLog,
    spec: pb::ModelSpec,
    batch: crate::tensor::example::ExampleBatch,
    answered: pb::ModelSpec,
    result: &inference::TaskResult,
) {
    use crate::proto::tensorflow::serving::prediction_log::LogType;
    use pb::input::Kind;
    let kind = match batch.context {
        Some(context) => Kind::ExampleListWithContext(pb::ExampleListWithContext {
            examples: batch.examples,
            context: Some(context),
        }),
        None => Kind::ExampleList(pb::ExampleList { examples: batch.examples }),
    };
    let input = Some(pb::Input { kind: Some(kind) });
    let log_type = match result {
        inference::TaskResult::Classification(c) => LogType::ClassifyLog(pb::ClassifyLog {
            request: Some(pb::ClassificationRequest { model_spec: Some(spec), input }),
            response: Some(pb::ClassificationResponse { model_spec: Some(answered.clone()), result: Some(c.clone()) }),
        }),
        inference::TaskResult::Regression(r) => LogType::RegressLog(pb::RegressLog {
            request: Some(pb::RegressionRequest { model_spec: Some(spec), input }),
            response: Some(pb::RegressionResponse { model_spec: Some(answered.clone()), result: Some(r.clone()) }),
        }),
    };
    log.write(&pb::PredictionLog { log_metadata: log.metadata(Some(answered)), log_type: Some(log_type) });
}

async fn predict(
    rest: &Rest,
    target: &ModelPath,
    body: &[u8],
    with_explanations: bool,
    budget: &Arc<RequestBudget>,
) -> Result<Response, ServingError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ServingError::invalid_argument("JSON Parse error: the body is not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(ServingError::invalid_argument("JSON Parse error: The document is empty"));
    }
    let text = quote_non_finite(text);
    let parsed: PredictBody =
        serde_json::from_str(&text).map_err(|e| ServingError::invalid_argument(format!("JSON Parse error: {e}")))?;
    let servable = resolve(rest, target)?;
    let signature_name =
        parsed.signature_name.filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_SIGNATURE.to_string());
    let signature = servable.model.signatures().get(&signature_name).ok_or_else(|| {
        ServingError::invalid_argument(format!(
            "Serving signature name: \"{signature_name}\" not found in signature def"
        ))
    })?;
    let builders =
        InputBuilders::new(signature.inputs.iter().map(|(k, v)| (k.clone(), v.dtype)))?.with_budget(budget.clone());
    let (inputs, row_format) = match (parsed.instances, parsed.inputs) {
        (Some(_), Some(_)) => {
            return Err(ServingError::invalid_argument(
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist",
            ))
        }
        (None, None) => return Err(ServingError::invalid_argument("Missing 'inputs' or 'instances' key")),
        (Some(raw), None) => (parse_instances(raw.get(), builders)?, true),
        (None, Some(raw)) => (parse_inputs(raw.get(), builders)?, false),
    };
    // A sampled request keeps its inputs for the model's request log (`logging_config`).
    let logged = match (&rest.manager, with_explanations) {
        (Some(m), false) => m.request_logs().sample(&target.name).map(|log| (log, inputs.clone())),
        _ => None,
    };
    // The explainer keeps a copy of the inputs beside the one the model consumes.
    let kept_inputs = if with_explanations {
        budget.charge(inputs.values().map(Tensor::held_bytes).sum(), || "keeping the inputs to explain".to_string())?;
        Some(inputs.clone())
    } else {
        None
    };
    // One deadline for the run and the explainer's extra runs.
    let deadline = tokio::time::Instant::now() + rest.options.timeout;
    let timed_out = |_| {
        ServingError::new(
            Code::DeadlineExceeded,
            "Deadline exceeded: the model did not answer within --rest_api_timeout_in_ms",
        )
    };
    let mut call = rest.core.prepare_predict(&servable, &signature_name, inputs, &[], |_, t| Ok(t))?;
    call.deadline = Some(deadline.into_std());
    call.origin = crate::core::Origin { api: if with_explanations { "explain" } else { "predict" }, front_end: "rest" };
    let outputs = tokio::time::timeout_at(deadline, rest.core.predict(call, budget)).await.map_err(timed_out)??;
    if let Some((log, inputs)) = logged {
        log_predict(&log, &target.name, &signature_name, servable.version, inputs, &outputs);
    }

    // JSON text takes up to ~24 bytes per number; charge it before writing.
    let elements: usize = outputs.values().map(|t| t.len()).sum();
    budget.charge(elements.saturating_mul(24), || "writing the outputs as JSON".to_string())?;
    let mut out = String::with_capacity(256);
    if row_format || with_explanations {
        write_predictions(&mut out, &outputs)?;
    } else {
        write_outputs(&mut out, &outputs);
    }
    if let Some(inputs) = kept_inputs {
        let model = servable.model.clone();
        let (sig, ins) = (signature_name.clone(), inputs.clone());
        let own = tokio::time::timeout_at(deadline, tokio::task::spawn_blocking(move || model.explain(&sig, &ins)))
            .await
            .map_err(timed_out)?
            .map_err(|e| ServingError::internal(format!("explain failed: {e}")))?;
        let scores = match own {
            Some(r) => r?,
            None => {
                let run = explain(
                    &rest.core,
                    &servable,
                    &signature_name,
                    signature,
                    &inputs,
                    &outputs,
                    rest.options.explain,
                    budget,
                );
                tokio::time::timeout_at(deadline, run).await.map_err(timed_out)??
            }
        };
        // Replace the closing brace of {"predictions": [...]} with the explanations.
        out.pop();
        out.push_str(", \"explanations\": [");
        for (i, row) in scores.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str("{\"importance_scores\": [");
            for (k, s) in row.iter().enumerate() {
                if k > 0 {
                    out.push_str(", ");
                }
                out.push_str(&crate::tensor::json::format_float(*s, false));
            }
            out.push_str("]}");
        }
        out.push_str("]}");
    }
    Ok(json_response(StatusCode::OK, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tf_serving_paths() {
        let p = parse_model_path("half_plus_two:predict").unwrap();
        assert_eq!(
            (p.name.as_str(), p.verb.as_deref(), &p.version),
            ("half_plus_two", Some("predict"), &VersionChoice::Latest)
        );
        let p = parse_model_path("m/versions/123:predict").unwrap();
        assert_eq!(p.version, VersionChoice::Specific(123));
        let p = parse_model_path("m/labels/stable/metadata").unwrap();
        assert_eq!((p.version, p.metadata), (VersionChoice::Label("stable".into()), true));
        let p = parse_model_path("my%20model").unwrap();
        assert_eq!(p.name, "my model");
        assert!(parse_model_path("m/versions/abc").is_none());
        assert!(parse_model_path("m/foo/bar").is_none());
        assert!(parse_model_path("").is_none());
    }

    #[test]
    fn status_codes_follow_tf_serving() {
        let status = |code| http_status(ErrorKind::of(code)).as_u16();
        assert_eq!(status(Code::InvalidArgument), 400);
        assert_eq!(status(Code::FailedPrecondition), 400);
        assert_eq!(status(Code::NotFound), 404);
        assert_eq!(status(Code::Cancelled), 499);
        assert_eq!(status(Code::ResourceExhausted), 429);
        assert_eq!(status(Code::Aborted), 409);
        assert_eq!(status(Code::Unavailable), 503);
        let e = ServingError::resource_exhausted("queue").with_kind(ErrorKind::Overloaded);
        assert_eq!(http_status(e.kind).as_u16(), 503);
    }
}
