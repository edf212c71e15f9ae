//! Listeners, health, reflection and shutdown around the gRPC front end.

pub mod guard;
pub mod http1;
pub mod listener;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::api::decode_cost::DecodeCost;
use crate::api::grpc::{GrpcApi, ModelServiceServer, PredictionServiceServer};
use crate::model::ModelRegistry;
use crate::serving::{ServingCore, ServingOptions};
use guard::{GuardState, Guarded};
use listener::{ConnectionLimits, Refuse};

/// Health names TF Serving registers (short) plus the full service names.
pub const HEALTH_SERVICE_NAMES: [&str; 4] =
    ["tensorflow.serving.PredictionService", "tensorflow.serving.ModelService", "PredictionService", "ModelService"];

/// TF Serving's message limit in both directions: INT32_MAX.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = i32::MAX as usize;

/// Error type of server set-up.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connection limits and the shutdown schedule.
#[derive(Clone, Copy, Debug)]
pub struct TransportLimits {
    /// Limits on each port's connections.
    pub connections: ConnectionLimits,
    /// A REST request's head must arrive within this; idle keep-alive connections close after it
    /// (`--rest_header_read_timeout_seconds`; zero = none).
    pub rest_header_read_timeout: Duration,
    /// Streams one HTTP/2 connection may have open (`--grpc_max_concurrent_streams`).
    pub grpc_max_concurrent_streams: u32,
    /// After SIGTERM, health is NOT_SERVING but requests are still served this long (`--drain_seconds`).
    pub drain: Duration,
    /// Then the listeners close and open requests get this long before the process exits
    /// whatever its peers do (`--shutdown_grace_seconds`).
    pub grace: Duration,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            connections: ConnectionLimits::default(),
            rest_header_read_timeout: Duration::from_secs(30),
            grpc_max_concurrent_streams: 256,
            drain: Duration::from_secs(5),
            grace: Duration::from_secs(10),
        }
    }
}

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
    /// Connection limits and the shutdown schedule.
    pub limits: TransportLimits,
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
            limits: TransportLimits::default(),
        }
    }
}

/// Largest header list an HTTP/2 peer may send: grpc-core's hard limit.
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// The HTTP/2 transport settings every gRPC listener (and the benchmark's echo ceiling) uses.
///
/// Rapid-reset and CONTINUATION-flood defences are hyper's own (pending-reset and header-list
/// caps, GOAWAY past them); idle peers get pinged so dead ones are dropped.
pub fn transport() -> Server {
    transport_with(TransportLimits::default().grpc_max_concurrent_streams)
}

fn transport_with(max_concurrent_streams: u32) -> Server {
    Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(max_concurrent_streams)
        .http2_max_header_list_size(MAX_HEADER_LIST)
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
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
    /// Connection limits.
    limits: TransportLimits,
}

impl GrpcServices {
    /// Builds every service over `core`, with health set to SERVING.
    pub async fn new(
        core: Arc<ServingCore>,
        max_message_size: usize,
        manager: Option<Arc<crate::repository::ModelManager>>,
    ) -> Result<Self, BoxError> {
        Self::with_limits(core, max_message_size, manager, TransportLimits::default()).await
    }

