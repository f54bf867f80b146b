//! Header fields the proxy adds to a request after the client's own were sanitised (the
//! `X-PBX-*` identity and the bearer), kept in their HTTP/1.1 wire form. The upstream
//! request head copies them in one piece: putting them into the request's `HeaderMap`
//! would cost a hash, an insert (sometimes a rehash) and a drop per field on every
//! request that carries a session, only for the codec to write them out again.

use bytes::{Bytes, BytesMut};
use http::HeaderName;

/// "name: value\r\n" lines, built only through [`AddedHeaders::push`], which takes a
/// `HeaderName` and refuses a value `HeaderValue` would refuse, so no line can end early
/// or smuggle another field. Cloning shares the bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AddedHeaders {
    lines: Bytes,
}

/// Collects fields for an [`AddedHeaders`].
pub struct AddedHeadersBuilder {
    lines: BytesMut,
}

impl AddedHeaders {
    /// A builder with room for `bytes` of lines (one allocation when the estimate holds).
    pub fn builder(bytes: usize) -> AddedHeadersBuilder {
        AddedHeadersBuilder {
            lines: BytesMut::with_capacity(bytes),
        }
    }

    /// The lines as they go on the wire, each ending in CRLF.
    pub fn as_bytes(&self) -> &[u8] {
        &self.lines
    }

    /// The fields as (name, value) pairs, in the order they were pushed.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.lines
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let colon = line.iter().position(|b| *b == b':').unwrap_or(line.len());
                let name = std::str::from_utf8(&line[..colon]).unwrap_or_default();
                (name, line.get(colon + 2..).unwrap_or_default())
            })
    }
}

impl AddedHeadersBuilder {
    /// Appends `name: value`; `false` (and nothing appended) when `value` holds a byte a
    /// header value may not (a control character other than tab, or DEL).
    pub fn push(&mut self, name: &HeaderName, value: &str) -> bool {
        if !value.bytes().all(is_value_byte) {
            return false;
        }
        self.lines.extend_from_slice(name.as_str().as_bytes());
        self.lines.extend_from_slice(b": ");
        self.lines.extend_from_slice(value.as_bytes());
        self.lines.extend_from_slice(b"\r\n");
        true
    }

    pub fn build(self) -> AddedHeaders {
        AddedHeaders {
            lines: self.lines.freeze(),
        }
    }
}

/// What `http::HeaderValue` accepts: visible ASCII, space, tab and obs-text.
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// Names only: a value may be a bearer token.
impl std::fmt::Debug for AddedHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.fields().map(|(name, _)| name))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::AUTHORIZATION;

    const X_A: HeaderName = HeaderName::from_static("x-a");

    #[test]
    fn fields_are_written_as_wire_lines_in_order() {
        let mut b = AddedHeaders::builder(0);
        assert!(b.push(&X_A, "one"));
        assert!(b.push(&AUTHORIZATION, ""));
        let added = b.build();
        assert_eq!(added.as_bytes(), b"x-a: one\r\nauthorization: \r\n");
        let fields: Vec<_> = added.fields().collect();
        assert_eq!(fields, [("x-a", &b"one"[..]), ("authorization", &b""[..])]);
    }

    #[test]
    fn a_value_header_value_would_refuse_is_refused_here_too() {
        for bad in ["a\r\nx-evil: 1", "a\nb", "a\0", "a\x7f", "\x1b"] {
            let mut b = AddedHeaders::builder(0);
            assert!(!b.push(&X_A, bad), "{bad:?} accepted");
            assert!(HeaderValue::from_str(bad).is_err(), "{bad:?} is valid");
            assert!(b.build().as_bytes().is_empty());
        }
        for good in ["a b\tc", "ü", "~!\"#"] {
            let mut b = AddedHeaders::builder(0);
            assert!(b.push(&X_A, good), "{good:?} refused");
            assert!(HeaderValue::from_str(good).is_ok(), "{good:?} is invalid");
        }
    }

    #[test]
    fn debug_shows_names_not_values() {
        let mut b = AddedHeaders::builder(16);
        b.push(&X_A, "1");
        b.push(&AUTHORIZATION, "Bearer secret");
        assert_eq!(format!("{:?}", b.build()), r#"["x-a", "authorization"]"#);
    }
}
