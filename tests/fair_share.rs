//! The fair share of one region's quota between tenants, through a real
//! client, the gateway and the emulator enforcing an EventBridge quota of
//! 200 calls/s: a flooding tenant does not decide how long a quiet one
//! waits; the quota is used in full and not exceeded; busy tenants share it
//! by their weights.

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{entry, request, TestGateway};
use partner_events_gateway::{
    emulator::RecordCounts, proto::partner_events_client::PartnerEventsClient,
};
use tonic::transport::Channel;

/// EventBridge's quota in this test (calls/s), and the gateway's pace just
/// under it, with a smaller burst: the gateway never goes over.
const QUOTA: f64 = 200.0;
const LINGER_MS: u64 = 20;

fn config(tenants: &[(&str, u32)]) -> String {
    let mut toml = format!(
        "[emulator]\nquota_calls_per_second = {QUOTA}\nquota_burst = 20\n\
         [quotas]\nupstream_calls_per_second = {QUOTA}\nupstream_burst = 5\n\
         [upstream]\nlinger_ms = {LINGER_MS}\nbreaker_failures = 1000\n"
    );
    for (t, weight) in tenants {
        toml.push_str(&format!(
            "[tenants.{t}]\ndefault_source = \"events\"\nweight = {weight}\n\
             [tenants.{t}.sources.events]\nname = \"aws.partner/example.com/{t}/events\"\nregion = \"us-east-1\"\n"
        ));
    }
    toml
}

/// Keeps `in_flight` requests of 20 entries for `tenant` going, on
/// connections of their own, until `stop`.
fn flood(
    url: &str,
    tenant: &'static str,
    in_flight: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let channels: Vec<Channel> = (0..4)
        .map(|_| {
            Channel::from_shared(url.to_string())
                .unwrap()
                .connect_lazy()
        })
        .collect();
    (0..in_flight)
        .map(|i| {
            let mut client = PartnerEventsClient::new(channels[i % channels.len()].clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let entries = (0..20).map(|_| entry("Flood", "{}")).collect();
                    let r = client
                        .put_partner_events(request(tenant, entries))
                        .await
                        .expect("the flood's calls are answered");
                    assert_eq!(r.into_inner().entries.len(), 20);
                }
            })
        })
        .collect()
}

/// `n` one-entry requests for `tenant`, one every 50 ms; their latencies.
async fn quiet(gw: &TestGateway, tenant: &str, n: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for _ in 0..n {
        tick.tick().await;
        let started = Instant::now();
        let r = gw.put(tenant, vec![entry("Quiet", "{}")]).await;
        latencies.push(started.elapsed());
        assert!(r.entries[0].error_code.is_empty(), "{:?}", r.entries[0]);
    }
    latencies
}

fn p99(mut l: Vec<Duration>) -> Duration {
    l.sort();
    l[(l.len() * 99).div_ceil(100) - 1]
}

