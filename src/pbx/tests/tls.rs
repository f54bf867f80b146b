//! `[pbx] ca_file`: a PBX whose certificate comes from a private CA is reachable with that
//! CA configured, and refused (in words naming the certificate) without it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

use super::{DOMAIN, Reply, login, router};
use crate::config::{PbxConfig, PbxKind};
use crate::pbx::{PbxClient, PbxError};

/// A CA (written to `dir/ca.pem`) and a server certificate for 127.0.0.1 it issued.
fn pki(dir: &Path) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.der().clone(), key)
}

/// The scripted stand-in behind TLS; its API base.
async fn serve_tls(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> String {
    let tls = rustls::ServerConfig::builder_with_provider(crate::edge::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let (app, _) = router(Arc::new(|_: &super::Hit| Reply::Default));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}/api", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = builder.serve_connection(io, service).await;
            });
        }
    });
    base
}

fn config(api_url: &str, ca_file: Option<&Path>) -> PbxConfig {
    PbxConfig {
        kind: PbxKind::PortSip,
        api_url: api_url.parse().unwrap(),
        ca_file: ca_file.map(Path::to_path_buf),
        request_timeout: Duration::from_secs(5),
        concurrency: 2,
    }
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki(dir.path());
    let api_url = serve_tls(cert, key).await;
    let ca = dir.path().join("ca.pem");
    let client = PbxClient::new(&config(&api_url, Some(&ca)), login(), DOMAIN.into()).unwrap();
    client.sign_in().await.unwrap();
    let client = PbxClient::new(&config(&api_url, None), login(), DOMAIN.into())
        .unwrap()
        .with_backoff_base(Duration::from_millis(1));
    let err = client.sign_in().await.unwrap_err();
    let PbxError::Unreachable { reason, .. } = &err else {
        panic!("not Unreachable: {err:?}");
    };
    assert!(reason.to_lowercase().contains("certificate"), "{reason}");
}

#[test]
fn a_ca_file_without_certificates_is_a_setup_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.pem");
    std::fs::write(&path, "not a certificate\n").unwrap();
    let err = PbxClient::new(
        &config("https://pbx.test/api", Some(&path)),
        login(),
        DOMAIN.into(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, PbxError::Setup(m) if m.contains("empty.pem")),
        "{err:?}"
    );
}
