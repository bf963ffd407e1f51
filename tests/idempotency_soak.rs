//! A seeded soak of idempotency keys under EventBridge's failures, with
//! callers that resend. Producers send SYNC batches (1 to 20 entries, each
//! entry keyed for its event) with deadlines from 15 ms to 2 s, against an
//! emulator that fails entries and calls, throttles, answers late, hangs
//! and drops connections (some after taking the events); each producer
//! resends, with the same keys and bodies, every entry whose result was
//! retryable or unknown (the whole batch when the call failed) until it has
//! a final answer. Then the keys left unknown are resent once with
//! `resend_if_unknown`.
//!
//! What must hold: no event held twice except through a forced resend (at
//! most once per forced resend), every key's event ids the same one, held
//! by EventBridge; every entry of every request one result; a key answered
//! from its first entry (deduplicated) not sent again.
//!
//! `SOAK_SEED=<n>` reruns a seed (the emulator's fault mix, the producers'
//! batch sizes and deadlines; which call meets which fault still depends on
//! timing); the seed is printed.

mod common;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use common::{entry, TestGateway};
use partner_events_gateway::{
    emulator::{Fault, FaultPlan, FaultRule},
    proto::{
        partner_events_client::PartnerEventsClient, DeliveryMode, PartnerEventEntry,
        PutPartnerEventsRequest,
    },
};
use tonic::{transport::Channel, Code, Request};

const TENANT: &str = "acme";
const PRODUCERS: usize = 8;
const EVENTS_PER_PRODUCER: usize = 400;
/// Sends of one key in the first phase before its producer gives up on it.
const MAX_SENDS_PER_KEY: u32 = 40;
/// The per-call deadlines the producers pick from: some shorter than the
/// gateway's linger, than the emulator's delays or than the upstream call
/// timeout (300 ms, which ends hangs).
const DEADLINES_MS: [u64; 9] = [5, 15, 40, 80, 150, 250, 400, 1_000, 2_000];
/// `upstream.entry_max_attempts`: the most sends of an entry within one
/// request (a request cut by the client's own timer says none).
const ENTRY_MAX_ATTEMPTS: u32 = 4;
/// Codes after which a caller resends the entry as it was.
const RETRYABLE: [&str; 10] = [
    "InternalFailure",
    "ThrottlingException",
    "InternalException",
    "ServiceUnavailable",
    "DeadlineExceeded",
    "IdempotencyKeyInFlight",
    "RegionUnavailable",
    "ShuttingDown",
    "UpstreamError",
    "UpstreamUnavailable",
];

