//! Where log lines go: a bounded queue in front of one writer thread, so that a request
//! worker that logs (the access log writes a line per request) never makes a system call for
//! it and never waits for stderr. The thread batches whatever is queued into one buffered
//! write and flushes when the queue runs dry, so a quiet gateway's lines still appear at
//! once. When the sink is slower than the lines arrive (a blocked pipe, a slow terminal), the
//! queue fills and new lines are dropped rather than stalling requests; the thread then
//! writes how many were lost. [`LogFlush`] drains the queue at exit.

use std::io::{self, BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

/// Lines queued at most; at ~200 bytes a line, about 3 MiB.
pub const DEFAULT_QUEUE_LINES: usize = 16_384;

/// What the queue carries: a line, or the request to stop after the lines before it.
enum Item {
    Line(Vec<u8>),
    Stop,
}

/// A `tracing_subscriber` writer factory: each event is formatted into its own buffer,
/// which is queued in one piece when the event is done.
#[derive(Clone)]
pub struct QueuedWriter {
    queue: SyncSender<Item>,
    dropped: Arc<AtomicU64>,
}

/// Stops the writer thread after it wrote every line queued before; on drop.
pub struct LogFlush {
    queue: SyncSender<Item>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread on `sink`, with room for `queue_lines` lines.
pub fn spawn<W: Write + Send + 'static>(sink: W, queue_lines: usize) -> (QueuedWriter, LogFlush) {
    let (queue, lines) = sync_channel(queue_lines.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = dropped.clone();
    let thread = std::thread::Builder::new()
        .name("log writer".into())
        .spawn(move || write_lines(lines, BufWriter::with_capacity(64 * 1024, sink), &counter))
        .expect("a thread for the log writer");
    let writer = QueuedWriter {
        queue: queue.clone(),
        dropped,
    };
    let flush = LogFlush {
        queue,
        thread: Some(thread),
    };
    (writer, flush)
}

/// The thread: write what is queued, flush when nothing more is, report losses.
fn write_lines<W: Write>(lines: Receiver<Item>, mut out: BufWriter<W>, dropped: &AtomicU64) {
    let mut reported = 0;
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                // Write errors have nowhere to be reported: the log is where they would go.
                Item::Line(line) => drop(out.write_all(&line)),
                Item::Stop => {
                    report_drops(&mut out, dropped, &mut reported);
                    let _ = out.flush();
                    return;
                }
            }
            next = lines.try_recv().ok();
        }
        report_drops(&mut out, dropped, &mut reported);
        let _ = out.flush();
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
    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One event's line, queued when the formatter is done with it.
pub struct LineWriter {
    line: Vec<u8>,
    writer: QueuedWriter,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.line);
        match self.writer.queue.try_send(Item::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.writer.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // After LogFlush: the process is ending, and the line has nowhere to go.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueuedWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            line: Vec::with_capacity(256),
            writer: self.clone(),
        }
    }
}

impl Drop for LogFlush {
    fn drop(&mut self) {
        // Blocking here is right: the lines before this point should reach the sink.
        if self.queue.send(Item::Stop).is_ok()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::mpsc::{Sender, channel};

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
        let (writer, flush) = spawn(sink, 4);
        // The first line is taken by the thread, which then blocks inside the sink (the
        // buffer is bypassed for a write no smaller than itself).
        log_line(&writer, &format!("{}\n", "x".repeat(64 * 1024)));
        entered.recv().unwrap();
        // The sink is stuck: the queue takes 4 lines, the rest are dropped, and none of
        // these calls waits (a blocking call would hang the test here).
        for i in 0..100 {
            log_line(&writer, &format!("line {i}\n"));
        }
        assert_eq!(writer.dropped(), 96);
        release.send(()).unwrap();
        drop(flush);
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        for i in 0..4 {
            assert!(
                text.contains(&format!("line {i}\n")),
                "queued line {i} written"
            );
        }
        assert!(!text.contains("line 4\n"), "line 4 was dropped");
        assert!(
            text.contains("96 log lines dropped"),
            "{}",
            &text[64 * 1024..]
        );
    }

    #[test]
    fn every_line_reaches_the_sink_in_order_by_exit() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = HeldSink {
            written: written.clone(),
            release: None,
            entered: None,
        };
        let (writer, flush) = spawn(sink, 1024);
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
