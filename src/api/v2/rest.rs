//! V2 REST front end: `/v2/...` on the REST port, JSON tensors and the binary tensor extension.

use crate::core::metrics::observe;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::{InferInput, InferRequest, RequestedOutput};
use crate::api::rest::{error_response, json_response, percent_decode, RestOptions};
use crate::core::statistics::Counted;
use crate::error::{ErrorKind, ServingError};
use crate::memory::RequestBudget;
use crate::repository::ModelManager;
use crate::serving::{CallContext, ServingCore};
use crate::tensor::v2;
use crate::tensor::DataType;

/// The binary tensor extension's header: the length of the JSON part of the body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// How many inputs or outputs one request may list.
const MAX_TENSORS: usize = 1024;

/// Padding put before a body so its binary part starts 16-byte aligned, where raw tensors are borrowed.
pub fn body_lead(headers: &HeaderMap) -> usize {
    match header_length(headers) {
        Ok(Some(n)) => (16 - n % 16) % 16,
        _ => 0,
    }
}

fn header_length(headers: &HeaderMap) -> Result<Option<usize>, ServingError> {
    let Some(value) = headers.get(HEADER_LENGTH) else { return Ok(None) };
    let n = value.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok());
    n.map(Some)
        .ok_or_else(|| ServingError::invalid_argument(format!("the {HEADER_LENGTH} header must be a byte count")))
}

/// What the V2 routes need of the REST front end.
pub struct V2Rest<'a> {
    /// The shared request logic.
    pub core: &'a Arc<ServingCore>,
    /// REST settings (timeout).
    pub options: &'a RestOptions,
    /// Model control, when the server has a manager.
    pub manager: Option<&'a Arc<ModelManager>>,
}

impl V2Rest<'_> {
    /// Serves one `/v2...` request; `path` is the full path.
    pub async fn route(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
        budget: &Arc<RequestBudget>,
    ) -> Response {
        match serve(self, method, path, headers, body, budget).await {
            Ok(r) => r,
            Err(e) => error_response(e),
        }
    }
}

fn ok_json(value: serde_json::Value) -> Response {
    json_response(StatusCode::OK, value.to_string())
}

async fn serve(
    v2: &V2Rest<'_>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
    budget: &Arc<RequestBudget>,
) -> Result<Response, ServingError> {
    let (core, options) = (v2.core, v2.options);
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(2).collect();
    let malformed = || ServingError::invalid_argument(format!("Malformed request: {method} {path}"));
    let get = method == Method::GET;
    let post = method == Method::POST;
    match segments.as_slice() {
        [] if get => Ok(ok_json(json!({
            "name": super::SERVER_NAME,
            "version": super::SERVER_VERSION,
            "extensions": super::EXTENSIONS,
        }))),
        ["health", "live"] if get => Ok(ok_json(json!({"live": true}))),
        ["health", "ready"] if get => {
            let ready = super::server_ready(core);
            let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            Ok(json_response(status, json!({"ready": ready}).to_string()))
        }
        ["models"] if get => Ok(ok_json(json!({"models": core.registry().model_names()}))),
        ["models", "stats"] if get => statistics(core, "", ""),
        ["repository", ..] if !options.admin.model_control => Err(crate::api::admin::model_control_elsewhere()),
        ["repository", "index"] if post => {
            let ready = serde_json::from_slice::<IndexBody>(&body).map(|b| b.ready).unwrap_or(false);
            let index: Vec<serde_json::Value> = super::grpc::repository_index(core, ready)
                .into_iter()
                .map(|e| {
                    let mut entry = json!({"name": e.name, "version": e.version, "state": e.state});
                    if !e.reason.is_empty() {
                        entry["reason"] = json!(e.reason);
                    }
                    entry
                })
                .collect();
            Ok(ok_json(serde_json::Value::Array(index)))
        }
        ["repository", "models", name, verb @ ("load" | "unload")] if post => {
            let name = percent_decode(name);
            let parameters = serde_json::from_slice::<LoadBody>(&body).map(|b| b.parameters).unwrap_or_default();
            if let Some(k) = parameters.keys().find(|k| k.as_str() == "config" || k.starts_with("file:")) {
                return Err(ServingError::unimplemented(format!(
                    "the load parameter {k:?} is not supported: models load from their directory in --model_repository"
                )));
            }
            if *verb == "load" {
                super::load_model(v2.manager, &name).await?;
                Ok(ok_json(json!({"name": name, "load": true})))
            } else {
                super::unload_model(v2.manager, &name).await?;
                Ok(ok_json(json!({"name": name, "unload": true})))
            }
        }
        ["models", name, rest @ ..] => {
            let name = percent_decode(name);
            let (version, rest) = match rest {
                ["versions", v, rest @ ..] => (percent_decode(v), rest),
                rest => (String::new(), rest),
            };
            match rest {
                [] if get => metadata(core, &name, &version),
                ["stats"] if get => statistics(core, &name, &version),
                ["ready"] if get => {
                    let ready = super::model_ready(core, &name, &version)?;
                    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    Ok(json_response(status, json!({"name": name, "ready": ready}).to_string()))
                }
                ["infer"] if post => {
                    let deadline = tokio::time::Instant::now() + options.timeout;
                    let model = name.clone();
                    let run = infer(core, name, version, headers, body, deadline.into_std(), budget);
                    let timed =
                        async { tokio::time::timeout_at(deadline, run).await.map_err(|_| super::rest_timed_out())? };
                    observe(core.registry(), &model, "infer", "REST", timed).await
                }
                _ => Err(malformed()),
            }
        }
        _ => Err(malformed()),
    }
}

