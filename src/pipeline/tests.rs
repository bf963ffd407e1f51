use std::sync::Mutex;

use futures::future::BoxFuture;

use super::*;
use crate::{
    domain::outcome::EntryResult,
    upstream::{retry::RetryPolicy, CallError},
};

/// Answers each entry from a script keyed by detail type: a list of
/// per-attempt codes ("" = accepted), the last one repeating.
struct Scripted {
    script: Vec<(&'static str, Vec<&'static str>)>,
    seen: Mutex<Vec<(String, usize)>>,
    calls: Mutex<usize>,
}

impl Upstream for Scripted {
    fn put_partner_events<'a>(
        &'a self,
        _region: &'a str,
        entries: &'a [PreparedEntry],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, CallError>> {
        Box::pin(async move {
            *self.calls.lock().unwrap() += 1;
            let mut seen = self.seen.lock().unwrap();
            Ok(entries
                .iter()
                .map(|e| {
                    let n = seen.iter().filter(|(d, _)| *d == e.detail_type).count();
                    seen.push((e.detail_type.clone(), n));
                    let codes = &self
                        .script
                        .iter()
                        .find(|(d, _)| *d == e.detail_type)
                        .map(|(_, c)| c.clone())
                        .unwrap_or_else(|| vec![""]);
                    let code = codes[n.min(codes.len() - 1)];
                    if code.is_empty() {
                        Outcome::Accepted {
                            event_id: format!("id-{}", e.index),
                        }
                    } else {
                        Outcome::failed(code, "scripted")
                    }
                })
                .collect())
        })
    }
}

fn test_breaker() -> BreakerSettings {
    BreakerSettings {
        failures: 5,
        open_for: Duration::from_secs(5),
        probes: 1,
    }
}

fn entry(index: u32, detail_type: &str) -> PreparedEntry {
    PreparedEntry {
        index,
        source: SourceRef::new("aws.partner/p/t/s", "us-east-1"),
        time: None,
        detail_type: detail_type.into(),
        detail: "{}".into(),
        resources: vec![],
        size: 100,
    }
}

/// The settings the tests run with: unpaced, a 5 ms linger, three attempts.
fn settings() -> PipelineSettings {
    PipelineSettings {
        max_call_bytes: 256 * 1024,
        linger: Duration::from_millis(5),
        max_concurrent_calls_per_region: 4,
        upstream_calls_per_second: 0.0,
        upstream_burst: 1,
        adaptive_pacing: true,
        retry: RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
            resend_unknown: false,
        },
        breaker: test_breaker(),
        retry_budget_ratio: 0.2,
        retry_budget_min_per_second: 10.0,
    }
}

/// A pipeline over `upstream` with [`settings`].
fn pipeline_over(upstream: impl Upstream) -> Pipeline {
    Pipeline::new(
        Arc::new(upstream),
        Arc::new(Metrics::new(false)),
        settings(),
    )
}

fn scripted(script: Vec<(&'static str, Vec<&'static str>)>) -> Arc<Scripted> {
    Arc::new(Scripted {
        script,
        seen: Mutex::default(),
        calls: Mutex::default(),
    })
}

fn pipeline(script: Vec<(&'static str, Vec<&'static str>)>) -> (Pipeline, Arc<Scripted>) {
    let up = scripted(script);
    (
        Pipeline::new(up.clone(), Arc::new(Metrics::new(false)), settings()),
        up,
    )
}

fn tenant() -> TenantShare {
    TenantShare::new("t", 1)
}

fn by_index(mut r: Vec<(u32, EntryResult)>) -> Vec<EntryResult> {
    r.sort_by_key(|(i, _)| *i);
    assert!(
        r.iter().enumerate().all(|(n, (i, _))| n as u32 == *i),
        "each index once"
    );
    r.into_iter().map(|(_, e)| e).collect()
}

