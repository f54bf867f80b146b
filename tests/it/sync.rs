//! The users → extensions sync against the emulator over real HTTP: first full run, delta
//! rounds (updates, disables, soft and hard deletes, restores), stable extension numbers,
//! scope (ALL/INCLUDE/EXCLUDE, guests, departments, group), PBX-side deletion, the deletion
//! threshold and approval, faults, aborted and interrupted runs, expired delta tokens, dry
//! runs and the grace period.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ms365_gateway::ObjectId;
use ms365_gateway::config::CloudOverride;
use ms365_gateway::entra::AppTokenClient;
use ms365_gateway::entra::AssertionAlg;
use ms365_gateway::entra::KeyBits;
use ms365_gateway::entra::microsoft_client;
use ms365_gateway::entra::{CloudEndpoints, NationalCloud};
use ms365_gateway::graph::{GraphClient, GraphOptions};
use ms365_gateway::settings::{Ms365Settings, SyncType, UserSync};
use ms365_gateway::store::{DirectoryUser, ItemOutcome, PbxProfile, RunStatus, Store};
use ms365_gateway::sync::{
    RunReport, SyncContext, SyncError, SyncOptions, approve_run, sync_users,
};
use ms365_gateway::tenant_keys::TenantKeys;
use ms365_stand_ins::emulator::{
    AppRegistration, Emulator, EmulatorConfig, Faults, NewUser, RouteClass, RunningEmulator,
    TenantSpec, User as EmuUser, UserPatch,
};

use crate::common::acme;
use crate::entra::{DIRECTORY, tenant_spec};

/// An emulator tenant, a store with tenant `acme` whose settings point at it, and a Graph
/// client with a working app credential.
pub(crate) struct World {
    pub(crate) emulator: RunningEmulator,
    pub(crate) store: Store,
    pub(crate) graph: GraphClient,
    pub(crate) keyring: ms365_gateway::keyring::Keyring,
    pub(crate) _dir: tempfile::TempDir,
}

impl World {
    pub(crate) async fn new(spec: TenantSpec) -> World {
        World::with_graph(spec, GraphOptions::default()).await
    }

    pub(crate) async fn with_graph(spec: TenantSpec, options: GraphOptions) -> World {
        let (emulator, client_id, endpoints) = start_emulator(spec).await;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::common::db::open_store(dir.path(), 4).await;
        let seed = ms365_gateway::config::TenantSeed {
            pbx_login: None,
            id: acme(),
            domain: "acme.pbx.test".into(),
            name: "Acme".into(),
        };
        let tenant = store.upsert_tenant(&seed).await.unwrap();
        let keyring = crate::common::keys::open_keyring(dir.path(), &store).await;
        let keys = TenantKeys::new(store.clone(), keyring.clone());
        let info = keys.generate(&tenant, KeyBits::Rsa2048, 365).await.unwrap();
        (emulator.emulator)
            .upload_certificate(DIRECTORY, &client_id, &info.certificate_pem)
            .unwrap();
        let creds = keys.signing_credentials(&acme()).await.unwrap();
        let tokens = AppTokenClient::new(
            microsoft_client(Duration::from_secs(10)),
            endpoints.clone(),
            DIRECTORY,
            &client_id,
            creds,
            AssertionAlg::Ps256,
        );
        let options = GraphOptions {
            base_backoff: Duration::from_millis(10),
            ..options
        };
        let http = microsoft_client(Duration::from_secs(30));
        let graph = GraphClient::new(http, &endpoints, Arc::new(tokens), options);
        let settings = Ms365Settings {
            directory_id: DIRECTORY.into(),
            application_id: client_id,
            users: UserSync {
                enabled: true,
                ..UserSync::default()
            },
            ..Ms365Settings::default()
        };
        store.save_ms365_settings(&acme(), &settings).await.unwrap();
        World {
            emulator,
            store,
            graph,
            keyring,
            _dir: dir,
        }
    }

    pub(crate) fn em(&self) -> &Emulator {
        &self.emulator.emulator
    }

    pub(crate) fn ctx(&self) -> SyncContext {
        SyncContext {
            pbx: None,
            store: self.store.clone(),
            graph: self.graph.clone(),
            tenant_id: acme(),
        }
    }

    pub(crate) async fn users_settings(&self, change: impl FnOnce(&mut UserSync)) {
        let mut settings = self.store.ms365_settings(&acme()).await.unwrap();
        change(&mut settings.users);
        self.store
            .save_ms365_settings(&acme(), &settings)
            .await
            .unwrap();
    }

    async fn try_sync(&self, opts: &SyncOptions) -> Result<RunReport, SyncError> {
        sync_users(&self.ctx(), opts).await
    }

    async fn sync(&self, opts: &SyncOptions) -> RunReport {
        self.try_sync(opts)
            .await
            .unwrap_or_else(|e| panic!("sync failed: {e}"))
    }

    async fn sync_ok(&self) -> RunReport {
        let report = self.sync(&SyncOptions::default()).await;
        assert_eq!(report.status, RunStatus::Succeeded, "{report:#?}");
        report
    }

