//! Idempotency keys through the real gRPC client, on one replica: resends
//! (one after another, ten at once, on a stream) answered from the first
//! entry with the emulator holding each event once; a key reused for
//! another event; a first entry still in flight (waited for, or
//! IdempotencyKeyInFlight), one whose caller gave up before EventBridge
//! answered (its resend learns the real outcome), one that failed (the
//! key is free), one whose outcome is unknown (unknown again, unless
//! forced); a key past its window (paused time); the `max_keys` bound;
//! DURABLE keys, kept across a restart; a key freed while a DURABLE batch
//! the queue refused waited on it (still free).

mod common;

use std::time::Duration;

use common::{assert_sent_once, entry, ids, keyed, sample, scrape, StateDir, TestGateway};
use partner_events_gateway::{
    emulator::{Fault, FaultRule},
    proto::{
        DeliveryMode, PartnerEventEntry, PartnerEventResult, PutPartnerEventsRequest,
        PutPartnerEventsResponse,
    },
};
use tonic::{Code, Request};

const TENANT: &str = "acme";

fn request(entries: Vec<PartnerEventEntry>, delivery: DeliveryMode) -> PutPartnerEventsRequest {
    PutPartnerEventsRequest {
        tenant_id: TENANT.into(),
        entries,
        batch_id: String::new(),
        delivery: delivery as i32,
    }
}

async fn put(gw: &TestGateway, entries: Vec<PartnerEventEntry>) -> PutPartnerEventsResponse {
    put_within(gw, entries, Duration::from_secs(10)).await
}

async fn put_within(
    gw: &TestGateway,
    entries: Vec<PartnerEventEntry>,
    timeout: Duration,
) -> PutPartnerEventsResponse {
    let mut req = Request::new(request(entries, DeliveryMode::Sync));
    req.set_timeout(timeout);
    gw.client
        .clone()
        .put_partner_events(req)
        .await
        .expect("the call succeeds")
        .into_inner()
}

/// How many events of `detail_type` the emulator holds.
fn held(gw: &TestGateway, detail_type: &str) -> usize {
    gw.emulator()
        .events()
        .iter()
        .filter(|e| e.detail_type == detail_type)
        .count()
}

/// Calls carrying `detail_type` answer `ms` late (`times` calls; None:
/// all), their events recorded first.
fn slow_calls(gw: &TestGateway, detail_type: &str, ms: u64, times: Option<u32>) {
    gw.emulator().set_faults(vec![FaultRule {
        detail_type: detail_type.into(),
        fault: Fault::Delay { ms, jitter_ms: 0 },
        times,
    }]);
}

fn code(e: &PartnerEventResult) -> &str {
    &e.error_code
}

