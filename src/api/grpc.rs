//! gRPC front end: `tensorflow.serving.PredictionService` and `ModelService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::tfs::inference::{self, Method, TaskResult};
use crate::api::tfs::request_log::{ModelLog, RequestLogs};
use crate::api::tfs::{model_status, require_spec, version_choice};
use crate::core::metrics::observe;
use crate::error::ServingError;
use crate::memory::RequestBudget;
use crate::model::{Signature, TensorSpec};
use crate::proto::tensorflow as tf;
use crate::proto::tensorflow::serving as pb;
use crate::proto::tensorflow::serving::prediction_log::LogType;
use crate::repository::ModelManager;
use crate::serving::{CallContext, ServingCore};
use crate::tensor::example::Examples;
use crate::tensor::proto::{decode_within, encode, encode_owned, encode_shape_i64};

pub use pb::model_service_server::ModelServiceServer;
pub use pb::prediction_service_server::PredictionServiceServer;

/// The type URL clients expect on the metadata `Any`.
pub const SIGNATURE_DEF_MAP_TYPE_URL: &str = "type.googleapis.com/tensorflow.serving.SignatureDefMap";

/// The only metadata field TF Serving serves.
const SIGNATURE_DEF_FIELD: &str = "signature_def";

/// Our extra metadata field: the engine serving the version, a `google.protobuf.StringValue`.
pub const ENGINE_FIELD: &str = "engine";

/// The type URL of the engine entry.
pub const STRING_VALUE_TYPE_URL: &str = "type.googleapis.com/google.protobuf.StringValue";

/// Implements both TF Serving services over one [`ServingCore`].
#[derive(Clone)]
pub struct GrpcApi {
    /// The shared request logic.
    core: Arc<ServingCore>,
    /// Applies `HandleReloadConfigRequest`; `None` when the model list is fixed in code.
    manager: Option<Arc<ModelManager>>,
    /// The models' request logs (`logging_config`), from the manager.
    logs: Option<Arc<RequestLogs>>,
}

impl GrpcApi {
    /// A front end over `core`, with `manager` for config reloads.
    pub fn new(core: Arc<ServingCore>, manager: Option<Arc<ModelManager>>) -> Self {
        let logs = manager.as_ref().map(|m| m.request_logs().clone());
        GrpcApi { core, manager, logs }
    }

    /// The request's copy for its model's request log, when this one is sampled.
    fn sampled<Req: Clone>(&self, model: &str, request: &Request<Req>) -> Option<(Arc<ModelLog>, Req)> {
        let log = self.logs.as_ref()?.sample(model)?;
        Some((log, request.get_ref().clone()))
    }

    /// Runs one call, counted for metrics, and logs it (request and response) when sampled.
    async fn serve<Req, Resp: Clone>(
        &self,
        model: &str,
        api: &'static str,
        logged: Option<(Arc<ModelLog>, Req)>,
        call: impl std::future::Future<Output = Result<Response<Resp>, Status>>,
        log_type: fn(Req, Resp) -> LogType,
    ) -> Result<Response<Resp>, Status> {
        let result = observe(self.core.registry(), model, api, "GRPC", call).await;
        if let (Some((log, req)), Ok(resp)) = (logged, &result) {
            let log_type = log_type(req, resp.get_ref().clone());
            let spec = match &log_type {
                LogType::PredictLog(l) => l.response.as_ref().and_then(|r| r.model_spec.clone()),
                LogType::ClassifyLog(l) => l.response.as_ref().and_then(|r| r.model_spec.clone()),
                LogType::RegressLog(l) => l.response.as_ref().and_then(|r| r.model_spec.clone()),
                _ => None,
            };
            log.write(&pb::PredictionLog { log_metadata: log.metadata(spec), log_type: Some(log_type) });
        }
        result
    }
}

fn predict_log(request: pb::PredictRequest, response: pb::PredictResponse) -> LogType {
    LogType::PredictLog(pb::PredictLog { request: Some(request), response: Some(response) })
}

fn classify_log(request: pb::ClassificationRequest, response: pb::ClassificationResponse) -> LogType {
    LogType::ClassifyLog(pb::ClassifyLog { request: Some(request), response: Some(response) })
}

fn regress_log(request: pb::RegressionRequest, response: pb::RegressionResponse) -> LogType {
    LogType::RegressLog(pb::RegressLog { request: Some(request), response: Some(response) })
}

fn multi_inference_log(request: pb::MultiInferenceRequest, response: pb::MultiInferenceResponse) -> LogType {
    LogType::MultiInferenceLog(pb::MultiInferenceLog { request: Some(request), response: Some(response) })
}

/// The request's memory budget: the one the transport opened (and charged the body to), else a new one.
pub(crate) fn budget_of<T>(core: &ServingCore, request: &Request<T>) -> Arc<RequestBudget> {
    request.extensions().get::<Arc<RequestBudget>>().cloned().unwrap_or_else(|| Arc::new(core.memory().budget()))
}

