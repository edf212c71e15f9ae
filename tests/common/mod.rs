//! Helpers the integration tests share.

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
