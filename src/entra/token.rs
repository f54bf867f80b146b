//! App-only (client-credentials) access tokens for Graph. A token is cached until shortly
//! before `expires_in` runs out, and concurrent callers share one in-flight request: N
//! callers at the start of a sync cost one round trip to Entra ID, not N.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use super::assertion::{AssertionAlg, ClientAssertion};
use super::cloud::CloudEndpoints;
use super::credential::TenantCredential;
use super::error::{AadError, OidcError};
use crate::ids::TenantId;

/// A tenant's app registration as its settings name it.
#[derive(Debug, Clone, Copy)]
pub struct TenantApp<'a> {
    pub directory_id: &'a str,
    pub application_id: &'a str,
    pub alg: AssertionAlg,
}

/// A bearer token and when it stops being usable.
#[derive(Clone)]
pub struct AccessToken {
    pub secret: Arc<str>,
    pub expires_at: Instant,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The future a [`TokenSource`] returns.
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<AccessToken, OidcError>> + Send + 'a>>;

/// Something that hands out Graph access tokens (the Graph client depends on this only).
pub trait TokenSource: Send + Sync {
    /// A valid token, from cache or freshly fetched.
    fn token(&self) -> TokenFuture<'_>;
    /// Drops the cached token (after Graph rejected it with 401).
    fn invalidate(&self);
}

/// The future a [`SigningKeys`] method returns.
pub type KeysFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, OidcError>> + Send + 'a>>;

/// Where a tenant's key pairs live (the gateway keeps them in its store): the pairs that may
/// sign, in the order to try them, and where to report the pair Microsoft accepted so that
/// a new (pending) pair becomes the active one. This layer only signs and asks; keeping
/// the pairs is not its business.
pub trait SigningKeys: Send + Sync {
    /// The tenant's usable credentials, a pending (newest) pair first.
    fn signing_credentials<'a>(
        &'a self,
        tenant_id: &'a TenantId,
    ) -> KeysFuture<'a, Vec<Arc<TenantCredential>>>;
    /// Microsoft accepted `thumbprint`: promote it if it was pending.
    fn confirm<'a>(&'a self, tenant_id: &'a TenantId, thumbprint: &'a str) -> KeysFuture<'a, ()>;
}

/// Refresh this long before Microsoft's expiry, so a token never dies mid-request.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default = "default_expiry")]
    expires_in: u64,
}

fn default_expiry() -> u64 {
    3599
}

/// Client-credentials tokens for one tenant's application.
pub struct AppTokenClient {
    http: reqwest::Client,
    endpoints: CloudEndpoints,
    directory_id: String,
    application_id: String,
    /// In the order to try: a pending (new) pair first, then the active one.
    credentials: Vec<Arc<TenantCredential>>,
    alg: AssertionAlg,
    /// Where to report the pair Microsoft accepted, so a pending pair becomes active.
    rollover: Option<(Arc<dyn SigningKeys>, TenantId)>,
    /// Thumbprint last reported through `rollover`.
    confirmed: std::sync::Mutex<Option<String>>,
    /// The token and when to fetch the next one.
    cached: std::sync::Mutex<Option<(AccessToken, Instant)>>,
    /// Held while a request is in flight; late arrivals wait here and then find the cache
    /// filled (single flight).
    refresh: Mutex<()>,
    requests: std::sync::atomic::AtomicU64,
}

impl AppTokenClient {
    pub fn new(
        http: reqwest::Client,
        endpoints: CloudEndpoints,
        directory_id: &str,
        application_id: &str,
        credentials: Vec<Arc<TenantCredential>>,
        alg: AssertionAlg,
    ) -> Self {
        AppTokenClient {
            http,
            endpoints,
            directory_id: directory_id.to_string(),
            application_id: application_id.to_string(),
            credentials,
            alg,
            rollover: None,
            confirmed: std::sync::Mutex::new(None),
            cached: std::sync::Mutex::new(None),
            refresh: Mutex::new(()),
            requests: Default::default(),
        }
    }

    /// The one way a tenant's client is built (sign-in, sync, "Test connection"): the app
    /// `application_id` in `directory_id`, signing with the tenant's key pairs from `keys`
    /// in the `alg` style, promoting a pending key pair once Microsoft accepts it.
    pub async fn for_tenant(
        http: reqwest::Client,
        endpoints: CloudEndpoints,
        keys: Arc<dyn SigningKeys>,
        tenant_id: &TenantId,
        app: TenantApp<'_>,
    ) -> Result<Self, OidcError> {
        let credentials = keys.signing_credentials(tenant_id).await?;
        Ok(AppTokenClient::new(
            http,
            endpoints,
            app.directory_id,
            app.application_id,
            credentials,
            app.alg,
        )
        .with_rollover(keys, tenant_id))
    }

    /// Reports the pair that obtained a token to `keys`, promoting a pending pair.
    pub fn with_rollover(mut self, keys: Arc<dyn SigningKeys>, tenant_id: &TenantId) -> Self {
        self.rollover = Some((keys, tenant_id.clone()));
        self
    }

