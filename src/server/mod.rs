//! Listeners, health, reflection and shutdown around the gRPC front end.

pub mod guard;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::api::decode_cost::DecodeCost;
use crate::api::grpc::{GrpcApi, ModelServiceServer, PredictionServiceServer};
use crate::model::ModelRegistry;
use crate::serving::{ServingCore, ServingOptions};
use guard::{GuardState, Guarded};

/// Health names TF Serving registers (short) plus the full service names.
pub const HEALTH_SERVICE_NAMES: [&str; 4] =
    ["tensorflow.serving.PredictionService", "tensorflow.serving.ModelService", "PredictionService", "ModelService"];

/// TF Serving's message limit in both directions: INT32_MAX.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = i32::MAX as usize;

/// Error type of server set-up.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where and how to serve.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// TCP address for gRPC; `None` for none.
    pub grpc_addr: Option<SocketAddr>,
    /// Unix socket path for gRPC, as `--grpc_socket_path`.
    pub grpc_socket_path: Option<PathBuf>,
    /// Largest gRPC message received or sent.
    pub max_message_size: usize,
    /// The model manager, for `HandleReloadConfigRequest`; `None` serves a fixed registry.
    pub manager: Option<Arc<crate::repository::ModelManager>>,
    /// TCP address for the REST API; `None` for none.
    pub rest_addr: Option<SocketAddr>,
    /// REST settings.
    pub rest: crate::api::rest::RestOptions,
    /// Request handling settings.
    pub serving: ServingOptions,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            grpc_addr: Some(SocketAddr::from(([0, 0, 0, 0], 8500))),
            grpc_socket_path: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            manager: None,
            rest_addr: None,
            rest: crate::api::rest::RestOptions::default(),
            serving: ServingOptions::default(),
        }
    }
}

/// The HTTP/2 transport settings every gRPC listener (and the benchmark's echo ceiling) uses.
pub fn transport() -> Server {
    Server::builder().tcp_nodelay(true)
}

/// The tokio runtime the server binary runs on.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}

/// Reflection over our schemas and the health service's.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// The services one gRPC listener serves; cheap to clone for a second listener.
#[derive(Clone)]
pub struct GrpcServices {
    /// TF Serving's PredictionService.
    prediction: Guarded<PredictionServiceServer<GrpcApi>>,
    /// TF Serving's ModelService.
    model: Guarded<ModelServiceServer<GrpcApi>>,
    /// grpc.health.v1.
    health: tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    /// Sets health to NOT_SERVING on shutdown.
    reporter: HealthReporter,
}

impl GrpcServices {
    /// Builds every service over `core`, with health set to SERVING.
    pub async fn new(
        core: Arc<ServingCore>,
        max_message_size: usize,
        manager: Option<Arc<crate::repository::ModelManager>>,
    ) -> Result<Self, BoxError> {
        let guard = Arc::new(GuardState {
            memory: core.memory().clone(),
            cost: DecodeCost::for_tensorserve(),
            max_message_size,
        });
        let api = GrpcApi::new(core, manager);
        let reporter = HealthReporter::new();
        let health = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
        );
        reporter.set_service_status("", ServingStatus::Serving).await;
        for name in HEALTH_SERVICE_NAMES {
            reporter.set_service_status(name, ServingStatus::Serving).await;
        }
        // Fail at start-up, not per listener, if the descriptors are unusable.
        reflection().build_v1()?;
        Ok(GrpcServices {
            prediction: Guarded::new(
                PredictionServiceServer::new(api.clone())
                    .max_decoding_message_size(max_message_size)
                    .max_encoding_message_size(max_message_size),
                guard.clone(),
            ),
            model: Guarded::new(
                ModelServiceServer::new(api)
                    .max_decoding_message_size(max_message_size)
                    .max_encoding_message_size(max_message_size),
                guard,
            ),
            health,
            reporter,
        })
    }

    fn router(&self) -> Result<tonic::transport::server::Router, BoxError> {
        Ok(transport()
            .add_service(self.health.clone())
            // v1 for current clients; v1alpha because grpcurl 1.8 speaks only that.
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(self.prediction.clone())
            .add_service(self.model.clone()))
    }

    /// Serves on a bound TCP listener until `shutdown` completes.
    pub async fn serve_tcp(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), BoxError> {
        // A caller-made listener skips the builder's TCP settings, so set no-delay here (else Nagle adds ~40 ms).
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        self.router()?.serve_with_incoming_shutdown(incoming, shutdown).await?;
        Ok(())
    }

    /// Serves on a Unix socket path until `shutdown` completes.
    #[cfg(unix)]
    pub async fn serve_unix(&self, path: &std::path::Path, shutdown: impl Future<Output = ()>) -> Result<(), BoxError> {
        // A stale socket file from an earlier run would make bind fail.
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        self.router()?.serve_with_incoming_shutdown(incoming, shutdown).await?;
        Ok(())
    }

    /// Marks every service NOT_SERVING, so load balancers drain before the listeners close.
    pub async fn set_not_serving(&self) {
        for name in HEALTH_SERVICE_NAMES {
            self.reporter.set_service_status(name, ServingStatus::NotServing).await;
        }
        self.reporter.set_service_status("", ServingStatus::NotServing).await;
    }
}

