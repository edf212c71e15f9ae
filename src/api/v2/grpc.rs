//! V2 gRPC front end: `inference.GRPCInferenceService` on the gRPC port.

use crate::core::metrics::observe;
use std::sync::Arc;

use bytes::Bytes;
use tonic::{Request, Response, Status, Streaming};

use super::{grpc_status, InferInput, InferRequest, RequestedOutput, SIGNATURE_PARAMETER};
use crate::api::grpc::{budget_of, deadline_of};
use crate::core::statistics::Counted;
use crate::error::ServingError;
use crate::memory::RequestBudget;
use crate::model::ServableState;
use crate::proto::inference as pb;
use crate::proto::inference::infer_parameter::ParameterChoice;
use crate::repository::ModelManager;
use crate::serving::{CallContext, ServingCore};
use crate::tensor::v2;
use crate::tensor::DataType;

pub use pb::grpc_inference_service_server::GrpcInferenceServiceServer;

/// Implements `GRPCInferenceService` over one [`ServingCore`].
#[derive(Clone)]
pub struct V2GrpcApi {
    /// The shared request logic.
    core: Arc<ServingCore>,
    /// Loads and unloads models for the repository extension; `None` when models are fixed in code.
    manager: Option<Arc<ModelManager>>,
    /// False when model control is served only on the admin listener (`--monitoring_address`).
    model_control: bool,
}

impl V2GrpcApi {
    /// A front end over `core`, with `manager` for model control.
    pub fn new(core: Arc<ServingCore>, manager: Option<Arc<ModelManager>>) -> Self {
        V2GrpcApi { core, manager, model_control: true }
    }

    /// Refuses the repository calls here: the admin listener serves them.
    pub fn without_model_control(self) -> Self {
        V2GrpcApi { model_control: false, ..self }
    }

    fn control(&self) -> Result<Option<&Arc<ModelManager>>, Status> {
        if self.model_control {
            Ok(self.manager.as_ref())
        } else {
            Err(v2_error(crate::api::admin::model_control_elsewhere()))
        }
    }
}

/// Refuses repository parameters that would hand the server a model config or model files.
fn check_load_parameters(
    parameters: &std::collections::BTreeMap<String, pb::ModelRepositoryParameter>,
) -> Result<(), Status> {
    match parameters.keys().find(|k| k.as_str() == "config" || k.starts_with("file:")) {
        Some(k) => Err(Status::unimplemented(format!(
            "the load parameter {k:?} is not supported: models load from their directory in --model_repository"
        ))),
        None => Ok(()),
    }
}

/// What one gRPC input carries.
enum Payload {
    /// Its entry of `raw_input_contents`.
    Raw(Bytes),
    /// Typed `contents`.
    Contents(pb::InferTensorContents),
}

fn int_parameter(p: &pb::InferParameter) -> Option<i64> {
    match p.parameter_choice {
        Some(ParameterChoice::Int64Param(v)) => Some(v),
        Some(ParameterChoice::Uint64Param(v)) => i64::try_from(v).ok(),
        _ => None,
    }
}

/// The classification extension's `classification` parameter of one requested output.
fn classification(name: &str, p: Option<&pb::InferParameter>) -> Result<Option<usize>, ServingError> {
    let Some(p) = p else { return Ok(None) };
    match int_parameter(p) {
        Some(n) if n > 0 => Ok(Some(n as usize)),
        Some(0) => Ok(None),
        _ => Err(ServingError::invalid_argument(format!(
            "output '{name}': the classification parameter must be a positive integer"
        ))),
    }
}

