//! Rate limits: token buckets for pacing upstream calls per region, and for
//! entries per second per tenant and per caller.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::time::Instant;

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            state: Mutex::new((burst.max(1.0), Instant::now())),
        }
    }

    fn refill(&self, state: &mut (f64, Instant), now: Instant) {
        let elapsed = now.saturating_duration_since(state.1).as_secs_f64();
        state.0 = (state.0 + elapsed * self.rate).min(self.burst);
        state.1 = now;
    }

    /// Takes `n` tokens if there are enough; otherwise says how long until
    /// there would be (and takes nothing).
    pub fn try_take(&self, n: f64) -> Result<(), Duration> {
        let mut s = self.state.lock().expect("lock");
        self.refill(&mut s, Instant::now());
        // A request larger than the burst needs a full bucket and leaves a
        // debt that later requests wait out.
        let need = n.min(self.burst);
        if s.0 >= need {
            s.0 -= n;
            Ok(())
        } else {
            let missing = need - s.0;
            Err(Duration::from_secs_f64((missing / self.rate).max(0.001)))
        }
    }

    /// Takes one token, waiting for it if need be. Waiters are served about
    /// in turn: each reserves its token (the count may go negative) and
    /// sleeps until it is due.
    pub async fn take(&self) {
        let wait = {
            let mut s = self.state.lock().expect("lock");
            self.refill(&mut s, Instant::now());
            s.0 -= 1.0;
            if s.0 >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-s.0 / self.rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Buckets by key (tenant or caller), created on first use.
#[derive(Debug, Default)]
pub struct KeyedLimiter {
    buckets: Mutex<HashMap<String, std::sync::Arc<TokenBucket>>>,
}

impl KeyedLimiter {
    /// Takes `n` entries from `key`'s bucket of `rate`/s (burst
    /// `rate * burst_seconds`), or says when to retry.
    pub fn try_take(
        &self,
        key: &str,
        rate: f64,
        burst_seconds: f64,
        n: usize,
    ) -> Result<(), Duration> {
        let bucket = {
            let mut buckets = self.buckets.lock().expect("lock");
            buckets
                .entry(key.to_string())
                .or_insert_with(|| {
                    std::sync::Arc::new(TokenBucket::new(rate, rate * burst_seconds))
                })
                .clone()
        };
        bucket.try_take(n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_refills_at_its_rate() {
        let b = TokenBucket::new(10.0, 5.0);
        for _ in 0..5 {
            assert!(b.try_take(1.0).is_ok());
        }
        let wait = b.try_take(1.0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 0.01, "{wait:?}");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(b.try_take(1.0).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn take_paces_callers() {
        let b = TokenBucket::new(100.0, 1.0);
        let start = Instant::now();
        for _ in 0..11 {
            b.take().await;
        }
        // One from the burst, then ten at 100/s.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(99) && took <= Duration::from_millis(110),
            "{took:?}"
        );
    }

    #[test]
    fn keyed_limits_are_separate() {
        let l = KeyedLimiter::default();
        assert!(l.try_take("a", 10.0, 1.0, 10).is_ok());
        assert!(l.try_take("a", 10.0, 1.0, 1).is_err());
        assert!(l.try_take("b", 10.0, 1.0, 10).is_ok());
    }
}
