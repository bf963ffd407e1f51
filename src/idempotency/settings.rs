//! `[idempotency]`: how long the gateway remembers a caller's idempotency
//! key, and how many keys one replica keeps in memory.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[idempotency]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencySection {
    /// How long after an entry with a key was first seen a resend with the
    /// same key is answered from the first one instead of being sent.
    /// Five minutes by default: a caller resends after a broken connection,
    /// its own timeout or a restart of its pod, within seconds to a couple
    /// of minutes; SQS FIFO deduplicates over the same five minutes. Memory
    /// (or Redis) grows with keyed entries per second times the window.
    pub window_ms: u64,
    /// Keys one replica keeps in memory (about 300 bytes each: the map and
    /// its expiry queue grow by doubling; `bench --only idempotency`
    /// measured 280 MiB of RSS for 1,000,000 keys, and a peak about a
    /// third higher while the map doubled). 500,000 by default: about
    /// 150 MiB, 1,600 keyed entries/s for the whole default window, beside
    /// a durable queue's bookkeeping in a 512 MiB pod. Past it the oldest
    /// are forgotten before their window ends, counted in
    /// `partner_events_idempotency_evicted_total`. In cluster mode keys
    /// live in Redis and this bounds only what a replica keeps while Redis
    /// cannot be reached, and the keys of its DURABLE entries.
    pub max_keys: usize,
}

impl Default for IdempotencySection {
    fn default() -> Self {
        Self {
            window_ms: 300_000,
            max_keys: 500_000,
        }
    }
}

/// `[idempotency]`, checked.
#[derive(Debug, Clone)]
pub struct IdempotencySettings {
    pub window: Duration,
    pub max_keys: usize,
    /// How long after its caller's deadline an entry may still be in an
    /// EventBridge call (the upstream's connect and call timeouts): until
    /// then a key whose entry is in flight waits for its outcome, after it
    /// the outcome counts as unknown.
    pub late_bound: Duration,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(IdempotencySection::default().window_ms),
            max_keys: IdempotencySection::default().max_keys,
            late_bound: Duration::from_secs(15),
        }
    }
}

/// An `[idempotency]` setting that does not hold.
#[derive(Debug, thiserror::Error)]
#[error("`idempotency.{field}`: {problem}")]
pub struct IdempotencyConfigError {
    pub field: &'static str,
    pub problem: String,
}

impl IdempotencySection {
    /// Checks every field; `late_bound` comes from the upstream's timeouts.
    pub fn settings(
        &self,
        late_bound: Duration,
    ) -> Result<IdempotencySettings, IdempotencyConfigError> {
        if !(1_000..=7 * 24 * 3_600_000).contains(&self.window_ms) {
            return Err(IdempotencyConfigError {
                field: "window_ms",
                problem: "must be 1000 (a second) to 604800000 (a week)".into(),
            });
        }
        if self.max_keys == 0 {
            return Err(IdempotencyConfigError {
                field: "max_keys",
                problem: "must be at least 1".into(),
            });
        }
        Ok(IdempotencySettings {
            window: Duration::from_millis(self.window_ms),
            max_keys: self.max_keys,
            late_bound,
        })
    }
}