#[tokio::test]
async fn a_resent_batch_is_answered_from_the_first_and_sent_once() {
    let gw = TestGateway::start("").await;
    let first = put(&gw, keyed("Resent", "r", 5)).await;
    assert!(first.entries.iter().all(|e| !e.deduplicated), "{first:?}");
    let second = put(&gw, keyed("Resent", "r", 5)).await;
    assert_eq!(ids(&second), ids(&first), "the same event ids");
    assert!(second.entries.iter().all(|e| e.deduplicated), "{second:?}");
    assert_eq!(
        second
            .entries
            .iter()
            .map(|e| e.attempts)
            .collect::<Vec<_>>(),
        first.entries.iter().map(|e| e.attempts).collect::<Vec<_>>(),
        "the first one's attempts"
    );
    assert_eq!(held(&gw, "Resent"), 5, "each event once");

    // A batch mixing new keys, seen keys and entries without a key.
    let mut mixed = keyed("Resent", "r", 2);
    mixed.push(entry("Resent", r#"{"m":"no key"}"#));
    mixed.extend(keyed("Resent", "s", 1));
    let third = put(&gw, mixed).await;
    let flags: Vec<bool> = third.entries.iter().map(|e| e.deduplicated).collect();
    assert_eq!(flags, [true, true, false, false], "{third:?}");
    assert_eq!(ids(&third)[..2], ids(&first)[..2]);
    assert_eq!(held(&gw, "Resent"), 7);
    gw.stop().await;
}

#[tokio::test]
async fn ten_concurrent_copies_are_sent_once() {
    // Slow calls, so that the copies overlap the first one in flight.
    let gw = TestGateway::start("").await;
    slow_calls(&gw, "Concurrent", 300, None);
    let answers =
        futures::future::join_all((0..10).map(|_| put(&gw, keyed("Concurrent", "c", 20)))).await;
    // Each entry was sent by exactly one of the ten.
    assert_sent_once(&answers, 20);
    assert_eq!(held(&gw, "Concurrent"), 20, "each event once");
    gw.stop().await;
}

#[tokio::test]
async fn a_key_reused_for_another_event_is_refused() {
    let gw = TestGateway::start("").await;
    let first = put(&gw, keyed("Reused", "k", 1)).await;
    ids(&first);
    let mut other = keyed("Reused", "k", 1);
    other[0].body = entry("Reused", r#"{"m":"another event"}"#).body;
    let again = put(&gw, other).await;
    assert_eq!(code(&again.entries[0]), "IdempotencyKeyReused", "{again:?}");
    assert!(!again.entries[0].deduplicated);
    assert_eq!(again.failed_entry_count, 1);
    // Another detail type, or resources, count as another event too.
    let mut other = keyed("ReusedOther", "k", 1);
    other[0].body = keyed("Reused", "k", 1)[0].body.clone();
    assert_eq!(
        code(&put(&gw, other).await.entries[0]),
        "IdempotencyKeyReused"
    );
    let mut other = keyed("Reused", "k", 1);
    other[0].resources = vec!["arn:aws:s3:::bucket".into()];
    assert_eq!(
        code(&put(&gw, other).await.entries[0]),
        "IdempotencyKeyReused"
    );
    // The time is not compared: a resend may stamp it again.
    let mut restamped = keyed("Reused", "k", 1);
    restamped[0].time = Some(prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 0,
    });
    let r = put(&gw, restamped).await;
    assert!(r.entries[0].deduplicated, "{r:?}");
    assert_eq!(held(&gw, "Reused") + held(&gw, "ReusedOther"), 1);
    // Keys are per tenant: the same key for another tenant is its own.
    gw.stop().await;
}

#[tokio::test]
async fn bad_keys_are_refused_with_the_reason() {
    let gw = TestGateway::start("").await;
    let mut entries = keyed("BadKey", "b", 3);
    entries[0].idempotency_key = "k".repeat(129);
    entries[1].idempotency_key = "tab\tinside".into();
    let r = put(&gw, entries).await;
    assert_eq!(code(&r.entries[0]), "InvalidArgument");
    assert!(r.entries[0].error_message.contains("129"), "{r:?}");
    assert_eq!(code(&r.entries[1]), "InvalidArgument");
    assert!(r.entries[1].error_message.contains("printable"), "{r:?}");
    assert!(r.entries[2].error_code.is_empty(), "{r:?}");
    assert_eq!(held(&gw, "BadKey"), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_resend_waits_for_the_first_in_flight_or_says_so() {
    let gw = TestGateway::start("").await;
    slow_calls(&gw, "Waited", 800, None);
    let (first, patient, hasty) = tokio::join!(
        put(&gw, keyed("Waited", "w", 1)),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            put_within(&gw, keyed("Waited", "w", 1), Duration::from_secs(5)).await
        },
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            put_within(&gw, keyed("Waited", "w", 1), Duration::from_millis(300)).await
        },
    );
    assert_eq!(ids(&patient), ids(&first), "waited for the first's outcome");
    assert!(patient.entries[0].deduplicated);
    assert_eq!(
        code(&hasty.entries[0]),
        "IdempotencyKeyInFlight",
        "{hasty:?}"
    );
    // Once the first is settled, a resend gets its result.
    let later = put(&gw, keyed("Waited", "w", 1)).await;
    assert_eq!(ids(&later), ids(&first));
    assert_eq!(held(&gw, "Waited"), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_resend_after_the_callers_deadline_learns_the_real_outcome() {
    let gw = TestGateway::start("").await;
    slow_calls(&gw, "Late", 1_000, Some(1));
    // The caller gives up while the call is in flight: unknown, to it.
    let first = put_within(&gw, keyed("Late", "l", 1), Duration::from_millis(300)).await;
    assert_eq!(code(&first.entries[0]), "OutcomeUnknown", "{first:?}");
    // The call comes back accepted after it; the resend gets that result.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let resend = put(&gw, keyed("Late", "l", 1)).await;
    assert!(resend.entries[0].deduplicated, "{resend:?}");
    let held_ids: Vec<String> = gw
        .emulator()
        .events()
        .into_iter()
        .filter(|e| e.detail_type == "Late")
        .map(|e| e.event_id)
        .collect();
    assert_eq!(held_ids, ids(&resend), "sent once, and that is its id");
    gw.stop().await;
}

#[tokio::test]
async fn a_failed_first_leaves_the_key_free() {
    let gw = TestGateway::start("[upstream]\nentry_max_attempts = 1\n").await;
    gw.emulator().set_faults(vec![FaultRule {
        detail_type: "Failed".into(),
        fault: Fault::EntryError {
            code: "InternalFailure".into(),
            message: "try again".into(),
        },
        times: Some(1),
    }]);
    let first = put(&gw, keyed("Failed", "f", 1)).await;
    assert_eq!(code(&first.entries[0]), "InternalFailure", "{first:?}");
    let second = put(&gw, keyed("Failed", "f", 1)).await;
    assert!(!second.entries[0].deduplicated, "sent: {second:?}");
    ids(&second);
    assert_eq!(held(&gw, "Failed"), 1);
    gw.stop().await;
}

#[tokio::test]
async fn an_unknown_first_stays_unknown_unless_the_resend_forces_it() {
    let gw = TestGateway::start("").await;
    // EventBridge takes the event and the answer is lost.
    gw.emulator().set_faults(vec![FaultRule {
        detail_type: "Unknown".into(),
        fault: Fault::DropConnection { accept: true },
        times: Some(1),
    }]);
    let first = put(&gw, keyed("Unknown", "u", 1)).await;
    assert_eq!(code(&first.entries[0]), "OutcomeUnknown", "{first:?}");
    let second = put(&gw, keyed("Unknown", "u", 1)).await;
    assert_eq!(code(&second.entries[0]), "OutcomeUnknown", "{second:?}");
    assert!(second.entries[0].deduplicated);
    assert!(
        second.entries[0]
            .error_message
            .contains("resend_if_unknown"),
        "{second:?}"
    );
    assert_eq!(held(&gw, "Unknown"), 1, "not sent again");
    let mut forced = keyed("Unknown", "u", 1);
    forced[0].resend_if_unknown = true;
    let third = put(&gw, forced.clone()).await;
    assert!(!third.entries[0].deduplicated, "{third:?}");
    let id = ids(&third);
    assert_eq!(
        held(&gw, "Unknown"),
        2,
        "the caller chose a possible duplicate"
    );
    // The forced resend's outcome is the key's from now on.
    let fourth = put(&gw, forced).await;
    assert_eq!(ids(&fourth), id);
    assert!(fourth.entries[0].deduplicated);
    gw.stop().await;
}

#[tokio::test]
async fn a_key_past_its_window_is_a_new_event() {
    let gw = TestGateway::start("[idempotency]\nwindow_ms = 60000\n").await;
    let first = put(&gw, keyed("Window", "x", 1)).await;
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(59)).await;
    tokio::time::resume();
    let within = put(&gw, keyed("Window", "x", 1)).await;
    assert_eq!(ids(&within), ids(&first));
    assert!(within.entries[0].deduplicated);
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(2)).await;
    tokio::time::resume();
    let after = put(&gw, keyed("Window", "x", 1)).await;
    assert!(!after.entries[0].deduplicated, "{after:?}");
    assert_ne!(ids(&after), ids(&first));
    assert_eq!(held(&gw, "Window"), 2);
    gw.stop().await;
}

#[tokio::test]
async fn keys_on_a_stream_are_deduplicated_too() {
    let gw = TestGateway::start("").await;
    let (tx, mut answers) = gw.open_stream(8).await;
    for _ in 0..3 {
        tx.send(request(keyed("Streamed", "s", 4), DeliveryMode::Sync))
            .await
            .unwrap();
    }
    drop(tx);
    let mut got = Vec::new();
    while let Some(a) = answers.message().await.unwrap() {
        got.push(a);
    }
    assert_eq!(got.len(), 3);
    let first = ids(&got[0]);
    for a in &got {
        assert_eq!(ids(a), first);
    }
    assert_eq!(held(&gw, "Streamed"), 4);
    gw.stop().await;
}

#[tokio::test]
async fn durable_keys_give_the_first_receipt_and_survive_a_restart() {
    let state = StateDir::new();
    let toml = format!(
        "[durable]\npath = \"{}\"\n[sources]\ncheck_state = false\n",
        state.path.display()
    );
    let send = |gw: &TestGateway| {
        let mut client = gw.client.clone();
        async move {
            client
                .put_partner_events(request(keyed("Durable", "d", 3), DeliveryMode::Durable))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let receipts = |r: &PutPartnerEventsResponse| -> Vec<String> {
        r.entries
            .iter()
            .map(|e| {
                assert!(e.error_code.is_empty() && e.receipt_id.len() == 32, "{e:?}");
                e.receipt_id.clone()
            })
            .collect()
    };
    let gw = TestGateway::start(&toml).await;
    let first = send(&gw).await;
    let again = send(&gw).await;
    assert_eq!(receipts(&again), receipts(&first), "the first's receipts");
    assert!(again.entries.iter().all(|e| e.deduplicated));
    common::eventually("delivered", || held(&gw, "Durable") == 3).await;
    gw.stop().await;

    let gw = TestGateway::start(&toml).await;
    let after = send(&gw).await;
    assert_eq!(receipts(&after), receipts(&first), "kept with the queue");
    assert!(after.entries.iter().all(|e| e.deduplicated));
    // This gateway's own emulator: nothing was sent to it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(held(&gw, "Durable"), 0);
    gw.stop().await;
}

#[tokio::test]
async fn past_max_keys_the_oldest_are_forgotten_and_counted() {
    let gw =
        TestGateway::start("[idempotency]\nmax_keys = 3\n[metrics]\nlisten = \"127.0.0.1:0\"\n")
            .await;
    for i in 0..5 {
        ids(&put(&gw, keyed("Bounded", &format!("b{i}"), 1)).await);
    }
    let metrics = scrape(gw.gateway.metrics_addr().unwrap()).await;
    assert_eq!(
        sample(&metrics, "partner_events_idempotency_evicted_total"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "partner_events_idempotency_keys"),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "partner_events_idempotency_entries_total{result=\"new\"}"
        ),
        Some(5.0)
    );
    // The newest is still known; the oldest was forgotten: sent again.
    assert!(put(&gw, keyed("Bounded", "b4", 1)).await.entries[0].deduplicated);
    assert!(!put(&gw, keyed("Bounded", "b0", 1)).await.entries[0].deduplicated);
    assert_eq!(held(&gw, "Bounded"), 6);
    gw.stop().await;
}

#[tokio::test]
async fn a_key_freed_while_a_refused_durable_batch_waited_on_it_is_free() {
    let state = StateDir::new();
    let gw = TestGateway::start(&format!(
        // A short grace: the queue's stuck entry is not waited for at the end.
        "[server]\nshutdown_grace_ms = 200\n[durable]\npath = \"{}\"\nmax_entries = 1\n[sources]\ncheck_state = false\n",
        state.path.display()
    ))
    .await;
    let stuck = FaultRule::new(
        "Stuck",
        Fault::EntryError {
            code: "InternalFailure".into(),
            message: "x".into(),
        },
    );
    gw.emulator().set_faults(vec![
        stuck.clone(),
        FaultRule::new(
            "Slow",
            Fault::Delay {
                ms: 500,
                jitter_ms: 0,
            },
        ),
        FaultRule::new(
            "Slow",
            Fault::EntryError {
                code: "AccessDeniedException".into(),
                message: "x".into(),
            },
        ),
    ]);
    // The durable queue full: its one entry keeps failing.
    gw.client
        .clone()
        .put_partner_events(request(vec![entry("Stuck", "{}")], DeliveryMode::Durable))
        .await
        .unwrap();
    // A DURABLE batch waits on a key whose first entry is in a slow call
    // that fails, while the queue refuses the batch.
    let (first, refused) = tokio::join!(put(&gw, keyed("Slow", "k", 1)), async {
        common::eventually("the first entry in EventBridge's call", || {
            gw.emulator().received_count(r#"{"m":"k-0"}"#) == 1
        })
        .await;
        let mut entries = keyed("Slow", "k", 1);
        entries.extend(keyed("Other", "j", 1));
        gw.client
            .clone()
            .put_partner_events(request(entries, DeliveryMode::Durable))
            .await
    });
    assert_eq!(
        code(&first.entries[0]),
        "AccessDeniedException",
        "{first:?}"
    );
    let refused = refused.expect_err("the queue is full");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    // Neither sent nor queued: the key is free, a resend is sent.
    gw.emulator().set_faults(vec![stuck]);
    let resend = put_within(&gw, keyed("Slow", "k", 1), Duration::from_secs(2)).await;
    assert!(!resend.entries[0].deduplicated, "{resend:?}");
    ids(&resend);
    assert_eq!(held(&gw, "Slow"), 1);
    gw.stop().await;
}
