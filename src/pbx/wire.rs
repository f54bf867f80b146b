//! PortSIP v22 request and answer bodies, in PortSIP's field names, limited to the fields
//! the connector reads or writes. Answers are read leniently (every field but `id`
//! optional, unknown fields ignored); requests carry only what the sync owns.

use serde::{Deserialize, Serialize};

/// `POST /login`.
#[derive(Debug, Serialize)]
pub struct LoginRequest<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub domain: &'a str,
}

/// `POST /auth/refresh_token`.
#[derive(Debug, Serialize)]
pub struct RefreshRequest<'a> {
    pub refresh_token: &'a str,
}

/// The answer of `POST /login` and `POST /auth/refresh_token`. The document gives the
/// lifetime as `expires_in` (seconds) and, for the session, `expires_at` (RFC 3339); either
/// may be missing. No `Debug`: it holds the tokens.
#[derive(Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// A list answer: `{count, items}`.
#[derive(Debug, Deserialize)]
pub struct ListPage<T> {
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
}

/// `{id}` of a creation.
#[derive(Debug, Deserialize)]
pub struct Created {
    pub id: String,
}

/// A user as `GET /users` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PbxUserRecord {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub mobile_phone: Option<String>,
    #[serde(default)]
    pub work_phone: Option<String>,
    #[serde(default)]
    pub home_phone: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub department: Option<String>,
    #[serde(default)]
    pub extension_number: Option<String>,
    /// RFC 3339, as PortSIP sends it.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// `POST /users`: every field the schema requires, and the optional ones the sync owns.
#[derive(Serialize)]
pub struct NewUser {
    pub name: String,
    pub display_name: String,
    pub password: String,
    pub email: String,
    pub role: String,
    pub extension_number: String,
    pub extension_password: String,
    pub voicemail_pin: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mobile_phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("name", &self.name)
            .field("extension_number", &self.extension_number)
            .finish_non_exhaustive()
    }
}

/// `POST /users/{id}`: only the fields the sync owns; absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UserUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mobile_phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_phone: Option<String>,
}

/// `POST /users/{id}` with a new login password (`pbx_sign_in = "manage_passwords"`). The
/// v22 document's update body has no `password`: a PBX that follows it refuses this with
/// `VALIDATE_FAILED`, which the caller reports. No `Debug`: it holds the password.
#[derive(Serialize)]
pub struct PasswordChange<'a> {
    pub password: &'a str,
}

/// `POST /users/{id}/ms365_binding`.
#[derive(Debug, Serialize)]
pub struct Binding<'a> {
    pub id: &'a str,
}

/// PortSIP's company contact fields (`POST /contacts`, `POST /contacts/{id}`): the store
/// keeps contacts in exactly these fields, so its type is the wire type. PortSIP allows 64
/// characters of `name`, 1024 of `notes` and 128 of the others; nothing is clipped here
/// (the caller clips, knowing what it may cut).
pub use crate::store::ContactFields;

/// A company contact as `GET /contacts` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PbxContactRecord {
    pub id: String,
    #[serde(flatten)]
    pub fields: NullableContact,
}

/// Contact fields of an answer, where PortSIP may send `null` for an absent value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NullableContact {
    pub name: Option<String>,
    pub email: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub business: Option<String>,
    pub business2: Option<String>,
    pub mobile_phone: Option<String>,
    pub mobile_phone2: Option<String>,
    pub home_phone: Option<String>,
    pub home_phone2: Option<String>,
    pub other: Option<String>,
    pub business_fax: Option<String>,
    pub home_fax: Option<String>,
    pub address: Option<String>,
    pub notes: Option<String>,
}

impl From<&NullableContact> for ContactFields {
    fn from(c: &NullableContact) -> Self {
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        ContactFields {
            name: s(&c.name),
            email: s(&c.email),
            company: s(&c.company),
            title: s(&c.title),
            business: s(&c.business),
            business2: s(&c.business2),
            mobile_phone: s(&c.mobile_phone),
            mobile_phone2: s(&c.mobile_phone2),
            home_phone: s(&c.home_phone),
            home_phone2: s(&c.home_phone2),
            other: s(&c.other),
            business_fax: s(&c.business_fax),
            home_fax: s(&c.home_fax),
            address: s(&c.address),
            notes: s(&c.notes),
        }
    }
}

/// PortSIP's error body: `{"errors":[{"code","message","detail":{"field"}}]}`.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub errors: Vec<ErrorItem>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ErrorItem {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub detail: Option<serde_json::Value>,
}
