//! The demo tenant: its app registration at the emulator, its Microsoft 365 settings, its key
//! pair and certificate upload, and the first sync.
//!
//! Re-running on an existing data folder (the idempotency choices):
//! - The app is registered with a fixed client id ([`DEMO_APP_ID`]), so the stored settings
//!   stay valid run after run; the emulator is new each run, so it is registered again.
//! - Settings are written in full only while the tenant is not configured yet; later runs
//!   keep what the administrator changed and only point the directory and application ids
//!   back at the demo's.
//! - The key pair is reused: every usable stored certificate is uploaded to the new
//!   emulator's app. A new pair (through [`TenantKeys::generate`], as "Generate New Key
//!   Pair") is made only when there is none, or none valid for another day.
//! - Delta links are forgotten: they point at the previous run's emulator (another port),
//!   which the Graph client refuses, so the first sync of every run is a full compare.
//!   Users, extensions, photos and contacts are deterministic and simply match again.

use tokio_util::sync::CancellationToken;

use super::{DemoError, TENANT_ID, demo_tenant};
use crate::config::Config;
use crate::entra::credential::KeyBits;
use crate::keyring::Keyring;
use crate::settings::Ms365Settings;
use crate::store::{RunStatus, RunTrigger, Store};
use crate::sync::worker::{RunSummary, SyncHandle};
use crate::tenant_keys::{DEFAULT_VALID_DAYS, TenantKeys};
use ms365_stand_ins::emulator::{AppRegistration, DEMO_TENANT_ID, Emulator};

/// The demo app's application (client) id.
pub const DEMO_APP_ID: &str = "00000000-0000-4000-8000-0000000de300";

/// What the first sync left in the PBX, for the banner.
#[derive(Debug, Clone, Default)]
pub struct FirstSync {
    /// Enabled extensions synced from Microsoft 365.
    pub extensions: usize,
    pub created: u64,
    pub updated: u64,
    pub disabled: u64,
    /// Stored profile photos (downloaded now or unchanged).
    pub photos: usize,
    /// Personal and company contacts (created now, updated or unchanged).
    pub contacts: usize,
    /// Mailboxes read for contacts (personal and shared).
    pub mailboxes: usize,
    /// An enabled synced user with a photo, to sign in as.
    pub example_upn: Option<String>,
}

/// Registers the demo app for the listeners' redirect URIs, with the permissions the sync
/// needs (users, photos, contacts), admin-consented as the emulator does.
pub fn register_app(emulator: &Emulator, config: &Config) -> Result<(), DemoError> {
    let app = AppRegistration {
        display_name: "ms365-gateway demo".into(),
        redirect_uris: config.listeners.iter().map(|l| l.redirect_uri()).collect(),
        permissions: vec!["User.Read.All".into(), "Contacts.Read".into()],
        client_id: Some(DEMO_APP_ID.into()),
    };
    emulator.try_register_app(DEMO_TENANT_ID, app)?;
    Ok(())
}

/// Settings, key pair, certificate upload and cursor reset; see the module header.
pub async fn prepare(
    store: &Store,
    keyring: &Keyring,
    emulator: &Emulator,
) -> Result<(), DemoError> {
    save_settings(store, emulator).await?;
    for pem in key_pair(store, keyring).await? {
        emulator.upload_certificate(DEMO_TENANT_ID, DEMO_APP_ID, &pem)?;
    }
    forget_delta_links(store, emulator).await
}

async fn save_settings(store: &Store, emulator: &Emulator) -> Result<(), DemoError> {
    let mut settings = store.ms365_settings(&demo_tenant()).await?;
    if !settings.is_configured() {
        settings = demo_settings(shared_mailbox(emulator));
    }
    settings.directory_id = DEMO_TENANT_ID.into();
    settings.application_id = DEMO_APP_ID.into();
    store.save_ms365_settings(&demo_tenant(), &settings).await?;
    Ok(())
}

/// Users with photos from extension 1000, sign-in for everyone, personal contacts and the
/// shared mailbox's contacts as company contacts; the default nightly schedule.
pub fn demo_settings(shared_mailbox: Option<String>) -> Ms365Settings {
    let mut s = Ms365Settings {
        directory_id: DEMO_TENANT_ID.into(),
        application_id: DEMO_APP_ID.into(),
        ..Default::default()
    };
    s.users.enabled = true;
    s.users.sync_photo = true;
    s.users.starting_extension_number = "1000".into();
    s.sign_in_as_standard_user.enabled = true;
    s.personal_contacts.enabled = true;
    if let Some(mailbox) = shared_mailbox {
        s.shared_mailbox.enabled = true;
        s.shared_mailbox.selected_users = vec![mailbox];
    }
    s
}

