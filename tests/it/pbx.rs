//! The PBX connector end to end: the Microsoft 365 emulator, the sync's phases, the
//! PortSIP REST client and the PortSIP stand-in (which validates every request against the
//! published OpenAPI document), all over real sockets. A first run creates exactly the
//! users in scope with unique numbers and binds them; local PBX users keep their numbers
//! and are adopted when they match; changes, disables and deletions propagate; a user
//! deleted on the PBX comes back with its number; company contacts follow the shared
//! mailbox; faults converge; a killed run leaves no duplicate; a wrong password fails the
//! run in plain words and changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ms365_gateway::ObjectId;
use ms365_gateway::config::{PbxLogin, PbxSecret};
use ms365_gateway::pbx::PbxClient;
use ms365_gateway::store::RunStatus;
use ms365_gateway::sync::LISTED_KIND;
use ms365_gateway::sync::PbxTarget;
use ms365_gateway::sync::{RunSummary, SyncContext, SyncOptions, run_phases};
use ms365_stand_ins::emulator::{TenantSpec, UserPatch};
use ms365_stand_ins::portsip_emulator::{
    LocalUserSpec, PbxEmulator, PbxEmulatorConfig, PbxFaults, PbxTenantSpec, RunningPbxEmulator,
};
use serde_json::Value;

use crate::common::acme;
use crate::entra::tenant_spec;
use crate::sync::{World, default_scope, regular};

pub(crate) const DOMAIN: &str = "acme.pbx.test";
const ADMIN: &str = "acme-admin";
const PASSWORD: &str = "correct horse battery staple";

/// The sync world plus a PortSIP stand-in for tenant `acme`.
pub(crate) struct PbxWorld {
    pub(crate) w: World,
    pbx: RunningPbxEmulator,
    password: String,
}

impl PbxWorld {
    pub(crate) async fn new(spec: TenantSpec, local_users: Vec<LocalUserSpec>) -> PbxWorld {
        let w = World::new(spec).await;
        let pbx = PbxEmulator::new(PbxEmulatorConfig {
            seed: 3,
            tenants: vec![PbxTenantSpec {
                domain: DOMAIN.into(),
                admin_username: ADMIN.into(),
                admin_password: PASSWORD.into(),
                local_users,
            }],
        })
        .start()
        .await
        .unwrap();
        PbxWorld {
            w,
            pbx,
            password: PASSWORD.into(),
        }
    }

    pub(crate) fn emu(&self) -> &PbxEmulator {
        &self.pbx.emulator
    }

    fn client(&self) -> PbxClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(800))
            .build()
            .unwrap();
        let login = PbxLogin {
            username: ADMIN.into(),
            password: PbxSecret::new(self.password.clone()),
        };
        PbxClient::with_http(
            http,
            self.pbx.api_url.parse().unwrap(),
            login,
            DOMAIN.into(),
            8,
        )
    }

    pub(crate) fn ctx(&self) -> SyncContext {
        SyncContext {
            pbx: Some(PbxTarget {
                client: self.client(),
                keyring: self.w.keyring.clone(),
            }),
            ..self.w.ctx()
        }
    }

    async fn run(&self) -> RunSummary {
        self.run_with(SyncOptions::default()).await
    }

    pub(crate) async fn run_with(&self, opts: SyncOptions) -> RunSummary {
        run_phases(&self.ctx(), opts)
            .await
            .unwrap_or_else(|e| panic!("the run could not start: {e}"))
    }

    pub(crate) async fn run_ok(&self) -> RunSummary {
        let summary = self.run().await;
        assert_eq!(summary.users.status, RunStatus::Succeeded, "{summary:#?}");
        summary
    }

    /// The stand-in's users of the tenant, by username.
    pub(crate) fn pbx_users(&self) -> BTreeMap<String, Value> {
        (self.emu().users(DOMAIN).into_iter())
            .map(|u| (field(&u, "name").to_string(), u))
            .collect()
    }

    /// Every request the gateway sent passed the OpenAPI validation.
    pub(crate) fn assert_no_rejections(&self) {
        let stats = self.emu().stats();
        assert!(
            stats.schema_rejections.is_empty(),
            "rejected by the schema: {:?}",
            stats.schema_rejections
        );
    }

    /// The record's synced users: (username, extension, oid).
    async fn record(&self) -> BTreeSet<(String, String, String)> {
        (self.w.store.pbx_users(&acme()).await.unwrap())
            .into_iter()
            .filter_map(|u| Some((u.username, u.extension_number, u.ms365_oid?.into())))
            .collect()
    }

    /// The PBX matches the record: every synced user exists once, with its number, bound.
    pub(crate) async fn assert_pbx_matches_record(&self) {
        let pbx = self.pbx_users();
        for (name, ext, oid) in self.record().await {
            let u = pbx
                .get(&name)
                .unwrap_or_else(|| panic!("{name} is missing on the PBX"));
            assert_eq!(field(u, "extension_number"), ext, "{name}");
            assert_eq!(field(u, "ms365_binding"), oid, "{name}");
        }
        let numbers: BTreeSet<&str> = pbx.values().map(|u| field(u, "extension_number")).collect();
        assert_eq!(numbers.len(), pbx.len(), "no number twice on the PBX");
    }
}

