//! PBX sessions: `POST /login {username, password, domain}` gives a bearer access token and
//! a refresh token; `POST /auth/refresh_token` trades the refresh token for a new pair.
//!
//! A [`PbxClient`] keeps one session per tenant and renews it before it runs out: with
//! less than a minute left, or less than a fifth of its lifetime for long-lived tokens (so
//! a request that waits for a permit or a retry does not carry a token that expires on the
//! way), but never in the first half of its life (so a PBX handing out very short tokens is
//! not asked for a new one before every request). A refresh the PBX refuses falls back to a
//! new sign-in. [`login_as`] and [`refresh`] are the same exchanges for a user's own
//! session, sent once, without the client's retries.

use reqwest::{Method, StatusCode, Url};
use serde::Serialize;

use super::answer::{check, decode};
use super::client::{PbxClient, Req};
use super::error::PbxError;
use super::retry::{Repeat, error_chain};
use super::wire::{LoginRequest, RefreshRequest, TokenAnswer};
use crate::store::now_epoch;

/// Renew at the latest this long before the token expires.
const RENEW_BEFORE: i64 = 60;
/// Lifetime assumed when the PBX does not say (PortSIP's default is 30 minutes).
const DEFAULT_LIFETIME: i64 = 1800;

/// An access token and when it expires.
#[derive(Clone, PartialEq, Eq)]
pub struct PbxToken {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Epoch seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for PbxToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let refresh = self.refresh_token.as_ref().map(|_| "[redacted]");
        f.debug_struct("PbxToken")
            .field("access_token", &"[redacted]")
            .field("refresh_token", &refresh)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl PbxToken {
    /// The token of an answer received at `now` (epoch seconds).
    pub(crate) fn from_answer(answer: TokenAnswer, now: i64) -> PbxToken {
        let stated = answer.expires_at.as_deref().and_then(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|d| d.timestamp())
        });
        let expires_at = match (answer.expires_in.filter(|s| *s > 0), stated) {
            (Some(secs), _) => now + secs,
            (None, Some(at)) if at > now => at,
            _ => now + DEFAULT_LIFETIME,
        };
        PbxToken {
            access_token: answer.access_token,
            refresh_token: answer.refresh_token.filter(|r| !r.is_empty()),
            expires_at,
        }
    }
}

/// The client's session: the token and when to renew it.
pub(crate) struct Held {
    pub token: PbxToken,
    pub renew_at: i64,
}

impl Held {
    /// A token obtained at `obtained` (epoch seconds).
    pub fn new(token: PbxToken, obtained: i64) -> Held {
        let renew_at = renew_at(token.expires_at, obtained);
        Held { token, renew_at }
    }
}

/// When a token valid from `obtained` to `expires_at` is renewed.
pub(crate) fn renew_at(expires_at: i64, obtained: i64) -> i64 {
    let lifetime = (expires_at - obtained).max(0);
    let margin = RENEW_BEFORE.max(lifetime / 5).min(lifetime / 2);
    expires_at - margin
}

impl PbxClient {
    /// The bearer token to send: the held one while it is fresh, else a renewed one. The
    /// lock is held across the renewal so that concurrent requests wait for one sign-in
    /// instead of each making their own.
    pub(super) async fn bearer(&self) -> Result<String, PbxError> {
        let mut held = self.inner.session.lock().await;
        let now = now_epoch();
        if let Some(h) = held.as_ref()
            && now < h.renew_at
        {
            return Ok(h.token.access_token.clone());
        }
        let token = match held.take().and_then(|h| h.token.refresh_token) {
            Some(refresh_token) => match self.renew(&refresh_token).await {
                Ok(token) => token,
                // Used, expired or revoked: a new sign-in. An unreachable PBX would refuse
                // that as well, so that error is final.
                Err(e @ (PbxError::Rejected { .. } | PbxError::Protocol(_))) => {
                    tracing::debug!(error = %e, "PBX token refresh refused; signing in again");
                    self.sign_in_now().await?
                }
                Err(e) => return Err(e),
            },
            None => self.sign_in_now().await?,
        };
        let access = token.access_token.clone();
        *held = Some(Held::new(token, now));
        Ok(access)
    }

    /// Forgets the session whose token the PBX refused, unless another request already
    /// replaced it.
    pub(super) async fn invalidate(&self, refused: &str) {
        let mut held = self.inner.session.lock().await;
        if held
            .as_ref()
            .is_some_and(|h| h.token.access_token == refused)
        {
            *held = None;
        }
    }

