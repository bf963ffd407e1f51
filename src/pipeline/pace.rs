//! A region's pace: how many calls a second go out to it, and from whom
//! the tokens come.
//!
//! - Alone (no `[cluster]`): a local token bucket at `[quotas]`' rate.
//! - In cluster mode: a token from Redis for every call, shared by every
//!   replica at the account's quota, taken up to `lease_calls` at a time
//!   when that many calls wait. While Redis cannot be reached the local
//!   bucket runs at `fallback_share` of the rate instead.
//! - Adaptive pacing, either way: a call that EventBridge throttles whole
//!   lowers the local bucket's rate at once, and answered calls raise it
//!   again along a cubic curve ([`Cubic`], the AWS SDKs' adaptive retry
//!   mode), up to the configured rate.

use std::sync::{atomic::AtomicU64, Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;
use tokio::time::{Duration, Instant};

use crate::{
    cluster::{Cluster, Take},
    metrics::{Metrics, RegionLabels},
    quota::TokenBucket,
    sync::lock,
};

/// How long tokens taken from Redis and not used yet stay usable: Redis
/// counted them as spent when it granted them.
const LEASE_FOR: Duration = Duration::from_millis(100);

/// Longest wait between asks when Redis says no token is free yet.
const MAX_REDIS_WAIT: Duration = Duration::from_millis(100);

pub(super) struct Pace {
    /// `[quotas]`: the rate and burst configured.
    rate: f64,
    burst: f64,
    bucket: TokenBucket,
    adaptive: Option<Mutex<Cubic>>,
    shared: Option<Shared>,
    gauge: Gauge<f64, AtomicU64>,
}

struct Shared {
    cluster: Arc<Cluster>,
    key: String,
    lease: Mutex<Lease>,
}

#[derive(Default)]
struct Lease {
    tokens: u32,
    until: Option<Instant>,
}

impl Pace {
    pub(super) fn new(
        region: &str,
        rate: f64,
        burst: f64,
        adaptive: bool,
        cluster: Option<Arc<Cluster>>,
        metrics: &Metrics,
    ) -> Self {
        let gauge = metrics
            .upstream_pace
            .get_or_create(&RegionLabels {
                region: region.to_string(),
            })
            .clone();
        let pace = Self {
            rate,
            burst,
            bucket: TokenBucket::new(rate, burst),
            adaptive: adaptive.then(|| Mutex::new(Cubic::new(Instant::now()))),
            shared: cluster.map(|cluster| Shared {
                key: cluster.pace_key(region),
                cluster,
                lease: Mutex::default(),
            }),
            gauge,
        };
        pace.apply();
        pace
    }

    /// The rate the configuration allows now: all of it alone or sharing
    /// through Redis, the fallback share while Redis is out of reach.
    fn ceiling(&self) -> f64 {
        match &self.shared {
            Some(s) if !s.cluster.joined() => self.rate * s.cluster.fallback_share(),
            _ => self.rate,
        }
    }

    /// Puts the rate in force into the local bucket and the metric; the
    /// burst shrinks with the rate (a burst at the old pace would be
    /// throttled too).
    fn apply(&self) {
        let ceiling = self.ceiling();
        let rate = match &self.adaptive {
            Some(a) => lock(a).rate(ceiling),
            None => ceiling,
        };
        let (now, _) = self.bucket.rate();
        if (now - rate).abs() > rate * 0.001 {
            let burst = (self.burst * rate / self.rate).max(1.0);
            self.bucket.set_rate(rate, burst);
        }
        self.gauge.set(rate);
    }

    /// Waits for one call's token. `waiting` is how many calls wait in all
    /// (how many tokens to ask Redis for at once).
    pub(super) async fn take(&self, waiting: usize) {
        self.apply();
        self.bucket.take().await;
        if let Some(shared) = &self.shared {
            shared.take(self.rate, self.burst, waiting).await;
        }
        if let Some(a) = &self.adaptive {
            lock(a).sent(Instant::now());
        }
    }

    /// A token taken and not used.
    pub(super) fn give_back(&self) {
        self.bucket.give_back();
        if let Some(s) = &self.shared {
            let mut lease = lock(&s.lease);
            lease.tokens += 1;
            lease
                .until
                .get_or_insert_with(|| Instant::now() + LEASE_FOR);
        }
    }

    /// EventBridge throttled a whole call sent at `sent`.
    pub(super) fn throttled(&self, sent: Instant) {
        if let Some(a) = &self.adaptive {
            let ceiling = self.ceiling();
            if lock(a).throttled(Instant::now(), sent, ceiling) {
                self.apply();
            }
        }
    }

    /// EventBridge answered a call (not throttled whole).
    pub(super) fn answered(&self) {
        if let Some(a) = &self.adaptive {
            let ceiling = self.ceiling();
            if lock(a).answered(Instant::now(), ceiling) {
                self.apply();
            }
        }
    }
}

impl Shared {
    /// A token from the lease, or from Redis (as many as wait, up to the
    /// lease size); returns at once while the replica is alone.
    async fn take(&self, rate: f64, burst: f64, waiting: usize) {
        loop {
            {
                let mut lease = lock(&self.lease);
                let fresh = lease.until.is_some_and(|u| Instant::now() < u);
                if fresh && lease.tokens > 0 {
                    lease.tokens -= 1;
                    return;
                }
                *lease = Lease::default();
            }
            let want = (waiting.max(1) as u32).min(self.cluster.lease_calls());
            let Some(grant) = self
                .cluster
                .take("pace", &self.key, rate, burst, want, Take::Some)
                .await
            else {
                // Redis is out of reach: the local bucket, now at the
                // fallback share, paces alone.
                return;
            };
            if grant.granted > 0 {
                if grant.granted > 1 {
                    *lock(&self.lease) = Lease {
                        tokens: grant.granted - 1,
                        until: Some(Instant::now() + LEASE_FOR),
                    };
                }
                return;
            }
            // Every replica whose calls wait was told the same time: each
            // asks again at a random point of the token's interval after
            // it, so that none wins every race (the bucket's burst keeps a
            // token nobody asked for in time).
            let interval = Duration::from_secs_f64(1.0 / rate);
            let jitter = interval.mul_f64(fastrand::f64());
            tokio::time::sleep(
                (grant.wait + jitter).clamp(Duration::from_micros(200), MAX_REDIS_WAIT),
            )
            .await;
        }
    }
}

/// The AWS SDKs' adaptive rate (CUBIC, as in TCP): after a throttle the
/// rate drops to [`BETA`] times what was being sent, then grows back along
/// `max * (1 + SCALE * (t - K)^3)`: flat near the old maximum and faster
/// beyond it, until it reaches the ceiling and adaptation stops. The SDKs
/// cut to 0.7; EventBridge's quota is a fixed rate, not a queue that a deep
/// cut drains, and measured (tests/adaptive_pacing.rs) 0.7 left 10 to 20%
/// of a shared quota unused, 0.85 about 7%.
#[derive(Debug)]
pub(super) struct Cubic {
    /// Adapting since a throttle; false: the ceiling is the rate.
    active: bool,
    /// The rate before the last decrease, and when it came.
    last_max: f64,
    last_throttle: Instant,
    rate: f64,
    /// Calls sent, smoothed per half second.
    measured: f64,
    counted: u32,
    counting_since: Instant,
}

const BETA: f64 = 0.85;
/// The curve's scale per call/s of the old maximum: the SDKs' constant
/// (0.4) is in absolute requests/s, which is slow to climb at tens of
/// calls/s and fast at thousands; relative, the climb back takes
/// `cbrt((1 - BETA) / SCALE)` = 1.8 s at any rate, and probing past the old
/// maximum gains 20% in the next 2 s.
const SCALE: f64 = 0.025;
const SMOOTH: f64 = 0.8;
const MIN_RATE: f64 = 0.5;
const MEASURE_EVERY: f64 = 0.5;

impl Cubic {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            active: false,
            last_max: 0.0,
            last_throttle: now,
            rate: 0.0,
            measured: 0.0,
            counted: 0,
            counting_since: now,
        }
    }

    /// The rate in force under `ceiling`.
    pub(super) fn rate(&self, ceiling: f64) -> f64 {
        if self.active {
            self.rate.clamp(MIN_RATE.min(ceiling), ceiling)
        } else {
            ceiling
        }
    }

    /// Counts a call sent.
    pub(super) fn sent(&mut self, now: Instant) {
        if self.counted == 0 {
            // A measure starts at its first call, not at the idle time
            // before it.
            self.counting_since = now;
        }
        self.counted += 1;
        let elapsed = now.duration_since(self.counting_since).as_secs_f64();
        if elapsed >= MEASURE_EVERY {
            let current = f64::from(self.counted) / elapsed;
            // The first measure is taken whole, not smoothed from zero.
            self.measured = if self.measured > 0.0 {
                current * SMOOTH + self.measured * (1.0 - SMOOTH)
            } else {
                current
            };
            self.counted = 0;
            self.counting_since = now;
        }
    }

    /// What is being sent, per second: the smoothed measure, or the
    /// current half second's count before there is one.
    fn sending(&self, now: Instant) -> f64 {
        if self.measured > 0.0 {
            return self.measured;
        }
        let elapsed = now.duration_since(self.counting_since).as_secs_f64();
        f64::from(self.counted) / elapsed.max(MEASURE_EVERY)
    }

    /// A whole call sent at `sent` was throttled. A call sent before the
    /// last decrease adds nothing: that one already answered the congestion
    /// it met. True when the rate changed.
    pub(super) fn throttled(&mut self, now: Instant, sent: Instant, ceiling: f64) -> bool {
        if self.active && sent < self.last_throttle {
            return false;
        }
        let current = self.rate(ceiling);
        let sending = self.sending(now);
        let base = if sending > 0.0 {
            sending.min(current)
        } else {
            current
        };
        self.active = true;
        self.last_max = base;
        self.last_throttle = now;
        self.rate = (base * BETA).max(MIN_RATE);
        true
    }

    /// A call was answered: the rate climbs along the curve. True when it
    /// changed.
    pub(super) fn answered(&mut self, now: Instant, ceiling: f64) -> bool {
        if !self.active {
            return false;
        }
        // K, the seconds the curve takes to climb back to `last_max`.
        let k = ((1.0 - BETA) / SCALE).cbrt();
        let t = now.duration_since(self.last_throttle).as_secs_f64() - k;
        let rate = self.last_max * (1.0 + SCALE * t.powi(3));
        if rate >= ceiling {
            // Back at the configured pace: adaptation ends until the next
            // throttle.
            self.active = false;
            return true;
        }
        let changed = (rate - self.rate).abs() > self.rate * 0.001;
        self.rate = rate.max(MIN_RATE);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, secs: f64) -> Instant {
        start + Duration::from_secs_f64(secs)
    }

    /// Sends at `rate` per second for `secs` seconds from `from`.
    fn send(c: &mut Cubic, from: Instant, secs: f64, rate: f64) {
        let n = (secs * rate) as usize;
        for i in 0..n {
            c.sent(at(from, i as f64 / rate));
        }
    }

    #[test]
    fn a_throttle_drops_the_rate_to_beta_of_what_was_sent_and_it_climbs_back() {
        let t0 = Instant::now();
        let mut c = Cubic::new(t0);
        assert_eq!(c.rate(200.0), 200.0);
        send(&mut c, t0, 2.0, 100.0);
        assert!(c.throttled(at(t0, 2.0), at(t0, 1.99), 200.0));
        // 0.85 of the ~100/s measured.
        assert!((c.rate(200.0) - 85.0).abs() < 2.0, "{}", c.rate(200.0));
        // K = cbrt(0.15 / 0.025) = 1.82 s to climb back to 100.
        c.answered(at(t0, 2.0 + 1.82), 200.0);
        assert!((c.rate(200.0) - 100.0).abs() < 3.0, "{}", c.rate(200.0));
        // Then faster; at the ceiling adaptation ends.
        c.answered(at(t0, 2.0 + 2.0 + 4.0), 200.0);
        assert_eq!(c.rate(200.0), 200.0);
        assert!(!c.active);
    }

    #[test]
    fn calls_sent_before_the_decrease_do_not_lower_it_again() {
        let t0 = Instant::now();
        let mut c = Cubic::new(t0);
        send(&mut c, t0, 2.0, 100.0);
        assert!(c.throttled(at(t0, 2.0), at(t0, 1.98), 200.0));
        let after_one = c.rate(200.0);
        // Ten more calls that were in flight when the first throttle came.
        for _ in 0..10 {
            assert!(!c.throttled(at(t0, 2.01), at(t0, 1.99), 200.0));
        }
        assert_eq!(c.rate(200.0), after_one);
        // One sent after it lowers it once more.
        assert!(c.throttled(at(t0, 2.1), at(t0, 2.05), 200.0));
        assert!(c.rate(200.0) < after_one);
    }

    #[test]
    fn the_rate_never_exceeds_the_ceiling_nor_falls_below_the_floor() {
        let t0 = Instant::now();
        let mut c = Cubic::new(t0);
        for i in 0..100 {
            c.throttled(at(t0, f64::from(i)), at(t0, f64::from(i)), 50.0);
        }
        assert_eq!(c.rate(50.0), MIN_RATE);
        // A lower ceiling (Redis lost: the fallback share) caps it.
        c.answered(at(t0, 1000.0), 10.0);
        assert_eq!(c.rate(10.0), 10.0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_follows_the_adaptive_rate() {
        let metrics = Metrics::new(false);
        let pace = Pace::new("r", 100.0, 1.0, true, None, &metrics);
        for _ in 0..100 {
            pace.take(1).await;
        }
        pace.throttled(Instant::now());
        let started = Instant::now();
        for _ in 0..35 {
            pace.take(1).await;
        }
        // 35 calls at 85/s (0.41 s), not 100/s (0.35 s).
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(395), "{took:?}");
        let gauge = metrics
            .upstream_pace
            .get_or_create(&RegionLabels { region: "r".into() });
        assert!((gauge.get() - 85.0).abs() < 2.0, "{}", gauge.get());
    }
}
