//! Clients that connect and then misbehave: silent or preface-only
//! connections closed by the handshake timeout, the connection bound,
//! idle connections closed while open streams stay, unanswered keepalive
//! PINGs, memory back to idle afterwards (the real binary), and HTTP/2
//! rapid reset. Every wait is bounded; every socket is on 127.0.0.1.

mod common;

use std::{
    net::SocketAddr,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{
    entry, eventually_async, eventually_async_within, eventually_within, free_port, open_stream,
    pki, request, sample, scrape, tls_channel, vm_rss_kib, H2Frame, H2FrameSplitter, Spawned,
    TestGateway, BIN, H2_PREFACE,
};
use partner_events_gateway::proto::partner_events_client::PartnerEventsClient;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::transport::Channel;

/// An empty SETTINGS frame: with the preface, a complete client handshake.
const SETTINGS: &[u8] = &[0, 0, 0, 0x4, 0, 0, 0, 0, 0];
const HOSTILE: usize = 2_000;

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
            s.write_all(H2_PREFACE).await.unwrap();
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
    eventually_async(&format!("the gateway holding {n} connections"), || async {
        sample(&scrape(metrics).await, OPEN_GRPC).unwrap_or(0.0) >= n as f64
    })
    .await;
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
        sample(
            &text,
            "partner_events_connections_closed_total{listener=\"grpc\",reason=\"handshake_timeout\"}"
        ).unwrap_or(0.0),
        HOSTILE as f64,
        "{text}"
    );
    // The legitimate client's connection is the one left.
    let left = sample(&text, OPEN_GRPC).unwrap_or(0.0);
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
    refused.write_all(H2_PREFACE).await.unwrap();
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
        sample(
            &text,
            "partner_events_refused_connections_total{listener=\"grpc\"}"
        )
        .unwrap_or(0.0),
        1.0,
        "{text}"
    );
    assert_eq!(sample(&text, OPEN_GRPC).unwrap_or(0.0), 2.0);

    // A place freed is a place for the next client.
    drop((second_client, second));
    eventually_async_within("a place freed", Duration::from_secs(10), || async {
        sample(&scrape(metrics).await, OPEN_GRPC).unwrap_or(0.0) < 2.0
    })
    .await;
    let mut next = TcpStream::connect(gw.gateway.local_addr()).await.unwrap();
    next.write_all(H2_PREFACE).await.unwrap();
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
    let (tx, mut answers) = open_stream(&PartnerEventsClient::new(channel), 4).await;
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
        sample(
            &text,
            "partner_events_connections_closed_total{listener=\"grpc\",reason=\"idle_timeout\"}"
        )
        .unwrap_or(0.0),
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
    s.write_all(H2_PREFACE).await.unwrap();
    s.write_all(SETTINGS).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let mut frames = H2FrameSplitter::default();
    let mut pings = 0;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // Read and never answered.
                Ok(n) => {
                    pings += frames
                        .feed(&buf[..n])
                        .iter()
                        .filter(|f| f.kind == H2Frame::PING && f.flags & H2Frame::ACK == 0)
                        .count()
                }
            }
        }
    })
    .await;
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

#[tokio::test]
async fn with_tls_a_silent_client_is_closed_and_a_tls_client_is_served() {
    let pki = pki();
    let d = pki.dir.display();
    let gw = TestGateway::start_unconnected(&format!(
        "[server]\nhandshake_timeout_ms = 500\nidle_timeout_ms = 10000\n\
         [tls]\ncert_file = \"{d}/server.pem\"\nkey_file = \"{d}/server.key\"\n"
    ))
    .await;
    let metrics = gw.gateway.metrics_addr().expect("metrics on");
    let addr = gw.gateway.local_addr();

    let mut client = PartnerEventsClient::new(tls_channel(addr, &pki.ca_pem, None).await);
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
        sample(
            &text,
            &format!(
                "partner_events_connections_closed_total{{listener=\"grpc\",reason=\"{reason}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(closed("handshake_timeout"), 1.0, "{text}");
    assert_eq!(closed("idle_timeout"), 0.0, "{text}");
    assert_eq!(
        sample(&text, OPEN_GRPC).unwrap_or(0.0),
        1.0,
        "the TLS client's connection only"
    );
    drop(client);
    gw.stop().await;
    std::fs::remove_dir_all(&pki.dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_returns_to_idle_memory_after_hostile_connections() {
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
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info");
    let mut child = Spawned::start(command);
    let pid = child.pid();
    child.wait_for_line("partner-events-gateway serving").await;
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
    let mut after = 0;
    eventually_within(
        &format!(
            "VmRSS back under {bound} KiB after the connections closed \
             (idle {idle} KiB, holding {HOSTILE} connections {held} KiB)"
        ),
        Duration::from_secs(10),
        || {
            after = vm_rss_kib(pid);
            after <= bound
        },
    )
    .await;
    println!(
        "gateway VmRSS: idle {idle} KiB, holding {HOSTILE} hostile connections {held} KiB, \
         after they were closed {after} KiB"
    );
    drop(client);
    let (status, _) = child.terminate().await;
    std::fs::remove_dir_all(dir).unwrap();
    assert_eq!(status.code(), Some(0));
}
