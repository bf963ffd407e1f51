//! The `bench` subcommand: a load harness that measures the gateway against
//! a direct-SDK baseline, in one run, on loopback only.
//!
//! The harness starts the built-in emulator in its own process (it needs the
//! emulator's recorded calls and fault rules, reached through
//! [`EmulatorHandle`]) and, for each gateway run, a fresh gateway as a child
//! process (`serve --config <file>` pointed at that emulator), so that the
//! gateway's CPU time and peak RSS read from `/proc/<pid>` are its own. The
//! baseline sends the same batches straight to the emulator with
//! `aws-sdk-eventbridge`, one `PutPartnerEvents` call per caller batch
//! (batches over 20 entries cut into calls of 20), with the same number of
//! callers. Each scenario runs with the emulator answering at once and
//! with a fixed latency per call; then unary 20 at a fixed rate of half the
//! gateway's maximum, with and without that latency (added latency; the
//! requests paced by a thread of their own), then open streams against a
//! hung upstream (memory), then the noisy neighbour (below). Targets are
//! judged and printed, never asserted. The emulator's quota (EventBridge's
//! 1,400 calls/s per region) is off in every run but the noisy neighbour,
//! and the output says so: the runs measure the gateway's own cost, which
//! the quota would hide.
//!
//! The noisy neighbour is the fair share under a quota: the emulator
//! enforces 150 calls/s (burst 300) for that run only, the gateway is paced
//! at the same 150 calls/s, and two tenants of weight 1 each have a source
//! of their own. The quiet one sends one 1-entry request every 50 ms alone,
//! then again while the flood keeps 256 requests of 20 entries in flight;
//! its p99 during the flood, the quota used and the calls throttled are
//! judged.
//!
//! The cluster run is three gateway replicas sharing one quota through a
//! `redis-server` the bench starts (and kills) itself: the emulator
//! enforces 150 calls/s (burst 20) for that run only, each replica is paced
//! at the same rate with `[cluster]` pointing at that Redis, and 1-entry
//! requests flood all three. Run once per `cluster.lease_calls` (1 and 4),
//! it reports the quota used, the calls throttled, and per upstream call
//! the replicas' CPU, Redis's CPU and Redis round trips: what a lease of
//! several call tokens saves.
//!
//! The durable run compares DURABLE and SYNC acknowledgements side by
//! side (unary 1 and 20, the emulator's latency), reads group commit from
//! the child's metrics, and times a restart with a million entries queued
//! (see `durable`). Every gateway child has a durable directory of its own
//! (`PEG_STATE_DIR`), removed with it: redb lets one process open a queue
//! file, and no run inherits another's queue.
//!
//! The idempotency run compares the same load with and without a key on
//! every entry side by side, with the keys in memory and in Redis, and
//! measures resends and the memory a key takes (see `idempotency`).
//!
//! The floor run sets the gateway's CPU per 1-entry request against a
//! `grpc.health.v1` Check's on the same gateway (see `floor`); the quota
//! run has one gateway paced at the cluster run's scaled-down quota, with
//! more 1-entry requests than it carries (see `quota`). Beside the JSON
//! report, an SVG of the throughput runs (see `svg`).
//!
//! Every load loop is bounded in time (a window per run) and in count.
//! Layout: `load` (what is sent and how), `child` (the gateway process and
//! `/proc` figures), `durable` (the durable run), `idempotency` (the
//! idempotency run), `floor` (the floor run), `quota` (the quota run),
//! `report` (measurements, targets, table, JSON), `svg` (the picture).

mod child;
mod durable;
mod floor;
mod idempotency;
mod load;
mod quota;
mod report;
mod svg;

use std::{path::PathBuf, time::Duration};

use tokio::time::Instant;

use crate::config::UpstreamSection;
use crate::emulator::{
    Emulator, EmulatorConfig, EmulatorHandle, Fault, FaultRule, Quota, SeedSource, SourceState,
};
use child::{free_port, metrics_sum, proc_stats, GatewayChild, RedisChild};
use load::{GatewayClients, Tally, Window};
use report::{
    Cluster, ClusterRun, HalfLoad, Measurement, Noisy, Paired, Path, QuotaUse, QuotaWindow, Report,
    Stall, TenantRun, UpstreamTally,
};

/// The emulator's quota in every run: off, since the runs measure the
/// gateway's own cost and the baseline's calls would otherwise be
/// throttled well below what the machine can do.
const BENCH_QUOTA: Quota = Quota::UNLIMITED;

/// The customer account the bench source is shared with.
const BENCH_ACCOUNT: &str = "123456789012";
/// Callers of the unary scenarios by default.
const DEFAULT_UNARY_CALLERS: usize = 64;
/// Batches a stream keeps unanswered by default...
const DEFAULT_STREAM_IN_FLIGHT: usize = 64;
/// ...and the loads a stream scenario's gateway runs are measured at:
/// entries all streams keep unanswered at most (each stream at least one
/// batch). By Little's law the latency is what is in flight over the
/// throughput: more only lengthens the queue once the machine is busy, so
/// the targets take the best run whose p99 is under the latency bound.
const DEFAULT_STREAM_ENTRIES_IN_FLIGHT: &str = "1000,1500,2000,2500,3000,4000";
/// Streams in the stalled-upstream run, and their batches.
const STALL_STREAMS: usize = 1_000;
const STALL_BATCH_ENTRIES: usize = 10;
const STALL_IN_FLIGHT: usize = 16;
/// How often the gateway's RSS is read in the stall run.
const STALL_SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Rounds of the paired runs: the target scenarios again, baseline and
/// gateway taking turns.
const PAIRED_ROUNDS: u32 = 3;
/// Turns each path takes in the half-load run (after one warm-up turn each).
const HALF_LOAD_ROUNDS: u32 = 5;
/// Fixed-rate runs: requests outstanding at most before new ones are skipped.
const MAX_OUTSTANDING_AT_RATE: usize = 10_000;
/// How often the emulator's recorded calls are taken and cleared, so that a
/// long run does not keep every event in memory.
const UPSTREAM_TAKE_EVERY: Duration = Duration::from_secs(1);
/// Bound on waiting for a run's workers after its window (they stop at the
/// window's end; this only guards against a bug).
const JOIN_GRACE: Duration = Duration::from_secs(30);

/// The noisy-neighbour run's emulated EventBridge quota: calls per second
/// and burst, for that run only...
const NOISY_QUOTA_CALLS_PER_SECOND: f64 = 150.0;
const NOISY_QUOTA_BURST: u32 = 300;
/// ...the gateway's pace, the quota itself (the quota's burst covers what
/// the two clocks disagree by), with a small burst...
const NOISY_GATEWAY_CALLS_PER_SECOND: f64 = NOISY_QUOTA_CALLS_PER_SECOND;
const NOISY_GATEWAY_BURST: u32 = 5;
/// ...the flooding tenant: unary requests of 20 entries (one call each)
/// kept in flight, far more than a second of the pace...
const FLOOD_TENANT: &str = "flood";
const FLOOD_SOURCE: &str = "aws.partner/example.com/bench/flood";
const FLOOD_IN_FLIGHT: usize = 256;
const FLOOD_ENTRIES: usize = 20;
/// ...for this long before the measured window, so that the pace is full
/// and calls wait for their turn (256 calls queue at once at 150/s)...
const FLOOD_RAMP: Duration = Duration::from_secs(1);
/// ...and the quiet tenant, one 1-entry request this often.
const QUIET_TENANT: &str = "quiet";
const QUIET_SOURCE: &str = "aws.partner/example.com/bench/quiet";
const QUIET_EVERY: Duration = Duration::from_millis(50);
/// Quiet requests sent before the alone phase and not counted: the first
/// ones open the gateway's connection to the emulator.
const QUIET_WARMUP_REQUESTS: usize = 10;
/// A quiet request not answered within this counts as failed.
const QUIET_ANSWER_BOUND: Duration = Duration::from_secs(10);
/// Each noisy phase with --quick, and at least, otherwise.
const NOISY_QUICK_PHASE: Duration = Duration::from_secs(2);

/// The cluster run: this many gateway replicas share one emulated quota
/// through a Redis of the bench's own...
const CLUSTER_REPLICAS: usize = 3;
/// ...of this many calls/s and burst, for that run only (each replica is
/// paced at the same rate, with a small burst)...
const CLUSTER_QUOTA_CALLS_PER_SECOND: f64 = 150.0;
const CLUSTER_QUOTA_BURST: u32 = 20;
const CLUSTER_GATEWAY_BURST: u32 = 5;
/// ...with this many 1-entry unary requests in flight through each, enough
/// for full calls (a replica's share is 50 calls/s of 20 entries)...
const CLUSTER_IN_FLIGHT_PER_REPLICA: usize = 150;
/// ...for a warm-up and then the measured window (the noisy phase, at
/// least this)...
const CLUSTER_WARMUP: Duration = Duration::from_secs(1);
const CLUSTER_MIN_PHASE: Duration = Duration::from_secs(3);
/// ...once per `cluster.lease_calls`: one round trip per call, and the
/// default of 4 (what the lease saves in Redis round trips and CPU).
const CLUSTER_LEASES: [u32; 2] = [1, 4];
/// The replicas' counter of Redis round trips (every op and outcome).
const REDIS_CALLS_METRIC: &str = "partner_events_cluster_redis_calls_total";

