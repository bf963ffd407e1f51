//! Partner event source states, and what the gateway does with an entry for
//! a source that is not ACTIVE.
//!
//! EventBridge accepts PutPartnerEvents for a source whose customer has not
//! associated it with an event bus (PENDING), or has deleted the bus, and
//! then never delivers the events: the caller is told "success" and the
//! event is gone. The gateway learns each source's state and refuses such
//! entries (or, by the operator's choice, sends them with a warning).

use crate::sync::{read, write};
use std::{collections::HashMap, sync::RwLock};

use serde::{Deserialize, Serialize};

use super::outcome::codes;

/// What the partner-side API says of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceState {
    Active,
    /// Not associated yet (or its bus was deleted); expires at this epoch
    /// second, when known.
    Pending {
        expires: Option<i64>,
    },
    Deleted,
    /// EventBridge does not know the source at all.
    NotFound,
}

impl SourceState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Pending { .. } => "PENDING",
            Self::Deleted => "DELETED",
            Self::NotFound => "NOT_FOUND",
        }
    }

    /// The state of a source from its accounts' states (one source serves
    /// one customer account; should there be several, any ACTIVE one makes
    /// it deliverable).
    pub fn from_accounts(accounts: &[(String, Option<i64>)]) -> Self {
        if accounts.is_empty() {
            return Self::NotFound;
        }
        if accounts.iter().any(|(s, _)| s == "ACTIVE") {
            return Self::Active;
        }
        if let Some((_, expires)) = accounts.iter().find(|(s, _)| s == "PENDING") {
            return Self::Pending { expires: *expires };
        }
        Self::Deleted
    }
}

/// What to do with entries for a source that is not ACTIVE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InactivePolicy {
    /// Refuse them with `SourceNotActive` / `SourceNotFound` (the default).
    #[default]
    Refuse,
    /// Send them, and flag each accepted result with a warning.
    SendAndFlag,
}

/// Why an entry may not go to its source, or what to flag it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InactiveSource {
    pub code: &'static str,
    pub message: String,
}

/// What the gateway knows of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub state: SourceState,
    pub account: Option<String>,
    /// When it was last read (epoch seconds).
    pub checked_at: i64,
    /// The last refresh failed: the state above is the last one known.
    pub stale: Option<String>,
}

/// The cache of source states, by source name.
#[derive(Debug, Default)]
pub struct SourceStates {
    by_name: RwLock<HashMap<String, Known>>,
}

impl SourceStates {
    pub fn get(&self, source: &str) -> Option<Known> {
        read(&self.by_name).get(source).cloned()
    }

    /// Records a fresh reading.
    pub fn set(&self, source: &str, state: SourceState, account: Option<String>, now: i64) {
        write(&self.by_name).insert(
            source.to_string(),
            Known {
                state,
                account,
                checked_at: now,
                stale: None,
            },
        );
    }

    /// Records a failed reading: the last known state stays, marked stale.
    pub fn set_error(&self, source: &str, error: String) {
        if let Some(k) = write(&self.by_name).get_mut(source) {
            k.stale = Some(error);
        }
    }

    /// Counts by state name, for metrics.
    pub fn counts(&self) -> HashMap<&'static str, usize> {
        let mut c = HashMap::new();
        for k in read(&self.by_name).values() {
            *c.entry(k.state.name()).or_default() += 1;
        }
        c
    }

    /// Whether an entry for `source` may be sent: None when it may go as
    /// usual, Some with the code and message otherwise. A source never read
    /// (no permission, EventBridge unreachable at start-up) is sent: the
    /// gateway only refuses what it knows to be lost.
    pub fn check(&self, source: &str) -> Option<InactiveSource> {
        // Called once per entry: an active source (the rule) is read under
        // the lock, with nothing cloned or allocated.
        let state = match &read(&self.by_name).get(source)?.state {
            SourceState::Active => return None,
            other => other.clone(),
        };
        let message = match &state {
            SourceState::Active => return None,
            SourceState::Pending { expires } => format!(
                "partner event source {source} is PENDING: the customer has not associated it with an event bus (or deleted that bus), so EventBridge would accept the event and never deliver it{}",
                expires
                    .map(|e| format!("; the source expires at {} unless associated", format_epoch(e)))
                    .unwrap_or_default()
            ),
            SourceState::Deleted => format!(
                "partner event source {source} is DELETED: EventBridge would accept the event and never deliver it"
            ),
            SourceState::NotFound => {
                return Some(InactiveSource {
                    code: codes::SOURCE_NOT_FOUND,
                    message: format!(
                        "partner event source {source} does not exist in EventBridge: create it (partner-events-gateway sources create) or fix the tenant directory"
                    ),
                })
            }
        };
        Some(InactiveSource {
            code: codes::SOURCE_NOT_ACTIVE,
            message,
        })
    }
}

/// An epoch second as an RFC 3339 UTC time.
pub fn format_epoch(secs: i64) -> String {
    match u64::try_from(secs) {
        Ok(s) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
        )
        .to_string(),
        Err(_) => secs.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_from_accounts() {
        assert_eq!(SourceState::from_accounts(&[]), SourceState::NotFound);
        assert_eq!(
            SourceState::from_accounts(&[("PENDING".into(), Some(5)), ("ACTIVE".into(), None)]),
            SourceState::Active
        );
        assert_eq!(
            SourceState::from_accounts(&[("DELETED".into(), None), ("PENDING".into(), Some(5))]),
            SourceState::Pending { expires: Some(5) }
        );
        assert_eq!(
            SourceState::from_accounts(&[("DELETED".into(), None)]),
            SourceState::Deleted
        );
    }

    #[test]
    fn checks() {
        let s = SourceStates::default();
        assert_eq!(s.check("aws.partner/a/b/c"), None, "never read: sent");
        s.set(
            "aws.partner/a/b/c",
            SourceState::Pending {
                expires: Some(1_800_000_000),
            },
            None,
            0,
        );
        let refused = s.check("aws.partner/a/b/c").unwrap();
        assert_eq!(refused.code, codes::SOURCE_NOT_ACTIVE);
        assert!(
            refused.message.contains("PENDING") && refused.message.contains("2027-01-15T08:00:00Z"),
            "{}",
            refused.message
        );
        s.set_error("aws.partner/a/b/c", "throttled".into());
        assert!(
            s.check("aws.partner/a/b/c").is_some(),
            "the last known state stays"
        );
        s.set("aws.partner/a/b/c", SourceState::Active, None, 1);
        assert_eq!(s.check("aws.partner/a/b/c"), None);
        s.set("aws.partner/x/y/z", SourceState::NotFound, None, 1);
        assert_eq!(
            s.check("aws.partner/x/y/z").unwrap().code,
            codes::SOURCE_NOT_FOUND
        );
    }
}