/// Binds `addr` with SO_REUSEPORT so several single-threaded runtimes can each accept on it.
#[cfg(unix)]
pub fn bind_reuseport(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves like [`serve`], but on `threads` single-threaded runtimes, one listener each (SO_REUSEPORT).
///
/// The kernel spreads connections over the threads and each connection stays on
/// one thread: no work stealing, no cross-thread wake-ups, less CPU per request.
/// One connection then uses one core, so `serve` (work-stealing) suits few clients better.
#[cfg(unix)]
pub fn serve_per_core(
    registry: Arc<ModelRegistry>,
    config: ServeConfig,
    threads: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let control = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let core = Arc::new(ServingCore::new(registry, config.serving.clone()));
    let services =
        control.block_on(GrpcServices::new(core.clone(), config.max_message_size, config.manager.clone()))?;
    let rest_listener = match config.rest_addr {
        Some(addr) => {
            let l = control
                .block_on(async { std::net::TcpListener::bind(addr) })
                .map_err(|e| format!("cannot bind REST port {addr}: {e}"))?;
            l.set_nonblocking(true)?;
            tracing::info!("REST (TF Serving REST API, KServe V1) on {}", l.local_addr()?);
            Some((l, crate::api::rest::router(core.clone(), config.rest.clone())))
        }
        None => None,
    };
    let mut rest_listener = rest_listener;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut handles = Vec::new();
    let threads = threads.max(1);
    // Bind every listener before serving, so a port clash fails start-up.
    let mut listeners = Vec::new();
    if let Some(addr) = config.grpc_addr {
        let first = control
            .block_on(async { bind_reuseport(addr) })
            .map_err(|e| format!("cannot bind gRPC port {addr}: {e}"))?;
        let bound = first.local_addr()?;
        listeners.push(Some(first.into_std()?));
        for _ in 1..threads {
            let l = control.block_on(async { bind_reuseport(bound) })?;
            listeners.push(Some(l.into_std()?));
        }
        tracing::info!("gRPC (PredictionService, ModelService, health, reflection) on {bound}, {threads} threads");
    } else {
        listeners.resize_with(threads, || None);
    }
    for (i, listener) in listeners.into_iter().enumerate() {
        let services = services.clone();
        let rx = stop_rx.clone();
        let socket_path = if i == 0 { config.grpc_socket_path.clone() } else { None };
        let rest = if i == 0 { rest_listener.take() } else { None };
        handles.push(std::thread::Builder::new().name(format!("grpc-{i}")).spawn(
            move || -> Result<(), BoxError> {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async move {
                    let stop = || {
                        let mut rx = rx.clone();
                        async move {
                            let _ = rx.wait_for(|v| *v).await;
                        }
                    };
                    let tcp = async {
                        match listener {
                            Some(l) => services.serve_tcp(TcpListener::from_std(l)?, stop()).await,
                            None => Ok(()),
                        }
                    };
                    let uds = async {
                        match &socket_path {
                            Some(path) => {
                                tracing::info!("gRPC on unix socket {}", path.display());
                                services.serve_unix(path, stop()).await
                            }
                            None => Ok(()),
                        }
                    };
                    let http = async {
                        match rest {
                            Some((l, app)) => {
                                axum::serve(nodelay_listener(TcpListener::from_std(l)?), app)
                                    .with_graceful_shutdown(stop())
                                    .await?;
                                Ok(())
                            }
                            None => Ok::<(), BoxError>(()),
                        }
                    };
                    let (a, b, c) = tokio::join!(tcp, uds, http);
                    a.and(b).and(c)
                })
            },
        )?);
    }
    control.block_on(async {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        services.set_not_serving().await;
        let _ = stop_tx.send(true);
    });
    let mut result = Ok(());
    for h in handles {
        match h.join() {
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err("a gRPC thread panicked".into()),
            Ok(Ok(())) => {}
        }
    }
    if let Some(path) = &config.grpc_socket_path {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// The REST listener with TCP_NODELAY on every accepted connection.
pub fn nodelay_listener(listener: TcpListener) -> impl axum::serve::Listener<Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    })
}

/// Resolves when the process gets Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Serves `registry` as `config` says until `shutdown` completes.
pub async fn serve(
    registry: Arc<ModelRegistry>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let core = Arc::new(ServingCore::new(registry, config.serving.clone()));
    let services = GrpcServices::new(core.clone(), config.max_message_size, config.manager.clone()).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = config.grpc_addr {
        let listener = TcpListener::bind(addr).await.map_err(|e| format!("cannot bind gRPC port {addr}: {e}"))?;
        tracing::info!("gRPC (PredictionService, ModelService, health, reflection) on {}", listener.local_addr()?);
        let (s, stop) = (services.clone(), stop());
        tasks.spawn(async move { s.serve_tcp(listener, stop).await });
    }
    #[cfg(unix)]
    if let Some(path) = config.grpc_socket_path.clone() {
        tracing::info!("gRPC on unix socket {}", path.display());
        let (s, stop) = (services.clone(), stop());
        tasks.spawn(async move { s.serve_unix(&path, stop).await });
    }
    if let Some(addr) = config.rest_addr {
        let listener = TcpListener::bind(addr).await.map_err(|e| format!("cannot bind REST port {addr}: {e}"))?;
        tracing::info!("REST (TF Serving REST API, KServe V1) on {}", listener.local_addr()?);
        let stop = stop();
        let app = crate::api::rest::router(core.clone(), config.rest.clone());
        tasks.spawn(async move {
            axum::serve(nodelay_listener(listener), app).with_graceful_shutdown(stop).await?;
            Ok(())
        });
    }
    let services_for_stop = services.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        services_for_stop.set_not_serving().await;
        let _ = stop_tx.send(true);
    });
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    if let Some(path) = &config.grpc_socket_path {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
