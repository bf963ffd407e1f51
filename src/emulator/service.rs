//! The emulator's behaviour without HTTP: one `PutPartnerEvents` body in,
//! one [`Answer`] out (a delay, then a reply, a hang or a dropped
//! connection), with the recorded events, entries, calls, their counts, the
//! fault counters, the quota's buckets and sources updated on the way.
//! Synchronous, so it runs under a `std::sync::Mutex`; the HTTP side does
//! the waiting.

use std::time::Duration;

use tokio::time::Instant;

use tracing::{debug, info, warn};

use super::{
    faults::{Fault, FaultBook, FaultRule},
    quota::{CallQuota, Quota, THROTTLED_MESSAGE},
    record::{
        Bounded, EventsFile, ReceivedEntry, RecordCounts, RecordedCall, RecordedEvent, NO_ANSWER,
    },
    sources::Sources,
    validate::{call_size, check_call, validate_entry},
    wire::{
        PutPartnerEventsRequest, PutPartnerEventsResponse, Reply, RequestEntry, ResultEntry,
        SERIALIZATION_EXCEPTION, THROTTLING_EXCEPTION, VALIDATION_EXCEPTION,
    },
};

/// The settings a call is judged by.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_call_bytes: usize,
    pub log_payloads: bool,
}

/// What the HTTP side does with a `PutPartnerEvents` call.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// How long to wait first.
    pub delay: Duration,
    pub delivery: Delivery,
}

/// How a call ends, after the delay.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    /// Send this reply.
    Reply(Reply),
    /// Answer nothing until the client gives up; see [`Fault::Hang`].
    Hang,
    /// Close the connection without an answer; see [`Fault::DropConnection`].
    Drop,
}

/// What happened to the entries of one call, for its [`RecordedCall`].
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    accepted: usize,
    entry_faults: usize,
}

/// Everything the emulator remembers between calls. Each record keeps its
/// last `max_recorded` items; `counts` keeps the whole tally.
#[derive(Debug, Default)]
pub struct State {
    quota: CallQuota,
    events: Bounded<RecordedEvent>,
    undelivered: Bounded<RecordedEvent>,
    received: Bounded<ReceivedEntry>,
    calls: Bounded<RecordedCall>,
    counts: RecordCounts,
    faults: FaultBook,
    events_file: Option<EventsFile>,
    sources: Sources,
}

impl State {
    /// A fresh state whose records each keep their last `max_recorded`
    /// items, under EventBridge's default quota ([`State::set_quota`]).
    pub fn new(
        faults: FaultBook,
        sources: Sources,
        events_file: Option<EventsFile>,
        max_recorded: usize,
    ) -> Self {
        Self {
            quota: CallQuota::default(),
            events: Bounded::new(max_recorded),
            undelivered: Bounded::new(max_recorded),
            received: Bounded::new(max_recorded),
            calls: Bounded::new(max_recorded),
            counts: RecordCounts::default(),
            faults,
            sources,
            events_file,
        }
    }

