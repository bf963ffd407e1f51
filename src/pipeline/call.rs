//! One upstream call: what it passes before it is made (dropped callers,
//! expired deadlines, the region's breaker, pacing and concurrency bound),
//! the call itself with its metrics and the breaker's bookkeeping, then
//! each entry answered or queued again for a resend.

use std::{sync::Arc, time::Duration};

use opentelemetry::{trace::SpanContext, KeyValue};
use tokio::{
    sync::{mpsc, OwnedSemaphorePermit},
    time::Instant,
};

use super::{
    reply::{with_note, Job, Reply},
    Inner, Jobs, Region,
};
use crate::{
    domain::{
        entry::PreparedEntry,
        outcome::{codes, is_retryable_code, Outcome},
        tenant::{SourceRef, TenantShare},
    },
    traces::Span,
    upstream::{breaker::Admission, retry::Decision, CallFailureKind},
};

/// Time a resend needs at the least to be worth making before the deadline.
const MIN_CALL_TIME: Duration = Duration::from_millis(20);

/// How long a call that carries idempotency keys may run past its
/// entries' deadlines, should the upstream's own call timeout not end it.
const LATE_CALL_LIMIT: Duration = Duration::from_secs(120);

impl Inner {
    /// The span of a call carrying these entries: linked to each batch's
    /// (nothing is done while traces are off).
    fn call_span(&self, region: &str, tickets: &[Ticket]) -> Span {
        let Some(traces) = self.traces.get().filter(|t| t.enabled()) else {
            return Span::none();
        };
        let mut origins: Vec<SpanContext> = Vec::new();
        for (_, slot, reply) in tickets {
            if let Some(o) = reply.origin(*slot) {
                if !origins
                    .iter()
                    .any(|x| x.span_id() == o.span_id() && x.trace_id() == o.trace_id())
                {
                    origins.push(o.clone());
                }
            }
        }
        let attempt = tickets.iter().map(|t| t.0).max().unwrap_or(0);
        traces.call(
            &origins,
            vec![
                KeyValue::new("rpc.system", "aws-api"),
                KeyValue::new("rpc.service", "EventBridge"),
                KeyValue::new("rpc.method", "PutPartnerEvents"),
                KeyValue::new("cloud.region", region.to_string()),
                KeyValue::new("partner_events.entries", tickets.len() as i64),
                KeyValue::new("partner_events.batches", origins.len() as i64),
                KeyValue::new("partner_events.attempt", i64::from(attempt)),
            ],
        )
    }

    /// Sends `jobs` (one call's worth) from the caller's own task: a batch
    /// that fills whole calls needs no coalescing, and skipping the lane
    /// saves two task hand-offs. Resends still go through the lane.
    pub(super) async fn send_now(
        self: Arc<Self>,
        source: SourceRef,
        share: TenantShare,
        region: Arc<Region>,
        requeue: mpsc::WeakSender<Jobs>,
        jobs: Vec<Job>,
    ) {
        if let Some((live, permit)) = self.admit_call(&source, &share, &region, jobs).await {
            self.call(source, share, region, live, permit, requeue)
                .await;
        }
    }

    /// What every call passes before it is made: entries whose caller is
    /// gone or whose deadline has passed are dropped or answered (nobody
    /// would learn their outcome), an open breaker answers the rest at
    /// once, then the region's pacing and concurrency bound are waited for
    /// (no longer than the latest deadline among the entries), and the
    /// entries are checked once more. None when nothing is left to send.
    pub(super) async fn admit_call(
        &self,
        source: &SourceRef,
        share: &TenantShare,
        region: &Region,
        call: Vec<Job>,
    ) -> Option<(Vec<Job>, OwnedSemaphorePermit)> {
        let live = live_jobs(call);
        let latest = live.iter().map(Job::deadline).max()?;
        // An open breaker answers at once instead of queueing callers
        // behind a region that keeps failing.
        if let Admission::Reject(retry_after) = region.breaker.admit() {
            let message = format!(
                "EventBridge in {} kept failing; calls there are paused: retry in {} ms; the entry was not sent",
                source.region(),
                retry_after.as_millis()
            );
            for job in live {
                job.answer(Outcome::failed(codes::REGION_UNAVAILABLE, message.clone()));
            }
            return None;
        }
        let admitted = tokio::time::timeout_at(latest, async {
            if let Some(scheduler) = &region.scheduler {
                scheduler.turn(share).await;
            }
            region
                .calls
                .clone()
                .acquire_owned()
                .await
                .expect("never closed")
        })
        .await;
        let live = live_jobs(live);
        match admitted {
            Ok(permit) if !live.is_empty() => Some((live, permit)),
            // Every entry's deadline came while the call waited its turn.
            _ => None,
        }
    }

