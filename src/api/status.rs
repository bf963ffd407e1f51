//! Request-level errors and their one mapping to `tonic::Status`.
//!
//! Per-entry problems never become a status: they are results. A status is
//! for a request that cannot be taken at all.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::outcome::codes;

/// Why a whole request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Field violations, each `(field, description)`.
    #[error("invalid request: {}", .0.iter().map(|(f, d)| format!("{f}: {d}")).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<(String, String)>),
    #[error("unknown tenant `{0}`: it is not in the gateway's tenant directory")]
    UnknownTenant(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{scope} `{subject}` is over its entries-per-second limit; retry in {} ms", retry_after.as_millis())]
    RateLimited {
        scope: &'static str,
        subject: String,
        retry_after: std::time::Duration,
    },
}

impl RequestError {
    /// The gRPC code the unary call fails with.
    pub fn code(&self) -> Code {
        match self {
            Self::Invalid(_) => Code::InvalidArgument,
            Self::UnknownTenant(_) => Code::NotFound,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::RateLimited { .. } => Code::ResourceExhausted,
        }
    }

    /// The per-entry code a refused stream batch carries.
    pub fn batch_code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => codes::INVALID_BATCH,
            Self::UnknownTenant(_) => codes::UNKNOWN_TENANT,
            Self::PermissionDenied(_) => codes::PERMISSION_DENIED,
            Self::RateLimited { .. } => codes::RATE_LIMITED,
        }
    }
}

impl From<RequestError> for Status {
    fn from(e: RequestError) -> Self {
        let message = e.to_string();
        match e {
            RequestError::Invalid(violations) => {
                let mut details = ErrorDetails::new();
                for (field, description) in violations {
                    details.add_bad_request_violation(field, description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            RequestError::UnknownTenant(_) => Status::new(Code::NotFound, message),
            RequestError::PermissionDenied(_) => Status::new(Code::PermissionDenied, message),
            RequestError::RateLimited {
                scope,
                subject,
                retry_after,
            } => {
                let mut details = ErrorDetails::with_retry_info(Some(retry_after));
                details.add_quota_failure_violation(
                    format!("{scope}:{subject}"),
                    format!("{scope} entries-per-second limit"),
                );
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
        }
    }
}
