//! Regressions of the security review (issue #14), each against the real gateway and a stub
//! PBX over TLS: protected paths spelled differently, the proxy's URI rebuild, identity
//! header lookalikes, and the administrator role (decided on `oid` and the synced UPN, and
//! kept for the life of the session on every instance).

use http::StatusCode;

use crate::sso::{SsoWorld, WorldOptions};

#[tokio::test]
async fn protected_paths_cannot_be_bypassed_by_spelling_the_path_differently() {
    let w = SsoWorld::with_sso("protected_paths = [\"/portal/\"]").await;
    let b = w.browser();
    for spelled in [
        "/portal/x",
        "/%70ortal/x",
        "/Portal/x",
        "//portal/x",
        "/./portal/x",
        "/a/../portal/x",
        "/portal%2fx",
        "/portal;v=1/x",
        "/%2e/portal/x",
    ] {
        let page = b
            .request(
                "GET",
                &format!("https://pbx.test{spelled}"),
                &[("accept", "application/json")],
                None,
            )
            .await;
        assert_eq!(
            page.status,
            StatusCode::UNAUTHORIZED,
            "{spelled} reached the PBX without a session: {}",
            page.body
        );
    }
    let open = b.get("https://pbx.test/portalx/").await;
    assert_eq!(open.status, StatusCode::NOT_FOUND, "not under the prefix");
}

#[tokio::test]
async fn leading_slashes_are_forwarded_as_they_came() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let page = w.browser().get("https://pbx.test//twice/x?q=1").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(
        page.body.ends_with(": //twice/x?q=1"),
        "the stub PBX saw {}",
        page.body
    );
}

#[tokio::test]
async fn identity_header_lookalikes_never_reach_the_pbx() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let seen = w
        .browser()
        .request(
            "GET",
            "https://pbx.test/headers",
            &[
                ("x.pbx.role", "admin"),
                ("xpbxuser", "admin"),
                ("x-pbx--tenant", "other"),
            ],
            None,
        )
        .await
        .json();
    let names: Vec<&String> = seen["headers"].as_object().unwrap().keys().collect();
    assert!(
        names
            .iter()
            .all(|n| !n.replace(['-', '.', '_'], "").starts_with("xpbx")),
        "{names:?}"
    );
}

#[tokio::test]
async fn leading_slashes_are_forwarded_as_they_came_over_http2() {
    let setup = crate::common::Setup::new();
    let (_upstream, gw) = crate::common::start_with(&setup, "", "").await;
    let mut c = crate::common::client::h2(gw.pbx(), "pbx.test", &setup.ca.roots()).await;
    let req = http::Request::get("https://pbx.test//twice/x?q=1")
        .body(crate::common::client::empty())
        .unwrap();
    let response = c.send_request(req).await.unwrap();
    let (parts, bytes) = crate::common::client::read_body(response).await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
    let body = String::from_utf8_lossy(&bytes);
    assert!(body.ends_with(": //twice/x?q=1"), "the stub PBX saw {body}");
    gw.stop().await;
}

async fn session_role(b: &crate::sso::Browser) -> String {
    let s = b
        .request(
            "GET",
            "https://pbx.test/ms365/session",
            &[("sec-fetch-site", "same-origin")],
            None,
        )
        .await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    s.json()["role"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_admin_role_is_decided_on_the_oid_and_synced_upn_never_preferred_username() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let (oid, token_upn) = w.user.clone();
    // The directory knows the user under another UPN than the one its token carries.
    w.bind_user(&oid, "synced.name@acme.test", "100", true)
        .await;
    w.settings(|s| {
        s.sign_in_as_administrator.enabled = true;
        s.sign_in_as_administrator.selected_users = vec![token_upn.clone()];
    })
    .await;
    let b = w.browser();
    b.login("https://pbx.test/ms365/login?domain=acme.test", &token_upn)
        .await;
    assert_eq!(
        session_role(&b).await,
        "user",
        "preferred_username grants nothing"
    );

    w.settings(|s| {
        s.sign_in_as_administrator.selected_users = vec!["SYNCED.name@acme.test".into()]
    })
    .await;
    let b = w.browser();
    b.login("https://pbx.test/ms365/login?domain=acme.test", &token_upn)
        .await;
    assert_eq!(session_role(&b).await, "admin", "the synced UPN does");
}

#[tokio::test]
async fn the_admin_role_sticks_on_another_instance_and_ends_with_the_setting() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let (oid, upn) = w.user.clone();
    w.settings(|s| {
        s.sign_in_as_administrator.enabled = true;
        s.sign_in_as_administrator.selected_users = vec![oid.clone()];
    })
    .await;
    let b = w.browser();
    b.login("https://pbx.test/ms365/login?domain=acme.test", &upn)
        .await;
    assert_eq!(session_role(&b).await, "admin");
    let toml = std::fs::read_to_string(w.setup.path("gateway.toml")).unwrap();
    let other = crate::common::TestGateway::start(w.setup.config(&toml)).await;
    let elsewhere =
        crate::sso::Browser::reaching(other.pbx(), other.sbc(), &w.setup.ca, b.jar.clone());
    assert_eq!(
        session_role(&elsewhere).await,
        "admin",
        "the session reloaded from the store keeps the granted role"
    );
    w.settings(|s| s.sign_in_as_administrator.selected_users.clear())
        .await;
    let third = crate::common::TestGateway::start(w.setup.config(&toml)).await;
    let later = crate::sso::Browser::reaching(third.pbx(), third.sbc(), &w.setup.ca, b.jar.clone());
    assert_eq!(
        session_role(&later).await,
        "user",
        "removed from the list: no longer admin"
    );
    other.stop().await;
    third.stop().await;
}