pub(crate) fn field<'a>(u: &'a Value, key: &str) -> &'a str {
    u.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn small() -> TenantSpec {
    TenantSpec {
        users: 12,
        contacts_per_user: 0,
        photo_share: 0.0,
        ..tenant_spec()
    }
}

#[tokio::test]
async fn a_first_run_creates_and_binds_the_users_in_scope_and_a_quiet_run_sends_nothing() {
    let pw = PbxWorld::new(small(), Vec::new()).await;
    let summary = pw.run_ok().await;
    let expected = default_scope(pw.w.em());
    let pbx = pw.pbx_users();
    assert_eq!(pbx.len(), expected.len(), "{:?}", pbx.keys());
    let bound: BTreeSet<String> = pbx
        .values()
        .map(|u| field(u, "ms365_binding").to_ascii_lowercase())
        .collect();
    let expected_lower: BTreeSet<String> =
        expected.iter().map(|o| o.to_ascii_lowercase()).collect();
    assert_eq!(bound, expected_lower);
    pw.assert_pbx_matches_record().await;
    let report = summary.pbx.as_ref().expect("the PBX phase ran");
    assert_eq!(report.users.created as usize, expected.len());
    assert!(
        report.requests <= 2 * expected.len() as u64 + 4,
        "{} requests for {} users",
        report.requests,
        expected.len()
    );
    let run =
        pw.w.store
            .sync_run(&summary.users.run_id)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(run.counts["pbx"].created as usize, expected.len());
    assert!(run.pbx_requests >= report.requests);
    // A disabled Microsoft user is created disabled.
    let disabled = pbx
        .values()
        .filter(|u| u["enabled"] == Value::Bool(false))
        .count();
    assert!(disabled >= 1, "the seed has a disabled member");

    pw.emu().reset_stats();
    let quiet = pw.run_ok().await;
    let report = quiet.pbx.as_ref().unwrap();
    assert_eq!(report.users, Default::default(), "{report:?}");
    let stats = pw.emu().stats();
    let writes: u64 = (stats.requests.iter())
        .filter(|(op, _)| op.starts_with("POST") && op.as_str() != "POST /login")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        writes, 0,
        "a run with no change writes nothing: {:?}",
        stats.requests
    );
    assert!(stats.total_requests <= 3, "{:?}", stats.requests);
    pw.assert_no_rejections();
}

