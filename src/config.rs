//! Every flag, named as `tensorflow_model_server` names it, parsed into one validated
//! [`ServerConfig`]: the flags' defaults are the server's defaults, and the option structs'
//! `Default` impls come from here.

use crate::repository::monitoring::Monitoring;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::api::admin::AdminRoutes;
use crate::api::rest::RestOptions;
use crate::backend::onnx::OnnxEngine;
use crate::core::{BatchingParameters, ExecutorOptions, RunLimits};
use crate::explain::ExplainOptions;
use crate::memory::MemoryLimits;
use crate::repository::ManagerOptions;
use crate::server::listener::{default_max_connections, ConnectionLimits};
use crate::server::tls::{Alpn, TlsPort};
use crate::server::{ServeConfig, TransportLimits, DEFAULT_MAX_MESSAGE_SIZE};
use crate::serving::ServingOptions;
use crate::tensor::proto::DecodeLimits;

/// A TensorFlow-Serving-compatible model server for ONNX and Rust-native models.
///
/// With no model flags it serves the bundled examples (half_plus_two v123, iris v1 and
/// digits_mlp v1) on gRPC port 8500.
#[derive(Parser, Debug, Clone)]
// As tensorflow_model_server (and its Docker entrypoint relies on it): a repeated flag's last value wins.
#[command(name = "tensorserve", version, args_override_self = true)]
pub struct Flags {
    /// Port for gRPC (PredictionService, ModelService, health, reflection).
    #[arg(long, default_value_t = 8500)]
    pub port: u16,

    /// Also serve gRPC on this Unix domain socket path.
    #[arg(long = "grpc_socket_path", value_name = "PATH")]
    pub grpc_socket_path: Option<PathBuf>,

    /// Port for the HTTP/REST API: TF Serving's REST API and KServe V1 (0 = off; 8501 when serving the bundled examples).
    #[arg(long = "rest_api_port")]
    pub rest_api_port: Option<u16>,

    /// Timeout of one REST predict, in milliseconds.
    #[arg(long = "rest_api_timeout_in_ms", default_value_t = 30000)]
    pub rest_api_timeout_in_ms: u64,

    /// Answer CORS preflights and allow any origin on the REST API.
    #[arg(long = "rest_api_enable_cors_support", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub rest_api_enable_cors_support: bool,

    /// Value the built-in explainer puts in place of each feature.
    #[arg(long = "explain_baseline", default_value_t = 0.0)]
    pub explain_baseline: f64,

    /// The built-in explainer groups larger inputs into at most this many patches per instance.
    #[arg(long = "explain_max_features", default_value_t = 64)]
    pub explain_max_features: usize,

    /// Name of the model served from --model_base_path.
    #[arg(long = "model_name", default_value = "default")]
    pub model_name: String,

    /// Directory holding <version>/model.onnx; without it (or a config file) the bundled examples are served.
    #[arg(long = "model_base_path", value_name = "DIR")]
    pub model_base_path: Option<PathBuf>,

    /// TF Serving's text-format ModelServerConfig; overrides --model_name/--model_base_path.
    #[arg(long = "model_config_file", value_name = "FILE")]
    pub model_config_file: Option<PathBuf>,

    /// `explicit`: clients may load and unload the models of --model_repository at run time
    /// (KServe V2's repository extension); `none` (the default): they may not.
    #[arg(long = "model_control_mode", default_value = "none", value_parser = ["none", "explicit"])]
    pub model_control_mode: String,

    /// Directory of model directories (`<name>/<version>/model.onnx`) that model control loads from.
    #[arg(long = "model_repository", value_name = "DIR")]
    pub model_repository: Option<PathBuf>,

    /// Request log files (a model's logging_config) are rotated once they would pass this size.
    #[arg(long = "request_log_max_file_bytes", default_value_t = 64 << 20)]
    pub request_log_max_file_bytes: u64,

    /// TF Serving's text-format MonitoringConfig: `prometheus_config { enable: true path: "..." }`.
    #[arg(long = "monitoring_config_file", value_name = "FILE")]
    pub monitoring_config_file: Option<PathBuf>,