/// `partner-events-gateway bench`: gateway vs direct SDK, loopback only.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds measured per run (after a warm-up of a fifth of that, at
    /// most 1 s); each phase of the noisy-neighbour run too (at least 2 s).
    #[arg(long, default_value_t = 5)]
    pub duration_secs: u64,
    /// 1 s per run, a 3 s stall run and 2 s noisy-neighbour phases.
    #[arg(long)]
    pub quick: bool,
    /// Where the JSON report is written.
    #[arg(long, default_value = "bench.json")]
    pub out: PathBuf,
    /// Concurrent callers in the unary scenarios (gateway and baseline).
    #[arg(long, default_value_t = DEFAULT_UNARY_CALLERS)]
    pub unary_callers: usize,
    /// Batches each gateway stream keeps unanswered at most (a baseline
    /// caller has one call in flight).
    #[arg(long, default_value_t = DEFAULT_STREAM_IN_FLIGHT)]
    pub stream_in_flight: usize,
    /// Entries all streams of a run keep unanswered at most (each stream
    /// at least one batch): a comma-separated list; each stream scenario's
    /// gateway runs once per level.
    #[arg(long, default_value = DEFAULT_STREAM_ENTRIES_IN_FLIGHT, value_delimiter = ',')]
    pub stream_entries_in_flight: Vec<usize>,
    /// The emulator's latency per call in the latency runs, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,
    /// Uniform jitter added to that latency, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_jitter_ms: u64,
    /// Seconds of the stalled-upstream memory run (default 10, 3 with
    /// --quick); 0 skips it.
    #[arg(long)]
    pub stall_secs: Option<u64>,
    /// Only scenarios whose name contains this (`unary-20`, `stream-1 `,
    /// `x1000`, `stall`, `noisy`, `cluster`, `durable`, `idempotency`,
    /// `floor`, `quota`); the half-load run follows `unary-20`.
    #[arg(long)]
    pub only: Option<String>,
    /// The gateway executable to run as the child (`serve`); default this one.
    #[arg(long)]
    pub gateway_bin: Option<PathBuf>,
    /// The fixed-rate runs' share of the measured maximum: 0.5 is the
    /// target's half load; lower or higher shows how the added latency
    /// follows how busy the machine is (targets are judged at 0.5 only).
    #[arg(long, default_value_t = 0.5)]
    pub load_fraction: f64,
    /// The gateway's `upstream.linger_ms` in the throughput runs (default:
    /// the gateway's default), to see what coalescing costs in latency.
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// Entries queued before the durable run's restart (default 1000000,
    /// 2000 with --quick).
    #[arg(long)]
    pub durable_fill: Option<u64>,
    /// Seconds the durable run's gRPC fill may take (default 240, 20 with
    /// --quick); when it queues fewer entries than --durable-fill, the
    /// library fills another queue with that many directly, and that
    /// restart is measured too.
    #[arg(long)]
    pub durable_fill_secs: Option<u64>,
    /// Keyed entries the idempotency run's memory run sends (default
    /// 200000, 20000 with --quick), after as many unkeyed ones.
    #[arg(long)]
    pub idempotency_keys: Option<u64>,
}

/// What a scenario sends.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Unary calls of `entries` entries from `callers` callers.
    Unary { entries: usize, callers: usize },
    /// `streams` streams of batches of `entries` entries.
    Streams { entries: usize, streams: usize },
}

impl Shape {
    fn name(self) -> String {
        match self {
            Self::Unary { entries, callers } => format!("unary-{entries} x{callers}"),
            Self::Streams { entries, streams } => format!("stream-{entries} x{streams}"),
        }
    }

    fn entries(self) -> usize {
        match self {
            Self::Unary { entries, .. } | Self::Streams { entries, .. } => entries,
        }
    }

    fn concurrency(self) -> usize {
        match self {
            Self::Unary { callers, .. } => callers,
            Self::Streams { streams, .. } => streams,
        }
    }
}

/// The checked arguments.
struct Plan {
    duration: Duration,
    warmup: Duration,
    stall: Duration,
    /// Each phase of the noisy-neighbour run.
    noisy_phase: Duration,
    unary_callers: usize,
    stream_in_flight: usize,
    stream_entries_in_flight: Vec<usize>,
    latency_ms: u64,
    latency_jitter_ms: u64,
    only: Option<String>,
    gateway_bin: PathBuf,
    out: PathBuf,
    linger_ms: Option<u64>,
    load_fraction: f64,
    quick: bool,
    /// The durable run's restart: entries queued, and the gRPC fill's bound.
    durable_fill: u64,
    durable_fill_within: Duration,
    /// The idempotency run's memory run: keyed entries sent.
    idempotency_keys: u64,
}

impl Plan {
    fn new(args: BenchArgs) -> Result<Self, String> {
        let duration = if args.quick {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(args.duration_secs.clamp(1, 600))
        };
        let stall = Duration::from_secs(
            args.stall_secs
                .unwrap_or(if args.quick { 3 } else { 10 })
                .min(600),
        );
        if args.unary_callers == 0 || args.unary_callers > 10_000 {
            return Err("--unary-callers must be 1 to 10000".into());
        }
        if args.stream_in_flight == 0 || args.stream_in_flight > 1_000 {
            return Err("--stream-in-flight must be 1 to 1000".into());
        }
        if args.stream_entries_in_flight.is_empty()
            || args
                .stream_entries_in_flight
                .iter()
                .any(|&n| n == 0 || n > 10_000_000)
        {
            return Err("--stream-entries-in-flight: each level must be 1 to 10000000".into());
        }
        let durable_fill = args.durable_fill.unwrap_or(if args.quick {
            durable::QUICK_FILL_ENTRIES
        } else {
            durable::DEFAULT_FILL_ENTRIES
        });
        if !(1..=10_000_000).contains(&durable_fill) {
            return Err("--durable-fill must be 1 to 10000000".into());
        }
        let durable_fill_within = Duration::from_secs(
            args.durable_fill_secs
                .unwrap_or(if args.quick {
                    durable::QUICK_FILL_SECS
                } else {
                    durable::DEFAULT_FILL_SECS
                })
                .clamp(1, 3_600),
        );
        let idempotency_keys = args.idempotency_keys.unwrap_or(if args.quick {
            idempotency::QUICK_MEMORY_KEYS
        } else {
            idempotency::MEMORY_KEYS
        });
        if !(1..=10_000_000).contains(&idempotency_keys) {
            return Err("--idempotency-keys must be 1 to 10000000".into());
        }
        if !(args.load_fraction > 0.0 && args.load_fraction <= 1.0) {
            return Err("--load-fraction must be above 0 and at most 1".into());
        }
        let gateway_bin = match args.gateway_bin {
            Some(p) => p,
            None => {
                std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?
            }
        };
        Ok(Self {
            duration,
            warmup: (duration / 5).clamp(Duration::from_millis(500), Duration::from_secs(1)),
            stall,
            noisy_phase: if args.quick {
                NOISY_QUICK_PHASE
            } else {
                duration.max(NOISY_QUICK_PHASE)
            },
            unary_callers: args.unary_callers,
            stream_in_flight: args.stream_in_flight,
            stream_entries_in_flight: args.stream_entries_in_flight,
            latency_ms: args.latency_ms,
            latency_jitter_ms: args.latency_jitter_ms,
            load_fraction: args.load_fraction,
            only: args.only,
            gateway_bin,
            out: args.out,
            linger_ms: args.linger_ms,
            quick: args.quick,
            durable_fill,
            durable_fill_within,
            idempotency_keys,
        })
    }

    /// The batches each stream keeps unanswered in a stream scenario's
    /// gateway runs, one per distinct level.
    fn stream_levels(&self, streams: usize, entries: usize) -> Vec<usize> {
        let mut levels: Vec<usize> = self
            .stream_entries_in_flight
            .iter()
            .map(|total| {
                (total / (streams * entries).max(1))
                    .min(self.stream_in_flight)
                    .max(1)
            })
            .collect();
        levels.sort_unstable();
        levels.dedup();
        levels
    }

    fn wants(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|o| name.contains(o))
    }

    fn shapes(&self) -> Vec<Shape> {
        let callers = self.unary_callers;
        let mut shapes: Vec<Shape> = [1, 20, 500]
            .into_iter()
            .map(|entries| Shape::Unary { entries, callers })
            .collect();
        for streams in [100, 1_000] {
            for entries in [1, 10] {
                shapes.push(Shape::Streams { entries, streams });
            }
        }
        shapes
            .into_iter()
            .filter(|s| self.wants(&s.name()))
            .collect()
    }
}

/// A gateway child's config: listening on any free port, no reload, metrics
/// off, the harness emulator as its upstream; `server`, `upstream` and
/// `quotas` add lines to those sections, and `tenants` is the tenant
/// directory (and any section after it).
fn child_toml(
    title: &str,
    endpoint_url: &str,
    server: &str,
    upstream: &str,
    quotas: &str,
    tenants: &str,
) -> String {
    child_toml_with_metrics(title, endpoint_url, server, upstream, quotas, tenants, "")
}

