//! The upstream's response body, read straight from the connection by whoever polls it
//! (the client connection's task): no connection task, no channel between them. Once the
//! body's last byte is read the connection goes back to its pool; a body dropped before its
//! end closes the connection, since nobody knows where its next answer would start.
//! [`Upgraded`] is the same connection after `101 Switching Protocols`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ClientError;
use super::codec::{Chunk, ChunkedDecoder, Framing};
use super::connect::Stream;
use super::pool::{Conn, Pool};
use super::upload::Upload;

/// What a connection's first read makes room for: one page, like nginx's
/// `proxy_buffer_size`, which holds a typical answer's head and a small body. A large body
/// handed on keeps its part of the buffer alive until the client has it; at 16 KiB, when
/// every body did, 320 HTTP/2 streams held 11 MB (heaptrack, docs/benchmarks.md).
pub const READ_BUFFER: usize = 4 * 1024;
/// The most one read makes room for: a large body is read in pieces this big.
const READ_BUFFER_MAX: usize = 64 * 1024;
/// Below this much free space a read first makes room for another piece.
const READ_MIN_SPACE: usize = 1024;

/// Reads more of the connection's bytes into its buffer; `Ok(0)` at end of stream. A read
/// that filled all the room it had doubles the room the next one gets, so a large body
/// quickly moves in large pieces while small answers keep small buffers.
///
/// The buffer is borrowed from `pool` only once the socket has bytes, and given back when a
/// read leaves it empty and waiting, so a request waiting on the PBX holds no read buffer:
/// under HTTP/2 a few hundred streams wait at once while a worker reads one answer at a
/// time. What was handed on from it is shared or copied as [`Conn::pieces`] says.
pub fn poll_read_more(
    conn: &mut Conn,
    pool: &Pool,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if conn.read_buf.capacity() == 0 {
        ready!(conn.stream.poll_read_ready(cx))?;
        conn.read_buf = pool.lend_buffer();
    }
    if conn.read_buf.capacity() - conn.read_buf.len() < READ_MIN_SPACE {
        conn.read_buf.reserve(conn.read_size);
    }
    let room = conn.read_buf.capacity() - conn.read_buf.len();
    let polled = tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.read_buf);
    match polled {
        Poll::Ready(Ok(n)) if n == room => {
            conn.read_size = (conn.read_size * 2).min(READ_BUFFER_MAX);
        }
        Poll::Pending if conn.read_buf.is_empty() => {
            pool.return_buffer(std::mem::take(&mut conn.read_buf));
        }
        _ => {}
    }
    polled
}

/// Where a finished connection goes: its origin's pool of the worker it was taken on. That
/// pool's own handle, not the origin's: only this worker counts its references, where a
/// handle to the origin would be counted by every worker's requests.
pub struct Return(pub Arc<Pool>);

impl Return {
    fn pool(&self) -> &Pool {
        &self.0
    }
}

enum State {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// A response body streamed from the upstream connection.
pub struct UpstreamBody {
    state: State,
    conn: Option<Conn>,
    keep_alive: bool,
    home: Option<Return>,
    /// The rest of a request body the PBX started answering before it had it all.
    upload: Option<Upload>,
}

impl UpstreamBody {
    /// A body framed as `framing` on `conn`; the connection goes `home` after the body when
    /// `keep_alive` allows and the request was sent whole (`upload` is what is left of it).
    pub fn new(
        framing: Framing,
        conn: Conn,
        keep_alive: bool,
        home: Return,
        upload: Option<Upload>,
    ) -> Self {
        let state = match framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(ChunkedDecoder::taking(conn.pieces)),
            Framing::Close => State::UntilClose,
        };
        let mut body = UpstreamBody {
            state,
            conn: Some(conn),
            keep_alive: keep_alive && framing != Framing::Close,
            home: Some(home),
            upload,
        };
        if matches!(body.state, State::Done) {
            body.finish();
        }
        body
    }

    /// No body (the answer to an upgrade: what follows is the other protocol's).
    pub fn empty() -> Self {
        UpstreamBody {
            state: State::Done,
            conn: None,
            keep_alive: false,
            home: None,
            upload: None,
        }
    }

    /// The body is read to its end: the connection is kept for the next request if it can be.
    fn finish(&mut self) {
        self.state = State::Done;
        let (Some(conn), Some(home)) = (self.conn.take(), self.home.take()) else {
            return;
        };
        // A request the PBX answered before it was all sent leaves the connection mid-message.
        if self.keep_alive && self.upload.is_none() {
            home.pool().put(conn);
        }
    }

    /// The next piece of the body already in the read buffer, if the framing allows one.
    fn next_buffered(&mut self) -> Result<Option<Frame<Bytes>>, ClientError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let buf = &mut conn.read_buf;
        let (frame, end) = match &mut self.state {
            State::Length(rest) if !buf.is_empty() => {
                let n = (*rest).min(buf.len() as u64) as usize;
                *rest -= n as u64;
                (Some(Frame::data(conn.pieces.take(buf, n))), *rest == 0)
            }
            State::UntilClose if !buf.is_empty() => {
                let n = buf.len();
                (Some(Frame::data(conn.pieces.take(buf, n))), false)
            }
            State::Chunked(decoder) => match decoder.decode(buf)? {
                Chunk::Data(data) => (Some(Frame::data(data)), false),
                Chunk::End(trailers) => (trailers.map(Frame::trailers), true),
                Chunk::Incomplete => (None, false),
            },
            _ => (None, false),
        };
        if end {
            self.finish();
        }
        Ok(frame)
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = ClientError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientError>>> {
        let this = self.get_mut();
        loop {
            if matches!(this.state, State::Done) {
                return Poll::Ready(None);
            }
            match this.next_buffered() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Err(e) => return Poll::Ready(Some(Err(this.fail(e)))),
                Ok(None) if matches!(this.state, State::Done) => return Poll::Ready(None),
                Ok(None) => {}
            }
            let (Some(conn), Some(home)) = (this.conn.as_mut(), this.home.as_ref()) else {
                return Poll::Ready(None);
            };
            if let Some(upload) = this.upload.as_mut()
                && let Poll::Ready(sent) = upload.poll_send(&mut conn.stream, cx)
            {
                this.upload = None;
                if let Err(e) = sent {
                    return Poll::Ready(Some(Err(this.fail(e))));
                }
            }
            match ready!(poll_read_more(conn, home.pool(), cx)) {
                Ok(0) if matches!(this.state, State::UntilClose) => {
                    this.state = State::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(this.fail(ClientError::ClosedEarly)))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(this.fail(ClientError::Io(e))))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl UpstreamBody {
    /// A broken body ends here, and its connection with it.
    fn fail(&mut self, error: ClientError) -> ClientError {
        self.state = State::Done;
        self.conn = None;
        error
    }
}

/// The upstream connection after `101 Switching Protocols`, starting with whatever the PBX
/// sent right behind its answer.
pub struct Upgraded {
    stream: Stream,
    early: BytesMut,
}

impl Upgraded {
    pub fn new(conn: Conn) -> Self {
        Upgraded {
            stream: conn.stream,
            early: conn.read_buf,
        }
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.early.has_remaining() {
            let n = this.early.len().min(buf.remaining());
            buf.put_slice(&this.early[..n]);
            this.early.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
