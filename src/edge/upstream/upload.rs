//! A request body on its way to the PBX, moved forward by polling, never by a task of its
//! own: while the answer's head is awaited, and after it, by the answer's body, so a PBX
//! that answers as the body streams in (an echo, a long upload with progress) gets both
//! directions at once. Small pieces are gathered behind the head into one write; large
//! pieces go out as they are, without a copy.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as _;
use tokio::io::AsyncWrite;

use super::ClientError;
use super::codec::{self, Framing};
use super::connect::Stream;

/// Pieces up to this size are copied into the gathering buffer.
const GATHER: usize = 16 * 1024;

/// The request head and body still to be written.
pub struct Upload {
    body: Body,
    chunked: bool,
    /// The declared length (`content-length`), checked against what the client sent.
    length: Option<u64>,
    sent: u64,
    /// Pieces ready to be written, in order, then `gathering`.
    queued: VecDeque<Bytes>,
    gathering: BytesMut,
    body_done: bool,
}

impl Upload {
    /// `head` followed by `body` framed as `framing` (`Length` or `Chunked`).
    pub fn new(head: BytesMut, body: Body, framing: Framing) -> Self {
        Upload {
            body,
            chunked: framing == Framing::Chunked,
            length: match framing {
                Framing::Length(n) => Some(n),
                _ => None,
            },
            sent: 0,
            queued: VecDeque::new(),
            gathering: head,
            body_done: false,
        }
    }

    /// Writes what it can; `Ready(Ok)` once the whole request is written and flushed.
    pub fn poll_send(
        &mut self,
        stream: &mut Stream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ClientError>> {
        loop {
            ready!(self.poll_write_queued(stream, cx))?;
            if self.body_done {
                return Pin::new(stream).poll_flush(cx).map_err(ClientError::Io);
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.queue(data);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(ClientError::RequestBody(e.into())));
                }
                Poll::Ready(None) => self.end()?,
                Poll::Pending => {
                    // The client makes us wait: what was gathered goes out meanwhile.
                    ready!(self.poll_write_queued(stream, cx))?;
                    ready!(Pin::new(stream).poll_flush(cx)).map_err(ClientError::Io)?;
                    return Poll::Pending;
                }
            }
        }
    }

    fn queue(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.sent += data.len() as u64;
        if self.chunked {
            codec::encode_chunk_size(&mut self.gathering, data.len());
        }
        if data.len() <= GATHER {
            self.gathering.extend_from_slice(&data);
        } else {
            if !self.gathering.is_empty() {
                self.queued.push_back(self.gathering.split().freeze());
            }
            self.queued.push_back(data);
        }
        if self.chunked {
            self.gathering.extend_from_slice(b"\r\n");
        }
    }

    fn end(&mut self) -> Result<(), ClientError> {
        self.body_done = true;
        if self.chunked {
            self.gathering.extend_from_slice(codec::LAST_CHUNK);
        }
        match self.length {
            Some(n) if n != self.sent => Err(ClientError::BodyLength),
            _ => Ok(()),
        }
    }

    /// Writes the queued pieces, then the gathered bytes, until done or the socket is full.
    fn poll_write_queued(
        &mut self,
        stream: &mut Stream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ClientError>> {
        loop {
            let next: &mut dyn Buf = match self.queued.front_mut() {
                Some(piece) => piece,
                None if !self.gathering.is_empty() => &mut self.gathering,
                None => return Poll::Ready(Ok(())),
            };
            let written = ready!(Pin::new(&mut *stream).poll_write(cx, next.chunk()))
                .map_err(ClientError::Io)?;
            if written == 0 {
                return Poll::Ready(Err(ClientError::Io(std::io::ErrorKind::WriteZero.into())));
            }
            next.advance(written);
            if self.queued.front().is_some_and(|piece| piece.is_empty()) {
                self.queued.pop_front();
            }
        }
    }
}
