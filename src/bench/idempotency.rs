//! The idempotency run (`bench --only idempotency`): what an idempotency
//! key on every entry costs, with the keys in the gateway's memory and in
//! Redis (cluster mode); what a resend answered from its first entry
//! costs; and the local store's memory per key.
//!
//! Side by side: unary SYNC batches of 1 and 20 entries from the unary
//! callers, the emulator at the latency runs' latency, without keys and
//! with a key of its own on every entry taking turns (which goes first
//! alternating), a fresh gateway child per run with the same config (only
//! the requests' keys differ). Then the same in cluster mode: each child
//! with `[cluster]` on a redis-server started for this run (a key prefix
//! per run), its Redis round trips read from its own metrics
//! (`partner_events_cluster_redis_calls_total` by op) and redis-server's
//! CPU from `/proc`.
//!
//! Resends: every batch is sent twice, the second time at once after the
//! first's answer (every entry of it should come back `deduplicated`);
//! then every batch accepted whole is sent once more with nothing else
//! running, for the gateway's CPU per deduplicated entry.
//!
//! Memory: one gateway (the emulator answering at once) takes unkeyed
//! batches of 500 first, so that what the traffic needs is in its RSS,
//! then keyed ones; the RSS grown over the keys it holds
//! (`partner_events_idempotency_keys`).

use std::{net::SocketAddr, time::Duration};

use tokio::time::Instant;

use super::{
    child::{
        free_port, metrics_scrape, proc_stats, sum_samples, sum_samples_with, GatewayChild,
        RedisChild,
    },
    child_toml_at, count_upstream, join_load, latency_rules,
    load::{self, GatewayClients, Keys, Window},
    report::{
        self, per_1k_ms, IdempotencyBench, KeyMemory, KeyedRun, Measurement, Path, Percentiles,
        RedisUse, ResendRun,
    },
    start_gateway, tenant_toml, Harness,
};
use crate::proto::DeliveryMode;

/// Entries per request in the side-by-side and resend runs.
const BATCHES: [usize; 2] = [1, 20];
/// Rounds of turns (without and with keys once each per round).
const ROUNDS: u32 = 3;
const QUICK_ROUNDS: u32 = 1;
/// Each run's warm-up and measured window: shorter than the other
/// scenarios' (24 side-by-side runs fit in about a minute and a half).
const WARMUP: Duration = Duration::from_millis(500);
const WINDOW: Duration = Duration::from_millis(2_500);
const QUICK_WINDOW: Duration = Duration::from_secs(1);
/// Bound on the resend run's second pass (it takes a second or two), and
/// on finishing the batches under way when its first phase ends.
const PASS_BOUND: Duration = Duration::from_secs(30);
const DRAIN: Duration = Duration::from_secs(10);
/// The memory run: keyed entries, after as many unkeyed ones (so that
/// the traffic's own memory is in the RSS before the keys, however much
/// of it the allocator keeps), in batches of the API's default most
/// entries per request, from this many callers, within this bound.
pub const MEMORY_KEYS: u64 = 200_000;
pub const QUICK_MEMORY_KEYS: u64 = 20_000;
const MEMORY_BATCH_ENTRIES: usize = 500;
const MEMORY_CALLERS: usize = 8;
const MEMORY_FILL_BOUND: Duration = Duration::from_secs(120);
/// Cluster mode: how long a child may take to join Redis, and how long it
/// waits for Redis's answer before it goes on alone (the default, 50 ms,
/// is shorter than this machine's p99 under load: a fallback would move
/// keys into memory mid-run and mix the two stores).
const JOIN_BOUND: Duration = Duration::from_secs(10);
const REDIS_TIMEOUT_MS: u64 = 1_000;

/// The metrics read from a child.
const ENTRIES: &str = "partner_events_idempotency_entries_total";
const KEYS_HELD: &str = "partner_events_idempotency_keys";
const EVICTED: &str = "partner_events_idempotency_evicted_total";
const LOCAL_FALLBACK: &str = "partner_events_idempotency_local_fallback_total";
const REDIS_CALLS: &str = "partner_events_cluster_redis_calls_total";
const JOINED: &str = "partner_events_cluster_joined";

