//! `GET /api/ms365/status` (certificate expiry, warnings, last and next sync) and
//! `POST /api/ms365/test` ("Test connection": an app token, one user, one photo, one
//! contact folder, each reported with what to do when it fails). Also the expiry watch:
//! [`watch_certificates`] keeps `ms365_certificate_days_left` current and logs a warning
//! from [`EXPIRY_WARNING_DAYS`] before a certificate ends.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::AdminState;
use super::auth::TenantScope;
use super::error::ApiError;
use super::sync_api::run_json;
use crate::entra::OidcError;
use crate::graph::{GraphClient, GraphError, Page, User};
use crate::ids::TenantId;
use crate::settings::SyncMode;
use crate::store::{CredentialRecord, CredentialState, RunStatus, Store};

/// Days before `not_after` from which the certificate is warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 30;
/// How often the expiry watch looks again.
const WATCH_INTERVAL: Duration = Duration::from_secs(3600);

pub async fn get_status(
    State(state): State<Arc<AdminState>>,
    scope: TenantScope,
) -> Result<axum::Json<Value>, ApiError> {
    let tenant = &scope.tenant;
    let settings = state.store.ms365_settings(&tenant.id).await?;
    let credentials = state.store.usable_credentials(&tenant.id).await?;
    let now = Utc::now();
    let certificate = credentials.first().map(|c| certificate_json(c, now));
    let mut warnings = expiry_warnings(&credentials, now);
    if !settings.is_configured() {
        warnings.push("Enter the Application (client) ID and Directory (tenant) ID.".into());
    }
    if credentials.is_empty() {
        warnings
            .push("Generate a key pair and upload public_key.pem to the app registration.".into());
    }
    let runs = state.store.sync_runs(&tenant.id, 1).await?;
    let next_run = match settings.sync_mode {
        SyncMode::Automatic => settings.sync_time.next_run(settings.time_zone, now).ok(),
        SyncMode::Manual => None,
    };
    let mut pbx = pbx_json(&state.config, state.store.pbx_status(&tenant.id).await?);
    if pbx["kind"] == "portsip" {
        pbx["sign_in"] = pbx_sign_in_json(&state, &tenant.id, &settings).await?;
    }
    let realtime = realtime_json(&state.store, &tenant.id, &settings, now).await?;
    if let Some(w) = realtime["warning"].as_str() {
        warnings.push(w.to_string());
    }
    let running = state.sync.is_busy(&tenant.id)
        || runs.first().is_some_and(|r| r.status == RunStatus::Running);
    Ok(axum::Json(json!({
        "tenant": { "id": tenant.id, "domain": tenant.domain, "name": tenant.name },
        "configured": settings.is_configured(),
        "sign_in_enabled": settings.sign_in_enabled(),
        "certificate": certificate,
        "warnings": warnings,
        "sync": {
            "mode": settings.sync_mode,
            "running": running,
            "next_run": next_run.map(|t| t.to_rfc3339()),
            "last_run": runs.first().map(run_json),
        },
        "pbx": pbx,
        "realtime": realtime,
    })))
}

/// Silence after which real-time updates are reported as possibly broken: renewals happen
/// at half a subscription's lifetime (days), so none for this long means they fail.
const REALTIME_SILENCE: i64 = 4 * 86_400;

