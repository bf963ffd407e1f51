//! The fair share of a region's pacing between tenants.
//!
//! Every call to a paced region waits here for a pacing token. Tokens are
//! handed out by one dispatcher per region, one at a time as the pace
//! allows, to the tenants that have calls waiting, in weighted round robin
//! over calls (deficit round robin with a unit cost per call): in each
//! round a tenant of weight `w` gets up to `w` calls, then the next tenant
//! is served. Calls are the unit because the quota EventBridge enforces is
//! calls per second, whatever they carry; with coalescing a flooding
//! tenant's calls are full (20 entries) while a quiet tenant's may hold one,
//! which is what a quiet tenant needs.
//!
//! So a tenant alone uses the whole pace; a tenant that goes idle leaves
//! the ring at once and its turns go to the others; and a call of a tenant
//! that was quiet waits for at most one round of the busy tenants (the sum
//! of their weights, in tokens), not for their backlog. A waiter that gives
//! up (its deadline, a cancellation) is skipped without using a token.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, Weak},
};

use tokio::sync::{oneshot, Notify};

use super::pace::Pace;
use crate::{domain::tenant::TenantShare, sync::lock};

/// One region's pacing, shared fairly.
pub(super) struct Scheduler {
    state: Mutex<State>,
    /// Wakes the dispatcher when a call starts waiting, or the scheduler goes.
    wake: Arc<Notify>,
}

#[derive(Default)]
struct State {
    /// Tenants with calls waiting, by id.
    tenants: HashMap<Arc<str>, TenantQueue>,
    /// The same tenants in turn order; the front one is being served.
    ring: VecDeque<Arc<str>>,
    /// Waiters queued (some may have given up since).
    waiting: usize,
}

struct TenantQueue {
    waiters: VecDeque<oneshot::Sender<()>>,
    /// The weight in force: the one its latest waiter came with (a reload
    /// changes it for the calls that follow).
    weight: u32,
    /// Calls left in the tenant's current turn.
    left: u32,
}

impl Scheduler {
    /// A scheduler handing out `pace`'s tokens; its dispatcher runs until
    /// the scheduler is dropped.
    pub(super) fn start(pace: Arc<Pace>) -> Arc<Self> {
        let scheduler = Arc::new(Self {
            state: Mutex::default(),
            wake: Arc::new(Notify::new()),
        });
        tokio::spawn(dispatch(
            Arc::downgrade(&scheduler),
            scheduler.wake.clone(),
            pace,
        ));
        scheduler
    }

