//! Every way the API refuses a call or a stream batch, and its one mapping
//! to a gRPC `Status` and to the per-entry code of a refused stream batch.
//!
//! Per-entry problems never become a status: they are results. An
//! [`ApiError`] is for a request (or a stream batch) that cannot be taken at
//! all. [`ApiError::codes`] is the table deciding both codes of each
//! variant; `From<ApiError> for Status` is the one place a `Status` and its
//! details (BadRequest, RetryInfo, ErrorInfo, QuotaFailure) are built.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    auth::AuthError,
    domain::{delivery::codes as delivery_codes, outcome::codes},
};

/// The delay a caller is told to wait after [`ApiError::Overloaded`]: the
/// in-flight bound frees up as calls finish, which takes about a call's time.
const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a call, or a batch on a stream, was refused whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The caller could not be identified (no identity where one is
    /// required, or a bearer token that is not valid).
    #[error("{0}")]
    Unauthenticated(AuthError),
    /// The caller may not write for the request's tenant.
    #[error("{0}")]
    PermissionDenied(AuthError),
    /// Field violations, each `(field, description)`.
    #[error("invalid request: {}", .0.iter().map(|(f, d)| format!("{f}: {d}")).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<(String, String)>),
    /// The tenant is not in the tenant directory.
    #[error("unknown tenant `{0}`: it is not in the gateway's tenant directory")]
    UnknownTenant(String),
    /// A tenant or caller over its entries-per-second limit.
    #[error("{scope} `{subject}` is over its entries-per-second limit; retry in {} ms", retry_after.as_millis())]
    RateLimited {
        /// `"tenant"` or `"caller"`.
        scope: &'static str,
        subject: String,
        retry_after: Duration,
    },
    /// Every region the request needs has its circuit breaker open.
    #[error("EventBridge keeps failing in the region(s) this request needs; calls there are paused: retry in {} ms", retry_after.as_millis())]
    RegionUnavailable { retry_after: Duration },
    /// The call waited its whole deadline for room under the gateway-wide
    /// in-flight bound.
    #[error("the gateway already has {max_in_flight} entries in flight and no room freed up before the deadline; retry later")]
    Overloaded { max_in_flight: usize },
    /// The call waited its whole deadline for room under its tenant's share
    /// of the in-flight bound: this tenant already has that many entries in
    /// flight (other tenants are unaffected).
    #[error("tenant `{tenant}` already has {limit} entries in flight (its share of the gateway's bound) and none was answered before the deadline; retry later")]
    TenantOverloaded { tenant: String, limit: usize },
    /// The gateway started shutting down before the call was admitted.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// DURABLE: the queue is at `durable.max_bytes` or `max_entries`;
    /// nothing was queued.
    #[error("the durable queue is full (durable.{limit} = {value}); nothing of this batch was queued: retry in {} ms, or send it SYNC", retry_after.as_millis())]
    QueueFull {
        limit: &'static str,
        value: u64,
        retry_after: Duration,
    },
    /// DURABLE: the queue could not write the batch; nothing was queued.
    #[error("the durable queue could not write this batch, nothing of it was queued: {0}")]
    QueueUnavailable(String),
    /// How a stream ends when the gateway shuts down under it.
    #[error("the gateway is shutting down: every batch it read on this stream was answered; send the rest on a new stream")]
    StreamDrained,
}

impl ApiError {
    /// The one table: the gRPC code the call fails with, and the per-entry
    /// code each entry of a refused stream batch carries.
    ///
    /// Streams identify their caller when they open and wait for room
    /// instead of shedding, so `Unauthenticated`, `RegionUnavailable`,
    /// `Overloaded` and the shutdown variants do not refuse stream batches
    /// today; their batch codes are the nearest existing ones, for when a
    /// later stage (the scheduler, the durable queue) refuses batches so.
    pub fn codes(&self) -> (Code, &'static str) {
        match self {
            Self::Unauthenticated(_) => (Code::Unauthenticated, codes::PERMISSION_DENIED),
            Self::PermissionDenied(_) => (Code::PermissionDenied, codes::PERMISSION_DENIED),
            Self::Invalid(_) => (Code::InvalidArgument, codes::INVALID_BATCH),
            Self::UnknownTenant(_) => (Code::NotFound, codes::UNKNOWN_TENANT),
            Self::RateLimited { .. } => (Code::ResourceExhausted, codes::RATE_LIMITED),
            Self::RegionUnavailable { .. } => (Code::Unavailable, codes::REGION_UNAVAILABLE),
            Self::Overloaded { .. } | Self::TenantOverloaded { .. } => {
                (Code::ResourceExhausted, codes::RATE_LIMITED)
            }
            Self::ShuttingDown | Self::StreamDrained => (Code::Unavailable, codes::SHUTTING_DOWN),
            Self::QueueFull { .. } => (Code::ResourceExhausted, delivery_codes::QUEUE_FULL),
            Self::QueueUnavailable(_) => (Code::Unavailable, delivery_codes::QUEUE_UNAVAILABLE),
        }
    }

