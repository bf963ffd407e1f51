//! The durable run (`bench --only durable`): what acknowledging on disk
//! costs next to SYNC, group commit at work, how long a gateway with a
//! large queue takes to serve again after a restart, and the queue file's
//! bytes per entry.
//!
//! Throughput: unary batches of 1 and 20 entries from the unary callers,
//! the emulator at the latency runs' latency, SYNC and DURABLE taking turns
//! (which goes first alternating), a fresh gateway child per run with a
//! durable directory of its own and the same config (only the requests'
//! `delivery` differs). Commit figures come from the child's own metrics
//! (`partner_events_durable_commits_total`, `_commit_changes`,
//! `_enqueued_total`) over the measured window.
//!
//! Half load: DURABLE unary 20 at a fixed rate of half what the DURABLE
//! path sustains (the median over the rounds of the lesser of DURABLE's
//! requests/s and SYNC's, which is what the pipeline delivers: faster than
//! that the queue only grows; `--load-fraction` for another share),
//! through a fresh child, paced by the half-load runs' generator: the
//! acknowledgements' p50/p99 from when each request was due; as many
//! rounds as the closed-loop runs (3, `--quick` 1), judged on the round
//! with the median p99. When DURABLE's acceptance is well above that, one
//! more run at half of it shows the burst the queue absorbs while
//! delivery is saturated.
//!
//! Restart: one gateway fills its queue through the gRPC API (DURABLE
//! batches of 500) while the emulator hangs every call (EventBridge out of
//! reach: nothing leaves the queue), is stopped with SIGTERM, and a new
//! one is started on the same directory and port: the time until it logs
//! "durable queue open", and until the health service answers SERVING (the
//! user's figure). When the gRPC fill cannot queue the count in its time
//! bound, the library fills another directory directly
//! ([`Durable::open`] + [`Durable::enqueue`], the same entries) with the
//! count, and that restart is measured too, labelled as such.