/// Runs one `ModelInferRequest` and builds its response.
pub async fn model_infer(
    core: &ServingCore,
    request: pb::ModelInferRequest,
    context: CallContext,
    budget: &RequestBudget,
) -> Result<pb::ModelInferResponse, ServingError> {
    let pb::ModelInferRequest { model_name, model_version, id, parameters, inputs, outputs, raw_input_contents } =
        request;
    let raw = !raw_input_contents.is_empty();
    if raw && raw_input_contents.len() != inputs.len() {
        return Err(ServingError::invalid_argument(format!(
            "the number of inputs ({}) does not match the number of raw input contents ({})",
            inputs.len(),
            raw_input_contents.len()
        )));
    }
    let mut raws = raw_input_contents.into_iter();
    let mut request_inputs = Vec::with_capacity(inputs.len());
    for input in inputs {
        let payload = match (raws.next(), input.contents) {
            (Some(_), Some(_)) => {
                return Err(ServingError::invalid_argument(format!(
                    "input '{}': contents must not be set when raw_input_contents is used",
                    input.name
                )))
            }
            (Some(bytes), None) => Payload::Raw(bytes),
            (None, Some(c)) => Payload::Contents(c),
            (None, None) => {
                return Err(ServingError::invalid_argument(format!("input '{}' has no contents", input.name)))
            }
        };
        request_inputs.push(InferInput {
            name: input.name,
            datatype: input.datatype,
            shape: input.shape,
            data: payload,
        });
    }
    let signature = match parameters.get(SIGNATURE_PARAMETER).and_then(|p| p.parameter_choice.as_ref()) {
        Some(ParameterChoice::StringParam(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ServingError::invalid_argument(format!("the {SIGNATURE_PARAMETER} parameter must be a string")))
        }
        None => None,
    };
    let requested = outputs
        .iter()
        .map(|o| {
            Ok(RequestedOutput {
                name: o.name.clone(),
                classification: classification(&o.name, o.parameters.get("classification"))?,
            })
        })
        .collect::<Result<Vec<_>, ServingError>>()?;
    let request = InferRequest {
        model: model_name,
        version: model_version,
        signature,
        inputs: request_inputs,
        outputs: requested,
    };
    let limits = core.options().decode_limits;
    let mut decode = |name: &str, dtype: DataType, shape: &[i64], payload: Payload| match payload {
        Payload::Raw(bytes) => v2::from_raw(name, dtype, shape, bytes, &limits, budget),
        Payload::Contents(c) => v2::from_contents(name, dtype, shape, c, &limits, budget),
    };
    let answer = super::infer(core, request, context, budget, &mut decode).await?;
    let encoding = std::time::Instant::now();
    // FP16 and BF16 have no typed field: when one is among the outputs, all go raw.
    let answer_raw = raw || answer.outputs.iter().any(|(_, t)| !v2::has_typed_contents(t.dtype()));
    let mut response = pb::ModelInferResponse {
        model_name: answer.servable.name.clone(),
        model_version: answer.servable.version.to_string(),
        id,
        ..Default::default()
    };
    for (name, tensor) in answer.outputs {
        let mut output = pb::model_infer_response::InferOutputTensor {
            name,
            datatype: v2::datatype_name(tensor.dtype()).to_string(),
            shape: tensor.shape().iter().map(|&d| d as i64).collect(),
            ..Default::default()
        };
        if answer_raw {
            // Like Triton, no per-output `binary_data_size`: raw_output_contents[i] is outputs[i].
            response.raw_output_contents.push(v2::into_raw(tensor));
        } else {
            output.contents = v2::to_contents(&tensor);
        }
        response.outputs.push(output);
    }
    answer.servable.runtime.stats().statistics.compute_output.add(encoding.elapsed());
    Ok(response)
}

fn v2_error(e: ServingError) -> Status {
    grpc_status(&e)
}

#[tonic::async_trait]
impl pb::grpc_inference_service_server::GrpcInferenceService for V2GrpcApi {
    async fn server_live(
        &self,
        _request: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: super::server_ready(&self.core) }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let ready = super::model_ready(&self.core, &r.name, &r.version).map_err(v2_error)?;
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _request: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: super::SERVER_NAME.to_string(),
            version: super::SERVER_VERSION.to_string(),
            extensions: super::EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let m = super::model_metadata(&self.core, &r.name, &r.version).map_err(v2_error)?;
        let tensors = |list: Vec<super::TensorMetadata>| {
            list.into_iter()
                .map(|t| pb::model_metadata_response::TensorMetadata {
                    name: t.name,
                    datatype: t.datatype.to_string(),
                    shape: t.shape,
                })
                .collect()
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform.to_string(),
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let budget = budget_of(&self.core, &request);
        let context = CallContext { deadline: deadline_of(&request), front_end: "grpc" };
        let request = request.into_inner();
        let name = request.model_name.clone();
        let call = model_infer(&self.core, request, context, &budget);
        let response = observe(self.core.registry(), &name, "infer", "GRPC", call).await.map_err(v2_error)?;
        Ok(Response::new(response))
    }

