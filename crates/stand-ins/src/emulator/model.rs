//! The emulator's public data types: the directory objects it serves (users and contacts in
//! Graph's JSON shape), what callers send to create or change them, app registrations and
//! uploaded certificates, and the error of the in-process control API. Field names follow
//! Graph's camelCase so the same structs serialise straight into responses.

use serde::{Deserialize, Deserializer, Serialize};

/// A Microsoft Graph `user`, limited to the properties the emulator serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub user_principal_name: String,
    pub display_name: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub mail: Option<String>,
    pub mobile_phone: Option<String>,
    pub business_phones: Vec<String>,
    pub job_title: Option<String>,
    pub department: Option<String>,
    pub office_location: Option<String>,
    pub preferred_language: Option<String>,
    pub account_enabled: bool,
    /// `Member` or `Guest`.
    pub user_type: String,
}

/// Property names a `$select` on users may name (Graph rejects unknown ones).
pub(crate) const USER_PROPERTIES: &[&str] = &[
    "id",
    "userPrincipalName",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "mobilePhone",
    "businessPhones",
    "jobTitle",
    "department",
    "officeLocation",
    "preferredLanguage",
    "accountEnabled",
    "userType",
];

/// What `GET /users` returns without `$select` (Graph v1.0's default set).
pub(crate) const USER_DEFAULT_PROPERTIES: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// A user to add with [`Emulator::add_user`](super::Emulator::add_user) or
/// `POST /_emulator/tenants/{dir}/users`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NewUser {
    pub user_principal_name: String,
    pub display_name: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub mail: Option<String>,
    pub mobile_phone: Option<String>,
    pub business_phones: Vec<String>,
    pub job_title: Option<String>,
    pub department: Option<String>,
    pub office_location: Option<String>,
    /// `None` means enabled, as in Entra.
    pub account_enabled: Option<bool>,
    /// `None` means `Member`.
    pub user_type: Option<String>,
    /// Whether the user has an Exchange mailbox (contacts); `None` means yes for members.
    pub has_mailbox: Option<bool>,
    /// Give the new user a generated profile photo.
    pub photo: bool,
}

/// A change to a user; `None` leaves a property alone, `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserPatch {
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    #[serde(deserialize_with = "double_option")]
    pub given_name: Option<Option<String>>,
    #[serde(deserialize_with = "double_option")]
    pub surname: Option<Option<String>>,
    #[serde(deserialize_with = "double_option")]
    pub mail: Option<Option<String>>,
    #[serde(deserialize_with = "double_option")]
    pub mobile_phone: Option<Option<String>>,
    pub business_phones: Option<Vec<String>>,
    #[serde(deserialize_with = "double_option")]
    pub job_title: Option<Option<String>>,
    #[serde(deserialize_with = "double_option")]
    pub department: Option<Option<String>>,
    #[serde(deserialize_with = "double_option")]
    pub office_location: Option<Option<String>>,
    pub account_enabled: Option<bool>,
}

/// JSON `null` must mean "clear", which plain `Option<Option<T>>` would read as "absent".
fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// An `emailAddress` of a contact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmailAddress {
    pub name: String,
    pub address: String,
}

/// A `physicalAddress`; Graph writes `{}` when every part is empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PhysicalAddress {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub street: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_or_region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
}

/// A Microsoft Graph `contact` in a mailbox's default Contacts folder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    pub id: String,
    pub created_date_time: String,
    pub last_modified_date_time: String,
    pub change_key: String,
    pub categories: Vec<String>,
    pub parent_folder_id: String,
    pub birthday: Option<String>,
    pub file_as: String,
    pub display_name: String,
    pub given_name: Option<String>,
    pub initials: Option<String>,
    pub middle_name: Option<String>,
    pub nick_name: Option<String>,
    pub surname: Option<String>,
    pub title: Option<String>,
    pub yomi_given_name: Option<String>,
    pub yomi_surname: Option<String>,
    pub yomi_company_name: Option<String>,
    pub generation: Option<String>,
    pub im_addresses: Vec<String>,
    pub job_title: Option<String>,
    pub company_name: Option<String>,
    pub department: Option<String>,
    pub office_location: Option<String>,
    pub profession: Option<String>,
    pub business_home_page: Option<String>,
    pub assistant_name: Option<String>,
    pub manager: Option<String>,
    pub home_phones: Vec<String>,
    pub mobile_phone: Option<String>,
    pub business_phones: Vec<String>,
    pub spouse_name: Option<String>,
    pub personal_notes: String,
    pub children: Vec<String>,
    pub email_addresses: Vec<EmailAddress>,
    pub home_address: PhysicalAddress,
    pub business_address: PhysicalAddress,
    pub other_address: PhysicalAddress,
}

