//! From validated entries to one result per entry, with coalescing.
//!
//! A batch's entries are grouped by (region, source). Entries that fill
//! whole calls (20 entries, or as many as the size limit allows) are sent
//! from the caller's own task: they need no company. The rest are queued,
//! as one message, on the lane of their (region, source). A lane packs
//! queued entries into calls of at most 20 entries and the size limit: a
//! call goes out as soon as it is full, or when the first entry in it has
//! waited `linger` (0 sends whatever is queued at once). Calls to one region
//! run under a concurrency bound and pacing, whichever way they are made;
//! when the bound is reached the lane stops taking entries, its queue
//! fills, and submitters wait: backpressure reaches the callers instead of
//! memory growing.
//!
//! Each entry carries a handle on its batch's reply (with the batch's
//! deadline), so an entry's result reaches its own batch and index whatever
//! call it travelled in, and the batch is answered once, when its last
//! entry is. An entry that comes back with a retryable code is queued again
//! on its lane after a jittered backoff (never delaying or duplicating
//! another entry's result), while attempts remain and its deadline leaves
//! room.
//!
//! # Layout
//! - `reply`: the fan-in of one batch's results, and what is known of
//!   each entry not yet answered (how often sent, in flight or not).
//! - `lane`: the coalescing lane of one (region, source).
//! - `scheduler`: the fair share of a region's pacing between tenants.
//! - `call`: admission of a call (deadline, breaker, the scheduler's turn,
//!   concurrency), the upstream call with its metrics, and each entry
//!   answered or resent.

mod call;
mod lane;
mod pace;
mod reply;
mod scheduler;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use futures::future::join_all;
use tokio::{
    sync::{mpsc, Semaphore},
    time::Instant,
};

pub use self::reply::LateResults;
use self::{
    pace::Pace,
    reply::{Job, Reply, Results},
    scheduler::Scheduler,
};
use opentelemetry::trace::SpanContext;

use crate::{
    cluster::Cluster,
    domain::{
        chunk::group_by_source,
        entry::PreparedEntry,
        outcome::{codes, Outcome},
        tenant::{SourceRef, TenantShare},
    },
    metrics::Metrics,
    sync::lock,
    traces::Traces,
    upstream::{
        breaker::{Breaker, BreakerSettings, RetryBudget},
        retry::RetryPolicy,
        Upstream,
    },
};

/// Messages (a batch's entries for the lane's source, or one entry to
/// resend) a lane may hold queued before submitters wait. The entries they
/// carry are bounded by the in-flight limits the callers were admitted under.
const LANE_QUEUE_MESSAGES: usize = 256;

/// How the pipeline packs and sends.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub max_call_bytes: usize,
    /// How long a lane waits for more entries before sending a call that is
    /// not full. Zero turns coalescing off.
    pub linger: Duration,
    /// Upstream calls in flight at once, per region.
    pub max_concurrent_calls_per_region: usize,
    /// Calls per second per region (0: unpaced), with this burst.
    pub upstream_calls_per_second: f64,
    pub upstream_burst: u32,
    /// Lower the pace when EventBridge throttles a whole call.
    pub adaptive_pacing: bool,
    pub retry: RetryPolicy,
    pub breaker: BreakerSettings,
    /// Resends earned per first send, and the floor per second.
    pub retry_budget_ratio: f64,
    pub retry_budget_min_per_second: f64,
}

/// The spans a batch's entries come from, for the spans of the calls that
/// carry them.
#[derive(Clone, Default)]
pub enum Origins {
    #[default]
    None,
    /// Every entry's: its batch's span.
    Batch(SpanContext),
    /// Each entry's own, in the order the entries were given (DURABLE
    /// delivery: the batches that queued them).
    PerEntry(Vec<Option<SpanContext>>),
}

impl Origins {
    fn of(&self, slot: u32) -> Option<&SpanContext> {
        match self {
            Self::None => None,
            Self::Batch(cx) => Some(cx),
            Self::PerEntry(v) => v.get(slot as usize).and_then(Option::as_ref),
        }
    }
}

/// Told when a region's breaker opens (true) or closes (false).
pub type BreakerHook = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// What a lane receives: entries of one batch (or one entry to resend),
/// with their tenant's share as it stood when they were sent.
struct Jobs {
    share: TenantShare,
    jobs: Vec<Job>,
}

