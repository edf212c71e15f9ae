//! The unit of work: an owned job the executor can queue, batch and run anywhere.

use std::time::{Duration, Instant};

use crate::model::TensorMap;

/// One model run asked for by one request, owning everything it needs.
#[derive(Debug)]
pub struct Job {
    /// The resolved signature name.
    pub signature: String,
    /// Inputs by alias, complete and type-checked against the signature.
    pub inputs: TensorMap,
    /// Output aliases wanted; the answer holds exactly these.
    pub outputs: Vec<String>,
    /// When the request's caller stops waiting; a job still queued then is never run.
    pub deadline: Option<Instant>,
    /// Who asked, for the job's log line.
    pub origin: Origin,
}

/// Who asked for a job: the API verb and the front end it came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// `predict`, `classify`, `regress`, `multi_inference`, `explain` or `warmup`.
    pub api: &'static str,
    /// `grpc`, `rest`, or `internal` (warmup, code calling the core directly).
    pub front_end: &'static str,
}

impl Default for Origin {
    fn default() -> Self {
        Origin { api: "predict", front_end: "internal" }
    }
}

/// How a job ran: in what batch, after how long in the queue, for how long.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Requests in the run (1 when unbatched).
    pub requests: usize,
    /// Rows of all those requests.
    pub batch_rows: usize,
    /// Rows the model ran on (padding included).
    pub padded_rows: usize,
    /// Time the oldest of those requests waited in the queue.
    pub queued: Duration,
    /// Time the model ran.
    pub run: Duration,
    /// True when the run happened on the async worker itself.
    pub inline: bool,
}
