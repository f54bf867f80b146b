//! The access log line, formatted by hand and appended straight to the log writer.
//!
//! Every proxied request writes one line. Through `tracing` that line cost about 1.4 µs of a
//! request's 18 (field visitors, a `fmt::Write` per field, the timestamp formatted from
//! scratch): 8 % of the proxy's CPU (docs/benchmarks.md). Once the binary has installed a
//! sink ([`install`]), the line is written here instead, in the same shape as the
//! `tracing` formatter's (text: `<timestamp>  INFO access: key=value …`; JSON: one object
//! with the same keys), so log readers see no difference. Without a sink (tests, a library
//! user, a coloured terminal) the caller logs through `tracing` as before. Whether the line
//! is written at all is still `tracing`'s filter (`access=warn` turns it off).

use std::cell::RefCell;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::log_writer::QueuedWriter;

/// The shape of the lines, as `--log-format` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Text,
    Json,
}

struct Sink {
    writer: QueuedWriter,
    format: AccessLogFormat,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends access lines to `writer` from now on, formatted here. Only the first call counts;
/// false when a sink was already installed.
pub fn install(writer: QueuedWriter, format: AccessLogFormat) -> bool {
    SINK.set(Sink { writer, format }).is_ok()
}

/// What one line says.
pub struct AccessLine<'a> {
    pub listener: &'a str,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub completed: bool,
    pub total: Duration,
    pub upstream: Option<Duration>,
}

/// The last timestamp's second and its text up to the fraction (`2026-12-05T23:56:00.`).
type FormattedSecond = Option<(u64, [u8; 20])>;

thread_local! {
    /// The line being built, and the formatted second of the last timestamp.
    static SCRATCH: RefCell<(Vec<u8>, FormattedSecond)> =
        const { RefCell::new((Vec::new(), None)) };
}

/// Writes `line` to the installed sink; false when there is none (log it another way).
pub fn write(line: &AccessLine<'_>) -> bool {
    let Some(sink) = SINK.get() else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    SCRATCH.with_borrow_mut(|(buf, second)| {
        buf.clear();
        format_line(buf, second, now, line, sink.format);
        let _ = (&sink.writer).write(buf);
    });
    true
}