/// Sends validated entries upstream; shared by every request and stream.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: Arc<dyn Upstream>,
    metrics: Arc<Metrics>,
    settings: PipelineSettings,
    /// Looked up once per batch: a fast hash, the keys are our own config.
    /// A lane per tenant and source (two tenants may alias one source).
    lanes: Mutex<HashMap<(Arc<str>, SourceRef), Lane, foldhash::fast::RandomState>>,
    regions: Mutex<HashMap<String, Arc<Region>>>,
    budget: RetryBudget,
    breaker_hook: OnceLock<BreakerHook>,
    /// The calls' spans (none until set).
    traces: OnceLock<Arc<Traces>>,
    /// Cluster mode: the pacing comes from the Redis the replicas share.
    cluster: Option<Arc<Cluster>>,
}

/// Where entries for one source go: its lane's queue, and its region.
#[derive(Clone)]
struct Lane {
    tx: mpsc::Sender<Jobs>,
    region: Arc<Region>,
}

/// What calls to one region share: the concurrency bound, the pacing
/// shared fairly between tenants (None: unpaced), and the breaker.
struct Region {
    calls: Arc<Semaphore>,
    /// The region's pace (None: unpaced); its scheduler shares it.
    pace: Option<Arc<Pace>>,
    scheduler: Option<Arc<Scheduler>>,
    breaker: Breaker,
}

impl Pipeline {
    pub fn new(
        upstream: Arc<dyn Upstream>,
        metrics: Arc<Metrics>,
        settings: PipelineSettings,
    ) -> Self {
        Self::clustered(upstream, metrics, settings, None)
    }

    /// A pipeline whose pacing, in cluster mode, every replica shares
    /// through `cluster`'s Redis.
    pub fn clustered(
        upstream: Arc<dyn Upstream>,
        metrics: Arc<Metrics>,
        settings: PipelineSettings,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                upstream,
                metrics,
                budget: RetryBudget::new(
                    settings.retry_budget_ratio,
                    settings.retry_budget_min_per_second,
                ),
                breaker_hook: OnceLock::new(),
                traces: OnceLock::new(),
                cluster,
                settings,
                lanes: Mutex::default(),
                regions: Mutex::default(),
            }),
        }
    }

    /// The Redis the replicas share, in cluster mode.
    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        self.inner.cluster.clone()
    }

    /// Sets what is told of breaker changes (health, logs). Once.
    pub fn set_breaker_hook(&self, hook: BreakerHook) {
        let _ = self.inner.breaker_hook.set(hook);
    }

    /// While `region`'s breaker is open: how long until it lets calls through.
    pub fn region_retry_after(&self, region: &str) -> Option<Duration> {
        let regions = lock(&self.inner.regions);
        regions.get(region).and_then(|r| r.breaker.retry_after())
    }

    /// Sends `entries` and returns `(index, result)` for each of them, each
    /// index exactly once. Nothing is sent, or resent, past `deadline`; an
    /// entry still unanswered at the deadline is reported by what is known
    /// of it: never sent, sent with its outcome unknown, or failed and not
    /// resent. Its `attempts` count every send.
    /// `tenant` decides the entries' turn when the region's calls wait for
    /// pacing.
    pub async fn send(
        &self,
        tenant: &TenantShare,
        entries: Vec<PreparedEntry>,
        deadline: Instant,
    ) -> Results {
        self.send_inner(tenant, entries, deadline, false, Origins::None)
            .await
            .0
    }

    /// [`Pipeline::send`], the calls' spans linking to `origins`.
    pub async fn send_traced(
        &self,
        tenant: &TenantShare,
        entries: Vec<PreparedEntry>,
        deadline: Instant,
        origins: Origins,
    ) -> Results {
        self.send_inner(tenant, entries, deadline, false, origins)
            .await
            .0
    }

    /// [`Pipeline::send`], and, when entries were still in an EventBridge
    /// call at the deadline (reported OutcomeUnknown), their final results
    /// once those calls come back: what an idempotency key remembers.
    pub async fn send_tracked(
        &self,
        tenant: &TenantShare,
        entries: Vec<PreparedEntry>,
        deadline: Instant,
        origins: Origins,
    ) -> (Results, Option<LateResults>) {
        self.send_inner(tenant, entries, deadline, true, origins)
            .await
    }

    /// Sets where the calls' spans go (traces on). Once.
    pub fn set_traces(&self, traces: Arc<Traces>) {
        let _ = self.inner.traces.set(traces);
    }

    async fn send_inner(
        &self,
        tenant: &TenantShare,
        entries: Vec<PreparedEntry>,
        deadline: Instant,
        track_late: bool,
        origins: Origins,
    ) -> (Results, Option<LateResults>) {
        let (reply, mut rx) = Reply::new(entries.iter().map(|e| e.index), deadline, origins);
        if track_late {
            reply.track_late();
        }
        let waiter = Arc::downgrade(&reply);
        let jobs: Vec<Job> = entries
            .into_iter()
            .enumerate()
            .map(|(slot, entry)| Job {
                entry,
                attempts: 0,
                slot: slot as u32,
                reply: reply.clone(),
            })
            .collect();
        drop(reply);
        let mut now = Vec::new();
        // One message per source: a batch's entries mostly share one.
        for mut jobs in group_by_source(jobs, |j| &j.entry.source) {
            let source = jobs[0].entry.source.clone();
            let lane = self.inner.lane(tenant, &source);
            // Whole calls' worth of entries go out from here; the rest (and
            // everything, when coalescing is on and the batch is small)
            // waits in the lane for company.
            for call in self.inner.whole_calls(&mut jobs) {
                now.push(self.inner.clone().send_now(
                    source.clone(),
                    tenant.clone(),
                    lane.region.clone(),
                    lane.tx.downgrade(),
                    call,
                ));
            }
            if jobs.is_empty() {
                continue;
            }
            // Waits while the lane is full: that is the backpressure.
            match tokio::time::timeout_at(deadline, lane.tx.reserve_owned()).await {
                Ok(Ok(permit)) => {
                    permit.send(Jobs {
                        share: tenant.clone(),
                        jobs,
                    });
                }
                Ok(Err(_closed)) => {
                    for job in jobs {
                        job.answer(Outcome::failed(
                            codes::SHUTTING_DOWN,
                            "the gateway is shutting down; the entry was not sent",
                        ));
                    }
                }
                Err(_elapsed) => {
                    for job in jobs {
                        job.answer(Outcome::failed(
                            codes::DEADLINE_EXCEEDED,
                            "the caller's deadline passed while the entry waited to be queued; it was not sent",
                        ));
                    }
                }
            }
        }
        // The calls made from here run until answered or the deadline;
        // the batch's answer is complete when every entry's is.
        let (_, answered) = tokio::join!(
            tokio::time::timeout_at(deadline, join_all(now)),
            tokio::time::timeout_at(deadline, &mut rx)
        );
        match answered {
            Ok(Ok(results)) => (results, None),
            // The reply is gone without a word: it always sends on drop.
            Ok(Err(_never)) => (unreachable_results(), None),
            Err(_elapsed) => waiter
                .upgrade()
                .and_then(|reply| reply.close_at_deadline())
                // Answered (or dropped) just as the deadline came.
                .or_else(|| rx.try_recv().ok().map(|r| (r, None)))
                .unwrap_or_else(|| (unreachable_results(), None)),
        }
    }
}

