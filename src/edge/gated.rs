//! A future that is polled only when it asked to be. `tokio::select!` polls every branch
//! each time its task wakes, and a connection's task wakes for every read and write of its
//! requests; the branches watching for shutdown, idleness and a stalled client would each
//! be polled (two locks of the shared cancellation tokens, two timers) several times per
//! proxied request. [`Gated`] gives its inner future a waker of its own and skips polling it
//! until that waker fires.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// What the inner future's waker does: note that it fired, then wake the owning task.
struct Gate {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

pin_project_lite::pin_project! {
    /// `inner`, polled on the first poll and then only after its own waker fired.
    pub struct Gated<F> {
        #[pin]
        inner: F,
        gate: Arc<Gate>,
        waker: Waker,
    }
}

impl<F: Future> Gated<F> {
    pub fn new(inner: F) -> Self {
        let gate = Arc::new(Gate {
            fired: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(gate.clone());
        Gated { inner, gate, waker }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Registered before the flag is read: a wake in between is not lost.
        this.gate.task.register(cx.waker());
        if !this.gate.fired.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `open` is set, after waking through the waker it kept.
    struct Counted {
        polls: Arc<AtomicUsize>,
        open: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Counted {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.open.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn the_inner_future_is_polled_only_after_its_own_waker_fired() {
        let polls = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicBool::new(false));
        let kept = Arc::new(std::sync::Mutex::new(None));
        let inner = Counted {
            polls: polls.clone(),
            open: open.clone(),
            waker: kept.clone(),
        };
        let mut gated = Box::pin(Gated::new(inner));
        let outer = Waker::noop();
        let mut cx = Context::from_waker(outer);
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "the first poll goes through"
        );
        for _ in 0..5 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "the task's other wakes skip it"
        );
        open.store(true, Ordering::SeqCst);
        kept.lock().unwrap().take().unwrap().wake();
        assert!(gated.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_gated_timer_still_ends_its_select() {
        let started = tokio::time::Instant::now();
        let slept = Gated::new(tokio::time::sleep(std::time::Duration::from_millis(20)));
        let never = std::future::pending::<()>();
        tokio::select! {
            _ = slept => {}
            _ = never => unreachable!(),
        }
        assert!(started.elapsed() >= std::time::Duration::from_millis(20));
    }
}
