//! Real-time updates end to end (issue #15): the gateway in this process with its sync
//! worker and notification task, the Microsoft 365 emulator delivering change
//! notifications over HTTPS to the pbx listener's public URL (its host routed to the
//! listener's socket, the test CA trusted), and the PortSIP stand-in as the PBX. No test
//! here asks for a run after the first one: what reaches the PBX gets there by a
//! notification and the targeted run it starts.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Request, StatusCode};
use ms365_gateway::Config;
use ms365_gateway::demo::{DemoUpstream, PBX_ADMIN};
use ms365_gateway::entra::KeyBits;
use ms365_gateway::keyring::Keyring;
use ms365_gateway::settings::{Ms365Settings, SyncMode};
use ms365_gateway::store::{RunStatus, RunTrigger, Store, SyncRun};
use ms365_gateway::tenant_keys::TenantKeys;
use ms365_stand_ins::emulator::{
    AppRegistration, Emulator, EmulatorConfig, LifecycleEvent, NewContact, NewUser,
    NotificationFaults, RunningEmulator, TenantSpec, UserPatch,
};
use ms365_stand_ins::portsip_emulator::PbxFaults;
use serde_json::Value;

use crate::common::client::{body, fetch, h1};
use crate::common::{Options, Setup, TestGateway, acme, until};
use crate::entra::{DIRECTORY, tenant_spec};

const DOMAIN: &str = "acme.test";
const PBX_PASSWORD: &str = "pbx admin password for realtime";

struct World {
    setup: Setup,
    emulator: RunningEmulator,
    upstream: DemoUpstream,
    gateway: TestGateway,
    store: Store,
    #[allow(dead_code)]
    keyring: Keyring,
    /// The shared mailbox whose contacts are company contacts.
    shared: String,
}

impl World {
    /// A tenant syncing users and one shared mailbox to the PortSIP stand-in, real-time
    /// updates on (1 s debounce); `route` = whether the emulator can reach the gateway.
    async fn new(route: bool) -> World {
        let emulator = Emulator::start(EmulatorConfig {
            seed: 15,
            tenants: vec![spec()],
        })
        .await
        .unwrap();
        let em = &emulator.emulator;
        let client_id = em.register_app(
            DIRECTORY,
            AppRegistration {
                display_name: "PBX".into(),
                redirect_uris: vec!["https://pbx.test/ms365/redirect".into()],
                permissions: vec!["User.Read.All".into(), "Contacts.Read".into()],
                client_id: None,
            },
        );
        let upstream = DemoUpstream::start(DOMAIN, PBX_PASSWORD).await.unwrap();
        let setup = Setup::new();
        let config = config(&setup, &emulator.base_url, &upstream.url);
        let gateway = TestGateway::start(config).await;
        if route {
            em.route_notifications("pbx.test", gateway.pbx());
            em.trust_notification_ca(&setup.ca.cert_pem);
        }
        let store = crate::common::db::open_store(&setup.path("data"), 2).await;
        let keyring = crate::common::keys::open_keyring(&setup.path("data"), &store).await;
        let shared = (em.users(DIRECTORY).into_iter())
            .find(|u| u.given_name.is_none() && !u.account_enabled)
            .expect("a shared mailbox")
            .id;
        let world = World {
            setup,
            emulator,
            upstream,
            gateway,
            store,
            keyring,
            shared,
        };
        world.configure(&client_id).await;
        world
    }

    async fn configure(&self, client_id: &str) {
        let mut settings = Ms365Settings {
            directory_id: DIRECTORY.into(),
            application_id: client_id.into(),
            sync_mode: SyncMode::Manual,
            ..Default::default()
        };
        settings.users.enabled = true;
        settings.shared_mailbox.enabled = true;
        settings.shared_mailbox.selected_users = vec![self.shared.clone()];
        settings.realtime.debounce_seconds = 1;
        self.store
            .save_ms365_settings(&acme(), &settings)
            .await
            .unwrap();
        let tenant = self.store.tenant(&acme()).await.unwrap().unwrap();
        let keys = TenantKeys::new(self.store.clone(), self.keyring.clone());
        let cert = keys.generate(&tenant, KeyBits::Rsa2048, 365).await.unwrap();
        (self.em())
            .upload_certificate(DIRECTORY, client_id, &cert.certificate_pem)
            .unwrap();
    }

    fn em(&self) -> &Emulator {
        &self.emulator.emulator
    }

    /// The first (full) run, asked for as "Sync now" would.
    async fn first_run(&self) {
        let result = (self.gateway.sync)
            .request(&acme(), RunTrigger::Api)
            .unwrap()
            .wait()
            .await;
        let summary = result.as_ref().as_ref().expect("the first run");
        assert!(summary.pbx_error.is_none(), "{summary:#?}");
    }