    /// The gRPC code the call fails with (see [`ApiError::codes`]).
    pub fn code(&self) -> Code {
        self.codes().0
    }

    /// The per-entry code a refused stream batch carries (see [`ApiError::codes`]).
    pub fn batch_code(&self) -> &'static str {
        self.codes().1
    }

    /// The machine-readable details a client gets beside the message.
    fn details(&self) -> Option<ErrorDetails> {
        match self {
            Self::Invalid(violations) => {
                let mut details = ErrorDetails::new();
                for (field, description) in violations {
                    details.add_bad_request_violation(field.clone(), description.clone());
                }
                Some(details)
            }
            Self::RateLimited {
                scope,
                subject,
                retry_after,
            } => {
                let mut details = ErrorDetails::with_retry_info(Some(*retry_after));
                details.add_quota_failure_violation(
                    format!("{scope}:{subject}"),
                    format!("{scope} entries-per-second limit"),
                );
                Some(details)
            }
            Self::RegionUnavailable { retry_after } => {
                Some(ErrorDetails::with_retry_info(Some(*retry_after)))
            }
            Self::QueueFull {
                limit,
                value,
                retry_after,
            } => {
                let mut details = ErrorDetails::with_retry_info(Some(*retry_after));
                details.set_error_info(
                    "DURABLE_QUEUE_FULL",
                    "partnerevents.v1",
                    [(limit.to_string(), value.to_string())],
                );
                Some(details)
            }
            Self::Overloaded { max_in_flight } => {
                let mut details = ErrorDetails::with_retry_info(Some(OVERLOADED_RETRY_AFTER));
                details.set_error_info(
                    "IN_FLIGHT_LIMIT",
                    "partnerevents.v1",
                    [(
                        "max_in_flight_entries".to_string(),
                        max_in_flight.to_string(),
                    )],
                );
                Some(details)
            }
            Self::TenantOverloaded { tenant, limit } => {
                let mut details = ErrorDetails::with_retry_info(Some(OVERLOADED_RETRY_AFTER));
                details.set_error_info(
                    "TENANT_IN_FLIGHT_LIMIT",
                    "partnerevents.v1",
                    [
                        ("tenant".to_string(), tenant.clone()),
                        ("max_in_flight_entries".to_string(), limit.to_string()),
                    ],
                );
                Some(details)
            }
            Self::Unauthenticated(_)
            | Self::PermissionDenied(_)
            | Self::UnknownTenant(_)
            | Self::ShuttingDown
            | Self::QueueUnavailable(_)
            | Self::StreamDrained => None,
        }
    }
}

/// A caller that cannot be identified is unauthenticated; one that is
/// identified but not allowed the tenant is denied.
impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated | AuthError::BadToken => Self::Unauthenticated(e),
            AuthError::Denied { .. } | AuthError::NotOperator { .. } => Self::PermissionDenied(e),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = e.code();
        let message = e.to_string();
        match e.details() {
            Some(details) => Status::with_error_details(code, message, details),
            None => Status::new(code, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_their_details() {
        let s = Status::from(ApiError::Invalid(vec![(
            "tenant_id".into(),
            "required".into(),
        )]));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "invalid request: tenant_id: required");
        let bad = s.get_details_bad_request().expect("BadRequest");
        assert_eq!(bad.field_violations[0].field, "tenant_id");

        let s = Status::from(ApiError::Overloaded { max_in_flight: 10 });
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.get_details_retry_info().unwrap().retry_delay,
            Some(OVERLOADED_RETRY_AFTER)
        );
        let info = s.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "IN_FLIGHT_LIMIT");
        assert_eq!(info.metadata["max_in_flight_entries"], "10");

        let s = Status::from(ApiError::RateLimited {
            scope: "tenant",
            subject: "acme".into(),
            retry_after: Duration::from_millis(250),
        });
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.get_details_quota_failure().is_some());
        assert_eq!(
            s.message(),
            "tenant `acme` is over its entries-per-second limit; retry in 250 ms"
        );

        let s = Status::from(ApiError::ShuttingDown);
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.details().is_empty());
    }

    #[test]
    fn auth_errors_map_by_kind() {
        assert_eq!(
            ApiError::from(AuthError::BadToken).code(),
            Code::Unauthenticated
        );
        let denied = ApiError::from(AuthError::Denied {
            caller: "c".into(),
            tenant: "t".into(),
        });
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert_eq!(denied.batch_code(), codes::PERMISSION_DENIED);
    }
}
