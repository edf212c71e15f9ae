//! `tensorserve`: flags named like `tensorflow_model_server`'s -> config -> serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{ArgAction, Parser};
use std::time::Duration;

use tensorserve::backend::onnx::{OnnxEngine, OnnxLoader};
use tensorserve::core::{BatchingParameters, ExecutorOptions, RunLimits};
use tensorserve::model::ModelRegistry;
use tensorserve::repository::{config, ManagerOptions, ModelManager, Platforms};
use tensorserve::server::{self, ServeConfig, DEFAULT_MAX_MESSAGE_SIZE};
use tensorserve::serving::ServingOptions;
use tensorserve::tensor::proto::DecodeLimits;

/// A TensorFlow-Serving-compatible model server for ONNX and Rust-native models.
///
/// With no model flags it serves the bundled examples (half_plus_two v123, iris v1 and
/// digits_mlp v1) on gRPC port 8500.
#[derive(Parser, Debug)]
#[command(name = "tensorserve", version)]
struct Flags {
    /// Port for gRPC (PredictionService, ModelService, health, reflection).
    #[arg(long, default_value_t = 8500)]
    port: u16,

    /// Also serve gRPC on this Unix domain socket path.
    #[arg(long = "grpc_socket_path", value_name = "PATH")]
    grpc_socket_path: Option<PathBuf>,

    /// Port for the HTTP/REST API: TF Serving's REST API and KServe V1 (0 = off; 8501 when serving the bundled examples).
    #[arg(long = "rest_api_port")]
    rest_api_port: Option<u16>,

    /// Timeout of one REST predict, in milliseconds.
    #[arg(long = "rest_api_timeout_in_ms", default_value_t = 30000)]
    rest_api_timeout_in_ms: u64,

    /// Answer CORS preflights and allow any origin on the REST API.
    #[arg(long = "rest_api_enable_cors_support", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    rest_api_enable_cors_support: bool,

    /// Value the built-in explainer puts in place of each feature.
    #[arg(long = "explain_baseline", default_value_t = 0.0)]
    explain_baseline: f64,

    /// The built-in explainer groups larger inputs into at most this many patches per instance.
    #[arg(long = "explain_max_features", default_value_t = 64)]
    explain_max_features: usize,

    /// Name of the model served from --model_base_path.
    #[arg(long = "model_name", default_value = "default")]
    model_name: String,

    /// Directory holding <version>/model.onnx; without it (or a config file) the bundled examples are served.
    #[arg(long = "model_base_path", value_name = "DIR")]
    model_base_path: Option<PathBuf>,

    /// TF Serving's text-format ModelServerConfig; overrides --model_name/--model_base_path.
    #[arg(long = "model_config_file", value_name = "FILE")]
    model_config_file: Option<PathBuf>,

    /// Re-read --model_config_file this often and apply changes (0 = read once).
    #[arg(long = "model_config_file_poll_wait_seconds", default_value_t = 0)]
    model_config_file_poll_wait_seconds: u64,

    /// How often base paths are checked for new or removed version directories (0 = only at start).
    #[arg(long = "file_system_poll_wait_seconds", default_value_t = 1)]
    file_system_poll_wait_seconds: u64,

    /// Extra attempts after a version fails to load.
    #[arg(long = "max_num_load_retries", default_value_t = 5)]
    max_num_load_retries: u32,

    /// Wait between load attempts, in microseconds.
    #[arg(long = "load_retry_interval_micros", default_value_t = 60_000_000)]
    load_retry_interval_micros: u64,

    /// Let version labels point at versions that are not loaded yet.
    #[arg(long = "allow_version_labels_for_unavailable_models", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    allow_version_labels_for_unavailable_models: bool,

    /// Replay <version>/assets.extra/tf_serving_warmup_requests before a version serves.
    #[arg(long = "enable_model_warmup", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    enable_model_warmup: bool,

    /// Encode response tensors in tensor_content instead of the typed *_val fields.
    #[arg(long = "enable_serialization_as_tensor_content", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    enable_serialization_as_tensor_content: bool,

    /// Largest gRPC message accepted or sent, in bytes (TF Serving's is INT32_MAX).
    #[arg(long = "max_message_size_bytes", default_value_t = DEFAULT_MAX_MESSAGE_SIZE)]
    max_message_size_bytes: usize,

    /// Most memory one request may make the server hold (body, decoded tensors, outputs), in bytes.
    #[arg(long = "request_memory_budget_bytes", default_value_t = tensorserve::memory::DEFAULT_REQUEST_BUDGET)]
    request_memory_budget_bytes: usize,

    /// Most memory all requests in flight may hold together, in bytes (0 = half of the memory the process may use).
    #[arg(long = "max_in_flight_memory_bytes", default_value_t = 0)]
    max_in_flight_memory_bytes: usize,

