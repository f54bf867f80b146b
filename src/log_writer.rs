//! Where log lines go: a buffer per edge worker in front of one writer thread, so that a
//! request worker that logs (the access log writes a line per request) appends its
//! formatted line to memory and never makes a system call for it or waits for stderr. While
//! lines keep coming, the thread takes the buffers every [`BATCH_INTERVAL`] and writes them
//! at once; when they stop it sleeps until the next line wakes it, so a quiet gateway's
//! lines still appear at once. A sink slower than the gateway (a blocked pipe, a slow
//! terminal) fills a buffer up to its limit, then lines are dropped rather than stalling
//! requests, and the thread writes how many were lost. [`LogFlush`] writes out what is left
//! at exit.
//!
//! Measured (docs/benchmarks.md): a queue of one buffer per line cost more than the
//! unbuffered writes it replaced, because each line was allocated on a worker and freed on
//! the writer thread; appending into a buffer whose capacity is reused allocates nothing
//! per line. One buffer shared by the workers was locked by both on every request; a
//! buffer each ([`crate::shard`]) keeps each worker's lock on its own core.

use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::shard::{Padded, SHARDS};

/// Bytes of log lines a shard holds at most while the sink is behind (about 20,000 access
/// lines): each edge worker has its own shard, the other threads share one.
pub const DEFAULT_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// How long lines gather between two writes while they keep coming: the most a line waits.
const BATCH_INTERVAL: Duration = Duration::from_millis(10);

/// What the workers and the writer thread share.
struct Shared {
    /// Lines not yet taken, a buffer per [`crate::shard`]: an edge worker appends to its
    /// own, so its lock is never the one another worker just took. The thread writes a
    /// shard's lines in the order they came; two workers' lines interleave by batch.
    shards: [Padded<Mutex<Vec<u8>>>; SHARDS],
    /// The thread sleeps on `wake` holding this; `true` once it is asked to stop.
    stop: Mutex<bool>,
    wake: Condvar,
    /// The thread waits on `wake`: the next line must notify it.
    waiting: AtomicBool,
    /// Set before `stop`: appends look at it under their shard's lock.
    stopping: AtomicBool,
    dropped: AtomicU64,
    limit: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn append(&self, line: &[u8]) {
        {
            let mut held = lock(&self.shards[crate::shard::current()].0);
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            if held.len() + line.len() > self.limit {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            held.extend_from_slice(line);
        }
        // Looked at before it is written: a swap on every line would move this cache line
        // between the workers on every request, while a load leaves it shared until the
        // thread next goes to sleep. The thread sets the flag before it looks at the
        // shards, under their locks, so one that saw this shard empty is seen asleep here.
        if self.waiting.load(Ordering::Relaxed) && self.waiting.swap(false, Ordering::AcqRel) {
            // Taken so that the notice cannot fall between the thread's look and its wait.
            let _asleep = lock(&self.stop);
            self.wake.notify_one();
        }
    }

    /// Swaps each shard's pending bytes into its `batches` entry (whose capacity the
    /// workers reuse next); waits while there are none. True when asked to stop.
    fn take(&self, batches: &mut [Vec<u8>; SHARDS]) -> bool {
        let mut stop = lock(&self.stop);
        loop {
            self.waiting.store(true, Ordering::SeqCst);
            let mut any = false;
            for (shard, batch) in self.shards.iter().zip(batches.iter_mut()) {
                let mut held = lock(&shard.0);
                if !held.is_empty() {
                    std::mem::swap(&mut *held, batch);
                    any = true;
                }
            }
            if any || *stop {
                self.waiting.store(false, Ordering::Relaxed);
                return *stop;
            }
            stop = self.wake.wait(stop).unwrap_or_else(|e| e.into_inner());
        }
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
        shards: Default::default(),
        stop: Mutex::new(false),
        wake: Condvar::new(),
        waiting: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
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
    let mut batches: [Vec<u8>; SHARDS] = Default::default();
    let mut reported = 0;
    loop {
        let stop = shared.take(&mut batches);
        for batch in &mut batches {
            // Write errors have nowhere to be reported: the log is where they would go.
            let _ = out.write_all(batch);
            batch.clear();
        }
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
        self.shared.stopping.store(true, Ordering::SeqCst);
        *lock(&self.shared.stop) = true;
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

    /// A writer with room for every line, on a sink that keeps what it gets.
    fn keeping_writer() -> (Arc<Mutex<Vec<u8>>>, QueuedWriter, LogFlush) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = HeldSink {
            written: written.clone(),
            release: None,
            entered: None,
        };
        let (writer, flush) = spawn(sink, 1 << 20);
        (written, writer, flush)
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

    /// Lines from edge workers (shards of their own) and from other threads all arrive,
    /// each thread's in the order it wrote them.
    #[test]
    fn every_workers_lines_arrive_in_their_order() {
        let (written, writer, flush) = keeping_writer();
        std::thread::scope(|s| {
            for thread in 0..4 {
                let writer = &writer;
                s.spawn(move || {
                    if thread > 0 {
                        crate::shard::enter(thread - 1);
                    }
                    for i in 0..300 {
                        log_line(writer, &format!("{thread} {i}\n"));
                    }
                });
            }
        });
        drop(flush);
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let mut seen = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for line in text.lines() {
            let (thread, i) = line.split_once(' ').unwrap();
            seen[thread.parse::<usize>().unwrap()].push(i.parse::<usize>().unwrap());
        }
        for lines in seen {
            assert_eq!(lines, (0..300).collect::<Vec<_>>());
        }
        assert_eq!(writer.dropped(), 0);
    }

    /// The thread asleep on an empty buffer is woken by a line in any shard.
    #[test]
    fn a_sleeping_thread_wakes_for_a_workers_line() {
        let (entered_tx, entered) = channel();
        let sink = HeldSink {
            written: Arc::new(Mutex::new(Vec::new())),
            release: None,
            entered: Some(entered_tx),
        };
        let (writer, flush) = spawn(sink, 1 << 20);
        while !writer.shared.waiting.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                crate::shard::enter(5);
                log_line(&writer, "from a worker\n");
            });
        });
        let woke = entered.recv_timeout(std::time::Duration::from_secs(30));
        assert!(woke.is_ok(), "the writer thread slept through the line");
        drop(flush);
    }

    #[test]
    fn every_line_reaches_the_sink_in_order_by_exit() {
        let (written, writer, flush) = keeping_writer();
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
