//! `tensorserve`: flags named like `tensorflow_model_server`'s -> config -> serve.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use tensorserve::backend::onnx::{OnnxEngine, OnnxLoader};
use tensorserve::config::{Flags, ModelSource, ServerConfig};
use tensorserve::model::ModelRegistry;
use tensorserve::repository::{self, ModelManager, Platforms};
use tensorserve::server::{self, ServeConfig};

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
    let config = Flags::parse().validate()?;
    if let Some(p) = &config.executor.batching {
        tracing::info!("batching every model: {p:?}");
    }
    start_onnxruntime(&config)?;
    if let Some(m) = &config.monitoring {
        // Before any model loads, so load attempts and warmups are counted.
        tensorserve::core::metrics::enable(m.per_version_labels);
        tracing::info!(path = %m.path, per_version_labels = m.per_version_labels, "Prometheus metrics on the REST port");
    }
    let platforms = Platforms::with_onnx_engine(config.onnx_engine);
    let registry = Arc::new(ModelRegistry::with_executor_options(config.executor.clone()));
    let (models, config_text) = match &config.models {
        ModelSource::ConfigFile(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read model config file {}: {e}", file.display()))?;
            let parsed = repository::config::parse_text(&text, &file.display().to_string()).map_err(|e| e.message)?;
            (repository::config::validate(&parsed, &platforms.names()).map_err(|e| e.message)?, Some(text))
        }
        ModelSource::BasePath { name, base } => {
            (repository::config::single_model(name, base).map_err(|e| e.message)?, None)
        }
        ModelSource::Bundled => {
            tensorserve::examples::register_bundled_limited(
                &registry,
                &OnnxLoader::new(config.onnx_engine),
                config.serve.serving.max_image_pixels,
            )?;
            tracing::info!(
                "no --model_base_path or --model_config_file: serving the bundled examples {:?}",
                registry.model_names()
            );
            (Vec::new(), None)
        }
    };
    let manager = ModelManager::start(registry.clone(), platforms, config.manager.clone(), models, config_text)?;
    tracing::info!("serving models {:?}", registry.model_names());

    let memory = config.serve.serving.memory;
    tracing::info!(
        per_request = memory.per_request,
        in_flight = memory.in_flight,
        "memory limits for requests (--request_memory_budget_bytes, --max_in_flight_memory_bytes)"
    );
    let fds = server::listener::raise_fd_limit();
    tracing::info!(
        max_connections = config.serve.limits.connections.max_connections,
        open_files = fds,
        "connection limit per port (--max_connections)"
    );
    let serve = ServeConfig { manager: Some(manager), ..config.serve };
    // The serving threads (one per core unless --grpc_runtime_threads says) do the work; the
    // main thread only accepts and runs the shutdown schedule.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(server::serve(registry, serve, server::shutdown_signal()))?;
    // A model run still going on the blocking pool must not hold the exit past the grace period.
    runtime.shutdown_timeout(Duration::from_millis(200));
    tracing::info!("stopped");
    Ok(())
}

/// Loads ONNX Runtime now, so the log says at start which library serves (or why none does).
#[cfg(feature = "onnxruntime")]
fn start_onnxruntime(config: &ServerConfig) -> Result<(), server::BoxError> {
    use tensorserve::backend::onnxruntime::{configure, runtime};
    configure(config.onnxruntime.clone());
    // With tract chosen, the library loads only if a config entry asks for onnxruntime.
    if config.onnx_engine != OnnxEngine::Tract {
        if let Err(why) = runtime() {
            if config.onnx_engine == OnnxEngine::OnnxRuntime {
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
fn start_onnxruntime(config: &ServerConfig) -> Result<(), server::BoxError> {
    if config.onnx_engine == OnnxEngine::OnnxRuntime {
        tracing::error!(
            "--onnx_engine onnxruntime, but this build has no onnxruntime engine (cargo feature `onnxruntime`)"
        );
    }
    Ok(())
}
