//! Listeners, health, reflection and shutdown around the gRPC front end.

pub mod guard;
pub mod http1;
pub mod listener;
pub mod tls;

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
use crate::api::v2::grpc::{GrpcInferenceServiceServer, V2GrpcApi};
use crate::model::ModelRegistry;
use crate::serving::{ServingCore, ServingOptions};
use guard::{GuardState, Guarded};
use listener::{ConnectionLimits, Incoming, Refuse};

/// Health names TF Serving registers (short) plus the full service names, and KServe V2's service.
pub const HEALTH_SERVICE_NAMES: [&str; 5] = [
    "tensorflow.serving.PredictionService",
    "tensorflow.serving.ModelService",
    "PredictionService",
    "ModelService",
    "inference.GRPCInferenceService",
];

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
        crate::config::ServerConfig::default().serve.limits
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
    /// Single-threaded runtimes serving connections (`--grpc_runtime_threads`); 0 = the caller's.
    pub runtime_threads: usize,
    /// TLS on the gRPC TCP port (`--ssl_config_file`); the Unix socket stays plaintext.
    pub grpc_tls: Option<tls::TlsPort>,
    /// TLS on the REST port (`--rest_api_ssl_config_file`).
    pub rest_tls: Option<tls::TlsPort>,
    /// The admin listener (`--monitoring_address`): metrics, status page and model control move
    /// there from the REST port; `None` keeps them on the REST port.
    pub admin_addr: Option<SocketAddr>,
    /// What the admin listener serves.
    pub admin: crate::api::admin::AdminRoutes,
}

impl Default for ServeConfig {
    /// `tensorserve` with no flags, without the demo's REST port.
    fn default() -> Self {
        ServeConfig { rest_addr: None, ..crate::config::ServerConfig::default().serve }
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
    /// KServe V2's GRPCInferenceService.
    v2: Guarded<GrpcInferenceServiceServer<V2GrpcApi>>,
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
        Self::with_limits(core, max_message_size, manager, TransportLimits::default(), true).await
    }

