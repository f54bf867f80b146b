//! The gateway's own HTTP/1.1 client for the PBX. A proxied request is written to, and its
//! answer read from, the upstream connection by the task serving the client, and the answer's
//! body is read by whoever polls it: no connection task, no channel, no hand-off between
//! tasks per request (what a general-purpose client such as hyper-util's pays, and what
//! profiles showed as the proxy's overhead against nginx). An idle connection is a socket in
//! its worker's [`pool`], nothing else.
//!
//! - [`codec`]: request heads, response heads, chunked bodies on the wire.
//! - [`connect`]: TCP and TLS to the PBX.
//! - [`pool`]: idle connections per worker.
//! - [`exchange`]: one request written and its answer's head read.
//! - [`upload`]: a request body moved forward by polling, both directions at once.
//! - [`body`]: the answer's body, and the connection after an upgrade.

mod body;
mod codec;
mod connect;
mod exchange;
mod pool;
#[cfg(test)]
mod tests;
mod upload;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::BytesMut;
use http::{Response, StatusCode};

pub use body::{Upgraded, UpstreamBody};
pub use codec::{Pieces, ProtocolError, decode_answer};
pub use connect::{Endpoint, tls_config};

use super::added_headers::AddedHeaders;
use body::Return;
use codec::{Framing, ResponseHead};
use pool::{Conn, Pool};
use upload::Upload;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request to the PBX got no (complete) answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),
    #[error("no connection within the connect timeout")]
    ConnectTimeout,
    #[error("the connection closed before an answer: {0}")]
    NoAnswer(#[source] io::Error),
    #[error("the connection closed in the middle of the answer")]
    ClosedEarly,
    #[error("the connection failed: {0}")]
    Io(#[source] io::Error),
    #[error("the answer is not HTTP/1.1: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("the request body failed: {0}")]
    RequestBody(#[source] BoxError),
    #[error("the request body does not match its content-length")]
    BodyLength,
}

impl ClientError {
    /// The PBX could not be reached at all.
    pub fn is_connect(&self) -> bool {
        matches!(self, ClientError::Connect(_) | ClientError::ConnectTimeout)
    }
}

/// The PBX's answer: the response, and the connection itself after `101 Switching Protocols`.
pub struct Answer {
    pub response: Response<UpstreamBody>,
    pub upgraded: Option<Upgraded>,
}

/// One upstream (scheme, host and port) and its idle connections, a pool per edge worker.
pub struct Origin {
    endpoint: Endpoint,
    pools: Box<[Arc<Pool>]>,
}

impl Origin {
    pub fn new(endpoint: Endpoint, workers: usize, max_idle: usize, idle: Duration) -> Self {
        let pools = (0..workers.max(1))
            .map(|_| Arc::new(Pool::new(max_idle, idle)))
            .collect();
        Origin { endpoint, pools }
    }

    /// Sends a request whose headers are ready for the wire (hop-by-hop headers removed,
    /// `Host` set), with the `added` lines after them, and returns the answer once its head
    /// is in; a request body still being sent then goes on inside the answer's body. The
    /// answer's pieces leave the read buffer as `pieces` says.
    pub async fn send(
        self: &Arc<Self>,
        parts: &http::request::Parts,
        added: &[&AddedHeaders],
        body: Body,
        pieces: Pieces,
    ) -> Result<Answer, ClientError> {
        let framing = exchange::request_framing(parts, &body);
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        // Sized by the encoder, which counts the fields and the added lines: one allocation.
        let mut head = BytesMut::new();
        let (method, headers) = (&parts.method, &parts.headers);
        codec::encode_request_head(&mut head, method, target, headers, added, framing);
        let worker = crate::edge::workers::current().unwrap_or(0) % self.pools.len();
        if framing == Framing::None {
            return self
                .send_bodiless(&head, &parts.method, worker, pieces)
                .await;
        }
        let (mut conn, _) = self.checkout(worker, pieces).await?;
        let mut upload = Some(Upload::new(head, body, framing));
        let pool = &self.pools[worker];
        let answer = exchange::read_head(&mut conn, pool, &parts.method, &mut upload).await?;
        Ok(self.answer(conn, answer, worker, upload))
    }

    /// An idempotent request without a body can be sent twice: when a kept connection
    /// turns out closed before any answer, the request goes again on another connection.
    async fn send_bodiless(
        self: &Arc<Self>,
        head: &[u8],
        method: &http::Method,
        worker: usize,
        pieces: Pieces,
    ) -> Result<Answer, ClientError> {
        loop {
            let (mut conn, reused) = self.checkout(worker, pieces).await?;
            let result = match exchange::write_head(&mut conn, head).await {
                Ok(()) => {
                    let pool = &self.pools[worker];
                    exchange::read_head(&mut conn, pool, method, &mut None).await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(answer) => return Ok(self.answer(conn, answer, worker, None)),
                Err(ClientError::NoAnswer(_)) if reused && method.is_idempotent() => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// A kept connection of this worker's pool (`true`), or a new one.
    async fn checkout(&self, worker: usize, pieces: Pieces) -> Result<(Conn, bool), ClientError> {
        let (mut conn, reused) = match self.pools[worker].take() {
            Some(conn) => (conn, true),
            None => {
                // Boxed: the connect future (name lookup, TLS handshake) is large, and every
                // request's future would otherwise carry its size and be copied with it.
                let stream = Box::pin(self.endpoint.connect()).await?;
                (Conn::new(stream), false)
            }
        };
        conn.pieces = pieces;
        Ok((conn, reused))
    }

    fn answer(
        self: &Arc<Self>,
        conn: Conn,
        head: ResponseHead,
        worker: usize,
        upload: Option<Upload>,
    ) -> Answer {
        let (body, upgraded) = match head.status {
            StatusCode::SWITCHING_PROTOCOLS => (UpstreamBody::empty(), Some(Upgraded::new(conn))),
            _ => {
                let home = Return(self.pools[worker].clone());
                let body = UpstreamBody::new(head.framing, conn, head.keep_alive, home, upload);
                (body, None)
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        Answer { response, upgraded }
    }

    /// Closes the connections that stayed idle past the timeout; returns how many.
    pub fn sweep(&self) -> usize {
        self.pools.iter().map(|p| p.sweep()).sum()
    }

    /// Idle connections in all pools.
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.pools.iter().map(|p| p.idle_count()).sum()
    }

    /// Read buffers kept in all pools, not lent to a connection.
    #[cfg(test)]
    pub fn spare_count(&self) -> usize {
        self.pools.iter().map(|p| p.spare_count()).sum()
    }
}