    type ModelStreamInferStream = tokio_stream::wrappers::ReceiverStream<Result<pb::ModelStreamInferResponse, Status>>;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let core = self.core.clone();
        let mut requests = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            // Requests of one stream run in order; a failed one answers with its error and the stream goes on.
            loop {
                let next = match requests.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                let budget = core.memory().budget();
                let context = CallContext { deadline: None, front_end: "grpc" };
                let name = next.model_name.clone();
                let answer =
                    match observe(core.registry(), &name, "infer", "GRPC", model_infer(&core, next, context, &budget))
                        .await
                    {
                        Ok(r) => pb::ModelStreamInferResponse { error_message: String::new(), infer_response: Some(r) },
                        Err(e) => {
                            pb::ModelStreamInferResponse { error_message: e.wire_message(), infer_response: None }
                        }
                    };
                if tx.send(Ok(answer)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let r = request.into_inner();
        let versions = super::statistics_of(&self.core, &r.name, &r.version).map_err(v2_error)?;
        let duration = |c: Counted| Some(pb::StatisticDuration { count: c.count, ns: c.ns });
        let model_stats = versions
            .iter()
            .map(|servable| {
                let s = &servable.runtime.stats().statistics;
                pb::ModelStatistics {
                    name: servable.name.clone(),
                    version: servable.version.to_string(),
                    last_inference: s.last_inference(),
                    inference_count: s.inference_count(),
                    execution_count: s.execution_count(),
                    inference_stats: Some(pb::InferStatistics {
                        success: duration(s.success.get()),
                        fail: duration(s.fail.get()),
                        queue: duration(s.queue.get()),
                        compute_input: duration(s.compute_input.get()),
                        compute_infer: duration(s.compute_infer.get()),
                        compute_output: duration(s.compute_output.get()),
                        cache_hit: duration(Counted::default()),
                        cache_miss: duration(Counted::default()),
                    }),
                    batch_stats: s
                        .batch_sizes()
                        .into_iter()
                        .map(|(size, run)| pb::InferBatchStatistics {
                            batch_size: size,
                            compute_input: duration(Counted { count: run.count, ns: 0 }),
                            compute_infer: duration(run),
                            compute_output: duration(Counted { count: run.count, ns: 0 }),
                        })
                        .collect(),
                    ..Default::default()
                }
            })
            .collect();
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        // The repository extension moves to the admin listener whole, as over REST.
        self.control()?;
        let r = request.into_inner();
        let models = repository_index(&self.core, r.ready)
            .into_iter()
            .map(|e| pb::repository_index_response::ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state.to_string(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let r = request.into_inner();
        check_load_parameters(&r.parameters)?;
        super::load_model(self.control()?, &r.model_name).await.map_err(v2_error)?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        let r = request.into_inner();
        super::unload_model(self.control()?, &r.model_name).await.map_err(v2_error)?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }
}

/// One row of the repository index.
pub struct IndexEntry {
    /// Model name.
    pub name: String,
    /// Version number as a string.
    pub version: String,
    /// Triton's state names: READY, LOADING, UNLOADING, UNAVAILABLE.
    pub state: &'static str,
    /// Why a version is unavailable (its load error), else empty.
    pub reason: String,
}

/// Every model and version the registry knows, with Triton's state names; `ready_only` keeps READY ones.
pub fn repository_index(core: &ServingCore, ready_only: bool) -> Vec<IndexEntry> {
    let mut out = Vec::new();
    for name in core.registry().model_names() {
        let mut statuses = core.registry().statuses(&name).unwrap_or_default();
        statuses.reverse();
        for s in statuses {
            let state = match s.state {
                ServableState::Available => "READY",
                ServableState::Start | ServableState::Loading => "LOADING",
                ServableState::Unloading => "UNLOADING",
                ServableState::End => "UNAVAILABLE",
            };
            if ready_only && state != "READY" {
                continue;
            }
            let reason = match (&s.error, s.state) {
                (Some(e), _) => e.message.clone(),
                (None, ServableState::End) => "unloaded".to_string(),
                _ => String::new(),
            };
            out.push(IndexEntry { name: name.clone(), version: s.version.to_string(), state, reason });
        }
    }
    out
}
