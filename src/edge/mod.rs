//! The edge: TLS termination, the HTTP/1.1 + HTTP/2 server, and the reverse proxy to the PBX.
//!
//! - [`tls`]: certificates, the SNI resolver, self-signed generation, reload.
//! - [`server`]: accept loops and the certificate reload task.
//! - [`workers`]: the threads with one event loop each that serve client connections.
//! - [`conn`]: one connection's life: handshake, HTTP, idle timeout, shutdown.
//! - [`gated`]: a future polled only when its own waker fired (a connection's watchers).
//! - [`proxy`]: forwarding to the upstream, streaming, WebSocket splicing.
//! - [`upstream`]: the HTTP/1.1 client for the PBX, driven from the request's own task.
//! - [`proxy_protocol`]: the client address from a trusted balancer's PROXY header.
//! - [`added_headers`]: the fields the proxy adds (identity, bearer), in wire form.
//! - [`headers`]: hop-by-hop, forwarding and identity header rules.
//! - [`slow`]: slow clients: a minimum request-body rate, responses nobody reads, idle
//!   connections and tunnels.
//! - [`access_log`]: the per-request log line and request metrics.
//! - [`access_line`]: that line formatted by hand, straight to the log writer.
//! - [`problem`]: the gateway's own error answers, status codes in one place.

pub(crate) mod access_line;
pub(crate) mod access_log;
pub(crate) mod added_headers;
pub(crate) mod conn;
mod gated;
pub(crate) mod headers;
pub(crate) mod problem;
pub(crate) mod proxy;
pub(crate) mod proxy_protocol;
pub(crate) mod server;
pub(crate) mod slow;
pub(crate) mod tls;
pub(crate) mod upstream;
pub(crate) mod workers;

pub use access_line::{AccessLogFormat, install as install_access_log};
pub use conn::ConnInfo;
pub use proxy_protocol::v2_header;
pub use tls::install_default_crypto_provider;
pub use upstream::decode_answer as decode_upstream_answer;
