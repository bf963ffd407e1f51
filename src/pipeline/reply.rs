//! Where the results of one batch's entries meet, whatever calls they
//! travel in, and what is known of each entry still unanswered.
//!
//! Each entry of a batch has a slot in its batch's [`Reply`]. A slot knows
//! how many times its entry was sent and whether a send is in flight right
//! now, so that an entry the waiter stops waiting for (its deadline came, or
//! the gateway dropped it) is reported honestly: never sent (attempts 0),
//! sent with its outcome unknown (attempts counted), or failed on its last
//! send and waiting to be resent. An entry one of whose sends ended with
//! its outcome unknown can never later be reported as a plain failure: it
//! may have been accepted by that send.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex,
};

use opentelemetry::trace::SpanContext;
use tokio::{sync::oneshot, time::Instant};

use super::Origins;

use crate::{
    domain::{
        entry::PreparedEntry,
        outcome::{codes, EntryResult, Outcome},
    },
    sync::{get_mut, lock},
};

/// Results by the request index of each entry.
pub type Results = Vec<(u32, EntryResult)>;

/// The final results of entries that were still in an EventBridge call
/// when their waiter's deadline came (and were then reported unknown):
/// they arrive on `results` once every such call came back (or was
/// dropped).
pub struct LateResults {
    /// The request indices of those entries.
    pub indices: Vec<u32>,
    pub results: oneshot::Receiver<Results>,
}

/// The fan-in of one batch. The batch's waiter ([`super::Pipeline::send`])
/// holds it only weakly: the results reach the waiter when the last entry
/// is answered, or, should every entry be dropped unanswered, when the last
/// one goes.
pub(super) struct Reply {
    deadline: Instant,
    /// The spans the entries come from.
    origins: Origins,
    /// Set by [`Reply::track_late`].
    tracks_late: AtomicBool,
    state: Mutex<ReplyState>,
}

struct ReplyState {
    slots: Vec<Slot>,
    unanswered: usize,
    /// Taken when the results are handed over, or when the waiter gives up.
    tx: Option<oneshot::Sender<Results>>,
    /// The waiter wants the late results of entries in flight at its
    /// deadline (see [`LateResults`]).
    track_late: bool,
    late: Option<Late>,
}

/// Where the late results gather.
struct Late {
    tx: oneshot::Sender<Results>,
    results: Results,
    /// Slots marked `late` not yet answered.
    pending: usize,
}

/// What is known of one entry.
struct Slot {
    /// The entry's index in its request.
    index: u32,
    result: Option<EntryResult>,
    /// Times the entry was handed to the upstream.
    sends: u32,
    /// A send is under way and has not come back.
    in_flight: bool,
    /// A send came back with its outcome unknown: EventBridge may hold it.
    maybe_accepted: bool,
    /// The failure of the last send, while the entry waits to be resent.
    last_failure: Option<Outcome>,
    /// In flight when the waiter's deadline came: its final result goes to
    /// the late results.
    late: bool,
}

/// Why unanswered entries are being settled.
#[derive(Clone, Copy)]
enum Settle {
    /// The caller's deadline came.
    Deadline,
    /// Every job of the batch was dropped unanswered (the pipeline stopped).
    Dropped,
}

impl Reply {
    /// A reply for entries with these request indices (slot `i` is
    /// `indices[i]`), and the receiver its waiter listens on.
    pub(super) fn new(
        indices: impl ExactSizeIterator<Item = u32>,
        deadline: Instant,
        origins: Origins,
    ) -> (Arc<Self>, oneshot::Receiver<Results>) {
        let (tx, rx) = oneshot::channel();
        let slots: Vec<Slot> = indices
            .map(|index| Slot {
                index,
                result: None,
                sends: 0,
                in_flight: false,
                maybe_accepted: false,
                last_failure: None,
                late: false,
            })
            .collect();
        let reply = Arc::new(Self {
            deadline,
            origins,
            tracks_late: AtomicBool::new(false),
            state: Mutex::new(ReplyState {
                unanswered: slots.len(),
                slots,
                tx: Some(tx),
                track_late: false,
                late: None,
            }),
        });
        (reply, rx)
    }

    /// Keeps the final results of entries in flight at the deadline for
    /// [`Reply::close_at_deadline`]'s [`LateResults`].
    pub(super) fn track_late(&self) {
        lock(&self.state).track_late = true;
        self.tracks_late.store(true, Ordering::Relaxed);
    }

