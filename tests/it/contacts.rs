//! Contacts against the emulator: personal contacts of in-scope users (first full read,
//! then per-mailbox delta), PBX-side edits overwritten, scopes, shared mailboxes → company
//! contacts, an expired delta token → full compare, and 21Vianet (no contacts delta).

use std::collections::BTreeMap;

use ms365_gateway::ObjectId;
use ms365_gateway::config::Config;
use ms365_gateway::entra::NationalCloud;
use ms365_gateway::settings::{Ms365Settings, SyncType};
use ms365_gateway::store::{ContactBook, ContactFields, PbxUser, PbxUserSource};
use ms365_gateway::sync::context_for_tenant;
use ms365_gateway::sync::{
    ContactOptions, ContactReport, personal_kind, shared_kind, sync_contacts,
};
use ms365_gateway::sync::{SyncContext, SyncOptions, sync_users};
use ms365_stand_ins::emulator::{ContactPatch, NewContact};

use crate::common::acme;
use crate::entra::DIRECTORY;
use crate::sso::{SsoWorld, WorldOptions};

/// The SSO world with its users synced, the context built from `config_name` (the world's
/// configuration passed through `toml_edit`) after `change` was applied to the settings.
async fn world(
    config_name: &str,
    toml_edit: impl FnOnce(String) -> String,
    change: impl FnOnce(&mut Ms365Settings),
) -> (SsoWorld, SyncContext) {
    let w = SsoWorld::new(WorldOptions::default()).await;
    w.settings(|s| {
        s.users.enabled = true;
        change(s);
    })
    .await;
    let toml = std::fs::read_to_string(w.setup.path("gateway.toml")).unwrap();
    let path = w.setup.path(config_name);
    std::fs::write(&path, toml_edit(toml)).unwrap();
    let config = Config::load(&path, Vec::new()).unwrap();
    let ctx = context_for_tenant(&config, &w.store, &w.keyring, &acme())
        .await
        .unwrap();
    sync_users(&ctx, &SyncOptions::default()).await.unwrap();
    (w, ctx)
}

async fn run(ctx: &SyncContext) -> ContactReport {
    sync_contacts(ctx, &ContactOptions::default())
        .await
        .unwrap_or_else(|e| panic!("contacts sync failed: {e}"))
}

async fn synced(w: &SsoWorld) -> Vec<PbxUser> {
    w.store
        .pbx_users(&acme())
        .await
        .unwrap()
        .into_iter()
        .filter(|u| u.enabled && u.source == PbxUserSource::Ms365 && u.ms365_oid.is_some())
        .collect()
}

fn oid(u: &PbxUser) -> String {
    u.ms365_oid.clone().unwrap().into()
}

/// The personal book of `u`: Graph id → name.
async fn book(w: &SsoWorld, u: &PbxUser) -> BTreeMap<String, String> {
    w.store
        .personal_contacts(&acme(), &u.id, None, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.source_id, c.fields.name))
        .collect()
}

/// The emulator's contacts of a mailbox: id → display name.
fn graph_book(w: &SsoWorld, mailbox: &str) -> BTreeMap<String, String> {
    w.emulator
        .emulator
        .contacts(DIRECTORY, mailbox)
        .into_iter()
        .map(|c| (c.id, c.display_name))
        .collect()
}

async fn assert_books_match(w: &SsoWorld, users: &[PbxUser]) {
    for u in users {
        assert_eq!(
            book(w, u).await,
            graph_book(w, &oid(u)),
            "book of {}",
            u.username
        );
    }
}

fn new_contact(name: &str) -> NewContact {
    NewContact {
        display_name: name.into(),
        mobile_phone: Some("+1 555 0100".into()),
        ..Default::default()
    }
}

