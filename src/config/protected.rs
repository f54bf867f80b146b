//! `[sso] protected_paths`: the path prefixes that need a session, matched on a canonical
//! form of the request path so that spelling a path differently cannot reach the PBX
//! without a session. Upstream servers normalise paths in different ways (percent-decoding,
//! dot segments, doubled slashes, `\` for `/`, `;params`, case on Windows); the canonical
//! form applies all of them at once, so a request is protected when *any* of those servers
//! would see it under a protected prefix. The request itself is forwarded as it came.

/// Protected prefixes, canonicalised once when the configuration is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtectedPaths {
    prefixes: Vec<Vec<u8>>,
    case_insensitive: bool,
}

impl ProtectedPaths {
    /// `prefixes` as configured (each starting with `/`).
    pub fn new(prefixes: &[String], case_insensitive: bool) -> ProtectedPaths {
        let prefixes = prefixes
            .iter()
            .map(|p| canonical_path(p, case_insensitive))
            .collect();
        ProtectedPaths {
            prefixes,
            case_insensitive,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Whether the request path (without the query) falls under a protected prefix.
    pub fn covers(&self, path: &str) -> bool {
        if self.prefixes.is_empty() {
            return false;
        }
        let canonical = canonical_path(path, self.case_insensitive);
        self.prefixes.iter().any(|p| canonical.starts_with(p))
    }
}

/// Most rounds of percent-decoding applied (`%252e` is `%2e` after one, `.` after two: some
/// servers decode twice).
const DECODE_ROUNDS: usize = 3;

/// The canonical form of a path: percent-decoded (up to [`DECODE_ROUNDS`] times), `\` read
/// as `/`, `;parameters` dropped from segments, empty and `.` segments removed, `..`
/// resolved (never above the root), and ASCII lower-cased when `case_insensitive`. A
/// trailing `/` is kept, so `/portal/` still differs from `/portal`.
pub fn canonical_path(path: &str, case_insensitive: bool) -> Vec<u8> {
    let mut bytes = path.as_bytes().to_vec();
    for _ in 0..DECODE_ROUNDS {
        // One round of `%XX` decoding; malformed escapes stay as they are.
        let decoded: Vec<u8> = percent_encoding::percent_decode(&bytes).collect();
        if decoded == bytes {
            break;
        }
        bytes = decoded;
    }
    for b in &mut bytes {
        if *b == b'\\' {
            *b = b'/';
        }
    }
    let ends_open = bytes.ends_with(b"/") || bytes.ends_with(b"/.") || bytes.ends_with(b"/..");
    let mut segments: Vec<&[u8]> = Vec::new();
    for raw in bytes.split(|b| *b == b'/') {
        let segment = raw.split(|b| *b == b';').next().unwrap_or_default();
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(bytes.len() + 1);
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if ends_open || out.is_empty() {
        out.push(b'/');
    }
    if case_insensitive {
        out.make_ascii_lowercase();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(path: &str) -> String {
        String::from_utf8(canonical_path(path, false)).unwrap()
    }

    #[test]
    fn spellings_of_one_path_have_one_canonical_form() {
        for spelled in [
            "/portal/x",
            "/%70ortal/x",
            "//portal/x",
            "/./portal/x",
            "/a/../portal/x",
            "/portal%2fx",
            "/portal%2Fx",
            "/portal/./x",
            "/portal;jsessionid=1/x",
            "\\portal\\x",
            "/%252e/portal/x",
            "/../../portal/x",
        ] {
            assert_eq!(text(spelled), "/portal/x", "{spelled}");
        }
        assert_eq!(text("/portal/"), "/portal/");
        assert_eq!(text("/portal"), "/portal");
        assert_eq!(text("/portal/x/.."), "/portal/");
        assert_eq!(text(""), "/");
        assert_eq!(text("/%zz"), "/%zz", "malformed escapes stay");
    }

    #[test]
    fn protected_prefixes_cover_every_spelling_and_case_only_when_asked() {
        let p = ProtectedPaths::new(&["/portal/".into()], true);
        for covered in [
            "/portal/x",
            "/Portal/x",
            "/PORTAL%2Fx",
            "//portal/x",
            "/x/../portal/",
        ] {
            assert!(p.covers(covered), "{covered}");
        }
        for open in ["/portal", "/portalx/", "/api/info", "/"] {
            assert!(!p.covers(open), "{open}");
        }
        let exact_case = ProtectedPaths::new(&["/portal/".into()], false);
        assert!(!exact_case.covers("/Portal/x"));
        assert!(exact_case.covers("/%70ortal/x"));
        assert!(!ProtectedPaths::default().covers("/portal/x"));
    }
}
