//! The emulator through the real AWS SDK over HTTP: what `aws-sdk-eventbridge`
//! sees for accepted entries, per-entry errors, validation failures and each
//! kind of injected fault.

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use aws_config::{retry::RetryConfig, BehaviorVersion, Region};
use aws_sdk_eventbridge::{
    config::Credentials,
    error::ProvideErrorMetadata,
    operation::{put_partner_events::PutPartnerEventsError, RequestId},
    primitives::DateTime,
    types::PutPartnerEventsRequestEntry,
    Client,
};
use partner_events_gateway::emulator::{
    Emulator, EmulatorConfig, EmulatorHandle, Fault, FaultRule, RecordedCall, RecordedEvent,
};

mod common;

use common::{post_emulator, record_all, RawAnswer};

const SOURCE: &str = "aws.partner/example.com/tenant-7/billing";

async fn emulator(config: EmulatorConfig) -> EmulatorHandle {
    logs();
    Emulator::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("emulator starts")
}

async fn client(handle: &EmulatorHandle, retry: RetryConfig) -> Client {
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(handle.endpoint_url())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(retry)
        .load()
        .await;
    Client::new(&shared)
}

/// The SDK's default retries, without waiting a second between attempts.
fn fast_retries() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(1))
}

fn entry(detail_type: &str, detail: &str) -> PutPartnerEventsRequestEntry {
    PutPartnerEventsRequestEntry::builder()
        .source(SOURCE)
        .detail_type(detail_type)
        .detail(detail)
        .build()
}

/// A call answered 200 with no fault, every entry accepted but the failed.
fn ok_call(entries: usize, size: usize, failed_entry_count: usize) -> RecordedCall {
    RecordedCall {
        entries,
        size,
        status: 200,
        error_type: None,
        failed_entry_count,
        accepted: entries - failed_entry_count,
        fault: None,
        entry_faults: 0,
        delay_ms: 0,
    }
}

/// A call refused whole with `status`, nothing accepted.
fn failed_call(
    entries: usize,
    size: usize,
    status: u16,
    error_type: Option<&str>,
    fault: Option<&str>,
) -> RecordedCall {
    RecordedCall {
        entries,
        size,
        status,
        error_type: error_type.map(Into::into),
        failed_entry_count: 0,
        accepted: 0,
        fault: fault.map(Into::into),
        entry_faults: 0,
        delay_ms: 0,
    }
}

fn assert_uuid_v4(id: &str) {
    let uuid = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id:?}: {e}"));
    assert_eq!(uuid.get_version_num(), 4, "{id}");
}