/// The statistics extension's answer, in Triton's JSON shape.
fn statistics(core: &ServingCore, name: &str, version: &str) -> Result<Response, ServingError> {
    let duration = |c: Counted| json!({"count": c.count, "ns": c.ns});
    let stats: Vec<serde_json::Value> = super::statistics_of(core, name, version)?
        .iter()
        .map(|servable| {
            let s = &servable.runtime.stats().statistics;
            let batches: Vec<serde_json::Value> = s
                .batch_sizes()
                .into_iter()
                .map(|(size, run)| {
                    let none = Counted { count: run.count, ns: 0 };
                    json!({"batch_size": size, "compute_input": duration(none), "compute_infer": duration(run),
                           "compute_output": duration(none)})
                })
                .collect();
            json!({
                "name": servable.name,
                "version": servable.version.to_string(),
                "last_inference": s.last_inference(),
                "inference_count": s.inference_count(),
                "execution_count": s.execution_count(),
                "inference_stats": {
                    "success": duration(s.success.get()),
                    "fail": duration(s.fail.get()),
                    "queue": duration(s.queue.get()),
                    "compute_input": duration(s.compute_input.get()),
                    "compute_infer": duration(s.compute_infer.get()),
                    "compute_output": duration(s.compute_output.get()),
                    "cache_hit": duration(Counted::default()),
                    "cache_miss": duration(Counted::default()),
                },
                "batch_stats": batches,
                "memory_usage": [],
            })
        })
        .collect();
    Ok(ok_json(json!({"model_stats": stats})))
}

/// A load or unload body: only the parameter names are looked at.
#[derive(Deserialize, Default)]
struct LoadBody {
    #[serde(default)]
    parameters: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

/// `POST /v2/repository/index`'s optional body.
#[derive(Deserialize, Default)]
struct IndexBody {
    #[serde(default)]
    ready: bool,
}

fn metadata(core: &ServingCore, name: &str, version: &str) -> Result<Response, ServingError> {
    let m = super::model_metadata(core, name, version)?;
    let tensors = |list: &[super::TensorMetadata]| -> Vec<serde_json::Value> {
        list.iter().map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape})).collect()
    };
    let mut body = json!({
        "name": m.name,
        "versions": m.versions,
        "platform": m.platform,
        "inputs": tensors(&m.inputs),
        "outputs": tensors(&m.outputs),
    });
    if let Some(engine) = m.engine {
        body["properties"] = json!({"engine": engine});
    }
    Ok(ok_json(body))
}

