//! ID token validation for the sign-in, as the OpenID Connect relying-party rules and
//! Microsoft's v2.0 tokens require: the signature with the tenant's published keys (cached
//! per tenant for a day, refetched on an unknown `kid` at most once every five minutes, the
//! last good set kept when Microsoft cannot be reached), an allow-list of algorithms (never
//! `none` or HMAC), `iss` for the directory, `aud` = the application (another audience only
//! with a matching `azp`), `tid`, `nonce`, the time claims with five minutes of skew, and the
//! `oid` that keys the user.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::error::OidcError;
use super::token::transport;
use crate::ids::ObjectId;

/// How long a fetched key set is trusted.
pub const JWKS_TTL: Duration = Duration::from_secs(24 * 3600);
/// Least time between two fetches caused by unknown `kid`s.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(300);
/// Allowed clock skew.
pub const SKEW_SECS: u64 = 300;

struct CachedSet {
    keys: JwkSet,
    fetched_at: Instant,
    /// When an unknown `kid` last caused a refetch (successful or not).
    kid_refetch_at: Option<Instant>,
}

/// Key sets by JWKS URL (one per tenant).
pub struct JwksCache {
    http: reqwest::Client,
    sets: Mutex<HashMap<String, CachedSet>>,
    fetches: std::sync::atomic::AtomicU64,
}

impl JwksCache {
    pub fn new(http: reqwest::Client) -> Self {
        JwksCache {
            http,
            sets: Mutex::new(HashMap::new()),
            fetches: Default::default(),
        }
    }

    /// How many times a key set was fetched (tests and metrics).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The decoding key for `kid` (or the only key, when the token names none).
    pub async fn key(&self, url: &str, kid: Option<&str>) -> Result<DecodingKey, OidcError> {
        let (cached, stale, may_refetch) = self.lookup(url);
        if let Some(set) = cached.as_ref().filter(|_| !stale)
            && let Some(key) = pick(set, kid)?
        {
            return Ok(key);
        }
        if cached.is_some() && !stale && !may_refetch {
            return Err(OidcError::InvalidIdToken(
                "signed with a key the tenant does not publish".into(),
            ));
        }
        let for_unknown_kid = cached.is_some() && !stale;
        let set = match self.fetch(url, for_unknown_kid).await {
            Ok(set) => set,
            // Keep signing people in with the last good keys while Microsoft is unreachable.
            Err(e) => cached.ok_or(e)?,
        };
        pick(&set, kid)?.ok_or_else(|| {
            OidcError::InvalidIdToken("signed with a key the tenant does not publish".into())
        })
    }

    /// (copy of the cached set, older than the TTL, refetch allowed now)
    fn lookup(&self, url: &str) -> (Option<JwkSet>, bool, bool) {
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        match sets.get(url) {
            None => (None, true, true),
            Some(c) => (
                Some(c.keys.clone()),
                c.fetched_at.elapsed() > JWKS_TTL,
                c.kid_refetch_at
                    .is_none_or(|t| t.elapsed() >= JWKS_REFETCH_INTERVAL),
            ),
        }
    }

    async fn fetch(&self, url: &str, for_unknown_kid: bool) -> Result<JwkSet, OidcError> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        let mut kid_refetch_at = None;
        if let Some(c) = self
            .sets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(url)
        {
            if for_unknown_kid {
                c.kid_refetch_at = Some(now);
            }
            kid_refetch_at = c.kid_refetch_at;
        }
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| transport(url, &e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| transport(url, &e))?;
        if !status.is_success() {
            return Err(OidcError::Unexpected {
                url: url.to_string(),
                status: status.as_u16(),
                body: body.chars().take(200).collect(),
            });
        }
        let keys: JwkSet = serde_json::from_str(&body).map_err(|e| OidcError::Unexpected {
            url: url.to_string(),
            status: status.as_u16(),
            body: format!("not a key set: {e}"),
        })?;
        let entry = CachedSet {
            keys: keys.clone(),
            fetched_at: now,
            kid_refetch_at,
        };
        self.sets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(url.to_string(), entry);
        Ok(keys)
    }
}

