//! Injected faults and the traffic statistics. Every request is put in a [`RouteClass`]
//! by its path; the class's [`Faults`] are rolled with the emulator's seeded RNG before the
//! request is handled (429 with `Retry-After`, 503, a connection reset, added latency).
//! Outlook resources (photos, contacts) also get Exchange's per-mailbox concurrency limit:
//! more than four requests in flight for one mailbox answer 429 `ApplicationThrottled`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::Emulator;
use super::batch::BatchItem;
use super::graph::GraphError;
use super::identity::AadError;
use super::state::lock;
use super::util::percent_decode;

/// Exchange Online's limit on concurrent requests per mailbox.
pub(crate) const MAILBOX_CONCURRENCY: u32 = 4;

/// Which faults apply to a request, by the route it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteClass {
    /// `POST /{tenant}/oauth2/v2.0/token`.
    Token,
    /// OpenID discovery document and JWKS.
    Discovery,
    /// `/users`, `/users/{id}`, `/me`, `/groups/...`.
    Users,
    /// `/users/delta`.
    Delta,
    /// `/users/{id}/photo` and `/photo/$value`.
    Photos,
    /// `/users/{id}/contacts...`, `/contactFolders/...` (including contacts delta).
    Contacts,
    /// `POST /$batch` itself (its items count in their own classes).
    Batch,
    /// `/subscriptions` (change notifications).
    Subscriptions,
    /// Only for [`Emulator::set_faults`]: every class at once.
    All,
}

impl RouteClass {
    pub const EACH: [RouteClass; 8] = [
        RouteClass::Token,
        RouteClass::Discovery,
        RouteClass::Users,
        RouteClass::Delta,
        RouteClass::Photos,
        RouteClass::Contacts,
        RouteClass::Batch,
        RouteClass::Subscriptions,
    ];

    fn is_login(self) -> bool {
        matches!(self, RouteClass::Token | RouteClass::Discovery)
    }
}

/// Faults for one route class. Rates are probabilities in `0..=1`, rolled in the order
/// reset, 429, 503 (so their sum should stay ≤ 1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    pub rate_429: f64,
    /// `Retry-After` seconds, written as given ("0.5"); 429s without it send "1".
    pub retry_after: Option<f64>,
    pub rate_503: f64,
    /// Close the connection without any response.
    pub rate_reset: f64,
    /// Added before the request is handled (inside the mailbox slot for Outlook routes).
    pub latency: Duration,
}

/// Counters of one route class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClassStats {
    pub requests: u64,
    /// 429 answers: injected throttling and mailbox concurrency.
    pub throttled: u64,
    /// Injected 503 answers.
    pub unavailable: u64,
    /// Connections closed without a response.
    pub resets: u64,
}

/// What the emulator has seen since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub classes: BTreeMap<RouteClass, ClassStats>,
    pub token_requests: u64,
    /// Highest number of concurrent requests seen for any one mailbox (rejected ones count).
    pub max_mailbox_concurrency: u32,
    /// Requests rejected because a mailbox already had four in flight.
    pub mailbox_violations: u64,
    /// Highest concurrency per mailbox (user id), for mailboxes that saw any traffic.
    pub mailbox_peaks: BTreeMap<String, u32>,
}

impl Stats {
    pub fn class(&self, class: RouteClass) -> ClassStats {
        self.classes.get(&class).copied().unwrap_or_default()
    }
}

enum Outcome {
    Pass,
    Reset,
    Throttle(Option<f64>),
    Unavailable(Option<f64>),
}

pub(crate) struct FaultState {
    rng: Mutex<fastrand::Rng>,
    faults: Mutex<HashMap<RouteClass, Faults>>,
    stats: Mutex<Stats>,
    inflight: Mutex<HashMap<String, u32>>,
}

/// Marks a response that the server must turn into a dropped connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResetConnection;