    /// The last accepted events for sources that deliver (see
    /// [`Sources::delivers`]), oldest first.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.events.to_vec()
    }

    /// The last accepted events for sources that exist and are not `ACTIVE`.
    pub fn undelivered(&self) -> Vec<RecordedEvent> {
        self.undelivered.to_vec()
    }

    /// The last entries received, whatever became of them.
    pub fn received(&self) -> Vec<ReceivedEntry> {
        self.received.to_vec()
    }

    /// How many of the retained received entries have this `Detail`.
    pub fn received_count(&self, detail: &str) -> usize {
        self.received
            .iter()
            .filter(|e| e.detail.as_deref() == Some(detail))
            .count()
    }

    /// The last calls received.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.calls.to_vec()
    }

    /// The whole tally, never truncated.
    pub fn counts(&self) -> RecordCounts {
        self.counts.clone()
    }

    pub fn faults_mut(&mut self) -> &mut FaultBook {
        &mut self.faults
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    pub fn sources_mut(&mut self) -> &mut Sources {
        &mut self.sources
    }

    /// Puts `quota` in force; every region's bucket starts full.
    pub fn set_quota(&mut self, quota: Quota) {
        self.quota.set(quota);
    }

    /// The quota in force.
    pub fn quota(&self) -> Quota {
        self.quota.quota()
    }

    /// Replaces the fault rules; their firing counts start afresh and the
    /// PRNG goes on.
    pub fn set_faults(&mut self, faults: Vec<FaultRule>) {
        self.faults.set_rules(faults);
    }

    /// Forgets recorded events, entries and calls, and zeroes their counts
    /// (not the fault rules, the quota's buckets, the sources, nor the file).
    pub fn clear(&mut self) {
        self.events.clear();
        self.undelivered.clear();
        self.received.clear();
        self.calls.clear();
        self.counts = RecordCounts::default();
    }

    /// Answers one `PutPartnerEvents` request body, a call signed for
    /// `region`, and records the call.
    ///
    /// The draws happen in a fixed order: the delay, then the call fault,
    /// then one entry draw per valid entry in order. A call beyond the
    /// quota fails whole before anything else is judged (the body's form
    /// included) and draws only its delay.
    pub fn put_partner_events(&mut self, limits: &Limits, region: &str, body: &[u8]) -> Answer {
        let parsed = parse(body);
        let entries = parsed.as_deref().unwrap_or_default();
        // Received before anything can fail, delay or hang the call: a
        // client's attempts are judged against this record.
        self.record_received(entries);
        // Latency is the network's and the service's: it applies to every
        // call, the refused ones included.
        let detail_types = entries.iter().filter_map(|e| e.detail_type.as_deref());
        let delay = self.faults.fire_delay(detail_types).unwrap_or_default();
        let mut tally = Tally::default();
        let throttled = !self.quota.try_call(region, Instant::now());
        let (delivery, fault) = match &parsed {
            _ if throttled => (Delivery::Reply(throttled_reply()), None),
            Ok(entries) => self.answer(limits, entries, &mut tally),
            Err(reply) => (Delivery::Reply(reply.clone()), None),
        };
        let (status, error_type, failed_entry_count) = match &delivery {
            Delivery::Reply(Reply::Accepted(r)) => (200, None, r.failed_entry_count),
            Delivery::Reply(Reply::Error {
                status, error_type, ..
            }) => (*status, Some(error_type.clone()), 0),
            Delivery::Reply(reply) => (reply.status(), None, 0),
            Delivery::Hang | Delivery::Drop => (NO_ANSWER, None, 0),
        };
        let call = RecordedCall {
            entries: entries.len(),
            size: call_size(entries),
            status,
            error_type,
            failed_entry_count,
            accepted: tally.accepted,
            fault: fault.map(|f| f.kind().to_string()),
            entry_faults: tally.entry_faults,
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        };
        self.record_call(call, region, throttled);
        Answer { delay, delivery }
    }

    /// Records a call signed for `region` whose body could not be read at
    /// all (too large, or the connection failed), answered with `status`,
    /// or throttled: it draws from the quota like any other.
    pub fn unreadable_body(&mut self, region: &str, status: u16) -> Reply {
        let throttled = !self.quota.try_call(region, Instant::now());
        let reply = if throttled {
            throttled_reply()
        } else {
            Reply::error(
                status,
                SERIALIZATION_EXCEPTION,
                "The request body could not be read.",
            )
        };
        let error_type = match &reply {
            Reply::Error { error_type, .. } => Some(error_type.clone()),
            _ => None,
        };
        let call = RecordedCall {
            entries: 0,
            size: 0,
            status: reply.status(),
            error_type,
            failed_entry_count: 0,
            accepted: 0,
            fault: None,
            entry_faults: 0,
            delay_ms: 0,
        };
        self.record_call(call, region, throttled);
        reply
    }

    fn record_received(&mut self, entries: &[RequestEntry]) {
        self.counts.received += entries.len() as u64;
        for entry in entries {
            self.received.push(ReceivedEntry {
                source: entry.source.clone(),
                detail_type: entry.detail_type.clone(),
                detail: entry.detail.clone(),
            });
        }
    }

    fn record_call(&mut self, call: RecordedCall, region: &str, throttled: bool) {
        debug!(
            region,
            throttled,
            entries = call.entries,
            size = call.size,
            status = call.status,
            error_type = call.error_type.as_deref(),
            failed_entry_count = call.failed_entry_count,
            accepted = call.accepted,
            fault = call.fault.as_deref(),
            entry_faults = call.entry_faults,
            delay_ms = call.delay_ms,
            "PutPartnerEvents call"
        );
        let counts = &mut self.counts;
        let per_region = match counts.per_region.get_mut(region) {
            Some(c) => c,
            None => counts.per_region.entry(region.to_string()).or_default(),
        };
        counts.calls += 1;
        per_region.calls += 1;
        if throttled {
            counts.throttled += 1;
            per_region.throttled += 1;
        }
        if call.is_ok() {
            counts.ok_calls += 1;
        }
        self.calls.push(call);
    }

    /// The answer to a call that parsed, and the call fault that fired.
    fn answer(
        &mut self,
        limits: &Limits,
        entries: &[RequestEntry],
        tally: &mut Tally,
    ) -> (Delivery, Option<Fault>) {
        if let Err(message) = check_call(entries, limits.max_call_bytes) {
            let reply = Reply::error(400, VALIDATION_EXCEPTION, message);
            return (Delivery::Reply(reply), None);
        }
        // Call faults come after the call-level checks: a service that is
        // failing still refuses a malformed call first.
        let detail_types = entries.iter().filter_map(|e| e.detail_type.as_deref());
        let fault = self.faults.fire_call(detail_types);
        let delivery = match &fault {
            Some(Fault::CallError {
                status,
                error_type,
                message,
            }) => Delivery::Reply(Reply::error(*status, error_type, message.clone())),
            Some(Fault::CallHtml { status }) => Delivery::Reply(Reply::html(*status)),
            Some(Fault::EmptyEntries) => {
                Delivery::Reply(Reply::Accepted(PutPartnerEventsResponse {
                    failed_entry_count: 0,
                    entries: Vec::new(),
                }))
            }
            Some(Fault::ShortEntries) => {
                let mut response = self.answer_entries(limits, entries, tally);
                response.entries.pop();
                Delivery::Reply(Reply::Accepted(response))
            }
            Some(Fault::Hang { accept } | Fault::DropConnection { accept }) => {
                if *accept {
                    self.answer_entries(limits, entries, tally);
                }
                if matches!(fault, Some(Fault::Hang { .. })) {
                    Delivery::Hang
                } else {
                    Delivery::Drop
                }
            }
            // Not call faults: the book never gives them here.
            Some(Fault::EntryError { .. } | Fault::Delay { .. } | Fault::AtRate { .. }) | None => {
                Delivery::Reply(Reply::Accepted(self.answer_entries(limits, entries, tally)))
            }
        };
        (delivery, fault)
    }

    fn answer_entries(
        &mut self,
        limits: &Limits,
        entries: &[RequestEntry],
        tally: &mut Tally,
    ) -> PutPartnerEventsResponse {
        let results: Vec<ResultEntry> = entries
            .iter()
            .map(|entry| self.answer_entry(limits, entry, tally))
            .collect();
        let failed_entry_count = results
            .iter()
            .filter(|r| matches!(r, ResultEntry::Failed { .. }))
            .count();
        PutPartnerEventsResponse {
            failed_entry_count,
            entries: results,
        }
    }

    fn answer_entry(
        &mut self,
        limits: &Limits,
        entry: &RequestEntry,
        tally: &mut Tally,
    ) -> ResultEntry {
        let valid = match validate_entry(entry) {
            Ok(valid) => valid,
            Err(rejection) => {
                return ResultEntry::Failed {
                    error_code: rejection.code.to_string(),
                    error_message: rejection.message,
                }
            }
        };
        // Entry faults hit only entries the service would otherwise accept.
        if let Some((error_code, error_message)) = self.faults.fire_entry(valid.detail_type) {
            tally.entry_faults += 1;
            return ResultEntry::Failed {
                error_code,
                error_message,
            };
        }
        tally.accepted += 1;
        let event = RecordedEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            source: valid.source.to_string(),
            detail_type: valid.detail_type.to_string(),
            time: entry.time,
            resources: entry.resources.clone().unwrap_or_default(),
            detail: valid.detail.to_string(),
        };
        let event_id = event.event_id.clone();
        let delivers = self.sources.delivers(&event.source);
        self.count_accepted(&event.source, delivers);
        // Like AWS, a source that is not ACTIVE takes the event without a
        // word; it just reaches no customer.
        if !delivers {
            info!(
                source = %event.source,
                detail_type = %event.detail_type,
                event_id = %event.event_id,
                "event accepted, not delivered: the source is not ACTIVE"
            );
            self.undelivered.push(event);
            return ResultEntry::Accepted { event_id };
        }
        if limits.log_payloads {
            info!(
                source = %event.source,
                detail_type = %event.detail_type,
                event_id = %event.event_id,
                detail = %event.detail,
                "event accepted"
            );
        } else {
            info!(
                source = %event.source,
                detail_type = %event.detail_type,
                event_id = %event.event_id,
                "event accepted"
            );
        }
        if let Some(file) = &mut self.events_file {
            // A blocking write under the lock keeps the file in the order of
            // `events()`; acceptable for a local emulator.
            if let Err(error) = file.append(&event) {
                warn!(path = %file.path().display(), %error, "cannot append to the events file");
            }
        }
        self.events.push(event);
        ResultEntry::Accepted { event_id }
    }

    fn count_accepted(&mut self, source: &str, delivered: bool) {
        let counts = &mut self.counts;
        let per_source = match counts.per_source.get_mut(source) {
            Some(c) => c,
            None => counts.per_source.entry(source.to_string()).or_default(),
        };
        if delivered {
            counts.delivered += 1;
            per_source.delivered += 1;
        } else {
            counts.undelivered += 1;
            per_source.undelivered += 1;
        }
    }
}

