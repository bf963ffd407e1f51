//! Cluster mode through the real path: three gateway processes (the binary,
//! `serve --config`), one emulator enforcing an EventBridge quota of
//! [`QUOTA`] calls/s, a Redis of the test's own, and generated gRPC clients
//! sending 1-entry requests spread over the three. The replicas share the
//! quota through Redis: it is used in full and not exceeded; a replica that
//! stops leaves its share to the others and gets it back when it returns;
//! when Redis stops, nothing is lost, throttles stay bounded, the `cluster`
//! health entry says so, and sharing resumes when Redis returns.
//!
//! The scenarios run one at a time (each runs four processes on a 2-core
//! machine) and print their figures (`-- --nocapture`).

mod common;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{entry, free_port, health, redis::RedisServer, request, sample, scrape, Spawned, BIN};
use partner_events_gateway::{
    emulator::{
        Emulator, EmulatorConfig, EmulatorHandle, Quota, RecordCounts, SeedSource, SourceState,
    },
    proto::partner_events_client::PartnerEventsClient,
};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

/// EventBridge's quota here, calls/s; the replicas are told the same.
const QUOTA: f64 = 50.0;
/// Entries per call at most: what the quota carries per second is
/// `QUOTA * 20` entries.
const PER_CALL: f64 = 20.0;
/// 1-entry requests kept in flight per replica: enough for full calls.
const PRODUCERS_PER_REPLICA: usize = 150;

/// One scenario at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn tenant(i: usize) -> String {
    format!("t{i}")
}

fn source(i: usize) -> String {
    format!("aws.partner/example.com/t{i}/events")
}

/// A gateway process of the cluster.
struct Replica {
    index: usize,
    port: u16,
    metrics_port: u16,
    config: PathBuf,
    process: Option<Spawned>,
}

