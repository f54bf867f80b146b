//! When a PBX request is sent again, and when it must not be. Reads, updates, bindings and
//! destroys are safe to repeat: doing one twice is doing it once (a second destroy answers
//! 404, which the caller already treats as done). A creation (`POST /users`, `POST
//! /contacts`) is not: PortSIP has no idempotency key, so a creation that reached the PBX
//! and got no usable answer may exist, and sending it again could make a second user. It is
//! therefore sent again only when the PBX provably did not act on it: the connection was
//! never made, or the PBX said so (429, 503). A timeout, a connection lost after sending, or
//! another 5xx leaves its outcome unknown, and the caller (the sync) lists the PBX before
//! creating anything again.
//!
//! Waits: the PBX's `Retry-After` (seconds or an HTTP date) when it sent one, capped at
//! [`MAX_RETRY_AFTER`], else full-jitter exponential backoff, so that the many requests of a
//! tenant throttled at the same moment do not come back in lockstep.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::graph::retry::{backoff, retry_after};

/// Longest `Retry-After` honoured: longer asks are a broken header or an overloaded PBX,
/// and waiting minutes per request would stall the whole push.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Whether a request may be sent again after an ambiguous failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Reads, updates, bindings, destroys, sign-ins.
    Safe,
    /// Creations: repeated only when the PBX provably did not act on them.
    Once,
}

/// How many times, and how patiently, a request is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts of one request, the first included.
    pub attempts: u32,
    /// First backoff step; doubled per attempt.
    pub base: Duration,
    /// Cap of the computed backoff (not of `Retry-After`).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What to do with the outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the answer to the caller (a success, or an error answer to report).
    Answer,
    /// Wait this long and send it again.
    Retry(Duration),
    /// No answer in time (and no attempt left, or a creation).
    Timeout,
    /// A creation that may have been carried out.
    Unknown(String),
    /// The PBX cannot be reached, or kept failing.
    Unreachable(String),
}

impl RetryPolicy {
    /// The verdict on an HTTP answer of attempt `attempt` (0-based).
    pub fn on_status(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        repeat: Repeat,
        attempt: u32,
    ) -> Verdict {
        let declined =
            status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
        if !declined && !status.is_server_error() {
            return Verdict::Answer;
        }
        if !declined && repeat == Repeat::Once {
            return Verdict::Unknown(format!("HTTP {}", status.as_u16()));
        }
        if attempt + 1 >= self.attempts {
            return Verdict::Unreachable(format!(
                "still answering HTTP {} after {} attempts",
                status.as_u16(),
                self.attempts
            ));
        }
        let asked = retry_after(headers).map(|d| d.min(MAX_RETRY_AFTER));
        Verdict::Retry(asked.unwrap_or_else(|| self.backoff(attempt)))
    }

    /// The verdict on a request that got no HTTP answer.
    pub fn on_error(&self, error: &reqwest::Error, repeat: Repeat, attempt: u32) -> Verdict {
        let last = attempt + 1 >= self.attempts;
        // A connect error (its own timeout included) means nothing reached the PBX.
        if error.is_connect() {
            return match last {
                true => Verdict::Unreachable(error_chain(error)),
                false => Verdict::Retry(self.backoff(attempt)),
            };
        }
        match (repeat, error.is_timeout(), last) {
            (Repeat::Once, true, _) => Verdict::Timeout,
            (Repeat::Once, false, _) => Verdict::Unknown(error_chain(error)),
            (Repeat::Safe, true, true) => Verdict::Timeout,
            (Repeat::Safe, false, true) => Verdict::Unreachable(error_chain(error)),
            (Repeat::Safe, _, false) => Verdict::Retry(self.backoff(attempt)),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        backoff(self.base, self.max_backoff, attempt + 1)
    }
}

/// An error with its causes: reqwest's own message ("error sending request") says nothing
/// of the refused connection or the certificate that did not verify.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        }
    }

    fn retry_wait(v: Verdict) -> Duration {
        match v {
            Verdict::Retry(d) => d,
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn answers_pass_and_server_errors_retry_until_the_last_attempt() {
        let (p, h) = (policy(), HeaderMap::new());
        for status in [200, 201, 204, 400, 401, 404, 409] {
            let s = StatusCode::from_u16(status).unwrap();
            assert_eq!(p.on_status(s, &h, Repeat::Once, 0), Verdict::Answer);
        }
        for status in [500, 502, 503, 504, 429] {
            let s = StatusCode::from_u16(status).unwrap();
            assert!(retry_wait(p.on_status(s, &h, Repeat::Safe, 1)) <= Duration::from_millis(400));
            assert!(matches!(
                p.on_status(s, &h, Repeat::Safe, 2),
                Verdict::Unreachable(m) if m.contains(&status.to_string())
            ));
        }
    }

    #[test]
    fn creations_repeat_only_what_the_pbx_declined() {
        let (p, h) = (policy(), HeaderMap::new());
        for status in [429, 503] {
            let s = StatusCode::from_u16(status).unwrap();
            retry_wait(p.on_status(s, &h, Repeat::Once, 0));
        }
        for status in [500, 502, 504] {
            let s = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                p.on_status(s, &h, Repeat::Once, 0),
                Verdict::Unknown(format!("HTTP {status}"))
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let p = policy();
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let s = StatusCode::TOO_MANY_REQUESTS;
        assert_eq!(
            retry_wait(p.on_status(s, &h, Repeat::Once, 0)),
            Duration::from_secs(7)
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("3600"));
        assert_eq!(
            retry_wait(p.on_status(s, &h, Repeat::Safe, 0)),
            MAX_RETRY_AFTER
        );
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
        );
        assert_eq!(
            retry_wait(p.on_status(s, &h, Repeat::Safe, 0)),
            Duration::ZERO
        );
    }
}
