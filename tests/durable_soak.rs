//! The kill -9 soak of the durable queue (issue 15): producers send
//! DURABLE unary batches to a gateway process (the binary, `serve
//! --config`) while it is SIGKILLed and restarted on the same port and
//! queue file several times, its emulator (in this process) failing calls
//! and entries retryably, throttling at an EventBridge-style quota, and
//! failing every call for a few seconds (an outage). Afterwards:
//!
//! 1. every acknowledged receipt is DELIVERED and its event is held by the
//!    emulator at least once;
//! 2. an event held more than once belongs to a report that says
//!    `redelivered`;
//! 3. every report is for an entry a producer was acknowledged for, or for
//!    one of a batch whose answer was lost (the gateway may have committed
//!    it just before a kill): none for anything never sent;
//! 4. an entry of an unanswered batch that the emulator holds was queued:
//!    it has a report.
//!
//! Seeded: the seed is printed, and `PEG_SOAK_SEED=<n>` runs it again
//! with the same faults, batch sizes and kill moments (timing still
//! varies). Run with `-- --nocapture` for the figures.

mod common;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{entry, free_port, sample, scrape, Spawned, StateDir, BIN};
use partner_events_gateway::{
    emulator::{
        Emulator, EmulatorConfig, EmulatorHandle, Fault, FaultPlan, FaultRule, Quota, SeedSource,
        SourceState,
    },
    proto::{
        partner_events_client::PartnerEventsClient, DeliveryMode, DeliveryReport, DeliveryState,
        GetDeliveriesRequest, PutPartnerEventsRequest, WatchDeliveriesRequest,
    },
};
use tonic::transport::Channel;

const TENANT: &str = "acme";
const SOURCE: &str = "aws.partner/example.com/acme/billing";
/// The emulator's quota, calls/s per region (and burst): the gateway is
/// told a little more, so that the emulator throttles now and then.
const QUOTA: f64 = 100.0;
const QUOTA_BURST: u32 = 20;
const PRODUCERS: usize = 4;
/// Entries per batch: 1 to this.
const MAX_BATCH: usize = 20;
/// A producer's pause between answered batches, ms: about 1,000 entries/s
/// in all, half of what the quota carries, so that the queue the kills and
/// the outage leave behind drains in a few seconds.
const PAUSE_MS: std::ops::RangeInclusive<u64> = 10..=70;
/// How long every upstream call fails.
const OUTAGE: Duration = Duration::from_secs(3);
/// Bound on the queue emptying once the faults stop.
const DRAIN_BOUND: Duration = Duration::from_secs(30);

/// The faults of the whole run: all retryable, so that every entry must
/// end DELIVERED. Each call waits a little before its answer (its events
/// already recorded), so that kills land on rounds in flight; a few calls
/// drop their connection after the emulator took their events (the outcome
/// is unknown: the entry is sent again and reported `redelivered`).
fn soak_faults() -> Vec<FaultRule> {
    let call_error = |status, error_type: &str| Fault::CallError {
        status,
        error_type: error_type.to_string(),
        message: "injected by the soak".to_string(),
    };
    vec![
        FaultRule::everywhere(Fault::EntryError {
            code: "InternalFailure".to_string(),
            message: "injected by the soak".to_string(),
        })
        .at_rate(0.05),
        FaultRule::everywhere(Fault::Delay {
            ms: 2,
            jitter_ms: 40,
        }),
        FaultRule::everywhere(call_error(500, "InternalException")).at_rate(0.03),
        FaultRule::everywhere(call_error(503, "ServiceUnavailable")).at_rate(0.02),
        FaultRule::everywhere(call_error(400, "ThrottlingException")).at_rate(0.03),
        FaultRule::everywhere(Fault::DropConnection { accept: true }).at_rate(0.01),
    ]
}

/// The outage: every call fails whole.
fn outage_faults() -> Vec<FaultRule> {
    vec![FaultRule::everywhere(Fault::CallError {
        status: 503,
        error_type: "ServiceUnavailable".to_string(),
        message: "injected outage".to_string(),
    })]
}

/// What "durable queue open" said at one start.
#[derive(Debug)]
struct OpenLine {
    queued: u64,
    dead_letters: u64,
    open_ms: u64,
    /// redb repaired the file (it was not closed cleanly).
    repaired: bool,
}

/// The gateway process: one port, one metrics port, one queue directory
/// for all its lives.
struct Gateway {
    port: u16,
    metrics_port: u16,
    config: PathBuf,
    state: StateDir,
    process: Option<Spawned>,
    opens: Vec<OpenLine>,
    kills: usize,
}

