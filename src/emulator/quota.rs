//! The `PutPartnerEvents` quota EventBridge enforces, per region: a token
//! bucket of calls that refills at [`Quota::calls_per_second`] and holds at
//! most [`Quota::burst`]. A call that finds the bucket empty fails whole
//! with HTTP 400 `ThrottlingException`, as EventBridge answers it.
//!
//! The quota is the partner account's, per region. The emulator does not
//! tell partner accounts apart (calls are signed with whatever credentials
//! the caller has, and any of them acts as the one partner), so every
//! caller of a region draws from that region's bucket. The region is the
//! one in the call's SigV4 credential scope (see `server::region_of`).
//!
//! Pure: the time is passed in, so the bucket is tested on paused tokio time.

use std::collections::HashMap;

use tokio::time::Instant;

/// EventBridge's default steady rate of `PutPartnerEvents` calls per
/// account and region (a soft limit; Service Quotas can raise it).
pub const DEFAULT_QUOTA_CALLS_PER_SECOND: f64 = 1_400.0;
/// EventBridge's default burst of `PutPartnerEvents` calls per account and
/// region.
pub const DEFAULT_QUOTA_BURST: u32 = 3_600;

/// The message of a throttled call, as AWS sends it.
pub const THROTTLED_MESSAGE: &str = "Rate exceeded";

/// A quota of calls per region. `calls_per_second` 0 is unlimited (the
/// burst is then ignored).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quota {
    /// Calls per second the bucket refills with; 0: unlimited.
    pub calls_per_second: f64,
    /// Calls the bucket holds at most: those that may come at once after a
    /// quiet spell. At least 1 unless unlimited.
    pub burst: u32,
}

/// An invalid [`Quota`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("calls per second must be 0 (unlimited) or a positive number")]
    CallsPerSecond,
    #[error("the burst must be at least 1 when calls per second is not 0 (unlimited)")]
    Burst,
}

impl Quota {
    /// EventBridge's default: 1,400 calls/s, burst 3,600.
    pub const EVENTBRIDGE_DEFAULT: Self = Self {
        calls_per_second: DEFAULT_QUOTA_CALLS_PER_SECOND,
        burst: DEFAULT_QUOTA_BURST,
    };

    /// No quota: no call is ever throttled.
    pub const UNLIMITED: Self = Self {
        calls_per_second: 0.0,
        burst: 0,
    };

    /// A checked quota.
    pub fn new(calls_per_second: f64, burst: u32) -> Result<Self, QuotaError> {
        let quota = Self {
            calls_per_second,
            burst,
        };
        quota.check().map(|()| quota)
    }

    /// Whether the fields hold: a finite rate of 0 or more, and a burst of
    /// at least 1 unless the rate is 0.
    pub fn check(&self) -> Result<(), QuotaError> {
        if !(self.calls_per_second >= 0.0 && self.calls_per_second.is_finite()) {
            return Err(QuotaError::CallsPerSecond);
        }
        if !self.is_unlimited() && self.burst == 0 {
            return Err(QuotaError::Burst);
        }
        Ok(())
    }

    pub fn is_unlimited(&self) -> bool {
        self.calls_per_second == 0.0
    }
}

impl Default for Quota {
    fn default() -> Self {
        Self::EVENTBRIDGE_DEFAULT
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_unlimited() {
            f.write_str("unlimited")
        } else {
            write!(
                f,
                "{} calls/s, burst {} per region",
                self.calls_per_second, self.burst
            )
        }
    }
}

/// A shortfall below one whole token that still counts as one.
const TOKEN_TOLERANCE: f64 = 1e-9;

/// One region's bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every region seen, under one [`Quota`]. A region's
/// bucket is made full on its first call.
#[derive(Debug)]
pub struct CallQuota {
    quota: Quota,
    buckets: HashMap<String, Bucket>,
}

impl CallQuota {
    pub fn new(quota: Quota) -> Self {
        Self {
            quota,
            buckets: HashMap::new(),
        }
    }

    /// The quota in force.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Puts `quota` in force; every region starts again with a full bucket,
    /// so that what follows does not depend on the calls made before.
    pub fn set(&mut self, quota: Quota) {
        self.quota = quota;
        self.buckets.clear();
    }