    /// Whether the waiter wants late results: a call carrying this
    /// batch's entries then runs to its end (the upstream's own timeout)
    /// rather than stopping at the deadline.
    pub(super) fn tracks_late(&self) -> bool {
        self.tracks_late.load(Ordering::Relaxed)
    }

    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The span the entry in `slot` comes from, if any.
    pub(super) fn origin(&self, slot: u32) -> Option<&SpanContext> {
        self.origins.of(slot)
    }

    /// The entry in `slot` is being handed to the upstream; false (nothing
    /// counted) once the waiter has its results. A call checks its entries'
    /// deadlines before it is made, but the deadline may come between that
    /// check and the send (a lane's call runs in a task of its own): the
    /// entry was then reported by what was known of it (not sent, or not
    /// resent, its key freed), and sending it would make that a lie.
    pub(super) fn sending(&self, slot: u32) -> bool {
        let mut state = lock(&self.state);
        if state.tx.is_none() {
            return false;
        }
        let s = &mut state.slots[slot as usize];
        s.sends += 1;
        s.in_flight = true;
        s.last_failure = None;
        true
    }

    /// The entry in `slot` came back with `outcome` and will be resent.
    pub(super) fn will_resend(&self, slot: u32, outcome: &Outcome) {
        let mut state = lock(&self.state);
        let s = &mut state.slots[slot as usize];
        s.in_flight = false;
        s.maybe_accepted |= is_unknown(outcome);
        s.last_failure = Some(outcome.clone());
    }

    /// The final result of the entry in `slot`. Its attempts are the sends
    /// counted here, whatever the caller of this says.
    pub(super) fn answer(&self, slot: u32, outcome: Outcome) {
        let mut state = lock(&self.state);
        // Once the waiter gave up, only entries it wants late results of
        // are told.
        if state.tx.is_none() {
            let state = &mut *state;
            let s = &mut state.slots[slot as usize];
            if !s.late {
                return;
            }
            s.late = false;
            let result = final_result(s, outcome);
            if let Some(mut late) = state.late.take() {
                late.results.push((s.index, result));
                late.pending -= 1;
                if late.pending == 0 {
                    let _ = late.tx.send(late.results);
                } else {
                    state.late = Some(late);
                }
            }
            return;
        }
        let s = &mut state.slots[slot as usize];
        if s.result.is_some() {
            return;
        }
        let result = final_result(s, outcome);
        s.result = Some(result);
        state.unanswered -= 1;
        if state.unanswered == 0 {
            let tx = state.tx.take().expect("checked above");
            let results = take_results(&mut state, Settle::Dropped);
            drop(state);
            let _ = tx.send(results);
        }
    }

    /// The entry in `slot` is past its deadline and will not be sent
    /// (again): it is answered by what is known of it.
    pub(super) fn expire(&self, slot: u32) {
        let outcome = {
            let mut state = lock(&self.state);
            settle(&mut state.slots[slot as usize], Settle::Deadline).outcome
        };
        self.answer(slot, outcome);
    }

    /// Whether nobody waits for these results any more.
    pub(super) fn is_closed(&self) -> bool {
        let state = lock(&self.state);
        state.tx.as_ref().is_none_or(oneshot::Sender::is_closed)
    }

    /// The waiter's deadline came: every entry's result, the unanswered
    /// ones settled by what is known of them; later answers are dropped.
    /// None when the results were handed over already.
    /// With [`Reply::track_late`], also the late results of the entries
    /// in flight right now.
    pub(super) fn close_at_deadline(&self) -> Option<(Results, Option<LateResults>)> {
        let mut state = lock(&self.state);
        state.tx.take()?;
        let mut indices = Vec::new();
        if state.track_late {
            for s in state
                .slots
                .iter_mut()
                .filter(|s| s.result.is_none() && s.in_flight)
            {
                s.late = true;
                indices.push(s.index);
            }
        }
        let results = take_results(&mut state, Settle::Deadline);
        let late = (!indices.is_empty()).then(|| {
            let (tx, rx) = oneshot::channel();
            state.late = Some(Late {
                tx,
                results: Vec::with_capacity(indices.len()),
                pending: indices.len(),
            });
            LateResults {
                indices,
                results: rx,
            }
        });
        Some((results, late))
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        let state = get_mut(&mut self.state);
        if let Some(tx) = state.tx.take() {
            let _ = tx.send(take_results(state, Settle::Dropped));
        }
        if let Some(mut late) = state.late.take() {
            for s in state.slots.iter_mut().filter(|s| s.late) {
                s.late = false;
                let result = settle(s, Settle::Dropped);
                late.results.push((s.index, result));
            }
            let _ = late.tx.send(late.results);
        }
    }
}