    /// With metrics on, also count requests by model version and signature (tensorserve_requests_total, ...).
    #[arg(long = "monitoring_per_version_labels", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub monitoring_per_version_labels: bool,

    /// Serve the admin surfaces (metrics, /monitoring/status, V2 model control over REST) only on this
    /// address, e.g. 127.0.0.1:9100, instead of the REST port; gRPC then refuses V2 model control.
    #[arg(long = "monitoring_address", value_name = "HOST:PORT")]
    pub monitoring_address: Option<SocketAddr>,

    /// Serve the live status page at /monitoring/status (HTML; JSON with ?format=json).
    #[arg(long = "enable_status_page", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_status_page: bool,

    /// Re-read --model_config_file this often and apply changes (0 = read once).
    #[arg(long = "model_config_file_poll_wait_seconds", default_value_t = 0)]
    pub model_config_file_poll_wait_seconds: u64,

    /// How often base paths are checked for new or removed version directories (0 = only at start).
    #[arg(long = "file_system_poll_wait_seconds", default_value_t = 1)]
    pub file_system_poll_wait_seconds: u64,

    /// Extra attempts after a version fails to load.
    #[arg(long = "max_num_load_retries", default_value_t = 5)]
    pub max_num_load_retries: u32,

    /// Wait between load attempts, in microseconds.
    #[arg(long = "load_retry_interval_micros", default_value_t = 60_000_000)]
    pub load_retry_interval_micros: u64,

    /// Let version labels point at versions that are not loaded yet.
    #[arg(long = "allow_version_labels_for_unavailable_models", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub allow_version_labels_for_unavailable_models: bool,

    /// Replay <version>/assets.extra/tf_serving_warmup_requests before a version serves.
    #[arg(long = "enable_model_warmup", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub enable_model_warmup: bool,

    /// Encode response tensors in tensor_content instead of the typed *_val fields.
    #[arg(long = "enable_serialization_as_tensor_content", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub enable_serialization_as_tensor_content: bool,

    /// Largest gRPC message accepted or sent, in bytes (TF Serving's is INT32_MAX).
    #[arg(long = "max_message_size_bytes", default_value_t = DEFAULT_MAX_MESSAGE_SIZE)]
    pub max_message_size_bytes: usize,

    /// Most memory one request may make the server hold (body, decoded tensors, outputs), in bytes.
    #[arg(long = "request_memory_budget_bytes", default_value_t = crate::memory::DEFAULT_REQUEST_BUDGET)]
    pub request_memory_budget_bytes: usize,

    /// Most pixels (width x height) one encoded image may declare; larger ones are refused from the header.
    #[arg(long = "max_image_pixels", default_value_t = crate::tensor::image::DEFAULT_MAX_IMAGE_PIXELS)]
    pub max_image_pixels: u64,

    /// Most memory all requests in flight may hold together, in bytes (0 = half of the memory the process may use).
    #[arg(long = "max_in_flight_memory_bytes", default_value_t = 0)]
    pub max_in_flight_memory_bytes: usize,

    /// Serve Predict, Classify and Regress only on signatures of that method (TF Serving's flag).
    #[arg(long = "enable_signature_method_name_check", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub enable_signature_method_name_check: bool,

    /// Models whose average run is shorter than this run on the async workers; slower ones on the blocking pool.
    #[arg(long = "inline_run_threshold_micros", default_value_t = 50)]
    pub inline_run_threshold_micros: u64,

    /// Batch requests to each model version as --batching_parameters_file says (TF Serving's flag).
    #[arg(long = "enable_batching", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub enable_batching: bool,

    /// Text-format BatchingParameters for --enable_batching (default: TF Serving's defaults).
    #[arg(long = "batching_parameters_file", value_name = "FILE")]
    pub batching_parameters_file: Option<PathBuf>,

    /// A version directory's batching_params.pbtxt replaces the server's batching parameters for it.
    #[arg(long = "enable_per_model_batching_parameters", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub enable_per_model_batching_parameters: bool,

