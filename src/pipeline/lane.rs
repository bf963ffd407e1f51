//! The coalescing lane of one (region, source): entries queued by any
//! caller or resend are packed into calls of at most 20 entries and the
//! size limit, sent when full or when the first entry has waited `linger`.

use std::{collections::VecDeque, sync::Arc};

use tokio::{sync::mpsc, time::Instant};

use super::{reply::Job, Inner, Jobs, Region};
use crate::domain::{
    chunk::{cut_into_calls, CallBudget},
    limits::MAX_ENTRIES_PER_CALL,
    tenant::{SourceRef, TenantShare},
};

impl Inner {
    /// Packs queued jobs into calls until the pipeline is dropped.
    pub(super) async fn run_lane(
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
        // The lane's tenant as its latest message had it (a reload may
        // change its weight).
        let mut share = TenantShare::new("", 1);
        loop {
            if pending.is_empty() {
                match rx.recv().await {
                    Some(m) => {
                        share = m.share;
                        pending.extend(m.jobs);
                    }
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
                    Some(m) => {
                        share = m.share;
                        pending.extend(m.jobs);
                    }
                    None => break,
                }
            }
            // Waiting here stops this lane from taking more entries: the
            // region's pacing and concurrency push back on the callers.
            let Some((live, permit)) = self.admit_call(&source, &share, &region, call).await else {
                continue;
            };
            tokio::spawn(Arc::clone(&self).call(
                source.clone(),
                share.clone(),
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
    pub(super) fn whole_calls(&self, jobs: &mut Vec<Job>) -> Vec<Vec<Job>> {
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
}
