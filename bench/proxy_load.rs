//! What `bench/proxy/run.sh` needs besides nginx and h2load: the WebSocket echo server
//! behind both proxies, the WebSocket load generator that measures them the way h2load
//! measures HTTP, and a signed-in session for the "with a session cookie" rows.
//!
//! ```text
//! proxy_load echo ADDR
//! proxy_load load URL --ca CERT [-c 32] [-D 10] [--warm-up-time 2] [--size 600] [--log-file F]
//! proxy_load session DATA_DIR
//! ```
//!
//! `echo` answers every text or binary message with the same message (the PBX's SIP-over-
//! WebSocket endpoint stands behind the proxy the same way: one frame in, one frame out).
//! `load` opens `-c` connections through TLS (HTTP/1.1 upgrade, `wss://`), and on each sends
//! a `--size`-byte text message, waits for its echo, and sends the next, for the warm-up and
//! then `-D` seconds. It prints h2load's summary lines (`finished in`, `requests:`,
//! `status codes:`), counting one echoed message as one request, and writes one line per
//! measured message to `--log-file` in h2load's format (start µs, status, latency µs), so
//! `run.sh` reads both tools the same way. A connection that fails counts as errored.
//!
//! `session` prepares a gateway data directory (SQLite, before the gateway starts) the way
//! a sign-in leaves it: a tenant, a synced user, the master key and session keys, and a
//! live portal session, and prints the session cookie's value. The gateway then resolves
//! that cookie like any other (its session cache, identity headers for the PBX).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ms365_gateway::TenantId;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = match args.first().map(String::as_str) {
        Some("echo") if args.len() == 2 => runtime.block_on(echo(&args[1])),
        Some("session") if args.len() == 2 => runtime.block_on(session(&args[1])),
        Some("load") => match LoadArgs::parse(&args[1..]) {
            Ok(load) => runtime.block_on(run_load(load)),
            Err(e) => Err(e),
        },
        // `cargo bench` runs every bench target with `--bench`: nothing to do alone.
        Some("--bench") | None => {
            eprintln!("proxy_load: started by bench/proxy/run.sh (see its header)");
            Ok(())
        }
        _ => Err(
            "usage: proxy_load echo ADDR | load URL --ca CERT [options] | session DATA_DIR".into(),
        ),
    };
    if let Err(e) = result {
        eprintln!("proxy_load: {e}");
        std::process::exit(1);
    }
}

async fn echo(addr: &str) -> Result<(), Failure> {
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                let reply = match message {
                    Message::Text(_) | Message::Binary(_) => message,
                    Message::Close(_) => break,
                    _ => continue,
                };
                if ws.send(reply).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn session(data_dir: &str) -> Result<(), Failure> {
    use ms365_gateway::config::TenantSeed;
    use ms365_gateway::keyring::{GENERATED_KEY_FILE, Keyring, MasterKeySource};
    use ms365_gateway::sso::SessionKeys;
    use ms365_gateway::sso::{ClientKind, Sessions};
    use ms365_gateway::store::{DirectoryUser, Role, Store};

    ms365_gateway::edge::install_default_crypto_provider();
    let dir = std::path::Path::new(data_dir);
    std::fs::create_dir_all(dir)?;
    let store = Store::open_sqlite(dir, 2).await?;
    let seed = TenantSeed {
        pbx_login: None,
        id: TenantId::from_static("bench"),
        domain: "127.0.0.1".into(),
        name: "Bench".into(),
    };
    let tenant = store.upsert_tenant(&seed).await?;
    let user = DirectoryUser {
        tenant_id: tenant.id.clone(),
        oid: "00000000-0000-0000-0000-00000000b001".into(),
        upn: "bench.user@bench.test".into(),
        pbx_user_id: "bench-101".into(),
        extension: Some("101".into()),
        display_name: "Bench User".into(),
        email: Some("bench.user@bench.test".into()),
        role: Role::User,
        enabled: true,
        source: "sync".into(),
    };
    store.upsert_directory_user(&user).await?;
    // The gateway generates `master.key` in its data directory on first start; made here
    // first, it is the key the gateway then opens.
    let source = MasterKeySource::Generated(dir.join(GENERATED_KEY_FILE));
    let keyring = Keyring::open(store.clone(), &source).await?;
    let keys = Arc::new(SessionKeys::load_or_create(&keyring).await?);
    let lifetime = Duration::from_secs(8 * 3600);
    let sessions = Sessions::new(store.clone(), keys, lifetime, "https://127.0.0.1".into());
    let (cookie, _) = (sessions.create(&tenant, &user, ClientKind::Portal, "pbx#0")).await?;
    store.close().await;
    println!("{cookie}");
    Ok(())
}

struct LoadArgs {
    url: String,
    ca: String,
    connections: usize,
    duration: Duration,
    warm_up: Duration,
    size: usize,
    log_file: Option<String>,
}

impl LoadArgs {
    fn parse(args: &[String]) -> Result<Self, Failure> {
        let mut load = LoadArgs {
            url: String::new(),
            ca: String::new(),
            connections: 32,
            duration: Duration::from_secs(10),
            warm_up: Duration::from_secs(2),
            size: 600,
            log_file: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--ca" => load.ca = value()?.clone(),
                "-c" => load.connections = value()?.parse()?,
                "-D" => load.duration = Duration::from_secs_f64(value()?.parse()?),
                "--warm-up-time" => load.warm_up = Duration::from_secs_f64(value()?.parse()?),
                "--size" => load.size = value()?.parse()?,
                "--log-file" => load.log_file = Some(value()?.clone()),
                url if url.starts_with("wss://") => load.url = url.to_string(),
                other => return Err(format!("unknown argument {other}").into()),
            }
        }
        if load.url.is_empty() || load.ca.is_empty() {
            return Err("load needs a wss:// URL and --ca".into());
        }
        Ok(load)
    }
}

