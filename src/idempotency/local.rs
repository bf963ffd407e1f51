//! Keys in this replica's memory: a hash map bounded by `max_keys`, with
//! the keys in the order they expire (the window is the same for all).

use std::{collections::VecDeque, sync::Mutex, time::Duration};

use tokio::{sync::watch, time::Instant};

use super::{Claim, First, Keyed, Settle, Token};
use crate::{durable::Receipt, sync::lock};

pub(super) struct LocalKeys {
    window: Duration,
    max_keys: usize,
    inner: Mutex<Inner>,
    /// Bumped when a key someone waits on is settled.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    slots: foldhash::HashMap<u128, Slot>,
    /// (expiry, key) in the order the keys were first seen, which is the
    /// order they expire in. A key forgotten early (released, evicted)
    /// leaves its place here; it is skipped when reached.
    order: VecDeque<(Instant, u128)>,
    next_token: u64,
    /// Evicted since last taken (for the metric).
    evicted: u64,
}

struct Slot {
    fingerprint: u128,
    expires: Instant,
    /// The token of the entry that may settle it (the last claim).
    owner: u64,
    state: State,
}

enum State {
    InFlight {
        /// After this the outcome counts as unknown.
        lease: Instant,
        /// A resend waits on it: tell the waiters when it is settled.
        waited: bool,
    },
    Settled(First),
}

impl LocalKeys {
    pub(super) fn new(window: Duration, max_keys: usize) -> Self {
        Self {
            window,
            max_keys,
            inner: Mutex::default(),
            changed: watch::Sender::new(0),
        }
    }

    pub(super) fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(super) fn len(&self) -> usize {
        lock(&self.inner).slots.len()
    }

    pub(super) fn take_evicted(&self) -> u64 {
        std::mem::take(&mut lock(&self.inner).evicted)
    }

    /// Claims every key (a new one becomes this caller's, in flight).
    pub(super) fn claim(&self, keyed: &[Keyed], now: Instant, lease: Duration) -> Vec<Claim> {
        let mut inner = lock(&self.inner);
        inner.expire(now);
        let claims = keyed
            .iter()
            .map(|k| match inner.claim_held(k, now, lease) {
                Some(c) => c,
                None => {
                    let token = inner.token(k.fingerprint);
                    inner.slots.insert(
                        k.hash,
                        Slot {
                            fingerprint: k.fingerprint,
                            expires: now + self.window,
                            owner: token.id,
                            state: State::InFlight {
                                lease: now + lease,
                                waited: false,
                            },
                        },
                    );
                    inner.order.push_back((now + self.window, k.hash));
                    Claim::Mine {
                        token,
                        forced: false,
                    }
                }
            })
            .collect();
        inner.bound(self.max_keys);
        claims
    }

    /// Claims the keys held here; None for the others (left untouched).
    pub(super) fn claim_held(
        &self,
        keyed: &[Keyed],
        now: Instant,
        lease: Duration,
    ) -> Vec<Option<Claim>> {
        let mut inner = lock(&self.inner);
        inner.expire(now);
        keyed
            .iter()
            .map(|k| inner.claim_held(k, now, lease))
            .collect()
    }

