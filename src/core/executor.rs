//! One executor per loaded version: the only place a model runs, and the only place that
//! decides where (inline on the async worker, on the blocking pool, or in a batch).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::admission::{Admission, RunLimits};
use super::batching::{Batcher, BatchingParameters};
use super::job::{Job, Outcome};
use crate::error::{Code, ServingError};
use crate::model::{Model, TensorMap};
use crate::tensor::Tensor;

/// Requests with more input than this always run on the blocking pool, whatever the model's average.
pub const INLINE_MAX_INPUT_BYTES: usize = 256 * 1024;

/// How executors run models; one set for the server, batching overridable per version.
#[derive(Clone, Debug)]
pub struct ExecutorOptions {
    /// Models whose runs average below this run inline on the async worker; slower ones go to the blocking pool.
    pub inline_run_threshold: Duration,
    /// `--enable_batching` with `--batching_parameters_file`: batch every version's requests
    /// (a version's `batching_params.pbtxt` replaces it in that version's options).
    pub batching: Option<BatchingParameters>,
    /// `--enable_per_model_batching_parameters`: a version's `batching_params.pbtxt` replaces `batching`.
    pub per_model_batching: bool,
    /// Admission control of runs on the blocking pool (a version's `limits.pbtxt` narrows it).
    pub limits: RunLimits,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        crate::config::ServerConfig::default().executor
    }
}

/// Run-time statistics of one model version.
#[derive(Default, Debug)]
pub struct RunStats {
    /// Exponential average of one run, in nanoseconds; 0 until measured.
    avg_run_nanos: AtomicU64,
    /// Whether runs currently go inline on the async worker (see [`RunStats::run_inline`]).
    inline: AtomicBool,
    /// What the version has served, for the statistics extension.
    pub statistics: super::VersionStatistics,
}

impl RunStats {
    /// The average run time so far.
    pub fn average(&self) -> Duration {
        Duration::from_nanos(self.avg_run_nanos.load(Ordering::Relaxed))
    }

    /// Whether the next run should go inline, with hysteresis: a model turns inline below
    /// `threshold` and goes back to the blocking pool only above twice that, so a model near
    /// the threshold does not flip (each flip to the pool can start new threads).
    pub fn run_inline(&self, threshold: Duration) -> bool {
        let average = self.average();
        let inline = self.inline.load(Ordering::Relaxed);
        // Unmeasured models start on the blocking pool; only proven-fast ones run inline.
        let next = !average.is_zero() && if inline { average < threshold * 2 } else { average < threshold };
        if next != inline {
            self.inline.store(next, Ordering::Relaxed);
        }
        next
    }

