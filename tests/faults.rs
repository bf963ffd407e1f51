//! The gateway under EventBridge's failures, injected by the emulator: one
//! case per fault with the exact result codes and attempt counts, the
//! circuit breaker, and a seeded soak run checking that what callers were
//! told matches what EventBridge holds.

mod common;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use common::{entry, eventually_async, request, TestGateway};
use partner_events_gateway::{
    emulator::{Fault, FaultPlan, FaultRule},
    proto::PutPartnerEventsResponse,
};
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

/// Fast retries so the matrix runs quickly.
const FAST: &str = "[upstream]\nretry_base_ms = 1\nretry_max_ms = 5\ncall_timeout_ms = 400\nbreaker_failures = 1000\n";

fn call_error(status: u16, error_type: &str) -> Fault {
    Fault::CallError {
        status,
        error_type: error_type.into(),
        message: "injected".into(),
    }
}

async fn put(gw: &TestGateway, detail_types: &[&str]) -> PutPartnerEventsResponse {
    gw.put(
        "acme",
        detail_types.iter().map(|d| entry(d, "{}")).collect(),
    )
    .await
}

/// (name, fault on detail type "X", how often it fires, expected code of
/// the X entry or "" for accepted, expected attempts, expected calls the
/// emulator saw)
type Case = (&'static str, Fault, Option<u32>, &'static str, u32, usize);