/// Graph pages a contact delta by 10 unless asked for more: the gateway asks for 200 on
/// every request of the round, batched opening or nextLink alike.
#[tokio::test]
async fn contact_delta_pages_are_asked_two_hundred_at_a_time() {
    let (w, ctx) = world("gateway.toml", |t| t, |_| ()).await;
    w.settings(|s| s.personal_contacts.enabled = true).await;
    let users = synced(&w).await;
    let emu = &w.emulator.emulator;
    let (some, many) = (oid(&users[0]), oid(&users[1]));
    for i in 0..30 {
        emu.add_contact(DIRECTORY, &some, new_contact(&format!("Supplier {i:03}")));
    }
    for i in 0..250 {
        emu.add_contact(DIRECTORY, &many, new_contact(&format!("Customer {i:03}")));
    }

    let before = ctx.graph.stats().by_kind;
    let report = run(&ctx).await;
    let after = ctx.graph.stats().by_kind;
    let sent =
        |kind: &str| after.get(kind).copied().unwrap_or(0) - before.get(kind).copied().unwrap_or(0);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(
        sent("contacts"),
        1,
        "only the mailbox of more than 200 contacts needs a second page"
    );
    assert!(
        graph_book(&w, &many).len() > 200,
        "the premise: one mailbox needs two pages"
    );
    assert_books_match(&w, &users).await;
}