/// Entries accepted per source, and calls, between two readings.
fn since(before: &RecordCounts, after: &RecordCounts) -> (BTreeMap<String, u64>, u64, u64) {
    let per_source = after
        .per_source
        .iter()
        .map(|(s, c)| {
            let was = before
                .per_source
                .get(s)
                .map_or(0, |b| b.delivered + b.undelivered);
            (s.clone(), c.delivered + c.undelivered - was)
        })
        .collect();
    (
        per_source,
        after.ok_calls - before.ok_calls,
        after.throttled - before.throttled,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_does_not_decide_how_long_a_quiet_one_waits() {
    let gw = TestGateway::start(&config(&[("flood", 1), ("quiet", 1)])).await;
    let url = format!("http://{}", gw.gateway.local_addr());
    let alone = p99(quiet(&gw, "quiet", 40).await);

    let stop = Arc::new(AtomicBool::new(false));
    let flooders = flood(&url, "flood", 256, stop.clone());
    // The flood has filled the pace once calls wait for their turn.
    common::eventually("the flood saturates the quota", || {
        gw.emulator().counts().ok_calls >= 100
    })
    .await;
    let before = gw.emulator().counts();
    let started = Instant::now();
    let during = p99(quiet(&gw, "quiet", 60).await);
    let elapsed = started.elapsed().as_secs_f64();
    let after = gw.emulator().counts();
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.await.unwrap();
    }

    let (_, ok_calls, throttled) = since(&before, &after);
    let used = ok_calls as f64 / (elapsed * QUOTA);
    eprintln!(
        "quiet p99 alone {alone:?}, during the flood {during:?}; quota used {:.1}% ({ok_calls} calls in {elapsed:.2} s), throttled {throttled}",
        used * 100.0
    );
    let bound = alone * 3 + Duration::from_millis(LINGER_MS);
    assert!(
        during <= bound,
        "the quiet tenant's p99 during the flood ({during:?}) is over 3x its p99 alone plus the linger ({bound:?})"
    );
    assert!(used >= 0.95, "the quota was used at {:.1}%", used * 100.0);
    assert!(
        throttled as f64 <= 0.01 * (ok_calls + throttled) as f64,
        "{throttled} of {} calls throttled",
        ok_calls + throttled
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_tenants_share_the_quota_by_their_weights() {
    let tenants = [("a", 1), ("b", 1), ("c", 2)];
    let gw = TestGateway::start(&config(&tenants)).await;
    let url = format!("http://{}", gw.gateway.local_addr());
    let stop = Arc::new(AtomicBool::new(false));
    let mut flooders = Vec::new();
    for (t, _) in tenants {
        flooders.extend(flood(&url, t, 96, stop.clone()));
    }
    common::eventually("the floods saturate the quota", || {
        gw.emulator().counts().ok_calls >= 100
    })
    .await;
    let before = gw.emulator().counts();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = gw.emulator().counts();
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.await.unwrap();
    }
    let (per_source, ok_calls, throttled) = since(&before, &after);
    let total: u64 = per_source.values().sum();
    let weights: u32 = tenants.iter().map(|(_, w)| w).sum();
    for (t, w) in tenants {
        let got = per_source[&format!("aws.partner/example.com/{t}/events")] as f64 / total as f64;
        let want = f64::from(w) / f64::from(weights);
        eprintln!(
            "tenant {t} (weight {w}): {:.1}% of {total} entries",
            got * 100.0
        );
        assert!(
            (got - want).abs() <= 0.1 * want,
            "tenant {t}: {:.1}% of the quota, its weight says {:.1}%",
            got * 100.0,
            want * 100.0
        );
    }
    assert!(
        throttled as f64 <= 0.01 * (ok_calls + throttled) as f64,
        "{throttled} of {} calls throttled",
        ok_calls + throttled
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_flooding_tenant_cannot_hold_the_whole_in_flight_bound() {
    // 200 entries in flight gateway-wide, at most half of them one
    // tenant's; EventBridge stalls, so nothing admitted is answered.
    let (gw, _emulator, proxy) = TestGateway::stallable(&format!(
        "[server]\nmax_in_flight_entries = 200\nmax_in_flight_share_per_tenant = 0.5\n\
         max_entries_per_request = 100\nstream_window_entries = 100\n\
         [sources]\ncheck_state = false\n{}\
         [tenants.quiet]\ndefault_source = \"events\"\n\
         [tenants.quiet.sources.events]\nname = \"aws.partner/example.com/quiet/events\"\nregion = \"us-east-1\"\n",
        common::TENANTS
    ))
    .await;
    proxy.pause();
    let put = |tenant: &'static str, detail_type: &'static str, timeout: Duration| {
        let mut client = gw.client.clone();
        tokio::spawn(async move {
            let mut req = tonic::Request::new(request(
                tenant,
                (0..20).map(|_| entry(detail_type, "{}")).collect(),
            ));
            req.set_timeout(timeout);
            client.put_partner_events(req).await
        })
    };
    // The flood fills its share: five requests of 20 entries.
    let held: Vec<_> = (0..5)
        .map(|_| put("acme", "Flood", Duration::from_secs(20)))
        .collect();
    common::eventually("the flood holds its share", || {
        gw.gateway.gauges().in_flight_entries == 100
    })
    .await;
    // Five more wait for room in the flood's share, not the gateway's.
    let over: Vec<_> = (0..5)
        .map(|_| put("acme", "Flood", Duration::from_secs(1)))
        .collect();
    // Another tenant is still admitted (its entries wait for EventBridge
    // like everyone's, but are not refused for room).
    let quiet = put("quiet", "Quiet", Duration::from_secs(20));
    common::eventually("the quiet tenant is admitted", || {
        gw.gateway.gauges().in_flight_entries == 120
    })
    .await;
    // The flood's requests over its share wait their deadline, then are
    // refused with the tenant's limit named.
    let mut refused = 0;
    for f in over {
        let status = f.await.unwrap().expect_err("over the tenant's share");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        let info = tonic_types::StatusExt::get_details_error_info(&status).expect("ErrorInfo");
        assert_eq!(info.reason, "TENANT_IN_FLIGHT_LIMIT");
        assert!(status.message().contains("acme"), "{}", status.message());
        refused += 1;
    }
    assert_eq!(refused, 5, "the five requests over the flood's share");
    proxy.resume();
    let quiet = quiet
        .await
        .unwrap()
        .expect("the quiet tenant's call succeeds");
    assert_eq!(quiet.into_inner().failed_entry_count, 0);
    for h in held {
        let r = h
            .await
            .unwrap()
            .expect("the flood's admitted calls succeed");
        assert_eq!(r.into_inner().failed_entry_count, 0);
    }
    gw.stop().await;
}
