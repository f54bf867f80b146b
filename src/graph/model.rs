//! The Graph resources the sync reads (`user`, `contact`, `profilePhoto`) and the page
//! envelope around collections. Every field is optional or defaulted: Graph omits
//! properties that are not in `$select`, sends `null` for empty ones, and delta answers
//! carry only `id` and `@removed` for removed objects, so decoding must never fail for a
//! missing field. The `*_FIELDS` lists are the `$select` that fills exactly these structs.

use crate::ids::ObjectId;
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};

/// `$select` for [`User`]: the properties the sync maps to extensions.
pub const USER_FIELDS: &[&str] = &[
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
    "accountEnabled",
    "userType",
];

/// `$select` for [`Contact`]: the properties the sync maps to PBX contacts.
pub const CONTACT_FIELDS: &[&str] = &[
    "id",
    "displayName",
    "givenName",
    "surname",
    "companyName",
    "jobTitle",
    "emailAddresses",
    "businessPhones",
    "homePhones",
    "mobilePhone",
    "businessAddress",
    "homeAddress",
    "otherAddress",
    "personalNotes",
    "parentFolderId",
];

/// Graph's `user` resource, as far as the sync uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct User {
    #[serde(deserialize_with = "null_as_default")]
    pub id: ObjectId,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub mail: Option<String>,
    pub mobile_phone: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub business_phones: Vec<String>,
    pub job_title: Option<String>,
    pub department: Option<String>,
    pub office_location: Option<String>,
    pub account_enabled: Option<bool>,
    pub user_type: Option<String>,
    /// Present in delta answers for users that left the result set.
    #[serde(rename = "@removed", skip_serializing_if = "Option::is_none")]
    pub removed: Option<Removed>,
}

/// `@removed` of a delta answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Removed {
    /// `changed` (soft-deleted, restorable for 30 days) or `deleted` (gone for good).
    #[serde(deserialize_with = "null_as_default")]
    pub reason: String,
}

impl Removed {
    /// Permanently deleted in Microsoft 365.
    pub fn is_deleted(&self) -> bool {
        self.reason.eq_ignore_ascii_case("deleted")
    }
}

/// Graph's `contact` resource (Outlook personal contact).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Contact {
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub company_name: Option<String>,
    pub job_title: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub email_addresses: Vec<EmailAddress>,
    #[serde(deserialize_with = "null_as_default")]
    pub business_phones: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub home_phones: Vec<String>,
    pub mobile_phone: Option<String>,
    pub business_address: Option<PhysicalAddress>,
    pub home_address: Option<PhysicalAddress>,
    pub other_address: Option<PhysicalAddress>,
    pub personal_notes: Option<String>,
    /// The folder the contact lives in: for `/users/{id}/contacts` this is the id of the
    /// default Contacts folder, usable in the documented folder-scoped delta URL.
    pub parent_folder_id: Option<String>,
    #[serde(rename = "@removed", skip_serializing_if = "Option::is_none")]
    pub removed: Option<Removed>,
}

/// One of a contact's e-mail addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmailAddress {
    pub name: Option<String>,
    pub address: Option<String>,
}

/// Graph's `physicalAddress`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PhysicalAddress {
    pub street: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub country_or_region: Option<String>,
    pub postal_code: Option<String>,
}

impl PhysicalAddress {
    /// Graph sends all-empty address objects rather than `null`.
    pub fn is_empty(&self) -> bool {
        [
            &self.street,
            &self.city,
            &self.state,
            &self.country_or_region,
            &self.postal_code,
        ]
        .iter()
        .all(|f| f.as_deref().is_none_or(|s| s.trim().is_empty()))
    }
}

/// Metadata of a user's photo (`GET /users/{id}/photo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhotoMeta {
    /// Changes whenever the photo changes: the cheap way to skip unchanged photos.
    #[serde(rename = "@odata.mediaEtag")]
    pub media_etag: Option<String>,
    #[serde(rename = "@odata.mediaContentType")]
    pub media_content_type: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// One page of a collection or delta answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(bound(deserialize = "T: DeserializeOwned"))]
pub struct Page<T> {
    #[serde(default = "Vec::new", deserialize_with = "null_as_default")]
    pub value: Vec<T>,
    /// The next page of this round (absolute URL on the Graph host).
    #[serde(rename = "@odata.nextLink", default)]
    pub next_link: Option<String>,
    /// Last page of a delta round: store it and start the next round from it.
    #[serde(rename = "@odata.deltaLink", default)]
    pub delta_link: Option<String>,
}

/// `null` where a collection or string is expected reads as empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_with_nulls_and_removed() {
        let json = r##"{"value":[
            {"id":"u1","displayName":"Ada","businessPhones":null,"accountEnabled":true,"mail":null},
            {"@odata.type":"#microsoft.graph.user","id":"u2","@removed":{"reason":"deleted"}},
            {"id":"u3","businessPhones":["+1 555"],"userPrincipalName":"c@x","unknown":{"a":1}}
        ],"@odata.deltaLink":"https://graph.microsoft.com/v1.0/users/delta?$deltatoken=x"}"##;
        let page: Page<User> = serde_json::from_str(json).unwrap();
        assert_eq!(page.value.len(), 3);
        assert_eq!(page.value[0].display_name.as_deref(), Some("Ada"));
        assert!(page.value[0].business_phones.is_empty());
        assert_eq!(page.value[0].account_enabled, Some(true));
        assert!(page.value[1].removed.as_ref().unwrap().is_deleted());
        assert_eq!(page.value[2].business_phones, vec!["+1 555".to_string()]);
        assert!(page.next_link.is_none());
        assert!(page.delta_link.unwrap().ends_with("$deltatoken=x"));
    }

    #[test]
    fn contact_and_addresses() {
        let json = r#"{"id":"c1","displayName":"Bob","emailAddresses":[{"name":"Bob","address":"bob@x"}],
            "homePhones":[],"businessAddress":{},"homeAddress":{"city":"Paris","street":""},
            "otherAddress":null,"parentFolderId":"F1"}"#;
        let c: Contact = serde_json::from_str(json).unwrap();
        assert_eq!(c.email_addresses[0].address.as_deref(), Some("bob@x"));
        assert!(c.business_address.as_ref().unwrap().is_empty());
        assert!(!c.home_address.as_ref().unwrap().is_empty());
        assert!(c.other_address.is_none());
        assert_eq!(c.parent_folder_id.as_deref(), Some("F1"));
    }

    #[test]
    fn photo_meta_reads_odata_annotations() {
        let json = r#"{"@odata.context":"x","@odata.mediaContentType":"image/jpeg",
            "@odata.mediaEtag":"\"BA09D118\"","id":"240X240","width":240,"height":240}"#;
        let p: PhotoMeta = serde_json::from_str(json).unwrap();
        assert_eq!(p.media_etag.as_deref(), Some("\"BA09D118\""));
        assert_eq!(p.media_content_type.as_deref(), Some("image/jpeg"));
        assert_eq!((p.width, p.height), (Some(240), Some(240)));
    }

    #[test]
    fn page_without_value_is_empty() {
        let page: Page<User> = serde_json::from_str(r#"{"@odata.nextLink":"n"}"#).unwrap();
        assert!(page.value.is_empty());
        assert_eq!(page.next_link.as_deref(), Some("n"));
    }
}
