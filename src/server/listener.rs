//! Accepting connections within limits: a cap on open connections per port, a deadline for a
//! new connection's first bytes, and an accept loop that backs off (and says so) when the
//! process runs out of file descriptors instead of spinning.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Limits on the connections of one port.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Most connections open at once (`--max_connections`); more are closed at accept.
    pub max_connections: usize,
    /// A new connection that sends nothing for this long is closed (`--handshake_timeout_seconds`).
    pub handshake_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        crate::config::ServerConfig::default().serve.limits.connections
    }
}

/// Raises the soft limit on open files to the hard limit, as servers that hold many sockets do;
/// returns the soft limit in force.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit.rlim_cur = limit.rlim_max;
                }
            }
        }
        Some(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    None
}

/// Per port: 10,000, or less when the open-file limit would run out first (each of two ports
/// gets 40 % of it; the rest is for model files, the log and ONNX Runtime).
pub fn default_max_connections() -> usize {
    let fds = current_fd_limit().unwrap_or(1024);
    (fds.saturating_mul(2) / 5).clamp(16, 10_000) as usize
}

fn current_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes the struct passed.
        (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    None
}

/// What a refused connection is told before it is closed (REST says it in HTTP; gRPC just closes).
#[derive(Clone, Copy, Debug)]
pub enum Refuse {
    /// Close at once.
    Close,
    /// Answer 503 in HTTP/1.1, then close.
    Http503,
}

const HTTP_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 56\r\n\r\n{ \"error\": \"too many connections open, try again later\" }";

/// One worker's share of a port: where its connections go and how many it holds open.
#[derive(Clone, Debug)]
pub struct Sink {
    tx: mpsc::Sender<Accepted>,
    open: Arc<AtomicUsize>,
}

/// The receiving end of a [`Sink`]: the connections one worker serves, turned into [`Conn`]s on
/// the worker's own runtime.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<Accepted>,
    handshake: Duration,
}

/// A worker's sink and incoming connections for one port.
pub fn channel(limits: ConnectionLimits) -> (Sink, Incoming) {
    let (tx, rx) = mpsc::channel(16);
    (Sink { tx, open: Arc::new(AtomicUsize::new(0)) }, Incoming { rx, handshake: limits.handshake_timeout })
}

impl Incoming {
    /// The next connection, registered with the runtime this is called on; `None` once the
    /// acceptor stopped.
    pub async fn recv(&mut self) -> Option<io::Result<Conn>> {
        let accepted = self.rx.recv().await?;
        Some(accepted.into_conn(self.handshake))
    }

    /// As a stream, for tonic's `serve_with_incoming_shutdown`.
    pub fn into_stream(self) -> impl tokio_stream::Stream<Item = io::Result<Conn>> + Send + 'static {
        let handshake = self.handshake;
        tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(self.rx), move |a| {
            a.into_conn(handshake)
        })
    }
}

/// A connection accepted by one runtime and not yet registered with its worker's reactor.
#[derive(Debug)]
struct Accepted {
    tcp: std::net::TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    held: Held,
}

impl Accepted {
    fn into_conn(self, handshake: Duration) -> io::Result<Conn> {
        let tcp = TcpStream::from_std(self.tcp)?;
        let first_byte = (!handshake.is_zero()).then(|| Box::pin(tokio::time::sleep(handshake)));
        Ok(Conn { tcp, peer: self.peer, _slot: self.slot, _held: self.held, first_byte })
    }
}

