//! Clients that connect and then misbehave: silent or preface-only
//! connections closed by the handshake timeout, the connection bound,
//! idle connections closed while open streams stay, unanswered keepalive
//! PINGs, memory back to idle afterwards (the real binary), and HTTP/2
//! rapid reset. Every wait is bounded; every socket is on 127.0.0.1.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{entry, request, TestGateway};
use partner_events_gateway::proto::{
    partner_events_client::PartnerEventsClient, PutPartnerEventsRequest,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_partner-events-gateway");
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: with the preface, a complete client handshake.
const SETTINGS: &[u8] = &[0, 0, 0, 0x4, 0, 0, 0, 0, 0];
const HOSTILE: usize = 2_000;

/// `/metrics` of a gateway, over a bare HTTP/1.0 request.
async fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("metrics answer in time")
        .unwrap();
    out
}

/// The value of one series (`name{labels}`), 0 when absent.
fn series(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// What happened on one hostile client socket.
struct Watched {
    connected: Instant,
    /// When the gateway closed the connection (EOF or reset).
    closed: Instant,
}

/// Opens `n` connections to `addr`, every other one sending the preface
/// only, and watches each until the gateway closes it (bounded by `limit`).
async fn hold(
    addr: SocketAddr,
    n: usize,
    limit: Duration,
) -> Vec<tokio::task::JoinHandle<Watched>> {
    let mut watchers = Vec::with_capacity(n);
    for i in 0..n {
        let connected = Instant::now();
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 1 {
            s.write_all(PREFACE).await.unwrap();
        }
        watchers.push(tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let read_all = async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            };
            tokio::time::timeout(limit, read_all)
                .await
                .unwrap_or_else(|_| panic!("connection {i} still open after {limit:?}"));
            Watched {
                connected,
                closed: Instant::now(),
            }
        }));
    }
    watchers
}

const OPEN_GRPC: &str = "partner_events_open_connections{listener=\"grpc\"}";