impl Gateway {
    fn new(emulator: &EmulatorHandle) -> Self {
        let (port, metrics_port) = (free_port(), free_port());
        let state = StateDir::new();
        let config = state.path.join("gateway.toml");
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
             [upstream]\nendpoint_url = \"{}\"\nlinger_ms = 10\ncall_timeout_ms = 2000\n\
             breaker_open_ms = 500\n\
             [sources]\ncheck_state = false\n\
             [quotas]\nupstream_calls_per_second = {}\nupstream_burst = {QUOTA_BURST}\n\
             [durable]\npath = \"{}\"\nattempt_timeout_ms = 5000\nretry_base_ms = 100\n\
             retry_max_ms = 1000\n\
             [tenants.{TENANT}]\ndefault_source = \"billing\"\n\
             [tenants.{TENANT}.sources.billing]\nname = \"{SOURCE}\"\nregion = \"us-east-1\"\n",
            emulator.endpoint_url(),
            QUOTA * 1.25,
            state.path.display()
        );
        std::fs::write(&config, toml).unwrap();
        Self {
            port,
            metrics_port,
            config,
            state,
            process: None,
            opens: Vec::new(),
            kills: 0,
        }
    }

    /// Starts the binary on the same port and queue; waits until it serves
    /// and notes what its queue held.
    async fn launch(&mut self) {
        let mut command = std::process::Command::new(BIN);
        command
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env("PEG_STATE_DIR", &self.state.path)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test");
        let mut process = Spawned::start(command);
        process
            .wait_for_line("partner-events-gateway serving")
            .await;
        let log = process.drain();
        let lines: Vec<serde_json::Value> = log
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let open = lines
            .iter()
            .find(|l| l["message"] == "durable queue open")
            .unwrap_or_else(|| panic!("no \"durable queue open\" line: {log:#?}"));
        assert!(
            !log.iter().any(|l| l.contains("did not open")),
            "the queue file was set aside after a SIGKILL: {log:#?}"
        );
        self.opens.push(OpenLine {
            queued: open["queued"].as_u64().unwrap(),
            dead_letters: open["dead_letters"].as_u64().unwrap(),
            open_ms: open["open_ms"].as_u64().unwrap(),
            repaired: lines.iter().any(|l| {
                l["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("redb repaired")
            }),
        });
        self.process = Some(process);
    }

    /// SIGKILL: no drain, no flush, no goodbye.
    fn kill(&mut self) {
        let process = self.process.take().expect("the gateway runs");
        let status = std::process::Command::new("kill")
            .args(["-KILL", &process.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        // Reaps it.
        drop(process);
        self.kills += 1;
    }

    fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://127.0.0.1:{}", self.port))
            .unwrap()
            .connect_lazy()
    }

    /// The last lines the running gateway logged, cut short (for failures).
    fn log_tail(&mut self) -> Vec<String> {
        let log = self.process.as_mut().map(|p| p.drain()).unwrap_or_default();
        log.iter()
            .rev()
            .take(8)
            .rev()
            .map(|l| l.chars().take(400).collect())
            .collect()
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = scrape(format!("127.0.0.1:{}", self.metrics_port).parse().unwrap()).await;
        sample(&text, name)
    }
}

/// One batch a producer sent, and what became of its call.
struct Batch {
    id: String,
    size: usize,
    /// The receipt of each entry when the call was answered ("" for an
    /// entry refused at once); `None` when no answer came.
    receipts: Option<Vec<String>>,
}

/// Sends DURABLE batches of 1 to [`MAX_BATCH`] entries until `stop`, each
/// entry's detail naming it (`{"id":"p1-b7-i3"}`); a call that fails
/// (the gateway killed, not up yet) is recorded unanswered and the next
/// batch goes after a short pause.
async fn produce(
    p: usize,
    seed: u64,
    channel: Channel,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Batch>>>,
) {
    let mut rng = fastrand::Rng::with_seed(seed ^ (p as u64 + 1).wrapping_mul(0x9e37_79b9));
    let mut client = PartnerEventsClient::new(channel);
    let mut b = 0;
    while !stop.load(Ordering::Relaxed) {
        let size = rng.usize(1..=MAX_BATCH);
        let id = format!("p{p}-b{b}");
        b += 1;
        let entries = (0..size)
            .map(|i| entry("SoakEvent", &format!(r#"{{"id":"{id}-i{i}"}}"#)))
            .collect();
        let mut req = tonic::Request::new(PutPartnerEventsRequest {
            tenant_id: TENANT.to_string(),
            entries,
            batch_id: id.clone(),
            delivery: DeliveryMode::Durable as i32,
        });
        req.set_timeout(Duration::from_secs(10));
        let receipts = match client.put_partner_events(req).await {
            Ok(answer) => {
                let answer = answer.into_inner();
                assert_eq!(answer.delivery, DeliveryMode::Durable as i32, "{answer:?}");
                assert_eq!(answer.entries.len(), size, "one result per entry");
                Some(answer.entries.into_iter().map(|r| r.receipt_id).collect())
            }
            Err(_) => None,
        };
        let answered = receipts.is_some();
        log.lock().unwrap().push(Batch { id, size, receipts });
        // A failed call: the gateway is down for a moment.
        let pause = if answered { rng.u64(PAUSE_MS) } else { 20 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// The id an entry's detail carries.
fn id_of(detail: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(detail).expect("a detail the soak wrote");
    v["id"].as_str().expect("an id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_durable_entries_survive_sigkill_restarts_and_faults() {
    let started = Instant::now();
    let seed: u64 = std::env::var("PEG_SOAK_SEED")
        .ok()
        .map(|s| s.parse().expect("PEG_SOAK_SEED is a number"))
        .unwrap_or_else(|| fastrand::u64(..));
    println!("durable soak seed {seed} (PEG_SOAK_SEED={seed} runs it again)");
    let mut rng = fastrand::Rng::with_seed(seed);

    let emulator = Emulator::spawn(
        "127.0.0.1:0".parse().unwrap(),
        EmulatorConfig {
            quota: Quota::new(QUOTA, QUOTA_BURST).unwrap(),
            sources: vec![SeedSource::new(SOURCE, "123456789012", SourceState::Active)],
            ..common::record_all()
        }
        .with_fault_plan(FaultPlan {
            seed,
            rules: soak_faults(),
        }),
    )
    .await
    .unwrap();
    let mut gateway = Gateway::new(&emulator);
    gateway.launch().await;

    let stop = Arc::new(AtomicBool::new(false));
    let batches: Arc<Mutex<Vec<Batch>>> = Arc::default();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            tokio::spawn(produce(
                p,
                seed,
                gateway.channel(),
                stop.clone(),
                batches.clone(),
            ))
        })
        .collect();

    // The kills, at seeded moments; the outage spans one of them (the
    // gateway restarts with a queue it cannot deliver for a while).
    let kills = rng.usize(3..=5);
    let outage_at = rng.usize(0..kills);
    for k in 0..kills {
        // Now and then a kill soon after a start, while the entries the
        // last kill cut short are being sent again.
        let life = if rng.u8(0..4) == 0 {
            rng.u64(300..=1_000)
        } else {
            rng.u64(3_000..=6_000)
        };
        tokio::time::sleep(Duration::from_millis(life)).await;
        let outage = (k == outage_at).then(|| {
            emulator.set_faults(outage_faults());
            Instant::now()
        });
        if outage.is_some() {
            tokio::time::sleep(Duration::from_millis(rng.u64(500..=1_500))).await;
        }
        gateway.kill();
        // Down for a moment: producers' calls fail and they reconnect.
        tokio::time::sleep(Duration::from_millis(rng.u64(0..=300))).await;
        gateway.launch().await;
        if let Some(since) = outage {
            tokio::time::sleep(OUTAGE.saturating_sub(since.elapsed())).await;
            emulator.set_faults(soak_faults());
            println!(
                "outage: every call failed for {:.1} s around kill {}",
                since.elapsed().as_secs_f64(),
                k + 1
            );
        }
    }
    // A last stretch on the last life, then the producers stop.
    tokio::time::sleep(Duration::from_millis(rng.u64(500..=1_500))).await;
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.expect("a producer's assertions held");
    }
    let produced_for = started.elapsed();

    // No more faults: the queue must empty.
    emulator.set_faults(Vec::new());
    let drain_started = Instant::now();
    loop {
        let queued = gateway
            .metric("partner_events_durable_queue_entries")
            .await
            .expect("the queue gauge is exposed");
        if queued == 0.0 {
            break;
        }
        if drain_started.elapsed() >= DRAIN_BOUND {
            let tail = gateway.log_tail();
            panic!(
                "{queued} entries still queued {DRAIN_BOUND:?} after the faults stopped; \
                 starts: {:?}; the log ends: {tail:#?}",
                gateway.opens
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained_in = drain_started.elapsed();

    // A last entry after everything: its report comes after every other
    // one (reports come in commit order), so the watch has read them all
    // once it has this one.
    let channel = gateway.channel();
    let mut client = PartnerEventsClient::new(channel);
    let sentinel = client
        .put_partner_events(PutPartnerEventsRequest {
            tenant_id: TENANT.to_string(),
            entries: vec![entry("SoakEvent", r#"{"id":"sentinel"}"#)],
            batch_id: "sentinel".to_string(),
            delivery: DeliveryMode::Durable as i32,
        })
        .await
        .expect("the sentinel is queued")
        .into_inner()
        .entries[0]
        .receipt_id
        .clone();
    assert!(!sentinel.is_empty());
    let mut watch = client
        .watch_deliveries(WatchDeliveriesRequest::default())
        .await
        .expect("the watch opens")
        .into_inner();
    let mut reports: Vec<DeliveryReport> = Vec::new();
    loop {
        let report = tokio::time::timeout(Duration::from_secs(20), watch.message())
            .await
            .expect("the sentinel's report within 20 s")
            .expect("the watch goes on")
            .expect("the watch stays open");
        let last = report.receipt_id == sentinel;
        reports.push(report);
        if last {
            break;
        }
    }
    drop(watch);
    let sentinel_report = reports.pop().unwrap();
    assert_eq!(sentinel_report.state(), DeliveryState::Delivered);

    // What was sent, answered or not.
    let batches = std::mem::take(&mut *batches.lock().unwrap());
    let answered: Vec<&Batch> = batches.iter().filter(|b| b.receipts.is_some()).collect();
    let unanswered: HashMap<&str, usize> = batches
        .iter()
        .filter(|b| b.receipts.is_none())
        .map(|b| (b.id.as_str(), b.size))
        .collect();
    // Acknowledged receipt -> the entry's id.
    let mut acked: HashMap<String, String> = HashMap::new();
    let mut refused_entries = 0;
    for b in &answered {
        for (i, r) in b.receipts.as_ref().unwrap().iter().enumerate() {
            if r.is_empty() {
                refused_entries += 1;
            } else {
                assert!(
                    acked.insert(r.clone(), format!("{}-i{i}", b.id)).is_none(),
                    "receipt {r} given twice"
                );
            }
        }
    }

    // What the emulator holds, by id.
    let mut held: HashMap<String, usize> = HashMap::new();
    for e in emulator.events() {
        *held.entry(id_of(&e.detail)).or_default() += 1;
    }
    assert_eq!(held.remove("sentinel"), Some(1));

    // (3) Every report is of an entry that was sent: acknowledged (and
    // then its batch and index are those of the answer), or of a batch
    // whose answer was lost; one report per receipt.
    let mut report_of: HashMap<String, &DeliveryReport> = HashMap::new();
    let mut seen = HashSet::new();
    for r in &reports {
        assert!(seen.insert(r.receipt_id.clone()), "two reports for {r:?}");
        // Every fault is retryable: nothing may end dead-lettered.
        assert_eq!(r.state(), DeliveryState::Delivered, "{r:?}");
        let id = format!("{}-i{}", r.batch_id, r.index);
        match acked.get(&r.receipt_id) {
            Some(acked_id) => assert_eq!(*acked_id, id, "the report names its entry: {r:?}"),
            None => {
                let size = unanswered.get(r.batch_id.as_str()).unwrap_or_else(|| {
                    panic!("a report for a receipt nobody was given, of no lost answer: {r:?}")
                });
                assert!((r.index as usize) < *size, "{r:?}");
            }
        }
        assert!(
            report_of.insert(id, r).is_none(),
            "two receipts for one entry: {r:?}"
        );
    }

    // (1) Every acknowledged receipt is DELIVERED, now and in the watch,
    // and the emulator holds its event.
    let receipts: Vec<String> = acked.keys().cloned().collect();
    for chunk in receipts.chunks(1_000) {
        let got = client
            .get_deliveries(GetDeliveriesRequest {
                receipt_ids: chunk.to_vec(),
            })
            .await
            .expect("GetDeliveries answers")
            .into_inner()
            .deliveries;
        assert_eq!(got.len(), chunk.len());
        for (receipt, d) in chunk.iter().zip(got) {
            assert_eq!(d.receipt_id, *receipt);
            assert_eq!(d.state(), DeliveryState::Delivered, "{d:?}");
            assert!(!d.event_id.is_empty(), "{d:?}");
        }
    }
    for (receipt, id) in &acked {
        let report = report_of
            .get(id)
            .unwrap_or_else(|| panic!("no report in the watch for acknowledged {id} ({receipt})"));
        assert_eq!(report.state(), DeliveryState::Delivered, "{report:?}");
        assert!(
            held.contains_key(id),
            "acknowledged {id} ({receipt}) reported delivered but the emulator does not hold it"
        );
    }

    let acked_ids: HashSet<&str> = acked.values().map(String::as_str).collect();

    // (2) and (4): every event the emulator holds has a report (queued,
    // acknowledged or not); one held twice or more, a `redelivered` one.
    let mut duplicates = 0;
    for (id, n) in &held {
        let report = report_of.get(id).unwrap_or_else(|| {
            panic!("the emulator holds {id} {n} time(s), and no report says so")
        });
        assert_eq!(report.state(), DeliveryState::Delivered, "{report:?}");
        if *n > 1 {
            duplicates += n - 1;
            assert!(
                report.redelivered,
                "{id} held {n} times, its report not redelivered: {report:?}"
            );
        }
    }
    let redelivered = reports.iter().filter(|r| r.redelivered).count();
    // Not asserted: a send cut short by a kill is not counted in
    // `attempts` (the count is committed after the round), so a report can
    // say fewer sends than the copies EventBridge holds.
    let attempts_short = held
        .iter()
        .filter(|(id, n)| report_of[id.as_str()].attempts < **n as u32)
        .count();
    let lost_answers_queued = reports
        .iter()
        .filter(|r| !acked.contains_key(&r.receipt_id))
        .count();

    // A batch is queued whole or not at all: a lost answer's batch has a
    // report for every entry or for none.
    let mut of_lost: HashMap<&str, usize> = HashMap::new();
    for r in reports
        .iter()
        .filter(|r| !acked.contains_key(&r.receipt_id))
    {
        *of_lost.entry(r.batch_id.as_str()).or_default() += 1;
    }
    for (batch, n) in &of_lost {
        assert_eq!(
            *n, unanswered[batch],
            "batch {batch}: {n} of its entries were queued"
        );
    }
    let unanswered_held = held
        .keys()
        .filter(|id| !acked_ids.contains(id.as_str()))
        .count();
    let counts = emulator.counts();
    let calls = emulator.calls();
    let call_faults = calls.iter().filter(|c| c.fault.is_some()).count();
    let entry_faults: usize = calls.iter().map(|c| c.entry_faults).sum();
    let commits = gateway
        .metric("partner_events_durable_commit_seconds_count")
        .await
        .unwrap_or(0.0);
    let commit_secs = gateway
        .metric("partner_events_durable_commit_seconds_sum")
        .await
        .unwrap_or(0.0);
    let pace = gateway
        .metric("partner_events_upstream_pace_calls_per_second{region=\"us-east-1\"}")
        .await
        .unwrap_or(0.0);
    let run = started.elapsed();
    let opens: Vec<String> = gateway
        .opens
        .iter()
        .map(|o| {
            format!(
                "queued={} dead={} open_ms={}{}",
                o.queued,
                o.dead_letters,
                o.open_ms,
                if o.repaired { " (repaired)" } else { "" }
            )
        })
        .collect();
    println!("durable queue open, each start: {opens:#?}");
    println!(
        "seed {seed}: {} batches sent, {} answered, {} unanswered; {} entries acknowledged \
         ({refused_entries} refused); {} kills, {} restarts; {} reports ({lost_answers_queued} of \
         {} unanswered batches), {redelivered} redelivered; {} events held, {duplicates} duplicates; \
         {:.1} s producing, queue empty {:.1} s after the faults stopped; {:.1} s in all",
        batches.len(),
        answered.len(),
        unanswered.len(),
        acked.len(),
        gateway.kills,
        gateway.opens.len() - 1,
        reports.len(),
        of_lost.len(),
        held.values().sum::<usize>(),
        produced_for.as_secs_f64(),
        drained_in.as_secs_f64(),
        run.as_secs_f64(),
    );
    println!(
        "emulator: {} calls ({} ok, {} over its quota, {call_faults} failed by a fault), \
         {entry_faults} entries failed by a fault; {unanswered_held} entries of unanswered \
         batches held; {attempts_short} reports count fewer attempts than copies held",
        counts.calls, counts.ok_calls, counts.throttled
    );
    println!(
        "the last life: {commits} commits, {:.1} ms each on average; pace now {pace:.0} calls/s",
        1000.0 * commit_secs / commits.max(1.0)
    );
    // The soak tested something: kills hit a gateway with work queued,
    // and producers lost answers.
    assert!(acked.len() > 1_000, "only {} acknowledged", acked.len());
    assert!(gateway.opens[1..].iter().any(|o| o.queued > 0), "{opens:?}");
    assert!(!unanswered.is_empty(), "no kill cut a call");
    let (status, _) = gateway.process.take().unwrap().terminate().await;
    assert!(status.success(), "{status:?}");
}
