//! Partner event source lifecycle through a real client: events for an
//! ACTIVE source are delivered; for a PENDING, DELETED or unknown source they
//! are refused and nothing is sent; a source deactivated under an open
//! stream is refused within a refresh period; send_and_flag sends and flags;
//! and the `sources` commands against the emulator.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{entry, eventually_async, free_port, record_all, request, TestGateway, BIN};
use partner_events_gateway::emulator::{Emulator, EmulatorConfig, SourceState};
use tokio_stream::StreamExt;

const PENDING_SOURCE: &str = "aws.partner/example.com/latecomer/events";

fn config(extra: &str) -> String {
    format!(
        r#"
[sources]
refresh_ms = 100
{extra}
[emulator]
sources = [{{ name = "{PENDING_SOURCE}", account = "111122223333", state = "PENDING" }}]
{tenants}
[tenants.latecomer]
default_source = "events"
[tenants.latecomer.sources.events]
name = "{PENDING_SOURCE}"
region = "us-east-1"
"#,
        tenants = common::TENANTS
    )
}

#[tokio::test]
async fn active_sources_deliver_and_pending_ones_are_refused_before_sending() {
    let gw = TestGateway::start(&config("")).await;
    let ok = gw.put("acme", vec![entry("A", "{}")]).await;
    assert!(ok.entries[0].error_code.is_empty(), "{:?}", ok.entries[0]);

    let refused = gw
        .put("latecomer", vec![entry("A", "{}"), entry("B", "{}")])
        .await;
    assert_eq!(refused.failed_entry_count, 2);
    for r in &refused.entries {
        assert_eq!(r.error_code, "SourceNotActive");
        assert!(
            r.error_message.contains("PENDING") && r.error_message.contains("expires at"),
            "{}",
            r.error_message
        );
        assert_eq!(r.attempts, 0);
    }
    assert_eq!(
        gw.emulator().calls().len(),
        1,
        "only the ACTIVE source's call went out"
    );
    assert!(
        gw.emulator().undelivered().is_empty(),
        "nothing was lost upstream"
    );

    // The customer associates the source: within a refresh period the
    // gateway knows it ACTIVE, and then it delivers.
    gw.emulator().associate(PENDING_SOURCE).unwrap();
    let changed = Instant::now();
    wait_for_states(&gw, 3, 0).await;
    let noticed = changed.elapsed();
    assert!(
        noticed < Duration::from_secs(5),
        "the association was noticed after {noticed:?}"
    );
    let r = gw.put("latecomer", vec![entry("A", "{}")]).await;
    assert!(r.entries[0].error_code.is_empty(), "{:?}", r.entries[0]);
    gw.stop().await;
}

/// Waits until the gateway's `partner_events_sources` gauges count
/// `active` ACTIVE and `pending` PENDING sources: what it last read from
/// EventBridge, and what it admits by.
async fn wait_for_states(gw: &TestGateway, active: u32, pending: u32) {
    let addr = gw.gateway.metrics_addr().expect("metrics on");
    eventually_async(
        &format!("{active} ACTIVE and {pending} PENDING sources"),
        || async {
            let text = common::scrape(addr).await;
            let count = |state: &str| {
                common::sample(
                    &text,
                    &format!("partner_events_sources{{state=\"{state}\"}}"),
                )
            };
            count("ACTIVE") == Some(active.into()) && count("PENDING") == Some(pending.into())
        },
    )
    .await;
}

#[tokio::test]
async fn a_source_deactivated_under_an_open_stream_is_refused_within_a_refresh_period() {
    let gw = TestGateway::start(&config("")).await;
    let (tx, mut responses) = gw.open_stream(4).await;
    tx.send(request("acme", vec![entry("A", "{}")]))
        .await
        .unwrap();
    assert!(responses.next().await.unwrap().unwrap().entries[0]
        .error_code
        .is_empty());

    // The customer deletes its event bus: the source goes back to PENDING.
    gw.emulator()
        .delete_bus("aws.partner/example.com/acme/billing")
        .unwrap();
    let changed = Instant::now();
    wait_for_states(&gw, 1, 2).await;
    let refused_after = changed.elapsed();
    // One refresh period (100 ms), plus the pacing of the reads and slack.
    // Batches sent inside that window did reach EventBridge undelivered:
    // the refresh period is the bound on that loss.
    assert!(
        refused_after < Duration::from_millis(2_000),
        "{refused_after:?}"
    );
    // Known PENDING: the open stream's next batch is refused.
    tx.send(request("acme", vec![entry("A", "{}")]))
        .await
        .unwrap();
    let r = responses.next().await.unwrap().unwrap();
    assert_eq!(r.entries[0].error_code, "SourceNotActive", "{r:?}");
    drop(tx);
    gw.stop().await;
}

