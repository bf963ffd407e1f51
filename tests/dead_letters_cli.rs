//! `dead-letters` and `send --durable` as an operator runs them: the real
//! binary serving with auth on and an upstream that refuses connections,
//! so DURABLE entries become dead letters within `max_delivery_age_ms`;
//! then list, show, purge and replay through the CLI, with their output
//! and exit codes, and the replayed entries delivered once the upstream
//! (an emulator on the same port) is up. And the operator's client
//! certificate over mutual TLS, with `send`'s flags.

use std::process::Command;

use partner_events_gateway::{
    emulator::{Emulator, EmulatorConfig, SeedSource, SourceState},
    proto::{partner_events_client::PartnerEventsClient, DeliveryState, GetDeliveriesRequest},
};

mod common;

use common::{eventually_async, free_port, Spawned, StateDir, BIN};

const WRITER_TOKEN: &str = "writer-token-0123456789";
const OPS_TOKEN: &str = "ops-token-0123456789";
/// A receipt id no gateway gave (well formed: 32 hex digits).
const ABSENT: &str = "00000000000000000000000000000000";

fn config(grpc: u16, upstream: u16) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{grpc}"
shutdown_grace_ms = 2000

[metrics]
listen = ""

[upstream]
endpoint_url = "http://127.0.0.1:{upstream}"
connect_timeout_ms = 200
call_timeout_ms = 1000
retry_base_ms = 10
retry_max_ms = 20
breaker_open_ms = 100

[sources]
check_state = false

[durable]
max_delivery_age_ms = 1500
retry_base_ms = 50
retry_max_ms = 200
attempt_timeout_ms = 1000

[auth]
mode = "required"
operators = ["ops"]

[[auth.tokens]]
caller = "writer"
env = "WRITER_TOKEN"

[[auth.tokens]]
caller = "ops"
env = "OPS_TOKEN"

[auth.callers.writer]
tenants = ["acme", "globex"]

[tenants.acme]
default_source = "billing"
[tenants.acme.sources.billing]
name = "aws.partner/example.com/acme/billing"
region = "us-east-1"

[tenants.globex]
default_source = "events"
[tenants.globex.sources.events]
name = "aws.partner/example.com/globex/events"
region = "us-east-1"
"#
    )
}

/// One run of the binary: its exit code, stdout and stderr.
struct Run {
    code: i32,
    out: String,
    err: String,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.out.lines().collect()
    }

    fn json_lines(&self) -> Vec<serde_json::Value> {
        self.out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }
}

/// `partner-events-gateway <args>` against the gateway at `port`, with
/// `token` (if any) in PEG_TOKEN as a user would set it.
fn cli(port: u16, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("PEG_ADDR", format!("http://127.0.0.1:{port}"))
        .env_remove("PEG_TOKEN");
    if let Some(t) = token {
        command.env("PEG_TOKEN", t);
    }
    let out = command.output().unwrap();
    let run = Run {
        code: out.status.code().expect("exited"),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "$ {} -> {}\n{}{}",
        args.join(" "),
        run.code,
        run.out,
        run.err
    );
    run
}

fn ops(port: u16, args: &[&str]) -> Run {
    cli(port, Some(OPS_TOKEN), args)
}