#[tokio::test]
async fn local_pbx_users_keep_their_numbers_and_a_matching_one_is_adopted() {
    let spec = small();
    // Which Microsoft user will match is only known once the emulator is seeded: a first
    // world tells, a second one (same seed) has the PBX user ready before the first run.
    let probe = World::new(spec.clone()).await;
    let person = regular(probe.em())[0].clone();
    drop(probe);
    let local_name = person
        .user_principal_name
        .split('@')
        .next()
        .unwrap()
        .to_string();
    let locals = vec![
        LocalUserSpec {
            name: "reception".into(),
            extension_number: "1000".into(),
            email: None,
            display_name: "Front Desk".into(),
            password: "Local-Secret-1".into(),
        },
        LocalUserSpec {
            name: local_name.clone(),
            extension_number: "1234".into(),
            email: None,
            display_name: "Set by the PBX admin".into(),
            password: "Local-Secret-2".into(),
        },
    ];
    let pw = PbxWorld::new(spec, locals).await;
    assert_eq!(pw.w.em().users(crate::entra::DIRECTORY)[0].id, person.id);
    let summary = pw.run_ok().await;
    let pbx = pw.pbx_users();
    let reception = &pbx["reception"];
    assert_eq!(field(reception, "extension_number"), "1000");
    assert_eq!(field(reception, "ms365_binding"), "");
    let adopted = &pbx[&local_name];
    assert_eq!(
        field(adopted, "extension_number"),
        "1234",
        "the number stays"
    );
    assert_eq!(field(adopted, "display_name"), "Set by the PBX admin");
    assert_eq!(
        field(adopted, "ms365_binding").to_ascii_lowercase(),
        person.id.to_ascii_lowercase()
    );
    let twins = pbx.keys().filter(|n| n.starts_with(&local_name)).count();
    assert_eq!(twins, 1, "adopted, not duplicated: {:?}", pbx.keys());
    assert_eq!(summary.users.counts["users"].adopted, 1);
    let entry =
        pw.w.store
            .directory_user(&acme(), &ObjectId::new(&person.id))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(entry.source, "adopted");
    assert_eq!(entry.extension.as_deref(), Some("1234"));
    assert!(
        (pw.record().await.iter()).all(|(_, ext, _)| ext != "1000" && ext != "1234"),
        "numbers held on the PBX are never given away"
    );
    pw.assert_pbx_matches_record().await;
    pw.assert_no_rejections();
}

#[tokio::test]
async fn changes_disables_and_deletions_reach_the_pbx() {
    let pw = PbxWorld::new(small(), Vec::new()).await;
    pw.run_ok().await;
    let people = regular(pw.w.em());
    let (renamed, disabled, deleted) = (&people[1], &people[2], &people[3]);
    let em = pw.w.em();
    em.update_user(
        crate::entra::DIRECTORY,
        &renamed.id,
        UserPatch {
            display_name: Some("Renamed Person".into()),
            ..UserPatch::default()
        },
    );
    em.update_user(
        crate::entra::DIRECTORY,
        &disabled.id,
        UserPatch {
            account_enabled: Some(false),
            ..UserPatch::default()
        },
    );
    em.delete_user(crate::entra::DIRECTORY, &deleted.id);
    let opts = SyncOptions {
        delete_after: Some(Duration::ZERO),
        ..SyncOptions::default()
    };
    let summary = pw.run_with(opts.clone()).await;
    assert_eq!(summary.users.status, RunStatus::Succeeded, "{summary:#?}");
    let by_oid = |oid: &str| {
        pw.pbx_users()
            .into_values()
            .find(|u| field(u, "ms365_binding").eq_ignore_ascii_case(oid))
    };
    let u = by_oid(&renamed.id).expect("renamed user");
    assert_eq!(field(&u, "display_name"), "Renamed Person");
    let u = by_oid(&disabled.id).expect("disabled user");
    assert_eq!(u["enabled"], Value::Bool(false));
    // Disabled first; destroyed once the grace period is over (the next run here).
    pw.run_with(opts).await;
    assert!(
        by_oid(&deleted.id).is_none(),
        "destroyed after the grace period"
    );
    pw.assert_pbx_matches_record().await;
    pw.assert_no_rejections();
}