    /// How many token requests went to Entra ID (for tests and reports).
    pub fn requests_made(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn fresh_cached(&self) -> Option<AccessToken> {
        let guard = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .filter(|(_, refresh_at)| Instant::now() < *refresh_at)
            .map(|(t, _)| t.clone())
    }

    async fn get(&self) -> Result<AccessToken, OidcError> {
        if let Some(t) = self.fresh_cached() {
            return Ok(t);
        }
        let _flight = self.refresh.lock().await;
        if let Some(t) = self.fresh_cached() {
            return Ok(t);
        }
        let (token, lifetime) = self.request().await?;
        // Refresh ahead of expiry: 5 minutes early, or half-way for short-lived tokens.
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        let refresh_at = token.expires_at - margin;
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((token.clone(), refresh_at));
        Ok(token)
    }

    /// Tries each credential in turn; only "key not known / expired" (AADSTS700027) moves on
    /// to the next, any other answer is final.
    async fn with_credentials<T, F, Fut>(&self, attempt: F) -> Result<T, OidcError>
    where
        F: Fn(Arc<TenantCredential>) -> Fut,
        Fut: Future<Output = Result<T, OidcError>>,
    {
        let mut last_error = None;
        for credential in &self.credentials {
            match attempt(credential.clone()).await {
                Ok(value) => {
                    self.confirm(credential).await;
                    return Ok(value);
                }
                Err(e) if e.aadsts() == Some(700027) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| OidcError::NoCredential {
            tenant: self.directory_id.clone(),
        }))
    }

    async fn request(&self) -> Result<(AccessToken, Duration), OidcError> {
        let scope = self.endpoints.graph_scope();
        let grant = [
            ("grant_type", "client_credentials"),
            ("scope", scope.as_str()),
        ];
        let started = Instant::now();
        let body = self
            .with_credentials(|c| async move { self.post_token(&c, &grant).await })
            .await?;
        let parsed: TokenResponse = self.decode(&body)?;
        let lifetime = Duration::from_secs(parsed.expires_in);
        Ok((
            AccessToken {
                secret: parsed.access_token.into(),
                expires_at: started + lifetime,
            },
            lifetime,
        ))
    }

    /// Redeems an authorization code (with its PKCE verifier) for the ID token.
    pub async fn exchange_code(
        &self,
        exchange: &CodeExchange<'_>,
    ) -> Result<CodeTokens, OidcError> {
        let grant = [
            ("grant_type", "authorization_code"),
            ("code", exchange.code),
            ("redirect_uri", exchange.redirect_uri),
            ("code_verifier", exchange.code_verifier),
            ("scope", "openid profile email"),
        ];
        let body = self
            .with_credentials(|c| async move { self.post_token(&c, &grant).await })
            .await?;
        self.decode(&body)
    }

    async fn confirm(&self, credential: &TenantCredential) {
        let Some((keys, tenant)) = &self.rollover else {
            return;
        };
        let thumbprint = &credential.info.thumbprint_sha1;
        if self
            .confirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            == Some(thumbprint)
        {
            return;
        }
        match keys.confirm(tenant, thumbprint).await {
            Ok(()) => {
                *self.confirmed.lock().unwrap_or_else(|e| e.into_inner()) = Some(thumbprint.clone())
            }
            Err(e) => {
                tracing::warn!(%tenant, error = %e, "could not record the accepted credential")
            }
        }
    }

    /// POSTs `grant` plus the client authentication to the token endpoint; the body on 2xx.
    async fn post_token(
        &self,
        credential: &TenantCredential,
        grant: &[(&str, &str)],
    ) -> Result<String, OidcError> {
        let url = self.endpoints.token_url(&self.directory_id);
        let assertion =
            ClientAssertion::new(&self.application_id, &url, self.alg).sign(credential)?;
        let mut form: Vec<(&str, &str)> = vec![
            ("client_id", self.application_id.as_str()),
            ("client_assertion_type", super::assertion::ASSERTION_TYPE),
            ("client_assertion", assertion.as_str()),
        ];
        form.extend_from_slice(grant);
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let response = self
            .http
            .post(&url)
            .form(&form)
            .send()
            .await
            .map_err(|e| transport(&url, &e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| transport(&url, &e))?;
        if !status.is_success() {
            return Err(token_error(&url, status.as_u16(), &body));
        }
        Ok(body)
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, body: &str) -> Result<T, OidcError> {
        serde_json::from_str(body).map_err(|e| OidcError::Unexpected {
            url: self.endpoints.token_url(&self.directory_id),
            status: 200,
            body: format!("{e}: {}", truncate(body)),
        })
    }
}

/// What an authorization code is redeemed with.
pub struct CodeExchange<'a> {
    pub code: &'a str,
    pub redirect_uri: &'a str,
    pub code_verifier: &'a str,
}

/// The token endpoint's answer to a code redemption. Kept out of `Debug`: it holds tokens.
#[derive(Deserialize)]
pub struct CodeTokens {
    pub id_token: String,
    #[serde(default)]
    pub access_token: Option<String>,
}

impl std::fmt::Debug for CodeTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeTokens { <redacted> }")
    }
}

impl TokenSource for AppTokenClient {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(self.get())
    }

    fn invalidate(&self) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Turns a failed token response into the typed error (Microsoft's body when it is one).
pub fn token_error(url: &str, status: u16, body: &str) -> OidcError {
    match serde_json::from_str::<AadError>(body) {
        Ok(e) if !e.error.is_empty() => OidcError::Aad(e),
        _ => OidcError::Unexpected {
            url: url.to_string(),
            status,
            body: truncate(body),
        },
    }
}

pub(crate) fn transport(url: &str, e: &reqwest::Error) -> OidcError {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    OidcError::Transport {
        url: url.to_string(),
        reason,
    }
}

fn truncate(body: &str) -> String {
    body.chars().take(300).collect()
}