    /// Starts from an estimate (a predecessor version's average) until real runs arrive.
    pub fn seed(&self, estimate: Duration) {
        let nanos = estimate.as_nanos().min(u64::MAX as u128) as u64;
        let _ = self.avg_run_nanos.compare_exchange(0, nanos, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Adds one measured run (weight 1/8: steady, yet adapts within a few calls).
    ///
    /// A sample counts at most twice the average: a run preempted on a busy machine
    /// must not flip a fast model to the blocking pool (each flip spawns threads),
    /// while a model that is really slower still climbs 12 % per run.
    pub fn record(&self, elapsed: Duration) {
        let nanos = elapsed.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.avg_run_nanos.load(Ordering::Relaxed);
        let new = if old == 0 { nanos } else { old - old / 8 + nanos.min(old.saturating_mul(2)) / 8 };
        self.avg_run_nanos.store(new.max(1), Ordering::Relaxed);
    }
}

/// The runtime of one loaded version: its model, statistics, batcher and in-flight count.
pub struct Executor {
    /// The model name, for logs.
    name: String,
    /// The version number, for logs.
    version: i64,
    model: Arc<dyn Model>,
    stats: Arc<RunStats>,
    inline_run_threshold: Duration,
    batcher: Option<Batcher>,
    admission: Admission,
    /// Requests holding this version (resolved and not yet answered).
    in_flight: AtomicUsize,
    /// Set while an unload waits for `in_flight` to reach zero.
    waiting: AtomicBool,
    idle: Mutex<()>,
    idle_changed: Condvar,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("batcher", &self.batcher)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor for `model` running as `options` say (the server's, with the version's own
    /// files applied); with batching parameters, its batch threads start now.
    pub fn new(name: &str, version: i64, model: Arc<dyn Model>, options: &ExecutorOptions) -> Arc<Executor> {
        let stats = Arc::new(RunStats::default());
        let batcher = options.batching.clone().and_then(|params| {
            Batcher::start(name, version, model.clone(), stats.clone(), params)
                .inspect_err(|e| tracing::error!(model = name, version, "runs unbatched: {}", e.message))
                .ok()
        });
        Arc::new(Executor {
            name: name.to_string(),
            version,
            model,
            stats,
            inline_run_threshold: options.inline_run_threshold,
            batcher,
            admission: Admission::new(options.limits.clone()),
            in_flight: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
            idle: Mutex::new(()),
            idle_changed: Condvar::new(),
        })
    }

    /// The model this executor runs.
    pub fn model(&self) -> &Arc<dyn Model> {
        &self.model
    }

    /// Run-time statistics.
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// The batching parameters, when this version batches.
    pub fn batching(&self) -> Option<&BatchingParameters> {
        self.batcher.as_ref().map(Batcher::params)
    }

    /// The admission limits of this version's unbatched runs.
    pub fn limits(&self) -> &RunLimits {
        self.admission.limits()
    }

    /// Runs `job` and returns exactly the outputs it asked for: batched when this version
    /// batches, else inline when the model is proven fast and the request small, else on the
    /// blocking pool. A job whose deadline passes before it runs is answered DEADLINE_EXCEEDED.
    pub async fn run(&self, job: Job) -> Result<(TensorMap, Outcome), ServingError> {
        let rows = rows_of(&job.inputs);
        let start = Instant::now();
        let Some(metrics) = super::metrics::get() else {
            let result = self.run_logged(job).await;
            self.record(&result, rows, start.elapsed());
            return result;
        };
        // The signature is copied only for the per-version series that label by it.
        let signature = if metrics.wants_signature() { job.signature.clone() } else { String::new() };
        let api = job.origin.api;
        metrics.in_flight(&self.name, 1);
        // Counted out even when the caller stops waiting and this future is dropped.
        let _left = scopeguard(|| metrics.in_flight(&self.name, -1));
        let result = self.run_logged(job).await;
        let elapsed = start.elapsed();
        self.record(&result, rows, elapsed);
        metrics.record_run(&super::metrics::RunRecord {
            model: &self.name,
            version: self.version,
            signature: &signature,
            api,
            runtime: self.model.engine().unwrap_or("native"),
            batching: self.batcher.is_some(),
            rows,
            elapsed,
            outcome: result.as_ref().map(|(_, o)| o).map_err(|e| e.code),
        });
        result
    }

    fn record(&self, result: &Result<(TensorMap, Outcome), ServingError>, rows: usize, elapsed: Duration) {
        let (queued, run) = result.as_ref().map_or((Duration::ZERO, Duration::ZERO), |(_, o)| (o.queued, o.run));
        self.stats.statistics.record_request(result.is_ok(), rows, elapsed, queued, run);
    }

    async fn run_logged(&self, job: Job) -> Result<(TensorMap, Outcome), ServingError> {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return self.dispatch(job).await;
        }
        // The request's span: what it asked for; its closing event says how it went.
        let span = tracing::debug_span!(
            "request",
            model = %self.name,
            version = self.version,
            signature = %job.signature,
            api = job.origin.api,
            front_end = job.origin.front_end,
        );
        let start = Instant::now();
        let result = tracing::Instrument::instrument(self.dispatch(job), span.clone()).await;
        span.in_scope(|| log_outcome(start.elapsed(), &result));
        result
    }

    async fn dispatch(&self, job: Job) -> Result<(TensorMap, Outcome), ServingError> {
        match &self.batcher {
            // With no timeout and nothing queued, a fast model's request would run alone anyway:
            // it runs inline, saving the hand-off to a batch thread (18 us of CPU per request).
            Some(batcher) if batcher.runs_alone(&job) && self.runs_inline(&job) => self.run_now(job, true),
            Some(batcher) => match batcher.submit(job).await {
                Ok(answer) => answer,
                Err(job) => self.run_unbatched(job).await,
            },
            None => self.run_unbatched(job).await,
        }
    }

    /// Runs `job` on the calling thread, unbatched (warmup, before the version serves).
    pub fn run_here(&self, job: Job) -> Result<(TensorMap, Outcome), ServingError> {
        self.run_now(job, false)
    }

    async fn run_unbatched(&self, job: Job) -> Result<(TensorMap, Outcome), ServingError> {
        if job.deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(deadline_exceeded());
        }
        if self.runs_inline(&job) {
            return self.run_now(job, true);
        }
        tracing::trace!(model = %self.name, version = self.version, average = ?self.stats.average(), "run on the blocking pool");
        let deadline = job.deadline;
        let slot = self.admission.slot(deadline).await?;
        let (model, stats) = (self.model.clone(), self.stats.clone());
        let run = tokio::task::spawn_blocking(move || {
            // The slot is held until the run ends, even when its caller stopped waiting.
            let _slot = slot;
            run_model(model.as_ref(), &stats, job, false)
        });
        let joined = match deadline {
            // The run goes on to its end, but the caller is answered now.
            Some(d) => tokio::time::timeout_at(d.into(), run).await.map_err(|_| deadline_exceeded())?,
            None => run.await,
        };
        joined.map_err(|e| ServingError::internal(format!("model run failed: {e}")))?
    }

    /// Whether `job` may run on the async worker: the model is proven fast, ready for these
    /// shapes, and the request small (a fast model's average says nothing about a huge request).
    fn runs_inline(&self, job: &Job) -> bool {
        job.inputs.values().map(Tensor::held_bytes).sum::<usize>() <= INLINE_MAX_INPUT_BYTES
            && self.model.is_prepared_for(&job.signature, &job.inputs)
            && self.stats.run_inline(self.inline_run_threshold)
    }

    fn run_now(&self, job: Job, inline: bool) -> Result<(TensorMap, Outcome), ServingError> {
        run_model(self.model.as_ref(), &self.stats, job, inline)
    }

    /// Counts a request holding this version (see [`crate::model::Servable`]).
    pub(crate) fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// Ends what [`Executor::enter`] counted; wakes an unload waiting for the last one.
    pub(crate) fn leave(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 && self.waiting.load(Ordering::SeqCst) {
            let _guard = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            self.idle_changed.notify_all();
        }
    }

    /// Requests holding this version now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no request holds this version, at most `timeout`; false when some still do.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.waiting.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        let mut guard = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self.idle_changed.wait_timeout(guard, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }
}

fn run_model(
    model: &dyn Model,
    stats: &RunStats,
    job: Job,
    inline: bool,
) -> Result<(TensorMap, Outcome), ServingError> {
    let rows = rows_of(&job.inputs);
    let (outputs, run) = run_once(model, stats, &job.signature, job.inputs, &job.outputs);
    // Warmup runs happen before the version serves and are not part of its statistics.
    if job.origin.api != "warmup" {
        stats.statistics.record_execution(rows, run);
    }
    let outcome = Outcome { requests: 1, batch_rows: rows, padded_rows: rows, queued: Duration::ZERO, run, inline };
    Ok((exactly(outputs?, &job.outputs)?, outcome))
}

/// The one call of a model's `run` in the server (panics caught), timed into `stats`.
pub(super) fn run_once(
    model: &dyn Model,
    stats: &RunStats,
    signature: &str,
    inputs: TensorMap,
    outputs: &[String],
) -> (Result<TensorMap, ServingError>, Duration) {
    let start = Instant::now();
    let result = crate::model::run_guarded(model, signature, inputs, outputs);
    let run = start.elapsed();
    stats.record(run);
    (result, run)
}

/// The batch size of a run: the first dimension of its first input (1 for scalars or no input).
pub(super) fn rows_of(inputs: &TensorMap) -> usize {
    inputs.values().next().and_then(|t| t.shape().first().copied()).unwrap_or(1)
}

/// The outputs `wanted`, in that set; a model may return more than it was asked for.
pub(super) fn exactly(mut outputs: TensorMap, wanted: &[String]) -> Result<TensorMap, ServingError> {
    if outputs.len() == wanted.len() && wanted.iter().all(|w| outputs.contains_key(w)) {
        return Ok(outputs);
    }
    let mut out = TensorMap::new();
    for alias in wanted {
        let t = outputs.remove(alias).ok_or_else(|| missing_output(alias))?;
        out.insert(alias.clone(), t);
    }
    Ok(out)
}

/// A wanted output the model did not return.
pub(super) fn missing_output(alias: &str) -> ServingError {
    ServingError::internal(format!("model did not produce output {alias}"))
}

fn deadline_exceeded() -> ServingError {
    ServingError::new(Code::DeadlineExceeded, "Deadline exceeded before the model ran")
}

/// One line per request that reached its executor, inside its span: batch, queue and run times.
fn log_outcome(total: Duration, result: &Result<(TensorMap, Outcome), ServingError>) {
    match result {
        Ok((_, o)) => tracing::debug!(
            outcome = "OK",
            requests = o.requests,
            rows = o.batch_rows,
            padded = o.padded_rows,
            queued_us = o.queued.as_micros() as u64,
            run_us = o.run.as_micros() as u64,
            inline = o.inline,
            total_us = total.as_micros() as u64,
            "ran"
        ),
        Err(e) => {
            tracing::debug!(outcome = e.code.name(), total_us = total.as_micros() as u64, "failed: {}", e.message)
        }
    }
}

/// Runs `f` when dropped.
fn scopeguard<F: FnMut()>(f: F) -> impl Drop {
    struct Guard<F: FnMut()>(F);
    impl<F: FnMut()> Drop for Guard<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    Guard(f)
}
