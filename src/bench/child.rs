//! The gateway under test as a child process (`serve --config <file>`), so
//! that its CPU time and peak memory are its own and not the load
//! generator's; and reading CPU and memory figures from `/proc`.

use crate::sync::lock;
use std::{
    collections::VecDeque,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc, Mutex, OnceLock,
    },
    time::Duration,
};

/// How long a gateway may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Log lines of a child kept to explain a failure.
const LOG_TAIL_LINES: usize = 30;

/// The log message `server::start` writes once it serves, with `addr`.
const SERVING_MESSAGE: &str = "partner-events-gateway serving";

/// CPU time and memory of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// User plus system CPU time, all threads, in seconds.
    pub cpu_secs: f64,
    /// Resident set size now, in KiB.
    pub rss_kib: u64,
    /// Peak resident set size over the process's life (VmHWM), in KiB.
    pub hwm_kib: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`;
/// 100 on every Linux this runs on, used when getconf is missing).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `pid` may be `"self"`.
pub fn proc_stats(pid: &str) -> Result<ProcStats, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("/proc/{pid}/stat has no command field"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) overall; `after` starts at field 3.
    let ticks = |i: usize| -> Result<f64, String> {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v as f64)
            .ok_or_else(|| format!("/proc/{pid}/stat: field {} unreadable", i + 3))
    };
    let cpu_secs = (ticks(11)? + ticks(12)?) / clock_ticks();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcStats {
        cpu_secs,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

/// A gateway serving in a child process; killed when dropped.
pub struct GatewayChild {
    child: Child,
    addr: SocketAddr,
    config_path: PathBuf,
    log_tail: Arc<Mutex<VecDeque<String>>>,
}

impl GatewayChild {
    /// Writes `config_toml` to a temporary file and runs
    /// `<bin> --log-format json serve --config <file>` with logs at warn
    /// (plus the one line that tells where it listens).
    pub fn start(bin: &Path, config_toml: &str) -> Result<Self, String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let config_path = std::env::temp_dir().join(format!(
            "peg-bench-{}-{}.toml",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&config_path, config_toml)
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let mut child = Command::new(bin)
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "warn,partner_events_gateway::server=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {} serve: {e}", bin.display()))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log_tail = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL_LINES)));
        let (addr_tx, addr_rx) = mpsc::channel();
        let tail = log_tail.clone();
        // Reads the child's log to its end, so the pipe never fills.
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if addr_tx.is_some() {
                    if let Some(addr) = serving_addr(&line) {
                        let _ = addr_tx.take().expect("checked").send(addr);
                    }
                }
                let mut tail = lock(&tail);
                if tail.len() == LOG_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let mut this = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            config_path,
            log_tail,
        };
        match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                this.addr = addr;
                Ok(this)
            }
            Err(_) => {
                let _ = this.child.kill();
                let _ = this.child.wait();
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                Err(format!(
                    "the gateway did not start within {START_TIMEOUT:?}; its log:\n{}",
                    this.log()
                ))
            }
        }
    }

    /// Where it serves gRPC.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its CPU time and memory now.
    pub fn stats(&self) -> Result<ProcStats, String> {
        proc_stats(&self.child.id().to_string())
    }

    /// The last lines it logged.
    pub fn log(&self) -> String {
        let tail = lock(&self.log_tail);
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for GatewayChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// The listen address from the gateway's "serving" JSON log line.
fn serving_addr(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let message = v
        .get("message")
        .or_else(|| v.get("fields")?.get("message"))?;
    if message.as_str()? != SERVING_MESSAGE {
        return None;
    }
    let addr = v.get("addr").or_else(|| v.get("fields")?.get("addr"))?;
    addr.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serving_line_gives_the_address() {
        let line = r#"{"timestamp":"2025-01-01T00:00:00Z","level":"INFO","message":"partner-events-gateway serving","addr":"127.0.0.1:40123","tenants":1,"target":"partner_events_gateway::server"}"#;
        assert_eq!(serving_addr(line), Some("127.0.0.1:40123".parse().unwrap()));
        assert_eq!(
            serving_addr(r#"{"message":"other","addr":"127.0.0.1:1"}"#),
            None
        );
        assert_eq!(serving_addr("not json"), None);
    }

    #[test]
    fn this_process_has_stats() {
        let s = proc_stats("self").unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
        assert!(s.cpu_secs >= 0.0);
    }
}