    /// Runs of one model version on the blocking pool at once (0 = one per core).
    #[arg(long = "max_concurrent_runs", default_value_t = 0)]
    pub max_concurrent_runs: usize,

    /// Requests of one model version waiting for a run; more are refused with RESOURCE_EXHAUSTED (HTTP 429).
    #[arg(long = "max_queued_requests_per_version", default_value_t = 1024)]
    pub max_queued_requests_per_version: usize,

    /// Requests waiting for a run over all models; more are refused with RESOURCE_EXHAUSTED (HTTP 429).
    #[arg(long = "max_queued_requests", default_value_t = 4096)]
    pub max_queued_requests: usize,

    /// Threads serving gRPC and REST connections, each a single-threaded runtime given the next connection when it holds the fewest (0 = one per core).
    #[arg(long = "grpc_runtime_threads", default_value_t = 0)]
    pub grpc_runtime_threads: usize,

    /// Engine for ONNX models: `auto` (onnxruntime when its library is found, else tract; each falls back to
    /// the other), `onnxruntime` or `tract`. A config file's `model_platform` `onnxruntime`/`tract` overrides it.
    #[arg(long = "onnx_engine", default_value = "auto")]
    pub onnx_engine: OnnxEngine,

    /// ONNX Runtime's shared library (else ORT_DYLIB_PATH, a `pip install onnxruntime`, the system path).
    #[arg(long = "onnxruntime_library", value_name = "PATH")]
    pub onnxruntime_library: Option<PathBuf>,

    /// Threads of ONNX Runtime's intra-op pool, shared by all sessions (0 = one per core).
    #[arg(long = "onnxruntime_intra_op_threads", default_value_t = 0)]
    pub onnxruntime_intra_op_threads: usize,

    /// Threads running independent graph nodes at once (0 or 1 = sequential execution).
    #[arg(long = "onnxruntime_inter_op_threads", default_value_t = 0)]
    pub onnxruntime_inter_op_threads: usize,

    /// ONNX Runtime sessions per model version, the most runs of one version at once (0 = one per core).
    #[arg(long = "onnxruntime_sessions", default_value_t = 0)]
    pub onnxruntime_sessions: usize,

    /// ONNX Runtime graph optimizations: disable, basic, extended or all.
    #[arg(long = "onnxruntime_graph_optimization_level", default_value = "all")]
    pub onnxruntime_graph_optimization_level: String,

    /// Keep optimized graphs here, keyed by each model file's content, so reloads skip optimization.
    #[arg(long = "onnxruntime_optimized_model_dir", value_name = "DIR")]
    pub onnxruntime_optimized_model_dir: Option<PathBuf>,

    /// Let ONNX Runtime's pool threads spin briefly while waiting for work (lower latency, busier
    /// cores); default true, false with batching (spinning takes the CPU request handling needs).
    #[arg(long = "onnxruntime_spin", action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub onnxruntime_spin: Option<bool>,

    /// Most connections open at once on each port; more are closed at accept (0 = from the open-file limit, at most 10000).
    #[arg(long = "max_connections", default_value_t = 0)]
    pub max_connections: usize,

    /// A new connection that sends nothing for this long is closed, in seconds (0 = never).
    #[arg(long = "handshake_timeout_seconds", default_value_t = 10)]
    pub handshake_timeout_seconds: u64,

    /// A REST request's headers must arrive within this many seconds; idle keep-alive connections close after it (0 = never).
    #[arg(long = "rest_header_read_timeout_seconds", default_value_t = 30)]
    pub rest_header_read_timeout_seconds: u64,

    /// Streams one gRPC (HTTP/2) connection may have open at once.
    #[arg(long = "grpc_max_concurrent_streams", default_value_t = 256)]
    pub grpc_max_concurrent_streams: u32,

    /// After SIGTERM, seconds to keep serving with health NOT_SERVING, so load balancers stop sending first.
    #[arg(long = "drain_seconds", default_value_t = 5)]
    pub drain_seconds: u64,

