//! The identity layer against the emulator over real HTTP: app tokens with both assertion
//! styles, single flight, Entra's errors turned into hints, rollover of key pairs, and the
//! authorization-code redemption's failure modes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ms365_gateway::config::CloudOverride;
use ms365_gateway::entra::AssertionAlg;
use ms365_gateway::entra::microsoft_client;
use ms365_gateway::entra::{AppTokenClient, CodeExchange};
use ms365_gateway::entra::{CloudEndpoints, NationalCloud, OidcError, TokenSource};
use ms365_gateway::entra::{KeyBits, TenantCredential};
use ms365_gateway::store::{CredentialState, Store, Tenant};
use ms365_gateway::tenant_keys::{TenantKeyError, TenantKeys};
use ms365_stand_ins::emulator::{
    AppRegistration, Emulator, EmulatorConfig, RunningEmulator, TenantSpec,
};

use crate::common::acme;

pub const DIRECTORY: &str = "7d2c1b3a-0f4e-4c55-9a11-2b3c4d5e6f70";

/// An emulator with one small tenant, a store with that tenant, and an app registration.
pub struct Fixture {
    pub emulator: RunningEmulator,
    pub endpoints: CloudEndpoints,
    pub store: Store,
    pub keys: TenantKeys,
    pub tenant: Tenant,
    pub client_id: String,
    _dir: tempfile::TempDir,
}

pub fn tenant_spec() -> TenantSpec {
    TenantSpec {
        directory_id: DIRECTORY.to_string(),
        domain: "contoso.onmicrosoft.com".to_string(),
        users: 30,
        contacts_per_user: 3,
        photo_share: 0.5,
        shared_mailboxes: 1,
        guests: 1,
        disabled: 1,
        users_without_names: 1,
        users_without_mailbox: 0,
    }
}

impl Fixture {
    pub async fn new(redirect_uris: &[&str]) -> Fixture {
        Fixture::with_spec(redirect_uris, tenant_spec()).await
    }

    pub async fn with_spec(redirect_uris: &[&str], spec: TenantSpec) -> Fixture {
        let emulator = Emulator::start(EmulatorConfig {
            seed: 7,
            tenants: vec![spec],
        })
        .await
        .unwrap();
        let app = AppRegistration {
            display_name: "PBX Server-side".into(),
            redirect_uris: redirect_uris.iter().map(|s| s.to_string()).collect(),
            permissions: vec!["User.Read.All".into(), "Contacts.Read".into()],
            client_id: None,
        };
        let client_id = emulator.emulator.register_app(DIRECTORY, app);
        let mut overrides = BTreeMap::new();
        let base: http::Uri = emulator.base_url.parse().unwrap();
        overrides.insert(
            "GLOBAL".to_string(),
            CloudOverride {
                login: Some(base.clone()),
                graph: Some(base),
            },
        );
        let endpoints = CloudEndpoints::resolve(NationalCloud::Global, &overrides);
        let dir = tempfile::tempdir().unwrap();
        let store = crate::common::db::open_store(dir.path(), 2).await;
        let seed = ms365_gateway::config::TenantSeed {
            pbx_login: None,
            id: acme(),
            domain: "acme.pbx.test".into(),
            name: "Acme".into(),
        };
        let tenant = store.upsert_tenant(&seed).await.unwrap();
        let keyring = crate::common::keys::open_keyring(dir.path(), &store).await;
        let keys = TenantKeys::new(store.clone(), keyring);
        Fixture {
            emulator,
            endpoints,
            store,
            keys,
            tenant,
            client_id,
            _dir: dir,
        }
    }

    /// Generates a pair and, when `upload`, registers its certificate with the app.
    pub async fn new_pair(&self, upload: bool) -> String {
        let info = self
            .keys
            .generate(&self.tenant, KeyBits::Rsa2048, 365)
            .await
            .unwrap();
        if upload {
            self.emulator
                .emulator
                .upload_certificate(DIRECTORY, &self.client_id, &info.certificate_pem)
                .unwrap();
        }
        info.thumbprint_sha1
    }

    pub async fn client(&self, alg: AssertionAlg) -> AppTokenClient {
        let creds = self
            .keys
            .signing_credentials(&self.tenant.id)
            .await
            .unwrap();
        self.client_with(creds, &self.client_id, DIRECTORY, alg)
    }

    pub fn client_with(
        &self,
        creds: Vec<Arc<TenantCredential>>,
        client_id: &str,
        directory: &str,
        alg: AssertionAlg,
    ) -> AppTokenClient {
        AppTokenClient::new(
            microsoft_client(Duration::from_secs(10)),
            self.endpoints.clone(),
            directory,
            client_id,
            creds,
            alg,
        )
        .with_rollover(std::sync::Arc::new(self.keys.clone()), &self.tenant.id)
    }

    pub async fn states(&self) -> Vec<(String, CredentialState)> {
        let mut all = self
            .store
            .usable_credentials(&self.tenant.id)
            .await
            .unwrap();
        all.sort_by_key(|r| r.state != CredentialState::Active);
        all.into_iter()
            .map(|r| (r.info.thumbprint_sha1, r.state))
            .collect()
    }
}

