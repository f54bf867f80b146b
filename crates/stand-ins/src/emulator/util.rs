//! Small helpers shared by the emulator: the timestamp formats Microsoft writes (token
//! errors, Graph `innerError.date`, ISO 8601 properties), base64url, SHA digests, a
//! deterministic dice for seeded data, and the URL and HTML escaping the sign-in pages and
//! redirects need. Nothing here knows about tenants or HTTP routing.

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// Calendar fields of a Unix timestamp, in UTC.
fn civil(secs: i64) -> (i32, u8, u8, u8, u8, u8) {
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    (
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    )
}

/// `2024-01-15T08:00:00Z`: Graph's `DateTimeOffset` properties and certificate validity.
pub(crate) fn iso(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `2024-01-15 08:00:00Z`: the `timestamp` of Entra token errors.
pub(crate) fn aad_timestamp(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
}

/// `2024-01-15T08:00:00`: Graph's `innerError.date` has no zone designator.
pub(crate) fn graph_date(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
}

pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

pub(crate) fn b64std(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub(crate) fn sha1(bytes: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, bytes)
        .as_ref()
        .to_vec()
}

pub(crate) fn sha256(bytes: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, bytes).as_ref().to_vec()
}

pub(crate) fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// A random GUID for request ids, trace ids and new objects.
pub(crate) fn guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Seeded, order-independent randomness: the same `parts` always give the same stream, so a
/// user or contact can be regenerated on its own without replaying everything before it.
pub(crate) struct Dice(u64);

impl Dice {
    pub(crate) fn new(parts: &[u64]) -> Dice {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for part in parts {
            state = splitmix(state ^ part.wrapping_mul(0xA24B_AED4_963E_E407));
        }
        Dice(state)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix(self.0)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant for test data.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// A version-4 GUID drawn from the dice, so seeded ids repeat run after run.
    pub(crate) fn guid(&mut self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `application/x-www-form-urlencoded` escaping for redirect query strings.
pub(crate) fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Percent-decoding of one path segment (`%23EXT%23` in guest UPNs).
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_microsoft() {
        assert_eq!(iso(1_452_304_932), "2016-01-09T02:02:12Z");
        assert_eq!(aad_timestamp(1_452_304_932), "2016-01-09 02:02:12Z");
        assert_eq!(graph_date(1_452_304_932), "2016-01-09T02:02:12");
    }

    #[test]
    fn x5t_known_vector() {
        // DESIGN.md: SHA-1 84E05C1D98BCE3A5421D225B140B36E86A3D5534 → hOBcHZi846VCHSJbFAs26Go9VTQ
        let sha1 = [
            0x84, 0xE0, 0x5C, 0x1D, 0x98, 0xBC, 0xE3, 0xA5, 0x42, 0x1D, 0x22, 0x5B, 0x14, 0x0B,
            0x36, 0xE8, 0x6A, 0x3D, 0x55, 0x34,
        ];
        assert_eq!(b64url(&sha1), "hOBcHZi846VCHSJbFAs26Go9VTQ");
    }

    #[test]
    fn dice_is_deterministic_and_escapes_round_trip() {
        assert_eq!(Dice::new(&[1, 2]).guid(), Dice::new(&[1, 2]).guid());
        assert_ne!(Dice::new(&[1, 2]).guid(), Dice::new(&[1, 3]).guid());
        assert_eq!(percent_decode(&url_encode("a b#EXT#@x")), "a b#EXT#@x");
    }
}
