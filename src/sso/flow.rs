//! The state of one sign-in between `/ms365/login` and `/ms365/redirect`: `state`, `nonce`,
//! the PKCE verifier, the tenant, the client kind and where to land. It travels in a sealed,
//! host-only `__Host-` cookie named after the state, so logins in parallel tabs each keep
//! their own; every flow cookie expires after ten minutes and a browser holding too many
//! has the oldest cleared, so they cannot pile up. A state used once is remembered until
//! its flow would have expired, so a replayed redirect is refused.

use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use super::session::ClientKind;
use crate::ids::TenantId;
use crate::seal::Sealer;
use crate::store::{Store, StoreError};

/// Prefix of flow cookie names; the rest is derived from the state.
pub const FLOW_COOKIE_PREFIX: &str = "__Host-ms365_flow_";
/// How long a sign-in may take.
pub const FLOW_LIFETIME: Duration = Duration::from_secs(600);
/// Flow cookies one browser may hold at once (20 parallel tabs must work).
pub const MAX_FLOW_COOKIES: usize = 24;

/// What the redirect needs to finish a sign-in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowState {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub tenant_id: TenantId,
    pub domain: String,
    pub client: ClientKind,
    pub return_to: Option<String>,
    /// Index of the listener the login started on; the redirect must arrive there too.
    pub listener: usize,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: i64,
}

impl FlowState {
    /// A new flow with fresh random `state`, `nonce` and PKCE verifier.
    pub fn new(
        tenant_id: &TenantId,
        domain: &str,
        client: ClientKind,
        return_to: Option<String>,
        listener: usize,
    ) -> FlowState {
        let now = crate::store::now_epoch();
        FlowState {
            state: random_token(),
            nonce: random_token(),
            verifier: random_token(),
            tenant_id: tenant_id.clone(),
            domain: domain.to_string(),
            client,
            return_to,
            listener,
            created_at: now,
            expires_at: now + FLOW_LIFETIME.as_secs() as i64,
        }
    }

    /// PKCE `code_challenge` (S256) for the verifier.
    pub fn code_challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.verifier.as_bytes())
                .as_ref(),
        )
    }

    pub fn is_expired(&self) -> bool {
        crate::store::now_epoch() >= self.expires_at
    }
}

/// 256 random bits, URL-safe (43 characters: also a valid PKCE verifier).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("system randomness");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The cookie name for a state: a digest, so the state itself is not in the name.
pub fn cookie_name(state: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, state.as_bytes());
    format!(
        "{FLOW_COOKIE_PREFIX}{}",
        &URL_SAFE_NO_PAD.encode(digest.as_ref())[..16]
    )
}

/// `Set-Cookie` value storing `flow`.
pub fn set_cookie(sealer: &Sealer, flow: &FlowState) -> HeaderValue {
    let name = cookie_name(&flow.state);
    let json = serde_json::to_vec(flow).expect("flow state serializes");
    let value = sealer.seal(&name, &json);
    let header = format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        FLOW_LIFETIME.as_secs()
    );
    HeaderValue::from_str(&header).expect("cookie is ASCII")
}

/// `Set-Cookie` value deleting the flow cookie `name`.
pub fn clear_cookie(name: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
    ))
    .expect("cookie is ASCII")
}

/// All `name=value` pairs of the request's Cookie headers.
pub fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

/// Why a flow cookie could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowProblem {
    /// No cookie for this state: expired, deleted, other browser, or another listener.
    Missing,
    /// The cookie does not open or does not match the state.
    Tampered,
    Expired,
    /// The redirect for this state was already processed.
    Replayed,
}