    /// Like [`GrpcServices::new`], with connection limits, and V2's repository calls refused
    /// unless `model_control` (the admin listener serves them instead).
    pub async fn with_limits(
        core: Arc<ServingCore>,
        max_message_size: usize,
        manager: Option<Arc<crate::repository::ModelManager>>,
        limits: TransportLimits,
        model_control: bool,
    ) -> Result<Self, BoxError> {
        let guard = Arc::new(GuardState {
            memory: core.memory().clone(),
            cost: DecodeCost::for_tensorserve(),
            max_message_size,
        });
        let v2 = V2GrpcApi::new(core.clone(), manager.clone());
        let v2 = if model_control { v2 } else { v2.without_model_control() };
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
                guard.clone(),
            ),
            v2: Guarded::new(
                GrpcInferenceServiceServer::new(v2)
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
            .add_service(self.model.clone())
            .add_service(self.v2.clone()))
    }

    /// Serves on a bound TCP listener until `shutdown` completes, within the connection limits.
    pub async fn serve_tcp(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), BoxError> {
        let (sink, incoming) = listener::channel(self.limits.connections);
        listener::accept(listener, self.limits.connections, "gRPC", Refuse::Close, vec![sink]);
        self.serve_incoming(incoming, shutdown).await
    }

    /// Serves the connections an acceptor hands this worker until `shutdown` completes.
    pub async fn serve_incoming(&self, incoming: Incoming, shutdown: impl Future<Output = ()>) -> Result<(), BoxError> {
        self.router()?.serve_with_incoming_shutdown(incoming.into_stream(), shutdown).await?;
        Ok(())
    }

    /// Like [`GrpcServices::serve_incoming`], each connection behind a TLS handshake.
    pub async fn serve_incoming_tls(
        &self,
        incoming: Incoming,
        tls: &tls::TlsPort,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), BoxError> {
        let conns = tls::handshakes(incoming, tls, self.limits.connections.handshake_timeout);
        self.router()?.serve_with_incoming_shutdown(conns, shutdown).await?;
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
    let (sink, incoming) = listener::channel(limits.connections);
    listener::accept(listener, limits.connections, "REST", Refuse::Http503, vec![sink]);
    http1::serve(incoming.into_stream(), app, limits.rest_header_read_timeout, shutdown).await
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
///
/// The caller's runtime accepts connections and runs the shutdown schedule. Connections are
/// served on `config.runtime_threads` single-threaded runtimes (0 = on the caller's runtime),
/// each new one by the worker holding the fewest: no work stealing or cross-thread wake-ups on
/// the request path, while model runs too slow for the reactor go to the blocking pool.
pub async fn serve(
    registry: Arc<ModelRegistry>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let core = Arc::new(ServingCore::new(registry, config.serving.clone()));
    let limits = config.limits;
    let services = GrpcServices::with_limits(
        core.clone(),
        config.max_message_size,
        config.manager.clone(),
        limits,
        config.admin_addr.is_none(),
    )
    .await?;
    // Bind every port before serving, so a port clash fails start-up.
    let grpc = match config.grpc_addr {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| format!("cannot bind gRPC port {addr}: {e}"))?),
        None => None,
    };
    let rest = match config.rest_addr {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| format!("cannot bind REST port {addr}: {e}"))?),
        None => None,
    };
    let admin = match config.admin_addr {
        Some(addr) => {
            Some(TcpListener::bind(addr).await.map_err(|e| format!("cannot bind --monitoring_address {addr}: {e}"))?)
        }
        None => None,
    };
    let threads = config.runtime_threads;
    let workers = threads.max(1);
    let (grpc_sinks, grpc_incoming): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| listener::channel(limits.connections)).unzip();
    let (rest_sinks, rest_incoming): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| listener::channel(limits.connections)).unzip();
    let on = if threads == 0 { "the caller's runtime".to_string() } else { format!("{threads} threads") };
    let security = |t: &Option<tls::TlsPort>| t.as_ref().map_or("plaintext", |t| t.describe());
    if let Some(l) = grpc {
        tracing::info!(
            "gRPC (PredictionService, ModelService, KServe V2, health, reflection) on {}, {}, {on}",
            l.local_addr()?,
            security(&config.grpc_tls)
        );
        listener::accept(l, limits.connections, "gRPC", Refuse::Close, grpc_sinks);
    }
    let rest_app = match rest {
        Some(l) => {
            tracing::info!(
                "REST (TF Serving REST API, KServe V1 and V2) on {}, {}, {on}",
                l.local_addr()?,
                security(&config.rest_tls)
            );
            listener::accept(l, limits.connections, "REST", Refuse::Http503, rest_sinks);
            Some(crate::api::rest::router_with_manager(core.clone(), config.rest.clone(), config.manager.clone()))
        }
        None => None,
    };
    if let Some(path) = &config.grpc_socket_path {
        tracing::info!("gRPC on unix socket {}", path.display());
    }
    crate::api::admin::started();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), BoxError>>();
    if let Some(l) = admin {
        let a = &config.admin;
        tracing::info!(
            "admin (metrics: {}, status page: {}, model control: {}) on {}, plaintext",
            a.metrics_path.as_deref().unwrap_or("off"),
            if a.status_page { crate::api::status::PATH } else { "off" },
            if a.model_control { "/v2/repository" } else { "off" },
            l.local_addr()?
        );
        let options = crate::api::rest::RestOptions { admin: a.clone(), ..config.rest.clone() };
        let app = crate::api::admin::router(core.clone(), a.clone(), options, config.manager.clone());
        let (sink, incoming) = listener::channel(limits.connections);
        listener::accept(l, limits.connections, "admin", Refuse::Http503, vec![sink]);
        let mut rx = stop_rx.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = rx.wait_for(|v| *v).await;
            };
            http1::serve(incoming.into_stream(), app, limits.rest_header_read_timeout, stopped).await;
            let _ = done.send(Ok(()));
        });
    }
    for (i, (grpc, rest)) in grpc_incoming.into_iter().zip(rest_incoming).enumerate() {
        let worker = Worker {
            services: services.clone(),
            grpc: config.grpc_addr.map(|_| grpc),
            rest: rest_app.clone().map(|app| (rest, app)),
            // The Unix socket has one listener, so one worker serves it.
            uds: if i == 0 { config.grpc_socket_path.clone() } else { None },
            grpc_tls: config.grpc_tls.clone(),
            rest_tls: config.rest_tls.clone(),
            limits,
            stop: stop_rx.clone(),
        };
        let done = done_tx.clone();
        if threads == 0 {
            tokio::spawn(async move {
                let _ = done.send(worker.run().await);
            });
        } else {
            std::thread::Builder::new().name(format!("serve-{i}")).spawn(move || {
                let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt.block_on(worker.run()),
                    Err(e) => Err(e.into()),
                };
                let _ = done.send(result);
            })?;
        }
    }
    drop(done_tx);
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
    let mut result = Ok(());
    loop {
        tokio::select! {
            next = done_rx.recv() => match next {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    result = Err(e);
                    break;
                }
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
    result
}

/// What one serving runtime serves: its share of the gRPC and REST connections, and the Unix
/// socket on the first.
struct Worker {
    services: GrpcServices,
    grpc: Option<Incoming>,
    rest: Option<(Incoming, axum::Router)>,
    uds: Option<PathBuf>,
    grpc_tls: Option<tls::TlsPort>,
    rest_tls: Option<tls::TlsPort>,
    limits: TransportLimits,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Worker {
    async fn run(self) -> Result<(), BoxError> {
        let Worker { services, grpc, rest, uds, grpc_tls, rest_tls, limits, stop } = self;
        let stopped = || {
            let mut rx = stop.clone();
            async move {
                let _ = rx.wait_for(|v| *v).await;
            }
        };
        let tcp = async {
            match (grpc, &grpc_tls) {
                (Some(incoming), None) => services.serve_incoming(incoming, stopped()).await,
                (Some(incoming), Some(tls)) => services.serve_incoming_tls(incoming, tls, stopped()).await,
                (None, _) => Ok(()),
            }
        };
        let unix = async {
            match &uds {
                #[cfg(unix)]
                Some(path) => services.serve_unix(path, stopped()).await,
                _ => Ok(()),
            }
        };
        let http = async {
            let timeout = limits.rest_header_read_timeout;
            match (rest, &rest_tls) {
                (Some((incoming, app)), None) => http1::serve(incoming.into_stream(), app, timeout, stopped()).await,
                (Some((incoming, app)), Some(tls)) => {
                    let conns = tls::handshakes(incoming, tls, limits.connections.handshake_timeout);
                    http1::serve(conns, app, timeout, stopped()).await
                }
                (None, _) => {}
            }
            Ok::<(), BoxError>(())
        };
        let (a, b, c) = tokio::join!(tcp, unix, http);
        a.and(b).and(c)
    }
}
