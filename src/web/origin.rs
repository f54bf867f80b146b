//! Same-origin checks for requests a browser sends with the gateway's cookies: the session
//! token endpoint, logout, the admin API by session, and WebSocket upgrades. Browsers say
//! where a request comes from (`Sec-Fetch-Site`, `Origin`); a request from another origin
//! (a sibling subdomain included, which SameSite=Lax lets through) is refused.

use http::header::ORIGIN;
use http::{HeaderMap, Uri};

use crate::edge::headers::request_host;

/// True when the browser says the request comes from another origin: `Sec-Fetch-Site` other
/// than `same-origin`/`none`, or an `Origin` that is not this listener's origin as the
/// request addressed it (`proto://Host`).
pub fn is_cross_origin(headers: &HeaderMap, uri: &Uri, proto: &str) -> bool {
    let fetch_site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    if let Some(site) = fetch_site
        && !site.eq_ignore_ascii_case(b"same-origin")
        && !site.eq_ignore_ascii_case(b"none")
    {
        return true;
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return false;
    };
    let Some(host) = request_host(headers, uri) else {
        return true;
    };
    let expected = normalise_origin(&format!("{proto}://{host}"));
    origin
        .to_str()
        .map_or(true, |o| normalise_origin(o) != expected)
}

/// Lower-cases an origin and drops the scheme's default port, as browsers serialise it.
fn normalise_origin(origin: &str) -> String {
    let lower = origin.trim().to_ascii_lowercase();
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        if lower.starts_with(scheme)
            && let Some(stripped) = lower.strip_suffix(port)
        {
            return stripped.to_string();
        }
    }
    lower
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn check(pairs: &[(&str, &str)], proto: &str) -> bool {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        is_cross_origin(&h, &Uri::from_static("/ms365/session"), proto)
    }

    #[test]
    fn origin_rules() {
        let host = ("host", "pbx.test");
        assert!(!check(&[host], "https"), "no hints: a non-browser client");
        assert!(!check(&[host, ("origin", "https://pbx.test")], "https"));
        assert!(!check(&[host, ("origin", "https://PBX.test:443")], "https"));
        assert!(check(&[host, ("origin", "http://pbx.test")], "https"));
        assert!(check(&[host, ("origin", "https://evil.test")], "https"));
        assert!(check(&[host, ("origin", "null")], "https"));
        assert!(check(&[("origin", "https://pbx.test")], "https"), "no host");
        assert!(!check(
            &[
                ("host", "sbc.test:8883"),
                ("origin", "https://sbc.test:8883")
            ],
            "https"
        ));
        assert!(check(
            &[("host", "sbc.test:8883"), ("origin", "https://sbc.test")],
            "https"
        ));
        assert!(!check(&[host, ("sec-fetch-site", "same-origin")], "https"));
        assert!(!check(&[host, ("sec-fetch-site", "none")], "https"));
        assert!(check(&[host, ("sec-fetch-site", "same-site")], "https"));
        assert!(check(&[host, ("sec-fetch-site", "cross-site")], "https"));
    }
}