/// A JSON array of at most `N` items, refused as it is read rather than after.
struct Bounded<T, const N: usize>(Vec<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Bounded<T, N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Seq<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Seq<T, N> {
            type Value = Bounded<T, N>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "an array of at most {N} items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    if out.len() == N {
                        return Err(serde::de::Error::custom(format!("more than {N} items")));
                    }
                    out.push(item);
                }
                Ok(Bounded(out))
            }
        }
        deserializer.deserialize_seq(Seq::<T, N>(PhantomData))
    }
}

/// Request-level parameters tensorserve reads; others are accepted and ignored.
#[derive(Deserialize, Default)]
struct RequestParameters {
    #[serde(default)]
    binary_data_output: Option<bool>,
    #[serde(default)]
    signature_name: Option<String>,
}

#[derive(Deserialize, Default)]
struct InputParameters {
    #[serde(default)]
    binary_data_size: Option<u64>,
}

#[derive(Deserialize, Default)]
struct OutputParameters {
    #[serde(default)]
    binary_data: Option<bool>,
    #[serde(default)]
    classification: Option<u64>,
}

#[derive(Deserialize)]
struct JsonInput<'a> {
    name: String,
    shape: Bounded<i64, { crate::tensor::proto::MAX_DIMS }>,
    datatype: String,
    #[serde(default)]
    parameters: InputParameters,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct JsonOutput {
    name: String,
    #[serde(default)]
    parameters: OutputParameters,
}

#[derive(Deserialize)]
struct InferBody<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    parameters: RequestParameters,
    #[serde(borrow)]
    inputs: Bounded<JsonInput<'a>, MAX_TENSORS>,
    #[serde(default)]
    outputs: Option<Bounded<JsonOutput, MAX_TENSORS>>,
}

/// One REST input's payload.
enum Payload<'a> {
    /// JSON `data`.
    Json(&'a RawValue),
    /// Its slice of the binary part of the body.
    Binary(Bytes),
}

