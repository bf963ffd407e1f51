//! A Redis of a test's own, for tests that stop it and start it again (a
//! replica falling back when Redis goes away, and rejoining when it comes
//! back). Tests that only need some Redis use `REDIS_URL` (`scripts/test`
//! starts one).
//!
//! It needs `redis-server` on PATH, and fails the test when it is missing:
//! a cluster-mode test that skipped would pass without testing anything.
//! The calls block for as long as Redis takes to start (milliseconds), which
//! is harmless inside a tokio test.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{free_port, Spawned};

/// The program started; Debian's package (and `scripts/redis.sh install`)
/// puts it on PATH.
const PROGRAM: &str = "redis-server";

/// How long Redis may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` on 127.0.0.1 with no persistence, killed when dropped.
pub struct RedisServer {
    port: u16,
    /// Its `--dir` and log file; removed on drop.
    dir: PathBuf,
    /// None while stopped.
    server: Option<Spawned>,
}

impl RedisServer {
    /// Starts one on a free loopback port and waits until it answers PING.
    pub fn start() -> Self {
        require_program();
        let dir = std::env::temp_dir().join(format!(
            "peg-redis-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self {
            port: port_outside_the_ephemeral_range(),
            dir,
            server: None,
        };
        redis.launch();
        redis
    }

    /// `redis://127.0.0.1:<port>`, the same across restarts.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it and waits for it to exit: connections to the port are
    /// refused from then on. The port stays this server's by number only
    /// (nothing holds it), for [`RedisServer::restart`].
    pub fn stop(&mut self) {
        // Spawned's drop kills the process and reaps it.
        self.server = None;
    }

    /// Starts it again on the same port, empty (nothing was persisted),
    /// and waits until it answers PING; stops it first if it runs.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn launch(&mut self) {
        let mut command = std::process::Command::new(PROGRAM);
        command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            // No RDB snapshots, no AOF: a restart starts empty, as after a
            // failover to a fresh Redis.
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.log_path());
        self.server = Some(Spawned::start(command));
        let deadline = Instant::now() + START_TIMEOUT;
        while !answers_ping(self.port) {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                panic!(
                    "{PROGRAM} on port {} did not answer PING within {START_TIMEOUT:?}; its log:\n{log}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free loopback port below Linux's ephemeral range (32768 and up):
/// while the server is stopped, the kernel never hands its port to an
/// outgoing connection (the gateways' own reconnects among them), so the
/// restart finds it free.
fn port_outside_the_ephemeral_range() -> u16 {
    for _ in 0..1000 {
        let port = fastrand::u16(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    // Crowded beyond belief: any free port will do.
    free_port()
}

/// Sends a RESP `PING` to 127.0.0.1:`port` and gives the first 7 bytes of
/// the answer (`+PONG\r\n` from a Redis), or why it could not.
pub fn ping(port: u16) -> std::io::Result<[u8; 7]> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(1)))?;
    conn.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut answer = [0u8; 7];
    conn.read_exact(&mut answer)?;
    Ok(answer)
}

fn answers_ping(port: u16) -> bool {
    ping(port).is_ok_and(|a| &a == b"+PONG\r\n")
}

/// Fails the test unless `redis-server` is on PATH: never a silent skip.
fn require_program() {
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(PROGRAM)))
    });
    if on_path {
        return;
    }
    let required = ["REQUIRE_REDIS", "CI"]
        .iter()
        .find(|v| std::env::var_os(v).is_some());
    match required {
        Some(var) => panic!(
            "{PROGRAM} is not on PATH, and {var} is set, so the Redis tests must run: \
             scripts/test installs it with `scripts/redis.sh install` (apt-get as root); \
             check that step of this run"
        ),
        None => panic!(
            "{PROGRAM} is not on PATH: run `scripts/redis.sh install` (as root it runs \
             apt-get install redis-server; otherwise it says what to install), then run \
             the tests again"
        ),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