#[tokio::test]
async fn personal_contacts_full_then_delta_and_pbx_edits_overwritten() {
    let (w, ctx) = world("gateway.toml", |t| t, |_| ()).await;
    w.settings(|s| s.personal_contacts.enabled = true).await;
    let users = synced(&w).await;
    assert!(users.len() >= 6, "{} users synced", users.len());
    let emu = &w.emulator.emulator;
    let total: usize = users.iter().map(|u| graph_book(&w, &oid(u)).len()).sum();
    assert!(total > 0);

    let before = ctx.graph.stats().by_kind;
    let first = run(&ctx).await;
    let after = ctx.graph.stats().by_kind;
    let sent =
        |kind: &str| after.get(kind).copied().unwrap_or(0) - before.get(kind).copied().unwrap_or(0);
    assert_eq!(
        sent("batch"),
        users.len().div_ceil(20) as u64,
        "round openings go twenty mailboxes to a $batch"
    );
    assert_eq!(sent("contacts"), 0, "every mailbox fits its first page");
    assert!(first.skipped.is_empty(), "{:?}", first.skipped);
    assert_eq!(first.personal_mailboxes, users.len());
    assert_eq!(first.full_listings, users.len());
    assert_eq!((first.created, first.updated, first.removed), (total, 0, 0));
    assert_books_match(&w, &users).await;
    for u in &users {
        assert!(
            w.store
                .sync_cursor(&acme(), &personal_kind(&oid(u)))
                .await
                .unwrap()
                .is_some()
        );
    }

    // Nothing changed: delta rounds only, nothing written.
    let quiet = run(&ctx).await;
    assert_eq!(quiet.full_listings, 0, "{quiet:?}");
    assert_eq!((quiet.created, quiet.updated, quiet.removed), (0, 0, 0));

    // One add, one update, one delete in three mailboxes: exactly that is applied.
    let (a, b, c) = (&users[0], &users[1], &users[2]);
    let added = emu.add_contact(DIRECTORY, &oid(a), new_contact("Zed Added"));
    let b_id = graph_book(&w, &oid(b)).into_keys().next().unwrap();
    emu.update_contact(
        DIRECTORY,
        &oid(b),
        &b_id,
        ContactPatch {
            display_name: Some("Renamed Contact".into()),
            ..Default::default()
        },
    );
    let c_id = graph_book(&w, &oid(c)).into_keys().next().unwrap();
    emu.delete_contact(DIRECTORY, &oid(c), &c_id);
    let delta = run(&ctx).await;
    assert_eq!(delta.full_listings, 0, "{delta:?}");
    assert_eq!(
        (delta.created, delta.updated, delta.removed),
        (1, 1, 1),
        "{delta:?}"
    );
    assert_eq!(
        book(&w, a).await.get(&added.id).map(String::as_str),
        Some("Zed Added")
    );
    assert_eq!(book(&w, b).await[&b_id], "Renamed Contact");
    assert!(!book(&w, c).await.contains_key(&c_id));
    assert_books_match(&w, &users).await;

    // A PBX-side edit is overwritten when the contact changes in Microsoft 365.
    let owner = ContactBook::Personal(a.id.clone());
    let edited = ContactFields {
        name: "Edited on the PBX".into(),
        ..Default::default()
    };
    w.store
        .upsert_contacts(&acme(), &owner, &[(added.id.clone(), edited.clone())])
        .await
        .unwrap();
    emu.update_contact(
        DIRECTORY,
        &oid(a),
        &added.id,
        ContactPatch {
            job_title: Some(Some("Engineer".into())),
            ..Default::default()
        },
    );
    let over = run(&ctx).await;
    assert_eq!(over.updated, 1, "{over:?}");
    let stored = w
        .store
        .personal_contacts(&acme(), &a.id, Some("zed"), 10)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].fields.name, "Zed Added");
    assert_eq!(stored[0].fields.title, "Engineer");
    assert_eq!(stored[0].fields.mobile_phone, "+1 555 0100");

    // Expired delta tokens: a full compare, which also overwrites PBX-side edits and drops
    // contacts that exist only on the PBX.
    w.store
        .upsert_contacts(
            &acme(),
            &owner,
            &[
                (added.id.clone(), edited),
                ("pbx-only".into(), ContactFields::default()),
            ],
        )
        .await
        .unwrap();
    let d_id = graph_book(&w, &oid(b)).into_keys().last().unwrap();
    emu.delete_contact(DIRECTORY, &oid(b), &d_id);
    emu.expire_delta_tokens(DIRECTORY);
    let full = run(&ctx).await;
    assert!(full.skipped.is_empty(), "{:?}", full.skipped);
    assert_eq!(full.full_listings, users.len(), "{full:?}");
    assert_eq!(
        (full.created, full.updated, full.removed),
        (0, 1, 2),
        "{full:?}"
    );
    assert_books_match(&w, &users).await;
    let after = run(&ctx).await;
    assert_eq!(after.full_listings, 0, "delta again after the full compare");

    // A mailbox Graph fails for is skipped with the reason, and its contacts stay.
    let d = &users[3];
    let kept = book(&w, d).await;
    assert!(!kept.is_empty());
    emu.hard_delete_user(DIRECTORY, &oid(d));
    let failed = run(&ctx).await;
    assert_eq!(failed.skipped.len(), 1, "{failed:?}");
    assert_eq!(failed.skipped[0].mailbox, oid(d));
    assert!(failed.skipped[0].reason.contains("Graph"), "{failed:?}");
    assert_eq!(failed.removed, 0);
    assert_eq!(book(&w, d).await, kept);
}