/// When the client stops waiting: now plus its `grpc-timeout` (1-8 digits and a unit, H M S m u n).
pub(crate) fn deadline_of<T>(request: &Request<T>) -> Option<std::time::Instant> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => std::time::Duration::from_secs(n * 3600),
        "M" => std::time::Duration::from_secs(n * 60),
        "S" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_millis(n),
        "u" => std::time::Duration::from_micros(n),
        "n" => std::time::Duration::from_nanos(n),
        _ => return None,
    };
    std::time::Instant::now().checked_add(timeout)
}

fn grpc(deadline: Option<std::time::Instant>) -> CallContext {
    CallContext { deadline, front_end: "grpc" }
}

fn tensor_info(spec: &TensorSpec) -> tf::TensorInfo {
    let tensor_shape = match &spec.shape {
        Some(dims) => encode_shape_i64(dims),
        None => tf::TensorShapeProto { dim: Vec::new(), unknown_rank: true },
    };
    tf::TensorInfo {
        dtype: spec.dtype.to_proto(),
        tensor_shape: Some(tensor_shape),
        encoding: Some(tf::tensor_info::Encoding::Name(spec.name.clone())),
    }
}

/// A signature as TF's `SignatureDef` proto.
pub fn signature_def(sig: &Signature, as_content: bool) -> tf::SignatureDef {
    tf::SignatureDef {
        inputs: sig.inputs.iter().map(|(k, v)| (k.clone(), tensor_info(v))).collect(),
        outputs: sig.outputs.iter().map(|(k, v)| (k.clone(), tensor_info(v))).collect(),
        method_name: sig.method_name.clone(),
        defaults: sig.defaults.iter().map(|(k, v)| (k.clone(), encode(v, as_content))).collect(),
    }
}

/// The PredictionService calls, each counted by its trait method (see [`observe`]).
impl GrpcApi {
    async fn classify_call(
        &self,
        request: Request<pb::ClassificationRequest>,
    ) -> Result<Response<pb::ClassificationResponse>, Status> {
        let budget = budget_of(&self.core, &request);
        let deadline = deadline_of(&request);
        let request = request.into_inner();
        let spec = require_spec(request.model_spec)?;
        let (result, model_spec) = inference::run_task(
            &self.core,
            &spec,
            Examples::of(request.input.as_ref()),
            Method::Classify,
            &budget,
            grpc(deadline),
        )
        .await?;
        let TaskResult::Classification(result) = result else {
            return Err(ServingError::internal("classify produced a regression").into());
        };
        Ok(Response::new(pb::ClassificationResponse { result: Some(result), model_spec: Some(model_spec) }))
    }

    async fn regress_call(
        &self,
        request: Request<pb::RegressionRequest>,
    ) -> Result<Response<pb::RegressionResponse>, Status> {
        let budget = budget_of(&self.core, &request);
        let deadline = deadline_of(&request);
        let request = request.into_inner();
        let spec = require_spec(request.model_spec)?;
        let (result, model_spec) = inference::run_task(
            &self.core,
            &spec,
            Examples::of(request.input.as_ref()),
            Method::Regress,
            &budget,
            grpc(deadline),
        )
        .await?;
        let TaskResult::Regression(result) = result else {
            return Err(ServingError::internal("regress produced a classification").into());
        };
        Ok(Response::new(pb::RegressionResponse { result: Some(result), model_spec: Some(model_spec) }))
    }

    async fn predict_call(
        &self,
        request: Request<pb::PredictRequest>,
    ) -> Result<Response<pb::PredictResponse>, Status> {
        let budget = budget_of(&self.core, &request);
        let deadline = deadline_of(&request);
        let request = request.into_inner();
        let spec = require_spec(request.model_spec)?;
        let servable = self.core.resolve(&spec.name, &version_choice(&spec))?;
        let limits = self.core.options().decode_limits;
        let mut call = self.core.prepare_predict(
            &servable,
            &spec.signature_name,
            request.inputs,
            &request.output_filter,
            |alias, proto| {
                decode_within(proto, &limits, &budget)
                    .map_err(|e| e.into_serving(|detail| format!("tensor parsing error: {alias} ({detail})")))
            },
        )?;
        call.deadline = deadline;
        call.origin.front_end = "grpc";
        let signature_name = call.signature_name.to_string();
        let outputs = self.core.predict(call, &budget).await?;
        let as_content = self.core.options().tensor_content_output;
        let outputs = outputs.into_iter().map(|(alias, t)| (alias, encode_owned(t, as_content))).collect();
        Ok(Response::new(pb::PredictResponse {
            outputs,
            model_spec: Some(pb::ModelSpec {
                name: spec.name,
                signature_name,
                version_choice: Some(pb::model_spec::VersionChoice::Version(servable.version)),
            }),
        }))
    }

    async fn multi_inference_call(
        &self,
        request: Request<pb::MultiInferenceRequest>,
    ) -> Result<Response<pb::MultiInferenceResponse>, Status> {
        let budget = budget_of(&self.core, &request);
        let deadline = deadline_of(&request);
        Ok(Response::new(inference::multi_inference(&self.core, &request.into_inner(), &budget, grpc(deadline)).await?))
    }
}