/// [`child_toml`] with metrics served at `metrics_listen` (empty: off).
fn child_toml_with_metrics(
    title: &str,
    endpoint_url: &str,
    server: &str,
    upstream: &str,
    quotas: &str,
    tenants: &str,
    metrics_listen: &str,
) -> String {
    child_toml_at(
        "127.0.0.1:0",
        title,
        endpoint_url,
        server,
        upstream,
        quotas,
        tenants,
        metrics_listen,
    )
}

/// [`child_toml_with_metrics`] listening on `listen` (a gateway restarted
/// on the same port, as its clients would find it again).
#[allow(clippy::too_many_arguments)]
fn child_toml_at(
    listen: &str,
    title: &str,
    endpoint_url: &str,
    server: &str,
    upstream: &str,
    quotas: &str,
    tenants: &str,
    metrics_listen: &str,
) -> String {
    format!(
        r#"# partner-events-gateway bench: {title}
[server]
listen = "{listen}"
reload_poll_ms = 0
shutdown_grace_ms = 1000
{server}
[upstream]
kind = "emulator"
endpoint_url = "{endpoint_url}"
{upstream}
[metrics]
listen = "{metrics_listen}"

[quotas]
{quotas}
{tenants}"#
    )
}

/// The gateway's config for the throughput runs: defaults, but metrics off,
/// upstream calls unpaced, and in-flight bounds out of the way so that the
/// gateway's own work is what limits.
fn gateway_toml(endpoint_url: &str, linger_ms: Option<u64>) -> String {
    let mut upstream = "max_concurrent_calls = 512\n".to_string();
    if let Some(l) = linger_ms {
        upstream.push_str(&format!("linger_ms = {l}\n"));
    }
    child_toml(
        "throughput runs",
        endpoint_url,
        "max_in_flight_entries = 1000000\n",
        &upstream,
        "upstream_calls_per_second = 0",
        &tenant_toml(load::TENANT, load::SOURCE, None),
    )
}

/// The config of the stall run: the default bounds (in flight, per stream,
/// calls per region), which are what keep memory flat.
fn stall_gateway_toml(endpoint_url: &str) -> String {
    child_toml(
        "stalled upstream, default bounds",
        endpoint_url,
        "",
        "",
        "upstream_calls_per_second = 0",
        &tenant_toml(load::TENANT, load::SOURCE, None),
    )
}

/// The config of the noisy-neighbour run: defaults (linger too), paced at
/// the emulated quota, two tenants of weight 1 with a source each.
fn noisy_gateway_toml(endpoint_url: &str) -> String {
    child_toml(
        "noisy neighbour, paced at the emulated quota",
        endpoint_url,
        "",
        "",
        &paced_quotas(NOISY_GATEWAY_CALLS_PER_SECOND, NOISY_GATEWAY_BURST),
        &[(FLOOD_TENANT, FLOOD_SOURCE), (QUIET_TENANT, QUIET_SOURCE)]
            .iter()
            .map(|(tenant, source)| tenant_toml(tenant, source, Some(1)))
            .collect::<String>(),
    )
}

/// A replica's config in the cluster run: paced at the emulated quota with a
/// small burst, sharing it through the Redis at `redis_url` under
/// `key_prefix`, taking at most `lease_calls` call tokens per round trip;
/// metrics at `metrics_listen` (for its Redis round trips).
fn cluster_gateway_toml(
    endpoint_url: &str,
    redis_url: &str,
    key_prefix: &str,
    lease_calls: u32,
    metrics_listen: &str,
) -> String {
    let tenants = tenant_toml(load::TENANT, load::SOURCE, None);
    child_toml_with_metrics(
        &format!("cluster replica, lease_calls = {lease_calls}"),
        endpoint_url,
        "",
        "",
        &paced_quotas(CLUSTER_QUOTA_CALLS_PER_SECOND, CLUSTER_GATEWAY_BURST),
        &format!(
            "{tenants}\n[cluster]\nurl = \"{redis_url}\"\nkey_prefix = \"{key_prefix}\"\nlease_calls = {lease_calls}\n"
        ),
        metrics_listen,
    )
}

/// The `[quotas]` lines of a gateway paced at `calls_per_second` with
/// `burst` (the runs under an emulated quota).
fn paced_quotas(calls_per_second: f64, burst: u32) -> String {
    format!("upstream_calls_per_second = {calls_per_second}\nupstream_burst = {burst}")
}

/// One tenant with one source, `events`, in the bench's region.
fn tenant_toml(tenant: &str, source: &str, weight: Option<u32>) -> String {
    let weight = weight
        .map(|w| format!("weight = {w}\n"))
        .unwrap_or_default();
    format!(
        r#"
[tenants.{tenant}]
default_source = "events"
{weight}
[tenants.{tenant}.sources.events]
name = "{source}"
region = "{}"
"#,
        load::REGION
    )
}

/// Runs the bench: prints the table and writes the JSON report.
pub async fn run(args: BenchArgs) -> Result<(), String> {
    let plan = Plan::new(args)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A runtime of its own, whose threads log nothing: the in-process
    // emulator logs every accepted event at info, which at these rates
    // would cost more than the emulator itself (the gateway child logs at
    // warn through RUST_LOG).
    std::thread::Builder::new()
        .name("bench".into())
        .spawn(move || {
            let none = tracing::Dispatch::none();
            let result = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .on_thread_start(|| {
                    // Kept for the thread's life, on threads only this runtime uses.
                    std::mem::forget(tracing::dispatcher::set_default(&tracing::Dispatch::none()));
                })
                .build()
                .map_err(|e| format!("cannot build the bench runtime: {e}"))
                .and_then(|rt| {
                    tracing::dispatcher::with_default(&none, || rt.block_on(bench(plan)))
                });
            let _ = tx.send(result);
        })
        .map_err(|e| format!("cannot start the bench thread: {e}"))?;
    rx.await
        .map_err(|_| "the bench thread panicked".to_string())?
}

/// The in-process emulator's config: the bench sources exist and are
/// ACTIVE (the gateway refuses entries for a source EventBridge does not
/// know or would not deliver to), and no quota.
fn emulator_config() -> EmulatorConfig {
    EmulatorConfig {
        sources: [load::SOURCE, FLOOD_SOURCE, QUIET_SOURCE]
            .into_iter()
            .map(|name| SeedSource::new(name, BENCH_ACCOUNT, SourceState::Active))
            .collect(),
        quota: BENCH_QUOTA,
        ..EmulatorConfig::default()
    }
}

/// What every run uses.
struct Harness {
    plan: Plan,
    emulator: EmulatorHandle,
    sdk: aws_sdk_eventbridge::Client,
    gateway_toml: String,
}

async fn bench(plan: Plan) -> Result<(), String> {
    // As `server::start` does: both rustls providers are compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emulator = Emulator::spawn(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        emulator_config(),
    )
    .await
    .map_err(|e| format!("cannot start the emulator: {e}"))?;
    let url = emulator.endpoint_url();
    let sdk = sdk_client(&url).await;
    let h = Harness {
        gateway_toml: gateway_toml(&url, plan.linger_ms),
        plan,
        emulator,
        sdk,
    };
    let result = bench_with(&h, &url).await;
    h.emulator.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(5), h.emulator.stopped()).await;
    result
}

/// The 1-minute load average: other work on the machine skews every figure.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

