//! A stub PBX: a plain HTTP/1.1 server on 127.0.0.1:0 with routes that let tests see exactly
//! what the gateway forwarded, stream bodies back, hang, hold a request until released, and
//! echo WebSocket frames.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Notify, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

type Body = BoxBody<Bytes, hyper::Error>;

pub struct StubUpstream {
    pub addr: SocketAddr,
    /// One message per request that reached `/held`.
    pub held_arrivals: Mutex<mpsc::UnboundedReceiver<()>>,
    /// Releases every request waiting in `/held`.
    pub release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StubUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Shared {
    arrived: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
}

impl StubUpstream {
    pub async fn start() -> StubUpstream {
        Self::start_with(None).await
    }

    /// The same stub behind TLS with `leaf` (a PBX with its own certificate).
    pub async fn start_tls(leaf: &super::pki::Leaf) -> StubUpstream {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let cert = CertificateDer::from_pem_file(&leaf.cert).unwrap();
        let key = PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> StubUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let shared = Shared {
            arrived: tx,
            release: release.clone(),
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                serve(stream, shared).await;
                            }
                        }
                        None => serve(stream, shared).await,
                    }
                });
            }
        });
        StubUpstream {
            addr,
            held_arrivals: Mutex::new(rx),
            release,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn serve<S>(stream: S, shared: Shared)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| route(req, shared.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await;
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

async fn route(req: Request<Incoming>, shared: Shared) -> Result<Response<Body>, Infallible> {
    let response = match req.uri().path() {
        "/hello" => {
            let mut r = full(StatusCode::OK, "hello from upstream");
            let h = r.headers_mut();
            h.insert("connection", "x-internal".parse().unwrap());
            h.insert("x-internal", "secret".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("x-upstream", "yes".parse().unwrap());
            r
        }
        "/headers" => full(StatusCode::OK, headers_json(&req)),
        "/echo" => Response::new(req.into_body().boxed()),
        // Answers once the whole body is in, as a form handler does.
        "/slurp" => match req.into_body().collect().await {
            Ok(body) => full(StatusCode::OK, format!("{} bytes", body.to_bytes().len())),
            Err(_) => full(StatusCode::BAD_REQUEST, "body failed"),
        },
        // More than any socket buffer holds: a client that reads nothing stalls the writer.
        "/big" => full(StatusCode::OK, vec![b'z'; 64 * 1024 * 1024]),
        "/hang" => std::future::pending().await,
        "/held" => {
            let released = shared.release.notified();
            let _ = shared.arrived.send(());
            released.await;
            full(StatusCode::OK, "released")
        }
        "/ws" => websocket_echo(req),
        _ => full(
            StatusCode::NOT_FOUND,
            format!("no such stub route: {}", req.uri()),
        ),
    };
    Ok(response)
}

fn headers_json(req: &Request<Incoming>) -> String {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        headers
            .entry(name.to_string())
            .or_default()
            .push(value.to_str().unwrap_or("<binary>").to_string());
    }
    serde_json::json!({
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    })
    .to_string()
}

fn websocket_echo(mut req: Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return full(StatusCode::BAD_REQUEST, "not a websocket handshake");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            // A close frame is answered by tungstenite itself on the next poll, which then
            // ends the stream.
            if msg.is_text() || msg.is_binary() {
                let _ = ws.send(msg).await;
            }
        }
    });
    let mut r = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = r.headers_mut();
    h.insert("connection", "upgrade".parse().unwrap());
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert(
        "sec-websocket-accept",
        derive_accept_key(key.as_bytes()).parse().unwrap(),
    );
    r
}