    pub(super) fn settle(&self, items: Vec<(u128, Token, Settle)>) {
        let mut inner = lock(&self.inner);
        let mut wake = false;
        for (hash, token, how) in items {
            let Some(slot) = inner.slots.get_mut(&hash) else {
                continue;
            };
            if slot.owner != token.id {
                continue;
            }
            wake |= matches!(slot.state, State::InFlight { waited: true, .. });
            match how {
                Settle::Keep(first) => slot.state = State::Settled(first),
                Settle::Release => {
                    inner.slots.remove(&hash);
                }
            }
        }
        drop(inner);
        if wake {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Keys settled elsewhere (claimed in Redis, which did not take the
    /// settle), as `(hash, fingerprint, first)`: held from `now` for a
    /// window. A key held here already (claimed here since) is left as it is.
    pub(super) fn keep(&self, keys: Vec<(u128, u128, First)>, now: Instant) {
        if keys.is_empty() {
            return;
        }
        let mut inner = lock(&self.inner);
        inner.expire(now);
        let expires = now + self.window;
        for (hash, fingerprint, first) in keys {
            if !inner.slots.contains_key(&hash) {
                inner.insert_settled(hash, fingerprint, expires, first);
            }
        }
        inner.bound(self.max_keys);
    }

    /// DURABLE keys from the queue file: settled as queued, expiring at
    /// `expires_ms` (wall clock; `now_ms` is now). Returns how many.
    pub(super) fn load(
        &self,
        keys: impl IntoIterator<Item = (u128, u128, Receipt, u64)>,
        now_ms: u64,
    ) -> usize {
        let now = Instant::now();
        let mut loaded: Vec<(Instant, u128, u128, Receipt)> = keys
            .into_iter()
            .filter(|k| k.3 > now_ms)
            .map(|(hash, fp, receipt, expires_ms)| {
                let left = Duration::from_millis(expires_ms - now_ms).min(self.window);
                (now + left, hash, fp, receipt)
            })
            .collect();
        loaded.sort_by_key(|k| k.0);
        let n = loaded.len();
        let mut inner = lock(&self.inner);
        for (expires, hash, fingerprint, receipt) in loaded {
            inner.insert_settled(hash, fingerprint, expires, First::Queued { receipt });
        }
        inner.bound(self.max_keys);
        n
    }
}

impl Inner {
    /// A key whose outcome is known, expiring at `expires`.
    fn insert_settled(&mut self, hash: u128, fingerprint: u128, expires: Instant, first: First) {
        let owner = self.token(fingerprint).id;
        self.slots.insert(
            hash,
            Slot {
                fingerprint,
                expires,
                owner,
                state: State::Settled(first),
            },
        );
        self.order.push_back((expires, hash));
    }

    fn token(&mut self, fingerprint: u128) -> Token {
        self.next_token += 1;
        Token {
            id: self.next_token,
            remote: false,
            forced: false,
            fingerprint,
        }
    }

    /// What a key held here says; None when it is not held.
    fn claim_held(&mut self, k: &Keyed, now: Instant, lease: Duration) -> Option<Claim> {
        let token = self.next_token + 1;
        let slot = self.slots.get_mut(&k.hash)?;
        if slot.fingerprint != k.fingerprint {
            return Some(Claim::Reused);
        }
        if let State::InFlight { lease, .. } = slot.state {
            if lease <= now {
                slot.state = State::Settled(First::Unknown { attempts: 0 });
            }
        }
        Some(match &mut slot.state {
            State::InFlight { waited, .. } => {
                *waited = true;
                Claim::InFlight
            }
            State::Settled(First::Unknown { .. }) if k.resend_if_unknown => {
                slot.owner = token;
                slot.state = State::InFlight {
                    lease: now + lease,
                    waited: false,
                };
                self.next_token = token;
                Claim::Mine {
                    token: Token {
                        id: token,
                        remote: false,
                        forced: true,
                        fingerprint: k.fingerprint,
                    },
                    forced: true,
                }
            }
            State::Settled(first) => Claim::Seen(first.clone()),
        })
    }

    /// Forgets keys whose window ended.
    fn expire(&mut self, now: Instant) {
        while let Some(&(expires, hash)) = self.order.front() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            if self.slots.get(&hash).is_some_and(|s| s.expires == expires) {
                self.slots.remove(&hash);
            }
        }
        // Places left by keys forgotten early: rebuilt when they are most
        // of the queue.
        if self.order.len() > 2 * self.slots.len() + 4096 {
            let mut order: Vec<(Instant, u128)> =
                self.slots.iter().map(|(h, s)| (s.expires, *h)).collect();
            order.sort_unstable();
            self.order = order.into();
        }
    }

    /// Forgets the oldest keys beyond `max_keys`.
    fn bound(&mut self, max_keys: usize) {
        while self.slots.len() > max_keys {
            let Some((expires, hash)) = self.order.pop_front() else {
                break;
            };
            if self.slots.get(&hash).is_some_and(|s| s.expires == expires) {
                self.slots.remove(&hash);
                self.evicted += 1;
            }
        }
    }
}