async fn bench_with(h: &Harness, url: &str) -> Result<(), String> {
    let plan = &h.plan;
    let load_before = load_average();
    let shapes = plan.shapes();
    // Each scenario at each latency: the baseline, then the gateway once
    // per load level (one level for unary: a caller has one call in flight).
    let levels = |shape: Shape| match shape {
        Shape::Streams { streams, entries } => plan.stream_levels(streams, entries),
        Shape::Unary { .. } => vec![1],
    };
    let runs: usize = shapes.iter().map(|s| 2 * (1 + levels(*s).len())).sum();
    eprintln!(
        "bench: {runs} runs of {:?} (+{:?} warm-up), gateway {}, emulator {url}, emulator quota {} (but {} calls/s, burst {NOISY_QUOTA_BURST} in the noisy-neighbour run, {CLUSTER_QUOTA_CALLS_PER_SECOND} calls/s, burst {CLUSTER_QUOTA_BURST} in the cluster and quota runs)",
        plan.duration,
        plan.warmup,
        plan.gateway_bin.display(),
        h.emulator.quota(),
        NOISY_QUOTA_CALLS_PER_SECOND
    );
    let mut measurements = Vec::new();
    let mut n = 0;
    for shape in &shapes {
        for latency in [0, plan.latency_ms] {
            let gateway_runs = levels(*shape).into_iter().map(|l| (Path::Gateway, l));
            for (path, in_flight) in std::iter::once((Path::Baseline, 1)).chain(gateway_runs) {
                n += 1;
                let m = measure(h, *shape, latency, path, in_flight).await?;
                eprintln!(
                    "[{n}/{runs}] {} {latency}ms {:?} (in flight {in_flight}): {} entries/s, p99 {:.2} ms, {:.2} entries/call{}",
                    m.scenario,
                    m.path,
                    report::thousands(m.entries_per_sec),
                    m.latency_ms.p99,
                    m.entries_per_call,
                    if m.errors + m.entries_failed > 0 {
                        format!(
                            ", {} errors, {} failed entries (first: {})",
                            m.errors,
                            m.entries_failed,
                            m.first_failure.as_deref().unwrap_or("?")
                        )
                    } else {
                        String::new()
                    }
                );
                measurements.push(m);
            }
        }
    }
    let paired = paired_runs(h, &measurements).await?;
    // Half the gateway's maximum, at each upstream latency. With latency,
    // the closed loop's callers bound the rate, not the machine: the
    // maximum there is measured with enough callers to keep the machine
    // busy (those the no-latency maximum would keep in flight, and half
    // again).
    let mut half_loads = Vec::new();
    if let Some(max) = measurements.iter().find(|m| {
        m.path == Path::Gateway && m.scenario.starts_with("unary-20 ") && m.emulator_latency_ms == 0
    }) {
        let (max_rate, callers) = (max.batches_per_sec, max.concurrency);
        half_loads.push(half_load(h, max_rate, callers, 0).await?);
        if plan.latency_ms > 0 {
            let callers = saturating_callers(max_rate, plan.latency_ms).max(callers);
            let shape = Shape::Unary {
                entries: 20,
                callers,
            };
            let m = measure(h, shape, plan.latency_ms, Path::Gateway, 1).await?;
            eprintln!(
                "half load: the gateway's maximum with {} ms upstream and {callers} callers: {} requests/s",
                plan.latency_ms,
                report::thousands(m.batches_per_sec)
            );
            half_loads.push(half_load(h, m.batches_per_sec, callers, plan.latency_ms).await?);
        }
    }
    let stall = if !plan.stall.is_zero() && plan.wants("stall") {
        Some(stall(h).await?)
    } else {
        None
    };
    let noisy = if plan.wants("noisy") {
        Some(noisy(h).await?)
    } else {
        None
    };
    let cluster = if plan.wants("cluster") {
        Some(cluster(h).await?)
    } else {
        None
    };
    let durable = if plan.wants("durable") {
        Some(durable::durable(h).await?)
    } else {
        None
    };
    let idempotency = if plan.wants("idempotency") {
        Some(idempotency::idempotency(h).await?)
    } else {
        None
    };
    let quota = if plan.wants("quota") {
        Some(quota::at_quota(h).await?)
    } else {
        None
    };
    let floor = if plan.wants("floor") {
        Some(floor::floor(h).await?)
    } else {
        None
    };
    let mut notes = notes(plan);
    notes.push(format!(
        "1-minute load average before the run {load_before:.2}, after {:.2} (the run's own load included): anything else running on this machine competes for the same cores.",
        load_average()
    ));
    let mut report = Report {
        notes,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        duration_secs: plan.duration.as_secs_f64(),
        warmup_secs: plan.warmup.as_secs_f64(),
        unary_callers: plan.unary_callers,
        stream_batches_in_flight: plan.stream_in_flight,
        stream_entries_in_flight: plan.stream_entries_in_flight.clone(),
        gateway_config: h.gateway_toml.clone(),
        stall_gateway_config: stall_gateway_toml(url),
        measurements,
        paired,
        half_load: half_loads,
        stall,
        noisy,
        cluster,
        durable,
        idempotency,
        floor,
        quota,
        targets: Vec::new(),
    };
    report.judge(plan.latency_ms);
    println!("{}", report.render());
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&plan.out, json)
        .map_err(|e| format!("cannot write {}: {e}", plan.out.display()))?;
    eprintln!("bench: report written to {}", plan.out.display());
    let picture = plan.out.with_extension("svg");
    match svg::render(&report) {
        Some(svg) => {
            std::fs::write(&picture, svg)
                .map_err(|e| format!("cannot write {}: {e}", picture.display()))?;
            eprintln!("bench: picture written to {}", picture.display());
        }
        None => eprintln!(
            "bench: no picture: no throughput runs in this report ({} left as it was)",
            picture.display()
        ),
    }
    Ok(())
}

fn notes(plan: &Plan) -> Vec<String> {
    let mut notes = vec![
        "Gateway: a fresh child process per run (`serve --config`, RUST_LOG=warn); its CPU is utime+stime from /proc/<pid>/stat over the measured window, its memory VmHWM (peak RSS over the process's life).".into(),
        "The emulator and the load generator share the harness process: `all cpu/100k` is gateway + harness CPU per 100k accepted entries. Gateway, emulator and load compete for the same cores, so the figures describe this machine as a whole.".into(),
        format!(
            "Baseline: aws-sdk-eventbridge straight to the same emulator, one PutPartnerEvents call per caller batch (batches over 20 cut into calls of 20, sent at once), as many callers as the gateway run has callers or streams, each with one batch in flight. A stream scenario's gateway runs once per load level: all streams together keep at most {} entries unanswered (each stream at least one batch and at most {}; `infl` is the batches per stream); the stream targets take the best run with p99 under 50 ms. A unary caller has one request in flight.",
            plan.stream_entries_in_flight
                .iter()
                .map(|n| report::thousands(*n as f64))
                .collect::<Vec<_>>()
                .join(" or "),
            plan.stream_in_flight
        ),
        "Latency: per request (unary) or per batch (stream), from send to its answer; in fixed-rate runs from when the request was due.".into(),
        quota_note(),
        "Upstream calls and entries per call: the emulator's recorded calls, taken and cleared every second (a call recorded between the two steps is missed: a handful at most).".into(),
        "Gateway config: defaults but metrics off, upstream calls unpaced, max_in_flight_entries 1,000,000, upstream.max_concurrent_calls 512 (the stall run keeps the default bounds: 20,000 entries in flight, 2,000 per stream, 64 calls per region).".into(),
        format!(
            "Emulator latency in the latency runs: {} ms{} per call (a Delay fault on every call).",
            plan.latency_ms,
            if plan.latency_jitter_ms > 0 {
                format!(" + 0..={} ms", plan.latency_jitter_ms)
            } else {
                String::new()
            }
        ),
    ];
    if plan.wants("noisy") {
        notes.push(noisy_note(plan));
    }
    if plan.wants("cluster") {
        notes.push(cluster_note(plan));
    }
    if plan.wants("durable") {
        notes.push(durable_note(plan));
    }
    if plan.wants("idempotency") {
        notes.push(idempotency::note(plan));
    }
    if plan.wants("quota") {
        notes.push(quota::note(plan));
    }
    if plan.wants("floor") {
        notes.push(floor::note(plan));
    }
    notes
}

/// The note on how the durable run is made and measured.
fn durable_note(plan: &Plan) -> String {
    format!(
        "Durable: unary batches of 1 and 20 entries from {} callers (closed loop), the emulator at {} ms per call, SYNC and DURABLE taking turns (which goes first alternating), each run a fresh gateway child with a durable directory of its own (PEG_STATE_DIR) and the same config (the throughput runs', metrics on, default_delivery sync): only each request's `delivery` differs. acks/s: entries answered with a receipt (DURABLE: on disk, fsync'd) or an event id (SYNC) per second. Commits from the child's metrics over the window: partner_events_durable_commits_total (one fsync each; delivery rounds commit too), _commit_changes (batches and outcomes per commit), _enqueued_total, _commit_seconds; acks/commit = enqueued / commits; writer busy = commit seconds / the window (one thread commits: near 100%, acknowledgements queue behind it). Upstream entries/s in a DURABLE run is the background delivery. Half load: DURABLE unary 20 at a fixed rate of {:.0}% of the median requests/s of the DURABLE unary-20 rounds above (the half-load runs' thread-paced generator), a fresh gateway, latency from when each request was due to its acknowledgement. Restart: a gateway (same config, a fixed port) queues {} entries through the API as DURABLE batches of 500 from 8 callers (at most {:.0} s) while the emulator hangs every call (EventBridge out of reach), is stopped with SIGTERM, and a new one starts on the same directory: `open_ms` is its own log figure; `serving` is from the process's start until grpc.health.v1 answers SERVING on its port. When the API fill falls short, the library (Durable::open + enqueue, the same entries) fills another queue with the full count. Bytes per entry: queue.redb's size / entries queued, detail {} bytes. The queue files are on this machine's disk ({}).",
        plan.unary_callers,
        plan.latency_ms,
        plan.load_fraction * 100.0,
        report::thousands(plan.durable_fill as f64),
        plan.durable_fill_within.as_secs_f64(),
        load::detail().len(),
        std::env::temp_dir().display()
    )
}

/// The note on the emulator's quota, printed with the report.
fn quota_note() -> String {
    format!(
        "Emulator quota: {BENCH_QUOTA} in every run but the noisy neighbour, cluster and quota runs (EventBridge's default is {} calls/s, burst {} per account and region): these runs measure the gateway's own cost, not EventBridge's quota. One account and region can take at most {} calls/s x 20 entries = {} entries/s. The noisy neighbour runs under {} calls/s, burst {NOISY_QUOTA_BURST}; the cluster and quota runs under {} calls/s, burst {CLUSTER_QUOTA_BURST} (EventBridge's quota scaled down to what this machine can drive); the quota is {BENCH_QUOTA} again after each.",
        report::thousands(Quota::EVENTBRIDGE_DEFAULT.calls_per_second),
        report::thousands(f64::from(Quota::EVENTBRIDGE_DEFAULT.burst)),
        report::thousands(Quota::EVENTBRIDGE_DEFAULT.calls_per_second),
        report::thousands(Quota::EVENTBRIDGE_DEFAULT.calls_per_second * 20.0),
        report::thousands(NOISY_QUOTA_CALLS_PER_SECOND),
        report::thousands(CLUSTER_QUOTA_CALLS_PER_SECOND),
    )
}