#[tokio::test]
async fn scopes_and_shared_mailboxes() {
    let (w, ctx) = world("gateway.toml", |t| t, |_| ()).await;
    let users = synced(&w).await;
    let emu = &w.emulator.emulator;
    let shared = emu
        .users(DIRECTORY)
        .into_iter()
        .find(|u| u.display_name == "Company Contacts")
        .expect("the seed has a shared mailbox");
    let excluded = &users[0];
    let upn = w
        .store
        .directory_user(&acme(), &ObjectId::new(oid(excluded)))
        .await
        .unwrap()
        .unwrap()
        .upn;
    w.settings(|s| {
        s.personal_contacts.enabled = true;
        s.personal_contacts.sync_type = SyncType::Exclude;
        s.personal_contacts.selected_users = vec![upn.to_uppercase()];
        s.shared_mailbox.enabled = true;
        s.shared_mailbox.selected_users = vec![shared.user_principal_name.clone()];
    })
    .await;
    let first = run(&ctx).await;
    assert!(first.skipped.is_empty(), "{:?}", first.skipped);
    assert_eq!(first.personal_mailboxes, users.len() - 1);
    assert_eq!(first.shared_mailboxes, 1);
    assert!(
        book(&w, excluded).await.is_empty(),
        "EXCLUDE leaves the user out"
    );
    assert_books_match(&w, &users[1..]).await;
    let company: BTreeMap<String, String> = w
        .store
        .company_contacts(&acme(), None, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.source_id, c.fields.name))
        .collect();
    assert_eq!(company, graph_book(&w, &shared.id));
    assert!(!company.is_empty());

    // A contact added to the shared mailbox arrives by delta.
    let added = emu.add_contact(DIRECTORY, &shared.id, new_contact("Front Desk"));
    let delta = run(&ctx).await;
    assert_eq!((delta.created, delta.full_listings), (1, 0), "{delta:?}");
    let found = w
        .store
        .company_contacts(&acme(), Some("front"), 10)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].source_id, added.id);
    assert_eq!(found[0].owner, shared.id);

    // An unknown shared mailbox is skipped and removes nothing.
    w.settings(|s| {
        s.shared_mailbox
            .selected_users
            .push("nobody@contoso.onmicrosoft.com".into())
    })
    .await;
    let unknown = run(&ctx).await;
    assert_eq!(unknown.skipped.len(), 1, "{unknown:?}");
    assert_eq!(unknown.skipped[0].mailbox, "nobody@contoso.onmicrosoft.com");
    assert_eq!(
        w.store
            .company_contacts(&acme(), None, 10_000)
            .await
            .unwrap()
            .len(),
        company.len() + 1
    );

    // INCLUDE only the formerly excluded user; shared mailboxes off: other books go.
    w.settings(|s| {
        s.personal_contacts.sync_type = SyncType::Include;
        s.shared_mailbox.enabled = false;
    })
    .await;
    let include = run(&ctx).await;
    assert_eq!(include.personal_mailboxes, 1, "{include:?}");
    assert_books_match(&w, std::slice::from_ref(excluded)).await;
    for u in &users[1..] {
        assert!(book(&w, u).await.is_empty());
        assert!(
            w.store
                .sync_cursor(&acme(), &personal_kind(&oid(u)))
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(
        w.store
            .company_contacts(&acme(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        w.store
            .sync_cursor(&acme(), &shared_kind(&shared.id))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn china_lists_in_full_and_compares() {
    let (w, ctx) = world(
        "gateway-china.toml",
        |t| t.replace("[clouds.GLOBAL]", "[clouds.CHINA]"),
        |s| {
            s.national_cloud = NationalCloud::China;
            s.personal_contacts.enabled = true;
        },
    )
    .await;
    assert_eq!(ctx.graph.cloud(), NationalCloud::China);
    let users = synced(&w).await;
    assert!(!users.is_empty());
    let first = run(&ctx).await;
    assert!(first.skipped.is_empty(), "{:?}", first.skipped);
    assert_eq!(first.full_listings, users.len());
    assert_books_match(&w, &users).await;
    let a = &users[0];
    assert!(
        w.store
            .sync_cursor(&acme(), &personal_kind(&oid(a)))
            .await
            .unwrap()
            .is_none()
    );

    let emu = &w.emulator.emulator;
    let gone = graph_book(&w, &oid(a)).into_keys().next().unwrap();
    emu.delete_contact(DIRECTORY, &oid(a), &gone);
    emu.add_contact(DIRECTORY, &oid(a), new_contact("New In China"));
    let second = run(&ctx).await;
    assert_eq!(second.full_listings, users.len());
    assert_eq!(
        (second.created, second.updated, second.removed),
        (1, 0, 1),
        "{second:?}"
    );
    assert_books_match(&w, &users).await;
}
