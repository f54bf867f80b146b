//! After "Sign in with Microsoft" the PBX itself knows the user: the gateway in front of the
//! PortSIP stand-in (as its upstream and as `[pbx] api_url`), the Microsoft 365 emulator,
//! and a sync run that created the users on the PBX. `GET /api/login` through the gateway
//! answers the PBX's own "current session" for the signed-in user; without a session the
//! PBX answers 401; the PBX token is renewed when it ends; logout ends it on the PBX; a
//! second instance serves the same PBX identity; a password changed on the PBX gives a
//! clear page; an adopted local user is not touched unless `manage_passwords` is set.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use ms365_gateway::entra::KeyBits;
use ms365_gateway::keyring::Keyring;
use ms365_gateway::settings::{Ms365Settings, PbxSignIn, SyncMode};
use ms365_gateway::store::{RunStatus, Store};
use ms365_gateway::sync::{SyncOptions, run_phases};
use ms365_gateway::tenant_keys::TenantKeys;
use ms365_gateway::{Config, ObjectId, sso::PbxState};
use ms365_stand_ins::emulator::{
    AppRegistration, Emulator, EmulatorConfig, RunningEmulator, User as EmuUser,
};
use ms365_stand_ins::portsip_emulator::{
    LocalUserSpec, PbxEmulator, PbxEmulatorConfig, PbxTenantSpec, RunningPbxEmulator,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::common::{Options, Setup, TestGateway, acme};
use crate::entra::{DIRECTORY, tenant_spec};
use crate::sso::{Browser, Page};

const DOMAIN: &str = "acme.test";
const ADMIN: &str = "acme-admin";
const ADMIN_PASSWORD: &str = "pbx admin password 42";
const PBX_LOGIN: &str = "https://pbx.test/ms365/login?domain=acme.test&client=portal";
const SBC_LOGIN: &str = "https://sbc.test:8883/ms365/login?domain=acme.test&client=webrtc";

/// A gateway whose upstream and PBX REST API is the PortSIP stand-in, after a first sync.
pub struct PbxSessionWorld {
    pub setup: Setup,
    pub config: Config,
    pub gateway: TestGateway,
    pub pbx: RunningPbxEmulator,
    pub emulator: RunningEmulator,
    pub store: Store,
    pub keyring: Keyring,
    /// Synced users the connector creates on the PBX.
    pub people: Vec<EmuUser>,
    /// The Microsoft user a hand-made PBX user matches (adopted by the first sync).
    pub adoptee: EmuUser,
}

#[derive(Default)]
pub struct SessionOptions {
    /// Run on PostgreSQL whatever the suite's backend (several instances).
    pub postgres: bool,
    pub pbx_sign_in: PbxSignIn,
    /// Extra lines in `[sso]`.
    pub sso_extra: &'static str,
    /// Leave the first sync to the test (through the gateway's own worker, say).
    pub no_initial_sync: bool,
}

impl PbxSessionWorld {
    pub async fn new(o: SessionOptions) -> PbxSessionWorld {
        let emulator = Emulator::start(EmulatorConfig {
            seed: 5,
            tenants: vec![small_tenant()],
        })
        .await
        .unwrap();
        let people: Vec<EmuUser> = (emulator.emulator.users(DIRECTORY).into_iter())
            .filter(|u| u.user_type == "Member" && u.account_enabled && u.given_name.is_some())
            .collect();
        let adoptee = people[0].clone();
        let people = people[1..].to_vec();
        let pbx = start_pbx(&adoptee).await;
        let setup = Setup::new();
        let toml = config_toml(&setup, &o, &emulator, &pbx);
        std::fs::write(setup.path("gateway.toml"), &toml).unwrap();
        let config = setup.config(&toml);
        let gateway = TestGateway::start(setup.config(&toml)).await;
        let (store, keyring) = open(&setup, o.postgres).await;
        let w = PbxSessionWorld {
            setup,
            config,
            gateway,
            pbx,
            emulator,
            store,
            keyring,
            people,
            adoptee,
        };
        w.configure_tenant(o.pbx_sign_in).await;
        if !o.no_initial_sync {
            w.sync().await;
        }
        w
    }

    async fn configure_tenant(&self, pbx_sign_in: PbxSignIn) {
        let app = AppRegistration {
            display_name: "PBX".into(),
            redirect_uris: vec![
                "https://pbx.test/ms365/redirect".into(),
                "https://sbc.test:8883/ms365/redirect".into(),
            ],
            permissions: vec!["User.Read.All".into()],
            client_id: None,
        };
        let client_id = self.emulator.emulator.register_app(DIRECTORY, app);
        let mut settings = Ms365Settings {
            directory_id: DIRECTORY.into(),
            application_id: client_id.clone(),
            sync_mode: SyncMode::Manual,
            pbx_sign_in,
            ..Default::default()
        };
        settings.users.enabled = true;
        settings.sign_in_as_standard_user.enabled = true;
        self.store
            .save_ms365_settings(&acme(), &settings)
            .await
            .unwrap();
        let tenant = self.store.tenant(&acme()).await.unwrap().unwrap();
        let keys = TenantKeys::new(self.store.clone(), self.keyring.clone());
        let cert = keys.generate(&tenant, KeyBits::Rsa2048, 365).await.unwrap();
        (self.emulator.emulator)
            .upload_certificate(DIRECTORY, &client_id, &cert.certificate_pem)
            .unwrap();
    }

    /// A sync run as the worker runs it, on the gateway's own configuration.
    pub async fn sync(&self) {
        let ctx = ms365_gateway::sync::context_for_tenant(
            &self.config,
            &self.store,
            &self.keyring,
            &acme(),
        )
        .await
        .unwrap();
        let summary = run_phases(&ctx, SyncOptions::default()).await.unwrap();
        assert_eq!(summary.users.status, RunStatus::Succeeded, "{summary:#?}");
        assert!(summary.pbx_error.is_none(), "{summary:#?}");
    }

    pub fn browser(&self) -> Browser {
        self.browser_of(&self.gateway)
    }

    pub fn browser_of(&self, gateway: &TestGateway) -> Browser {
        Browser::reaching(
            gateway.pbx(),
            gateway.sbc(),
            &self.setup.ca,
            Arc::new(Mutex::new(Default::default())),
        )
    }

    /// The stand-in's record of a user, by username.
    pub fn pbx_user(&self, name: &str) -> Value {
        (self.pbx.emulator.users(DOMAIN).into_iter())
            .find(|u| u["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not on the PBX"))
    }

    /// The PBX username the sync gave a Microsoft user.
    pub async fn username_of(&self, oid: &str) -> String {
        let entry = self
            .store
            .directory_user(&acme(), &ObjectId::new(oid))
            .await
            .unwrap()
            .unwrap();
        let user = self
            .store
            .pbx_user(&acme(), &entry.pbx_user_id)
            .await
            .unwrap();
        user.unwrap().username
    }
}

fn small_tenant() -> ms365_stand_ins::emulator::TenantSpec {
    ms365_stand_ins::emulator::TenantSpec {
        users: 8,
        contacts_per_user: 0,
        photo_share: 0.0,
        shared_mailboxes: 0,
        guests: 0,
        ..tenant_spec()
    }
}

/// The stand-in with tenant `acme.test` and one hand-made user matching `adoptee`.
async fn start_pbx(adoptee: &EmuUser) -> RunningPbxEmulator {
    let local_name = adoptee.user_principal_name.split('@').next().unwrap();
    PbxEmulator::new(PbxEmulatorConfig {
        seed: 9,
        tenants: vec![PbxTenantSpec {
            domain: DOMAIN.into(),
            admin_username: ADMIN.into(),
            admin_password: ADMIN_PASSWORD.into(),
            local_users: vec![LocalUserSpec {
                name: local_name.into(),
                extension_number: "1234".into(),
                email: None,
                display_name: "Made on the PBX".into(),
                password: "Hand-Made-Secret-1".into(),
            }],
        }],
    })
    .start()
    .await
    .unwrap()
}

fn config_toml(
    setup: &Setup,
    o: &SessionOptions,
    emulator: &RunningEmulator,
    pbx: &RunningPbxEmulator,
) -> String {
    let password_file = setup.path("pbx-admin.password");
    std::fs::write(&password_file, format!("{ADMIN_PASSWORD}\n")).unwrap();
    std::fs::set_permissions(
        &password_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut extra = format!(
        "[clouds.GLOBAL]\nlogin = \"{e}\"\ngraph = \"{e}\"\n\n[[tenant]]\nid = \"acme\"\ndomain = \"{DOMAIN}\"\nname = \"Acme\"\npbx_username = \"{ADMIN}\"\npbx_password_file = \"{pw}\"\n\n[pbx]\nkind = \"portsip\"\napi_url = \"{api}\"\nrequest_timeout = \"5s\"\n\n[sso]\n{sso}\n",
        e = emulator.base_url,
        pw = password_file.display(),
        api = pbx.api_url,
        sso = o.sso_extra,
    );
    if o.postgres && !crate::common::db::is_postgres() {
        let url = crate::common::db::postgres_url(&setup.path("data"));
        let key = crate::common::keys::ensure_master_key(&setup.path("data"));
        extra.push_str(&format!(
            "\n[store]\ndatabase_url = \"{url}\"\nmaster_key_file = \"{}\"\n",
            key.display()
        ));
    }
    setup.config_toml(&Options {
        upstream_url: &pbx.base_url,
        extra: &extra,
        ..Default::default()
    })
}

async fn open(setup: &Setup, postgres: bool) -> (Store, Keyring) {
    let data = setup.path("data");
    let store = if postgres && !crate::common::db::is_postgres() {
        let url = crate::common::db::postgres_url(&data);
        Store::open_url(&url, 2).await.unwrap()
    } else {
        crate::common::db::open_store(&data, 2).await
    };
    let keyring = crate::common::keys::open_keyring(&data, &store).await;
    (store, keyring)
}

/// `GET /api/login` through the gateway, as the portal's script asks it.
async fn current_pbx_session(b: &Browser, origin: &str) -> Page {
    b.request(
        "GET",
        &format!("{origin}/api/login"),
        &[("accept", "application/json")],
        None,
    )
    .await
}

async fn session_json(b: &Browser) -> Value {
    let page = b
        .request(
            "GET",
            "https://pbx.test/ms365/session",
            &[("sec-fetch-site", "same-origin")],
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.json()
}

pub async fn signed_in(w: &PbxSessionWorld, user: &EmuUser) -> Browser {
    let b = w.browser();
    let done = b.login(PBX_LOGIN, &user.user_principal_name).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    b
}

#[tokio::test]
async fn after_a_microsoft_sign_in_the_pbx_knows_the_user() {
    let w = PbxSessionWorld::new(SessionOptions::default()).await;
    let anonymous = w.browser();
    let refused = current_pbx_session(&anonymous, "https://pbx.test").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);

    let person = &w.people[0];
    let b = signed_in(&w, person).await;
    let me = current_pbx_session(&b, "https://pbx.test").await;
    assert_eq!(me.status, StatusCode::OK, "the PBX answered: {}", me.body);
    let me = me.json();
    let username = w.username_of(&person.id).await;
    let on_pbx = w.pbx_user(&username);
    assert_eq!(me["id"], on_pbx["id"], "the PBX's own session of that user");
    assert_eq!(me["extension_number"], on_pbx["extension_number"]);
    let token = me["access_token"].as_str().unwrap();
    assert_eq!(
        w.pbx.emulator.token_owner(token),
        Some((DOMAIN.to_string(), username.clone()))
    );
    let s = session_json(&b).await;
    assert_eq!(s["pbx"]["state"], "active", "{s}");

    // The token is kept sealed: neither it nor the user's PBX password is in the row.
    let id_hash =
        ms365_gateway::sso::hash_cookie(&b.cookie("pbx.test", "__Host-pbx_session").await.unwrap());
    let row = w.store.session_pbx(&id_hash).await.unwrap().unwrap();
    let sealed = row.sealed_token.unwrap();
    assert!(!sealed.contains(token), "sealed, not stored in the clear");

    // A client with credentials of its own keeps them.
    let own = b
        .request(
            "GET",
            "https://pbx.test/api/login",
            &[("authorization", "Bearer not-a-pbx-token")],
            None,
        )
        .await;
    assert_eq!(own.status, StatusCode::UNAUTHORIZED, "{}", own.body);
    assert!(w.pbx.emulator.stats().schema_rejections.is_empty());
}

#[tokio::test]
async fn the_gateway_admin_role_grants_no_pbx_rights() {
    let w = PbxSessionWorld::new(SessionOptions::default()).await;
    let person = &w.people[1];
    let mut settings = w.store.ms365_settings(&acme()).await.unwrap();
    settings.sign_in_as_administrator.enabled = true;
    settings.sign_in_as_administrator.selected_users = vec![person.id.clone()];
    w.store
        .save_ms365_settings(&acme(), &settings)
        .await
        .unwrap();
    let b = signed_in(&w, person).await;
    let me = current_pbx_session(&b, "https://pbx.test").await.json();
    let username = w.username_of(&person.id).await;
    assert_eq!(me["role"], w.pbx_user(&username)["role"], "the PBX decides");
    assert_ne!(me["role"], "Admin");
    assert_eq!(
        session_json(&b).await["role"],
        "admin",
        "the gateway's own role"
    );
}

#[tokio::test]
async fn the_pbx_token_is_renewed_when_it_ends_and_logout_ends_it_on_the_pbx() {
    let w = PbxSessionWorld::new(SessionOptions::default()).await;
    let person = &w.people[0];
    let b = signed_in(&w, person).await;
    let first = current_pbx_session(&b, "https://pbx.test").await.json();
    let first_token = first["access_token"].as_str().unwrap().to_string();

    // The PBX's clock passes the token's end while the gateway session lives on.
    w.pbx.emulator.reset_stats();
    w.pbx.emulator.advance_clock(Duration::from_secs(3 * 3600));
    assert_eq!(
        w.pbx.emulator.token_owner(&first_token),
        None,
        "ended on the PBX"
    );
    let again = current_pbx_session(&b, "https://pbx.test").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    let again = again.json();
    assert_eq!(again["id"], first["id"], "the same PBX user");
    let renewed = again["access_token"].as_str().unwrap().to_string();
    assert_ne!(renewed, first_token);
    let stats = w.pbx.emulator.stats();
    assert_eq!(
        stats.refreshes + stats.logins,
        1,
        "one renewal, no loop: {stats:?}"
    );

    let out = b.get("https://pbx.test/ms365/logout").await;
    assert_eq!(out.status, StatusCode::FOUND);
    assert_eq!(
        w.pbx.emulator.token_owner(&renewed),
        None,
        "logout ended the PBX session"
    );
    let after = current_pbx_session(&b, "https://pbx.test").await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{}", after.body);
    let metrics = reqwest::get(format!("http://{}/metrics", w.gateway.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for outcome in ["opened", "renewed", "ended"] {
        assert!(
            metrics.contains(&format!("pbx_sessions_total{{outcome=\"{outcome}\"}} 1")),
            "{outcome}: {metrics}"
        );
    }
}

#[tokio::test]
async fn a_second_instance_on_postgresql_serves_the_same_pbx_identity() {
    let w = PbxSessionWorld::new(SessionOptions {
        postgres: true,
        ..Default::default()
    })
    .await;
    let second = TestGateway::start(w.config.clone()).await;
    let person = &w.people[2];
    let b = signed_in(&w, person).await;
    let on_first = current_pbx_session(&b, "https://pbx.test").await.json();
    let elsewhere = Browser::reaching(second.pbx(), second.sbc(), &w.setup.ca, b.jar.clone());
    let on_second = current_pbx_session(&elsewhere, "https://pbx.test").await;
    assert_eq!(on_second.status, StatusCode::OK, "{}", on_second.body);
    let on_second = on_second.json();
    assert_eq!(on_second["id"], on_first["id"]);
    assert_eq!(
        on_second["access_token"], on_first["access_token"],
        "one PBX session, shared through the store"
    );
    second.stop().await;
}

#[tokio::test]
async fn a_pbx_password_changed_on_the_pbx_or_a_disabled_extension_gets_a_clear_page() {
    let w = PbxSessionWorld::new(SessionOptions::default()).await;
    let (changed, disabled) = (&w.people[0], &w.people[1]);
    let name = w.username_of(&changed.id).await;
    let id = w.pbx_user(&name)["id"].as_str().unwrap().to_string();
    (w.pbx.emulator)
        .edit_user(DOMAIN, &id, json!({"password": "Changed-By-Admin-1"}))
        .unwrap();
    w.pbx.emulator.reset_stats();
    let b = w.browser();
    let page = b.login(PBX_LOGIN, &changed.user_principal_name).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(page.body.contains("PBX_PASSWORD_REJECTED"), "{}", page.body);
    assert!(page.body.contains("changed on the PBX"), "{}", page.body);
    assert!(b.cookie("pbx.test", "__Host-pbx_session").await.is_none());
    assert_eq!(
        w.pbx.emulator.stats().requests["POST /login"],
        1,
        "no retry loop"
    );

    let name = w.username_of(&disabled.id).await;
    let id = w.pbx_user(&name)["id"].as_str().unwrap().to_string();
    (w.pbx.emulator)
        .edit_user(DOMAIN, &id, json!({"enabled": false}))
        .unwrap();
    let page = w
        .browser()
        .login(PBX_LOGIN, &disabled.user_principal_name)
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(page.body.contains("PBX_USER_DISABLED"), "{}", page.body);
}

#[tokio::test]
async fn an_adopted_local_user_is_not_touched_without_manage_passwords() {
    let w = PbxSessionWorld::new(SessionOptions::default()).await;
    let local_name = w.adoptee.user_principal_name.split('@').next().unwrap();
    let before = w.pbx_user(local_name);
    w.pbx.emulator.reset_stats();
    let b = signed_in(&w, &w.adoptee).await;
    let s = session_json(&b).await;
    assert_eq!(s["pbx"]["state"], PbxState::NotManaged.as_str(), "{s}");
    assert!(
        s["pbx"]["message"]
            .as_str()
            .unwrap()
            .contains("manage_passwords")
    );
    let stats = w.pbx.emulator.stats();
    assert!(
        stats.requests.is_empty(),
        "nothing sent to the PBX: {stats:?}"
    );
    assert_eq!(w.pbx_user(local_name), before);
    // Its own password still works on the PBX; through the gateway it is anonymous there.
    let me = current_pbx_session(&b, "https://pbx.test").await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED, "{}", me.body);
}

#[tokio::test]
async fn manage_passwords_tries_to_set_a_password_and_says_when_the_pbx_refuses() {
    let w = PbxSessionWorld::new(SessionOptions {
        pbx_sign_in: PbxSignIn::ManagePasswords,
        ..Default::default()
    })
    .await;
    let local_name = w.adoptee.user_principal_name.split('@').next().unwrap();
    w.pbx.emulator.reset_stats();
    let b = signed_in(&w, &w.adoptee).await;
    let s = session_json(&b).await;
    // The published v22 update body has no `password`: the stand-in, following it, refuses.
    assert_eq!(
        s["pbx"]["state"],
        PbxState::PasswordNotSettable.as_str(),
        "{s}"
    );
    let stats = w.pbx.emulator.stats();
    assert_eq!(
        stats.schema_rejections.get("POST /users/{id}"),
        Some(&1),
        "one attempt: {stats:?}"
    );
    let secret = ms365_gateway::pbx::user_password_secret(
        &acme(),
        &w.store
            .directory_user(&acme(), &ObjectId::new(&w.adoptee.id))
            .await
            .unwrap()
            .unwrap()
            .pbx_user_id,
    );
    assert_eq!(
        w.keyring.get(&secret).await.unwrap(),
        None,
        "a password the PBX did not take is not kept"
    );
    let api = reqwest::Client::new();
    let login = api
        .post(format!("{}/login", w.pbx.api_url))
        .json(&json!({"username": local_name, "password": "Hand-Made-Secret-1", "domain": DOMAIN}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200, "the user's own password still works");
}

#[tokio::test]
async fn the_webrtc_client_on_the_sbc_listener_gets_the_pbx_answer_for_its_user() {
    let w = PbxSessionWorld::new(SessionOptions::default()).await;
    let person = &w.people[3];
    let b = w.browser();
    let done = b.login(SBC_LOGIN, &person.user_principal_name).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    let me = current_pbx_session(&b, "https://sbc.test:8883").await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    let username = w.username_of(&person.id).await;
    assert_eq!(me.json()["id"], w.pbx_user(&username)["id"]);
}

#[tokio::test]
async fn the_admin_status_says_how_many_users_the_pbx_knows_and_why_not_the_rest() {
    let w = PbxSessionWorld::new(SessionOptions::default()).await;
    signed_in(&w, &w.people[0]).await;
    signed_in(&w, &w.adoptee).await;
    let auth = format!("Bearer {}", crate::common::SYSTEM_TOKEN);
    let status = w
        .browser()
        .request(
            "GET",
            "https://pbx.test/api/ms365/status",
            &[("authorization", auth.as_str()), ("x-tenant", "acme")],
            None,
        )
        .await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    let sign_in = &status.json()["pbx"]["sign_in"];
    assert_eq!(sign_in["setting"], "created_users_only");
    let sessions = sign_in["sessions"].as_array().unwrap();
    let count = |state: &str| {
        (sessions.iter())
            .find(|s| s["state"] == state)
            .map_or(0, |s| s["count"].as_u64().unwrap())
    };
    assert_eq!(
        (count("active"), count("not_managed")),
        (1, 1),
        "{sessions:?}"
    );
    let why = sessions
        .iter()
        .find(|s| s["state"] == "not_managed")
        .unwrap();
    assert!(
        why["message"]
            .as_str()
            .unwrap()
            .contains("manage_passwords")
    );
}