    /// Serve Predict, Classify and Regress only on signatures of that method (TF Serving's flag).
    #[arg(long = "enable_signature_method_name_check", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    enable_signature_method_name_check: bool,

    /// Models whose average run is shorter than this run on the async workers; slower ones on the blocking pool.
    #[arg(long = "inline_run_threshold_micros", default_value_t = 50)]
    inline_run_threshold_micros: u64,

    /// Batch requests to each model version as --batching_parameters_file says (TF Serving's flag).
    #[arg(long = "enable_batching", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    enable_batching: bool,

    /// Text-format BatchingParameters for --enable_batching (default: TF Serving's defaults).
    #[arg(long = "batching_parameters_file", value_name = "FILE")]
    batching_parameters_file: Option<PathBuf>,

    /// A version directory's batching_params.pbtxt replaces the server's batching parameters for it.
    #[arg(long = "enable_per_model_batching_parameters", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    enable_per_model_batching_parameters: bool,

    /// Runs of one model version on the blocking pool at once (0 = one per core).
    #[arg(long = "max_concurrent_runs", default_value_t = 0)]
    max_concurrent_runs: usize,

    /// Requests of one model version waiting for a run; more are refused with RESOURCE_EXHAUSTED (HTTP 429).
    #[arg(long = "max_queued_requests_per_version", default_value_t = 1024)]
    max_queued_requests_per_version: usize,

    /// Requests waiting for a run over all models; more are refused with RESOURCE_EXHAUSTED (HTTP 429).
    #[arg(long = "max_queued_requests", default_value_t = 4096)]
    max_queued_requests: usize,

    /// gRPC threads, each a single-threaded runtime with its own SO_REUSEPORT listener; 0 = one shared work-stealing runtime.
    #[arg(long = "grpc_runtime_threads", default_value_t = 0)]
    grpc_runtime_threads: usize,

    /// Engine for ONNX models: `auto` (onnxruntime when its library is found, else tract; each falls back to
    /// the other), `onnxruntime` or `tract`. A config file's `model_platform` `onnxruntime`/`tract` overrides it.
    #[arg(long = "onnx_engine", default_value = "auto")]
    onnx_engine: OnnxEngine,

    /// ONNX Runtime's shared library (else ORT_DYLIB_PATH, a `pip install onnxruntime`, the system path).
    #[arg(long = "onnxruntime_library", value_name = "PATH")]
    onnxruntime_library: Option<PathBuf>,

    /// Threads of ONNX Runtime's intra-op pool, shared by all sessions (0 = one per core).
    #[arg(long = "onnxruntime_intra_op_threads", default_value_t = 0)]
    onnxruntime_intra_op_threads: usize,

    /// Threads running independent graph nodes at once (0 or 1 = sequential execution).
    #[arg(long = "onnxruntime_inter_op_threads", default_value_t = 0)]
    onnxruntime_inter_op_threads: usize,

    /// ONNX Runtime sessions per model version, the most runs of one version at once (0 = one per core).
    #[arg(long = "onnxruntime_sessions", default_value_t = 0)]
    onnxruntime_sessions: usize,

    /// ONNX Runtime graph optimizations: disable, basic, extended or all.
    #[arg(long = "onnxruntime_graph_optimization_level", default_value = "all")]
    onnxruntime_graph_optimization_level: String,

    /// Keep optimized graphs here, keyed by each model file's content, so reloads skip optimization.
    #[arg(long = "onnxruntime_optimized_model_dir", value_name = "DIR")]
    onnxruntime_optimized_model_dir: Option<PathBuf>,

    /// Let ONNX Runtime's pool threads spin briefly while waiting for work (lower latency, busier
    /// cores); default true, false with batching (spinning takes the CPU request handling needs).
    #[arg(long = "onnxruntime_spin", action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    onnxruntime_spin: Option<bool>,

    /// Most connections open at once on each port; more are closed at accept (0 = from the open-file limit, at most 10000).
    #[arg(long = "max_connections", default_value_t = 0)]
    max_connections: usize,

    /// A new connection that sends nothing for this long is closed, in seconds (0 = never).
    #[arg(long = "handshake_timeout_seconds", default_value_t = 10)]
    handshake_timeout_seconds: u64,

    /// A REST request's headers must arrive within this many seconds; idle keep-alive connections close after it (0 = never).
    #[arg(long = "rest_header_read_timeout_seconds", default_value_t = 30)]
    rest_header_read_timeout_seconds: u64,

    /// Streams one gRPC (HTTP/2) connection may have open at once.
    #[arg(long = "grpc_max_concurrent_streams", default_value_t = 256)]
    grpc_max_concurrent_streams: u32,

    /// After SIGTERM, seconds to keep serving with health NOT_SERVING, so load balancers stop sending first.
    #[arg(long = "drain_seconds", default_value_t = 5)]
    drain_seconds: u64,