impl Replica {
    fn config_text(
        port: u16,
        metrics_port: u16,
        emulator: &str,
        redis: &str,
        prefix: &str,
        share: f64,
    ) -> String {
        let mut toml = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
             [upstream]\nendpoint_url = \"{emulator}\"\nlinger_ms = 20\nbreaker_failures = 100000\n\
             default_deadline_ms = 30000\n\
             [sources]\ncheck_state = false\n\
             [quotas]\nupstream_calls_per_second = {QUOTA}\nupstream_burst = 5\n\
             [cluster]\nurl = \"{redis}\"\nkey_prefix = \"{prefix}\"\nfallback_share = {share}\n"
        );
        // Every replica knows every tenant; each test producer sticks to
        // its replica's own tenant so the emulator tells them apart.
        for t in 0..3 {
            toml.push_str(&format!(
                "[tenants.{}]\ndefault_source = \"events\"\n[tenants.{}.sources.events]\n\
                 name = \"{}\"\nregion = \"us-east-1\"\n",
                tenant(t),
                tenant(t),
                source(t)
            ));
        }
        toml
    }

    async fn start(index: usize, emulator: &str, redis: &str, prefix: &str, share: f64) -> Self {
        let (port, metrics_port) = (free_port(), free_port());
        let config = std::env::temp_dir().join(format!(
            "peg-cluster-{}-{prefix}-{index}.toml",
            std::process::id()
        ));
        std::fs::write(
            &config,
            Self::config_text(port, metrics_port, emulator, redis, prefix, share),
        )
        .unwrap();
        let mut replica = Self {
            index,
            port,
            metrics_port,
            config,
            process: None,
        };
        replica.launch().await;
        replica
    }

    async fn launch(&mut self) {
        let mut command = std::process::Command::new(BIN);
        command
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test");
        let mut process = Spawned::start(command);
        process
            .wait_for_line("partner-events-gateway serving")
            .await;
        self.process = Some(process);
    }

    /// SIGKILL: a replica that dies, not one that drains.
    fn kill(&mut self) {
        drop(self.process.take());
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).unwrap().connect_lazy()
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = scrape(format!("127.0.0.1:{}", self.metrics_port).parse().unwrap()).await;
        sample(&text, name)
    }

    /// The log so far (for failures).
    fn log(&mut self) -> Vec<String> {
        self.process.as_mut().map(|p| p.drain()).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

/// What every producer's answers added up to.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Keeps `n` 1-entry requests for `replica`'s tenant in flight through it
/// until `stop`; a replica that is gone is retried (it may come back).
fn produce(
    replica: &Replica,
    n: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let channels: Vec<Channel> = (0..8).map(|_| replica.channel()).collect();
    let tenant = tenant(replica.index);
    (0..n)
        .map(|i| {
            let mut client = PartnerEventsClient::new(channels[i % channels.len()].clone());
            let (stop, tally, failures, tenant) = (
                stop.clone(),
                tally.clone(),
                failures.clone(),
                tenant.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut req = tonic::Request::new(request(&tenant, vec![entry("T", "{}")]));
                    req.set_timeout(Duration::from_secs(30));
                    match client.put_partner_events(req).await {
                        Ok(r) => {
                            let r = r.into_inner();
                            assert_eq!(r.entries.len(), 1, "one result per entry");
                            if r.entries[0].event_id.is_empty() {
                                tally.failed.fetch_add(1, Ordering::Relaxed);
                                let mut f = failures.lock().unwrap();
                                if f.len() < 10 {
                                    f.push(format!("{:?}", r.entries[0]));
                                }
                            } else {
                                tally.ok.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // The replica is down (killed by the test): the
                        // request was not taken; try again shortly.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
        })
        .collect()
}

struct Cluster {
    emulator: EmulatorHandle,
    redis: RedisServer,
    replicas: Vec<Replica>,
    stop: Arc<AtomicBool>,
    tallies: Vec<Arc<Tally>>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    producers: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    async fn start(prefix: &str, share: f64) -> Self {
        let emulator = Emulator::spawn(
            "127.0.0.1:0".parse().unwrap(),
            EmulatorConfig {
                quota: Quota::new(QUOTA, 10).unwrap(),
                sources: (0..3)
                    .map(|i| SeedSource::new(source(i), "123456789012", SourceState::Active))
                    .collect(),
                // Counts only: the events themselves are not needed.
                max_recorded_events: 1000,
                ..EmulatorConfig::default()
            },
        )
        .await
        .unwrap();
        let redis = RedisServer::start();
        let mut replicas = Vec::new();
        for i in 0..3 {
            replicas.push(
                Replica::start(i, &emulator.endpoint_url(), &redis.url(), prefix, share).await,
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::default();
        let tallies: Vec<Arc<Tally>> = (0..3).map(|_| Arc::default()).collect();
        let mut producers = Vec::new();
        for (r, t) in replicas.iter().zip(&tallies) {
            producers.extend(produce(
                r,
                PRODUCERS_PER_REPLICA,
                stop.clone(),
                t.clone(),
                Arc::clone(&failures),
            ));
        }
        Self {
            emulator,
            redis,
            replicas,
            stop,
            tallies,
            failures,
            producers,
        }
    }

    /// Stops the producers and waits for their last answers.
    async fn finish(mut self) -> (Vec<Arc<Tally>>, Vec<String>, RecordCounts) {
        self.stop.store(true, Ordering::Relaxed);
        for p in std::mem::take(&mut self.producers) {
            p.await.expect("a producer's assertions held");
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.tallies.clone(), failures, self.emulator.counts())
    }
}

/// What the emulator saw over a window.
struct Window {
    secs: f64,
    calls: u64,
    throttled: u64,
    delivered: u64,
    per_source: Vec<u64>,
}

impl Window {
    async fn measure(emulator: &EmulatorHandle, secs: f64) -> Self {
        let before = emulator.counts();
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let after = emulator.counts();
        let secs = started.elapsed().as_secs_f64();
        let delivered_of =
            |c: &RecordCounts, i: usize| c.per_source.get(&source(i)).map_or(0, |s| s.delivered);
        Self {
            secs,
            calls: after.calls - before.calls,
            throttled: after.throttled - before.throttled,
            delivered: after.delivered - before.delivered,
            per_source: (0..3)
                .map(|i| delivered_of(&after, i) - delivered_of(&before, i))
                .collect(),
        }
    }

    /// Entries delivered per second, as a fraction of what the quota carries.
    fn used(&self) -> f64 {
        self.delivered as f64 / self.secs / (QUOTA * PER_CALL)
    }

    fn throttled_share(&self) -> f64 {
        self.throttled as f64 / (self.calls.max(1)) as f64
    }

    /// Fails unless at most `throttled` of the calls were throttled and at
    /// least `used` of the quota was delivered.
    fn assert_within(&self, what: &str, throttled: f64, used: f64) {
        assert!(
            self.throttled_share() <= throttled,
            "{what}: throttled {} of {} calls",
            self.throttled,
            self.calls
        );
        assert!(
            self.used() >= used,
            "{what}: used {:.1}% of the quota",
            100.0 * self.used()
        );
    }

    fn print(&self, what: &str) {
        println!(
            "{what}: {:.1} s, {} calls ({:.1}/s), {} throttled ({:.2}%), {} entries delivered \
             ({:.1}% of the quota's {} entries/s), per replica {:?}",
            self.secs,
            self.calls,
            self.calls as f64 / self.secs,
            self.throttled,
            100.0 * self.throttled_share(),
            self.delivered,
            100.0 * self.used(),
            QUOTA * PER_CALL,
            self.per_source
        );
    }
}

fn unique_prefix(name: &str) -> String {
    format!("test-{name}-{}-{}", std::process::id(), fastrand::u32(..))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_quota_and_a_stopped_one_leaves_its_share() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(&unique_prefix("share"), 0.25).await;
    // Warm-up: connections, lanes, full calls.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = Window::measure(&cluster.emulator, 5.0).await;
    all.print("three replicas");
    all.assert_within("three replicas", 0.01, 0.95);
    for (i, n) in all.per_source.iter().enumerate() {
        let share = *n as f64 / all.delivered as f64;
        assert!(
            (0.2..=0.47).contains(&share),
            "replica {i} delivered {:.1}% of the entries",
            100.0 * share
        );
    }

    // Replica 2 dies: within 2 s the other two use the whole quota.
    cluster.replicas[2].kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let two = Window::measure(&cluster.emulator, 3.0).await;
    two.print("two replicas, 2 s after the third died");
    assert_eq!(two.per_source[2], 0, "the dead replica sent nothing");
    two.assert_within("two replicas", 0.01, 0.95);

    // It comes back (same port: its producers reconnect) and gets its
    // share back.
    cluster.replicas[2].launch().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let back = Window::measure(&cluster.emulator, 4.0).await;
    back.print("three replicas again");
    let share = back.per_source[2] as f64 / back.delivered as f64;
    assert!(
        share >= 0.2,
        "the returned replica got {:.1}%",
        100.0 * share
    );
    back.assert_within("three replicas again", 0.01, 0.95);

    let (tallies, failures, _) = cluster.finish().await;
    let failed: u64 = tallies
        .iter()
        .map(|t| t.failed.load(Ordering::Relaxed))
        .sum();
    assert_eq!(failed, 0, "failed entries: {failures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopping_loses_nothing_and_sharing_resumes_when_it_returns() {
    let _serial = SERIAL.lock().await;
    // Alone, each of three replicas takes half the quota: 1.5 times it in
    // all, which adaptive pacing brings down.
    let mut cluster = Cluster::start(&unique_prefix("outage"), 0.5).await;
    let probe = cluster.replicas[0].channel();
    common::eventually_async("the replica joins", || async {
        health(&probe, "cluster").await.ok() == Some(ServingStatus::Serving)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = Window::measure(&cluster.emulator, 2.0).await;
    before.print("shared, before Redis stops");

    cluster.redis.stop();
    let outage_started = Instant::now();
    common::eventually_async("the cluster entry goes NOT_SERVING", || async {
        health(&probe, "cluster").await.ok() == Some(ServingStatus::NotServing)
    })
    .await;
    println!(
        "cluster entry NOT_SERVING {:.0} ms after Redis stopped",
        outage_started.elapsed().as_millis()
    );
    // The API itself stays SERVING: a Redis outage takes no pod out.
    assert_eq!(
        health(&probe, "partnerevents.v1.PartnerEvents")
            .await
            .unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(health(&probe, "").await.unwrap(), ServingStatus::Serving);
    assert_eq!(
        cluster.replicas[0]
            .metric("partner_events_cluster_joined")
            .await,
        Some(0.0)
    );
    let alone = Window::measure(&cluster.emulator, 6.0).await;
    alone.print("alone, Redis down");
    assert!(
        alone.throttled_share() <= 0.10,
        "throttled {} of {} calls while alone",
        alone.throttled,
        alone.calls
    );
    let pace = cluster.replicas[0]
        .metric("partner_events_upstream_pace_calls_per_second{region=\"us-east-1\"}")
        .await
        .unwrap();
    println!("replica 0's pace while alone: {pace:.1} calls/s");
    assert!(pace <= QUOTA * 0.5 + 0.01, "{pace}");

    cluster.redis.restart();
    let back_at = Instant::now();
    common::eventually_async("the cluster entry is SERVING again", || async {
        health(&probe, "cluster").await.ok() == Some(ServingStatus::Serving)
    })
    .await;
    println!(
        "cluster entry SERVING {:.0} ms after Redis returned",
        back_at.elapsed().as_millis()
    );
    for r in &cluster.replicas {
        common::eventually_async("every replica rejoins", || async {
            r.metric("partner_events_cluster_joined").await == Some(1.0)
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shared = Window::measure(&cluster.emulator, 4.0).await;
    shared.print("shared again");
    shared.assert_within("shared again", 0.01, 0.9);
    // One outage: one fallback, logged once (a loaded machine may add one
    // more around the rejoin, when an answer comes later than timeout_ms:
    // each is counted and logged once).
    let fallbacks = cluster.replicas[0]
        .metric("partner_events_cluster_fallbacks_total")
        .await
        .unwrap();
    assert!((1.0..=2.0).contains(&fallbacks), "{fallbacks} fallbacks");
    let logs = cluster.replicas[0].log();
    let said = logs.iter().filter(|l| l.contains("pacing alone")).count();
    assert_eq!(
        said as f64, fallbacks,
        "each fallback is logged once: {logs:#?}"
    );

    let (tallies, failures, counts) = cluster.finish().await;
    let ok: u64 = tallies.iter().map(|t| t.ok.load(Ordering::Relaxed)).sum();
    let failed: u64 = tallies
        .iter()
        .map(|t| t.failed.load(Ordering::Relaxed))
        .sum();
    // Nothing lost: every entry answered was accepted, and every accepted
    // entry reached the emulator once.
    assert_eq!(failed, 0, "failed entries: {failures:?}");
    assert_eq!(counts.delivered, ok, "delivered vs acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_limit_is_shared_by_the_replicas() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let toml = format!(
        "[quotas]\ntenant_entries_per_second = 10.0\nburst_seconds = 1.0\n\
         [cluster]\nurl = \"{}\"\nkey_prefix = \"{}\"\n",
        redis.url(),
        unique_prefix("limits")
    );
    let a = common::TestGateway::start(&toml).await;
    let b = common::TestGateway::start(&toml).await;
    for gw in [&a, &b] {
        common::eventually_async("the replica joins", || async {
            health(&gw.channel, "cluster").await.ok() == Some(ServingStatus::Serving)
        })
        .await;
    }
    // The tenant's 10 entries of burst, spent through replica a...
    let ok = a
        .put("acme", (0..10).map(|_| entry("T", "{}")).collect())
        .await;
    assert_eq!(ok.failed_entry_count, 0, "{ok:?}");
    // ...are spent for replica b too: alone, b would take these.
    let err = b
        .client
        .clone()
        .put_partner_events(request("acme", (0..5).map(|_| entry("T", "{}")).collect()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("tenant"), "{err:?}");
}
