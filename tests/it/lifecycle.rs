//! Connection lifetime and shutdown: in-flight requests finish, idle connections close, the
//! connection limit holds, and the real binary reloads on SIGHUP and exits 0 on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::common::client::{self, fetch, get, presented_leaf, tls_connect};
use crate::common::{Options, Setup, StubUpstream, start_with};

#[tokio::test]
async fn a_request_in_flight_during_shutdown_completes() {
    let setup = Setup::new();
    let (upstream, mut gw) = start_with(&setup, "", "").await;
    let mut c = client::h1(gw.pbx(), "pbx.test", &setup.ca.roots()).await;
    let pending = tokio::spawn(async move { fetch(&mut c, get("pbx.test", "/held")).await });
    upstream
        .held_arrivals
        .lock()
        .await
        .recv()
        .await
        .expect("request reached the upstream");
    gw.shutdown.cancel();
    // Stopped accepting: the listener socket is closed once the accept loop has returned.
    let addr = gw.pbx();
    let refused = async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .expect("new connections refused during shutdown");
    upstream.release.notify_waiters();
    let (parts, body) = pending.await.unwrap();
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "released");
    let run = gw.run.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("shutdown finishes")
        .unwrap();
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let setup = Setup::new();
    let (_upstream, gw) = start_with(&setup, "", "[server]\nidle_timeout = \"200ms\"").await;
    let tls = tls_connect(gw.pbx(), "pbx.test", &setup.ca.roots(), &[b"http/1.1"])
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let (parts, _) = fetch(&mut sender, get("pbx.test", "/hello")).await;
    assert_eq!(parts.status, StatusCode::OK);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("server closed the idle connection")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "closed before the idle timeout"
    );
    gw.stop().await;
}

#[tokio::test]
async fn connections_past_the_limit_wait_for_a_free_slot() {
    let setup = Setup::new();
    let (_upstream, gw) = start_with(&setup, "", "[server]\nmax_connections = 1").await;
    let roots = setup.ca.roots();
    let first = tls_connect(gw.pbx(), "pbx.test", &roots, &[])
        .await
        .unwrap();
    let second = tokio::spawn({
        let (addr, roots) = (gw.sbc(), roots.clone());
        async move { tls_connect(addr, "sbc.test", &roots, &[]).await }
    });
    // The second handshake cannot finish while the only slot is taken.
    let waited = tokio::time::timeout(Duration::from_millis(300), async {
        while !second.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        waited.is_err(),
        "second connection was served beyond max_connections = 1"
    );
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("served once the slot frees")
        .unwrap()
        .unwrap();
    assert_eq!(presented_leaf(&second), setup.sbc_cert.der);
    gw.stop().await;
}

/// The binary end to end: start, answer, reload certificates on SIGHUP, exit 0 on SIGTERM.
#[tokio::test]
async fn binary_reloads_on_sighup_and_stops_cleanly_on_sigterm() {
    let setup = Setup::new();
    let upstream = StubUpstream::start().await;
    let url = upstream.url();
    let toml = setup.config_toml(&Options {
        upstream_url: &url,
        extra: "[server]\ncert_reload_interval = \"1h\"",
        ..Default::default()
    });
    let path = setup.path("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ms365-gateway"))
        .args([
            "--log-format",
            "json",
            "--log",
            "info",
            "run",
            "--config",
            path.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addrs, lines) = read_addresses(child.stderr.take().unwrap());
    let roots = setup.ca.roots();
    let mut c = client::h1(addrs[0], "pbx.test", &roots).await;
    let (parts, body) = fetch(&mut c, get("pbx.test", "/hello")).await;
    assert_eq!(
        (parts.status, body.as_str()),
        (StatusCode::OK, "hello from upstream")
    );

    let renewed = setup.ca.issue(setup.dir.path(), "pbx", &["pbx.test"]);
    signal(&child, "-HUP");
    wait_for_line(&lines, "certificates reloaded");
    let fresh = tls_connect(addrs[0], "pbx.test", &roots, &[])
        .await
        .unwrap();
    assert_eq!(presented_leaf(&fresh), renewed.der);

    signal(&child, "-TERM");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    wait_for_line(&lines, "gateway stopped");
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

type Lines = std::sync::mpsc::Receiver<String>;

/// Reads the JSON log until the listeners are announced; the rest keeps flowing to `Lines`.
fn read_addresses(stderr: std::process::ChildStderr) -> (Vec<std::net::SocketAddr>, Lines) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut addrs = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("gateway started");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        match v["message"].as_str() {
            Some("listening") => addrs.push(v["addr"].as_str().unwrap().parse().unwrap()),
            Some("gateway serving") => return (addrs, rx),
            _ => {}
        }
    }
}

fn wait_for_line(lines: &Lines, message: &str) {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no log line `{message}`"));
        if line.contains(message) {
            return;
        }
    }
}
