//! Bad input from callers gets a clear error, per entry where possible, and
//! the gateway stays up (health answers after every case); beyond its
//! bounds it sheds load with RESOURCE_EXHAUSTED.

mod common;

use std::time::Duration;

use common::{entry, request, TestGateway};
use partner_events_gateway::proto::{partner_event_entry::Body, PartnerEventEntry};
use prost_types::Timestamp;
use tonic::{codegen::http::uri::PathAndQuery, Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;

async fn assert_serving(gw: &TestGateway) {
    assert_eq!(
        common::health(&gw.channel, "").await.unwrap(),
        ServingStatus::Serving
    );
}

#[tokio::test]
async fn every_kind_of_bad_entry_gets_its_own_clear_result() {
    let gw = TestGateway::start("").await;
    let deep = format!("{}1{}", "{\"a\":".repeat(1000), "}".repeat(1000));
    let huge_resources: Vec<String> = (0..200)
        .map(|i| format!("arn:aws:s3:::{i}-{}", "r".repeat(2000)))
        .collect();
    let cases: Vec<(PartnerEventEntry, &str, &str)> = vec![
        (entry("A", &deep), "MalformedDetail", "nested too deeply"),
        (entry("A", "{\"a\":1,}"), "MalformedDetail", "syntax"),
        (entry("A", "[1,2]"), "MalformedDetail", "JSON object"),
        (entry("A", ""), "InvalidArgument", "detail is required"),
        (
            PartnerEventEntry {
                body: None,
                ..entry("A", "{}")
            },
            "InvalidArgument",
            "detail is required",
        ),
        (
            entry(&"D".repeat(129), "{}"),
            "InvalidArgument",
            "detail_type",
        ),
        (
            PartnerEventEntry {
                resources: vec!["r".repeat(2049)],
                ..entry("A", "{}")
            },
            "InvalidArgument",
            "resources[0]",
        ),
        (
            PartnerEventEntry {
                resources: huge_resources,
                ..entry("A", "{}")
            },
            "EntryTooLarge",
            "size formula",
        ),
        (
            PartnerEventEntry {
                time: Some(Timestamp {
                    seconds: 1_704_164_645_000,
                    nanos: 0,
                }),
                ..entry("A", "{}")
            },
            "InvalidArgument",
            "years 1 to 9999",
        ),
        (
            PartnerEventEntry {
                time: Some(Timestamp {
                    seconds: 1,
                    nanos: -5,
                }),
                ..entry("A", "{}")
            },
            "InvalidArgument",
            "nanos",
        ),
        (
            PartnerEventEntry {
                body: Some(Body::DetailStruct(prost_types::Struct {
                    fields: [(
                        "x".to_string(),
                        prost_types::Value {
                            kind: Some(prost_types::value::Kind::NumberValue(f64::INFINITY)),
                        },
                    )]
                    .into(),
                })),
                ..entry("A", "")
            },
            "InvalidArgument",
            "NaN or an infinity",
        ),
    ];
    let n = cases.len();
    let mut entries: Vec<PartnerEventEntry> = cases.iter().map(|(e, _, _)| e.clone()).collect();
    entries.push(entry("Good", "{}"));
    let resp = gw.put("acme", entries).await;
    for (i, (_, code, words)) in cases.iter().enumerate() {
        let r = &resp.entries[i];
        assert_eq!(&r.error_code, code, "case {i}: {r:?}");
        assert!(
            r.error_message.contains(words),
            "case {i}: {}",
            r.error_message
        );
    }
    assert!(
        !resp.entries[n].event_id.is_empty(),
        "the good entry still went through"
    );
    assert_eq!(gw.emulator().events().len(), 1);
    assert_serving(&gw).await;
    gw.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_whole_and_the_server_stays_up() {
    let gw = TestGateway::start("[server]\nmax_message_bytes = 65536\n").await;
    // Thousands of entries.
    let err = gw
        .client
        .clone()
        .put_partner_events(request(
            "acme",
            (0..5000).map(|_| entry("A", "{}")).collect(),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::InvalidArgument | Code::OutOfRange),
        "{err:?}"
    );
    // An oversized message.
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100_000));
    let err = gw
        .client
        .clone()
        .put_partner_events(request("acme", vec![entry("A", &big)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    // An empty tenant.
    let err = gw
        .client
        .clone()
        .put_partner_events(request("", vec![entry("A", "{}")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_serving(&gw).await;

    // A string field that is not UTF-8: sent through a mirror message whose
    // detail_type is bytes, as a buggy client in another language could.
    #[derive(Clone, PartialEq, prost::Message)]
    struct RawEntry {
        #[prost(bytes = "vec", tag = "2")]
        detail_type: Vec<u8>,
        #[prost(string, tag = "3")]
        detail: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct RawRequest {
        #[prost(string, tag = "1")]
        tenant_id: String,
        #[prost(message, repeated, tag = "2")]
        entries: Vec<RawEntry>,
    }
    let mut grpc = tonic::client::Grpc::new(gw.channel.clone());
    grpc.ready().await.unwrap();
    let raw = RawRequest {
        tenant_id: "acme".into(),
        entries: vec![RawEntry {
            detail_type: vec![0xff, 0xfe, b'A'],
            detail: "{}".into(),
        }],
    };
    let err = grpc
        .unary::<_, RawRequest, _>(
            Request::new(raw),
            PathAndQuery::from_static("/partnerevents.v1.PartnerEvents/PutPartnerEvents"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    // The message does not decode, so no handler sees it: tonic-prost answers
    // INTERNAL, the code gRPC's status-code table gives a request proto that
    // cannot be parsed (INVALID_ARGUMENT is the service refusing a request
    // it could read).
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().to_lowercase().contains("decode"), "{err:?}");
    assert!(gw.emulator().calls().is_empty());
    assert_serving(&gw).await;
    gw.stop().await;
}

#[tokio::test]
async fn overload_sheds_with_resource_exhausted_and_health_still_answers() {
    let (gw, _emulator, proxy) = TestGateway::stallable(
        "[server]\nmax_entries_per_request = 10\nstream_window_entries = 10\nmax_in_flight_entries = 10\n",
    ).await;
    proxy.pause();
    // The first call takes every in-flight slot and waits on the stalled upstream.
    let first = {
        let mut client = gw.client.clone();
        tokio::spawn(async move {
            client
                .put_partner_events(request("acme", (0..10).map(|_| entry("A", "{}")).collect()))
                .await
        })
    };
    common::eventually("the bound is reached", || {
        gw.gateway.gauges().in_flight_entries == 10
    })
    .await;
    let mut second = Request::new(request("acme", vec![entry("A", "{}")]));
    second.set_timeout(Duration::from_millis(300));
    let err = gw
        .client
        .clone()
        .put_partner_events(second)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(tonic_types::StatusExt::get_details_retry_info(&err).is_some());
    assert_serving(&gw).await;
    proxy.resume();
    let first = first.await.unwrap().unwrap().into_inner();
    assert_eq!(first.failed_entry_count, 0);
    gw.stop().await;
}