// Several worker threads, as in production: a lane's call and the waiter
// at its deadline run side by side, as they do there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_resends_with_idempotency_keys_are_held_once() {
    let started = Instant::now();
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261202);
    eprintln!("idempotency soak: seed {seed} (SOAK_SEED={seed} reruns it)");
    let gw = TestGateway::start(&format!(
        "[upstream]\nretry_base_ms = 1\nretry_max_ms = 10\ncall_timeout_ms = 300\nbreaker_failures = 1000\nentry_max_attempts = {ENTRY_MAX_ATTEMPTS}\nlinger_ms = 5\n"
    ))
    .await;
    let call_error = |status: u16, error_type: &str| Fault::CallError {
        status,
        error_type: error_type.into(),
        message: "injected".into(),
    };
    let entry_error = |code: &str| Fault::EntryError {
        code: code.into(),
        message: "injected".into(),
    };
    gw.emulator().set_plan(FaultPlan {
        seed,
        rules: vec![
            FaultRule::everywhere(entry_error("ThrottlingException")).at_rate(0.08),
            FaultRule::everywhere(entry_error("InternalFailure")).at_rate(0.05),
            FaultRule::everywhere(call_error(500, "InternalException")).at_rate(0.04),
            FaultRule::everywhere(call_error(503, "ServiceUnavailable")).at_rate(0.04),
            FaultRule::everywhere(call_error(400, "ThrottlingException")).at_rate(0.05),
            FaultRule::everywhere(Fault::DropConnection { accept: true }).at_rate(0.03),
            FaultRule::everywhere(Fault::DropConnection { accept: false }).at_rate(0.02),
            FaultRule::everywhere(Fault::Hang { accept: true }).at_rate(0.02),
            FaultRule::everywhere(Fault::Delay {
                ms: 5,
                jitter_ms: 20,
            })
            .at_rate(0.2),
            // Longer than many deadlines: the caller is told unknown, the
            // call comes back accepted, the key learns it.
            FaultRule::everywhere(Fault::Delay {
                ms: 100,
                jitter_ms: 150,
            })
            .at_rate(0.08),
            // Longer than the call timeout: accepted, answer never read.
            FaultRule::everywhere(Fault::Delay {
                ms: 350,
                jitter_ms: 100,
            })
            .at_rate(0.02),
        ],
    });

    // Phase 1: every producer until each of its keys has a final answer.
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| tokio::spawn(produce(gw.client.clone(), p, seed)))
        .collect();
    let mut log = Log::default();
    for t in tasks {
        log.absorb(t.await.unwrap());
    }
    let phase1 = started.elapsed();
    let unfinished: Vec<&String> = log
        .keys
        .iter()
        .filter(|(_, k)| k.state == State::Pending)
        .map(|(key, _)| key)
        .collect();
    assert!(
        unfinished.is_empty(),
        "keys without a final answer after {MAX_SENDS_PER_KEY} sends: {unfinished:?}"
    );
    // Each key's first phase ended with an answer from the gateway, so no
    // call with its entry is still running: EventBridge's holdings are final.
    let held_after_phase1 = held_by_key(&gw);
    for (key, ids) in &held_after_phase1 {
        assert!(
            ids.len() <= 1,
            "{key}: held {} times, but nothing was forced: {:?}",
            ids.len(),
            log.keys.get(key).map(|k| &k.answers)
        );
    }

    // Phase 2: the keys left unknown, resent with resend_if_unknown, with
    // EventBridge healthy: each answer is an event id.
    gw.emulator().set_plan(FaultPlan {
        seed,
        rules: vec![],
    });
    let unknown: Vec<String> = log
        .keys
        .iter()
        .filter(|(_, k)| k.state == State::Unknown)
        .map(|(key, _)| key.clone())
        .collect();
    let mut forced_sent = 0;
    let mut forced_dedup = 0;
    for chunk in unknown.chunks(20) {
        let answers = send(&gw.client, chunk, true, Duration::from_secs(5)).await;
        let answers = answers.expect("a healthy EventBridge: the call succeeds");
        for (key, a) in chunk.iter().zip(answers) {
            assert!(
                !a.event_id.is_empty(),
                "{key}: a forced resend to a healthy EventBridge: {a:?}"
            );
            if a.deduplicated {
                // Settled accepted by a late call since its last answer.
                forced_dedup += 1;
            } else {
                forced_sent += 1;
                log.keys.get_mut(key).unwrap().forced += 1;
            }
            log.record(key, Answer::from(a));
        }
    }
    // The forced outcome is the key's from now on: a plain resend gets it.
    for chunk in unknown.chunks(20) {
        let answers = send(&gw.client, chunk, false, Duration::from_secs(5))
            .await
            .expect("the call succeeds");
        for (key, a) in chunk.iter().zip(answers) {
            assert!(
                a.deduplicated && !a.event_id.is_empty(),
                "{key}: after the forced resend: {a:?}"
            );
            log.record(key, Answer::from(a));
        }
    }

    // What EventBridge holds against what the producers were told.
    let held = held_by_key(&gw);
    let received = received_by_key(&gw);
    let mut duplicates_held = 0;
    for key in held.keys() {
        assert!(
            log.keys.contains_key(key),
            "EventBridge holds {key}, which nobody sent"
        );
    }
    for (key, k) in &log.keys {
        let ids = held.get(key).map(Vec::as_slice).unwrap_or_default();
        // (1) Held once, plus at most once per forced resend.
        assert!(
            ids.len() <= 1 + k.forced as usize,
            "{key}: held {} times with {} forced resend(s): {:?}",
            ids.len(),
            k.forced,
            k.answers
        );
        if ids.len() > 1 {
            duplicates_held += ids.len() - 1;
        }
        // (2) One event id per key, and EventBridge holds it.
        let told: HashSet<&str> = k
            .answers
            .iter()
            .filter_map(|a| match a {
                Answer::Result { event_id, .. } if !event_id.is_empty() => Some(event_id.as_str()),
                _ => None,
            })
            .collect();
        assert!(told.len() <= 1, "{key}: told several event ids: {told:?}");
        if let Some(id) = told.iter().next() {
            assert!(
                ids.iter().any(|held| held == id),
                "{key}: told {id}, EventBridge holds {ids:?}"
            );
        }
        // (4) A deduplicated answer sent nothing: the times EventBridge
        // received the entry are within the sends of the answers that were
        // not deduplicated (a request cut by the client: at most the
        // gateway's attempts per entry).
        let sends: u32 = k
            .answers
            .iter()
            .map(|a| match a {
                Answer::Result {
                    deduplicated: false,
                    attempts,
                    ..
                } => *attempts,
                Answer::Result { .. } => 0,
                Answer::Cut => ENTRY_MAX_ATTEMPTS,
            })
            .sum();
        let got = received.get(key).copied().unwrap_or(0);
        assert!(
            got <= sends as usize,
            "{key}: EventBridge received it {got} times, the answers account for {sends} sends: {:?}",
            k.answers
        );
    }

    let f = &log.figures;
    let counts = gw.emulator().counts();
    eprintln!(
        "idempotency soak (seed {seed}): {} keys, {} requests ({} cut by the client: {:?}), {} entries sent ({} resends), \
         answers: {} deduplicated, {} OutcomeUnknown ({} of them deduplicated), {} IdempotencyKeyInFlight, {} DeadlineExceeded, {} other retryable; \
         {} keys freed by a late failure after an unknown; {} keys left unknown, forced: {forced_sent} sent, {forced_dedup} deduplicated; \
         {duplicates_held} duplicate(s) held; emulator: {} calls, {} entries received; phase 1 {:.1} s, wall {:.1} s",
        log.keys.len(),
        f.requests,
        f.cut_requests,
        f.cut_codes,
        f.entries,
        f.entries - log.keys.len(),
        f.deduplicated,
        f.unknown,
        f.unknown_dedup,
        f.in_flight,
        f.deadline_exceeded,
        f.other_retryable,
        f.freed_after_unknown,
        unknown.len(),
        counts.calls,
        counts.received,
        phase1.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    // The soak exercised what it is about.
    assert!(f.deduplicated > 0, "some resends were deduplicated");
    assert!(f.unknown > 0 && f.unknown_dedup > 0, "unknown outcomes");
    assert!(f.in_flight > 0, "some resends found their key in flight");
    assert!(forced_sent > 0, "some keys were forced");
    gw.stop().await;
}

