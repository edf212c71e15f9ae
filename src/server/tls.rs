//! TLS and mutual TLS on the TCP ports: TF Serving's text-format `SSLConfig` (PEM text inline),
//! served with rustls; the handshake runs per connection on the worker that will serve it.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

use super::listener::{Conn, Incoming};
use crate::error::ServingError;
use crate::proto::tensorflow::serving as pb;

/// Which protocol a port speaks inside TLS, announced by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// HTTP/2, for gRPC (grpc-core refuses a server that does not select `h2`).
    H2,
    /// HTTP/1.1, for the REST port.
    Http11,
}

/// One port's TLS settings, checked and ready to accept with.
#[derive(Clone, Debug)]
pub struct TlsPort {
    config: Arc<rustls::ServerConfig>,
    /// Client certificates are required and checked against `custom_ca`.
    pub client_verify: bool,
    /// Where the settings came from, for log lines.
    pub origin: String,
}

impl TlsPort {
    /// Reads a text-format `SSLConfig` file for a port speaking `alpn`.
    pub fn read(path: &Path, alpn: Alpn) -> Result<Self, ServingError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServingError::invalid_argument(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string(), alpn)
    }

    /// Parses and checks a text-format `SSLConfig`: the key matches the certificate, every PEM
    /// block parses, and `client_verify` has a CA to verify against.
    pub fn parse(text: &str, origin: &str, alpn: Alpn) -> Result<Self, ServingError> {
        let ssl: pb::SslConfig = crate::proto::parse_text_format("tensorflow.serving.SSLConfig", text, origin)?;
        let bad =
            |what: &str, e: &dyn std::fmt::Display| ServingError::invalid_argument(format!("{origin}: {what}: {e}"));
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ssl.server_cert.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| bad("server_cert is not PEM certificates", &e))?;
        if certs.is_empty() {
            return Err(ServingError::invalid_argument(format!("{origin}: server_cert holds no PEM certificate")));
        }
        let key = PrivateKeyDer::from_pem_slice(ssl.server_key.as_bytes())
            .map_err(|e| bad("server_key is not a PEM private key", &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("TLS versions", &e))?;
        let builder = if ssl.client_verify {
            if ssl.custom_ca.trim().is_empty() {
                return Err(ServingError::invalid_argument(format!(
                    "{origin}: client_verify needs custom_ca, the CA client certificates are checked against"
                )));
            }
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(ssl.custom_ca.as_bytes()) {
                let ca = ca.map_err(|e| bad("custom_ca is not PEM certificates", &e))?;
                roots.add(ca).map_err(|e| bad("custom_ca", &e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| bad("custom_ca", &e))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            if !ssl.custom_ca.trim().is_empty() {
                // As TF Serving: without client_verify no client certificate is asked for.
                tracing::warn!("{origin}: custom_ca is unused without client_verify: true");
            }
            builder.with_no_client_auth()
        };
        let mut config =
            builder.with_single_cert(certs, key).map_err(|e| bad("server_key does not fit server_cert", &e))?;
        config.alpn_protocols = vec![match alpn {
            Alpn::H2 => b"h2".to_vec(),
            Alpn::Http11 => b"http/1.1".to_vec(),
        }];
        Ok(TlsPort { config: Arc::new(config), client_verify: ssl.client_verify, origin: origin.to_string() })
    }

    /// What the port's log line says.
    pub fn describe(&self) -> &'static str {
        if self.client_verify {
            "TLS, client certificates required"
        } else {
            "TLS"
        }
    }
}

/// A connection after its TLS handshake.
#[derive(Debug)]
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<Conn>,
}

/// Runs TLS handshakes on the connections `incoming` yields, each in its own task (a slow peer
/// delays no other), bounded by `timeout` (zero = none); yields those that complete.
pub fn handshakes(
    mut incoming: Incoming,
    port: &TlsPort,
    timeout: Duration,
) -> impl tokio_stream::Stream<Item = io::Result<TlsConn>> + Send + 'static {
    let acceptor = tokio_rustls::TlsAcceptor::from(port.config.clone());
    let (tx, rx) = mpsc::channel::<TlsConn>(16);
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                conn = incoming.recv() => conn,
                // The server stopped taking connections: dropping `incoming` closes the acceptor.
                _ = tx.closed() => break,
            };
            let conn = match conn {
                Some(Ok(conn)) => conn,
                Some(Err(e)) => {
                    tracing::debug!("cannot take over a connection: {e}");
                    continue;
                }
                None => break,
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let peer = conn.peer();
                let handshake = acceptor.accept(conn);
                let done = if timeout.is_zero() {
                    handshake.await
                } else {
                    tokio::time::timeout(timeout, handshake).await.unwrap_or_else(|_| {
                        Err(io::Error::new(io::ErrorKind::TimedOut, "no TLS handshake within the handshake timeout"))
                    })
                };
                match done {
                    Ok(inner) => {
                        let _ = tx.send(TlsConn { inner }).await;
                    }
                    // Plaintext on a TLS port, an unknown CA, a missing client certificate.
                    Err(e) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                }
            });
        }
    });
    tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.get_ref().0.connect_info()
    }
}