    /// `POST /login` as the tenant's PBX administrator, with the client's retries.
    pub(super) async fn sign_in_now(&self) -> Result<PbxToken, PbxError> {
        self.inner.counters.sign_ins.bump();
        let login = &self.inner.login;
        let body = LoginRequest {
            username: &login.username,
            password: login.password.expose(),
            domain: &self.inner.domain,
        };
        let req = Req::json(Method::POST, self.endpoint("login")?, &body, Repeat::Safe)?;
        let response = self.send(&req, None).await?;
        match token_from(response, &req.what).await {
            Err(PbxError::Rejected {
                status, message, ..
            }) => Err(self.refused(format!("HTTP {status}: {message}"))),
            Err(PbxError::NotFound { .. }) => Err(PbxError::Unreachable {
                url: self.inner.api_url.to_string(),
                reason: "it answers 404 to POST /login; [pbx] api_url must be the REST API \
                         base, e.g. https://pbx.example.com:8887/api"
                    .into(),
            }),
            other => other,
        }
    }

    /// `POST /auth/refresh_token`.
    async fn renew(&self, refresh_token: &str) -> Result<PbxToken, PbxError> {
        self.inner.counters.refreshes.bump();
        let body = RefreshRequest { refresh_token };
        let url = self.endpoint("auth/refresh_token")?;
        let req = Req::json(Method::POST, url, &body, Repeat::Safe)?;
        let response = self.send(&req, None).await?;
        token_from(response, &req.what).await
    }

    /// The sign-in error for this client's login.
    pub(super) fn refused(&self, reason: String) -> PbxError {
        PbxError::SignIn {
            username: self.inner.login.username.clone(),
            domain: self.inner.domain.clone(),
            reason,
        }
    }
}

/// Signs `username` in on `domain`: a user's own PBX session. A wrong password is
/// `Rejected` (401 or 400); it is the caller's to word.
pub async fn login_as(
    http: &reqwest::Client,
    api_url: &Url,
    username: &str,
    password: &str,
    domain: &str,
) -> Result<PbxToken, PbxError> {
    let body = LoginRequest {
        username,
        password,
        domain,
    };
    token_once(http, api_url, "login", &body).await
}

/// Renews a session with its refresh token (PortSIP's refresh tokens work once).
pub async fn refresh(
    http: &reqwest::Client,
    api_url: &Url,
    refresh_token: &str,
) -> Result<PbxToken, PbxError> {
    let body = RefreshRequest { refresh_token };
    token_once(http, api_url, "auth/refresh_token", &body).await
}

async fn token_once<B: Serialize>(
    http: &reqwest::Client,
    api_url: &Url,
    path: &str,
    body: &B,
) -> Result<PbxToken, PbxError> {
    let what = format!("POST /{path}");
    let url = format!("{}/{path}", api_url.as_str().trim_end_matches('/'));
    let unreachable = |reason: String| PbxError::Unreachable {
        url: api_url.to_string(),
        reason,
    };
    let response = http.post(url).json(body).send().await.map_err(|e| {
        if e.is_timeout() {
            PbxError::Timeout { what: what.clone() }
        } else {
            unreachable(error_chain(&e))
        }
    })?;
    let status = response.status();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(unreachable(format!("HTTP {} to {what}", status.as_u16())));
    }
    token_from(response, &what).await
}

/// The token of a sign-in or refresh answer.
async fn token_from(response: reqwest::Response, what: &str) -> Result<PbxToken, PbxError> {
    let response = check(response, what).await?;
    let answer: TokenAnswer = decode(response, what).await?;
    if answer.access_token.is_empty() {
        return Err(PbxError::Protocol(format!("{what}: an empty access_token")));
    }
    Ok(PbxToken::from_answer(answer, now_epoch()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(expires_in: Option<i64>, expires_at: Option<&str>) -> TokenAnswer {
        TokenAnswer {
            access_token: "a".into(),
            refresh_token: Some("r".into()),
            expires_in,
            expires_at: expires_at.map(str::to_string),
        }
    }

    #[test]
    fn the_lifetime_comes_from_expires_in_then_expires_at() {
        let now = 1_500_000_000; // 2017-07-14T02:40:00Z
        let t = PbxToken::from_answer(answer(Some(600), None), now);
        assert_eq!(t.expires_at, now + 600);
        let t = PbxToken::from_answer(answer(None, Some("2017-07-14T03:40:00Z")), now);
        assert_eq!(t.expires_at, now + 3600);
        let t = PbxToken::from_answer(answer(Some(0), Some("2001-01-01T00:00:00Z")), now);
        assert_eq!(
            t.expires_at,
            now + DEFAULT_LIFETIME,
            "nonsense: the default"
        );
    }

    #[test]
    fn tokens_are_renewed_a_minute_or_a_fifth_early_but_not_in_their_first_half() {
        assert_eq!(renew_at(1800, 0), 1800 - 360, "a fifth of 30 min");
        assert_eq!(renew_at(3600, 0), 3600 - 720);
        assert_eq!(renew_at(1000 + 200, 1000), 1200 - 60, "a minute");
        assert_eq!(renew_at(100, 0), 50, "half of a short lifetime");
        assert_eq!(renew_at(0, 0), 0);
    }

    #[test]
    fn tokens_never_print() {
        let t = PbxToken {
            access_token: "secret-access".into(),
            refresh_token: Some("secret-refresh".into()),
            expires_at: 7,
        };
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("expires_at: 7"), "{shown}");
    }
}