    /// Takes one call from `region`'s bucket at `now`: false when the
    /// bucket is empty (the call is throttled, and takes nothing).
    pub fn try_call(&mut self, region: &str, now: Instant) -> bool {
        if self.quota.is_unlimited() {
            return true;
        }
        let Quota {
            calls_per_second,
            burst,
        } = self.quota;
        let burst = f64::from(burst);
        let bucket = match self.buckets.get_mut(region) {
            Some(b) => b,
            None => self.buckets.entry(region.to_string()).or_insert(Bucket {
                tokens: burst,
                at: now,
            }),
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * calls_per_second).min(burst);
        bucket.at = now;
        // The tolerance absorbs the rounding of refills added up over many
        // small steps: 49 ms then 1 ms at 20/s earn one whole call.
        if bucket.tokens >= 1.0 - TOKEN_TOLERANCE {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for CallQuota {
    fn default() -> Self {
        Self::new(Quota::default())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn quota(calls_per_second: f64, burst: u32) -> CallQuota {
        CallQuota::new(Quota::new(calls_per_second, burst).unwrap())
    }

    /// How many of `n` calls at once pass.
    fn passing(q: &mut CallQuota, region: &str, n: usize) -> usize {
        let now = Instant::now();
        (0..n).filter(|_| q.try_call(region, now)).count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_the_rate_refills() {
        let mut q = quota(20.0, 5);
        assert_eq!(passing(&mut q, "us-east-1", 8), 5, "the burst, no more");
        // 20/s: one call every 50 ms.
        tokio::time::advance(Duration::from_millis(49)).await;
        assert_eq!(passing(&mut q, "us-east-1", 1), 0);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(passing(&mut q, "us-east-1", 2), 1);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(passing(&mut q, "us-east-1", 3), 2);
        // A long quiet spell fills the bucket to the burst, not beyond.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(passing(&mut q, "us-east-1", 10), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_calls_take_nothing() {
        let mut q = quota(10.0, 1);
        assert_eq!(passing(&mut q, "r", 1), 1);
        // Calls refused every millisecond do not push the next token back.
        for _ in 0..99 {
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(passing(&mut q, "r", 1), 0);
        }
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(passing(&mut q, "r", 1), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn each_region_has_its_own_bucket() {
        let mut q = quota(1.0, 2);
        assert_eq!(passing(&mut q, "us-east-1", 3), 2);
        assert_eq!(passing(&mut q, "eu-west-1", 3), 2);
        assert_eq!(passing(&mut q, "us-east-1", 1), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_default_is_eventbridges() {
        let mut q = CallQuota::default();
        assert_eq!(q.quota(), Quota::EVENTBRIDGE_DEFAULT);
        assert_eq!(passing(&mut q, "us-east-1", 4_000), 3_600);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(passing(&mut q, "us-east-1", 2_000), 1_400);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_is_unlimited_and_a_new_quota_starts_full() {
        let mut q = quota(1.0, 1);
        assert_eq!(passing(&mut q, "r", 2), 1);
        q.set(Quota::UNLIMITED);
        assert_eq!(passing(&mut q, "r", 100_000), 100_000);
        q.set(Quota::new(1.0, 3).unwrap());
        assert_eq!(passing(&mut q, "r", 5), 3, "full again");
    }

    #[test]
    fn invalid_quotas_are_refused() {
        assert_eq!(Quota::new(-1.0, 5), Err(QuotaError::CallsPerSecond));
        assert_eq!(Quota::new(f64::NAN, 5), Err(QuotaError::CallsPerSecond));
        assert_eq!(
            Quota::new(f64::INFINITY, 5),
            Err(QuotaError::CallsPerSecond)
        );
        assert_eq!(Quota::new(10.0, 0), Err(QuotaError::Burst));
        assert_eq!(Quota::new(0.0, 0), Ok(Quota::UNLIMITED));
        assert_eq!(Quota::new(0.001, 1).unwrap().burst, 1);
        assert_eq!(Quota::UNLIMITED.to_string(), "unlimited");
        assert_eq!(
            Quota::EVENTBRIDGE_DEFAULT.to_string(),
            "1400 calls/s, burst 3600 per region"
        );
    }
}
