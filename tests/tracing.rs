//! Traces through the gateway, received by an OTLP trace receiver of the
//! test's own (a tonic server of the collector's trace service): a batch's
//! span continues the caller's W3C trace (`traceparent` in the metadata),
//! an EventBridge call's span links to the span of every batch it carries
//! (and is the child of the one when it carries one batch's only), a
//! DURABLE entry's delivery links back to the batch that queued it, and a
//! caller's "not sampled" is followed.

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{entry, eventually_async, TestGateway};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
    common::v1::any_value::Value,
    trace::v1::Span,
};
use partner_events_gateway::proto::{DeliveryMode, PartnerEventEntry, PutPartnerEventsRequest};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// What the gateway exported, with the service name it gave.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for rs in request.into_inner().resource_spans {
            if let Some(resource) = rs.resource {
                for kv in resource.attributes {
                    if kv.key == "service.name" {
                        if let Some(Value::StringValue(s)) = kv.value.and_then(|v| v.value) {
                            self.services.lock().unwrap().push(s);
                        }
                    }
                }
            }
            for ss in rs.scope_spans {
                self.spans.lock().unwrap().extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    async fn start() -> (Self, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Self::default();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(receiver.clone()))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (receiver, addr)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

async fn traced_gateway() -> (TestGateway, Receiver) {
    let (receiver, addr) = Receiver::start().await;
    let gw = TestGateway::start(&format!(
        "[tracing]\notlp_endpoint = \"http://{addr}\"\nexport_delay_ms = 50\nservice_name = \"gateway-under-test\"\n"
    ))
    .await;
    (gw, receiver)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value)
}

/// A request carrying `traceparent` (`sampled`: its flag).
fn traced(
    req: PutPartnerEventsRequest,
    trace_id: &str,
    span_id: &str,
    sampled: bool,
) -> tonic::Request<PutPartnerEventsRequest> {
    let mut r = tonic::Request::new(req);
    r.metadata_mut().insert(
        "traceparent",
        format!(
            "00-{trace_id}-{span_id}-{}",
            if sampled { "01" } else { "00" }
        )
        .parse()
        .unwrap(),
    );
    r.metadata_mut()
        .insert("tracestate", "vendor=caller".parse().unwrap());
    r
}

fn batch(entries: Vec<PartnerEventEntry>, delivery: DeliveryMode) -> PutPartnerEventsRequest {
    PutPartnerEventsRequest {
        tenant_id: "acme".into(),
        entries,
        batch_id: String::new(),
        delivery: delivery as i32,
    }
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", fastrand::u8(..)))
        .collect()
}

/// The batch span of `trace_id` (waiting for it to be exported).
async fn batch_span(receiver: &Receiver, trace_id: &str) -> Span {
    eventually_async("the batch span is exported", || async {
        receiver
            .spans()
            .into_iter()
            .find(|s| hex(&s.trace_id) == trace_id && s.name == "PartnerEvents/batch")
    })
    .await
}

/// The call spans that link to `span`.
fn calls_linking(receiver: &Receiver, span: &Span) -> Vec<Span> {
    receiver
        .spans()
        .into_iter()
        .filter(|s| s.name == "EventBridge/PutPartnerEvents")
        .filter(|s| {
            s.links
                .iter()
                .any(|l| l.trace_id == span.trace_id && l.span_id == span.span_id)
        })
        .collect()
}