#[tokio::test]
async fn fault_matrix() {
    let cases: Vec<Case> = vec![
        (
            "per-entry throttling once",
            Fault::EntryError {
                code: "ThrottlingException".into(),
                message: "x".into(),
            },
            Some(1),
            "",
            2,
            2,
        ),
        (
            "per-entry internal failure always",
            Fault::EntryError {
                code: "InternalFailure".into(),
                message: "x".into(),
            },
            None,
            "InternalFailure",
            4,
            4,
        ),
        (
            "per-entry final code",
            Fault::EntryError {
                code: "AccessDeniedException".into(),
                message: "x".into(),
            },
            None,
            "AccessDeniedException",
            1,
            1,
        ),
        (
            "HTTP 400 ThrottlingException once",
            call_error(400, "ThrottlingException"),
            Some(1),
            "",
            2,
            2,
        ),
        (
            "HTTP 500 InternalException once",
            call_error(500, "InternalException"),
            Some(1),
            "",
            2,
            2,
        ),
        (
            "HTTP 500 InternalException always",
            call_error(500, "InternalException"),
            None,
            "InternalException",
            4,
            4,
        ),
        (
            "HTML 500 page once",
            Fault::CallHtml { status: 500 },
            Some(1),
            "",
            2,
            2,
        ),
        (
            "OperationDisabledException",
            call_error(400, "OperationDisabledException"),
            None,
            "OperationDisabledException",
            1,
            1,
        ),
        (
            "AccessDeniedException whole call",
            call_error(400, "AccessDeniedException"),
            None,
            "AccessDeniedException",
            1,
            1,
        ),
        (
            "latency under the timeout",
            Fault::Delay {
                ms: 50,
                jitter_ms: 10,
            },
            None,
            "",
            1,
            1,
        ),
        (
            "hang past the SDK timeout",
            Fault::Hang { accept: false },
            Some(1),
            "OutcomeUnknown",
            1,
            1,
        ),
        (
            "connection dropped after accepting",
            Fault::DropConnection { accept: true },
            Some(1),
            "OutcomeUnknown",
            1,
            1,
        ),
        (
            "connection dropped before accepting",
            Fault::DropConnection { accept: false },
            Some(1),
            "OutcomeUnknown",
            1,
            1,
        ),
        (
            "Entries one short",
            Fault::ShortEntries,
            Some(1),
            "OutcomeUnknown",
            1,
            1,
        ),
        (
            "Entries empty (moto)",
            Fault::EmptyEntries,
            Some(1),
            "OutcomeUnknown",
            1,
            1,
        ),
    ];
    let gw = TestGateway::start(FAST).await;
    for (name, fault, times, code, attempts, calls) in cases {
        gw.emulator().clear();
        let mut rule = FaultRule::new("X", fault);
        rule.times = times;
        gw.emulator().set_faults(vec![rule]);
        let r = put(&gw, &["X"]).await;
        let x = &r.entries[0];
        assert_eq!(x.error_code, code, "{name}: {x:?}");
        assert_eq!(x.event_id.is_empty(), !code.is_empty(), "{name}: {x:?}");
        assert_eq!(x.attempts, attempts, "{name}: attempts");
        assert_eq!(
            gw.emulator().calls().len(),
            calls,
            "{name}: calls seen by the emulator"
        );
        if code == "OutcomeUnknown" {
            assert!(
                x.error_message.contains("duplicate") || x.error_message.contains("may or may not"),
                "{name}: {}",
                x.error_message
            );
        }
        // Whatever happened, an event id is only given for an event EventBridge holds.
        if !x.event_id.is_empty() {
            assert!(
                gw.emulator()
                    .events()
                    .iter()
                    .any(|e| e.event_id == x.event_id),
                "{name}"
            );
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn unknown_outcomes_are_resent_only_when_configured() {
    let gw = TestGateway::start(&format!("{FAST}resend_unknown = true\n")).await;
    gw.emulator().set_faults(vec![FaultRule::new(
        "X",
        Fault::DropConnection { accept: true },
    )
    .at_most(1)]);
    let r = put(&gw, &["X"]).await;
    assert!(r.entries[0].error_code.is_empty(), "{:?}", r.entries[0]);
    assert_eq!(r.entries[0].attempts, 2);
    // The price of resending: EventBridge now holds the event twice.
    assert_eq!(gw.emulator().events().len(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn the_callers_deadline_bounds_everything() {
    let gw = TestGateway::start("[upstream]\nretry_base_ms = 1\nretry_max_ms = 5\n").await;
    gw.emulator().set_faults(vec![FaultRule::new(
        "X",
        Fault::Delay {
            ms: 3_000,
            jitter_ms: 0,
        },
    )]);
    let started = std::time::Instant::now();
    let r = gw
        .put_within("acme", vec![entry("X", "{}")], Duration::from_millis(1_000))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "answered before the deadline"
    );
    assert_eq!(
        r.entries[0].error_code, "OutcomeUnknown",
        "{:?}",
        r.entries[0]
    );
    // It was sent once, and says so: 0 would mean "refused before sending".
    assert_eq!(r.entries[0].attempts, 1, "{:?}", r.entries[0]);
    assert!(
        r.entries[0].error_message.contains("may or may not"),
        "{:?}",
        r.entries[0]
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_entry_cut_by_its_deadline_before_sending_says_it_was_not_sent() {
    // One call a minute: the first request takes the only token, the
    // second waits for pacing past its deadline and is never sent.
    let gw = TestGateway::start(
        "[quotas]\nupstream_calls_per_second = 0.0167\nupstream_burst = 1\n[upstream]\nlinger_ms = 0\n",
    )
    .await;
    let first = put(&gw, &["A"]).await;
    assert!(
        first.entries[0].error_code.is_empty(),
        "{:?}",
        first.entries[0]
    );
    let r = gw
        .put_within("acme", vec![entry("B", "{}")], Duration::from_millis(500))
        .await;
    let b = &r.entries[0];
    assert_eq!(
        (b.error_code.as_str(), b.attempts),
        ("DeadlineExceeded", 0),
        "{b:?}"
    );
    assert!(b.error_message.contains("not sent"), "{b:?}");
    assert_eq!(gw.emulator().calls().len(), 1, "only the first was sent");
    gw.stop().await;
}

#[tokio::test]
async fn a_failing_region_trips_its_breaker_and_recovers() {
    let gw = TestGateway::start(
        "[upstream]\nretry_base_ms = 1\nretry_max_ms = 5\nentry_max_attempts = 1\nbreaker_failures = 3\nbreaker_open_ms = 300\nbreaker_probes = 1\n",
    )
    .await;
    gw.emulator()
        .set_faults(vec![FaultRule::everywhere(call_error(
            500,
            "InternalException",
        ))]);
    for _ in 0..3 {
        let r = put(&gw, &["A"]).await;
        assert_eq!(r.entries[0].error_code, "InternalException");
    }
    let calls_before = gw.emulator().calls().len();
    let asked = Instant::now();
    let err = gw
        .client
        .clone()
        .put_partner_events(request("acme", vec![entry("A", "{}")]))
        .await
        .unwrap_err();
    let answered = Instant::now();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let retry = err.get_details_retry_info().unwrap().retry_delay.unwrap();
    assert!(retry <= Duration::from_millis(300));
    assert_eq!(
        gw.emulator().calls().len(),
        calls_before,
        "nothing sent while open"
    );

    let region = || common::health(&gw.channel, "eventbridge.us-east-1");
    assert_eq!(region().await.unwrap(), ServingStatus::NotServing);
    let own = common::health(&gw.channel, "partnerevents.v1.PartnerEvents")
        .await
        .unwrap();
    assert_eq!(own, ServingStatus::Serving, "other regions still work");

    // EventBridge recovers; after the open period a probe closes the
    // breaker. The breaker said when (`retry`): until then calls are
    // refused at once, and a call sent after that is the probe.
    gw.emulator().set_faults(vec![]);
    let r = eventually_async("the breaker lets a probe through", || async {
        let sent = Instant::now();
        match gw
            .client
            .clone()
            .put_partner_events(request("acme", vec![entry("A", "{}")]))
            .await
        {
            Ok(r) => Some((sent, r.into_inner())),
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                assert!(
                    sent < answered + retry,
                    "refused {:?} after the breaker said {retry:?}",
                    sent - answered
                );
                assert_eq!(gw.emulator().calls().len(), calls_before);
                None
            }
        }
    })
    .await;
    let (sent, r) = r;
    assert!(
        Instant::now() >= asked + retry,
        "a probe let through {:?} after a refusal that said {retry:?}",
        sent - asked
    );
    assert!(r.entries[0].error_code.is_empty(), "{:?}", r.entries[0]);
    eventually_async("the region's health back to SERVING", || async {
        region().await.unwrap() == ServingStatus::Serving
    })
    .await;
    gw.stop().await;
}

/// Random mixes of faults under a seed, many concurrent callers, some with
/// deadlines short enough to cut calls in flight, hung or being resent:
/// every entry gets exactly one result; an event id only for an event
/// EventBridge holds exactly once; no event for a plain failure; at most one
/// for an unknown outcome; nothing EventBridge holds that nobody sent; and
/// each entry's `attempts` at least the times EventBridge received it (0
/// only for an entry it never received).
#[tokio::test]
async fn soak_what_callers_are_told_matches_what_eventbridge_holds() {
    let gw = TestGateway::start(
        "[upstream]\nretry_base_ms = 1\nretry_max_ms = 10\ncall_timeout_ms = 300\nbreaker_failures = 1000\n",
    )
    .await;
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261126);
    gw.emulator().set_plan(FaultPlan {
        seed,
        rules: vec![
            FaultRule::everywhere(Fault::EntryError {
                code: "ThrottlingException".into(),
                message: "x".into(),
            })
            .at_rate(0.10),
            FaultRule::everywhere(Fault::EntryError {
                code: "InternalFailure".into(),
                message: "x".into(),
            })
            .at_rate(0.05),
            FaultRule::everywhere(Fault::EntryError {
                code: "MalformedDetail".into(),
                message: "x".into(),
            })
            .at_rate(0.02),
            FaultRule::everywhere(call_error(500, "InternalException")).at_rate(0.05),
            FaultRule::everywhere(call_error(400, "ThrottlingException")).at_rate(0.05),
            FaultRule::everywhere(Fault::CallHtml { status: 502 }).at_rate(0.02),
            FaultRule::everywhere(Fault::DropConnection { accept: true }).at_rate(0.03),
            FaultRule::everywhere(Fault::DropConnection { accept: false }).at_rate(0.03),
            FaultRule::everywhere(Fault::ShortEntries).at_rate(0.02),
            FaultRule::everywhere(Fault::Hang { accept: true }).at_rate(0.02),
            FaultRule::everywhere(Fault::Hang { accept: false }).at_rate(0.01),
            FaultRule::everywhere(Fault::Delay {
                ms: 5,
                jitter_ms: 20,
            })
            .at_rate(0.2),
            FaultRule::everywhere(Fault::Delay {
                ms: 150,
                jitter_ms: 100,
            })
            .at_rate(0.05),
        ],
    });
    let callers = 8;
    let requests_per_caller = 25;
    let mut tasks = Vec::new();
    for c in 0..callers {
        let client = gw.client.clone();
        tasks.push(tokio::spawn(async move {
            let mut told: Vec<Told> = Vec::new();
            for r in 0..requests_per_caller {
                let n = 1 + (c * 7 + r * 3) % 30;
                let keys: Vec<String> = (0..n).map(|i| format!("c{c}-r{r}-e{i}")).collect();
                let entries = keys.iter().map(|k| entry("Soak", &detail_of(k))).collect();
                let mut req = Request::new(request("acme", entries));
                // One request in four has a deadline that cuts calls which
                // are slow, hung, or being resent.
                if (c + r) % 4 == 0 {
                    req.set_timeout(Duration::from_millis(250));
                }
                match client.clone().put_partner_events(req).await {
                    Ok(resp) => {
                        let resp = resp.into_inner();
                        assert_eq!(resp.entries.len(), n, "one result per entry");
                        for (i, e) in resp.entries.into_iter().enumerate() {
                            assert_eq!(e.index as usize, i);
                            told.push(Told {
                                key: keys[i].clone(),
                                event_id: e.event_id,
                                code: e.error_code,
                                attempts: Some(e.attempts),
                            });
                        }
                    }
                    // A request refused whole sent nothing; one cut by the
                    // client's own timer (before the gateway's answer
                    // arrived) tells nothing.
                    Err(status) => {
                        let cut = matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled);
                        for k in keys {
                            told.push(Told {
                                key: k,
                                event_id: String::new(),
                                code: if cut {
                                    "OutcomeUnknown".into()
                                } else {
                                    format!("status:{:?}", status.code())
                                },
                                attempts: (!cut).then_some(0),
                            });
                        }
                    }
                }
            }
            told
        }));
    }
    let mut told = Vec::new();
    for t in tasks {
        told.extend(t.await.unwrap());
    }
    let emulator = gw.emulator();
    let counts = emulator.counts();
    assert_eq!(
        counts.received as usize,
        emulator.received().len(),
        "the emulator kept every entry it received"
    );
    let held = emulator.events();
    let mut copies: HashMap<String, Vec<String>> = HashMap::new();
    for e in &held {
        let v: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
        copies
            .entry(v["key"].as_str().unwrap().to_string())
            .or_default()
            .push(e.event_id.clone());
    }
    let mut by_code: HashMap<String, usize> = HashMap::new();
    let mut cut_in_flight = 0;
    for Told {
        key,
        event_id,
        code,
        attempts,
    } in &told
    {
        let held_ids = copies.remove(key).unwrap_or_default();
        let received = emulator.received_count(&detail_of(key));
        *by_code
            .entry(if code.is_empty() {
                "ok".into()
            } else {
                code.clone()
            })
            .or_default() += 1;
        if let Some(attempts) = *attempts {
            assert!(
                attempts as usize >= received,
                "{key}: told {code} with {attempts} attempts, but EventBridge received it {received} times"
            );
            if code == "OutcomeUnknown" && attempts > 0 && received > 0 {
                cut_in_flight += 1;
            }
        }
        if !event_id.is_empty() {
            assert_eq!(
                held_ids,
                vec![event_id.clone()],
                "{key}: accepted exactly once, under the id the caller got"
            );
        } else if code == "OutcomeUnknown" {
            assert!(
                held_ids.len() <= 1,
                "{key}: unknown outcome, held {} times",
                held_ids.len()
            );
        } else {
            assert!(
                held_ids.is_empty(),
                "{key}: told {code} but EventBridge holds it"
            );
        }
    }
    assert!(
        copies.is_empty(),
        "EventBridge holds events nobody sent: {copies:?}"
    );
    let total = told.len();
    assert!(
        by_code.get("ok").copied().unwrap_or(0) > total / 2,
        "{by_code:?}"
    );
    assert!(
        by_code.contains_key("OutcomeUnknown"),
        "the faults fired: {by_code:?}"
    );
    assert!(
        cut_in_flight > 0,
        "some entries were sent and then cut by their deadline: {by_code:?}"
    );
    eprintln!(
        "soak (seed {seed}): {total} entries, {} received upstream, {cut_in_flight} unknown after being sent: {by_code:?}",
        counts.received
    );
    gw.stop().await;
}

/// What the soak's callers were told of one entry.
struct Told {
    key: String,
    event_id: String,
    code: String,
    /// None when the call was cut by the client's own timer.
    attempts: Option<u32>,
}

fn detail_of(key: &str) -> String {
    format!(r#"{{"key":"{key}"}}"#)
}
