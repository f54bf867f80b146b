//! Sign-in metrics: what an operator is paged about when "users cannot sign in". Starts,
//! completions and failures by reason per tenant, the time from start to session, and the
//! live sessions. Reasons are a closed set: a Microsoft error counts as its AADSTS code
//! class (`aadsts_50` for `AADSTS50011`), never as free text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignInLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignInFailureLabels {
    pub tenant: String,
    pub reason: String,
}

/// The sign-in families.
pub struct SignInMetrics {
    started: Family<SignInLabels, Counter>,
    completed: Family<SignInLabels, Counter>,
    failed: Family<SignInFailureLabels, Counter>,
    duration: Histogram,
    active_sessions: Gauge,
    session_store_reads: Counter,
}

/// The tenant label when the request named none the gateway knows.
pub const UNKNOWN_TENANT: &str = "unknown";

impl SignInMetrics {
    pub(super) fn register(registry: &mut Registry) -> SignInMetrics {
        let m = SignInMetrics {
            started: Family::default(),
            completed: Family::default(),
            failed: Family::default(),
            // 0.25 s .. ~17 min: a sign-in waits on a person at Microsoft's page.
            duration: Histogram::new(exponential_buckets(0.25, 2.0, 13)),
            active_sessions: Gauge::default(),
            session_store_reads: Counter::default(),
        };
        registry.register(
            "signins_started",
            "Sign-ins sent to Microsoft, by tenant",
            m.started.clone(),
        );
        registry.register(
            "signins_completed",
            "Sign-ins that ended with a session, by tenant",
            m.completed.clone(),
        );
        registry.register(
            "signins_failed",
            "Sign-ins refused, by tenant and reason",
            m.failed.clone(),
        );
        registry.register(
            "signin_duration_seconds",
            "Time from the start of a sign-in to its session",
            m.duration.clone(),
        );
        registry.register(
            "sessions_active",
            "Live sessions (all instances; refreshed every minute)",
            m.active_sessions.clone(),
        );
        registry.register(
            "session_store_reads",
            "Session lookups that read the store: cache misses, those of one session under way together counted once",
            m.session_store_reads.clone(),
        );
        m
    }

    /// The counter the session service adds its store reads to.
    pub fn session_store_reads(&self) -> Counter {
        self.session_store_reads.clone()
    }

    pub fn started(&self, tenant: &str) {
        self.started.get_or_create(&labels(tenant)).inc();
    }

    pub fn completed(&self, tenant: &str, seconds: f64) {
        self.completed.get_or_create(&labels(tenant)).inc();
        self.duration.observe(seconds);
    }

    /// A refusal with the problem code it was shown with.
    pub fn failed(&self, tenant: Option<&str>, code: &str) {
        let labels = SignInFailureLabels {
            tenant: tenant.unwrap_or(UNKNOWN_TENANT).to_string(),
            reason: failure_reason(code),
        };
        self.failed.get_or_create(&labels).inc();
    }

    pub fn set_active_sessions(&self, n: u64) {
        self.active_sessions
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

fn labels(tenant: &str) -> SignInLabels {
    SignInLabels {
        tenant: tenant.to_string(),
    }
}

/// The `reason` label of a sign-in problem code: a closed set.
pub fn failure_reason(code: &str) -> String {
    if let Some(digits) = code.strip_prefix("AADSTS") {
        let class: String = digits
            .chars()
            .take(2)
            .filter(char::is_ascii_digit)
            .collect();
        return if class.len() == 2 {
            format!("aadsts_{class}")
        } else {
            "aadsts".into()
        };
    }
    let reason = match code {
        "ID_TOKEN_REJECTED" => "id_token_rejected",
        "USER_NOT_SYNCED" => "user_not_synced",
        "USER_DISABLED" => "user_disabled",
        "OUT_OF_SCOPE" => "out_of_scope",
        "SSO_DISABLED" | "TENANT_NOT_CONFIGURED" => "sso_disabled",
        "TENANT_NOT_FOUND" | "DOMAIN_REQUIRED" | "BAD_CLIENT" | "BAD_RETURN_TO" => "bad_request",
        "RATE_LIMITED" => "rate_limited",
        "MICROSOFT_UNREACHABLE" => "microsoft_unreachable",
        "NO_CODE" => "microsoft_error",
        c if c.starts_with("FLOW_") => "flow_invalid",
        c if c.starts_with("PBX_") => "pbx_session",
        _ => "other",
    };
    reason.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_a_closed_set() {
        assert_eq!(failure_reason("AADSTS50011"), "aadsts_50");
        assert_eq!(failure_reason("AADSTS700016"), "aadsts_70");
        assert_eq!(failure_reason("AADSTS"), "aadsts");
        assert_eq!(failure_reason("PBX_PASSWORD_REJECTED"), "pbx_session");
        assert_eq!(failure_reason("FLOW_REPLAYED"), "flow_invalid");
        assert_eq!(failure_reason("some free text"), "other");
    }
}
