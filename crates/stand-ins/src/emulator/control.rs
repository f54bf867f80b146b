//! The in-process control API of [`Emulator`] for the identity side and the test harness:
//! app registrations and certificate uploads, signing-key rotation, faults and statistics,
//! the clock, delta-token expiry and direct authorization codes. Directory mutations live in
//! `directory`; the HTTP control API (`admin`) calls these same methods.

use std::sync::atomic::Ordering;
use std::time::Duration;

use x509_parser::pem::Pem;
use x509_parser::public_key::PublicKey;

use super::Emulator;
use super::authorize::{issue_code, params_for};
use super::faults::{Faults, RouteClass, Stats};
use super::model::{AppRegistration, CertificateInfo, EmulatorError};
use super::state::{AppRecord, CertRecord, write};
use super::util::{b64url, guid, hex_upper, iso, sha1, sha256};

impl Emulator {
    /// Registers an app in a tenant and returns its client id.
    ///
    /// # Panics
    /// When the tenant is unknown or the client id is taken; [`Emulator::try_register_app`]
    /// reports those as errors instead.
    pub fn register_app(&self, directory_id: &str, app: AppRegistration) -> String {
        self.try_register_app(directory_id, app)
            .unwrap_or_else(|e| panic!("register_app: {e}"))
    }

    pub fn try_register_app(
        &self,
        directory_id: &str,
        app: AppRegistration,
    ) -> Result<String, EmulatorError> {
        let tenant = self.inner.require_tenant(directory_id)?;
        let client_id = app.client_id.clone().unwrap_or_else(guid).to_lowercase();
        let mut apps = tenant.apps_mut();
        if apps.contains_key(&client_id) {
            return Err(EmulatorError::DuplicateApp(client_id));
        }
        let record = AppRecord {
            client_id: client_id.clone(),
            reg: app,
            certs: Vec::new(),
        };
        apps.insert(client_id.clone(), record);
        Ok(client_id)
    }

    /// Uploads a certificate (PEM) as a credential of the app, as "Certificates & secrets"
    /// does. Expired or not-yet-valid certificates are accepted here and refused at sign-in.
    pub fn upload_certificate(
        &self,
        directory_id: &str,
        client_id: &str,
        pem: &str,
    ) -> Result<CertificateInfo, EmulatorError> {
        let tenant = self.inner.require_tenant(directory_id)?;
        let record = parse_certificate(pem)?;
        let info = record.info.clone();
        let mut apps = tenant.apps_mut();
        let app = apps
            .get_mut(&client_id.to_lowercase())
            .ok_or_else(|| EmulatorError::UnknownApp(client_id.to_string()))?;
        app.certs.retain(|c| c.sha1 != record.sha1);
        app.certs.push(record);
        Ok(info)
    }

    /// Login and Graph base URL, e.g. `http://127.0.0.1:PORT` (no trailing slash).
    pub fn set_base_url(&self, url: &str) {
        *write(&self.inner.base_url) = url.trim_end_matches('/').to_string();
    }

    pub fn base_url(&self) -> String {
        self.inner.base()
    }

    /// Publishes a new signing key first in JWKS (new tokens use it), keeping the old ones.
    pub fn rotate_signing_key(&self) {
        self.inner.keys.rotate();
    }

    /// Drops every signing key but the newest; tokens signed with the others stop working.
    pub fn retire_old_signing_keys(&self) {
        self.inner.keys.retire_old();
    }

    /// The `kid`s in JWKS, newest first.
    pub fn signing_key_ids(&self) -> Vec<String> {
        self.inner
            .keys
            .all()
            .iter()
            .map(|k| k.kid.clone())
            .collect()
    }

    pub fn set_faults(&self, class: RouteClass, faults: Faults) {
        self.inner.faults.set(class, faults);
    }

    pub fn stats(&self) -> Stats {
        self.inner.faults.stats()
    }

    /// Moves the emulator's clock forward (codes, tokens and certificates age with it).
    pub fn advance_clock(&self, by: Duration) {
        self.inner
            .clock_offset
            .fetch_add(by.as_secs() as i64, Ordering::Relaxed);
    }

    /// `(directory id, domain)` of every tenant.
    pub fn tenants(&self) -> Vec<(String, String)> {
        self.inner
            .tenants
            .iter()
            .map(|t| (t.id.clone(), t.domain.clone()))
            .collect()
    }

    /// `(id, displayName)` of the tenant's groups.
    pub fn groups(&self, directory_id: &str) -> Vec<(String, String)> {
        self.inner.tenant(directory_id).map_or_else(Vec::new, |t| {
            t.read()
                .groups
                .iter()
                .map(|g| (g.id.clone(), g.display_name.clone()))
                .collect()
        })
    }

    /// Later delta and skip tokens of this tenant answer 410 `syncStateNotFound`.
    pub fn expire_delta_tokens(&self, directory_id: &str) {
        if let Some(tenant) = self.inner.tenant(directory_id) {
            tenant.write().generation += 1;
        }
    }

    /// A code as `/authorize` would issue it after `user_upn` signed in.
    pub fn auth_code_for(
        &self,
        directory_id: &str,
        client_id: &str,
        redirect_uri: &str,
        user_upn: &str,
        code_challenge: &str,
        nonce: &str,
    ) -> Result<String, EmulatorError> {
        let tenant = self.inner.require_tenant(directory_id)?;
        if !tenant.apps().contains_key(&client_id.to_lowercase()) {
            return Err(EmulatorError::UnknownApp(client_id.to_string()));
        }
        let user = tenant
            .read()
            .active(user_upn)
            .map(|(idx, _)| idx)
            .ok_or_else(|| EmulatorError::UnknownUser(user_upn.to_string()))?;
        let params = params_for(redirect_uri, code_challenge, nonce);
        Ok(issue_code(
            self,
            &tenant,
            &client_id.to_lowercase(),
            &params,
            user,
        ))
    }
}

/// Reads the first certificate of a PEM text into what the token endpoint checks.
fn parse_certificate(pem: &str) -> Result<CertRecord, EmulatorError> {
    let bad = |why: &str| EmulatorError::InvalidCertificate(why.to_string());
    let block = Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")
        .ok_or_else(|| bad("no CERTIFICATE block in the PEM text"))?;
    let cert = block.parse_x509().map_err(|e| bad(&e.to_string()))?;
    let spki = cert.public_key();
    if !matches!(spki.parsed(), Ok(PublicKey::RSA(_))) {
        return Err(bad("only RSA certificates can sign client assertions here"));
    }
    let der = &block.contents;
    let (not_before, not_after) = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    let (sha1, sha256) = (sha1(der), sha256(der));
    let info = CertificateInfo {
        thumbprint: hex_upper(&sha1),
        x5t: b64url(&sha1),
        x5t_s256: b64url(&sha256),
        not_before: iso(not_before),
        not_after: iso(not_after),
        subject: cert.subject().to_string(),
    };
    Ok(CertRecord {
        sha1,
        sha256,
        not_before,
        not_after,
        public_key: spki.subject_public_key.data.to_vec(),
        info,
    })
}
