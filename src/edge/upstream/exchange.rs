//! One request and its answer's head on one connection. A request without a body is its
//! head, written at once; a request with a body is an [`Upload`] that moves forward while the
//! answer's head is awaited (and after it, inside the answer's body). Informational answers
//! other than `101` are skipped, as the client never asked for them.

use std::future::poll_fn;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use http::{Method, StatusCode};
use tokio::io::AsyncWriteExt;

use super::ClientError;
use super::body::poll_read_more;
use super::codec::{self, Framing, ResponseHead};
use super::pool::{Conn, Pool};
use super::upload::Upload;

/// Writes a request that has no body.
pub async fn write_head(conn: &mut Conn, head: &[u8]) -> Result<(), ClientError> {
    conn.stream
        .write_all(head)
        .await
        .map_err(ClientError::NoAnswer)?;
    conn.stream.flush().await.map_err(ClientError::NoAnswer)
}

/// Reads until the answer's head (not an informational one) is complete, moving `upload`
/// forward meanwhile; `upload` is `None` once it is all written. Read buffers are lent by
/// `pool`.
pub async fn read_head(
    conn: &mut Conn,
    pool: &Pool,
    method: &Method,
    upload: &mut Option<Upload>,
) -> Result<ResponseHead, ClientError> {
    let mut answered = false;
    poll_fn(|cx| {
        // The answer first: a PBX that answered early (a 413) and closed makes the rest of
        // the upload fail, and its answer is what the client should get.
        if let Poll::Ready(head) = poll_head(conn, pool, method, &mut answered, cx) {
            return Poll::Ready(head);
        }
        if let Some(sending) = upload
            && let Poll::Ready(sent) = sending.poll_send(&mut conn.stream, cx)
        {
            sent?;
            *upload = None;
        }
        Poll::Pending
    })
    .await
}

fn poll_head(
    conn: &mut Conn,
    pool: &Pool,
    method: &Method,
    answered: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Result<ResponseHead, ClientError>> {
    loop {
        if let Some(head) = codec::parse_response_head(&mut conn.read_buf, method, conn.pieces)? {
            if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS {
                *answered = true;
                continue;
            }
            return Poll::Ready(Ok(head));
        }
        let error = match ready!(poll_read_more(conn, pool, cx)) {
            Ok(0) if !*answered && conn.read_buf.is_empty() => {
                ClientError::NoAnswer(std::io::ErrorKind::UnexpectedEof.into())
            }
            Ok(0) => ClientError::ClosedEarly,
            Ok(_) => {
                *answered = true;
                continue;
            }
            Err(e) if !*answered => ClientError::NoAnswer(e),
            Err(e) => ClientError::Io(e),
        };
        return Poll::Ready(Err(error));
    }
}

/// How the request's body goes on the wire: its `content-length` when it has one; nothing
/// for an empty body (`content-length: 0` for the methods that expect a body); chunked
/// otherwise (an HTTP/2 client's body of unknown length).
pub fn request_framing(parts: &http::request::Parts, body: &Body) -> Framing {
    use http_body::Body as _;
    let length = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) => Framing::Length(n),
        None if body.is_end_stream() => match parts.method {
            Method::POST | Method::PUT | Method::PATCH => Framing::Length(0),
            _ => Framing::None,
        },
        None => Framing::Chunked,
    }
}
