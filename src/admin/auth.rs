//! Who is calling the admin API and which tenant they act in. Three credentials: the system
//! administrator's bearer token (the `[admin] token_file`), a tenant administrator's bearer
//! token (issued by the system administrator, stored hashed), and the PBX session cookie of a
//! user whose role is `admin`. A tenant administrator is pinned to its tenant whatever the
//! request names; only the system administrator may name one (PortSIP's "switch to the tenant
//! scope"). Failed credentials are counted per client address and, past a limit, refused
//! before they are even looked at, so a token cannot be guessed online.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{HeaderMap, Method};

use super::AdminState;
use super::error::ApiError;
use crate::edge::conn::ConnInfo;
use crate::ids::TenantId;
use crate::store::Tenant;
use crate::web::clients::ClientMap;

/// Prefix of tenant-administrator tokens, so a leaked one is recognisable in logs and scanners.
pub const TENANT_TOKEN_PREFIX: &str = "m365a_";
/// Failed attempts a client address may make per [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// The header (or query parameter `tenant`) naming the tenant a system administrator acts in.
pub const TENANT_HEADER: &str = "x-tenant";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    System,
    /// Bound to one tenant; `via` says which credential (`token` or `session`).
    TenantAdmin {
        tenant_id: TenantId,
        via: &'static str,
    },
}

/// A request allowed to act on `tenant`.
#[derive(Debug, Clone)]
pub struct TenantScope {
    pub tenant: Tenant,
    pub caller: Caller,
}

/// A request from the system administrator.
#[derive(Debug, Clone)]
pub struct SystemAdmin;

/// Hex SHA-256 of a token: what the store keeps.
pub fn hash_token(token: &str) -> String {
    crate::encoding::sha256_hex(token.as_bytes())
}

/// A new tenant-administrator token: the prefix and 32 random bytes, base64url.
pub fn new_tenant_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random source works");
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    format!("{TENANT_TOKEN_PREFIX}{body}")
}

/// Failed attempts per client (IPv4 address or IPv6 /64), in fixed windows. Idle clients
/// are forgotten a window or two after their last failure, without a scan.
pub struct FailureLimiter {
    windows: Mutex<ClientMap<(Instant, u32)>>,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        FailureLimiter {
            windows: Mutex::new(ClientMap::new(FAILURE_WINDOW, 100_000)),
        }
    }
}

