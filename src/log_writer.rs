//! Where log lines go: one shared buffer in front of one writer thread, so that a request
//! worker that logs (the access log writes a line per request) appends its formatted line
//! to memory and never makes a system call for it or waits for stderr. While lines keep
//! coming, the thread takes the whole buffer every [`BATCH_INTERVAL`] and writes it at once;
//! when they stop it sleeps until the next line wakes it, so a quiet gateway's lines still
//! appear at once. A sink slower than the gateway (a blocked pipe, a slow terminal) fills the
//! buffer up to its limit, then lines are dropped rather than stalling requests, and the
//! thread writes how many were lost. [`LogFlush`] writes out what is left at exit.
//!
//! Measured (docs/benchmarks.md): a queue of one buffer per line cost more than the
//! unbuffered writes it replaced, because each line was allocated on a worker and freed on
//! the writer thread; appending into a shared buffer whose capacity is reused allocates
//! nothing per line.

use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes of log lines held at most while the sink is behind (about 20,000 access lines).
pub const DEFAULT_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// How long lines gather between two writes while they keep coming: the most a line waits.
const BATCH_INTERVAL: Duration = Duration::from_millis(10);

/// What the workers and the writer thread share.
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// The thread waits on `wake`: the next line must notify it.
    waiting: AtomicBool,
    dropped: AtomicU64,
    limit: usize,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append(&self, line: &[u8]) {
        {
            let mut pending = self.lock();
            if pending.stop {
                return;
            }
            if pending.bytes.len() + line.len() > self.limit {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            pending.bytes.extend_from_slice(line);
        }
        if self.waiting.swap(false, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Swaps the pending bytes into `batch` (whose capacity the workers reuse next); waits
    /// while there are none. True when asked to stop.
    fn take(&self, batch: &mut Vec<u8>) -> bool {
        let mut pending = self.lock();
        while pending.bytes.is_empty() && !pending.stop {
            self.waiting.store(true, Ordering::Release);
            pending = self.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
        std::mem::swap(&mut pending.bytes, batch);
        pending.stop
    }
}

/// A `tracing_subscriber` writer factory. The formatter hands each event's whole line to one
/// `write`, which appends it to the shared buffer in one piece.
#[derive(Clone)]
pub struct QueuedWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread after it wrote every line appended before; on drop.
pub struct LogFlush {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread on `sink`, holding at most `limit` bytes while it is behind.
pub fn spawn<W: Write + Send + 'static>(sink: W, limit: usize) -> (QueuedWriter, LogFlush) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        wake: Condvar::new(),
        waiting: AtomicBool::new(false),
        dropped: AtomicU64::new(0),
        limit: limit.max(1),
    });
    let for_thread = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log writer".into())
        .spawn(move || write_batches(&for_thread, BufWriter::with_capacity(64 * 1024, sink)))
        .expect("a thread for the log writer");
    let writer = QueuedWriter {
        shared: shared.clone(),
    };
    let flush = LogFlush {
        shared,
        thread: Some(thread),
    };
    (writer, flush)
}

/// The thread: take what is pending, write it, report losses, let the next batch gather.
fn write_batches<W: Write>(shared: &Shared, mut out: BufWriter<W>) {
    let mut batch = Vec::new();
    let mut reported = 0;
    loop {
        let stop = shared.take(&mut batch);
        // Write errors have nowhere to be reported: the log is where they would go.
        let _ = out.write_all(&batch);
        batch.clear();
        report_drops(&mut out, &shared.dropped, &mut reported);
        let _ = out.flush();
        if stop {
            return;
        }
        std::thread::sleep(BATCH_INTERVAL);
    }
}

fn report_drops<W: Write>(out: &mut W, dropped: &AtomicU64, reported: &mut u64) {
    let now = dropped.load(Ordering::Relaxed);
    if now > *reported {
        let _ = writeln!(
            out,
            "ms365-gateway: {} log lines dropped: the log output is slower than the gateway writes to it",
            now - *reported
        );
        *reported = now;
    }
}

impl QueuedWriter {
    /// Lines dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Write for &QueuedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueuedWriter {
    type Writer = &'a QueuedWriter;

    fn make_writer(&'a self) -> &'a QueuedWriter {
        self
    }
}

impl Drop for LogFlush {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, Sender, channel};

    /// A sink that holds its first write until told to go on, and keeps what it gets.
    struct HeldSink {
        written: Arc<Mutex<Vec<u8>>>,
        release: Option<Receiver<()>>,
        entered: Option<Sender<()>>,
    }

    impl Write for HeldSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some(entered) = self.entered.take() {
                let _ = entered.send(());
            }
            if let Some(release) = self.release.take() {
                let _ = release.recv();
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn log_line(writer: &QueuedWriter, text: &str) {
        let mut line = tracing_subscriber::fmt::MakeWriter::make_writer(writer);
        line.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_blocked_sink_drops_lines_instead_of_blocking_and_says_how_many() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let (release, held) = channel();
        let (entered_tx, entered) = channel();
        let sink = HeldSink {
            written: written.clone(),
            release: Some(held),
            entered: Some(entered_tx),
        };
        let (writer, flush) = spawn(sink, 64);
        // The thread takes the first line and blocks in the sink when it flushes it.
        log_line(&writer, "first\n");
        entered.recv().unwrap();
        // The sink is stuck: 64 bytes hold "line 0\n" to "line 8\n" (7 bytes each), the
        // rest are dropped, and none of these calls waits (one that did would hang here).
        for i in 0..100 {
            log_line(&writer, &format!("line {i}\n"));
        }
        assert_eq!(writer.dropped(), 91);
        release.send(()).unwrap();
        drop(flush);
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with("first\n"), "{text}");
        for i in 0..9 {
            assert!(
                text.contains(&format!("line {i}\n")),
                "held line {i} written"
            );
        }
        assert!(!text.contains("line 9\n"), "line 9 was dropped: {text}");
        assert!(text.contains("91 log lines dropped"), "{text}");
    }

    #[test]
    fn every_line_reaches_the_sink_in_order_by_exit() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = HeldSink {
            written: written.clone(),
            release: None,
            entered: None,
        };
        let (writer, flush) = spawn(sink, 1 << 20);
        for i in 0..500 {
            log_line(&writer, &format!("{i}\n"));
        }
        drop(flush);
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let numbers: Vec<usize> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(numbers, (0..500).collect::<Vec<_>>());
        assert_eq!(writer.dropped(), 0);
    }
}
