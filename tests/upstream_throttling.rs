//! The gateway against an EventBridge that enforces its quota: the
//! in-process emulator at 20 calls/s, burst 5. Paced above that, the
//! gateway is throttled and says so honestly (each entry's attempts are the
//! calls that carried it, accepted ones held once, the rest
//! `ThrottlingException` and held nowhere); paced below it, nothing is
//! throttled.

mod common;

use common::{entry, request, TestGateway};
use partner_events_gateway::proto::PartnerEventResult;

/// The emulator's quota: 20 calls/s, burst 5; one call per entry (no
/// coalescing wait) and a breaker that stays out of the way.
const EMULATOR_QUOTA: &str = "[emulator]\nquota_calls_per_second = 20\nquota_burst = 5\n\
                              [upstream]\nlinger_ms = 0\nbreaker_failures = 1000\n";

const ENTRIES: usize = 30;

fn detail(i: usize) -> String {
    format!(r#"{{"k":{i}}}"#)
}

/// Sends `ENTRIES` one-entry requests at once; each one's result.
async fn burst(gw: &TestGateway) -> Vec<PartnerEventResult> {
    let tasks: Vec<_> = (0..ENTRIES)
        .map(|i| {
            let mut client = gw.client.clone();
            tokio::spawn(async move {
                let r = client
                    .put_partner_events(request("acme", vec![entry("T", &detail(i))]))
                    .await
                    .expect("the call succeeds")
                    .into_inner();
                r.entries.into_iter().next().expect("one result")
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results
}

#[tokio::test]
async fn paced_above_the_quota_the_gateway_is_throttled_and_says_so() {
    let gw = TestGateway::start(&format!(
        "{EMULATOR_QUOTA}[quotas]\nupstream_calls_per_second = 1000.0\nupstream_burst = 100\n"
    ))
    .await;
    let results = burst(&gw).await;
    let emu = gw.emulator();
    let counts = emu.counts();
    assert!(counts.throttled > 0, "the burst went beyond 5: {counts:?}");
    assert_eq!(
        counts.calls,
        counts.ok_calls + counts.throttled,
        "{counts:?}"
    );
    assert_eq!(counts.per_region["us-east-1"].throttled, counts.throttled);

    let held = emu.events();
    let mut accepted = 0;
    let mut resent_and_accepted = 0;
    let mut sends = 0;
    for (i, r) in results.iter().enumerate() {
        let d = detail(i);
        let copies: Vec<_> = held.iter().filter(|e| e.detail == d).collect();
        // Each attempt the gateway reports is a call the emulator received.
        assert_eq!(
            emu.received_count(&d) as u32,
            r.attempts,
            "entry {i}: {r:?}"
        );
        sends += u64::from(r.attempts);
        if r.error_code.is_empty() {
            assert_eq!(copies.len(), 1, "entry {i} accepted once: {r:?}");
            assert_eq!(copies[0].event_id, r.event_id, "entry {i}");
            accepted += 1;
            if r.attempts > 1 {
                resent_and_accepted += 1;
            }
        } else {
            assert_eq!(r.error_code, "ThrottlingException", "entry {i}: {r:?}");
            assert!(r.event_id.is_empty() && r.attempts >= 1, "entry {i}: {r:?}");
            assert!(copies.is_empty(), "entry {i} failed and is held nowhere");
        }
    }
    assert_eq!(counts.received, sends, "every send reached the emulator");
    assert_eq!(counts.delivered, accepted as u64);
    assert!(
        resent_and_accepted >= 1,
        "throttled entries were resent and accepted: {results:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn paced_below_the_quota_nothing_is_throttled() {
    let gw = TestGateway::start(&format!(
        "{EMULATOR_QUOTA}[quotas]\nupstream_calls_per_second = 15.0\nupstream_burst = 5\n"
    ))
    .await;
    let results = burst(&gw).await;
    for (i, r) in results.iter().enumerate() {
        assert!(r.error_code.is_empty(), "entry {i}: {r:?}");
        assert_eq!(r.attempts, 1, "entry {i}: {r:?}");
    }
    let counts = gw.emulator().counts();
    assert_eq!(counts.throttled, 0, "{counts:?}");
    assert_eq!(counts.delivered, ENTRIES as u64);
    assert_eq!(counts.calls, counts.ok_calls);
    gw.stop().await;
}