/// The seeded shared mailbox: a member account without names whose sign-in is blocked.
fn shared_mailbox(emulator: &Emulator) -> Option<String> {
    emulator
        .users(DEMO_TENANT_ID)
        .into_iter()
        .find(|u| {
            !u.account_enabled
                && u.user_type == "Member"
                && u.given_name.is_none()
                && u.surname.is_none()
        })
        .map(|u| u.mail.unwrap_or(u.user_principal_name))
}

/// The PEMs of the tenant's usable certificates, generating a pair when none is valid for
/// another day.
async fn key_pair(store: &Store, keyring: &Keyring) -> Result<Vec<String>, DemoError> {
    let tomorrow = crate::store::now_epoch() + 86_400;
    let usable = store.usable_credentials(&demo_tenant()).await?;
    if usable.iter().any(|c| c.info.not_after > tomorrow) {
        return Ok(usable.into_iter().map(|c| c.info.certificate_pem).collect());
    }
    let tenant = store
        .tenant(&demo_tenant())
        .await?
        .ok_or_else(|| DemoError::Setup(format!("tenant `{TENANT_ID}` is missing")))?;
    let info = TenantKeys::new(store.clone(), keyring.clone())
        .generate(&tenant, KeyBits::Rsa2048, DEFAULT_VALID_DAYS)
        .await?;
    Ok(vec![info.certificate_pem])
}

async fn forget_delta_links(store: &Store, emulator: &Emulator) -> Result<(), DemoError> {
    store
        .clear_sync_cursor(&demo_tenant(), crate::sync::USERS_KIND)
        .await?;
    for user in emulator.users(DEMO_TENANT_ID) {
        for kind in [
            crate::sync::contacts::personal_kind(&user.id),
            crate::sync::contacts::shared_kind(&user.id),
        ] {
            store.clear_sync_cursor(&demo_tenant(), &kind).await?;
        }
    }
    Ok(())
}

/// Runs the first sync through the gateway's worker; `None` when `shutdown` fired first.
pub async fn first_sync(
    worker: &SyncHandle,
    store: &Store,
    shutdown: &CancellationToken,
) -> Result<Option<FirstSync>, DemoError> {
    let ticket = worker
        .request(&demo_tenant(), RunTrigger::Cli)
        .map_err(|e| DemoError::Sync(e.to_string()))?;
    let result = tokio::select! {
        r = ticket.wait() => r,
        _ = shutdown.cancelled() => return Ok(None),
    };
    let summary = match result.as_ref() {
        Ok(s) => s,
        Err(e) => return Err(DemoError::Sync(e.to_string())),
    };
    let report = &summary.users;
    if report.status != RunStatus::Succeeded {
        let why = report.message.as_deref().unwrap_or("see the log");
        return Err(DemoError::Sync(format!(
            "run {} ended {:?}: {why}",
            report.run_id, report.status
        )));
    }
    if let Some(e) = summary
        .photo_error
        .as_ref()
        .or(summary.contact_error.as_ref())
    {
        tracing::warn!(error = %e, "the first sync was partial");
    }
    summarise(store, summary).await.map(Some)
}

async fn summarise(store: &Store, summary: &RunSummary) -> Result<FirstSync, DemoError> {
    let users = summary
        .users
        .counts
        .get("users")
        .cloned()
        .unwrap_or_default();
    let mut out = FirstSync {
        created: users.created,
        updated: users.updated,
        disabled: users.disabled,
        ..FirstSync::default()
    };
    if let Some(p) = &summary.photos {
        out.photos = p.downloaded + p.unchanged;
    }
    if let Some(c) = &summary.contacts {
        out.contacts = c.created + c.updated + c.unchanged;
        out.mailboxes = c.personal_mailboxes + c.shared_mailboxes;
    }
    let mut synced: Vec<_> = store
        .pbx_users(&demo_tenant())
        .await?
        .into_iter()
        .filter(|u| u.enabled && u.ms365_oid.is_some())
        .collect();
    synced.sort_by(|a, b| a.extension_number.cmp(&b.extension_number));
    out.extensions = synced.len();
    for user in synced {
        let Some(oid) = user.ms365_oid else { continue };
        if store.photo(&demo_tenant(), &oid).await?.is_some() {
            out.example_upn = store
                .directory_user(&demo_tenant(), &oid)
                .await?
                .map(|d| d.upn);
            break;
        }
    }
    Ok(out)
}
