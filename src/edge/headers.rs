//! Header rules of the proxy: hop-by-hop headers (RFC 9110 §7.6.1) removed in both
//! directions, `X-Forwarded-*` and `Forwarded` (RFC 7239) written by the gateway, and
//! identity headers that only the gateway may set (`X-PBX-*`) stripped from clients.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use http::header::{
    CONNECTION, HOST, HeaderName, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderValue};

use super::added_headers::AddedHeaders;

const HOP_BY_HOP_COUNT: usize = 9;

/// Hop-by-hop headers always removed, besides those listed in `Connection`.
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// What the gateway writes for an untrusted peer, replacing whatever the client sent.
const FORWARDING: [HeaderName; 4] = [
    X_FORWARDED_FOR,
    FORWARDED,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
];

/// The identity headers' prefix (`X-PBX-`) with its non-alphanumerics dropped.
const IDENTITY_FOLDED: &str = "xpbx";

/// Removes hop-by-hop headers. With `keep_upgrade`, `Connection: upgrade` and `Upgrade` are
/// re-added afterwards, because a WebSocket handshake must reach the other side.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One scan of the names present says which to remove: cheaper than a hashed lookup
    // for each of them, and most messages carry none or only `Connection`.
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let upgrade = headers.get(UPGRADE).cloned();
    let te_trailers = headers.get_all(TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    // `Connection: keep-alive` or `upgrade` names nothing more to remove, so the usual
    // answer makes no list (and no header name) at all.
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| !is_removed_anyway(token))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if let (true, Some(upgrade)) = (keep_upgrade, upgrade) {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, upgrade);
    }
}

/// A `Connection` token that needs no removal of its own: empty, or a name the fixed list
/// removes anyway (`keep-alive`, `upgrade`).
fn is_removed_anyway(token: &str) -> bool {
    token.is_empty()
        || HOP_BY_HOP
            .iter()
            .any(|h| token.eq_ignore_ascii_case(h.as_str()))
}

/// True for a request that asks to switch protocols (WebSocket over HTTP/1.1).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes every client-supplied header that claims a gateway identity: every name that,
/// with its non-alphanumeric characters dropped, starts with `xpbx` (`X-PBX-Role`,
/// `x_pbx_role`, `X.PBX.Role`, `XPBXRole`), because servers and frameworks fold `-`, `_` and
/// `.` differently, which is how such headers get smuggled past a literal match.
pub fn strip_identity_headers(headers: &mut HeaderMap) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| claims_identity(name.as_str()))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

/// Whether a (lower-case) header name folds to the identity prefix `xpbx`.
fn claims_identity(name: &str) -> bool {
    let mut folded = name.bytes().filter(u8::is_ascii_alphanumeric);
    IDENTITY_FOLDED
        .bytes()
        .all(|want| folded.next().is_some_and(|b| b.eq_ignore_ascii_case(&want)))
}

/// What the gateway knows about the hop a connection's requests arrive on, worked out once
/// per connection: the values every proxied request repeats are formatted here, not per
/// request.
#[derive(Debug)]
pub struct ClientHop {
    /// `https`, or `http` on a `tls = false` listener.
    proto: &'static str,
    /// The peer's address as an `X-Forwarded-For` element.
    address: String,
    /// `for=…;proto=…`: the `Forwarded` element without its `host`.
    element: String,
    /// The last `Host` forwarding fields were made for (a copy, so the client connection's
    /// read buffer is not held), and those fields: a connection's requests nearly always
    /// name the same host, so they are formatted once and then shared.
    last_fields: Mutex<Option<(HeaderValue, AddedHeaders)>>,
    /// Peer is a configured trusted proxy: extend its headers instead of replacing them.
    trusted: bool,
}

impl ClientHop {
    pub fn new(peer: SocketAddr, proto: &'static str, trusted: bool) -> Self {
        let ip = match peer.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let node = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        ClientHop {
            proto,
            address: ip.to_string(),
            element: format!("for={node};proto={proto}"),
            last_fields: Mutex::new(None),
            trusted,
        }
    }

    /// The forwarding fields of a request to `host`, made once per host the connection
    /// names.
    fn fields(&self, host: Option<&HeaderValue>) -> AddedHeaders {
        let Some(host) = host else {
            return self.make_fields(None);
        };
        let mut last = self.last_fields.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((named, fields)) = &*last
            && named == host
        {
            return fields.clone();
        }
        let fields = self.make_fields(host.to_str().ok());
        if let Ok(named) = HeaderValue::from_bytes(host.as_bytes()) {
            *last = Some((named, fields.clone()));
        }
        fields
    }

    fn make_fields(&self, host: Option<&str>) -> AddedHeaders {
        let element = self.element(host);
        let host_len = host.map_or(0, str::len);
        let size = 80 + self.address.len() + element.len() + host_len;
        let mut fields = AddedHeaders::builder(size);
        fields.push(&X_FORWARDED_FOR, &self.address);
        fields.push(&FORWARDED, &element);
        fields.push(&X_FORWARDED_PROTO, self.proto);
        if let Some(host) = host {
            fields.push(&X_FORWARDED_HOST, host);
        }
        fields.build()
    }

    /// The `Forwarded` element of a request to `host`.
    fn element(&self, host: Option<&str>) -> String {
        match host.filter(|h| is_token_safe(h)) {
            Some(host) => {
                let mut element = String::with_capacity(self.element.len() + host.len() + 8);
                element.push_str(&self.element);
                element.push_str(";host=\"");
                element.push_str(host);
                element.push('"');
                element
            }
            None => self.element.clone(),
        }
    }
}