/// Where a child keeps its keys.
#[derive(Clone, Copy)]
enum Store<'a> {
    Memory,
    /// Cluster mode, through this Redis.
    Redis(&'a RedisChild),
}

impl Store<'_> {
    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis(_) => "redis",
        }
    }
}

/// The config of every idempotency run's gateway: the throughput runs'
/// (unpaced, wide bounds), metrics at `metrics`, default `[idempotency]`;
/// in cluster mode `[cluster]` on `redis` under `key_prefix`.
fn idempotency_toml(
    endpoint_url: &str,
    metrics: &str,
    linger_ms: Option<u64>,
    cluster: Option<(&str, &str)>,
) -> String {
    let mut upstream = "max_concurrent_calls = 512\n".to_string();
    if let Some(l) = linger_ms {
        upstream.push_str(&format!("linger_ms = {l}\n"));
    }
    let mut tenants = tenant_toml(load::TENANT, load::SOURCE, None);
    if let Some((url, prefix)) = cluster {
        tenants.push_str(&format!(
            "\n[cluster]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\ntimeout_ms = {REDIS_TIMEOUT_MS}\n"
        ));
    }
    child_toml_at(
        "127.0.0.1:0",
        if cluster.is_some() {
            "idempotency runs, cluster mode"
        } else {
            "idempotency runs"
        },
        endpoint_url,
        "max_in_flight_entries = 1000000\n",
        &upstream,
        "upstream_calls_per_second = 0",
        &tenants,
        metrics,
    )
}

/// The whole idempotency run.
pub async fn idempotency(h: &Harness) -> Result<IdempotencyBench, String> {
    let plan = &h.plan;
    let rounds = if plan.quick { QUICK_ROUNDS } else { ROUNDS };
    let window = window(plan.quick);
    let latency_ms = plan.latency_ms;
    eprintln!(
        "idempotency: unary {BATCHES:?} entries x{} callers, emulator {latency_ms} ms per call, without and with keys taking turns, {rounds} rounds of {window:?}, in memory then in Redis; resends; memory per key",
        plan.unary_callers
    );
    let redis = match tokio::task::spawn_blocking(RedisChild::start).await {
        Ok(Ok(r)) => Some(r),
        Ok(Err(e)) => {
            eprintln!("idempotency: no cluster-mode runs: {e}");
            None
        }
        Err(e) => return Err(format!("redis start task failed: {e}")),
    };
    let mut stores = vec![Store::Memory];
    if let Some(r) = &redis {
        stores.push(Store::Redis(r));
    }
    let mut runs = Vec::new();
    let mut run_no = 0u32;
    for store in stores {
        for entries in BATCHES {
            for round in 0..rounds {
                let order = if round.is_multiple_of(2) {
                    [false, true]
                } else {
                    [true, false]
                };
                for keyed in order {
                    run_no += 1;
                    let r = measure(h, store, entries, keyed, round + 1, run_no, window).await?;
                    let m = &r.measurement;
                    eprintln!(
                        "idempotency: {} unary-{entries} {} round {}: {} entries/s, p50 {:.2} ms, p99 {:.2} ms, gateway {:.2} ms CPU per 1k entries{}{}",
                        r.store,
                        if keyed { "keyed" } else { "unkeyed" },
                        r.round,
                        report::thousands(m.entries_per_sec),
                        m.latency_ms.p50,
                        m.latency_ms.p99,
                        r.gateway_cpu_ms_per_1k,
                        match (r.trips_per_batch(), r.redis_cpu_ms_per_1k()) {
                            (Some(t), Some(c)) => format!(
                                ", {t:.2} Redis round trips per request, redis-server {c:.2} ms CPU per 1k"
                            ),
                            _ => String::new(),
                        },
                        m.first_failure
                            .as_deref()
                            .map(|f| format!(", first failure: {f}"))
                            .unwrap_or_default()
                    );
                    runs.push(r);
                }
            }
        }
    }
    drop(redis);
    let mut resends = Vec::new();
    for entries in BATCHES {
        let r = resend(h, entries, window).await?;
        eprintln!(
            "idempotency: resend unary-{entries}: resend p50 {:.2} ms, p99 {:.2} ms (first {:.2}/{:.2}); second pass {:.1} µs CPU per deduplicated entry, {} not deduplicated",
            r.resend_latency_ms.p50,
            r.resend_latency_ms.p99,
            r.first_latency_ms.p50,
            r.first_latency_ms.p99,
            r.pass_cpu_us_per_deduplicated,
            r.not_deduplicated()
        );
        resends.push(r);
    }
    let memory = memory(h).await?;
    eprintln!(
        "idempotency: memory: {} keys held, RSS {:.1} -> {:.1} MiB, {:.0} bytes per key",
        report::thousands(memory.keys_held as f64),
        memory.rss_before_mib,
        memory.rss_after_mib,
        memory.bytes_per_key()
    );
    h.emulator.set_faults(Vec::new());
    let url = h.emulator.endpoint_url();
    Ok(IdempotencyBench::new(
        latency_ms,
        plan.unary_callers,
        window.as_secs_f64(),
        Keys::new(&key_tag(1)).key_chars(),
        load::detail().len(),
        runs,
        resends,
        Some(memory),
        idempotency_toml(&url, "127.0.0.1:<port>", plan.linger_ms, None),
        idempotency_toml(
            &url,
            "127.0.0.1:<port>",
            plan.linger_ms,
            Some(("redis://127.0.0.1:<port>", "bench-idem-<pid>-<run>")),
        ),
    ))
}

