//! Slow clients cannot hold connections (issue #14): with every slot taken, a second client
//! gets in only once the gateway has closed the first one. A request body dripped a
//! byte at a time is answered 408 after its grace period; a client that reads none of its
//! response is disconnected after `send_timeout`; WebSocket tunnels take a connection slot
//! of their own and close when idle; a cross-site WebSocket carrying the session is refused.

use std::time::Duration;

use futures_util::StreamExt;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Setup, TestGateway, client, start_with};
use crate::sso::{SsoWorld, WorldOptions};

/// Generous bounds, so a loaded CI machine never fails these; the events they wait for
/// (a close, an accept) come in a second or two.
const BOUND: Duration = Duration::from_secs(30);

/// Two slots: the SBC listener holds one while it waits to accept, the first client on the
/// PBX listener the other, so the next PBX client gets in only when the first is gone.
const SLOW: &str = "[server]\nmax_connections = 2\nbody_min_rate = 1024\nbody_grace = \"1s\"\nsend_timeout = \"1s\"\nwebsocket_idle_timeout = \"1s\"\n";

async fn gateway(setup: &Setup, server: &str) -> (crate::common::StubUpstream, TestGateway) {
    start_with(setup, "", server).await
}

/// Reads until the peer closes; what was read.
async fn read_to_close<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(BOUND, s.read_to_end(&mut out))
        .await
        .expect("the gateway closed the connection");
    String::from_utf8_lossy(&out).into_owned()
}

/// A second client completes its TLS handshake: the single slot is free again.
async fn slot_is_free(setup: &Setup, gw: &TestGateway) {
    tokio::time::timeout(
        BOUND,
        client::tls_connect(gw.pbx(), "pbx.test", &setup.ca.roots(), &[b"http/1.1"]),
    )
    .await
    .expect("the next client was accepted")
    .expect("TLS handshake");
}

#[tokio::test]
async fn a_dripping_request_body_is_answered_408_and_its_connection_closed() {
    let setup = Setup::new();
    let (_upstream, gw) = gateway(&setup, SLOW).await;
    let mut tls = client::tls_connect(gw.pbx(), "pbx.test", &setup.ca.roots(), &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(b"POST /slurp HTTP/1.1\r\nhost: pbx.test\r\ncontent-length: 100000\r\n\r\nxxxx")
        .await
        .unwrap();
    let answer = read_to_close(&mut tls).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    slot_is_free(&setup, &gw).await;
}

#[tokio::test]
async fn a_client_that_reads_no_response_is_disconnected() {
    let setup = Setup::new();
    let (_upstream, gw) = gateway(&setup, SLOW).await;
    let mut tls = client::tls_connect(gw.pbx(), "pbx.test", &setup.ca.roots(), &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(b"GET /big HTTP/1.1\r\nhost: pbx.test\r\n\r\n")
        .await
        .unwrap();
    // Never read: the gateway's writes stall once the socket buffers are full.
    slot_is_free(&setup, &gw).await;
    drop(tls);
}

#[tokio::test]
async fn websocket_tunnels_hold_a_slot_and_close_when_idle() {
    let setup = Setup::new();
    // Four slots: each of the two listeners holds one while it waits to accept, the first
    // client's connection one, its tunnel one.
    let server = "[server]\nmax_connections = 4\nwebsocket_idle_timeout = \"1s\"\n";
    let (_upstream, gw) = gateway(&setup, server).await;
    let tls = client::tls_connect(gw.sbc(), "sbc.test", &setup.ca.roots(), &[b"http/1.1"])
        .await
        .unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async("wss://sbc.test:8883/ws", tls)
        .await
        .expect("the first tunnel opens");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    // The tunnel holds one slot; a second upgrade needs its own next to its connection's.
    let tls = client::tls_connect(gw.sbc(), "sbc.test", &setup.ca.roots(), &[b"http/1.1"])
        .await
        .unwrap();
    let refused = tokio_tungstenite::client_async("wss://sbc.test:8883/ws", tls).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE)
        }
        other => panic!("a tunnel beyond max_connections must be refused: {other:?}"),
    }
    // Nothing moves on the first tunnel: the gateway closes it.
    let end = tokio::time::timeout(BOUND, ws.next())
        .await
        .expect("the idle tunnel was closed");
    assert!(
        matches!(
            end,
            None | Some(Err(_)) | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))
        ),
        "{end:?}"
    );
}

#[tokio::test]
async fn a_cross_site_websocket_with_the_session_cookie_is_refused() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.signed_in_browser().await;
    let page = b
        .request(
            "GET",
            "https://pbx.test/ws",
            &[
                ("upgrade", "websocket"),
                ("connection", "upgrade"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("origin", "https://evil.example"),
            ],
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(
        page.body.contains("opened by a page of this site"),
        "{}",
        page.body
    );
}