/// Either kind of accepted connection, for code that serves both.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The peer's address.
    fn peer_addr(&self) -> SocketAddr;
}

impl Connection for Conn {
    fn peer_addr(&self) -> SocketAddr {
        self.peer()
    }
}

impl Connection for TlsConn {
    fn peer_addr(&self) -> SocketAddr {
        self.inner.get_ref().0.peer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::listener::{accept, channel, ConnectionLimits, Refuse};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, as PEM.
    struct Pki {
        ca: String,
        server_cert: String,
        server_key: String,
        client_cert: String,
        client_key: String,
    }

    fn pki() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf = |names: Vec<String>| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
        let (client_cert, client_key) = leaf(vec!["client".into()]);
        Pki { ca: ca.pem(), server_cert, server_key, client_cert, client_key }
    }

    fn ssl_config(p: &Pki, client_verify: bool) -> String {
        format!(
            "server_key: {:?}\nserver_cert: {:?}\ncustom_ca: {:?}\nclient_verify: {client_verify}\n",
            p.server_key, p.server_cert, p.ca
        )
    }

    fn client(p: &Pki, with_cert: bool, ca: &str) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = if with_cert {
            let certs = CertificateDer::pem_slice_iter(p.client_cert.as_bytes()).map(|c| c.unwrap()).collect();
            builder
                .with_client_auth_cert(certs, PrivateKeyDer::from_pem_slice(p.client_key.as_bytes()).unwrap())
                .unwrap()
        } else {
            builder.with_no_client_auth()
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// An echo server over `port`: each connection's first 4 bytes come back.
    async fn echo(port: TlsPort) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ConnectionLimits { max_connections: 16, handshake_timeout: Duration::from_secs(5) };
        let (sink, incoming) = channel(limits);
        accept(listener, limits, "test", Refuse::Close, vec![sink]);
        let mut conns = Box::pin(handshakes(incoming, &port, limits.handshake_timeout));
        tokio::spawn(async move {
            while let Some(Ok(mut c)) = tokio_stream::StreamExt::next(&mut conns).await {
                tokio::spawn(async move {
                    let mut b = [0u8; 4];
                    if c.read_exact(&mut b).await.is_ok() {
                        let _ = c.write_all(&b).await;
                        let _ = c.flush().await;
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr, connector: tokio_rustls::TlsConnector) -> io::Result<[u8; 4]> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"ping").await?;
        tls.flush().await?;
        let mut b = [0u8; 4];
        tls.read_exact(&mut b).await?;
        Ok(b)
    }

    #[tokio::test]
    async fn mutual_tls_accepts_its_clients_and_refuses_the_rest() {
        let p = pki();
        let addr = echo(TlsPort::parse(&ssl_config(&p, true), "ssl", Alpn::Http11).unwrap()).await;
        assert_eq!(&round_trip(addr, client(&p, true, &p.ca)).await.unwrap(), b"ping");
        assert!(round_trip(addr, client(&p, false, &p.ca)).await.is_err(), "no client certificate");
        let other = pki();
        assert!(round_trip(addr, client(&other, true, &other.ca)).await.is_err(), "a client of another CA");
        // Plaintext on the TLS port gets no answer, and the port serves on after it.
        let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
        plain.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut b = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut b)).await.unwrap();
        assert!(!b.starts_with(b"HTTP"), "{b:?}");
        assert_eq!(&round_trip(addr, client(&p, true, &p.ca)).await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn server_only_tls() {
        let p = pki();
        let addr = echo(TlsPort::parse(&ssl_config(&p, false), "ssl", Alpn::H2).unwrap()).await;
        assert_eq!(&round_trip(addr, client(&p, false, &p.ca)).await.unwrap(), b"ping");
        let other = pki();
        assert!(round_trip(addr, client(&p, false, &other.ca)).await.is_err(), "the client does not trust it");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let p = pki();
        let err = |text: &str| TlsPort::parse(text, "ssl.cfg", Alpn::H2).unwrap_err().message;
        let no_ca = format!("server_key: {:?}\nserver_cert: {:?}\nclient_verify: true", p.server_key, p.server_cert);
        assert!(err(&no_ca).contains("client_verify needs custom_ca"), "{}", err(&no_ca));
        let other = pki();
        let mismatched = format!("server_key: {:?}\nserver_cert: {:?}", other.server_key, p.server_cert);
        assert!(err(&mismatched).contains("does not fit"), "{}", err(&mismatched));
        assert!(err("server_key: \"x\"").contains("server_cert holds no PEM certificate"));
        assert!(err(&format!("server_cert: {:?}", p.server_cert)).contains("server_key"));
        assert!(err("bogus: 1").contains("ssl.cfg"));
    }
}