    /// Then seconds requests in flight get before the process exits, whatever its peers do.
    #[arg(long = "shutdown_grace_seconds", default_value_t = 10)]
    pub shutdown_grace_seconds: u64,

    /// TF Serving's text-format SSLConfig (PEM text inline): TLS, and with client_verify mTLS, on the gRPC port.
    #[arg(long = "ssl_config_file", value_name = "FILE")]
    pub ssl_config_file: Option<PathBuf>,

    /// The same for the REST port (TF Serving has no REST TLS); may be the --ssl_config_file file.
    #[arg(long = "rest_api_ssl_config_file", value_name = "FILE")]
    pub rest_api_ssl_config_file: Option<PathBuf>,

    /// Address the gRPC and REST ports bind to.
    #[arg(long = "grpc_bind_address", default_value = "0.0.0.0")]
    pub grpc_bind_address: std::net::IpAddr,
}

/// Where the served models come from.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSource {
    /// Neither `--model_base_path` nor `--model_config_file`: the bundled examples.
    Bundled,
    /// `--model_name` served from `--model_base_path`.
    BasePath {
        /// The model's name.
        name: String,
        /// Its directory of versions.
        base: PathBuf,
    },
    /// `--model_config_file`.
    ConfigFile(PathBuf),
}

/// The whole server's configuration, checked once: what every part runs with.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where the models come from.
    pub models: ModelSource,
    /// The engine for ONNX models.
    pub onnx_engine: OnnxEngine,
    /// ONNX Runtime's settings.
    #[cfg(feature = "onnxruntime")]
    pub onnxruntime: crate::backend::onnxruntime::OrtOptions,
    /// How versions run their models: inline threshold, batching, admission limits.
    pub executor: ExecutorOptions,
    /// Loading, polling, retries and warmup.
    pub manager: ManagerOptions,
    /// Listeners, transport limits and request handling.
    pub serve: ServeConfig,
    /// Prometheus metrics (`--monitoring_config_file`), when enabled.
    pub monitoring: Option<Monitoring>,
}

/// Why the flags were refused, worded for the command line.
pub type ConfigError = String;

impl ServerConfig {
    /// Parses `args` (the program name first) and validates them.
    pub fn from_args<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Flags::try_parse_from(args).map_err(|e| e.to_string())?.validate()
    }
}

impl Default for ServerConfig {
    /// What `tensorserve` with no flags runs with.
    fn default() -> Self {
        Flags::parse_from(["tensorserve"]).validate().expect("the flags' defaults are valid")
    }
}

