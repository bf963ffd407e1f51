//! Idempotency keys: a caller's resend of an entry with the same key (for
//! the same tenant, within `[idempotency] window_ms`) is answered from the
//! first entry instead of being sent again. EventBridge has no such key:
//! without this, every resend is a second event for the customer's
//! consumers to deduplicate.
//!
//! A key is claimed before its entry is sent (in flight), then settled by
//! the entry's outcome:
//! - accepted (or, DURABLE, queued): kept, and a resend gets that result
//!   with `deduplicated`;
//! - failed: forgotten, since EventBridge does not hold the event, so a
//!   resend is sent;
//! - unknown (EventBridge may or may not hold it): kept as unknown; a
//!   resend gets OutcomeUnknown again unless it sets `resend_if_unknown`.
//!
//! A resend that finds its key in flight waits for the outcome within its
//! own deadline. An entry still in an EventBridge call when its caller's
//! deadline came is settled by the call's real outcome when it comes back
//! (the caller was told OutcomeUnknown; its resend learns the truth).
//!
//! Keys live in this replica's memory ([`local`]), and in cluster mode in
//! the Redis the replicas share ([`remote`]), falling back to memory while
//! Redis cannot be reached. The keys of DURABLE entries are also written
//! with the entries in the durable queue, so they survive a restart.

mod local;
mod remote;
mod settings;
#[cfg(test)]
mod tests;

pub use settings::{IdempotencyConfigError, IdempotencySection, IdempotencySettings};

use std::{sync::Arc, time::Duration};

use sha2::{Digest, Sha256};
use tokio::{sync::watch, time::Instant};

use crate::{cluster::Cluster, domain::entry::PreparedEntry, durable::Receipt, metrics::Metrics};

use self::{local::LocalKeys, remote::RemoteKeys};

/// The longest key, in characters (printable ASCII: one byte each).
pub const MAX_KEY_CHARS: usize = 128;

/// Checks a caller's key: 1 to 128 printable ASCII characters (space to
/// `~`). The message names the problem, not the key.
pub fn check_key(key: &str) -> Result<(), String> {
    if let Some(i) = key.bytes().position(|b| !(0x20..=0x7e).contains(&b)) {
        return Err(format!(
            "idempotency_key has a character that is not printable ASCII at byte {i}"
        ));
    }
    if key.len() > MAX_KEY_CHARS {
        return Err(format!(
            "idempotency_key is {} characters; at most {MAX_KEY_CHARS} are allowed",
            key.len()
        ));
    }
    Ok(())
}

/// The key's name in the store: SHA-256 of the tenant and the caller's key
/// (128 bits of it). Fixed-size, and no caller can make its key collide
/// with another tenant's.
pub fn key_hash(tenant: &str, key: &str) -> u128 {
    let mut h = Sha256::new();
    h.update((tenant.len() as u64).to_le_bytes());
    h.update(tenant.as_bytes());
    h.update(key.as_bytes());
    first_128(h)
}

/// What must be the same for a resend to be the same event: the source,
/// detail type, detail and resources (not `time`: a resend may stamp it
/// again).
pub fn fingerprint(e: &PreparedEntry) -> u128 {
    let mut h = Sha256::new();
    for part in [e.source.name(), &e.detail_type, &e.detail] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update((e.resources.len() as u64).to_le_bytes());
    for r in &e.resources {
        h.update((r.len() as u64).to_le_bytes());
        h.update(r.as_bytes());
    }
    first_128(h)
}

fn first_128(h: Sha256) -> u128 {
    let digest = h.finalize();
    u128::from_be_bytes(digest[..16].try_into().expect("32 bytes"))
}

/// What the first entry with a key came to, as a resend is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum First {
    /// EventBridge accepted it.
    Accepted { event_id: Box<str>, attempts: u32 },
    /// DURABLE: it is in the durable queue under this receipt.
    Queued { receipt: Receipt },
    /// EventBridge may or may not hold it.
    Unknown { attempts: u32 },
}

/// An entry with a key, as claimed.
#[derive(Debug, Clone)]
pub struct Keyed {
    /// The entry's index in its request.
    pub index: u32,
    pub hash: u128,
    pub fingerprint: u128,
    pub resend_if_unknown: bool,
}

/// The right to send a claimed entry and to settle its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    id: u64,
    /// Claimed in Redis (else in this replica's memory).
    remote: bool,
    /// A claim of a key whose first entry's outcome is unknown
    /// (`resend_if_unknown`): should this one fail, the key stays unknown,
    /// since the first may be held.
    forced: bool,
    /// The claimed entry's fingerprint: a key Redis could not settle is
    /// kept in memory with it.
    fingerprint: u128,
}

/// What claiming a key gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// New (or unknown and forced): send the entry, then settle the key.
    Mine { token: Token, forced: bool },
    /// Seen: answer with the first one's result.
    Seen(First),
    /// The key belongs to another event.
    Reused,
    /// Another entry with the key is being sent: wait, then ask again.
    InFlight,
}