use std::{
    net::SocketAddr,
    path::{Path as FsPath, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::time::Instant;

use super::{
    child::{free_port, metrics_scrape, proc_stats, sum_samples, window_quantile, GatewayChild},
    child_toml_at, count_upstream, join_load, latency_rules,
    load::{self, GatewayClients, Window},
    report::{
        self, CommitFigures, DurableBench, DurableHalfLoad, DurableRun, HalfLoadBasis,
        HalfLoadRound, Measurement, Path, Percentiles, Restart, ServerP99s,
    },
    start_gateway, tenant_toml, turns, Harness, MAX_OUTSTANDING_AT_RATE,
};
use crate::{
    durable::{Durable, DurableSection, QUEUE_FILE},
    emulator::{Fault, FaultRule},
    metrics::Metrics,
    proto::DeliveryMode,
};

/// Entries per request in the throughput runs.
const BATCHES: [usize; 2] = [1, 20];
/// Entries per request of the half-load run (the target's 20-entry batches).
const HALF_LOAD_ENTRIES: usize = 20;
/// Rounds of turns (SYNC and DURABLE once each per round).
const ROUNDS: u32 = 3;
const QUICK_ROUNDS: u32 = 1;
/// The restart run's queue: entries by default and with --quick...
pub const DEFAULT_FILL_ENTRIES: u64 = 1_000_000;
pub const QUICK_FILL_ENTRIES: u64 = 2_000;
/// ...the gRPC fill's time bound, by default and with --quick...
pub const DEFAULT_FILL_SECS: u64 = 240;
pub const QUICK_FILL_SECS: u64 = 20;
/// ...sent as DURABLE unary batches of this many entries by this many
/// callers (the API's default most entries per request).
const FILL_BATCH_ENTRIES: usize = 500;
const FILL_CALLERS: usize = 8;
/// Concurrent enqueues of the library fill (batches of the same size).
const LIBRARY_FILL_TASKS: usize = 8;
/// How long a restarted gateway may take to answer health.
const SERVE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the library's queue file may take to be released once the
/// filled queue is dropped (its writer thread ends on its own).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// The metrics read from a child, before and after a window.
const COMMITS: &str = "partner_events_durable_commits_total";
const COMMIT_CHANGES_SUM: &str = "partner_events_durable_commit_changes_sum";
const COMMIT_SECONDS_SUM: &str = "partner_events_durable_commit_seconds_sum";
const ENQUEUED: &str = "partner_events_durable_enqueued_total";
const QUEUE_ENTRIES: &str = "partner_events_durable_queue_entries";
/// The histograms of the gateway's own p99s: commits, and PutPartnerEvents
/// from its start in the gateway to its answer.
const COMMIT_SECONDS: &str = "partner_events_durable_commit_seconds";
const HANDLING_SECONDS: &str = "grpc_server_handling_seconds";
const PUT_METHOD: &str = "grpc_method=\"PutPartnerEvents\"";

/// The config of every durable run's gateway: the throughput runs'
/// (unpaced, wide bounds), listening on `listen`, metrics at `metrics`,
/// SYNC unless a request asks for DURABLE.
fn durable_toml(endpoint_url: &str, listen: &str, metrics: &str) -> String {
    child_toml_at(
        listen,
        "durable runs",
        endpoint_url,
        "max_in_flight_entries = 1000000\n",
        "max_concurrent_calls = 512\n",
        "upstream_calls_per_second = 0",
        &format!(
            "{}\n[durable]\ndefault_delivery = \"sync\"\n",
            tenant_toml(load::TENANT, load::SOURCE, None)
        ),
        metrics,
    )
}

/// The whole durable run.
pub async fn durable(h: &Harness) -> Result<DurableBench, String> {
    let plan = &h.plan;
    let rounds = if plan.quick { QUICK_ROUNDS } else { ROUNDS };
    let latency_ms = plan.latency_ms;
    eprintln!(
        "durable: unary {BATCHES:?} entries x{} callers, emulator {latency_ms} ms per call, SYNC and DURABLE taking turns, {rounds} rounds; then a restart with {} entries queued",
        plan.unary_callers,
        report::thousands(plan.durable_fill as f64)
    );
    let mut runs = Vec::new();
    for entries in BATCHES {
        for round in 0..rounds {
            for mode in turns(round, DeliveryMode::Sync, DeliveryMode::Durable) {
                let (run, _) =
                    measure(h, entries, latency_ms, mode, round + 1, Pace::ClosedLoop).await?;
                eprintln!(
                    "durable: unary-{entries} {} round {}: {} acks/s, p50 {:.2} ms, p99 {:.2} ms, {:.1} commits/s, {:.1} acks/commit{}",
                    run.delivery,
                    run.round,
                    report::thousands(run.measurement.entries_per_sec),
                    run.measurement.latency_ms.p50,
                    run.measurement.latency_ms.p99,
                    run.commits.commits_per_sec(),
                    run.commits.acks_per_commit(),
                    run.measurement
                        .first_failure
                        .as_deref()
                        .map(|f| format!(", first failure: {f}"))
                        .unwrap_or_default()
                );
                runs.push(run);
            }
        }
    }
    let half_load = half_loads(h, &runs).await?;
    h.emulator.set_faults(Vec::new());
    let mut restarts = vec![restart_after_grpc_fill(h).await?];
    let grpc = &restarts[0];
    if grpc.filled_entries < plan.durable_fill {
        eprintln!(
            "durable: the gRPC fill queued {} of {} entries within {:?}; filling {} through the library",
            report::thousands(grpc.filled_entries as f64),
            report::thousands(plan.durable_fill as f64),
            plan.durable_fill_within,
            report::thousands(plan.durable_fill as f64)
        );
        restarts.push(restart_after_library_fill(h).await?);
    }
    Ok(DurableBench::new(
        latency_ms,
        plan.unary_callers,
        load::detail().len(),
        runs,
        half_load,
        restarts,
        durable_toml(
            &h.emulator.endpoint_url(),
            "127.0.0.1:0",
            "127.0.0.1:<port>",
        ),
    ))
}

/// The durable counters of a child now, and the whole scrape.
async fn commit_reading(metrics: SocketAddr) -> Result<([f64; 5], String), String> {
    let text = metrics_scrape(metrics).await?;
    let counters = [
        COMMITS,
        COMMIT_CHANGES_SUM,
        COMMIT_SECONDS_SUM,
        ENQUEUED,
        QUEUE_ENTRIES,
    ]
    .map(|name| sum_samples(&text, name));
    Ok((counters, text))
}

/// The gateway's own p99s over a window, from its histograms: as bucket
/// bounds, in ms.
fn server_p99s(before: &str, after: &str) -> ServerP99s {
    let ms = |name, label| window_quantile(before, after, name, label, 0.99).map(|s| s * 1e3);
    ServerP99s {
        put_handling_ms: ms(HANDLING_SECONDS, Some(PUT_METHOD)),
        commit_ms: ms(COMMIT_SECONDS, None),
    }
}

/// DURABLE unary 20 at `--load-fraction` (0.5: the target's half load) of
/// what the closed-loop unary-20 `runs` show the DURABLE path sustains:
/// per round, the lesser of DURABLE's requests/s and SYNC's (what the same
/// pipeline delivers; above it the queue only grows until it refuses).
/// When DURABLE's acceptance alone is well above that, a second run at the
/// same share of it shows the burst the queue absorbs with delivery
/// saturated behind it. Empty when there were no DURABLE runs.
async fn half_loads(h: &Harness, runs: &[DurableRun]) -> Result<Vec<DurableHalfLoad>, String> {
    let (accepted, sustained) = maxima(runs);
    if accepted.is_empty() {
        return Ok(Vec::new());
    }
    // The judged basis as many rounds as the closed-loop runs; the burst
    // once.
    let rounds = if h.plan.quick { QUICK_ROUNDS } else { ROUNDS };
    let mut out = vec![half_load(h, HalfLoadBasis::Sustained, sustained, rounds).await?];
    if report::median(accepted.clone()) > 1.1 * out[0].max_requests_per_sec {
        out.push(half_load(h, HalfLoadBasis::Acceptance, accepted, 1).await?);
    }
    Ok(out)
}

/// Per closed-loop DURABLE unary-20 round: its requests/s, and the lesser
/// of that and the same round's SYNC requests/s (DURABLE's own when the
/// round has no SYNC run).
fn maxima(runs: &[DurableRun]) -> (Vec<f64>, Vec<f64>) {
    let of = |mode: DeliveryMode| {
        runs.iter()
            .filter(move |r| {
                r.delivery == mode_name(mode)
                    && r.measurement.entries_per_batch == HALF_LOAD_ENTRIES
            })
            .map(|r| (r.round, r.measurement.batches_per_sec))
    };
    of(DeliveryMode::Durable)
        .map(|(round, rate)| {
            let delivered = of(DeliveryMode::Sync)
                .find(|(r, _)| *r == round)
                .map_or(rate, |(_, delivered)| delivered);
            (rate, rate.min(delivered))
        })
        .unzip()
}

/// Fixed-rate runs at `--load-fraction` of the median of `maxima`, each
/// through a fresh child: `rounds` of them, the one with the median p99
/// kept whole.
async fn half_load(
    h: &Harness,
    basis: HalfLoadBasis,
    maxima: Vec<f64>,
    rounds: u32,
) -> Result<DurableHalfLoad, String> {
    let max_requests_per_sec = report::median(maxima.clone());
    let fraction = h.plan.load_fraction;
    let rate = (max_requests_per_sec * fraction).max(1.0);
    eprintln!(
        "durable: half load ({basis:?}): DURABLE unary-{HALF_LOAD_ENTRIES} at {rate:.0} requests/s ({:.0}% of the median {max_requests_per_sec:.0} requests/s), {rounds} rounds of a fresh gateway, {:?} (+{:?} warm-up)",
        fraction * 100.0,
        h.plan.duration,
        h.plan.warmup
    );
    let mut runs = Vec::new();
    for round in 1..=rounds {
        let (run, late_ms) = measure(
            h,
            HALF_LOAD_ENTRIES,
            h.plan.latency_ms,
            DeliveryMode::Durable,
            round,
            Pace::Rate(rate),
        )
        .await?;
        let m = &run.measurement;
        eprintln!(
            "durable: half load ({basis:?}) round {round}: {} acks/s, {} delivered entries/s, {} queued at the end, p50 {:.2} ms, p99 {:.2} ms ({} skipped, {} errors); the generator started requests late by p99 {:.2} ms",
            report::thousands(m.entries_per_sec),
            report::thousands(m.entries_per_call * m.upstream_calls_per_sec),
            report::thousands(run.commits.queued_at_end as f64),
            m.latency_ms.p50,
            m.latency_ms.p99,
            m.skipped,
            m.errors + m.entries_failed,
            late_ms.p99
        );
        runs.push((run, late_ms));
    }
    let rounds: Vec<HalfLoadRound> = runs
        .iter()
        .map(|(run, _)| HalfLoadRound::of(&run.measurement))
        .collect();
    runs.sort_by(|a, b| {
        let p99 = |r: &(DurableRun, Percentiles)| r.0.measurement.latency_ms.p99;
        p99(a).total_cmp(&p99(b))
    });
    let (run, late_ms) = runs.swap_remove(runs.len() / 2);
    Ok(DurableHalfLoad {
        basis,
        max_requests_per_sec,
        maxima,
        fraction,
        rate,
        rounds,
        run,
        late_ms,
    })
}

/// How a durable run's callers send.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Each caller its next request once the last is answered.
    ClosedLoop,
    /// This many requests per second, whatever the answers (latency from
    /// when each was due).
    Rate(f64),
}

/// One run of unary `entries` in `mode`, through a fresh child; with how
/// late the generator started its requests (fixed rate only).
async fn measure(
    h: &Harness,
    entries: usize,
    latency_ms: u64,
    mode: DeliveryMode,
    round: u32,
    pace: Pace,
) -> Result<(DurableRun, Percentiles), String> {
    let plan = &h.plan;
    h.emulator.set_faults(latency_rules(plan, latency_ms));
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let toml = durable_toml(
        &h.emulator.endpoint_url(),
        "127.0.0.1:0",
        &metrics.to_string(),
    );
    let gateway = start_gateway(h, &toml).await?;
    let callers = plan.unary_callers;
    let clients = GatewayClients::connect(gateway.addr(), callers).await?;
    let start = Instant::now();
    let window = Window {
        start: start + plan.warmup,
        end: start + plan.warmup + plan.duration,
    };
    let load = match pace {
        Pace::ClosedLoop => tokio::spawn(load::gateway_unary_as(
            clients, entries, callers, window, mode,
        )),
        Pace::Rate(rate) => tokio::spawn(load::gateway_unary_at_rate_as(
            clients,
            entries,
            mode,
            rate,
            MAX_OUTSTANDING_AT_RATE,
            window,
        )),
    };
    tokio::time::sleep_until(window.start).await;
    let gw_before = gateway.stats()?;
    let me_before = proc_stats("self")?;
    let (before, before_text) = commit_reading(metrics).await?;
    let started = Instant::now();
    let upstream = tokio::spawn(count_upstream(h.emulator.clone(), window.end));
    tokio::time::sleep_until(window.end).await;
    let (after, after_text) = commit_reading(metrics).await?;
    let secs = started.elapsed().as_secs_f64();
    let gw_after = gateway.stats()?;
    let me_after = proc_stats("self")?;
    let upstream = upstream
        .await
        .map_err(|e| format!("upstream count failed: {e}"))?;
    let mut tally = join_load(load).await?;
    drop(gateway);
    let late_ms = Percentiles::of(&mut tally.late_us);
    let delta = |i: usize| (after[i] - before[i]).max(0.0);
    let measurement = Measurement::new(
        format!("unary-{entries} x{callers}"),
        Path::Gateway,
        latency_ms,
        match pace {
            Pace::ClosedLoop => "closed loop".to_string(),
            Pace::Rate(rate) => format!("fixed rate {}/s", report::thousands(rate)),
        },
        entries,
        callers,
        plan.duration.as_secs_f64(),
        tally,
        upstream,
        Some((
            gw_after.cpu_secs - gw_before.cpu_secs,
            gw_after.hwm_kib.max(gw_before.hwm_kib) as f64 / 1024.0,
        )),
        me_after.cpu_secs - me_before.cpu_secs,
    );
    let run = DurableRun {
        delivery: mode_name(mode).to_string(),
        round,
        measurement,
        commits: CommitFigures {
            secs,
            commits: delta(0) as u64,
            changes: delta(1) as u64,
            commit_seconds: delta(2),
            enqueued: delta(3) as u64,
            queued_at_end: after[4] as u64,
        },
        server: server_p99s(&before_text, &after_text),
    };
    Ok((run, late_ms))
}

fn mode_name(mode: DeliveryMode) -> &'static str {
    match mode {
        DeliveryMode::Durable => "durable",
        _ => "sync",
    }
}