impl Flags {
    /// Checks the flags against each other and builds the configuration every part runs with.
    pub fn validate(self) -> Result<ServerConfig, ConfigError> {
        let f = self;
        let models = match (&f.model_config_file, &f.model_base_path) {
            (Some(file), _) => ModelSource::ConfigFile(file.clone()),
            (None, Some(base)) => ModelSource::BasePath { name: f.model_name.clone(), base: base.clone() },
            (None, None) => ModelSource::Bundled,
        };
        // As in TF Serving's Docker image, the demo serves REST on 8501 beside gRPC on 8500.
        let rest_port = f.rest_api_port.unwrap_or(if models == ModelSource::Bundled { 8501 } else { 0 });
        if rest_port != 0 && rest_port == f.port {
            return Err("--rest_api_port must differ from --port".into());
        }
        let batching = match (&f.batching_parameters_file, f.enable_batching) {
            (Some(file), true) => Some(crate::repository::batching::read(file).map_err(|e| e.message)?),
            (None, true) => Some(BatchingParameters::default()),
            (Some(_), false) => return Err("--batching_parameters_file needs --enable_batching".into()),
            (None, false) => None,
        };
        let model_repository = match (f.model_control_mode.as_str(), &f.model_repository) {
            ("explicit", Some(dir)) if dir.is_dir() => Some(dir.clone()),
            ("explicit", Some(dir)) => return Err(format!("--model_repository {} is not a directory", dir.display())),
            ("explicit", None) => return Err("--model_control_mode=explicit needs --model_repository".into()),
            _ => None,
        };
        let monitoring = match &f.monitoring_config_file {
            Some(file) => crate::repository::monitoring::read(file).map_err(|e| e.message)?,
            None => None,
        }
        .map(|m| Monitoring { per_version_labels: f.monitoring_per_version_labels, ..m });
        if monitoring.is_some() && rest_port == 0 && f.monitoring_address.is_none() {
            return Err(
                "--monitoring_config_file serves metrics on the REST port: set --rest_api_port or --monitoring_address"
                    .into(),
            );
        }
        let admin_routes = AdminRoutes {
            metrics_path: monitoring.as_ref().map(|m| m.path.clone()),
            status_page: f.enable_status_page,
            model_control: true,
        };
        let (rest_admin, admin) = match f.monitoring_address {
            Some(_) => (AdminRoutes::none(), admin_routes),
            None => (admin_routes, AdminRoutes::none()),
        };
        let grpc_tls = match &f.ssl_config_file {
            Some(file) => Some(TlsPort::read(file, Alpn::H2).map_err(|e| e.message)?),
            None => None,
        };
        let rest_tls = match &f.rest_api_ssl_config_file {
            Some(_) if rest_port == 0 => {
                return Err("--rest_api_ssl_config_file is for the REST port: set --rest_api_port".into())
            }
            Some(file) => Some(TlsPort::read(file, Alpn::Http11).map_err(|e| e.message)?),
            None => None,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let or_cores = |n: usize| if n == 0 { cores } else { n };
        let decode_limits = DecodeLimits { max_tensor_bytes: f.max_message_size_bytes };
        let machine = MemoryLimits::for_this_machine();
        let serving = ServingOptions {
            tensor_content_output: f.enable_serialization_as_tensor_content,
            decode_limits,
            signature_method_name_check: f.enable_signature_method_name_check,
            max_image_pixels: f.max_image_pixels,
            memory: MemoryLimits {
                per_request: f.request_memory_budget_bytes,
                in_flight: if f.max_in_flight_memory_bytes == 0 {
                    machine.in_flight
                } else {
                    f.max_in_flight_memory_bytes
                },
            },
        };
        let executor = ExecutorOptions {
            inline_run_threshold: Duration::from_micros(f.inline_run_threshold_micros),
            per_model_batching: f.enable_per_model_batching_parameters,
            limits: RunLimits {
                max_concurrent_runs: or_cores(f.max_concurrent_runs),
                max_queued_per_version: f.max_queued_requests_per_version,
                max_queued: f.max_queued_requests,
                queued: Default::default(),
            },
            batching,
        };
        let manager = ManagerOptions {
            file_system_poll: Duration::from_secs(f.file_system_poll_wait_seconds),
            config_file: f.model_config_file.clone(),
            config_file_poll: Duration::from_secs(f.model_config_file_poll_wait_seconds),
            max_load_retries: f.max_num_load_retries,
            load_retry_interval: Duration::from_micros(f.load_retry_interval_micros),
            allow_labels_for_unavailable: f.allow_version_labels_for_unavailable_models,
            enable_warmup: f.enable_model_warmup,
            // Warmup runs requests as the front ends do, with the same checks.
            serving: serving.clone(),
            drain_timeout: Duration::from_secs(30),
            model_repository,
            request_log_max_file_bytes: f.request_log_max_file_bytes,
        };
        let limits = TransportLimits {
            connections: ConnectionLimits {
                max_connections: if f.max_connections == 0 { default_max_connections() } else { f.max_connections },
                handshake_timeout: Duration::from_secs(f.handshake_timeout_seconds),
            },
            rest_header_read_timeout: Duration::from_secs(f.rest_header_read_timeout_seconds),
            grpc_max_concurrent_streams: f.grpc_max_concurrent_streams,
            drain: Duration::from_secs(f.drain_seconds),
            grace: Duration::from_secs(f.shutdown_grace_seconds),
        };
        let serve = ServeConfig {
            grpc_addr: Some(SocketAddr::new(f.grpc_bind_address, f.port)),
            grpc_socket_path: f.grpc_socket_path.clone(),
            max_message_size: f.max_message_size_bytes,
            manager: None,
            rest_addr: (rest_port != 0).then(|| SocketAddr::new(f.grpc_bind_address, rest_port)),
            rest: RestOptions {
                timeout: Duration::from_millis(f.rest_api_timeout_in_ms),
                cors: f.rest_api_enable_cors_support,
                max_body_bytes: f.max_message_size_bytes,
                explain: ExplainOptions { baseline: f.explain_baseline, max_features: f.explain_max_features },
                admin: rest_admin,
            },
            serving,
            limits,
            runtime_threads: or_cores(f.grpc_runtime_threads),
            grpc_tls,
            rest_tls,
            admin_addr: f.monitoring_address,
            admin,
        };
        #[cfg(feature = "onnxruntime")]
        let onnxruntime = crate::backend::onnxruntime::OrtOptions {
            library: f.onnxruntime_library.clone(),
            intra_op_threads: f.onnxruntime_intra_op_threads,
            inter_op_threads: f.onnxruntime_inter_op_threads,
            sessions: f.onnxruntime_sessions,
            optimization: f.onnxruntime_graph_optimization_level.parse()?,
            optimized_model_dir: f.onnxruntime_optimized_model_dir.clone(),
            // Measured with benches/batching.sh: spinning cost the batched MLP a quarter of its throughput.
            spin: f.onnxruntime_spin.unwrap_or(!(f.enable_batching || f.enable_per_model_batching_parameters)),
        };
        Ok(ServerConfig {
            models,
            onnx_engine: f.onnx_engine,
            #[cfg(feature = "onnxruntime")]
            onnxruntime,
            executor,
            manager,
            serve,
            monitoring,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_flags() {
        let config = ServerConfig::default();
        assert_eq!(config.models, ModelSource::Bundled);
        assert_eq!(config.serve.rest_addr.map(|a| a.port()), Some(8501));
        assert_eq!(config.serve.limits.grpc_max_concurrent_streams, 256);
        assert_eq!(config.executor.limits.max_queued_per_version, 1024);
        assert!(config.executor.batching.is_none());
        assert_eq!(config.manager.load_retry_interval, Duration::from_secs(60));
        assert_eq!(TransportLimits::default().drain, Duration::from_secs(5));
        assert_eq!(RestOptions::default().timeout, Duration::from_secs(30));
    }

    #[test]
    fn a_repeated_flag_takes_its_last_value() {
        let config = ServerConfig::from_args(["t", "--port=8500", "--rest_api_port=8501", "--port=9000"]).unwrap();
        assert_eq!(config.serve.grpc_addr.map(|a| a.port()), Some(9000));
    }

    #[test]
    fn warmup_runs_with_the_front_ends_checks() {
        let config = ServerConfig::from_args(["tensorserve", "--enable_signature_method_name_check"]).unwrap();
        assert!(config.manager.serving.signature_method_name_check);
        assert!(config.serve.serving.signature_method_name_check);
    }

    #[test]
    fn contradictions_are_refused() {
        let err = |args: &[&str]| ServerConfig::from_args(args.iter().copied()).unwrap_err();
        assert!(err(&["t", "--port", "9000", "--rest_api_port", "9000"]).contains("must differ"));
        assert!(err(&["t", "--batching_parameters_file", "/x"]).contains("needs --enable_batching"));
        assert!(err(&["t", "--port", "x"]).contains("invalid value"));
        assert!(err(&["t", "--model_control_mode", "explicit"]).contains("needs --model_repository"));
        assert!(err(&["t", "--model_control_mode", "poll"]).contains("invalid value"));
        assert!(err(&["t", "--model_control_mode", "explicit", "--model_repository", "/nonexistent"])
            .contains("not a directory"));
        let off = ServerConfig::from_args(["t", "--model_repository", "/tmp"]).unwrap();
        assert!(off.manager.model_repository.is_none(), "model control is off unless asked for");
    }
}