/// Waits (bounded) until the gateway counts at least `n` open connections.
async fn wait_open(metrics: SocketAddr, n: usize) {
    let start = Instant::now();
    loop {
        let open = series(&scrape(metrics).await, OPEN_GRPC);
        if open >= n as f64 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the gateway holds {open} connections, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_preface_only_clients_are_closed_while_calls_are_answered() {
    let timeout = Duration::from_millis(2_000);
    // The production linger (the harness's default is 50 ms): the call's
    // own latency is what is measured.
    let gw =
        TestGateway::start("[server]\nhandshake_timeout_ms = 2000\n[upstream]\nlinger_ms = 5\n")
            .await;
    let metrics = gw.gateway.metrics_addr().expect("metrics on");
    gw.put("acme", vec![entry("Warm", "{}")]).await;
    let started = Instant::now();
    gw.put("acme", vec![entry("Baseline", "{}")]).await;
    println!(
        "unary call, no hostile connections: {:?}",
        started.elapsed()
    );

    let watchers = hold(gw.gateway.local_addr(), HOSTILE, Duration::from_secs(30)).await;
    wait_open(metrics, HOSTILE + 1).await;

    let started = Instant::now();
    let answer = gw.put("acme", vec![entry("Ping", "{}")]).await;
    let took = started.elapsed();
    let answered = Instant::now();
    assert!(!answer.entries[0].event_id.is_empty(), "{answer:?}");
    println!("unary call while {HOSTILE} hostile connections are held: {took:?}");
    assert!(took < Duration::from_millis(100), "the call took {took:?}");

    for (i, w) in watchers.into_iter().enumerate() {
        let w = w.await.unwrap();
        let lived = w.closed - w.connected;
        assert!(
            lived >= timeout - Duration::from_millis(20),
            "connection {i} closed after {lived:?}, before the handshake timeout"
        );
        assert!(
            lived < timeout + Duration::from_secs(3),
            "connection {i} closed only after {lived:?}"
        );
        assert!(
            w.closed > answered,
            "connection {i} was no longer held when the call was measured"
        );
    }
    let text = scrape(metrics).await;
    assert_eq!(
        series(
            &text,
            "partner_events_connections_closed_total{listener=\"grpc\",reason=\"handshake_timeout\"}"
        ),
        HOSTILE as f64,
        "{text}"
    );
    // The legitimate client's connection is the one left.
    let left = series(&text, OPEN_GRPC);
    assert!(left <= 2.0, "open connections after: {left}");
    gw.put("acme", vec![entry("After", "{}")]).await;
    gw.stop().await;
}

#[tokio::test]
async fn beyond_max_connections_new_ones_are_refused_and_open_ones_served() {
    let gw = TestGateway::start("[server]\nmax_connections = 2\n").await;
    let metrics = gw.gateway.metrics_addr().expect("metrics on");
    let url = format!("http://{}", gw.gateway.local_addr());
    let second = Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut second_client = PartnerEventsClient::new(second.clone());
    second_client
        .put_partner_events(request("acme", vec![entry("Two", "{}")]))
        .await
        .expect("the second connection is served");

    let mut refused = TcpStream::connect(gw.gateway.local_addr()).await.unwrap();
    refused.write_all(PREFACE).await.unwrap();
    refused.write_all(SETTINGS).await.unwrap();
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(Duration::from_secs(2), refused.read(&mut buf))
        .await
        .expect("the refused connection is closed at once, not left open");
    assert!(
        matches!(got, Ok(0) | Err(_)),
        "the refused connection got {got:?}: no SETTINGS may come"
    );

    // Both open connections still get answers.
    gw.put("acme", vec![entry("One", "{}")]).await;
    second_client
        .put_partner_events(request("acme", vec![entry("Two", "{}")]))
        .await
        .expect("still served");
    let text = scrape(metrics).await;
    assert_eq!(
        series(
            &text,
            "partner_events_refused_connections_total{listener=\"grpc\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(series(&text, OPEN_GRPC), 2.0);

    // A place freed is a place for the next client.
    drop((second_client, second));
    let start = Instant::now();
    loop {
        let text = scrape(metrics).await;
        if series(&text, OPEN_GRPC) < 2.0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut next = TcpStream::connect(gw.gateway.local_addr()).await.unwrap();
    next.write_all(PREFACE).await.unwrap();
    next.write_all(SETTINGS).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), next.read(&mut buf))
        .await
        .expect("served")
        .unwrap();
    assert!(n >= 9, "the gateway's SETTINGS arrive");
    // A raw client that answers no PING would hold up the graceful drain.
    drop((next, refused));
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_one_with_an_open_stream_is_not() {
    let idle = Duration::from_millis(600);
    // Not connected: the harness's own client would be one more idle connection.
    let gw = TestGateway::start_unconnected("[server]\nidle_timeout_ms = 600\n").await;
    let metrics = gw.gateway.metrics_addr().expect("metrics on");
    let addr = gw.gateway.local_addr();

    // A raw HTTP/2 client that completes the handshake and opens no stream.
    let opened = Instant::now();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (_send, connection) = h2::client::handshake(tcp).await.unwrap();
    let idle_conn = tokio::spawn(async move {
        let _ = connection.await;
        Instant::now()
    });

    // A tonic client with a stream open for several idle periods.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = PartnerEventsClient::new(channel);
    let (tx, rx) = mpsc::channel::<PutPartnerEventsRequest>(4);
    let mut answers = client
        .stream_partner_events(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(request("acme", vec![entry("S1", "{}")]))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!first.entries[0].event_id.is_empty());

    let closed_at = tokio::time::timeout(Duration::from_secs(10), idle_conn)
        .await
        .expect("the idle connection is closed")
        .unwrap();
    let lived = closed_at - opened;
    assert!(
        lived >= idle - Duration::from_millis(20),
        "closed after {lived:?}"
    );
    assert!(
        lived < idle + Duration::from_secs(3),
        "closed after {lived:?}"
    );

    // Three idle periods with the stream open and quiet: the time passing
    // is what is under test.
    tokio::time::sleep(idle * 3).await;
    tx.send(request("acme", vec![entry("S2", "{}")]))
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .unwrap()
        .expect("the stream's connection was kept")
        .unwrap();
    assert!(!second.entries[0].event_id.is_empty());
    let text = scrape(metrics).await;
    assert_eq!(
        series(
            &text,
            "partner_events_connections_closed_total{listener=\"grpc\",reason=\"idle_timeout\"}"
        ),
        1.0,
        "only the idle connection was closed: {text}"
    );
    drop(tx);
    drop(answers);
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed() {
    let gw = TestGateway::start_unconnected(
        "[server]\nidle_timeout_ms = 0\nkeepalive_interval_ms = 300\nkeepalive_timeout_ms = 300\n",
    )
    .await;
    let mut s = TcpStream::connect(gw.gateway.local_addr()).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(SETTINGS).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let mut frames = FrameReader::default();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // Read and never answered.
                Ok(n) => frames.feed(&buf[..n]),
            }
        }
    })
    .await;
    let pings = frames.pings;
    assert!(closed.is_ok(), "a peer that never answers PINGs stays open");
    assert!(pings > 0, "the gateway sent no PING");
    assert!(
        start.elapsed() >= Duration::from_millis(550),
        "closed after {:?}, before interval + timeout",
        start.elapsed()
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_closes_that_connection_and_spares_the_others() {
    const MAX_RESETS: usize = 20_000;
    let gw = Arc::new(TestGateway::start("").await);
    let tcp = TcpStream::connect(gw.gateway.local_addr()).await.unwrap();
    let (mut send, connection) = h2::client::handshake(tcp).await.unwrap();
    let attacked = tokio::spawn(connection);

    // Another caller, on its own connection, all along.
    let attacking = Arc::new(AtomicBool::new(true));
    let bystander = {
        let (gw, attacking) = (gw.clone(), attacking.clone());
        tokio::spawn(async move {
            let mut answered = 0;
            while attacking.load(Ordering::SeqCst) || answered == 0 {
                gw.put("acme", vec![entry("Bystander", "{}")]).await;
                answered += 1;
            }
            answered
        })
    };

    let started = Instant::now();
    let mut resets = 0;
    while resets < MAX_RESETS && started.elapsed() < Duration::from_secs(30) {
        send = match tokio::time::timeout(Duration::from_secs(5), send.ready()).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => break,
            Err(_) => panic!("the attacking connection stalled without closing"),
        };
        let req = http::Request::post(format!(
            "http://{}/partnerevents.v1.PartnerEvents/PutPartnerEvents",
            gw.gateway.local_addr()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
        match send.send_request(req, false) {
            Ok((_response, mut body)) => body.send_reset(h2::Reason::CANCEL),
            Err(_) => break,
        }
        resets += 1;
    }
    attacking.store(false, Ordering::SeqCst);
    println!("rapid reset: connection closed after {resets} resets");
    assert!(
        resets < MAX_RESETS,
        "the gateway took {MAX_RESETS} resets on one connection"
    );
    let ended = tokio::time::timeout(Duration::from_secs(10), attacked)
        .await
        .expect("the attacking connection ends")
        .unwrap();
    let err = ended.expect_err("closed with an error (GOAWAY)");
    assert!(
        err.is_go_away() || err.is_io() || err.is_remote(),
        "unexpected end: {err}"
    );
    let answered = tokio::time::timeout(Duration::from_secs(10), bystander)
        .await
        .expect("the bystander finishes")
        .unwrap();
    assert!(answered >= 1);
    match Arc::try_unwrap(gw) {
        Ok(gw) => gw.stop().await,
        Err(_) => panic!("gateway still shared"),
    }
}

/// Splits the gateway's bytes into HTTP/2 frames and counts its PINGs.
#[derive(Default)]
struct FrameReader {
    buf: Vec<u8>,
    pings: usize,
}

impl FrameReader {
    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while self.buf.len() >= 9 {
            let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
            if self.buf.len() < 9 + len {
                return;
            }
            // Type 0x6 is PING; flag 0x1 would make it an ACK.
            if self.buf[3] == 0x6 && self.buf[4] & 0x1 == 0 {
                self.pings += 1;
            }
            self.buf.drain(..9 + len);
        }
    }
}

/// The gateway binary, killed if the test ends early.
struct Child(Option<std::process::Child>);

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test]
async fn with_tls_a_silent_client_is_closed_and_a_tls_client_is_served() {
    let dir = std::env::temp_dir().join(format!(
        "peg-hostile-tls-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("server.pem"), key.cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.signing_key.serialize_pem()).unwrap();
    let d = dir.display();
    let gw = TestGateway::start_unconnected(&format!(
        "[server]\nhandshake_timeout_ms = 500\nidle_timeout_ms = 10000\n\
         [tls]\ncert_file = \"{d}/server.pem\"\nkey_file = \"{d}/server.key\"\n"
    ))
    .await;
    let metrics = gw.gateway.metrics_addr().expect("metrics on");
    let addr = gw.gateway.local_addr();

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(key.cert.pem()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = PartnerEventsClient::new(channel);
    client
        .put_partner_events(request("acme", vec![entry("Tls", "{}")]))
        .await
        .expect("served over TLS");

    let start = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the silent client is closed");
    assert!(matches!(got, Ok(0) | Err(_)), "{got:?}");
    let lived = start.elapsed();
    assert!(
        lived >= Duration::from_millis(480),
        "closed after {lived:?}"
    );

    // The TLS client's connection outlived the handshake timeout.
    client
        .put_partner_events(request("acme", vec![entry("Tls", "{}")]))
        .await
        .expect("still served");
    let text = scrape(metrics).await;
    let closed = |reason: &str| {
        series(
            &text,
            &format!(
                "partner_events_connections_closed_total{{listener=\"grpc\",reason=\"{reason}\"}}"
            ),
        )
    };
    assert_eq!(closed("handshake_timeout"), 1.0, "{text}");
    assert_eq!(closed("idle_timeout"), 0.0, "{text}");
    assert_eq!(
        series(&text, OPEN_GRPC),
        1.0,
        "the TLS client's connection only"
    );
    drop(client);
    gw.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_returns_to_idle_memory_after_hostile_connections() {
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port, metrics_port) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("peg-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nhandshake_timeout_ms = 3000\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[emulator]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let mut child = Child(Some(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let pid = child.0.as_ref().unwrap().id();
    let stderr = child.0.as_mut().unwrap().stderr.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(line)) if line.contains("partner-events-gateway serving") => break,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the gateway exited before serving"),
            Err(_) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no start-up line"
        );
    }
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = PartnerEventsClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let call = |client: &mut PartnerEventsClient<Channel>| {
        let mut client = client.clone();
        async move {
            client
                .put_partner_events(request("demo", vec![entry("Ping", "{}")]))
                .await
                .expect("answered")
        }
    };
    call(&mut client).await;
    let idle = vm_rss_kib(pid);

    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let watchers = hold(addr, HOSTILE, Duration::from_secs(30)).await;
    wait_open(metrics, HOSTILE + 1).await;
    let held = vm_rss_kib(pid);
    for w in watchers {
        w.await.unwrap();
    }
    call(&mut client).await;
    // The allocator gives freed pages back on its own schedule: bounded polling.
    let bound = idle + 16 * 1024;
    let mut after = vm_rss_kib(pid);
    let settle = Instant::now();
    while after > bound && settle.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = vm_rss_kib(pid);
    }
    println!(
        "gateway VmRSS: idle {idle} KiB, holding {HOSTILE} hostile connections {held} KiB, \
         after they were closed {after} KiB"
    );
    drop(client);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let mut running = child.0.take().unwrap();
    let status = tokio::task::spawn_blocking(move || running.wait())
        .await
        .unwrap()
        .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    assert!(
        after <= bound,
        "VmRSS {after} KiB after the connections closed, idle was {idle} KiB (bound {bound} KiB)"
    );
    assert_eq!(status.code(), Some(0));
}