/// How a claimed key ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    Keep(First),
    /// The entry failed and was not accepted: the key is free again.
    Release,
}

/// The keys of one gateway replica.
pub struct Idempotency {
    settings: IdempotencySettings,
    local: LocalKeys,
    remote: Option<RemoteKeys>,
    metrics: Arc<Metrics>,
}

impl Idempotency {
    /// In cluster mode (`cluster`), keys are shared through its Redis.
    pub fn new(
        settings: IdempotencySettings,
        cluster: Option<Arc<Cluster>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            local: LocalKeys::new(settings.window, settings.max_keys),
            remote: cluster.map(|c| RemoteKeys::new(c, settings.window)),
            settings,
            metrics,
        }
    }

    pub fn settings(&self) -> &IdempotencySettings {
        &self.settings
    }

    /// Keys of DURABLE entries read back from the durable queue at
    /// start-up: `(hash, fingerprint, receipt, expires_ms)` (wall clock).
    pub fn load(&self, keys: impl IntoIterator<Item = (u128, u128, Receipt, u64)>) -> usize {
        let n = self.local.load(keys, crate::durable::now_ms());
        self.update_gauge();
        n
    }

    /// Claims each key, in order, for entries whose caller's deadline is
    /// `deadline`. Keys this replica holds are answered from memory; the
    /// rest, in cluster mode, from Redis in one round trip (or from memory
    /// when Redis does not answer).
    pub async fn claim(&self, keyed: &[Keyed], deadline: Instant) -> Vec<Claim> {
        let now = Instant::now();
        // An entry in flight may stay in an EventBridge call a while after
        // its caller's deadline; after that its outcome counts as unknown.
        let lease = deadline.saturating_duration_since(now) + self.settings.late_bound;
        let claims = match &self.remote {
            None => self.local.claim(keyed, now, lease),
            Some(remote) => {
                // What this replica holds itself (DURABLE keys read back at
                // start-up, keys claimed while Redis was away) comes first.
                let mut claims: Vec<Option<Claim>> = self.local.claim_held(keyed, now, lease);
                let ask: Vec<Keyed> = keyed
                    .iter()
                    .zip(&claims)
                    .filter(|(_, c)| c.is_none())
                    .map(|(k, _)| k.clone())
                    .collect();
                if !ask.is_empty() {
                    let answers = match remote.claim(&ask, lease).await {
                        Some(answers) => answers,
                        None => {
                            self.metrics
                                .idempotency
                                .local_fallback
                                .inc_by(ask.len() as u64);
                            self.local.claim(&ask, now, lease)
                        }
                    };
                    let mut answers = answers.into_iter();
                    for c in claims.iter_mut().filter(|c| c.is_none()) {
                        *c = answers.next();
                    }
                }
                claims
                    .into_iter()
                    .map(|c| c.unwrap_or(Claim::InFlight))
                    .collect()
            }
        };
        self.update_gauge();
        claims
    }

    /// Settles claimed keys (`(hash, token, how)`), each where it was
    /// claimed. A forced claim is never released: the key stays unknown.
    pub async fn settle(&self, items: Vec<(u128, Token, Settle)>) {
        let items = items.into_iter().map(|(hash, token, how)| match how {
            Settle::Release if token.forced => {
                (hash, token, Settle::Keep(First::Unknown { attempts: 0 }))
            }
            how => (hash, token, how),
        });
        let (remote, local): (Vec<_>, Vec<_>) = items.partition(|(_, t, _)| t.remote);
        if !local.is_empty() {
            self.local.settle(local);
            self.update_gauge();
        }
        if let (Some(r), false) = (&self.remote, remote.is_empty()) {
            if !r.settle(&remote).await {
                // Not settled in Redis (it is away): the keys stay in
                // flight there until their lease ends, then count as
                // unknown. This replica knows the outcomes: it keeps them,
                // so that a resend to it is answered, not sent again
                // (alone, and once back, since held keys come first).
                let kept: Vec<(u128, u128, First)> = remote
                    .into_iter()
                    .filter_map(|(hash, token, how)| match how {
                        Settle::Keep(first) => Some((hash, token.fingerprint, first)),
                        Settle::Release => None,
                    })
                    .collect();
                self.local.keep(kept, Instant::now());
                self.update_gauge();
            }
        }
    }

    /// Changes whenever a key someone waits on in memory is settled.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.local.changes()
    }

    /// How often a resend waiting on a key asks again: keys in Redis are
    /// polled, keys in memory wake their waiters (the poll is a backstop).
    pub fn poll_every(&self, waited: Duration) -> Duration {
        let base = if self.remote.is_some() { 5 } else { 50 };
        (Duration::from_millis(base) + waited / 4).min(Duration::from_millis(100))
    }

    fn update_gauge(&self) {
        self.metrics.idempotency.keys.set(self.local.len() as i64);
        let evicted = self.local.take_evicted();
        if evicted > 0 {
            self.metrics.idempotency.evicted.inc_by(evicted);
        }
    }
}
