//! Prometheus metrics under TF Serving's names (`:tensorflow:serving:request_count`, ...), plus
//! what TF Serving lacks (queue time, requests in flight, versions by state, per-version and
//! per-signature series when asked for) under Prometheus' own naming rules (`tensorserve_*`). Recording is off until [`enable`] is called, so a
//! server without `--monitoring_config_file` pays one branch per request.
//!
//! Front ends wrap each inference call in [`observe`] (request count and latency, by API and
//! entrypoint); the executor records what only it knows (model run time, queue time, batches).

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::error::Code;
use crate::model::{ModelRegistry, ServableState};

/// Where TF Serving serves its metrics when the monitoring config names no path.
pub const DEFAULT_PATH: &str = "/monitoring/prometheus/metrics";

/// Every series, registered once.
pub struct Metrics {
    registry: Registry,
    request_count: IntCounterVec,
    request_latency: HistogramVec,
    runtime_latency: HistogramVec,
    example_counts: HistogramVec,
    example_count_total: IntCounterVec,
    warmup_latency: HistogramVec,
    load_attempts: IntCounterVec,
    load_latency: IntCounterVec,
    input_batch_size: HistogramVec,
    processed_batch_size: HistogramVec,
    padding_size: HistogramVec,
    queuing_latency: HistogramVec,
    queue_latency: HistogramVec,
    in_flight: IntGaugeVec,
    versions: IntGaugeVec,
    detailed: Option<Detailed>,
}

/// The opt-in series labelled by version and signature (their values come from loaded models,
/// so their number is bounded by what the server serves).
struct Detailed {
    request_count: IntCounterVec,
    request_latency: HistogramVec,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The metrics, once [`enable`] has run.
pub fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

/// Turns recording on (once per process); `per_version` adds the version/signature series.
pub fn enable(per_version: bool) -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(per_version))
}

/// TF Serving's latency buckets in microseconds: 10 us growing by 1.8x, 33 of them (to ~20 min).
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(10.0, 1.8, 33).expect("valid bucket layout")
}

/// The same layout in seconds, for the series that follow Prometheus' base units.
fn seconds_buckets() -> Vec<f64> {
    exponential_buckets(1e-5, 1.8, 33).expect("valid bucket layout")
}

/// Batch and example sizes: 1, 2, 4, ... 65536.
fn size_buckets() -> Vec<f64> {
    exponential_buckets(1.0, 2.0, 17).expect("valid bucket layout")
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("registered once");
    g
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric");
    registry.register(Box::new(h.clone())).expect("registered once");
    h
}