impl FailureLimiter {
    /// `Err(seconds to wait)` when `ip` has used up its attempts.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        match windows.get(ip) {
            Some((start, n)) if *n >= MAX_FAILURES && start.elapsed() < FAILURE_WINDOW => {
                Err((FAILURE_WINDOW - start.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    pub fn record_failure(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let entry = windows.entry(ip, now, || (now, 0));
        if now.duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnInfo>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.peer.ip())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Resolves the caller, counting failures against the client address.
pub async fn authenticate(state: &AdminState, parts: &Parts) -> Result<Caller, ApiError> {
    let ip = client_ip(parts);
    if let Err(retry_after) = state.failures.check(ip) {
        return Err(ApiError::TooManyAttempts { retry_after });
    }
    let result = match bearer(&parts.headers) {
        Some(token) => token_caller(state, token).await,
        None => session_caller(state, parts).await,
    };
    if matches!(result, Err(ApiError::Unauthorized(_))) {
        state.failures.record_failure(ip);
    }
    result
}

async fn token_caller(state: &AdminState, token: &str) -> Result<Caller, ApiError> {
    const WRONG: ApiError = ApiError::Unauthorized("the bearer token is not valid");
    if let Some(system) = &state.system_token
        && aws_lc_rs::constant_time::verify_slices_are_equal(system.as_bytes(), token.as_bytes())
            .is_ok()
    {
        return Ok(Caller::System);
    }
    if !token.starts_with(TENANT_TOKEN_PREFIX) {
        return Err(WRONG);
    }
    match state.store.use_admin_token(&hash_token(token)).await? {
        Some(t) => Ok(Caller::TenantAdmin {
            tenant_id: t.tenant_id,
            via: "token",
        }),
        None => Err(WRONG),
    }
}

async fn session_caller(state: &AdminState, parts: &Parts) -> Result<Caller, ApiError> {
    let Some(cookie) = crate::sso::session::session_cookie(&parts.headers) else {
        return Err(ApiError::Unauthorized(
            "sign in as a tenant administrator or send a bearer token",
        ));
    };
    let Some(session) = state
        .sessions
        .resolve(cookie)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
    else {
        return Err(ApiError::Unauthorized(
            "the session has ended; sign in again",
        ));
    };
    if session.role != crate::store::Role::Admin {
        return Err(ApiError::Forbidden(
            "this needs a tenant administrator; the signed-in user is not one".into(),
        ));
    }
    let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let proto = parts
        .extensions
        .get::<ConnInfo>()
        .map_or("https", |c| c.proto);
    if unsafe_method && crate::web::origin::is_cross_origin(&parts.headers, &parts.uri, proto) {
        return Err(ApiError::Forbidden(
            "changes with a session cookie must come from this site's own pages".into(),
        ));
    }
    Ok(Caller::TenantAdmin {
        tenant_id: session.tenant_id,
        via: "session",
    })
}

/// The tenant the request names, by header or query parameter.
fn named_tenant(parts: &Parts) -> Option<String> {
    if let Some(v) = parts
        .headers
        .get(TENANT_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        return Some(v.trim().to_string()).filter(|v| !v.is_empty());
    }
    let query = axum::extract::Query::<HashMap<String, String>>::try_from_uri(&parts.uri).ok()?;
    query.0.get("tenant").cloned().filter(|v| !v.is_empty())
}

async fn find_tenant(state: &AdminState, name: &str) -> Result<Option<Tenant>, ApiError> {
    if let Ok(id) = TenantId::parse(name)
        && let Some(t) = state.store.tenant(&id).await?
    {
        return Ok(Some(t));
    }
    Ok(state.store.tenant_by_domain(name).await?)
}

impl FromRequestParts<Arc<AdminState>> for TenantScope {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AdminState>,
    ) -> Result<Self, Self::Rejection> {
        let caller = authenticate(state, parts).await?;
        let named = named_tenant(parts);
        let tenant = match (&caller, named) {
            (Caller::System, None) => {
                return Err(ApiError::BadRequest(
                    "name the tenant to act in with the X-Tenant header or ?tenant=".into(),
                ));
            }
            (Caller::System, Some(name)) => find_tenant(state, &name)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no tenant `{name}`")))?,
            (Caller::TenantAdmin { tenant_id, .. }, named) => {
                let own = state.store.tenant(tenant_id).await?.ok_or_else(|| {
                    ApiError::Forbidden("the tenant of this credential no longer exists".into())
                })?;
                if let Some(name) = named
                    && !name.eq_ignore_ascii_case(own.id.as_str())
                    && !name.eq_ignore_ascii_case(&own.domain)
                {
                    return Err(ApiError::Forbidden(
                        "a tenant administrator can only act in its own tenant".into(),
                    ));
                }
                own
            }
        };
        Ok(TenantScope { tenant, caller })
    }
}

impl FromRequestParts<Arc<AdminState>> for SystemAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AdminState>,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(state, parts).await? {
            Caller::System => Ok(SystemAdmin),
            Caller::TenantAdmin { .. } => Err(ApiError::Forbidden(
                "only the system administrator may do this".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed() {
        let a = new_tenant_token();
        let b = new_tenant_token();
        assert!(a.starts_with(TENANT_TOKEN_PREFIX) && a.len() == TENANT_TOKEN_PREFIX.len() + 43);
        assert_ne!(a, b);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn failures_lock_out_one_address_only() {
        let limiter = FailureLimiter::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(limiter.check(a).is_ok());
            limiter.record_failure(a);
        }
        let wait = limiter.check(a).unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(limiter.check(b).is_ok());
    }

    #[test]
    fn tenant_is_read_from_header_then_query() {
        let req = http::Request::get("/api/ms365?x=1&tenant=acme%2Etest")
            .body(())
            .unwrap();
        let (parts, _) = req.into_parts();
        assert_eq!(named_tenant(&parts).as_deref(), Some("acme.test"));
        let req = http::Request::get("/api/ms365?tenant=a")
            .header("X-Tenant", "b")
            .body(())
            .unwrap();
        let (parts, _) = req.into_parts();
        assert_eq!(named_tenant(&parts).as_deref(), Some("b"));
    }
}
