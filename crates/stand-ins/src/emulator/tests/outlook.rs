//! Outlook side: photo metadata and bytes, the 404 for users without a photo, contacts
//! paging and fields, contacts delta on both paths with additions, edits and deletions.

use std::collections::HashSet;

use serde_json::Value;

use super::{ALL_PERMISSIONS, Fixture, TENANT, spec};
use crate::emulator::{ContactPatch, EmailAddress, NewContact, TenantSpec};

/// `(user with a photo, its metadata)` and the 404 body of a user without one.
async fn photo_survey(fx: &Fixture, token: &str) -> ((String, Value), Value) {
    let (mut with_photo, mut without_photo) = (None, None);
    for user in fx.emu().users(TENANT) {
        let (status, body) = fx
            .get_json(token, &format!("/v1.0/users/{}/photo", user.id))
            .await;
        match status {
            200 => with_photo = Some((user.id, body)),
            404 => without_photo = Some(body),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    (
        with_photo.expect("some users have photos"),
        without_photo.expect("some have none"),
    )
}

#[tokio::test]
async fn photo_metadata_and_bytes() {
    let fx = Fixture::new(spec(20), ALL_PERMISSIONS).await;
    let token = fx.app_token().await;
    let ((id, meta), missing) = photo_survey(&fx, &token).await;
    assert_eq!(missing["error"]["code"], "ImageNotFound");
    let message = "Exception of type 'Microsoft.Fast.Profile.Core.Exception.ImageNotFoundException' was thrown.";
    assert_eq!(missing["error"]["message"], message);
    assert_eq!(meta["@odata.mediaContentType"], "image/jpeg");
    assert_eq!(
        (meta["width"].as_u64(), meta["height"].as_u64()),
        (Some(240), Some(240))
    );
    assert_eq!(meta["id"], "240X240");
    let etag = meta["@odata.mediaEtag"].as_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    let response = fx
        .get(&token, &format!("/v1.0/users/{id}/photo/$value"))
        .await;
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(&bytes[..3], &[0xFF, 0xD8, 0xFF]);
    assert_eq!(&bytes[bytes.len() - 2..], &[0xFF, 0xD9]);
}

#[tokio::test]
async fn photo_changes_move_the_etag() {
    let fx = Fixture::new(spec(20), ALL_PERMISSIONS).await;
    let token = fx.app_token().await;
    let ((id, meta), _) = photo_survey(&fx, &token).await;
    let photo = crate::emulator::seed::jpeg("replaced");
    fx.emu().set_photo(TENANT, &id, Some(photo));
    let (_, changed) = fx
        .get_json(&token, &format!("/v1.0/users/{id}/photo"))
        .await;
    assert_ne!(changed["@odata.mediaEtag"], meta["@odata.mediaEtag"]);
    fx.emu().set_photo(TENANT, &id, None);
    let response = fx
        .get(&token, &format!("/v1.0/users/{id}/photo/$value"))
        .await;
    assert_eq!(response.status(), 404);
}

fn contacts_spec() -> TenantSpec {
    TenantSpec {
        contacts_per_user: 25,
        ..spec(4)
    }
}

const CONTACT_FIELDS: &[&str] = &[
    "displayName",
    "emailAddresses",
    "businessPhones",
    "homePhones",
    "businessAddress",
    "homeAddress",
    "changeKey",
    "lastModifiedDateTime",
    "parentFolderId",
];

#[tokio::test]
async fn contacts_page_with_fields() {
    let fx = Fixture::new(contacts_spec(), ALL_PERMISSIONS).await;
    let token = fx.app_token().await;
    let owner = fx.emu().users(TENANT).remove(0);
    let mut url = Some(format!(
        "/v1.0/users/{}/contacts?$top=10",
        owner.user_principal_name
    ));
    let (mut pages, mut ids) = (0, HashSet::new());
    while let Some(next) = url {
        let (status, body) = fx.get_json(&token, &next).await;
        assert_eq!(status, 200, "{body}");
        for c in body["value"].as_array().unwrap() {
            ids.insert(c["id"].as_str().unwrap().to_string());
            assert!(CONTACT_FIELDS.iter().all(|f| c.get(*f).is_some()), "{c}");
        }
        pages += 1;
        url = body["@odata.nextLink"].as_str().map(str::to_string);
    }
    assert_eq!((pages, ids.len()), (3, 25));
    let path = format!(
        "/v1.0/users/{}/contacts?$select=displayName&$top=2",
        owner.id
    );
    let (_, selected) = fx.get_json(&token, &path).await;
    let keys: HashSet<&str> = selected["value"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, HashSet::from(["id", "displayName"]));
}

#[tokio::test]
async fn shared_mailboxes_have_contacts_guests_have_no_mailbox() {
    let fx = Fixture::new(contacts_spec(), ALL_PERMISSIONS).await;
    let token = fx.app_token().await;
    let users = fx.emu().users(TENANT);
    let shared = users
        .iter()
        .find(|u| !u.account_enabled && u.given_name.is_none())
        .unwrap();
    let (status, body) = fx
        .get_json(&token, &format!("/v1.0/users/{}/contacts", shared.id))
        .await;
    assert_eq!(
        (status, body["value"].as_array().map(Vec::len)),
        (200, Some(10))
    );
    let guest = users.iter().find(|u| u.user_type == "Guest").unwrap();
    let (status, body) = fx
        .get_json(&token, &format!("/v1.0/users/{}/contacts", guest.id))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("MailboxNotEnabledForRESTAPI"))
    );
}

