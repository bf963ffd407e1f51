//! Request-level errors and their one mapping to `tonic::Status`.
//!
//! Per-entry problems never become a status: they are results. A status is
//! for a request that cannot be taken at all.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Why a whole request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Field violations, each `(field, description)`.
    #[error("invalid request: {}", .0.iter().map(|(f, d)| format!("{f}: {d}")).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<(String, String)>),
    #[error("unknown tenant `{0}`: it is not in the gateway's tenant directory")]
    UnknownTenant(String),
}

impl RequestError {
    /// The gRPC code the unary call fails with.
    pub fn code(&self) -> Code {
        match self {
            Self::Invalid(_) => Code::InvalidArgument,
            Self::UnknownTenant(_) => Code::NotFound,
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
        }
    }
}