#[tokio::test]
async fn a_batch_continues_the_callers_trace_and_its_call_links_to_it() {
    let (gw, receiver) = traced_gateway().await;
    let (trace_id, parent) = (random_hex(16), random_hex(8));
    let req = traced(
        batch(
            vec![entry("Traced", r#"{"n":1}"#), entry("Traced", r#"{"n":2}"#)],
            DeliveryMode::Sync,
        ),
        &trace_id,
        &parent,
        true,
    );
    let answer = gw.client.clone().put_partner_events(req).await.unwrap();
    assert_eq!(answer.into_inner().failed_entry_count, 0);

    let span = batch_span(&receiver, &trace_id).await;
    assert_eq!(
        hex(&span.parent_span_id),
        parent,
        "the caller's span is its parent"
    );
    assert_eq!(
        span.trace_state, "vendor=caller",
        "the caller's tracestate goes on"
    );
    assert_eq!(
        attr(&span, "partner_events.tenant"),
        Some(Value::StringValue("acme".into()))
    );
    assert_eq!(
        attr(&span, "partner_events.entries"),
        Some(Value::IntValue(2))
    );
    let calls = eventually_async("the call span is exported", || async {
        let calls = calls_linking(&receiver, &span);
        (!calls.is_empty()).then_some(calls)
    })
    .await;
    assert_eq!(calls.len(), 1, "both entries in one call");
    let call = &calls[0];
    assert_eq!(
        call.trace_id, span.trace_id,
        "one batch's call is in its trace"
    );
    assert_eq!(
        call.parent_span_id, span.span_id,
        "and the child of its span"
    );
    assert_eq!(
        attr(call, "cloud.region"),
        Some(Value::StringValue("us-east-1".into()))
    );
    assert_eq!(
        attr(call, "partner_events.entries"),
        Some(Value::IntValue(2))
    );
    assert_eq!(
        attr(call, "partner_events.outcome"),
        Some(Value::StringValue("ok".into()))
    );
    for s in [&span, call] {
        for kv in &s.attributes {
            let text = format!("{:?}", kv.value);
            assert!(
                !text.contains("\"n\""),
                "no payload in span attributes: {kv:?}"
            );
        }
    }
    assert!(receiver
        .services
        .lock()
        .unwrap()
        .iter()
        .all(|s| s == "gateway-under-test"));
    gw.stop().await;
}

#[tokio::test]
async fn a_call_carrying_many_batches_links_to_each() {
    let (gw, receiver) = traced_gateway().await;
    // Five 1-entry batches at once, each its own trace: the lane packs them
    // into one call (the tests' linger is 50 ms).
    let traces: Vec<(String, String)> = (0..5).map(|_| (random_hex(16), random_hex(8))).collect();
    futures::future::join_all(traces.iter().enumerate().map(|(i, (t, s))| {
        let mut client = gw.client.clone();
        let req = traced(
            batch(
                vec![entry("Shared", &format!(r#"{{"n":{i}}}"#))],
                DeliveryMode::Sync,
            ),
            t,
            s,
            true,
        );
        async move { client.put_partner_events(req).await.unwrap() }
    }))
    .await;
    let mut spans = Vec::new();
    for (t, _) in &traces {
        spans.push(batch_span(&receiver, t).await);
    }
    let shared = eventually_async("a call linking several batches", || async {
        receiver
            .spans()
            .into_iter()
            .filter(|s| s.name == "EventBridge/PutPartnerEvents" && s.links.len() > 1)
            .max_by_key(|s| s.links.len())
    })
    .await;
    assert!(
        shared.parent_span_id.is_empty(),
        "a call of many batches is a root"
    );
    assert_eq!(
        attr(&shared, "partner_events.batches"),
        Some(Value::IntValue(shared.links.len() as i64))
    );
    // Every batch's entry went in a call that links to its span.
    for span in &spans {
        assert!(
            !calls_linking(&receiver, span).is_empty(),
            "no call links to batch span {}",
            hex(&span.span_id)
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_durable_entrys_delivery_links_back_to_the_batch_that_queued_it() {
    let (gw, receiver) = traced_gateway().await;
    let (trace_id, parent) = (random_hex(16), random_hex(8));
    let req = traced(
        batch(vec![entry("Queued", r#"{"n":1}"#)], DeliveryMode::Durable),
        &trace_id,
        &parent,
        true,
    );
    let answer = gw.client.clone().put_partner_events(req).await.unwrap();
    assert_eq!(answer.into_inner().entries[0].receipt_id.len(), 32);
    let span = batch_span(&receiver, &trace_id).await;
    assert_eq!(
        attr(&span, "partner_events.delivery"),
        Some(Value::StringValue("DURABLE".into()))
    );
    let calls = eventually_async("the delivery's call span", || async {
        let calls = calls_linking(&receiver, &span);
        (!calls.is_empty()).then_some(calls)
    })
    .await;
    assert_eq!(calls[0].trace_id, span.trace_id);
    gw.stop().await;
}

#[tokio::test]
async fn a_callers_not_sampled_is_followed() {
    let (gw, receiver) = traced_gateway().await;
    let unsampled = random_hex(16);
    let req = traced(
        batch(vec![entry("Unsampled", r#"{"n":1}"#)], DeliveryMode::Sync),
        &unsampled,
        &random_hex(8),
        false,
    );
    gw.client.clone().put_partner_events(req).await.unwrap();
    // A sampled one after it: once its spans are in, the first's would be.
    let sampled = random_hex(16);
    let req = traced(
        batch(vec![entry("Sampled", r#"{"n":1}"#)], DeliveryMode::Sync),
        &sampled,
        &random_hex(8),
        true,
    );
    gw.client.clone().put_partner_events(req).await.unwrap();
    let span = batch_span(&receiver, &sampled).await;
    eventually_async("the sampled call span", || async {
        !calls_linking(&receiver, &span).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        receiver
            .spans()
            .iter()
            .all(|s| hex(&s.trace_id) != unsampled),
        "nothing of the unsampled trace"
    );
    // And a caller with no trace context gets a trace of its own.
    let before = receiver.spans().len();
    gw.put("acme", vec![entry("Untraced", r#"{"n":1}"#)]).await;
    eventually_async("a root batch span", || async {
        receiver.spans()[before..]
            .iter()
            .any(|s| s.name == "PartnerEvents/batch" && s.parent_span_id.is_empty())
    })
    .await;
    gw.stop().await;
}