/// Real-time updates: on or off and why, the subscriptions, the last notification and
/// renewal, in a line the page shows as is.
async fn realtime_json(
    store: &Store,
    tenant_id: &TenantId,
    settings: &crate::settings::Ms365Settings,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let subscriptions = store.subscriptions(tenant_id).await?;
    let active = subscriptions.iter().filter(|s| s.active).count();
    let status = store.realtime_status(tenant_id).await?;
    let last = |at: i64| (at > 0).then(|| rfc3339(at));
    let (last_notification, last_renewal) = status
        .as_ref()
        .map_or((0, 0), |s| (s.last_notification, s.last_renewal));
    let state = match (&status, active) {
        _ if !settings.realtime.enabled => "off",
        (None, _) => "pending",
        (Some(_), 0) => "off",
        (Some(_), _) => "on",
    };
    let mut summary = match &status {
        _ if !settings.realtime.enabled => {
            "real-time updates: off (realtime.enabled is false)".into()
        }
        None => "real-time updates: not set up yet (after \"Test connection\" succeeds)".into(),
        Some(s) => format!("real-time updates: {}", s.message),
    };
    if state == "on" {
        summary.push_str(&match last_notification {
            0 => ", no notification yet".to_string(),
            at => format!(", last notification {}", ago(now.timestamp() - at)),
        });
    }
    let latest = last_notification.max(last_renewal);
    let warning = (state == "on" && latest > 0 && now.timestamp() - latest > REALTIME_SILENCE)
        .then(|| format!(
            "Real-time updates: no notification and no renewal for {}; Microsoft may no longer reach the notification URL. Scheduled sync keeps working.",
            ago(now.timestamp() - latest).trim_end_matches(" ago")
        ));
    Ok(json!({
        "enabled": settings.realtime.enabled,
        "debounce_seconds": settings.realtime.debounce_seconds,
        "max_mailbox_subscriptions": settings.realtime.max_mailbox_subscriptions,
        "state": state,
        "summary": summary,
        "message": status.as_ref().map(|s| s.message.clone()),
        "subscriptions": active,
        "failed": subscriptions.len() - active,
        "last_notification": last(last_notification),
        "last_renewal": last(last_renewal),
        "checked_at": status.as_ref().map(|s| rfc3339(s.checked_at)),
        "warning": warning,
    }))
}

