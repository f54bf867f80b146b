//! Injected faults and request counting. Every `/api` request is counted under its
//! operation (`POST /users/{id}`) and then rolled against the faults of its class (`login`
//! for sign-in and refresh, `users`, `contacts`) with the seeded RNG, so a faulty run
//! repeats: a scheduled failure (`fail_next`), a 503, a 429 with `Retry-After`, or a hold
//! long enough to time the client out, after which the request is still carried out: the
//! worst case of a timeout, where the PBX did it and the client does not know.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::state::{Inner, lock};
use super::wire::Fail;

/// The classes faults can be aimed at; `all` (or no class) means every one.
pub const FAULT_CLASSES: [&str; 4] = ["login", "users", "contacts", "all"];
/// The hold of a "timeout" when `timeout_delay_ms` is 0: longer than any sane client timeout.
const DEFAULT_TIMEOUT_DELAY: Duration = Duration::from_secs(30);

/// Injected faults, for one class of routes or all of them. Rates are shares of requests
/// (0.0–1.0); one roll of the dice decides between 503, 429 and a hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PbxFaults {
    /// `login`, `users`, `contacts`, or `None`/`all` for every class.
    pub class: Option<String>,
    /// Share of requests answered 503.
    pub error_rate: f64,
    /// Share of requests held `timeout_delay_ms` and then carried out.
    pub timeout_rate: f64,
    /// Share of requests answered 429 with `Retry-After: retry_after_secs`.
    pub throttle_rate: f64,
    pub retry_after_secs: u64,
    /// The hold of a "timeout"; 0 means 30 s.
    pub timeout_delay_ms: u64,
    /// The next N requests of the class answer `fail_status`.
    pub fail_next: u32,
    /// 503 when 0.
    pub fail_status: u16,
}

impl PbxFaults {
    /// What is wrong with these settings, for the control API.
    pub fn problem(&self) -> Option<String> {
        if let Some(class) = &self.class
            && !FAULT_CLASSES.contains(&class.as_str())
        {
            return Some(format!("class must be one of {}", FAULT_CLASSES.join(", ")));
        }
        let rates = [self.error_rate, self.timeout_rate, self.throttle_rate];
        if rates.iter().any(|r| !(0.0..=1.0).contains(r)) {
            return Some("rates are shares between 0.0 and 1.0".into());
        }
        let status_ok = self.fail_status == 0 || (400..=599).contains(&self.fail_status);
        (!status_ok).then(|| "fail_status must be an error status (400-599)".into())
    }

    fn applies_to(&self, class: &str) -> bool {
        self.class
            .as_deref()
            .is_none_or(|c| c == "all" || c == class)
    }
}

/// The settings and the dice.
pub(crate) struct FaultState {
    pub faults: PbxFaults,
    rng: fastrand::Rng,
}

impl FaultState {
    pub fn new(seed: u64) -> FaultState {
        FaultState {
            faults: PbxFaults::default(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }
}

/// What the dice say for one request.
enum Roll {
    Pass,
    Hold(Duration),
    Fail(StatusCode, Option<u64>),
}

/// The fault class of an API path (`/api/users/{id}`).
fn class_of(path: &str) -> &'static str {
    if path.starts_with("/api/users") {
        "users"
    } else if path.starts_with("/api/contacts") {
        "contacts"
    } else {
        "login"
    }
}

fn roll(state: &mut FaultState, class: &str) -> Roll {
    let f = &mut state.faults;
    if !f.applies_to(class) {
        return Roll::Pass;
    }
    if f.fail_next > 0 {
        f.fail_next -= 1;
        let status = StatusCode::from_u16(f.fail_status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let retry = (status == StatusCode::TOO_MANY_REQUESTS).then_some(f.retry_after_secs);
        return Roll::Fail(status, retry);
    }
    // One roll for all three, so the rates are shares of the same requests and add up.
    let dice = state.rng.f64();
    let f = &state.faults;
    if dice < f.error_rate {
        Roll::Fail(StatusCode::SERVICE_UNAVAILABLE, None)
    } else if dice < f.error_rate + f.throttle_rate {
        Roll::Fail(StatusCode::TOO_MANY_REQUESTS, Some(f.retry_after_secs))
    } else if dice < f.error_rate + f.throttle_rate + f.timeout_rate {
        let ms = f.timeout_delay_ms;
        Roll::Hold(if ms == 0 {
            DEFAULT_TIMEOUT_DELAY
        } else {
            Duration::from_millis(ms)
        })
    } else {
        Roll::Pass
    }
}

/// The operation's name in the statistics: `POST /users/{id}` (the document's path).
pub(crate) fn operation_of(request: &Request) -> (String, String) {
    let path = (request.extensions().get::<MatchedPath>()).map_or_else(
        || request.uri().path().to_string(),
        |m| m.as_str().to_string(),
    );
    let operation = format!("{} {}", request.method(), path.trim_start_matches("/api"));
    (operation, path)
}

/// Counts, then rolls the dice; a request that passes (or is only held) is carried out.
pub(crate) async fn layer(State(emu): State<Arc<Inner>>, request: Request, next: Next) -> Response {
    let (operation, path) = operation_of(&request);
    emu.count(&operation);
    let dice = roll(&mut lock(&emu.faults), class_of(&path));
    if !matches!(dice, Roll::Pass) {
        lock(&emu.stats).faults_injected += 1;
    }
    match dice {
        Roll::Pass => next.run(request).await,
        Roll::Hold(delay) => {
            // In a task of its own: hyper drops the handler of a client that hung up, and
            // a timed-out client hangs up, yet the PBX must still carry the request out.
            let held = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                next.run(request).await
            });
            held.await.unwrap_or_else(|_| {
                Fail::injected(StatusCode::INTERNAL_SERVER_ERROR).into_response()
            })
        }
        Roll::Fail(status, retry_after) => {
            let mut response = Fail::injected(status).into_response();
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(secs));
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolls_follow_the_class_the_rates_and_the_seed() {
        let faults = PbxFaults {
            class: Some("users".into()),
            error_rate: 0.5,
            ..PbxFaults::default()
        };
        let outcomes = |seed| {
            let mut state = FaultState::new(seed);
            state.faults = faults.clone();
            (0..200)
                .map(|_| matches!(roll(&mut state, "users"), Roll::Fail(..)))
                .collect::<Vec<bool>>()
        };
        let first = outcomes(9);
        assert_eq!(first, outcomes(9), "the same seed, the same faults");
        let failed = first.iter().filter(|f| **f).count();
        assert!((60..=140).contains(&failed), "{failed} of 200 at 50 %");
        let mut state = FaultState::new(9);
        state.faults = faults;
        assert!((0..50).all(|_| matches!(roll(&mut state, "contacts"), Roll::Pass)));
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(PbxFaults::default().problem(), None);
        let bad = [
            PbxFaults {
                class: Some("photos".into()),
                ..PbxFaults::default()
            },
            PbxFaults {
                error_rate: 1.5,
                ..PbxFaults::default()
            },
            PbxFaults {
                fail_status: 200,
                ..PbxFaults::default()
            },
        ];
        for f in bad {
            assert!(f.problem().is_some(), "{f:?}");
        }
    }
}