/// What one connection measured: (start µs since the measured phase began, latency µs).
type Samples = Vec<(u64, u64)>;

async fn run_load(load: LoadArgs) -> Result<(), Failure> {
    let tls = client_tls(&load.ca)?;
    let addr: SocketAddr = authority(&load.url)?.parse()?;
    let payload = "x".repeat(load.size);
    let started = Instant::now();
    let measure_from = started + load.warm_up;
    let end = measure_from + load.duration;
    let mut tasks = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let (tls, url, payload) = (tls.clone(), load.url.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            one_connection(tls, addr, &url, &payload, measure_from, end).await
        }));
    }
    let (mut samples, mut errored) = (Vec::new(), 0usize);
    for task in tasks {
        match task.await? {
            Ok(mut s) => samples.append(&mut s),
            Err(e) => {
                eprintln!("proxy_load: connection failed: {e}");
                errored += 1;
            }
        }
    }
    report(&load, &samples, errored)
}

fn report(load: &LoadArgs, samples: &Samples, errored: usize) -> Result<(), Failure> {
    let secs = load.duration.as_secs_f64();
    let n = samples.len();
    println!(
        "finished in {secs:.2}s, {:.2} req/s, {:.2}MB/s",
        n as f64 / secs,
        (n * load.size) as f64 / secs / 1e6
    );
    println!(
        "requests: {n} total, {n} started, {n} done, {n} succeeded, 0 failed, {errored} errored, 0 timeout"
    );
    println!("status codes: {n} 2xx, 0 3xx, 0 4xx, 0 5xx");
    if let Some(path) = &load.log_file {
        let mut text = String::with_capacity(n * 24);
        for (start, latency) in samples {
            let _ = writeln!(text, "{start}\t101\t{latency}");
        }
        std::fs::write(path, text)?;
    }
    Ok(())
}

async fn one_connection(
    tls: tokio_rustls::TlsConnector,
    addr: SocketAddr,
    url: &str,
    payload: &str,
    measure_from: Instant,
    end: Instant,
) -> Result<Samples, Failure> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(addr.ip().to_string())?;
    let stream = tls.connect(name, tcp).await?;
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    let mut samples = Vec::new();
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        ws.send(Message::text(payload)).await?;
        match ws.next().await {
            Some(Ok(Message::Text(echoed))) if echoed.len() == payload.len() => {}
            Some(Ok(other)) => return Err(format!("unexpected answer {other:?}").into()),
            Some(Err(e)) => return Err(e.into()),
            None => return Err("the proxy closed the WebSocket".into()),
        }
        if sent >= measure_from {
            let start = sent.duration_since(measure_from).as_micros() as u64;
            samples.push((start, sent.elapsed().as_micros() as u64));
        }
    }
    let _ = ws.close(None).await;
    Ok(samples)
}

fn client_tls(ca: &str) -> Result<tokio_rustls::TlsConnector, Failure> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// `host:port` of a `wss://host:port/path` URL.
fn authority(url: &str) -> Result<&str, Failure> {
    let rest = url.strip_prefix("wss://").ok_or("not a wss:// URL")?;
    Ok(rest.split('/').next().unwrap_or(rest))
}
