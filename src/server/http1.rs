//! The REST listener: HTTP/1.1 on capped connections, with a header-read timeout (which also
//! ends keep-alive connections left idle that long) and graceful shutdown.

use std::future::Future;
use std::time::Duration;

use super::tls::Connection;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

/// Serves `app` on the connections `incoming` yields until `stop` completes, then lets open
/// requests finish (the caller bounds how long) and closes idle connections at once.
pub async fn serve<C: Connection>(
    incoming: impl tokio_stream::Stream<Item = std::io::Result<C>>,
    app: axum::Router,
    header_read_timeout: Duration,
    stop: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).keep_alive(true);
    if !header_read_timeout.is_zero() {
        builder.header_read_timeout(header_read_timeout);
    }
    let mut stop = std::pin::pin!(stop);
    let mut incoming = Box::pin(incoming);
    loop {
        let conn = tokio::select! {
            _ = &mut stop => break,
            conn = tokio_stream::StreamExt::next(&mut incoming) => conn,
        };
        let conn = match conn {
            Some(Ok(conn)) => conn,
            Some(Err(e)) => {
                tracing::debug!("REST: cannot take over a connection: {e}");
                continue;
            }
            None => break,
        };
        let peer = conn.peer_addr();
        let connection =
            graceful.watch(builder.serve_connection(TokioIo::new(conn), TowerToHyperService::new(app.clone())));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "REST connection ended: {e}");
            }
        });
    }
    // Closing the receiver ends the accept loop, which closes the listening socket.
    drop(incoming);
    graceful.shutdown().await;
}