/// The note on how the idempotency run is made and measured.
pub fn note(plan: &super::Plan) -> String {
    let memory_keys = plan.idempotency_keys;
    format!(
        "Idempotency: unary SYNC batches of 1 and 20 entries from {} callers (closed loop), the emulator at {} ms per call, without keys and with a key of its own on every entry ({} characters) taking turns in {} rounds (which goes first alternating), {:.1} s warm-up and {:.1} s measured, each run a fresh gateway child with the same config (the throughput runs', metrics on, default [idempotency]): only the requests' keys differ. Gateway CPU per 1k entries: the child's utime+stime over the window / accepted entries x 1,000 (ms; also µs per entry); harness CPU likewise for the bench process (load generator and emulator, which share the machine's cores with the gateway: a keyed request costs the load generator more too); ratios are keyed over unkeyed, per round and median. Then the same with the children in cluster mode on a redis-server started for this run (loopback, no persistence; a key_prefix per run; timeout_ms {REDIS_TIMEOUT_MS}, above this machine's p99, so that no run falls back to memory midway; unpaced, so the only Redis calls are the keys'): round trips per request = the child's partner_events_cluster_redis_calls_total{{op=\"idempotency_claim\"|\"idempotency_settle\"}} over the window / requests answered; redis-server's CPU (utime+stime) per 1k entries; added p50/p99 = keyed median minus unkeyed median. Resend: every batch sent twice, the second at once after the first's answer (its entries should all be answered `deduplicated`, nothing sent); then every batch accepted whole sent once more from the same callers with nothing else running: the child's CPU over that pass / deduplicated entries, and the entries the emulator received meanwhile (0 expected). Memory: one child, the emulator answering at once, takes {} unkeyed entries then as many keyed ones in batches of {MEMORY_BATCH_ENTRIES} from {MEMORY_CALLERS} callers; bytes per key = (VmRSS after the keyed entries - VmRSS before them) / partner_events_idempotency_keys (the allocator, mimalloc, keeps some of what the traffic itself used: the unkeyed entries first put that in the 'before'; the hash map and the expiry queue grow by doubling, so the figure depends on where the count falls between two sizes).",
        plan.unary_callers,
        plan.latency_ms,
        Keys::new(&key_tag(1)).key_chars(),
        if plan.quick { QUICK_ROUNDS } else { ROUNDS },
        WARMUP.as_secs_f64(),
        window(plan.quick).as_secs_f64(),
        report::thousands(memory_keys as f64),
    )
}

/// Each run's measured window.
fn window(quick: bool) -> Duration {
    if quick {
        QUICK_WINDOW
    } else {
        WINDOW
    }
}

/// The keys' common part in run `run`: unique across the bench's runs and
/// processes (the runs in cluster mode share one Redis).
fn key_tag(run: u32) -> String {
    format!("bench-{}-{run:03}", std::process::id())
}