#[tokio::test]
async fn accepted_entries_get_ids_and_are_recorded() {
    let emu = emulator(record_all()).await;
    let client = client(&emu, RetryConfig::disabled()).await;
    let first = PutPartnerEventsRequestEntry::builder()
        .source(SOURCE)
        .detail_type("InvoicePaid")
        .detail(r#"{"invoice":"in_1"}"#)
        .resources("arn:aws:example:::invoice/in_1")
        .time(DateTime::from_secs(1_704_164_645))
        .build();
    let second = PutPartnerEventsRequestEntry::builder()
        .source(SOURCE)
        .detail_type("InvoiceVoided")
        .detail(r#"{"invoice":"in_2","why":"é"}"#)
        .time(DateTime::from_secs_f64(1_704_164_645.5))
        .build();
    let out = client
        .put_partner_events()
        .entries(first)
        .entries(second)
        .send()
        .await
        .expect("the call succeeds");

    assert_eq!(out.failed_entry_count(), 0);
    assert!(out.request_id().is_some(), "x-amzn-requestid is sent");
    let ids: Vec<String> = out
        .entries()
        .iter()
        .map(|e| {
            assert_eq!((e.error_code(), e.error_message()), (None, None));
            e.event_id().expect("an event id").to_string()
        })
        .collect();
    assert_eq!(ids.len(), 2);
    ids.iter().for_each(|id| assert_uuid_v4(id));
    assert_ne!(ids[0], ids[1]);

    assert_eq!(
        emu.events(),
        vec![
            RecordedEvent {
                event_id: ids[0].clone(),
                source: SOURCE.into(),
                detail_type: "InvoicePaid".into(),
                time: Some(1_704_164_645.0),
                resources: vec!["arn:aws:example:::invoice/in_1".into()],
                detail: r#"{"invoice":"in_1"}"#.into(),
            },
            RecordedEvent {
                event_id: ids[1].clone(),
                source: SOURCE.into(),
                detail_type: "InvoiceVoided".into(),
                time: Some(1_704_164_645.5),
                resources: vec![],
                detail: r#"{"invoice":"in_2","why":"é"}"#.into(),
            },
        ]
    );
    // (14 + 40 + 11 + 18 + 30) + (14 + 40 + 13 + 29, "é" being two bytes).
    assert_eq!(emu.calls(), vec![ok_call(2, 113 + 96, 0)]);

    emu.clear();
    assert!(emu.events().is_empty() && emu.calls().is_empty());
    emu.shutdown();
}

#[tokio::test]
async fn an_entry_with_invalid_json_detail_fails_alone_at_its_index() {
    let emu = emulator(record_all()).await;
    let client = client(&emu, RetryConfig::disabled()).await;
    let out = client
        .put_partner_events()
        .entries(entry("A", r#"{"n":1}"#))
        .entries(entry("B", r#"{"n":"#))
        .entries(entry("C", r#"{"n":3}"#))
        .send()
        .await
        .expect("a 200 with a failed entry");

    assert_eq!(out.failed_entry_count(), 1);
    let results = out.entries();
    assert_eq!(results.len(), 3);
    assert_eq!(results[1].event_id(), None);
    assert_eq!(results[1].error_code(), Some("MalformedDetail"));
    assert_eq!(results[1].error_message(), Some("Detail is malformed."));
    let held: Vec<(String, String)> = emu
        .events()
        .into_iter()
        .map(|e| (e.event_id, e.detail_type))
        .collect();
    assert_eq!(
        held,
        vec![
            (results[0].event_id().unwrap().to_string(), "A".to_string()),
            (results[2].event_id().unwrap().to_string(), "C".to_string()),
        ]
    );
    assert_eq!(emu.calls(), vec![ok_call(3, 3 * 41 + 7 + 5 + 7, 1)]);
}

#[tokio::test]
async fn twenty_one_entries_fail_the_call_with_validation_exception() {
    let emu = emulator(record_all()).await;
    // Default retries: a 400 must not be retried, so one call is recorded.
    let client = client(&emu, fast_retries()).await;
    let err = client
        .put_partner_events()
        .set_entries(Some((0..21).map(|_| entry("A", "{}")).collect()))
        .send()
        .await
        .expect_err("21 entries are refused");

    assert_eq!(err.code(), Some("ValidationException"));
    assert!(
        err.message()
            .unwrap()
            .ends_with("Member must have length less than or equal to 20"),
        "{:?}",
        err.message()
    );
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 400);
    assert!(err
        .as_service_error()
        .unwrap()
        .meta()
        .request_id()
        .is_some());
    assert!(emu.events().is_empty());
    assert_eq!(
        emu.calls(),
        vec![failed_call(
            21,
            21 * (40 + 1 + 2),
            400,
            Some("ValidationException"),
            None
        )]
    );

    // 20 is fine.
    let out = client
        .put_partner_events()
        .set_entries(Some((0..20).map(|_| entry("A", "{}")).collect()))
        .send()
        .await
        .unwrap();
    assert_eq!(out.entries().len(), 20);
}

#[tokio::test]
async fn the_call_size_limit_is_enforced_by_the_aws_formula() {
    // One entry of 40 + 1 + 2 bytes fits exactly; two do not.
    let emu = emulator(EmulatorConfig {
        max_call_bytes: 43,
        ..record_all()
    })
    .await;
    let client = client(&emu, RetryConfig::disabled()).await;
    client
        .put_partner_events()
        .entries(entry("A", "{}"))
        .send()
        .await
        .expect("a call of exactly the limit is accepted");
    let err = client
        .put_partner_events()
        .entries(entry("A", "{}"))
        .entries(entry("A", "{}"))
        .send()
        .await
        .expect_err("one byte over is refused");
    assert_eq!(err.code(), Some("ValidationException"));
    assert_eq!(
        err.message(),
        Some("Total size of the entries in the request is over the limit.")
    );
    let sizes: Vec<(usize, u16)> = emu.calls().iter().map(|c| (c.size, c.status)).collect();
    assert_eq!(sizes, vec![(43, 200), (86, 400)]);
    assert_eq!(emu.events().len(), 1);
}

#[tokio::test]
async fn an_entry_error_fault_with_times_one_fires_once() {
    let emu = emulator(EmulatorConfig {
        faults: vec![FaultRule {
            detail_type: "Flaky".into(),
            fault: Fault::EntryError {
                code: "ThrottlingException".into(),
                message: "Rate exceeded".into(),
            },
            times: Some(1),
        }],
        ..record_all()
    })
    .await;
    let client = client(&emu, RetryConfig::disabled()).await;
    let send = || {
        client
            .put_partner_events()
            .entries(entry("Flaky", "{}"))
            .entries(entry("Steady", "{}"))
            .send()
    };

    let out = send().await.unwrap();
    assert_eq!(out.failed_entry_count(), 1);
    assert_eq!(out.entries()[0].error_code(), Some("ThrottlingException"));
    assert_eq!(out.entries()[0].error_message(), Some("Rate exceeded"));
    assert_eq!(out.entries()[0].event_id(), None);
    assert!(out.entries()[1].event_id().is_some());

    let out = send().await.unwrap();
    assert_eq!(out.failed_entry_count(), 0);
    assert!(out.entries().iter().all(|e| e.event_id().is_some()));

    let types: Vec<String> = emu.events().into_iter().map(|e| e.detail_type).collect();
    assert_eq!(types, ["Steady", "Flaky", "Steady"]);
    let failed: Vec<usize> = emu.calls().iter().map(|c| c.failed_entry_count).collect();
    assert_eq!(failed, [1, 0]);
}

#[tokio::test]
async fn a_call_error_fault_reaches_the_sdk_as_its_modelled_error() {
    let emu = emulator(record_all()).await;
    emu.set_faults(vec![FaultRule {
        detail_type: "Boom".into(),
        fault: Fault::CallError {
            status: 500,
            error_type: "InternalException".into(),
            message: "oops".into(),
        },
        times: None,
    }]);
    let client = client(&emu, RetryConfig::disabled()).await;
    let err = client
        .put_partner_events()
        .entries(entry("Fine", "{}"))
        .entries(entry("Boom", "{}"))
        .send()
        .await
        .expect_err("the call fails whole");

    assert_eq!(err.code(), Some("InternalException"));
    assert_eq!(err.message(), Some("oops"));
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 500);
    assert!(matches!(
        err.into_service_error(),
        PutPartnerEventsError::InternalException(_)
    ));
    assert!(emu.events().is_empty(), "nothing of a failed call is kept");
    assert_eq!(
        emu.calls(),
        vec![failed_call(
            2,
            2 * (40 + 2) + 4 + 4,
            500,
            Some("InternalException"),
            Some("call_error")
        )]
    );
}

#[tokio::test]
async fn the_sdk_retries_a_500_call_error_by_itself() {
    let emu = emulator(EmulatorConfig {
        faults: vec![FaultRule {
            detail_type: "Boom".into(),
            fault: Fault::CallError {
                status: 500,
                error_type: "InternalException".into(),
                message: "oops".into(),
            },
            times: Some(2),
        }],
        ..record_all()
    })
    .await;
    let client = client(&emu, fast_retries()).await;
    let out = client
        .put_partner_events()
        .entries(entry("Boom", "{}"))
        .send()
        .await
        .expect("the third attempt succeeds");
    assert_eq!(out.failed_entry_count(), 0);
    let statuses: Vec<u16> = emu.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
    assert_eq!(emu.events().len(), 1);
}

#[tokio::test]
async fn a_call_html_fault_gives_an_error_without_a_code() {
    let emu = emulator(record_all()).await;
    emu.set_faults(vec![FaultRule {
        detail_type: "Html".into(),
        fault: Fault::CallHtml { status: 500 },
        times: None,
    }]);
    let client = client(&emu, RetryConfig::disabled()).await;
    let err = client
        .put_partner_events()
        .entries(entry("Html", "{}"))
        .send()
        .await
        .expect_err("an HTML page is an error");

    assert_eq!(err.code(), None);
    assert_eq!(err.message(), None);
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 500);
    // Neither modelled error: the SDK's "unhandled" kind, whose source is the
    // failure to parse the body as JSON.
    let service_error = err.into_service_error();
    assert!(
        !service_error.is_internal_exception() && !service_error.is_operation_disabled_exception(),
        "{service_error:?}"
    );
    let source = std::error::Error::source(&service_error).map(ToString::to_string);
    assert!(
        source
            .as_deref()
            .is_some_and(|s| s.contains("unexpected token '<'")),
        "{service_error:?}"
    );
    assert_eq!(
        emu.calls(),
        vec![failed_call(1, 40 + 4 + 2, 500, None, Some("call_html"))]
    );
}

#[tokio::test]
async fn an_empty_entries_fault_answers_like_moto() {
    let emu = emulator(record_all()).await;
    emu.set_faults(vec![FaultRule {
        detail_type: "Moto".into(),
        fault: Fault::EmptyEntries,
        times: None,
    }]);
    let client = client(&emu, RetryConfig::disabled()).await;
    let out = client
        .put_partner_events()
        .entries(entry("Moto", "{}"))
        .entries(entry("Other", "{}"))
        .send()
        .await
        .expect("a 200");
    assert_eq!(out.failed_entry_count(), 0);
    assert!(out.entries().is_empty());
    assert!(emu.events().is_empty());
    assert_eq!(
        emu.calls(),
        vec![RecordedCall {
            accepted: 0,
            fault: Some("empty_entries".into()),
            ..ok_call(2, 2 * 42 + 4 + 5, 0)
        }]
    );
}

#[tokio::test]
async fn other_operations_are_unknown() {
    let emu = emulator(record_all()).await;
    let client = client(&emu, RetryConfig::disabled()).await;
    let err = client.list_rules().send().await.expect_err("not emulated");
    assert_eq!(err.code(), Some("UnknownOperationException"));
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 400);
    assert!(
        emu.calls().is_empty(),
        "only PutPartnerEvents calls are recorded"
    );
}

#[tokio::test]
async fn accepted_events_are_appended_to_the_events_file() {
    let path = std::env::temp_dir().join(format!("emulator-wire-{}.jsonl", uuid::Uuid::new_v4()));
    let emu = emulator(EmulatorConfig {
        events_file: Some(path.clone()),
        ..record_all()
    })
    .await;
    let client = client(&emu, RetryConfig::disabled()).await;
    let timed = PutPartnerEventsRequestEntry::builder()
        .source(SOURCE)
        .detail_type("A")
        .detail(r#"{"n":1}"#)
        .resources("arn:x")
        .time(DateTime::from_secs(1_704_164_645))
        .build();
    client
        .put_partner_events()
        .entries(timed)
        .entries(entry("Bad", "nope"))
        .entries(entry("B", r#"{"n":2}"#))
        .send()
        .await
        .unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events = emu.events();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        lines[0],
        serde_json::json!({
            "event_id": events[0].event_id,
            "source": SOURCE,
            "detail_type": "A",
            "time": 1_704_164_645.0,
            "resources": ["arn:x"],
            "detail": r#"{"n":1}"#,
        })
    );
    assert_eq!(lines[1]["event_id"], events[1].event_id.as_str());
    assert_eq!(lines[1]["detail"], r#"{"n":2}"#);
    assert_eq!(lines[1]["time"], serde_json::Value::Null);
}

/// A `Write` that keeps what the log subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The logs of this whole test binary. A global subscriber, installed
/// before any emulator exists: with per-test (thread-local) subscribers,
/// tracing's per-callsite interest cache races between parallel tests and
/// sometimes drops an event.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("nothing else sets a global subscriber in this binary");
        captured
    })
}

/// The log lines that mention `needle`.
fn log_lines_with(needle: &str) -> Vec<String> {
    let bytes = logs().0.lock().unwrap().clone();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Sends one event to an emulator with `log_payloads` and returns its id.
async fn send_logged_event(log_payloads: bool) -> String {
    let emu = emulator(EmulatorConfig {
        log_payloads,
        ..record_all()
    })
    .await;
    let client = client(&emu, RetryConfig::disabled()).await;
    client
        .put_partner_events()
        .entries(entry("Logged", r#"{"card":"4242"}"#))
        .send()
        .await
        .unwrap();
    emu.events()[0].event_id.clone()
}

#[tokio::test]
async fn accepted_events_are_logged_with_the_detail_only_when_asked() {
    let id = send_logged_event(false).await;
    let lines = log_lines_with(&id);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains("event accepted"), "{line}");
    assert!(line.contains(&format!("event_id={id}")), "{line}");
    assert!(line.contains(&format!("source={SOURCE}")), "{line}");
    assert!(line.contains("detail_type=Logged"), "{line}");
    assert!(!line.contains("4242"), "{line}");

    let id = send_logged_event(true).await;
    let lines = log_lines_with(&id);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(r#"detail={"card":"4242"}"#),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn a_malformed_body_is_a_serialization_exception() {
    let emu = emulator(record_all()).await;
    let RawAnswer {
        status_line: status,
        headers,
        body,
    } = post_emulator(
        emu.local_addr(),
        "AWSEvents.PutPartnerEvents",
        r#"{"Entries":[{"Sou"#,
    )
    .await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert!(
        headers.contains("content-type: application/x-amz-json-1.1"),
        "{headers}"
    );
    assert!(
        headers.contains("x-amzn-errortype: serializationexception"),
        "{headers}"
    );
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["__type"], "SerializationException");
    assert_eq!(
        emu.calls(),
        vec![failed_call(0, 0, 400, Some("SerializationException"), None)]
    );

    let RawAnswer {
        status_line: status,
        body,
        ..
    } = post_emulator(emu.local_addr(), "", "{}").await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert!(
        body.contains(r#""__type":"UnknownOperationException""#),
        "{body}"
    );
    assert_eq!(emu.calls().len(), 1);
}
