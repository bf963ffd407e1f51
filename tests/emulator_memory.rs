//! A long run of the standalone emulator holds flat memory: the real binary
//! in `emulator` mode takes two phases of 100,000 events through the AWS
//! SDK, and its resident set (`VmRSS`) hardly grows from the first phase to
//! the second, because each record keeps only its last
//! `--max-recorded-events` items. Linux only (`/proc`).

mod common;

use std::process::Command;

use aws_config::{retry::RetryConfig, BehaviorVersion, Region};
use aws_sdk_eventbridge::{config::Credentials, types::PutPartnerEventsRequestEntry, Client};

use common::{free_port, vm_rss_kib, Spawned, BIN};

const SOURCE: &str = "aws.partner/example.com/tenant-7/billing";

/// Events per phase, sent in calls of [`ENTRIES_PER_CALL`].
const EVENTS_PER_PHASE: usize = 100_000;
const ENTRIES_PER_CALL: usize = 20;
/// Calls in flight at once.
const CONCURRENCY: usize = 8;
/// The bound the emulator runs with (the default, named on the command line).
const MAX_RECORDED_EVENTS: usize = 10_000;
/// What one accepted event costs in an unbounded record, measured in issue
/// 12 (the received entry and the call record come on top).
const BYTES_PER_RECORDED_EVENT: u64 = 430;

/// Sends `count` events with unique Details, `CONCURRENCY` calls at a time;
/// every entry must be accepted.
async fn send_phase(client: &Client, phase: usize, count: usize) {
    let calls = count / ENTRIES_PER_CALL;
    let mut workers = Vec::new();
    for worker in 0..CONCURRENCY {
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            for call in (worker..calls).step_by(CONCURRENCY) {
                let entries = (0..ENTRIES_PER_CALL)
                    .map(|i| {
                        // About the size of a real event (~250 bytes of Detail).
                        let detail = format!(
                            r#"{{"phase":{phase},"call":{call},"entry":{i},"pad":"{}"}}"#,
                            "x".repeat(200)
                        );
                        PutPartnerEventsRequestEntry::builder()
                            .source(SOURCE)
                            .detail_type("MemoryProbe")
                            .detail(detail)
                            .resources("arn:aws:example:::thing/1")
                            .build()
                    })
                    .collect();
                let out = client
                    .put_partner_events()
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .expect("the call succeeds");
                assert_eq!(out.failed_entry_count(), 0);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_of_the_standalone_emulator_holds_flat_memory() {
    let port = free_port();
    let mut command = Command::new(BIN);
    command
        .args([
            "emulator",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--max-recorded-events",
            &MAX_RECORDED_EVENTS.to_string(),
            // The load is far above EventBridge's quota: this test is about
            // the record, not throttling.
            "--quota-calls-per-second",
            "0",
        ])
        // The start-up line, but not one line per accepted event.
        .env(
            "RUST_LOG",
            "warn,partner_events_gateway=info,partner_events_gateway::emulator=warn",
        );
    let mut child = Spawned::start(command);
    let pid = child.pid();
    child.wait_for_line("EventBridge emulator listening").await;

    let shared = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(RetryConfig::disabled())
        .load()
        .await;
    let client = Client::new(&shared);

    let before = vm_rss_kib(pid) * 1024;
    send_phase(&client, 1, EVENTS_PER_PHASE).await;
    let after_first = vm_rss_kib(pid) * 1024;
    send_phase(&client, 2, EVENTS_PER_PHASE).await;
    let after_second = vm_rss_kib(pid) * 1024;

    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let growth = after_second.saturating_sub(after_first);
    let unbounded = EVENTS_PER_PHASE as u64 * BYTES_PER_RECORDED_EVENT;
    println!(
        "emulator VmRSS: {:.1} MiB at start, {:.1} MiB after {EVENTS_PER_PHASE} events, \
         {:.1} MiB after {}; growth over the second phase {:.1} MiB \
         (an unbounded record would add about {:.1} MiB); bound {MAX_RECORDED_EVENTS}",
        mib(before),
        mib(after_first),
        mib(after_second),
        2 * EVENTS_PER_PHASE,
        mib(growth),
        mib(unbounded),
    );
    assert!(
        growth < unbounded / 4,
        "the emulator grew {:.1} MiB over the second {EVENTS_PER_PHASE} events",
        mib(growth)
    );
}
