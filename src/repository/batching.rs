//! TF Serving's batching files: `--batching_parameters_file` and a version's
//! `batching_params.pbtxt` (text-format `BatchingParameters`), checked into the core's
//! [`BatchingParameters`].

use std::path::Path;
use std::time::Duration;

use crate::core::BatchingParameters;
use crate::error::ServingError;
use crate::proto::tensorflow::serving as pb;

/// The per-version batching file read with `--enable_per_model_batching_parameters`.
pub const BATCHING_PARAMS_FILE: &str = "batching_params.pbtxt";

/// Reads a text-format `BatchingParameters` file.
pub fn read(path: &Path) -> Result<BatchingParameters, ServingError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ServingError::invalid_argument(format!("cannot read batching parameters {}: {e}", path.display()))
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses and checks text-format `BatchingParameters`.
pub fn parse(text: &str, origin: &str) -> Result<BatchingParameters, ServingError> {
    let p: pb::BatchingParameters =
        crate::proto::parse_text_format("tensorflow.serving.BatchingParameters", text, origin)?;
    from_proto(&p).map_err(|e| ServingError::invalid_argument(format!("{origin}: {}", e.message)))
}

/// Applies TF Serving's defaults and checks, as its batching session does at load.
pub fn from_proto(p: &pb::BatchingParameters) -> Result<BatchingParameters, ServingError> {
    let bad = |m: String| Err(ServingError::invalid_argument(m));
    let d = BatchingParameters::default();
    let positive = |v: Option<i64>, name: &str, default: usize| -> Result<usize, ServingError> {
        match v {
            None => Ok(default),
            Some(v) if v > 0 => usize::try_from(v).map_err(|_| ServingError::invalid_argument("too large")),
            Some(v) => Err(ServingError::invalid_argument(format!("{name} must be positive; was {v}"))),
        }
    };
    let max_batch_size = positive(p.max_batch_size, "max_batch_size", d.max_batch_size)?;
    let num_batch_threads = positive(p.num_batch_threads, "num_batch_threads", d.num_batch_threads)?;
    let max_enqueued_batches = positive(p.max_enqueued_batches, "max_enqueued_batches", d.max_enqueued_batches)?;
    let timeout = p.batch_timeout_micros.unwrap_or(0);
    if timeout < 0 {
        return bad(format!("batch_timeout_micros must be non-negative; was {timeout}"));
    }
    let enable_large_batch_splitting = p.enable_large_batch_splitting.unwrap_or(false);
    let max_execution_batch_size = if enable_large_batch_splitting {
        positive(p.max_execution_batch_size, "max_execution_batch_size", max_batch_size)?
    } else {
        max_batch_size
    };
    if max_execution_batch_size > max_batch_size {
        return bad(format!(
            "max_execution_batch_size ({max_execution_batch_size}) must not exceed max_batch_size ({max_batch_size})"
        ));
    }
    if p.pad_variable_length_inputs {
        return bad("pad_variable_length_inputs is not supported: requests batch only when their dimensions past the first agree".into());
    }
    let mut allowed = Vec::with_capacity(p.allowed_batch_sizes.len());
    for &size in &p.allowed_batch_sizes {
        if size <= 0 || allowed.last().is_some_and(|&last| size as usize <= last) {
            return bad("allowed_batch_sizes entries must be positive and monotonically increasing".into());
        }
        allowed.push(size as usize);
    }
    if let Some(&last) = allowed.last() {
        if last != max_execution_batch_size {
            let what = if enable_large_batch_splitting { "max_execution_batch_size" } else { "max_batch_size" };
            return bad(format!(
                "final entry in allowed_batch_sizes must equal {what} ({max_execution_batch_size}); was {last}"
            ));
        }
    }
    Ok(BatchingParameters {
        max_batch_size,
        batch_timeout: Duration::from_micros(timeout as u64),
        max_enqueued_batches,
        num_batch_threads,
        allowed_batch_sizes: allowed,
        enable_large_batch_splitting,
        max_execution_batch_size,
    })
}
