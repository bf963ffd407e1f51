//! What the emulator remembers: the events it accepted, the entries and
//! calls it received, the running counts of all three, and the optional
//! JSON-lines file of delivered events.
//!
//! Each record keeps only its last [`EmulatorConfig::max_recorded_events`]
//! items, so that a long run (the default `cargo run` under load) holds a
//! bounded amount of memory; the [`RecordCounts`] beside them are never
//! truncated. The events file, when set, still gets every delivered event.
//!
//! [`EmulatorConfig::max_recorded_events`]: super::EmulatorConfig::max_recorded_events

use std::{
    collections::{BTreeMap, VecDeque},
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::wire::THROTTLING_EXCEPTION;

/// An accepted event, as the emulator holds it (delivered or not). Serialized (in this field
/// order) as one line of the events file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordedEvent {
    /// The UUID v4 the emulator answered with.
    pub event_id: String,
    pub source: String,
    pub detail_type: String,
    /// Epoch seconds as sent, when the entry had a `Time`.
    pub time: Option<f64>,
    pub resources: Vec<String>,
    /// The `Detail` text exactly as sent.
    pub detail: String,
}

/// The `status` of a call that got no HTTP answer: it hung or its
/// connection was dropped.
pub const NO_ANSWER: u16 = 0;

/// One `PutPartnerEvents` call the emulator received, whatever its outcome:
/// what the caller was told, and what the emulator did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedCall {
    /// Entries in the request (0 when the body could not be read).
    pub entries: usize,
    /// The call's size by the AWS formula (0 when the body could not be read).
    pub size: usize,
    /// The HTTP status answered: 200, the error's status, or [`NO_ANSWER`].
    pub status: u16,
    /// The error type answered (`__type`), for a JSON error; `None` for a 200,
    /// an HTML error page and no answer.
    pub error_type: Option<String>,
    /// `FailedEntryCount` of a 200 answer; 0 otherwise.
    pub failed_entry_count: usize,
    /// Events the emulator recorded from this call, delivered or not,
    /// whatever the caller was told (a dropped call can have accepted some).
    pub accepted: usize,
    /// The kind of the call fault that decided the answer
    /// ([`Fault::kind`](super::Fault::kind): `"call_error"`, `"hang"`, ...);
    /// `None` when the call was answered as the service would.
    pub fault: Option<String>,
    /// Entries failed by an injected entry fault (counted in
    /// `failed_entry_count` too, when the call was answered).
    pub entry_faults: usize,
    /// The injected delay before the answer, in milliseconds.
    pub delay_ms: u64,
}

impl RecordedCall {
    /// Whether the call was answered with HTTP 200.
    pub fn is_ok(&self) -> bool {
        self.status == 200
    }

    /// Whether the call got no HTTP answer at all (hung or dropped).
    pub fn got_no_answer(&self) -> bool {
        self.status == NO_ANSWER
    }

    /// Whether the call was refused by the emulator's quota (HTTP 400
    /// `ThrottlingException` with no fault behind it; an injected
    /// `ThrottlingException` names its fault).
    pub fn is_throttled(&self) -> bool {
        self.status == 400
            && self.fault.is_none()
            && self.error_type.as_deref() == Some(THROTTLING_EXCEPTION)
    }
}

/// How many items each record (delivered events, undelivered events,
/// received entries, calls) keeps by default: about 4 MB of events at the
/// ~430 bytes one takes, whatever the run's length.
pub const DEFAULT_MAX_RECORDED_EVENTS: usize = 10_000;

/// The most `emulator.max_recorded_events` (and `--max-recorded-events`)
/// may be: about 4 GB of events, beyond which a typo is more likely than
/// intent. [`EmulatorConfig`](super::EmulatorConfig) in Rust takes any
/// value (`usize::MAX` keeps everything).
pub const MAX_RECORDED_EVENTS_CEILING: usize = 10_000_000;

/// One entry of a `PutPartnerEvents` call as the emulator received it,
/// before validation, faults or delays: whatever the call's fate (accepted,
/// failed whole, hung, dropped), each entry of a readable body is one of
/// these. Fields missing from the entry are `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedEntry {
    pub source: Option<String>,
    pub detail_type: Option<String>,
    /// The `Detail` text exactly as sent.
    pub detail: Option<String>,
}

