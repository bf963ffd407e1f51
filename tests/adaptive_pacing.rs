//! Adaptive pacing without Redis, through the real path: one gateway paced
//! at the emulated EventBridge quota of [`QUOTA`] calls/s, and a producer
//! outside the gateway (the AWS SDK straight to the emulator) taking 30% of
//! that quota. The gateway cannot see that producer; it learns of it from
//! the throttled calls, lowers its pace at once and climbs back gradually.
//! It keeps its throttled calls few and uses most of what is left, and the
//! other producer keeps its share; with adaptive pacing off, the same run
//! has far more calls throttled (most of them the other producer's).
//!
//! Prints its figures (`-- --nocapture`).

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use aws_config::{retry::RetryConfig, BehaviorVersion, Region};
use aws_sdk_eventbridge::{config::Credentials, types::PutPartnerEventsRequestEntry, Client};
use common::{entry, request, TestGateway};
use partner_events_gateway::{
    emulator::{Emulator, EmulatorConfig, EmulatorHandle, Quota, RecordCounts},
    proto::partner_events_client::PartnerEventsClient,
};
use tonic::transport::Channel;

/// EventBridge's quota here (calls/s), which the gateway is told too.
const QUOTA: f64 = 100.0;
/// The share of it the other producer takes.
const OTHER_SHARE: f64 = 0.3;
/// Seconds measured, after a warm-up that includes the first throttles.
const WARM_UP: Duration = Duration::from_secs(3);
const MEASURE: Duration = Duration::from_secs(8);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The other producer's tally. `gate` is held across each call and its
/// tally, so a snapshot taken under it sees the emulator's counts and the
/// tally agree on the other producer's calls (none half counted).
#[derive(Default)]
struct Other {
    gate: tokio::sync::Mutex<()>,
    ok: AtomicU64,
    throttled: AtomicU64,
}

/// Sends a 1-entry call every `1 / rate` s with the SDK, no retries, until
/// `stop`.
fn other_producer(
    client: Client,
    rate: f64,
    stop: Arc<AtomicBool>,
    tally: Arc<Other>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let entry = PutPartnerEventsRequestEntry::builder()
                .source("aws.partner/example.com/other/events")
                .detail_type("Other")
                .detail("{}")
                .build();
            let _counting = tally.gate.lock().await;
            match client.put_partner_events().entries(entry).send().await {
                Ok(_) => tally.ok.fetch_add(1, Ordering::Relaxed),
                Err(_) => tally.throttled.fetch_add(1, Ordering::Relaxed),
            };
        }
    })
}

/// Keeps `n` 20-entry requests in flight through the gateway until `stop`.
fn flood(url: &str, n: usize, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .connect_lazy();
    (0..n)
        .map(|_| {
            let mut client = PartnerEventsClient::new(channel.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let entries = (0..20).map(|_| entry("Flood", "{}")).collect();
                    let r = client
                        .put_partner_events(request("acme", entries))
                        .await
                        .expect("answered");
                    assert_eq!(r.into_inner().entries.len(), 20);
                }
            })
        })
        .collect()
}

struct Figures {
    other_throttled: u64,
    gateway_calls: u64,
    gateway_throttled: u64,
    gateway_ok_calls: u64,
    other_ok: u64,
    secs: f64,
}

impl Figures {
    fn throttled_share(&self) -> f64 {
        self.gateway_throttled as f64 / self.gateway_calls.max(1) as f64
    }

    /// The gateway's accepted calls per second, as a share of what the
    /// other producer left of the quota.
    fn used_of_left(&self) -> f64 {
        let left = QUOTA - self.other_ok as f64 / self.secs;
        self.gateway_ok_calls as f64 / self.secs / left
    }
}

async fn run(adaptive: bool) -> Figures {
    let emulator: EmulatorHandle = Emulator::spawn(
        "127.0.0.1:0".parse().unwrap(),
        EmulatorConfig {
            quota: Quota::new(QUOTA, 10).unwrap(),
            max_recorded_events: 1000,
            ..EmulatorConfig::default()
        },
    )
    .await
    .unwrap();
    let gw = TestGateway::start(&format!(
        "[upstream]\nendpoint_url = \"{}\"\nlinger_ms = 5\nbreaker_failures = 100000\n\
         [sources]\ncheck_state = false\n\
         [quotas]\nupstream_calls_per_second = {QUOTA}\nupstream_burst = 5\nadaptive_pacing = {adaptive}\n",
        emulator.endpoint_url()
    ))
    .await;
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(emulator.endpoint_url())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(RetryConfig::disabled())
        .load()
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let other = Arc::new(Other::default());
    let other_task = other_producer(
        Client::new(&shared),
        QUOTA * OTHER_SHARE,
        stop.clone(),
        other.clone(),
    );
    let url = format!("http://{}", gw.gateway.local_addr());
    let flood = flood(&url, 24, stop.clone());
    tokio::time::sleep(WARM_UP).await;

    // Under the other producer's gate: its calls are then either in both
    // the emulator's counts and its tally or in neither, so what is left
    // after taking them away is the gateway's alone.
    let snapshot = || async {
        let _counting = other.gate.lock().await;
        let c: RecordCounts = emulator.counts();
        (
            c.calls,
            c.throttled,
            c.ok_calls,
            other.ok.load(Ordering::Relaxed),
            other.throttled.load(Ordering::Relaxed),
        )
    };
    let before = snapshot().await;
    let started = Instant::now();
    tokio::time::sleep(MEASURE).await;
    let after = snapshot().await;
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.await.unwrap();
    }
    other_task.await.unwrap();

    let other_ok = after.3 - before.3;
    let other_throttled = after.4 - before.4;
    let calls = after.0 - before.0;
    let f = Figures {
        gateway_calls: calls - other_ok - other_throttled,
        gateway_throttled: (after.1 - before.1) - other_throttled,
        gateway_ok_calls: (after.2 - before.2) - other_ok,
        other_ok,
        other_throttled,
        secs,
    };
    println!(
        "adaptive pacing {}: over {:.1} s the other producer had {} calls accepted ({:.1}/s), {} throttled; \
         the gateway made {} calls, {} throttled ({:.2}%), {} accepted ({:.1}/s, {:.1}% of what was left)",
        if adaptive { "on" } else { "off" },
        secs,
        other_ok,
        other_ok as f64 / secs,
        other_throttled,
        f.gateway_calls,
        f.gateway_throttled,
        100.0 * f.throttled_share(),
        f.gateway_ok_calls,
        f.gateway_ok_calls as f64 / secs,
        100.0 * f.used_of_left()
    );
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_pacing_leaves_room_for_a_producer_it_cannot_see() {
    let _serial = SERIAL.lock().await;
    let on = run(true).await;
    assert!(
        on.throttled_share() <= 0.05,
        "throttled {} of {} calls",
        on.gateway_throttled,
        on.gateway_calls
    );
    assert!(
        on.used_of_left() >= 0.9,
        "used {:.1}% of what was left",
        100.0 * on.used_of_left()
    );
    // The other producer keeps its 30%.
    assert!(
        on.other_throttled * 20 <= on.other_ok,
        "the other producer: {} accepted, {} throttled",
        on.other_ok,
        on.other_throttled
    );
    // The same run with adaptive pacing off: the gateway keeps its pace,
    // and the quota's refusals fall on everyone, the other producer first.
    let off = run(false).await;
    let all = |f: &Figures| f.gateway_throttled + f.other_throttled;
    assert!(
        all(&off) > 10 * all(&on).max(1),
        "throttled calls in all: {} with adaptive pacing off, {} with it on",
        all(&off),
        all(&on)
    );
}
