//! A tenant's Microsoft 365 integration settings, in the shape of PortSIP v22's
//! `GET|POST /api/ms365` (field names and enums as PortSIP writes them), plus the few
//! settings this gateway adds (assertion style, time zone, landing paths). Stored as one JSON
//! document per tenant; validated here, once, for every writer.

use serde::{Deserialize, Serialize};

use crate::entra::NationalCloud;
use crate::entra::assertion::AssertionAlg;
use crate::schedule::{SyncTime, TimeZone};
use crate::web::return_to::ReturnPath;

/// Which users a section applies to.
///
/// PortSIP's own descriptions of INCLUDE and EXCLUDE read swapped ("INCLUDE: all users
/// except selected"); this gateway implements what the words mean: INCLUDE = only the
/// selected users, EXCLUDE = everyone but the selected users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SyncType {
    #[default]
    All,
    Include,
    Exclude,
}

/// Whether the tenant's schedule runs syncs by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SyncMode {
    /// `sync_time` starts runs.
    #[default]
    Automatic,
    /// Only "Sync now" (API, CLI) starts runs.
    Manual,
}

/// Beyond PortSIP: whose PBX session the gateway may open at a Microsoft sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PbxSignIn {
    /// Only users the connector created (their PBX password is the gateway's). Adopted
    /// local PBX users sign in with the gateway session alone.
    #[default]
    CreatedUsersOnly,
    /// Also adopted local PBX users: at their first Microsoft sign-in the gateway sets a new
    /// random PBX password for them (their old one stops working).
    ManagePasswords,
}

impl PbxSignIn {
    pub fn as_str(self) -> &'static str {
        match self {
            PbxSignIn::CreatedUsersOnly => "created_users_only",
            PbxSignIn::ManagePasswords => "manage_passwords",
        }
    }
}

/// `users`: which Microsoft 365 users become PBX extensions.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserSync {
    pub enabled: bool,
    pub sync_guest_users: bool,
    pub sync_photo: bool,
    /// 3–13 digits, no leading zero; empty = first free number of the default range.
    pub starting_extension_number: String,
    /// OIDs or UPNs.
    pub selected_users: Vec<String>,
    pub sync_type: SyncType,
}

/// A section with an on/off switch and a user scope.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scope {
    pub enabled: bool,
    pub selected_users: Vec<String>,
    pub sync_type: SyncType,
}

impl Scope {
    /// Whether a user (by OID or UPN, compared case-insensitively) is in scope.
    pub fn covers(&self, oid: &str, upn: &str) -> bool {
        let selected = self
            .selected_users
            .iter()
            .any(|s| s.eq_ignore_ascii_case(oid) || s.eq_ignore_ascii_case(upn));
        self.enabled
            && match self.sync_type {
                SyncType::All => true,
                SyncType::Include => selected,
                SyncType::Exclude => !selected,
            }
    }
}

/// `sign_in_as_administrator`: users who get the tenant administrator role on sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSignIn {
    pub enabled: bool,
    pub selected_users: Vec<String>,
}

impl AdminSignIn {
    /// Whether the user with object id `oid` and synced UPN `upn` signs in as an
    /// administrator. Never decided on the ID token's `preferred_username`, which Microsoft
    /// documents as mutable (a guest's is their home address).
    pub fn covers(&self, oid: &str, upn: &str) -> bool {
        self.enabled
            && self
                .selected_users
                .iter()
                .any(|s| s.eq_ignore_ascii_case(oid) || s.eq_ignore_ascii_case(upn))
    }
}

/// Beyond PortSIP: `realtime`, Microsoft Graph change notifications. Microsoft pushes
/// changes to the gateway's public listener and a targeted run follows within seconds; the
/// schedule keeps running as the safety net.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Realtime {
    pub enabled: bool,
    /// Notifications of a tenant are gathered this long before one run answers them all.
    pub debounce_seconds: u32,
    /// Personal mailboxes get a contacts subscription each only while the shared and
    /// personal mailboxes in scope number at most this (Microsoft limits subscriptions per
    /// mailbox and per app; a large tenant's personal contacts stay on the schedule).
    pub max_mailbox_subscriptions: u32,
}

/// Longest `realtime.debounce_seconds`.
pub const MAX_DEBOUNCE_SECONDS: u32 = 300;
/// Largest `realtime.max_mailbox_subscriptions`.
pub const MAX_MAILBOX_SUBSCRIPTIONS: u32 = 10_000;

impl Default for Realtime {
    fn default() -> Self {
        Realtime {
            enabled: true,
            debounce_seconds: 2,
            max_mailbox_subscriptions: 100,
        }
    }
}