#[tokio::test]
async fn deleted_and_unknown_sources_are_refused_with_their_codes() {
    // An emulator of our own that knows only the billing source (DELETED):
    // the audit source does not exist in EventBridge at all.
    let emulator = Emulator::spawn(
        "127.0.0.1:0".parse().unwrap(),
        EmulatorConfig {
            sources: vec![partner_events_gateway::emulator::SeedSource::new(
                "aws.partner/example.com/acme/billing",
                "111122223333",
                SourceState::Deleted,
            )],
            ..record_all()
        },
    )
    .await
    .unwrap();
    let gw = TestGateway::start(&format!(
        "[upstream]\nendpoint_url = \"{}\"\n",
        emulator.endpoint_url()
    ))
    .await;
    let mut audit = entry("A", "{}");
    audit.source_key = "audit".into();
    let r = gw.put("acme", vec![entry("A", "{}"), audit]).await;
    assert_eq!(r.entries[0].error_code, "SourceNotActive");
    assert!(r.entries[0].error_message.contains("DELETED"));
    assert_eq!(r.entries[1].error_code, "SourceNotFound");
    assert!(emulator.calls().is_empty(), "nothing sent");
    gw.stop().await;
}

#[tokio::test]
async fn send_and_flag_sends_and_warns() {
    let gw = TestGateway::start(&config("on_inactive = \"send_and_flag\"")).await;
    let r = gw.put("latecomer", vec![entry("A", "{}")]).await;
    let e = &r.entries[0];
    assert!(!e.event_id.is_empty() && e.error_code.is_empty(), "{e:?}");
    assert!(e.warning.starts_with("SourceNotActive: "), "{e:?}");
    assert_eq!(
        gw.emulator().undelivered().len(),
        1,
        "sent, and EventBridge did not deliver it"
    );
    gw.stop().await;
}

// The commands run as child processes and block this test's thread while
// the in-process emulator answers them: it needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_list_and_create_against_the_emulator() {
    let gw = TestGateway::start(&config("")).await;
    let dir = std::env::temp_dir().join(format!("peg-sources-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "[upstream]\nendpoint_url = \"{}\"\n[sources]\npartner_name = \"example.com\"\n{}\n[tenants.latecomer]\ndefault_source = \"events\"\n[tenants.latecomer.sources.events]\nname = \"{PENDING_SOURCE}\"\nregion = \"us-east-1\"\n",
            gw.emulator().endpoint_url(),
            common::TENANTS
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed: serde_json::Value =
        serde_json::from_str(&run(&["sources", "list", "--json"])).unwrap();
    let row = |v: &serde_json::Value, source: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["source"] == source)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        row(&listed, "aws.partner/example.com/acme/billing")["state"],
        "ACTIVE"
    );
    let late = row(&listed, PENDING_SOURCE);
    assert_eq!(late["state"], "PENDING");
    assert_eq!(late["account"], "111122223333");
    assert!(late["expires"].is_string());
    let table = run(&["sources", "list"]);
    assert!(
        table.starts_with("TENANT") && table.contains(PENDING_SOURCE),
        "{table}"
    );

    let create_newco = [
        "sources",
        "create",
        "--tenant",
        "newco",
        "--account",
        "444455556666",
        "--region",
        "eu-west-1",
    ];
    let created = run(&[&create_newco[..], &["--write"]].concat());
    let name = "aws.partner/example.com/newco/events";
    assert!(
        created.contains(&format!("arn:aws:events:eu-west-1::event-source/{name}")),
        "{created}"
    );
    assert!(
        created.contains("create-event-bus") && created.contains("[tenants.newco.sources.events]"),
        "{created}"
    );
    assert_eq!(
        gw.emulator().source(name).unwrap().state,
        SourceState::Pending
    );
    let listed: serde_json::Value =
        serde_json::from_str(&run(&["sources", "list", "--json"])).unwrap();
    assert_eq!(row(&listed, name)["state"], "PENDING");
    assert_eq!(row(&listed, name)["tenant"], "newco");

    // Creating it again is refused, and says why.
    let again = Command::new(BIN)
        .args(create_newco)
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("ResourceAlreadyExistsException"));
    std::fs::remove_dir_all(dir).unwrap();
    gw.stop().await;
}

#[tokio::test]
async fn failed_start_up_reads_of_source_states_are_counted() {
    // An EventBridge that refuses connections: every read of a source's
    // state at start-up fails. The periodic reads are an hour away, so
    // only the start-up read can move the counter.
    let closed = format!("127.0.0.1:{}", free_port());
    let gw = TestGateway::start(&format!(
        r#"
[upstream]
endpoint_url = "http://{closed}"
connect_timeout_ms = 500
[sources]
check_state = true
refresh_ms = 3600000
[metrics]
listen = "127.0.0.1:0"
"#
    ))
    .await;
    let text = common::scrape(gw.gateway.metrics_addr().unwrap()).await;
    // Two sources in the test tenant directory, one read each.
    assert_eq!(
        common::sample(&text, "partner_events_source_refresh_errors_total"),
        Some(2.0),
        "{text}"
    );
    gw.stop().await;
}
