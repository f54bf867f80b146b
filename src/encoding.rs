//! Byte-to-text encodings several layers share, written once: hex for digests and
//! thumbprints, and RFC 3986 percent-encoding (through the `percent-encoding` crate the HTTP
//! stack already compiles) for path segments and query values built by hand.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`): what an opaque
/// id or a query value needs so that no character can change the URL around it. Callers
/// that may keep one more character (`@` in a Graph UPN segment) `.remove` it.
pub const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` percent-encoded with `set`.
pub fn percent_encode(s: &str, set: &'static AsciiSet) -> String {
    utf8_percent_encode(s, set).to_string()
}

/// Lower-case hex.
pub fn hex_lower(bytes: &[u8]) -> String {
    hex(bytes, b"0123456789abcdef")
}

/// Upper-case hex (certificate thumbprints, as the Entra portal shows them).
pub fn hex_upper(bytes: &[u8]) -> String {
    hex(bytes, b"0123456789ABCDEF")
}

fn hex(bytes: &[u8], digits: &[u8; 16]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(digits[usize::from(b >> 4)]));
        out.push(char::from(digits[usize::from(b & 0x0f)]));
    }
    out
}

/// Lower-case hex SHA-256 of `bytes`: how hashed tokens, states and scopes are stored.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256Hex::of(bytes).as_str().to_owned()
}

/// [`sha256_hex`] on the stack, for a lookup that needs no `String` (the proxy resolves a
/// session cookie's hash on every request that carries one).
pub struct Sha256Hex([u8; 64]);

impl Sha256Hex {
    pub fn of(bytes: &[u8]) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
        let mut out = [0u8; 64];
        for (pair, b) in out.chunks_exact_mut(2).zip(digest.as_ref()) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0x0f)];
        }
        Sha256Hex(out)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_both_cases() {
        assert_eq!(hex_lower(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(hex_upper(&[0x00, 0xab, 0x7f]), "00AB7F");
    }

    #[test]
    fn sha256_of_the_empty_string() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn only_unreserved_characters_stay() {
        assert_eq!(
            percent_encode("a-b._~ /?#@%é", NOT_UNRESERVED),
            "a-b._~%20%2F%3F%23%40%25%C3%A9"
        );
        const KEEP_AT: &AsciiSet = &NOT_UNRESERVED.remove(b'@');
        assert_eq!(percent_encode("x#EXT#@t", KEEP_AT), "x%23EXT%23@t");
    }
}