/// The whole document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ms365Settings {
    #[serde(with = "cloud_name")]
    pub national_cloud: NationalCloud,
    pub directory_id: String,
    pub application_id: String,
    /// Cron expression (minute hour day month weekday), PortSIP's default is midnight.
    pub sync_time: SyncTime,
    /// Beyond PortSIP: automatic (on `sync_time`) or manual syncs only.
    pub sync_mode: SyncMode,
    pub users: UserSync,
    pub sign_in_as_administrator: AdminSignIn,
    pub sign_in_as_standard_user: Scope,
    pub personal_contacts: Scope,
    pub shared_mailbox: Scope,
    pub events: Scope,
    /// Beyond PortSIP: `PS256` (default) or `RS256` client assertions.
    pub assertion_alg: AssertionAlg,
    /// Beyond PortSIP: also accept PS256-signed ID tokens (RS256 is always accepted).
    pub allow_ps256_id_tokens: bool,
    /// Beyond PortSIP: IANA time zone the schedule runs in.
    pub time_zone: TimeZone,
    /// Beyond PortSIP: where users land after signing in, per client.
    pub portal_landing_path: ReturnPath,
    pub webrtc_landing_path: ReturnPath,
    /// Beyond PortSIP: whose PBX session a Microsoft sign-in opens (`[pbx] kind = "portsip"`).
    pub pbx_sign_in: PbxSignIn,
    /// Beyond PortSIP: change notifications (see [`Realtime`]).
    pub realtime: Realtime,
}

impl Default for Ms365Settings {
    fn default() -> Self {
        Ms365Settings {
            national_cloud: NationalCloud::Global,
            directory_id: String::new(),
            application_id: String::new(),
            sync_time: SyncTime::default(),
            sync_mode: SyncMode::Automatic,
            users: UserSync::default(),
            sign_in_as_administrator: AdminSignIn::default(),
            sign_in_as_standard_user: Scope::default(),
            personal_contacts: Scope::default(),
            shared_mailbox: Scope::default(),
            events: Scope::default(),
            assertion_alg: AssertionAlg::Ps256,
            allow_ps256_id_tokens: false,
            time_zone: TimeZone::UTC,
            portal_landing_path: ReturnPath::parse("/portal/").expect("a safe path"),
            webrtc_landing_path: ReturnPath::parse("/webrtc/").expect("a safe path"),
            pbx_sign_in: PbxSignIn::CreatedUsersOnly,
            realtime: Realtime::default(),
        }
    }
}

impl Ms365Settings {
    /// Application and directory set: the tenant can talk to Microsoft.
    pub fn is_configured(&self) -> bool {
        is_guid(&self.directory_id) && is_guid(&self.application_id)
    }

    /// What PortSIP calls `enable_ms365_integration`: the Microsoft icon shows.
    pub fn sign_in_enabled(&self) -> bool {
        self.is_configured()
            && (self.sign_in_as_standard_user.enabled || self.sign_in_as_administrator.enabled)
    }

    /// Field-by-field validation; errors name the field as the API reports it.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let field = |f: &str, m: &str| Err((f.to_string(), m.to_string()));
        if !self.directory_id.is_empty() && !is_guid(&self.directory_id) {
            return field(
                "directory_id",
                "must be a GUID like 72f988bf-86f1-41af-91ab-2d7cd011db47",
            );
        }
        if !self.application_id.is_empty() && !is_guid(&self.application_id) {
            return field("application_id", "must be a GUID");
        }
        let ext = &self.users.starting_extension_number;
        let ext_ok = (3..=13).contains(&ext.len())
            && ext.bytes().all(|b| b.is_ascii_digit())
            && !ext.starts_with('0');
        if !ext.is_empty() && !ext_ok {
            return field(
                "users.starting_extension_number",
                "3 to 13 digits without a leading zero",
            );
        }
        let rt = &self.realtime;
        if !(1..=MAX_DEBOUNCE_SECONDS).contains(&rt.debounce_seconds) {
            return field(
                "realtime.debounce_seconds",
                &format!("1 to {MAX_DEBOUNCE_SECONDS} seconds"),
            );
        }
        if rt.max_mailbox_subscriptions > MAX_MAILBOX_SUBSCRIPTIONS {
            return field(
                "realtime.max_mailbox_subscriptions",
                &format!("0 to {MAX_MAILBOX_SUBSCRIPTIONS}"),
            );
        }
        for (name, list) in [
            ("users.selected_users", &self.users.selected_users),
            (
                "sign_in_as_standard_user.selected_users",
                &self.sign_in_as_standard_user.selected_users,
            ),
            (
                "personal_contacts.selected_users",
                &self.personal_contacts.selected_users,
            ),
            (
                "shared_mailbox.selected_users",
                &self.shared_mailbox.selected_users,
            ),
        ] {
            if list
                .iter()
                .any(|u| u.trim().is_empty() || u.contains(char::is_whitespace))
            {
                return field(
                    name,
                    "each entry is one OID or user principal name, without spaces",
                );
            }
        }
        Ok(())
    }
}