#[tokio::test]
async fn a_user_deleted_on_the_pbx_comes_back_with_its_number_and_drift_is_repaired() {
    let pw = PbxWorld::new(small(), Vec::new()).await;
    pw.run_ok().await;
    let before = pw.pbx_users();
    let (name, victim) = before.iter().nth(2).unwrap();
    let ext = field(victim, "extension_number").to_string();
    assert!(pw.emu().delete_user(DOMAIN, field(victim, "id")));
    let summary = pw.run_ok().await;
    let after = pw.pbx_users();
    assert_eq!(field(&after[name], "extension_number"), ext, "same number");
    assert_eq!(summary.pbx.as_ref().unwrap().users.created, 1);
    // A hand edit does not change the count: it is repaired at the daily listing.
    let (edited_name, edited) = after.iter().nth(4).unwrap();
    let edit = serde_json::json!({"display_name": "Changed by hand"});
    pw.emu()
        .edit_user(DOMAIN, field(edited, "id"), edit)
        .unwrap();
    pw.run_ok().await;
    let kept = &pw.pbx_users()[edited_name];
    assert_eq!(field(kept, "display_name"), "Changed by hand");
    pw.w.store
        .clear_sync_cursor(&acme(), LISTED_KIND)
        .await
        .unwrap();
    pw.run_ok().await;
    let repaired = &pw.pbx_users()[edited_name];
    assert_eq!(
        field(repaired, "display_name"),
        field(edited, "display_name")
    );
    pw.assert_pbx_matches_record().await;
    pw.assert_no_rejections();
}

#[tokio::test]
async fn company_contacts_follow_the_shared_mailbox() {
    let spec = TenantSpec {
        contacts_per_user: 4,
        ..small()
    };
    let pw = PbxWorld::new(spec, Vec::new()).await;
    let shared = (pw.w.em().users(crate::entra::DIRECTORY).into_iter())
        .find(|u| u.given_name.is_none() && !u.account_enabled)
        .expect("a shared mailbox");
    let mut settings = pw.w.store.ms365_settings(&acme()).await.unwrap();
    settings.shared_mailbox.enabled = true;
    settings.shared_mailbox.selected_users = vec![shared.user_principal_name.clone()];
    pw.w.store
        .save_ms365_settings(&acme(), &settings)
        .await
        .unwrap();
    pw.run_ok().await;
    let stored =
        pw.w.store
            .company_contacts(&acme(), None, 1000)
            .await
            .unwrap();
    assert_eq!(stored.len(), 4);
    let names = |contacts: Vec<Value>| -> BTreeSet<String> {
        contacts
            .iter()
            .map(|c| field(c, "name").to_string())
            .collect()
    };
    let expected: BTreeSet<String> = stored.iter().map(|c| c.fields.name.clone()).collect();
    assert_eq!(names(pw.emu().contacts(DOMAIN)), expected);
    // The mailbox leaves the selection: the gateway's company contacts go, and only those.
    pw.emu()
        .add_contact(DOMAIN, serde_json::json!({"name": "Added on the PBX"}))
        .unwrap();
    settings.shared_mailbox.selected_users.clear();
    pw.w.store
        .save_ms365_settings(&acme(), &settings)
        .await
        .unwrap();
    pw.run_ok().await;
    assert_eq!(
        names(pw.emu().contacts(DOMAIN)),
        BTreeSet::from(["Added on the PBX".to_string()])
    );
    pw.assert_no_rejections();
}

#[tokio::test]
async fn runs_under_pbx_faults_converge_to_the_clean_state() {
    let pw = PbxWorld::new(small(), Vec::new()).await;
    pw.emu().set_faults(PbxFaults {
        error_rate: 0.2,
        timeout_rate: 0.05,
        timeout_delay_ms: 2_000,
        ..PbxFaults::default()
    });
    let mut converged = false;
    for _ in 0..8 {
        let summary = pw.run().await;
        let clean = summary.pbx.as_ref().is_some_and(|r| r.errors.is_empty())
            && summary.users.status == RunStatus::Succeeded;
        if clean {
            converged = true;
            break;
        }
    }
    assert!(
        converged,
        "eight runs under 20 % 5xx and 5 % timeouts converge"
    );
    assert!(pw.emu().stats().faults_injected > 0, "faults were injected");
    pw.emu().set_faults(PbxFaults::default());
    let expected = default_scope(pw.w.em());
    assert_eq!(
        pw.pbx_users().len(),
        expected.len(),
        "no duplicate, nobody missing"
    );
    pw.assert_pbx_matches_record().await;
    pw.assert_no_rejections();
}