#[tokio::test]
async fn a_cross_site_logout_link_does_not_end_the_session() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.signed_in_browser().await;
    let lured = b
        .request(
            "GET",
            "https://pbx.test/ms365/logout",
            &[("sec-fetch-site", "cross-site")],
            None,
        )
        .await;
    assert_eq!(lured.status, StatusCode::FORBIDDEN, "{}", lured.body);
    assert_eq!(session_role(&b).await, "user", "still signed in");
    let own = b
        .request(
            "GET",
            "https://pbx.test/ms365/logout",
            &[("sec-fetch-site", "same-origin")],
            None,
        )
        .await;
    assert_eq!(own.status, StatusCode::FOUND);
}

#[tokio::test]
async fn signing_in_again_ends_the_browsers_previous_session() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.signed_in_browser().await;
    let first = b.cookie("pbx.test", "__Host-pbx_session").await.unwrap();
    b.login("https://pbx.test/ms365/login?domain=acme.test", &w.user.1)
        .await;
    let second = b.cookie("pbx.test", "__Host-pbx_session").await.unwrap();
    assert_ne!(first, second);
    let old = w
        .store
        .session(&ms365_gateway::sso::hash_cookie(&first))
        .await
        .unwrap()
        .unwrap();
    assert!(old.revoked_at.is_some(), "the earlier session was revoked");
    assert_eq!(session_role(&b).await, "user", "the new one works");
}

/// A gateway whose PBX listener takes PROXY headers from 127.0.0.1 (the "balancer").
async fn behind_a_balancer(
    setup: &crate::common::Setup,
    extra: &str,
) -> (crate::common::StubUpstream, crate::common::TestGateway) {
    let upstream = crate::common::StubUpstream::start().await;
    let url = upstream.url();
    let toml = setup.config_toml(&crate::common::Options {
        upstream_url: &url,
        pbx_extra: "proxy_protocol = true",
        extra: &format!("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n{extra}"),
        ..Default::default()
    });
    let gw = crate::common::TestGateway::start(setup.config(&toml)).await;
    (upstream, gw)
}

/// One request through the "balancer": `header`, then TLS and HTTP/1.1.
async fn via_balancer(
    setup: &crate::common::Setup,
    gw: &crate::common::TestGateway,
    header: &[u8],
    path: &str,
) -> (StatusCode, String) {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(gw.pbx()).await.unwrap();
    tcp.write_all(header).await.unwrap();
    let tls = crate::common::client::tls_after(tcp, "pbx.test", &setup.ca.roots(), &[b"http/1.1"])
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "pbx.test")
        .body(crate::common::client::empty())
        .unwrap();
    let (parts, body) = crate::common::client::fetch(&mut sender, req).await;
    (parts.status, body)
}

#[tokio::test]
async fn behind_a_balancer_the_client_address_comes_from_its_proxy_header() {
    let setup = crate::common::Setup::new();
    let (_upstream, gw) = behind_a_balancer(&setup, "").await;
    let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n";
    let (status, body) = via_balancer(&setup, &gw, v1, "/headers").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["x-forwarded-for"][0], "203.0.113.7");
    let client: std::net::SocketAddr = "[2001:db8::42]:40000".parse().unwrap();
    let v2 = ms365_gateway::edge::v2_header(client, "[2001:db8::1]:443".parse().unwrap());
    let (_, body) = via_balancer(&setup, &gw, &v2, "/headers").await;
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["x-forwarded-for"][0], "2001:db8::42");
    // A trusted peer without a header is not served.
    let refused =
        crate::common::client::tls_connect(gw.pbx(), "pbx.test", &setup.ca.roots(), &[b"http/1.1"])
            .await;
    assert!(refused.is_err(), "no PROXY header, no connection");
}

#[tokio::test]
async fn sign_in_limits_count_each_client_behind_the_balancer_apart() {
    let setup = crate::common::Setup::new();
    let (_upstream, gw) = behind_a_balancer(&setup, "[sso]\nlogin_rate_per_minute = 2\n").await;
    let from = |ip: &str| format!("PROXY TCP4 {ip} 10.0.0.1 5000 443\r\n").into_bytes();
    let login = "/ms365/login?domain=acme.test";
    for _ in 0..2 {
        let (status, body) = via_balancer(&setup, &gw, &from("198.51.100.1"), login).await;
        assert_ne!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    }
    let (status, _) = via_balancer(&setup, &gw, &from("198.51.100.1"), login).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the same client is limited"
    );
    let (status, body) = via_balancer(&setup, &gw, &from("198.51.100.2"), login).await;
    assert_ne!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "another client is not: {body}"
    );
}
