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

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use futures::future::join_all;
use tokio::{
    sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

use crate::{
    domain::{
        chunk::{cut_into_calls, group_by_source, CallBudget},
        entry::PreparedEntry,
        limits::MAX_ENTRIES_PER_CALL,
        outcome::{codes, is_retryable_code, EntryResult, Outcome},
        tenant::SourceRef,
    },
    metrics::Metrics,
    quota::TokenBucket,
    upstream::{
        breaker::{Admission, Breaker, BreakerSettings, RetryBudget},
        retry::{Decision, RetryPolicy},
        CallFailureKind, Upstream,
    },
};

/// Time a resend needs at the least to be worth making before the deadline.
const MIN_CALL_TIME: Duration = Duration::from_millis(20);

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
    pub retry: RetryPolicy,
    pub breaker: BreakerSettings,
    /// Resends earned per first send, and the floor per second.
    pub retry_budget_ratio: f64,
    pub retry_budget_min_per_second: f64,
}

/// Told when a region's breaker opens (true) or closes (false).
pub type BreakerHook = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// Where the results of one batch's entries meet, whatever calls they
/// travel in. The batch's waiter ([`Pipeline::send`]) holds it only weakly:
/// the results reach the waiter when the last entry is answered, or, should
/// every entry be dropped unanswered, when the last one goes.
struct Reply {
    deadline: Instant,
    state: Mutex<ReplyState>,
}

struct ReplyState {
    results: Vec<(u32, EntryResult)>,
    expected: usize,
    /// Taken when the results are handed over, or when the waiter gives up.
    tx: Option<oneshot::Sender<Vec<(u32, EntryResult)>>>,
}

impl Reply {
    fn answer(&self, index: u32, result: EntryResult) {
        let mut state = self.state.lock().expect("lock");
        // Nobody is told any more once the waiter gave up.
        if state.tx.is_none() {
            return;
        }
        state.results.push((index, result));
        if state.results.len() >= state.expected {
            let results = std::mem::take(&mut state.results);
            let tx = state.tx.take().expect("checked above");
            drop(state);
            let _ = tx.send(results);
        }
    }

    /// Whether nobody waits for these results any more.
    fn is_closed(&self) -> bool {
        let state = self.state.lock().expect("lock");
        state.tx.as_ref().is_none_or(oneshot::Sender::is_closed)
    }

    /// The waiter gives up: what was answered so far; later answers are
    /// dropped.
    fn close(&self) -> Vec<(u32, EntryResult)> {
        let mut state = self.state.lock().expect("lock");
        state.tx = None;
        std::mem::take(&mut state.results)
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = state.tx.take() {
            let _ = tx.send(std::mem::take(&mut state.results));
        }
    }
}

/// One entry on its way: what to send, where its result goes.
struct Job {
    entry: PreparedEntry,
    attempts: u32,
    reply: Arc<Reply>,
}

impl Job {
    fn answer(self, outcome: Outcome, attempts: u32) {
        self.reply
            .answer(self.entry.index, EntryResult { outcome, attempts });
    }

    fn deadline(&self) -> Instant {
        self.reply.deadline
    }
}

/// What a lane receives: entries of one batch (or one entry to resend).
type Jobs = Vec<Job>;

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
    lanes: Mutex<HashMap<SourceRef, Lane, foldhash::fast::RandomState>>,
    regions: Mutex<HashMap<String, Arc<Region>>>,
    budget: RetryBudget,
    breaker_hook: OnceLock<BreakerHook>,
}

/// Where entries for one source go: its lane's queue, and its region.
#[derive(Clone)]
struct Lane {
    tx: mpsc::Sender<Jobs>,
    region: Arc<Region>,
}

/// What calls to one region share: the concurrency bound and the pacer.
struct Region {
    calls: Arc<Semaphore>,
    pacer: Option<TokenBucket>,
    breaker: Breaker,
}

