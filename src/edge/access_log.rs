//! The access log and request metrics. A response body is wrapped in [`MeteredBody`], which
//! counts the bytes as they stream and writes the one log line when the body ends or the
//! client goes away, so the line carries the real size and total time without buffering.
//! The line goes to [`super::access_line`]'s sink when the binary installed one, else
//! through `tracing`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};

use super::access_line::AccessLine;
use super::conn::ConnInfo;

/// Upstream time to response headers, set by the proxy in response extensions.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamLatency(pub Duration);

/// Counts requests whose response has not finished, so an idle connection can be told apart
/// from one waiting on a slow upstream.
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    pub fn is_idle(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }

    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }
}

/// Decrements [`InFlight`] when dropped.
#[derive(Debug)]
pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The request as its log line names it: method, host and path (only the path: query
/// strings can carry codes and tokens). Kept as what the server parsed, whose clones share
/// its bytes, so a logged request costs no copy of them.
pub struct LineRequest {
    pub method: Method,
    pub host: Option<HeaderValue>,
    pub uri: Uri,
}

impl LineRequest {
    pub fn of<B>(req: &Request<B>) -> Self {
        LineRequest {
            method: req.method().clone(),
            host: req.headers().get(HOST).cloned(),
            uri: req.uri().clone(),
        }
    }

    /// The `Host` header, else the URI's authority (HTTP/2's `:authority`).
    fn host(&self) -> &str {
        super::headers::request_host_of(self.host.as_ref(), &self.uri).unwrap_or_default()
    }
}

/// What the log line says about a request, gathered before the body streams.
pub struct RequestRecord {
    /// The connection: its listener's name and metrics.
    pub conn: ConnInfo,
    /// What the log line names; `None` when the access log is off.
    pub line: Option<LineRequest>,
    pub route: &'static str,
    pub status: StatusCode,
    pub started: Instant,
    pub upstream: Option<Duration>,
    pub _in_flight: InFlightGuard,
}

impl RequestRecord {
    fn finish(&self, bytes: u64, completed: bool) {
        let total = self.started.elapsed();
        self.conn
            .metrics
            .count_request(self.route, self.status.as_u16());
        let Some(request) = &self.line else {
            return;
        };
        let (method, host, path) = (&request.method, request.host(), request.uri.path());
        let line = AccessLine {
            listener: &self.conn.listener,
            method: method.as_str(),
            host,
            path,
            status: self.status.as_u16(),
            bytes,
            completed,
            total,
            upstream: self.upstream,
        };
        if super::access_line::write(&line) {
            return;
        }
        tracing::info!(
            target: "access",
            listener = %self.conn.listener,
            method = %method,
            host = %host,
            path = %path,
            status = self.status.as_u16(),
            bytes,
            completed,
            total_ms = %Millis(total),
            upstream_ms = self.upstream.map(|d| tracing::field::display(Millis(d))),
        );
    }

    /// Records the time to response headers.
    pub fn record_header_latency(&self) {
        self.conn
            .metrics
            .observe_duration(self.route, self.started.elapsed().as_secs_f64());
    }
}

/// A duration as milliseconds with three decimals (`0.124`): integer arithmetic, where an
/// `f64` field would print its shortest round-trip form (`0.09170400000000001`) at several
/// times the cost, on every request.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = Vec::with_capacity(24);
        super::access_line::millis(&mut text, self.0);
        f.write_str(std::str::from_utf8(&text).map_err(|_| std::fmt::Error)?)
    }
}

pin_project_lite::pin_project! {
    /// A response body that logs the request when it ends or is dropped.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        bytes: u64,
        // An empty body may never be polled; it still completed.
        empty: bool,
        record: Option<RequestRecord>,
    }

    impl<B> PinnedDrop for MeteredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(record) = this.record.take() {
                record.finish(*this.bytes, *this.empty);
            }
        }
    }
}

impl<B: Body> MeteredBody<B> {
    pub fn new(inner: B, record: RequestRecord) -> Self {
        let empty = inner.is_end_stream();
        MeteredBody {
            inner,
            bytes: 0,
            empty,
            record: Some(record),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for MeteredBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let polled = inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
                // With a known length hyper stops polling after the last frame.
                if inner.is_end_stream()
                    && let Some(record) = this.record.take()
                {
                    record.finish(*this.bytes, true);
                }
            }
            Poll::Ready(None) => {
                if let Some(record) = this.record.take() {
                    record.finish(*this.bytes, true);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_milliseconds_with_three_decimals() {
        assert_eq!(
            Millis(Duration::from_nanos(91_704_999)).to_string(),
            "91.704"
        );
        assert_eq!(Millis(Duration::from_micros(124)).to_string(), "0.124");
        assert_eq!(Millis(Duration::from_micros(5)).to_string(), "0.005");
        assert_eq!(Millis(Duration::from_secs(61)).to_string(), "61000.000");
    }
}
