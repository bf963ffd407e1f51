//! The binary itself: `check-config`, and `serve` from start to SIGTERM.

use std::process::Command;

use partner_events_gateway::proto::{
    partner_event_entry::Body, partner_events_client::PartnerEventsClient, PartnerEventEntry,
    PutPartnerEventsRequest,
};

mod common;

use common::{free_port, Spawned, TestGateway, BIN};

#[test]
fn check_config_accepts_the_example_and_names_the_bad_field() {
    let ok = Command::new(BIN)
        .args([
            "check-config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/gateway.example.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK"));

    let dir = std::env::temp_dir().join(format!("peg-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[tenants.acme]\ndefault_source = \"x\"\n[tenants.acme.sources.billing]\nname = \"aws.partner/example.com/acme/billing\"\nregion = \"us-east-1\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tenants.acme.default_source") && err.contains("billing"),
        "{err}"
    );

    // serve refuses to start on the same file, with the same message.
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tenants.acme.default_source"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn serve_with_no_config_accepts_demo_events_and_exits_0_on_sigterm() {
    let port = free_port();
    let mut command = Command::new(BIN);
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            "127.0.0.1:0",
            "--emulator-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info");
    let mut child = Spawned::start(command);
    child.wait_for_line("partner-events-gateway serving").await;

    let mut client = PartnerEventsClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let resp = client
        .put_partner_events(PutPartnerEventsRequest {
            tenant_id: "demo".into(),
            batch_id: String::new(),
            entries: vec![PartnerEventEntry {
                detail_type: "Ping".into(),
                body: Some(Body::Detail(
                    r#"{"secret":"payload-must-not-be-logged"}"#.into(),
                )),
                ..Default::default()
            }],
            delivery: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let event_id = resp.entries[0].event_id.clone();
    assert!(!event_id.is_empty(), "{resp:?}");
    drop(client);

    let (status, log) = child.terminate().await;
    assert_eq!(status.code(), Some(0));
    let all = log.join("\n");
    assert!(
        all.contains(&event_id),
        "the accepted event is logged with its id:\n{all}"
    );
    assert!(all.contains("SIGTERM"), "{all}");
    assert!(
        !all.contains("payload-must-not-be-logged"),
        "the payload leaked into the log:\n{all}"
    );
}

#[tokio::test]
async fn send_streams_a_file_and_reports_every_line() {
    let gw = TestGateway::start("").await;
    let dir = std::env::temp_dir().join(format!("peg-send-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("entries.jsonl");
    let mut text = String::new();
    for i in 0..250 {
        text.push_str(&format!(
            "{{\"DetailType\":\"InvoicePaid\",\"Detail\":\"{{\\\"n\\\":{i}}}\",\"Time\":1704164645}}\n"
        ));
    }
    text.push_str("this is not json\n"); // line 251
    text.push_str("{\"DetailType\":\"X\",\"Detail\":\"[1]\"}\n"); // line 252: MalformedDetail
    text.push_str("{\"DetailType\":\"Y\",\"Detail\":{\"obj\":true},\"SourceKey\":\"audit\"}\n"); // line 253
    std::fs::write(&file, text).unwrap();

    let addr = gw.gateway.local_addr().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "send",
                "--tenant",
                "acme",
                "--addr",
                &addr,
                "--batch-size",
                "40",
                "--file",
            ])
            .arg(&file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 253);
    let mut lines: Vec<u64> = rows.iter().map(|r| r["line"].as_u64().unwrap()).collect();
    lines.sort_unstable();
    assert_eq!(lines, (1..=253).collect::<Vec<u64>>());
    let by_line = |n: u64| rows.iter().find(|r| r["line"] == n).unwrap().clone();
    assert!(by_line(1)["event_id"].is_string());
    assert_eq!(by_line(251)["error_code"], "InvalidLine");
    assert_eq!(by_line(252)["error_code"], "MalformedDetail");
    assert!(by_line(253)["event_id"].is_string());
    let accepted = rows.iter().filter(|r| r["event_id"].is_string()).count();
    assert_eq!(accepted, 251);
    assert_eq!(gw.emulator().events().len(), 251);
    assert!(String::from_utf8_lossy(&out.stderr).contains("251 accepted, 2 failed"));
    std::fs::remove_dir_all(dir).unwrap();
    gw.stop().await;
}

#[test]
fn an_unauthenticated_gateway_refuses_a_public_address_even_from_the_flag() {
    // The default config (auth off, no TLS) with `--listen` on every
    // interface: refused before serving, whatever the file said.
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--metrics-listen",
            "",
            "--emulator-listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("the gateway served an unauthenticated plaintext port on 0.0.0.0");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("server.listen") && err.contains("allow_anyone_on_network"),
        "{err}"
    );
}
