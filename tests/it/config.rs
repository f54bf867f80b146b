//! Bad configurations stop the real binary with exit status 2 and a message naming the file
//! and the key; a good one is described by `check-config`.

use std::process::{Command, Output};

use crate::common::{Options, Setup};

const BIN: &str = env!("CARGO_BIN_EXE_ms365-gateway");

fn run_bin(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("MS365GW_CONFIG")
        .env("MS365GW_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("binary runs")
}

/// Writes `toml` next to the setup's certificates and runs `check-config` and `run` on it.
fn assert_rejected(setup: &Setup, toml: &str, envs: &[(&str, &str)], expected: &[&str]) {
    let path = setup.path("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let path = path.to_str().unwrap();
    for command in ["check-config", "run"] {
        let out = run_bin(&[command, "--config", path], envs);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{command}: expected exit 2, got {:?}; stderr: {stderr}",
            out.status
        );
        assert!(
            stderr.contains("gateway.toml") || stderr.contains("MS365GW_"),
            "{command}: names no file: {stderr}"
        );
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{command}: `{needle}` missing from: {stderr}"
            );
        }
    }
}

fn good(setup: &Setup) -> String {
    setup.config_toml(&Options {
        upstream_url: "http://127.0.0.1:9",
        ..Default::default()
    })
}

#[test]
fn unknown_key_is_named_with_its_path() {
    let setup = Setup::new();
    let toml = good(&setup).replace("kind = \"sbc\"", "kind = \"sbc\"\nbnd = \"x\"");
    assert_rejected(&setup, &toml, &[], &["listener[1].bnd", "unknown field"]);
}

#[test]
fn bad_listener_values_are_named() {
    let setup = Setup::new();
    let cases = [
        (
            good(&setup).replacen("bind = \"127.0.0.1:0\"", "bind = \"localhost\"", 1),
            "listener[0].bind",
        ),
        (
            good(&setup).replace("kind = \"sbc\"", "kind = \"sip\""),
            "listener[1].kind",
        ),
        (
            good(&setup).replace("https://pbx.test", "http://pbx.example.com"),
            "listener[0].public_url",
        ),
        (
            good(&setup).replace("https://pbx.test", "https://pbx.test/portal"),
            "listener[0].public_url",
        ),
        (
            good(&setup).replace(
                setup.sbc_cert.cert.to_str().unwrap(),
                "/nonexistent/sbc.crt",
            ),
            "listener[1].tls_cert",
        ),
    ];
    for (toml, key) in cases {
        assert_rejected(&setup, &toml, &[], &[key]);
    }
}

#[test]
fn other_sections_are_validated() {
    let setup = Setup::new();
    let cases = [
        (
            format!("{}\n[server]\nidle_timeout = \"5 parsecs\"\n", good(&setup)),
            "server.idle_timeout",
        ),
        (
            format!(
                "{}\n[server]\ntrusted_proxies = [\"10.0.0.0/40\"]\n",
                good(&setup)
            ),
            "server.trusted_proxies[0]",
        ),
        (
            format!("{}\n[server]\nthreads = 0\n", good(&setup)),
            "server.threads",
        ),
        (
            format!(
                "{}\n[clouds.MARS]\nlogin = \"https://login.mars\"\n",
                good(&setup)
            ),
            "clouds.MARS",
        ),
        (
            format!(
                "{}\n[clouds.GLOBAL]\nlogin = \"http://login.example.com\"\n",
                good(&setup)
            ),
            "clouds.GLOBAL.login",
        ),
        (
            format!(
                "{}\n[[tenant]]\nid = \"a\"\ndomain = \"x.test\"\n[[tenant]]\nid = \"b\"\ndomain = \"X.test\"\n",
                good(&setup)
            ),
            "tenant[1].domain",
        ),
        (
            format!(
                "{}\n[[tenant]]\nid = \"../etc\"\ndomain = \"x.test\"\n",
                good(&setup)
            ),
            "tenant[0].id",
        ),
        (
            good(&setup).replace("url = \"http://127.0.0.1:9\"", "url = \"ftp://pbx\""),
            "upstream.url",
        ),
    ];
    for (toml, key) in cases {
        assert_rejected(&setup, &toml, &[], &[key]);
    }
}

#[test]
fn environment_override_errors_name_the_variable() {
    let setup = Setup::new();
    assert_rejected(
        &setup,
        &good(&setup),
        &[("MS365GW_UPSTREAM__URL", "gopher://x")],
        &["MS365GW_UPSTREAM__URL", "upstream.url"],
    );
    assert_rejected(
        &setup,
        &good(&setup),
        &[("MS365GW_LISTENER__5__BIND", "127.0.0.1:1")],
        &["MS365GW_LISTENER__5__BIND"],
    );
}

#[test]
fn key_not_matching_certificate_is_refused() {
    let setup = Setup::new();
    let toml = good(&setup).replace(
        setup.pbx_cert.key.to_str().unwrap(),
        setup.sbc_cert.key.to_str().unwrap(),
    );
    assert_rejected(
        &setup,
        &toml,
        &[],
        &["listener[0].tls_cert", "does not match"],
    );
}

#[test]
fn syntax_errors_and_missing_files_exit_2() {
    let setup = Setup::new();
    assert_rejected(
        &setup,
        "data_dir = \"x\"\n[[listener]\n",
        &[],
        &["not valid TOML", "line 2"],
    );
    let out = run_bin(&["run", "--config", "/nonexistent/gateway.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/gateway.toml"));
}