    /// Like [`GrpcServices::new`], with connection limits.
    pub async fn with_limits(
        core: Arc<ServingCore>,
        max_message_size: usize,
        manager: Option<Arc<crate::repository::ModelManager>>,
        limits: TransportLimits,
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
            limits,
        })
    }

    fn router(&self) -> Result<tonic::transport::server::Router, BoxError> {
        Ok(transport_with(self.limits.grpc_max_concurrent_streams)
            .add_service(self.health.clone())
            // v1 for current clients; v1alpha because grpcurl 1.8 speaks only that.
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(self.prediction.clone())
            .add_service(self.model.clone()))
    }

    /// Serves on a bound TCP listener until `shutdown` completes, within the connection limits.
    pub async fn serve_tcp(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), BoxError> {
        let accepted = listener::accept(listener, self.limits.connections, "gRPC", Refuse::Close);
        let incoming = tokio_stream::wrappers::ReceiverStream::new(accepted);
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
    let limits = config.limits;
    let services = control.block_on(GrpcServices::with_limits(
        core.clone(),
        config.max_message_size,
        config.manager.clone(),
        limits,
    ))?;
    let mut rest_listener = match config.rest_addr {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr).map_err(|e| format!("cannot bind REST port {addr}: {e}"))?;
            l.set_nonblocking(true)?;
            tracing::info!("REST (TF Serving REST API, KServe V1) on {}", l.local_addr()?);
            Some((l, crate::api::rest::router(core.clone(), config.rest.clone())))
        }
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
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
    // Each thread reports when it is done, so the wait can end at the grace deadline.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Result<(), BoxError>>();
    for (i, listener) in listeners.into_iter().enumerate() {
        let services = services.clone();
        let rx = stop_rx.clone();
        let socket_path = if i == 0 { config.grpc_socket_path.clone() } else { None };
        let rest = if i == 0 { rest_listener.take() } else { None };
        let done = done_tx.clone();
        std::thread::Builder::new().name(format!("grpc-{i}")).spawn(move || {
            let run = || -> Result<(), BoxError> {
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
                        if let Some((l, app)) = rest {
                            serve_rest(TcpListener::from_std(l)?, app, limits, stop()).await;
                        }
                        Ok::<(), BoxError>(())
                    };
                    let (a, b, c) = tokio::join!(tcp, uds, http);
                    a.and(b).and(c)
                })
            };
            let _ = done.send(run());
        })?;
    }
    drop(done_tx);
    let deadline = control.block_on(drain_then_stop(shutdown, &services, &core, limits, stop_tx));
    let mut result = Ok(());
    for _ in 0..threads {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(Err(e)) => result = Err(e),
            Ok(Ok(())) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    "connections still open after the grace period (--shutdown_grace_seconds): exiting anyway"
                );
                break;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                result = Err("a gRPC thread panicked".into());
                break;
            }
        }
    }
    if let Some(path) = &config.grpc_socket_path {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Waits for `shutdown`, turns health NOT_SERVING, serves on for the drain period, then tells
/// the listeners to stop; returns the deadline by which the process exits. A second signal
/// during the drain or the grace period stops at once.
async fn drain_then_stop(
    shutdown: impl Future<Output = ()>,
    services: &GrpcServices,
    core: &ServingCore,
    limits: TransportLimits,
    stop_tx: tokio::sync::watch::Sender<bool>,
) -> std::time::Instant {
    shutdown.await;
    services.set_not_serving().await;
    core.begin_drain();
    let mut again = std::pin::pin!(shutdown_signal());
    if !limits.drain.is_zero() {
        tracing::info!(
            "shutting down: health is NOT_SERVING; serving on for {:?} so load balancers can react (--drain_seconds)",
            limits.drain
        );
        tokio::select! {
            _ = tokio::time::sleep(limits.drain) => {}
            _ = &mut again => {
                tracing::info!("second signal: stopping now");
                let _ = stop_tx.send(true);
                return std::time::Instant::now();
            }
        }
    }
    tracing::info!(
        "closing the listeners; requests in flight have {:?} to finish (--shutdown_grace_seconds)",
        limits.grace
    );
    let _ = stop_tx.send(true);
    std::time::Instant::now() + limits.grace
}

/// Serves the REST `app` on a bound listener until `shutdown` completes, within `limits`.
pub async fn serve_rest(
    listener: TcpListener,
    app: axum::Router,
    limits: TransportLimits,
    shutdown: impl Future<Output = ()>,
) {
    let accepted = listener::accept(listener, limits.connections, "REST", Refuse::Http503);
    http1::serve(accepted, app, limits.rest_header_read_timeout, shutdown).await
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

/// Serves `registry` as `config` says until `shutdown` completes, then drains and stops
/// within the configured deadlines (see [`TransportLimits`]).
pub async fn serve(
    registry: Arc<ModelRegistry>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let core = Arc::new(ServingCore::new(registry, config.serving.clone()));
    let limits = config.limits;
    let services =
        GrpcServices::with_limits(core.clone(), config.max_message_size, config.manager.clone(), limits).await?;
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
            serve_rest(listener, app, limits, stop).await;
            Ok(())
        });
    }
    let (deadline_tx, deadline_rx) = tokio::sync::oneshot::channel();
    let (services_for_stop, core_for_stop) = (services.clone(), core.clone());
    tokio::spawn(async move {
        let deadline = drain_then_stop(shutdown, &services_for_stop, &core_for_stop, limits, stop_tx).await;
        let _ = deadline_tx.send(deadline);
    });
    let mut deadline = std::pin::pin!(async {
        match deadline_rx.await {
            Ok(at) => tokio::time::sleep_until(at.into()).await,
            Err(_) => std::future::pending().await,
        }
    });
    loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                Some(result) => result??,
                None => break,
            },
            _ = &mut deadline => {
                tracing::warn!("connections still open after the grace period (--shutdown_grace_seconds): exiting anyway");
                break;
            }
        }
    }
    if let Some(path) = &config.grpc_socket_path {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