/// The running totals since the start (or the last
/// [`clear`](super::EmulatorHandle::clear)): unlike the records, never
/// truncated by [`EmulatorConfig::max_recorded_events`](super::EmulatorConfig::max_recorded_events).
/// Serialized as the JSON of `GET /_emulator/counts`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecordCounts {
    /// `PutPartnerEvents` calls received, unreadable bodies included.
    pub calls: u64,
    /// Calls answered with HTTP 200.
    pub ok_calls: u64,
    /// Calls refused whole by the quota (HTTP 400 `ThrottlingException`),
    /// counted in `calls` too; injected throttling is not counted here.
    pub throttled: u64,
    /// Entries received in calls with a readable body, whatever their fate
    /// (one per [`ReceivedEntry`]).
    pub received: u64,
    /// Accepted events that were delivered.
    pub delivered: u64,
    /// Accepted events that were not delivered (the source is not `ACTIVE`).
    pub undelivered: u64,
    /// Accepted events by source name: one item per source name seen, so
    /// as many as the run uses, whatever the number of events.
    pub per_source: BTreeMap<String, SourceCounts>,
    /// Calls by region (of the call's SigV4 credential scope): one item
    /// per region seen.
    pub per_region: BTreeMap<String, RegionCounts>,
}

impl RecordCounts {
    /// Accepted events, delivered or not.
    pub fn accepted(&self) -> u64 {
        self.delivered + self.undelivered
    }
}

/// Accepted events of one source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceCounts {
    pub delivered: u64,
    pub undelivered: u64,
}

/// `PutPartnerEvents` calls of one region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RegionCounts {
    /// Calls received, whatever their fate.
    pub calls: u64,
    /// Calls refused whole by the quota.
    pub throttled: u64,
}

/// The last `max` items pushed, oldest first; older ones are dropped.
#[derive(Clone, Debug)]
pub struct Bounded<T> {
    items: VecDeque<T>,
    max: usize,
}

impl<T> Bounded<T> {
    /// An empty record that keeps at most `max` items (none when 0). Grows
    /// as items come, so a huge `max` costs nothing up front.
    pub fn new(max: usize) -> Self {
        Self {
            items: VecDeque::new(),
            max,
        }
    }

    /// Appends `item`, dropping the oldest one when full.
    pub fn push(&mut self, item: T) {
        if self.max == 0 {
            return;
        }
        if self.items.len() >= self.max {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }
}

impl<T: Clone> Bounded<T> {
    /// The items, oldest first.
    pub fn to_vec(&self) -> Vec<T> {
        self.items.iter().cloned().collect()
    }
}

impl<T> Default for Bounded<T> {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_RECORDED_EVENTS)
    }
}

/// The events file, opened for appending.
#[derive(Debug)]
pub struct EventsFile {
    path: PathBuf,
    file: File,
}

impl EventsFile {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `event` as one JSON line, in one write so that a reader never
    /// sees half a line from this process.
    pub fn append(&mut self, event: &RecordedEvent) -> io::Result<()> {
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        self.file.write_all(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_record_keeps_the_last_items() {
        let mut record = Bounded::new(3);
        (1..=5).for_each(|i| record.push(i));
        assert_eq!(record.to_vec(), [3, 4, 5]);
        record.clear();
        record.push(6);
        assert_eq!(record.to_vec(), [6]);

        let mut none = Bounded::new(0);
        none.push(1);
        assert!(none.to_vec().is_empty(), "0 keeps nothing");
    }

    #[test]
    fn events_file_gets_one_json_line_per_event() {
        let path = std::env::temp_dir().join(format!("events-{}.jsonl", uuid::Uuid::new_v4()));
        let event = RecordedEvent {
            event_id: "id-1".into(),
            source: "aws.partner/a/b".into(),
            detail_type: "T".into(),
            time: Some(1.5),
            resources: vec!["arn:x".into()],
            detail: r#"{"k":"v"}"#.into(),
        };
        let mut file = EventsFile::open(&path).unwrap();
        file.append(&event).unwrap();
        drop(file);
        // Reopening appends instead of truncating.
        let mut file = EventsFile::open(&path).unwrap();
        file.append(&RecordedEvent {
            time: None,
            ..event
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            text,
            "{\"event_id\":\"id-1\",\"source\":\"aws.partner/a/b\",\"detail_type\":\"T\",\"time\":1.5,\"resources\":[\"arn:x\"],\"detail\":\"{\\\"k\\\":\\\"v\\\"}\"}\n\
             {\"event_id\":\"id-1\",\"source\":\"aws.partner/a/b\",\"detail_type\":\"T\",\"time\":null,\"resources\":[\"arn:x\"],\"detail\":\"{\\\"k\\\":\\\"v\\\"}\"}\n"
        );
    }
}
