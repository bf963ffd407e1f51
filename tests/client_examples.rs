//! The client examples in other languages (examples/python, grpcio with
//! stubs generated from proto/; examples/typescript, @grpc/grpc-js with
//! @grpc/proto-loader) against a running gateway: each sends a unary batch
//! (one good entry with an idempotency key, one bad), resends it, and
//! streams two batches; what each prints must match what the gateway did,
//! and the emulator must hold exactly the events accepted.
//!
//! `scripts/examples.sh install` (run by `scripts/test`) builds them; when
//! they are missing the test fails if REQUIRE_EXAMPLES is set (as
//! `scripts/test` sets it), and says so and passes otherwise.

mod common;

use std::{collections::BTreeMap, path::PathBuf, process::Command};

use common::TestGateway;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The program and arguments of each example, or None (and why) when it is
/// not built.
fn examples() -> Vec<(&'static str, Result<Command, String>)> {
    let python = root().join(".venv-examples/bin/python");
    let stubs = root().join("examples/python/gen/partnerevents/v1/partner_events_pb2.py");
    let py = if python.exists() && stubs.exists() {
        let mut c = Command::new(python);
        c.arg(root().join("examples/python/client.py"));
        Ok(c)
    } else {
        Err("no .venv-examples or examples/python/gen".to_string())
    };
    let js = root().join("examples/typescript/dist/client.js");
    let ts = if js.exists() {
        let mut c = Command::new("node");
        c.arg(js);
        Ok(c)
    } else {
        Err("no examples/typescript/dist/client.js".to_string())
    };
    vec![("python", py), ("typescript", ts)]
}

/// `label[index] rest` lines, by (label, index).
fn results(output: &str) -> BTreeMap<(String, u32), String> {
    output
        .lines()
        .filter_map(|l| {
            let (head, rest) = l.split_once("] ")?;
            let (label, index) = head.rsplit_once('[')?;
            Some(((label.to_string(), index.parse().ok()?), rest.to_string()))
        })
        .collect()
}

fn event_id(line: &str) -> &str {
    line.strip_prefix("event_id=")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("not an event id: {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_and_typescript_clients_send_and_print_every_result() {
    let gw = TestGateway::start("").await;
    let addr = gw.gateway.local_addr().to_string();
    let mut held = 0;
    for (name, command) in examples() {
        let mut command = match command {
            Ok(c) => c,
            Err(why) => {
                assert!(
                    std::env::var_os("REQUIRE_EXAMPLES").is_none(),
                    "REQUIRE_EXAMPLES is set but the {name} example is not built ({why}): run scripts/examples.sh install"
                );
                eprintln!("the {name} example is not built ({why}): skipped; scripts/test builds and runs it");
                continue;
            }
        };
        command.args(["--addr", &addr, "--tenant", "acme"]);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("the {name} example does not run: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name}: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("{name}:\n{stdout}");
        let r = results(&stdout);
        let line = |label: &str, i: u32| {
            r.get(&(label.to_string(), i))
                .unwrap_or_else(|| panic!("{name}: no result for {label}[{i}]:\n{stdout}"))
                .as_str()
        };
        let first = event_id(line("unary", 0));
        assert!(
            line("unary", 1).starts_with("error=MalformedDetail"),
            "{name}"
        );
        assert_eq!(event_id(line("resend", 0)), first, "{name}: the same event");
        assert!(line("resend", 0).ends_with("deduplicated"), "{name}");
        for batch in 1..=2 {
            for i in 0..2 {
                event_id(line(&format!("stream {name}-stream-{batch}"), i));
            }
        }
        assert_eq!(r.len(), 8, "{name}: one line per entry:\n{stdout}");
        held += 5;
        assert_eq!(
            gw.emulator().events().len(),
            held,
            "{name}: each event once"
        );
    }
    gw.stop().await;
}