    /// Every synced user by oid.
    async fn state(&self) -> BTreeMap<String, Synced> {
        let dirs: BTreeMap<ObjectId, _> = (self.store.directory_users(&acme()).await.unwrap())
            .into_iter()
            .map(|d| (d.oid.clone(), d))
            .collect();
        // The contacts phase's slim read agrees with the whole rows.
        let upns: BTreeMap<ObjectId, String> = (self.store.directory_upns(&acme()).await)
            .unwrap()
            .into_iter()
            .collect();
        let expected: BTreeMap<ObjectId, String> = (dirs.iter())
            .map(|(oid, d)| (oid.clone(), d.upn.clone()))
            .collect();
        assert_eq!(upns, expected);
        let mut out = BTreeMap::new();
        for p in self.store.pbx_users(&acme()).await.unwrap() {
            let Some(oid) = p.ms365_oid.clone() else {
                continue;
            };
            let dir = dirs
                .get(&oid)
                .expect("every synced PBX user has a directory entry");
            assert_eq!(dir.pbx_user_id, p.id, "{oid}");
            assert_eq!(dir.extension.as_deref(), Some(p.extension_number.as_str()));
            assert_eq!(
                dir.enabled, p.enabled,
                "sign-in follows the PBX user: {oid}"
            );
            let synced = Synced {
                ext: p.extension_number,
                username: p.username,
                profile: p.profile,
                enabled: p.enabled,
                reason: p.sync_disabled,
            };
            out.insert(oid.into(), synced);
        }
        out
    }

    async fn extensions(&self) -> BTreeMap<String, String> {
        (self.state().await)
            .into_iter()
            .map(|(oid, s)| (oid, s.ext))
            .collect()
    }

    async fn local_user(&self, ext: &str, username: &str) {
        let profile = PbxProfile {
            display_name: format!("Local {ext}"),
            ..PbxProfile::default()
        };
        (self.store)
            .create_local_pbx_user(&acme(), ext, username, &profile)
            .await
            .unwrap();
    }

    /// What sign-in reads: the directory entry's enabled flag.
    async fn sign_in_enabled(&self, oid: &str) -> bool {
        let entry = self
            .store
            .directory_user(&acme(), &ObjectId::new(oid))
            .await
            .unwrap();
        entry.expect("a directory entry").enabled
    }

    async fn cursor(&self) -> Option<String> {
        (self.store.sync_cursor(&acme(), "users").await.unwrap()).map(|c| c.delta_link)
    }
}