/// The note on how the noisy-neighbour run is made and measured.
fn noisy_note(plan: &Plan) -> String {
    format!(
        "Noisy neighbour: a gateway paced at {} calls/s (burst {NOISY_GATEWAY_BURST}, default linger, default bounds) in front of the emulator enforcing {} calls/s (burst {NOISY_QUOTA_BURST}); tenants `{FLOOD_TENANT}` and `{QUIET_TENANT}`, weight 1 each, a source each. `{QUIET_TENANT}` sends one 1-entry unary request every {} ms for {:.0} s alone (after {QUIET_WARMUP_REQUESTS} not counted), then `{FLOOD_TENANT}` keeps {FLOOD_IN_FLIGHT} unary requests of {FLOOD_ENTRIES} entries in flight (closed loop, several connections) and, {:.1} s later, `{QUIET_TENANT}` sends again for {:.0} s, the measured window. Latency from each request's send to its answer, every answer counted. Quota used: accepted calls in the window / (seconds x {}). Calls and entries by tenant from the emulator's counts per source; its calls are not counted per source, so the quiet tenant's calls are its accepted entries (1-entry requests {} ms apart, beyond the linger: a call each) and the flood's the rest.",
        report::thousands(NOISY_GATEWAY_CALLS_PER_SECOND),
        report::thousands(NOISY_QUOTA_CALLS_PER_SECOND),
        QUIET_EVERY.as_millis(),
        plan.noisy_phase.as_secs_f64(),
        FLOOD_RAMP.as_secs_f64(),
        plan.noisy_phase.as_secs_f64(),
        report::thousands(NOISY_QUOTA_CALLS_PER_SECOND),
        QUIET_EVERY.as_millis(),
    )
}

/// The note on how the cluster run is made and measured.
fn cluster_note(plan: &Plan) -> String {
    format!(
        "Cluster: {CLUSTER_REPLICAS} gateway children, each paced at {} calls/s (burst {CLUSTER_GATEWAY_BURST}) and sharing that quota through one redis-server (loopback, no persistence, started for this run; `[cluster]` with one key_prefix per lease size), in front of the emulator enforcing {} calls/s (burst {CLUSTER_QUOTA_BURST}) for this run only. {CLUSTER_IN_FLIGHT_PER_REPLICA} 1-entry unary requests in flight through each replica (closed loop), {:.0} s warm-up then {:.0} s measured, once per lease_calls in {CLUSTER_LEASES:?}. Quota used: delivered entries/s / ({} x 20). Throttled: calls the emulator's quota refused / calls. CPU per call: the replicas' utime+stime together, and redis-server's, over the window / the emulator's calls. Redis round trips: the replicas' {REDIS_CALLS_METRIC} over the window.",
        report::thousands(CLUSTER_QUOTA_CALLS_PER_SECOND),
        report::thousands(CLUSTER_QUOTA_CALLS_PER_SECOND),
        CLUSTER_WARMUP.as_secs_f64(),
        cluster_phase(plan).as_secs_f64(),
        report::thousands(CLUSTER_QUOTA_CALLS_PER_SECOND),
    )
}

/// The cluster run's measured window: the noisy phase, at least
/// [`CLUSTER_MIN_PHASE`].
fn cluster_phase(plan: &Plan) -> Duration {
    plan.noisy_phase.max(CLUSTER_MIN_PHASE)
}

async fn sdk_client(url: &str) -> aws_sdk_eventbridge::Client {
    use aws_config::{BehaviorVersion, Region};
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new(load::REGION))
        .credentials_provider(aws_sdk_eventbridge::config::Credentials::new(
            "bench", "bench", None, None, "bench",
        ))
        .load()
        .await;
    aws_sdk_eventbridge::Client::new(&shared)
}

fn latency_rules(plan: &Plan, latency_ms: u64) -> Vec<FaultRule> {
    if latency_ms == 0 {
        return Vec::new();
    }
    vec![FaultRule::everywhere(Fault::Delay {
        ms: latency_ms,
        jitter_ms: plan.latency_jitter_ms,
    })]
}

/// Starts a gateway child off the async threads (it waits for the child).
async fn start_gateway(h: &Harness, toml: &str) -> Result<GatewayChild, String> {
    let bin = h.plan.gateway_bin.clone();
    let toml = toml.to_string();
    tokio::task::spawn_blocking(move || GatewayChild::start(&bin, &toml))
        .await
        .map_err(|e| format!("gateway start task failed: {e}"))?
}

/// Takes the emulator's recorded calls into `t` and forgets them.
fn take_calls(emulator: &EmulatorHandle, t: &mut UpstreamTally) {
    let calls = emulator.calls();
    emulator.clear();
    for c in calls {
        t.calls += 1;
        t.entries += c.entries as u64;
        if !c.is_ok() {
            t.failed_calls += 1;
        }
    }
}

/// Counts upstream calls from now (the emulator is cleared) to `end`.
async fn count_upstream(emulator: EmulatorHandle, end: Instant) -> UpstreamTally {
    let mut t = UpstreamTally::default();
    emulator.clear();
    loop {
        let next = (Instant::now() + UPSTREAM_TAKE_EVERY).min(end);
        tokio::time::sleep_until(next).await;
        take_calls(&emulator, &mut t);
        if next >= end {
            return t;
        }
    }
}

/// One closed-loop run of `shape` on `path`, with `in_flight` batches per stream.
async fn measure(
    h: &Harness,
    shape: Shape,
    latency_ms: u64,
    path: Path,
    in_flight: usize,
) -> Result<Measurement, String> {
    let plan = &h.plan;
    h.emulator.set_faults(latency_rules(plan, latency_ms));
    let gateway = match path {
        Path::Gateway => Some(start_gateway(h, &h.gateway_toml).await?),
        Path::Baseline => None,
    };
    let clients = match &gateway {
        Some(g) => Some(GatewayClients::connect(g.addr(), shape.concurrency()).await?),
        None => None,
    };
    let start = Instant::now();
    let window = Window {
        start: start + plan.warmup,
        end: start + plan.warmup + plan.duration,
    };
    let entries = shape.entries();
    let load = match (clients, shape) {
        (Some(c), Shape::Unary { callers, .. }) => {
            tokio::spawn(load::gateway_unary(c, entries, callers, window))
        }
        (Some(c), Shape::Streams { streams, .. }) => tokio::spawn(load::gateway_streams(
            c, streams, entries, in_flight, window,
        )),
        (None, _) => tokio::spawn(load::sdk_batches(
            h.sdk.clone(),
            entries,
            shape.concurrency(),
            window,
        )),
    };
    tokio::time::sleep_until(window.start).await;
    let gw_before = gateway.as_ref().map(GatewayChild::stats).transpose()?;
    let me_before = proc_stats("self")?;
    let upstream = tokio::spawn(count_upstream(h.emulator.clone(), window.end));
    tokio::time::sleep_until(window.end).await;
    let gw_after = gateway.as_ref().map(GatewayChild::stats).transpose()?;
    let me_after = proc_stats("self")?;
    let upstream = upstream
        .await
        .map_err(|e| format!("upstream count failed: {e}"))?;
    let tally = join_load(load).await?;
    let gateway_figures = match (gw_before, gw_after) {
        (Some(b), Some(a)) => Some((
            a.cpu_secs - b.cpu_secs,
            a.hwm_kib.max(b.hwm_kib) as f64 / 1024.0,
        )),
        _ => None,
    };
    drop(gateway);
    Ok(Measurement::new(
        shape.name(),
        path,
        latency_ms,
        "closed loop".to_string(),
        entries,
        shape.concurrency(),
        plan.duration.as_secs_f64(),
        tally,
        upstream,
        gateway_figures,
        me_after.cpu_secs - me_before.cpu_secs,
    )
    .with_in_flight(in_flight))
}

async fn join_load(load: tokio::task::JoinHandle<Tally>) -> Result<Tally, String> {
    match tokio::time::timeout(JOIN_GRACE, load).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(format!("load task failed: {e}")),
        Err(_) => Err("load did not stop at the end of its window".into()),
    }
}