/// Property names a `$select` on contacts may name.
pub(crate) const CONTACT_PROPERTIES: &[&str] = &[
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "parentFolderId",
    "birthday",
    "fileAs",
    "displayName",
    "givenName",
    "initials",
    "middleName",
    "nickName",
    "surname",
    "title",
    "yomiGivenName",
    "yomiSurname",
    "yomiCompanyName",
    "generation",
    "imAddresses",
    "jobTitle",
    "companyName",
    "department",
    "officeLocation",
    "profession",
    "businessHomePage",
    "assistantName",
    "manager",
    "homePhones",
    "mobilePhone",
    "businessPhones",
    "spouseName",
    "personalNotes",
    "children",
    "emailAddresses",
    "homeAddress",
    "businessAddress",
    "otherAddress",
];

/// A contact to add to a mailbox's default Contacts folder.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NewContact {
    pub display_name: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub company_name: Option<String>,
    pub job_title: Option<String>,
    pub email_addresses: Vec<EmailAddress>,
    pub business_phones: Vec<String>,
    pub home_phones: Vec<String>,
    pub mobile_phone: Option<String>,
    pub business_address: PhysicalAddress,
    pub home_address: PhysicalAddress,
    pub personal_notes: String,
}

/// A change to a contact; `None` leaves a property alone.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContactPatch {
    pub display_name: Option<String>,
    #[serde(deserialize_with = "double_option")]
    pub given_name: Option<Option<String>>,
    #[serde(deserialize_with = "double_option")]
    pub surname: Option<Option<String>>,
    #[serde(deserialize_with = "double_option")]
    pub company_name: Option<Option<String>>,
    #[serde(deserialize_with = "double_option")]
    pub job_title: Option<Option<String>>,
    pub email_addresses: Option<Vec<EmailAddress>>,
    pub business_phones: Option<Vec<String>>,
    pub home_phones: Option<Vec<String>>,
    #[serde(deserialize_with = "double_option")]
    pub mobile_phone: Option<Option<String>>,
    pub business_address: Option<PhysicalAddress>,
    pub home_address: Option<PhysicalAddress>,
    pub personal_notes: Option<String>,
}

/// An app registration (the Entra "App registrations" blade, reduced to what matters here).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppRegistration {
    pub display_name: String,
    /// Web redirect URIs; `/authorize` and the code redemption must match one exactly.
    pub redirect_uris: Vec<String>,
    /// Granted (admin-consented) application permissions, e.g. `User.Read.All`.
    pub permissions: Vec<String>,
    /// A fixed application (client) id; `None` draws a new GUID.
    pub client_id: Option<String>,
}

/// What Entra shows for an uploaded certificate credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// SHA-1 thumbprint in upper-case hex, as the portal shows it.
    pub thumbprint: String,
    /// base64url SHA-1 of the DER (the `x5t` header value).
    pub x5t: String,
    /// base64url SHA-256 of the DER (the `x5t#S256` header value).
    pub x5t_s256: String,
    /// Validity start, RFC 3339 UTC.
    pub not_before: String,
    /// Validity end, RFC 3339 UTC.
    pub not_after: String,
    pub subject: String,
}

/// Failures of the in-process control API (and of the HTTP control API behind it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmulatorError {
    #[error("unknown tenant `{0}`")]
    UnknownTenant(String),
    #[error("unknown application `{0}`")]
    UnknownApp(String),
    #[error("unknown user `{0}`")]
    UnknownUser(String),
    #[error("unknown contact `{0}`")]
    UnknownContact(String),
    #[error("user `{0}` has no mailbox")]
    NoMailbox(String),
    #[error("a user with userPrincipalName `{0}` already exists")]
    DuplicateUser(String),
    #[error("an application with client id `{0}` already exists")]
    DuplicateApp(String),
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}
