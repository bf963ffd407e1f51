//! The emulator's behaviour without HTTP: one `PutPartnerEvents` body in,
//! one [`Reply`] out, with the recorded events, calls and fault counters
//! updated on the way. Synchronous, so it runs under a `std::sync::Mutex`.

use tracing::{debug, info, warn};

use super::{
    faults::{Fault, FaultBook, FaultRule},
    record::{EventsFile, RecordedCall, RecordedEvent},
    validate::{call_size, check_call, validate_entry},
    wire::{
        PutPartnerEventsRequest, PutPartnerEventsResponse, Reply, RequestEntry, ResultEntry,
        SERIALIZATION_EXCEPTION, VALIDATION_EXCEPTION,
    },
};

/// The settings a call is judged by.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_call_bytes: usize,
    pub log_payloads: bool,
}

/// Everything the emulator remembers between calls.
#[derive(Debug, Default)]
pub struct State {
    events: Vec<RecordedEvent>,
    calls: Vec<RecordedCall>,
    faults: FaultBook,
    events_file: Option<EventsFile>,
}

impl State {
    pub fn new(faults: Vec<FaultRule>, events_file: Option<EventsFile>) -> Self {
        Self {
            faults: FaultBook::new(faults),
            events_file,
            ..Self::default()
        }
    }

    pub fn events(&self) -> &[RecordedEvent] {
        &self.events
    }

    pub fn calls(&self) -> &[RecordedCall] {
        &self.calls
    }

    /// Replaces the fault rules; their firing counts start afresh.
    pub fn set_faults(&mut self, faults: Vec<FaultRule>) {
        self.faults = FaultBook::new(faults);
    }

    /// Forgets recorded events and calls (not the fault rules, nor the file).
    pub fn clear(&mut self) {
        self.events.clear();
        self.calls.clear();
    }

    /// Answers one `PutPartnerEvents` request body and records the call.
    pub fn put_partner_events(&mut self, limits: &Limits, body: &[u8]) -> Reply {
        let (reply, entries, size) = match parse(body) {
            Ok(entries) => {
                let size = call_size(&entries);
                (self.answer(limits, &entries), entries.len(), size)
            }
            Err(reply) => (reply, 0, 0),
        };
        self.record_call(entries, size, &reply);
        reply
    }

    /// Records a call whose body could not be read at all (too large, or
    /// the connection failed), answered with `status`.
    pub fn unreadable_body(&mut self, status: u16) -> Reply {
        let reply = Reply::error(
            status,
            SERIALIZATION_EXCEPTION,
            "The request body could not be read.",
        );
        self.record_call(0, 0, &reply);
        reply
    }

    fn record_call(&mut self, entries: usize, size: usize, reply: &Reply) {
        let (error_type, failed_entry_count) = match reply {
            Reply::Accepted(r) => (None, r.failed_entry_count),
            Reply::Error { error_type, .. } => (Some(error_type.clone()), 0),
            Reply::Html { .. } => (None, 0),
        };
        let call = RecordedCall {
            entries,
            size,
            status: reply.status(),
            error_type,
            failed_entry_count,
        };
        debug!(
            entries = call.entries,
            size = call.size,
            status = call.status,
            error_type = call.error_type.as_deref(),
            failed_entry_count = call.failed_entry_count,
            "PutPartnerEvents call"
        );
        self.calls.push(call);
    }

    fn answer(&mut self, limits: &Limits, entries: &[RequestEntry]) -> Reply {
        if let Err(message) = check_call(entries, limits.max_call_bytes) {
            return Reply::error(400, VALIDATION_EXCEPTION, message);
        }
        // Call faults come after the call-level checks: a service that is
        // failing still refuses a malformed call first.
        let detail_types = entries.iter().filter_map(|e| e.detail_type.as_deref());
        if let Some(fault) = self.faults.fire_call(detail_types) {
            match fault {
                Fault::CallError {
                    status,
                    error_type,
                    message,
                } => return Reply::error(status, &error_type, message),
                Fault::CallHtml { status } => return Reply::html(status),
                Fault::EmptyEntries => {
                    return Reply::Accepted(PutPartnerEventsResponse {
                        failed_entry_count: 0,
                        entries: Vec::new(),
                    })
                }
                Fault::EntryError { .. } => {}
            }
        }
        let results: Vec<ResultEntry> = entries
            .iter()
            .map(|entry| self.answer_entry(limits, entry))
            .collect();
        let failed_entry_count = results
            .iter()
            .filter(|r| matches!(r, ResultEntry::Failed { .. }))
            .count();
        Reply::Accepted(PutPartnerEventsResponse {
            failed_entry_count,
            entries: results,
        })
    }

    fn answer_entry(&mut self, limits: &Limits, entry: &RequestEntry) -> ResultEntry {
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
            return ResultEntry::Failed {
                error_code,
                error_message,
            };
        }
        let event = RecordedEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            source: valid.source.to_string(),
            detail_type: valid.detail_type.to_string(),
            time: entry.time,
            resources: entry.resources.clone().unwrap_or_default(),
            detail: valid.detail.to_string(),
        };
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
        let event_id = event.event_id.clone();
        self.events.push(event);
        ResultEntry::Accepted { event_id }
    }
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
        let mut state = State::default();
        let reply = state.put_partner_events(
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
            }]
        );
    }

    #[test]
    fn bad_bodies_fail_the_call() {
        let mut state = State::default();
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
            let reply = state.put_partner_events(&LIMITS, b);
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
        let mut state = State::default();
        let at = Limits {
            max_call_bytes: size,
            ..LIMITS
        };
        assert!(matches!(
            state.put_partner_events(&at, &b),
            Reply::Accepted(_)
        ));
        let under = Limits {
            max_call_bytes: size - 1,
            ..LIMITS
        };
        let reply = state.put_partner_events(&under, &b);
        assert_eq!(error_type(&reply), Some((400, VALIDATION_EXCEPTION)));
        assert_eq!(state.calls()[1].size, size);
        assert_eq!(state.events().len(), 1);
    }

    #[test]
    fn faults_fire_as_configured() {
        let mut state = State::new(
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
            None,
        );
        let reply = state.put_partner_events(&LIMITS, &body(&[("A", "{}"), ("Boom", "{}")]));
        assert_eq!(error_type(&reply), Some((503, "ThrottlingException")));
        assert!(matches!(
            state.put_partner_events(&LIMITS, &body(&[("Boom", "{}")])),
            Reply::Accepted(_)
        ));

        let r = accepted(state.put_partner_events(&LIMITS, &body(&[("Moto", "{}"), ("A", "{}")])));
        assert_eq!((r.failed_entry_count, r.entries.len()), (0, 0));

        // An invalid entry is refused for itself and uses up no firing.
        let r = accepted(state.put_partner_events(
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
            state.put_partner_events(&LIMITS, &body(&[("A", "{}")])),
            Reply::Html { status: 500 }
        );
        assert_eq!(state.calls()[0].error_type, None);
        assert_eq!(state.calls()[0].status, 500);
    }
}
