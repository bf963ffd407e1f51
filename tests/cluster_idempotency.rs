//! Idempotency keys in cluster mode, through the real path: two gateway
//! replicas (in-process, each with its own durable queue and memory) that
//! share a Redis of the test's own and send to one emulator the test
//! spawns. A batch resent to the other replica is answered from the
//! first (SYNC: its event ids; DURABLE: its receipts) and sent once; ten
//! concurrent copies spread over both are sent once; a key reused on the
//! other replica is refused; a first whose outcome is unknown is unknown
//! there too (unless forced), one that failed leaves the key free there;
//! a key past a short window (Redis's time to live) is a new event; with
//! Redis stopped each replica dedups in its own memory, nothing is lost,
//! and what it claimed alone it still answers once Redis is back; a
//! batch whose call outlives Redis is still answered by its replica.

mod common;

use std::time::{Duration, Instant};

use common::{
    active_emulator, assert_sent_once, entry, eventually_async, ids, keyed, redis::RedisServer,
    sample, scrape, TestGateway,
};
use partner_events_gateway::{
    emulator::{EmulatorHandle, Fault, FaultRule},
    proto::{
        partner_events_client::PartnerEventsClient, DeliveryMode, PartnerEventEntry,
        PutPartnerEventsRequest, PutPartnerEventsResponse,
    },
};
use tonic::{transport::Channel, Request};

const TENANT: &str = "acme";

/// The Redis calls that claim keys, answered.
const CLAIMS_OK: &str =
    r#"partner_events_cluster_redis_calls_total{op="idempotency_claim",outcome="ok"}"#;
/// The Redis calls that settle keys, answered.
const SETTLES_OK: &str =
    r#"partner_events_cluster_redis_calls_total{op="idempotency_settle",outcome="ok"}"#;
const LOCAL_FALLBACK: &str = "partner_events_idempotency_local_fallback_total";
const JOINED: &str = "partner_events_cluster_joined";

/// Two replicas sharing `redis` (under a key prefix of this test's own),
/// both sending to `emulator`.
struct Pair {
    a: TestGateway,
    b: TestGateway,
    emulator: EmulatorHandle,
    redis: RedisServer,
}

impl Pair {
    /// `upstream` is added to both replicas' `[upstream]`, and `extra`
    /// appended to their config.
    async fn start(name: &str, upstream: &str, extra: &str) -> Self {
        // A generous Redis timeout: a loaded test machine must not make a
        // replica fall back (and dedup alone) in the tests that share.
        Self::start_timed(name, 2000, upstream, extra).await
    }

    /// Like [`Pair::start`], with `[cluster] timeout_ms`.
    async fn start_timed(name: &str, timeout_ms: u64, upstream: &str, extra: &str) -> Self {
        let redis = RedisServer::start();
        let emulator = active_emulator().await;
        let prefix = format!("test-{name}-{}-{}", std::process::id(), fastrand::u32(..));
        let toml = format!(
            "[upstream]\nendpoint_url = \"http://{}\"\n{upstream}\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [cluster]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\ntimeout_ms = {timeout_ms}\n{extra}",
            emulator.local_addr(),
            redis.url(),
        );
        let a = TestGateway::start(&toml).await;
        let b = TestGateway::start(&toml).await;
        for gw in [&a, &b] {
            eventually_async("the replica joined the cluster", || async {
                metric(gw, JOINED).await == 1.0
            })
            .await;
        }
        Self {
            a,
            b,
            emulator,
            redis,
        }
    }

    /// How many events of `detail_type` the emulator holds.
    fn held(&self, detail_type: &str) -> usize {
        self.emulator
            .events()
            .iter()
            .filter(|e| e.detail_type == detail_type)
            .count()
    }

    async fn stop(self) {
        self.a.stop().await;
        self.b.stop().await;
        drop(self.redis);
    }
}

/// A sample of `gw`'s metrics (0 when absent: a counter not moved yet).
async fn metric(gw: &TestGateway, name: &str) -> f64 {
    let text = scrape(gw.gateway.metrics_addr().expect("metrics listen")).await;
    sample(&text, name).unwrap_or(0.0)
}

