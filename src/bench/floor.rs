//! The floor run (`bench --only floor`): what the gateway spends per
//! 1-entry request against what tonic itself spends per call.
//!
//! One fresh gateway child (the throughput runs' config: unpaced, the
//! emulator's quota off), the emulator at the latency runs' latency. Two
//! kinds of load take turns against it, each turn on connections of its
//! own, each with [`IN_FLIGHT`] requests in flight (closed loop) for the same
//! warm-up and window: unary `PutPartnerEvents` of one entry, and
//! `grpc.health.v1.Health/Check`, which goes through the same server and
//! layers (HTTP/2, routing, protobuf, the gRPC metrics and call tracking)
//! to a handler that reads a map. The health check is the floor: what any
//! tonic call costs this server. The ratio of the two CPU figures per
//! request is what the gateway's own work adds on top (validation, the
//! lane, coalescing, its share of the EventBridge call).
//!
//! Turns: put then health in the first round, health then put in the
//! next, and so on, so that neither always meets the machine first; each
//! round's ratio, and the median of the rounds'.

use tokio::time::Instant;

use super::{
    child::GatewayChild,
    count_upstream, join_load, latency_rules,
    load::{self, GatewayClients, Window},
    report::{self, Floor, FloorCall, FloorRound, FloorTurn},
    start_gateway, turns, Harness,
};

/// Requests in flight in each turn (both kinds).
pub const IN_FLIGHT: usize = 512;
/// Rounds of turns (each kind once per round), by default and with --quick.
const ROUNDS: u32 = 3;
const QUICK_ROUNDS: u32 = 2;

/// The whole floor run.
pub async fn floor(h: &Harness) -> Result<Floor, String> {
    let plan = &h.plan;
    let rounds = if plan.quick { QUICK_ROUNDS } else { ROUNDS };
    let latency_ms = plan.latency_ms;
    eprintln!(
        "floor: one gateway, emulator {latency_ms} ms per call; {IN_FLIGHT} unary PutPartnerEvents of 1 entry, then {IN_FLIGHT} grpc.health.v1 Checks in flight, taking turns, {rounds} rounds of {:?} (+{:?} warm-up) each",
        plan.duration, plan.warmup
    );
    h.emulator.set_faults(latency_rules(plan, latency_ms));
    let result = async {
        let gateway = start_gateway(h, &h.gateway_toml).await?;
        let mut out = Vec::new();
        for round in 0..rounds {
            let [first, second] = turns(round, FloorCall::Put, FloorCall::Health);
            let a = turn(h, &gateway, first).await?;
            let b = turn(h, &gateway, second).await?;
            let (put, health) = if first == FloorCall::Put {
                (a, b)
            } else {
                (b, a)
            };
            let r = FloorRound {
                round: round + 1,
                first,
                put,
                health,
            };
            eprintln!(
                "floor: round {}: put {} requests/s, {:.1} µs gateway CPU each; health {} requests/s, {:.1} µs each: {:.2}x",
                r.round,
                report::thousands(r.put.requests_per_sec),
                r.put.cpu_us_per_request,
                report::thousands(r.health.requests_per_sec),
                r.health.cpu_us_per_request,
                r.ratio()
            );
            out.push(r);
        }
        Ok::<_, String>(out)
    }
    .await;
    h.emulator.set_faults(Vec::new());
    Ok(Floor::new(
        latency_ms,
        IN_FLIGHT,
        plan.warmup.as_secs_f64(),
        plan.duration.as_secs_f64(),
        result?,
    ))
}

/// The note on how the floor run is made and measured.
pub fn note(plan: &super::Plan) -> String {
    format!(
        "Floor: one fresh gateway child (the throughput runs' config: unpaced, the emulator's quota off), the emulator at {} ms per call. Turns of {IN_FLIGHT} unary PutPartnerEvents of 1 entry in flight (closed loop) and {IN_FLIGHT} grpc.health.v1.Health/Check (for {}) in flight, each turn on connections of its own, {:.1} s warm-up then {:.1} s measured each, {} rounds (put first in odd rounds, health first in even ones). gw cpu/request: the child's utime+stime over the window / requests answered in it. The ratio is put over health per round, and the median of the rounds; the health check goes through the same server and layers to a handler that reads a map: tonic's floor on this gateway.",
        plan.latency_ms,
        crate::server::SERVICE_NAME,
        plan.warmup.as_secs_f64(),
        plan.duration.as_secs_f64(),
        if plan.quick { QUICK_ROUNDS } else { ROUNDS },
    )
}

/// One kind's turn: its load for the warm-up and the window, the gateway
/// child's CPU read at the window's two ends. Each turn has connections of
/// its own: a turn abandons its requests in flight at its window's end
/// (hundreds of streams reset at once), and with the connections shared
/// the next turn's warm-up saw `ResourceExhausted: h2 protocol error`
/// (tonic's code for an HTTP/2 ENHANCE_YOUR_CALM, which h2 sends to a
/// client resetting streams en masse).
async fn turn(h: &Harness, gateway: &GatewayChild, call: FloorCall) -> Result<FloorTurn, String> {
    let plan = &h.plan;
    let clients = GatewayClients::connect(gateway.addr(), IN_FLIGHT).await?;
    let start = Instant::now();
    let window = Window {
        start: start + plan.warmup,
        end: start + plan.warmup + plan.duration,
    };
    let load = match call {
        FloorCall::Put => tokio::spawn(load::gateway_unary(clients, 1, IN_FLIGHT, window)),
        FloorCall::Health => tokio::spawn(load::health_checks(
            clients,
            crate::server::SERVICE_NAME,
            IN_FLIGHT,
            window,
        )),
    };
    tokio::time::sleep_until(window.start).await;
    let before = gateway.stats()?;
    let upstream = tokio::spawn(count_upstream(h.emulator.clone(), window.end));
    tokio::time::sleep_until(window.end).await;
    let after = gateway.stats()?;
    let upstream = upstream
        .await
        .map_err(|e| format!("upstream count failed: {e}"))?;
    let tally = join_load(load).await?;
    Ok(FloorTurn::new(
        call,
        plan.duration.as_secs_f64(),
        tally,
        after.cpu_secs - before.cpu_secs,
        upstream,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_floor_runs_the_floor_alone_and_quick_keeps_it_to_two_rounds() {
        crate::bench::tests::assert_runs_alone("floor");
        assert_eq!((QUICK_ROUNDS, ROUNDS), (2, 3));
        // Turns alternate which kind goes first.
        assert_eq!(
            turns(0, FloorCall::Put, FloorCall::Health),
            [FloorCall::Put, FloorCall::Health]
        );
        assert_eq!(
            turns(1, FloorCall::Put, FloorCall::Health),
            [FloorCall::Health, FloorCall::Put]
        );
    }
}
