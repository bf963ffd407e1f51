//! The AWS JSON 1.1 shapes the emulator reads and writes, and the reply type
//! that the HTTP layer turns into a response.

use serde::{Deserialize, Serialize};

/// The content type of every JSON request and answer.
pub const CONTENT_TYPE_JSON: &str = "application/x-amz-json-1.1";
/// The header naming the operation, `<service prefix>.<operation>`.
pub const TARGET_HEADER: &str = "x-amz-target";
/// The target of `PutPartnerEvents`.
pub const TARGET_PUT_PARTNER_EVENTS: &str = "AWSEvents.PutPartnerEvents";
/// The header the SDK reads an error code from first, before the body's
/// `__type`; the emulator sends both.
pub const ERROR_TYPE_HEADER: &str = "x-amzn-errortype";
/// The header the SDK reads a request id from.
pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";

/// The error type of a call whose parameters break a constraint.
pub const VALIDATION_EXCEPTION: &str = "ValidationException";
/// The error type of a body that is not the expected JSON.
pub const SERIALIZATION_EXCEPTION: &str = "SerializationException";
/// The error type of an `x-amz-target` the emulator does not implement.
pub const UNKNOWN_OPERATION_EXCEPTION: &str = "UnknownOperationException";

/// The body of a `PutPartnerEvents` request.
#[derive(Debug, Deserialize)]
pub struct PutPartnerEventsRequest {
    #[serde(rename = "Entries")]
    pub entries: Option<Vec<RequestEntry>>,
}

/// One request entry. Every field is optional on the wire: missing ones
/// fail the entry, not the parse.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestEntry {
    /// Epoch seconds; the SDK sends a JSON number, fractional when needed.
    pub time: Option<f64>,
    pub source: Option<String>,
    pub resources: Option<Vec<String>>,
    pub detail_type: Option<String>,
    pub detail: Option<String>,
}

/// The body of a successful (HTTP 200) answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutPartnerEventsResponse {
    pub failed_entry_count: usize,
    pub entries: Vec<ResultEntry>,
}

/// The result for the request entry at the same index.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ResultEntry {
    Accepted {
        #[serde(rename = "EventId")]
        event_id: String,
    },
    Failed {
        #[serde(rename = "ErrorCode")]
        error_code: String,
        #[serde(rename = "ErrorMessage")]
        error_message: String,
    },
}

/// The JSON body of an error answer.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    #[serde(rename = "__type")]
    pub error_type: &'a str,
    pub message: &'a str,
}

/// What the emulator answers to one request, before it becomes HTTP.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// HTTP 200 with a result per entry.
    Accepted(PutPartnerEventsResponse),
    /// An operation error: a JSON error body, status 400..=599.
    Error {
        status: u16,
        error_type: String,
        message: String,
    },
    /// An HTML error page and no JSON, as a proxy or moto may send.
    Html { status: u16 },
}

impl Reply {
    pub fn error(status: u16, error_type: &str, message: impl Into<String>) -> Self {
        Self::Error {
            status: error_status(status),
            error_type: error_type.to_string(),
            message: message.into(),
        }
    }

    pub fn html(status: u16) -> Self {
        Self::Html {
            status: error_status(status),
        }
    }

    /// The HTTP status this reply is sent with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Accepted(_) => 200,
            Self::Error { status, .. } | Self::Html { status } => *status,
        }
    }
}

/// An error answer must be a 4xx or 5xx for the SDK to treat it as one; a
/// fault configured with anything else is sent as 500.
fn error_status(status: u16) -> u16 {
    if (400..=599).contains(&status) {
        status
    } else {
        500
    }
}

/// The page sent by [`Reply::Html`].
pub const HTML_ERROR_PAGE: &str =
    "<!DOCTYPE html>\n<html><head><title>Internal Server Error</title></head>\
<body><h1>Internal Server Error</h1><p>The server encountered an error.</p></body></html>\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_reads_every_field_and_tolerates_missing_ones() {
        let body = br#"{"Entries":[{"Time":1704164645.5,"Source":"s","Resources":["r"],
            "DetailType":"t","Detail":"{}","Unknown":1},{}]}"#;
        let req: PutPartnerEventsRequest = serde_json::from_slice(body).unwrap();
        let entries = req.entries.unwrap();
        assert_eq!(entries[0].time, Some(1_704_164_645.5));
        assert_eq!(entries[0].source.as_deref(), Some("s"));
        assert_eq!(
            entries[0].resources.as_deref(),
            Some(&["r".to_string()][..])
        );
        assert_eq!(entries[0].detail_type.as_deref(), Some("t"));
        assert_eq!(entries[0].detail.as_deref(), Some("{}"));
        assert!(entries[1].source.is_none() && entries[1].time.is_none());
    }

    #[test]
    fn response_uses_the_aws_field_names() {
        let resp = PutPartnerEventsResponse {
            failed_entry_count: 1,
            entries: vec![
                ResultEntry::Accepted {
                    event_id: "id-1".into(),
                },
                ResultEntry::Failed {
                    error_code: "MalformedDetail".into(),
                    error_message: "Detail is malformed.".into(),
                },
            ],
        };
        assert_eq!(
            serde_json::to_string(&resp).unwrap(),
            r#"{"FailedEntryCount":1,"Entries":[{"EventId":"id-1"},{"ErrorCode":"MalformedDetail","ErrorMessage":"Detail is malformed."}]}"#
        );
    }

    #[test]
    fn error_statuses_stay_errors() {
        assert_eq!(Reply::error(503, "X", "m").status(), 503);
        assert_eq!(Reply::error(200, "X", "m").status(), 500);
        assert_eq!(Reply::html(302).status(), 500);
        assert_eq!(Reply::html(502).status(), 502);
    }
}