/// A directory of the bench's own for a queue that outlives one child.
fn restart_dir(label: &str) -> Result<PathBuf, String> {
    let dir =
        std::env::temp_dir().join(format!("peg-bench-durable-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Removes a directory when dropped.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The restart gateway's config, on a port that stays the same across its
/// restart.
fn restart_toml(h: &Harness, port: u16) -> String {
    durable_toml(&h.emulator.endpoint_url(), &format!("127.0.0.1:{port}"), "")
}

/// Fills a queue through the gRPC API with EventBridge out of reach, stops
/// the gateway, and measures its restart.
async fn restart_after_grpc_fill(h: &Harness) -> Result<Restart, String> {
    let plan = &h.plan;
    let dir = restart_dir("grpc")?;
    let _remove = RemoveDir(dir.clone());
    let port = free_port()?;
    let toml = restart_toml(h, port);
    // EventBridge out of reach: every call hangs, so nothing leaves the
    // queue (a few thousand entries at a time wait in a delivery round).
    h.emulator
        .set_faults(vec![FaultRule::everywhere(Fault::Hang { accept: false })]);
    let result = async {
        let gateway = start_in(h, &toml, &dir).await?;
        let clients = GatewayClients::connect(gateway.addr(), FILL_CALLERS).await?;
        let started = Instant::now();
        let fill = load::durable_fill(
            clients,
            FILL_BATCH_ENTRIES,
            FILL_CALLERS,
            plan.durable_fill,
            started + plan.durable_fill_within,
        )
        .await;
        let fill_secs = started.elapsed().as_secs_f64();
        eprintln!(
            "durable: gRPC fill: {} entries queued in {fill_secs:.1} s ({} failed, {} errors)",
            report::thousands(fill.queued as f64),
            fill.failed,
            fill.errors
        );
        let stop_secs = tokio::task::spawn_blocking(move || gateway.stop())
            .await
            .map_err(|e| format!("gateway stop task failed: {e}"))??
            .as_secs_f64();
        let mut r = restart(h, &toml, port, &dir, "grpc", fill.queued, fill_secs).await?;
        r.stop_secs = Some(stop_secs);
        r.fill_failed = fill.failed + fill.errors;
        r.first_failure = fill.first_failure;
        Ok::<_, String>(r)
    }
    .await;
    h.emulator.set_faults(Vec::new());
    result
}

/// Fills a queue through the library (no gateway, no delivery) and
/// measures a gateway's start on it.
async fn restart_after_library_fill(h: &Harness) -> Result<Restart, String> {
    let plan = &h.plan;
    let dir = restart_dir("library")?;
    let _remove = RemoveDir(dir.clone());
    let started = Instant::now();
    let filled = library_fill(&dir, plan.durable_fill).await?;
    let fill_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "durable: library fill: {} entries queued in {fill_secs:.1} s",
        report::thousands(filled as f64)
    );
    let port = free_port()?;
    let toml = restart_toml(h, port);
    h.emulator
        .set_faults(vec![FaultRule::everywhere(Fault::Hang { accept: false })]);
    let result = restart(h, &toml, port, &dir, "library", filled, fill_secs).await;
    h.emulator.set_faults(Vec::new());
    result
}

async fn start_in(h: &Harness, toml: &str, dir: &FsPath) -> Result<GatewayChild, String> {
    let (bin, toml, dir) = (h.plan.gateway_bin.clone(), toml.to_string(), dir.to_owned());
    tokio::task::spawn_blocking(move || GatewayChild::start_in(&bin, &toml, Some(&dir)))
        .await
        .map_err(|e| format!("gateway start task failed: {e}"))?
}

/// Starts a gateway on the filled `dir` and times it: until it logs the
/// queue open, and until its health service answers SERVING on `port`.
async fn restart(
    h: &Harness,
    toml: &str,
    port: u16,
    dir: &FsPath,
    fill: &str,
    filled: u64,
    fill_secs: f64,
) -> Result<Restart, String> {
    let file = dir.join(QUEUE_FILE);
    let meta =
        std::fs::metadata(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let file_bytes = meta.len();
    let allocated_bytes = {
        use std::os::unix::fs::MetadataExt;
        meta.blocks() * 512
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let spawned = Instant::now();
    let child = start_in(h, toml, dir);
    let serving = wait_serving(addr, spawned + SERVE_TIMEOUT);
    let (child, serving) = tokio::join!(child, serving);
    let child = child?;
    let serving = serving?;
    let open = child.durable_open().ok_or_else(|| {
        format!(
            "the gateway did not log its durable queue open; its log:\n{}",
            child.log()
        )
    })?;
    let rss_mib = child.stats()?.rss_kib as f64 / 1024.0;
    drop(child);
    let r = Restart {
        fill: fill.to_string(),
        target_entries: h.plan.durable_fill,
        filled_entries: filled,
        fill_secs,
        fill_batch_entries: FILL_BATCH_ENTRIES,
        fill_callers: if fill == "grpc" {
            FILL_CALLERS
        } else {
            LIBRARY_FILL_TASKS
        },
        detail_bytes: load::detail().len(),
        file_bytes,
        allocated_bytes,
        queued_at_open: open.queued,
        stop_secs: None,
        open_ms: open.open_ms,
        open_logged_ms: open.after.as_secs_f64() * 1e3,
        serving_ms: serving.as_secs_f64() * 1e3,
        rss_mib,
        fill_failed: 0,
        first_failure: None,
    };
    eprintln!(
        "durable: restart ({fill} fill): {} entries, file {:.1} MB ({:.0} bytes/entry), open_ms {}, health SERVING after {:.0} ms, RSS {:.0} MiB",
        report::thousands(r.queued_at_open as f64),
        r.file_bytes as f64 / 1e6,
        r.bytes_per_entry(),
        r.open_ms,
        r.serving_ms,
        r.rss_mib
    );
    Ok(r)
}

/// From now until `addr`'s health service says the gateway's service is
/// SERVING: a connection refused is tried again 2 ms later; one accepted
/// (the port is bound before the queue opens) waits for the answer.
async fn wait_serving(addr: SocketAddr, deadline: Instant) -> Result<Duration, String> {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let started = Instant::now();
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(1));
        match tokio::time::timeout_at(deadline, endpoint.connect()).await {
            Err(_) => break,
            Ok(Err(e)) => last = format!("connect: {e}"),
            Ok(Ok(channel)) => {
                let mut client = HealthClient::new(channel);
                let check = client.check(HealthCheckRequest {
                    service: crate::server::SERVICE_NAME.to_string(),
                });
                match tokio::time::timeout_at(deadline, check).await {
                    Err(_) => break,
                    Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => {
                        return Ok(started.elapsed());
                    }
                    Ok(Ok(r)) => last = format!("status {}", r.get_ref().status),
                    Ok(Err(s)) => last = format!("{:?}: {}", s.code(), s.message()),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Err(format!(
        "the restarted gateway at {addr} did not answer health SERVING within {SERVE_TIMEOUT:?} (last: {last})"
    ))
}

/// Queues `target` bench entries in `dir` through the library, in batches
/// of [`FILL_BATCH_ENTRIES`] from [`LIBRARY_FILL_TASKS`] tasks (group
/// commit as in the gateway), then closes the file.
async fn library_fill(dir: &FsPath, target: u64) -> Result<u64, String> {
    use crate::domain::{entry::entry_size, entry::PreparedEntry, tenant::SourceRef};
    let settings = DurableSection {
        path: dir.to_string_lossy().into_owned(),
        ..DurableSection::default()
    }
    .settings()
    .map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::new(false));
    let (durable, _) = tokio::task::spawn_blocking(move || Durable::open(settings, metrics))
        .await
        .map_err(|e| format!("queue open task failed: {e}"))?
        .map_err(|e| format!("cannot open the library fill's queue: {e}"))?;
    let source = SourceRef::new(load::SOURCE, load::REGION);
    let detail = load::detail();
    let size = entry_size(None, source.name(), load::DETAIL_TYPE, &detail, &[]);
    let claimed = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..LIBRARY_FILL_TASKS {
        let (durable, claimed, source, detail) = (
            durable.clone(),
            claimed.clone(),
            source.clone(),
            detail.clone(),
        );
        set.spawn(async move {
            let mut queued = 0u64;
            loop {
                let from = claimed.fetch_add(FILL_BATCH_ENTRIES as u64, Ordering::Relaxed);
                if from >= target {
                    return Ok::<_, String>(queued);
                }
                let n = (target - from).min(FILL_BATCH_ENTRIES as u64) as u32;
                let entries = (0..n)
                    .map(|index| PreparedEntry {
                        index,
                        source: source.clone(),
                        time: None,
                        detail_type: load::DETAIL_TYPE.to_string(),
                        detail: detail.clone(),
                        resources: Vec::new(),
                        size,
                    })
                    .collect();
                let receipts = durable
                    .enqueue(load::TENANT, "", entries)
                    .await
                    .map_err(|e| format!("library enqueue failed: {e}"))?;
                queued += receipts.len() as u64;
            }
        });
    }
    let mut queued = 0;
    while let Some(r) = set.join_next().await {
        queued += r.map_err(|e| format!("library fill task failed: {e}"))??;
    }
    drop(durable);
    wait_released(&dir.join(QUEUE_FILE)).await?;
    Ok(queued)
}

/// Waits until no one holds `file` open as a redb database (the library
/// queue's writer thread closes it once the queue is dropped).
async fn wait_released(file: &FsPath) -> Result<(), String> {
    let deadline = std::time::Instant::now() + RELEASE_TIMEOUT;
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || loop {
        match redb::Database::open(&file) {
            Ok(db) => {
                drop(db);
                return Ok(());
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("the library fill's queue file: {e}")),
        }
    })
    .await
    .map_err(|e| format!("release wait failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{tests::args, Plan};
    use crate::{config::Config, domain::delivery::Delivery};

    #[test]
    fn the_durable_runs_config_loads_sync_by_default_with_metrics_and_the_port_given() {
        let c = Config::from_toml(
            &durable_toml("http://127.0.0.1:1", "127.0.0.1:4999", "127.0.0.1:9464"),
            "t",
        )
        .unwrap();
        assert_eq!(c.durable.default_delivery, Delivery::Sync);
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.listen, "127.0.0.1:4999".parse().unwrap());
        assert_eq!(c.max_in_flight_entries, 1_000_000);
        assert_eq!(c.pipeline.upstream_calls_per_second, 0.0);
    }

    #[test]
    fn half_load_takes_the_lesser_of_durable_and_sync_per_round() {
        let run = |delivery: &str, round, entries, batches_per_sec| {
            let mut m = Measurement::new(
                format!("unary-{entries} x64"),
                Path::Gateway,
                20,
                "closed loop".into(),
                entries,
                64,
                1.0,
                load::Tally::default(),
                Default::default(),
                None,
                0.0,
            );
            m.batches_per_sec = batches_per_sec;
            DurableRun {
                delivery: delivery.into(),
                round,
                measurement: m,
                commits: CommitFigures::default(),
                server: ServerP99s::default(),
            }
        };
        let runs = [
            run("sync", 1, 20, 2_800.0),
            run("durable", 1, 20, 6_000.0),
            run("durable", 2, 20, 2_000.0),
            run("sync", 2, 20, 3_000.0),
            run("durable", 3, 20, 5_000.0),
            run("durable", 1, 1, 9_000.0),
        ];
        let (accepted, sustained) = maxima(&runs);
        assert_eq!(accepted, [6_000.0, 2_000.0, 5_000.0]);
        // Round 3 has no SYNC run: DURABLE's own.
        assert_eq!(sustained, [2_800.0, 2_000.0, 5_000.0]);
    }

    #[test]
    fn quick_keeps_the_durable_run_tiny_and_only_durable_runs_it_alone() {
        let quick = Plan::new(args(true, None)).unwrap();
        assert!(quick.wants("durable"));
        assert_eq!(quick.durable_fill, QUICK_FILL_ENTRIES);
        assert_eq!(
            quick.durable_fill_within,
            Duration::from_secs(QUICK_FILL_SECS)
        );
        let full = Plan::new(args(false, Some("durable"))).unwrap();
        assert_eq!(full.durable_fill, DEFAULT_FILL_ENTRIES);
        assert!(full.shapes().is_empty());
        assert!(!full.wants("stall") && !full.wants("noisy") && !full.wants("cluster"));
        assert!(!Plan::new(args(false, Some("unary-20 ")))
            .unwrap()
            .wants("durable"));
    }
}