/// A slot's final result from its last outcome: an entry that may have
/// been accepted by an earlier send never ends as a plain failure.
fn final_result(s: &mut Slot, outcome: Outcome) -> EntryResult {
    s.in_flight = false;
    s.maybe_accepted |= is_unknown(&outcome);
    let outcome = if s.maybe_accepted && !outcome.is_accepted() {
        maybe_accepted(outcome)
    } else {
        outcome
    };
    EntryResult {
        outcome,
        attempts: s.sends,
    }
}

fn is_unknown(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Failed { code, .. } if code == codes::OUTCOME_UNKNOWN)
}

/// A failure of an entry that an earlier send may have delivered.
fn maybe_accepted(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Failed { ref code, .. } if code == codes::OUTCOME_UNKNOWN => outcome,
        Outcome::Failed { code, message } => Outcome::failed(
            codes::OUTCOME_UNKNOWN,
            format!(
                "an earlier send of this entry ended with its outcome unknown, so EventBridge may hold it; the last send failed with {code}: {message}"
            ),
        ),
        accepted => accepted,
    }
}

/// Every slot's result, in slot order; unanswered slots are settled.
fn take_results(state: &mut ReplyState, why: Settle) -> Results {
    state
        .slots
        .iter_mut()
        .map(|s| {
            let result = s.result.take().unwrap_or_else(|| settle(s, why));
            (s.index, result)
        })
        .collect()
}

/// The honest result of an entry nobody will answer any more.
fn settle(s: &mut Slot, why: Settle) -> EntryResult {
    let attempts = s.sends;
    let outcome = if s.in_flight || (s.maybe_accepted && s.sends > 0) {
        Outcome::failed(
            codes::OUTCOME_UNKNOWN,
            match why {
                Settle::Deadline => format!(
                    "the caller's deadline passed before EventBridge answered for this entry (sent {attempts} time(s)); it may or may not have been accepted"
                ),
                Settle::Dropped => format!(
                    "the gateway lost track of this entry after sending it {attempts} time(s); it may or may not have been accepted"
                ),
            },
        )
    } else if let Some(last) = s.last_failure.take() {
        with_note(
            last,
            &format!("not resent: the caller's deadline passed after {attempts} attempts"),
        )
    } else {
        match why {
            Settle::Deadline => Outcome::failed(
                codes::DEADLINE_EXCEEDED,
                "the caller's deadline passed while the entry was queued; it was not sent",
            ),
            Settle::Dropped => Outcome::failed(
                codes::SHUTTING_DOWN,
                "the gateway stopped before sending this entry; it was not sent",
            ),
        }
    };
    EntryResult { outcome, attempts }
}