    /// Then seconds requests in flight get before the process exits, whatever its peers do.
    #[arg(long = "shutdown_grace_seconds", default_value_t = 10)]
    shutdown_grace_seconds: u64,

    /// Address the gRPC and REST ports bind to.
    #[arg(long = "grpc_bind_address", default_value = "0.0.0.0")]
    grpc_bind_address: std::net::IpAddr,
}

// mimalloc: the request path allocates many small buffers; it costs less CPU per request than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Display, not Debug: config errors carry file:line:column and read best unquoted.
            eprintln!("tensorserve: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), server::BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Panics inside a model are caught and answered as errors; log each as one line through tracing
    // (with the backtrace only when RUST_BACKTRACE asks for it).
    std::panic::set_hook(Box::new(|info| {
        let message = info.payload_as_str().unwrap_or("(no message)");
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::capture();
        match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => tracing::error!(%location, "panic: {message}\n{backtrace}"),
            _ => tracing::error!(%location, "panic: {}", message.lines().next().unwrap_or("")),
        }
    }));
    let flags = Flags::parse();
    // As in TF Serving's Docker image, the demo serves REST on 8501 beside gRPC on 8500.
    let bundled = flags.model_base_path.is_none() && flags.model_config_file.is_none();
    let rest_port = flags.rest_api_port.unwrap_or(if bundled { 8501 } else { 0 });
    if rest_port != 0 && rest_port == flags.port {
        return Err("--rest_api_port must differ from --port".into());
    }

    start_onnxruntime(&flags)?;
    let platforms = Platforms::with_onnx_engine(flags.onnx_engine);
    let registry = Arc::new(ModelRegistry::with_executor_options(executor_options(&flags)?));
    let decode_limits = DecodeLimits { max_tensor_bytes: flags.max_message_size_bytes };
    let (models, config_text) = if let Some(file) = &flags.model_config_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read model config file {}: {e}", file.display()))?;
        let parsed = config::parse_text(&text, &file.display().to_string()).map_err(|e| e.message)?;
        (config::validate(&parsed, &platforms.names()).map_err(|e| e.message)?, Some(text))
    } else if let Some(base) = &flags.model_base_path {
        (config::single_model(&flags.model_name, base).map_err(|e| e.message)?, None)
    } else {
        tensorserve::examples::register_bundled_with(&registry, &OnnxLoader::new(flags.onnx_engine))?;
        tracing::info!(
            "no --model_base_path or --model_config_file: serving the bundled examples {:?}",
            registry.model_names()
        );
        (Vec::new(), None)
    };
    let manager_options = ManagerOptions {
        file_system_poll: Duration::from_secs(flags.file_system_poll_wait_seconds),
        config_file: flags.model_config_file.clone(),
        config_file_poll: Duration::from_secs(flags.model_config_file_poll_wait_seconds),
        max_load_retries: flags.max_num_load_retries,
        load_retry_interval: Duration::from_micros(flags.load_retry_interval_micros),
        allow_labels_for_unavailable: flags.allow_version_labels_for_unavailable_models,
        enable_warmup: flags.enable_model_warmup,
        decode_limits,
        ..ManagerOptions::default()
    };
    let manager = ModelManager::start(registry.clone(), platforms, manager_options, models, config_text)?;
    tracing::info!("serving models {:?}", registry.model_names());

    let memory = memory_limits(&flags);
    let fds = server::listener::raise_fd_limit();
    let connections = server::listener::ConnectionLimits {
        max_connections: if flags.max_connections == 0 {
            server::listener::default_max_connections()
        } else {
            flags.max_connections
        },
        handshake_timeout: Duration::from_secs(flags.handshake_timeout_seconds),
    };
    tracing::info!(
        max_connections = connections.max_connections,
        open_files = fds,
        "connection limit per port (--max_connections)"
    );
    let limits = server::TransportLimits {
        connections,
        rest_header_read_timeout: Duration::from_secs(flags.rest_header_read_timeout_seconds),
        grpc_max_concurrent_streams: flags.grpc_max_concurrent_streams,
        drain: Duration::from_secs(flags.drain_seconds),
        grace: Duration::from_secs(flags.shutdown_grace_seconds),
    };
    let config = ServeConfig {
        grpc_addr: Some(SocketAddr::new(flags.grpc_bind_address, flags.port)),
        grpc_socket_path: flags.grpc_socket_path,
        max_message_size: flags.max_message_size_bytes,
        manager: Some(manager),
        rest_addr: (rest_port != 0).then(|| SocketAddr::new(flags.grpc_bind_address, rest_port)),
        rest: tensorserve::api::rest::RestOptions {
            timeout: std::time::Duration::from_millis(flags.rest_api_timeout_in_ms),
            cors: flags.rest_api_enable_cors_support,
            max_body_bytes: flags.max_message_size_bytes,
            explain: tensorserve::explain::ExplainOptions {
                baseline: flags.explain_baseline,
                max_features: flags.explain_max_features,
            },
        },
        serving: ServingOptions {
            tensor_content_output: flags.enable_serialization_as_tensor_content,
            decode_limits,
            signature_method_name_check: flags.enable_signature_method_name_check,
            memory,
        },
        limits,
    };
    if flags.grpc_runtime_threads > 0 {
        server::serve_per_core(registry, config, flags.grpc_runtime_threads, server::shutdown_signal())?;
    } else {
        let runtime = server::runtime()?;
        runtime.block_on(server::serve(registry, config, server::shutdown_signal()))?;
        // A model run still going on the blocking pool must not hold the exit past the grace period.
        runtime.shutdown_timeout(Duration::from_millis(200));
    }
    tracing::info!("stopped");
    Ok(())
}