impl Metrics {
    fn new(per_version: bool) -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).expect("registered once");
        let detailed = per_version.then(|| Detailed {
            request_count: counter(
                &r,
                "tensorserve_requests_total",
                "Requests that reached a model version, by version, signature and status.",
                &["model_name", "version", "signature", "API", "status"],
            ),
            request_latency: histogram(
                &r,
                "tensorserve_request_duration_seconds",
                "Time of requests in their version's executor, by version and signature.",
                &["model_name", "version", "signature", "API"],
                seconds_buckets(),
            ),
        });
        Metrics {
            request_count: counter(
                &r,
                ":tensorflow:serving:request_count",
                "The total number of requests.",
                &["model_name", "status"],
            ),
            request_latency: histogram(
                &r,
                ":tensorflow:serving:request_latency",
                "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
                &["model_name", "API", "entrypoint"],
                latency_buckets(),
            ),
            runtime_latency: histogram(
                &r,
                ":tensorflow:serving:runtime_latency",
                "Distribution of wall time (in microseconds) for Tensorflow runtime.",
                &["model_name", "API", "runtime"],
                latency_buckets(),
            ),
            example_counts: histogram(
                &r,
                ":tensorflow:serving:request_example_counts",
                "The number of tensorflow.Examples per request.",
                &["model"],
                size_buckets(),
            ),
            example_count_total: counter(
                &r,
                ":tensorflow:serving:request_example_count_total",
                "The total number of tensorflow.Examples.",
                &["model"],
            ),
            warmup_latency: histogram(
                &r,
                ":tensorflow:serving:model_warmup_latency",
                "Distribution of wall time (in microseconds) for warming up the model.",
                &["model_path", "status"],
                latency_buckets(),
            ),
            load_attempts: counter(
                &r,
                ":tensorflow:cc:saved_model:load_attempt_count",
                "The number of times a model version was attempted to load.",
                &["model_path", "status"],
            ),
            load_latency: counter(
                &r,
                ":tensorflow:cc:saved_model:load_latency",
                "Latency in microseconds for model versions that were successfully loaded.",
                &["model_path"],
            ),
            input_batch_size: histogram(
                &r,
                ":tensorflow:serving:batching_session:input_batch_size",
                "Tracks the batch size distribution on the inputs by model_name (if available).",
                &["model_name"],
                size_buckets(),
            ),
            processed_batch_size: histogram(
                &r,
                ":tensorflow:serving:batching_session:processed_batch_size",
                "Tracks the batch size distribution on processing by model_name (if available).",
                &["model_name"],
                size_buckets(),
            ),
            padding_size: histogram(
                &r,
                ":tensorflow:serving:batching_session:padding_size",
                "Tracks the padding size distribution on batches by model_name (if available).",
                &["model_name"],
                size_buckets(),
            ),
            queuing_latency: histogram(
                &r,
                ":tensorflow:serving:batching_session:queuing_latency",
                "Tracks the latency for tasks in the batching queue, in microseconds.",
                &["model_name"],
                latency_buckets(),
            ),
            queue_latency: histogram(
                &r,
                "tensorserve_queue_duration_seconds",
                "Time requests waited for a batch or a run slot of their version.",
                &["model_name"],
                seconds_buckets(),
            ),
            in_flight: gauge(
                &r,
                "tensorserve_requests_in_flight",
                "Requests in their version's executor now.",
                &["model_name"],
            ),
            versions: gauge(&r, "tensorserve_model_versions", "Model versions by state.", &["model_name", "state"]),
            detailed,
            registry: r,
        }
    }

    /// One request answered by a front end: its model (empty when the name is unknown), API,
    /// entrypoint (`GRPC` or `REST`), outcome and wall time.
    pub fn record_request(&self, model: &str, api: &str, entrypoint: &str, code: Code, elapsed: Duration) {
        self.request_count.with_label_values(&[model, code.name()]).inc();
        self.request_latency.with_label_values(&[model, api, entrypoint]).observe(micros(elapsed));
    }

    /// Examples in one Classify, Regress or MultiInference request.
    pub fn record_examples(&self, model: &str, n: usize) {
        self.example_counts.with_label_values(&[model]).observe(n as f64);
        self.example_count_total.with_label_values(&[model]).inc_by(n as u64);
    }

    /// True when runs should carry their signature (the per-version series are on).
    pub fn wants_signature(&self) -> bool {
        self.detailed.is_some()
    }

    /// A run in the executor: engine time and queue time, and the request's version and signature.
    pub fn record_run(&self, run: &RunRecord<'_>) {
        let model = run.model;
        if let Ok(outcome) = run.outcome {
            self.runtime_latency.with_label_values(&[model, run.api, run.runtime]).observe(micros(outcome.run));
            self.queue_latency.with_label_values(&[model]).observe(outcome.queued.as_secs_f64());
            if run.batching {
                self.input_batch_size.with_label_values(&[model]).observe(run.rows as f64);
                self.queuing_latency.with_label_values(&[model]).observe(micros(outcome.queued));
            }
        }
        if let Some(d) = &self.detailed {
            let version = run.version.to_string();
            let code = run.outcome.map_or_else(|c| c.name(), |_| Code::Ok.name());
            d.request_count.with_label_values(&[model, &version, run.signature, run.api, code]).inc();
            d.request_latency
                .with_label_values(&[model, &version, run.signature, run.api])
                .observe(run.elapsed.as_secs_f64());
        }
    }

    /// One batched model run: rows of its requests and the padding added to reach an allowed size.
    pub fn record_batch(&self, model: &str, rows: usize, padded: usize) {
        self.processed_batch_size.with_label_values(&[model]).observe(padded as f64);
        self.padding_size.with_label_values(&[model]).observe(padded.saturating_sub(rows) as f64);
    }

    /// A request entered (`+1`) or left (`-1`) a version's executor.
    pub fn in_flight(&self, model: &str, delta: i64) {
        self.in_flight.with_label_values(&[model]).add(delta);
    }

    /// A version load attempt and, when it loaded, its time.
    pub fn record_load(&self, path: &str, ok: bool, elapsed: Duration) {
        self.load_attempts.with_label_values(&[path, if ok { "success" } else { "failure" }]).inc();
        if ok {
            self.load_latency.with_label_values(&[path]).inc_by(elapsed.as_micros().min(u64::MAX as u128) as u64);
        }
    }

    /// A version's warmup and its outcome.
    pub fn record_warmup(&self, path: &str, ok: bool, elapsed: Duration) {
        let status = if ok { "OK" } else { "ERROR" };
        self.warmup_latency.with_label_values(&[path, status]).observe(micros(elapsed));
    }

    /// The exposition text: every series, with model versions by state read from `registry` now.
    pub fn render(&self, registry: &ModelRegistry) -> String {
        self.versions.reset();
        for name in registry.model_names() {
            for status in registry.statuses(&name).unwrap_or_default() {
                self.versions.with_label_values(&[&name, state_name(status.state)]).inc();
            }
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// What the executor knows of one request it ran.
pub struct RunRecord<'a> {
    /// Model name.
    pub model: &'a str,
    /// Version number.
    pub version: i64,
    /// Signature run.
    pub signature: &'a str,
    /// API verb (`predict`, `classify`, ...).
    pub api: &'a str,
    /// The engine (`onnxruntime`, `tract`, `native`).
    pub runtime: &'a str,
    /// Whether the version batches.
    pub batching: bool,
    /// Rows of the request.
    pub rows: usize,
    /// Time in the executor.
    pub elapsed: Duration,
    /// How it ran, or the error's code.
    pub outcome: Result<&'a crate::core::Outcome, Code>,
}

fn state_name(state: ServableState) -> &'static str {
    match state {
        ServableState::Start => "START",
        ServableState::Loading => "LOADING",
        ServableState::Available => "AVAILABLE",
        ServableState::Unloading => "UNLOADING",
        ServableState::End => "END",
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// What [`observe`] needs of a front end's result: the status code it answers with.
pub trait StatusCode {
    /// The code, `Ok` for success.
    fn status_code(&self) -> Code;
}

impl<T> StatusCode for Result<T, crate::error::ServingError> {
    fn status_code(&self) -> Code {
        self.as_ref().map_or_else(|e| e.code, |_| Code::Ok)
    }
}

impl<T> StatusCode for Result<T, tonic::Status> {
    fn status_code(&self) -> Code {
        self.as_ref().map_or_else(|s| Code::from_grpc(s.code()), |_| Code::Ok)
    }
}

/// Runs one front-end call and, when metrics are on, counts it under `model` (only if the
/// registry knows that name: request-supplied names must not grow the series without bound).
pub async fn observe<R: StatusCode>(
    registry: &ModelRegistry,
    model: &str,
    api: &'static str,
    entrypoint: &'static str,
    call: impl Future<Output = R>,
) -> R {
    let Some(metrics) = get() else { return call.await };
    let start = Instant::now();
    let result = call.await;
    let model = if registry.knows(model) { model } else { "" };
    metrics.record_request(model, api, entrypoint, result.status_code(), start.elapsed());
    result
}