/// Adds `note` to a failure's message.
pub(super) fn with_note(outcome: Outcome, note: &str) -> Outcome {
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

/// One entry on its way: what to send, where its result goes.
pub(super) struct Job {
    pub(super) entry: PreparedEntry,
    /// Sends so far (mirrored in the reply's slot, which reports them).
    pub(super) attempts: u32,
    pub(super) slot: u32,
    pub(super) reply: Arc<Reply>,
}

impl Job {
    /// Reports the entry's final outcome.
    pub(super) fn answer(self, outcome: Outcome) {
        self.reply.answer(self.slot, outcome);
    }

    pub(super) fn deadline(&self) -> Instant {
        self.reply.deadline()
    }

    /// Answers the entry by what is known of it: its deadline has passed.
    pub(super) fn expire(self) {
        self.reply.expire(self.slot);
    }

    /// Records that the entry is being sent (once more); false when it must
    /// not be (see [`Reply::sending`]).
    pub(super) fn sending(&mut self) -> bool {
        if !self.reply.sending(self.slot) {
            return false;
        }
        self.attempts += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn reply(n: u32) -> (Arc<Reply>, oneshot::Receiver<Results>) {
        Reply::new(0..n, Instant::now() + Duration::from_secs(1), Origins::None)
    }

    #[tokio::test]
    async fn the_last_answer_hands_every_result_over() {
        let (r, rx) = reply(2);
        r.sending(0);
        r.answer(
            0,
            Outcome::Accepted {
                event_id: "a".into(),
            },
        );
        r.answer(1, Outcome::failed("MalformedDetail", "bad"));
        let results = rx.await.unwrap();
        assert_eq!(results[0].1.attempts, 1);
        assert_eq!(results[1].1.attempts, 0, "refused before sending");
    }

    #[test]
    fn at_the_deadline_each_entry_says_what_is_known() {
        let (r, _rx) = reply(4);
        // 0: in flight on its second send; 1: never sent; 2: failed, waiting
        // to be resent; 3: answered.
        r.sending(0);
        r.will_resend(0, &Outcome::failed("ThrottlingException", "slow down"));
        r.sending(0);
        r.sending(2);
        r.will_resend(2, &Outcome::failed("ThrottlingException", "slow down"));
        r.sending(3);
        r.answer(
            3,
            Outcome::Accepted {
                event_id: "e".into(),
            },
        );
        let (results, late) = r.close_at_deadline().unwrap();
        assert!(late.is_none(), "late results only when asked for");
        let code = |i: usize| match &results[i].1.outcome {
            Outcome::Failed { code, .. } => code.clone(),
            Outcome::Accepted { .. } => "ok".into(),
        };
        assert_eq!(
            (code(0), results[0].1.attempts),
            (codes::OUTCOME_UNKNOWN.into(), 2)
        );
        assert_eq!(
            (code(1), results[1].1.attempts),
            (codes::DEADLINE_EXCEEDED.into(), 0)
        );
        assert_eq!(
            (code(2), results[2].1.attempts),
            ("ThrottlingException".into(), 1)
        );
        assert_eq!((code(3), results[3].1.attempts), ("ok".into(), 1));
        // Answers after the deadline change nothing.
        r.answer(1, Outcome::failed("X", "late"));
    }

    #[tokio::test]
    async fn a_failure_after_an_unknown_outcome_is_reported_unknown() {
        let (r, rx) = reply(1);
        r.sending(0);
        r.will_resend(0, &Outcome::failed(codes::OUTCOME_UNKNOWN, "timed out"));
        r.sending(0);
        r.answer(0, Outcome::failed("ThrottlingException", "slow down"));
        let results = rx.await.unwrap();
        assert_eq!(results[0].1.attempts, 2);
        assert!(
            matches!(&results[0].1.outcome, Outcome::Failed { code, message } if code == codes::OUTCOME_UNKNOWN && message.contains("ThrottlingException")),
            "{:?}",
            results[0].1
        );
    }

    #[tokio::test]
    async fn entries_in_flight_at_the_deadline_get_late_results() {
        let (r, _rx) = reply(3);
        r.track_late();
        // 0: in flight; 1: never sent; 2: in flight, then dropped.
        r.sending(0);
        r.sending(2);
        let (results, late) = r.close_at_deadline().unwrap();
        assert!(results.iter().all(|(i, res)| *i == 1
            || matches!(&res.outcome, Outcome::Failed { code, .. } if code == codes::OUTCOME_UNKNOWN)));
        let late = late.expect("two were in flight");
        assert_eq!(late.indices, vec![0, 2]);
        let late = late.results;
        r.answer(1, Outcome::failed("X", "never late: it was not in flight"));
        r.answer(
            0,
            Outcome::Accepted {
                event_id: "late".into(),
            },
        );
        drop(r);
        let mut late = late.await.unwrap();
        late.sort_by_key(|(i, _)| *i);
        assert_eq!(late.len(), 2);
        assert_eq!(
            late[0].1.outcome,
            Outcome::Accepted {
                event_id: "late".into()
            }
        );
        assert!(
            matches!(&late[1].1.outcome, Outcome::Failed { code, .. } if code == codes::OUTCOME_UNKNOWN)
        );
    }

    #[test]
    fn an_entry_reported_at_the_deadline_is_not_sent_after_it() {
        let (r, _rx) = reply(2);
        r.track_late();
        assert!(r.sending(0));
        let (results, late) = r.close_at_deadline().unwrap();
        assert_eq!(
            (&results[1].1.outcome, results[1].1.attempts),
            (
                &Outcome::failed(
                    codes::DEADLINE_EXCEEDED,
                    "the caller's deadline passed while the entry was queued; it was not sent"
                ),
                0
            )
        );
        // A call admitted just before the deadline, making its send now.
        assert!(!r.sending(1), "reported not sent: it must not be sent");
        assert_eq!(late.unwrap().indices, vec![0], "only 0 was in flight");
    }

    #[tokio::test]
    async fn dropped_jobs_are_reported_by_what_is_known() {
        let (r, rx) = reply(2);
        r.sending(0);
        drop(r);
        let results = rx.await.unwrap();
        assert!(
            matches!(&results[0].1.outcome, Outcome::Failed { code, .. } if code == codes::OUTCOME_UNKNOWN)
        );
        assert_eq!(results[0].1.attempts, 1);
        assert!(
            matches!(&results[1].1.outcome, Outcome::Failed { code, .. } if code == codes::SHUTTING_DOWN)
        );
        assert_eq!(results[1].1.attempts, 0);
    }
}
