//! Opening a user's PBX session at a Microsoft sign-in: which PBX user the directory entry
//! is, which password the gateway may use for it, and the `POST /login`.
//!
//! Users the connector created have the random password it set (sealed under the master
//! key). Local PBX users the connector adopted have a password the gateway does not know;
//! with `pbx_sign_in = "manage_passwords"` it sets a new random one for them (sealed first,
//! then sent), otherwise their sign-in goes on with the gateway session alone and the
//! session says why.

use super::pbx_session::{PbxGrant, PbxSessions};
use super::pbx_state::{PbxRefusal, PbxState};
use crate::pbx::credentials::{generate_password, user_password_secret};
use crate::pbx::{PbxClient, PbxError};
use crate::settings::{Ms365Settings, PbxSignIn};
use crate::store::{DirectoryUser, PbxLink, PbxLinkKind, Tenant};

/// Which password the sign-in uses.
enum Password {
    /// Kept by the gateway (set at creation, or by `manage_passwords` earlier).
    Kept(String),
    /// Set just now for an adopted user.
    New(String),
}

impl PbxSessions {
    /// The user's PBX session for a sign-in to `tenant`. `Err` stops the sign-in with a page
    /// that explains it; a grant without a token lets it go on with the gateway session.
    pub async fn open(
        &self,
        tenant: &Tenant,
        settings: &Ms365Settings,
        user: &DirectoryUser,
    ) -> Result<PbxGrant, PbxRefusal> {
        if !self.enabled() {
            return Ok(PbxGrant::without(PbxState::NoPbx));
        }
        let result = self.open_inner(tenant, settings, user).await;
        let outcome = match &result {
            Ok(grant) if grant.state == PbxState::Active => "opened",
            Ok(grant) => grant.state.as_str(),
            Err(refusal) => refusal.outcome(),
        };
        self.metrics.count_pbx_session(outcome);
        result
    }

    async fn open_inner(
        &self,
        tenant: &Tenant,
        settings: &Ms365Settings,
        user: &DirectoryUser,
    ) -> Result<PbxGrant, PbxRefusal> {
        let internal = |e: &dyn std::fmt::Display| PbxRefusal::Internal(e.to_string());
        let local_id = user.pbx_user_id.as_str();
        let pbx_user =
            (self.store.pbx_user(&tenant.id, local_id).await).map_err(|e| internal(&e))?;
        let link = (self.store)
            .pbx_link(&tenant.id, PbxLinkKind::User, local_id)
            .await
            .map_err(|e| internal(&e))?;
        let (Some(pbx_user), Some(link)) = (pbx_user, link) else {
            return Ok(PbxGrant::without(PbxState::NotOnPbx));
        };
        let secret = user_password_secret(&tenant.id, local_id);
        let kept = (self.keyring.get(&secret).await).map_err(|e| internal(&e))?;
        let kept = kept.and_then(|p| String::from_utf8(p).ok());
        let manage = !link.created && settings.pbx_sign_in == PbxSignIn::ManagePasswords;
        let password = match kept {
            Some(p) => Password::Kept(p),
            None if link.created => return Ok(PbxGrant::without(PbxState::PasswordUnknown)),
            None if !manage => return Ok(PbxGrant::without(PbxState::NotManaged)),
            None => match self.set_new_password(tenant, &link, &secret).await? {
                Some(p) => Password::New(p),
                None => return Ok(PbxGrant::without(PbxState::PasswordNotSettable)),
            },
        };
        let domain = tenant.domain.as_str();
        let name = pbx_user.username.as_str();
        match password {
            Password::New(p) => self.login(name, &p, domain).await.map(|t| self.granted(t)),
            Password::Kept(p) => match self.login(name, &p, domain).await {
                // An adopted user's password the gateway set was changed on the PBX since:
                // `manage_passwords` allows setting it again, once, at this sign-in.
                Err(PbxRefusal::PasswordRejected) if manage => {
                    match self.set_new_password(tenant, &link, &secret).await? {
                        Some(p) => self.login(name, &p, domain).await.map(|t| self.granted(t)),
                        None => Ok(PbxGrant::without(PbxState::PasswordNotSettable)),
                    }
                }
                other => other.map(|t| self.granted(t)),
            },
        }
    }

    /// Sets a new random password for the adopted PBX user of `link`: sealed first (so a
    /// crash after the PBX took it still knows it), then `POST /users/{id}`. `None` when the
    /// PBX refuses to take a password (the v22 document's update has no such field).
    async fn set_new_password(
        &self,
        tenant: &Tenant,
        link: &PbxLink,
        secret: &str,
    ) -> Result<Option<String>, PbxRefusal> {
        let internal = |e: &dyn std::fmt::Display| PbxRefusal::Internal(e.to_string());
        let Some(login) = self.config.pbx_login(&tenant.id) else {
            return Err(PbxRefusal::Internal(format!(
                "tenant `{}` has no PBX administrator sign-in",
                tenant.id
            )));
        };
        let admin = PbxClient::new(&self.config.pbx, login.clone(), tenant.domain.clone())
            .map_err(|e| internal(&e))?;
        (self.keyring.delete(secret).await).map_err(|e| internal(&e))?;
        let password = generate_password();
        let stored =
            (self.keyring.put_once(secret, password.as_bytes()).await).map_err(|e| internal(&e))?;
        let password = String::from_utf8(stored).map_err(|e| internal(&e))?;
        match admin.set_password(&link.remote_id, &password).await {
            Ok(()) => {
                tracing::info!(tenant = %tenant.id, pbx_user = %link.remote_id, "set a new PBX password for an adopted user (pbx_sign_in = manage_passwords)");
                Ok(Some(password))
            }
            Err(e) => {
                if let Err(e) = self.keyring.delete(secret).await {
                    tracing::warn!(error = %e, "cannot remove a PBX password that was not set");
                }
                match e {
                    PbxError::Rejected { status: 400, .. } => {
                        tracing::warn!(error = %e, "the PBX refused to take a new password for an adopted user");
                        Ok(None)
                    }
                    PbxError::Rejected { status: 403, .. } => Err(PbxRefusal::UserDisabled),
                    PbxError::SignIn { .. } | PbxError::Rejected { .. } => {
                        tracing::warn!(error = %e, "cannot set a PBX password");
                        Ok(None)
                    }
                    _ => {
                        tracing::warn!(error = %e, "cannot set a PBX password");
                        Err(PbxRefusal::Unreachable)
                    }
                }
            }
        }
    }
}