/// Never reached: a [`Reply`] hands its results over on its last answer or
/// on drop. Should that change, the API layer still answers every index.
fn unreachable_results() -> Results {
    tracing::error!("a batch's reply closed without its results");
    Vec::new()
}

impl Inner {
    /// The lane of `tenant`'s `source`, started on first use, and its region.
    fn lane(self: &Arc<Self>, tenant: &TenantShare, source: &SourceRef) -> Lane {
        let mut lanes = lock(&self.lanes);
        let key = (tenant.id_arc(), source.clone());
        if let Some(lane) = lanes.get(&key) {
            return lane.clone();
        }
        let (tx, rx) = mpsc::channel(LANE_QUEUE_MESSAGES);
        let region = self.region(source.region());
        let lane = Lane {
            tx: tx.clone(),
            region: region.clone(),
        };
        lanes.insert(key, lane.clone());
        tokio::spawn(Arc::clone(self).run_lane(source.clone(), rx, tx.downgrade(), region));
        lane
    }

    fn region(&self, region: &str) -> Arc<Region> {
        let s = &self.settings;
        lock(&self.regions)
            .entry(region.to_string())
            .or_insert_with(|| {
                let pace = (s.upstream_calls_per_second > 0.0).then(|| {
                    Arc::new(Pace::new(
                        region,
                        s.upstream_calls_per_second,
                        f64::from(s.upstream_burst),
                        s.adaptive_pacing,
                        self.cluster.clone(),
                        &self.metrics,
                    ))
                });
                // Shut from the start: a dashboard shows 0, not no data.
                self.metrics
                    .breaker_open
                    .get_or_create(&crate::metrics::RegionLabels {
                        region: region.to_string(),
                    })
                    .set(0);
                Arc::new(Region {
                    calls: Arc::new(Semaphore::new(s.max_concurrent_calls_per_region)),
                    scheduler: pace.clone().map(Scheduler::start),
                    pace,
                    breaker: Breaker::new(s.breaker),
                })
            })
            .clone()
    }
}