impl Pipeline {
    pub fn new(
        upstream: Arc<dyn Upstream>,
        metrics: Arc<Metrics>,
        settings: PipelineSettings,
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
                settings,
                lanes: Mutex::default(),
                regions: Mutex::default(),
            }),
        }
    }

    /// Sets what is told of breaker changes (health, logs). Once.
    pub fn set_breaker_hook(&self, hook: BreakerHook) {
        let _ = self.inner.breaker_hook.set(hook);
    }

    /// While `region`'s breaker is open: how long until it lets calls through.
    pub fn region_retry_after(&self, region: &str) -> Option<Duration> {
        let regions = self.inner.regions.lock().expect("lock");
        regions.get(region).and_then(|r| r.breaker.retry_after())
    }

    /// Sends `entries` and returns `(index, result)` for each of them, each
    /// index exactly once. Nothing is sent, or resent, past `deadline`; an
    /// entry still unanswered at the deadline is reported as such.
    pub async fn send(
        &self,
        entries: Vec<PreparedEntry>,
        deadline: Instant,
    ) -> Vec<(u32, EntryResult)> {
        let expected = entries.len();
        let (tx, mut rx) = oneshot::channel();
        let reply = Arc::new(Reply {
            deadline,
            state: Mutex::new(ReplyState {
                results: Vec::with_capacity(expected),
                expected,
                tx: Some(tx),
            }),
        });
        let waiter = Arc::downgrade(&reply);
        let indices: Vec<u32> = entries.iter().map(|e| e.index).collect();
        let jobs: Vec<Job> = entries
            .into_iter()
            .map(|entry| Job {
                entry,
                attempts: 0,
                reply: reply.clone(),
            })
            .collect();
        drop(reply);
        let mut now = Vec::new();
        // One message per source: a batch's entries mostly share one.
        for mut jobs in group_by_source(jobs, |j| &j.entry.source) {
            let source = jobs[0].entry.source.clone();
            let lane = self.inner.lane(&source);
            // Whole calls' worth of entries go out from here; the rest (and
            // everything, when coalescing is on and the batch is small)
            // waits in the lane for company.
            for call in self.inner.whole_calls(&mut jobs) {
                now.push(self.inner.clone().send_now(
                    source.clone(),
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
                    permit.send(jobs);
                }
                Ok(Err(_closed)) => {
                    for job in jobs {
                        job.answer(
                            Outcome::failed(
                                codes::SHUTTING_DOWN,
                                "the gateway is shutting down; the entry was not sent",
                            ),
                            0,
                        );
                    }
                }
                Err(_elapsed) => {
                    for job in jobs {
                        job.answer(
                            Outcome::failed(
                                codes::DEADLINE_EXCEEDED,
                                "the caller's deadline passed while the entry waited to be queued; it was not sent",
                            ),
                            0,
                        );
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
        let (mut results, missing) = match answered {
            Ok(Ok(results)) => (
                results,
                // Only when entries were dropped unanswered.
                "the gateway lost track of this entry",
            ),
            Ok(Err(_never)) => (Vec::new(), "the gateway lost track of this entry"),
            Err(_elapsed) => {
                let partial = waiter.upgrade().map(|r| r.close()).unwrap_or_default();
                (
                    rx.try_recv().unwrap_or(partial),
                    "the caller's deadline passed before EventBridge answered for this entry; it may or may not have been accepted",
                )
            }
        };
        if results.len() < expected {
            let mut answered: Vec<u32> = results.iter().map(|(i, _)| *i).collect();
            answered.sort_unstable();
            for index in indices {
                if answered.binary_search(&index).is_err() {
                    results.push((index, EntryResult::refused(codes::OUTCOME_UNKNOWN, missing)));
                }
            }
        }
        results
    }
}

impl Inner {
    /// The lane of `source`, started on first use, and its region.
    fn lane(self: &Arc<Self>, source: &SourceRef) -> Lane {
        let mut lanes = self.lanes.lock().expect("lock");
        if let Some(lane) = lanes.get(source) {
            return lane.clone();
        }
        let (tx, rx) = mpsc::channel(LANE_QUEUE_MESSAGES);
        let region = self.region(source.region());
        let lane = Lane {
            tx: tx.clone(),
            region: region.clone(),
        };
        lanes.insert(source.clone(), lane.clone());
        tokio::spawn(Arc::clone(self).run_lane(source.clone(), rx, tx.downgrade(), region));
        lane
    }

    fn region(&self, region: &str) -> Arc<Region> {
        let s = &self.settings;
        self.regions
            .lock()
            .expect("lock")
            .entry(region.to_string())
            .or_insert_with(|| {
                Arc::new(Region {
                    calls: Arc::new(Semaphore::new(s.max_concurrent_calls_per_region)),
                    pacer: (s.upstream_calls_per_second > 0.0).then(|| {
                        TokenBucket::new(s.upstream_calls_per_second, f64::from(s.upstream_burst))
                    }),
                    breaker: Breaker::new(s.breaker),
                })
            })
            .clone()
    }

    /// Packs queued jobs into calls until the pipeline is dropped.
    async fn run_lane(
        self: Arc<Self>,
        source: SourceRef,
        mut rx: mpsc::Receiver<Jobs>,
        requeue: mpsc::WeakSender<Jobs>,
        region: Arc<Region>,
    ) {
        let max_bytes = self.settings.max_call_bytes;
        let linger = self.settings.linger;
        // Entries received but not yet in a call, in arrival order.
        let mut pending: VecDeque<Job> = VecDeque::new();
        loop {
            if pending.is_empty() {
                match rx.recv().await {
                    Some(jobs) => pending.extend(jobs),
                    None => return,
                }
            }
            let linger_until = Instant::now() + linger;
            let mut budget = CallBudget::new(max_bytes);
            let mut call = Vec::with_capacity(pending.len().min(MAX_ENTRIES_PER_CALL));
            'fill: loop {
                while let Some(job) = pending.front() {
                    if !budget.fits(job.entry.size) {
                        break 'fill;
                    }
                    budget.add(job.entry.size);
                    call.push(pending.pop_front().expect("front exists"));
                    if budget.is_full() {
                        break 'fill;
                    }
                }
                let more = match rx.try_recv() {
                    Ok(jobs) => Some(jobs),
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                    Err(mpsc::error::TryRecvError::Empty) if linger.is_zero() => None,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        tokio::time::timeout_at(linger_until, rx.recv())
                            .await
                            .ok()
                            .flatten()
                    }
                };
                match more {
                    Some(jobs) => pending.extend(jobs),
                    None => break,
                }
            }
            // Waiting here stops this lane from taking more entries: the
            // region's pacing and concurrency push back on the callers.
            let Some((live, permit)) = self.admit_call(&source, &region, call).await else {
                continue;
            };
            tokio::spawn(Arc::clone(&self).call(
                source.clone(),
                region.clone(),
                live,
                permit,
                requeue.clone(),
            ));
        }
    }

    /// Cuts the whole calls off the front of `jobs` (calls full by count,
    /// or closed because the next entry does not fit), leaving the partial
    /// rest in `jobs`. With coalescing off, the rest is a call too.
    fn whole_calls(&self, jobs: &mut Vec<Job>) -> Vec<Vec<Job>> {
        let mut calls = cut_into_calls(std::mem::take(jobs), self.settings.max_call_bytes, |j| {
            j.entry.size
        });
        // Every call but the last is full; the last is whole only when full
        // by count, unless coalescing is off.
        if calls
            .last()
            .is_some_and(|last| last.len() < MAX_ENTRIES_PER_CALL)
            && !self.settings.linger.is_zero()
        {
            *jobs = calls.pop().expect("checked above");
        }
        calls
    }

    /// Sends `jobs` (one call's worth) from the caller's own task: a batch
    /// that fills whole calls needs no coalescing, and skipping the lane
    /// saves two task hand-offs. Resends still go through the lane.
    async fn send_now(
        self: Arc<Self>,
        source: SourceRef,
        region: Arc<Region>,
        requeue: mpsc::WeakSender<Jobs>,
        jobs: Vec<Job>,
    ) {
        if let Some((live, permit)) = self.admit_call(&source, &region, jobs).await {
            self.call(source, region, live, permit, requeue).await;
        }
    }

    /// What every call passes before it is made: entries whose caller is
    /// gone or whose deadline has passed are dropped or answered (nobody
    /// would learn their outcome), an open breaker answers the rest at
    /// once, then the region's pacing and concurrency bound are waited for.
    /// None when nothing is left to send.
    async fn admit_call(
        &self,
        source: &SourceRef,
        region: &Region,
        call: Vec<Job>,
    ) -> Option<(Vec<Job>, OwnedSemaphorePermit)> {
        let now = Instant::now();
        let mut live = Vec::with_capacity(call.len());
        for job in call {
            if job.reply.is_closed() {
                continue;
            }
            if job.deadline() <= now {
                let attempts = job.attempts;
                job.answer(
                    Outcome::failed(
                        codes::DEADLINE_EXCEEDED,
                        "the caller's deadline passed while the entry was queued; it was not sent",
                    ),
                    attempts,
                );
                continue;
            }
            live.push(job);
        }
        if live.is_empty() {
            return None;
        }
        // An open breaker answers at once instead of queueing callers
        // behind a region that keeps failing.
        if let Admission::Reject(retry_after) = region.breaker.admit() {
            let message = format!(
                "EventBridge in {} kept failing; calls there are paused: retry in {} ms; the entry was not sent",
                source.region(),
                retry_after.as_millis()
            );
            for job in live {
                let attempts = job.attempts;
                job.answer(
                    Outcome::failed(codes::REGION_UNAVAILABLE, message.clone()),
                    attempts,
                );
            }
            return None;
        }
        if let Some(pacer) = &region.pacer {
            pacer.take().await;
        }
        let permit = region
            .calls
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        Some((live, permit))
    }

    /// One upstream call, then each entry answered or queued again.
    async fn call(
        self: Arc<Self>,
        source: SourceRef,
        region: Arc<Region>,
        jobs: Vec<Job>,
        permit: OwnedSemaphorePermit,
        requeue: mpsc::WeakSender<Jobs>,
    ) {
        let latest = jobs
            .iter()
            .map(Job::deadline)
            .max()
            .expect("a call has entries");
        self.budget
            .deposit(jobs.iter().filter(|j| j.attempts == 0).count());
        // The entries travel to the adapter by reference; each comes back
        // into its job afterwards, for its answer or its resend.
        let (entries, tickets): (Vec<PreparedEntry>, Vec<(u32, Arc<Reply>)>) = jobs
            .into_iter()
            .map(|j| (j.entry, (j.attempts, j.reply)))
            .unzip();
        let started = Instant::now();
        let answer = tokio::time::timeout_at(
            latest,
            self.upstream.put_partner_events(source.region(), &entries),
        )
        .await;
        drop(permit);
        let outcome_label = match &answer {
            Ok(Ok(o)) if o.iter().all(Outcome::is_accepted) => "ok",
            Ok(Ok(_)) => "partial_failure",
            Ok(Err(e)) => match e.kind {
                CallFailureKind::NotSent => "not_sent",
                CallFailureKind::Rejected => "rejected",
                CallFailureKind::Unknown => "unknown",
            },
            Err(_) => "deadline",
        };
        self.metrics.upstream_call(
            source.region(),
            outcome_label,
            entries.len(),
            started.elapsed(),
        );
        // What counts against the region: calls that failed whole for
        // reasons of EventBridge's (not a refusal of ours, such as access).
        let healthy = match &answer {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => e.kind == CallFailureKind::Rejected && !is_retryable_code(&e.code),
            Err(_) => false,
        };
        if let Some(open) = region.breaker.record(healthy) {
            if open {
                tracing::warn!(
                    region = source.region(),
                    "circuit breaker open: EventBridge keeps failing"
                );
            } else {
                tracing::info!(region = source.region(), "circuit breaker closed");
            }
            self.metrics
                .breaker_open
                .get_or_create(&crate::metrics::RegionLabels {
                    region: source.region().to_string(),
                })
                .set(i64::from(open));
            if let Some(hook) = self.breaker_hook.get() {
                hook(source.region(), open);
            }
        }
        let n = entries.len();
        let outcomes: Vec<Outcome> = match answer {
            Ok(Ok(outcomes)) if outcomes.len() == n => outcomes,
            Ok(Ok(_)) => vec![
                Outcome::failed(
                    codes::OUTCOME_UNKNOWN,
                    "the upstream adapter answered for the wrong number of entries",
                );
                n
            ],
            Ok(Err(err)) => vec![Outcome::failed(err.entry_code(), err.message.clone()); n],
            Err(_elapsed) => vec![
                Outcome::failed(
                    codes::OUTCOME_UNKNOWN,
                    "the caller's deadline passed while the EventBridge call was in flight; the entry may or may not have been accepted",
                );
                n
            ],
        };
        let retry = self.settings.retry;
        for ((entry, (attempts, reply)), outcome) in entries.into_iter().zip(tickets).zip(outcomes)
        {
            let job = Job {
                entry,
                attempts: attempts + 1,
                reply,
            };
            let attempts = job.attempts;
            match retry.decide(&outcome, attempts) {
                Decision::Done => job.answer(outcome, attempts),
                Decision::Exhausted => job.answer(
                    with_note(outcome, &format!("gave up after {attempts} attempts")),
                    attempts,
                ),
                Decision::Retry => {
                    let wait = retry.backoff(attempts);
                    if Instant::now() + wait + MIN_CALL_TIME >= job.deadline() {
                        job.answer(
                            with_note(
                                outcome,
                                &format!("not resent: the caller's deadline left no room after {attempts} attempts"),
                            ),
                            attempts,
                        );
                        continue;
                    }
                    let Some(lane) = requeue.upgrade() else {
                        job.answer(outcome, attempts);
                        continue;
                    };
                    if !self.budget.withdraw() {
                        job.answer(
                            with_note(outcome, "not resent: the gateway's retry budget is spent while EventBridge fails this often"),
                            attempts,
                        );
                        continue;
                    }
                    tracing::debug!(index = job.entry.index, attempts, ?wait, "resending entry");
                    self.metrics.retry(source.region());
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        if let Err(mpsc::error::SendError(mut jobs)) = lane.send(vec![job]).await {
                            let job = jobs.pop().expect("one job");
                            let attempts = job.attempts;
                            job.answer(outcome, attempts);
                        }
                    });
                }
            }
        }
    }
}

