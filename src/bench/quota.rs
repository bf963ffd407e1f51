//! The quota run (`bench --only quota`): the gateway at the quota.
//!
//! EventBridge takes 1,400 `PutPartnerEvents` calls/s per account and
//! region; this machine cannot drive that through one gateway, the
//! emulator and the load at once, so the run scales the quota down to the
//! cluster run's: the emulator enforces [`QUOTA_CALLS_PER_SECOND`] (burst
//! [`QUOTA_BURST`]) for this run only, at the latency runs' latency per
//! call, and one gateway is paced at the same rate
//! (`[quotas] upstream_calls_per_second`). 1-entry unary requests, far
//! more in flight than a second of the quota carries, offer more than
//! `quota x 20` entries/s: the gateway must fill every call it may send
//! (coalescing the waiting entries into calls of 20) and send none the
//! quota would refuse. Quota used is delivered entries/s over that
//! physical limit.

use tokio::time::Instant;

use super::{
    child_toml, cluster_phase, emulator_quota, join_load, latency_rules,
    load::{self, GatewayClients, Window},
    paced_quotas,
    report::{AtQuota, QuotaWindow, TenantRun},
    start_gateway, tenant_toml, Harness, CLUSTER_GATEWAY_BURST, CLUSTER_QUOTA_BURST,
    CLUSTER_QUOTA_CALLS_PER_SECOND, CLUSTER_WARMUP,
};

/// The emulator's quota in this run, and the gateway's pace: the cluster
/// run's, EventBridge's 1,400 calls/s scaled down to what this machine
/// can drive...
pub const QUOTA_CALLS_PER_SECOND: f64 = CLUSTER_QUOTA_CALLS_PER_SECOND;
pub const QUOTA_BURST: u32 = CLUSTER_QUOTA_BURST;
/// ...the gateway's burst, below the emulator's (which covers what the two
/// clocks disagree by)...
const GATEWAY_BURST: u32 = CLUSTER_GATEWAY_BURST;
/// ...and 1-entry requests in flight: at 20 ms a call, 512 of them offer
/// far more than the 3,000 entries/s the quota carries.
pub const IN_FLIGHT: usize = 512;

/// The gateway's config in this run: defaults (linger and bounds too), paced
/// at the quota, the bench tenant.
fn quota_gateway_toml(endpoint_url: &str) -> String {
    child_toml(
        "at the quota, paced at the emulated quota",
        endpoint_url,
        "",
        "",
        &paced_quotas(QUOTA_CALLS_PER_SECOND, GATEWAY_BURST),
        &tenant_toml(load::TENANT, load::SOURCE, None),
    )
}

/// The note on how the quota run is made and measured.
pub fn note(plan: &super::Plan) -> String {
    format!(
        "Quota: EventBridge's quota (1,400 calls/s per account and region) scaled down to what this machine can drive, as in the cluster run: the emulator enforces {} calls/s (burst {QUOTA_BURST}) for this run only, at {} ms per call; one gateway (default linger and bounds) paced at {} calls/s (burst {GATEWAY_BURST}); {IN_FLIGHT} 1-entry unary requests in flight (closed loop), {:.0} s warm-up then {:.0} s measured. The physical limit is {} calls/s x 20 = {} entries/s; quota used = delivered entries/s / that. Throttled: calls the emulator's quota refused / calls. Entries per call: delivered / calls answered 200. Caller p50/p99 from each request's send to its answer (requests wait their turn in the pace).",
        super::report::thousands(QUOTA_CALLS_PER_SECOND),
        plan.latency_ms,
        super::report::thousands(QUOTA_CALLS_PER_SECOND),
        CLUSTER_WARMUP.as_secs_f64(),
        cluster_phase(plan).as_secs_f64(),
        super::report::thousands(QUOTA_CALLS_PER_SECOND),
        super::report::thousands(QUOTA_CALLS_PER_SECOND * 20.0),
    )
}

