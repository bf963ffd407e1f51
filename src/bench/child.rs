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

/// The log message `server::start` writes once the durable queue is open,
/// with `open_ms` and `queued`.
const DURABLE_OPEN_MESSAGE: &str = "durable queue open";

/// How long a stopped gateway (SIGTERM) may take to exit: its shutdown
/// grace and a margin.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

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

/// What the gateway logged when its durable queue opened.
#[derive(Debug, Clone, Copy)]
pub struct DurableOpen {
    /// From the process's start to the line's arrival here.
    pub after: Duration,
    /// The gateway's own figure: opening the file, checksums and all.
    pub open_ms: u64,
    pub queued: u64,
}

/// A gateway serving in a child process; killed when dropped.
pub struct GatewayChild {
    child: Child,
    addr: SocketAddr,
    config_path: PathBuf,
    log_tail: Arc<Mutex<VecDeque<String>>>,
    durable_open: Arc<Mutex<Option<DurableOpen>>>,
    /// The durable queue's directory (`PEG_STATE_DIR`), and whether it is
    /// this child's alone (removed when dropped).
    state_dir: PathBuf,
    own_state_dir: bool,
}

impl GatewayChild {
    /// [`GatewayChild::start_in`] with a durable directory of its own,
    /// removed when dropped: two children never share a queue file (redb
    /// lets one process open it), and no run inherits another's queue.
    pub fn start(bin: &Path, config_toml: &str) -> Result<Self, String> {
        Self::start_in(bin, config_toml, None)
    }

    /// Writes `config_toml` to a temporary file and runs
    /// `<bin> --log-format json serve --config <file>` with logs at warn
    /// (plus the lines that tell where it listens and what its durable
    /// queue held), with `PEG_STATE_DIR` at `state_dir` (kept when
    /// dropped), or at a fresh directory of its own when `None`.
    pub fn start_in(
        bin: &Path,
        config_toml: &str,
        state_dir: Option<&Path>,
    ) -> Result<Self, String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let config_path =
            std::env::temp_dir().join(format!("peg-bench-{}-{n}.toml", std::process::id()));
        let (state_dir, own_state_dir) = match state_dir {
            Some(dir) => (dir.to_path_buf(), false),
            None => (
                std::env::temp_dir().join(format!("peg-bench-state-{}-{n}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
        std::fs::write(&config_path, config_toml)
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let spawned = std::time::Instant::now();
        let mut child = Command::new(bin)
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "warn,partner_events_gateway::server=info")
            .env("PEG_STATE_DIR", &state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {} serve: {e}", bin.display()))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log_tail = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL_LINES)));
        let (addr_tx, addr_rx) = mpsc::channel();
        let tail = log_tail.clone();
        let durable_open = Arc::new(Mutex::new(None));
        let opened = durable_open.clone();
        // Reads the child's log to its end, so the pipe never fills.
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if addr_tx.is_some() {
                    if let Some(addr) = serving_addr(&line) {
                        let _ = addr_tx.take().expect("checked").send(addr);
                    }
                }
                if let Some(mut o) = durable_open_line(&line) {
                    o.after = spawned.elapsed();
                    *lock(&opened) = Some(o);
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
            durable_open,
            state_dir,
            own_state_dir,
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

    /// What it logged when its durable queue opened (it does before it
    /// serves).
    pub fn durable_open(&self) -> Option<DurableOpen> {
        *lock(&self.durable_open)
    }

    /// Stops it as an operator would (SIGTERM: it drains and closes its
    /// queue file) and waits for it to exit (blocking); how long it took.
    pub fn stop(mut self) -> Result<Duration, String> {
        let started = std::time::Instant::now();
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|e| format!("cannot run kill -TERM {pid}: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM {pid}: {sent}"));
        }
        while started.elapsed() < STOP_TIMEOUT {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(started.elapsed()),
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => return Err(format!("cannot wait for gateway {pid}: {e}")),
            }
        }
        Err(format!(
            "gateway {pid} did not exit within {STOP_TIMEOUT:?} of SIGTERM; its log:\n{}",
            self.log()
        ))
    }
}

impl Drop for GatewayChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config_path);
        if self.own_state_dir {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
    }
}