    /// One upstream call, then each entry answered or queued again.
    pub(super) async fn call(
        self: Arc<Self>,
        source: SourceRef,
        share: TenantShare,
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
        // The entries travel to the adapter by reference; each comes back
        // into its job afterwards, for its answer or its resend. Each send
        // is counted in its batch's reply before it is made, so that an
        // entry whose caller stops waiting mid-call is reported as sent;
        // one whose caller was answered since the call was admitted (its
        // deadline came in between) stays unsent, as it was reported.
        let (entries, tickets): (Vec<PreparedEntry>, Vec<Ticket>) = jobs
            .into_iter()
            .filter_map(|mut j| {
                j.sending()
                    .then_some((j.entry, (j.attempts, j.slot, j.reply)))
            })
            .unzip();
        if entries.is_empty() {
            return;
        }
        self.budget
            .deposit(tickets.iter().filter(|t| t.0 == 1).count());
        // A call carrying an entry with an idempotency key runs to its end
        // (the upstream's own timeout bounds it): its outcome is what the
        // key remembers, whether or not the caller still waits.
        let until = if tickets.iter().any(|t| t.2.tracks_late()) {
            latest.max(Instant::now() + LATE_CALL_LIMIT)
        } else {
            latest
        };
        let mut span = self.call_span(source.region(), &tickets);
        let started = Instant::now();
        let answer = tokio::time::timeout_at(
            until,
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
        span.set(|| vec![KeyValue::new("partner_events.outcome", outcome_label)]);
        match &answer {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => span.error(e.code.clone()),
            Err(_) => span.error("the deadline passed while the call was in flight"),
        }
        let throttled_whole = matches!(&answer, Ok(Err(e))
            if e.kind == CallFailureKind::Rejected && e.code == codes::THROTTLING);
        // What counts against the region: calls that failed whole for
        // reasons of EventBridge's (not a refusal of ours, such as access).
        // A call throttled whole is EventBridge answering "slower", not
        // failing: pacing, not the breaker, is the answer to it.
        let healthy = match &answer {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                throttled_whole
                    || (e.kind == CallFailureKind::Rejected && !is_retryable_code(&e.code))
            }
            Err(_) => false,
        };
        // Adaptive pacing: a call throttled whole slows the region's pace,
        // an answered call lets it climb back.
        if let Some(pace) = &region.pace {
            if throttled_whole {
                pace.throttled(started);
            } else if matches!(answer, Ok(Ok(_))) {
                pace.answered();
            }
        }
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
        for ((entry, (attempts, slot, reply)), outcome) in
            entries.into_iter().zip(tickets).zip(outcomes)
        {
            let job = Job {
                entry,
                attempts,
                slot,
                reply,
            };
            match retry.decide(&outcome, attempts) {
                Decision::Done => job.answer(outcome),
                Decision::Exhausted => job.answer(with_note(
                    outcome,
                    &format!("gave up after {attempts} attempts"),
                )),
                Decision::Retry => self.resend(&source, &share, job, outcome, &requeue),
            }
        }
    }

    /// Queues `job` again on its lane after a backoff, or answers it with
    /// `outcome` when its deadline, the pipeline or the retry budget leaves
    /// no room.
    fn resend(
        &self,
        source: &SourceRef,
        share: &TenantShare,
        job: Job,
        outcome: Outcome,
        requeue: &mpsc::WeakSender<Jobs>,
    ) {
        let attempts = job.attempts;
        let wait = self.settings.retry.backoff(attempts);
        if Instant::now() + wait + MIN_CALL_TIME >= job.deadline() {
            job.answer(with_note(
                outcome,
                &format!(
                    "not resent: the caller's deadline left no room after {attempts} attempts"
                ),
            ));
            return;
        }
        let Some(lane) = requeue.upgrade() else {
            job.answer(outcome);
            return;
        };
        if !self.budget.withdraw() {
            job.answer(with_note(
                outcome,
                "not resent: the gateway's retry budget is spent while EventBridge fails this often",
            ));
            return;
        }
        tracing::debug!(index = job.entry.index, attempts, ?wait, "resending entry");
        self.metrics.retry(source.region());
        job.reply.will_resend(job.slot, &outcome);
        let share = share.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let again = Jobs {
                share,
                jobs: vec![job],
            };
            if let Err(mpsc::error::SendError(mut m)) = lane.send(again).await {
                m.jobs.pop().expect("one job").answer(outcome);
            }
        });
    }
}

/// What travels beside an entry through the call: its sends so far, its
/// slot, and its batch's reply.
type Ticket = (u32, u32, Arc<Reply>);

/// The jobs somebody still waits for and whose deadline has not passed;
/// the expired ones are answered by what is known of them.
fn live_jobs(jobs: Vec<Job>) -> Vec<Job> {
    let now = Instant::now();
    let mut live = Vec::with_capacity(jobs.len());
    for job in jobs {
        if job.reply.is_closed() {
            continue;
        }
        if job.deadline() <= now {
            job.expire();
            continue;
        }
        live.push(job);
    }
    live
}
