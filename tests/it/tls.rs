//! TLS termination: certificates per listener and per SNI name, reload without restart,
//! self-signed certificates, and the handshake timeout.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use http::StatusCode;
use tokio::io::AsyncReadExt;

use crate::common::client::{self, fetch, get, presented_leaf, tls_connect};
use crate::common::{Options, Setup, StubUpstream, TestGateway, start_with};

#[tokio::test]
async fn each_listener_presents_its_own_certificate() {
    let setup = Setup::new();
    let (_upstream, gw) = start_with(&setup, "", "").await;
    let roots = setup.ca.roots();
    let pbx = tls_connect(gw.pbx(), "pbx.test", &roots, &[])
        .await
        .unwrap();
    assert_eq!(presented_leaf(&pbx), setup.pbx_cert.der);
    let sbc = tls_connect(gw.sbc(), "sbc.test", &roots, &[])
        .await
        .unwrap();
    assert_eq!(presented_leaf(&sbc), setup.sbc_cert.der);
    // The SBC certificate does not cover the PBX name: a client checking names refuses it.
    assert!(
        tls_connect(gw.sbc(), "pbx.test", &roots, &[])
            .await
            .is_err()
    );
    gw.stop().await;
}

#[tokio::test]
async fn sni_chooses_between_certificates_on_one_listener() {
    let setup = Setup::new();
    let portal = setup.ca.issue(setup.dir.path(), "portal", &["portal.test"]);
    let wild = setup
        .ca
        .issue(setup.dir.path(), "wild", &["*.tenants.test"]);
    let upstream = StubUpstream::start().await;
    let pbx_extra = format!(
        "[[listener.sni]]\nserver_names = [\"portal.test\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
         [[listener.sni]]\nserver_names = [\"*.tenants.test\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        portal.cert.display(),
        portal.key.display(),
        wild.cert.display(),
        wild.key.display()
    );
    let url = upstream.url();
    let toml = setup.config_toml(&Options {
        upstream_url: &url,
        pbx_extra: &pbx_extra,
        ..Default::default()
    });
    let gw = TestGateway::start(setup.config(&toml)).await;
    let roots = setup.ca.roots();
    let leaf = |sni: &'static str| {
        let roots = roots.clone();
        let addr = gw.pbx();
        async move { presented_leaf(&tls_connect(addr, sni, &roots, &[]).await.unwrap()) }
    };
    assert_eq!(leaf("portal.test").await, portal.der);
    assert_eq!(
        leaf("PORTAL.test").await,
        portal.der,
        "server names are case-insensitive"
    );
    assert_eq!(leaf("acme.tenants.test").await, wild.der);
    assert_eq!(
        leaf("pbx.test").await,
        setup.pbx_cert.der,
        "no SNI match: the listener's default"
    );
    gw.stop().await;
}

#[tokio::test]
async fn replaced_certificate_is_served_after_reload_without_dropping_connections() {
    let setup = Setup::new();
    let (_upstream, gw) = start_with(&setup, "", "").await;
    let roots = setup.ca.roots();
    let mut old_conn = client::h1(gw.pbx(), "pbx.test", &roots).await;
    let renewed = setup.ca.issue(setup.dir.path(), "pbx", &["pbx.test"]);
    assert_ne!(renewed.der, setup.pbx_cert.der);
    gw.handle
        .reload_certificates()
        .await
        .expect("reload succeeds");
    let fresh = tls_connect(gw.pbx(), "pbx.test", &roots, &[])
        .await
        .unwrap();
    assert_eq!(presented_leaf(&fresh), renewed.der);
    let (parts, _) = fetch(&mut old_conn, get("pbx.test", "/hello")).await;
    assert_eq!(
        parts.status,
        StatusCode::OK,
        "connection opened before the reload still works"
    );
    gw.stop().await;
}

#[tokio::test]
async fn certificate_files_are_watched_and_reloaded_on_change() {
    let setup = Setup::new();
    let (_upstream, gw) = start_with(&setup, "", "[server]\ncert_reload_interval = \"50ms\"").await;
    let mut generation = gw.handle.certificate_generation();
    let renewed = setup.ca.issue(setup.dir.path(), "sbc", &["sbc.test"]);
    tokio::time::timeout(Duration::from_secs(10), generation.changed())
        .await
        .expect("a reload after the files changed")
        .unwrap();
    let fresh = tls_connect(gw.sbc(), "sbc.test", &setup.ca.roots(), &[])
        .await
        .unwrap();
    assert_eq!(presented_leaf(&fresh), renewed.der);
    gw.stop().await;
}

#[tokio::test]
async fn a_broken_replacement_keeps_the_previous_certificate() {
    let setup = Setup::new();
    let (_upstream, gw) = start_with(&setup, "", "").await;
    std::fs::write(
        &setup.pbx_cert.cert,
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    let err = gw
        .handle
        .reload_certificates()
        .await
        .expect_err("garbage must not load");
    assert!(err.to_string().contains("listener[0].tls_cert"), "{err}");
    let conn = tls_connect(gw.pbx(), "pbx.test", &setup.ca.roots(), &[])
        .await
        .unwrap();
    assert_eq!(presented_leaf(&conn), setup.pbx_cert.der);
    gw.stop().await;
}

#[tokio::test]
async fn self_signed_certificate_is_generated_once_and_kept() {
    let setup = Setup::new();
    let upstream = StubUpstream::start().await;
    let toml = format!(
        "data_dir = \"{}\"\n[[listener]]\nkind = \"pbx\"\nbind = \"127.0.0.1:0\"\npublic_url = \"https://localhost:8443\"\n\
         tls_cert = \"self-signed\"\n[upstream]\nurl = \"{}\"\n[admin]\nbind = \"127.0.0.1:0\"\n{}",
        setup.path("data").display(),
        upstream.url(),
        crate::common::db::store_toml(&setup.path("data"))
    );
    let first = serve_and_read_leaf(&setup, &toml).await;
    let key_file = setup.path("data/tls/pbx-0.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "private key readable by others");
    let second = serve_and_read_leaf(&setup, &toml).await;
    assert_eq!(first, second, "a restart must reuse the certificate");
}

async fn serve_and_read_leaf(setup: &Setup, toml: &str) -> Vec<u8> {
    let gw = TestGateway::start(setup.config(toml)).await;
    let self_signed = std::fs::read(setup.path("data/tls/pbx-0.crt")).unwrap();
    let der = rustls_pki_types::CertificateDer::from_pem_slice(&self_signed).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let conn = tls_connect(gw.pbx(), "localhost", &roots, &[])
        .await
        .expect("verifies against the generated certificate");
    let leaf = presented_leaf(&conn);
    assert_eq!(leaf, der.to_vec());
    gw.stop().await;
    leaf
}

use rustls_pki_types::pem::PemObject;

#[tokio::test]
async fn a_client_that_never_completes_the_handshake_is_cut_off() {
    let setup = Setup::new();
    let (_upstream, gw) =
        start_with(&setup, "", "[server]\ntls_handshake_timeout = \"200ms\"").await;
    let mut tcp = tokio::net::TcpStream::connect(gw.pbx()).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("server closes the silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "expected EOF, got {read:?}");
    let metrics = crate::proxy::admin_get(gw.admin, "/metrics").await;
    assert!(
        metrics.contains(
            "ms365_gateway_tls_handshakes_total{listener=\"pbx#0\",result=\"timeout\"} 1"
        ),
        "{metrics}"
    );
    gw.stop().await;
}