/// Each receipt's delivery state, as GetDeliveries reports it.
async fn states(port: u16, receipts: &[String]) -> Vec<DeliveryState> {
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = PartnerEventsClient::with_interceptor(channel, |mut r: tonic::Request<()>| {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {WRITER_TOKEN}").parse().unwrap(),
        );
        Ok(r)
    });
    client
        .get_deliveries(GetDeliveriesRequest {
            receipt_ids: receipts.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .deliveries
        .iter()
        .map(|d| d.state())
        .collect()
}

/// `send --durable` of `n` entries for `tenant`: their receipt ids, in
/// input order.
fn send_durable(port: u16, dir: &std::path::Path, tenant: &str, n: usize) -> Vec<String> {
    let file = dir.join(format!("{tenant}.jsonl"));
    let text: String = (0..n)
        .map(|i| format!("{{\"DetailType\":\"InvoicePaid\",\"Detail\":{{\"secret\":\"{tenant}-detail-{i}\"}}}}\n"))
        .collect();
    std::fs::write(&file, text).unwrap();
    let run = cli(
        port,
        Some(WRITER_TOKEN),
        &[
            "send",
            "--durable",
            "--tenant",
            tenant,
            "--file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.err);
    assert!(
        run.err.contains(&format!("{n} accepted, 0 failed")),
        "{}",
        run.err
    );
    let mut rows = run.json_lines();
    rows.sort_by_key(|r| r["line"].as_u64());
    rows.iter()
        .map(|r| {
            assert!(
                r.get("event_id").is_none(),
                "a DURABLE answer has no event id: {r}"
            );
            let id = r["receipt_id"].as_str().unwrap_or_else(|| panic!("{r}"));
            assert!(
                id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{id}"
            );
            id.to_string()
        })
        .collect()
}

#[tokio::test]
async fn dead_letters_are_listed_shown_purged_and_replayed_from_the_shell() {
    let (port, upstream) = (free_port(), free_port());
    let files = StateDir::new();
    let config_file = files.path.join("gateway.toml");
    std::fs::write(&config_file, config(port, upstream)).unwrap();
    let mut serve = Command::new(BIN);
    serve
        .args(["serve", "--config"])
        .arg(&config_file)
        .env("WRITER_TOKEN", WRITER_TOKEN)
        .env("OPS_TOKEN", OPS_TOKEN)
        .env("RUST_LOG", "info");
    let mut gateway = Spawned::start(serve);
    gateway
        .wait_for_line("partner-events-gateway serving")
        .await;

    // Nothing reaches EventBridge: every entry is retried until it is
    // older than max_delivery_age_ms, then dead-lettered.
    let acme = send_durable(port, &files.path, "acme", 3);
    let globex = send_durable(port, &files.path, "globex", 1);
    let all: Vec<String> = acme.iter().chain(&globex).cloned().collect();
    eventually_async("every entry is a dead letter", || async {
        states(port, &all)
            .await
            .iter()
            .all(|s| *s == DeliveryState::DeadLettered)
    })
    .await;

    // list: a table, every page followed.
    let table = ops(port, &["dead-letters", "list", "--page-size", "1"]);
    assert_eq!(table.code, 0, "{}", table.err);
    let lines = table.lines();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "RECEIPT",
            "TENANT",
            "BATCH",
            "INDEX",
            "ERROR",
            "CODE",
            "ATTEMPTS",
            "DEAD-LETTERED"
        ]
    );
    assert_eq!(lines.len(), 5, "a header and 4 rows");
    for id in &all {
        let row = lines.iter().find(|l| l.starts_with(id.as_str())).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[4], "MaxDeliveryAgeExceeded", "{row}");
        assert!(cells[5].parse::<u32>().unwrap() >= 1, "{row}");
        assert!(cells[6].ends_with('Z'), "{row}");
    }
    assert!(table.err.contains("4 of 4 dead letters"), "{}", table.err);

    // --json, one page at a time, oldest first (receipt ids sort by time).
    let json = ops(
        port,
        &["dead-letters", "list", "--json", "--page-size", "1"],
    );
    assert_eq!(json.code, 0);
    let listed: Vec<String> = json
        .json_lines()
        .iter()
        .map(|d| d["receipt_id"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
    let rows = json.json_lines();
    let acme0 = rows.iter().find(|d| d["receipt_id"] == acme[0]).unwrap();
    assert_eq!(acme0["tenant_id"], "acme");
    assert_eq!(acme0["index"], 0);
    assert_eq!(acme0["error_code"], "MaxDeliveryAgeExceeded");
    assert!(acme0.get("detail").is_none(), "no payload in a listing");
    let limited = ops(
        port,
        &[
            "dead-letters",
            "list",
            "--json",
            "--limit",
            "2",
            "--page-size",
            "1",
        ],
    );
    assert_eq!(limited.json_lines().len(), 2);
    let by_tenant = ops(
        port,
        &["dead-letters", "list", "--json", "--tenant", "globex"],
    );
    let rows = by_tenant.json_lines();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["receipt_id"], globex[0]);

    // show: the detail only when asked for.
    let show = ops(port, &["dead-letters", "show", &acme[1]]);
    assert_eq!(show.code, 0, "{}", show.err);
    assert!(
        show.out.contains(&format!("receipt:       {}", acme[1])),
        "{}",
        show.out
    );
    assert!(show.out.contains("error code:    MaxDeliveryAgeExceeded"));
    assert!(show.out.contains("aws.partner/example.com/acme/billing"));
    assert!(!show.out.contains("acme-detail-1"), "{}", show.out);
    let detail = ops(
        port,
        &["dead-letters", "show", &acme[1], "--detail", "--json"],
    );
    assert_eq!(detail.code, 0);
    let d = &detail.json_lines()[0];
    assert_eq!(d["detail"], r#"{"secret":"acme-detail-1"}"#);

    // Not found: 1. A bad receipt, no identity, a writer, nobody listening: 2.
    let missing = ops(port, &["dead-letters", "show", ABSENT]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.err.contains("GetDeadLetter: NotFound"),
        "{}",
        missing.err
    );
    let bad = ops(port, &["dead-letters", "show", "not-a-receipt"]);
    assert_eq!(bad.code, 2);
    assert!(bad.err.contains("InvalidArgument"), "{}", bad.err);
    let anonymous = cli(port, None, &["dead-letters", "list"]);
    assert_eq!(anonymous.code, 2);
    assert!(
        anonymous.err.contains("Unauthenticated"),
        "{}",
        anonymous.err
    );
    let writer = cli(port, Some(WRITER_TOKEN), &["dead-letters", "list"]);
    assert_eq!(writer.code, 2);
    assert!(writer.err.contains("PermissionDenied"), "{}", writer.err);
    let nobody = cli(free_port(), Some(OPS_TOKEN), &["dead-letters", "list"]);
    assert_eq!(nobody.code, 2);
    assert!(nobody.err.contains("cannot connect"), "{}", nobody.err);

    // purge --all without --yes deletes nothing; by receipt id it needs none.
    let refused = ops(
        port,
        &["dead-letters", "purge", "--all", "--tenant", "globex"],
    );
    assert_eq!(refused.code, 2);
    assert!(refused.err.contains("--yes"), "{}", refused.err);
    assert_eq!(
        ops(port, &["dead-letters", "list", "--json"])
            .json_lines()
            .len(),
        4
    );
    let purge = ops(port, &["dead-letters", "purge", &globex[0], ABSENT]);
    assert_eq!(purge.code, 1, "one of the two was not found");
    assert_eq!(purge.out.trim(), "purged 1");
    assert!(
        purge.err.contains(&format!("not found: {ABSENT}")),
        "{}",
        purge.err
    );
    let gone = ops(port, &["dead-letters", "show", &globex[0]]);
    assert_eq!(gone.code, 1, "a purged dead letter is gone");

    // EventBridge (the emulator) comes up on the upstream's port; replay
    // puts the dead letters back in the queue, and they are delivered.
    let emulator = Emulator::spawn(
        format!("127.0.0.1:{upstream}").parse().unwrap(),
        EmulatorConfig {
            sources: vec![SeedSource::new(
                "aws.partner/example.com/acme/billing",
                "123456789012",
                SourceState::Active,
            )],
            ..EmulatorConfig::default()
        },
    )
    .await
    .unwrap();
    let none = ops(
        port,
        &["dead-letters", "replay", "--all", "--code", "NoSuchCode"],
    );
    assert_eq!((none.code, none.out.trim()), (0, "replayed 0"));
    let one = ops(port, &["dead-letters", "replay", &acme[0], ABSENT]);
    assert_eq!((one.code, one.out.trim()), (1, "replayed 1"));
    let rest = ops(
        port,
        &["dead-letters", "replay", "--all", "--tenant", "acme"],
    );
    assert_eq!(
        (rest.code, rest.out.trim()),
        (0, "replayed 2"),
        "{}",
        rest.err
    );
    for state in states(port, &acme).await {
        assert!(
            matches!(
                state,
                DeliveryState::Queued | DeliveryState::InFlight | DeliveryState::Delivered
            ),
            "a replayed entry is back in the queue: {state:?}"
        );
    }
    eventually_async("the replayed entries are delivered", || async {
        states(port, &acme)
            .await
            .iter()
            .all(|s| *s == DeliveryState::Delivered)
    })
    .await;
    let mut delivered: Vec<String> = emulator.events().into_iter().map(|e| e.detail).collect();
    delivered.sort();
    assert_eq!(
        delivered,
        (0..3)
            .map(|i| format!(r#"{{"secret":"acme-detail-{i}"}}"#))
            .collect::<Vec<_>>()
    );
    let empty = ops(port, &["dead-letters", "list"]);
    assert_eq!((empty.code, empty.lines().len()), (0, 1), "the header only");
    assert!(empty.err.contains("0 of 0 dead letters"), "{}", empty.err);

    let (status, _) = gateway.terminate().await;
    assert_eq!(status.code(), Some(0));
}

/// The operator named by its client certificate, over mutual TLS, with the
/// same flags as `send`; a certificate the CA signed for someone else is
/// refused with the gateway's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_speaks_mutual_tls_with_the_operators_certificate() {
    let pki = common::pki();
    let d = pki.dir.display().to_string();
    let gw = common::TestGateway::start_unconnected(&format!(
        r#"
[tls]
cert_file = "{d}/server.pem"
key_file = "{d}/server.key"
client_ca_file = "{d}/ca.pem"
[auth]
mode = "required"
operators = ["{billing}"]
[auth.callers."{billing}"]
tenants = ["acme"]
"#,
        billing = common::BILLING
    ))
    .await;
    let port = gw.gateway.local_addr().port();
    let dir = pki.dir.clone();
    let run = move |cert: &str| {
        let out = Command::new(BIN)
            .args(["dead-letters", "list", "--addr"])
            .arg(format!("https://localhost:{port}"))
            .arg("--ca-cert")
            .arg(dir.join("ca.pem"))
            .arg("--client-cert")
            .arg(dir.join(format!("{cert}.pem")))
            .arg("--client-key")
            .arg(dir.join(format!("{cert}.key")))
            .env_remove("PEG_TOKEN")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run("billing")
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("RECEIPT"), "{out}");
    assert!(err.contains("0 of 0 dead letters"), "{err}");
    let (code, _, err) = tokio::task::spawn_blocking(move || run("intruder"))
        .await
        .unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("ListDeadLetters: PermissionDenied"), "{err}");
    gw.stop().await;
    std::fs::remove_dir_all(&pki.dir).unwrap();
}