/// "2 min ago", "3 h ago", "5 days ago".
fn ago(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 90 => format!("{s} s ago"),
        s if s < 5_400 => format!("{} min ago", s / 60),
        s if s < 172_800 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// The PBX connection: kind, API URL, and how the last conversation with it went. The
/// PBX password is configuration only and never appears here.
fn pbx_json(config: &crate::config::Config, status: Option<crate::store::PbxStatus>) -> Value {
    if config.pbx.kind != crate::config::PbxKind::PortSip {
        return json!({ "kind": "embedded", "state": "not_connected" });
    }
    let state = match &status {
        None => "unknown",
        Some(s) if s.ok => "signed_in",
        Some(_) => "error",
    };
    json!({
        "kind": "portsip",
        "api_url": config.pbx.api_url.to_string(),
        "state": state,
        "message": status.as_ref().map(|s| s.message.clone()),
        "checked_at": status.map(|s| rfc3339(s.updated_at)),
    })
}

/// Whose PBX session sign-ins open (`pbx_sign_in`), and the live sessions by PBX state with
/// what each state means, so the page can say why the PBX does not know some users.
async fn pbx_sign_in_json(
    state: &AdminState,
    tenant_id: &TenantId,
    settings: &crate::settings::Ms365Settings,
) -> Result<Value, ApiError> {
    let states = (state.store)
        .session_pbx_states(tenant_id, crate::store::now_epoch())
        .await?;
    let sessions: Vec<Value> = states
        .into_iter()
        .map(|(word, n)| {
            let s = crate::sso::pbx_state::PbxState::parse(&word);
            json!({ "state": s.as_str(), "count": n, "message": s.message() })
        })
        .collect();
    Ok(json!({ "setting": settings.pbx_sign_in.as_str(), "sessions": sessions }))
}

fn days_left(not_after: i64, now: DateTime<Utc>) -> i64 {
    (not_after - now.timestamp()).div_euclid(86_400)
}

fn rfc3339(epoch: i64) -> String {
    DateTime::from_timestamp(epoch, 0).map_or_else(String::new, |t| t.to_rfc3339())
}

fn certificate_json(c: &CredentialRecord, now: DateTime<Utc>) -> Value {
    json!({
        "thumbprint": c.info.thumbprint_sha1,
        "thumbprint_sha256": c.info.thumbprint_sha256,
        "not_before": rfc3339(c.info.not_before),
        "not_after": rfc3339(c.info.not_after),
        "days_left": days_left(c.info.not_after, now),
        "state": match c.state {
            CredentialState::Pending => "pending",
            CredentialState::Active => "active",
            CredentialState::Retired => "retired",
        },
    })
}

/// Warnings about the certificate that signs now (the active one, else the newest).
fn expiry_warnings(credentials: &[CredentialRecord], now: DateTime<Utc>) -> Vec<String> {
    let signing = credentials
        .iter()
        .find(|c| c.state == CredentialState::Active)
        .or(credentials.first());
    let Some(c) = signing else {
        return Vec::new();
    };
    let left = days_left(c.info.not_after, now);
    if left >= EXPIRY_WARNING_DAYS {
        return Vec::new();
    }
    let until = rfc3339(c.info.not_after);
    let pending = credentials
        .iter()
        .find(|n| n.state == CredentialState::Pending && n.info.not_after > c.info.not_after);
    vec![match (pending, left) {
        (Some(n), _) => format!(
            "A new key pair ({}) is waiting to be used: upload its public_key.pem to the app registration; the current certificate ends {until}.",
            n.info.thumbprint_sha1
        ),
        (None, l) if l < 0 => format!(
            "The certificate {} expired on {until}. Sign-in and sync fail until you generate a new key pair and upload public_key.pem.",
            c.info.thumbprint_sha1
        ),
        (None, l) => format!(
            "The certificate {} expires in {l} days ({until}). Generate a new key pair and upload public_key.pem before then.",
            c.info.thumbprint_sha1
        ),
    }]
}

/// Updates the days-left gauge of every tenant and logs the warnings, hourly until `stop`.
pub async fn watch_certificates(state: Arc<AdminState>, stop: CancellationToken) {
    loop {
        if let Err(e) = refresh_expiry(&state.store, &state).await {
            tracing::warn!(error = %e, "certificate expiry check failed");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
    }
}

async fn refresh_expiry(store: &Store, state: &AdminState) -> Result<(), ApiError> {
    let now = Utc::now();
    for tenant in store.tenants().await? {
        let credentials = store.usable_credentials(&tenant.id).await?;
        let Some(c) = credentials.first() else {
            continue;
        };
        state
            .metrics
            .set_certificate_days_left(tenant.id.as_str(), days_left(c.info.not_after, now));
        for warning in expiry_warnings(&credentials, now) {
            tracing::warn!(tenant = %tenant.id, "{warning}");
        }
    }
    Ok(())
}

/// Sets the gauge of one tenant now (after a new key pair).
pub(super) async fn refresh_tenant_expiry(
    state: &AdminState,
    tenant_id: &TenantId,
) -> Result<(), ApiError> {
    if let Some(c) = state.store.usable_credentials(tenant_id).await?.first() {
        state
            .metrics
            .set_certificate_days_left(tenant_id.as_str(), days_left(c.info.not_after, Utc::now()));
    }
    Ok(())
}

/// One line of the connection test.
#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    message: String,
    aadsts: Option<u64>,
    hint: Option<String>,
}

impl Check {
    fn pass(name: &'static str, message: impl Into<String>) -> Check {
        Check {
            name,
            ok: true,
            message: message.into(),
            aadsts: None,
            hint: None,
        }
    }

    fn fail(name: &'static str, message: impl Into<String>, hint: Option<String>) -> Check {
        Check {
            name,
            ok: false,
            message: message.into(),
            aadsts: None,
            hint,
        }
    }
}

pub async fn test_connection(
    State(state): State<Arc<AdminState>>,
    scope: TenantScope,
) -> Result<axum::Json<Value>, ApiError> {
    let checks = run_checks(&state, &scope.tenant.id).await;
    let ok = checks.iter().all(|c| c.ok);
    if ok {
        // Subscriptions are created once the tenant is known to reach Microsoft.
        let _ = state.sync.request_maintenance(&scope.tenant.id);
    }
    Ok(axum::Json(json!({ "ok": ok, "checks": checks })))
}

async fn run_checks(state: &AdminState, tenant_id: &TenantId) -> Vec<Check> {
    let ctx = match crate::sync::context::for_tenant(
        &state.config,
        &state.store,
        &state.keyring,
        tenant_id,
    )
    .await
    {
        Ok(ctx) => ctx,
        Err(e) => return vec![Check::fail("token", e.to_string(), None)],
    };
    let graph = &ctx.graph;
    let url = graph.users_first_url(&["id", "userPrincipalName", "displayName"], 1);
    let first = match graph.get_json::<Page<User>>(&url, "users").await {
        Err(GraphError::Token(e)) => return vec![token_failure(e)],
        Err(e) => {
            return vec![
                Check::pass("token", "Microsoft issued an app token"),
                graph_failure("users", e, "User.Read.All"),
            ];
        }
        Ok(page) => page.value.into_iter().next(),
    };
    let mut checks = vec![Check::pass("token", "Microsoft issued an app token")];
    let Some(user) = first else {
        checks.push(Check::fail("users", "the directory has no users", None));
        return checks;
    };
    let who = user
        .user_principal_name
        .clone()
        .unwrap_or_else(|| user.id.to_string());
    checks.push(Check::pass("users", format!("read user {who}")));
    checks.push(photo_check(graph, user.id.as_str(), &who).await);
    checks.push(contacts_check(graph, user.id.as_str(), &who).await);
    if let Some(target) = &ctx.pbx {
        let check = pbx_check(&target.client).await;
        let _ = (state.store)
            .set_pbx_status(tenant_id, check.ok, &check.message)
            .await;
        checks.push(check);
    }
    checks
}

/// Signs in to the PBX as the tenant's PBX administrator and reads one user.
async fn pbx_check(client: &crate::pbx::PbxClient) -> Check {
    match client.count_users().await {
        Ok(count) => Check::pass(
            "pbx",
            format!(
                "signed in to the PBX at {}; it has {count} users",
                client.api_url()
            ),
        ),
        Err(e) => Check::fail("pbx", e.to_string(), None),
    }
}

async fn photo_check(graph: &GraphClient, id: &str, who: &str) -> Check {
    match graph.photo_meta(id).await {
        Ok(Some(_)) => Check::pass("photo", format!("read the photo of {who}")),
        Ok(None) => Check::pass("photo", format!("{who} has no photo; access is allowed")),
        Err(e) => graph_failure("photo", e, "User.Read.All (or ProfilePhoto.Read.All)"),
    }
}

async fn contacts_check(graph: &GraphClient, id: &str, who: &str) -> Check {
    let url = graph.contacts_url(id, 1);
    match graph.get_json::<Value>(&url, "contacts").await {
        Ok(_) => Check::pass("contacts", format!("read the Contacts folder of {who}")),
        Err(e) => graph_failure("contacts", e, "Contacts.Read"),
    }
}

fn token_failure(e: OidcError) -> Check {
    let mut check = Check::fail("token", e.to_string(), None);
    check.aadsts = e.aadsts();
    check.hint = e
        .aadsts()
        .and_then(crate::entra::error::hint_for)
        .map(String::from);
    check
}

/// A Graph failure in plain words; a 403 names the permission to grant.
fn graph_failure(name: &'static str, e: GraphError, permission: &str) -> Check {
    if let GraphError::Token(t) = e {
        return token_failure(t);
    }
    let hint = match &e {
        GraphError::Api { status: 403, .. } => Some(format!(
            "The app registration lacks the application permission {permission}. In Entra ID open the app > API permissions > Add a permission > Microsoft Graph > Application permissions, add it, then Grant admin consent."
        )),
        GraphError::Api { code, .. } if code == "MailboxNotEnabledForRESTAPI" => Some(
            "This user has no Exchange Online mailbox; contacts sync needs users with an Exchange plan.".to_string(),
        ),
        _ => None,
    };
    Check::fail(name, e.to_string(), hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entra::credential::CertificateInfo;

    fn record(not_after: i64, state: CredentialState) -> CredentialRecord {
        CredentialRecord {
            tenant_id: TenantId::from_static("t"),
            info: CertificateInfo {
                thumbprint_sha1: format!("T{not_after}"),
                thumbprint_sha256: String::new(),
                not_before: 0,
                not_after,
                certificate_pem: String::new(),
            },
            state,
            created_at: 0,
            activated_at: None,
        }
    }

    #[test]
    fn warns_from_thirty_days_until_renewed() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |days: i64| now.timestamp() + days * 86_400 + 60;
        assert!(expiry_warnings(&[record(at(31), CredentialState::Active)], now).is_empty());
        let soon = expiry_warnings(&[record(at(29), CredentialState::Active)], now);
        assert!(soon[0].contains("expires in 29 days"), "{soon:?}");
        let gone = expiry_warnings(&[record(at(-2), CredentialState::Active)], now);
        assert!(gone[0].contains("expired"), "{gone:?}");
        let renewed = [
            record(at(365), CredentialState::Pending),
            record(at(29), CredentialState::Active),
        ];
        let upload = expiry_warnings(&renewed, now);
        assert!(
            upload[0].contains("upload its public_key.pem"),
            "{upload:?}"
        );
        assert_eq!(days_left(at(29), now), 29);
    }
}
