//! Idle keep-alive connections to one upstream, one pool per edge worker. An idle
//! connection is only its socket: no task polls it and no buffer is kept for it, so holding
//! hundreds costs file descriptors, not memory. Read buffers are kept apart, a few per pool,
//! and lent to a connection only while it has bytes to read (see
//! [`super::body::poll_read_more`]), so a busy pool reads into the same memory request after
//! request instead of allocating a buffer each time, and a request waiting on the PBX holds
//! none. Newest first, so a quiet period lets the extra connections of a burst age out; a
//! connection the PBX closed while it sat here is noticed when it is taken (the reactor
//! already knows) and dropped.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::body::READ_BUFFER;
use super::codec::Pieces;
use super::connect::Stream;

/// A connection in use: its socket and the bytes read from it but not yet consumed.
pub struct Conn {
    pub stream: Stream,
    /// Lent by the pool once there are bytes to read; empty and without capacity before.
    pub read_buf: BytesMut,
    /// How much room the next read that needs some makes (grows while reads fill it).
    pub read_size: usize,
    /// How the answer's pieces leave `read_buf`, as the client in front of it needs.
    pub pieces: Pieces,
}

impl Conn {
    pub fn new(stream: Stream) -> Self {
        Conn {
            stream,
            read_buf: BytesMut::new(),
            read_size: READ_BUFFER,
            pieces: Pieces::Shared,
        }
    }
}

/// Read buffers a pool keeps to lend. A worker reads one answer at a time and a buffer goes
/// back as soon as its connection waits, so a few cover the answers being streamed at once.
const SPARE_BUFFERS: usize = 8;
/// A buffer grown for a large body is not kept: the next answer is most likely small.
const SPARE_MAX_BYTES: usize = 4 * READ_BUFFER;

struct Idle {
    stream: Stream,
    since: Instant,
}

#[derive(Default)]
struct Kept {
    idle: VecDeque<Idle>,
    buffers: Vec<BytesMut>,
}

/// The idle connections of one worker to one upstream. Aligned to two cache lines so that
/// two workers' pools, each locked twice per request, never share one.
#[repr(align(128))]
pub struct Pool {
    kept: Mutex<Kept>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Pool {
            kept: Mutex::new(Kept::default()),
            max_idle,
            idle_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A kept read buffer, or an empty one that the read makes room in.
    pub fn lend_buffer(&self) -> BytesMut {
        self.lock().buffers.pop().unwrap_or_default()
    }

    /// Keeps an emptied read buffer for the next connection that reads, unless enough are
    /// kept or it grew for a large body.
    pub fn return_buffer(&self, buf: BytesMut) {
        let mut kept = self.lock();
        Self::keep_buffer(&mut kept, buf);
    }

    fn keep_buffer(kept: &mut Kept, buf: BytesMut) {
        let capacity = buf.capacity();
        if kept.buffers.len() < SPARE_BUFFERS && capacity > 0 && capacity <= SPARE_MAX_BYTES {
            kept.buffers.push(buf);
        }
    }

    /// The most recently used connection that is still open, if any.
    pub fn take(&self) -> Option<Conn> {
        let now = Instant::now();
        let mut dropped = Vec::new();
        let found = {
            let mut kept = self.lock();
            let idle = &mut kept.idle;
            loop {
                let Some(entry) = idle.pop_back() else {
                    break None;
                };
                if now.duration_since(entry.since) >= self.idle_timeout {
                    // Everything older has expired too.
                    dropped.push(entry);
                    dropped.extend(idle.drain(..));
                    break None;
                }
                if entry.stream.idle_is_broken() {
                    dropped.push(entry);
                    continue;
                }
                break Some(Conn::new(entry.stream));
            }
        };
        // Closing sockets is done outside the lock.
        drop(dropped);
        found
    }

    /// Keeps `conn` for the next request, unless its read buffer holds bytes nobody asked
    /// for (then it is closed); the oldest connection goes when the pool is full.
    pub fn put(&self, conn: Conn) {
        if !conn.read_buf.is_empty() || self.max_idle == 0 {
            return;
        }
        let entry = Idle {
            stream: conn.stream,
            since: Instant::now(),
        };
        let evicted = {
            let mut kept = self.lock();
            Self::keep_buffer(&mut kept, conn.read_buf);
            kept.idle.push_back(entry);
            (kept.idle.len() > self.max_idle).then(|| kept.idle.pop_front())
        };
        drop(evicted);
    }

    /// Closes the connections idle for longer than the timeout; returns how many.
    /// A pool left with no connection gives its read buffers back too.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let (expired, buffers) = {
            let mut kept = self.lock();
            let fresh = (kept.idle.iter())
                .position(|entry| now.duration_since(entry.since) < self.idle_timeout)
                .unwrap_or(kept.idle.len());
            let expired: Vec<Idle> = kept.idle.drain(..fresh).collect();
            let buffers = match kept.idle.is_empty() {
                true => std::mem::take(&mut kept.buffers),
                false => Vec::new(),
            };
            (expired, buffers)
        };
        drop(buffers);
        expired.len()
    }

    /// How many connections are idle now.
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.lock().idle.len()
    }

    /// How many read buffers are kept, not lent.
    #[cfg(test)]
    pub fn spare_count(&self) -> usize {
        self.lock().buffers.len()
    }
}
