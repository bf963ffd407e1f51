//! Rate limits: token buckets for pacing upstream calls per region, and for
//! entries per second per tenant and per caller.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::time::Instant;

use crate::sync::lock;

/// A token bucket: `rate` tokens a second, holding at most `burst`.
///
/// Its rate can change while it is in use ([`TokenBucket::set_rate`]): the
/// limits of a reloaded config apply to the buckets already made.
#[derive(Debug)]
pub struct TokenBucket {
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    rate: f64,
    burst: f64,
    /// May go below zero: tokens reserved by waiters ([`TokenBucket::take`]).
    tokens: f64,
    at: Instant,
}

impl BucketState {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        Self {
            state: Mutex::new(BucketState {
                rate,
                burst,
                tokens: burst,
                at: Instant::now(),
            }),
        }
    }

    /// Puts a new rate and burst in force; the tokens already earned stay
    /// (up to the new burst).
    pub fn set_rate(&self, rate: f64, burst: f64) {
        let mut s = lock(&self.state);
        s.refill(Instant::now());
        s.rate = rate;
        s.burst = burst.max(1.0);
        s.tokens = s.tokens.min(s.burst);
    }

    /// The rate and burst in force.
    pub fn rate(&self) -> (f64, f64) {
        let s = lock(&self.state);
        (s.rate, s.burst)
    }

    /// Takes `n` tokens if there are enough; otherwise says how long until
    /// there would be (and takes nothing).
    pub fn try_take(&self, n: f64) -> Result<(), Duration> {
        let mut s = lock(&self.state);
        s.refill(Instant::now());
        // A request larger than the burst needs a full bucket and leaves a
        // debt that later requests wait out.
        let need = n.min(s.burst);
        if s.tokens >= need {
            s.tokens -= n;
            Ok(())
        } else {
            let missing = need - s.tokens;
            Err(Duration::from_secs_f64((missing / s.rate).max(0.001)))
        }
    }

    /// Returns one token taken and not used (up to the burst).
    pub fn give_back(&self) {
        let mut s = lock(&self.state);
        s.refill(Instant::now());
        s.tokens = (s.tokens + 1.0).min(s.burst);
    }

    /// Takes one token, waiting for it if need be. Waiters are served about
    /// in turn: each reserves its token (the count may go negative) and
    /// sleeps until it is due. A waiter dropped before its turn (its
    /// caller's deadline, a cancellation) gives its token back, so that
    /// abandoned waiters do not use up the rate.
    pub async fn take(&self) {
        let wait = {
            let mut s = lock(&self.state);
            s.refill(Instant::now());
            s.tokens -= 1.0;
            if s.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-s.tokens / s.rate)
            }
        };
        if wait.is_zero() {
            return;
        }
        let reservation = Reservation { bucket: self };
        tokio::time::sleep(wait).await;
        std::mem::forget(reservation);
    }
}

/// A token reserved by a waiter still sleeping; dropped unused, it goes
/// back to the bucket.
struct Reservation<'a> {
    bucket: &'a TokenBucket,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.bucket.give_back();
    }
}

/// Buckets by key (tenant or caller), created on first use.
#[derive(Debug, Default)]
pub struct KeyedLimiter {
    buckets: Mutex<HashMap<String, std::sync::Arc<TokenBucket>>>,
}

impl KeyedLimiter {
    /// Takes `n` entries from `key`'s bucket of `rate`/s (burst
    /// `rate * burst_seconds`), or says when to retry. The rate given is
    /// the one in force: a bucket made under another rate (before a
    /// reload) takes it on at once.
    pub fn try_take(
        &self,
        key: &str,
        rate: f64,
        burst_seconds: f64,
        n: usize,
    ) -> Result<(), Duration> {
        let burst = rate * burst_seconds;
        let bucket = {
            let mut buckets = lock(&self.buckets);
            // No key allocated unless it is new: this runs once per batch.
            match buckets.get(key) {
                Some(b) => b.clone(),
                None => buckets
                    .entry(key.to_string())
                    .or_insert_with(|| std::sync::Arc::new(TokenBucket::new(rate, burst)))
                    .clone(),
            }
        };
        if bucket.rate() != (rate, burst.max(1.0)) {
            bucket.set_rate(rate, burst);
        }
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

    #[tokio::test(start_paused = true)]
    async fn dropped_waiters_give_their_tokens_back() {
        let b = std::sync::Arc::new(TokenBucket::new(100.0, 1.0));
        b.take().await;
        // 1,000 waiters, each given up after 5 ms (a caller's deadline).
        let waiters: Vec<_> = (0..1000)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_millis(5), b.take()).await;
                })
            })
            .collect();
        for w in waiters {
            w.await.unwrap();
        }
        // The rate afterwards is still 100/s: 10 tokens in about 100 ms,
        // not after the abandoned waiters' 10 s.
        let start = Instant::now();
        for _ in 0..10 {
            b.take().await;
        }
        let took = start.elapsed();
        assert!(took <= Duration::from_millis(110), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_limits_follow_a_changed_rate() {
        let l = KeyedLimiter::default();
        // A reload lowers the rate from 1,000/s to 1/s: the bucket made
        // under the old rate holds no more than the new burst.
        assert!(l.try_take("a", 1000.0, 1.0, 1).is_ok());
        assert!(l.try_take("a", 1.0, 1.0, 1).is_ok());
        assert!(l.try_take("a", 1.0, 1.0, 1).is_err());
        // And raises it back: 100 ms at 1,000/s earn 100 entries.
        assert!(l.try_take("a", 1000.0, 1.0, 1).is_err());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(l.try_take("a", 1000.0, 1.0, 99).is_ok());
    }

    #[test]
    fn keyed_limits_are_separate() {
        let l = KeyedLimiter::default();
        assert!(l.try_take("a", 10.0, 1.0, 10).is_ok());
        assert!(l.try_take("a", 10.0, 1.0, 1).is_err());
        assert!(l.try_take("b", 10.0, 1.0, 10).is_ok());
    }
}