#[test]
fn check_config_describes_a_good_configuration() {
    let setup = Setup::new();
    let path = setup.path("gateway.toml");
    std::fs::write(&path, good(&setup)).unwrap();
    let out = run_bin(
        &["check-config", "--config", path.to_str().unwrap()],
        &[("MS365GW_UPSTREAM__URL", "http://127.0.0.1:8887")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("redirect URI: https://pbx.test/ms365/redirect"),
        "{stdout}"
    );
    assert!(
        stdout.contains("redirect URI: https://sbc.test:8883/ms365/redirect"),
        "{stdout}"
    );
    assert!(
        stdout.contains("upstream: http://127.0.0.1:8887"),
        "override applied: {stdout}"
    );
    let store = if crate::common::db::is_postgres() {
        "store: PostgreSQL postgres://"
    } else {
        "store: SQLite "
    };
    assert!(stdout.contains(store), "{stdout}");
}

#[test]
fn the_sync_section_has_defaults_and_names_a_bad_key() {
    let base = "[[listener]]\nkind = \"pbx\"\nbind = \"127.0.0.1:0\"\npublic_url = \"https://pbx.test\"\n\
                tls_cert = \"self-signed\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n";
    let path = std::path::Path::new("gw.toml");
    let config = ms365_gateway::Config::from_toml(path, base, Vec::new()).unwrap();
    assert_eq!(config.sync.lease_ttl, std::time::Duration::from_secs(60));
    assert_eq!(config.sync.concurrency, 2);
    let short = format!("{base}[sync]\nlease_ttl = \"1s\"\n");
    let err = ms365_gateway::Config::from_toml(path, &short, Vec::new()).unwrap_err();
    assert!(err.to_string().contains("sync.lease_ttl"), "{err}");
    let set = format!("{base}[sync]\nlease_ttl = \"5s\"\nschedule_check_interval = \"500ms\"\n");
    let config = ms365_gateway::Config::from_toml(path, &set, Vec::new()).unwrap();
    assert_eq!(
        config.sync.schedule_check_interval,
        std::time::Duration::from_millis(500)
    );
}

/// Started by a service manager or with output to a file, log lines carry no colour codes.
#[test]
fn log_lines_to_a_file_carry_no_escape_sequences() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(BIN)
        .args(["--log", "info", "emulator", "--bind", "127.0.0.1:0"])
        .env_remove("NO_COLOR")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("binary runs");
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.contains("INFO"), "a log line: {line:?}");
    assert!(!line.contains('\u{1b}'), "escape sequences in {line:?}");
}

/// `[pbx] kind = "portsip"` needs every tenant's PBX sign-in; its parts are checked and
/// named by key.
#[test]
fn the_pbx_connector_settings_are_checked_and_named() {
    let setup = Setup::new();
    let tenant = "\n[[tenant]]\nid = \"acme\"\ndomain = \"acme.test\"\n";
    let portsip = "\n[pbx]\nkind = \"portsip\"\n";
    let toml = format!("{}{portsip}{tenant}", good(&setup));
    assert_rejected(&setup, &toml, &[], &["tenant[0].pbx_username", "portsip"]);
    let toml = format!("{}\n[pbx]\nkind = \"pbx9000\"\n", good(&setup));
    assert_rejected(&setup, &toml, &[], &["pbx.kind"]);
    let toml = format!("{}\n[pbx]\napi_url = \"ftp://pbx\"\n", good(&setup));
    assert_rejected(&setup, &toml, &[], &["pbx.api_url"]);
    let missing = format!(
        "{}{portsip}{tenant}pbx_username = \"admin\"\npbx_password_file = \"{}\"\n",
        good(&setup),
        setup.path("nowhere.pbx-password").display()
    );
    assert_rejected(
        &setup,
        &missing,
        &[],
        &["tenant[0].pbx_password_file", "nowhere"],
    );
    let alone = format!("{}{tenant}pbx_username = \"admin\"\n", good(&setup));
    assert_rejected(&setup, &alone, &[], &["tenant[0].pbx_password_file"]);
}

/// `check-config` says where the PBX password comes from, never what it is.
#[test]
fn check_config_shows_the_pbx_sign_in_without_the_password() {
    let setup = Setup::new();
    let secret = setup.path("acme.pbx-password");
    std::fs::write(&secret, "S3cret-PBX-Passw0rd\n").unwrap();
    let toml = format!(
        "{}\n[pbx]\nkind = \"portsip\"\n\n[[tenant]]\nid = \"acme\"\ndomain = \"acme.test\"\n\
         pbx_username = \"admin\"\npbx_password_file = \"{}\"\n",
        good(&setup),
        secret.display()
    );
    let path = setup.path("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let out = run_bin(&["check-config", "--config", path.to_str().unwrap()], &[]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("pbx: portsip REST API at http://127.0.0.1:9/api"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PBX sign-in: admin (password: set, from"),
        "{stdout}"
    );
    assert!(!stdout.contains("S3cret") && !stderr.contains("S3cret"));
}

#[test]
fn plain_http_microsoft_overrides_are_named_for_the_start_up_warning() {
    let setup = Setup::new();
    let toml = format!(
        "{}\n[clouds.GLOBAL]\nlogin = \"http://127.0.0.1:9\"\ngraph = \"https://graph.example.com\"\n",
        good(&setup)
    );
    let plain = setup.config(&toml).plain_http_clouds();
    assert_eq!(plain.len(), 1, "{plain:?}");
    assert_eq!(plain[0].0, "clouds.GLOBAL.login");
    assert!(plain[0].1.starts_with("http://127.0.0.1:9"), "{plain:?}");
    assert!(setup.config(&good(&setup)).plain_http_clouds().is_empty());
}
