//! Opening a connection to the PBX: TCP (no Nagle, keep-alive probes) and, for an `https`
//! upstream, TLS with the system roots plus `[upstream] ca_file`. The result is a
//! [`Stream`], which the exchange reads and writes directly from the request's task.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Scheme, Uri};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::ClientError;
use crate::config::UpstreamConfig;
use crate::edge::tls::TlsError;

/// How long an idle connection waits before the kernel probes whether the PBX is still there.
const KEEPALIVE_TIME: Duration = Duration::from_secs(60);

/// Where one upstream lives and how to reach it.
#[derive(Clone)]
pub struct Endpoint {
    host: Arc<str>,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Endpoint {
    /// The endpoint of a validated upstream URL (`http` or `https`, with a host); an error
    /// when an `https` URL's host cannot be checked against a certificate.
    pub fn new(
        uri: &Uri,
        tls: &Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
    ) -> Result<Self, TlsError> {
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let host = uri.host().unwrap_or("localhost");
        // `[::1]` in a URL is `::1` on the socket and in the certificate check.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = match https {
            true => {
                let name = ServerName::try_from(bare.to_owned())
                    .map_err(|e| TlsError::UpstreamName(format!("{bare}: {e}")))?;
                Some((TlsConnector::from(tls.clone()), name))
            }
            false => None,
        };
        Ok(Endpoint {
            host: bare.into(),
            port,
            tls,
            connect_timeout,
        })
    }

    /// A new connection, within `[upstream] connect_timeout` (name lookup, TCP and TLS).
    pub async fn connect(&self) -> Result<Stream, ClientError> {
        match tokio::time::timeout(self.connect_timeout, self.open()).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::ConnectTimeout),
        }
    }

    async fn open(&self) -> Result<Stream, ClientError> {
        let tcp = self.open_tcp().await.map_err(ClientError::Connect)?;
        let Some((connector, name)) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(ClientError::Connect)?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// Tries every address the name resolves to, in order, and keeps the last error.
    async fn open_tcp(&self) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
        for addr in tokio::net::lookup_host((&*self.host, self.port)).await? {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    tcp.set_nodelay(true)?;
                    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_TIME);
                    socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
                    return Ok(tcp);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// One connection to the PBX, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether the PBX has closed (or written unasked to) this idle connection, as far as
    /// the reactor has seen: no system call unless the socket was reported readable.
    pub fn idle_is_broken(&self) -> bool {
        let tcp = match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        };
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match tcp.poll_peek(&mut cx, &mut buf) {
            Poll::Pending => false,
            // A plain connection has nothing to say between answers; TLS may send session
            // tickets, which the next read takes care of.
            Poll::Ready(Ok(n)) => n == 0 || matches!(self, Stream::Plain(_)),
            Poll::Ready(Err(_)) => true,
        }
    }

    /// Ready once a read may find bytes: a plain socket the reactor reports readable. A TLS
    /// stream is always ready, since rustls may hold decrypted bytes the socket no longer
    /// shows: only a read tells.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(tcp) => tcp.poll_read_ready(cx),
            Stream::Tls(_) => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The TLS settings of every `https` upstream: the system roots and `[upstream] ca_file`,
/// HTTP/1.1 offered in ALPN.
pub fn tls_config(config: &UpstreamConfig) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &config.ca_file {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let err = |reason: String| TlsError::Load {
            key: "upstream.ca_file".into(),
            path: path.clone(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))?;
        for cert in certs {
            roots
                .add(cert.map_err(|e| err(e.to_string()))?)
                .map_err(|e| err(e.to_string()))?;
        }
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(crate::edge::tls::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}