/// Unary 20 at half the gateway's closed-loop maximum. Baseline and gateway
/// take turns in [`HALF_LOAD_ROUNDS`] rounds (which goes first alternates),
/// against one gateway started once: other work on a shared machine comes
/// and goes in bursts, and taking turns puts both paths under the same
/// conditions, so that the difference is the gateway's.
async fn half_load(
    h: &Harness,
    max_requests_per_sec: f64,
    max_callers: usize,
    latency_ms: u64,
) -> Result<HalfLoad, String> {
    let plan = &h.plan;
    let rate = (max_requests_per_sec * plan.load_fraction).max(1.0);
    let callers = plan.unary_callers;
    let shape = Shape::Unary {
        entries: 20,
        callers,
    };
    let segment = (plan.duration / HALF_LOAD_ROUNDS).max(Duration::from_millis(500));
    eprintln!(
        "half load: unary 20 at {rate:.0} requests/s, emulator latency {latency_ms} ms, baseline and gateway taking turns, {HALF_LOAD_ROUNDS} rounds of {segment:?} each"
    );
    h.emulator.set_faults(latency_rules(plan, latency_ms));
    let gateway = start_gateway(h, &h.gateway_toml).await?;
    let clients = GatewayClients::connect(gateway.addr(), callers).await?;
    let mut turns = [Turns::default(), Turns::default()];
    for round in 0..=HALF_LOAD_ROUNDS {
        for path in turn_order(round) {
            let g = (path == Path::Gateway).then_some(&gateway);
            // Round 0 warms both paths up and is not counted.
            let length = if round == 0 { plan.warmup } else { segment };
            let turn = half_load_turn(h, g, &clients, rate, length).await?;
            if round > 0 {
                turns[usize::from(path == Path::Gateway)].add(turn);
            }
        }
    }
    let rounds: Vec<(f64, f64)> = turns[0]
        .p99s
        .iter()
        .zip(&turns[1].p99s)
        .map(|(b, g)| (*b, *g))
        .collect();
    let hwm = gateway.stats()?.hwm_kib as f64 / 1024.0;
    drop(gateway);
    let load = format!(
        "fixed rate {}/s, {HALF_LOAD_ROUNDS} turns of {segment:?}",
        report::thousands(rate)
    );
    let [mut b, mut g] = turns;
    let late_ms = (
        report::Percentiles::of(&mut b.tally.late_us),
        report::Percentiles::of(&mut g.tally.late_us),
    );
    let measurement = |path: Path, t: Turns, gateway: Option<(f64, f64)>| {
        Measurement::new(
            shape.name(),
            path,
            latency_ms,
            load.clone(),
            20,
            callers,
            t.secs,
            t.tally,
            t.upstream,
            gateway,
            t.harness_cpu,
        )
    };
    let gateway_cpu = g.gateway_cpu;
    let baseline = measurement(Path::Baseline, b, None);
    let gateway = measurement(Path::Gateway, g, Some((gateway_cpu, hwm)));
    h.emulator.set_faults(Vec::new());
    Ok(HalfLoad {
        max_requests_per_sec,
        max_callers,
        fraction: plan.load_fraction,
        emulator_latency_ms: latency_ms,
        rate,
        added_p99_ms: gateway.latency_ms.p99 - baseline.latency_ms.p99,
        rounds,
        late_ms,
        gateway,
        baseline,
    })
}

/// The throughput targets' scenarios run again, baseline and gateway taking
/// turns ([`PAIRED_ROUNDS`] rounds, which goes first alternating): unary 20
/// with no latency, and 1-entry batches on 100 streams with latency at the
/// load level the target picked. Run once each, the two paths met the
/// machine at different moments: the same build gave 0.62x to 0.94x.
async fn paired_runs(h: &Harness, measurements: &[Measurement]) -> Result<Vec<Paired>, String> {
    let plan = &h.plan;
    let mut wanted = Vec::new();
    let unary = Shape::Unary {
        entries: 20,
        callers: plan.unary_callers,
    };
    if measurements.iter().any(|m| {
        m.path == Path::Gateway && m.scenario == unary.name() && m.emulator_latency_ms == 0
    }) {
        wanted.push((unary, 0, 1));
    }
    let streams = Shape::Streams {
        entries: 1,
        streams: 100,
    };
    if plan.latency_ms > 0 {
        if let Some(g) = report::best_stream_run(measurements, &streams.name(), plan.latency_ms) {
            wanted.push((streams, plan.latency_ms, g.in_flight));
        }
    }
    let mut out = Vec::new();
    for (shape, latency, in_flight) in wanted {
        eprintln!(
            "paired: {} {latency} ms, {in_flight} in flight, {PAIRED_ROUNDS} rounds",
            shape.name()
        );
        let mut rounds = Vec::new();
        for round in 0..PAIRED_ROUNDS {
            let mut r = report::PairedRound {
                baseline_entries_per_sec: 0.0,
                gateway_entries_per_sec: 0.0,
                gateway_p99_ms: 0.0,
            };
            for path in turn_order(round) {
                let level = if path == Path::Gateway { in_flight } else { 1 };
                let m = measure(h, shape, latency, path, level).await?;
                if path == Path::Gateway {
                    r.gateway_entries_per_sec = m.entries_per_sec;
                    r.gateway_p99_ms = m.latency_ms.p99;
                } else {
                    r.baseline_entries_per_sec = m.entries_per_sec;
                }
            }
            eprintln!("paired: round {}: {:.2}x", round + 1, r.ratio());
            rounds.push(r);
        }
        out.push(Paired {
            scenario: shape.name(),
            emulator_latency_ms: latency,
            in_flight,
            rounds,
        });
    }
    Ok(out)
}

/// Which path goes first in a round of turns: alternating, so that neither
/// always meets the machine first.
fn turn_order(round: u32) -> [Path; 2] {
    turns(round, Path::Baseline, Path::Gateway)
}

/// The two kinds of a run taking turns, in round `round`'s order: `a`
/// first in even rounds, `b` first in odd ones.
fn turns<T>(round: u32, a: T, b: T) -> [T; 2] {
    if round.is_multiple_of(2) {
        [a, b]
    } else {
        [b, a]
    }
}

/// Closed-loop callers that keep a machine doing `max_rate` requests per
/// second busy when each call takes `latency_ms` more: by Little's law the
/// calls in flight at that rate (with 2 ms of the call's own), and half again.
fn saturating_callers(max_rate: f64, latency_ms: u64) -> usize {
    (max_rate * (latency_ms as f64 + 2.0) / 1000.0 * 1.5).ceil() as usize
}

/// One path's turns of the half-load run, added up.
#[derive(Default)]
struct Turns {
    tally: Tally,
    upstream: UpstreamTally,
    secs: f64,
    gateway_cpu: f64,
    harness_cpu: f64,
    /// Each turn's own p99, in milliseconds.
    p99s: Vec<f64>,
}

impl Turns {
    fn add(&mut self, mut t: Turns) {
        let mut latencies = t.tally.latencies_us.clone();
        self.p99s.push(report::Percentiles::of(&mut latencies).p99);
        self.tally.merge(std::mem::take(&mut t.tally));
        self.upstream.calls += t.upstream.calls;
        self.upstream.entries += t.upstream.entries;
        self.upstream.failed_calls += t.upstream.failed_calls;
        self.secs += t.secs;
        self.gateway_cpu += t.gateway_cpu;
        self.harness_cpu += t.harness_cpu;
    }
}

/// One turn at `rate`: through `gateway` when given, else straight to the
/// emulator with the SDK.
async fn half_load_turn(
    h: &Harness,
    gateway: Option<&GatewayChild>,
    clients: &GatewayClients,
    rate: f64,
    length: Duration,
) -> Result<Turns, String> {
    let start = Instant::now();
    let window = Window {
        start,
        end: start + length,
    };
    let gw_before = gateway.map(GatewayChild::stats).transpose()?;
    let me_before = proc_stats("self")?;
    let upstream = tokio::spawn(count_upstream(h.emulator.clone(), window.end));
    let load = match gateway {
        Some(_) => tokio::spawn(load::gateway_unary_at_rate(
            clients.clone(),
            20,
            rate,
            MAX_OUTSTANDING_AT_RATE,
            window,
        )),
        None => tokio::spawn(load::sdk_batches_at_rate(
            h.sdk.clone(),
            20,
            rate,
            MAX_OUTSTANDING_AT_RATE,
            window,
        )),
    };
    let tally = join_load(load).await?;
    let upstream = upstream
        .await
        .map_err(|e| format!("upstream count failed: {e}"))?;
    let gw_after = gateway.map(GatewayChild::stats).transpose()?;
    let me_after = proc_stats("self")?;
    Ok(Turns {
        tally,
        upstream,
        secs: length.as_secs_f64(),
        gateway_cpu: match (gw_before, gw_after) {
            (Some(b), Some(a)) => a.cpu_secs - b.cpu_secs,
            _ => 0.0,
        },
        harness_cpu: me_after.cpu_secs - me_before.cpu_secs,
        p99s: Vec::new(),
    })
}

/// Puts the bench's quota (none) back in the emulator when dropped, however
/// the run that set another one ends.
struct QuotaRestore<'a>(&'a EmulatorHandle);

/// Has the emulator enforce `calls_per_second` (with `burst`) until the
/// guard is dropped: for the run that holds it only.
fn emulator_quota(
    emulator: &EmulatorHandle,
    calls_per_second: f64,
    burst: u32,
) -> Result<QuotaRestore<'_>, String> {
    emulator
        .set_quota(calls_per_second, burst)
        .map_err(|e| format!("cannot set the emulator's quota: {e}"))?;
    Ok(QuotaRestore(emulator))
}

impl Drop for QuotaRestore<'_> {
    fn drop(&mut self) {
        // Cannot fail: BENCH_QUOTA is a valid quota (a test checks it).
        let _ = self
            .0
            .set_quota(BENCH_QUOTA.calls_per_second, BENCH_QUOTA.burst);
    }
}

