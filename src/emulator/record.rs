//! What the emulator remembers: the events it accepted and the calls it
//! received, and the optional JSON-lines file of delivered events.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use serde::Serialize;

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