/// How a key's first phase stands for its producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// To be sent (again).
    Pending,
    /// Accepted, with an event id.
    Accepted,
    /// Deduplicated as unknown: a plain resend will not send it.
    Unknown,
}

/// One answer for one key.
#[derive(Debug, Clone)]
enum Answer {
    Result {
        code: String,
        message: String,
        event_id: String,
        deduplicated: bool,
        attempts: u32,
    },
    /// The call failed whole (the client's own deadline, a refusal).
    Cut,
}

impl From<partner_events_gateway::proto::PartnerEventResult> for Answer {
    fn from(r: partner_events_gateway::proto::PartnerEventResult) -> Self {
        Answer::Result {
            code: r.error_code,
            message: r.error_message,
            event_id: r.event_id,
            deduplicated: r.deduplicated,
            attempts: r.attempts,
        }
    }
}

#[derive(Debug)]
struct KeyLog {
    state: State,
    sends: u32,
    /// Forced resends that were sent (not deduplicated).
    forced: u32,
    /// Said OutcomeUnknown (not deduplicated) by the gateway, and whether
    /// because its deadline came while the entry was in an EventBridge call.
    was_unknown: Option<bool>,
    answers: Vec<Answer>,
}

#[derive(Default)]
struct Figures {
    requests: usize,
    cut_requests: usize,
    cut_codes: HashMap<String, usize>,
    entries: usize,
    deduplicated: usize,
    unknown: usize,
    unknown_dedup: usize,
    in_flight: usize,
    deadline_exceeded: usize,
    other_retryable: usize,
    freed_after_unknown: usize,
}

