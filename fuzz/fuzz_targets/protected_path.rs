//! The protected-path canonicaliser: never panics, and its output is a clean absolute path
//! (no empty, `.` or `..` segments), so a prefix match on it means what it says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ms365_gateway::config::{ProtectedPaths, canonical_path};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    for ignore_case in [false, true] {
        let c = canonical_path(path, ignore_case);
        assert!(c.starts_with(b"/"), "{path:?} -> {c:?}");
        let inner = c.strip_suffix(b"/").unwrap_or(&c);
        for segment in inner.split(|b| *b == b'/').skip(1) {
            assert!(
                !segment.is_empty() && segment != b"." && segment != b"..",
                "{path:?} -> {:?}",
                String::from_utf8_lossy(&c)
            );
        }
        if ignore_case {
            assert!(!c.iter().any(u8::is_ascii_uppercase));
        }
    }
    let protected = ProtectedPaths::new(&["/portal/".to_string()], true);
    let _ = protected.covers(path);
});