fn format_line(
    out: &mut Vec<u8>,
    second: &mut FormattedSecond,
    now: Duration,
    line: &AccessLine<'_>,
    format: AccessLogFormat,
) {
    let mut stamp = [0u8; 27];
    timestamp(&mut stamp, second, now);
    match format {
        AccessLogFormat::Text => text(out, &stamp, line),
        AccessLogFormat::Json => json(out, &stamp, line),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`; the part up to the second is formatted once a second.
fn timestamp(out: &mut [u8; 27], second: &mut FormattedSecond, now: Duration) {
    let secs = now.as_secs();
    let prefix = match second {
        Some((s, prefix)) if *s == secs => *prefix,
        _ => {
            let mut prefix = [0u8; 20];
            let formatted = chrono::DateTime::from_timestamp(secs as i64, 0)
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%S.")
                .to_string();
            prefix.copy_from_slice(&formatted.as_bytes()[..20]);
            *second = Some((secs, prefix));
            prefix
        }
    };
    out[..20].copy_from_slice(&prefix);
    let mut micros = now.subsec_micros();
    for i in (20..26).rev() {
        out[i] = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out[26] = b'Z';
}

fn text(out: &mut Vec<u8>, stamp: &[u8], line: &AccessLine<'_>) {
    out.extend_from_slice(stamp);
    out.extend_from_slice(b"  INFO access: listener=");
    plain(out, line.listener);
    out.extend_from_slice(b" method=");
    plain(out, line.method);
    out.extend_from_slice(b" host=");
    plain(out, line.host);
    out.extend_from_slice(b" path=");
    plain(out, line.path);
    out.extend_from_slice(b" status=");
    number(out, u64::from(line.status));
    out.extend_from_slice(b" bytes=");
    number(out, line.bytes);
    out.extend_from_slice(if line.completed {
        b" completed=true total_ms="
    } else {
        b" completed=false total_ms="
    });
    millis(out, line.total);
    if let Some(upstream) = line.upstream {
        out.extend_from_slice(b" upstream_ms=");
        millis(out, upstream);
    }
    out.push(b'\n');
}

fn json(out: &mut Vec<u8>, stamp: &[u8], line: &AccessLine<'_>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    out.extend_from_slice(stamp);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"listener\":");
    json_string(out, line.listener);
    out.extend_from_slice(b",\"method\":");
    json_string(out, line.method);
    out.extend_from_slice(b",\"host\":");
    json_string(out, line.host);
    out.extend_from_slice(b",\"path\":");
    json_string(out, line.path);
    out.extend_from_slice(b",\"status\":");
    number(out, u64::from(line.status));
    out.extend_from_slice(b",\"bytes\":");
    number(out, line.bytes);
    out.extend_from_slice(if line.completed {
        b",\"completed\":true,\"total_ms\":\""
    } else {
        b",\"completed\":false,\"total_ms\":\""
    });
    millis(out, line.total);
    out.push(b'"');
    if let Some(upstream) = line.upstream {
        out.extend_from_slice(b",\"upstream_ms\":\"");
        millis(out, upstream);
        out.push(b'"');
    }
    out.extend_from_slice(b",\"target\":\"access\"}\n");
}

/// A value in a text line: anything but visible ASCII (a space in a `Host` header could
/// otherwise forge a field) is written as `\xNN`.
fn plain(out: &mut Vec<u8>, value: &str) {
    for &b in value.as_bytes() {
        if b.is_ascii_graphic() {
            out.push(b);
        } else {
            hex_escape(out, b"\\x", b);
        }
    }
}

fn json_string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    for &b in value.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f | 0x7f => hex_escape(out, b"\\u00", b),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn hex_escape(out: &mut Vec<u8>, prefix: &[u8], b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(prefix);
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 0xf)]);
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with three decimals (`0.124`), for both ways the line is written.
pub(super) fn millis(out: &mut Vec<u8>, d: Duration) {
    let micros = d.as_micros();
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    let frac = (micros % 1000) as u16;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> AccessLine<'static> {
        AccessLine {
            listener: "pbx#0",
            method: "GET",
            host: "pbx.example.com",
            path: "/portal/",
            status: 200,
            bytes: 1024,
            completed: true,
            total: Duration::from_micros(1_234),
            upstream: Some(Duration::from_micros(980)),
        }
    }

    fn formatted(line: &AccessLine<'_>, format: AccessLogFormat) -> String {
        let mut out = Vec::new();
        // 2026-12-05T23:56:00.000042Z
        let now = Duration::new(1_796_514_960, 42_000);
        format_line(&mut out, &mut None, now, line, format);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_lines_look_like_tracing_lines() {
        assert_eq!(
            formatted(&line(), AccessLogFormat::Text),
            "2026-12-05T23:56:00.000042Z  INFO access: listener=pbx#0 method=GET \
             host=pbx.example.com path=/portal/ status=200 bytes=1024 completed=true \
             total_ms=1.234 upstream_ms=0.980\n"
        );
        let mut early = line();
        early.upstream = None;
        early.completed = false;
        let text = formatted(&early, AccessLogFormat::Text);
        assert!(text.ends_with("completed=false total_ms=1.234\n"), "{text}");
    }

    #[test]
    fn json_lines_carry_the_same_fields() {
        let text = formatted(&line(), AccessLogFormat::Json);
        assert!(text.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "timestamp": "2026-12-05T23:56:00.000042Z",
                "level": "INFO",
                "listener": "pbx#0",
                "method": "GET",
                "host": "pbx.example.com",
                "path": "/portal/",
                "status": 200,
                "bytes": 1024,
                "completed": true,
                "total_ms": "1.234",
                "upstream_ms": "0.980",
                "target": "access",
            })
        );
    }

    #[test]
    fn hostile_values_cannot_forge_fields_or_break_json() {
        let mut bad = line();
        bad.host = "a status=500\"\\\t";
        let text = formatted(&bad, AccessLogFormat::Text);
        assert!(text.contains(" host=a\\x20status=500\"\\\\x09 "), "{text}");
        let json = formatted(&bad, AccessLogFormat::Json);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["host"], "a status=500\"\\\t");
        assert_eq!(v["status"], 200);
    }

    #[test]
    fn the_second_is_reformatted_only_when_it_changes() {
        let mut second = None;
        let mut stamp = [0u8; 27];
        timestamp(
            &mut stamp,
            &mut second,
            Duration::new(1_796_514_960, 999_999_000),
        );
        assert_eq!(&stamp, b"2026-12-05T23:56:00.999999Z");
        timestamp(&mut stamp, &mut second, Duration::new(1_796_514_961, 0));
        assert_eq!(&stamp, b"2026-12-05T23:56:01.000000Z");
        assert_eq!(second.map(|s| s.0), Some(1_796_514_961));
    }
}