/// The noisy neighbour, under the emulator's quota of
/// [`NOISY_QUOTA_CALLS_PER_SECOND`] for this run only: the quiet tenant
/// alone, then during the flood.
async fn noisy(h: &Harness) -> Result<Noisy, String> {
    let phase = h.plan.noisy_phase;
    let requests = (phase.as_secs_f64() / QUIET_EVERY.as_secs_f64()).round() as usize;
    eprintln!(
        "noisy: emulator quota {NOISY_QUOTA_CALLS_PER_SECOND} calls/s (burst {NOISY_QUOTA_BURST}), gateway paced at {NOISY_GATEWAY_CALLS_PER_SECOND} calls/s (burst {NOISY_GATEWAY_BURST}); quiet alone {phase:?}, then the flood ({FLOOD_IN_FLIGHT} x {FLOOD_ENTRIES} entries) {FLOOD_RAMP:?} before and during {phase:?} of quiet"
    );
    h.emulator.set_faults(Vec::new());
    let _restore = emulator_quota(&h.emulator, NOISY_QUOTA_CALLS_PER_SECOND, NOISY_QUOTA_BURST)?;
    let gateway_config = noisy_gateway_toml(&h.emulator.endpoint_url());
    let gateway = start_gateway(h, &gateway_config).await?;
    let quiet_clients = GatewayClients::connect(gateway.addr(), 1).await?;
    let flood_clients = GatewayClients::connect(gateway.addr(), FLOOD_IN_FLIGHT).await?;
    let quiet = |n: usize| {
        load::one_entry_every(
            quiet_clients.clone(),
            QUIET_TENANT,
            n,
            QUIET_EVERY,
            QUIET_ANSWER_BOUND,
        )
    };
    quiet(QUIET_WARMUP_REQUESTS).await;
    let alone = TenantRun::new(quiet(requests).await);

    let ramp_start = Instant::now();
    let window = Window {
        start: ramp_start + FLOOD_RAMP,
        end: ramp_start + FLOOD_RAMP + phase,
    };
    let flood = tokio::spawn(load::tenant_unary(
        flood_clients,
        FLOOD_TENANT,
        FLOOD_ENTRIES,
        FLOOD_IN_FLIGHT,
        window,
    ));
    tokio::time::sleep_until(ramp_start + FLOOD_RAMP / 2).await;
    let (mid, mid_at) = (h.emulator.counts(), Instant::now());
    tokio::time::sleep_until(window.start).await;
    let (before, started) = (h.emulator.counts(), Instant::now());
    let during = tokio::spawn(quiet(requests));
    tokio::time::sleep_until(window.end).await;
    let after = h.emulator.counts();
    let secs = started.elapsed().as_secs_f64();
    let during = match tokio::time::timeout(QUIET_ANSWER_BOUND + JOIN_GRACE, during).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(format!("quiet load task failed: {e}")),
        Err(_) => return Err("the quiet requests were not all answered or given up".into()),
    };
    let flood = join_load(flood).await?;
    drop(gateway);
    let ramp_secs = (started - mid_at).as_secs_f64();
    Ok(Noisy {
        quota_calls_per_second: NOISY_QUOTA_CALLS_PER_SECOND,
        quota_burst: NOISY_QUOTA_BURST,
        gateway_calls_per_second: NOISY_GATEWAY_CALLS_PER_SECOND,
        gateway_burst: NOISY_GATEWAY_BURST,
        linger_ms: UpstreamSection::default().linger_ms,
        flood_in_flight: FLOOD_IN_FLIGHT,
        flood_entries_per_request: FLOOD_ENTRIES,
        quiet_every_ms: QUIET_EVERY.as_millis() as u64,
        ramp_secs: FLOOD_RAMP.as_secs_f64(),
        ramp_calls_per_sec: before.ok_calls.saturating_sub(mid.ok_calls) as f64
            / ramp_secs.max(1e-3),
        alone,
        during_flood: TenantRun::new(during),
        flood: TenantRun::new(flood),
        upstream: QuotaUse::between(
            &before,
            &after,
            FLOOD_SOURCE,
            QUIET_SOURCE,
            secs,
            NOISY_QUOTA_CALLS_PER_SECOND,
        ),
        gateway_config,
    })
}

/// Replicas sharing one quota through Redis, under the emulator's quota of
/// [`CLUSTER_QUOTA_CALLS_PER_SECOND`] for this run only: once per lease
/// size, against one Redis started here and killed at the end.
async fn cluster(h: &Harness) -> Result<Cluster, String> {
    let phase = cluster_phase(&h.plan);
    eprintln!(
        "cluster: {CLUSTER_REPLICAS} replicas, emulator quota {CLUSTER_QUOTA_CALLS_PER_SECOND} calls/s (burst {CLUSTER_QUOTA_BURST}), {CLUSTER_IN_FLIGHT_PER_REPLICA} 1-entry requests in flight per replica, {CLUSTER_WARMUP:?} warm-up then {phase:?}, lease_calls {CLUSTER_LEASES:?}"
    );
    let redis = tokio::task::spawn_blocking(RedisChild::start)
        .await
        .map_err(|e| format!("redis start task failed: {e}"))??;
    h.emulator.set_faults(Vec::new());
    let _restore = emulator_quota(
        &h.emulator,
        CLUSTER_QUOTA_CALLS_PER_SECOND,
        CLUSTER_QUOTA_BURST,
    )?;
    let mut runs = Vec::new();
    let mut gateway_config = String::new();
    for lease_calls in CLUSTER_LEASES {
        let (run, config) = cluster_run(h, &redis, lease_calls, phase).await?;
        eprintln!(
            "cluster: lease_calls {lease_calls}: {:.1}% of the quota, {:.2}% throttled, {} Redis round trips for {} calls",
            run.upstream.quota_used * 100.0,
            run.upstream.throttled_share * 100.0,
            run.redis_round_trips,
            run.upstream.calls
        );
        runs.push(run);
        if gateway_config.is_empty() {
            gateway_config = config;
        }
    }
    drop(redis);
    Ok(Cluster {
        replicas: CLUSTER_REPLICAS,
        quota_calls_per_second: CLUSTER_QUOTA_CALLS_PER_SECOND,
        quota_burst: CLUSTER_QUOTA_BURST,
        gateway_burst: CLUSTER_GATEWAY_BURST,
        in_flight_per_replica: CLUSTER_IN_FLIGHT_PER_REPLICA,
        warmup_secs: CLUSTER_WARMUP.as_secs_f64(),
        runs,
        gateway_config,
    })
}

/// The replicas' CPU seconds together, their Redis round trips, and
/// Redis's CPU seconds, now.
async fn cluster_reading(
    replicas: &[(GatewayChild, std::net::SocketAddr)],
    redis: &RedisChild,
) -> Result<(f64, f64, f64), String> {
    let mut cpu = 0.0;
    let mut trips = 0.0;
    for (gateway, metrics) in replicas {
        cpu += gateway.stats()?.cpu_secs;
        trips += metrics_sum(*metrics, REDIS_CALLS_METRIC).await?;
    }
    Ok((cpu, trips, redis.stats()?.cpu_secs))
}

/// One lease size: fresh replicas (a key prefix of their own), the load
/// spread over them, the window measured; gives the first replica's config.
async fn cluster_run(
    h: &Harness,
    redis: &RedisChild,
    lease_calls: u32,
    phase: Duration,
) -> Result<(ClusterRun, String), String> {
    let prefix = format!("bench-{}-lease-{lease_calls}", std::process::id());
    let mut replicas = Vec::new();
    let mut first_config = String::new();
    for _ in 0..CLUSTER_REPLICAS {
        let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let config = cluster_gateway_toml(
            &h.emulator.endpoint_url(),
            &redis.url(),
            &prefix,
            lease_calls,
            &metrics.to_string(),
        );
        replicas.push((start_gateway(h, &config).await?, metrics));
        if first_config.is_empty() {
            first_config = config;
        }
    }
    let start = Instant::now();
    let window = Window {
        start: start + CLUSTER_WARMUP,
        end: start + CLUSTER_WARMUP + phase,
    };
    let mut loads = Vec::new();
    for (gateway, _) in &replicas {
        let clients =
            GatewayClients::connect(gateway.addr(), CLUSTER_IN_FLIGHT_PER_REPLICA).await?;
        loads.push(tokio::spawn(load::gateway_unary(
            clients,
            1,
            CLUSTER_IN_FLIGHT_PER_REPLICA,
            window,
        )));
    }
    tokio::time::sleep_until(window.start).await;
    let (before, started) = (h.emulator.counts(), Instant::now());
    let (cpu_before, trips_before, redis_before) = cluster_reading(&replicas, redis).await?;
    tokio::time::sleep_until(window.end).await;
    let after = h.emulator.counts();
    let secs = started.elapsed().as_secs_f64();
    let (cpu_after, trips_after, redis_after) = cluster_reading(&replicas, redis).await?;
    let mut tally = Tally::default();
    for load in loads {
        tally.merge(join_load(load).await?);
    }
    drop(replicas);
    Ok((
        ClusterRun {
            lease_calls,
            upstream: QuotaWindow::between(&before, &after, secs, CLUSTER_QUOTA_CALLS_PER_SECOND),
            gateway_cpu_secs: cpu_after - cpu_before,
            redis_cpu_secs: redis_after - redis_before,
            redis_round_trips: (trips_after - trips_before).max(0.0) as u64,
            requests: tally.batches,
            failed: tally.entries_failed + tally.errors,
            first_failure: tally.first_failure,
        },
        first_config,
    ))
}

