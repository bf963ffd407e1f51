//! StreamPartnerEvents end to end: coalescing across batches, per-batch
//! answers by sequence and index, bad batches, half-close, cancellation,
//! backpressure from a stalled upstream, and shutdown mid-stream.

mod common;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use common::{entry, eventually, open_stream, H2CreditProxy, TestGateway};
use partner_events_gateway::proto::{
    partner_events_client::PartnerEventsClient, PutPartnerEventsRequest, PutPartnerEventsResponse,
};
use tokio_stream::StreamExt;
use tonic::{transport::Channel, Code};

fn batch(tenant: &str, id: usize, entries: usize) -> PutPartnerEventsRequest {
    PutPartnerEventsRequest {
        tenant_id: tenant.into(),
        batch_id: format!("batch-{id}"),
        entries: (0..entries)
            .map(|i| entry("Tick", &format!(r#"{{"batch":{id},"i":{i}}}"#)))
            .collect(),
        delivery: 0,
    }
}

fn check_response(r: &PutPartnerEventsResponse, entries: usize) {
    assert_eq!(
        r.batch_id,
        format!("batch-{}", r.sequence),
        "batch_id echoes the request"
    );
    assert_eq!(r.entries.len(), entries);
    for (i, e) in r.entries.iter().enumerate() {
        assert_eq!(e.index, i as u32);
        assert!(e.error_code.is_empty() && !e.event_id.is_empty(), "{e:?}");
    }
}

#[tokio::test]
async fn a_thousand_one_entry_batches_travel_in_about_fifty_calls() {
    let gw = TestGateway::start("").await;
    let (tx, mut responses) = gw.open_stream(1000).await;
    for i in 0..1000 {
        tx.send(batch("acme", i, 1)).await.unwrap();
    }
    drop(tx); // half-close
    let mut seen = vec![false; 1000];
    while let Some(r) = responses.next().await {
        let r = r.unwrap();
        check_response(&r, 1);
        assert!(
            !std::mem::replace(&mut seen[r.sequence as usize], true),
            "sequence {} twice",
            r.sequence
        );
    }
    assert!(seen.iter().all(|s| *s), "every batch answered");
    let calls = gw.emulator().calls();
    assert_eq!(calls.iter().map(|c| c.entries).sum::<usize>(), 1000);
    assert!(
        (50..=55).contains(&calls.len()),
        "{} upstream calls for 1,000 entries",
        calls.len()
    );
    assert_eq!(gw.emulator().events().len(), 1000);
    gw.stop().await;
}

#[tokio::test]
async fn mixed_tenants_regions_and_a_bad_batch_in_one_stream() {
    let gw = TestGateway::start(&format!(
        "{}\n[tenants.initech]\ndefault_source = \"main\"\n[tenants.initech.sources.main]\nname = \"aws.partner/example.com/initech/main\"\nregion = \"ap-southeast-2\"\n",
        common::TENANTS
    ))
    .await;
    let (tx, mut responses) = gw.open_stream(16).await;
    let mut audit = batch("acme", 1, 2);
    for e in &mut audit.entries {
        e.source_key = "audit".into();
    }
    tx.send(batch("acme", 0, 3)).await.unwrap();
    tx.send(audit).await.unwrap();
    tx.send(batch("nobody", 2, 2)).await.unwrap(); // unknown tenant
    tx.send(batch("acme", 3, 0)).await.unwrap(); // no entries
    tx.send(batch("initech", 4, 4)).await.unwrap();
    drop(tx);
    let mut got: Vec<PutPartnerEventsResponse> = Vec::new();
    while let Some(r) = responses.next().await {
        got.push(r.expect("a bad batch does not end the stream"));
    }
    got.sort_by_key(|r| r.sequence);
    assert_eq!(
        got.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    check_response(&got[0], 3);
    check_response(&got[1], 2);
    check_response(&got[4], 4);
    let bad = &got[2];
    assert_eq!(
        bad.batch_error.as_ref().unwrap().code,
        Code::NotFound as i32
    );
    assert_eq!(bad.failed_entry_count, 2);
    assert!(bad.entries.iter().all(|e| e.error_code == "UnknownTenant"));
    let empty = &got[3];
    assert_eq!(
        empty.batch_error.as_ref().unwrap().code,
        Code::InvalidArgument as i32
    );
    assert!(empty.entries.is_empty());

    let mut sources = gw.event_sources();
    sources.dedup();
    assert_eq!(
        sources,
        vec![
            "aws.partner/example.com/acme/audit",
            "aws.partner/example.com/acme/billing",
            "aws.partner/example.com/initech/main"
        ]
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_stalled_upstream_stops_the_stream_being_read_until_it_recovers() {
    // Window of 100 entries; each batch is 100 entries of ~1 KB, so HTTP/2
    // flow control holds at most a few batches past the window.
    let (gw, emulator, proxy) = TestGateway::stallable(
        "[server]\nmax_entries_per_request = 100\nstream_window_entries = 100\nmax_in_flight_entries = 100\n",
    )
    .await;
    proxy.pause();
    // The client goes through a proxy that reads the HTTP/2 frames, to know
    // when the gateway's flow control holds it back.
    let credit = H2CreditProxy::start(gw.gateway.local_addr()).await;
    let channel = Channel::from_shared(credit.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, mut responses) = open_stream(&PartnerEventsClient::new(channel), 1).await;
    let queue = tx.downgrade();
    let sent = Arc::new(AtomicUsize::new(0));
    let pad = "x".repeat(1000);
    let producer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let mut b = batch("acme", i, 100);
                for e in &mut b.entries {
                    e.body = Some(
                        partner_events_gateway::proto::partner_event_entry::Body::Detail(format!(
                            r#"{{"pad":"{pad}"}}"#
                        )),
                    );
                }
                tx.send(b).await.unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    eventually("the window fills", || {
        gw.gateway.gauges().in_flight_entries == 100
    })
    .await;
    // Blocked, positively: the client has sent every byte of credit the
    // gateway gave it, so it cannot send more until the gateway reads, and
    // the producer's next batch waits behind a full queue.
    eventually("the client held back by flow control", || {
        credit.client_credit() == 0
            && queue.upgrade().is_some_and(|q| q.capacity() == 0)
            && !producer.is_finished()
    })
    .await;
    let blocked_at = sent.load(Ordering::SeqCst);
    assert!(
        blocked_at < 15,
        "the client pushed {blocked_at} of 40 batches into a stalled gateway"
    );
    assert_eq!(
        gw.gateway.gauges().in_flight_entries,
        100,
        "the gateway never buffers past its bound"
    );
    // And the gateway stopped reading: the batch in flight and the one
    // waiting for room, no more (a gateway reading on would grant credit).
    let text = common::scrape(gw.gateway.metrics_addr().unwrap()).await;
    let read = common::sample(
        &text,
        r#"grpc_server_msg_received_total{grpc_type="bidi_stream",grpc_service="partnerevents.v1.PartnerEvents",grpc_method="StreamPartnerEvents"}"#,
    );
    assert!(
        read.is_some_and(|n| n <= 2.0),
        "{read:?} batches read\n{text}"
    );

    proxy.resume();
    producer.await.unwrap();
    let mut answered = 0;
    while answered < 40 {
        let r = responses.next().await.unwrap().unwrap();
        assert_eq!(r.failed_entry_count, 0);
        answered += 1;
    }
    assert_eq!(emulator.events().len(), 4000);
    gw.stop().await;
}

#[tokio::test]
async fn cancelling_a_stream_frees_its_entries_and_the_stream() {
    let (gw, _emulator, proxy) = TestGateway::stallable("").await;
    proxy.pause();
    let (tx, responses) = gw.open_stream(16).await;
    for i in 0..5 {
        tx.send(batch("acme", i, 10)).await.unwrap();
    }
    eventually("all 50 entries in flight", || {
        gw.gateway.gauges().in_flight_entries == 50
    })
    .await;
    assert_eq!(gw.gateway.gauges().open_streams, 1);
    drop(responses); // the client cancels
    drop(tx);
    eventually("gauges back to zero", || {
        let g = gw.gateway.gauges();
        g.in_flight_entries == 0 && g.open_streams == 0
    })
    .await;
    proxy.resume();
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_mid_stream_answers_every_batch_read_then_ends_unavailable() {
    let (gw, emulator, proxy) = TestGateway::stallable("").await;
    proxy.pause();
    let (tx, mut responses) = gw.open_stream(16).await;
    for i in 0..8 {
        tx.send(batch("acme", i, 5)).await.unwrap();
    }
    eventually("all 8 batches read", || {
        gw.gateway.gauges().in_flight_entries == 40
    })
    .await;
    let TestGateway { gateway, .. } = gw;
    let stopping = tokio::spawn(gateway.shutdown());
    proxy.resume();
    let mut answered = 0;
    let end = loop {
        match responses.next().await {
            Some(Ok(r)) => {
                check_response(&r, 5);
                answered += 1;
            }
            Some(Err(status)) => break Some(status),
            None => break None,
        }
    };
    assert_eq!(answered, 8);
    let status = end.expect("the stream ends with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(stopping.await.unwrap(), "drained within the grace period");
    assert_eq!(emulator.events().len(), 40);
    drop(tx);
}
