//! What each entry ends with, and the error codes a caller can see.
//!
//! Codes are strings because EventBridge's per-entry and per-call codes are
//! passed through as they came; the gateway's own codes are the constants
//! below. The README's error-code table lists them all.

/// The gateway's own codes (EventBridge's are passed through unchanged).
pub mod codes {
    /// A required field is missing or a value breaks an EventBridge rule
    /// (DetailType length, a Resources item's length, Time out of range):
    /// the same code EventBridge uses.
    pub const INVALID_ARGUMENT: &str = "InvalidArgument";
    /// Detail is not a JSON object: EventBridge's code.
    pub const MALFORMED_DETAIL: &str = "MalformedDetail";
    /// The entry alone is larger than the configured call-size limit.
    pub const ENTRY_TOO_LARGE: &str = "EntryTooLarge";
    /// `source_key` names none of the tenant's sources.
    pub const UNKNOWN_SOURCE_KEY: &str = "UnknownSourceKey";
    /// EventBridge may or may not have accepted the entry: its answer did
    /// not account for it (moto's empty `Entries`), or the call broke after
    /// it was sent. Resending may duplicate the event.
    pub const OUTCOME_UNKNOWN: &str = "OutcomeUnknown";
    /// The call failed whole with no error code (an HTML 500 page, a
    /// connection that could not be made).
    pub const UPSTREAM_ERROR: &str = "UpstreamError";
    /// The call could not be sent (connection refused, DNS, TLS): the entry
    /// was not delivered and is safe to resend.
    pub const UPSTREAM_UNAVAILABLE: &str = "UpstreamUnavailable";
    /// The caller's deadline left no time to send (or resend) the entry.
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    /// The gateway is shutting down and did not send the entry.
    pub const SHUTTING_DOWN: &str = "ShuttingDown";
    /// On a stream: the batch was refused as a whole (no tenant, too many
    /// entries); the response's `batch_error` says why.
    pub const INVALID_BATCH: &str = "InvalidBatch";
    /// On a stream: the batch's tenant is not in the tenant directory.
    pub const UNKNOWN_TENANT: &str = "UnknownTenant";
    /// On a stream: the caller may not write for the batch's tenant.
    pub const PERMISSION_DENIED: &str = "PermissionDenied";
    /// On a stream: the tenant or the caller is over its entries-per-second
    /// limit; `batch_error` says when to retry.
    pub const RATE_LIMITED: &str = "RateLimited";

    /// The region's circuit breaker is open: EventBridge there kept failing,
    /// so the entry was not sent; the message says when to retry.
    pub const REGION_UNAVAILABLE: &str = "RegionUnavailable";

    /// The entry's partner event source is not ACTIVE: EventBridge would
    /// accept the event and never deliver it. The message gives the state.
    pub const SOURCE_NOT_ACTIVE: &str = "SourceNotActive";
    /// The entry's partner event source does not exist in EventBridge.
    pub const SOURCE_NOT_FOUND: &str = "SourceNotFound";

    /// The entry's idempotency_key was used, within the idempotency window,
    /// for an event with another detail type, detail, resources or source.
    pub const IDEMPOTENCY_KEY_REUSED: &str = "IdempotencyKeyReused";
    /// An earlier entry with the same idempotency_key was still being sent
    /// when this one's deadline came: resend to get that entry's result.
    pub const IDEMPOTENCY_KEY_IN_FLIGHT: &str = "IdempotencyKeyInFlight";

    /// EventBridge's per-entry codes that are worth resending.
    pub const THROTTLING: &str = "ThrottlingException";
    pub const INTERNAL_FAILURE: &str = "InternalFailure";
}

/// How one entry ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// EventBridge accepted it and gave it this id.
    Accepted { event_id: String },
    /// It failed; `code` is one of EventBridge's or [`codes`].
    Failed { code: String, message: String },
}

impl Outcome {
    pub fn failed(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Failed {
            code: code.into(),
            message: message.into(),
        }
    }
    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted { .. })
    }
}

/// The result for one entry of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryResult {
    pub outcome: Outcome,
    /// How many times the entry was sent upstream.
    pub attempts: u32,
}

impl EntryResult {
    /// A result for an entry refused before sending.
    pub fn refused(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::failed(code, message),
            attempts: 0,
        }
    }
}

/// Whether an entry that ended with `code` is worth resending: EventBridge's
/// retryable per-entry codes, and whole-call failures that say nothing about
/// the entry itself (throttling, 5xx, no answer, not sent).
pub fn is_retryable_code(code: &str) -> bool {
    matches!(
        code,
        codes::THROTTLING
            | codes::INTERNAL_FAILURE
            | "InternalException"
            | "ServiceUnavailable"
            | codes::UPSTREAM_ERROR
            | codes::UPSTREAM_UNAVAILABLE
    )
}