/// Finds the RSA key for `kid`; without a `kid` only a set of exactly one key is usable.
fn pick(set: &JwkSet, kid: Option<&str>) -> Result<Option<DecodingKey>, OidcError> {
    let jwk = match kid {
        Some(kid) => set.find(kid),
        None if set.keys.len() == 1 => set.keys.first(),
        None => {
            return Err(OidcError::InvalidIdToken(
                "no `kid` and the tenant publishes several keys".into(),
            ));
        }
    };
    let Some(jwk) = jwk else { return Ok(None) };
    match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => DecodingKey::from_rsa_components(&rsa.n, &rsa.e)
            .map(Some)
            .map_err(|e| OidcError::InvalidIdToken(format!("unusable published key: {e}"))),
        _ => Err(OidcError::InvalidIdToken(
            "published key is not an RSA key".into(),
        )),
    }
}

/// What the token must say.
pub struct IdTokenExpectations<'a> {
    /// `{login}/{directory_id}/v2.0`
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub directory_id: &'a str,
    pub nonce: &'a str,
    /// RS256, plus PS256 when the tenant allows it.
    pub algorithms: &'a [Algorithm],
}

/// The claims the gateway uses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct IdTokenClaims {
    pub oid: ObjectId,
    pub tid: String,
    pub sub: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub preferred_username: Option<String>,
    /// Often absent in Microsoft's tokens.
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Deserialize)]
struct RawClaims {
    aud: serde_json::Value,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    tid: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// Validates `token` and returns its claims.
pub async fn validate_id_token(
    cache: &JwksCache,
    jwks_url: &str,
    token: &str,
    expect: &IdTokenExpectations<'_>,
) -> Result<IdTokenClaims, OidcError> {
    // A disallowed algorithm costs no key lookup.
    let header = allowed_header(token, expect)?;
    let key = cache.key(jwks_url, header.kid.as_deref()).await?;
    validate_id_token_with_key(&key, token, expect)
}

/// The token's header, if it parses and names an allowed algorithm.
fn allowed_header(
    token: &str,
    expect: &IdTokenExpectations<'_>,
) -> Result<jsonwebtoken::Header, OidcError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| OidcError::InvalidIdToken(format!("malformed token header: {e}")))?;
    if !expect.algorithms.contains(&header.alg) {
        return Err(OidcError::InvalidIdToken(format!(
            "algorithm {:?} is not allowed",
            header.alg
        )));
    }
    Ok(header)
}

/// [`validate_id_token`] with the signing key already chosen: every check but the key
/// lookup, without I/O (the fuzz target drives this with arbitrary tokens).
pub fn validate_id_token_with_key(
    key: &DecodingKey,
    token: &str,
    expect: &IdTokenExpectations<'_>,
) -> Result<IdTokenClaims, OidcError> {
    let bad = |m: &str| OidcError::InvalidIdToken(m.to_string());
    let header = allowed_header(token, expect)?;
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.leeway = SKEW_SECS;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_issuer(&[expect.issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let data = jsonwebtoken::decode::<RawClaims>(token, key, &validation)
        .map_err(|e| OidcError::InvalidIdToken(format!("{e}")))?;
    let raw = data.claims;
    check_audience(&raw, expect.client_id)?;
    if raw.nonce.as_deref() != Some(expect.nonce) {
        return Err(bad("the nonce does not match this sign-in"));
    }
    if raw.tid.as_deref() != Some(expect.directory_id) {
        return Err(bad("issued for another directory (tid)"));
    }
    let now = crate::clock::now_epoch() as u64;
    match raw.iat {
        Some(iat) if iat <= now + SKEW_SECS => {}
        Some(_) => return Err(bad("issued in the future (iat)")),
        None => return Err(bad("no iat claim")),
    }
    let oid = raw
        .oid
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("no oid claim"))?;
    let sub = raw
        .sub
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("no sub claim"))?;
    let text = |k: &str| raw.rest.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Ok(IdTokenClaims {
        oid: ObjectId::new(oid),
        tid: expect.directory_id.to_string(),
        sub,
        name: text("name"),
        preferred_username: text("preferred_username"),
        email: text("email"),
    })
}

fn check_audience(raw: &RawClaims, client_id: &str) -> Result<(), OidcError> {
    let audiences: Vec<&str> = match &raw.aud {
        serde_json::Value::String(s) => vec![s.as_str()],
        serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str()).collect(),
        _ => vec![],
    };
    if !audiences.contains(&client_id) {
        return Err(OidcError::InvalidIdToken(
            "issued for another application (aud)".into(),
        ));
    }
    if audiences.len() > 1 && raw.azp.as_deref() != Some(client_id) {
        return Err(OidcError::InvalidIdToken(
            "several audiences and no matching azp".into(),
        ));
    }
    Ok(())
}