    /// Waits for a pacing token for one call of `tenant`. Dropping the
    /// future gives the place up.
    pub(super) async fn turn(&self, tenant: &TenantShare) {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = lock(&self.state);
            let state = &mut *state;
            state.waiting += 1;
            match state.tenants.get_mut(tenant.id()) {
                Some(q) => {
                    q.weight = tenant.weight();
                    q.waiters.push_back(tx);
                }
                None => {
                    state.tenants.insert(
                        tenant.id_arc(),
                        TenantQueue {
                            waiters: VecDeque::from([tx]),
                            weight: tenant.weight(),
                            left: 0,
                        },
                    );
                    state.ring.push_back(tenant.id_arc());
                }
            }
        }
        self.wake.notify_one();
        // An error means the scheduler is gone (the pipeline stopped):
        // nothing paces any more.
        let _ = rx.await;
    }

    /// How many calls wait (0: none).
    fn waiting(&self) -> usize {
        let state = lock(&self.state);
        if state.ring.is_empty() {
            0
        } else {
            state.waiting.max(1)
        }
    }

    /// Hands a token to the next waiting call in turn. False when every
    /// waiter had given up (the token is still to be used).
    fn grant_next(&self) -> bool {
        let mut state = lock(&self.state);
        let state = &mut *state;
        while let Some(id) = state.ring.front().cloned() {
            let q = state.tenants.get_mut(&id).expect("ring and map agree");
            let waiter = loop {
                match q.waiters.pop_front() {
                    Some(w) if w.is_closed() => state.waiting -= 1,
                    Some(w) => {
                        state.waiting -= 1;
                        break Some(w);
                    }
                    None => break None,
                }
            };
            let Some(waiter) = waiter else {
                // Idle now: out of the ring, its turns go to the others.
                state.ring.pop_front();
                state.tenants.remove(&id);
                continue;
            };
            if q.left == 0 {
                q.left = q.weight.max(1);
            }
            q.left -= 1;
            if q.waiters.is_empty() {
                state.ring.pop_front();
                state.tenants.remove(&id);
            } else if q.left == 0 {
                state.ring.rotate_left(1);
            }
            if waiter.send(()).is_ok() {
                return true;
            }
        }
        false
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

/// Waits for a waiter, then for a token, then grants it; until the
/// scheduler is dropped.
async fn dispatch(scheduler: Weak<Scheduler>, wake: Arc<Notify>, pace: Arc<Pace>) {
    loop {
        // Registered before the check, so a wake between the two is kept.
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let waiting = match scheduler.upgrade() {
            None => return,
            Some(s) => s.waiting(),
        };
        if waiting == 0 {
            woken.await;
            continue;
        }
        pace.take(waiting).await;
        let Some(s) = scheduler.upgrade() else { return };
        if !s.grant_next() {
            // Nobody waits any more: the token stays for the next call.
            pace.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::future::join_all;
    use tokio::time::Instant;

    use super::*;
    use crate::metrics::Metrics;

    /// A scheduler over a local pace of `rate` calls a second, burst 1.
    fn paced(rate: f64) -> Arc<Scheduler> {
        Scheduler::start(Arc::new(Pace::new(
            "r",
            rate,
            1.0,
            false,
            None,
            &Metrics::new(false),
        )))
    }

    fn share(id: &str, weight: u32) -> TenantShare {
        TenantShare::new(id, weight)
    }

    /// Calls granted to each tenant while `n` calls of each wait at once.
    async fn shares(
        scheduler: &Arc<Scheduler>,
        tenants: &[(&str, u32)],
        grants: usize,
    ) -> Vec<usize> {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, (id, w)) in tenants.iter().enumerate() {
            for _ in 0..grants {
                let (s, order, t) = (scheduler.clone(), order.clone(), share(id, *w));
                tasks.push(tokio::spawn(async move {
                    s.turn(&t).await;
                    lock(&order).push(i);
                }));
            }
        }
        // Let every waiter queue before the first token after the burst.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        for t in tasks {
            t.await.unwrap();
        }
        let order = lock(&order).clone();
        // The first `grants` grants, while every tenant still had waiters.
        let mut counts = vec![0; tenants.len()];
        for i in order.into_iter().take(grants) {
            counts[i] += 1;
        }
        counts
    }

    #[tokio::test(start_paused = true)]
    async fn busy_tenants_share_by_weight() {
        let s = paced(100.0);
        let counts = shares(&s, &[("a", 1), ("b", 1), ("c", 2)], 200).await;
        assert_eq!(counts.iter().sum::<usize>(), 200);
        // 1:1:2 within a call or two.
        assert!((49..=51).contains(&counts[0]), "{counts:?}");
        assert!((49..=51).contains(&counts[1]), "{counts:?}");
        assert!((99..=101).contains(&counts[2]), "{counts:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reloaded_weight_applies_to_the_calls_already_waiting() {
        let s = paced(100.0);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // "b" was weight 1; its latest call comes after a reload made it 3.
        let waiters = (0..200)
            .map(|_| ("a", 1))
            .chain((0..199).map(|_| ("b", 1)))
            .chain([("b", 3)]);
        for (id, w) in waiters {
            let (s, order) = (s.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                s.turn(&share(id, w)).await;
                lock(&order).push(id);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let first: Vec<&str> = lock(&order).iter().take(200).copied().collect();
        let b = first.iter().filter(|id| **id == "b").count();
        assert!((149..=151).contains(&b), "b got {b} of 200");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_tenant_waits_one_round_not_the_backlog() {
        let s = paced(100.0);
        // A flood of 500 calls queued (5 s of pace).
        let flood: Vec<_> = (0..500)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.turn(&share("flood", 1)).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        s.turn(&share("quiet", 1)).await;
        // One round: the flood's one call, then the quiet one (10 ms each).
        assert!(
            started.elapsed() <= Duration::from_millis(20),
            "{:?}",
            started.elapsed()
        );
        for f in flood {
            f.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_alone_uses_the_whole_pace_and_given_up_places_cost_nothing() {
        let s = paced(100.0);
        s.turn(&share("a", 1)).await;
        // 100 waiters that give up at once use no tokens.
        let gone: Vec<_> = (0..100)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_millis(1), s.turn(&share("b", 1)))
                        .await;
                })
            })
            .collect();
        join_all(gone).await;
        let started = Instant::now();
        for _ in 0..50 {
            s.turn(&share("a", 1)).await;
        }
        let took = started.elapsed();
        // 50 calls at 100/s: about 0.5 s, not 1.5 s.
        assert!(took <= Duration::from_millis(520), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_dispatcher_stops_with_its_scheduler() {
        let s = paced(100.0);
        let wake = s.wake.clone();
        drop(s);
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Only our handle on the notifier is left: the dispatcher ended.
        assert_eq!(Arc::strong_count(&wake), 1);
    }
}