#[derive(Default)]
struct Log {
    keys: HashMap<String, KeyLog>,
    figures: Figures,
}

impl Log {
    fn absorb(&mut self, other: Log) {
        self.keys.extend(other.keys);
        let (f, o) = (&mut self.figures, other.figures);
        f.requests += o.requests;
        f.cut_requests += o.cut_requests;
        for (c, n) in o.cut_codes {
            *f.cut_codes.entry(c).or_default() += n;
        }
        f.entries += o.entries;
        f.deduplicated += o.deduplicated;
        f.unknown += o.unknown;
        f.unknown_dedup += o.unknown_dedup;
        f.in_flight += o.in_flight;
        f.deadline_exceeded += o.deadline_exceeded;
        f.other_retryable += o.other_retryable;
        f.freed_after_unknown += o.freed_after_unknown;
    }

    fn record(&mut self, key: &str, answer: Answer) {
        self.keys.get_mut(key).unwrap().answers.push(answer);
    }

    /// Records a first-phase answer and returns the key's new state.
    fn phase1(&mut self, key: &str, answer: Answer) -> State {
        let f = &mut self.figures;
        let k = self.keys.get_mut(key).unwrap();
        let state = match &answer {
            Answer::Cut => State::Pending,
            Answer::Result {
                code,
                message,
                event_id,
                deduplicated,
                ..
            } => {
                if *deduplicated {
                    f.deduplicated += 1;
                }
                if let (Some(at_deadline), false) = (k.was_unknown, *deduplicated) {
                    if code != "IdempotencyKeyInFlight" {
                        // Sent anew after an unknown: only when the call in
                        // flight at that deadline came back failed (an
                        // unknown told by EventBridge's call is kept).
                        assert!(
                            at_deadline,
                            "{key}: sent again after an unknown outcome: {:?}",
                            k.answers
                        );
                        f.freed_after_unknown += 1;
                        k.was_unknown = None;
                    }
                }
                match code.as_str() {
                    "" => {
                        assert!(!event_id.is_empty(), "{key}: {answer:?}");
                        State::Accepted
                    }
                    "OutcomeUnknown" if *deduplicated => {
                        f.unknown_dedup += 1;
                        State::Unknown
                    }
                    "OutcomeUnknown" => {
                        // Resent once more: it must come back deduplicated
                        // (unknown or the late call's event id), in flight,
                        // or, had the late call failed, sent anew.
                        f.unknown += 1;
                        k.was_unknown = Some(message.contains("deadline passed"));
                        State::Pending
                    }
                    c if RETRYABLE.contains(&c) => {
                        assert!(!*deduplicated, "{key}: {answer:?}");
                        match c {
                            "IdempotencyKeyInFlight" => f.in_flight += 1,
                            "DeadlineExceeded" => f.deadline_exceeded += 1,
                            _ => f.other_retryable += 1,
                        }
                        State::Pending
                    }
                    c => panic!("{key}: a final failure {c} nobody injected: {answer:?}"),
                }
            }
        };
        k.answers.push(answer);
        k.state = state;
        state
    }
}