    /// Waits for the users and the shared-mailbox subscriptions.
    async fn subscribed(&self) -> Vec<ms365_gateway::store::StoredSubscription> {
        until("the users and shared-mailbox subscriptions", || async {
            let subs = self.store.subscriptions(&acme()).await.unwrap();
            subs.iter().filter(|s| s.active).count() == 2
        })
        .await;
        let subs = self.store.subscriptions(&acme()).await.unwrap();
        assert_eq!(
            self.em().subscriptions(DIRECTORY).len(),
            2,
            "Graph holds exactly the subscriptions the store knows"
        );
        subs
    }

    fn pbx_users(&self) -> BTreeMap<String, Value> {
        (self.upstream.pbx.users(DOMAIN).into_iter())
            .map(|u| (text(&u, "ms365_binding").to_string(), u))
            .collect()
    }

    async fn runs(&self) -> Vec<SyncRun> {
        self.store.sync_runs(&acme(), 100).await.unwrap()
    }

    /// Every run after the first was started by notifications and asked Graph for O(1).
    async fn assert_targeted_runs_only(&self, most_graph_requests: u64) {
        let runs = self.runs().await;
        let (first, later) = runs.split_last().expect("runs");
        assert_eq!(first.trigger, RunTrigger::Api);
        assert!(!later.is_empty(), "a targeted run happened");
        for run in later {
            assert_eq!(run.trigger, RunTrigger::Notification, "{run:?}");
            assert!(
                run.graph_requests <= most_graph_requests,
                "a targeted run asked Graph {} times: {run:?}",
                run.graph_requests
            );
        }
    }

    /// POSTs `payload` to a notification URL of the gateway, as anyone on the internet can.
    async fn post(&self, path: &str, content_type: &str, payload: Vec<u8>) -> StatusCode {
        let mut sender = h1(self.gateway.pbx(), "pbx.test", &self.setup.ca.roots()).await;
        let req = Request::post(path)
            .header("host", "pbx.test")
            .header("content-type", content_type)
            .body(body(payload))
            .unwrap();
        fetch(&mut sender, req).await.0.status
    }

    /// The gateway's `/metrics` text.
    async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.gateway.admin);
        reqwest::get(url).await.unwrap().text().await.unwrap()
    }
}

fn spec() -> TenantSpec {
    TenantSpec {
        users: 12,
        contacts_per_user: 2,
        ..tenant_spec()
    }
}

