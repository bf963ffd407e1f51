//! What a bench run found: one [`Measurement`] per scenario and path, the
//! half-load latency run, the stalled-streams memory run, and the targets
//! judged from them; printed as a table and written as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::load::Tally;
use crate::{domain::limits::MAX_ENTRIES_PER_CALL, emulator::RecordCounts};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples_us` (sorted here).
    pub fn of(samples_us: &mut [u32]) -> Self {
        if samples_us.is_empty() {
            return Self::default();
        }
        samples_us.sort_unstable();
        let at = |q: f64| {
            let rank = (q * samples_us.len() as f64).ceil() as usize;
            f64::from(samples_us[rank.clamp(1, samples_us.len()) - 1]) / 1000.0
        };
        Self {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        }
    }
}

/// Which way the entries went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// Through the gateway (child process) to the emulator.
    Gateway,
    /// Straight to the emulator with the AWS SDK.
    Baseline,
}

/// The figures of one scenario on one path.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// e.g. `unary-20 x64` or `stream-1 x1000`.
    pub scenario: String,
    pub path: Path,
    pub emulator_latency_ms: u64,
    /// `closed loop` or `fixed rate N/s`.
    pub load: String,
    pub entries_per_batch: usize,
    /// Callers (unary, baseline) or streams.
    pub concurrency: usize,
    /// Batches each caller or stream keeps unanswered (closed loop).
    pub in_flight: usize,
    pub window_secs: f64,
    pub batches: u64,
    pub entries_ok: u64,
    pub entries_failed: u64,
    /// Calls or streams failed whole.
    pub errors: u64,
    /// Fixed rate: batches not sent because too many were outstanding.
    pub skipped: u64,
    /// Accepted entries per second.
    pub entries_per_sec: f64,
    pub batches_per_sec: f64,
    /// `PutPartnerEvents` calls the emulator received in the window.
    pub upstream_calls: u64,
    pub upstream_calls_per_sec: f64,
    /// Upstream calls not answered 200.
    pub upstream_failed_calls: u64,
    /// Mean entries per upstream call.
    pub entries_per_call: f64,
    /// Caller-side latency: per request (unary) or per batch (stream),
    /// from send to its answer.
    pub latency_ms: Percentiles,
    /// The gateway child's CPU time in the window.
    pub gateway_cpu_secs: Option<f64>,
    pub gateway_cpu_secs_per_100k: Option<f64>,
    /// The gateway child's peak RSS (VmHWM) over its life.
    pub gateway_peak_rss_mib: Option<f64>,
    /// The harness process's CPU (load generator and emulator) per 100k
    /// entries, for comparing the whole cost of both paths.
    pub harness_cpu_secs_per_100k: f64,
    /// The first failure seen, if any: an entry's code and message, a status.
    pub first_failure: Option<String>,
}

impl Measurement {
    /// Figures from a tally, the emulator's calls and CPU readings.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: String,
        path: Path,
        emulator_latency_ms: u64,
        load: String,
        entries_per_batch: usize,
        concurrency: usize,
        window_secs: f64,
        mut tally: Tally,
        upstream: UpstreamTally,
        gateway: Option<(f64, f64)>,
        harness_cpu_secs: f64,
    ) -> Self {
        let per_100k = |cpu: f64| {
            if tally.entries_ok == 0 {
                0.0
            } else {
                cpu * 100_000.0 / tally.entries_ok as f64
            }
        };
        Self {
            latency_ms: Percentiles::of(&mut tally.latencies_us),
            scenario,
            path,
            emulator_latency_ms,
            load,
            entries_per_batch,
            concurrency,
            in_flight: 1,
            window_secs,
            batches: tally.batches,
            entries_ok: tally.entries_ok,
            entries_failed: tally.entries_failed,
            errors: tally.errors,
            skipped: tally.skipped,
            entries_per_sec: tally.entries_ok as f64 / window_secs,
            batches_per_sec: tally.batches as f64 / window_secs,
            upstream_calls: upstream.calls,
            upstream_calls_per_sec: upstream.calls as f64 / window_secs,
            upstream_failed_calls: upstream.failed_calls,
            entries_per_call: if upstream.calls == 0 {
                0.0
            } else {
                upstream.entries as f64 / upstream.calls as f64
            },
            gateway_cpu_secs: gateway.map(|(cpu, _)| cpu),
            gateway_cpu_secs_per_100k: gateway.map(|(cpu, _)| per_100k(cpu)),
            gateway_peak_rss_mib: gateway.map(|(_, rss)| rss),
            harness_cpu_secs_per_100k: per_100k(harness_cpu_secs),
            first_failure: tally.first_failure,
        }
    }

    /// The same, with `in_flight` batches per caller or stream.
    pub fn with_in_flight(self, in_flight: usize) -> Self {
        Self { in_flight, ..self }
    }

    /// Cores kept busy on average by this run's processes: the harness
    /// (load generator and emulator) and the gateway child, if any.
    pub fn cores_busy(&self) -> f64 {
        if self.window_secs <= 0.0 {
            return 0.0;
        }
        let harness = self.harness_cpu_secs_per_100k * self.entries_ok as f64 / 100_000.0;
        (harness + self.gateway_cpu_secs.unwrap_or(0.0)) / self.window_secs
    }

    fn same_scenario(&self, other: &Measurement) -> bool {
        self.scenario == other.scenario
            && self.emulator_latency_ms == other.emulator_latency_ms
            && self.load == other.load
    }
}

/// What the emulator recorded in a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamTally {
    pub calls: u64,
    pub entries: u64,
    pub failed_calls: u64,
}

/// Unary 20 at half the gateway's measured maximum, both paths.
#[derive(Debug, Clone, Serialize)]
pub struct HalfLoad {
    /// The gateway's closed-loop maximum for unary 20 at this latency,
    /// requests per second...
    pub max_requests_per_sec: f64,
    /// ...with this many callers.
    pub max_callers: usize,
    /// The fixed rate's share of that maximum (0.5 for the target).
    pub fraction: f64,
    /// The emulator's latency per call during this run.
    pub emulator_latency_ms: u64,
    /// The fixed rate both paths ran at.
    pub rate: f64,
    pub gateway: Measurement,
    pub baseline: Measurement,
    /// Gateway p99 minus baseline p99, in milliseconds.
    pub added_p99_ms: f64,
    /// Each round's (baseline p99, gateway p99), in milliseconds.
    pub rounds: Vec<(f64, f64)>,
    /// How late the load generator started each request after it was due
    /// (baseline, gateway): its own share of the latencies above.
    pub late_ms: (Percentiles, Percentiles),
}

/// Baseline and gateway runs of one scenario taking turns (which goes first
/// alternating), so that each round's ratio compares the two paths under
/// the same conditions of a shared machine.
#[derive(Debug, Clone, Serialize)]
pub struct Paired {
    pub scenario: String,
    pub emulator_latency_ms: u64,
    /// Batches each gateway stream keeps unanswered (1 for unary).
    pub in_flight: usize,
    pub rounds: Vec<PairedRound>,
}

/// One round of a [`Paired`] run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PairedRound {
    pub baseline_entries_per_sec: f64,
    pub gateway_entries_per_sec: f64,
    pub gateway_p99_ms: f64,
}

impl PairedRound {
    /// Gateway entries/s over the baseline's.
    pub fn ratio(&self) -> f64 {
        ratio(self.gateway_entries_per_sec, self.baseline_entries_per_sec)
    }
}

impl Paired {
    /// Each round's gateway-to-baseline ratio.
    pub fn ratios(&self) -> Vec<f64> {
        self.rounds.iter().map(PairedRound::ratio).collect()
    }

    pub fn median_ratio(&self) -> f64 {
        median(self.ratios())
    }

    pub fn median_p99_ms(&self) -> f64 {
        median(self.rounds.iter().map(|r| r.gateway_p99_ms).collect())
    }

    fn describe(&self) -> String {
        format!(
            "median of {} paired rounds {:.2}x ({})",
            self.rounds.len(),
            self.median_ratio(),
            self.ratios()
                .iter()
                .map(|r| format!("{r:.2}x"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}

/// The middle value (the mean of the two middle ones for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The run a stream target is judged on among a scenario's gateway runs at
/// several loads: the most entries/s among those with p99 under the
/// latency bound, or, when none is, the run with the lowest p99.
pub fn best_stream_run<'a>(
    measurements: &'a [Measurement],
    scenario: &str,
    latency_ms: u64,
) -> Option<&'a Measurement> {
    let runs = || {
        measurements.iter().filter(move |m| {
            m.path == Path::Gateway && m.scenario == scenario && m.emulator_latency_ms == latency_ms
        })
    };
    runs()
        .filter(|m| m.latency_ms.p99 < STREAM_P99_BOUND_MS)
        .max_by(|a, b| a.entries_per_sec.total_cmp(&b.entries_per_sec))
        .or_else(|| runs().min_by(|a, b| a.latency_ms.p99.total_cmp(&b.latency_ms.p99)))
}

/// The caller p99 the stream targets are judged under.
pub const STREAM_P99_BOUND_MS: f64 = 50.0;

/// Streams of 1-entry batches: gateway CPU seconds per 100k entries at most.
pub const STREAM_MAX_CPU_PER_100K: f64 = 1.0;

/// Open streams against a stalled upstream: the gateway's memory over time.
#[derive(Debug, Clone, Serialize)]
pub struct Stall {
    pub streams: usize,
    pub streams_opened: u64,
    pub entries_per_batch: usize,
    pub batches_in_flight_per_stream: usize,
    pub secs: f64,
    /// RSS before the streams opened.
    pub idle_rss_mib: f64,
    /// (seconds since the streams started opening, RSS in MiB), every 500 ms.
    pub samples: Vec<(f64, f64)>,
    pub start_rss_mib: f64,
    pub peak_rss_mib: f64,
    pub end_rss_mib: f64,
    /// VmHWM at the end.
    pub hwm_mib: f64,
    /// Entries the streams handed to the transport.
    pub entries_sent: u64,
    /// Entries answered (by the gateway's own timeouts, if any) meanwhile.
    pub entries_answered: u64,
    pub upstream_calls: u64,
}

/// The cluster run: gateway replicas sharing one emulated EventBridge
/// quota through a Redis of the bench's own, once per `cluster.lease_calls`.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    pub replicas: usize,
    /// The emulator's quota in this run: calls per second and burst; each
    /// replica is told the same rate (`quotas.upstream_calls_per_second`).
    pub quota_calls_per_second: f64,
    pub quota_burst: u32,
    pub gateway_burst: u32,
    /// 1-entry unary requests kept in flight through each replica.
    pub in_flight_per_replica: usize,
    pub warmup_secs: f64,
    pub runs: Vec<ClusterRun>,
    /// One replica's config (the first run's first replica).
    pub gateway_config: String,
}

/// What the emulator counted over a measured window under an emulated
/// quota, and what that says about the quota's use (the cluster and the
/// quota runs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct QuotaWindow {
    pub secs: f64,
    /// The quota's calls per second.
    pub quota_calls_per_second: f64,
    /// Calls received (throttled included), answered 200, refused by the
    /// quota; entries delivered.
    pub calls: u64,
    pub ok_calls: u64,
    pub throttled: u64,
    pub delivered: u64,
    /// Entries delivered per second over what the quota carries
    /// (`quota x 20` entries/s: the physical limit).
    pub quota_used: f64,
    /// `throttled / calls`.
    pub throttled_share: f64,
}

impl QuotaWindow {
    /// The figures from two readings of the emulator's counts `secs` apart,
    /// under a quota of `quota_calls_per_second`.
    pub fn between(
        before: &RecordCounts,
        after: &RecordCounts,
        secs: f64,
        quota_calls_per_second: f64,
    ) -> Self {
        let calls = after.calls.saturating_sub(before.calls);
        let throttled = after.throttled.saturating_sub(before.throttled);
        let delivered = after.delivered.saturating_sub(before.delivered);
        let limit = quota_calls_per_second * MAX_ENTRIES_PER_CALL as f64;
        Self {
            secs,
            quota_calls_per_second,
            calls,
            ok_calls: after.ok_calls.saturating_sub(before.ok_calls),
            throttled,
            delivered,
            quota_used: if secs > 0.0 && limit > 0.0 {
                delivered as f64 / secs / limit
            } else {
                0.0
            },
            throttled_share: throttled as f64 / calls.max(1) as f64,
        }
    }

    /// Entries delivered per second.
    pub fn entries_per_sec(&self) -> f64 {
        self.delivered as f64 / self.secs.max(1e-3)
    }

    /// What the quota carries: `quota x 20` entries per second.
    pub fn limit_entries_per_sec(&self) -> f64 {
        self.quota_calls_per_second * MAX_ENTRIES_PER_CALL as f64
    }

    /// Mean entries per accepted call.
    pub fn entries_per_call(&self) -> f64 {
        self.delivered as f64 / self.ok_calls.max(1) as f64
    }
}

/// One lease size's measured window.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterRun {
    pub lease_calls: u32,
    /// The emulator's counts over the window.
    #[serde(flatten)]
    pub upstream: QuotaWindow,
    /// CPU seconds over the window: the replicas' together, and Redis's.
    pub gateway_cpu_secs: f64,
    pub redis_cpu_secs: f64,
    /// Redis round trips of all replicas over the window
    /// (`partner_events_cluster_redis_calls_total`, every op and outcome).
    pub redis_round_trips: u64,
    /// Requests answered in the window, and failed ones (an entry's error
    /// code or a status).
    pub requests: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
}

impl ClusterRun {
    /// Microseconds of `cpu_secs` per upstream call.
    fn us_per_call(&self, cpu_secs: f64) -> f64 {
        cpu_secs * 1e6 / self.upstream.calls.max(1) as f64
    }

    fn round_trips_per_call(&self) -> f64 {
        self.redis_round_trips as f64 / self.upstream.calls.max(1) as f64
    }
}

impl Cluster {
    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "
cluster: {} replicas sharing the emulator's quota {}/s (burst {}) through Redis, each paced at {}/s (burst {}); {} 1-entry unary requests in flight per replica, {:.1} s warm-up",
            self.replicas,
            thousands(self.quota_calls_per_second),
            self.quota_burst,
            thousands(self.quota_calls_per_second),
            self.gateway_burst,
            self.in_flight_per_replica,
            self.warmup_secs
        );
        let _ = writeln!(
            out,
            "  {:>5} {:>6} {:>8} {:>10} {:>11} {:>12} {:>14} {:>12} {:>13} {:>7}",
            "lease",
            "secs",
            "calls/s",
            "quota used",
            "throttled",
            "redis trips",
            "trips/call",
            "gw cpu/call",
            "redis cpu/call",
            "failed"
        );
        for r in &self.runs {
            let u = &r.upstream;
            let _ = writeln!(
                out,
                "  {:>5} {:>6.2} {:>8.1} {:>9.1}% {:>10.2}% {:>12} {:>14.2} {:>9.0} µs {:>10.1} µs {:>7}",
                r.lease_calls,
                u.secs,
                u.calls as f64 / u.secs.max(1e-3),
                u.quota_used * 100.0,
                u.throttled_share * 100.0,
                thousands(r.redis_round_trips as f64),
                r.round_trips_per_call(),
                r.us_per_call(r.gateway_cpu_secs),
                r.us_per_call(r.redis_cpu_secs),
                r.failed
            );
            if let Some(f) = &r.first_failure {
                let _ = writeln!(out, "        first failure (lease {}): {f}", r.lease_calls);
            }
        }
    }
}

/// Which call a turn of the floor run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FloorCall {
    /// Unary `PutPartnerEvents` of one entry.
    Put,
    /// `grpc.health.v1.Health/Check`: tonic's floor.
    Health,
}

impl FloorCall {
    fn name(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Health => "health",
        }
    }
}

/// One kind's turn of the floor run.
#[derive(Debug, Clone, Serialize)]
pub struct FloorTurn {
    pub call: FloorCall,
    pub window_secs: f64,
    /// Requests answered in the window (health: with any status)...
    pub requests: u64,
    /// ...and those that failed: an entry's error code, a health status
    /// other than SERVING, a call failed whole.
    pub failed: u64,
    pub requests_per_sec: f64,
    /// Send to answer.
    pub latency_ms: Percentiles,
    /// The gateway child's utime+stime over the window, and per request
    /// answered in it, in µs.
    pub gateway_cpu_secs: f64,
    pub cpu_us_per_request: f64,
    /// `PutPartnerEvents` calls the emulator received in the window, and
    /// their mean entries (what coalescing made of the 1-entry requests).
    pub upstream_calls: u64,
    pub entries_per_call: f64,
    pub first_failure: Option<String>,
}

impl FloorTurn {
    /// The figures of one turn: its tally, the gateway's CPU seconds over
    /// the window, the emulator's calls.
    pub fn new(
        call: FloorCall,
        window_secs: f64,
        mut tally: Tally,
        gateway_cpu_secs: f64,
        upstream: UpstreamTally,
    ) -> Self {
        Self {
            call,
            window_secs,
            requests: tally.batches,
            failed: tally.entries_failed + tally.errors,
            requests_per_sec: tally.batches as f64 / window_secs.max(1e-3),
            latency_ms: Percentiles::of(&mut tally.latencies_us),
            gateway_cpu_secs,
            cpu_us_per_request: if tally.batches == 0 {
                f64::NAN
            } else {
                gateway_cpu_secs * 1e6 / tally.batches as f64
            },
            upstream_calls: upstream.calls,
            entries_per_call: if upstream.calls == 0 {
                0.0
            } else {
                upstream.entries as f64 / upstream.calls as f64
            },
            first_failure: tally.first_failure,
        }
    }
}

/// One round of the floor run: each kind's turn.
#[derive(Debug, Clone, Serialize)]
pub struct FloorRound {
    pub round: u32,
    /// The kind that went first.
    pub first: FloorCall,
    pub put: FloorTurn,
    pub health: FloorTurn,
}

impl FloorRound {
    /// The gateway's CPU per 1-entry request over its CPU per health check.
    pub fn ratio(&self) -> f64 {
        ratio(self.put.cpu_us_per_request, self.health.cpu_us_per_request)
    }
}

/// The target: a 1-entry request may cost the gateway at most this many
/// times the CPU of a health check.
pub const FLOOR_MAX_RATIO: f64 = 1.5;

/// The floor run: 1-entry `PutPartnerEvents` against health checks, taking
/// turns against one gateway.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    pub emulator_latency_ms: u64,
    /// Requests in flight in each turn (closed loop).
    pub in_flight: usize,
    pub warmup_secs: f64,
    pub window_secs: f64,
    pub rounds: Vec<FloorRound>,
    /// Each round's ratio, put over health, and their median.
    pub ratios: Vec<f64>,
    pub median_ratio: f64,
    /// Medians over the rounds of each kind's CPU per request, in µs.
    pub put_cpu_us: f64,
    pub health_cpu_us: f64,
}

impl Floor {
    pub fn new(
        emulator_latency_ms: u64,
        in_flight: usize,
        warmup_secs: f64,
        window_secs: f64,
        rounds: Vec<FloorRound>,
    ) -> Self {
        let ratios: Vec<f64> = rounds.iter().map(FloorRound::ratio).collect();
        Self {
            emulator_latency_ms,
            in_flight,
            warmup_secs,
            window_secs,
            median_ratio: median(ratios.clone()),
            ratios,
            put_cpu_us: median(rounds.iter().map(|r| r.put.cpu_us_per_request).collect()),
            health_cpu_us: median(rounds.iter().map(|r| r.health.cpu_us_per_request).collect()),
            rounds,
        }
    }

    fn failed(&self) -> u64 {
        self.rounds
            .iter()
            .map(|r| r.put.failed + r.health.failed)
            .sum()
    }

    pub fn targets(&self) -> Vec<Target> {
        vec![Target {
            name: format!(
                "floor: gateway CPU per 1-entry request <= {FLOOR_MAX_RATIO}x a grpc.health.v1 Check's ({} in flight, {} ms upstream)",
                self.in_flight, self.emulator_latency_ms
            ),
            pass: !self.rounds.is_empty()
                && self.failed() == 0
                && self.median_ratio <= FLOOR_MAX_RATIO,
            detail: format!(
                "median of {} rounds {:.2}x ({}); {:.1} against {:.1} µs per request (medians); {} failed",
                self.rounds.len(),
                self.median_ratio,
                self.ratios
                    .iter()
                    .map(|r| format!("{r:.2}x"))
                    .collect::<Vec<_>>()
                    .join(" "),
                self.put_cpu_us,
                self.health_cpu_us,
                self.failed()
            ),
        }]
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "
floor: one gateway, emulator {} ms per call, {} requests in flight (closed loop), {:.1} s windows after {:.1} s warm-up; 1-entry PutPartnerEvents and grpc.health.v1 Check taking turns
  {:>5} {:<6} {:<6} {:>11} {:>8} {:>8} {:>15} {:>12} {:>6}",
            self.emulator_latency_ms,
            self.in_flight,
            self.window_secs,
            self.warmup_secs,
            "round",
            "first",
            "call",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "gw cpu/request",
            "entries/call",
            "failed"
        );
        for r in &self.rounds {
            for t in [&r.put, &r.health] {
                let _ = writeln!(
                    out,
                    "  {:>5} {:<6} {:<6} {:>11} {:>8.2} {:>8.2} {:>12.1} µs {:>12} {:>6}",
                    r.round,
                    r.first.name(),
                    t.call.name(),
                    thousands(t.requests_per_sec),
                    t.latency_ms.p50,
                    t.latency_ms.p99,
                    t.cpu_us_per_request,
                    if t.call == FloorCall::Put {
                        format!("{:.2}", t.entries_per_call)
                    } else {
                        "-".to_string()
                    },
                    t.failed
                );
                if let Some(f) = &t.first_failure {
                    let _ = writeln!(out, "        first failure ({}): {f}", t.call.name());
                }
            }
        }
        let _ = writeln!(
            out,
            "  gateway CPU per request, put over health: {} median {:.2}x ({:.1} against {:.1} µs)",
            self.ratios
                .iter()
                .map(|r| format!("{r:.2}x"))
                .collect::<Vec<_>>()
                .join(" "),
            self.median_ratio,
            self.put_cpu_us,
            self.health_cpu_us
        );
    }
}

/// The quota run: one gateway paced at an emulated quota, 1-entry
/// requests offering more than the quota carries.
#[derive(Debug, Clone, Serialize)]
pub struct AtQuota {
    /// The emulator's quota in this run, and the gateway's pace and burst.
    pub quota_calls_per_second: f64,
    pub quota_burst: u32,
    pub gateway_calls_per_second: f64,
    pub gateway_burst: u32,
    pub emulator_latency_ms: u64,
    /// 1-entry unary requests kept in flight (closed loop).
    pub in_flight: usize,
    pub warmup_secs: f64,
    /// What the emulator counted over the measured window.
    pub upstream: QuotaWindow,
    /// The callers' requests answered in the window.
    pub callers: TenantRun,
    /// The gateway child's utime+stime over the window.
    pub gateway_cpu_secs: f64,
    pub gateway_config: String,
}

/// The quota run's targets: at least this share of the physical limit
/// delivered, and no call throttled.
pub const AT_QUOTA_MIN_USED: f64 = 0.95;

impl AtQuota {
    pub fn targets(&self) -> Vec<Target> {
        let u = &self.upstream;
        vec![
            Target {
                name: format!(
                    "at the quota ({}/s, scaled down): delivered entries/s >= {:.0}% of {}/s x 20",
                    thousands(u.quota_calls_per_second),
                    AT_QUOTA_MIN_USED * 100.0,
                    thousands(u.quota_calls_per_second)
                ),
                pass: u.quota_used >= AT_QUOTA_MIN_USED,
                detail: format!(
                    "{:.1}% ({} of {} entries/s; {:.2} entries per call; {} caller requests failed)",
                    u.quota_used * 100.0,
                    thousands(u.entries_per_sec()),
                    thousands(u.limit_entries_per_sec()),
                    u.entries_per_call(),
                    self.callers.failed
                ),
            },
            Target {
                name: "at the quota: no call throttled by the emulator".into(),
                pass: u.calls > 0 && u.throttled == 0,
                detail: throttled_detail(u.throttled, u.calls, u.throttled_share),
            },
        ]
    }

    fn render(&self, out: &mut String) {
        let u = &self.upstream;
        let c = &self.callers;
        let _ = writeln!(
            out,
            "
quota: emulator quota {}/s (burst {}), gateway paced at {}/s (burst {}), emulator {} ms per call; {} 1-entry unary requests in flight, {:.1} s warm-up then {:.2} s measured
  delivered {} entries/s of the limit {}/s ({}/s x 20): {:.1}%; {} calls ({:.1}/s), {:.2} entries per call; throttled {} of {} calls ({:.2}%)
  callers: {} requests answered ({}/s), p50/p99 {:.1}/{:.1} ms, {} failed; gateway CPU {:.0} µs per call",
            thousands(self.quota_calls_per_second),
            self.quota_burst,
            thousands(self.gateway_calls_per_second),
            self.gateway_burst,
            self.emulator_latency_ms,
            self.in_flight,
            self.warmup_secs,
            u.secs,
            thousands(u.entries_per_sec()),
            thousands(u.limit_entries_per_sec()),
            thousands(u.quota_calls_per_second),
            u.quota_used * 100.0,
            thousands(u.ok_calls as f64),
            u.ok_calls as f64 / u.secs.max(1e-3),
            u.entries_per_call(),
            thousands(u.throttled as f64),
            thousands(u.calls as f64),
            u.throttled_share * 100.0,
            thousands(c.requests as f64),
            thousands(c.requests as f64 / u.secs.max(1e-3)),
            c.latency_ms.p50,
            c.latency_ms.p99,
            c.failed,
            self.gateway_cpu_secs * 1e6 / u.ok_calls.max(1) as f64
        );
        if let Some(f) = &c.first_failure {
            let _ = writeln!(out, "  first failure: {f}");
        }
    }
}

/// The durable run: DURABLE and SYNC side by side, and restarts with a
/// large queue.
#[derive(Debug, Clone, Serialize)]
pub struct DurableBench {
    pub emulator_latency_ms: u64,
    pub callers: usize,
    /// Bytes of each entry's detail (a JSON object).
    pub detail_bytes: usize,
    /// Every run, in the order run.
    pub runs: Vec<DurableRun>,
    /// Per batch size: DURABLE acks/s over SYNC's, each round and median.
    pub ratios: Vec<DurableRatio>,
    /// DURABLE unary 20 at a fixed rate of half its sustained maximum
    /// (judged), and of half its acceptance maximum when that is higher.
    pub half_load: Vec<DurableHalfLoad>,
    /// The restart after the gRPC fill, and after the library fill if the
    /// gRPC fill fell short.
    pub restarts: Vec<Restart>,
    /// The gateway's config (the metrics port differs per run).
    pub gateway_config: String,
}

/// One run of the durable comparison.
#[derive(Debug, Clone, Serialize)]
pub struct DurableRun {
    /// `sync` or `durable`.
    pub delivery: String,
    pub round: u32,
    pub measurement: Measurement,
    pub commits: CommitFigures,
    pub server: ServerP99s,
}

/// The gateway's own p99s over a run's window, read off its histograms:
/// the bound of the bucket that holds each (so "at most"), in ms; none
/// when it observed nothing.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ServerP99s {
    /// PutPartnerEvents from the gateway's first sight of it to its
    /// answer (`grpc_server_handling_seconds`).
    #[serde(serialize_with = "bucket_bound")]
    pub put_handling_ms: Option<f64>,
    /// One durable commit, fsync included
    /// (`partner_events_durable_commit_seconds`).
    #[serde(serialize_with = "bucket_bound")]
    pub commit_ms: Option<f64>,
}

/// A bucket's bound in JSON: `"+Inf"` beyond the last finite one (which
/// serde_json would write as null, as it writes none).
fn bucket_bound<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(ms) if ms.is_infinite() => s.serialize_str("+Inf"),
        Some(ms) => s.serialize_f64(*ms),
        None => s.serialize_none(),
    }
}

impl ServerP99s {
    fn describe(&self) -> String {
        let at_most = |v: Option<f64>| match v {
            Some(ms) if ms.is_finite() => format!("<= {ms:.1} ms"),
            Some(_) => "beyond the last bucket".to_string(),
            None => "none observed".to_string(),
        };
        format!(
            "in the gateway: PutPartnerEvents p99 {}, commit p99 {}",
            at_most(self.put_handling_ms),
            at_most(self.commit_ms)
        )
    }
}

/// The gateway's durable commits over a window, from its metrics.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CommitFigures {
    pub secs: f64,
    /// Commits, one fsync each (enqueues and delivery progress alike).
    pub commits: u64,
    /// Changes they carried: a DURABLE batch, a delivery round's progress
    /// or outcomes.
    pub changes: u64,
    /// Seconds spent committing, fsync included.
    pub commit_seconds: f64,
    /// DURABLE entries acknowledged.
    pub enqueued: u64,
    /// Entries still queued at the window's end.
    pub queued_at_end: u64,
}

impl CommitFigures {
    pub fn commits_per_sec(&self) -> f64 {
        self.commits as f64 / self.secs.max(1e-3)
    }

    /// Acknowledged entries per commit (every commit counted: a lower
    /// bound on entries per enqueue commit).
    pub fn acks_per_commit(&self) -> f64 {
        self.enqueued as f64 / self.commits.max(1) as f64
    }

    pub fn changes_per_commit(&self) -> f64 {
        self.changes as f64 / self.commits.max(1) as f64
    }

    pub fn mean_commit_ms(&self) -> f64 {
        self.commit_seconds * 1e3 / self.commits.max(1) as f64
    }

    /// The share of the window the one writer thread spent committing:
    /// near 1, acknowledgements wait for the writer, not for the disk alone.
    pub fn writer_busy(&self) -> f64 {
        self.commit_seconds / self.secs.max(1e-3)
    }
}

/// DURABLE acks/s over SYNC's for one batch size.
#[derive(Debug, Clone, Serialize)]
pub struct DurableRatio {
    pub entries_per_batch: usize,
    /// Per round, DURABLE/SYNC acks/s.
    pub rounds: Vec<f64>,
    pub median: f64,
    /// Median p50 and p99 of each mode's runs, in ms.
    pub sync_p50_ms: f64,
    pub sync_p99_ms: f64,
    pub durable_p50_ms: f64,
    pub durable_p99_ms: f64,
}

impl DurableHalfLoad {
    /// Each round's p99, `a / b / c` ms.
    fn p99s(&self) -> String {
        let each: Vec<String> = self
            .rounds
            .iter()
            .map(|r| format!("{:.2}", r.p99_ms))
            .collect();
        format!("{} ms", each.join(" / "))
    }
}

/// Which maximum a DURABLE half-load run takes half of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HalfLoadBasis {
    /// What the DURABLE path sustains: per round, the lesser of DURABLE's
    /// closed-loop acks/s and SYNC's entries/s (what the same pipeline
    /// delivers). Above it the queue only grows, until it refuses.
    Sustained,
    /// DURABLE's closed-loop acks/s alone: a burst the queue absorbs while
    /// delivery runs flat out behind it.
    Acceptance,
}

impl HalfLoadBasis {
    fn describe(self) -> &'static str {
        match self {
            Self::Sustained => "the most it sustains (per round the lesser of DURABLE's acks/s and SYNC's delivered entries/s)",
            Self::Acceptance => "its closed-loop acceptance, above what delivery sustains",
        }
    }
}

/// DURABLE unary 20 at a fixed share of a maximum the closed-loop runs
/// measured.
#[derive(Debug, Clone, Serialize)]
pub struct DurableHalfLoad {
    pub basis: HalfLoadBasis,
    /// The median over the closed-loop unary-20 rounds of the basis's
    /// requests/s...
    pub max_requests_per_sec: f64,
    /// ...each of them...
    pub maxima: Vec<f64>,
    /// ...the share of it sent (0.5 for the target), and the rate.
    pub fraction: f64,
    pub rate: f64,
    /// Each round's figures, in the order run (a fresh gateway each)...
    pub rounds: Vec<HalfLoadRound>,
    /// ...and the round with the median p99, whole: latency from when each
    /// request was due to its acknowledgement (on disk, fsync'd).
    pub run: DurableRun,
    /// How late the generator itself started requests.
    pub late_ms: Percentiles,
}

/// One half-load round in brief.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HalfLoadRound {
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Entries failed, calls failed whole, and batches skipped.
    pub failed: u64,
}

impl HalfLoadRound {
    pub fn of(m: &Measurement) -> Self {
        Self {
            p50_ms: m.latency_ms.p50,
            p99_ms: m.latency_ms.p99,
            failed: m.entries_failed + m.errors + m.skipped,
        }
    }
}

/// The DURABLE targets: at least this share of SYNC's entries/s with
/// 20-entry batches...
pub const DURABLE_MIN_RATIO: f64 = 0.5;
/// ...and an acknowledgement p99 under this at half load.
pub const DURABLE_HALF_LOAD_P99_MS: f64 = 10.0;

/// A gateway's start on a large queue.
#[derive(Debug, Clone, Serialize)]
pub struct Restart {
    /// `grpc` (through the API, EventBridge out of reach) or `library`
    /// (Durable::open + enqueue, no gateway).
    pub fill: String,
    pub target_entries: u64,
    pub filled_entries: u64,
    pub fill_secs: f64,
    pub fill_batch_entries: usize,
    /// gRPC callers, or library tasks.
    pub fill_callers: usize,
    pub detail_bytes: usize,
    /// queue.redb's length, and the blocks it takes.
    pub file_bytes: u64,
    pub allocated_bytes: u64,
    /// What the restarted gateway logged it found.
    pub queued_at_open: u64,
    /// SIGTERM to exit of the filling gateway (gRPC fill only).
    pub stop_secs: Option<f64>,
    /// The gateway's own `open_ms`.
    pub open_ms: u64,
    /// From the process's start to its "durable queue open" line.
    pub open_logged_ms: f64,
    /// From the process's start to health SERVING on its port.
    pub serving_ms: f64,
    /// RSS once serving.
    pub rss_mib: f64,
    /// Entries and calls of the fill that failed.
    pub fill_failed: u64,
    pub first_failure: Option<String>,
}

impl Restart {
    pub fn bytes_per_entry(&self) -> f64 {
        self.file_bytes as f64 / self.queued_at_open.max(1) as f64
    }

    pub fn fill_rate(&self) -> f64 {
        self.filled_entries as f64 / self.fill_secs.max(1e-3)
    }
}

impl DurableBench {
    pub fn new(
        emulator_latency_ms: u64,
        callers: usize,
        detail_bytes: usize,
        runs: Vec<DurableRun>,
        half_load: Vec<DurableHalfLoad>,
        restarts: Vec<Restart>,
        gateway_config: String,
    ) -> Self {
        let mut sizes: Vec<usize> = runs
            .iter()
            .map(|r| r.measurement.entries_per_batch)
            .collect();
        sizes.dedup();
        let ratios = sizes
            .into_iter()
            .map(|entries| {
                let of = |mode: &str| -> Vec<&DurableRun> {
                    runs.iter()
                        .filter(|r| {
                            r.measurement.entries_per_batch == entries && r.delivery == mode
                        })
                        .collect()
                };
                let (sync, durable) = (of("sync"), of("durable"));
                let rounds: Vec<f64> = durable
                    .iter()
                    .filter_map(|d| {
                        let s = sync.iter().find(|s| s.round == d.round)?;
                        Some(ratio(
                            d.measurement.entries_per_sec,
                            s.measurement.entries_per_sec,
                        ))
                    })
                    .collect();
                let p = |rs: &[&DurableRun], f: fn(&Percentiles) -> f64| {
                    median(rs.iter().map(|r| f(&r.measurement.latency_ms)).collect())
                };
                DurableRatio {
                    entries_per_batch: entries,
                    median: median(rounds.clone()),
                    rounds,
                    sync_p50_ms: p(&sync, |l| l.p50),
                    sync_p99_ms: p(&sync, |l| l.p99),
                    durable_p50_ms: p(&durable, |l| l.p50),
                    durable_p99_ms: p(&durable, |l| l.p99),
                }
            })
            .collect();
        Self {
            emulator_latency_ms,
            callers,
            detail_bytes,
            runs,
            ratios,
            half_load,
            restarts,
            gateway_config,
        }
    }

    /// The DURABLE targets: 20-entry batches at >= half SYNC's acks/s
    /// (the median of the rounds), and p99 < 10 ms at half load.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        if let Some(q) = self.ratios.iter().find(|q| q.entries_per_batch == 20) {
            targets.push(Target {
                name: format!(
                    "DURABLE unary 20, {} ms upstream: acks/s >= {DURABLE_MIN_RATIO}x SYNC's",
                    self.emulator_latency_ms
                ),
                pass: q.median >= DURABLE_MIN_RATIO,
                detail: format!(
                    "median of {} rounds {:.2}x ({})",
                    q.rounds.len(),
                    q.median,
                    q.rounds
                        .iter()
                        .map(|r| format!("{r:.2}x"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            });
        }
        let half = |basis| {
            self.half_load
                .iter()
                .find(|hl| hl.fraction == 0.5 && hl.basis == basis)
        };
        if let Some(hl) = half(HalfLoadBasis::Sustained) {
            let m = &hl.run.measurement;
            // `run` is one of the rounds: their failures include its own.
            let failed: u64 = hl.rounds.iter().map(|r| r.failed).sum();
            // The burst above what delivery sustains is printed beside it,
            // not judged.
            let burst = half(HalfLoadBasis::Acceptance)
                .map(|b| {
                    format!(
                        "; at half its acceptance maximum ({} requests/s, above what delivery sustains) p99 {:.2} ms",
                        thousands(b.rate),
                        b.run.measurement.latency_ms.p99
                    )
                })
                .unwrap_or_default();
            targets.push(Target {
                name: format!(
                    "DURABLE unary 20 at half the load it sustains, {} ms upstream: p99 acknowledgement < {DURABLE_HALF_LOAD_P99_MS} ms",
                    self.emulator_latency_ms
                ),
                pass: m.batches > 0 && failed == 0 && m.latency_ms.p99 < DURABLE_HALF_LOAD_P99_MS,
                detail: format!(
                    "median of {} rounds: p99 {:.2} ms, p50 {:.2} ms at {} requests/s (half of {}); p99 per round {}; {} failed{burst}",
                    hl.rounds.len().max(1),
                    m.latency_ms.p99,
                    m.latency_ms.p50,
                    thousands(hl.rate),
                    thousands(hl.max_requests_per_sec),
                    hl.p99s(),
                    failed
                ),
            });
        }
        targets
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "
durable: unary, {} callers, emulator {} ms per call, detail {} bytes; SYNC and DURABLE taking turns, a fresh gateway per run
  {:<10} {:>5} {:<8} {:>10} {:>8} {:>8} {:>10} {:>12} {:>12} {:>10} {:>12} {:>14} {:>10} {:>6}",
            self.callers,
            self.emulator_latency_ms,
            self.detail_bytes,
            "scenario",
            "round",
            "mode",
            "acks/s",
            "p50 ms",
            "p99 ms",
            "commits/s",
            "acks/commit",
            "changes/com",
            "commit ms",
            "writer busy",
            "upstream ent/s",
            "queued end",
            "errors"
        );
        for r in &self.runs {
            let m = &r.measurement;
            let c = &r.commits;
            let _ = writeln!(
                out,
                "  {:<10} {:>5} {:<8} {:>10} {:>8.2} {:>8.2} {:>10.1} {:>12.1} {:>12.1} {:>10.2} {:>11.0}% {:>14} {:>10} {:>6}",
                format!("unary-{}", m.entries_per_batch),
                r.round,
                r.delivery,
                thousands(m.entries_per_sec),
                m.latency_ms.p50,
                m.latency_ms.p99,
                c.commits_per_sec(),
                c.acks_per_commit(),
                c.changes_per_commit(),
                c.mean_commit_ms(),
                c.writer_busy() * 100.0,
                thousands(m.entries_per_call * m.upstream_calls_per_sec),
                thousands(c.queued_at_end as f64),
                m.errors + m.entries_failed
            );
            if let Some(f) = &m.first_failure {
                let _ = writeln!(out, "        first failure: {f}");
            }
        }
        for q in &self.ratios {
            let _ = writeln!(
                out,
                "  unary-{}: DURABLE/SYNC acks/s {} median {:.2}x; p50/p99 ms SYNC {:.2}/{:.2}, DURABLE {:.2}/{:.2}",
                q.entries_per_batch,
                q.rounds
                    .iter()
                    .map(|r| format!("{r:.2}x"))
                    .collect::<Vec<_>>()
                    .join(" "),
                q.median,
                q.sync_p50_ms,
                q.sync_p99_ms,
                q.durable_p50_ms,
                q.durable_p99_ms
            );
        }
        for hl in &self.half_load {
            let m = &hl.run.measurement;
            let c = &hl.run.commits;
            let _ = writeln!(
                out,
                "  half load: DURABLE unary-{} at {} requests/s ({:.0}% of {}: median {} requests/s; rounds {}): p99 per round {}; the median round: {} acks/s, {} delivered entries/s, {} queued at the end; p50/p99 {:.2}/{:.2} ms from when each request was due (generator late p50/p99 {:.2}/{:.2} ms); {:.1} commits/s, {:.1} acks/commit, writer busy {:.0}%; {} errors, {} skipped",
                m.entries_per_batch,
                thousands(hl.rate),
                hl.fraction * 100.0,
                hl.basis.describe(),
                thousands(hl.max_requests_per_sec),
                hl.maxima
                    .iter()
                    .map(|r| thousands(*r))
                    .collect::<Vec<_>>()
                    .join(" "),
                hl.p99s(),
                thousands(m.entries_per_sec),
                thousands(m.entries_per_call * m.upstream_calls_per_sec),
                thousands(c.queued_at_end as f64),
                m.latency_ms.p50,
                m.latency_ms.p99,
                hl.late_ms.p50,
                hl.late_ms.p99,
                c.commits_per_sec(),
                c.acks_per_commit(),
                c.writer_busy() * 100.0,
                m.errors + m.entries_failed,
                m.skipped
            );
            let _ = writeln!(out, "        {}", hl.run.server.describe());
            if let Some(f) = &m.first_failure {
                let _ = writeln!(out, "        first failure: {f}");
            }
        }
        for r in &self.restarts {
            let _ = writeln!(
                out,
                "  restart, {} fill: {} of {} entries queued in {:.1} s ({}/s, batches of {}, {} {}, EventBridge out of reach){}",
                r.fill,
                thousands(r.filled_entries as f64),
                thousands(r.target_entries as f64),
                r.fill_secs,
                thousands(r.fill_rate()),
                r.fill_batch_entries,
                r.fill_callers,
                if r.fill == "grpc" { "callers" } else { "tasks" },
                if r.fill_failed > 0 {
                    format!(
                        ", {} failed (first: {})",
                        r.fill_failed,
                        r.first_failure.as_deref().unwrap_or("?")
                    )
                } else {
                    String::new()
                }
            );
            let _ = writeln!(
                out,
                "    queue file {:.1} MB ({:.1} MB allocated): {:.0} bytes per entry for {}-byte details; stop (SIGTERM) {}; start: {} entries, open_ms {}, logged at {:.0} ms, health SERVING at {:.0} ms; RSS {:.0} MiB",
                r.file_bytes as f64 / 1e6,
                r.allocated_bytes as f64 / 1e6,
                r.bytes_per_entry(),
                r.detail_bytes,
                r.stop_secs
                    .map_or("-".to_string(), |s| format!("{:.2} s", s)),
                thousands(r.queued_at_open as f64),
                r.open_ms,
                r.open_logged_ms,
                r.serving_ms,
                r.rss_mib
            );
        }
    }
}

/// The idempotency run: the same load with and without a key on every
/// entry, side by side, with the keys in the gateway's memory and in Redis
/// (cluster mode); resends answered from their first entry; memory per key.
#[derive(Debug, Clone, Serialize)]
pub struct IdempotencyBench {
    pub emulator_latency_ms: u64,
    pub callers: usize,
    pub window_secs: f64,
    /// Characters of each idempotency key, and bytes of each entry's detail.
    pub key_chars: usize,
    pub detail_bytes: usize,
    /// Every side-by-side run, in the order run.
    pub runs: Vec<KeyedRun>,
    /// Per store and batch size: keyed against unkeyed.
    pub comparisons: Vec<KeyedComparison>,
    pub resends: Vec<ResendRun>,
    pub memory: Option<KeyMemory>,
    /// The gateway's config, and a cluster-mode one (the metrics port and
    /// the key prefix differ per run).
    pub gateway_config: String,
    pub cluster_gateway_config: String,
}

/// One run of the side-by-side comparison.
#[derive(Debug, Clone, Serialize)]
pub struct KeyedRun {
    /// `memory` (keys in the gateway's memory) or `redis` (cluster mode).
    pub store: String,
    pub keyed: bool,
    pub round: u32,
    pub measurement: Measurement,
    /// The gateway child's utime+stime over the window per 1,000 entries
    /// accepted, in ms (also µs per entry).
    pub gateway_cpu_ms_per_1k: f64,
    /// `partner_events_idempotency_entries_total` over the window:
    /// `result="new"`, and every other result (none expected).
    pub keys_new: u64,
    pub keys_other: u64,
    /// Cluster mode only.
    pub redis: Option<RedisUse>,
}

/// What a cluster-mode child asked of Redis over a window, and what
/// redis-server spent.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RedisUse {
    /// `partner_events_cluster_redis_calls_total` by op (every outcome).
    pub claim_calls: u64,
    pub settle_calls: u64,
    /// Every other op (pacing, limits: none expected, the child is unpaced).
    pub other_calls: u64,
    /// Calls that failed or timed out (any op).
    pub failed_calls: u64,
    /// Keyed entries handled in memory because Redis did not answer.
    pub local_fallback: u64,
    /// redis-server's utime+stime over the window.
    pub cpu_secs: f64,
}

impl KeyedRun {
    /// Claim and settle round trips per request answered in the window.
    pub fn trips_per_batch(&self) -> Option<f64> {
        self.redis.map(|r| {
            (r.claim_calls + r.settle_calls) as f64 / self.measurement.batches.max(1) as f64
        })
    }

    /// redis-server's CPU per 1,000 entries accepted, in ms.
    pub fn redis_cpu_ms_per_1k(&self) -> Option<f64> {
        self.redis
            .map(|r| per_1k_ms(r.cpu_secs, self.measurement.entries_ok))
    }
}

/// CPU seconds per 1,000 of `entries`, in milliseconds.
pub fn per_1k_ms(cpu_secs: f64, entries: u64) -> f64 {
    if entries == 0 {
        return f64::NAN;
    }
    cpu_secs * 1e6 / entries as f64
}

/// The medians of one kind's runs (keyed or not).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct KindFigures {
    pub entries_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub gateway_cpu_ms_per_1k: f64,
}

/// Keyed against unkeyed for one store and batch size.
#[derive(Debug, Clone, Serialize)]
pub struct KeyedComparison {
    pub store: String,
    pub entries_per_batch: usize,
    /// Per round, keyed over unkeyed: entries/s, and gateway CPU per entry.
    pub throughput_rounds: Vec<f64>,
    pub cpu_rounds: Vec<f64>,
    /// Their medians.
    pub throughput_ratio: f64,
    pub cpu_ratio: f64,
    pub unkeyed: KindFigures,
    pub keyed: KindFigures,
    /// Keyed median minus unkeyed median, in ms.
    pub added_p50_ms: f64,
    pub added_p99_ms: f64,
    /// Cluster mode: claim and settle round trips per request, and
    /// redis-server's CPU per 1,000 entries (ms), medians of the keyed
    /// runs; and redis-server's CPU in the unkeyed runs (its idle cost).
    pub redis_trips_per_batch: Option<f64>,
    pub redis_cpu_ms_per_1k: Option<f64>,
    pub redis_cpu_ms_per_1k_unkeyed: Option<f64>,
}

/// Every entry of every batch sent twice: the resend at once after the
/// first's answer, then a second pass resending every accepted batch.
#[derive(Debug, Clone, Serialize)]
pub struct ResendRun {
    pub entries_per_batch: usize,
    pub callers: usize,
    pub window_secs: f64,
    /// The first sends answered in the window (new keys: sent upstream).
    pub first_batches: u64,
    pub first_entries_ok: u64,
    pub first_latency_ms: Percentiles,
    /// Their resends answered in the window, the entries answered
    /// `deduplicated`, and those that were not.
    pub resend_batches: u64,
    pub resend_entries: u64,
    pub resend_deduplicated: u64,
    pub resend_latency_ms: Percentiles,
    /// The second pass: every batch accepted whole sent once more, from
    /// the same callers, closed loop, nothing else running.
    pub pass_batches: u64,
    pub pass_entries: u64,
    pub pass_deduplicated: u64,
    pub pass_secs: f64,
    pub pass_latency_ms: Percentiles,
    /// The gateway child's CPU over the pass, and per deduplicated entry.
    pub pass_gateway_cpu_secs: f64,
    pub pass_cpu_us_per_deduplicated: f64,
    /// Entries the emulator received during the pass (0: nothing resent
    /// reached EventBridge).
    pub pass_upstream_entries: u64,
    /// Failed entries and calls of any phase, and the first failure.
    pub failed: u64,
    pub first_failure: Option<String>,
}

impl ResendRun {
    pub fn not_deduplicated(&self) -> u64 {
        (self.resend_entries - self.resend_deduplicated.min(self.resend_entries))
            + (self.pass_entries - self.pass_deduplicated.min(self.pass_entries))
    }
}

/// Memory per key in one gateway's local store.
#[derive(Debug, Clone, Serialize)]
pub struct KeyMemory {
    pub target_keys: u64,
    pub batch_entries: usize,
    pub callers: usize,
    /// Unkeyed entries sent first, so that what the traffic itself needs
    /// (connections, buffers, the allocator's pools) is in `rss_before`.
    pub warmup_entries: u64,
    pub fill_secs: f64,
    pub accepted: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
    pub hwm_mib: f64,
    /// `partner_events_idempotency_keys` after the fill, and
    /// `_evicted_total`.
    pub keys_held: u64,
    pub evicted: u64,
}

impl KeyMemory {
    pub fn bytes_per_key(&self) -> f64 {
        (self.rss_after_mib - self.rss_before_mib) * 1024.0 * 1024.0 / self.keys_held.max(1) as f64
    }
}

impl IdempotencyBench {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        emulator_latency_ms: u64,
        callers: usize,
        window_secs: f64,
        key_chars: usize,
        detail_bytes: usize,
        runs: Vec<KeyedRun>,
        resends: Vec<ResendRun>,
        memory: Option<KeyMemory>,
        gateway_config: String,
        cluster_gateway_config: String,
    ) -> Self {
        let mut groups: Vec<(String, usize)> = Vec::new();
        for r in &runs {
            let g = (r.store.clone(), r.measurement.entries_per_batch);
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        let comparisons = groups
            .into_iter()
            .map(|(store, entries)| {
                let of = |keyed: bool| -> Vec<&KeyedRun> {
                    runs.iter()
                        .filter(|r| {
                            r.store == store
                                && r.measurement.entries_per_batch == entries
                                && r.keyed == keyed
                        })
                        .collect()
                };
                let (plain, keyed) = (of(false), of(true));
                let per_round = |f: fn(&KeyedRun) -> f64| -> Vec<f64> {
                    keyed
                        .iter()
                        .filter_map(|k| {
                            let p = plain.iter().find(|p| p.round == k.round)?;
                            Some(ratio(f(k), f(p)))
                        })
                        .collect()
                };
                let throughput_rounds = per_round(|r| r.measurement.entries_per_sec);
                let cpu_rounds = per_round(|r| r.gateway_cpu_ms_per_1k);
                let kind = |rs: &[&KeyedRun]| KindFigures {
                    entries_per_sec: median(
                        rs.iter().map(|r| r.measurement.entries_per_sec).collect(),
                    ),
                    p50_ms: median(rs.iter().map(|r| r.measurement.latency_ms.p50).collect()),
                    p99_ms: median(rs.iter().map(|r| r.measurement.latency_ms.p99).collect()),
                    gateway_cpu_ms_per_1k: median(
                        rs.iter().map(|r| r.gateway_cpu_ms_per_1k).collect(),
                    ),
                };
                let (u, k) = (kind(&plain), kind(&keyed));
                let redis_median = |rs: &[&KeyedRun], f: fn(&KeyedRun) -> Option<f64>| {
                    let v: Vec<f64> = rs.iter().filter_map(|r| f(r)).collect();
                    (!v.is_empty()).then(|| median(v))
                };
                KeyedComparison {
                    throughput_ratio: median(throughput_rounds.clone()),
                    cpu_ratio: median(cpu_rounds.clone()),
                    throughput_rounds,
                    cpu_rounds,
                    added_p50_ms: k.p50_ms - u.p50_ms,
                    added_p99_ms: k.p99_ms - u.p99_ms,
                    redis_trips_per_batch: redis_median(&keyed, KeyedRun::trips_per_batch),
                    redis_cpu_ms_per_1k: redis_median(&keyed, KeyedRun::redis_cpu_ms_per_1k),
                    redis_cpu_ms_per_1k_unkeyed: redis_median(
                        &plain,
                        KeyedRun::redis_cpu_ms_per_1k,
                    ),
                    unkeyed: u,
                    keyed: k,
                    store,
                    entries_per_batch: entries,
                }
            })
            .collect();
        Self {
            emulator_latency_ms,
            callers,
            window_secs,
            key_chars,
            detail_bytes,
            runs,
            comparisons,
            resends,
            memory,
            gateway_config,
            cluster_gateway_config,
        }
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "
idempotency: unary SYNC, {} callers, emulator {} ms per call, {:.1} s windows, a fresh gateway per run; without keys and with a {}-character key on every entry taking turns
  {:<6} {:<10} {:>5} {:<6} {:>10} {:>8} {:>8} {:>13} {:>14} {:>11} {:>12} {:>15} {:>6}",
            self.callers,
            self.emulator_latency_ms,
            self.window_secs,
            self.key_chars,
            "store",
            "scenario",
            "round",
            "keys",
            "entries/s",
            "p50 ms",
            "p99 ms",
            "gw cpu ms/1k",
            "harness ms/1k",
            "keys new",
            "redis trips",
            "redis cpu ms/1k",
            "errors"
        );
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        for r in &self.runs {
            let m = &r.measurement;
            let _ = writeln!(
                out,
                "  {:<6} {:<10} {:>5} {:<6} {:>10} {:>8.2} {:>8.2} {:>13.2} {:>14.2} {:>11} {:>12} {:>15} {:>6}",
                r.store,
                format!("unary-{}", m.entries_per_batch),
                r.round,
                if r.keyed { "keyed" } else { "none" },
                thousands(m.entries_per_sec),
                m.latency_ms.p50,
                m.latency_ms.p99,
                r.gateway_cpu_ms_per_1k,
                m.harness_cpu_secs_per_100k * 10.0,
                thousands(r.keys_new as f64),
                opt(r.trips_per_batch(), 2),
                opt(r.redis_cpu_ms_per_1k(), 2),
                m.errors + m.entries_failed + r.keys_other
                    + r.redis.map_or(0, |x| x.failed_calls + x.local_fallback)
            );
            if let Some(f) = &m.first_failure {
                let _ = writeln!(out, "        first failure: {f}");
            }
        }
        let rounds = |v: &[f64]| {
            v.iter()
                .map(|r| format!("{r:.2}x"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        for c in &self.comparisons {
            let _ = writeln!(
                out,
                "  {} unary-{}: keyed/unkeyed entries/s {} median {:.2}x; gateway CPU per entry {} median {:.2}x ({:.2} against {:.2} ms per 1k); p50/p99 ms {:.2}/{:.2} against {:.2}/{:.2}: added {:+.2}/{:+.2}{}",
                c.store,
                c.entries_per_batch,
                rounds(&c.throughput_rounds),
                c.throughput_ratio,
                rounds(&c.cpu_rounds),
                c.cpu_ratio,
                c.keyed.gateway_cpu_ms_per_1k,
                c.unkeyed.gateway_cpu_ms_per_1k,
                c.keyed.p50_ms,
                c.keyed.p99_ms,
                c.unkeyed.p50_ms,
                c.unkeyed.p99_ms,
                c.added_p50_ms,
                c.added_p99_ms,
                match (c.redis_trips_per_batch, c.redis_cpu_ms_per_1k) {
                    (Some(t), Some(cpu)) => format!(
                        "; Redis {t:.2} round trips per request, redis-server {cpu:.2} ms CPU per 1k entries ({} unkeyed)",
                        opt(c.redis_cpu_ms_per_1k_unkeyed, 2)
                    ),
                    _ => String::new(),
                }
            );
        }
        for r in &self.resends {
            let _ = writeln!(
                out,
                "  resend unary-{} x{}: {} batches sent twice in {:.1} s, the resend at once after the first's answer: first p50/p99 {:.2}/{:.2} ms, resend (deduplicated) {:.2}/{:.2} ms",
                r.entries_per_batch,
                r.callers,
                thousands(r.resend_batches as f64),
                r.window_secs,
                r.first_latency_ms.p50,
                r.first_latency_ms.p99,
                r.resend_latency_ms.p50,
                r.resend_latency_ms.p99
            );
            let _ = writeln!(
                out,
                "    second pass, every accepted batch once more: {} entries in {:.2} s ({}/s), p50/p99 {:.2}/{:.2} ms; gateway CPU {:.1} µs per deduplicated entry; {} entries reached the emulator; {} not deduplicated, {} failed",
                thousands(r.pass_entries as f64),
                r.pass_secs,
                thousands(r.pass_entries as f64 / r.pass_secs.max(1e-3)),
                r.pass_latency_ms.p50,
                r.pass_latency_ms.p99,
                r.pass_cpu_us_per_deduplicated,
                thousands(r.pass_upstream_entries as f64),
                r.not_deduplicated(),
                r.failed
            );
            if let Some(f) = &r.first_failure {
                let _ = writeln!(out, "        first failure: {f}");
            }
        }
        if let Some(m) = &self.memory {
            let _ = writeln!(
                out,
                "  memory: {} keyed entries (batches of {}, {} callers, emulator answering at once) after {} unkeyed: {} keys held, RSS {:.1} -> {:.1} MiB: {:.0} bytes per key ({} evicted, {} failed)",
                thousands(m.accepted as f64),
                m.batch_entries,
                m.callers,
                thousands(m.warmup_entries as f64),
                thousands(m.keys_held as f64),
                m.rss_before_mib,
                m.rss_after_mib,
                m.bytes_per_key(),
                m.evicted,
                m.failed
            );
            if let Some(f) = &m.first_failure {
                let _ = writeln!(out, "        first failure: {f}");
            }
        }
    }
}

/// The noisy-neighbour run: a tenant flooding one region under an emulated
/// EventBridge quota, and a quiet tenant's latency alone and during the
/// flood.
#[derive(Debug, Clone, Serialize)]
pub struct Noisy {
    /// The emulator's quota in this run: calls per second and burst.
    pub quota_calls_per_second: f64,
    pub quota_burst: u32,
    /// The gateway's pace (`quotas.upstream_calls_per_second`) and burst.
    pub gateway_calls_per_second: f64,
    pub gateway_burst: u32,
    /// The gateway's `upstream.linger_ms` (its default).
    pub linger_ms: u64,
    /// Unary requests the flood keeps in flight, and entries in each.
    pub flood_in_flight: usize,
    pub flood_entries_per_request: usize,
    /// The quiet tenant sends one 1-entry request this often.
    pub quiet_every_ms: u64,
    /// How long the flood ran before the measured window, and the
    /// accepted calls per second over the second half of that time (the
    /// pace it had reached).
    pub ramp_secs: f64,
    pub ramp_calls_per_sec: f64,
    /// The quiet tenant alone...
    pub alone: TenantRun,
    /// ...and during the flood, over the measured window.
    pub during_flood: TenantRun,
    /// The flood's requests answered in the measured window.
    pub flood: TenantRun,
    /// What the emulator counted over the measured window.
    pub upstream: QuotaUse,
    /// The gateway's config in this run.
    pub gateway_config: String,
}

/// One tenant's requests in a phase of the noisy-neighbour run.
#[derive(Debug, Clone, Serialize)]
pub struct TenantRun {
    /// Requests answered.
    pub requests: u64,
    pub entries_ok: u64,
    /// Entries answered with an error code, and requests that failed whole
    /// or were not answered.
    pub failed: u64,
    /// Send to answer.
    pub latency_ms: Percentiles,
    pub first_failure: Option<String>,
}

impl TenantRun {
    /// The figures of a tally.
    pub fn new(mut tally: Tally) -> Self {
        Self {
            latency_ms: Percentiles::of(&mut tally.latencies_us),
            requests: tally.batches,
            entries_ok: tally.entries_ok,
            failed: tally.entries_failed + tally.errors,
            first_failure: tally.first_failure,
        }
    }
}

/// The emulator's counts over the noisy run's measured window, and what
/// they say about the quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct QuotaUse {
    pub secs: f64,
    /// The quota's calls per second.
    pub quota_calls_per_second: f64,
    /// Calls received, throttled ones included...
    pub calls: u64,
    /// ...answered 200...
    pub ok_calls: u64,
    /// ...and refused by the quota.
    pub throttled: u64,
    /// Accepted entries of each tenant's source.
    pub flood_entries: u64,
    pub quiet_entries: u64,
    /// Accepted calls that carried the flood's entries: the accepted calls
    /// less the quiet tenant's. The emulator counts entries per source,
    /// not calls; a quiet request is one entry, tens of milliseconds
    /// after the last, well beyond the linger, so each of its accepted
    /// entries went in a call of its own.
    pub flood_calls: u64,
    /// `ok_calls / (secs x quota)`.
    pub quota_used: f64,
    pub flood_call_share: f64,
    pub flood_entry_share: f64,
    /// `throttled / calls`.
    pub throttled_share: f64,
}

impl QuotaUse {
    /// The figures from two readings of the emulator's counts `secs` apart,
    /// under a quota of `quota_calls_per_second`.
    pub fn between(
        before: &RecordCounts,
        after: &RecordCounts,
        flood_source: &str,
        quiet_source: &str,
        secs: f64,
        quota_calls_per_second: f64,
    ) -> Self {
        let accepted = |source: &str| {
            let of = |c: &RecordCounts| {
                c.per_source
                    .get(source)
                    .map_or(0, |s| s.delivered + s.undelivered)
            };
            of(after).saturating_sub(of(before))
        };
        let ok_calls = after.ok_calls.saturating_sub(before.ok_calls);
        let calls = after.calls.saturating_sub(before.calls);
        let throttled = after.throttled.saturating_sub(before.throttled);
        let (flood_entries, quiet_entries) = (accepted(flood_source), accepted(quiet_source));
        let flood_calls = ok_calls.saturating_sub(quiet_entries);
        let share = |part: u64, whole: u64| {
            if whole == 0 {
                0.0
            } else {
                part as f64 / whole as f64
            }
        };
        Self {
            secs,
            quota_calls_per_second,
            calls,
            ok_calls,
            throttled,
            flood_entries,
            quiet_entries,
            flood_calls,
            quota_used: if secs > 0.0 && quota_calls_per_second > 0.0 {
                ok_calls as f64 / (secs * quota_calls_per_second)
            } else {
                0.0
            },
            flood_call_share: share(flood_calls, ok_calls),
            flood_entry_share: share(flood_entries, flood_entries + quiet_entries),
            throttled_share: share(throttled, calls),
        }
    }
}

/// The quiet tenant's p99 during the flood may be at most this many times
/// its p99 alone, plus the linger...
pub const NOISY_P99_FACTOR: f64 = 3.0;
/// ...the flood must keep at least this share of the quota in use...
pub const NOISY_MIN_QUOTA_USED: f64 = 0.95;
/// ...and at most this share of the calls may be throttled.
pub const NOISY_MAX_THROTTLED: f64 = 0.01;

impl Noisy {
    /// The fair-share targets.
    pub fn targets(&self) -> Vec<Target> {
        let (alone, during) = (&self.alone, &self.during_flood);
        let bound = NOISY_P99_FACTOR * alone.latency_ms.p99 + self.linger_ms as f64;
        let u = &self.upstream;
        vec![
            Target {
                name: format!(
                    "noisy neighbour: quiet p99 during the flood <= {NOISY_P99_FACTOR}x its p99 alone + linger ({} ms)",
                    self.linger_ms
                ),
                pass: alone.requests > 0
                    && during.requests > 0
                    && during.failed == 0
                    && during.latency_ms.p99 <= bound,
                detail: format!(
                    "{:.2} ms vs bound {bound:.2} ms (alone {:.2} ms); {} requests answered during the flood, {} failed",
                    during.latency_ms.p99, alone.latency_ms.p99, during.requests, during.failed
                ),
            },
            Target {
                name: format!(
                    "noisy neighbour: quota used >= {:.0}%",
                    NOISY_MIN_QUOTA_USED * 100.0
                ),
                pass: u.quota_used >= NOISY_MIN_QUOTA_USED,
                detail: format!(
                    "{:.1}% ({} accepted calls in {:.2} s at {}/s)",
                    u.quota_used * 100.0,
                    thousands(u.ok_calls as f64),
                    u.secs,
                    thousands(u.quota_calls_per_second)
                ),
            },
            Target {
                name: format!(
                    "noisy neighbour: calls throttled by the emulator <= {:.0}%",
                    NOISY_MAX_THROTTLED * 100.0
                ),
                pass: u.calls > 0 && u.throttled_share <= NOISY_MAX_THROTTLED,
                detail: throttled_detail(u.throttled, u.calls, u.throttled_share),
            },
        ]
    }

    fn render(&self, out: &mut String) {
        let u = &self.upstream;
        let _ = writeln!(
            out,
            "
noisy neighbour: emulator quota {}/s (burst {}), gateway paced at {}/s (burst {}), linger {} ms; flood keeps {} unary requests of {} entries in flight, quiet sends 1 entry every {} ms",
            thousands(self.quota_calls_per_second),
            self.quota_burst,
            thousands(self.gateway_calls_per_second),
            self.gateway_burst,
            self.linger_ms,
            self.flood_in_flight,
            self.flood_entries_per_request,
            self.quiet_every_ms
        );
        let phase = |r: &TenantRun| {
            format!(
                "{:.2}/{:.2} ms ({} requests, {} failed)",
                r.latency_ms.p50, r.latency_ms.p99, r.requests, r.failed
            )
        };
        let _ = writeln!(
            out,
            "  quiet p50/p99: alone {}, during the flood {}",
            phase(&self.alone),
            phase(&self.during_flood)
        );
        let _ = writeln!(
            out,
            "  flood's share: {:.1}% of {} accepted calls, {:.1}% of {} accepted entries (flood {}, quiet {})",
            u.flood_call_share * 100.0,
            thousands(u.ok_calls as f64),
            u.flood_entry_share * 100.0,
            thousands((u.flood_entries + u.quiet_entries) as f64),
            thousands(u.flood_entries as f64),
            thousands(u.quiet_entries as f64)
        );
        let _ = writeln!(
            out,
            "  quota used: {:.1}% ({} accepted calls in {:.2} s at {}/s); throttled by the emulator: {} of {} calls ({:.2}%)",
            u.quota_used * 100.0,
            thousands(u.ok_calls as f64),
            u.secs,
            thousands(u.quota_calls_per_second),
            thousands(u.throttled as f64),
            thousands(u.calls as f64),
            u.throttled_share * 100.0
        );
        let _ = writeln!(
            out,
            "  flood: {} requests answered in the window, p50/p99 {:.0}/{:.0} ms, {} failed; {} calls/s accepted over the last {:.1} s of its {:.1} s ramp",
            thousands(self.flood.requests as f64),
            self.flood.latency_ms.p50,
            self.flood.latency_ms.p99,
            self.flood.failed,
            thousands(self.ramp_calls_per_sec),
            self.ramp_secs / 2.0,
            self.ramp_secs
        );
        for (who, r) in [
            ("quiet alone", &self.alone),
            ("quiet during the flood", &self.during_flood),
            ("flood", &self.flood),
        ] {
            if let Some(f) = &r.first_failure {
                let _ = writeln!(out, "  first failure, {who}: {f}");
            }
        }
    }
}

/// One target and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

/// Everything, as written to the JSON file.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub notes: Vec<String>,
    pub cpus: usize,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub unary_callers: usize,
    pub stream_batches_in_flight: usize,
    pub stream_entries_in_flight: Vec<usize>,
    pub gateway_config: String,
    pub stall_gateway_config: String,
    pub measurements: Vec<Measurement>,
    /// Target scenarios run again with baseline and gateway taking turns.
    pub paired: Vec<Paired>,
    /// Unary 20 at half the maximum, once per upstream latency.
    pub half_load: Vec<HalfLoad>,
    pub stall: Option<Stall>,
    /// The noisy-neighbour run, under an emulated quota.
    pub noisy: Option<Noisy>,
    /// Replicas sharing one quota through Redis, per lease size.
    pub cluster: Option<Cluster>,
    /// DURABLE against SYNC, group commit, restart with a large queue.
    pub durable: Option<DurableBench>,
    /// Entries with and without idempotency keys, resends, memory per key.
    pub idempotency: Option<IdempotencyBench>,
    /// 1-entry requests against health checks: the gateway's CPU over tonic's.
    pub floor: Option<Floor>,
    /// One gateway at an emulated quota.
    pub quota: Option<AtQuota>,
    pub targets: Vec<Target>,
}

impl Report {
    /// The baseline run matching a gateway run.
    pub fn baseline_of(&self, m: &Measurement) -> Option<&Measurement> {
        self.measurements
            .iter()
            .find(|b| b.path == Path::Baseline && b.same_scenario(m))
    }

    /// The paired rounds of a gateway run's scenario, latency and load.
    pub fn paired_of(&self, m: &Measurement) -> Option<&Paired> {
        self.paired.iter().find(|p| {
            p.scenario == m.scenario
                && p.emulator_latency_ms == m.emulator_latency_ms
                && p.in_flight == m.in_flight
                && !p.rounds.is_empty()
        })
    }

    /// Judges the targets from the measurements present.
    pub fn judge(&mut self, latency_ms: u64) {
        let mut targets = Vec::new();
        if let Some(g) = self.measurements.iter().find(|m| {
            m.path == Path::Gateway
                && m.scenario.starts_with("unary-20 ")
                && m.emulator_latency_ms == 0
        }) {
            if let Some(b) = self.baseline_of(g) {
                let r = ratio(g.entries_per_sec, b.entries_per_sec);
                let single = format!(
                    "{r:.2}x ({} vs {} entries/s)",
                    thousands(g.entries_per_sec),
                    thousands(b.entries_per_sec)
                );
                let (pass, detail) = match self.paired_of(g) {
                    Some(p) => (
                        p.median_ratio() >= 0.8,
                        format!("{}; first run {single}", p.describe()),
                    ),
                    None => (r >= 0.8, single),
                };
                targets.push(Target {
                    name: "unary 20/request, no latency: gateway entries/s >= 0.8x baseline".into(),
                    pass,
                    detail,
                });
            }
        }
        // A stream scenario's gateway runs at several loads: the target
        // takes the most entries/s among the runs under the latency bound
        // (or, when none is, the run with the lowest p99).
        let mut scenarios: Vec<&str> = Vec::new();
        for m in &self.measurements {
            if m.path == Path::Gateway
                && m.scenario.starts_with("stream-1 ")
                && m.emulator_latency_ms == latency_ms
                && latency_ms > 0
                && !scenarios.contains(&m.scenario.as_str())
            {
                scenarios.push(&m.scenario);
            }
        }
        for scenario in scenarios {
            let levels = self
                .measurements
                .iter()
                .filter(|m| {
                    m.path == Path::Gateway
                        && m.scenario == scenario
                        && m.emulator_latency_ms == latency_ms
                })
                .count();
            let Some(g) = best_stream_run(&self.measurements, scenario, latency_ms) else {
                continue;
            };
            if let Some(b) = self.baseline_of(g) {
                let r = ratio(g.entries_per_sec, b.entries_per_sec);
                let single = format!(
                    "{r:.1}x ({} vs {} entries/s), p99 {:.1} ms, {} batches in flight per stream (best of {levels} load levels)",
                    thousands(g.entries_per_sec),
                    thousands(b.entries_per_sec),
                    g.latency_ms.p99,
                    g.in_flight,
                );
                let (pass, detail) = match self.paired_of(g) {
                    Some(p) => (
                        p.median_ratio() >= 15.0 && p.median_p99_ms() < STREAM_P99_BOUND_MS,
                        format!(
                            "{}, median p99 {:.1} ms; first run {single}",
                            p.describe(),
                            p.median_p99_ms()
                        ),
                    ),
                    None => (r >= 15.0 && g.latency_ms.p99 < STREAM_P99_BOUND_MS, single),
                };
                targets.push(Target {
                    name: format!(
                        "{scenario}, {latency_ms} ms latency: gateway entries/s >= 15x baseline at caller p99 < 50 ms"
                    ),
                    pass,
                    detail,
                });
            }
        }
        if let Some(t) = self.stream_cpu_target(latency_ms) {
            targets.push(t);
        }
        let streams: Vec<&Measurement> = self
            .measurements
            .iter()
            .filter(|m| m.path == Path::Gateway && m.scenario.starts_with("stream-"))
            .collect();
        if let Some(worst) = streams
            .iter()
            .min_by(|a, b| a.entries_per_call.total_cmp(&b.entries_per_call))
        {
            targets.push(Target {
                name: "mean entries per upstream call under streaming saturation >= 19.5".into(),
                pass: worst.entries_per_call >= 19.5,
                detail: format!(
                    "lowest {:.2} ({}, {} ms); all stream runs: {}",
                    worst.entries_per_call,
                    worst.scenario,
                    worst.emulator_latency_ms,
                    streams
                        .iter()
                        .map(|m| format!("{:.2}", m.entries_per_call))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            });
        }
        for h in self.half_load.iter().filter(|h| h.fraction == 0.5) {
            targets.push(Target {
                name: format!(
                    "p99 added latency at half max load (unary 20, fixed rate, {} ms upstream) <= 1 ms",
                    h.emulator_latency_ms
                ),
                pass: h.added_p99_ms <= 1.0,
                detail: format!(
                    "{:+.2} ms (p99 gateway {:.2} ms, baseline {:.2} ms at {} requests/s)",
                    h.added_p99_ms,
                    h.gateway.latency_ms.p99,
                    h.baseline.latency_ms.p99,
                    thousands(h.rate)
                ),
            });
        }
        if let Some(s) = &self.stall {
            let peak = s.hwm_mib.max(s.peak_rss_mib);
            targets.push(Target {
                name: format!("{} stalled streams: gateway RSS < 150 MB", s.streams),
                pass: peak < 150.0 && s.streams_opened as usize == s.streams,
                detail: format!(
                    "peak {peak:.1} MiB (start {:.1}, end {:.1}, idle {:.1}); {} of {} streams open",
                    s.start_rss_mib, s.end_rss_mib, s.idle_rss_mib, s.streams_opened, s.streams
                ),
            });
        }
        if let Some(n) = &self.noisy {
            targets.extend(n.targets());
        }
        if let Some(q) = &self.quota {
            targets.extend(q.targets());
        }
        if let Some(d) = &self.durable {
            targets.extend(d.targets());
        }
        if let Some(f) = &self.floor {
            targets.extend(f.targets());
        }
        self.targets = targets;
    }

    /// Streams of 1-entry batches: at most [`STREAM_MAX_CPU_PER_100K`] s of
    /// gateway CPU per 100k entries, judged on stream-1 x100 at the
    /// latency runs' latency, in the run the stream target takes
    /// ([`best_stream_run`]); the scenario's other load levels are listed.
    fn stream_cpu_target(&self, latency_ms: u64) -> Option<Target> {
        const SCENARIO: &str = "stream-1 x100";
        if latency_ms == 0 {
            return None;
        }
        let g = best_stream_run(&self.measurements, SCENARIO, latency_ms)?;
        let cpu = g.gateway_cpu_secs_per_100k?;
        let levels: Vec<String> = self
            .measurements
            .iter()
            .filter(|m| {
                m.path == Path::Gateway
                    && m.scenario == SCENARIO
                    && m.emulator_latency_ms == latency_ms
            })
            .filter_map(|m| {
                Some(format!(
                    "{:.2} s at {}",
                    m.gateway_cpu_secs_per_100k?, m.in_flight
                ))
            })
            .collect();
        Some(Target {
            name: format!(
                "{SCENARIO}, {latency_ms} ms latency: gateway CPU per 100k entries (gw cpu/100k) <= {STREAM_MAX_CPU_PER_100K:.1} s"
            ),
            pass: cpu <= STREAM_MAX_CPU_PER_100K,
            detail: format!(
                "{cpu:.2} s in the run the stream target takes ({} batches in flight per stream, {} entries/s, p99 {:.1} ms); every load level (s at batches in flight): {}",
                g.in_flight,
                thousands(g.entries_per_sec),
                g.latency_ms.p99,
                levels.join(", ")
            ),
        })
    }

    /// The human-readable table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // With --only stall, noisy or cluster, there is no table.
        if !self.measurements.is_empty() {
            let _ = writeln!(
                out,
                "{:<16} {:>4} {:<8} {:>4} {:>18} {:>15} {:>13} {:>14} {:>14} {:>14} {:>11} {:>14} {:>7} {:>6}",
                "scenario",
                "lat",
                "path",
                "infl",
                "entries/s",
                "calls/s",
                "entries/call",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "gw cpu/100k",
                "all cpu/100k",
                "gw MiB",
                "errors"
            );
        }
        for m in &self.measurements {
            let b = if m.path == Path::Gateway {
                self.baseline_of(m)
            } else {
                None
            };
            let _ = writeln!(out, "{}", row(m, b));
        }
        if !self.paired.is_empty() {
            let _ = writeln!(
                out,
                "\npaired rounds: baseline and gateway taking turns, gateway entries/s over baseline's (gateway p99)"
            );
        }
        for p in &self.paired {
            let _ = writeln!(
                out,
                "  {} {} ms, {} in flight: {}  median {:.2}x",
                p.scenario,
                p.emulator_latency_ms,
                p.in_flight,
                p.rounds
                    .iter()
                    .map(|r| format!("{:.2}x ({:.1} ms)", r.ratio(), r.gateway_p99_ms))
                    .collect::<Vec<_>>()
                    .join("  "),
                p.median_ratio()
            );
        }
        for h in &self.half_load {
            let _ = writeln!(
                out,
                "\nfixed rate: unary 20 at {} requests/s ({:.0}% of the gateway's {} max with {} callers), emulator latency {} ms, latency from when each request was due",
                thousands(h.rate),
                h.fraction * 100.0,
                thousands(h.max_requests_per_sec),
                h.max_callers,
                h.emulator_latency_ms
            );
            let _ = writeln!(out, "{}", row(&h.baseline, None));
            let _ = writeln!(out, "{}", row(&h.gateway, Some(&h.baseline)));
            let _ = writeln!(out, "  added p99: {:+.2} ms", h.added_p99_ms);
            let _ = writeln!(
                out,
                "  each turn's p99 ms, baseline/gateway: {}",
                h.rounds
                    .iter()
                    .map(|(b, g)| format!("{b:.2}/{g:.2}"))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
            let (b, g) = &h.late_ms;
            let _ = writeln!(
                out,
                "  requests started late by the load generator, p50/p99 ms: baseline {:.2}/{:.2}, gateway {:.2}/{:.2}",
                b.p50, b.p99, g.p50, g.p99
            );
            let _ = writeln!(
                out,
                "  cores busy (harness and gateway, of {}): baseline {:.2}, gateway path {:.2}",
                self.cpus,
                h.baseline.cores_busy(),
                h.gateway.cores_busy()
            );
        }
        if let Some(s) = &self.stall {
            let _ = writeln!(
                out,
                "\nstall: {} of {} streams open ({} batches of {} in flight each), upstream hung, {:.0} s",
                s.streams_opened, s.streams, s.batches_in_flight_per_stream, s.entries_per_batch, s.secs
            );
            let _ = writeln!(
                out,
                "  gateway RSS MiB: idle {:.1}, start {:.1}, peak {:.1}, end {:.1}, VmHWM {:.1}",
                s.idle_rss_mib, s.start_rss_mib, s.peak_rss_mib, s.end_rss_mib, s.hwm_mib
            );
            let _ = writeln!(
                out,
                "  samples: {}",
                s.samples
                    .iter()
                    .map(|(t, m)| format!("{t:.1}s={m:.1}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let _ = writeln!(
                out,
                "  entries sent {}, answered {}, upstream calls {}",
                s.entries_sent, s.entries_answered, s.upstream_calls
            );
        }
        if let Some(n) = &self.noisy {
            n.render(&mut out);
        }
        if let Some(c) = &self.cluster {
            c.render(&mut out);
        }
        if let Some(d) = &self.durable {
            d.render(&mut out);
        }
        if let Some(i) = &self.idempotency {
            i.render(&mut out);
        }
        if let Some(q) = &self.quota {
            q.render(&mut out);
        }
        if let Some(f) = &self.floor {
            f.render(&mut out);
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\ntargets (reported, not asserted)");
            for t in &self.targets {
                let _ = writeln!(
                    out,
                    "  [{}] {}: {}",
                    if t.pass { "PASS" } else { "FAIL" },
                    t.name,
                    t.detail
                );
            }
        }
        let _ = writeln!(out, "\nnotes");
        for n in &self.notes {
            let _ = writeln!(out, "  - {n}");
        }
        out
    }
}

#[cfg(test)]
impl Measurement {
    /// A closed-loop run of 1-entry batches from 100 callers or streams
    /// over 1 s: `entries_per_sec` batches, each answered in `p99_ms`.
    pub fn closed_loop_run(
        scenario: &str,
        path: Path,
        latency_ms: u64,
        entries_per_sec: u64,
        p99_ms: u32,
        in_flight: usize,
    ) -> Self {
        let tally = Tally {
            latencies_us: vec![p99_ms * 1000; 10],
            batches: entries_per_sec,
            entries_ok: entries_per_sec,
            ..Tally::default()
        };
        Measurement::new(
            scenario.into(),
            path,
            latency_ms,
            "closed loop".into(),
            1,
            100,
            1.0,
            tally,
            UpstreamTally::default(),
            None,
            0.0,
        )
        .with_in_flight(in_flight)
    }
}

#[cfg(test)]
impl Report {
    /// A report of `measurements` alone, for tests.
    pub fn with_measurements(measurements: Vec<Measurement>) -> Self {
        Self {
            notes: vec![],
            cpus: 2,
            duration_secs: 1.0,
            warmup_secs: 0.5,
            unary_callers: 64,
            stream_batches_in_flight: 64,
            stream_entries_in_flight: vec![1000, 2000],
            gateway_config: String::new(),
            stall_gateway_config: String::new(),
            measurements,
            paired: Vec::new(),
            half_load: Vec::new(),
            stall: None,
            noisy: None,
            cluster: None,
            durable: None,
            idempotency: None,
            floor: None,
            quota: None,
            targets: vec![],
        }
    }
}

/// `3 of 750 calls (0.40%)`.
fn throttled_detail(throttled: u64, calls: u64, share: f64) -> String {
    format!(
        "{} of {} calls ({:.2}%)",
        thousands(throttled as f64),
        thousands(calls as f64),
        share * 100.0
    )
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::INFINITY
    } else {
        a / b
    }
}

/// `12,345` for 12345.4.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// `value` with its ratio to the baseline's, when there is one.
fn with_ratio(value: String, v: f64, base: Option<f64>) -> String {
    match base {
        Some(b) if b > 0.0 => format!("{value} ({:.2}x)", v / b),
        _ => value,
    }
}

fn row(m: &Measurement, b: Option<&Measurement>) -> String {
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    let all_cpu = m.gateway_cpu_secs_per_100k.unwrap_or(0.0) + m.harness_cpu_secs_per_100k;
    let all_cpu_base =
        b.map(|b| b.gateway_cpu_secs_per_100k.unwrap_or(0.0) + b.harness_cpu_secs_per_100k);
    format!(
        "{:<16} {:>4} {:<8} {:>4} {:>18} {:>15} {:>13} {:>14} {:>14} {:>14} {:>11} {:>14} {:>7} {:>6}",
        m.scenario,
        format!("{}ms", m.emulator_latency_ms),
        match m.path {
            Path::Gateway => "gateway",
            Path::Baseline => "baseline",
        },
        m.in_flight,
        with_ratio(
            thousands(m.entries_per_sec),
            m.entries_per_sec,
            b.map(|b| b.entries_per_sec)
        ),
        with_ratio(
            thousands(m.upstream_calls_per_sec),
            m.upstream_calls_per_sec,
            b.map(|b| b.upstream_calls_per_sec)
        ),
        with_ratio(
            format!("{:.2}", m.entries_per_call),
            m.entries_per_call,
            b.map(|b| b.entries_per_call)
        ),
        with_ratio(
            format!("{:.2}", m.latency_ms.p50),
            m.latency_ms.p50,
            b.map(|b| b.latency_ms.p50)
        ),
        with_ratio(
            format!("{:.2}", m.latency_ms.p99),
            m.latency_ms.p99,
            b.map(|b| b.latency_ms.p99)
        ),
        with_ratio(
            format!("{:.2}", m.latency_ms.p999),
            m.latency_ms.p999,
            b.map(|b| b.latency_ms.p999)
        ),
        opt(m.gateway_cpu_secs_per_100k, 2),
        with_ratio(format!("{all_cpu:.2}"), all_cpu, all_cpu_base),
        opt(m.gateway_peak_rss_mib, 1),
        m.errors + m.entries_failed + m.skipped,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u32> = (1..=1000).map(|i| i * 1000).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50, p.p99, p.p999, p.max), (500.0, 990.0, 999.0, 1000.0));
        assert_eq!(Percentiles::of(&mut []).p99, 0.0);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(-1000.0), "-1,000");
    }

    #[test]
    fn cores_busy_adds_the_harness_and_the_gateway() {
        let tally = Tally {
            latencies_us: vec![1000; 10],
            batches: 2_500,
            entries_ok: 50_000,
            ..Tally::default()
        };
        // Over 2 s: the harness used 1.6 s, the gateway 1.2 s.
        let m = Measurement::new(
            "unary-20 x64".into(),
            Path::Gateway,
            0,
            "fixed rate".into(),
            20,
            64,
            2.0,
            tally,
            UpstreamTally::default(),
            Some((1.2, 30.0)),
            1.6,
        );
        assert!((m.cores_busy() - 1.4).abs() < 1e-9, "{}", m.cores_busy());
    }

    fn stream_run(path: Path, entries_per_sec: u64, p99_ms: u32, in_flight: usize) -> Measurement {
        Measurement::closed_loop_run(
            "stream-1 x100",
            path,
            20,
            entries_per_sec,
            p99_ms,
            in_flight,
        )
    }

    fn report(measurements: Vec<Measurement>) -> Report {
        Report::with_measurements(measurements)
    }

    /// The stream-1 x100 target judged from `measurements` (20 ms latency).
    fn stream_target(measurements: Vec<Measurement>) -> Target {
        let mut r = report(measurements);
        r.judge(20);
        r.targets
            .into_iter()
            .find(|t| t.name.starts_with("stream-1 x100"))
            .expect("stream target")
    }

    #[test]
    fn the_stream_target_takes_the_fastest_run_under_the_latency_bound() {
        let t = stream_target(vec![
            stream_run(Path::Baseline, 4_000, 25, 1),
            stream_run(Path::Gateway, 50_000, 30, 10),
            stream_run(Path::Gateway, 64_000, 45, 20),
            stream_run(Path::Gateway, 70_000, 90, 40),
        ]);
        assert!(t.pass, "{}", t.detail);
        assert!(
            t.detail.starts_with("16.0x (64,000 vs 4,000"),
            "{}",
            t.detail
        );
        assert!(t.detail.contains("20 batches in flight"), "{}", t.detail);

        // No run under the bound: the lowest p99 is shown, and it fails.
        let t = stream_target(vec![
            stream_run(Path::Baseline, 4_000, 25, 1),
            stream_run(Path::Gateway, 70_000, 60, 20),
            stream_run(Path::Gateway, 72_000, 90, 40),
        ]);
        assert!(!t.pass);
        assert!(t.detail.contains("p99 60.0 ms"), "{}", t.detail);
    }

    fn paired(
        scenario: &str,
        latency_ms: u64,
        in_flight: usize,
        rounds: &[(f64, f64, f64)],
    ) -> Paired {
        Paired {
            scenario: scenario.into(),
            emulator_latency_ms: latency_ms,
            in_flight,
            rounds: rounds
                .iter()
                .map(|&(b, g, p99)| PairedRound {
                    baseline_entries_per_sec: b,
                    gateway_entries_per_sec: g,
                    gateway_p99_ms: p99,
                })
                .collect(),
        }
    }

    fn unary_run(path: Path, entries_per_sec: u64) -> Measurement {
        let tally = Tally {
            latencies_us: vec![1000; 10],
            batches: entries_per_sec / 20,
            entries_ok: entries_per_sec,
            ..Tally::default()
        };
        Measurement::new(
            "unary-20 x64".into(),
            path,
            0,
            "closed loop".into(),
            20,
            64,
            1.0,
            tally,
            UpstreamTally::default(),
            None,
            0.0,
        )
    }

    fn target<'a>(r: &'a Report, prefix: &str) -> &'a Target {
        r.targets
            .iter()
            .find(|t| t.name.starts_with(prefix))
            .expect("target judged")
    }

    #[test]
    fn paired_rounds_decide_the_throughput_targets() {
        let mut r = report(vec![
            unary_run(Path::Baseline, 100_000),
            unary_run(Path::Gateway, 90_000),
            stream_run(Path::Baseline, 4_000, 25, 1),
            stream_run(Path::Gateway, 50_000, 30, 10),
            stream_run(Path::Gateway, 64_000, 45, 20),
        ]);
        r.paired = vec![
            paired(
                "unary-20 x64",
                0,
                1,
                &[
                    (100_000.0, 65_000.0, 9.0),
                    (100_000.0, 70_000.0, 9.0),
                    (100_000.0, 85_000.0, 9.0),
                ],
            ),
            paired(
                "stream-1 x100",
                20,
                20,
                &[
                    (4_000.0, 70_000.0, 48.0),
                    (4_000.0, 58_000.0, 40.0),
                    (4_000.0, 66_000.0, 52.0),
                ],
            ),
        ];
        r.judge(20);
        // The first run alone would pass (0.90x); the rounds' median does not.
        let unary = target(&r, "unary 20/request");
        assert!(!unary.pass, "{}", unary.detail);
        assert!(
            unary.detail.starts_with(
                "median of 3 paired rounds 0.70x (0.65x 0.70x 0.85x); first run 0.90x"
            ),
            "{}",
            unary.detail
        );
        // Median ratio 16.5x and median p99 48 ms, at the level the target picked.
        let stream = target(&r, "stream-1 x100");
        assert!(stream.pass, "{}", stream.detail);
        assert!(
            stream.detail.contains("median p99 48.0 ms"),
            "{}",
            stream.detail
        );

        // Rounds at another load level than the one picked are not this run's.
        r.paired[1].in_flight = 10;
        r.judge(20);
        let stream = target(&r, "stream-1 x100");
        assert!(
            stream.detail.starts_with("16.0x (64,000 vs 4,000"),
            "{}",
            stream.detail
        );
        // A median p99 over the bound fails whatever the ratio.
        r.paired[1].in_flight = 20;
        r.paired[1].rounds[1].gateway_p99_ms = 55.0;
        r.judge(20);
        assert!(!target(&r, "stream-1 x100").pass);
    }

    fn counts(calls: u64, ok: u64, throttled: u64, flood: u64, quiet: u64) -> RecordCounts {
        let mut c = RecordCounts {
            calls,
            ok_calls: ok,
            throttled,
            ..RecordCounts::default()
        };
        for (source, delivered) in [("flood-src", flood), ("quiet-src", quiet)] {
            c.per_source.insert(
                source.into(),
                crate::emulator::SourceCounts {
                    delivered,
                    undelivered: 0,
                },
            );
        }
        c
    }

    #[test]
    fn the_quota_figures_come_from_two_readings_of_the_counts() {
        // Before the window: what the alone phase and the ramp left.
        let before = counts(400, 398, 2, 7_000, 150);
        // 5 s at 150/s: 735 accepted calls, 100 of them quiet's, 6 throttled.
        let after = counts(400 + 741, 398 + 735, 2 + 6, 7_000 + 12_700, 150 + 100);
        let u = QuotaUse::between(&before, &after, "flood-src", "quiet-src", 5.0, 150.0);
        assert_eq!(
            (
                u.calls,
                u.ok_calls,
                u.throttled,
                u.flood_entries,
                u.quiet_entries,
                u.flood_calls
            ),
            (741, 735, 6, 12_700, 100, 635)
        );
        assert!((u.quota_used - 0.98).abs() < 1e-9, "{}", u.quota_used);
        assert!((u.flood_call_share - 635.0 / 735.0).abs() < 1e-9);
        assert!((u.flood_entry_share - 12_700.0 / 12_800.0).abs() < 1e-9);
        assert!((u.throttled_share - 6.0 / 741.0).abs() < 1e-9);

        // A source the emulator never saw counts 0; nothing at all divides by nothing.
        let u = QuotaUse::between(&before, &before, "flood-src", "none", 0.0, 150.0);
        assert_eq!((u.quiet_entries, u.ok_calls), (0, 0));
        assert_eq!(
            (
                u.quota_used,
                u.flood_call_share,
                u.flood_entry_share,
                u.throttled_share
            ),
            (0.0, 0.0, 0.0, 0.0)
        );
    }

    fn tenant_run(requests: u64, p99_ms: f64, failed: u64) -> TenantRun {
        TenantRun {
            requests,
            entries_ok: requests,
            failed,
            latency_ms: Percentiles {
                p50: p99_ms / 2.0,
                p99: p99_ms,
                p999: p99_ms,
                max: p99_ms,
            },
            first_failure: None,
        }
    }

    fn noisy(alone_p99: f64, during_p99: f64, ok_calls: u64, throttled: u64) -> Noisy {
        let before = counts(0, 0, 0, 0, 0);
        let after = counts(
            ok_calls + throttled,
            ok_calls,
            throttled,
            ok_calls * 20,
            100,
        );
        Noisy {
            quota_calls_per_second: 150.0,
            quota_burst: 300,
            gateway_calls_per_second: 150.0,
            gateway_burst: 5,
            linger_ms: 5,
            flood_in_flight: 256,
            flood_entries_per_request: 20,
            quiet_every_ms: 50,
            ramp_secs: 1.0,
            ramp_calls_per_sec: 150.0,
            alone: tenant_run(100, alone_p99, 0),
            during_flood: tenant_run(100, during_p99, 0),
            flood: tenant_run(600, 1_700.0, 0),
            upstream: QuotaUse::between(&before, &after, "flood-src", "quiet-src", 5.0, 150.0),
            gateway_config: String::new(),
        }
    }

    fn passes(n: &Noisy) -> Vec<bool> {
        n.targets().iter().map(|t| t.pass).collect()
    }

    #[test]
    fn the_noisy_targets_judge_latency_quota_used_and_throttling() {
        // p99 2 ms alone: the bound is 3 x 2 + 5 = 11 ms. 713 of 750 calls
        // is 95.07% of the quota; 7 throttled of 720 is 0.97%.
        let n = noisy(2.0, 11.0, 713, 7);
        assert_eq!(passes(&n), [true, true, true], "{:?}", n.targets());
        let t = &n.targets()[0];
        assert!(
            t.detail
                .starts_with("11.00 ms vs bound 11.00 ms (alone 2.00 ms)"),
            "{}",
            t.detail
        );
        assert!(n.targets()[1]
            .detail
            .starts_with("95.1% (713 accepted calls in 5.00 s at 150/s)"));

        // Just over each bound.
        assert_eq!(passes(&noisy(2.0, 11.1, 713, 7)), [false, true, true]);
        assert_eq!(passes(&noisy(2.0, 11.0, 712, 7)), [true, false, true]);
        assert_eq!(passes(&noisy(2.0, 11.0, 713, 8)), [true, true, false]);

        // A quiet request that failed during the flood fails the latency
        // target whatever the p99 of the others; so does having no figures.
        let mut n = noisy(2.0, 3.0, 713, 0);
        n.during_flood.failed = 1;
        assert!(!n.targets()[0].pass);
        let mut n = noisy(2.0, 3.0, 713, 0);
        n.alone.requests = 0;
        assert!(!n.targets()[0].pass);
        assert_eq!(passes(&noisy(2.0, 3.0, 0, 0)), [true, false, false]);
    }

    #[test]
    fn the_noisy_run_is_judged_and_printed_with_the_report() {
        let mut r = report(Vec::new());
        r.noisy = Some(noisy(2.0, 4.0, 735, 0));
        r.judge(20);
        let names: Vec<&str> = r.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "noisy neighbour: quiet p99 during the flood <= 3x its p99 alone + linger (5 ms)",
                "noisy neighbour: quota used >= 95%",
                "noisy neighbour: calls throttled by the emulator <= 1%",
            ]
        );
        let out = r.render();
        assert!(
            out.contains("  quiet p50/p99: alone 1.00/2.00 ms (100 requests, 0 failed), during the flood 2.00/4.00 ms (100 requests, 0 failed)"),
            "{out}"
        );
        assert!(
            out.contains("  quota used: 98.0% (735 accepted calls in 5.00 s at 150/s)"),
            "{out}"
        );
        assert!(
            out.contains("[PASS] noisy neighbour: quota used >= 95%"),
            "{out}"
        );
    }

    #[test]
    fn the_cluster_run_prints_figures_per_call_for_each_lease() {
        let run = |lease_calls, redis_round_trips| ClusterRun {
            lease_calls,
            upstream: QuotaWindow {
                secs: 5.0,
                quota_calls_per_second: 150.0,
                calls: 750,
                ok_calls: 747,
                throttled: 3,
                delivered: 15_000,
                quota_used: 1.0,
                throttled_share: 0.004,
            },
            gateway_cpu_secs: 1.5,
            redis_cpu_secs: 0.15,
            redis_round_trips,
            requests: 15_000,
            failed: 0,
            first_failure: None,
        };
        let mut r = report(Vec::new());
        r.cluster = Some(Cluster {
            replicas: 3,
            quota_calls_per_second: 150.0,
            quota_burst: 20,
            gateway_burst: 5,
            in_flight_per_replica: 150,
            warmup_secs: 1.0,
            runs: vec![run(1, 1500), run(4, 750)],
            gateway_config: String::new(),
        });
        let out = r.render();
        assert!(out.contains("cluster: 3 replicas"), "{out}");
        // 750 calls in 5 s; 2 and 1 round trips per call; 2,000 and 200 µs
        // of CPU per call.
        for lease in ["1", "4"] {
            let line = out
                .lines()
                .find(|l| l.split_whitespace().next() == Some(lease))
                .unwrap_or_else(|| panic!("no row for lease {lease}: {out}"));
            assert!(line.contains("150.0") && line.contains("100.0%"), "{line}");
            assert!(
                line.contains("2000 µs") && line.contains("200.0 µs"),
                "{line}"
            );
        }
        assert!(out.contains(" 2.00 ") && out.contains(" 1.00 "), "{out}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["cluster"]["runs"][1]["redis_round_trips"], 750);
    }

    /// A durable run of `entries`-entry requests at `entries_per_sec`, p99 `p99_ms`.
    fn durable_run(
        delivery: &str,
        round: u32,
        entries: usize,
        entries_per_sec: u64,
        p99_ms: f64,
        commits: CommitFigures,
    ) -> DurableRun {
        let mut m = unary_run(Path::Gateway, entries_per_sec);
        m.entries_per_batch = entries;
        m.latency_ms.p99 = p99_ms;
        DurableRun {
            delivery: delivery.into(),
            round,
            measurement: m,
            commits,
            server: ServerP99s {
                put_handling_ms: Some(8.0),
                commit_ms: Some(f64::INFINITY),
            },
        }
    }

    #[test]
    fn the_durable_run_gives_ratios_per_batch_size_and_prints_its_restarts() {
        let commits = CommitFigures {
            secs: 2.0,
            commits: 100,
            changes: 800,
            commit_seconds: 0.2,
            enqueued: 4_000,
            queued_at_end: 0,
        };
        let run = |delivery: &str, round, entries, entries_per_sec: u64, p99_ms| {
            durable_run(delivery, round, entries, entries_per_sec, p99_ms, commits)
        };
        let runs = vec![
            run("sync", 1, 1, 2_000, 30.0),
            run("durable", 1, 1, 6_000, 20.0),
            run("durable", 2, 1, 9_000, 24.0),
            run("sync", 2, 1, 3_000, 32.0),
            run("sync", 1, 20, 40_000, 60.0),
            run("durable", 1, 20, 20_000, 90.0),
        ];
        let restart = Restart {
            fill: "grpc".into(),
            target_entries: 1_000_000,
            filled_entries: 1_000_000,
            fill_secs: 50.0,
            fill_batch_entries: 500,
            fill_callers: 8,
            detail_bytes: 228,
            file_bytes: 450_000_000,
            allocated_bytes: 450_000_000,
            queued_at_open: 1_000_000,
            stop_secs: Some(1.0),
            open_ms: 2_000,
            open_logged_ms: 2_050.0,
            serving_ms: 2_100.0,
            rss_mib: 300.0,
            fill_failed: 0,
            first_failure: None,
        };
        let d = DurableBench::new(20, 64, 228, runs, vec![], vec![restart], String::new());
        assert_eq!(d.ratios.len(), 2);
        // Each DURABLE run over the SYNC run of its own round.
        assert_eq!(d.ratios[0].rounds, vec![3.0, 3.0]);
        assert_eq!(d.ratios[0].median, 3.0);
        assert_eq!(
            (d.ratios[0].sync_p99_ms, d.ratios[0].durable_p99_ms),
            (31.0, 22.0)
        );
        assert_eq!(d.ratios[1].rounds, vec![0.5]);
        assert_eq!(d.restarts[0].bytes_per_entry(), 450.0);
        let mut r = report(Vec::new());
        r.durable = Some(d);
        let out = r.render();
        assert!(
            out.contains("unary-1: DURABLE/SYNC acks/s 3.00x 3.00x median 3.00x"),
            "{out}"
        );
        assert!(
            out.contains("unary-20: DURABLE/SYNC acks/s 0.50x median 0.50x"),
            "{out}"
        );
        // 100 commits in 2 s, 40 acks and 8 changes each, 2 ms each.
        assert!(
            out.contains(" 50.0 ") && out.contains(" 40.0 ") && out.contains(" 2.00 "),
            "{out}"
        );
        assert!(
            out.contains("450 bytes per entry for 228-byte details"),
            "{out}"
        );
        assert!(out.contains("health SERVING at 2100 ms"), "{out}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["durable"]["restarts"][0]["open_ms"], 2_000);
        assert_eq!(json["durable"]["ratios"][1]["median"], 0.5);
    }
    #[test]
    fn the_idempotency_run_compares_each_round_keyed_over_unkeyed_and_prints_its_figures() {
        let run = |store: &str, keyed, round, entries_per_sec: u64, cpu_ms: f64, p50_ms| {
            let mut m = unary_run(Path::Gateway, entries_per_sec);
            m.latency_ms.p50 = p50_ms;
            KeyedRun {
                store: store.into(),
                keyed,
                round,
                measurement: m,
                gateway_cpu_ms_per_1k: cpu_ms,
                keys_new: if keyed { entries_per_sec } else { 0 },
                keys_other: 0,
                redis: (store == "redis").then_some(RedisUse {
                    claim_calls: if keyed { 100 } else { 0 },
                    settle_calls: if keyed { 100 } else { 0 },
                    cpu_secs: if keyed { 0.03 } else { 0.0 },
                    ..RedisUse::default()
                }),
            }
        };
        let runs = vec![
            run("memory", false, 1, 2_000, 10.0, 25.0),
            run("memory", true, 1, 1_000, 20.0, 27.0),
            run("memory", true, 2, 3_000, 15.0, 29.0),
            run("memory", false, 2, 2_000, 10.0, 25.0),
            run("redis", false, 1, 2_000, 10.0, 25.0),
            run("redis", true, 1, 1_500, 15.0, 35.0),
        ];
        let memory = KeyMemory {
            target_keys: 200_000,
            batch_entries: 500,
            callers: 8,
            warmup_entries: 200_000,
            fill_secs: 4.0,
            accepted: 200_000,
            failed: 0,
            first_failure: None,
            rss_before_mib: 100.0,
            rss_after_mib: 150.0,
            hwm_mib: 160.0,
            keys_held: 200_000,
            evicted: 0,
        };
        assert_eq!(memory.bytes_per_key(), 262.144);
        let b = IdempotencyBench::new(
            20,
            64,
            2.5,
            36,
            228,
            runs,
            Vec::new(),
            Some(memory),
            String::new(),
            String::new(),
        );
        assert_eq!(b.comparisons.len(), 2);
        let m = &b.comparisons[0];
        // Each keyed run over the unkeyed run of its own round.
        assert_eq!(m.throughput_rounds, vec![0.5, 1.5]);
        assert_eq!(m.cpu_rounds, vec![2.0, 1.5]);
        assert_eq!((m.throughput_ratio, m.cpu_ratio), (1.0, 1.75));
        assert_eq!((m.added_p50_ms, m.redis_trips_per_batch), (3.0, None));
        let r = &b.comparisons[1];
        // 200 round trips for 1,500 / 20 = 75 requests; 30 ms for 1,500 entries.
        assert_eq!(r.redis_trips_per_batch, Some(200.0 / 75.0));
        assert_eq!(r.redis_cpu_ms_per_1k, Some(20.0));
        assert_eq!(r.redis_cpu_ms_per_1k_unkeyed, Some(0.0));
        let mut report = report(Vec::new());
        report.idempotency = Some(b);
        let out = report.render();
        assert!(
            out.contains("memory unary-20: keyed/unkeyed entries/s 0.50x 1.50x median 1.00x; gateway CPU per entry 2.00x 1.50x median 1.75x"),
            "{out}"
        );
        assert!(out.contains("Redis 2.67 round trips per request"), "{out}");
        assert!(
            out.contains("RSS 100.0 -> 150.0 MiB: 262 bytes per key"),
            "{out}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["idempotency"]["comparisons"][0]["cpu_ratio"], 1.75);
        assert_eq!(json["idempotency"]["memory"]["keys_held"], 200_000);
    }

    fn floor_turn(call: FloorCall, requests: u64, cpu_secs: f64, failed: u64) -> FloorTurn {
        let tally = Tally {
            latencies_us: vec![20_000; requests as usize],
            batches: requests,
            entries_ok: requests - failed,
            entries_failed: failed,
            ..Tally::default()
        };
        let upstream = UpstreamTally {
            calls: requests / 20,
            entries: requests,
            failed_calls: 0,
        };
        FloorTurn::new(call, 1.0, tally, cpu_secs, upstream)
    }

    fn floor(rounds: &[(f64, f64)]) -> Floor {
        let rounds = rounds
            .iter()
            .enumerate()
            .map(|(i, &(put_cpu, health_cpu))| FloorRound {
                round: i as u32 + 1,
                first: if i % 2 == 0 {
                    FloorCall::Put
                } else {
                    FloorCall::Health
                },
                put: floor_turn(FloorCall::Put, 10_000, put_cpu, 0),
                health: floor_turn(FloorCall::Health, 20_000, health_cpu, 0),
            })
            .collect();
        Floor::new(20, 512, 0.5, 1.0, rounds)
    }

    #[test]
    fn the_floor_target_is_the_median_of_each_rounds_cpu_per_request_ratio() {
        // 10,000 puts on 0.375 s = 37.5 µs each, 20,000 checks on 0.5 s =
        // 25 µs: 1.5x.
        let f = floor(&[(0.375, 0.5), (0.5, 0.5), (0.3125, 0.5)]);
        assert_eq!(f.rounds[0].put.cpu_us_per_request, 37.5);
        assert_eq!(f.rounds[0].health.cpu_us_per_request, 25.0);
        assert_eq!(f.ratios, vec![1.5, 2.0, 1.25]);
        assert_eq!(f.median_ratio, 1.5);
        assert_eq!(f.rounds[0].put.entries_per_call, 20.0);
        let t = &f.targets()[0];
        assert!(t.pass, "{}", t.detail);
        assert!(
            t.detail.starts_with(
                "median of 3 rounds 1.50x (1.50x 2.00x 1.25x); 37.5 against 25.0 µs per request"
            ),
            "{}",
            t.detail
        );
        // Over the bound, or a failed request, fails it.
        assert!(!floor(&[(0.4, 0.5), (0.5, 0.5)]).targets()[0].pass);
        let mut f = floor(&[(0.25, 0.5), (0.25, 0.5)]);
        assert!(f.targets()[0].pass);
        f.rounds[1].health = floor_turn(FloorCall::Health, 20_000, 0.5, 1);
        assert!(!f.targets()[0].pass);

        let mut r = report(Vec::new());
        r.floor = Some(floor(&[(0.375, 0.5), (0.5, 0.5)]));
        r.judge(20);
        assert!(
            r.targets[0].name.starts_with(
                "floor: gateway CPU per 1-entry request <= 1.5x a grpc.health.v1 Check's (512 in flight, 20 ms upstream)"
            ),
            "{}",
            r.targets[0].name
        );
        let out = r.render();
        assert!(
            out.contains("put over health: 1.50x 2.00x median 1.75x"),
            "{out}"
        );
        assert!(out.contains("10,000") && out.contains("20,000"), "{out}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["floor"]["rounds"][1]["first"], "health");
        assert_eq!(json["floor"]["median_ratio"], 1.75);
    }

    fn at_quota(delivered: u64, ok_calls: u64, throttled: u64) -> AtQuota {
        let before = RecordCounts::default();
        let after = RecordCounts {
            calls: ok_calls + throttled,
            ok_calls,
            throttled,
            delivered,
            ..RecordCounts::default()
        };
        AtQuota {
            quota_calls_per_second: 150.0,
            quota_burst: 20,
            gateway_calls_per_second: 150.0,
            gateway_burst: 5,
            emulator_latency_ms: 20,
            in_flight: 512,
            warmup_secs: 1.0,
            upstream: QuotaWindow::between(&before, &after, 5.0, 150.0),
            callers: tenant_run(delivered, 180.0, 0),
            gateway_cpu_secs: 1.5,
            gateway_config: String::new(),
        }
    }

    #[test]
    fn the_quota_run_judges_the_share_of_the_physical_limit_and_throttling() {
        // 5 s at 150 calls/s x 20: 15,000 entries is the limit; 14,250 is 95%.
        let q = at_quota(14_250, 713, 0);
        assert_eq!(q.upstream.quota_used, 0.95);
        assert!((q.upstream.entries_per_call() - 14_250.0 / 713.0).abs() < 1e-9);
        assert_eq!(
            q.targets().iter().map(|t| t.pass).collect::<Vec<_>>(),
            [true, true]
        );
        assert!(
            q.targets()[0]
                .detail
                .starts_with("95.0% (2,850 of 3,000 entries/s; 19.99 entries per call"),
            "{}",
            q.targets()[0].detail
        );
        assert!(!at_quota(14_249, 713, 0).targets()[0].pass);
        assert!(!at_quota(15_000, 750, 1).targets()[1].pass);
        // No calls at all is no figure, not a pass.
        assert!(!at_quota(0, 0, 0).targets()[1].pass);

        let mut r = report(Vec::new());
        r.quota = Some(at_quota(15_000, 750, 0));
        r.judge(20);
        assert_eq!(r.targets.len(), 2);
        let out = r.render();
        assert!(
            out.contains("delivered 3,000 entries/s of the limit 3,000/s (150/s x 20): 100.0%"),
            "{out}"
        );
        assert!(out.contains("gateway CPU 2000 µs per call"), "{out}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["quota"]["upstream"]["throttled"], 0);
    }

    #[test]
    fn the_durable_targets_take_the_unary_20_median_and_the_half_load_p99() {
        let run = |delivery: &str, round, entries, entries_per_sec: u64, p99_ms| {
            durable_run(
                delivery,
                round,
                entries,
                entries_per_sec,
                p99_ms,
                CommitFigures::default(),
            )
        };
        let runs = vec![
            run("sync", 1, 20, 40_000, 60.0),
            run("durable", 1, 20, 20_000, 90.0),
            run("durable", 2, 20, 32_000, 90.0),
            run("sync", 2, 20, 40_000, 60.0),
        ];
        let durable = |half_load: Vec<DurableHalfLoad>| {
            DurableBench::new(20, 64, 228, runs.clone(), half_load, vec![], String::new())
        };
        let half = |p99_ms| DurableHalfLoad {
            basis: HalfLoadBasis::Sustained,
            max_requests_per_sec: 1_250.0,
            maxima: vec![1_000.0, 1_500.0],
            fraction: 0.5,
            rate: 625.0,
            rounds: vec![HalfLoadRound {
                p50_ms: 1.0,
                p99_ms,
                failed: 0,
            }],
            run: run("durable", 1, 20, 12_500, p99_ms),
            late_ms: Percentiles::default(),
        };
        let d = durable(vec![half(9.9)]);
        let t = d.targets();
        assert_eq!(t.len(), 2);
        // Rounds 0.50x and 0.80x: median 0.65x.
        assert!(
            t[0].pass
                && t[0]
                    .detail
                    .starts_with("median of 2 rounds 0.65x (0.50x 0.80x)"),
            "{}",
            t[0].detail
        );
        assert!(t[1].pass, "{}", t[1].detail);
        assert!(
            t[1].detail.starts_with("median of 1 rounds: p99 9.90 ms"),
            "{}",
            t[1].detail
        );
        let d = durable(vec![half(10.0)]);
        assert!(!d.targets()[1].pass);
        // A round with failures fails it, whatever the median round did.
        let mut failing = half(5.0);
        failing.rounds.push(HalfLoadRound {
            p50_ms: 1.0,
            p99_ms: 4.0,
            failed: 3,
        });
        let d = durable(vec![failing]);
        let t = d.targets();
        assert!(!t[1].pass);
        assert!(
            t[1].detail
                .contains("p99 per round 5.00 / 4.00 ms; 3 failed"),
            "{}",
            t[1].detail
        );
        // Half the acceptance maximum, above what delivery sustains, is
        // printed beside the judged run, and does not change its verdict.
        let mut burst = half(40.0);
        burst.basis = HalfLoadBasis::Acceptance;
        burst.rate = 900.0;
        let d = durable(vec![half(9.9), burst.clone()]);
        let t = d.targets();
        assert_eq!(t.len(), 2);
        assert!(t[1].pass, "{}", t[1].detail);
        assert!(
            t[1].detail.ends_with("; at half its acceptance maximum (900 requests/s, above what delivery sustains) p99 40.00 ms"),
            "{}",
            t[1].detail
        );
        // The acceptance run alone is not judged.
        let d = durable(vec![burst]);
        assert_eq!(d.targets().len(), 1);
        // Another share of the maximum is printed, not judged.
        let mut other = half(3.0);
        other.fraction = 0.25;
        let d = durable(vec![other]);
        assert_eq!(d.targets().len(), 1);
        let mut r = report(Vec::new());
        r.durable = Some(d);
        let out = r.render();
        assert!(
            out.contains("half load: DURABLE unary-20 at 625 requests/s (25% of the most it sustains (per round the lesser of DURABLE's acks/s and SYNC's delivered entries/s): median 1,250 requests/s; rounds 1,000 1,500)"),
            "{out}"
        );
        assert!(
            out.contains(
                "in the gateway: PutPartnerEvents p99 <= 8.0 ms, commit p99 beyond the last bucket"
            ),
            "{out}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["durable"]["half_load"][0]["basis"], "sustained");
        let server = &json["durable"]["half_load"][0]["run"]["server"];
        assert_eq!(server["put_handling_ms"], 8.0);
        assert_eq!(server["commit_ms"], "+Inf");
    }

    #[test]
    fn the_stream_cpu_target_takes_the_run_the_stream_target_takes() {
        let cpu = |m: Measurement, cpu: f64| Measurement {
            gateway_cpu_secs_per_100k: Some(cpu),
            ..m
        };
        let mut r = report(vec![
            stream_run(Path::Baseline, 4_000, 25, 1),
            cpu(stream_run(Path::Gateway, 50_000, 30, 10), 0.9),
            cpu(stream_run(Path::Gateway, 64_000, 45, 20), 1.1),
            cpu(stream_run(Path::Gateway, 70_000, 90, 40), 0.8),
        ]);
        r.judge(20);
        let t = target(
            &r,
            "stream-1 x100, 20 ms latency: gateway CPU per 100k entries",
        );
        assert!(!t.pass, "{}", t.detail);
        assert!(
            t.detail.starts_with("1.10 s in the run the stream target takes (20 batches in flight per stream, 64,000 entries/s"),
            "{}",
            t.detail
        );
        assert!(
            t.detail
                .ends_with("0.90 s at 10, 1.10 s at 20, 0.80 s at 40"),
            "{}",
            t.detail
        );
        r.measurements[2].gateway_cpu_secs_per_100k = Some(1.0);
        r.judge(20);
        assert!(target(&r, "stream-1 x100, 20 ms latency: gateway CPU").pass);
        // Not judged without the latency runs.
        r.judge(0);
        assert!(!r.targets.iter().any(|t| t.name.contains("gw cpu/100k")));
    }
}