#[tonic::async_trait]
impl pb::prediction_service_server::PredictionService for GrpcApi {
    async fn classify(
        &self,
        request: Request<pb::ClassificationRequest>,
    ) -> Result<Response<pb::ClassificationResponse>, Status> {
        let model = request.get_ref().model_spec.as_ref().map_or("", |s| s.name.as_str()).to_string();
        let logged = self.sampled(&model, &request);
        self.serve(&model, "classify", logged, self.classify_call(request), classify_log).await
    }

    async fn regress(
        &self,
        request: Request<pb::RegressionRequest>,
    ) -> Result<Response<pb::RegressionResponse>, Status> {
        let model = request.get_ref().model_spec.as_ref().map_or("", |s| s.name.as_str()).to_string();
        let logged = self.sampled(&model, &request);
        self.serve(&model, "regress", logged, self.regress_call(request), regress_log).await
    }

    async fn predict(&self, request: Request<pb::PredictRequest>) -> Result<Response<pb::PredictResponse>, Status> {
        let model = request.get_ref().model_spec.as_ref().map_or("", |s| s.name.as_str()).to_string();
        let logged = self.sampled(&model, &request);
        self.serve(&model, "predict", logged, self.predict_call(request), predict_log).await
    }

    async fn multi_inference(
        &self,
        request: Request<pb::MultiInferenceRequest>,
    ) -> Result<Response<pb::MultiInferenceResponse>, Status> {
        let model = request
            .get_ref()
            .tasks
            .first()
            .and_then(|t| t.model_spec.as_ref())
            .map_or("", |s| s.name.as_str())
            .to_string();
        let logged = self.sampled(&model, &request);
        self.serve(&model, "multi_inference", logged, self.multi_inference_call(request), multi_inference_log).await
    }

    async fn get_model_metadata(
        &self,
        request: Request<pb::GetModelMetadataRequest>,
    ) -> Result<Response<pb::GetModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let spec = require_spec(request.model_spec)?;
        if request.metadata_field.is_empty() {
            return Err(ServingError::invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field",
            )
            .into());
        }
        if let Some(field) = request.metadata_field.iter().find(|f| *f != SIGNATURE_DEF_FIELD && *f != ENGINE_FIELD) {
            return Err(ServingError::invalid_argument(format!("Metadata field {field} is not supported")).into());
        }
        let servable = self.core.resolve(&spec.name, &version_choice(&spec))?;
        let as_content = self.core.options().tensor_content_output;
        let map = pb::SignatureDefMap {
            signature_def: servable
                .model
                .signatures()
                .iter()
                .map(|(name, sig)| (name.clone(), signature_def(sig, as_content)))
                .collect(),
        };
        let mut metadata = std::collections::BTreeMap::new();
        if request.metadata_field.iter().any(|f| f == SIGNATURE_DEF_FIELD) {
            let value = prost::Message::encode_to_vec(&map);
            metadata.insert(
                SIGNATURE_DEF_FIELD.to_string(),
                prost_types::Any { type_url: SIGNATURE_DEF_MAP_TYPE_URL.to_string(), value },
            );
        }
        // Beside TF Serving's field, always: which engine serves this version.
        if let Some(engine) = servable.model.engine() {
            let value = prost::Message::encode_to_vec(&engine.to_string());
            metadata.insert(
                ENGINE_FIELD.to_string(),
                prost_types::Any { type_url: STRING_VALUE_TYPE_URL.to_string(), value },
            );
        }
        Ok(Response::new(pb::GetModelMetadataResponse {
            model_spec: Some(pb::ModelSpec {
                name: spec.name,
                signature_name: String::new(),
                version_choice: Some(pb::model_spec::VersionChoice::Version(servable.version)),
            }),
            metadata,
        }))
    }
}

#[tonic::async_trait]
impl pb::model_service_server::ModelService for GrpcApi {
    async fn get_model_status(
        &self,
        request: Request<pb::GetModelStatusRequest>,
    ) -> Result<Response<pb::GetModelStatusResponse>, Status> {
        Ok(Response::new(model_status(&self.core, request.into_inner().model_spec)?))
    }

    async fn handle_reload_config_request(
        &self,
        request: Request<pb::ReloadConfigRequest>,
    ) -> Result<Response<pb::ReloadConfigResponse>, Status> {
        let Some(manager) = self.manager.clone() else {
            return Err(ServingError::failed_precondition(
                "this server's model list is fixed in code; it cannot be reloaded",
            )
            .into());
        };
        let config = request.into_inner().config.unwrap_or_default();
        // Loads block for as long as models take to load and warm up: keep them off the reactor.
        tokio::task::spawn_blocking(move || manager.reload(&config))
            .await
            .map_err(|e| ServingError::internal(format!("reload failed: {e}")))??;
        // A failure is the gRPC status itself (gRPC sends no body with an error); success also says so in `status`.
        Ok(Response::new(pb::ReloadConfigResponse {
            status: Some(pb::StatusProto { error_code: 0, error_message: String::new() }),
            metric: Vec::new(),
        }))
    }
}
