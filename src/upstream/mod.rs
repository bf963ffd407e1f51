//! The upstream side: the [`Upstream`] trait the pipeline sends calls
//! through, the EventBridge adapter behind it ([`eventbridge`]), and retry
//! decisions ([`retry`]).
//!
//! The trait speaks domain types only, so the pipeline can be tested with a
//! scripted fake and the real path goes through the AWS SDK.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::domain::{
    entry::PreparedEntry,
    outcome::{codes, Outcome},
};

/// Which EventBridge the gateway talks to (`[upstream] kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamKind {
    /// The built-in emulator, started in-process (or the one at
    /// `endpoint_url`); requests are signed with dummy credentials.
    Emulator,
    /// AWS (or any endpoint at `endpoint_url`), with credentials from the
    /// standard AWS chain (environment, profile, web identity/IRSA, IMDS).
    Aws,
}

pub mod breaker;
pub mod eventbridge;
pub mod retry;

/// Sends one PutPartnerEvents call.
pub trait Upstream: Send + Sync + 'static {
    /// Sends `entries` (1 to 20, one source) to EventBridge in `region`.
    /// On success, returns exactly one outcome per entry, in order.
    fn put_partner_events<'a>(
        &'a self,
        region: &'a str,
        entries: &'a [PreparedEntry],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, CallError>>;
}

/// One account of a partner event source (ListPartnerEventSourceAccounts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceAccountInfo {
    pub account: String,
    /// ACTIVE, PENDING or DELETED.
    pub state: String,
    pub creation_time: Option<i64>,
    pub expiration_time: Option<i64>,
}

/// EventBridge's partner-side control plane: source lifecycle.
pub trait SourceAdmin: Send + Sync + 'static {
    /// The accounts of `source` in `region`; None when EventBridge does not
    /// know the source.
    fn list_source_accounts<'a>(
        &'a self,
        region: &'a str,
        source: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<SourceAccountInfo>>, SourceAdminError>>;

    /// Creates `name` for the customer `account`; returns its ARN.
    fn create_source<'a>(
        &'a self,
        region: &'a str,
        name: &'a str,
        account: &'a str,
    ) -> BoxFuture<'a, Result<String, SourceAdminError>>;
}

/// A failed control-plane call ([`SourceAdmin`]): the operation and what
/// EventBridge said. Safe to log and show (no credentials, no payloads).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{operation} failed: {}{}",
    code.as_deref().unwrap_or("no error code"),
    message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
)]
pub struct SourceAdminError {
    /// The EventBridge operation, e.g. `ListPartnerEventSourceAccounts`.
    pub operation: &'static str,
    /// EventBridge's error code, when the answer carried one.
    pub code: Option<String>,
    /// EventBridge's message, when it is worth showing.
    pub message: Option<String>,
}

/// How far a failed call got, which decides what its entries are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailureKind {
    /// Never reached EventBridge: the entries were not delivered.
    NotSent,
    /// EventBridge answered with an error: the entries were not accepted.
    Rejected,
    /// Sent, but no usable answer came back: the entries may or may not
    /// have been accepted.
    Unknown,
}

/// A call that failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub kind: CallFailureKind,
    /// EventBridge's error code (`ThrottlingException`, `InternalException`,
    /// ...) or one of the gateway's ([`codes::UPSTREAM_ERROR`], ...).
    pub code: String,
    /// Safe to show a caller: no payload, no credentials.
    pub message: String,
}

impl CallError {
    /// The code every entry of the failed call gets.
    pub fn entry_code(&self) -> &str {
        match self.kind {
            CallFailureKind::Unknown => codes::OUTCOME_UNKNOWN,
            _ => &self.code,
        }
    }
}

/// One result entry of a PutPartnerEvents answer, as it came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawResult {
    pub event_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// Turns an answer into one outcome per sent entry.
///
/// EventBridge answers index-aligned. An answer whose `Entries` does not
/// line up with what was sent (moto always answers `[]`) cannot be
/// attributed: every entry then gets [`codes::OUTCOME_UNKNOWN`], since the
/// call was accepted but nothing says which entry got which id; a result
/// with neither an id nor a code is treated the same way.
pub fn attribute_results(
    sent: usize,
    failed_entry_count: i32,
    results: Vec<RawResult>,
) -> Vec<Outcome> {
    if results.len() != sent {
        let message = format!(
            "EventBridge answered HTTP 200 with {} result entries for {sent} sent \
             (FailedEntryCount {failed_entry_count}); which entries were accepted is unknown, \
             and resending may duplicate events",
            results.len()
        );
        return vec![Outcome::failed(codes::OUTCOME_UNKNOWN, message); sent];
    }
    results
        .into_iter()
        .map(|r| match (r.event_id, r.error_code) {
            (_, Some(code)) if !code.is_empty() => Outcome::Failed {
                message: r.error_message.unwrap_or_default(),
                code,
            },
            (Some(id), _) if !id.is_empty() => Outcome::Accepted { event_id: id },
            _ => Outcome::failed(
                codes::OUTCOME_UNKNOWN,
                "EventBridge's answer for this entry had neither an event id nor an error code",
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_results_map_one_to_one() {
        let out = attribute_results(
            2,
            1,
            vec![
                RawResult {
                    event_id: Some("id-1".into()),
                    ..Default::default()
                },
                RawResult {
                    error_code: Some("ThrottlingException".into()),
                    error_message: Some("slow down".into()),
                    ..Default::default()
                },
            ],
        );
        assert_eq!(
            out[0],
            Outcome::Accepted {
                event_id: "id-1".into()
            }
        );
        assert_eq!(out[1], Outcome::failed("ThrottlingException", "slow down"));
    }

    #[test]
    fn misaligned_answer_is_outcome_unknown_for_every_entry() {
        let out = attribute_results(3, 0, vec![]);
        assert_eq!(out.len(), 3);
        assert!(out
            .iter()
            .all(|o| matches!(o, Outcome::Failed { code, .. } if code == codes::OUTCOME_UNKNOWN)));
    }
}