impl FaultState {
    pub fn new(seed: u64) -> FaultState {
        FaultState {
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            faults: Mutex::new(HashMap::new()),
            stats: Mutex::new(Stats::default()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    pub fn set(&self, class: RouteClass, faults: Faults) {
        let mut map = lock(&self.faults);
        let classes: &[RouteClass] = match class {
            RouteClass::All => &RouteClass::EACH,
            _ => std::slice::from_ref(&class),
        };
        for c in classes {
            map.insert(*c, faults.clone());
        }
    }

    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }

    fn bump(&self, class: RouteClass, f: impl FnOnce(&mut ClassStats)) {
        f(lock(&self.stats).classes.entry(class).or_default());
    }

    /// Rolls the class's faults; quiet classes draw nothing, so configuring faults on one
    /// class never shifts the random sequence another class sees.
    fn roll(&self, class: RouteClass) -> (Outcome, Duration) {
        let Some(f) = lock(&self.faults).get(&class).cloned() else {
            return (Outcome::Pass, Duration::ZERO);
        };
        if f.rate_reset + f.rate_429 + f.rate_503 <= 0.0 {
            return (Outcome::Pass, f.latency);
        }
        let r = lock(&self.rng).f64();
        let outcome = if r < f.rate_reset {
            Outcome::Reset
        } else if r < f.rate_reset + f.rate_429 {
            Outcome::Throttle(f.retry_after)
        } else if r < f.rate_reset + f.rate_429 + f.rate_503 {
            Outcome::Unavailable(f.retry_after)
        } else {
            Outcome::Pass
        };
        (outcome, f.latency)
    }

    /// Takes a slot of `mailbox`; `false` when four were already in flight.
    fn acquire(&self, mailbox: &str) -> bool {
        let mut inflight = lock(&self.inflight);
        let n = inflight.entry(mailbox.to_string()).or_insert(0);
        *n += 1;
        let now = *n;
        let admitted = now <= MAILBOX_CONCURRENCY;
        if !admitted {
            *n -= 1;
        }
        drop(inflight);
        let mut stats = lock(&self.stats);
        let peak = stats.mailbox_peaks.entry(mailbox.to_string()).or_insert(0);
        *peak = (*peak).max(now);
        stats.max_mailbox_concurrency = stats.max_mailbox_concurrency.max(now);
        if !admitted {
            stats.mailbox_violations += 1;
        }
        admitted
    }

    fn release(&self, mailbox: &str) {
        if let Some(n) = lock(&self.inflight).get_mut(mailbox) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Frees a mailbox slot when the request ends, however it ends (including a client that
/// hangs up mid-latency, which drops the handler future).
struct MailboxSlot {
    emu: Emulator,
    mailbox: String,
}

impl Drop for MailboxSlot {
    fn drop(&mut self) {
        self.emu.inner.faults.release(&self.mailbox);
    }
}

/// The route class of a path; `None` for pages and the control API (never faulted).
pub(crate) fn classify(path: &str) -> Option<RouteClass> {
    if let Some(rest) = path.strip_prefix("/v1.0/") {
        let segments: Vec<&str> = rest.split('/').collect();
        return Some(match segments.as_slice() {
            ["$batch"] => RouteClass::Batch,
            ["subscriptions", ..] => RouteClass::Subscriptions,
            ["users", "delta" | "microsoft.graph.delta()"] => RouteClass::Delta,
            ["users", _, "photo", ..] => RouteClass::Photos,
            ["users", _, "contacts" | "contactFolders", ..] => RouteClass::Contacts,
            _ => RouteClass::Users,
        });
    }
    let mut segments = path.trim_start_matches('/').split('/').skip(1);
    match (segments.next(), segments.next(), segments.next()) {
        (Some("oauth2"), Some("v2.0"), Some("token")) => Some(RouteClass::Token),
        (Some("v2.0"), Some(".well-known"), _) | (Some("discovery"), _, _) => {
            Some(RouteClass::Discovery)
        }
        _ => None,
    }
}

/// The mailbox an Outlook request targets, as the user's object id when it resolves (so
/// `/users/{upn}` and `/users/{id}` share one budget, as in Exchange).
fn mailbox_of(emu: &Emulator, class: RouteClass, path: &str) -> Option<String> {
    if !matches!(class, RouteClass::Photos | RouteClass::Contacts) {
        return None;
    }
    let key = percent_decode(path.strip_prefix("/v1.0/users/")?.split('/').next()?);
    for tenant in &emu.inner.tenants {
        let data = tenant.read();
        if let Some(idx) = data.index(&key) {
            return Some(data.users[idx as usize].user.id.clone());
        }
    }
    Some(key.to_lowercase())
}

fn retry_header(seconds: Option<f64>, default: Option<f64>) -> Option<String> {
    seconds.or(default).map(|s| format!("{s}"))
}

fn throttled(emu: &Emulator, class: RouteClass, retry: Option<f64>) -> Response {
    let retry = retry_header(retry, Some(1.0));
    if class.is_login() {
        let err = AadError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            90055,
            "There are too many incoming requests. Please try again later.",
        );
        return with_retry(err.render(emu, None), retry);
    }
    GraphError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        "Too many requests.",
    )
    .retry_after(retry)
    .into_response()
}

fn unavailable(emu: &Emulator, class: RouteClass, retry: Option<f64>) -> Response {
    let retry = retry_header(retry, None);
    if class.is_login() {
        let err = AadError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            90006,
            "The service is temporarily unavailable.",
        );
        return with_retry(err.render(emu, None), retry);
    }
    GraphError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "serviceNotAvailable",
        "The service is not available. Try the request again after a delay.",
    )
    .retry_after(retry)
    .into_response()
}

fn with_retry(mut response: Response, retry: Option<String>) -> Response {
    if let Some(value) = retry.and_then(|v| v.parse().ok()) {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

fn reset(emu: &Emulator, class: RouteClass) -> Response {
    emu.inner.faults.bump(class, |s| s.resets += 1);
    let mut response = StatusCode::SERVICE_UNAVAILABLE.into_response();
    response.extensions_mut().insert(ResetConnection);
    response
}

/// The fault middleware: count, roll, then (for Outlook routes) take a mailbox slot and wait
/// the injected latency inside it, so latency shows up as mailbox concurrency.
pub(crate) async fn layer(State(emu): State<Emulator>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let Some(class) = classify(&path) else {
        return next.run(req).await;
    };
    let faults = &emu.inner.faults;
    faults.bump(class, |s| s.requests += 1);
    if class == RouteClass::Token {
        lock(&faults.stats).token_requests += 1;
    }
    let in_batch = req.extensions().get::<BatchItem>().is_some();
    let (outcome, latency) = faults.roll(class);
    match outcome {
        Outcome::Reset if !in_batch => return reset(&emu, class),
        Outcome::Throttle(retry) => {
            faults.bump(class, |s| s.throttled += 1);
            return throttled(&emu, class, retry);
        }
        Outcome::Unavailable(retry) => {
            faults.bump(class, |s| s.unavailable += 1);
            return unavailable(&emu, class, retry);
        }
        _ => {}
    }
    let _slot = match mailbox_of(&emu, class, &path) {
        Some(mailbox) if !faults.acquire(&mailbox) => {
            faults.bump(class, |s| s.throttled += 1);
            return GraphError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
            )
            .retry_after(Some("1".into()))
            .into_response();
        }
        Some(mailbox) => Some(MailboxSlot {
            emu: emu.clone(),
            mailbox,
        }),
        None => None,
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_by_path() {
        assert_eq!(classify("/v1.0/users"), Some(RouteClass::Users));
        assert_eq!(classify("/v1.0/users/delta"), Some(RouteClass::Delta));
        assert_eq!(
            classify("/v1.0/users/x/photo/$value"),
            Some(RouteClass::Photos)
        );
        assert_eq!(
            classify("/v1.0/users/x/contacts/delta"),
            Some(RouteClass::Contacts)
        );
        assert_eq!(
            classify("/v1.0/users/x/contactFolders/f/contacts/delta"),
            Some(RouteClass::Contacts)
        );
        assert_eq!(classify("/v1.0/$batch"), Some(RouteClass::Batch));
        assert_eq!(classify("/t/oauth2/v2.0/token"), Some(RouteClass::Token));
        assert_eq!(classify("/t/oauth2/v2.0/authorize"), None);
        assert_eq!(
            classify("/t/discovery/v2.0/keys"),
            Some(RouteClass::Discovery)
        );
        assert_eq!(
            classify("/t/v2.0/.well-known/openid-configuration"),
            Some(RouteClass::Discovery)
        );
        assert_eq!(classify("/_emulator/stats"), None);
    }

    #[test]
    fn rolls_are_seeded() {
        let run = || {
            let state = FaultState::new(42);
            state.set(
                RouteClass::All,
                Faults {
                    rate_429: 0.5,
                    ..Faults::default()
                },
            );
            (0..64)
                .map(|_| matches!(state.roll(RouteClass::Users).0, Outcome::Throttle(_)))
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        assert!(a.iter().any(|t| *t) && a.iter().any(|t| !*t));
    }
}
