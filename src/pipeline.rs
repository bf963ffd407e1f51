//! From one validated batch to one result per entry.
//!
//! [`Pipeline::send`] splits the batch into calls (by source and region, at
//! most 20 entries and the size limit each), sends them concurrently under a
//! gateway-wide bound on calls in flight, resends only the entries that came
//! back with a retryable code, in rounds with jittered backoff, while
//! attempts remain and the deadline leaves room, and returns every entry's
//! result.

use std::{sync::Arc, time::Duration};

use futures::future::join_all;
use tokio::{sync::Semaphore, time::Instant};

use crate::{
    domain::{
        chunk::split_into_calls,
        entry::PreparedEntry,
        outcome::{codes, EntryResult, Outcome},
    },
    upstream::{
        retry::{Decision, RetryPolicy},
        CallError, Upstream,
    },
};

/// Time a resend needs at the least to be worth making before the deadline.
const MIN_CALL_TIME: Duration = Duration::from_millis(20);

/// Sends validated entries upstream; shared by every request.
pub struct Pipeline {
    upstream: Arc<dyn Upstream>,
    max_call_bytes: usize,
    retry: RetryPolicy,
    calls_in_flight: Arc<Semaphore>,
}

/// One entry's state between rounds.
struct Pending {
    entry: PreparedEntry,
    attempts: u32,
}

impl Pipeline {
    pub fn new(
        upstream: Arc<dyn Upstream>,
        max_call_bytes: usize,
        retry: RetryPolicy,
        max_concurrent_calls: usize,
    ) -> Self {
        Self {
            upstream,
            max_call_bytes,
            retry,
            calls_in_flight: Arc::new(Semaphore::new(max_concurrent_calls)),
        }
    }

    /// Sends `entries` and returns `(index, result)` for each of them, in no
    /// particular order; each index exactly once. Nothing is sent, or
    /// resent, past `deadline`.
    pub async fn send(
        &self,
        entries: Vec<PreparedEntry>,
        deadline: Instant,
    ) -> Vec<(u32, EntryResult)> {
        let mut done: Vec<(u32, EntryResult)> = Vec::with_capacity(entries.len());
        let mut pending: Vec<Pending> = entries
            .into_iter()
            .map(|entry| Pending { entry, attempts: 0 })
            .collect();
        let mut round = 0;
        while !pending.is_empty() {
            round += 1;
            let mut attempts_by_index: Vec<(u32, u32)> = pending
                .iter()
                .map(|p| (p.entry.index, p.attempts))
                .collect();
            attempts_by_index.sort_unstable();
            let plans = split_into_calls(
                pending.into_iter().map(|p| p.entry).collect(),
                self.max_call_bytes,
            );
            let answers = join_all(plans.into_iter().map(|plan| async move {
                let answer = self.call(plan.region(), &plan.entries, deadline).await;
                (plan.entries, answer)
            }))
            .await;

            let mut retry: Vec<(Pending, Outcome)> = Vec::new();
            for (entries, answer) in answers {
                match answer {
                    CallAnswer::Answered(outcomes) => {
                        for (entry, outcome) in entries.into_iter().zip(outcomes) {
                            let attempts = prior_attempts(&attempts_by_index, entry.index) + 1;
                            match self.retry.decide(&outcome, attempts) {
                                Decision::Retry => {
                                    retry.push((Pending { entry, attempts }, outcome))
                                }
                                Decision::Done => {
                                    done.push((entry.index, EntryResult { outcome, attempts }))
                                }
                                Decision::Exhausted => done.push((
                                    entry.index,
                                    EntryResult {
                                        outcome: with_note(
                                            outcome,
                                            &format!("gave up after {attempts} attempts"),
                                        ),
                                        attempts,
                                    },
                                )),
                            }
                        }
                    }
                    CallAnswer::Failed(err) => {
                        let outcome = Outcome::failed(err.entry_code(), err.message.clone());
                        for entry in entries {
                            let attempts = prior_attempts(&attempts_by_index, entry.index) + 1;
                            done.push((
                                entry.index,
                                EntryResult {
                                    outcome: outcome.clone(),
                                    attempts,
                                },
                            ));
                        }
                    }
                    CallAnswer::NotSent(outcome) => {
                        for entry in entries {
                            let attempts = prior_attempts(&attempts_by_index, entry.index);
                            done.push((
                                entry.index,
                                EntryResult {
                                    outcome: outcome.clone(),
                                    attempts,
                                },
                            ));
                        }
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            let wait = self.retry.backoff(round);
            if Instant::now() + wait + MIN_CALL_TIME >= deadline {
                // No room for another round: report the last answer.
                for (p, outcome) in retry {
                    done.push((
                        p.entry.index,
                        EntryResult {
                            outcome: with_note(
                                outcome,
                                &format!(
                                    "not resent: the caller's deadline left no room after {} attempts",
                                    p.attempts
                                ),
                            ),
                            attempts: p.attempts,
                        },
                    ));
                }
                break;
            }
            tracing::debug!(
                entries = retry.len(),
                round,
                ?wait,
                "resending failed entries"
            );
            tokio::time::sleep(wait).await;
            pending = retry.into_iter().map(|(p, _)| p).collect();
        }
        done
    }

    /// One upstream call, bounded by the gateway-wide limit and `deadline`.
    async fn call(&self, region: &str, entries: &[PreparedEntry], deadline: Instant) -> CallAnswer {
        let permit = match tokio::time::timeout_at(
            deadline,
            self.calls_in_flight.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(_closed)) => {
                return CallAnswer::NotSent(Outcome::failed(
                    codes::SHUTTING_DOWN,
                    "the gateway is shutting down; the entry was not sent",
                ))
            }
            Err(_elapsed) => return CallAnswer::NotSent(Outcome::failed(
                codes::DEADLINE_EXCEEDED,
                "the caller's deadline passed while the entry waited to be sent; it was not sent",
            )),
        };
        let answer =
            tokio::time::timeout_at(deadline, self.upstream.put_partner_events(region, entries))
                .await;
        drop(permit);
        match answer {
            Ok(Ok(outcomes)) if outcomes.len() == entries.len() => CallAnswer::Answered(outcomes),
            Ok(Ok(_)) => CallAnswer::Answered(vec![
                Outcome::failed(
                    codes::OUTCOME_UNKNOWN,
                    "the upstream adapter answered for the wrong number of entries",
                );
                entries.len()
            ]),
            Ok(Err(err)) => CallAnswer::Failed(err),
            Err(_elapsed) => CallAnswer::Answered(vec![
                Outcome::failed(
                    codes::OUTCOME_UNKNOWN,
                    "the caller's deadline passed while the EventBridge call was in flight; the entry may or may not have been accepted",
                );
                entries.len()
            ]),
        }
    }
}

enum CallAnswer {
    /// One outcome per entry.
    Answered(Vec<Outcome>),
    /// The call failed whole.
    Failed(CallError),
    /// The call was never made.
    NotSent(Outcome),
}

fn prior_attempts(sorted: &[(u32, u32)], index: u32) -> u32 {
    sorted
        .binary_search_by_key(&index, |&(i, _)| i)
        .map(|pos| sorted[pos].1)
        .unwrap_or(0)
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
    use crate::domain::tenant::SourceRef;

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
        };
        (Pipeline::new(up.clone(), 256 * 1024, policy, 4), up)
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
}