/// Counts a connection against its worker while it is open.
#[derive(Debug)]
struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts on `listener` within `limits` and hands each connection to the worker in `sinks`
/// holding the fewest, until every worker has stopped.
///
/// One acceptor rather than one SO_REUSEPORT listener per worker: the kernel's hash can put
/// three of four connections on one core; counting open connections cannot.
pub fn accept(listener: TcpListener, limits: ConnectionLimits, port: &'static str, refuse: Refuse, sinks: Vec<Sink>) {
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::spawn(async move {
        let mut last_warning: Option<Instant> = None;
        let mut warn = |message: String| {
            // At most one line per second, however many connections are refused.
            if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                tracing::warn!("{port}: {message}");
                last_warning = Some(Instant::now());
            }
        };
        let all_stopped = async {
            for sink in &sinks {
                sink.tx.closed().await;
            }
        };
        let mut all_stopped = std::pin::pin!(all_stopped);
        let mut next = 0usize;
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = &mut all_stopped => break,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let Ok(slot) = open.clone().try_acquire_owned() else {
                        warn(format!(
                            "refusing connection from {peer}: {} connections are open, the limit (--max_connections)",
                            limits.max_connections
                        ));
                        if let Refuse::Http503 = refuse {
                            let _ = tcp.try_write(HTTP_503);
                        }
                        continue;
                    };
                    let tcp = match tcp.into_std() {
                        Ok(tcp) => tcp,
                        Err(e) => {
                            tracing::debug!("{port}: cannot hand over the connection from {peer}: {e}");
                            continue;
                        }
                    };
                    // Ties rotate, so an idle server spreads its first connections too.
                    next = next.wrapping_add(1);
                    let Some(sink) = (0..sinks.len())
                        .map(|i| &sinks[(next + i) % sinks.len()])
                        .filter(|s| !s.tx.is_closed())
                        .min_by_key(|s| s.open.load(Ordering::Relaxed))
                    else {
                        break;
                    };
                    sink.open.fetch_add(1, Ordering::Relaxed);
                    let accepted = Accepted { tcp, peer, slot, held: Held(sink.open.clone()) };
                    if sink.tx.send(accepted).await.is_err() && sinks.iter().all(|s| s.tx.is_closed()) {
                        break;
                    }
                }
                Err(e) if is_resource_error(&e) => {
                    // The connection waits in the backlog; accepting again at once would spin.
                    warn(format!("cannot accept connections: {e}; retrying in 100 ms (raise `ulimit -n` or lower --max_connections)"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // The peer gave up before we accepted (ECONNABORTED and the like).
                Err(e) => tracing::debug!("{port}: accept failed: {e}"),
            }
        }
    });
}

fn is_resource_error(e: &io::Error) -> bool {
    #[cfg(unix)]
    if let Some(code) = e.raw_os_error() {
        return matches!(code, libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM);
    }
    let _ = e;
    false
}

/// An accepted connection: holds its slot under the cap, and must show bytes within the deadline.
#[derive(Debug)]
pub struct Conn {
    tcp: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
    _held: Held,
    /// Until the first byte arrives.
    first_byte: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Conn {
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if let Some(deadline) = self.first_byte.as_mut() {
            match &polled {
                Poll::Ready(Ok(())) if buf.filled().len() > before => self.first_byte = None,
                Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the peer sent nothing within the handshake timeout",
                    )))
                }
                _ => {}
            }
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.tcp.local_addr().ok(),
            remote_addr: Some(self.peer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_worker_holding_the_fewest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ConnectionLimits { max_connections: 100, handshake_timeout: Duration::ZERO };
        let (a, mut first) = channel(limits);
        let (b, mut second) = channel(limits);
        accept(listener, limits, "test", Refuse::Close, vec![a, b]);
        let mut clients = Vec::new();
        let (mut held_first, mut held_second) = (Vec::new(), Vec::new());
        for _ in 0..4 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            tokio::select! {
                Some(c) = first.recv() => held_first.push(c.unwrap()),
                Some(c) = second.recv() => held_second.push(c.unwrap()),
            }
        }
        assert_eq!((held_first.len(), held_second.len()), (2, 2));
        // A worker whose connections closed gets the next ones.
        held_first.clear();
        for _ in 0..2 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let c = tokio::time::timeout(Duration::from_secs(5), first.recv()).await.unwrap().unwrap().unwrap();
            held_first.push(c);
        }
        assert_eq!(held_first.len(), 2);
    }
}
