//! The edge: TLS termination, the HTTP/1.1 + HTTP/2 server, and the reverse proxy to the PBX.
//!
//! - [`tls`]: certificates, the SNI resolver, self-signed generation, reload.
//! - [`server`]: accept loops and the certificate reload task.
//! - [`conn`]: one connection's life: handshake, HTTP, idle timeout, shutdown.
//! - [`proxy`]: forwarding to the upstream, streaming, WebSocket splicing.
//! - [`proxy_protocol`]: the client address from a trusted balancer's PROXY header.
//! - [`headers`]: hop-by-hop, forwarding and identity header rules.
//! - [`slow`]: slow clients: a minimum request-body rate, responses nobody reads, idle
//!   connections and tunnels.
//! - [`access_log`]: the per-request log line and request metrics.
//! - [`problem`]: the gateway's own error answers, status codes in one place.

pub mod access_log;
pub mod conn;
pub mod headers;
pub mod problem;
pub mod proxy;
pub mod proxy_protocol;
pub mod server;
pub mod slow;
pub mod tls;
