//! The reverse proxy over real TLS: bodies, protocols, WebSocket, header rules, failures.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::common::client::{self, ReqBody, fetch, get};
use crate::common::{Options, Setup, TestGateway, closed_port, start_with};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn get_round_trips_and_response_hop_by_hop_headers_are_removed() {
    let setup = Setup::new();
    let (_upstream, gw) = start_with(&setup, "", "").await;
    let mut c = client::h1(gw.pbx(), "pbx.test", &setup.ca.roots()).await;
    let (parts, body) = fetch(&mut c, get("pbx.test", "/hello")).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "hello from upstream");
    assert_eq!(parts.headers["x-upstream"], "yes");
    assert!(
        parts.headers.get("x-internal").is_none(),
        "header named in Connection leaked"
    );
    assert!(parts.headers.get("keep-alive").is_none());
    // The same connection carries a second request (keep-alive both ways).
    let (parts, _) = fetch(&mut c, get("pbx.test", "/hello")).await;
    assert_eq!(parts.status, StatusCode::OK);
    gw.stop().await;
}

/// 10 MB goes up in 64 KiB chunks and each chunk's echo is read back before the next is
/// sent: this only completes if neither direction is buffered whole.
#[tokio::test]
async fn ten_megabyte_post_streams_both_ways_unchanged() {
    let setup = Setup::new();
    let (_upstream, gw) = start_with(&setup, "", "").await;
    let mut c = client::h1(gw.pbx(), "pbx.test", &setup.ca.roots()).await;
    let (tx, rx) =
        mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(1);
    let stream = tokio_stream_from(rx);
    let body: ReqBody = BodyExt::boxed(StreamBody::new(stream));
    const CHUNK: usize = 64 * 1024;
    const TOTAL: usize = 10 * 1024 * 1024;
    let req = Request::post("/echo")
        .header("host", "pbx.test")
        .header("content-length", TOTAL)
        .body(body)
        .unwrap();
    let response_fut = c.send_request(req);
    let chunk = |i: usize| {
        Bytes::from(
            (0..CHUNK)
                .map(|j| ((i * 31 + j * 7) % 251) as u8)
                .collect::<Vec<u8>>(),
        )
    };
    tx.send(Ok(Frame::data(chunk(0)))).await.unwrap();
    let response = response_fut
        .await
        .expect("response headers before the body is complete");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = Vec::with_capacity(TOTAL);
    for i in 0..TOTAL / CHUNK {
        let expected_len = (i + 1) * CHUNK;
        while received.len() < expected_len {
            let frame = body.frame().await.expect("more body").expect("body frame");
            if let Ok(data) = frame.into_data() {
                received.extend_from_slice(&data);
            }
        }
        if i + 1 < TOTAL / CHUNK {
            tx.send(Ok(Frame::data(chunk(i + 1)))).await.unwrap();
        }
    }
    drop(tx);
    assert!(
        body.frame().await.is_none(),
        "no bytes beyond the request's"
    );
    let expected: Vec<u8> = (0..TOTAL / CHUNK).flat_map(|i| chunk(i).to_vec()).collect();
    assert_eq!(received.len(), TOTAL);
    assert!(received == expected, "echoed bytes differ");
    gw.stop().await;
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn http2_client_reaches_http1_upstream_with_its_host() {
    let setup = Setup::new();
    let (_upstream, gw) = start_with(&setup, "", "").await;
    let mut c = client::h2(gw.pbx(), "pbx.test", &setup.ca.roots()).await;
    let req = Request::get("https://pbx.test/headers?x=1")
        .body(client::empty())
        .unwrap();
    let response = c.send_request(req).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let (parts, bytes) = client::read_body(response).await;
    assert_eq!(parts.status, StatusCode::OK);
    let seen = json(std::str::from_utf8(&bytes).unwrap());
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["uri"], "/headers?x=1");
    assert_eq!(seen["headers"]["host"][0], "pbx.test");
    gw.stop().await;
}

