//! PutPartnerEvents end to end: a generated tonic client -> the gateway ->
//! the AWS SDK over HTTP -> the built-in emulator.

mod common;

use common::{entry, request, TestGateway};
use partner_events_gateway::{
    emulator::{Fault, FaultRule},
    proto::{partner_event_entry::Body, PartnerEventEntry},
};
use prost_types::{value::Kind, Struct, Value};
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn forty_five_entries_with_two_invalid_make_three_calls() {
    let gw = TestGateway::start("").await;
    let mut entries: Vec<PartnerEventEntry> = (0..45)
        .map(|i| entry("InvoicePaid", &format!(r#"{{"invoice":"in_{i}"}}"#)))
        .collect();
    entries[7].body = Some(Body::Detail("{not json".into()));
    entries[30].detail_type = String::new();

    let resp = gw.put("acme", entries).await;

    assert_eq!(resp.batch_id, "b-1");
    assert_eq!(resp.sequence, 0);
    assert_eq!(resp.entries.len(), 45);
    assert_eq!(resp.failed_entry_count, 2);
    for (i, r) in resp.entries.iter().enumerate() {
        assert_eq!(r.index, i as u32);
        match i {
            7 => {
                assert_eq!(r.error_code, "MalformedDetail");
                assert!(r.event_id.is_empty());
                assert_eq!(r.attempts, 0);
            }
            30 => {
                assert_eq!(r.error_code, "InvalidArgument");
                assert!(
                    r.error_message.contains("detail_type"),
                    "{}",
                    r.error_message
                );
            }
            _ => {
                assert!(r.error_code.is_empty(), "entry {i}: {r:?}");
                assert!(!r.event_id.is_empty());
                assert_eq!(r.attempts, 1);
            }
        }
    }
    let calls = gw.emulator().calls();
    assert_eq!(
        calls.iter().map(|c| c.entries).collect::<Vec<_>>(),
        vec![20, 20, 3]
    );
    // What the caller was told is what EventBridge holds, in order.
    let events = gw.emulator().events();
    let told: Vec<&str> = resp
        .entries
        .iter()
        .filter(|r| !r.event_id.is_empty())
        .map(|r| r.event_id.as_str())
        .collect();
    let held: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(told, held);
    assert!(events
        .iter()
        .all(|e| e.source == "aws.partner/example.com/acme/billing"));
    assert_eq!(events[7].detail, r#"{"invoice":"in_8"}"#);
    gw.stop().await;
}

#[tokio::test]
async fn calls_are_cut_by_size() {
    // 10 entries of about 1 KB against a 4 KiB call limit: 3 per call.
    let gw = TestGateway::start("[upstream]\nmax_call_bytes = 4096\n").await;
    let detail = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000));
    let entries = (0..10).map(|_| entry("Big", &detail)).collect();
    let resp = gw.put("acme", entries).await;
    assert_eq!(resp.failed_entry_count, 0);
    let calls = gw.emulator().calls();
    assert_eq!(
        calls.iter().map(|c| c.entries).collect::<Vec<_>>(),
        vec![3, 3, 3, 1]
    );
    assert!(calls.iter().all(|c| c.size <= 4096), "{calls:?}");

    // An entry larger than a whole call is refused alone.
    let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000));
    let resp = gw
        .put("acme", vec![entry("Big", &huge), entry("Small", "{}")])
        .await;
    assert_eq!(resp.entries[0].error_code, "EntryTooLarge");
    assert!(resp.entries[1].error_code.is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn sources_and_regions_are_chosen_by_source_key() {
    let gw = TestGateway::start("").await;
    let mut audit = entry("Login", "{}");
    audit.source_key = "audit".into();
    let mut unknown = entry("Login", "{}");
    unknown.source_key = "nope".into();
    let resp = gw.put("acme", vec![entry("A", "{}"), audit, unknown]).await;
    assert!(resp.entries[0].error_code.is_empty());
    assert!(resp.entries[1].error_code.is_empty());
    assert_eq!(resp.entries[2].error_code, "UnknownSourceKey");
    assert!(
        resp.entries[2].error_message.contains("audit"),
        "{}",
        resp.entries[2].error_message
    );
    let sources = gw.event_sources();
    assert_eq!(
        sources,
        vec![
            "aws.partner/example.com/acme/audit",
            "aws.partner/example.com/acme/billing"
        ]
    );
    assert_eq!(gw.emulator().calls().len(), 2, "one call per source");
    gw.stop().await;
}

#[tokio::test]
async fn structured_detail_becomes_json_text() {
    let gw = TestGateway::start("").await;
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "amount".to_string(),
        Value {
            kind: Some(Kind::NumberValue(1234.0)),
        },
    );
    fields.insert(
        "currency".to_string(),
        Value {
            kind: Some(Kind::StringValue("EUR".into())),
        },
    );
    let e = PartnerEventEntry {
        body: Some(Body::DetailStruct(Struct { fields })),
        ..entry("InvoicePaid", "")
    };
    let resp = gw.put("acme", vec![e]).await;
    assert!(
        resp.entries[0].error_code.is_empty(),
        "{:?}",
        resp.entries[0]
    );
    assert_eq!(
        gw.emulator().events()[0].detail,
        r#"{"amount":1234,"currency":"EUR"}"#
    );
    gw.stop().await;
}

#[tokio::test]
async fn unknown_tenant_is_not_found() {
    let gw = TestGateway::start("").await;
    let err = gw
        .client
        .clone()
        .put_partner_events(request("globex", vec![entry("A", "{}")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("globex"), "{}", err.message());
    assert!(gw.emulator().calls().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn bad_requests_are_invalid_argument_with_field_violations() {
    let gw = TestGateway::start("[server]\nmax_entries_per_request = 30\n").await;
    let cases = [
        (request("acme", vec![]), vec!["entries"]),
        (request("", vec![entry("A", "{}")]), vec!["tenant_id"]),
        (
            request("acme", (0..31).map(|_| entry("A", "{}")).collect()),
            vec!["entries"],
        ),
        (request("", vec![]), vec!["tenant_id", "entries"]),
    ];
    for (req, fields) in cases {
        let err = gw.client.clone().put_partner_events(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let bad = err.get_details_bad_request().expect("BadRequest details");
        let got: Vec<&str> = bad
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(got, fields);
    }
    assert!(gw.emulator().calls().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_throttled_entry_is_resent_alone_and_succeeds() {
    let gw = TestGateway::start("").await;
    gw.emulator().set_faults(vec![FaultRule {
        detail_type: "Flaky".into(),
        fault: Fault::EntryError {
            code: "ThrottlingException".into(),
            message: "Rate exceeded".into(),
        },
        times: Some(1),
    }]);
    let entries = vec![entry("A", "{}"), entry("Flaky", "{}"), entry("B", "{}")];
    let resp = gw.put("acme", entries).await;
    assert_eq!(resp.failed_entry_count, 0, "{resp:?}");
    assert_eq!(
        resp.entries.iter().map(|e| e.attempts).collect::<Vec<_>>(),
        vec![1, 2, 1]
    );
    let calls = gw.emulator().calls();
    assert_eq!(
        calls.iter().map(|c| c.entries).collect::<Vec<_>>(),
        vec![3, 1],
        "only the throttled entry is resent"
    );
    assert_eq!(gw.emulator().events().len(), 3, "no duplicates");
    gw.stop().await;
}

#[tokio::test]
async fn a_final_entry_error_is_passed_through() {
    let gw = TestGateway::start("").await;
    gw.emulator().set_faults(vec![FaultRule {
        detail_type: "Denied".into(),
        fault: Fault::EntryError {
            code: "NotAuthorizedForSourceException".into(),
            message: "Not authorized for the source.".into(),
        },
        times: None,
    }]);
    let resp = gw
        .put("acme", vec![entry("Denied", "{}"), entry("A", "{}")])
        .await;
    assert_eq!(
        resp.entries[0].error_code,
        "NotAuthorizedForSourceException"
    );
    assert_eq!(
        resp.entries[0].error_message,
        "Not authorized for the source."
    );
    assert_eq!(resp.entries[0].attempts, 1);
    assert!(!resp.entries[1].event_id.is_empty());
    assert_eq!(
        gw.emulator().calls().len(),
        1,
        "a final error is not resent"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_call_failing_whole_fails_only_its_entries() {
    let gw = TestGateway::start(
        "[upstream]\nentry_max_attempts = 3\nretry_base_ms = 1\nretry_max_ms = 5\n",
    )
    .await;
    gw.emulator().set_faults(vec![FaultRule {
        detail_type: "Boom".into(),
        fault: Fault::CallError {
            status: 500,
            error_type: "InternalException".into(),
            message: "oops".into(),
        },
        times: None,
    }]);
    // Entry 0 goes to the billing source, entry 1 to the audit source: two calls.
    let mut audit = entry("Boom", "{}");
    audit.source_key = "audit".into();
    let resp = gw.put("acme", vec![entry("Fine", "{}"), audit]).await;
    assert!(!resp.entries[0].event_id.is_empty(), "{resp:?}");
    assert_eq!(resp.entries[1].error_code, "InternalException");
    assert_eq!(resp.failed_entry_count, 1);
    // The gateway resent the failing call's entry until its 3 attempts were
    // spent (the SDK itself makes one attempt: see sdk_max_attempts).
    assert_eq!(resp.entries[1].attempts, 3);
    assert!(resp.entries[1]
        .error_message
        .contains("gave up after 3 attempts"));
    let failed_calls = gw
        .emulator()
        .calls()
        .iter()
        .filter(|c| c.status != 200)
        .count();
    assert_eq!(failed_calls, 3);

    // An HTML error page carries no code.
    gw.emulator().set_faults(vec![FaultRule {
        detail_type: "Html".into(),
        fault: Fault::CallHtml { status: 500 },
        times: None,
    }]);
    let resp = gw.put("acme", vec![entry("Html", "{}")]).await;
    assert_eq!(resp.entries[0].error_code, "UpstreamError");
    gw.stop().await;
}

#[tokio::test]
async fn an_answer_without_entries_is_outcome_unknown() {
    let gw = TestGateway::start("").await;
    gw.emulator().set_faults(vec![FaultRule {
        detail_type: "Moto".into(),
        fault: Fault::EmptyEntries,
        times: None,
    }]);
    let resp = gw
        .put("acme", vec![entry("Moto", "{}"), entry("Moto", "{}")])
        .await;
    assert_eq!(resp.failed_entry_count, 2);
    for r in &resp.entries {
        assert_eq!(r.error_code, "OutcomeUnknown");
        assert!(r.error_message.contains("duplicate"), "{}", r.error_message);
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_unreachable_upstream_fails_each_entry_as_not_sent() {
    // Nothing listens on this port: bind one, note it, free it.
    let port = common::free_port();
    let cfg = format!("[upstream]\nkind = \"emulator\"\nendpoint_url = \"http://127.0.0.1:{port}\"\nsdk_max_attempts = 1\n");
    let gw = TestGateway::start(&cfg).await;
    let resp = gw.put("acme", vec![entry("A", "{}")]).await;
    assert_eq!(
        resp.entries[0].error_code, "UpstreamUnavailable",
        "{resp:?}"
    );
    gw.gateway.shutdown().await;
}
