//! Operations: metrics scraped over HTTP, upstream pacing, per-tenant
//! limits, and reloads (in place, and from the watched file) under a live
//! stream.

mod common;

use std::time::{Duration, Instant};

use common::{entry, eventually, eventually_async_within, request, sample, scrape, TestGateway};
use partner_events_gateway::{config::Config, server::watch_config};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn metrics_are_scraped_with_the_expected_names() {
    let gw = TestGateway::start("").await;
    let bad = entry("A", "{");
    gw.client
        .clone()
        .put_partner_events(request("acme", vec![entry("A", "{}"), bad]))
        .await
        .unwrap();
    let _ = gw
        .client
        .clone()
        .put_partner_events(request("nobody", vec![entry("A", "{}")]))
        .await;
    let text = scrape(gw.gateway.metrics_addr().unwrap()).await;
    for want in [
        r#"grpc_server_started_total{grpc_type="unary",grpc_service="partnerevents.v1.PartnerEvents",grpc_method="PutPartnerEvents"} 2"#,
        r#"grpc_server_handled_total{grpc_type="unary",grpc_service="partnerevents.v1.PartnerEvents",grpc_method="PutPartnerEvents",grpc_code="OK"} 1"#,
        r#"grpc_server_handled_total{grpc_type="unary",grpc_service="partnerevents.v1.PartnerEvents",grpc_method="PutPartnerEvents",grpc_code="NotFound"} 1"#,
        "grpc_server_handling_seconds_bucket",
        r#"partner_events_entries_total{code="ok",tenant=""} 1"#,
        r#"partner_events_entries_total{code="MalformedDetail",tenant=""} 1"#,
        r#"partner_events_upstream_calls_total{region="us-east-1",outcome="ok"} 1"#,
        "partner_events_upstream_call_seconds_bucket",
        "partner_events_upstream_call_entries_sum 1",
        "partner_events_in_flight_entries 0",
        "partner_events_open_streams 0",
    ] {
        assert!(text.contains(want), "missing {want}\n{text}");
    }
    assert!(!text.contains("\"{}\""), "no payload in metrics");
    gw.stop().await;
}