fn with_note(outcome: Outcome, note: &str) -> Outcome {
    match outcome {
        Outcome::Failed { code, message } if message.is_empty() => Outcome::Failed {
            code,
            message: note.to_string(),
        },
        Outcome::Failed { code, message } => Outcome::Failed {
            code,
            message: format!("{message} ({note})"),
        },
        accepted => accepted,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::BoxFuture;

    use super::*;
    use crate::upstream::CallError;

    /// Answers each entry from a script keyed by detail type: a list of
    /// per-attempt codes ("" = accepted), the last one repeating.
    struct Scripted {
        script: Vec<(&'static str, Vec<&'static str>)>,
        seen: Mutex<Vec<(String, usize)>>,
        calls: Mutex<usize>,
    }

    impl Upstream for Scripted {
        fn put_partner_events<'a>(
            &'a self,
            _region: &'a str,
            entries: &'a [PreparedEntry],
        ) -> BoxFuture<'a, Result<Vec<Outcome>, CallError>> {
            Box::pin(async move {
                *self.calls.lock().unwrap() += 1;
                let mut seen = self.seen.lock().unwrap();
                Ok(entries
                    .iter()
                    .map(|e| {
                        let n = seen.iter().filter(|(d, _)| *d == e.detail_type).count();
                        seen.push((e.detail_type.clone(), n));
                        let codes = &self
                            .script
                            .iter()
                            .find(|(d, _)| *d == e.detail_type)
                            .map(|(_, c)| c.clone())
                            .unwrap_or_else(|| vec![""]);
                        let code = codes[n.min(codes.len() - 1)];
                        if code.is_empty() {
                            Outcome::Accepted {
                                event_id: format!("id-{}", e.index),
                            }
                        } else {
                            Outcome::failed(code, "scripted")
                        }
                    })
                    .collect())
            })
        }
    }

    fn test_breaker() -> BreakerSettings {
        BreakerSettings {
            failures: 5,
            open_for: Duration::from_secs(5),
            probes: 1,
        }
    }

    fn entry(index: u32, detail_type: &str) -> PreparedEntry {
        PreparedEntry {
            index,
            source: SourceRef::new("aws.partner/p/t/s", "us-east-1"),
            time: None,
            detail_type: detail_type.into(),
            detail: "{}".into(),
            resources: vec![],
            size: 100,
        }
    }

    fn pipeline(script: Vec<(&'static str, Vec<&'static str>)>) -> (Pipeline, Arc<Scripted>) {
        let up = Arc::new(Scripted {
            script,
            seen: Mutex::default(),
            calls: Mutex::default(),
        });
        let policy = RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
            resend_unknown: false,
        };
        let settings = PipelineSettings {
            max_call_bytes: 256 * 1024,
            linger: Duration::from_millis(5),
            max_concurrent_calls_per_region: 4,
            upstream_calls_per_second: 0.0,
            upstream_burst: 1,
            retry: policy,
            breaker: test_breaker(),
            retry_budget_ratio: 0.2,
            retry_budget_min_per_second: 10.0,
        };
        (
            Pipeline::new(up.clone(), Arc::new(Metrics::new(false)), settings),
            up,
        )
    }

    fn by_index(mut r: Vec<(u32, EntryResult)>) -> Vec<EntryResult> {
        r.sort_by_key(|(i, _)| *i);
        assert!(
            r.iter().enumerate().all(|(n, (i, _))| n as u32 == *i),
            "each index once"
        );
        r.into_iter().map(|(_, e)| e).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_entries_are_resent_alone_until_accepted() {
        let (p, up) = pipeline(vec![
            ("T", vec!["ThrottlingException", ""]),
            ("F", vec!["MalformedDetail"]),
        ]);
        let entries = vec![entry(0, "A"), entry(1, "T"), entry(2, "F")];
        let r = by_index(
            p.send(entries, Instant::now() + Duration::from_secs(5))
                .await,
        );
        assert_eq!(
            r[0].outcome,
            Outcome::Accepted {
                event_id: "id-0".into()
            }
        );
        assert_eq!(r[0].attempts, 1);
        assert_eq!(
            r[1].outcome,
            Outcome::Accepted {
                event_id: "id-1".into()
            }
        );
        assert_eq!(r[1].attempts, 2);
        assert_eq!(r[2].outcome, Outcome::failed("MalformedDetail", "scripted"));
        assert_eq!(*up.calls.lock().unwrap(), 2);
        // Only the throttled entry went out again.
        assert_eq!(up.seen.lock().unwrap().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded() {
        let (p, up) = pipeline(vec![("T", vec!["InternalFailure"])]);
        let r = by_index(
            p.send(vec![entry(0, "T")], Instant::now() + Duration::from_secs(5))
                .await,
        );
        assert_eq!(r[0].attempts, 3);
        assert!(
            matches!(&r[0].outcome, Outcome::Failed { code, message } if code == "InternalFailure" && message.contains("gave up after 3"))
        );
        assert_eq!(*up.calls.lock().unwrap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_stops_resends() {
        let (p, up) = pipeline(vec![("T", vec!["ThrottlingException"])]);
        let r = by_index(
            p.send(
                vec![entry(0, "T")],
                Instant::now() + Duration::from_millis(15),
            )
            .await,
        );
        assert_eq!(r[0].attempts, 1);
        assert!(
            matches!(&r[0].outcome, Outcome::Failed { code, message } if code == "ThrottlingException" && message.contains("deadline"))
        );
        assert_eq!(*up.calls.lock().unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn batches_from_many_callers_share_calls() {
        let (p, up) = pipeline(vec![]);
        let deadline = Instant::now() + Duration::from_secs(5);
        // 100 one-entry batches at once, as 100 streams or unary callers would send them.
        let results = join_all((0..100).map(|i| p.send(vec![entry(i, "A")], deadline))).await;
        assert!(results
            .iter()
            .all(|r| r.len() == 1 && r[0].1.outcome.is_accepted()));
        assert_eq!(
            *up.calls.lock().unwrap(),
            5,
            "100 entries coalesce into 5 full calls"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_linger_sends_at_once() {
        let up = Arc::new(Scripted {
            script: vec![],
            seen: Mutex::default(),
            calls: Mutex::default(),
        });
        let settings = PipelineSettings {
            max_call_bytes: 256 * 1024,
            linger: Duration::ZERO,
            max_concurrent_calls_per_region: 4,
            upstream_calls_per_second: 0.0,
            upstream_burst: 1,
            retry: RetryPolicy {
                max_attempts: 3,
                base: Duration::from_millis(10),
                max: Duration::from_millis(100),
                resend_unknown: false,
            },
            breaker: test_breaker(),
            retry_budget_ratio: 0.2,
            retry_budget_min_per_second: 10.0,
        };
        let p = Pipeline::new(up.clone(), Arc::new(Metrics::new(false)), settings);
        let deadline = Instant::now() + Duration::from_secs(5);
        for i in 0..3 {
            let r = p.send(vec![entry(i, "A")], deadline).await;
            assert!(r[0].1.outcome.is_accepted());
        }
        assert_eq!(*up.calls.lock().unwrap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn forty_five_entries_make_three_calls_and_every_index_answers() {
        let (p, up) = pipeline(vec![]);
        let entries = (0..45).map(|i| entry(i, "A")).collect();
        let r = by_index(
            p.send(entries, Instant::now() + Duration::from_secs(5))
                .await,
        );
        assert_eq!(r.len(), 45);
        assert_eq!(*up.calls.lock().unwrap(), 3);
    }
    /// Answers calls to us-east-1 at once and never answers calls elsewhere.
    struct HalfHung;

    impl Upstream for HalfHung {
        fn put_partner_events<'a>(
            &'a self,
            region: &'a str,
            entries: &'a [PreparedEntry],
        ) -> BoxFuture<'a, Result<Vec<Outcome>, CallError>> {
            Box::pin(async move {
                if region != "us-east-1" {
                    futures::future::pending::<()>().await;
                }
                Ok(entries
                    .iter()
                    .map(|e| Outcome::Accepted {
                        event_id: format!("id-{}", e.index),
                    })
                    .collect())
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_split_over_regions_keeps_what_was_answered_at_the_deadline() {
        let (p, _) = pipeline(vec![]);
        let p = Pipeline::new(
            Arc::new(HalfHung),
            Arc::new(Metrics::new(false)),
            p.inner.settings.clone(),
        );
        let mut entries: Vec<PreparedEntry> = (0..30).map(|i| entry(i, "A")).collect();
        for e in entries.iter_mut().filter(|e| e.index % 3 == 0) {
            e.source = SourceRef::new("aws.partner/p/t/other", "eu-west-1");
        }
        let started = Instant::now();
        let r = by_index(p.send(entries, started + Duration::from_secs(2)).await);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(2),
            "answered at the deadline"
        );
        for (i, r) in r.iter().enumerate() {
            if i % 3 == 0 {
                assert!(
                    matches!(&r.outcome, Outcome::Failed { code, message } if code == codes::OUTCOME_UNKNOWN && message.contains("deadline")),
                    "{i}: {r:?}"
                );
            } else {
                assert_eq!(
                    r.outcome,
                    Outcome::Accepted {
                        event_id: format!("id-{i}")
                    }
                );
            }
        }
    }
}