fn aad_code(e: &OidcError) -> u64 {
    e.aadsts()
        .unwrap_or_else(|| panic!("not an Entra error: {e}"))
}

fn jwt_claims(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwt.split('.').nth(1).unwrap())
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

#[tokio::test]
async fn app_token_with_ps256_and_rs256_assertions() {
    let f = Fixture::new(&[]).await;
    f.new_pair(true).await;
    for alg in [AssertionAlg::Ps256, AssertionAlg::Rs256] {
        let token = f
            .client(alg)
            .await
            .token()
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        let claims = jwt_claims(&token.secret);
        assert_eq!(claims["aud"], f.endpoints.graph, "{alg:?}");
        assert_eq!(claims["tid"], DIRECTORY);
    }
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request() {
    let f = Fixture::new(&[]).await;
    f.new_pair(true).await;
    let client = Arc::new(f.client(AssertionAlg::Ps256).await);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let c = client.clone();
        tasks.spawn(async move { c.token().await.map(|t| t.secret) });
    }
    let mut secrets = Vec::new();
    while let Some(r) = tasks.join_next().await {
        secrets.push(r.unwrap().unwrap());
    }
    assert_eq!(client.requests_made(), 1, "20 callers, one token request");
    assert!(secrets.windows(2).all(|w| w[0] == w[1]));
    client.invalidate();
    client.token().await.unwrap();
    assert_eq!(client.requests_made(), 2, "invalidate forces a new request");
}

#[tokio::test]
async fn certificate_not_uploaded_is_700027_with_an_upload_hint() {
    let f = Fixture::new(&[]).await;
    f.new_pair(false).await;
    let err = f
        .client(AssertionAlg::Ps256)
        .await
        .token()
        .await
        .unwrap_err();
    assert_eq!(aad_code(&err), 700027);
    assert!(err.to_string().contains("public_key.pem"), "{err}");
}

#[tokio::test]
async fn expired_certificate_is_700027() {
    let f = Fixture::new(&[]).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(400);
    params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(35);
    let cert = params.self_signed(&key).unwrap();
    f.emulator
        .emulator
        .upload_certificate(DIRECTORY, &f.client_id, &cert.pem())
        .unwrap();
    let cred = Arc::new(TenantCredential::from_pem(&cert.pem(), &key.serialize_pem()).unwrap());
    let err = f
        .client_with(vec![cred], &f.client_id, DIRECTORY, AssertionAlg::Ps256)
        .token()
        .await
        .unwrap_err();
    assert_eq!(aad_code(&err), 700027, "{err}");
}

#[tokio::test]
async fn wrong_application_directory_or_cloud_get_their_hints() {
    let f = Fixture::new(&[]).await;
    f.new_pair(true).await;
    let creds = f.keys.signing_credentials(&f.tenant.id).await.unwrap();
    let unknown_app = "11111111-2222-4333-8444-555555555555";
    let err = f
        .client_with(creds.clone(), unknown_app, DIRECTORY, AssertionAlg::Ps256)
        .token()
        .await
        .unwrap_err();
    assert_eq!(aad_code(&err), 700016);
    assert!(err.to_string().contains("Application (client) ID"), "{err}");
    let unknown_dir = "99999999-2222-4333-8444-555555555555";
    let err = f
        .client_with(creds, &f.client_id, unknown_dir, AssertionAlg::Ps256)
        .token()
        .await
        .unwrap_err();
    assert_eq!(aad_code(&err), 90002);
    assert!(err.to_string().contains("Directory (tenant) ID"), "{err}");
}

/// A pair generated through one instance's keys signs through another's on the same database
/// (another store and keyring, the same master key): the private key is in the store, sealed.
#[tokio::test]
async fn a_key_pair_generated_on_one_instance_signs_on_another() {
    let f = Fixture::new(&[]).await;
    let thumbprint = f.new_pair(true).await;
    let store = crate::common::db::open_store(f._dir.path(), 2).await;
    let keyring = crate::common::keys::open_keyring(f._dir.path(), &store).await;
    let other = TenantKeys::new(store, keyring);
    let creds = other.signing_credentials(&f.tenant.id).await.unwrap();
    assert_eq!(creds.len(), 1);
    assert_eq!(creds[0].info.thumbprint_sha1, thumbprint);
    let token = f
        .client_with(creds, &f.client_id, DIRECTORY, AssertionAlg::Ps256)
        .token()
        .await
        .expect("the other instance signs with the stored key");
    assert!(!token.secret.is_empty());
    assert!(!f._dir.path().join("tenants").exists(), "no key files");
}