/// The answer to a call beyond the quota, as EventBridge words it.
fn throttled_reply() -> Reply {
    Reply::error(400, THROTTLING_EXCEPTION, THROTTLED_MESSAGE)
}

/// Reads the request body; a body that is not the expected JSON, or has no
/// `Entries`, is answered here.
fn parse(body: &[u8]) -> Result<Vec<RequestEntry>, Reply> {
    // The parser's message is not passed on: it can quote the payload.
    let request: PutPartnerEventsRequest = serde_json::from_slice(body).map_err(|_| {
        Reply::error(
            400,
            SERIALIZATION_EXCEPTION,
            "The request body is not a valid PutPartnerEvents request.",
        )
    })?;
    request.entries.ok_or_else(|| {
        Reply::error(
            400,
            VALIDATION_EXCEPTION,
            "1 validation error detected: Value null at 'entries' failed to satisfy \
             constraint: Member must not be null",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_call_bytes: 262_144,
        log_payloads: false,
    };

    /// The region every call of these tests is signed for.
    const REGION: &str = "us-east-1";

    /// These tests read every event they cause: no record may drop one.
    const RECORD_ALL: usize = usize::MAX;

    fn state() -> State {
        State::new(FaultBook::default(), Sources::default(), None, RECORD_ALL)
    }

    fn body(entries: &[(&str, &str)]) -> Vec<u8> {
        let entries: Vec<_> = entries
            .iter()
            .map(|(detail_type, detail)| {
                serde_json::json!({
                    "Source": "aws.partner/example.com/t/billing",
                    "DetailType": detail_type,
                    "Detail": detail,
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "Entries": entries })).unwrap()
    }

    /// The reply of a call answered at once.
    fn put(state: &mut State, limits: &Limits, body: &[u8]) -> Reply {
        let answer = state.put_partner_events(limits, REGION, body);
        assert_eq!(answer.delay, Duration::ZERO);
        match answer.delivery {
            Delivery::Reply(reply) => reply,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn accepted(reply: Reply) -> PutPartnerEventsResponse {
        match reply {
            Reply::Accepted(r) => r,
            other => panic!("expected a 200, got {other:?}"),
        }
    }

    fn error_type(reply: &Reply) -> Option<(u16, &str)> {
        match reply {
            Reply::Error {
                status, error_type, ..
            } => Some((*status, error_type.as_str())),
            _ => None,
        }
    }

    #[test]
    fn results_are_index_aligned_and_only_accepted_entries_are_recorded() {
        let mut state = state();
        let reply = put(
            &mut state,
            &LIMITS,
            &body(&[("A", "{}"), ("B", "not json"), ("C", r#"{"n":1}"#)]),
        );
        let r = accepted(reply);
        assert_eq!(r.failed_entry_count, 1);
        let ids: Vec<_> = r
            .entries
            .iter()
            .map(|e| match e {
                ResultEntry::Accepted { event_id } => Some(event_id.clone()),
                ResultEntry::Failed { error_code, .. } => {
                    assert_eq!(error_code, "MalformedDetail");
                    None
                }
            })
            .collect();
        assert!(ids[0].is_some() && ids[1].is_none() && ids[2].is_some());
        let held: Vec<_> = state
            .events()
            .iter()
            .map(|e| Some(e.event_id.clone()))
            .collect();
        assert_eq!(held, vec![ids[0].clone(), ids[2].clone()]);
        assert_eq!(state.events()[1].detail, r#"{"n":1}"#);
        assert_eq!(
            state.calls(),
            &[RecordedCall {
                entries: 3,
                size: 3 * 33 + (1 + 2) + (1 + 8) + (1 + 7),
                status: 200,
                error_type: None,
                failed_entry_count: 1,
                accepted: 2,
                fault: None,
                entry_faults: 0,
                delay_ms: 0,
            }]
        );
    }

    #[test]
    fn bad_bodies_fail_the_call() {
        let mut state = state();
        let cases: [(&[u8], u16, &str); 5] = [
            (b"{not json", 400, SERIALIZATION_EXCEPTION),
            (b"", 400, SERIALIZATION_EXCEPTION),
            (
                br#"{"Entries":[{"Time":"yesterday"}]}"#,
                400,
                SERIALIZATION_EXCEPTION,
            ),
            (b"{}", 400, VALIDATION_EXCEPTION),
            (br#"{"Entries":[]}"#, 400, VALIDATION_EXCEPTION),
        ];
        for (b, status, ty) in cases {
            let reply = put(&mut state, &LIMITS, b);
            assert_eq!(
                error_type(&reply),
                Some((status, ty)),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        assert_eq!(state.calls().len(), 5);
        assert!(state.calls().iter().all(|c| c.status == 400 && !c.is_ok()));
        assert!(state.events().is_empty());
    }

    #[test]
    fn size_limit_is_inclusive() {
        let b = body(&[("A", "{}")]);
        let size = 33 + 1 + 2;
        let mut state = state();
        let at = Limits {
            max_call_bytes: size,
            ..LIMITS
        };
        assert!(matches!(put(&mut state, &at, &b), Reply::Accepted(_)));
        let under = Limits {
            max_call_bytes: size - 1,
            ..LIMITS
        };
        let reply = put(&mut state, &under, &b);
        assert_eq!(error_type(&reply), Some((400, VALIDATION_EXCEPTION)));
        assert_eq!(state.calls()[1].size, size);
        assert_eq!(state.events().len(), 1);
    }

    #[test]
    fn faults_fire_as_configured() {
        let mut state = State::new(
            FaultBook::new(
                vec![
                    FaultRule {
                        detail_type: "Boom".into(),
                        fault: Fault::CallError {
                            status: 503,
                            error_type: "ThrottlingException".into(),
                            message: "slow down".into(),
                        },
                        times: Some(1),
                    },
                    FaultRule {
                        detail_type: "Moto".into(),
                        fault: Fault::EmptyEntries,
                        times: None,
                    },
                    FaultRule {
                        detail_type: "Flaky".into(),
                        fault: Fault::EntryError {
                            code: "InternalFailure".into(),
                            message: "m".into(),
                        },
                        times: Some(1),
                    },
                ],
                0,
            ),
            Sources::default(),
            None,
            RECORD_ALL,
        );
        let reply = put(&mut state, &LIMITS, &body(&[("A", "{}"), ("Boom", "{}")]));
        assert_eq!(error_type(&reply), Some((503, "ThrottlingException")));
        assert!(matches!(
            put(&mut state, &LIMITS, &body(&[("Boom", "{}")])),
            Reply::Accepted(_)
        ));

        let r = accepted(put(
            &mut state,
            &LIMITS,
            &body(&[("Moto", "{}"), ("A", "{}")]),
        ));
        assert_eq!((r.failed_entry_count, r.entries.len()), (0, 0));

        // An invalid entry is refused for itself and uses up no firing.
        let r = accepted(put(
            &mut state,
            &LIMITS,
            &body(&[("Flaky", "bad"), ("Flaky", "{}"), ("Flaky", "{}")]),
        ));
        let codes: Vec<_> = r
            .entries
            .iter()
            .map(|e| match e {
                ResultEntry::Failed { error_code, .. } => error_code.as_str(),
                ResultEntry::Accepted { .. } => "ok",
            })
            .collect();
        assert_eq!(codes, ["MalformedDetail", "InternalFailure", "ok"]);
        assert_eq!(state.events().len(), 2, "Boom once, then the last Flaky");
        let statuses: Vec<_> = state.calls().iter().map(|c| c.status).collect();
        assert_eq!(statuses, [503, 200, 200, 200]);
        assert_eq!(
            state.calls()[0].error_type.as_deref(),
            Some("ThrottlingException")
        );

        state.clear();
        assert!(state.events().is_empty() && state.calls().is_empty());
        state.set_faults(vec![FaultRule {
            detail_type: "A".into(),
            fault: Fault::CallHtml { status: 500 },
            times: None,
        }]);
        assert_eq!(
            put(&mut state, &LIMITS, &body(&[("A", "{}")])),
            Reply::Html { status: 500 }
        );
        assert_eq!(state.calls()[0].error_type, None);
        assert_eq!(state.calls()[0].status, 500);
    }

    fn fault_state(rules: Vec<FaultRule>, seed: u64) -> State {
        State::new(
            FaultBook::new(rules, seed),
            Sources::default(),
            None,
            RECORD_ALL,
        )
    }

    #[test]
    fn hang_and_drop_record_the_entries_only_when_accepting() {
        for (fault, delivery) in [
            (Fault::Hang { accept: false }, Delivery::Hang),
            (Fault::Hang { accept: true }, Delivery::Hang),
            (Fault::DropConnection { accept: false }, Delivery::Drop),
            (Fault::DropConnection { accept: true }, Delivery::Drop),
        ] {
            let accept = matches!(
                fault,
                Fault::Hang { accept: true } | Fault::DropConnection { accept: true }
            );
            let kind = fault.kind();
            let mut state = fault_state(vec![FaultRule::everywhere(fault)], 0);
            let answer =
                state.put_partner_events(&LIMITS, REGION, &body(&[("A", "{}"), ("B", "nope")]));
            assert_eq!(answer.delivery, delivery);
            assert_eq!(state.events().len(), usize::from(accept), "{kind}");
            let call = &state.calls()[0];
            assert!(call.got_no_answer() && !call.is_ok());
            assert_eq!(
                (
                    call.accepted,
                    call.fault.as_deref(),
                    call.failed_entry_count
                ),
                (usize::from(accept), Some(kind), 0)
            );
        }
    }

    #[test]
    fn short_entries_lose_the_last_result_but_keep_the_events() {
        let mut state = fault_state(vec![FaultRule::new("S", Fault::ShortEntries)], 0);
        let r = accepted(put(
            &mut state,
            &LIMITS,
            &body(&[("S", "{}"), ("A", "{}"), ("A", "bad")]),
        ));
        assert_eq!(r.entries.len(), 2);
        assert_eq!(r.failed_entry_count, 1, "the true count");
        assert_eq!(state.events().len(), 2);
        assert_eq!(state.calls()[0].fault.as_deref(), Some("short_entries"));
        assert_eq!(state.calls()[0].accepted, 2);
    }

    #[test]
    fn a_delay_applies_to_every_call_and_is_recorded() {
        let mut state = fault_state(
            vec![FaultRule::everywhere(Fault::Delay {
                ms: 40,
                jitter_ms: 0,
            })],
            0,
        );
        for b in [&body(&[("A", "{}")])[..], b"{nope"] {
            let answer = state.put_partner_events(&LIMITS, REGION, b);
            assert_eq!(answer.delay, Duration::from_millis(40));
            assert!(matches!(answer.delivery, Delivery::Reply(_)));
        }
        let delays: Vec<(u64, u16)> = state
            .calls()
            .iter()
            .map(|c| (c.delay_ms, c.status))
            .collect();
        assert_eq!(delays, [(40, 200), (40, 400)]);
        assert!(state.calls().iter().all(|c| c.fault.is_none()));
    }

    #[test]
    fn entry_faults_are_counted_per_call() {
        let mut state = fault_state(
            vec![FaultRule::everywhere(Fault::EntryError {
                code: "InternalFailure".into(),
                message: "m".into(),
            })
            .at_rate(0.5)],
            11,
        );
        let entries: Vec<(&str, &str)> = (0..20).map(|_| ("A", "{}")).collect();
        let r = accepted(put(&mut state, &LIMITS, &body(&entries)));
        let call = &state.calls()[0];
        assert_eq!(call.entry_faults, r.failed_entry_count);
        assert_eq!(call.accepted + call.entry_faults, 20);
        assert!((1..20).contains(&call.entry_faults), "{call:?}");
        assert_eq!(state.events().len(), call.accepted);
    }

    #[test]
    fn events_for_sources_that_are_not_active_are_kept_apart() {
        use super::super::sources::{SeedSource, SourceState};
        let mut sources = Sources::default();
        let pending = "aws.partner/example.com/p/billing";
        sources
            .seed(
                &[
                    SeedSource::new(pending, "123456789012", SourceState::Pending),
                    SeedSource::new(
                        "aws.partner/example.com/t/billing",
                        "123456789012",
                        SourceState::Active,
                    ),
                ],
                0,
            )
            .unwrap();
        let mut state = State::new(FaultBook::default(), sources, None, RECORD_ALL);
        let mixed = serde_json::json!({"Entries": [
            {"Source": pending, "DetailType": "P", "Detail": "{}"},
            {"Source": "aws.partner/example.com/t/billing", "DetailType": "T", "Detail": "{}"},
            {"Source": "aws.partner/example.com/unknown/x", "DetailType": "U", "Detail": "{}"},
        ]});
        let r = accepted(put(
            &mut state,
            &LIMITS,
            &serde_json::to_vec(&mixed).unwrap(),
        ));
        assert_eq!(r.failed_entry_count, 0);
        let types = |events: &[RecordedEvent]| -> Vec<String> {
            events.iter().map(|e| e.detail_type.clone()).collect()
        };
        assert_eq!(types(&state.events()), ["T", "U"]);
        assert_eq!(types(&state.undelivered()), ["P"]);
        assert_eq!(state.calls()[0].accepted, 3);
        state.clear();
        assert!(state.undelivered().is_empty());
    }

    #[test]
    fn every_entry_of_a_readable_call_is_received_whatever_its_fate() {
        let call_error = Fault::CallError {
            status: 500,
            error_type: "InternalException".into(),
            message: "m".into(),
        };
        let entry_error = Fault::EntryError {
            code: "InternalFailure".into(),
            message: "m".into(),
        };
        let mut state = fault_state(
            vec![
                FaultRule::new("Hang", Fault::Hang { accept: false }),
                FaultRule::new("Drop", Fault::DropConnection { accept: false }),
                FaultRule::new("Fail", call_error),
                FaultRule::new("Html", Fault::CallHtml { status: 502 }),
                FaultRule::new("Moto", Fault::EmptyEntries),
                FaultRule::new("Entry", entry_error),
            ],
            0,
        );
        for (detail_type, detail) in [
            ("Hang", r#"{"n":"hang"}"#),
            ("Drop", r#"{"n":"drop"}"#),
            ("Fail", r#"{"n":"fail"}"#),
            ("Html", r#"{"n":"html"}"#),
            ("Moto", r#"{"n":"moto"}"#),
            ("Entry", r#"{"n":"entry"}"#),
            ("Ok", r#"{"n":"ok"}"#),
            ("Ok", "not json"),
        ] {
            state.put_partner_events(&LIMITS, REGION, &body(&[(detail_type, detail)]));
        }
        // Refused whole by validation: 21 entries.
        let many: Vec<(&str, &str)> = (0..21).map(|_| ("Ok", r#"{"n":"many"}"#)).collect();
        state.put_partner_events(&LIMITS, REGION, &body(&many));
        // Unreadable: nothing to record.
        state.put_partner_events(&LIMITS, REGION, b"{nope");
        // A resend.
        state.put_partner_events(&LIMITS, REGION, &body(&[("Ok", r#"{"n":"ok"}"#)]));

        for (detail, n) in [
            (r#"{"n":"hang"}"#, 1),
            (r#"{"n":"drop"}"#, 1),
            (r#"{"n":"fail"}"#, 1),
            (r#"{"n":"html"}"#, 1),
            (r#"{"n":"moto"}"#, 1),
            (r#"{"n":"entry"}"#, 1),
            ("not json", 1),
            (r#"{"n":"many"}"#, 21),
            (r#"{"n":"ok"}"#, 2),
        ] {
            assert_eq!(state.received_count(detail), n, "{detail}");
        }
        let received = state.received();
        assert_eq!(received.len(), 8 + 21 + 1);
        assert_eq!(
            received[0],
            ReceivedEntry {
                source: Some("aws.partner/example.com/t/billing".into()),
                detail_type: Some("Hang".into()),
                detail: Some(r#"{"n":"hang"}"#.into()),
            }
        );
        let counts = state.counts();
        assert_eq!((counts.received, counts.calls), (30, 11));
        assert_eq!((counts.ok_calls, counts.accepted()), (5, 2));
    }

    #[test]
    fn entries_missing_fields_are_received_as_sent() {
        let mut state = state();
        state.put_partner_events(&LIMITS, REGION, br#"{"Entries":[{"Detail":"{}"},{}]}"#);
        assert_eq!(
            state.received(),
            [
                ReceivedEntry {
                    source: None,
                    detail_type: None,
                    detail: Some("{}".into()),
                },
                ReceivedEntry {
                    source: None,
                    detail_type: None,
                    detail: None,
                },
            ]
        );
    }

    #[test]
    fn records_keep_the_last_items_and_the_counts_stay_whole() {
        use super::super::sources::{SeedSource, SourceState};
        let pending = "aws.partner/example.com/p/billing";
        let mut sources = Sources::default();
        sources
            .seed(
                &[SeedSource::new(
                    pending,
                    "123456789012",
                    SourceState::Pending,
                )],
                0,
            )
            .unwrap();
        let mut state = State::new(FaultBook::default(), sources, None, 3);
        for n in 0..5 {
            let body = serde_json::json!({"Entries": [
                {"Source": "aws.partner/example.com/t/billing", "DetailType": "T",
                 "Detail": format!(r#"{{"n":{n}}}"#)},
                {"Source": pending, "DetailType": "P", "Detail": format!(r#"{{"p":{n}}}"#)},
            ]});
            state.put_partner_events(&LIMITS, REGION, &serde_json::to_vec(&body).unwrap());
        }
        let details = |events: &[RecordedEvent]| -> Vec<String> {
            events.iter().map(|e| e.detail.clone()).collect()
        };
        assert_eq!(
            details(&state.events()),
            [r#"{"n":2}"#, r#"{"n":3}"#, r#"{"n":4}"#]
        );
        assert_eq!(
            details(&state.undelivered()),
            [r#"{"p":2}"#, r#"{"p":3}"#, r#"{"p":4}"#]
        );
        assert_eq!(state.received().len(), 3);
        assert_eq!(state.received_count(r#"{"p":4}"#), 1);
        assert_eq!(state.received_count(r#"{"n":0}"#), 0, "dropped");
        assert_eq!(state.calls().len(), 3);

        let counts = state.counts();
        assert_eq!((counts.calls, counts.ok_calls, counts.received), (5, 5, 10));
        assert_eq!((counts.delivered, counts.undelivered), (5, 5));
        assert_eq!(counts.accepted(), 10);
        let per_source: Vec<_> = counts
            .per_source
            .iter()
            .map(|(name, c)| (name.as_str(), c.delivered, c.undelivered))
            .collect();
        assert_eq!(
            per_source,
            [(pending, 0, 5), ("aws.partner/example.com/t/billing", 5, 0)]
        );

        state.clear();
        assert_eq!(state.counts(), RecordCounts::default());
        assert!(state.received().is_empty() && state.calls().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn calls_beyond_the_quota_fail_whole_and_are_counted_per_region() {
        let mut state = state();
        state.set_quota(Quota::new(10.0, 2).unwrap());
        let two = body(&[("A", "{}"), ("B", "{}")]);
        for _ in 0..3 {
            put(&mut state, &LIMITS, &two);
        }
        // Even a malformed body is throttled first: the quota is the door.
        let reply = put(&mut state, &LIMITS, b"{nope");
        assert_eq!(error_type(&reply), Some((400, THROTTLING_EXCEPTION)));
        // Another region has a bucket of its own.
        let answer = state.put_partner_events(&LIMITS, "eu-west-1", &two);
        assert!(matches!(
            answer.delivery,
            Delivery::Reply(Reply::Accepted(_))
        ));
        assert_eq!(
            state.unreadable_body(REGION, 413),
            Reply::error(400, THROTTLING_EXCEPTION, THROTTLED_MESSAGE)
        );

        let statuses: Vec<_> = state
            .calls()
            .iter()
            .map(|c| (c.status, c.is_throttled(), c.accepted))
            .collect();
        assert_eq!(
            statuses,
            [
                (200, false, 2),
                (200, false, 2),
                (400, true, 0),
                (400, true, 0),
                (200, false, 2),
                (400, true, 0),
            ]
        );
        let throttled = &state.calls()[2];
        assert_eq!(throttled.error_type.as_deref(), Some(THROTTLING_EXCEPTION));
        assert_eq!((throttled.entries, throttled.fault.as_deref()), (2, None));
        let counts = state.counts();
        assert_eq!((counts.calls, counts.ok_calls, counts.throttled), (6, 3, 3));
        assert_eq!(
            counts.received, 8,
            "a throttled call's entries are received"
        );
        assert_eq!(counts.delivered, 6, "and never accepted");
        let per_region: Vec<_> = counts
            .per_region
            .iter()
            .map(|(r, c)| (r.as_str(), c.calls, c.throttled))
            .collect();
        assert_eq!(per_region, [("eu-west-1", 1, 0), ("us-east-1", 5, 3)]);

        // 100 ms at 10/s earn one call; clearing the counts keeps the buckets.
        tokio::time::advance(Duration::from_millis(100)).await;
        state.clear();
        assert!(matches!(put(&mut state, &LIMITS, &two), Reply::Accepted(_)));
        let reply = put(&mut state, &LIMITS, &two);
        assert_eq!(error_type(&reply), Some((400, THROTTLING_EXCEPTION)));
        assert_eq!((state.counts().calls, state.counts().throttled), (2, 1));
    }

    #[test]
    fn an_injected_throttling_is_no_quota_throttling() {
        let mut state = fault_state(
            vec![FaultRule::everywhere(Fault::CallError {
                status: 400,
                error_type: THROTTLING_EXCEPTION.into(),
                message: "injected".into(),
            })],
            0,
        );
        state.set_quota(Quota::UNLIMITED);
        let reply = put(&mut state, &LIMITS, &body(&[("A", "{}")]));
        assert_eq!(error_type(&reply), Some((400, THROTTLING_EXCEPTION)));
        assert!(!state.calls()[0].is_throttled());
        assert_eq!(state.counts().throttled, 0);
    }

    #[test]
    fn a_bound_of_zero_keeps_no_record_but_counts() {
        let mut state = State::new(FaultBook::default(), Sources::default(), None, 0);
        let r = accepted(put(&mut state, &LIMITS, &body(&[("A", "{}"), ("B", "{}")])));
        assert_eq!(r.failed_entry_count, 0);
        assert!(state.events().is_empty() && state.received().is_empty());
        assert!(state.calls().is_empty());
        let counts = state.counts();
        assert_eq!((counts.calls, counts.received, counts.delivered), (1, 2, 2));
    }
}
