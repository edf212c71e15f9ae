//! What TF Serving's gRPC and REST front ends share: reading a `ModelSpec`, model status, and
//! the tf.Example verbs (Classify, Regress, MultiInference) with TF Serving's result messages.

pub mod inference;
pub mod request_log;

use crate::error::ServingError;
use crate::model::VersionChoice;
use crate::proto::tensorflow::serving as pb;
use crate::serving::ServingCore;

/// The version a `ModelSpec` asks for.
pub fn version_choice(spec: &pb::ModelSpec) -> VersionChoice {
    match &spec.version_choice {
        Some(pb::model_spec::VersionChoice::Version(v)) => VersionChoice::Specific(*v),
        Some(pb::model_spec::VersionChoice::VersionLabel(l)) => VersionChoice::Label(l.clone()),
        None => VersionChoice::Latest,
    }
}

/// A `ModelSpec` that must be there.
pub fn require_spec(spec: Option<pb::ModelSpec>) -> Result<pb::ModelSpec, ServingError> {
    spec.ok_or_else(|| ServingError::invalid_argument("Missing ModelSpec"))
}

/// The `GetModelStatus` answer, shared with the REST front end.
pub fn model_status(
    core: &ServingCore,
    spec: Option<pb::ModelSpec>,
) -> Result<pb::GetModelStatusResponse, ServingError> {
    let spec = require_spec(spec)?;
    if spec.name.is_empty() {
        return Err(ServingError::invalid_argument("ModelSpec has no name specified."));
    }
    let statuses = core.registry().statuses(&spec.name).unwrap_or_default();
    if statuses.is_empty() {
        return Err(ServingError::not_found(format!("Could not find any versions of model {}", spec.name)));
    }
    let wanted = match spec.version_choice {
        Some(pb::model_spec::VersionChoice::Version(v)) => Some(v),
        _ => None,
    };
    let selected: Vec<_> = statuses.into_iter().filter(|s| wanted.is_none_or(|v| v == s.version)).collect();
    if let (Some(v), true) = (wanted, selected.is_empty()) {
        return Err(ServingError::not_found(format!("Could not find version {v} of model {}", spec.name)));
    }
    Ok(pb::GetModelStatusResponse {
        model_version_status: selected
            .into_iter()
            .map(|s| pb::ModelVersionStatus {
                version: s.version,
                state: s.state as i32,
                status: Some(pb::StatusProto {
                    error_code: s.error.as_ref().map(|e| e.code as i32).unwrap_or(0),
                    error_message: s.error.map(|e| e.message).unwrap_or_default(),
                }),
            })
            .collect(),
    })
}