/// A key file left by an earlier version (`data_dir/tenants/<id>/credentials/<sha1>.key`)
/// is sealed into the store once, so upgrading keeps the tenant's certificate working.
#[tokio::test]
async fn key_files_of_an_earlier_version_are_imported_once() {
    let f = Fixture::new(&[]).await;
    let thumbprint = f.new_pair(true).await;
    let keyring = crate::common::keys::open_keyring(f._dir.path(), &f.store).await;
    let name = ms365_gateway::tenant_keys::key_name(&acme(), &thumbprint);
    let pem = keyring.get(&name).await.unwrap().unwrap();
    keyring.delete(&name).await.unwrap();
    let err = f.keys.signing_credentials(&acme()).await.unwrap_err();
    assert!(
        matches!(
            err,
            TenantKeyError::Credential(OidcError::NoCredential { .. })
        ),
        "{err}"
    );
    let dir = f._dir.path().join("tenants/acme/credentials");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{thumbprint}.key")), &pem).unwrap();
    assert_eq!(f.keys.import_key_files(f._dir.path()).await.unwrap(), 1);
    assert_eq!(f.keys.import_key_files(f._dir.path()).await.unwrap(), 0);
    assert_eq!(keyring.get(&name).await.unwrap(), Some(pem));
    f.client(AssertionAlg::Ps256).await.token().await.unwrap();
}

/// A new pair is tried first but the active one keeps working until the new certificate is
/// uploaded; the first token with the new pair makes it active and retires the old one.
#[tokio::test]
async fn a_new_key_pair_takes_over_without_an_outage() {
    let f = Fixture::new(&[]).await;
    let old = f.new_pair(true).await;
    f.client(AssertionAlg::Ps256).await.token().await.unwrap();
    let new = f.new_pair(false).await;
    assert_eq!(
        f.states().await,
        vec![
            (old.clone(), CredentialState::Active),
            (new.clone(), CredentialState::Pending)
        ]
    );
    f.client(AssertionAlg::Ps256)
        .await
        .token()
        .await
        .expect("old pair still signs while the new one is not uploaded");
    assert_eq!(f.states().await[1].1, CredentialState::Pending);
    f.emulator
        .emulator
        .upload_certificate(
            DIRECTORY,
            &f.client_id,
            &f.keys
                .current_certificate(&f.tenant.id)
                .await
                .unwrap()
                .unwrap()
                .certificate_pem,
        )
        .unwrap();
    f.client(AssertionAlg::Ps256).await.token().await.unwrap();
    assert_eq!(
        f.states().await,
        vec![(new, CredentialState::Active)],
        "old pair retired"
    );
}

#[tokio::test]
async fn authorization_code_failures_map_to_their_aadsts_codes() {
    let redirect = "https://pbx.test/ms365/redirect";
    let f = Fixture::new(&[redirect]).await;
    f.new_pair(true).await;
    let client = f.client(AssertionAlg::Ps256).await;
    let verifier = "x".repeat(43) + "verifier-value";
    let code = authorize(&f, redirect, &verifier).await;
    let good = CodeExchange {
        code: &code,
        redirect_uri: redirect,
        code_verifier: &verifier,
    };
    let tokens = client
        .exchange_code(&good)
        .await
        .expect("first redemption works");
    assert_eq!(jwt_claims(&tokens.id_token)["aud"], f.client_id.as_str());
    let err = client.exchange_code(&good).await.unwrap_err();
    assert_eq!(aad_code(&err), 54005, "{err}");
    assert!(err.to_string().contains("already used"), "{err}");
    let code = authorize(&f, redirect, &verifier).await;
    let wrong_verifier = "y".repeat(50);
    let err = client
        .exchange_code(&CodeExchange {
            code: &code,
            redirect_uri: redirect,
            code_verifier: &wrong_verifier,
        })
        .await
        .unwrap_err();
    assert_eq!(aad_code(&err), 501481, "{err}");
    assert!(err.to_string().contains("PKCE"), "{err}");
}

/// Runs the emulator's non-interactive authorize (login_hint) and returns the code.
async fn authorize(f: &Fixture, redirect: &str, verifier: &str) -> String {
    use base64::Engine;
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref(),
    );
    let user = f
        .emulator
        .emulator
        .users(DIRECTORY)
        .into_iter()
        .find(|u| u.account_enabled && u.given_name.is_some())
        .unwrap();
    let http = microsoft_client(Duration::from_secs(10));
    let response = http
        .get(f.endpoints.authorize_url(DIRECTORY))
        .query(&[
            ("client_id", f.client_id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", redirect),
            ("response_mode", "query"),
            ("scope", "openid profile email"),
            ("state", "s1"),
            ("nonce", "n1"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("login_hint", user.user_principal_name.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::FOUND);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(redirect), "{location}");
    let url = reqwest::Url::parse(&location).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code in redirect")
}

#[tokio::test]
async fn unregistered_redirect_uri_is_refused_with_50011() {
    let f = Fixture::new(&["https://pbx.test/ms365/redirect"]).await;
    let http = microsoft_client(Duration::from_secs(10));
    let response = http
        .get(f.endpoints.authorize_url(DIRECTORY))
        .query(&[
            ("client_id", f.client_id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", "https://sbc.test:8883/ms365/redirect"),
            ("scope", "openid"),
            ("state", "s"),
            ("nonce", "n"),
            (
                "code_challenge",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            ),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_ne!(
        response.status(),
        reqwest::StatusCode::FOUND,
        "never redirects to an unregistered URI"
    );
    let body = response.text().await.unwrap();
    assert!(body.contains("AADSTS50011"), "{body}");
}