async fn infer(
    core: &ServingCore,
    model: String,
    version: String,
    headers: &HeaderMap,
    body: Bytes,
    deadline: std::time::Instant,
    budget: &RequestBudget,
) -> Result<Response, ServingError> {
    let (json_part, mut binary) = match header_length(headers)? {
        Some(n) if n > body.len() => {
            return Err(ServingError::invalid_argument(format!(
                "{HEADER_LENGTH} is {n} but the body has only {} bytes",
                body.len()
            )))
        }
        Some(0) => {
            return Err(ServingError::unimplemented(format!(
                "{HEADER_LENGTH}: 0 (a body holding one raw tensor and no JSON) is not supported; send the JSON header"
            ))
            .with_kind(ErrorKind::Unsupported))
        }
        Some(n) => (body.slice(..n), body.slice(n..)),
        None => (body, Bytes::new()),
    };
    if json_part.iter().all(u8::is_ascii_whitespace) {
        return Err(ServingError::invalid_argument("the request body is empty; expected a JSON inference request"));
    }
    let parsed: InferBody = serde_json::from_slice(&json_part)
        .map_err(|e| ServingError::invalid_argument(format!("JSON Parse error: {e}")))?;
    let mut inputs = Vec::with_capacity(parsed.inputs.0.len());
    for input in parsed.inputs.0 {
        let payload = match (input.parameters.binary_data_size, input.data) {
            (Some(_), Some(_)) => {
                return Err(ServingError::invalid_argument(format!(
                    "input '{}' has both binary_data_size and data",
                    input.name
                )))
            }
            (Some(size), None) => {
                let size = usize::try_from(size).ok().filter(|&s| s <= binary.len()).ok_or_else(|| {
                    ServingError::invalid_argument(format!(
                        "input '{}': binary_data_size {size} is past the end of the body ({} bytes left)",
                        input.name,
                        binary.len()
                    ))
                })?;
                Payload::Binary(binary.split_to(size))
            }
            (None, Some(data)) => Payload::Json(data),
            (None, None) => return Err(ServingError::invalid_argument(format!("input '{}' has no data", input.name))),
        };
        inputs.push(InferInput { name: input.name, datatype: input.datatype, shape: input.shape.0, data: payload });
    }
    if !binary.is_empty() {
        return Err(ServingError::invalid_argument(format!(
            "the body has {} bytes after the last input's binary data",
            binary.len()
        )));
    }
    let all_binary = parsed.parameters.binary_data_output.unwrap_or(false);
    let listed = parsed.outputs.map(|o| o.0).unwrap_or_default();
    let mut binary_wanted = Vec::with_capacity(listed.len());
    let mut requested = Vec::with_capacity(listed.len());
    for o in listed {
        binary_wanted.push(o.parameters.binary_data.unwrap_or(all_binary));
        let classification = o.parameters.classification.filter(|&n| n > 0).map(|n| n as usize);
        requested.push(RequestedOutput { name: o.name, classification });
    }
    let request =
        InferRequest { model, version, signature: parsed.parameters.signature_name, inputs, outputs: requested };
    let limits = core.options().decode_limits;
    let mut decode = |name: &str, dtype: DataType, shape: &[i64], payload: Payload| match payload {
        Payload::Json(data) => v2::from_json(name, dtype, shape, data, &limits, budget),
        Payload::Binary(bytes) => v2::from_raw(name, dtype, shape, bytes, &limits, budget),
    };
    let context = CallContext { deadline: Some(deadline), front_end: "rest" };
    let answer = super::infer(core, request, context, budget, &mut decode).await?;
    let encoding = std::time::Instant::now();
    let as_binary = |i: usize| binary_wanted.get(i).copied().unwrap_or(all_binary);
    let json_elements: usize =
        answer.outputs.iter().enumerate().filter(|(i, _)| !as_binary(*i)).map(|(_, (_, t))| t.len()).sum();
    budget.charge(json_elements.saturating_mul(24), || "writing the outputs as JSON".to_string())?;
    let mut out = String::with_capacity(128 + json_elements * 8);
    out.push_str("{\"model_name\":");
    out.push_str(&json!(answer.servable.name).to_string());
    out.push_str(",\"model_version\":\"");
    out.push_str(&answer.servable.version.to_string());
    out.push('"');
    if let Some(id) = parsed.id {
        out.push_str(",\"id\":");
        out.push_str(id.get());
    }
    out.push_str(",\"outputs\":[");
    let mut chunks: Vec<Bytes> = Vec::new();
    for (i, (name, tensor)) in answer.outputs.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let binary = as_binary(i);
        if !binary && !v2::has_typed_contents(tensor.dtype()) {
            return Err(ServingError::invalid_argument(format!(
                "output '{name}' is {}, which JSON cannot carry; ask for it with \"binary_data\": true",
                v2::datatype_name(tensor.dtype())
            )));
        }
        out.push_str("{\"name\":");
        out.push_str(&json!(name).to_string());
        out.push_str(",\"datatype\":\"");
        out.push_str(v2::datatype_name(tensor.dtype()));
        out.push_str("\",\"shape\":");
        out.push_str(&json!(tensor.shape()).to_string());
        if binary {
            let bytes = v2::into_raw(tensor);
            out.push_str(",\"parameters\":{\"binary_data_size\":");
            out.push_str(&bytes.len().to_string());
            out.push_str("}}");
            chunks.push(bytes);
        } else {
            out.push_str(",\"data\":");
            v2::write_json_data(&mut out, &tensor);
            out.push('}');
        }
    }
    out.push_str("]}");
    answer.servable.runtime.stats().statistics.compute_output.add(encoding.elapsed());
    if chunks.is_empty() {
        return Ok(json_response(StatusCode::OK, out));
    }
    let header_len = out.len();
    chunks.insert(0, Bytes::from(out));
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let frames = chunks.into_iter().map(|b| Ok::<_, Infallible>(http_body::Frame::data(b)));
    let body = Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)));
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(HEADER_LENGTH, HeaderValue::from(header_len));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    Ok(response)
}
