//! A real TLS client for tests: rustls with the test CA as the only root, explicit SNI and
//! ALPN, and hyper's HTTP/1.1 and HTTP/2 client connections on top.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ReqBody = BoxBody<Bytes, BoxError>;

pub fn body(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> ReqBody {
    body(Bytes::new())
}

/// Opens a TLS connection to `addr` presenting `sni`, offering `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    roots: &rustls::RootCertStore,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tls_after(tcp, sni, roots, alpn).await
}

/// TLS on an open TCP connection (after a PROXY protocol header, say).
pub async fn tls_after(
    tcp: TcpStream,
    sni: &str,
    roots: &rustls::RootCertStore,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots.clone())
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// DER of the certificate the server presented.
pub fn presented_leaf(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server sent certificates")[0]
        .to_vec()
}

/// An HTTP/1.1 connection over TLS.
pub async fn h1(
    addr: SocketAddr,
    sni: &str,
    roots: &rustls::RootCertStore,
) -> http1::SendRequest<ReqBody> {
    let tls = tls_connect(addr, sni, roots, &[b"http/1.1"])
        .await
        .expect("TLS handshake");
    let (sender, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    sender
}

/// An HTTP/2 connection over TLS (ALPN h2).
pub async fn h2(
    addr: SocketAddr,
    sni: &str,
    roots: &rustls::RootCertStore,
) -> http2::SendRequest<ReqBody> {
    let tls = tls_connect(addr, sni, roots, &[b"h2"])
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// A GET with `Host` set, for HTTP/1.1.
pub fn get(host: &str, path: &str) -> Request<ReqBody> {
    Request::get(path)
        .header("host", host)
        .body(empty())
        .unwrap()
}

/// Reads a whole response body.
pub async fn read_body(response: Response<Incoming>) -> (http::response::Parts, Bytes) {
    let (parts, body) = response.into_parts();
    (parts, body.collect().await.expect("body").to_bytes())
}

/// Sends on HTTP/1.1 and returns the status and whole body as text.
pub async fn fetch(
    sender: &mut http1::SendRequest<ReqBody>,
    req: Request<ReqBody>,
) -> (http::response::Parts, String) {
    let response = sender.send_request(req).await.expect("response");
    let (parts, bytes) = read_body(response).await;
    (parts, String::from_utf8_lossy(&bytes).into_owned())
}
