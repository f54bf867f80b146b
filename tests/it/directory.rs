//! The directory read API for signed-in users: who am I, and the tenant's extensions.

use http::StatusCode;
use ms365_gateway::sync::{SyncOptions, context_for_tenant, sync_users};
use ms365_gateway::{Config, ObjectId};

use crate::common::acme;
use crate::sso::{SsoWorld, WorldOptions};

#[tokio::test]
async fn signed_in_users_see_themselves_and_their_tenants_extensions() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    w.settings(|s| s.users.enabled = true).await;
    let config = Config::load(&w.setup.path("gateway.toml"), Vec::new()).unwrap();
    let ctx = context_for_tenant(&config, &w.store, &w.keyring, &acme())
        .await
        .unwrap();
    sync_users(&ctx, &SyncOptions::default()).await.unwrap();
    let b = w.browser();
    assert_eq!(
        b.get("https://pbx.test/ms365/directory/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    b.login("https://pbx.test/ms365/login?domain=acme.test", &w.user.1)
        .await;
    let me = b.get("https://pbx.test/ms365/directory/me").await.json();
    let mine = w
        .store
        .pbx_user_by_oid(&acme(), &ObjectId::new(&w.user.0))
        .await
        .unwrap()
        .expect("synced");
    assert_eq!(me["extension_number"], mine.extension_number.as_str());
    assert_eq!(me["domain"], "acme.test");
    assert_eq!(me["avatar_file_url"], format!("/ms365/photos/{}", mine.id));
    let all = b.get("https://pbx.test/ms365/directory/users").await.json();
    let enabled = w
        .store
        .pbx_users(&acme())
        .await
        .unwrap()
        .into_iter()
        .filter(|u| u.enabled)
        .count();
    assert_eq!(all["items"].as_array().unwrap().len(), enabled);
    let needle = mine.profile.display_name.to_uppercase();
    let found = b
        .get(&format!(
            "https://pbx.test/ms365/directory/users?q={}",
            crate::sso::urlencode(&needle)
        ))
        .await
        .json();
    let items = found["items"].as_array().unwrap();
    assert!(
        items.iter().any(|u| u["id"] == mine.id.as_str()),
        "case-insensitive search: {found}"
    );
    assert!(items.len() < enabled, "the search narrows the list");
    let none = b
        .get("https://pbx.test/ms365/directory/users?q=zzzz-no-such-user")
        .await
        .json();
    assert!(none["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn signed_in_users_search_their_personal_and_the_company_contacts() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let mailbox = w
        .emulator
        .emulator
        .users(crate::entra::DIRECTORY)
        .into_iter()
        .find(|u| {
            u.user_principal_name.contains("shared") || (!u.account_enabled && u.mail.is_some())
        })
        .map(|u| u.user_principal_name);
    w.settings(|s| {
        s.users.enabled = true;
        s.personal_contacts.enabled = true;
        if let Some(m) = mailbox.clone() {
            s.shared_mailbox.enabled = true;
            s.shared_mailbox.selected_users = vec![m];
        }
    })
    .await;
    let config = Config::load(&w.setup.path("gateway.toml"), Vec::new()).unwrap();
    let ctx = context_for_tenant(&config, &w.store, &w.keyring, &acme())
        .await
        .unwrap();
    sync_users(&ctx, &SyncOptions::default()).await.unwrap();
    let options = ms365_gateway::sync::ContactOptions::default();
    ms365_gateway::sync::sync_contacts(&ctx, &options)
        .await
        .unwrap();
    let b = w.browser();
    assert_eq!(
        b.get("https://pbx.test/ms365/directory/contacts")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    b.login("https://pbx.test/ms365/login?domain=acme.test", &w.user.1)
        .await;
    let mine = w
        .store
        .pbx_user_by_oid(&acme(), &ObjectId::new(&w.user.0))
        .await
        .unwrap()
        .unwrap();
    let personal = w
        .store
        .personal_contacts(&acme(), &mine.id, None, 1000)
        .await
        .unwrap();
    let company = w.store.company_contacts(&acme(), None, 1000).await.unwrap();
    assert!(!personal.is_empty(), "the user has synced contacts");
    let all = b
        .get("https://pbx.test/ms365/directory/contacts")
        .await
        .json();
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), personal.len() + company.len());
    assert!(
        items
            .iter()
            .all(|c| c["kind"] == "personal" || c["kind"] == "company")
    );
    let others = items
        .iter()
        .filter(|c| c["kind"] == "personal")
        .all(|c| c["owner"] == mine.id.as_str());
    assert!(others, "only the user's own personal contacts");
    let needle = personal[0].fields.name.clone();
    let found = b
        .get(&format!(
            "https://pbx.test/ms365/directory/contacts?q={}",
            crate::sso::urlencode(&needle)
        ))
        .await
        .json();
    assert!(
        found["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == needle.as_str()),
        "{found}"
    );
}