/// `X-Forwarded-For/Proto/Host` and `Forwarded` for the upstream; `host` is the `Host` (or
/// HTTP/2 `:authority`) the client used, when it is visible ASCII. A trusted hop's own
/// headers are extended in `headers`, and nothing comes back. From any other peer the
/// client's are removed and the gateway's come back as lines to add after the request's
/// fields: they are the same for a connection's every request to one host, so they are
/// made once, not inserted into each request's map.
pub fn forwarding(
    headers: &mut HeaderMap,
    hop: &ClientHop,
    host: Option<&HeaderValue>,
) -> AddedHeaders {
    if hop.trusted {
        let host = host.and_then(|h| h.to_str().ok());
        append_list(headers, X_FORWARDED_FOR, &hop.address);
        append_list(headers, FORWARDED, &hop.element(host));
        set_if_absent(headers, X_FORWARDED_PROTO, hop.proto);
        if let Some(host) = host {
            set_if_absent(headers, X_FORWARDED_HOST, host);
        }
        return AddedHeaders::default();
    }
    // One scan of the names: most clients send none of these.
    if headers.keys().any(|name| FORWARDING.contains(name)) {
        for name in &FORWARDING {
            headers.remove(name);
        }
    }
    hop.fields(host)
}

/// The host the client addressed: `Host`, else the URI authority (HTTP/2).
pub fn request_host<'a>(headers: &'a HeaderMap, uri: &'a http::Uri) -> Option<&'a str> {
    request_host_of(headers.get(HOST), uri)
}

/// [`request_host`] from the `Host` header's value.
pub fn request_host_of<'a>(host: Option<&'a HeaderValue>, uri: &'a http::Uri) -> Option<&'a str> {
    host.and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
}

fn is_token_safe(host: &str) -> bool {
    host.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

fn set_value(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

fn set_if_absent(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if !headers.contains_key(&name) {
        set_value(headers, name, value);
    }
}

/// Joins all existing values and `value` into one comma-separated header.
fn append_list(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let mut parts: Vec<String> = headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    parts.push(value.to_string());
    set_value(headers, name, &parts.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers, gzip"),
            ("proxy-authorization", "Basic x"),
            ("x-keep", "yes"),
        ]);
        remove_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("proxy-authorization").is_none());
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-keep"], "yes");
        assert!(h.get("connection").is_none());
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn identity_headers_stripped_in_any_spelling() {
        let mut h = map(&[
            ("X-PBX-User", "admin"),
            ("x_pbx_role", "admin"),
            ("X_Pbx-Tenant", "t"),
            ("X.PBX.Role", "admin"),
            ("XPBXRole", "admin"),
            ("x--pbx__extension", "100"),
            ("x-other", "1"),
            ("x-pb", "short"),
            ("xpb-x", "folds to xpbx as well"),
        ]);
        strip_identity_headers(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(h["x-other"], "1");
        assert_eq!(h["x-pb"], "short");
    }

    /// The request's headers as the upstream gets them: its map, then the added lines.
    fn forwarded(h: &mut HeaderMap, hop: &ClientHop, host: Option<&'static str>) {
        let host = host.map(HeaderValue::from_static);
        let added = forwarding(h, hop, host.as_ref());
        for (name, value) in added.fields() {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            h.append(name, HeaderValue::from_bytes(value).unwrap());
        }
    }

    #[test]
    fn spoofed_forwarded_for_is_replaced_for_untrusted_peers() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-proto", "gopher"),
        ]);
        let hop = ClientHop::new("192.0.2.7:5000".parse().unwrap(), "https", false);
        forwarded(&mut h, &hop, Some("pbx.example.com"));
        for name in FORWARDING {
            assert_eq!(h.get_all(&name).iter().count(), 1, "{name}");
        }
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-host"], "pbx.example.com");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.7;proto=https;host=\"pbx.example.com\""
        );
    }

    #[test]
    fn each_request_gets_the_forwarded_element_of_its_own_host() {
        let hop = ClientHop::new("192.0.2.7:5000".parse().unwrap(), "https", false);
        let sent = |host: Option<&'static str>| {
            let mut h = map(&[("x-forwarded-host", "evil")]);
            forwarded(&mut h, &hop, host);
            (h.get(FORWARDED).cloned(), h.get(X_FORWARDED_HOST).cloned())
        };
        let a = "for=192.0.2.7;proto=https;host=\"a.example.com\"";
        let b = "for=192.0.2.7;proto=https;host=\"b.example.com\"";
        // The second request to a host reuses the first one's element; another host, or
        // none, gets its own.
        for (host, element) in [
            (Some("a.example.com"), a),
            (Some("a.example.com"), a),
            (Some("b.example.com"), b),
            (None, "for=192.0.2.7;proto=https"),
            (Some("a.example.com"), a),
        ] {
            let (got, x_host) = sent(host);
            assert_eq!(got.unwrap(), element);
            assert_eq!(x_host.as_ref().map(|v| v.to_str().unwrap()), host);
        }
    }

    #[test]
    fn every_header_the_connection_header_names_is_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, Close, , x-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            // RFC 9110 §7.6.1: a field named like any option goes, `close` included.
            ("close", "1"),
            ("content-type", "text/html"),
        ]);
        remove_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type"]);
    }

    #[test]
    fn trusted_peer_extends_the_chain() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
        ]);
        let hop = ClientHop::new("[::1]:5000".parse().unwrap(), "http", true);
        forwarded(&mut h, &hop, None);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, ::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=http");
    }
}
