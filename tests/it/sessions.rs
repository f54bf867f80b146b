//! PBX sessions end to end below the gateway router: the session routes served by axum on
//! 127.0.0.1:0 over real HTTP, a real SQLite store, real keys on disk. Time is a manual
//! clock, so cache and expiry bounds are shown exactly, without sleeping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::acme;
use axum::Extension;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ms365_gateway::TenantId;
use ms365_gateway::config::TenantSeed;
use ms365_gateway::edge::ConnInfo;
use ms365_gateway::keyring::Keyring;
use ms365_gateway::sso::session_routes;
use ms365_gateway::sso::{
    ClientKind, Clock, DEFAULT_LIFETIME, SessionClaims, Sessions, hash_cookie,
};
use ms365_gateway::sso::{SESSION_KEY_PREFIX, SessionKeys};
use ms365_gateway::store::{DirectoryUser, Store, Tenant, now_epoch};
use reqwest::StatusCode;
use serde_json::Value;

const ISSUER: &str = "https://pbx.test";

/// A clock the test moves by hand.
struct ManualClock {
    base: Instant,
    base_epoch: i64,
    offset_secs: AtomicU64,
}

impl ManualClock {
    fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock {
            base: Instant::now(),
            base_epoch: now_epoch(),
            offset_secs: AtomicU64::new(0),
        })
    }

    fn advance(&self, secs: u64) {
        self.offset_secs.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_secs(self.offset_secs.load(Ordering::SeqCst))
    }

    fn epoch(&self) -> i64 {
        self.base_epoch + self.offset_secs.load(Ordering::SeqCst) as i64
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    keyring: Keyring,
    keys: Arc<SessionKeys>,
    sessions: Arc<Sessions>,
    clock: Arc<ManualClock>,
    tenant: Tenant,
    user: DirectoryUser,
    /// `http://127.0.0.1:port`
    base: String,
    /// The origin the routes believe they serve (ConnInfo says https).
    origin: String,
    http: reqwest::Client,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with(DEFAULT_LIFETIME, None).await
    }

    /// A fixture whose sessions last `lifetime`, cached for `cache_ttl` (default 30 s).
    async fn with(lifetime: Duration, cache_ttl: Option<Duration>) -> Fixture {
        ms365_gateway::edge::install_default_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let store = crate::common::db::open_store(dir.path(), 2).await;
        let tenant = store
            .upsert_tenant(&TenantSeed {
                pbx_login: None,
                id: TenantId::from_static("t1"),
                domain: "contoso.pbx.test".into(),
                name: "Contoso".into(),
            })
            .await
            .unwrap();
        let user = directory_user(&tenant.id);
        store.upsert_directory_user(&user).await.unwrap();
        let keyring = crate::common::keys::open_keyring(dir.path(), &store).await;
        let keys = Arc::new(SessionKeys::load_or_create(&keyring).await.unwrap());
        let clock = ManualClock::new();
        let mut sessions = Sessions::new(store.clone(), keys.clone(), lifetime, ISSUER.into())
            .with_clock(clock.clone());
        if let Some(ttl) = cache_ttl {
            sessions = sessions.with_cache_ttl(ttl);
        }
        let sessions = Arc::new(sessions);
        let addr = serve(sessions.clone()).await;
        Fixture {
            dir,
            store,
            keyring,
            keys,
            sessions,
            clock,
            tenant,
            user,
            base: format!("http://{addr}"),
            origin: format!("https://{addr}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    async fn login(&self, client: ClientKind) -> String {
        let (cookie, info) = self
            .sessions
            .create(&self.tenant, &self.user, client, "pbx#0")
            .await
            .unwrap();
        assert_eq!(info.id_hash, hash_cookie(&cookie));
        cookie
    }

    /// `GET /ms365/session` as a same-origin script, plus `extra` headers.
    async fn session(&self, cookie: Option<&str>, extra: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self
            .http
            .get(format!("{}/ms365/session", self.base))
            .header("accept", "application/json");
        if let Some(cookie) = cookie {
            req = req.header("cookie", format!("theme=dark; __Host-pbx_session={cookie}"));
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    async fn jwks(&self) -> JwkSet {
        let r = self
            .http
            .get(format!("{}/ms365/jwks.json", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["cache-control"], "public, max-age=300");
        r.json().await.unwrap()
    }

    async fn set_enabled(&self, enabled: bool) {
        let mut user = self.user.clone();
        user.enabled = enabled;
        self.store.upsert_directory_user(&user).await.unwrap();
    }
}

fn directory_user(tenant_id: &TenantId) -> DirectoryUser {
    DirectoryUser {
        tenant_id: tenant_id.clone(),
        oid: "00000000-0000-0000-0000-0000000000a1".into(),
        upn: "adele@contoso.test".into(),
        pbx_user_id: "pbx-user-101".into(),
        extension: Some("101".into()),
        display_name: "Adele Vance".into(),
        email: Some("adele@contoso.test".into()),
        role: ms365_gateway::store::Role::Admin,
        enabled: true,
        source: "sync".into(),
    }
}

/// Serves the routes as the gateway would: every request carries the listener's `ConnInfo`.
async fn serve(sessions: Arc<Sessions>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(ms365_gateway::ListenerMetrics::new(
        Arc::new(ms365_gateway::Metrics::new()),
        "pbx#0",
    ));
    let info = ConnInfo::new(addr, Arc::from("pbx#0"), 0, "https", metrics, false);
    let app = session_routes(sessions).layer(Extension(info));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Verifies `token` with the key its `kid` names in `jwks`.
fn verify(token: &str, jwks: &JwkSet, aud: &str) -> jsonwebtoken::TokenData<SessionClaims> {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let kid = header.kid.expect("kid in the header");
    let jwk = jwks.find(&kid).expect("the token's key is published");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[aud]);
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    jsonwebtoken::decode(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap()
}

async fn token_of(r: reqwest::Response) -> String {
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

async fn assert_unauthenticated(r: reqwest::Response) {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHENTICATED");
    assert!(body["errors"][0]["message"].is_string());
}

#[tokio::test]
async fn session_token_verifies_against_jwks_with_every_claim() {
    let f = Fixture::new().await;
    let cookie = f.login(ClientKind::Portal).await;
    let origin = f.origin.clone();
    let r = f
        .session(
            Some(&cookie),
            &[("sec-fetch-site", "same-origin"), ("origin", &origin)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["extension"], "101");
    assert_eq!(body["domain"], "contoso.pbx.test");
    assert_eq!(body["display_name"], "Adele Vance");
    assert_eq!(body["role"], "admin");

    let token = body["access_token"].as_str().unwrap();
    let data = verify(token, &f.jwks().await, "portal");
    assert_eq!(
        data.header.kid.as_deref(),
        Some(f.keys.current_kid().as_str())
    );
    let now = f.clock.epoch();
    let expected = SessionClaims {
        iss: ISSUER.into(),
        aud: "portal".into(),
        sub: "pbx-user-101".into(),
        tenant: "t1".into(),
        domain: "contoso.pbx.test".into(),
        extension: Some("101".into()),
        name: "Adele Vance".into(),
        email: Some("adele@contoso.test".into()),
        role: ms365_gateway::store::Role::Admin,
        sid: hash_cookie(&cookie),
        iat: now,
        exp: now + 3600,
    };
    assert_eq!(data.claims, expected);
}

#[tokio::test]
async fn webrtc_token_has_webrtc_audience_and_never_outlives_the_session() {
    let f = Fixture::with(Duration::from_secs(600), None).await;
    let cookie = f.login(ClientKind::Webrtc).await;
    f.clock.advance(100);
    let r = f.session(Some(&cookie), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["expires_in"], 500,
        "what is left of the session, not an hour"
    );
    let token = body["access_token"].as_str().unwrap();
    let jwks = f.jwks().await;
    let claims = verify(token, &jwks, "webrtc").claims;
    assert_eq!(claims.aud, "webrtc");
    assert_eq!(claims.exp, f.clock.epoch() + 500);

    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let mut portal_only = Validation::new(Algorithm::ES256);
    portal_only.set_audience(&["portal"]);
    let key = DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let err = jsonwebtoken::decode::<Value>(token, &key, &portal_only).unwrap_err();
    assert_eq!(
        err.kind(),
        &jsonwebtoken::errors::ErrorKind::InvalidAudience,
        "a WebRTC token is not a portal token"
    );
}

#[tokio::test]
async fn cross_site_requests_are_refused() {
    let f = Fixture::new().await;
    let cookie = f.login(ClientKind::Portal).await;
    let wrong_scheme = f.origin.replace("https://", "http://");
    let refused: [&[(&str, &str)]; 5] = [
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
        &[("origin", "https://evil.test")],
        &[("origin", "null")],
        &[("origin", &wrong_scheme)],
    ];
    for headers in refused {
        let r = f.session(Some(&cookie), headers).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(r.headers()["content-type"], "application/json");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "CROSS_ORIGIN", "{headers:?}");
        assert!(body.get("access_token").is_none());
    }
    let origin = f.origin.clone();
    let allowed: [&[(&str, &str)]; 3] = [
        &[("sec-fetch-site", "same-origin"), ("origin", &origin)],
        &[("sec-fetch-site", "none")],
        &[],
    ];
    for headers in allowed {
        let r = f.session(Some(&cookie), headers).await;
        assert_eq!(r.status(), StatusCode::OK, "{headers:?}");
    }
}

#[tokio::test]
async fn missing_malformed_and_unknown_cookies_are_401() {
    let f = Fixture::new().await;
    assert_unauthenticated(f.session(None, &[]).await).await;
    assert_unauthenticated(f.session(Some("not-a-session"), &[]).await).await;
    // Well-formed (43 base64url characters) but never issued.
    let unknown = "A".repeat(43);
    assert_unauthenticated(f.session(Some(&unknown), &[]).await).await;
}

#[tokio::test]
async fn logout_revokes_the_session_and_clears_the_cookie() {
    let f = Fixture::new().await;
    let cookie = f.login(ClientKind::Portal).await;
    let r = f.session(Some(&cookie), &[]).await;
    assert_eq!(r.status(), StatusCode::OK, "cached before logout");

    let r = f
        .http
        .get(format!("{}/ms365/logout", f.base))
        .header("cookie", format!("__Host-pbx_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], "/ms365/?logged_out=1");
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set_cookie.starts_with("__Host-pbx_session=;"),
        "{set_cookie}"
    );
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax", "Max-Age=0"] {
        assert!(
            set_cookie.split("; ").any(|a| a == attribute),
            "{attribute} in {set_cookie}"
        );
    }
    assert!(
        !set_cookie.contains("Domain"),
        "__Host- cookies have no Domain"
    );

    // Revoked in the store and evicted from the cache: refused at once, no clock movement.
    assert_unauthenticated(f.session(Some(&cookie), &[]).await).await;
    let row = f
        .store
        .session(&hash_cookie(&cookie))
        .await
        .unwrap()
        .unwrap();
    assert!(row.revoked_at.is_some());
}

#[tokio::test]
async fn logout_by_post_checks_origin_and_return_to() {
    let f = Fixture::new().await;
    let cookie = f.login(ClientKind::Portal).await;
    let post = |query: &str, origin: &str| {
        f.http
            .post(format!("{}/ms365/logout{query}", f.base))
            .header("cookie", format!("__Host-pbx_session={cookie}"))
            .header("origin", origin)
            .send()
    };
    let r = post("", "https://evil.test").await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "logout CSRF refused");
    assert!(r.headers().get("set-cookie").is_none());
    assert_eq!(f.session(Some(&cookie), &[]).await.status(), StatusCode::OK);

    let r = post("?return_to=//evil.test/x", &f.origin).await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        r.headers()["location"],
        "/ms365/?logged_out=1",
        "open redirect refused"
    );
    assert_unauthenticated(f.session(Some(&cookie), &[]).await).await;

    let r = post("?return_to=%2Fwebrtc%2F%3Fbye%3D1", &f.origin)
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FOUND,
        "logout without a live session still works"
    );
    assert_eq!(r.headers()["location"], "/webrtc/?bye=1");
}

#[tokio::test]
async fn disabled_user_stops_resolving_within_the_cache_ttl() {
    // The default TTL: a user disabled by sync loses access within 30 seconds.
    let f = Fixture::new().await;
    let cookie = f.login(ClientKind::Portal).await;
    assert_eq!(f.session(Some(&cookie), &[]).await.status(), StatusCode::OK);
    f.set_enabled(false).await;
    f.clock.advance(29);
    assert_eq!(
        f.session(Some(&cookie), &[]).await.status(),
        StatusCode::OK,
        "served from the cache until it is 30 s old"
    );
    f.clock.advance(1);
    assert_unauthenticated(f.session(Some(&cookie), &[]).await).await;

    // Refusals are not cached: re-enabling works on the next request.
    f.set_enabled(true).await;
    assert_eq!(f.session(Some(&cookie), &[]).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn cache_ttl_is_configurable_and_rebinding_ends_the_session() {
    let f = Fixture::with(DEFAULT_LIFETIME, Some(Duration::from_secs(5))).await;
    let cookie = f.login(ClientKind::Portal).await;
    assert!(f.sessions.resolve(&cookie).await.unwrap().is_some());
    // The directory now maps this Microsoft user to another PBX account.
    let mut rebound = f.user.clone();
    rebound.pbx_user_id = "pbx-user-202".into();
    f.store.upsert_directory_user(&rebound).await.unwrap();
    f.clock.advance(4);
    let cached = f.sessions.resolve(&cookie).await.unwrap().unwrap();
    assert_eq!(
        cached.pbx_user_id, "pbx-user-101",
        "cached value before the TTL"
    );
    f.clock.advance(1);
    assert_eq!(
        f.sessions.resolve(&cookie).await.unwrap(),
        None,
        "fresh value at the TTL: the session belonged to the old account"
    );
}

#[tokio::test]
async fn expired_sessions_are_refused_even_from_the_cache_and_purged() {
    let f = Fixture::with(Duration::from_secs(60), None).await;
    let cookie = f.login(ClientKind::Portal).await;
    assert_eq!(f.session(Some(&cookie), &[]).await.status(), StatusCode::OK);
    f.clock.advance(60);
    assert_unauthenticated(f.session(Some(&cookie), &[]).await).await;
    let hash = hash_cookie(&cookie);
    assert_eq!(
        f.sessions
            .purge_expired(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    f.clock.advance(3601);
    assert_eq!(
        f.sessions
            .purge_expired(Duration::from_secs(3600))
            .await
            .unwrap(),
        1
    );
    assert!(f.store.session(&hash).await.unwrap().is_none());
}

#[tokio::test]
async fn ending_all_sessions_of_a_user() {
    let f = Fixture::new().await;
    let a = f.login(ClientKind::Portal).await;
    let b = f.login(ClientKind::Webrtc).await;
    assert!(f.sessions.resolve(&a).await.unwrap().is_some());
    let n = f
        .sessions
        .end_user_sessions(&f.tenant.id, &f.user.oid)
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        f.sessions.resolve(&a).await.unwrap(),
        None,
        "evicted from the cache"
    );
    assert_eq!(f.sessions.resolve(&b).await.unwrap(), None);
}

#[tokio::test]
async fn refuses_to_create_sessions_for_disabled_or_foreign_users() {
    let f = Fixture::new().await;
    let mut disabled = f.user.clone();
    disabled.enabled = false;
    let err = f
        .sessions
        .create(&f.tenant, &disabled, ClientKind::Portal, "pbx#0")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("disabled"), "{err}");
    let mut foreign = f.user.clone();
    foreign.tenant_id = TenantId::from_static("t2");
    assert!(
        f.sessions
            .create(&f.tenant, &foreign, ClientKind::Portal, "pbx#0")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_verifiable() {
    let f = Fixture::new().await;
    let cookie = f.login(ClientKind::Portal).await;
    let first_kid = f.keys.current_kid();
    let old_token = token_of(f.session(Some(&cookie), &[]).await).await;

    let second_kid = f.keys.rotate().await.unwrap();
    assert_ne!(first_kid, second_kid);
    let new_token = token_of(f.session(Some(&cookie), &[]).await).await;
    let jwks = f.jwks().await;
    assert_eq!(jwks.keys.len(), 2);
    let old = verify(&old_token, &jwks, "portal");
    assert_eq!(old.header.kid.as_deref(), Some(first_kid.as_str()));
    let new = verify(&new_token, &jwks, "portal");
    assert_eq!(new.header.kid.as_deref(), Some(second_kid.as_str()));

    // A restart (or another instance) loads both, and the newest still signs.
    let reloaded = SessionKeys::load_or_create(&f.keyring).await.unwrap();
    assert_eq!(reloaded.current_kid(), second_kid);
    assert_eq!(reloaded.kids(), vec![second_kid.clone(), first_kid.clone()]);

    // A second rotation retires the first key: gone from the JWKS and from the store.
    let third_kid = f.keys.rotate().await.unwrap();
    let kids: Vec<String> = f
        .jwks()
        .await
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect();
    assert_eq!(kids, vec![third_kid.clone(), second_kid.clone()]);
    let names = f.keyring.names(SESSION_KEY_PREFIX).await.unwrap();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names[0].ends_with(&second_kid) && names[1].ends_with(&third_kid),
        "{names:?}"
    );
    // The other instance catches up on its next reload.
    reloaded.reload().await.unwrap();
    assert_eq!(reloaded.kids(), vec![third_kid, second_kid]);
    assert!(!f.dir.path().join("keys").exists(), "no key files");
}

#[tokio::test]
async fn cookie_value_is_never_stored_in_clear() {
    let f = Fixture::new().await;
    let cookie = f.login(ClientKind::Webrtc).await;
    let hash = hash_cookie(&cookie);
    let row = f
        .store
        .session(&hash)
        .await
        .unwrap()
        .expect("row keyed by the hash");
    assert_eq!(row.id_hash, hash);
    assert_eq!(row.tenant_id, "t1");
    assert_eq!(row.oid, f.user.oid);
    assert_eq!(row.pbx_user_id, "pbx-user-101");
    assert_eq!(row.client_kind, "webrtc");
    assert_eq!(row.listener, "pbx#0");
    assert_eq!(
        row.expires_at - row.created_at,
        DEFAULT_LIFETIME.as_secs() as i64
    );
    assert!(f.store.session(&cookie).await.unwrap().is_none());

    // The database (SQLite: main file and WAL) holds the hash and never the value.
    let bytes = crate::common::db::stored_bytes(f.dir.path()).await;
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains(&hash), "the hash is what is stored");
    assert!(!contains(&cookie), "the cookie value is not");
}

#[tokio::test]
async fn the_gateway_purges_long_ended_sessions() {
    let setup = crate::common::Setup::new();
    let store = crate::common::db::open_store(&setup.path("data"), 2).await;
    let seed = TenantSeed {
        pbx_login: None,
        id: acme(),
        domain: "acme.test".into(),
        name: "Acme".into(),
    };
    store.upsert_tenant(&seed).await.unwrap();
    let now = now_epoch();
    let record = |id: &str, expires_at: i64| ms365_gateway::store::SessionRecord {
        id_hash: id.into(),
        tenant_id: acme(),
        oid: "oid".into(),
        pbx_user_id: "pbx-1".into(),
        client_kind: "portal".into(),
        listener: "pbx#0".into(),
        created_at: expires_at - 3600,
        expires_at,
        last_seen_at: expires_at - 3600,
        revoked_at: None,
    };
    store
        .create_session(&record("old", now - 8 * 86_400))
        .await
        .unwrap();
    store
        .create_session(&record("recent", now - 86_400))
        .await
        .unwrap();
    store
        .create_session(&record("live", now + 3600))
        .await
        .unwrap();
    let extra = "[[tenant]]\nid = \"acme\"\ndomain = \"acme.test\"\n";
    let (_upstream, gateway) = crate::common::start_with(&setup, "", extra).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.session("old").await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the week-old session was not purged"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        store.session("recent").await.unwrap().is_some(),
        "a week of history is kept"
    );
    assert!(store.session("live").await.unwrap().is_some());
    gateway.stop().await;
}