/// A PBX behind TLS with a certificate of its own CA (`[upstream] ca_file`), reached by an
/// HTTP/2 client whose body has no length: it goes upstream chunked, whole. Without the CA
/// the PBX's certificate is refused and the client gets 502.
#[tokio::test]
async fn https_upstream_with_its_own_ca_gets_an_http2_body_of_unknown_length() {
    let setup = Setup::new();
    let pbx_ca = crate::common::pki::TestCa::new();
    let leaf = pbx_ca.issue(setup.dir.path(), "upstream", &["localhost"]);
    let ca_file = setup.path("pbx-ca.pem");
    std::fs::write(&ca_file, &pbx_ca.cert_pem).unwrap();
    let upstream = crate::common::StubUpstream::start_tls(&leaf).await;
    let url = format!("https://localhost:{}", upstream.addr.port());
    let trusted = format!("ca_file = \"{}\"", ca_file.display());
    for (extra, expected) in [
        (trusted.as_str(), StatusCode::OK),
        ("", StatusCode::BAD_GATEWAY),
    ] {
        let toml = setup.config_toml(&Options {
            upstream_url: &url,
            upstream_extra: extra,
            ..Default::default()
        });
        let gw = TestGateway::start(setup.config(&toml)).await;
        let mut c = client::h2(gw.pbx(), "pbx.test", &setup.ca.roots()).await;
        let pieces = [vec![b'a'; 1000], vec![b'b'; 40_000], vec![b'c'; 7]]
            .map(|piece| Ok::<_, client::BoxError>(Frame::data(Bytes::from(piece))));
        let stream = futures_util::stream::iter(pieces);
        let req = Request::post("https://pbx.test/slurp")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap();
        let (parts, body) = client::read_body(c.send_request(req).await.unwrap()).await;
        assert_eq!(parts.status, expected, "{extra:?}: {body:?}");
        if expected == StatusCode::OK {
            assert_eq!(body, "41007 bytes");
        }
        gw.stop().await;
    }
}

#[tokio::test]
async fn websocket_echo_through_the_proxy_text_binary_and_close() {
    let setup = Setup::new();
    let (_upstream, gw) = start_with(&setup, "", "").await;
    let tls = client::tls_connect(gw.sbc(), "sbc.test", &setup.ca.roots(), &[b"http/1.1"])
        .await
        .unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async("wss://sbc.test:8883/ws", tls)
        .await
        .expect("WebSocket handshake");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("REGISTER sip:sbc.test SIP/2.0"))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("REGISTER sip:sbc.test SIP/2.0")
    );
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    ws.send(Message::binary(binary.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(binary));
    ws.close(None).await.unwrap();
    let last = ws.next().await;
    assert!(
        matches!(last, Some(Ok(Message::Close(_))) | None),
        "close acknowledged: {last:?}"
    );
    drop(ws);
    gw.stop().await;
}

