//! The AWS JSON 1.1 shapes the emulator reads and writes, and the reply type
//! that the HTTP layer turns into a response.

use serde::{Deserialize, Serialize};

/// The content type of every JSON request and answer.
pub const CONTENT_TYPE_JSON: &str = "application/x-amz-json-1.1";
/// The header naming the operation, `<service prefix>.<operation>`.
pub const TARGET_HEADER: &str = "x-amz-target";
/// The target of `PutPartnerEvents`.
pub const TARGET_PUT_PARTNER_EVENTS: &str = "AWSEvents.PutPartnerEvents";
/// The target of `CreatePartnerEventSource`.
pub const TARGET_CREATE_PARTNER_EVENT_SOURCE: &str = "AWSEvents.CreatePartnerEventSource";
/// The target of `DescribePartnerEventSource`.
pub const TARGET_DESCRIBE_PARTNER_EVENT_SOURCE: &str = "AWSEvents.DescribePartnerEventSource";
/// The target of `DeletePartnerEventSource`.
pub const TARGET_DELETE_PARTNER_EVENT_SOURCE: &str = "AWSEvents.DeletePartnerEventSource";
/// The target of `ListPartnerEventSourceAccounts`.
pub const TARGET_LIST_PARTNER_EVENT_SOURCE_ACCOUNTS: &str =
    "AWSEvents.ListPartnerEventSourceAccounts";
/// Emulator only: the customer creates an event bus for a source, `{"Name"}`.
pub const TARGET_CONTROL_ASSOCIATE_SOURCE: &str = "EmulatorControl.AssociateSource";
/// Emulator only: the customer deletes its event bus for a source, `{"Name"}`.
pub const TARGET_CONTROL_DELETE_EVENT_BUS: &str = "EmulatorControl.DeleteEventBus";
/// Emulator only: sets a source's state, `{"Name", "State"}`.
pub const TARGET_CONTROL_SET_SOURCE_STATE: &str = "EmulatorControl.SetSourceState";
/// The header carrying the SigV4 signature, whose credential scope names the
/// region.
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// The header the SDK reads an error code from first, before the body's
/// `__type`; the emulator sends both.
pub const ERROR_TYPE_HEADER: &str = "x-amzn-errortype";
/// The header the SDK reads a request id from.
pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";

/// The error type of a call whose parameters break a constraint.
pub const VALIDATION_EXCEPTION: &str = "ValidationException";
/// The error type of a call beyond the quota (HTTP 400). The SDK reads it
/// from `x-amzn-errortype` or `__type` as the error's `code()`.
pub const THROTTLING_EXCEPTION: &str = "ThrottlingException";
/// The error type of a body that is not the expected JSON.
pub const SERIALIZATION_EXCEPTION: &str = "SerializationException";
/// The error type of an `x-amz-target` the emulator does not implement.
pub const UNKNOWN_OPERATION_EXCEPTION: &str = "UnknownOperationException";
/// The error type of a name that names no source.
pub const RESOURCE_NOT_FOUND_EXCEPTION: &str = "ResourceNotFoundException";
/// The error type of creating a source whose name is in use.
pub const RESOURCE_ALREADY_EXISTS_EXCEPTION: &str = "ResourceAlreadyExistsException";
/// Emulator only: a control step the source's state does not allow.
pub const INVALID_STATE_EXCEPTION: &str = "InvalidStateException";

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

/// The body of `CreatePartnerEventSource` and `DeletePartnerEventSource`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NameAndAccount {
    pub name: Option<String>,
    pub account: Option<String>,
}

/// The body of `DescribePartnerEventSource` and of the `EmulatorControl`
/// targets (`State` for `SetSourceState` only).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NameOnly {
    pub name: Option<String>,
    pub state: Option<String>,
}

/// The body of `ListPartnerEventSourceAccounts`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAccountsRequest {
    pub event_source_name: Option<String>,
    pub next_token: Option<String>,
    pub limit: Option<i64>,
}

/// The answer to `CreatePartnerEventSource`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreatedSource {
    pub event_source_arn: String,
}

/// The answer to `DescribePartnerEventSource`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribedSource {
    pub arn: String,
    pub name: String,
}

/// The answer to `ListPartnerEventSourceAccounts`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SourceAccounts {
    pub partner_event_source_accounts: Vec<SourceAccount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// One item of [`SourceAccounts`]; times are epoch seconds (JSON numbers),
/// as the SDK reads them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SourceAccount {
    pub account: String,
    pub creation_time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<u64>,
    pub state: &'static str,
}

/// The answer to an `EmulatorControl` target.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ControlledSource {
    pub name: String,
    pub state: &'static str,
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
    /// HTTP 200 with this body (the other operations).
    Json(serde_json::Value),
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

    /// HTTP 200 with `body` serialized.
    pub fn json(body: &impl Serialize) -> Self {
        Self::Json(serde_json::to_value(body).unwrap_or_default())
    }

    pub fn html(status: u16) -> Self {
        Self::Html {
            status: error_status(status),
        }
    }

    /// The HTTP status this reply is sent with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Accepted(_) | Self::Json(_) => 200,
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
        assert_eq!(Reply::json(&serde_json::json!({})).status(), 200);
    }

    #[test]
    fn lifecycle_shapes_use_the_aws_field_names() {
        let list = SourceAccounts {
            partner_event_source_accounts: vec![SourceAccount {
                account: "123456789012".into(),
                creation_time: 1_700_000_000,
                expiration_time: Some(1_707_776_000),
                state: "PENDING",
            }],
            next_token: None,
        };
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            r#"{"PartnerEventSourceAccounts":[{"Account":"123456789012","CreationTime":1700000000,"ExpirationTime":1707776000,"State":"PENDING"}]}"#
        );
        let req: ListAccountsRequest =
            serde_json::from_str(r#"{"EventSourceName":"n","NextToken":"t","Limit":5}"#).unwrap();
        assert_eq!(
            (
                req.event_source_name.as_deref(),
                req.next_token.as_deref(),
                req.limit
            ),
            (Some("n"), Some("t"), Some(5))
        );
    }
}
