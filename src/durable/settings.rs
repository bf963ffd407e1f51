//! `[durable]`: where the durable queue lives, how big it may grow, and how
//! long the gateway keeps trying to deliver.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::domain::delivery::Delivery;

/// The queue's file name inside `[durable] path`.
pub const QUEUE_FILE: &str = "queue.redb";

/// `[durable]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DurableSection {
    /// The directory of the queue file. Empty: `$PEG_STATE_DIR`, else
    /// `$XDG_STATE_HOME/partner-events-gateway`, else
    /// `~/.local/state/partner-events-gateway`.
    pub path: String,
    /// How batches that do not choose (`DELIVERY_MODE_UNSPECIFIED`) are
    /// answered: `sync` or `durable`; a tenant's `delivery` overrides it.
    pub default_delivery: Delivery,
    /// Bytes the queued entries and dead letters may take on disk; a DURABLE
    /// batch that does not fit is refused (RESOURCE_EXHAUSTED), nothing
    /// older is dropped.
    pub max_bytes: u64,
    /// Entries that may be queued (not yet delivered or dead-lettered): the
    /// gateway keeps their bookkeeping in memory (not their bodies), so this
    /// bounds that memory (1,000,000 queued: about 400 MiB of RSS).
    pub max_entries: u64,
    /// How long after its acceptance an entry that keeps failing retryably
    /// is still resent; then it becomes a dead letter.
    pub max_delivery_age_ms: u64,
    /// How long delivery reports are kept for WatchDeliveries and
    /// GetDeliveries after the outcome.
    pub report_retention_ms: u64,
    /// DURABLE entries being delivered at once (the rest wait on disk).
    pub max_delivering_entries: usize,
    /// How long one delivery round may take through the pipeline (its
    /// resends included) before the entry is put back in the queue.
    pub attempt_timeout_ms: u64,
    /// The wait before a failed entry's next round: doubling from the base
    /// up to the maximum, jittered.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for DurableSection {
    fn default() -> Self {
        Self {
            path: String::new(),
            default_delivery: Delivery::Sync,
            max_bytes: 1 << 30,
            max_entries: 1_000_000,
            max_delivery_age_ms: 24 * 3_600_000,
            report_retention_ms: 3_600_000,
            max_delivering_entries: 2_000,
            attempt_timeout_ms: 30_000,
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
        }
    }
}

/// `[durable]`, checked.
#[derive(Debug, Clone)]
pub struct DurableSettings {
    /// The directory; the queue is `dir/queue.redb`.
    pub dir: PathBuf,
    pub default_delivery: Delivery,
    pub max_bytes: u64,
    pub max_entries: u64,
    pub max_delivery_age: Duration,
    pub report_retention: Duration,
    pub max_delivering_entries: usize,
    pub attempt_timeout: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
}

impl DurableSettings {
    /// The queue file.
    pub fn file(&self) -> PathBuf {
        self.dir.join(QUEUE_FILE)
    }
}

/// A `[durable]` setting that does not hold: the field and the problem.
#[derive(Debug, thiserror::Error)]
#[error("`durable.{field}`: {problem}")]
pub struct DurableConfigError {
    pub field: &'static str,
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> DurableConfigError {
    DurableConfigError {
        field,
        problem: problem.into(),
    }
}

impl DurableSection {
    /// Checks every field and settles the directory.
    pub fn settings(&self) -> Result<DurableSettings, DurableConfigError> {
        let dir = if self.path.is_empty() {
            default_state_dir().ok_or_else(|| {
                bad(
                    "path",
                    "no state directory: set it, or PEG_STATE_DIR, XDG_STATE_HOME or HOME",
                )
            })?
        } else {
            PathBuf::from(&self.path)
        };
        if self.max_bytes < 1 << 16 {
            return Err(bad("max_bytes", "must be at least 65536"));
        }
        if self.max_entries == 0 {
            return Err(bad("max_entries", "must be at least 1"));
        }
        if self.max_delivery_age_ms < 1_000 {
            return Err(bad("max_delivery_age_ms", "must be at least 1000"));
        }
        if self.report_retention_ms < 1_000 {
            return Err(bad("report_retention_ms", "must be at least 1000"));
        }
        if !(1..=100_000).contains(&self.max_delivering_entries) {
            return Err(bad("max_delivering_entries", "must be 1 to 100000"));
        }
        if !(100..=600_000).contains(&self.attempt_timeout_ms) {
            return Err(bad("attempt_timeout_ms", "must be 100 to 600000"));
        }
        if self.retry_base_ms == 0 || self.retry_max_ms < self.retry_base_ms {
            return Err(bad(
                "retry_max_ms",
                "retry_base_ms must be above 0 and retry_max_ms at least retry_base_ms",
            ));
        }
        let ms = Duration::from_millis;
        Ok(DurableSettings {
            dir,
            default_delivery: self.default_delivery,
            max_bytes: self.max_bytes,
            max_entries: self.max_entries,
            max_delivery_age: ms(self.max_delivery_age_ms),
            report_retention: ms(self.report_retention_ms),
            max_delivering_entries: self.max_delivering_entries,
            attempt_timeout: ms(self.attempt_timeout_ms),
            retry_base: ms(self.retry_base_ms),
            retry_max: ms(self.retry_max_ms),
        })
    }
}

/// `$PEG_STATE_DIR`, else the XDG state directory of the gateway.
fn default_state_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("PEG_STATE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".local/state")))?;
    Some(base.join("partner-events-gateway"))
}