#[tokio::test]
async fn forwarding_headers_replace_spoofed_values_and_identity_headers_are_stripped() {
    let setup = Setup::new();
    let (_upstream, gw) = start_with(&setup, "", "").await;
    let mut c = client::h1(gw.pbx(), "pbx.test", &setup.ca.roots()).await;
    let req = Request::get("/headers")
        .header("host", "pbx.test")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "http")
        .header("forwarded", "for=6.6.6.6")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-pbx-user", "admin")
        .header("x_pbx_role", "admin")
        .header("X-Pbx-Extension", "100")
        .body(client::empty())
        .unwrap();
    let (_, body) = fetch(&mut c, req).await;
    let h = &json(&body)["headers"];
    assert_eq!(h["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["https"]));
    assert_eq!(h["x-forwarded-host"], serde_json::json!(["pbx.test"]));
    assert_eq!(
        h["forwarded"],
        serde_json::json!(["for=127.0.0.1;proto=https;host=\"pbx.test\""])
    );
    for gone in [
        "x-hop",
        "proxy-authorization",
        "x-pbx-user",
        "x_pbx_role",
        "x-pbx-extension",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn trusted_proxy_chain_is_extended() {
    let setup = Setup::new();
    let (_upstream, gw) =
        start_with(&setup, "", "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]").await;
    let mut c = client::h1(gw.pbx(), "pbx.test", &setup.ca.roots()).await;
    let req = Request::get("/headers")
        .header("host", "pbx.test")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .body(client::empty())
        .unwrap();
    let (_, body) = fetch(&mut c, req).await;
    let h = &json(&body)["headers"];
    assert_eq!(
        h["x-forwarded-for"],
        serde_json::json!(["203.0.113.7, 127.0.0.1"])
    );
    gw.stop().await;
}

#[tokio::test]
async fn upstream_down_answers_502_quickly_and_the_gateway_keeps_serving() {
    let setup = Setup::new();
    let url = format!("http://{}", closed_port());
    let toml = setup.config_toml(&Options {
        upstream_url: &url,
        ..Default::default()
    });
    let gw = TestGateway::start(setup.config(&toml)).await;
    let mut c = client::h1(gw.pbx(), "pbx.test", &setup.ca.roots()).await;
    for _ in 0..3 {
        let started = Instant::now();
        let req = Request::get("/anything")
            .header("host", "pbx.test")
            .header("accept", "application/json")
            .body(client::empty())
            .unwrap();
        let (parts, body) = fetch(&mut c, req).await;
        assert_eq!(parts.status, StatusCode::BAD_GATEWAY);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "502 took {:?}",
            started.elapsed()
        );
        assert_eq!(json(&body)["errors"][0]["code"], "UPSTREAM_UNAVAILABLE");
    }
    let (parts, body) = fetch(&mut c, get("pbx.test", "/page")).await;
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("<html"), "browsers get a page: {body}");
    let metrics = admin_get(gw.admin, "/metrics").await;
    assert!(
        metrics.contains("ms365_gateway_upstream_errors_total{kind=\"connect\"} 4"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn slow_upstream_answers_504_at_the_configured_timeout() {
    let setup = Setup::new();
    let (_upstream, gw) = start_with(&setup, "response_timeout = \"300ms\"", "").await;
    let mut c = client::h1(gw.pbx(), "pbx.test", &setup.ca.roots()).await;
    let started = Instant::now();
    let (parts, _) = fetch(&mut c, get("pbx.test", "/hang")).await;
    let elapsed = started.elapsed();
    assert_eq!(parts.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        elapsed >= Duration::from_millis(300),
        "answered before the timeout: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    gw.stop().await;
}

#[tokio::test]
async fn operations_endpoints_report_health_readiness_and_metrics() {
    let setup = Setup::new();
    let (_upstream, gw) = start_with(&setup, "", "").await;
    let mut c = client::h1(gw.pbx(), "pbx.test", &setup.ca.roots()).await;
    let (parts, _) = fetch(&mut c, get("pbx.test", "/hello")).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(admin_get(gw.admin, "/healthz").await, "ok\n");
    assert!(admin_get(gw.admin, "/readyz").await.contains("\"ready\""));
    let metrics = admin_get(gw.admin, "/metrics").await;
    assert!(
        metrics.contains(
            "ms365_gateway_http_requests_total{listener=\"pbx#0\",route=\"proxy\",status=\"200\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("ms365_gateway_tls_handshakes_total{listener=\"pbx#0\",result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ms365_gateway_connections_open{listener=\"pbx#0\"} 1"),
        "{metrics}"
    );
    gw.stop().await;
}

/// Plain HTTP/1.1 GET against the admin address.
pub async fn admin_get(addr: std::net::SocketAddr, path: &str) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (_, body) = fetch(&mut sender, get("localhost", path)).await;
    body
}