/// Finds and opens the flow cookie for `state`.
pub fn take(sealer: &Sealer, headers: &HeaderMap, state: &str) -> Result<FlowState, FlowProblem> {
    let name = cookie_name(state);
    let (_, value) = cookies(headers)
        .find(|(n, _)| *n == name)
        .ok_or(FlowProblem::Missing)?;
    let plain = sealer
        .open(&name, value)
        .map_err(|_| FlowProblem::Tampered)?;
    let flow: FlowState = serde_json::from_slice(&plain).map_err(|_| FlowProblem::Tampered)?;
    if !constant_time_eq(flow.state.as_bytes(), state.as_bytes()) {
        return Err(FlowProblem::Tampered);
    }
    if flow.is_expired() {
        return Err(FlowProblem::Expired);
    }
    Ok(flow)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Set-Cookie` values clearing the oldest flow cookies when a browser already holds
/// `MAX_FLOW_COOKIES - 1` or more, and any that no longer open.
pub fn prune(sealer: &Sealer, headers: &HeaderMap) -> Vec<HeaderValue> {
    let mut held: Vec<(i64, String)> = Vec::new();
    let mut clear = Vec::new();
    for (name, value) in cookies(headers).filter(|(n, _)| n.starts_with(FLOW_COOKIE_PREFIX)) {
        let created = sealer
            .open(name, value)
            .ok()
            .and_then(|p| serde_json::from_slice::<FlowState>(&p).ok())
            .filter(|f| !f.is_expired())
            .map(|f| f.created_at);
        match created {
            Some(t) => held.push((t, name.to_string())),
            None => clear.push(clear_cookie(name)),
        }
    }
    held.sort();
    let excess = (held.len() + 1).saturating_sub(MAX_FLOW_COOKIES);
    clear.extend(held.iter().take(excess).map(|(_, name)| clear_cookie(name)));
    clear
}

/// States whose redirect was processed, in the store: a redirect replayed on another
/// instance is refused as well. Only a hash of the state is kept, until the flow would have
/// expired anyway.
#[derive(Clone, Debug)]
pub struct UsedStates {
    store: Store,
}

impl UsedStates {
    pub fn new(store: Store) -> Self {
        UsedStates { store }
    }

    /// Records `state` (valid until `expires_at`); false when it was already used.
    pub async fn first_use(&self, state: &str, expires_at: i64) -> Result<bool, StoreError> {
        let hash = crate::encoding::sha256_hex(state.as_bytes());
        self.store.redeem_state(&hash, expires_at).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(&[(1, Sealer::generate_key())])
    }

    fn request_with(cookies: &[HeaderValue]) -> HeaderMap {
        let pairs: Vec<String> = cookies
            .iter()
            .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string())
            .collect();
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_str(&pairs.join("; ")).unwrap(),
        );
        h
    }

    #[test]
    fn a_flow_round_trips_through_its_cookie() {
        let s = sealer();
        let flow = FlowState::new(
            &TenantId::from_static("acme"),
            "acme.test",
            ClientKind::Webrtc,
            Some("/webrtc/".into()),
            1,
        );
        let cookie = set_cookie(&s, &flow);
        let text = cookie.to_str().unwrap();
        assert!(
            text.starts_with(FLOW_COOKIE_PREFIX)
                && text.contains("Secure; HttpOnly; SameSite=Lax; Max-Age=600")
        );
        assert!(!text.contains("Domain="), "host-only");
        let headers = request_with(&[cookie]);
        assert_eq!(take(&s, &headers, &flow.state).unwrap(), flow);
        assert_eq!(take(&s, &headers, "other-state"), Err(FlowProblem::Missing));
        assert_eq!(
            take(&sealer(), &headers, &flow.state),
            Err(FlowProblem::Tampered),
            "another key"
        );
        assert_eq!(flow.verifier.len(), 43);
        assert_ne!(flow.state, flow.nonce);
    }

    #[test]
    fn expired_flows_are_refused() {
        let s = sealer();
        let mut flow = FlowState::new(
            &TenantId::from_static("acme"),
            "acme.test",
            ClientKind::Portal,
            None,
            0,
        );
        flow.expires_at = crate::store::now_epoch() - 1;
        let headers = request_with(&[set_cookie(&s, &flow)]);
        assert_eq!(take(&s, &headers, &flow.state), Err(FlowProblem::Expired));
    }

    #[test]
    fn cookies_are_bounded() {
        let s = sealer();
        let flows: Vec<FlowState> = (0..MAX_FLOW_COOKIES)
            .map(|i| {
                let mut f = FlowState::new(
                    &TenantId::from_static("acme"),
                    "acme.test",
                    ClientKind::Portal,
                    None,
                    0,
                );
                f.created_at -= (MAX_FLOW_COOKIES - i) as i64;
                f
            })
            .collect();
        let headers = request_with(&flows.iter().map(|f| set_cookie(&s, f)).collect::<Vec<_>>());
        let cleared = prune(&s, &headers);
        assert_eq!(cleared.len(), 1, "room for the new flow");
        assert!(
            cleared[0]
                .to_str()
                .unwrap()
                .starts_with(&cookie_name(&flows[0].state)),
            "the oldest goes"
        );
    }
}