/// The whole quota run.
pub async fn at_quota(h: &Harness) -> Result<AtQuota, String> {
    let plan = &h.plan;
    let phase = cluster_phase(plan);
    let latency_ms = plan.latency_ms;
    eprintln!(
        "quota: emulator quota {QUOTA_CALLS_PER_SECOND} calls/s (burst {QUOTA_BURST}), {latency_ms} ms per call; gateway paced at {QUOTA_CALLS_PER_SECOND} calls/s (burst {GATEWAY_BURST}); {IN_FLIGHT} 1-entry requests in flight, {CLUSTER_WARMUP:?} warm-up then {phase:?}"
    );
    h.emulator.set_faults(latency_rules(plan, latency_ms));
    let restore = emulator_quota(&h.emulator, QUOTA_CALLS_PER_SECOND, QUOTA_BURST)?;
    let gateway_config = quota_gateway_toml(&h.emulator.endpoint_url());
    let result = async {
        let gateway = start_gateway(h, &gateway_config).await?;
        let clients = GatewayClients::connect(gateway.addr(), IN_FLIGHT).await?;
        let start = Instant::now();
        let window = Window {
            start: start + CLUSTER_WARMUP,
            end: start + CLUSTER_WARMUP + phase,
        };
        let load = tokio::spawn(load::gateway_unary(clients, 1, IN_FLIGHT, window));
        tokio::time::sleep_until(window.start).await;
        let (before, started) = (h.emulator.counts(), Instant::now());
        let cpu_before = gateway.stats()?.cpu_secs;
        tokio::time::sleep_until(window.end).await;
        let after = h.emulator.counts();
        let secs = started.elapsed().as_secs_f64();
        let cpu = gateway.stats()?.cpu_secs - cpu_before;
        let tally = join_load(load).await?;
        Ok::<_, String>((
            QuotaWindow::between(&before, &after, secs, QUOTA_CALLS_PER_SECOND),
            TenantRun::new(tally),
            cpu,
        ))
    }
    .await;
    drop(restore);
    h.emulator.set_faults(Vec::new());
    let (upstream, callers, gateway_cpu_secs) = result?;
    Ok(AtQuota {
        quota_calls_per_second: QUOTA_CALLS_PER_SECOND,
        quota_burst: QUOTA_BURST,
        gateway_calls_per_second: QUOTA_CALLS_PER_SECOND,
        gateway_burst: GATEWAY_BURST,
        emulator_latency_ms: latency_ms,
        in_flight: IN_FLIGHT,
        warmup_secs: CLUSTER_WARMUP.as_secs_f64(),
        upstream,
        callers,
        gateway_cpu_secs,
        gateway_config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{tests::args, Plan};
    use crate::config::Config;

    #[test]
    fn the_quota_gateway_is_paced_at_the_scaled_quota_and_only_quota_runs_it_alone() {
        let c = Config::from_toml(&quota_gateway_toml("http://127.0.0.1:1"), "t").unwrap();
        assert_eq!(c.quotas.upstream_calls_per_second, QUOTA_CALLS_PER_SECOND);
        assert_eq!(c.pipeline.upstream_calls_per_second, 150.0);
        assert!(c.quotas.upstream_burst < QUOTA_BURST);
        assert_eq!(c.tenants.len(), 1);
        assert_eq!(c.sdk.endpoint_url.as_deref(), Some("http://127.0.0.1:1"));
        // Enough waiting to fill every call the pace allows: 20 entries for
        // each call under way at 20 ms, each of the gateway's burst, and
        // the next.
        let under_way = (QUOTA_CALLS_PER_SECOND * 0.020).ceil() as usize;
        assert!(IN_FLIGHT > 20 * (under_way + GATEWAY_BURST as usize + 1));

        crate::bench::tests::assert_runs_alone("quota");
        assert_eq!(
            cluster_phase(&Plan::new(args(true, None)).unwrap()).as_secs(),
            3
        );
    }
}