/// The idempotency counters of a child now.
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    new: f64,
    all: f64,
    keys_held: f64,
    evicted: f64,
    local_fallback: f64,
    claim: f64,
    settle: f64,
    redis_all: f64,
    redis_failed: f64,
}

async fn reading(metrics: SocketAddr) -> Result<Reading, String> {
    let text = metrics_scrape(metrics).await?;
    Ok(Reading {
        new: sum_samples_with(&text, ENTRIES, r#"result="new""#),
        all: sum_samples(&text, ENTRIES),
        keys_held: sum_samples(&text, KEYS_HELD),
        evicted: sum_samples(&text, EVICTED),
        local_fallback: sum_samples(&text, LOCAL_FALLBACK),
        claim: sum_samples_with(&text, REDIS_CALLS, r#"op="idempotency_claim""#),
        settle: sum_samples_with(&text, REDIS_CALLS, r#"op="idempotency_settle""#),
        redis_all: sum_samples(&text, REDIS_CALLS),
        redis_failed: sum_samples_with(&text, REDIS_CALLS, r#"outcome="error""#)
            + sum_samples_with(&text, REDIS_CALLS, r#"outcome="timeout""#),
    })
}

/// Waits until a cluster-mode child says it shares through Redis.
async fn wait_joined(metrics: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + JOIN_BOUND;
    loop {
        let text = metrics_scrape(metrics).await?;
        if sum_samples(&text, JOINED) == 1.0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the cluster-mode gateway did not join Redis within {JOIN_BOUND:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts a gateway child for `store`, its metrics on a port of its own;
/// in cluster mode under a key prefix of run `run`'s, once it has joined.
async fn start(
    h: &Harness,
    store: Store<'_>,
    run: u32,
) -> Result<(GatewayChild, SocketAddr), String> {
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let prefix = format!("bench-idem-{}-{run}", std::process::id());
    let url = match store {
        Store::Memory => None,
        Store::Redis(r) => Some(r.url()),
    };
    let toml = idempotency_toml(
        &h.emulator.endpoint_url(),
        &metrics.to_string(),
        h.plan.linger_ms,
        url.as_deref().map(|u| (u, prefix.as_str())),
    );
    let gateway = start_gateway(h, &toml).await?;
    if url.is_some() {
        wait_joined(metrics).await?;
    }
    Ok((gateway, metrics))
}

/// One closed-loop run of unary `entries`, with a key on every entry when
/// `keyed`, through a fresh child keeping its keys in `store`.
async fn measure(
    h: &Harness,
    store: Store<'_>,
    entries: usize,
    keyed: bool,
    round: u32,
    run: u32,
    length: Duration,
) -> Result<KeyedRun, String> {
    let plan = &h.plan;
    h.emulator.set_faults(latency_rules(plan, plan.latency_ms));
    let (gateway, metrics) = start(h, store, run).await?;
    let callers = plan.unary_callers;
    let clients = GatewayClients::connect(gateway.addr(), callers).await?;
    let start = Instant::now();
    let window = Window {
        start: start + WARMUP,
        end: start + WARMUP + length,
    };
    let keys = keyed.then(|| Keys::new(&key_tag(run)));
    let load = tokio::spawn(load::gateway_unary_keyed(
        clients, entries, callers, window, keys,
    ));
    let redis_cpu = || match store {
        Store::Redis(r) => r.stats().map(|s| s.cpu_secs),
        Store::Memory => Ok(0.0),
    };
    tokio::time::sleep_until(window.start).await;
    let gw_before = gateway.stats()?;
    let me_before = proc_stats("self")?;
    let redis_before = redis_cpu()?;
    let before = reading(metrics).await?;
    let upstream = tokio::spawn(count_upstream(h.emulator.clone(), window.end));
    tokio::time::sleep_until(window.end).await;
    let after = reading(metrics).await?;
    let redis_after = redis_cpu()?;
    let gw_after = gateway.stats()?;
    let me_after = proc_stats("self")?;
    let upstream = upstream
        .await
        .map_err(|e| format!("upstream count failed: {e}"))?;
    let tally = join_load(load).await?;
    drop(gateway);
    let delta = |f: fn(&Reading) -> f64| (f(&after) - f(&before)).max(0.0) as u64;
    let cpu = gw_after.cpu_secs - gw_before.cpu_secs;
    let measurement = Measurement::new(
        format!("unary-{entries} x{callers}"),
        Path::Gateway,
        plan.latency_ms,
        "closed loop".to_string(),
        entries,
        callers,
        length.as_secs_f64(),
        tally,
        upstream,
        Some((cpu, gw_after.hwm_kib.max(gw_before.hwm_kib) as f64 / 1024.0)),
        me_after.cpu_secs - me_before.cpu_secs,
    );
    let keys_new = delta(|r| r.new);
    Ok(KeyedRun {
        store: store.name().to_string(),
        keyed,
        round,
        gateway_cpu_ms_per_1k: per_1k_ms(cpu, measurement.entries_ok),
        measurement,
        keys_new,
        keys_other: delta(|r| r.all).saturating_sub(keys_new),
        redis: match store {
            Store::Memory => None,
            Store::Redis(_) => Some(RedisUse {
                claim_calls: delta(|r| r.claim),
                settle_calls: delta(|r| r.settle),
                other_calls: delta(|r| r.redis_all - r.claim - r.settle),
                failed_calls: delta(|r| r.redis_failed),
                local_fallback: delta(|r| r.local_fallback),
                cpu_secs: redis_after - redis_before,
            }),
        },
    })
}

/// Every batch of `entries` sent twice through a fresh child (keys in
/// memory), then every batch accepted whole sent once more alone.
async fn resend(h: &Harness, entries: usize, length: Duration) -> Result<ResendRun, String> {
    let plan = &h.plan;
    h.emulator.set_faults(latency_rules(plan, plan.latency_ms));
    let (gateway, metrics) = start(h, Store::Memory, 0).await?;
    let callers = plan.unary_callers;
    let clients = GatewayClients::connect(gateway.addr(), callers).await?;
    let start = Instant::now();
    let window = Window {
        start: start + WARMUP,
        end: start + WARMUP + length,
    };
    let twice = load::gateway_send_twice(
        clients.clone(),
        entries,
        callers,
        window,
        Keys::new(&key_tag(0)),
        DRAIN,
    );
    let twice = tokio::time::timeout(length + WARMUP + DRAIN + super::JOIN_GRACE, twice)
        .await
        .map_err(|_| "the resend load did not stop at the end of its window".to_string())?;
    // The second pass: nothing else running; nothing should reach the
    // emulator.
    h.emulator.clear();
    let before = reading(metrics).await?;
    let gw_before = gateway.stats()?;
    let accepted = twice.accepted;
    let (pass, pass_secs) =
        load::gateway_resend(clients, accepted, callers, Instant::now() + PASS_BOUND).await;
    let gw_after = gateway.stats()?;
    let after = reading(metrics).await?;
    let pass_upstream_entries = h.emulator.counts().received;
    drop(gateway);
    let (mut first, mut again, mut pass) = (twice.first, twice.resend, pass);
    let cpu = gw_after.cpu_secs - gw_before.cpu_secs;
    let deduplicated_metric = (after.all - after.new) - (before.all - before.new);
    let failed = first.entries_failed
        + first.errors
        + again.entries_failed
        + again.errors
        + pass.entries_failed
        + pass.errors;
    let first_failure = first
        .first_failure
        .take()
        .or(again.first_failure.take())
        .or(pass.first_failure.take());
    Ok(ResendRun {
        entries_per_batch: entries,
        callers,
        window_secs: length.as_secs_f64(),
        first_batches: first.batches,
        first_entries_ok: first.entries_ok,
        first_latency_ms: Percentiles::of(&mut first.latencies_us),
        resend_batches: again.batches,
        resend_entries: again.entries_ok + again.entries_failed,
        resend_deduplicated: again.entries_deduplicated,
        resend_latency_ms: Percentiles::of(&mut again.latencies_us),
        pass_batches: pass.batches,
        pass_entries: pass.entries_ok + pass.entries_failed,
        pass_deduplicated: pass.entries_deduplicated,
        pass_secs,
        pass_latency_ms: Percentiles::of(&mut pass.latencies_us),
        pass_gateway_cpu_secs: cpu,
        // The gateway's own count, when the answers' count is not there.
        pass_cpu_us_per_deduplicated: cpu * 1e6
            / (pass.entries_deduplicated as f64)
                .max(deduplicated_metric)
                .max(1.0),
        pass_upstream_entries,
        failed,
        first_failure,
    })
}

/// One child (keys in memory, the emulator answering at once) takes
/// unkeyed entries, then keyed ones: its RSS before and after the keys.
async fn memory(h: &Harness) -> Result<KeyMemory, String> {
    let plan = &h.plan;
    let target = plan.idempotency_keys;
    h.emulator.set_faults(Vec::new());
    let (gateway, metrics) = start(h, Store::Memory, 0).await?;
    let clients = GatewayClients::connect(gateway.addr(), MEMORY_CALLERS).await?;
    let fill = |n: u64, keys: Option<Keys>| {
        load::fill(
            clients.clone(),
            MEMORY_BATCH_ENTRIES,
            MEMORY_CALLERS,
            n,
            Instant::now() + MEMORY_FILL_BOUND,
            DeliveryMode::Sync,
            keys,
        )
    };
    let first = fill(target, None).await;
    h.emulator.clear();
    let before = gateway.stats()?;
    let started = Instant::now();
    let keyed = fill(target, Some(Keys::new(&key_tag(0)))).await;
    let fill_secs = started.elapsed().as_secs_f64();
    h.emulator.clear();
    let after = gateway.stats()?;
    let held = reading(metrics).await?;
    drop(gateway);
    Ok(KeyMemory {
        target_keys: target,
        batch_entries: MEMORY_BATCH_ENTRIES,
        callers: MEMORY_CALLERS,
        warmup_entries: first.queued,
        fill_secs,
        accepted: keyed.queued,
        failed: first.failed + first.errors + keyed.failed + keyed.errors,
        first_failure: first.first_failure.or(keyed.first_failure),
        rss_before_mib: before.rss_kib as f64 / 1024.0,
        rss_after_mib: after.rss_kib as f64 / 1024.0,
        hwm_mib: after.hwm_kib as f64 / 1024.0,
        keys_held: held.keys_held as u64,
        evicted: held.evicted as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{tests::args, Plan};
    use crate::config::Config;

    #[test]
    fn the_idempotency_configs_load_with_metrics_and_cluster_mode_on_the_redis_given() {
        let memory = Config::from_toml(
            &idempotency_toml("http://127.0.0.1:1", "127.0.0.1:9464", None, None),
            "t",
        )
        .unwrap();
        assert!(memory.cluster.is_none());
        assert_eq!(
            memory.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(memory.max_in_flight_entries, 1_000_000);
        assert_eq!(memory.pipeline.upstream_calls_per_second, 0.0);
        let cluster = Config::from_toml(
            &idempotency_toml(
                "http://127.0.0.1:1",
                "127.0.0.1:9464",
                Some(7),
                Some(("redis://127.0.0.1:6390", "bench-idem-1-2")),
            ),
            "t",
        )
        .unwrap();
        let shared = cluster.cluster.as_ref().expect("[cluster]");
        assert_eq!(shared.url, "redis://127.0.0.1:6390");
        assert_eq!(shared.key_prefix, "bench-idem-1-2");
        assert_eq!(shared.timeout, Duration::from_millis(REDIS_TIMEOUT_MS));
        assert_eq!(cluster.pipeline.linger, Duration::from_millis(7));
    }

    #[test]
    fn only_idempotency_runs_it_alone_and_quick_keeps_it_short() {
        let plan = Plan::new(args(false, Some("idempotency"))).unwrap();
        assert!(plan.wants("idempotency"));
        assert!(plan.shapes().is_empty());
        assert!(!plan.wants("durable") && !plan.wants("cluster") && !plan.wants("noisy"));
        assert_eq!(window(false), WINDOW);
        assert_eq!(window(true), QUICK_WINDOW);
        assert_eq!(plan.idempotency_keys, MEMORY_KEYS);
        let quick = Plan::new(args(true, None)).unwrap();
        assert_eq!(quick.idempotency_keys, QUICK_MEMORY_KEYS);
        assert!(Plan::new(args(true, None)).unwrap().wants("idempotency"));
        assert!(!Plan::new(args(false, Some("durable")))
            .unwrap()
            .wants("idempotency"));
    }
}