/// The value of the sample `grpc_server_{family}{labels}` in `text`, 0
/// when absent. `labels` is `type,service,method` and, for handled, a code.
fn grpc_sample(text: &str, family: &str, labels: &str) -> u64 {
    let mut parts = labels.split(',');
    let (t, s, m) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let code = parts
        .next()
        .map(|c| format!(r#",grpc_code="{c}""#))
        .unwrap_or_default();
    let prefix = format!(
        r#"grpc_server_{family}{{grpc_type="{t}",grpc_service="{s}",grpc_method="{m}"{code}}} "#
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn every_service_is_counted_by_code_and_a_stream_the_client_ends_counts_once() {
    use tonic_reflection::pb::v1alpha;

    let (gw, _emulator, proxy) = TestGateway::stallable("").await;
    common::health(&gw.channel, "").await.unwrap();
    let err = common::health(&gw.channel, "no.such.Service")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let mut reflection =
        v1alpha::server_reflection_client::ServerReflectionClient::new(gw.channel.clone());
    let list = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let answers: Vec<_> = reflection
        .server_reflection_info(tokio_stream::iter(vec![list]))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(answers.len(), 1);
    assert!(answers[0].is_ok());

    // A path no service serves: counted under one fixed label.
    let mut grpc = tonic::client::Grpc::new(gw.channel.clone());
    grpc.ready().await.unwrap();
    let err = grpc
        .unary::<_, partner_events_gateway::proto::PutPartnerEventsResponse, _>(
            tonic::Request::new(request("acme", vec![])),
            tonic::codegen::http::uri::PathAndQuery::from_static("/made.up.Service/Method"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    // A stream the client half-closes after a refused batch and an
    // answered one: OK.
    let (tx, mut answers) = gw.open_stream(1).await;
    tx.send(request("nobody", vec![entry("A", "{}")]))
        .await
        .unwrap();
    let refused = answers.next().await.unwrap().unwrap();
    assert_eq!(refused.batch_error.unwrap().code, Code::NotFound as i32);
    tx.send(request("acme", vec![entry("A", "{}")]))
        .await
        .unwrap();
    assert_eq!(answers.next().await.unwrap().unwrap().failed_entry_count, 0);
    drop(tx);
    assert!(answers.next().await.is_none());
    // A stream the client drops while its batch waits on a stalled
    // upstream: it never gets a status, so CANCELLED.
    proxy.pause();
    let (tx, answers) = gw.open_stream(1).await;
    tx.send(request("acme", vec![entry("A", "{}")]))
        .await
        .unwrap();
    eventually("the batch in flight", || {
        gw.gateway.gauges().in_flight_entries == 1
    })
    .await;
    drop(answers);
    drop(tx);
    eventually("the stream over", || {
        let g = gw.gateway.gauges();
        g.open_streams == 0 && g.in_flight_entries == 0
    })
    .await;
    proxy.resume();

    let text = scrape(gw.gateway.metrics_addr().unwrap()).await;
    let health = "unary,grpc.health.v1.Health,Check";
    let reflect = "bidi_stream,grpc.reflection.v1alpha.ServerReflection,ServerReflectionInfo";
    let unknown = "unknown,unknown,unknown";
    let stream = "bidi_stream,partnerevents.v1.PartnerEvents,StreamPartnerEvents";
    for (family, labels, want) in [
        ("started_total", health.to_string(), 2),
        ("handled_total", format!("{health},OK"), 1),
        ("handled_total", format!("{health},NotFound"), 1),
        ("handling_seconds_count", health.to_string(), 2),
        ("started_total", reflect.to_string(), 1),
        ("handled_total", format!("{reflect},OK"), 1),
        ("started_total", unknown.to_string(), 1),
        ("handled_total", format!("{unknown},Unimplemented"), 1),
        ("started_total", stream.to_string(), 2),
        ("handled_total", format!("{stream},OK"), 1),
        ("handled_total", format!("{stream},Canceled"), 1),
        ("handling_seconds_count", stream.to_string(), 2),
        ("msg_received_total", stream.to_string(), 3),
        // The refused batch's answer is a message sent too.
        ("msg_sent_total", stream.to_string(), 2),
    ] {
        assert_eq!(
            grpc_sample(&text, family, &labels),
            want,
            "grpc_server_{family} {labels}\n{text}"
        );
    }
    assert!(!text.contains("made.up"), "no label from a caller's path");
    gw.stop().await;
}

#[tokio::test]
async fn upstream_calls_are_paced_per_region() {
    // One entry per call (the size limit), 40 calls at 50/s with a burst of 1.
    let gw = TestGateway::start(
        "[upstream]\nmax_call_bytes = 1024\nlinger_ms = 0\n[quotas]\nupstream_calls_per_second = 50.0\nupstream_burst = 1\n",
    )
    .await;
    let detail = format!(r#"{{"pad":"{}"}}"#, "x".repeat(600));
    let started = Instant::now();
    let resp = gw
        .put("acme", (0..40).map(|_| entry("P", &detail)).collect())
        .await;
    let took = started.elapsed();
    assert_eq!(resp.failed_entry_count, 0);
    assert_eq!(gw.emulator().calls().len(), 40);
    let rate = 39.0 / took.as_secs_f64();
    assert!(
        rate <= 52.0,
        "{rate:.1} calls/s over a 50/s pace ({took:?})"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_tenant_over_its_limit_gets_resource_exhausted_with_a_retry_delay() {
    let gw =
        TestGateway::start("[quotas]\ntenant_entries_per_second = 10.0\nburst_seconds = 1.0\n")
            .await;
    let ok = gw
        .client
        .clone()
        .put_partner_events(request("acme", (0..10).map(|_| entry("A", "{}")).collect()))
        .await
        .unwrap();
    assert_eq!(ok.into_inner().failed_entry_count, 0);
    let err = gw
        .client
        .clone()
        .put_partner_events(request("acme", (0..5).map(|_| entry("A", "{}")).collect()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let delay = err
        .get_details_retry_info()
        .expect("RetryInfo")
        .retry_delay
        .unwrap();
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(1),
        "{delay:?}"
    );
    assert_eq!(gw.emulator().events().len(), 10);
    gw.stop().await;
}

const INITECH: &str = "\n[tenants.initech]\ndefault_source = \"main\"\n[tenants.initech.sources.main]\nname = \"aws.partner/example.com/initech/main\"\nregion = \"us-west-2\"\n";

#[tokio::test]
async fn reload_under_a_live_stream() {
    let gw = TestGateway::start("").await;
    let (tx, mut responses) = gw.open_stream(8).await;
    tx.send(request("initech", vec![entry("A", "{}")]))
        .await
        .unwrap();
    let before = responses.next().await.unwrap().unwrap();
    assert_eq!(before.batch_error.unwrap().code, Code::NotFound as i32);

    let config = Config::from_toml(&format!("{}{INITECH}", common::TENANTS), "reload").unwrap();
    gw.gateway.reload(&config);

    tx.send(request("initech", vec![entry("A", "{}")]))
        .await
        .unwrap();
    let after = responses.next().await.unwrap().unwrap();
    assert_eq!(after.failed_entry_count, 0, "{after:?}");
    assert_eq!(after.sequence, 1, "the same stream went on");
    drop(tx);
    assert!(responses.next().await.is_none());
    gw.stop().await;
}

/// The sample of `partner_events_config_reloads_total` for `result`.
async fn reloads(gw: &TestGateway, result: &str) -> f64 {
    let text = scrape(gw.gateway.metrics_addr().unwrap()).await;
    let name = format!("partner_events_config_reloads_total{{result=\"{result}\"}}");
    sample(&text, &name).unwrap_or_else(|| panic!("no {name}:\n{text}"))
}

#[tokio::test]
async fn the_watched_file_reloads_and_a_bad_file_is_refused() {
    let gw = TestGateway::start("").await;
    let dir = std::env::temp_dir().join(format!("peg-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, common::TENANTS).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(watch_config(
        path.clone(),
        Some(Duration::from_millis(10)),
        gw.gateway.reloader(),
        stop_rx,
    ));
    let initech_accepted = || {
        let mut client = gw.client.clone();
        async move {
            client
                .put_partner_events(request("initech", vec![entry("A", "{}")]))
                .await
                .is_ok()
        }
    };
    assert_eq!(reloads(&gw, "ok").await, 0.0);
    assert_eq!(reloads(&gw, "refused").await, 0.0);
    // A broken file: refused (the watcher counts it), acme still served.
    std::fs::write(&path, "[tenants.initech]\ndefault_source = \"nope\"\n").unwrap();
    eventually_async_within(
        "the broken file refused",
        Duration::from_secs(10),
        || async { reloads(&gw, "refused").await == 1.0 },
    )
    .await;
    assert_eq!(reloads(&gw, "ok").await, 0.0, "nothing was put in force");
    assert!(gw
        .client
        .clone()
        .put_partner_events(request("acme", vec![entry("A", "{}")]))
        .await
        .is_ok());
    assert!(!initech_accepted().await);
    // A good file with a new tenant: in force within a few polls.
    std::fs::write(&path, format!("{}{INITECH}", common::TENANTS)).unwrap();
    eventually_async_within(
        "the new tenant never arrived",
        Duration::from_secs(10),
        || async { reloads(&gw, "ok").await == 1.0 },
    )
    .await;
    assert!(initech_accepted().await, "counted, so in force");
    assert_eq!(reloads(&gw, "refused").await, 1.0);
    stop_tx.send(true).unwrap();
    watcher.await.unwrap();
    eventually("nothing in flight", || {
        gw.gateway.gauges().in_flight_entries == 0
    })
    .await;
    std::fs::remove_dir_all(dir).unwrap();
    gw.stop().await;
}

#[tokio::test]
async fn a_caller_over_its_own_limit_gets_resource_exhausted() {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(b"exporter-token"));
    let gw = TestGateway::start(&format!(
        "[auth]\nmode = \"required\"\n[[auth.tokens]]\ncaller = \"exporter\"\nsha256 = \"{hash}\"\n[auth.callers.\"exporter\"]\ntenants = [\"*\"]\nentries_per_second = 5.0\n{}",
        common::TENANTS
    ))
    .await;
    let call = |n: usize| {
        let mut r =
            tonic::Request::new(request("acme", (0..n).map(|_| entry("A", "{}")).collect()));
        r.metadata_mut()
            .insert("authorization", "Bearer exporter-token".parse().unwrap());
        let mut client = gw.client.clone();
        async move { client.put_partner_events(r).await }
    };
    assert!(call(5).await.is_ok());
    let err = call(1).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("caller `exporter`"),
        "{}",
        err.message()
    );
    gw.stop().await;
}