/// 1,000 streams against a hung upstream, the gateway's RSS every 500 ms.
async fn stall(h: &Harness) -> Result<Stall, String> {
    let secs = h.plan.stall;
    eprintln!(
        "stall: {STALL_STREAMS} streams, upstream hung, {:.0} s",
        secs.as_secs_f64()
    );
    h.emulator
        .set_faults(vec![FaultRule::everywhere(Fault::Hang { accept: false })]);
    let url = h.emulator.endpoint_url();
    let gateway = start_gateway(h, &stall_gateway_toml(&url)).await?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let idle = gateway.stats()?;
    let clients = GatewayClients::connect(gateway.addr(), STALL_STREAMS).await?;
    let start = Instant::now();
    let window = Window {
        start,
        end: start + secs,
    };
    h.emulator.clear();
    let load = tokio::spawn(load::gateway_streams(
        clients,
        STALL_STREAMS,
        STALL_BATCH_ENTRIES,
        STALL_IN_FLIGHT,
        window,
    ));
    let mut samples = Vec::new();
    let mut next = start + STALL_SAMPLE_EVERY;
    while next <= window.end {
        tokio::time::sleep_until(next).await;
        let s = gateway.stats()?;
        samples.push((
            (next - start).as_secs_f64(),
            (mib(s.rss_kib) * 10.0).round() / 10.0,
        ));
        next += STALL_SAMPLE_EVERY;
    }
    let hwm = gateway.stats()?.hwm_kib;
    let tally = join_load(load).await?;
    let mut upstream = UpstreamTally::default();
    take_calls(&h.emulator, &mut upstream);
    drop(gateway);
    h.emulator.set_faults(Vec::new());
    let rss: Vec<f64> = samples.iter().map(|(_, m)| *m).collect();
    Ok(Stall {
        streams: STALL_STREAMS,
        streams_opened: tally.streams_opened,
        entries_per_batch: STALL_BATCH_ENTRIES,
        batches_in_flight_per_stream: STALL_IN_FLIGHT,
        secs: secs.as_secs_f64(),
        idle_rss_mib: mib(idle.rss_kib),
        start_rss_mib: rss.first().copied().unwrap_or(0.0),
        peak_rss_mib: rss.iter().copied().fold(0.0, f64::max),
        end_rss_mib: rss.last().copied().unwrap_or(0.0),
        hwm_mib: mib(hwm),
        samples,
        entries_sent: tally.entries_sent,
        entries_answered: tally.entries_ok + tally.entries_failed,
        upstream_calls: upstream.calls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_child_config_loads_and_says_what_its_run_needs() {
        use crate::config::Config;
        let url = "http://127.0.0.1:1";
        let throughput = Config::from_toml(&gateway_toml(url, Some(7)), "t").unwrap();
        assert_eq!(throughput.pipeline.upstream_calls_per_second, 0.0);
        assert_eq!(throughput.pipeline.linger, Duration::from_millis(7));
        assert_eq!(throughput.pipeline.max_concurrent_calls_per_region, 512);
        assert_eq!(throughput.max_in_flight_entries, 1_000_000);
        assert!(throughput.metrics_listen.is_none());
        let stall = Config::from_toml(&stall_gateway_toml(url), "t").unwrap();
        assert_eq!(stall.max_in_flight_entries, 20_000, "the default bounds");
        let noisy = Config::from_toml(&noisy_gateway_toml(url), "t").unwrap();
        assert_eq!(
            noisy.pipeline.upstream_calls_per_second,
            NOISY_GATEWAY_CALLS_PER_SECOND
        );
        assert_eq!(noisy.tenants.len(), 2);
        let cluster = Config::from_toml(
            &cluster_gateway_toml(
                url,
                "redis://127.0.0.1:6390",
                "bench-x",
                1,
                "127.0.0.1:9464",
            ),
            "t",
        )
        .unwrap();
        assert_eq!(
            cluster.pipeline.upstream_calls_per_second,
            CLUSTER_QUOTA_CALLS_PER_SECOND
        );
        assert_eq!(cluster.quotas.upstream_burst, CLUSTER_GATEWAY_BURST);
        let shared = cluster.cluster.as_ref().expect("[cluster]");
        assert_eq!(shared.url, "redis://127.0.0.1:6390");
        assert_eq!(
            (shared.key_prefix.as_str(), shared.lease_calls),
            ("bench-x", 1)
        );
        assert_eq!(
            cluster.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        for c in [&throughput, &stall, &noisy, &cluster] {
            assert_eq!(c.sdk.endpoint_url.as_deref(), Some(url));
        }
    }

    #[test]
    fn only_cluster_runs_the_cluster_run_alone_for_at_least_3_s() {
        let plan = Plan::new(args(false, Some("cluster"))).unwrap();
        assert!(plan.wants("cluster") && !plan.wants("noisy") && !plan.wants("stall"));
        assert!(plan.shapes().is_empty());
        assert_eq!(cluster_phase(&plan), Duration::from_secs(5));
        let quick = Plan::new(args(true, None)).unwrap();
        assert_eq!(cluster_phase(&quick), CLUSTER_MIN_PHASE);
        assert!(!Plan::new(args(false, Some("noisy")))
            .unwrap()
            .wants("cluster"));
    }

    /// `--only <name>` runs that run and nothing else; the default run and
    /// `--quick` run it too.
    pub(super) fn assert_runs_alone(name: &str) {
        let plan = Plan::new(args(false, Some(name))).unwrap();
        assert!(plan.wants(name) && plan.shapes().is_empty(), "{name}");
        for other in [
            "stall",
            "noisy",
            "cluster",
            "durable",
            "idempotency",
            "floor",
            "quota",
        ] {
            assert_eq!(plan.wants(other), other == name, "--only {name}: {other}");
        }
        for quick in [false, true] {
            assert!(Plan::new(args(quick, None)).unwrap().wants(name), "{name}");
        }
    }

    pub(super) fn args(quick: bool, only: Option<&str>) -> BenchArgs {
        BenchArgs {
            duration_secs: 5,
            quick,
            out: "bench.json".into(),
            unary_callers: 1,
            stream_in_flight: 1,
            stream_entries_in_flight: vec![1],
            latency_ms: 0,
            latency_jitter_ms: 0,
            stall_secs: None,
            only: only.map(String::from),
            gateway_bin: Some("gateway".into()),
            load_fraction: 0.5,
            linger_ms: None,
            durable_fill: None,
            durable_fill_secs: None,
            idempotency_keys: None,
        }
    }

    #[test]
    fn the_bench_emulator_has_no_quota_and_the_report_says_so() {
        assert!(emulator_config().quota.is_unlimited());
        // What the noisy run puts back when it ends.
        assert_eq!(
            Quota::new(BENCH_QUOTA.calls_per_second, BENCH_QUOTA.burst),
            Ok(Quota::UNLIMITED)
        );
        let notes = notes(&Plan::new(args(true, None)).unwrap());
        assert!(
            notes.iter().any(|n| n
                .starts_with("Emulator quota: unlimited in every run but the noisy neighbour")
                && n.contains("runs under 150 calls/s, burst 300")
                && n.contains("the cluster and quota runs under 150 calls/s, burst 20")),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.starts_with("Noisy neighbour:")),
            "{notes:?}"
        );
    }

    #[test]
    fn the_noisy_run_is_in_the_default_run_quick_and_only_noisy() {
        let phase = |quick, only| {
            let plan = Plan::new(args(quick, only)).unwrap();
            plan.wants("noisy").then_some(plan.noisy_phase)
        };
        assert_eq!(phase(false, None), Some(Duration::from_secs(5)));
        assert_eq!(phase(true, None), Some(Duration::from_secs(2)));
        assert_eq!(phase(false, Some("noisy")), Some(Duration::from_secs(5)));
        assert_eq!(phase(false, Some("stall")), None);
        // --only noisy runs nothing else.
        let plan = Plan::new(args(false, Some("noisy"))).unwrap();
        assert!(plan.shapes().is_empty() && !plan.wants("stall"));
    }

    #[test]
    fn the_noisy_gateway_is_paced_at_the_quota_with_two_tenants_of_weight_1() {
        let config =
            crate::config::Config::from_toml(&noisy_gateway_toml("http://127.0.0.1:4010"), "noisy")
                .unwrap();
        assert_eq!(
            config.quotas.upstream_calls_per_second,
            NOISY_QUOTA_CALLS_PER_SECOND
        );
        assert!(config.quotas.upstream_burst < NOISY_QUOTA_BURST);
        assert_eq!(config.pipeline.linger, Duration::from_millis(5));
        for (tenant, source) in [(FLOOD_TENANT, FLOOD_SOURCE), (QUIET_TENANT, QUIET_SOURCE)] {
            let t = config.tenants.get(tenant).expect("tenant");
            assert_eq!(t.share().weight(), 1);
            assert_eq!(t.source("events").map(|s| s.name()), Some(source));
        }
        assert_eq!(config.tenants.len(), 2);
        // The emulator knows both sources, ACTIVE.
        let seeded = emulator_config().sources;
        for source in [FLOOD_SOURCE, QUIET_SOURCE] {
            assert!(
                seeded
                    .iter()
                    .any(|s| s.name == source && s.state == SourceState::Active),
                "{seeded:?}"
            );
        }
    }
}
