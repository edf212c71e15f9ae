//! Helpers the integration tests share.
// Each test file uses a part of them.
#![allow(dead_code)]

use std::net::SocketAddr;

use tensorserve::server::GrpcServices;
use tokio::sync::oneshot;

/// Serves `services` on 127.0.0.1:0 until the returned sender is dropped.
pub(crate) async fn spawn_grpc(services: GrpcServices) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        services
            .serve_tcp(listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap()
    });
    (addr, tx)
}

/// The engine the suite runs on: `TENSORSERVE_ONNX_ENGINE` (CI runs each), default `auto`.
pub(crate) fn engine() -> tensorserve::backend::onnx::OnnxEngine {
    std::env::var("TENSORSERVE_ONNX_ENGINE")
        .ok()
        .and_then(|v| tensorserve::backend::onnx::OnnxEngine::parse(&v))
        .unwrap_or(tensorserve::backend::onnx::OnnxEngine::Auto)
}

/// A loader for [`engine`].
pub(crate) fn loader() -> tensorserve::backend::onnx::OnnxLoader {
    tensorserve::backend::onnx::OnnxLoader::new(engine())
}

/// The platforms with [`engine`] for `onnx` and `tensorflow`.
pub(crate) fn platforms() -> tensorserve::repository::Platforms {
    tensorserve::repository::Platforms::with_onnx_engine(engine())
}

/// The bundled examples, on [`engine`].
pub(crate) fn register_bundled(registry: &tensorserve::model::ModelRegistry) {
    tensorserve::examples::register_bundled_with(registry, &loader()).unwrap();
}