fn config(setup: &Setup, emulator: &str, upstream: &str) -> Config {
    let password_file = setup.path("pbx-admin.password");
    std::fs::write(&password_file, PBX_PASSWORD).unwrap();
    std::fs::set_permissions(
        &password_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let extra = format!(
        "[clouds.GLOBAL]\nlogin = \"{emulator}\"\ngraph = \"{emulator}\"\n\n[[tenant]]\n\
         id = \"acme\"\ndomain = \"{DOMAIN}\"\nname = \"Acme\"\npbx_username = \"{PBX_ADMIN}\"\n\
         pbx_password_file = \"{pw}\"\n\n[pbx]\nkind = \"portsip\"\n\n[sync]\n\
         subscription_check_interval = \"200ms\"\n",
        pw = password_file.display(),
    );
    let toml = setup.config_toml(&Options {
        upstream_url: upstream,
        extra: &extra,
        ..Default::default()
    });
    setup.config(&toml)
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_in_microsoft_365_reach_the_pbx_without_a_scheduled_run() {
    let w = World::new(true).await;
    w.first_run().await;
    w.subscribed().await;

    // A new hire becomes an extension.
    let hire = w.em().add_user(
        DIRECTORY,
        NewUser {
            user_principal_name: "new.hire@contoso.onmicrosoft.com".into(),
            display_name: "New Hire".into(),
            given_name: Some("New".into()),
            surname: Some("Hire".into()),
            mail: Some("new.hire@contoso.onmicrosoft.com".into()),
            ..Default::default()
        },
    );
    until("the new hire on the PBX", || async {
        w.pbx_users().contains_key(&hire.id)
    })
    .await;
    assert!(!text(&w.pbx_users()[&hire.id], "extension_number").is_empty());

    // A rename changes the PBX name.
    let patch = UserPatch {
        display_name: Some("Renamed Hire".into()),
        ..Default::default()
    };
    w.em().update_user(DIRECTORY, &hire.id, patch);
    until("the rename on the PBX", || async {
        text(&w.pbx_users()[&hire.id], "display_name") == "Renamed Hire"
    })
    .await;

    // A disabled account is disabled on the PBX.
    let patch = UserPatch {
        account_enabled: Some(false),
        ..Default::default()
    };
    w.em().update_user(DIRECTORY, &hire.id, patch);
    until("the disabled user on the PBX", || async {
        w.pbx_users()[&hire.id].get("enabled") == Some(&Value::Bool(false))
    })
    .await;

    // A new shared-mailbox contact becomes a company contact.
    let contact = NewContact {
        display_name: "Realtime Supplier".into(),
        business_phones: vec!["+1 555 0100".into()],
        ..Default::default()
    };
    w.em().add_contact(DIRECTORY, &w.shared, contact);
    until("the company contact on the PBX", || async {
        (w.upstream.pbx.contacts(DOMAIN).iter()).any(|c| text(c, "name") == "Realtime Supplier")
    })
    .await;

    w.assert_targeted_runs_only(5).await;
    let status = w.store.realtime_status(&acme()).await.unwrap().unwrap();
    assert!(status.ok && status.last_notification > 0, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_notifications_trigger_nothing() {
    let w = World::new(true).await;
    w.first_run().await;
    let subs = w.subscribed().await;
    let graph_before = w.em().stats();
    let runs_before = w.runs().await.len();

    let forged = |id: &str, state: &str| {
        serde_json::json!({"value": [{
            "subscriptionId": id, "clientState": state, "changeType": "updated",
            "resource": "Users/x", "tenantId": DIRECTORY,
        }]})
        .to_string()
        .into_bytes()
    };
    let json = "application/json";
    let unknown = w.post(
        "/ms365/notifications",
        json,
        forged("no-such-subscription", "x"),
    );
    assert_eq!(
        unknown.await,
        StatusCode::ACCEPTED,
        "Graph-shaped, so accepted"
    );
    let wrong = w.post("/ms365/notifications", json, forged(&subs[0].id, "guessed"));
    assert_eq!(wrong.await, StatusCode::ACCEPTED);
    let lifecycle = serde_json::json!({"value": [{"subscriptionId": subs[0].id,
        "clientState": "guessed", "lifecycleEvent": "subscriptionRemoved"}]});
    let removed = w.post(
        "/ms365/notifications/lifecycle",
        json,
        lifecycle.to_string().into_bytes(),
    );
    assert_eq!(removed.await, StatusCode::ACCEPTED);
    let huge = vec![b' '; 300 * 1024];
    let too_large = w.post("/ms365/notifications", json, huge);
    assert_eq!(too_large.await, StatusCode::PAYLOAD_TOO_LARGE);
    let plain = w.post("/ms365/notifications", "text/plain", b"{}".to_vec());
    assert_eq!(plain.await, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let garbage = w.post("/ms365/notifications", json, b"{\"value\": 3}".to_vec());
    assert_eq!(garbage.await, StatusCode::BAD_REQUEST);

    until("the forged notifications counted", || async {
        let m = w.metrics().await;
        m.contains("ms365_gateway_graph_notifications_total{outcome=\"unknown_subscription\"} 1")
            && m.contains(
                "ms365_gateway_graph_notifications_total{outcome=\"client_state_mismatch\"} 2",
            )
    })
    .await;
    let m = w.metrics().await;
    assert!(m.contains("ms365_gateway_graph_notifications_total{outcome=\"too_large\"} 1"));
    assert!(m.contains("ms365_gateway_graph_notifications_total{outcome=\"malformed\"} 2"));
    assert!(
        w.store.realtime_due().await.unwrap().is_empty(),
        "nothing queued"
    );
    assert_eq!(w.runs().await.len(), runs_before, "no run started");
    let after = w.store.subscriptions(&acme()).await.unwrap();
    assert_eq!(
        after, subs,
        "the forged subscriptionRemoved removed nothing"
    );
    let graph_after = w.em().stats();
    for class in ms365_stand_ins::emulator::RouteClass::EACH {
        assert_eq!(
            graph_after.class(class).requests,
            graph_before.class(class).requests,
            "no Graph traffic for {class:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validation_handshake_echoes_the_token() {
    let w = World::new(false).await;
    let mut sender = h1(w.gateway.pbx(), "pbx.test", &w.setup.ca.roots()).await;
    let req = Request::post("/ms365/notifications?validationToken=Validation%3A%20Testing%20abc")
        .header("host", "pbx.test")
        .header("content-type", "text/plain; charset=utf-8")
        .body(body(Vec::new()))
        .unwrap();
    let (parts, text) = fetch(&mut sender, req).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(text, "Validation: Testing abc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_renewed_and_recreated_after_removal() {
    let w = World::new(true).await;
    w.em()
        .set_subscription_lifetime_cap(Some(Duration::from_secs(6)));
    w.first_run().await;
    let first = w.subscribed().await;
    let users = first.iter().find(|s| s.target == "users").unwrap().clone();
    until("a renewal before expiry", || async {
        let now = w.store.subscriptions(&acme()).await.unwrap();
        now.iter()
            .any(|s| s.id == users.id && s.expires_at > users.expires_at)
    })
    .await;
    assert!(
        (w.em().subscriptions(DIRECTORY).iter()).any(|s| s.id == users.id),
        "renewed at Graph, not recreated"
    );

    w.em()
        .fire_lifecycle(DIRECTORY, &users.id, LifecycleEvent::SubscriptionRemoved)
        .await
        .unwrap();
    until("the users subscription created again", || async {
        let now = w.store.subscriptions(&acme()).await.unwrap();
        now.iter()
            .any(|s| s.target == "users" && s.active && s.id != users.id)
    })
    .await;
    let at_graph = w.em().subscriptions(DIRECTORY);
    assert_eq!(at_graph.len(), 2, "{at_graph:?}");
    assert!(at_graph.iter().all(|s| s.id != users.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_is_caught_by_the_next_scheduled_run() {
    let w = World::new(true).await;
    w.first_run().await;
    w.subscribed().await;
    w.em().set_notification_faults(NotificationFaults {
        drop_next: 1,
        ..Default::default()
    });
    let contact = NewContact {
        display_name: "Lost Supplier".into(),
        ..Default::default()
    };
    w.em().add_contact(DIRECTORY, &w.shared, contact);
    until("the notification lost", || async {
        w.em().notification_stats().dropped == 1
    })
    .await;
    let on_pbx = |w: &World| {
        (w.upstream.pbx.contacts(DOMAIN).iter()).any(|c| text(c, "name") == "Lost Supplier")
    };
    assert!(!on_pbx(&w));
    assert!(w.store.realtime_due().await.unwrap().is_empty());
    let result = (w.gateway.sync)
        .request(&acme(), RunTrigger::Schedule)
        .unwrap()
        .wait()
        .await;
    assert!(result.as_ref().is_ok(), "{result:?}");
    assert!(on_pbx(&w), "the scheduled run caught the lost change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targeted_run_that_fails_is_tried_again_later() {
    let w = World::new(true).await;
    w.first_run().await;
    w.subscribed().await;
    let pbx_down = PbxFaults {
        error_rate: 1.0,
        ..PbxFaults::default()
    };
    w.upstream.pbx.set_faults(pbx_down);
    let contact = NewContact {
        display_name: "Retried Supplier".into(),
        ..Default::default()
    };
    w.em().add_contact(DIRECTORY, &w.shared, contact);
    let now_ms = || ms365_gateway::store::now_epoch() * 1000;
    until(
        "the failed run's notifications queued again, later",
        || async {
            let due = w.store.realtime_due().await.unwrap();
            due.first()
                .is_some_and(|(_, first_ms)| *first_ms > now_ms() + 20_000)
        },
    )
    .await;
    let runs = w.runs().await;
    assert_eq!(runs[0].trigger, RunTrigger::Notification);
    assert_eq!(runs[0].status, RunStatus::Failed, "{:?}", runs[0]);

    // The PBX is back; the retry's time comes (moved forward rather than waited for).
    w.upstream.pbx.set_faults(PbxFaults::default());
    let queued = w.store.take_realtime_queue(&acme()).await.unwrap();
    let shared = format!("retry:1:shared:{}", w.shared);
    assert!(queued.contains(&shared), "{queued:?}");
    for word in &queued {
        w.store.queue_realtime(&acme(), word, 0).await.unwrap();
    }
    until("the retried contact on the PBX", || async {
        (w.upstream.pbx.contacts(DOMAIN).iter()).any(|c| text(c, "name") == "Retried Supplier")
    })
    .await;
    w.assert_targeted_runs_only(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_notification_url_is_explained_and_sync_goes_on() {
    let w = World::new(false).await;
    w.first_run().await;
    until("the failed subscription recorded", || async {
        w.store.realtime_status(&acme()).await.unwrap().is_some()
    })
    .await;
    let status = w.store.realtime_status(&acme()).await.unwrap().unwrap();
    assert!(!status.ok);
    assert!(
        status
            .message
            .starts_with("off: subscription could not be created")
            && status.message.contains("reachable from the internet"),
        "{}",
        status.message
    );
    let subs = w.store.subscriptions(&acme()).await.unwrap();
    assert!(subs.iter().all(|s| !s.active), "{subs:?}");
    // Failed attempts wait for their retry time: checks in the meantime ask Graph nothing.
    let subscriptions = ms365_stand_ins::emulator::RouteClass::Subscriptions;
    let attempts = w.em().stats().class(subscriptions).requests;
    let result = (w.gateway.sync)
        .request(&acme(), RunTrigger::Api)
        .unwrap()
        .wait()
        .await;
    let later = w.em().stats().class(subscriptions).requests;
    assert_eq!(attempts, later, "no new attempt before the retry time");
    assert!(
        result.as_ref().is_ok(),
        "scheduled sync keeps working: {result:?}"
    );
}