/// The Redis the cluster run's replicas share: Debian's package (and
/// `scripts/redis.sh install`) puts it on PATH.
const REDIS_PROGRAM: &str = "redis-server";

/// How long Redis may take to answer its first PING.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` on a free loopback port with no persistence (no RDB
/// snapshots, no AOF), killed when dropped; its CPU time is read like a
/// gateway's.
pub struct RedisChild {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisChild {
    /// Starts one and waits until it answers PING (blocking: milliseconds).
    pub fn start() -> Result<Self, String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "peg-bench-redis-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let child = Command::new(REDIS_PROGRAM)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "the cluster run needs {REDIS_PROGRAM} on PATH: run `scripts/redis.sh install` (as root it runs apt-get install redis-server), or leave the run out with --only"
                ),
                _ => format!("cannot run {REDIS_PROGRAM}: {e}"),
            })?;
        let mut this = Self { child, port, dir };
        let deadline = std::time::Instant::now() + REDIS_START_TIMEOUT;
        while !answers_ping(port) {
            if let Ok(Some(status)) = this.child.try_wait() {
                return Err(format!("{REDIS_PROGRAM} on port {port} exited: {status}"));
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "{REDIS_PROGRAM} on port {port} did not answer PING within {REDIS_START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // On every error above, `this` is dropped: killed, its dir removed.
        Ok(this)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its CPU time and memory now.
    pub fn stats(&self) -> Result<ProcStats, String> {
        proc_stats(&self.child.id().to_string())
    }
}

impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port free now (another process may take it before it is
/// used: good enough on a machine running only the bench).
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// Whether 127.0.0.1:`port` answers a RESP `PING` with `+PONG`.
fn answers_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = [0u8; 7];
    conn.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
        && conn.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

/// The text exposition served at `http://<addr>/metrics`.
pub async fn metrics_scrape(addr: SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let scrape = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    tokio::time::timeout(Duration::from_secs(5), scrape)
        .await
        .map_err(|_| format!("{addr}/metrics did not answer within 5 s"))?
        .map_err(|e| format!("cannot scrape {addr}/metrics: {e}"))
}

/// The sum of every sample of the counter `name` (all label sets) served at
/// `http://<addr>/metrics`.
pub async fn metrics_sum(addr: SocketAddr, name: &str) -> Result<f64, String> {
    Ok(sum_samples(&metrics_scrape(addr).await?, name))
}

/// The sum of the samples of `name` in a text exposition.
pub fn sum_samples(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            // `name{labels} value` or `name value`, not `name_other ...`.
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.rsplit_once('}')?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// The upper bound (in the metric's unit) of the bucket of histogram
/// `name` that holds the `q` quantile of what it observed between two
/// scrapes, over the series whose labels include `label` (all when
/// `None`): "at most this". `None` when it observed nothing then, and
/// infinity when the quantile fell beyond the last finite bucket.
pub fn window_quantile(
    before: &str,
    after: &str,
    name: &str,
    label: Option<&str>,
    q: f64,
) -> Option<f64> {
    let buckets = |text: &str| {
        let mut by_le: Vec<(f64, f64)> = Vec::new();
        let series = format!("{name}_bucket{{");
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(series.as_str()) else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once('}') else {
                continue;
            };
            let labels: Vec<&str> = labels.split(',').collect();
            if label.is_some_and(|want| !labels.contains(&want)) {
                continue;
            }
            let le = labels.iter().find_map(|l| l.strip_prefix("le=\""));
            let le = match le.map(|l| l.trim_end_matches('"')) {
                Some("+Inf") => f64::INFINITY,
                Some(l) => match l.parse::<f64>() {
                    Ok(le) => le,
                    Err(_) => continue,
                },
                None => continue,
            };
            let Some(count) = value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            else {
                continue;
            };
            match by_le.iter_mut().find(|(l, _)| *l == le) {
                Some((_, c)) => *c += count,
                None => by_le.push((le, count)),
            }
        }
        by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
        by_le
    };
    let (before, after) = (buckets(before), buckets(after));
    let cumulative: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, n)| {
            let was = before.iter().find(|(l, _)| *l == le).map_or(0.0, |b| b.1);
            (le, n - was)
        })
        .collect();
    let total = cumulative.last()?.1;
    if total <= 0.0 {
        return None;
    }
    cumulative
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map(|(le, _)| *le)
}

