//! The post-login `return_to` check: whatever it accepts, resolved by a WHATWG URL parser
//! against the listener's origin, stays on that origin (no open redirect).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(candidate) = std::str::from_utf8(data) else {
        return;
    };
    let Some(accepted) = ms365_gateway::validate_return_to(candidate) else {
        return;
    };
    let base = url::Url::parse("https://pbx.example.com/portal/").unwrap();
    let resolved = base
        .join(accepted)
        .unwrap_or_else(|e| panic!("accepted {accepted:?} does not resolve: {e}"));
    assert_eq!(
        resolved.origin(),
        base.origin(),
        "accepted {accepted:?} leaves the origin: {resolved}"
    );
});