/// Case-insensitive 8-4-4-4-12 hex GUID.
pub fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

mod cloud_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::entra::NationalCloud;

    pub fn serialize<S: Serializer>(c: &NationalCloud, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NationalCloud, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portsip_document_round_trips_and_defaults_fill_in() {
        let doc = r#"{"national_cloud":"CHINA","directory_id":"72f988bf-86f1-41af-91ab-2d7cd011db47",
            "application_id":"11111111-2222-3333-4444-555555555555","sync_time":"30 2 * * *",
            "users":{"enabled":true,"starting_extension_number":"1000","sync_type":"INCLUDE","selected_users":["a@x.com"]},
            "sign_in_as_standard_user":{"enabled":true}}"#;
        let s: Ms365Settings = serde_json::from_str(doc).unwrap();
        assert_eq!(s.national_cloud, NationalCloud::China);
        assert_eq!(s.users.sync_type, SyncType::Include);
        assert_eq!(s.assertion_alg, AssertionAlg::Ps256);
        assert!(s.sign_in_enabled());
        assert!(s.validate().is_ok());
        let back: Ms365Settings =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn validation_names_the_field() {
        let mut s = Ms365Settings {
            directory_id: "nope".into(),
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().0, "directory_id");
        s.directory_id.clear();
        s.users.starting_extension_number = "0100".into();
        assert_eq!(
            s.validate().unwrap_err().0,
            "users.starting_extension_number"
        );
        s.users.starting_extension_number.clear();
        s.realtime.debounce_seconds = 0;
        assert_eq!(s.validate().unwrap_err().0, "realtime.debounce_seconds");
        s.realtime.debounce_seconds = 3;
        s.realtime.max_mailbox_subscriptions = MAX_MAILBOX_SUBSCRIPTIONS + 1;
        let (field, message) = s.validate().unwrap_err();
        assert_eq!(field, "realtime.max_mailbox_subscriptions", "{message}");
        s.realtime = Realtime::default();
        s.shared_mailbox.selected_users = vec!["".into()];
        assert_eq!(s.validate().unwrap_err().0, "shared_mailbox.selected_users");
        assert!(serde_json::from_str::<Ms365Settings>(r#"{"national_cloud":"MARS"}"#).is_err());
        let err = serde_json::from_str::<Ms365Settings>(r#"{"pbx_sign_in":"always"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("manage_passwords"), "{err}");
        let s: Ms365Settings = serde_json::from_str(r#"{"assertion_alg":"RS256"}"#).unwrap();
        assert_eq!(
            s.assertion_alg,
            AssertionAlg::Rs256,
            "read once into its type"
        );
        let err = serde_json::from_str::<Ms365Settings>(r#"{"assertion_alg":"HS256"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("PS256") && err.contains("RS256"), "{err}");
        // The schedule, the time zone and the landing paths are read into their types too:
        // a document holding a bad one is not a settings document.
        for (doc, says) in [
            (r#"{"sync_time":"0 25 * * *"}"#, "sync_time `0 25 * * *`"),
            (r#"{"sync_time":"0 0 * *"}"#, "5 fields"),
            (r#"{"time_zone":"Mars/Olympus"}"#, "IANA"),
            (r#"{"portal_landing_path":"//evil.example"}"#, "same-origin"),
            (
                r#"{"webrtc_landing_path":"https://evil.example/"}"#,
                "same-origin",
            ),
        ] {
            let err = serde_json::from_str::<Ms365Settings>(doc)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{doc}: {err}");
        }
        let s: Ms365Settings =
            serde_json::from_str(r#"{"sync_time":"30 1 * * *","time_zone":"Europe/Paris"}"#)
                .unwrap();
        assert_eq!(s.sync_time.as_str(), "30 1 * * *");
        assert_eq!(s.time_zone.name(), "Europe/Paris");
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["sync_time"], "30 1 * * *");
        assert_eq!(back["time_zone"], "Europe/Paris");
        assert_eq!(back["portal_landing_path"], "/portal/");
        let s: Ms365Settings =
            serde_json::from_str(r#"{"pbx_sign_in":"manage_passwords"}"#).unwrap();
        assert_eq!(s.pbx_sign_in, PbxSignIn::ManagePasswords);
    }

    #[test]
    fn scopes_mean_what_their_words_say() {
        let mut scope = Scope {
            enabled: true,
            selected_users: vec!["Adele@Contoso.com".into()],
            sync_type: SyncType::Include,
        };
        assert!(scope.covers("oid-1", "adele@contoso.com"));
        assert!(!scope.covers("oid-2", "bob@contoso.com"));
        scope.sync_type = SyncType::Exclude;
        assert!(!scope.covers("oid-1", "adele@contoso.com"));
        assert!(scope.covers("oid-2", "bob@contoso.com"));
        scope.enabled = false;
        assert!(!scope.covers("oid-2", "bob@contoso.com"));
    }
}
