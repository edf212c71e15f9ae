//! `tensorserve`: flags named like `tensorflow_model_server`'s -> config -> serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{ArgAction, Parser};
use tensorserve::model::ModelRegistry;
use tensorserve::server::{self, ServeConfig, DEFAULT_MAX_MESSAGE_SIZE};
use tensorserve::serving::ServingOptions;
use tensorserve::tensor::proto::DecodeLimits;

/// A TensorFlow-Serving-compatible model server for ONNX and Rust-native models.
///
/// With no model flags it serves the bundled examples (half_plus_two v123 and
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

    /// Port for the HTTP/REST API (0 = off). Accepted for compatibility; REST is not served yet.
    #[arg(long = "rest_api_port", default_value_t = 0)]
    rest_api_port: u16,

    /// Name of the model served from --model_base_path.
    #[arg(long = "model_name", default_value = "default")]
    model_name: String,

    /// Directory holding <version>/model.onnx; without it the bundled examples are served.
    #[arg(long = "model_base_path", value_name = "DIR")]
    model_base_path: Option<PathBuf>,

    /// Encode response tensors in tensor_content instead of the typed *_val fields.
    #[arg(long = "enable_serialization_as_tensor_content", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    enable_serialization_as_tensor_content: bool,

    /// Largest gRPC message accepted or sent, in bytes (TF Serving's is INT32_MAX).
    #[arg(long = "max_message_size_bytes", default_value_t = DEFAULT_MAX_MESSAGE_SIZE)]
    max_message_size_bytes: usize,

    /// Models whose average run is shorter than this run on the async workers; slower ones on the blocking pool.
    #[arg(long = "inline_run_threshold_micros", default_value_t = 50)]
    inline_run_threshold_micros: u64,

    /// gRPC threads, each a single-threaded runtime with its own SO_REUSEPORT listener; 0 = one shared work-stealing runtime.
    #[arg(long = "grpc_runtime_threads", default_value_t = 0)]
    grpc_runtime_threads: usize,

    /// Address the gRPC port binds to.
    #[arg(long = "grpc_bind_address", default_value = "0.0.0.0")]
    grpc_bind_address: std::net::IpAddr,
}

// mimalloc: the request path allocates many small buffers; it costs less CPU per request than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), server::BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let flags = Flags::parse();
    if flags.rest_api_port != 0 {
        if flags.rest_api_port == flags.port {
            return Err("--rest_api_port must differ from --port".into());
        }
        tracing::warn!("--rest_api_port={} accepted, but the REST API is not served yet", flags.rest_api_port);
    }

    let registry = Arc::new(ModelRegistry::new());
    match &flags.model_base_path {
        Some(base) => {
            let version = tensorserve::repository::load_latest(&registry, &flags.model_name, base)?;
            tracing::info!("serving {} version {version} from {}", flags.model_name, base.display());
        }
        None => {
            tensorserve::examples::register_bundled(&registry)?;
            tracing::info!("no --model_base_path: serving the bundled examples {:?}", registry.model_names());
        }
    }

    let config = ServeConfig {
        grpc_addr: Some(SocketAddr::new(flags.grpc_bind_address, flags.port)),
        grpc_socket_path: flags.grpc_socket_path,
        max_message_size: flags.max_message_size_bytes,
        serving: ServingOptions {
            tensor_content_output: flags.enable_serialization_as_tensor_content,
            decode_limits: DecodeLimits { max_tensor_bytes: flags.max_message_size_bytes },
            inline_run_threshold: std::time::Duration::from_micros(flags.inline_run_threshold_micros),
        },
    };
    if flags.grpc_runtime_threads > 0 {
        server::serve_per_core(registry, config, flags.grpc_runtime_threads, server::shutdown_signal())?;
    } else {
        let runtime = server::runtime()?;
        runtime.block_on(server::serve(registry, config, server::shutdown_signal()))?;
    }
    tracing::info!("stopped");
    Ok(())
}
