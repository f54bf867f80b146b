//! Tests of the emulator over real HTTP on 127.0.0.1:0, with client assertions built the way
//! the gateway builds them (jsonwebtoken + an rcgen RSA certificate). Shared here: the
//! fixture (a running emulator with one registered app and its uploaded certificate), the
//! certificate/assertion helpers and PKCE.

mod faults;
mod graph;
mod identity;
mod outlook;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use time::{Duration as TimeDuration, OffsetDateTime};

use super::util::{b64url, sha1, sha256};
use super::{AppRegistration, Emulator, EmulatorConfig, RunningEmulator, TenantSpec};

pub(super) const TENANT: &str = "11111111-2222-4333-8444-555555555555";
pub(super) const DOMAIN: &str = "contoso.onmicrosoft.com";
pub(super) const REDIRECT: &str = "https://pbx.example.com/ms365/redirect";
pub(super) const ALL_PERMISSIONS: &[&str] =
    &["User.Read.All", "Contacts.Read", "GroupMember.Read.All"];

pub(super) fn spec(users: usize) -> TenantSpec {
    TenantSpec {
        users,
        contacts_per_user: 3,
        photo_share: 0.5,
        shared_mailboxes: 1,
        guests: 1,
        disabled: 1,
        users_without_names: 1,
        ..TenantSpec::new(TENANT, DOMAIN)
    }
}

/// An RSA key and a self-signed certificate, as "Generate New Key Pair" makes them.
pub(super) struct Cred {
    key: rcgen::KeyPair,
    pub cert_pem: String,
    der: Vec<u8>,
}

impl Cred {
    pub fn new() -> Cred {
        let now = OffsetDateTime::now_utc();
        Cred::valid(now - TimeDuration::days(1), now + TimeDuration::days(365))
    }

    pub fn valid(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Cred {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ms365-gateway test");
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.self_signed(&key).unwrap();
        Cred {
            cert_pem: cert.pem(),
            der: cert.der().to_vec(),
            key,
        }
    }

    /// A signed assertion with Microsoft's recommended claims; `alg` picks the header.
    pub fn assertion(&self, alg: Algorithm, client_id: &str, aud: &str) -> String {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        self.sign(
            alg,
            &json!({
                "aud": aud, "iss": client_id, "sub": client_id,
                "jti": uuid::Uuid::new_v4().to_string(), "nbf": now, "iat": now, "exp": now + 300,
            }),
        )
    }

    pub fn sign(&self, alg: Algorithm, claims: &Value) -> String {
        let mut header = Header::new(alg);
        match alg {
            Algorithm::PS256 => header.x5t_s256 = Some(b64url(&sha256(&self.der))),
            _ => header.x5t = Some(b64url(&sha1(&self.der))),
        }
        let key = EncodingKey::from_rsa_pem(self.key.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    /// Signs with this key but names `other`'s certificate: a bad signature.
    pub fn sign_as(&self, other: &Cred, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.x5t = Some(b64url(&sha1(&other.der)));
        let key = EncodingKey::from_rsa_pem(self.key.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

pub(super) struct Fixture {
    pub running: RunningEmulator,
    pub http: reqwest::Client,
    pub client_id: String,
    pub cred: Cred,
}

impl Fixture {
    pub async fn new(spec: TenantSpec, permissions: &[&str]) -> Fixture {
        let running = Emulator::start(EmulatorConfig {
            seed: 7,
            tenants: vec![spec],
        })
        .await
        .unwrap();
        let (client_id, cred) = Fixture::app(&running.emulator, permissions);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Fixture {
            running,
            http,
            client_id,
            cred,
        }
    }

    /// Registers another app with its own certificate.
    pub fn app(emu: &Emulator, permissions: &[&str]) -> (String, Cred) {
        let client_id = emu.register_app(
            TENANT,
            AppRegistration {
                display_name: "PBX".into(),
                redirect_uris: vec![REDIRECT.into()],
                permissions: permissions.iter().map(|p| p.to_string()).collect(),
                client_id: None,
            },
        );
        let cred = Cred::new();
        emu.upload_certificate(TENANT, &client_id, &cred.cert_pem)
            .unwrap();
        (client_id, cred)
    }

    pub fn emu(&self) -> &Emulator {
        &self.running.emulator
    }

    pub fn base(&self) -> &str {
        &self.running.base_url
    }

    pub fn token_url(&self) -> String {
        format!("{}/{TENANT}/oauth2/v2.0/token", self.base())
    }

    pub async fn token_request(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .http
            .post(self.token_url())
            .form(form)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// A client-credentials request with a fresh assertion by `cred` for `client_id`.
    pub async fn credentials(&self, client_id: &str, cred: &Cred, scope: &str) -> (u16, Value) {
        let assertion = cred.assertion(Algorithm::PS256, client_id, &self.token_url());
        self.token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("scope", scope),
            ("client_assertion_type", super::assertion::ASSERTION_TYPE),
            ("client_assertion", &assertion),
        ])
        .await
    }

    pub async fn app_token(&self) -> String {
        let scope = format!("{}/.default", self.base());
        let (status, body) = self.credentials(&self.client_id, &self.cred, &scope).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    /// GET without credentials (login-host documents, the control API): `(status, JSON)`.
    pub async fn fetch(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// POST JSON without credentials: `(status, JSON)`.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base())
        }
    }

    /// GET a Graph path (`/v1.0/...`) or a full next/delta link.
    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, token: &str, path: &str) -> (u16, Value) {
        let response = self.get(token, path).await;
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }
}

/// A PKCE pair: `(code_verifier, code_challenge)`.
pub(super) fn pkce() -> (String, String) {
    let verifier = b64url(
        &[
            uuid::Uuid::new_v4().into_bytes(),
            uuid::Uuid::new_v4().into_bytes(),
        ]
        .concat(),
    );
    let challenge = b64url(&sha256(verifier.as_bytes()));
    (verifier, challenge)
}

/// The claims of a JWT, unchecked.
pub(super) fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&super::util::b64url_decode(part).unwrap()).unwrap()
}

/// The AADSTS code of a token error body.
pub(super) fn aadsts(body: &Value) -> u64 {
    body["error_codes"][0].as_u64().unwrap_or(0)
}