/// Sends one unary request through `client` with the caller's deadline
/// `timeout`; the call itself must succeed. Owns its client: it can be
/// spawned.
async fn call(
    mut client: PartnerEventsClient<Channel>,
    entries: Vec<PartnerEventEntry>,
    delivery: DeliveryMode,
    timeout: Duration,
) -> PutPartnerEventsResponse {
    let mut req = Request::new(PutPartnerEventsRequest {
        tenant_id: TENANT.into(),
        entries,
        batch_id: String::new(),
        delivery: delivery as i32,
    });
    req.set_timeout(timeout);
    client
        .put_partner_events(req)
        .await
        .expect("the call succeeds")
        .into_inner()
}

async fn send(
    gw: &TestGateway,
    entries: Vec<PartnerEventEntry>,
    delivery: DeliveryMode,
) -> PutPartnerEventsResponse {
    call(
        gw.client.clone(),
        entries,
        delivery,
        Duration::from_secs(10),
    )
    .await
}

/// Sends one command to the Redis on `port` and gives its one-line answer.
fn redis_command(port: u16, args: &[&str]) -> String {
    use std::io::{BufRead, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut text = format!("*{}\r\n", args.len());
    for a in args {
        text.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.write_all(text.as_bytes()).unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(conn)
        .read_line(&mut answer)
        .unwrap();
    answer
}

async fn put(gw: &TestGateway, entries: Vec<PartnerEventEntry>) -> PutPartnerEventsResponse {
    send(gw, entries, DeliveryMode::Sync).await
}

/// The receipts of an answer in which every entry was queued.
fn receipts(r: &PutPartnerEventsResponse) -> Vec<String> {
    r.entries
        .iter()
        .map(|e| {
            assert!(e.error_code.is_empty() && e.receipt_id.len() == 32, "{e:?}");
            e.receipt_id.clone()
        })
        .collect()
}

fn deduplicated(r: &PutPartnerEventsResponse) -> Vec<bool> {
    r.entries.iter().map(|e| e.deduplicated).collect()
}

#[tokio::test]
async fn a_batch_resent_to_the_other_replica_is_answered_from_the_first() {
    let pair = Pair::start("resent", "", "").await;
    let claims_before = [
        metric(&pair.a, CLAIMS_OK).await,
        metric(&pair.b, CLAIMS_OK).await,
    ];

    let first = put(&pair.a, keyed("Resent", "r", 5)).await;
    assert_eq!(deduplicated(&first), [false; 5], "{first:?}");
    let second = put(&pair.b, keyed("Resent", "r", 5)).await;
    assert_eq!(ids(&second), ids(&first), "A's event ids");
    assert_eq!(deduplicated(&second), [true; 5], "{second:?}");
    let attempts = |r: &PutPartnerEventsResponse| -> Vec<u32> {
        r.entries.iter().map(|e| e.attempts).collect()
    };
    assert_eq!(attempts(&second), attempts(&first), "A's attempts");
    assert_eq!(pair.held("Resent"), 5, "each event once");
    // The keys went through Redis (claimed by both, settled by A), not
    // through each replica's memory.
    assert!(metric(&pair.a, CLAIMS_OK).await > claims_before[0]);
    assert!(metric(&pair.b, CLAIMS_OK).await > claims_before[1]);
    assert!(metric(&pair.a, SETTLES_OK).await >= 1.0);
    assert_eq!(metric(&pair.a, LOCAL_FALLBACK).await, 0.0);
    assert_eq!(metric(&pair.b, LOCAL_FALLBACK).await, 0.0);

    // DURABLE: B answers with A's receipts; A's queue delivers each once.
    let queued = send(&pair.a, keyed("Queued", "q", 3), DeliveryMode::Durable).await;
    assert_eq!(deduplicated(&queued), [false; 3], "{queued:?}");
    let again = send(&pair.b, keyed("Queued", "q", 3), DeliveryMode::Durable).await;
    assert_eq!(receipts(&again), receipts(&queued), "A's receipts");
    assert_eq!(deduplicated(&again), [true; 3], "{again:?}");
    eventually_async("A's queue delivered", || async { pair.held("Queued") == 3 }).await;
    // Once delivered, a resend is still answered from the first; B never
    // queued an entry of its own.
    let late = send(&pair.b, keyed("Queued", "q", 3), DeliveryMode::Durable).await;
    assert_eq!(receipts(&late), receipts(&queued));
    assert_eq!(deduplicated(&late), [true; 3], "{late:?}");
    assert_eq!(
        metric(&pair.a, "partner_events_durable_enqueued_total").await,
        3.0
    );
    assert_eq!(
        metric(&pair.b, "partner_events_durable_enqueued_total").await,
        0.0
    );
    assert_eq!(pair.held("Queued"), 3, "each event once");
    pair.stop().await;
}

#[tokio::test]
async fn ten_concurrent_copies_over_both_replicas_are_sent_once() {
    let pair = Pair::start("concurrent", "", "").await;
    // Slow calls, so that the copies overlap the first one in flight.
    pair.emulator.set_faults(vec![FaultRule {
        detail_type: "Concurrent".into(),
        fault: Fault::Delay {
            ms: 300,
            jitter_ms: 0,
        },
        times: None,
    }]);
    let answers = futures::future::join_all((0..10).map(|i| {
        let gw = if i % 2 == 0 { &pair.a } else { &pair.b };
        put(gw, keyed("Concurrent", "c", 20))
    }))
    .await;
    // Each entry was sent by exactly one of the ten.
    assert_sent_once(&answers, 20);
    assert_eq!(pair.held("Concurrent"), 20, "each event once");
    pair.stop().await;
}

#[tokio::test]
async fn a_key_reused_on_the_other_replica_is_refused() {
    let pair = Pair::start("reused", "", "").await;
    let first = put(&pair.a, keyed("Reused", "k", 1)).await;
    ids(&first);
    let mut other = keyed("Reused", "k", 1);
    other[0].body = entry("Reused", r#"{"m":"another event"}"#).body;
    let again = put(&pair.b, other).await;
    assert_eq!(
        again.entries[0].error_code, "IdempotencyKeyReused",
        "{again:?}"
    );
    assert!(!again.entries[0].deduplicated);
    assert_eq!(again.failed_entry_count, 1);
    assert_eq!(pair.held("Reused"), 1);
    pair.stop().await;
}

#[tokio::test]
async fn an_unknown_first_is_unknown_on_the_other_replica_unless_forced() {
    let pair = Pair::start("unknown", "", "").await;
    // EventBridge takes the event and the answer is lost.
    pair.emulator.set_faults(vec![FaultRule {
        detail_type: "Unknown".into(),
        fault: Fault::DropConnection { accept: true },
        times: Some(1),
    }]);
    let first = put(&pair.a, keyed("Unknown", "u", 1)).await;
    assert_eq!(first.entries[0].error_code, "OutcomeUnknown", "{first:?}");
    let second = put(&pair.b, keyed("Unknown", "u", 1)).await;
    assert_eq!(second.entries[0].error_code, "OutcomeUnknown", "{second:?}");
    assert!(second.entries[0].deduplicated, "{second:?}");
    assert_eq!(pair.held("Unknown"), 1, "not sent again");
    let mut forced = keyed("Unknown", "u", 1);
    forced[0].resend_if_unknown = true;
    let third = put(&pair.b, forced).await;
    assert!(!third.entries[0].deduplicated, "{third:?}");
    assert_eq!(
        pair.held("Unknown"),
        2,
        "the caller chose a possible duplicate"
    );
    // The forced resend's outcome is the key's, on A too.
    let fourth = put(&pair.a, keyed("Unknown", "u", 1)).await;
    assert_eq!(ids(&fourth), ids(&third));
    assert!(fourth.entries[0].deduplicated);
    pair.stop().await;
}

#[tokio::test]
async fn a_failed_first_leaves_the_key_free_on_the_other_replica() {
    let pair = Pair::start("failed", "entry_max_attempts = 1\n", "").await;
    pair.emulator.set_faults(vec![FaultRule {
        detail_type: "Failed".into(),
        fault: Fault::EntryError {
            code: "InternalFailure".into(),
            message: "try again".into(),
        },
        times: Some(1),
    }]);
    let first = put(&pair.a, keyed("Failed", "f", 1)).await;
    assert_eq!(first.entries[0].error_code, "InternalFailure", "{first:?}");
    let second = put(&pair.b, keyed("Failed", "f", 1)).await;
    assert!(!second.entries[0].deduplicated, "sent: {second:?}");
    let third = put(&pair.a, keyed("Failed", "f", 1)).await;
    assert_eq!(ids(&third), ids(&second), "B's outcome is the key's");
    assert!(third.entries[0].deduplicated);
    assert_eq!(pair.held("Failed"), 1);
    pair.stop().await;
}

#[tokio::test]
async fn a_key_past_its_window_is_a_new_event_on_either_replica() {
    const WINDOW: Duration = Duration::from_millis(1000);
    let pair = Pair::start("window", "", "[idempotency]\nwindow_ms = 1000\n").await;
    let asked = Instant::now();
    let first = put(&pair.a, keyed("Window", "w", 1)).await;
    let answered = Instant::now();
    // The window runs from the first claim, between `asked` and
    // `answered`. Resent to B until it is sent again: deduplicated within
    // the window, a new event after it.
    let mut within = 0;
    let (after, resent, new_at) = loop {
        let resent = Instant::now();
        let r = put(&pair.b, keyed("Window", "w", 1)).await;
        if !r.entries[0].deduplicated {
            break (r, resent, Instant::now());
        }
        assert_eq!(ids(&r), ids(&first));
        within += 1;
        assert!(
            asked.elapsed() < WINDOW + Duration::from_secs(3),
            "still deduplicated long after the window"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        within > 0,
        "the resends within the window were deduplicated"
    );
    // Claimed again by the time its answer came: not before the window's
    // end (Redis keeps milliseconds: 1 ms of slack).
    assert!(
        new_at.duration_since(asked) >= WINDOW - Duration::from_millis(1),
        "sent again {:?} after the first, within its window",
        new_at.duration_since(asked)
    );
    // And not long after it: the resend before it was deduplicated, and
    // started before the window's end.
    assert!(
        resent.duration_since(answered) < WINDOW + Duration::from_secs(1),
        "deduplicated until {:?} after the first",
        resent.duration_since(answered)
    );
    assert_ne!(ids(&after), ids(&first));
    assert_eq!(pair.held("Window"), 2);
    pair.stop().await;
}

#[tokio::test]
async fn with_redis_stopped_each_replica_dedups_in_its_own_memory() {
    let mut pair = Pair::start("redis-stopped", "", "").await;
    pair.redis.stop();
    for (gw, tag) in [(&pair.a, "a"), (&pair.b, "b")] {
        let first = put(gw, keyed("Alone", tag, 5)).await;
        assert_eq!(deduplicated(&first), [false; 5], "{first:?}");
        let again = put(gw, keyed("Alone", tag, 5)).await;
        assert_eq!(
            ids(&again),
            ids(&first),
            "answered from this replica's memory"
        );
        assert_eq!(deduplicated(&again), [true; 5], "{again:?}");
        assert!(metric(gw, LOCAL_FALLBACK).await > 0.0);
        assert_eq!(metric(gw, JOINED).await, 0.0, "the replica fell back");
    }
    assert_eq!(pair.held("Alone"), 10, "each event once, none lost");
    // Redis back, empty: the replicas rejoin, and what each claimed alone
    // is still answered from its memory.
    pair.redis.restart();
    for (gw, tag) in [(&pair.a, "a"), (&pair.b, "b")] {
        eventually_async("the replica rejoined", || async {
            metric(gw, JOINED).await == 1.0
        })
        .await;
        let claims = metric(gw, CLAIMS_OK).await;
        let again = put(gw, keyed("Alone", tag, 5)).await;
        assert_eq!(deduplicated(&again), [true; 5], "{again:?}");
        assert_eq!(metric(gw, CLAIMS_OK).await, claims, "not asked of Redis");
    }
    assert_eq!(pair.held("Alone"), 10);
    pair.stop().await;
}

#[tokio::test]
async fn a_batch_whose_call_outlives_redis_is_still_answered_by_its_replica() {
    let mut pair = Pair::start("outlived", "", "").await;
    // A slow call, so that Redis stops after the keys are claimed in it
    // and before they are settled.
    pair.emulator.set_faults(vec![FaultRule {
        detail_type: "Outlived".into(),
        fault: Fault::Delay {
            ms: 600,
            jitter_ms: 0,
        },
        times: None,
    }]);
    let claims = metric(&pair.a, CLAIMS_OK).await;
    let first = tokio::spawn(call(
        pair.a.client.clone(),
        keyed("Outlived", "o", 3),
        DeliveryMode::Sync,
        Duration::from_secs(10),
    ));
    eventually_async("the keys claimed in Redis", || async {
        metric(&pair.a, CLAIMS_OK).await > claims
    })
    .await;
    pair.redis.stop();
    let first = first.await.unwrap();
    ids(&first);
    assert_eq!(deduplicated(&first), [false; 3], "{first:?}");
    // The replica knows the outcome it could not settle in Redis.
    let again = put(&pair.a, keyed("Outlived", "o", 3)).await;
    assert_eq!(ids(&again), ids(&first), "{again:?}");
    assert_eq!(deduplicated(&again), [true; 3], "{again:?}");
    // And once Redis is back (empty), from its memory first.
    pair.redis.restart();
    eventually_async("the replica rejoined", || async {
        metric(&pair.a, JOINED).await == 1.0
    })
    .await;
    let back = put(&pair.a, keyed("Outlived", "o", 3)).await;
    assert_eq!(ids(&back), ids(&first), "{back:?}");
    assert_eq!(pair.held("Outlived"), 3, "each event once");
    pair.stop().await;
}

#[tokio::test]
async fn a_key_its_replica_could_not_settle_is_unknown_elsewhere_after_its_lease() {
    // A claim's lease is its caller's deadline, then the connect and call
    // timeouts and a second: short ones keep the test short.
    let pair = Pair::start_timed(
        "lease",
        300,
        "connect_timeout_ms = 500\ncall_timeout_ms = 1000\n",
        "",
    )
    .await;
    pair.emulator.set_faults(vec![FaultRule {
        detail_type: "Leased".into(),
        fault: Fault::Delay {
            ms: 300,
            jitter_ms: 0,
        },
        times: None,
    }]);
    let claims = metric(&pair.a, CLAIMS_OK).await;
    let asked = Instant::now();
    let first = tokio::spawn(call(
        pair.a.client.clone(),
        keyed("Leased", "l", 1),
        DeliveryMode::Sync,
        Duration::from_secs(1),
    ));
    eventually_async("the key claimed in Redis", || async {
        metric(&pair.a, CLAIMS_OK).await > claims
    })
    .await;
    // Redis takes no writes until A has answered: A cannot settle the key
    // (as if it had stopped), which stays in flight there.
    let port = pair.redis.port();
    assert_eq!(
        redis_command(port, &["CLIENT", "PAUSE", "10000", "WRITE"]),
        "+OK\r\n"
    );
    let first = first.await.unwrap();
    assert_eq!(redis_command(port, &["CLIENT", "UNPAUSE"]), "+OK\r\n");
    let id = ids(&first);
    // B waits for it within its deadline, then says so.
    let waited = call(
        pair.b.client.clone(),
        keyed("Leased", "l", 1),
        DeliveryMode::Sync,
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(
        waited.entries[0].error_code, "IdempotencyKeyInFlight",
        "{waited:?}"
    );
    // After the lease, the key's outcome is unknown to B: not sent.
    let unknown = eventually_async("the lease ended", || async {
        let r = put(&pair.b, keyed("Leased", "l", 1)).await;
        (r.entries[0].error_code == "OutcomeUnknown").then_some(r)
    })
    .await;
    assert!(unknown.entries[0].deduplicated, "{unknown:?}");
    // Not before the lease's end: A's deadline (1 s less the gateway's
    // 50 ms margin), then 0.5 + 1 + 1 s (Redis keeps milliseconds).
    assert!(
        asked.elapsed() >= Duration::from_millis(3_440),
        "unknown {:?} after the claim, within its lease",
        asked.elapsed()
    );
    // A knows the outcome it could not settle.
    let again = put(&pair.a, keyed("Leased", "l", 1)).await;
    assert_eq!(ids(&again), id);
    assert_eq!(pair.held("Leased"), 1, "sent once");
    pair.stop().await;
}