#[tokio::test(start_paused = true)]
async fn retryable_entries_are_resent_alone_until_accepted() {
    let (p, up) = pipeline(vec![
        ("T", vec!["ThrottlingException", ""]),
        ("F", vec!["MalformedDetail"]),
    ]);
    let entries = vec![entry(0, "A"), entry(1, "T"), entry(2, "F")];
    let r = by_index(
        p.send(&tenant(), entries, Instant::now() + Duration::from_secs(5))
            .await,
    );
    assert_eq!(
        r[0].outcome,
        Outcome::Accepted {
            event_id: "id-0".into()
        }
    );
    assert_eq!(r[0].attempts, 1);
    assert_eq!(
        r[1].outcome,
        Outcome::Accepted {
            event_id: "id-1".into()
        }
    );
    assert_eq!(r[1].attempts, 2);
    assert_eq!(r[2].outcome, Outcome::failed("MalformedDetail", "scripted"));
    assert_eq!(*up.calls.lock().unwrap(), 2);
    // Only the throttled entry went out again.
    assert_eq!(up.seen.lock().unwrap().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn attempts_are_bounded() {
    let (p, up) = pipeline(vec![("T", vec!["InternalFailure"])]);
    let r = by_index(
        p.send(
            &tenant(),
            vec![entry(0, "T")],
            Instant::now() + Duration::from_secs(5),
        )
        .await,
    );
    assert_eq!(r[0].attempts, 3);
    assert!(
        matches!(&r[0].outcome, Outcome::Failed { code, message } if code == "InternalFailure" && message.contains("gave up after 3"))
    );
    assert_eq!(*up.calls.lock().unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_stops_resends() {
    let (p, up) = pipeline(vec![("T", vec!["ThrottlingException"])]);
    let r = by_index(
        p.send(
            &tenant(),
            vec![entry(0, "T")],
            Instant::now() + Duration::from_millis(15),
        )
        .await,
    );
    assert_eq!(r[0].attempts, 1);
    assert!(
        matches!(&r[0].outcome, Outcome::Failed { code, message } if code == "ThrottlingException" && message.contains("deadline"))
    );
    assert_eq!(*up.calls.lock().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn batches_from_many_callers_share_calls() {
    let (p, up) = pipeline(vec![]);
    let deadline = Instant::now() + Duration::from_secs(5);
    // 100 one-entry batches at once, as 100 streams or unary callers would send them.
    let t = tenant();
    let results = join_all((0..100).map(|i| p.send(&t, vec![entry(i, "A")], deadline))).await;
    assert!(results
        .iter()
        .all(|r| r.len() == 1 && r[0].1.outcome.is_accepted()));
    assert_eq!(
        *up.calls.lock().unwrap(),
        5,
        "100 entries coalesce into 5 full calls"
    );
}

#[tokio::test(start_paused = true)]
async fn zero_linger_sends_at_once() {
    let up = scripted(vec![]);
    let settings = PipelineSettings {
        linger: Duration::ZERO,
        ..settings()
    };
    let p = Pipeline::new(up.clone(), Arc::new(Metrics::new(false)), settings);
    let deadline = Instant::now() + Duration::from_secs(5);
    for i in 0..3 {
        let r = p.send(&tenant(), vec![entry(i, "A")], deadline).await;
        assert!(r[0].1.outcome.is_accepted());
    }
    assert_eq!(*up.calls.lock().unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn forty_five_entries_make_three_calls_and_every_index_answers() {
    let (p, up) = pipeline(vec![]);
    let entries = (0..45).map(|i| entry(i, "A")).collect();
    let r = by_index(
        p.send(&tenant(), entries, Instant::now() + Duration::from_secs(5))
            .await,
    );
    assert_eq!(r.len(), 45);
    assert_eq!(*up.calls.lock().unwrap(), 3);
}
/// Answers calls to us-east-1 at once and never answers calls elsewhere.
struct HalfHung;

impl Upstream for HalfHung {
    fn put_partner_events<'a>(
        &'a self,
        region: &'a str,
        entries: &'a [PreparedEntry],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, CallError>> {
        Box::pin(async move {
            if region != "us-east-1" {
                futures::future::pending::<()>().await;
            }
            Ok(entries
                .iter()
                .map(|e| Outcome::Accepted {
                    event_id: format!("id-{}", e.index),
                })
                .collect())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_batch_split_over_regions_keeps_what_was_answered_at_the_deadline() {
    let p = pipeline_over(HalfHung);
    let mut entries: Vec<PreparedEntry> = (0..30).map(|i| entry(i, "A")).collect();
    for e in entries.iter_mut().filter(|e| e.index % 3 == 0) {
        e.source = SourceRef::new("aws.partner/p/t/other", "eu-west-1");
    }
    let started = Instant::now();
    let r = by_index(
        p.send(&tenant(), entries, started + Duration::from_secs(2))
            .await,
    );
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "answered at the deadline"
    );
    for (i, r) in r.iter().enumerate() {
        if i % 3 == 0 {
            assert!(
                matches!(&r.outcome, Outcome::Failed { code, message } if code == codes::OUTCOME_UNKNOWN && message.contains("deadline")),
                "{i}: {r:?}"
            );
        } else {
            assert_eq!(
                r.outcome,
                Outcome::Accepted {
                    event_id: format!("id-{i}")
                }
            );
        }
    }
}

/// Fails every call whole with `code`, as EventBridge does when it
/// throttles (HTTP 400) or breaks (HTTP 500).
struct FailsWhole(&'static str);

impl Upstream for FailsWhole {
    fn put_partner_events<'a>(
        &'a self,
        _region: &'a str,
        _entries: &'a [PreparedEntry],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, CallError>> {
        Box::pin(async move {
            Err(CallError {
                kind: crate::upstream::CallFailureKind::Rejected,
                code: self.0.into(),
                message: "injected".into(),
            })
        })
    }
}

/// The codes of 10 one-entry batches sent one after the other.
async fn codes_of_ten(code: &'static str) -> Vec<String> {
    let p = pipeline_over(FailsWhole(code));
    let mut codes = Vec::new();
    for i in 0..10 {
        let r = p
            .send(
                &tenant(),
                vec![entry(i, "A")],
                Instant::now() + Duration::from_secs(5),
            )
            .await;
        match &r[0].1.outcome {
            Outcome::Failed { code, .. } => codes.push(code.clone()),
            Outcome::Accepted { .. } => codes.push("ok".into()),
        }
    }
    codes
}

#[tokio::test(start_paused = true)]
async fn throttling_is_not_an_outage_for_the_breaker() {
    // Calls throttled whole again and again: the region still answers.
    let codes = codes_of_ten("ThrottlingException").await;
    assert!(
        codes.iter().all(|c| c == "ThrottlingException"),
        "{codes:?}"
    );
    // Calls failing whole with a 5xx open the breaker after 5.
    let codes = codes_of_ten("InternalException").await;
    assert!(
        codes.iter().any(|c| c == codes::REGION_UNAVAILABLE),
        "{codes:?}"
    );
}