/// The emulator with `spec`, an app that may read users and group members, and the
/// endpoints that point the global cloud at it.
async fn start_emulator(spec: TenantSpec) -> (RunningEmulator, String, CloudEndpoints) {
    let emulator = Emulator::start(EmulatorConfig {
        seed: 7,
        tenants: vec![spec],
    })
    .await
    .unwrap();
    let app = AppRegistration {
        display_name: "PBX sync".into(),
        redirect_uris: Vec::new(),
        permissions: vec![
            "User.Read.All".into(),
            "GroupMember.Read.All".into(),
            "Contacts.Read".into(),
        ],
        client_id: None,
    };
    let client_id = emulator.emulator.register_app(DIRECTORY, app);
    let base: http::Uri = emulator.base_url.parse().unwrap();
    let overrides = BTreeMap::from([(
        "GLOBAL".to_string(),
        CloudOverride {
            login: Some(base.clone()),
            graph: Some(base),
        },
    )]);
    let endpoints = CloudEndpoints::resolve(NationalCloud::Global, &overrides);
    (emulator, client_id, endpoints)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Synced {
    ext: String,
    username: String,
    profile: PbxProfile,
    enabled: bool,
    reason: Option<String>,
}

pub(crate) fn named(u: &EmuUser) -> bool {
    u.given_name.is_some() || u.surname.is_some()
}

pub(crate) fn member(u: &EmuUser) -> bool {
    u.user_type == "Member"
}

/// Oids of the emulator's users that a default scope (ALL, no guests) syncs: every member,
/// rooms and shared mailboxes with only a display name included.
pub(crate) fn default_scope(em: &Emulator) -> BTreeSet<String> {
    (em.users(DIRECTORY).iter())
        .filter(|u| member(u))
        .map(|u| u.id.clone())
        .collect()
}

fn users(report: &RunReport) -> ms365_gateway::sync::EntityCounts {
    report.counts["users"]
}

/// Enabled, named members, in directory order.
pub(crate) fn regular(em: &Emulator) -> Vec<EmuUser> {
    (em.users(DIRECTORY).into_iter())
        .filter(|u| member(u) && named(u) && u.account_enabled)
        .collect()
}

fn bigger(users: usize) -> TenantSpec {
    TenantSpec {
        users,
        contacts_per_user: 0,
        photo_share: 0.0,
        ..tenant_spec()
    }
}

/// The PBX user carries the Microsoft user's fields.
fn assert_mirrors(u: &EmuUser, s: &Synced) {
    assert_eq!(s.enabled, u.account_enabled, "{}", u.user_principal_name);
    assert_eq!(s.profile.display_name, u.display_name);
    let email = u.mail.as_ref().unwrap_or(&u.user_principal_name);
    assert_eq!(s.profile.email.as_ref(), Some(email), "mail, else the UPN");
    assert_eq!(s.profile.work_phone, u.business_phones.first().cloned());
    assert_eq!(s.profile.title, u.job_title);
    let local = u.user_principal_name.split('@').next().unwrap();
    assert!(s.username.starts_with(local), "{} → {}", local, s.username);
}

#[tokio::test]
async fn first_full_sync_creates_the_users_in_scope() {
    let w = World::new(tenant_spec()).await;
    let report = w.sync_ok().await;
    let expected = default_scope(w.em());
    let all = w.em().users(DIRECTORY);
    let nameless: Vec<_> = all.iter().filter(|u| member(u) && !named(u)).collect();
    assert_eq!(report.mode.as_deref(), Some("full"));
    let counts = users(&report);
    assert_eq!(counts.created, expected.len() as u64, "{report:#?}");
    assert_eq!((counts.disabled, counts.failed, counts.skipped), (0, 0, 0));
    assert!(
        nameless.len() >= 2,
        "a room and a shared mailbox: {nameless:?}"
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let state = w.state().await;
    for u in &nameless {
        let synced = &state[&u.id];
        assert_eq!(synced.profile.display_name, u.display_name);
        let (first, last) = u.display_name.rsplit_once(' ').unwrap();
        assert_eq!(synced.profile.first_name.as_deref(), Some(first));
        assert_eq!(synced.profile.last_name.as_deref(), Some(last));
    }
    assert_eq!(state.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let guest = all.iter().find(|u| u.user_type == "Guest").unwrap();
    assert!(!state.contains_key(&guest.id), "guests are off by default");
    let exts: BTreeSet<u64> = state.values().map(|s| s.ext.parse().unwrap()).collect();
    assert_eq!(exts.len(), state.len(), "no number twice");
    assert!(exts.iter().all(|e| (1000..=9999).contains(e)));
    for u in all.iter().filter(|u| expected.contains(&u.id)) {
        assert_mirrors(u, &state[&u.id]);
    }
    let disabled = all
        .iter()
        .find(|u| named(u) && !u.account_enabled && member(u))
        .unwrap();
    assert_eq!(
        state[&disabled.id].reason.as_deref(),
        Some("account_disabled")
    );
    let run = w.store.sync_run(&report.run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.counts["users"], counts);
    assert!(run.errors.is_empty());
    assert!(run.graph_requests >= 1 && run.graph_requests == report.graph_requests);
    assert!(run.finished_at.is_some() && !run.has_pending);
    let again = w.sync_ok().await;
    assert_eq!(again.mode.as_deref(), Some("delta"));
    let c = users(&again);
    assert_eq!((c.created, c.updated, c.disabled), (0, 0, 0), "{again:#?}");
    assert_eq!(w.state().await, state);
}

/// Every synced field changes at once.
fn rich_patch() -> UserPatch {
    UserPatch {
        display_name: Some("Renamed Person".into()),
        job_title: Some(Some("Chief Listener".into())),
        department: Some(Some("Radio".into())),
        mobile_phone: Some(Some("+1 555 0100".into())),
        business_phones: Some(vec!["+1 555 0199".into(), "+1 555 0198".into()]),
        office_location: Some(None),
        ..UserPatch::default()
    }
}

fn assert_rich(p: &PbxProfile) {
    assert_eq!(p.display_name, "Renamed Person");
    assert_eq!(p.title.as_deref(), Some("Chief Listener"));
    assert_eq!(p.department.as_deref(), Some("Radio"));
    assert_eq!(p.mobile_phone.as_deref(), Some("+1 555 0100"));
    assert_eq!(
        p.work_phone.as_deref(),
        Some("+1 555 0199"),
        "the first one"
    );
    assert_eq!(p.office, None);
}

fn account_enabled(on: bool) -> UserPatch {
    UserPatch {
        account_enabled: Some(on),
        ..UserPatch::default()
    }
}

fn new_user(local: &str, given: &str, surname: Option<&str>) -> NewUser {
    NewUser {
        user_principal_name: format!("{local}@contoso.onmicrosoft.com"),
        display_name: format!("{given} {}", surname.unwrap_or_default()),
        given_name: Some(given.into()),
        surname: surname.map(Into::into),
        ..NewUser::default()
    }
}

/// (created, updated, disabled, deleted) of a report.
fn changes(report: &RunReport) -> (u64, u64, u64, u64) {
    let c = users(report);
    (c.created, c.updated, c.disabled, c.deleted)
}

#[tokio::test]
async fn delta_rounds_apply_updates_disables_deletes_and_restores() {
    let w = World::new(tenant_spec()).await;
    w.sync_ok().await;
    let before = w.state().await;
    let r = regular(w.em());
    let (a, b, c, d) = (&r[0], &r[1], &r[2], &r[3]);
    w.em().update_user(DIRECTORY, &a.id, rich_patch());
    w.em().update_user(DIRECTORY, &b.id, account_enabled(false));
    w.em().delete_user(DIRECTORY, &c.id);
    w.em().hard_delete_user(DIRECTORY, &d.id);
    let e = w
        .em()
        .add_user(DIRECTORY, new_user("new.hire", "New", Some("Hire")));
    let report = w.sync_ok().await;
    assert_eq!(report.mode.as_deref(), Some("delta"));
    assert_eq!(changes(&report), (1, 1, 3, 0), "{report:#?}");
    let after = w.state().await;
    assert_rich(&after[&a.id].profile);
    assert_eq!(after[&b.id].reason.as_deref(), Some("account_disabled"));
    for gone in [&c.id, &d.id] {
        assert!(!after[gone].enabled);
        assert_eq!(after[gone].reason.as_deref(), Some("removed"));
    }
    assert_eq!(after[&e.id].username, "new.hire");
    for (oid, s) in &before {
        assert_eq!(after[oid].ext, s.ext, "numbers never move");
    }
    assert!(
        !w.sign_in_enabled(&c.id).await,
        "a removed user cannot sign in"
    );
    w.em().restore_user(DIRECTORY, &c.id);
    w.em().update_user(DIRECTORY, &b.id, account_enabled(true));
    let report = w.sync_ok().await;
    assert_eq!(changes(&report), (0, 2, 0, 0));
    let last = w.state().await;
    for back in [&b.id, &c.id] {
        assert!(last[back].enabled && last[back].reason.is_none());
        assert_eq!(last[back].ext, before[back].ext);
    }
    assert!(w.sign_in_enabled(&c.id).await);
}

#[tokio::test]
async fn extension_numbers_are_stable_over_ten_runs_and_follow_oid_order() {
    let w = World::new(tenant_spec()).await;
    w.local_user("1005", "reception").await;
    w.sync_ok().await;
    let first = w.extensions().await;
    // New users get the first free numbers in oid order, whatever order Graph used.
    let numbers: Vec<u64> = first.values().map(|e| e.parse().unwrap()).collect();
    let expected: Vec<u64> = (1000..).filter(|n| *n != 1005).take(first.len()).collect();
    assert_eq!(numbers, expected, "by oid: {first:?}");
    let mut known = first.clone();
    let r = regular(w.em());
    for (round, user) in r.iter().take(10).enumerate() {
        if round % 2 == 0 {
            w.em().expire_delta_tokens(DIRECTORY);
        }
        let patch = UserPatch {
            display_name: Some(format!("Round {round}")),
            ..UserPatch::default()
        };
        w.em().update_user(DIRECTORY, &user.id, patch);
        if round == 4 {
            w.em()
                .add_user(DIRECTORY, new_user("late.joiner", "Late", None));
        }
        let report = w.sync_ok().await;
        let mode = if round % 2 == 0 { "full" } else { "delta" };
        assert_eq!(report.mode.as_deref(), Some(mode), "round {round}");
        let now = w.extensions().await;
        for (oid, ext) in &known {
            assert_eq!(now.get(oid), Some(ext), "round {round}: {oid} moved");
        }
        known = now;
    }
    assert_eq!(known.len(), first.len() + 1);
    let late: Vec<_> = known
        .iter()
        .filter(|(oid, _)| !first.contains_key(*oid))
        .collect();
    let next_free = (1000..)
        .find(|n| *n != 1005 && !numbers.contains(n))
        .unwrap();
    assert_eq!(late[0].1, &next_free.to_string());
}

#[tokio::test]
async fn starting_number_respected_and_local_extensions_skipped() {
    let w = World::new(tenant_spec()).await;
    w.users_settings(|u| u.starting_extension_number = "200".into())
        .await;
    w.local_user("200", "front.desk").await;
    w.local_user("202", "lobby").await;
    w.local_user("999", "adele.vance").await;
    w.sync_ok().await;
    let state = w.state().await;
    let exts: BTreeSet<u64> = state.values().map(|s| s.ext.parse().unwrap()).collect();
    assert_eq!(exts.first(), Some(&201));
    assert!(!exts.contains(&200) && !exts.contains(&202));
    assert!(exts.iter().all(|e| (201..999).contains(e)), "{exts:?}");
    assert_eq!(exts.len(), state.len());
    let locals = w.store.pbx_users(&acme()).await.unwrap();
    let local_count = locals.iter().filter(|p| p.ms365_oid.is_none()).count();
    assert_eq!(local_count, 3, "local users are never touched");
    let names: BTreeSet<String> = locals.iter().map(|p| p.username.to_lowercase()).collect();
    assert_eq!(names.len(), locals.len(), "usernames unique");
}

#[tokio::test]
async fn exhausted_range_fails_the_rest_without_duplicates_then_recovers() {
    let w = World::new(tenant_spec()).await;
    w.users_settings(|u| u.starting_extension_number = "990".into())
        .await;
    let report = w.sync_ok().await;
    let in_scope = default_scope(w.em()).len() as u64;
    let counts = users(&report);
    assert_eq!(counts.created, 10, "990..=999");
    assert_eq!(counts.failed, in_scope - 10);
    let failed: Vec<_> = report
        .errors
        .iter()
        .filter(|e| e.outcome == ItemOutcome::Failed)
        .collect();
    assert!(
        failed
            .iter()
            .all(|e| e.reason == "no free extension in range")
    );
    assert!(
        w.cursor().await.is_none(),
        "failed users are retried by the next run"
    );
    let first = w.extensions().await;
    w.users_settings(|u| u.starting_extension_number = "5000".into())
        .await;
    let report = w.sync_ok().await;
    assert_eq!(users(&report).created, in_scope - 10);
    let all = w.extensions().await;
    assert_eq!(all.len() as u64, in_scope);
    for (oid, ext) in &first {
        assert_eq!(&all[oid], ext);
    }
    let distinct: BTreeSet<_> = all.values().collect();
    assert_eq!(distinct.len(), all.len());
    assert!(w.cursor().await.is_some());
}

#[tokio::test]
async fn include_exclude_all_and_guests() {
    let w = World::new(tenant_spec()).await;
    let r = regular(w.em());
    let (one, two) = (&r[3], &r[7]);
    w.users_settings(|u| {
        u.sync_type = SyncType::Include;
        u.selected_users = vec![
            one.id.to_uppercase(),
            two.user_principal_name.to_uppercase(),
        ];
    })
    .await;
    w.sync_ok().await;
    let state = w.state().await;
    assert_eq!(
        state.keys().collect::<BTreeSet<_>>(),
        BTreeSet::from([&one.id, &two.id])
    );
    w.users_settings(|u| u.sync_type = SyncType::Exclude).await;
    let report = w.sync_ok().await;
    assert_eq!(
        report.mode.as_deref(),
        Some("full"),
        "a scope change forces a full round"
    );
    let state = w.state().await;
    assert_eq!(users(&report).disabled, 2);
    for oid in [&one.id, &two.id] {
        assert_eq!(state[oid].reason.as_deref(), Some("out_of_scope"));
    }
    assert_eq!(state.len(), default_scope(w.em()).len());
    w.users_settings(|u| {
        u.sync_type = SyncType::All;
        u.sync_guest_users = true;
    })
    .await;
    w.sync_ok().await;
    let state = w.state().await;
    assert!(state[&one.id].enabled && state[&two.id].enabled);
    let guest = w
        .em()
        .users(DIRECTORY)
        .into_iter()
        .find(|u| u.user_type == "Guest")
        .unwrap();
    let g = &state[&guest.id];
    assert!(g.enabled);
    assert!(
        !g.username.contains('#') && g.username.contains('_'),
        "{}",
        g.username
    );
}

#[tokio::test]
async fn department_and_group_filters() {
    let w = World::new(tenant_spec()).await;
    let engineers: BTreeSet<String> = (w.em().users(DIRECTORY).into_iter())
        .filter(|u| member(u) && named(u) && u.department.as_deref() == Some("Engineering"))
        .map(|u| u.id)
        .collect();
    assert!(!engineers.is_empty());
    let by_department = SyncOptions {
        departments: vec!["engineering".into()],
        ..SyncOptions::default()
    };
    w.sync(&by_department).await;
    let state = w.state().await;
    assert_eq!(state.keys().cloned().collect::<BTreeSet<_>>(), engineers);
    let by_group = group_scope(w.em(), "All Staff");
    let report = w.sync(&by_group).await;
    assert_eq!(report.mode.as_deref(), Some("full"));
    let state = w.state().await;
    // "All Staff" nests "Engineering": transitive members are every named member.
    let staff: BTreeSet<String> = (w.em().users(DIRECTORY).into_iter())
        .filter(|u| member(u) && u.given_name.is_some())
        .map(|u| u.id)
        .collect();
    let enabled: BTreeSet<String> = state
        .iter()
        .filter(|(_, s)| s.enabled || s.reason.as_deref() == Some("account_disabled"))
        .map(|(o, _)| o.clone())
        .collect();
    assert_eq!(enabled, staff);
    let only_eng = group_scope(w.em(), "Engineering");
    let report = w.sync(&only_eng).await;
    let state = w.state().await;
    let in_scope: BTreeSet<String> = state
        .iter()
        .filter(|(_, s)| s.reason.as_deref() != Some("out_of_scope"))
        .map(|(o, _)| o.clone())
        .collect();
    assert_eq!(in_scope, engineers);
    assert_eq!(
        users(&report).disabled as usize,
        staff.len() - engineers.len() - disabled_staff(w.em())
    );
}

/// Options scoping the sync to the emulator group called `name`.
fn group_scope(em: &Emulator, name: &str) -> SyncOptions {
    let (id, _) = (em.groups(DIRECTORY).into_iter())
        .find(|(_, n)| n == name)
        .unwrap();
    SyncOptions {
        group_id: Some(id),
        ..SyncOptions::default()
    }
}

/// Named members whose account is disabled (already disabled PBX users).
fn disabled_staff(em: &Emulator) -> usize {
    (em.users(DIRECTORY).iter())
        .filter(|u| {
            member(u)
                && named(u)
                && !u.account_enabled
                && u.department.as_deref() != Some("Engineering")
        })
        .count()
}

#[tokio::test]
async fn a_user_deleted_on_the_pbx_side_comes_back_with_the_same_extension() {
    let w = World::new(tenant_spec()).await;
    w.sync_ok().await;
    let u = &regular(w.em())[5];
    let row = w
        .store
        .pbx_user_by_oid(&acme(), &ObjectId::new(&u.id))
        .await
        .unwrap()
        .unwrap();
    assert!(w.store.delete_pbx_user(&acme(), &row.id).await.unwrap());
    let report = w.sync_ok().await;
    assert_eq!(
        report.mode.as_deref(),
        Some("full"),
        "a delta round would not mention it"
    );
    assert_eq!(users(&report).created, 1);
    let back = w
        .store
        .pbx_user_by_oid(&acme(), &ObjectId::new(&u.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.extension_number, row.extension_number);
    assert_eq!(back.id, row.id);
    assert_eq!(back.username, row.username);
    let again = w.sync_ok().await;
    assert_eq!(again.mode.as_deref(), Some("delta"));
}

#[tokio::test]
async fn the_deletion_threshold_stops_the_run_until_approved() {
    let w = World::new(tenant_spec()).await;
    w.sync_ok().await;
    let before = w.state().await;
    let cursor = w.cursor().await;
    let r = regular(w.em());
    for (i, u) in r.iter().take(5).enumerate() {
        if i % 2 == 0 {
            w.em().delete_user(DIRECTORY, &u.id);
        } else {
            w.em().hard_delete_user(DIRECTORY, &u.id);
        }
    }
    let strict = SyncOptions {
        threshold: 3,
        ..SyncOptions::default()
    };
    let held = w.sync(&strict).await;
    assert_eq!(held.status, RunStatus::AwaitingApproval, "{held:#?}");
    assert!(held.threshold_exceeded);
    assert_eq!(users(&held).disabled, 5, "the planned counts are shown");
    assert_eq!(w.state().await, before, "nothing applied");
    assert_eq!(w.cursor().await, cursor, "the delta link did not move");
    // A newer run supersedes the held one: its plan is the fresh one.
    let newer = w.sync(&strict).await;
    assert_eq!(newer.status, RunStatus::AwaitingApproval);
    let old = w.store.sync_run(&held.run_id).await.unwrap().unwrap();
    assert_eq!(old.status, RunStatus::Cancelled);
    assert!(matches!(
        approve_run(&w.store, &held.run_id, &strict).await,
        Err(SyncError::NotAwaitingApproval { .. })
    ));
    let run = w.store.sync_run(&newer.run_id).await.unwrap().unwrap();
    assert!(run.has_pending && run.finished_at.is_none());
    let approved = approve_run(&w.store, &newer.run_id, &strict).await.unwrap();
    assert_eq!(approved.status, RunStatus::Succeeded);
    assert_eq!(users(&approved).disabled, 5);
    let after = w.state().await;
    for u in r.iter().take(5) {
        assert_eq!(after[&u.id].reason.as_deref(), Some("removed"));
    }
    assert_ne!(w.cursor().await, cursor);
    assert!(
        approve_run(&w.store, &newer.run_id, &strict).await.is_err(),
        "only once"
    );
    let next = w.sync(&strict).await;
    assert_eq!(
        (next.status, users(&next).disabled),
        (RunStatus::Succeeded, 0)
    );
}

#[tokio::test]
async fn a_percentage_threshold_counts_against_the_synced_users() {
    let w = World::new(tenant_spec()).await;
    w.sync_ok().await;
    let enabled = w.state().await.values().filter(|s| s.enabled).count();
    let r = regular(w.em());
    let limit = enabled / 10;
    for u in r.iter().take(limit + 1) {
        w.em().delete_user(DIRECTORY, &u.id);
    }
    let ten_percent = SyncOptions {
        threshold_percent: Some(10.0),
        ..SyncOptions::default()
    };
    let held = w.sync(&ten_percent).await;
    assert_eq!(held.status, RunStatus::AwaitingApproval, "{held:#?}");
    w.em().restore_user(DIRECTORY, &r[0].id);
    let ok = w.sync(&ten_percent).await;
    assert_eq!(
        ok.status,
        RunStatus::Succeeded,
        "{limit} disables is within 10%"
    );
    assert_eq!(users(&ok).disabled as usize, limit);
}

/// The same directory changes, synced on two emulators: one clean, one faulty.
async fn scripted_rounds(w: &World) -> BTreeMap<String, Synced> {
    w.sync_ok().await;
    let r = regular(w.em());
    for u in r.iter().take(12) {
        let patch = UserPatch {
            job_title: Some(Some(format!("Title of {}", u.display_name))),
            ..UserPatch::default()
        };
        w.em().update_user(DIRECTORY, &u.id, patch);
    }
    w.em().delete_user(DIRECTORY, &r[20].id);
    w.em().hard_delete_user(DIRECTORY, &r[21].id);
    w.sync_ok().await;
    w.em().expire_delta_tokens(DIRECTORY);
    w.em().hard_delete_user(DIRECTORY, &r[22].id);
    w.sync_ok().await;
    w.state().await
}

#[tokio::test]
async fn a_run_under_faults_ends_in_the_same_state_as_a_clean_run() {
    let clean = World::new(bigger(400)).await;
    let expected = scripted_rounds(&clean).await;
    let faulty = World::with_graph(
        bigger(400),
        GraphOptions {
            max_retries: 10,
            ..GraphOptions::default()
        },
    )
    .await;
    let faults = Faults {
        rate_429: 0.2,
        retry_after: Some(0.01),
        rate_503: 0.05,
        rate_reset: 0.02,
        ..Faults::default()
    };
    faulty.em().set_faults(RouteClass::Delta, faults);
    let got = scripted_rounds(&faulty).await;
    assert_eq!(got, expected);
    assert!(expected.len() > 350);
    let runs = faulty.store.sync_runs(&acme(), 10).await.unwrap();
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded));
    let throttled: u64 = runs.iter().map(|r| r.throttled).sum();
    assert!(throttled > 0, "the faults were met and retried: {runs:#?}");
    let stats = faulty.em().stats().class(RouteClass::Delta);
    assert!(
        stats.throttled + stats.unavailable + stats.resets > 0,
        "{stats:?}"
    );
}

/// Options whose progress callback makes every delta request fail once a page arrived;
/// the flag tells that it happened.
fn fail_after_first_page(em: &Emulator) -> (SyncOptions, Arc<AtomicBool>) {
    let (em, tripped) = (em.clone(), Arc::new(AtomicBool::new(false)));
    let flag = tripped.clone();
    let options = SyncOptions {
        progress: Some(Arc::new(move |p| {
            if p.phase == "fetch" && p.done > 0 && !flag.swap(true, Ordering::SeqCst) {
                let hard = Faults {
                    rate_503: 1.0,
                    retry_after: Some(0.0),
                    ..Faults::default()
                };
                em.set_faults(RouteClass::Delta, hard);
            }
        })),
        ..SyncOptions::default()
    };
    (options, tripped)
}

#[tokio::test]
async fn an_aborted_fetch_changes_nothing_and_the_rerun_completes() {
    let w = World::with_graph(
        bigger(250),
        GraphOptions {
            max_retries: 1,
            // Several pages per round, so the failure can come after the first.
            delta_page_size: 100,
            ..GraphOptions::default()
        },
    )
    .await;
    w.sync_ok().await;
    let before = w.state().await;
    let cursor = w.cursor().await;
    let r = regular(w.em());
    for u in r.iter().take(3) {
        w.em().hard_delete_user(DIRECTORY, &u.id);
    }
    let patch = UserPatch {
        display_name: Some("Changed Meanwhile".into()),
        ..UserPatch::default()
    };
    w.em().update_user(DIRECTORY, &r[10].id, patch);
    // A full round has several pages; Graph fails hard after the first one.
    w.em().expire_delta_tokens(DIRECTORY);
    let (failing, tripped) = fail_after_first_page(w.em());
    let err = w.try_sync(&failing).await.unwrap_err();
    assert!(tripped.load(Ordering::SeqCst), "the first page arrived");
    let SyncError::Fetch { run_id, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(w.state().await, before, "nothing disabled, nothing updated");
    assert_eq!(w.cursor().await, cursor);
    let run = w.store.sync_run(run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.message.unwrap().contains("nothing was changed"));
    w.em().set_faults(RouteClass::Delta, Faults::default());
    let report = w.sync_ok().await;
    assert_eq!(users(&report).disabled, 3);
    assert_eq!(users(&report).updated, 1);
    let after = w.state().await;
    assert_eq!(after[&r[10].id].profile.display_name, "Changed Meanwhile");
    assert!(r.iter().take(3).all(|u| !after[&u.id].enabled));
}

#[tokio::test]
async fn a_run_killed_mid_apply_is_completed_by_the_next_run() {
    let clean = World::new(tenant_spec()).await;
    clean.sync_ok().await;
    let expected = clean.state().await;
    let w = World::new(tenant_spec()).await;
    let kill = SyncOptions {
        batch_size: 7,
        progress: Some(Arc::new(|p| {
            if p.phase == "apply" && p.done >= 7 {
                panic!("killed after the first batch");
            }
        })),
        ..SyncOptions::default()
    };
    let ctx = w.ctx();
    let task = tokio::spawn(async move { sync_users(&ctx, &kill).await });
    assert!(task.await.unwrap_err().is_panic());
    let partial = w.state().await;
    assert_eq!(partial.len(), 7, "one batch committed, atomically");
    assert!(w.cursor().await.is_none());
    let report = w.sync_ok().await;
    assert_eq!(users(&report).created as usize, expected.len() - 7);
    assert_eq!(
        w.state().await,
        expected,
        "same numbers and names as an uninterrupted run"
    );
    let runs = w.store.sync_runs(&acme(), 5).await.unwrap();
    assert_eq!(
        runs[1].status,
        RunStatus::Failed,
        "the killed run is marked"
    );
    assert!(runs[1].message.as_deref().unwrap().contains("interrupted"));
}

#[tokio::test]
async fn an_expired_delta_token_means_a_full_compare() {
    let w = World::new(tenant_spec()).await;
    w.sync_ok().await;
    let r = regular(w.em());
    w.em().hard_delete_user(DIRECTORY, &r[0].id);
    w.em().delete_user(DIRECTORY, &r[1].id);
    w.em().expire_delta_tokens(DIRECTORY);
    let report = w.sync_ok().await;
    assert_eq!(report.mode.as_deref(), Some("full"));
    assert!(
        report.message.as_deref().unwrap().contains("expired"),
        "{report:#?}"
    );
    assert_eq!(
        users(&report).disabled,
        2,
        "users missing from the listing were removed"
    );
    let state = w.state().await;
    assert_eq!(state[&r[0].id].reason.as_deref(), Some("removed"));
    assert!(!state[&r[1].id].enabled);
    assert_eq!(w.sync_ok().await.mode.as_deref(), Some("delta"));
}

#[tokio::test]
async fn a_dry_run_changes_nothing() {
    let w = World::new(tenant_spec()).await;
    let dry = SyncOptions {
        dry_run: true,
        ..SyncOptions::default()
    };
    let report = w.sync(&dry).await;
    let in_scope = default_scope(w.em()).len();
    assert!(report.dry_run);
    assert_eq!(users(&report).created as usize, in_scope);
    assert_eq!(report.preview.len(), in_scope);
    assert!(
        report.preview[0].starts_with("create ") && report.preview[0].contains("as extension 1")
    );
    assert!(w.store.pbx_users(&acme()).await.unwrap().is_empty());
    assert!(w.store.directory_users(&acme()).await.unwrap().is_empty());
    assert!(w.store.sync_runs(&acme(), 10).await.unwrap().is_empty());
    assert!(w.cursor().await.is_none());
    w.sync_ok().await;
    let before = w.state().await;
    let cursor = w.cursor().await;
    let r = regular(w.em());
    w.em().delete_user(DIRECTORY, &r[0].id);
    let patch = UserPatch {
        surname: Some(Some("Changed".into())),
        ..UserPatch::default()
    };
    w.em().update_user(DIRECTORY, &r[1].id, patch);
    let report = w.sync(&dry).await;
    assert_eq!((users(&report).disabled, users(&report).updated), (1, 1));
    assert_eq!(w.state().await, before);
    assert_eq!(w.cursor().await, cursor);
    let real = w.sync_ok().await;
    assert_eq!(
        users(&real),
        users(&report),
        "the dry run predicted the real one"
    );
}

#[tokio::test]
async fn the_grace_period_deletes_only_users_that_left() {
    let w = World::new(tenant_spec()).await;
    w.sync_ok().await;
    let r = regular(w.em());
    w.em().delete_user(DIRECTORY, &r[0].id);
    w.sync_ok().await;
    let disabled_account = (w.em().users(DIRECTORY).into_iter())
        .find(|u| member(u) && named(u) && !u.account_enabled)
        .unwrap();
    let grace = SyncOptions {
        delete_after: Some(Duration::ZERO),
        ..SyncOptions::default()
    };
    let report = w.sync(&grace).await;
    assert_eq!(users(&report).deleted, 1, "{report:#?}");
    assert!(
        w.store
            .pbx_user_by_oid(&acme(), &ObjectId::new(&r[0].id))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        w.store
            .directory_user(&acme(), &ObjectId::new(&r[0].id))
            .await
            .unwrap()
            .is_none()
    );
    let kept = w
        .store
        .pbx_user_by_oid(&acme(), &ObjectId::new(&disabled_account.id))
        .await
        .unwrap();
    assert!(
        kept.is_some(),
        "a disabled account is still in Microsoft 365"
    );
    let none = SyncOptions {
        delete_after: Some(Duration::from_secs(86_400)),
        ..SyncOptions::default()
    };
    w.em().delete_user(DIRECTORY, &r[1].id);
    let report = w.sync(&none).await;
    assert_eq!((users(&report).disabled, users(&report).deleted), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_readable_from_the_store_while_the_run_goes() {
    let pages_of_100 = GraphOptions {
        delta_page_size: 100,
        ..GraphOptions::default()
    };
    let w = World::with_graph(bigger(250), pages_of_100).await;
    let seen: Arc<Mutex<Vec<(String, u64, u64)>>> = Arc::default();
    let (store, log) = (w.store.clone(), seen.clone());
    let opts = SyncOptions {
        batch_size: 50,
        progress: Some(Arc::new(move |p| {
            let stored = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(store.sync_run(&p.run_id))
            });
            let run = stored.unwrap().unwrap();
            assert_eq!(run.status, RunStatus::Running);
            assert_eq!(
                (run.phase.as_str(), run.done, run.total),
                (p.phase, p.done, p.total)
            );
            log.lock()
                .unwrap()
                .push((p.phase.to_string(), p.done, p.total));
        })),
        ..SyncOptions::default()
    };
    // On a worker thread, where the callback may block in place to read the store.
    let ctx = w.ctx();
    let report = tokio::spawn(async move { sync_users(&ctx, &opts).await })
        .await
        .unwrap()
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    let fetch: Vec<u64> = seen
        .iter()
        .filter(|s| s.0 == "fetch")
        .map(|s| s.1)
        .collect();
    assert!(
        fetch.len() >= 3 && fetch.windows(2).all(|p| p[0] <= p[1]),
        "{fetch:?}"
    );
    let apply: Vec<_> = seen.iter().filter(|s| s.0 == "apply").collect();
    let created = users(&report).created;
    assert_eq!(apply.last().unwrap().1, created);
    assert!(
        apply.len() as u64 > created / 50,
        "a progress report per batch"
    );
    let run = w.store.sync_run(&report.run_id).await.unwrap().unwrap();
    assert_eq!(
        (run.status, run.phase.as_str()),
        (RunStatus::Succeeded, "succeeded")
    );
}

#[tokio::test]
async fn turned_off_user_sync_does_nothing() {
    let w = World::new(tenant_spec()).await;
    w.users_settings(|u| u.enabled = false).await;
    let report = w.sync_ok().await;
    assert!(report.message.as_deref().unwrap().contains("turned off"));
    assert_eq!(report.graph_requests, 0);
    assert!(w.store.pbx_users(&acme()).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_administrator_binding_is_never_synced_over() {
    let w = World::new(tenant_spec()).await;
    w.local_user("4000", "boss").await;
    let local = &w.store.pbx_users(&acme()).await.unwrap()[0];
    let u = &regular(w.em())[2];
    let binding = DirectoryUser {
        tenant_id: acme(),
        oid: ObjectId::new(u.id.clone()),
        upn: u.user_principal_name.clone(),
        pbx_user_id: local.id.clone(),
        extension: Some("4000".into()),
        display_name: "The Boss".into(),
        email: None,
        role: ms365_gateway::store::Role::Admin,
        enabled: true,
        source: "binding".into(),
    };
    w.store.upsert_directory_user(&binding).await.unwrap();
    let report = w.sync_ok().await;
    let skip = report.errors.iter().find(|e| e.key == u.id).unwrap();
    assert_eq!(
        skip.reason,
        "bound by an administrator to an existing PBX user"
    );
    assert!(
        w.store
            .pbx_user_by_oid(&acme(), &ObjectId::new(&u.id))
            .await
            .unwrap()
            .is_none()
    );
    let entry = w
        .store
        .directory_user(&acme(), &ObjectId::new(&u.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry, binding, "the binding is left as it was");
    w.em().delete_user(DIRECTORY, &u.id);
    w.em().expire_delta_tokens(DIRECTORY);
    w.sync_ok().await;
    let entry = w
        .store
        .directory_user(&acme(), &ObjectId::new(&u.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry, binding, "nor disabled by the sync");
}

/// Photos of a tenant larger than one round (400 users) go in several rounds, two in flight
/// at once: every round's figures are counted once and every photo is stored.
#[tokio::test]
async fn photos_of_many_rounds_are_all_stored_and_counted_once() {
    use ms365_gateway::sync::{PhotoOptions, sync_photos};
    let w = World::new(bigger(1_000)).await;
    let mut settings = w.store.ms365_settings(&acme()).await.unwrap();
    settings.users.sync_photo = true;
    w.store
        .save_ms365_settings(&acme(), &settings)
        .await
        .unwrap();
    w.sync_ok().await;
    let synced: Vec<ObjectId> = (w.store.pbx_users(&acme()).await.unwrap().into_iter())
        .filter(|u| u.enabled && u.ms365_oid.is_some())
        .filter_map(|u| u.ms365_oid)
        .collect();
    assert!(synced.len() > 800, "{} users synced", synced.len());
    let with: Vec<&ObjectId> = synced.iter().step_by(3).collect();
    for oid in &with {
        let bytes = format!("photo of {oid}").into_bytes();
        w.em().set_photo(DIRECTORY, oid.as_str(), Some(bytes));
    }
    let first = sync_photos(&w.ctx(), &PhotoOptions::default())
        .await
        .unwrap();
    assert_eq!(first.checked, synced.len(), "{first:?}");
    assert_eq!(first.downloaded, with.len(), "{first:?}");
    assert_eq!(first.without_photo, synced.len() - with.len(), "{first:?}");
    assert!(first.skipped.is_empty(), "{:?}", first.skipped);
    let stored = w.store.photo_etags(&acme(), &synced).await.unwrap();
    assert_eq!(stored.len(), with.len());
    assert!(with.iter().all(|oid| stored.contains_key(*oid)));
    let again = sync_photos(&w.ctx(), &PhotoOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (again.checked, again.unchanged, again.downloaded),
        (synced.len(), with.len(), 0),
        "{again:?}"
    );
}