/// How versions run their models: the inline threshold and TF Serving's batching flags.
fn executor_options(flags: &Flags) -> Result<ExecutorOptions, server::BoxError> {
    let batching = match (&flags.batching_parameters_file, flags.enable_batching) {
        (Some(file), true) => Some(tensorserve::repository::batching::read(file).map_err(|e| e.message)?),
        (None, true) => Some(BatchingParameters::default()),
        (Some(_), false) => return Err("--batching_parameters_file needs --enable_batching".into()),
        (None, false) => None,
    };
    if let Some(p) = &batching {
        tracing::info!("batching every model: {p:?}");
    }
    let defaults = RunLimits::default();
    let limits = RunLimits {
        max_concurrent_runs: if flags.max_concurrent_runs == 0 {
            defaults.max_concurrent_runs
        } else {
            flags.max_concurrent_runs
        },
        max_queued_per_version: flags.max_queued_requests_per_version,
        max_queued: flags.max_queued_requests,
        queued: defaults.queued,
    };
    Ok(ExecutorOptions {
        inline_run_threshold: Duration::from_micros(flags.inline_run_threshold_micros),
        batching,
        per_model_batching: flags.enable_per_model_batching_parameters,
        limits,
    })
}

/// The memory limits the flags ask for, the in-flight one from this machine when not given.
fn memory_limits(flags: &Flags) -> tensorserve::memory::MemoryLimits {
    let machine = tensorserve::memory::MemoryLimits::for_this_machine();
    let in_flight =
        if flags.max_in_flight_memory_bytes == 0 { machine.in_flight } else { flags.max_in_flight_memory_bytes };
    let limits = tensorserve::memory::MemoryLimits { per_request: flags.request_memory_budget_bytes, in_flight };
    tracing::info!(
        per_request = limits.per_request,
        in_flight = limits.in_flight,
        "memory limits for requests (--request_memory_budget_bytes, --max_in_flight_memory_bytes)"
    );
    limits
}

/// Loads ONNX Runtime now, so the log says at start which library serves (or why none does).
#[cfg(feature = "onnxruntime")]
fn start_onnxruntime(flags: &Flags) -> Result<(), server::BoxError> {
    use tensorserve::backend::onnxruntime::{configure, runtime, OrtOptions};
    configure(OrtOptions {
        library: flags.onnxruntime_library.clone(),
        intra_op_threads: flags.onnxruntime_intra_op_threads,
        inter_op_threads: flags.onnxruntime_inter_op_threads,
        sessions: flags.onnxruntime_sessions,
        optimization: flags.onnxruntime_graph_optimization_level.parse()?,
        optimized_model_dir: flags.onnxruntime_optimized_model_dir.clone(),
        // Measured with benches/batching.sh: spinning cost the batched MLP a quarter of its throughput.
        spin: flags.onnxruntime_spin.unwrap_or(!(flags.enable_batching || flags.enable_per_model_batching_parameters)),
    });
    // With tract chosen, the library loads only if a config entry asks for onnxruntime.
    if flags.onnx_engine != OnnxEngine::Tract {
        if let Err(why) = runtime() {
            if flags.onnx_engine == OnnxEngine::OnnxRuntime {
                tracing::error!("--onnx_engine onnxruntime, but {why}");
            } else {
                tracing::warn!("{why}; ONNX models run on tract");
            }
        }
    }
    Ok(())
}

/// This build has no ONNX Runtime engine; its flags are accepted so one command line fits every build.
#[cfg(not(feature = "onnxruntime"))]
fn start_onnxruntime(flags: &Flags) -> Result<(), server::BoxError> {
    if flags.onnx_engine == OnnxEngine::OnnxRuntime {
        tracing::error!(
            "--onnx_engine onnxruntime, but this build has no onnxruntime engine (cargo feature `onnxruntime`)"
        );
    }
    Ok(())
}