/// One producer's first phase: its events keyed `p{p}-{n}`, sent in
/// batches of 1 to 20 (resends queued behind new events), each with a
/// deadline from [`DEADLINES_MS`], one request at a time.
async fn produce(client: PartnerEventsClient<Channel>, p: usize, seed: u64) -> Log {
    let mut rng =
        fastrand::Rng::with_seed(seed ^ (p as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut log = Log::default();
    let mut queue: VecDeque<String> = VecDeque::new();
    for n in 0..EVENTS_PER_PRODUCER {
        let key = format!("p{p}-{n}");
        log.keys.insert(
            key.clone(),
            KeyLog {
                state: State::Pending,
                sends: 0,
                forced: 0,
                was_unknown: None,
                answers: Vec::new(),
            },
        );
        queue.push_back(key);
    }
    // Resends go first, in the next batch, as a caller retrying at once.
    let mut resend: Vec<String> = Vec::new();
    while !queue.is_empty() {
        let n = rng.usize(1..=20).min(queue.len());
        let batch: Vec<String> = queue.drain(..n).collect();
        let timeout = Duration::from_millis(DEADLINES_MS[rng.usize(..DEADLINES_MS.len())]);
        for key in &batch {
            log.keys.get_mut(key).unwrap().sends += 1;
        }
        log.figures.requests += 1;
        log.figures.entries += batch.len();
        let answers: Vec<Answer> = match send(&client, &batch, false, timeout).await {
            Ok(results) => results.into_iter().map(Answer::from).collect(),
            Err(code) => {
                log.figures.cut_requests += 1;
                *log.figures
                    .cut_codes
                    .entry(format!("{code:?}"))
                    .or_default() += 1;
                vec![Answer::Cut; batch.len()]
            }
        };
        for (key, a) in batch.into_iter().zip(answers) {
            if log.phase1(&key, a) == State::Pending && log.keys[&key].sends < MAX_SENDS_PER_KEY {
                resend.push(key);
            }
        }
        for key in resend.drain(..).rev() {
            queue.push_front(key);
        }
    }
    log
}

/// Sends one SYNC batch of `keys` (each with its own body) within
/// `timeout`: the results in request order, each index once (3), or the
/// status of a call that failed whole.
async fn send(
    client: &PartnerEventsClient<Channel>,
    keys: &[String],
    resend_if_unknown: bool,
    timeout: Duration,
) -> Result<Vec<partner_events_gateway::proto::PartnerEventResult>, Code> {
    let entries: Vec<PartnerEventEntry> = keys
        .iter()
        .map(|k| PartnerEventEntry {
            idempotency_key: k.clone(),
            resend_if_unknown,
            ..entry("Soak", &detail_of(k))
        })
        .collect();
    let mut req = Request::new(PutPartnerEventsRequest {
        tenant_id: TENANT.into(),
        entries,
        batch_id: String::new(),
        delivery: DeliveryMode::Sync as i32,
    });
    req.set_timeout(timeout);
    match client.clone().put_partner_events(req).await {
        Ok(r) => {
            let r = r.into_inner();
            assert_eq!(r.entries.len(), keys.len(), "one result per entry");
            for (i, e) in r.entries.iter().enumerate() {
                assert_eq!(e.index as usize, i, "results in request order");
            }
            Ok(r.entries)
        }
        Err(status) => Err(status.code()),
    }
}

fn detail_of(key: &str) -> String {
    format!(r#"{{"key":"{key}"}}"#)
}

/// The event ids EventBridge holds, by the key in their detail.
fn held_by_key(gw: &TestGateway) -> HashMap<String, Vec<String>> {
    let mut held: HashMap<String, Vec<String>> = HashMap::new();
    for e in gw.emulator().events() {
        let v: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
        held.entry(v["key"].as_str().unwrap().to_string())
            .or_default()
            .push(e.event_id);
    }
    held
}

/// How many times EventBridge received each key's entry (accepted or not).
fn received_by_key(gw: &TestGateway) -> HashMap<String, usize> {
    let mut received: HashMap<String, usize> = HashMap::new();
    for e in gw.emulator().received() {
        let Some(detail) = e.detail else { continue };
        let v: serde_json::Value = serde_json::from_str(&detail).unwrap();
        *received
            .entry(v["key"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    received
}