async fn round(fx: &Fixture, token: &str, start: &str) -> (Vec<Value>, String) {
    let (mut url, mut items) = (start.to_string(), Vec::new());
    loop {
        let (status, body) = fx.get_json(token, &url).await;
        assert_eq!(status, 200, "{body}");
        items.extend(body["value"].as_array().unwrap().iter().cloned());
        if let Some(next) = body["@odata.nextLink"].as_str() {
            url = next.to_string();
        } else {
            return (
                items,
                body["@odata.deltaLink"].as_str().unwrap().to_string(),
            );
        }
    }
}

#[tokio::test]
async fn contacts_delta_on_both_paths() {
    let fx = Fixture::new(contacts_spec(), ALL_PERMISSIONS).await;
    let (emu, token) = (fx.emu(), fx.app_token().await);
    let owner = emu.users(TENANT)[1].id.clone();
    let folder_path = format!("/v1.0/users/{owner}/contactFolders/contacts/contacts/delta");
    let (first, link) = round(&fx, &token, &folder_path).await;
    assert_eq!(first.len(), 25);
    assert!(link.contains("/contactFolders/contacts/contacts/delta?$deltatoken="));
    let (short, short_link) =
        round(&fx, &token, &format!("/v1.0/users/{owner}/contacts/delta")).await;
    assert_eq!(short.len(), 25);

    let existing = emu.contacts(TENANT, &owner);
    let added = emu.add_contact(
        TENANT,
        &owner,
        NewContact {
            display_name: "Ada Lovelace".into(),
            email_addresses: vec![EmailAddress {
                name: "Ada".into(),
                address: "ada@example.com".into(),
            }],
            ..Default::default()
        },
    );
    emu.update_contact(
        TENANT,
        &owner,
        &existing[0].id,
        ContactPatch {
            company_name: Some(Some("Contoso".into())),
            ..Default::default()
        },
    );
    emu.delete_contact(TENANT, &owner, &existing[1].id);
    for start in [link, short_link] {
        let (changes, _) = round(&fx, &token, &start).await;
        assert_eq!(changes.len(), 3, "{changes:?}");
        let find = |id: &str| changes.iter().find(|c| c["id"] == id).unwrap().clone();
        assert_eq!(find(&added.id)["displayName"], "Ada Lovelace");
        assert_eq!(find(&existing[0].id)["companyName"], "Contoso");
        assert_eq!(find(&existing[1].id)["@removed"]["reason"], "deleted");
    }
    assert_eq!(emu.contacts(TENANT, &owner).len(), 25);
    let (status, _) = fx
        .get_json(
            &token,
            &format!("/v1.0/users/{owner}/contactFolders/AQMkAnotAFolder/contacts/delta"),
        )
        .await;
    assert_eq!(status, 404);
}