/// The sum of the samples of `name` whose labels include `label` (as
/// written in the exposition: `op="idempotency_claim"`).
pub fn sum_samples_with(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let labels = l.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = labels.rsplit_once('}')?;
            labels
                .split(',')
                .any(|l| l == label)
                .then(|| value.split_whitespace().next()?.parse::<f64>().ok())?
        })
        .sum()
}

/// The figures of the gateway's "durable queue open" JSON log line
/// (`after` left at zero).
fn durable_open_line(line: &str) -> Option<DurableOpen> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let field = |name: &str| v.get(name).or_else(|| v.get("fields")?.get(name));
    if field("message")?.as_str()? != DURABLE_OPEN_MESSAGE {
        return None;
    }
    let number = |name: &str| field(name).and_then(serde_json::Value::as_u64);
    Some(DurableOpen {
        after: Duration::ZERO,
        open_ms: number("open_ms")?,
        queued: number("queued").unwrap_or(0),
    })
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
    fn a_window_quantile_is_the_bucket_that_holds_it_in_the_window() {
        let scrape = |fast: u32, slow: u32, other: u32| {
            format!(
                "# TYPE h histogram\n\
                 h_bucket{{m=\"Put\",le=\"0.001\"}} {fast}\n\
                 h_bucket{{m=\"Put\",le=\"0.008\"}} {}\n\
                 h_bucket{{m=\"Put\",le=\"+Inf\"}} {}\n\
                 h_bucket{{m=\"Check\",le=\"0.001\"}} 0\n\
                 h_bucket{{m=\"Check\",le=\"0.008\"}} 0\n\
                 h_bucket{{m=\"Check\",le=\"+Inf\"}} {other}\n\
                 h_count{{m=\"Put\"}} {}\n",
                fast + slow,
                fast + slow,
                fast + slow
            )
        };
        // Before: 1,000 fast ones. In the window: 98 fast, 2 slow.
        let (before, after) = (scrape(1_000, 0, 0), scrape(1_098, 2, 50));
        let put = Some("m=\"Put\"");
        assert_eq!(
            window_quantile(&before, &after, "h", put, 0.98),
            Some(0.001)
        );
        assert_eq!(
            window_quantile(&before, &after, "h", put, 0.99),
            Some(0.008)
        );
        // All series: the 50 beyond the last bucket take the p99.
        assert_eq!(
            window_quantile(&before, &after, "h", None, 0.99),
            Some(f64::INFINITY)
        );
        assert_eq!(window_quantile(&before, &before, "h", put, 0.99), None);
        assert_eq!(
            window_quantile(&before, &after, "nothing", None, 0.99),
            None
        );
    }

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
    fn the_durable_open_line_gives_its_figures() {
        let line = r#"{"timestamp":"2025-01-01T00:00:00Z","level":"INFO","message":"durable queue open","path":"/tmp/q/queue.redb","queued":1000000,"dead_letters":0,"file_bytes":412000000,"open_ms":2345,"default_delivery":"Durable","target":"partner_events_gateway::server"}"#;
        let o = durable_open_line(line).unwrap();
        assert_eq!((o.open_ms, o.queued), (2345, 1_000_000));
        assert!(durable_open_line(r#"{"message":"other","open_ms":1}"#).is_none());
    }

    #[test]
    fn samples_of_a_counter_are_summed_over_its_labels() {
        let text = "# HELP c Calls.\n# TYPE c counter\n\
                    c_total{op=\"pace\",outcome=\"ok\"} 40\n\
                    c_total{op=\"pace\",outcome=\"timeout\"} 2\n\
                    c_total_other 7\n\
                    c_total 1\n";
        assert_eq!(sum_samples(text, "c_total"), 43.0);
        assert_eq!(sum_samples(text, "missing"), 0.0);
        assert_eq!(
            sum_samples_with(text, "c_total", "outcome=\"timeout\""),
            2.0
        );
        assert_eq!(sum_samples_with(text, "c_total", "op=\"pace\""), 42.0);
        assert_eq!(sum_samples_with(text, "c_total", "op=\"limit\""), 0.0);
    }

    #[test]
    fn this_process_has_stats() {
        let s = proc_stats("self").unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
        assert!(s.cpu_secs >= 0.0);
    }
}
