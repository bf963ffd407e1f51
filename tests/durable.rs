//! The durable queue through the real gRPC client: DURABLE acceptance and
//! receipts, delivery reports (WatchDeliveries, GetDeliveries), defaults,
//! cursors, authorization, a full queue, outages, dead letters, a restart
//! and a damaged queue file at start-up. EventBridge is the emulator
//! (in-process, with fault rules), or one behind a [`StallProxy`].

mod common;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use common::{
    entry, eventually_async, eventually_async_within, sample, scrape, StallProxy, StateDir,
    TestGateway,
};
use partner_events_gateway::{
    emulator::{EmulatorHandle, Fault, FaultRule},
    proto::{
        dead_letters_client::DeadLettersClient, partner_events_client::PartnerEventsClient,
        DeadLetterSelection, DeliveryMode, DeliveryReport, DeliveryState, GetDeadLetterRequest,
        GetDeliveriesRequest, ListDeadLettersRequest, PartnerEventEntry, PurgeDeadLettersRequest,
        PutPartnerEventsRequest, PutPartnerEventsResponse, ReplayDeadLettersRequest,
        WatchDeliveriesRequest,
    },
};
use tonic::{transport::Channel, Code, Request};
use tonic_types::StatusExt;

const DURABLE: i32 = DeliveryMode::Durable as i32;
const SYNC: i32 = DeliveryMode::Sync as i32;

/// Two tenants, each with one source.
const TWO_TENANTS: &str = r#"
[tenants.acme]
default_source = "billing"
[tenants.acme.sources.billing]
name = "aws.partner/example.com/acme/billing"
region = "us-east-1"
[tenants.initech]
default_source = "main"
[tenants.initech.sources.main]
name = "aws.partner/example.com/initech/main"
region = "us-east-1"
"#;

/// Fast pipeline retries, and a breaker that stays shut, so that the
/// durable queue's own rounds and backoff are what a test sees.
const FAST_UPSTREAM: &str = "[upstream]\nretry_base_ms = 1\nretry_max_ms = 5\ncall_timeout_ms = 400\nbreaker_failures = 100000\nentry_max_attempts = 2\n";

fn batch(
    tenant: &str,
    batch_id: &str,
    entries: Vec<PartnerEventEntry>,
    delivery: i32,
) -> PutPartnerEventsRequest {
    PutPartnerEventsRequest {
        tenant_id: tenant.to_string(),
        entries,
        batch_id: batch_id.to_string(),
        delivery,
    }
}

