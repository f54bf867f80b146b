//! Slow clients. A request body must keep up a minimum average rate once its grace period
//! is over ([`MinRateBody`]); otherwise reading it fails with [`SlowBody`], the request is
//! answered 408 and the connection closed, so a client dripping one byte at a time cannot
//! hold a connection (and its `max_connections` permit) for ever. The same connection-level
//! bookkeeping ([`Activity`], [`ActivityIo`]) times out idle connections and WebSocket
//! tunnels, and notices a client that stopped reading its response.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A request body that arrived too slowly.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived slower than {min_rate} bytes/s")]
pub struct SlowBody {
    pub min_rate: u64,
}

impl SlowBody {
    /// Whether `error` (or anything in its source chain) is a [`SlowBody`].
    pub fn in_chain(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut current = Some(error);
        while let Some(e) = current {
            if e.is::<SlowBody>() {
                return true;
            }
            current = e.source();
        }
        false
    }
}

/// A body that fails when it averages less than `min_rate` bytes a second after `grace`.
pub struct MinRateBody<B> {
    inner: B,
    min_rate: u64,
    grace: Duration,
    started: Instant,
    received: u64,
    deadline: Pin<Box<Sleep>>,
}

impl<B> MinRateBody<B> {
    pub fn new(inner: B, min_rate: u64, grace: Duration) -> Self {
        let started = Instant::now();
        MinRateBody {
            inner,
            min_rate: min_rate.max(1),
            grace,
            started,
            received: 0,
            deadline: Box::pin(tokio::time::sleep_until((started + grace).into())),
        }
    }

    /// When the body falls below the rate unless more bytes arrive: after the grace period,
    /// and after the time its bytes so far (plus one) are worth at `min_rate`.
    fn due(&self) -> Instant {
        let earned = Duration::from_secs_f64((self.received + 1) as f64 / self.min_rate as f64);
        self.started + self.grace.max(earned)
    }
}

impl<B> Body for MinRateBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received += data.len() as u64;
                    let due = self.due();
                    self.deadline.as_mut().reset(due.into());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if self.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let due = self.due();
                if due > Instant::now() {
                    self.deadline.as_mut().reset(due.into());
                    let _ = self.deadline.as_mut().poll(cx);
                    return Poll::Pending;
                }
                let min_rate = self.min_rate;
                Poll::Ready(Some(Err(Box::new(SlowBody { min_rate }))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a connection moves bytes, and since when a write has been waiting for the client
/// to read. A read or write only bumps a counter: reading the clock on every one cost more
/// than 1 % of a proxied request (docs/benchmarks.md); [`Activity::idle_for`] looks at the
/// counter a few times per idle period instead.
pub struct Activity {
    base: Instant,
    moved: AtomicU64,
    /// Milliseconds since `base` + 1 of the first write the client did not take; 0: none.
    blocked_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            base: Instant::now(),
            moved: AtomicU64::new(0),
            blocked_ms: AtomicU64::new(0),
        }
    }
}

/// How many times per idle period [`Activity::idle_for`] looks whether bytes moved: an idle
/// connection is closed at most a quarter of the period late, never early.
const IDLE_CHECKS: u32 = 4;

impl Activity {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn touch(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }

    fn wrote(&self) {
        self.touch();
        self.flushed();
    }

    fn flushed(&self) {
        // Most writes find nothing waiting: a load, and no store to the shared line.
        if self.blocked_ms.load(Ordering::Relaxed) != 0 {
            self.blocked_ms.store(0, Ordering::Relaxed);
        }
    }

    fn write_waits(&self) {
        let now = self.now_ms() + 1;
        let _ = (self.blocked_ms).compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Since when a write has been waiting for the client, if one is.
    pub fn blocked_since(&self) -> Option<Instant> {
        match self.blocked_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.base + Duration::from_millis(ms - 1)),
        }
    }

    /// Resolves when no byte has moved for `idle` (at most `idle / IDLE_CHECKS` later).
    pub async fn idle_for(&self, idle: Duration) {
        let step = (idle / IDLE_CHECKS).max(Duration::from_millis(1));
        let mut seen = self.moved.load(Ordering::Relaxed);
        // Bytes last moved at or before this.
        let mut quiet_since = Instant::now();
        loop {
            let next = (quiet_since + idle).min(Instant::now() + step);
            tokio::time::sleep_until(next.into()).await;
            let moved = self.moved.load(Ordering::Relaxed);
            if moved != seen {
                seen = moved;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= idle {
                return;
            }
        }
    }

    /// Resolves when one write has waited `timeout` for the client to read.
    pub async fn write_stalled(&self, timeout: Duration) {
        loop {
            match self.blocked_since() {
                None => tokio::time::sleep(timeout).await,
                Some(since) => {
                    tokio::time::sleep_until((since + timeout).into()).await;
                    if self.blocked_since() == Some(since) {
                        return;
                    }
                }
            }
        }
    }
}

/// An I/O stream that records its [`Activity`].
pub struct ActivityIo<I> {
    pub inner: I,
    pub activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for ActivityIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> ActivityIo<I> {
    fn record(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(n)) if *n > 0 => self.activity.wrote(),
            Poll::Pending => self.activity.write_waits(),
            _ => {}
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ActivityIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.record(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.record(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TLS stream takes plaintext into its buffer and waits here for the socket.
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        match &polled {
            Poll::Pending => self.activity.write_waits(),
            Poll::Ready(Ok(())) => self.activity.flushed(),
            Poll::Ready(Err(_)) => {}
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test]
    async fn a_dripping_body_fails_after_its_grace_and_a_quick_one_passes() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, io::Error>>(4);
        let body = StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        let mut slow = MinRateBody::new(body, 100, Duration::from_millis(100));
        tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .unwrap();
        assert!(slow.frame().await.unwrap().is_ok());
        let err = slow.frame().await.unwrap().unwrap_err();
        assert!(SlowBody::in_chain(err.as_ref()), "{err}");

        let quick = StreamBody::new(futures_util::stream::iter(vec![Ok::<_, io::Error>(
            Frame::data(Bytes::from(vec![0u8; 4096])),
        )]));
        let collected = MinRateBody::new(quick, 100, Duration::from_secs(2))
            .collect()
            .await
            .unwrap();
        assert_eq!(collected.to_bytes().len(), 4096);
    }

    #[tokio::test]
    async fn idle_for_waits_out_the_last_byte_and_never_ends_early() {
        let activity = Arc::new(Activity::default());
        let idle = Duration::from_millis(80);
        let last = Arc::new(std::sync::Mutex::new(Instant::now()));
        let busy = tokio::spawn({
            let (activity, last) = (activity.clone(), last.clone());
            async move {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    activity.touch();
                    *last.lock().unwrap() = Instant::now();
                }
            }
        });
        let started = Instant::now();
        activity.idle_for(idle).await;
        busy.await.unwrap();
        let quiet = last.lock().unwrap().elapsed();
        assert!(quiet >= idle, "ended {quiet:?} after the last byte");
        assert!(started.elapsed() >= Duration::from_millis(150) + idle);
        assert!(quiet < idle * 4, "ended {quiet:?} after the last byte");
    }
}