#[tokio::test]
async fn a_run_killed_after_its_first_pbx_writes_leaves_no_duplicate() {
    let pw = PbxWorld::new(small(), Vec::new()).await;
    // Every PBX request is held a while, so the kill lands with creations in flight, some
    // of which reach the PBX only after the next run has listed it.
    pw.emu().set_faults(PbxFaults {
        timeout_rate: 1.0,
        timeout_delay_ms: 300,
        ..PbxFaults::default()
    });
    let ctx = pw.ctx();
    let run = tokio::spawn(async move { run_phases(&ctx, SyncOptions::default()).await });
    tokio::time::timeout(Duration::from_secs(30), async {
        while pw.emu().users(DOMAIN).len() < 3 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the run creates users");
    run.abort();
    let _ = run.await;
    let partial = pw.emu().users(DOMAIN).len();
    let expected = default_scope(pw.w.em());
    assert!(
        partial >= 3 && partial < expected.len(),
        "killed mid-way: {partial}"
    );
    pw.emu().set_faults(PbxFaults::default());
    pw.run_ok().await;
    assert_eq!(
        pw.pbx_users().len(),
        expected.len(),
        "no duplicate after the kill"
    );
    pw.assert_pbx_matches_record().await;
    pw.assert_no_rejections();
}

#[tokio::test]
async fn a_wrong_pbx_password_fails_the_run_in_plain_words_and_changes_nothing() {
    let mut pw = PbxWorld::new(small(), Vec::new()).await;
    pw.password = "Zq9-not-it".into();
    let summary = pw.run().await;
    assert_eq!(summary.users.status, RunStatus::Failed, "{summary:#?}");
    let message = summary.users.message.clone().unwrap_or_default();
    assert!(
        message.contains(ADMIN) && message.contains(DOMAIN),
        "{message}"
    );
    assert!(message.to_lowercase().contains("password"), "{message}");
    assert!(
        !message.contains("Zq9-not-it"),
        "the password never shows: {message}"
    );
    assert!(pw.w.store.pbx_users(&acme()).await.unwrap().is_empty());
    assert!(pw.emu().users(DOMAIN).is_empty());
    let run =
        pw.w.store
            .sync_run(&summary.users.run_id)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(run.status, RunStatus::Failed);
}

/// A creation answered "taken" by the very user it meant to create (a killed run's request
/// that reached the PBX late) links that user instead of failing it.
#[tokio::test]
async fn a_creation_that_finds_its_user_already_on_the_pbx_links_it() {
    use ms365_gateway::store::PbxLinkKind;
    let pw = PbxWorld::new(small(), Vec::new()).await;
    pw.run_ok().await;
    let rows = pw.w.store.pbx_users(&acme()).await.unwrap();
    let synced: Vec<_> = rows.iter().filter(|r| r.ms365_oid.is_some()).collect();
    let (lost, gone) = (synced[1], synced[2]);
    // The link of `lost` is forgotten while the PBX keeps the user; `gone` disappears from
    // the PBX, so the user count still matches and the next run does not list the PBX.
    (pw.w.store)
        .delete_pbx_link(&acme(), PbxLinkKind::User, &lost.id)
        .await
        .unwrap();
    let gone_remote = field(&pw.pbx_users()[&gone.username], "id").to_string();
    assert!(pw.emu().delete_user(DOMAIN, &gone_remote));
    let summary = pw.run_ok().await;
    let report = summary.pbx.as_ref().unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        pw.emu().stats().conflicts.values().sum::<u64>(),
        1,
        "one taken answer"
    );
    let link = (pw
        .w
        .store
        .pbx_link(&acme(), PbxLinkKind::User, &lost.id)
        .await
        .unwrap())
    .expect("linked again");
    assert_eq!(link.remote_id, field(&pw.pbx_users()[&lost.username], "id"));
    // The next listing brings `gone` back.
    pw.w.store
        .clear_sync_cursor(&acme(), LISTED_KIND)
        .await
        .unwrap();
    pw.run_ok().await;
    pw.assert_pbx_matches_record().await;
    assert_eq!(pw.pbx_users().len(), default_scope(pw.w.em()).len());
    pw.assert_no_rejections();
}
