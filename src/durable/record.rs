//! What the durable queue stores, and receipt ids.
//!
//! Records are protobuf messages (prost), so that a field added later still
//! reads files written before it; redb checksums the pages they sit in.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// A queued entry as written at acceptance (never rewritten: what changes
/// during delivery is in [`Progress`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredEntry {
    #[prost(string, tag = "1")]
    pub tenant: String,
    #[prost(string, tag = "2")]
    pub batch_id: String,
    /// The entry's index in the request that queued it.
    #[prost(uint32, tag = "3")]
    pub index: u32,
    /// The partner event source and region it was accepted for.
    #[prost(string, tag = "4")]
    pub source: String,
    #[prost(string, tag = "5")]
    pub region: String,
    #[prost(int64, optional, tag = "6")]
    pub time: Option<i64>,
    #[prost(string, tag = "7")]
    pub detail_type: String,
    #[prost(string, tag = "8")]
    pub detail: String,
    #[prost(string, repeated, tag = "9")]
    pub resources: Vec<String>,
    /// When the acknowledgement went out (epoch ms).
    #[prost(uint64, tag = "10")]
    pub accepted_ms: u64,
    /// Where `max_delivery_age` counts from: acceptance, or the last replay.
    #[prost(uint64, tag = "11")]
    pub age_from_ms: u64,
    /// The span of the batch that queued it (traces on): its delivery's
    /// calls link to it. Empty when none.
    #[prost(bytes = "vec", tag = "12")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "13")]
    pub span_id: Vec<u8>,
    #[prost(uint32, tag = "14")]
    pub trace_flags: u32,
}

/// How delivery of a queued entry has gone so far.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Progress {
    /// Sends to EventBridge so far (every round's).
    #[prost(uint32, tag = "1")]
    pub attempts: u32,
    /// A round ended with the outcome unknown (it may be in EventBridge).
    #[prost(bool, tag = "2")]
    pub maybe_sent: bool,
    /// A round started and its end was not recorded: after a restart, the
    /// entry may be in EventBridge.
    #[prost(bool, tag = "3")]
    pub in_round: bool,
    /// The last retryable failure.
    #[prost(string, tag = "4")]
    pub last_code: String,
    #[prost(string, tag = "5")]
    pub last_message: String,
    /// When the next round is due (epoch ms); 0: now.
    #[prost(uint64, tag = "6")]
    pub next_ms: u64,
    /// Rounds so far (for the backoff).
    #[prost(uint32, tag = "7")]
    pub rounds: u32,
}

/// A final outcome, as WatchDeliveries and GetDeliveries report it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredReport {
    #[prost(bytes = "vec", tag = "1")]
    pub receipt: Vec<u8>,
    /// [`REPORT_DELIVERED`] or [`REPORT_DEAD`].
    #[prost(uint32, tag = "2")]
    pub outcome: u32,
    #[prost(string, tag = "3")]
    pub tenant: String,
    #[prost(string, tag = "4")]
    pub batch_id: String,
    #[prost(uint32, tag = "5")]
    pub index: u32,
    #[prost(string, tag = "6")]
    pub event_id: String,
    #[prost(string, tag = "7")]
    pub error_code: String,
    #[prost(string, tag = "8")]
    pub error_message: String,
    #[prost(uint32, tag = "9")]
    pub attempts: u32,
    #[prost(uint64, tag = "10")]
    pub accepted_ms: u64,
    #[prost(uint64, tag = "11")]
    pub completed_ms: u64,
    #[prost(bool, tag = "12")]
    pub redelivered: bool,
}

pub const REPORT_DELIVERED: u32 = 1;
pub const REPORT_DEAD: u32 = 2;

/// A dead letter: the entry and why it was given up.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredDead {
    #[prost(message, optional, tag = "1")]
    pub entry: Option<StoredEntry>,
    #[prost(string, tag = "2")]
    pub error_code: String,
    #[prost(string, tag = "3")]
    pub error_message: String,
    #[prost(uint32, tag = "4")]
    pub attempts: u32,
    #[prost(uint64, tag = "5")]
    pub dead_ms: u64,
    #[prost(bool, tag = "6")]
    pub redelivered: bool,
}

/// A receipt id: the acceptance time in its top 48 bits (epoch ms), so that
/// ids sort by it, then a counter that starts at a random point per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Receipt(pub u128);

impl Receipt {
    /// 32 lowercase hex digits.
    pub fn to_text(self) -> String {
        format!("{:032x}", self.0)
    }

    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 32 {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(Self)
    }

    /// When it was issued (epoch ms).
    pub fn issued_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }

    pub fn to_bytes(self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(u128::from_be_bytes(bytes.try_into().ok()?)))
    }
}

/// Issues receipt ids; one per gateway.
pub struct Receipts {
    counter: AtomicU64,
}

impl Default for Receipts {
    fn default() -> Self {
        Self {
            counter: AtomicU64::new(fastrand::u64(..) >> 1),
        }
    }
}

impl Receipts {
    /// The next id, for an entry accepted at `now_ms`.
    pub fn next(&self, now_ms: u64) -> Receipt {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let ms = u128::from(now_ms & ((1 << 48) - 1));
        // 80 bits below the time: the counter's 64 and 16 of a random
        // per-process salt, so two processes within one millisecond differ.
        Receipt((ms << 80) | (u128::from(n) << 16) | u128::from(self.salt()))
    }

    fn salt(&self) -> u16 {
        static SALT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
        *SALT.get_or_init(|| fastrand::u16(..))
    }
}

/// Now, in epoch ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_sort_by_time_and_read_back() {
        let r = Receipts::default();
        let a = r.next(1_700_000_000_000);
        let b = r.next(1_700_000_000_001);
        let c = r.next(1_700_000_000_001);
        assert!(a < b && b != c);
        assert_eq!(a.issued_ms(), 1_700_000_000_000);
        assert_eq!(Receipt::parse(&a.to_text()), Some(a));
        assert!(a.to_text() < b.to_text());
        assert_eq!(Receipt::from_bytes(&a.to_bytes()), Some(a));
        assert_eq!(Receipt::parse("xyz"), None);
    }
}