/// `n` entries of `detail_type`, each detail carrying a marker unique in
/// the whole test binary (`tag-i`).
fn marked(detail_type: &str, tag: &str, n: usize) -> Vec<PartnerEventEntry> {
    (0..n)
        .map(|i| entry(detail_type, &format!(r#"{{"m":"{tag}-{i}"}}"#)))
        .collect()
}

fn marker(detail: &str) -> String {
    serde_json::from_str::<serde_json::Value>(detail).unwrap()["m"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The receipts of a DURABLE answer, in entry order; every entry must have one.
fn receipts(r: &PutPartnerEventsResponse) -> Vec<String> {
    assert_eq!(r.delivery, DURABLE, "{r:?}");
    r.entries
        .iter()
        .map(|e| {
            assert!(e.error_code.is_empty() && e.event_id.is_empty(), "{e:?}");
            assert_eq!(e.receipt_id.len(), 32, "{e:?}");
            e.receipt_id.clone()
        })
        .collect()
}

async fn put(
    client: &PartnerEventsClient<Channel>,
    req: PutPartnerEventsRequest,
) -> PutPartnerEventsResponse {
    client
        .clone()
        .put_partner_events(req)
        .await
        .expect("the call succeeds")
        .into_inner()
}

async fn get(channel: &Channel, ids: &[String]) -> Vec<DeliveryReport> {
    PartnerEventsClient::new(channel.clone())
        .get_deliveries(GetDeliveriesRequest {
            receipt_ids: ids.to_vec(),
        })
        .await
        .expect("GetDeliveries succeeds")
        .into_inner()
        .deliveries
}

fn state(r: &DeliveryReport) -> DeliveryState {
    DeliveryState::try_from(r.state).unwrap()
}

/// Waits (bounded by `bound`) until every receipt of `ids` is `want`; gives their reports.
async fn until_all(
    channel: &Channel,
    ids: &[String],
    want: DeliveryState,
    bound: Duration,
) -> Vec<DeliveryReport> {
    eventually_async_within(
        &format!("{} receipts {want:?}", ids.len()),
        bound,
        || async {
            let reports = get(channel, ids).await;
            reports.iter().all(|r| state(r) == want).then_some(reports)
        },
    )
    .await
}

/// Waits until no receipt of `ids` is queued or in flight; gives their reports.
async fn until_settled(channel: &Channel, ids: &[String]) -> Vec<DeliveryReport> {
    eventually_async(&format!("{} receipts settled", ids.len()), || async {
        let reports = get(channel, ids).await;
        reports
            .iter()
            .all(|r| !matches!(state(r), DeliveryState::Queued | DeliveryState::InFlight))
            .then_some(reports)
    })
    .await
}

async fn watch(channel: &Channel, req: WatchDeliveriesRequest) -> tonic::Streaming<DeliveryReport> {
    PartnerEventsClient::new(channel.clone())
        .watch_deliveries(req)
        .await
        .expect("the watch opens")
        .into_inner()
}

/// The next report of a watch (bounded: 20 s).
async fn next(stream: &mut tonic::Streaming<DeliveryReport>) -> DeliveryReport {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("a report within 20 s")
        .expect("the watch goes on")
        .expect("the watch is open")
}

/// Reads a watch until it has given a report for each of `ids`; fails on
/// one for another receipt or a second one for the same receipt.
async fn reports_for(
    stream: &mut tonic::Streaming<DeliveryReport>,
    ids: &[String],
) -> HashMap<String, DeliveryReport> {
    let wanted: HashSet<&String> = ids.iter().collect();
    let mut got = HashMap::new();
    while got.len() < ids.len() {
        let r = next(stream).await;
        assert!(
            wanted.contains(&r.receipt_id),
            "a report for another receipt: {r:?}"
        );
        assert!(
            got.insert(r.receipt_id.clone(), r).is_none(),
            "two reports for one receipt"
        );
    }
    got
}

/// Event id per marker, of what `emulator` accepted; each marker once at most.
fn events_by_marker(emulator: &EmulatorHandle) -> HashMap<String, String> {
    let mut by = HashMap::new();
    for e in emulator.events() {
        let m = marker(&e.detail);
        assert!(
            by.insert(m.clone(), e.event_id).is_none(),
            "EventBridge holds {m} twice"
        );
    }
    by
}

fn call_error(status: u16, error_type: &str) -> Fault {
    Fault::CallError {
        status,
        error_type: error_type.into(),
        message: "injected".into(),
    }
}

fn entry_error(code: &str) -> Fault {
    Fault::EntryError {
        code: code.into(),
        message: "injected".into(),
    }
}

fn dead_letters(channel: &Channel) -> DeadLettersClient<Channel> {
    DeadLettersClient::new(channel.clone())
}

fn all() -> Option<DeadLetterSelection> {
    Some(DeadLetterSelection {
        all: true,
        ..DeadLetterSelection::default()
    })
}

fn durable_dir_toml(dir: &StateDir, extra: &str) -> String {
    format!("[durable]\npath = \"{}\"\n{extra}", dir.path.display())
}

#[tokio::test]
async fn durable_unary_gives_receipts_then_delivered_reports() {
    let gw = TestGateway::start("").await;
    let mut entries = marked("Order", "unary", 3);
    entries.insert(1, entry("Order", "not json"));
    let r = put(&gw.client, batch("acme", "b-unary", entries, DURABLE)).await;
    assert_eq!(r.delivery, DURABLE);
    assert_eq!(r.failed_entry_count, 1, "{r:?}");
    assert_eq!(r.entries[1].error_code, "MalformedDetail", "{r:?}");
    assert!(r.entries[1].receipt_id.is_empty() && r.entries[1].event_id.is_empty());
    // As in SYNC.
    let sync = put(
        &gw.client,
        batch("acme", "b-sync", vec![entry("Order", "not json")], SYNC),
    )
    .await;
    assert_eq!(
        (
            sync.entries[0].error_code.as_str(),
            sync.entries[0].error_message.as_str()
        ),
        (
            r.entries[1].error_code.as_str(),
            r.entries[1].error_message.as_str()
        )
    );
    // Entry index -> receipt, for the three valid ones.
    let valid: Vec<(u32, String)> = [0usize, 2, 3]
        .iter()
        .map(|&i| {
            let e = &r.entries[i];
            assert!(e.error_code.is_empty() && e.event_id.is_empty(), "{e:?}");
            assert_eq!(e.receipt_id.len(), 32, "{e:?}");
            (i as u32, e.receipt_id.clone())
        })
        .collect();
    let ids: Vec<String> = valid.iter().map(|(_, r)| r.clone()).collect();

    let mut stream = watch(&gw.channel, WatchDeliveriesRequest::default()).await;
    let reports = reports_for(&mut stream, &ids).await;
    let events = events_by_marker(gw.emulator());
    assert_eq!(
        events.len(),
        3,
        "EventBridge holds the three valid entries: {events:?}"
    );
    for (index, receipt) in &valid {
        let rep = &reports[receipt];
        assert_eq!(state(rep), DeliveryState::Delivered, "{rep:?}");
        assert_eq!(rep.tenant_id, "acme");
        assert_eq!(rep.batch_id, "b-unary");
        assert_eq!(rep.index, *index);
        assert!(rep.attempts >= 1, "{rep:?}");
        assert!(!rep.cursor.is_empty());
        // Entry i > 1 carries marker i-1 (the malformed one is index 1).
        let m = format!("unary-{}", if *index == 0 { 0 } else { index - 1 });
        assert_eq!(
            rep.event_id, events[&m],
            "the report's event id is the one EventBridge recorded for {m}"
        );
    }

    let mut asked = ids.clone();
    asked.push("0123456789abcdef0123456789abcdef".into());
    let got = get(&gw.channel, &asked).await;
    for (i, receipt) in ids.iter().enumerate() {
        assert_eq!(state(&got[i]), DeliveryState::Delivered);
        assert_eq!(got[i].event_id, reports[receipt].event_id);
        assert_eq!(got[i].receipt_id, *receipt);
    }
    assert_eq!(state(&got[3]), DeliveryState::NotFound);

    let bad = PartnerEventsClient::new(gw.channel.clone())
        .get_deliveries(GetDeliveriesRequest {
            receipt_ids: vec!["not-a-receipt".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert_eq!(
        gw.emulator().counts().delivered,
        3,
        "each event exactly once"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_stream_answers_sync_and_durable_batches_each_in_its_mode() {
    let gw = TestGateway::start("").await;
    let (tx, mut answers) = gw.open_stream(8).await;
    let modes = [SYNC, DURABLE, 0, DURABLE, SYNC];
    for (i, mode) in modes.iter().enumerate() {
        tx.send(batch(
            "acme",
            &format!("s-{i}"),
            marked("Order", &format!("stream{i}"), 2),
            *mode,
        ))
        .await
        .unwrap();
    }
    let mut durable_ids = Vec::new();
    for _ in 0..modes.len() {
        let a = tokio::time::timeout(Duration::from_secs(20), answers.message())
            .await
            .expect("an answer in time")
            .unwrap()
            .unwrap();
        let i: usize = a.batch_id.strip_prefix("s-").unwrap().parse().unwrap();
        // UNSPECIFIED is SYNC by default.
        let want = if modes[i] == DURABLE { DURABLE } else { SYNC };
        assert_eq!(a.delivery, want, "{a:?}");
        assert_eq!(a.failed_entry_count, 0, "{a:?}");
        for e in &a.entries {
            if want == DURABLE {
                assert!(e.event_id.is_empty() && e.receipt_id.len() == 32, "{e:?}");
                durable_ids.push(e.receipt_id.clone());
            } else {
                assert!(!e.event_id.is_empty() && e.receipt_id.is_empty(), "{e:?}");
            }
        }
    }
    drop(tx);
    assert_eq!(durable_ids.len(), 4);
    until_all(
        &gw.channel,
        &durable_ids,
        DeliveryState::Delivered,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(events_by_marker(gw.emulator()).len(), 10);
    gw.stop().await;
}

#[tokio::test]
async fn tenant_and_gateway_defaults_make_unspecified_batches_durable() {
    let tenant_default = TWO_TENANTS.replace(
        "[tenants.acme]\n",
        "[tenants.acme]\ndelivery = \"durable\"\n",
    );
    let gw = TestGateway::start(&tenant_default).await;
    let mode = |r: PutPartnerEventsResponse| r.delivery;
    assert_eq!(
        mode(put(&gw.client, batch("acme", "d", marked("T", "td0", 1), 0)).await),
        DURABLE
    );
    assert_eq!(
        mode(put(&gw.client, batch("acme", "d", marked("T", "td1", 1), SYNC)).await),
        SYNC
    );
    assert_eq!(
        mode(put(&gw.client, batch("initech", "d", marked("T", "td2", 1), 0)).await),
        SYNC
    );
    gw.stop().await;

    let dir = StateDir::new();
    let gateway_default = format!(
        "{}\n{TWO_TENANTS}",
        durable_dir_toml(&dir, "default_delivery = \"durable\"")
    );
    let gw = TestGateway::start(&gateway_default).await;
    let r = put(&gw.client, batch("initech", "d", marked("T", "gd0", 2), 0)).await;
    let ids = receipts(&r);
    let r = put(
        &gw.client,
        batch("initech", "d", marked("T", "gd1", 1), SYNC),
    )
    .await;
    assert_eq!(r.delivery, SYNC);
    assert!(!r.entries[0].event_id.is_empty(), "{r:?}");
    until_all(
        &gw.channel,
        &ids,
        DeliveryState::Delivered,
        Duration::from_secs(20),
    )
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn a_watch_resumes_exactly_after_its_cursor() {
    let gw = TestGateway::start("").await;
    let first = receipts(
        &put(
            &gw.client,
            batch("acme", "c1", marked("T", "cur1", 6), DURABLE),
        )
        .await,
    );
    until_all(
        &gw.channel,
        &first,
        DeliveryState::Delivered,
        Duration::from_secs(20),
    )
    .await;

    let mut stream = watch(&gw.channel, WatchDeliveriesRequest::default()).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next(&mut stream).await);
    }
    drop(stream);
    let cursor = seen.last().unwrap().cursor.clone();

    let mut resumed = watch(
        &gw.channel,
        WatchDeliveriesRequest {
            cursor,
            ..WatchDeliveriesRequest::default()
        },
    )
    .await;
    for _ in 0..3 {
        seen.push(next(&mut resumed).await);
    }
    // The six reports once each, in commit order (cursors grow).
    let got: HashSet<&String> = seen.iter().map(|r| &r.receipt_id).collect();
    assert_eq!(got, first.iter().collect(), "no gap, no repeat");
    assert!(
        seen.windows(2).all(|w| w[0].cursor < w[1].cursor),
        "in commit order"
    );

    // The resumed watch goes on live; a from_now watch sees only what is new.
    let mut fresh = watch(
        &gw.channel,
        WatchDeliveriesRequest {
            from_now: true,
            ..WatchDeliveriesRequest::default()
        },
    )
    .await;
    let second = receipts(
        &put(
            &gw.client,
            batch("acme", "c2", marked("T", "cur2", 2), DURABLE),
        )
        .await,
    );
    reports_for(&mut resumed, &second).await;
    reports_for(&mut fresh, &second).await;
    gw.stop().await;
}

/// A request carrying `token` as a bearer token.
fn as_caller<T>(token: &str, message: T) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

#[tokio::test]
async fn callers_see_only_their_tenants_and_only_operators_handle_dead_letters() {
    use sha2::Digest;
    let hash = |t: &str| hex::encode(sha2::Sha256::digest(t.as_bytes()));
    let toml = format!(
        r#"
[auth]
mode = "required"
operators = ["ops"]
[[auth.tokens]]
caller = "alice"
sha256 = "{}"
[[auth.tokens]]
caller = "ops"
sha256 = "{}"
[auth.callers."alice"]
tenants = ["acme"]
[auth.callers."ops"]
tenants = ["*"]
{TWO_TENANTS}"#,
        hash("alice-token"),
        hash("ops-token")
    );
    let gw = TestGateway::start(&toml).await;
    let put_as = |token: &'static str, tenant: &'static str, tag: &'static str| {
        let mut client = gw.client.clone();
        async move {
            let r = client
                .put_partner_events(as_caller(
                    token,
                    batch(tenant, "auth", marked("T", tag, 2), DURABLE),
                ))
                .await
                .unwrap()
                .into_inner();
            receipts(&r)
        }
    };
    let mine = put_as("alice-token", "acme", "authA").await;
    let theirs = put_as("ops-token", "initech", "authB").await;
    let mut all_ids = mine.clone();
    all_ids.extend(theirs.iter().cloned());

    // The operator sees them delivered (and so their reports committed).
    let mut ops = PartnerEventsClient::new(gw.channel.clone());
    let delivered = |ids: Vec<String>| {
        let mut ops = ops.clone();
        async move {
            let got = ops
                .get_deliveries(as_caller(
                    "ops-token",
                    GetDeliveriesRequest { receipt_ids: ids },
                ))
                .await
                .unwrap()
                .into_inner()
                .deliveries;
            got.iter().all(|r| state(r) == DeliveryState::Delivered)
        }
    };
    eventually_async("all four delivered", || delivered(all_ids.clone())).await;

    // alice, no filter: only acme's reports, of the kept ones and the live.
    let mut alice = PartnerEventsClient::new(gw.channel.clone());
    let mut stream = alice
        .watch_deliveries(as_caller("alice-token", WatchDeliveriesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    reports_for(&mut stream, &mine).await;
    let later_theirs = put_as("ops-token", "initech", "authB2").await;
    eventually_async("initech's later ones delivered", || {
        delivered(later_theirs.clone())
    })
    .await;
    let later_mine = put_as("alice-token", "acme", "authA2").await;
    // Reports come in commit order: initech's (all committed before acme's
    // later ones), had they been sent, would come first and fail the check.
    let late = reports_for(&mut stream, &later_mine).await;
    assert!(late.values().all(|r| r.tenant_id == "acme"));

    let denied = alice
        .watch_deliveries(as_caller(
            "alice-token",
            WatchDeliveriesRequest {
                tenant_ids: vec!["initech".into()],
                ..WatchDeliveriesRequest::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    let got = alice
        .get_deliveries(as_caller(
            "alice-token",
            GetDeliveriesRequest {
                receipt_ids: vec![mine[0].clone(), theirs[0].clone()],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert_eq!(state(&got[0]), DeliveryState::Delivered);
    assert_eq!(state(&got[1]), DeliveryState::NotFound, "{:?}", got[1]);
    assert!(got[1].tenant_id.is_empty() && got[1].event_id.is_empty());

    let mut dl = dead_letters(&gw.channel);
    let list = |token: &str| as_caller(token, ListDeadLettersRequest::default());
    let e = dl.list_dead_letters(list("alice-token")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = dl
        .replay_dead_letters(as_caller(
            "alice-token",
            ReplayDeadLettersRequest { selection: all() },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = dl
        .purge_dead_letters(as_caller(
            "alice-token",
            PurgeDeadLettersRequest { selection: all() },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = dl
        .get_dead_letter(as_caller(
            "alice-token",
            GetDeadLetterRequest {
                receipt_id: mine[0].clone(),
                include_detail: true,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let listed = dl
        .list_dead_letters(list("ops-token"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total, 0);
    let replayed = dl
        .replay_dead_letters(as_caller(
            "ops-token",
            ReplayDeadLettersRequest { selection: all() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.replayed, 0);
    ops.get_deliveries(as_caller("ops-token", GetDeliveriesRequest::default()))
        .await
        .unwrap();
    gw.stop().await;
}

/// A gateway whose `Stuck` entries keep failing retryably (resent every 20
/// to 100 ms), so they stay queued; `bound` goes in its `[durable]`.
async fn stuck_gateway(bound: &str) -> (TestGateway, StateDir) {
    let dir = StateDir::new();
    let toml = format!(
        "{FAST_UPSTREAM}{}",
        durable_dir_toml(
            &dir,
            &format!("{bound}\nretry_base_ms = 20\nretry_max_ms = 100\nattempt_timeout_ms = 1000")
        )
    );
    let gw = TestGateway::start(&toml).await;
    gw.emulator().set_faults(vec![FaultRule::new(
        "Stuck",
        entry_error("InternalFailure"),
    )]);
    (gw, dir)
}

#[tokio::test]
async fn a_full_queue_refuses_durable_batches_and_loses_nothing() {
    let (gw, _dir) = stuck_gateway("max_bytes = 65536").await;
    // ~2 KiB a detail: a 64 KiB queue holds a few batches of five.
    let pad = "x".repeat(2000);
    let stuck = |tag: &str| -> Vec<PartnerEventEntry> {
        (0..5)
            .map(|i| entry("Stuck", &format!(r#"{{"m":"{tag}-{i}","pad":"{pad}"}}"#)))
            .collect()
    };
    let mut acknowledged = Vec::new();
    let full = loop {
        assert!(acknowledged.len() < 200, "the queue never filled");
        let tag = format!("full{}", acknowledged.len());
        match gw
            .client
            .clone()
            .put_partner_events(batch("acme", "full", stuck(&tag), DURABLE))
            .await
        {
            Ok(r) => acknowledged.extend(receipts(&r.into_inner())),
            Err(status) => break status,
        }
    };
    eprintln!(
        "queue full after {} acknowledged entries",
        acknowledged.len()
    );
    assert!(!acknowledged.is_empty());
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    let details = full.get_error_details();
    let retry = details.retry_info().expect("RetryInfo");
    assert!(
        retry.retry_delay.is_some_and(|d| d > Duration::ZERO),
        "{retry:?}"
    );
    assert_eq!(
        details.error_info().expect("ErrorInfo").reason,
        "DURABLE_QUEUE_FULL"
    );

    let (tx, mut answers) = gw.open_stream(4).await;
    tx.send(batch("acme", "full-stream", stuck("fullstream"), DURABLE))
        .await
        .unwrap();
    let a = answers.message().await.unwrap().unwrap();
    let be = a.batch_error.as_ref().expect("a batch error");
    assert_eq!(be.code, 8, "{a:?}");
    assert_eq!(a.entries.len(), 5);
    assert!(
        a.entries
            .iter()
            .all(|e| e.error_code == "QueueFull" && e.receipt_id.is_empty()),
        "{a:?}"
    );

    // SYNC of another detail type goes through meanwhile.
    let s = put(
        &gw.client,
        batch("acme", "sync", marked("Fine", "fullsync", 3), SYNC),
    )
    .await;
    assert_eq!(s.failed_entry_count, 0, "{s:?}");
    assert!(s.entries.iter().all(|e| !e.event_id.is_empty()));
    let still = get(&gw.channel, &acknowledged).await;
    assert!(
        still
            .iter()
            .all(|r| matches!(state(r), DeliveryState::Queued | DeliveryState::InFlight)),
        "the stuck entries stay queued"
    );

    gw.emulator().set_faults(vec![]);
    until_all(
        &gw.channel,
        &acknowledged,
        DeliveryState::Delivered,
        Duration::from_secs(20),
    )
    .await;
    let again = eventually_async("DURABLE accepted again", || async {
        gw.client
            .clone()
            .put_partner_events(batch("acme", "again", stuck("fullagain"), DURABLE))
            .await
            .ok()
            .map(|r| receipts(&r.into_inner()))
    })
    .await;
    acknowledged.extend(again);
    until_all(
        &gw.channel,
        &acknowledged,
        DeliveryState::Delivered,
        Duration::from_secs(20),
    )
    .await;
    let events = events_by_marker(gw.emulator());
    assert_eq!(
        events
            .keys()
            .filter(|m| m.starts_with("full") && !m.starts_with("fullsync"))
            .count(),
        acknowledged.len()
    );
    gw.stop().await;
}

#[tokio::test]
async fn max_entries_bounds_the_queue_by_count_and_names_the_bound() {
    let (gw, _dir) = stuck_gateway("max_entries = 7").await;
    let first = receipts(
        &put(
            &gw.client,
            batch("acme", "count-1", marked("Stuck", "count1", 5), DURABLE),
        )
        .await,
    );
    assert_eq!(first.len(), 5);
    // 5 queued + 3 would be 8, over 7: refused whole, by the entry bound.
    let full = gw
        .client
        .clone()
        .put_partner_events(batch(
            "acme",
            "count-2",
            marked("Stuck", "count2", 3),
            DURABLE,
        ))
        .await
        .expect_err("over max_entries");
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    assert!(full.message().contains("max_entries"), "{}", full.message());
    let details = full.get_error_details();
    assert!(details.retry_info().is_some(), "{full:?}");
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "DURABLE_QUEUE_FULL");
    assert_eq!(
        info.metadata.get("max_entries").map(String::as_str),
        Some("7")
    );
    // Two more fit; nothing of the refused batch was queued.
    let second = receipts(
        &put(
            &gw.client,
            batch("acme", "count-3", marked("Stuck", "count3", 2), DURABLE),
        )
        .await,
    );
    assert_eq!(second.len(), 2);
    // Room comes back as entries are delivered.
    gw.emulator().set_faults(vec![]);
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    until_all(
        &gw.channel,
        &all,
        DeliveryState::Delivered,
        Duration::from_secs(20),
    )
    .await;
    let again = receipts(
        &put(
            &gw.client,
            batch("acme", "count-4", marked("T", "count4", 7), DURABLE),
        )
        .await,
    );
    assert_eq!(again.len(), 7);
    let held = events_by_marker(gw.emulator());
    assert!(
        !held.keys().any(|m| m.starts_with("count2")),
        "a refused batch reached EventBridge: {held:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_outage_longer_than_max_age_dead_letters_and_replay_delivers() {
    let dir = StateDir::new();
    let toml = format!(
        "{FAST_UPSTREAM}{}",
        durable_dir_toml(&dir, "max_delivery_age_ms = 2000\nretry_base_ms = 100\nretry_max_ms = 300\nattempt_timeout_ms = 500")
    );
    let gw = TestGateway::start(&toml).await;
    gw.emulator()
        .set_faults(vec![FaultRule::everywhere(call_error(
            500,
            "InternalException",
        ))]);
    let ids = receipts(
        &put(
            &gw.client,
            batch("acme", "outage", marked("T", "long", 3), DURABLE),
        )
        .await,
    );
    let dead = until_all(
        &gw.channel,
        &ids,
        DeliveryState::DeadLettered,
        Duration::from_secs(15),
    )
    .await;
    for d in &dead {
        assert_eq!(d.error_code, "MaxDeliveryAgeExceeded", "{d:?}");
        assert!(
            d.error_message
                .contains("the last failure: InternalException"),
            "{}",
            d.error_message
        );
        assert!(d.attempts >= 2, "{d:?}");
    }
    eprintln!(
        "dead letter after a long outage: attempts {}, {:?}",
        dead[0].attempts, dead[0].error_message
    );
    let mut dl = dead_letters(&gw.channel);
    let listed = dl
        .list_dead_letters(ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total, 3);
    let listed_ids: HashSet<String> = listed
        .dead_letters
        .iter()
        .map(|d| d.receipt_id.clone())
        .collect();
    assert_eq!(listed_ids, ids.iter().cloned().collect());
    assert!(listed
        .dead_letters
        .iter()
        .all(|d| d.error_code == "MaxDeliveryAgeExceeded" && d.detail.is_empty()));

    gw.emulator().set_faults(vec![]);
    let mut stream = watch(
        &gw.channel,
        WatchDeliveriesRequest {
            from_now: true,
            ..WatchDeliveriesRequest::default()
        },
    )
    .await;
    let replayed = dl
        .replay_dead_letters(ReplayDeadLettersRequest { selection: all() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.replayed, 3);
    let reports = reports_for(&mut stream, &ids).await;
    assert!(
        reports
            .values()
            .all(|r| state(r) == DeliveryState::Delivered && !r.event_id.is_empty()),
        "{reports:?}"
    );
    let events = events_by_marker(gw.emulator());
    for r in reports.values() {
        assert!(events.values().any(|e| *e == r.event_id));
    }
    assert_eq!(
        dl.list_dead_letters(ListDeadLettersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .total,
        0
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_outage_shorter_than_max_age_delivers_after_the_callers_deadline() {
    let dir = StateDir::new();
    let toml = format!(
        "{FAST_UPSTREAM}{}",
        durable_dir_toml(
            &dir,
            "retry_base_ms = 50\nretry_max_ms = 200\nattempt_timeout_ms = 500"
        )
    );
    let gw = TestGateway::start(&toml).await;
    gw.emulator()
        .set_faults(vec![FaultRule::everywhere(call_error(
            503,
            "ServiceUnavailable",
        ))]);
    let deadline = Duration::from_millis(300);
    let sent = Instant::now();
    let mut req = Request::new(batch("acme", "short", marked("T", "shortd", 3), DURABLE));
    req.set_timeout(deadline);
    let ids = receipts(
        &gw.client
            .clone()
            .put_partner_events(req)
            .await
            .unwrap()
            .into_inner(),
    );
    // Several failed rounds, well past the caller's deadline, then the outage ends.
    eventually_async("rounds fail past the deadline", || async {
        sent.elapsed() > 3 * deadline && gw.emulator().counts().calls >= 3
    })
    .await;
    let queued = get(&gw.channel, &ids).await;
    assert!(
        queued
            .iter()
            .all(|r| matches!(state(r), DeliveryState::Queued | DeliveryState::InFlight)),
        "{queued:?}"
    );
    eprintln!(
        "short outage: faults cleared at {:?}, {} calls",
        sent.elapsed(),
        gw.emulator().counts().calls
    );
    gw.emulator().set_faults(vec![]);
    let done = until_all(
        &gw.channel,
        &ids,
        DeliveryState::Delivered,
        Duration::from_secs(20),
    )
    .await;
    eprintln!("short outage: delivered at {:?}", sent.elapsed());
    for d in &done {
        assert!(d.attempts >= 2, "{d:?}");
        let took = d.completed_time.unwrap().seconds * 1000
            + d.completed_time.unwrap().nanos as i64 / 1_000_000
            - (d.accepted_time.unwrap().seconds * 1000
                + d.accepted_time.unwrap().nanos as i64 / 1_000_000);
        assert!(
            took > deadline.as_millis() as i64,
            "delivered {took} ms after acceptance"
        );
    }
    let events = events_by_marker(gw.emulator());
    assert_eq!(events.keys().filter(|m| m.starts_with("shortd")).count(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn a_final_entry_error_dead_letters_and_purge_removes_the_letter() {
    let gw = TestGateway::start(FAST_UPSTREAM).await;
    gw.emulator().set_faults(vec![FaultRule::new(
        "Denied",
        entry_error("AccessDeniedException"),
    )]);
    let mut entries = marked("Denied", "denied", 1);
    entries.extend(marked("Fine", "notdenied", 1));
    let ids = receipts(&put(&gw.client, batch("acme", "final", entries, DURABLE)).await);
    let got = until_settled(&gw.channel, &ids).await;
    assert_eq!(state(&got[0]), DeliveryState::DeadLettered, "{:?}", got[0]);
    assert_eq!(got[0].error_code, "AccessDeniedException");
    assert_eq!(state(&got[1]), DeliveryState::Delivered, "{:?}", got[1]);

    let mut dl = dead_letters(&gw.channel);
    let with = dl
        .get_dead_letter(GetDeadLetterRequest {
            receipt_id: ids[0].clone(),
            include_detail: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(with.detail, r#"{"m":"denied-0"}"#);
    assert_eq!(with.error_code, "AccessDeniedException");
    assert_eq!(
        (with.tenant_id.as_str(), with.batch_id.as_str(), with.index),
        ("acme", "final", 0)
    );
    assert_eq!(with.detail_type, "Denied");
    let without = dl
        .get_dead_letter(GetDeadLetterRequest {
            receipt_id: ids[0].clone(),
            include_detail: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(without.detail.is_empty());
    assert_eq!(without.size_bytes, with.size_bytes);

    let purged = dl
        .purge_dead_letters(PurgeDeadLettersRequest {
            selection: Some(DeadLetterSelection {
                receipt_ids: vec![ids[0].clone(), ids[1].clone()],
                ..DeadLetterSelection::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.purged, 1);
    assert_eq!(
        purged.not_found,
        vec![ids[1].clone()],
        "a delivered entry is no dead letter"
    );
    let e = dl
        .get_dead_letter(GetDeadLetterRequest {
            receipt_id: ids[0].clone(),
            include_detail: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_eq!(
        dl.list_dead_letters(ListDeadLettersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .total,
        0
    );
    // The purge deletes the letter, not the report: while the report is
    // kept (report_retention_ms), GetDeliveries still answers it.
    let after = get(&gw.channel, &ids[..1]).await;
    assert_eq!(
        state(&after[0]),
        DeliveryState::DeadLettered,
        "{:?}",
        after[0]
    );
    assert_eq!(after[0].error_code, "AccessDeniedException");
    gw.stop().await;
}

/// A stallable gateway's config on `dir`'s queue, with a short grace.
fn restartable(dir: &StateDir, proxy: &StallProxy, extra: &str) -> String {
    format!(
        "[upstream]\nendpoint_url = \"{}\"\ncall_timeout_ms = 60000\n[server]\nshutdown_grace_ms = 300\n[sources]\ncheck_state = false\n[metrics]\nlisten = \"127.0.0.1:0\"\n{}",
        proxy.url(),
        durable_dir_toml(dir, &format!("attempt_timeout_ms = 1000\nretry_base_ms = 50\nretry_max_ms = 200\n{extra}"))
    )
}

/// Queues `batches` DURABLE batches of `per` entries with EventBridge
/// stalled, and shuts the gateway down; gives the receipts and the marker of each.
async fn queue_then_shut_down(
    dir: &StateDir,
    proxy: &StallProxy,
    tag: &str,
    batches: usize,
    per: usize,
    pad: usize,
) -> Vec<(String, String)> {
    let gw = TestGateway::start(&restartable(dir, proxy, "")).await;
    proxy.pause();
    let pad = "p".repeat(pad);
    let mut queued = Vec::new();
    for b in 0..batches {
        let entries: Vec<PartnerEventEntry> = (0..per)
            .map(|i| entry("T", &format!(r#"{{"m":"{tag}{b}-{i}","pad":"{pad}"}}"#)))
            .collect();
        let markers: Vec<String> = (0..per).map(|i| format!("{tag}{b}-{i}")).collect();
        let r = put(
            &gw.client,
            batch("acme", &format!("{tag}{b}"), entries, DURABLE),
        )
        .await;
        queued.extend(receipts(&r).into_iter().zip(markers));
    }
    let ids: Vec<String> = queued.iter().map(|(r, _)| r.clone()).collect();
    let standing = get(&gw.channel, &ids).await;
    assert!(standing
        .iter()
        .all(|r| matches!(state(r), DeliveryState::Queued | DeliveryState::InFlight)));
    let started = Instant::now();
    gw.gateway.shutdown().await;
    eprintln!(
        "{tag}: shut down with {} entries queued in {:?}",
        ids.len(),
        started.elapsed()
    );
    queued
}

/// A stalled EventBridge of its own (emulator + proxy).
async fn stalled_upstream() -> (EmulatorHandle, StallProxy) {
    let (gw, emulator, proxy) = TestGateway::stallable("").await;
    // Only the emulator and the proxy are wanted; this gateway goes.
    gw.stop().await;
    (emulator, proxy)
}

/// Starts a gateway on `dir`'s queue (bounded: 20 s). The previous
/// gateway on it, shut down in this same process, has let go of the file:
/// start-up is tried once.
async fn restart(dir: &StateDir, proxy: &StallProxy) -> TestGateway {
    let started = Instant::now();
    let gw = tokio::time::timeout(
        Duration::from_secs(20),
        TestGateway::start(&restartable(dir, proxy, "")),
    )
    .await
    .expect("the gateway starts within 20 s");
    eprintln!("restart took {:?}", started.elapsed());
    gw
}

#[tokio::test]
async fn queued_entries_are_delivered_after_a_restart() {
    let dir = StateDir::new();
    let (emulator, proxy) = stalled_upstream().await;
    let queued = queue_then_shut_down(&dir, &proxy, "restart", 2, 3, 0).await;
    let gw = restart(&dir, &proxy).await;
    let recovery = gw.gateway.durable().recovery().clone();
    assert!(
        !recovery.repaired && recovery.damaged_file.is_none(),
        "a clean shutdown leaves a clean file: {recovery:?}"
    );
    proxy.resume();
    let ids: Vec<String> = queued.iter().map(|(r, _)| r.clone()).collect();
    let done = until_all(
        &gw.channel,
        &ids,
        DeliveryState::Delivered,
        Duration::from_secs(20),
    )
    .await;
    let accepted: HashMap<String, usize> =
        emulator.events().iter().fold(HashMap::new(), |mut m, e| {
            *m.entry(marker(&e.detail)).or_default() += 1;
            m
        });
    for ((_, m), d) in queued.iter().zip(&done) {
        assert!(
            accepted.get(m).is_some_and(|n| *n >= 1),
            "{m} reached EventBridge"
        );
        assert!(!d.event_id.is_empty());
    }
    let twice = accepted.values().filter(|n| **n > 1).count();
    let redelivered = done.iter().filter(|d| d.redelivered).count();
    eprintln!(
        "restart: {} delivered, {twice} twice at EventBridge, {redelivered} reported redelivered",
        done.len()
    );
    gw.stop().await;
}

/// Damages the queue file after a shutdown with entries queued, restarts,
/// and checks the gateway serves and delivers what it salvaged.
async fn damaged_file_case(name: &str, damage: impl FnOnce(&std::path::Path)) {
    let dir = StateDir::new();
    let (emulator, proxy) = stalled_upstream().await;
    let queued = queue_then_shut_down(&dir, &proxy, name, 10, 10, 1500).await;
    let file = dir.path.join("queue.redb");
    let before = std::fs::metadata(&file).unwrap().len();
    damage(&file);
    eprintln!(
        "{name}: queue.redb was {before} bytes, now {}",
        std::fs::metadata(&file).unwrap().len()
    );

    let gw = restart(&dir, &proxy).await;
    let aside: Vec<String> = std::fs::read_dir(&dir.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("queue.redb.damaged-"))
        .collect();
    let metrics = scrape(gw.gateway.metrics_addr().unwrap()).await;
    let damaged = sample(&metrics, "partner_events_durable_damaged_files_total").unwrap_or(0.0);
    let unreadable =
        sample(&metrics, "partner_events_durable_unreadable_records_total").unwrap_or(0.0);
    let recovery = gw.gateway.durable().recovery().clone();
    eprintln!("{name}: recovery {recovery:?}; damaged_files_total {damaged}, unreadable_records_total {unreadable}, aside {aside:?}");
    // The damage was either noticed (file aside, counted) or there was none
    // that redb's page checks could see (and then everything must be there).
    assert_eq!(
        damaged as usize,
        aside.len(),
        "the metric counts the file kept aside"
    );
    assert_eq!(recovery.damaged_file.is_some(), !aside.is_empty());

    // Serves SYNC and DURABLE, EventBridge stalled no more.
    proxy.resume();
    let s = put(
        &gw.client,
        batch(
            "acme",
            "after",
            marked("T", &format!("{name}sync"), 1),
            SYNC,
        ),
    )
    .await;
    assert_eq!(s.failed_entry_count, 0, "{s:?}");
    let new = receipts(
        &put(
            &gw.client,
            batch(
                "acme",
                "after",
                marked("T", &format!("{name}new"), 2),
                DURABLE,
            ),
        )
        .await,
    );
    until_all(
        &gw.channel,
        &new,
        DeliveryState::Delivered,
        Duration::from_secs(20),
    )
    .await;

    let ids: Vec<String> = queued.iter().map(|(r, _)| r.clone()).collect();
    let settled = until_settled(&gw.channel, &ids).await;
    let delivered = settled
        .iter()
        .filter(|r| state(r) == DeliveryState::Delivered)
        .count();
    let lost = settled
        .iter()
        .filter(|r| state(r) == DeliveryState::NotFound)
        .count();
    let other = settled.len() - delivered - lost;
    eprintln!(
        "{name}: of {} queued before the damage: {delivered} delivered after the restart, {lost} not found, {other} other; salvaged {} of {:?} held",
        ids.len(),
        recovery.salvaged,
        recovery.expected
    );
    assert_eq!(other, 0, "{settled:?}");
    // Each delivered entry reached EventBridge with its own detail.
    let at_eventbridge: HashSet<String> = emulator
        .events()
        .iter()
        .map(|e| marker(&e.detail))
        .collect();
    for ((_, m), r) in queued.iter().zip(&settled) {
        if state(r) == DeliveryState::Delivered {
            assert!(at_eventbridge.contains(m), "{m}");
        }
    }
    if aside.is_empty() {
        assert_eq!(
            delivered,
            ids.len(),
            "no damage noticed: nothing may be missing"
        );
    } else {
        assert_eq!(
            delivered as u64, recovery.salvaged,
            "what was salvaged is delivered"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_truncated_queue_file_is_set_aside_and_what_reads_back_is_delivered() {
    damaged_file_case("trunc", |file| {
        let len = std::fs::metadata(file).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        f.set_len(len / 2).unwrap();
    })
    .await;
}

#[tokio::test]
async fn garbage_in_the_queue_file_is_set_aside_and_what_reads_back_is_delivered() {
    damaged_file_case("garbage", |file| {
        use std::io::{Seek, SeekFrom, Write};
        let len = std::fs::metadata(file).unwrap().len();
        let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        f.seek(SeekFrom::Start(len / 2)).unwrap();
        f.write_all(&vec![0xA5; 8192]).unwrap();
        f.sync_all().unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_file_left_open_by_a_crash_is_repaired_and_its_entries_delivered() {
    let (emulator, proxy) = stalled_upstream().await;
    let dir = StateDir::new();
    let gw = TestGateway::start(&restartable(&dir, &proxy, "")).await;
    proxy.pause();
    let ids = receipts(
        &put(
            &gw.client,
            batch("acme", "crash", marked("T", "crash", 3), DURABLE),
        )
        .await,
    );
    // Once the round's start is on disk, nothing more is written while
    // EventBridge hangs: a copy of the open file is what a crash leaves.
    until_all(
        &gw.channel,
        &ids,
        DeliveryState::InFlight,
        Duration::from_secs(20),
    )
    .await;
    let crashed = StateDir::new();
    std::fs::copy(dir.path.join("queue.redb"), crashed.path.join("queue.redb")).unwrap();
    gw.gateway.shutdown().await;

    let gw = TestGateway::start(&restartable(&crashed, &proxy, "")).await;
    let recovery = gw.gateway.durable().recovery().clone();
    eprintln!("crash: recovery {recovery:?}");
    assert!(
        recovery.repaired && recovery.damaged_file.is_none(),
        "{recovery:?}"
    );
    proxy.resume();
    let done = until_all(
        &gw.channel,
        &ids,
        DeliveryState::Delivered,
        Duration::from_secs(20),
    )
    .await;
    assert!(
        done.iter().all(|d| d.redelivered),
        "a round cut by a crash may have reached EventBridge: {done:?}"
    );
    let at_eventbridge: HashSet<String> = emulator
        .events()
        .iter()
        .map(|e| marker(&e.detail))
        .collect();
    assert!((0..3).all(|i| at_eventbridge.contains(&format!("crash-{i}"))));
    gw.stop().await;
}
