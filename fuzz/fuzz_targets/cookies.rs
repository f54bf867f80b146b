//! Cookie headers and sealed values from clients: finding the session cookie, stripping the
//! gateway's cookies before the PBX sees them, and unsealing never panic; stripping leaves
//! none of the gateway's cookies; an arbitrary value never unseals.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use ms365_gateway::Sealer;
use ms365_gateway::sso::strip_gateway_cookies;
use ms365_gateway::sso::{SESSION_COOKIE, session_cookie};

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.append(http::header::COOKIE, value);
        let _ = session_cookie(&headers);
        strip_gateway_cookies(&mut headers);
        assert!(session_cookie(&headers).is_none());
        for v in headers.get_all(http::header::COOKIE) {
            let left = v.as_bytes();
            assert!(
                !left.split(|b| *b == b';').any(|p| p
                    .trim_ascii()
                    .starts_with(format!("{SESSION_COOKIE}=").as_bytes())),
                "{left:?}"
            );
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let sealer = Sealer::new(&[(1, [7u8; 32])]);
        assert!(sealer.open("flow", text).is_err(), "{text:?} unsealed");
    }
});
