//! The gateway binary as a child process (`ms365-gateway run`): started on a config file,
//! its JSON log followed for the bound addresses and kept (the last lines are printed when a
//! test fails), killed with SIGKILL when dropped or on request, or stopped with SIGTERM.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// `ms365-gateway run` as a child process; killed (by its id) when dropped. Its JSON log
/// is read for the bound addresses and kept, and printed when a test fails.
pub struct GatewayProcess {
    child: Child,
    pub pbx: SocketAddr,
    pub sbc: SocketAddr,
    pub admin: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl GatewayProcess {
    pub fn start(config: &Path) -> GatewayProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ms365-gateway"))
            .args(["--log-format", "json", "--log", "info", "run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the gateway binary starts");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let lines = follow(child.stderr.take().unwrap(), log.clone());
        let mut listeners = Vec::new();
        let mut admin = None;
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    let _ = child.kill();
                    panic!("the gateway did not start:\n{}", tail(&log));
                });
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            match v["message"].as_str() {
                Some("listening") => listeners.push(v["addr"].as_str().unwrap().parse().unwrap()),
                Some("operations endpoints") => {
                    admin = v["addr"].as_str().and_then(|a| a.parse().ok())
                }
                Some("gateway serving") => break,
                _ => {}
            }
        }
        GatewayProcess {
            child,
            pbx: listeners[0],
            sbc: listeners[1],
            admin: admin.expect("the operations address is logged before serving"),
            log,
        }
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process ends at once, mid-work.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

/// Reads `stderr` for good on a thread: every line is kept (the last 300) and sent on.
fn follow(
    stderr: std::process::ChildStderr,
    log: Arc<Mutex<VecDeque<String>>>,
) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            {
                let mut log = log.lock().unwrap();
                if log.len() == 300 {
                    log.pop_front();
                }
                log.push_back(line.clone());
            }
            let _ = tx.send(line);
        }
    });
    rx
}

fn tail(log: &Mutex<VecDeque<String>>) -> String {
    let log = log.lock().unwrap();
    log.iter().cloned().collect::<Vec<_>>().join("\n")
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- gateway log (last lines) ---\n{}", tail(&self.log));
        }
    }
}
