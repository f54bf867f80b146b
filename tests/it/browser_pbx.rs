//! The WebRTC client in a real browser (headless Chromium over WebDriver) behind the real
//! `ms365-gateway run` binary, in front of the demo PBX (its pages plus the PortSIP
//! stand-in as its REST API, `[pbx] kind = "portsip"`): after "Sign in with Microsoft" on
//! the SBC listener, the page's own `GET /api/login` is answered by the PBX for that user.

use http::StatusCode;
use ms365_gateway::ObjectId;
use ms365_gateway::demo::{DemoUpstream, PBX_ADMIN};
use ms365_gateway::entra::KeyBits;
use ms365_gateway::settings::{Ms365Settings, SyncMode};
use ms365_gateway::sync::{SyncOptions, run_phases};
use ms365_gateway::tenant_keys::TenantKeys;
use ms365_stand_ins::emulator::{AppRegistration, Emulator, EmulatorConfig, TenantSpec};
use serde_json::json;

use crate::common::process::GatewayProcess;
use crate::common::webdriver::{Browser, BrowserOptions};
use crate::common::{Options, Setup, acme};
use crate::entra::{DIRECTORY, tenant_spec};

const SBC: &str = "https://sbc.test:8883";
const PBX_PASSWORD: &str = "demo pbx admin password";

fn spec() -> TenantSpec {
    TenantSpec {
        users: 5,
        contacts_per_user: 0,
        photo_share: 0.0,
        shared_mailboxes: 0,
        guests: 0,
        ..tenant_spec()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webrtc_client_signed_in_with_microsoft_sees_the_pbx_session_of_its_user() {
    let emulator = Emulator::start(EmulatorConfig {
        seed: 6,
        tenants: vec![spec()],
    })
    .await
    .unwrap();
    let client_id = emulator.emulator.register_app(
        DIRECTORY,
        AppRegistration {
            display_name: "PBX".into(),
            redirect_uris: vec![format!("{SBC}/ms365/redirect")],
            permissions: vec!["User.Read.All".into()],
            client_id: None,
        },
    );
    let upstream = DemoUpstream::start("acme.test", PBX_PASSWORD)
        .await
        .unwrap();
    let setup = Setup::new();
    let password_file = setup.path("pbx-admin.password");
    std::fs::write(&password_file, PBX_PASSWORD).unwrap();
    std::fs::set_permissions(
        &password_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let extra = format!(
        "[clouds.GLOBAL]\nlogin = \"{e}\"\ngraph = \"{e}\"\n\n[[tenant]]\nid = \"acme\"\n\
         domain = \"acme.test\"\nname = \"Acme\"\npbx_username = \"{PBX_ADMIN}\"\n\
         pbx_password_file = \"{pw}\"\n\n[pbx]\nkind = \"portsip\"\n",
        e = emulator.base_url,
        pw = password_file.display(),
    );
    let toml = setup.config_toml(&Options {
        upstream_url: &upstream.url,
        extra: &extra,
        ..Default::default()
    });
    let path = setup.path("gateway.toml");
    std::fs::write(&path, &toml).unwrap();
    let config = setup.config(&toml);

    // The tenant set up and synced to the PBX before the binary starts.
    let store = crate::common::db::open_store(&setup.path("data"), 2).await;
    for seed in &config.tenants {
        store.upsert_tenant(seed).await.unwrap();
    }
    let keyring = crate::common::keys::open_keyring(&setup.path("data"), &store).await;
    let mut settings = Ms365Settings {
        directory_id: DIRECTORY.into(),
        application_id: client_id.clone(),
        sync_mode: SyncMode::Manual,
        ..Default::default()
    };
    settings.users.enabled = true;
    settings.sign_in_as_standard_user.enabled = true;
    store.save_ms365_settings(&acme(), &settings).await.unwrap();
    let tenant = store.tenant(&acme()).await.unwrap().unwrap();
    let keys = TenantKeys::new(store.clone(), keyring.clone());
    let cert = keys.generate(&tenant, KeyBits::Rsa2048, 365).await.unwrap();
    (emulator.emulator)
        .upload_certificate(DIRECTORY, &client_id, &cert.certificate_pem)
        .unwrap();
    let ctx = ms365_gateway::sync::context_for_tenant(&config, &store, &keyring, &acme())
        .await
        .unwrap();
    let summary = run_phases(&ctx, SyncOptions::default()).await.unwrap();
    assert!(summary.pbx_error.is_none(), "{summary:#?}");
    let person = (emulator.emulator.users(DIRECTORY).into_iter())
        .find(|u| u.user_type == "Member" && u.account_enabled && u.given_name.is_some())
        .unwrap();
    let entry = store
        .directory_user(&acme(), &ObjectId::new(&person.id))
        .await
        .unwrap()
        .unwrap();
    let username = (store.pbx_user(&acme(), &entry.pbx_user_id).await.unwrap())
        .unwrap()
        .username;
    let on_pbx = (upstream.pbx.users("acme.test").into_iter())
        .find(|u| u["name"] == username.as_str())
        .expect("the sync created the user on the PBX");
    store.close().await;

    let gateway = GatewayProcess::start(&path);
    let b = Browser::start(BrowserOptions {
        test: "webrtc_pbx_session",
        hosts: vec![
            ("pbx.test:443".into(), gateway.pbx),
            ("sbc.test:8883".into(), gateway.sbc),
        ],
        downloads: None,
    })
    .await;
    b.goto(&format!("{SBC}/ms365/?domain=acme.test&client=webrtc"))
        .await;
    b.click("#ms365-signin").await;
    let pick = format!("#accounts button[value=\"{}\"]", person.user_principal_name);
    b.click(&pick).await;
    b.wait_until(
        "the PBX's answer on the WebRTC page",
        "const e = document.getElementById('pbx-session'); \
         return e && e.dataset.pbxUser ? e.textContent : false",
        json!([]),
    )
    .await;
    b.screenshot("1-webrtc-pbx-session").await;
    assert_eq!(b.current_url().await, format!("{SBC}/webrtc/"));
    assert_eq!(
        b.attribute("#pbx-session", "data-pbx-user")
            .await
            .as_deref(),
        on_pbx["id"].as_str(),
        "the PBX's own session of the signed-in user"
    );
    let text = b.text("#pbx-session").await;
    let extension = on_pbx["extension_number"].as_str().unwrap();
    assert!(text.contains(&format!("extension {extension}")), "{text}");
    let anonymous = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve("sbc.test", gateway.sbc)
        .build()
        .unwrap()
        .get(format!("https://sbc.test:{}/api/login", gateway.sbc.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        StatusCode::UNAUTHORIZED,
        "without a session the PBX answers 401"
    );
}
