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

    /// Address the gRPC and REST ports bind to.
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
    // As in TF Serving's Docker image, the demo serves REST on 8501 beside gRPC on 8500.
    let rest_port = flags.rest_api_port.unwrap_or(if flags.model_base_path.is_none() { 8501 } else { 0 });
    if rest_port != 0 && rest_port == flags.port {
        return Err("--rest_api_port must differ from --port".into());
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
