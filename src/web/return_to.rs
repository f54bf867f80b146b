//! Where a user may be sent after signing in. Only a same-origin absolute path is accepted:
//! one leading `/`, then anything but a second `/` or `\`; printable ASCII only; and the same
//! rules again after percent-decoding (up to three rounds), because browsers and proxies
//! decode in places the checker does not expect. Everything else (schemes, `//host`,
//! `/\host`, encoded slashes and backslashes, whitespace, control characters) is refused.

/// Longest `return_to` accepted.
const MAX_LEN: usize = 2048;

/// Returns the path when it is a safe same-origin destination.
pub fn validate(candidate: &str) -> Option<&str> {
    let printable = candidate.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if candidate.len() > MAX_LEN || !printable || !safe_path(candidate) {
        return None;
    }
    let mut current = candidate.to_string();
    for _ in 0..3 {
        let decoded = percent_decode(&current)?;
        if decoded == current {
            break;
        }
        if !safe_path(&decoded) {
            return None;
        }
        current = decoded;
    }
    let without_fragment = candidate.split('#').next().unwrap_or_default();
    without_fragment
        .parse::<http::uri::PathAndQuery>()
        .ok()
        .map(|_| candidate)
}

/// A path users land on after signing in (a tenant's `portal_landing_path` and
/// `webrtc_landing_path`): checked by [`validate`] once, when the settings are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnPath(String);

impl ReturnPath {
    /// `path` when it is a safe same-origin destination, otherwise why not.
    pub fn parse(path: &str) -> Result<Self, String> {
        validate(path)
            .map(|p| ReturnPath(p.to_string()))
            .ok_or_else(|| format!("`{path}` must be a same-origin absolute path like /portal/"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for ReturnPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ReturnPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ReturnPath::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

fn safe_path(s: &str) -> bool {
    let bytes = s.as_bytes();
    let path = s.split(['?', '#']).next().unwrap_or_default();
    bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        // Decoded text may hold UTF-8, but no whitespace, backslash or control byte.
        && bytes.iter().all(|b| *b > 0x20 && *b != 0x7f && *b != b'\\')
        // Dot segments and empty segments can collapse into `//host` after normalisation.
        && !path.contains("//")
        && !path.split('/').any(|segment| segment == "." || segment == "..")
}

/// Decodes `%XX` once; `None` for malformed escapes (refused rather than guessed at).
fn percent_decode(s: &str) -> Option<String> {
    let well_formed = s.match_indices('%').all(|(i, _)| {
        s.get(i + 1..i + 3)
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    // Non-UTF-8 after decoding is not a path anyone needs.
    (well_formed.then(|| percent_encoding::percent_decode_str(s).decode_utf8().ok()))
        .flatten()
        .map(|decoded| decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn ordinary_paths_are_accepted() {
        for ok in [
            "/",
            "/portal/",
            "/webrtc/#/dial",
            "/portal/index.html?tab=contacts&x=1",
            "/a%2Db",
            "/.well-known/x",
            "/%7Euser",
        ] {
            assert_eq!(validate(ok), Some(ok), "{ok}");
        }
    }

    /// More than a hundred open-redirect payloads, built from the shapes that broke
    /// oauth2-proxy, Vouch and others: every one must be refused.
    #[test]
    fn open_redirect_corpus_is_refused() {
        let corpus = corpus();
        assert!(corpus.len() >= 100, "corpus has {}", corpus.len());
        for payload in &corpus {
            assert_eq!(validate(payload), None, "accepted {payload:?}");
        }
    }

    fn corpus() -> Vec<String> {
        let hosts = [
            "evil.com",
            "evil.com:443",
            "127.0.0.1",
            "[::1]",
            "evil.com@pbx.test",
            "pbx.test.evil.com",
        ];
        let prefixes = [
            "//",
            "///",
            "////",
            "/\\",
            "\\\\",
            "\\/",
            "/\\/",
            "https://",
            "http://",
            "HTTPS://",
            "http:",
            "https:/",
            "//\\",
            "/%2f",
            "/%2F",
            "%2f%2f",
            "/%5c",
            "/%5C",
            "%5c%5c",
            "/%252f",
            "/%25252f",
            "/%09/",
            "/%0a/",
            "/%0d/",
            "/%00/",
            "/%20/",
            " //",
            "\t//",
            "/\t/",
            "/\n/",
            "/\r/",
            "//%09",
            "/%2f%2f",
            "/.%2f/",
            "/%2e%2e%2f%2f",
        ];
        let mut out: Vec<String> = Vec::new();
        for (i, prefix) in prefixes.iter().enumerate() {
            out.push(format!("{prefix}{}", hosts[i % hosts.len()]));
            out.push(format!("{prefix}{}/path?x=1", hosts[(i + 1) % hosts.len()]));
            out.push(format!("{prefix}{}", hosts[(i + 3) % hosts.len()]));
        }
        for extra in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:x",
            "evil.com",
            "@evil.com",
            "",
            " ",
            "/\u{3002}evil.com",
            "/\u{ff0f}evil.com",
            "/caf\u{e9}",
            "/\u{0}",
            "/%0d%0aLocation:%20https://evil.com",
            "/foo%0d%0aSet-Cookie:x=1",
            "/%E0%A4%A",
            "/%zz",
            "/%",
            "\\/evil.com",
            "/\\\\evil.com",
            "//google.com%2f%2e%2e",
            "/%5c%5cevil.com",
            "%2fevil.com",
        ] {
            out.push(extra.to_string());
        }
        out.push(format!("/{}", "a".repeat(3000)));
        out
    }
}
