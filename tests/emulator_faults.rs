//! Fault injection through the real AWS SDK over HTTP: seeded rates that
//! repeat, latency, hangs, dropped connections and malformed answers, and
//! what the emulator holds compared with what the caller was told.

use std::time::{Duration, Instant};

use aws_config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Region};
use aws_sdk_eventbridge::{
    config::Credentials,
    error::{ProvideErrorMetadata, SdkError},
    types::PutPartnerEventsRequestEntry,
    Client,
};
use aws_smithy_types::retry::ErrorKind;
use partner_events_gateway::emulator::{
    load_fault_file, Emulator, EmulatorConfig, EmulatorHandle, Fault, FaultPlan, FaultRule,
    RecordedCall,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

use common::{emulator_request, eventually_within, record_all};

const SOURCE: &str = "aws.partner/example.com/tenant-7/billing";

async fn emulator(config: EmulatorConfig) -> EmulatorHandle {
    Emulator::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("emulator starts")
}

/// A client without retries (every attempt is a call we count), with an
/// optional operation timeout.
async fn sdk_client(handle: &EmulatorHandle, operation_timeout: Option<Duration>) -> Client {
    let mut timeouts = TimeoutConfig::builder();
    if let Some(t) = operation_timeout {
        timeouts = timeouts.operation_timeout(t);
    }
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(handle.endpoint_url())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts.build())
        .load()
        .await;
    Client::new(&shared)
}

fn entry(detail_type: &str) -> PutPartnerEventsRequestEntry {
    PutPartnerEventsRequestEntry::builder()
        .source(SOURCE)
        .detail_type(detail_type)
        .detail("{}")
        .build()
}

fn entries(n: usize, detail_type: &str) -> Vec<PutPartnerEventsRequestEntry> {
    (0..n).map(|_| entry(detail_type)).collect()
}

fn entry_error(code: &str) -> Fault {
    Fault::EntryError {
        code: code.into(),
        message: format!("{code} (injected)"),
    }
}

fn call_error(status: u16, error_type: &str) -> Fault {
    Fault::CallError {
        status,
        error_type: error_type.into(),
        message: "injected".into(),
    }
}

/// What a caller was told about one call.
#[derive(Clone, Debug, PartialEq)]
enum Told {
    /// A 200: per entry, the event id or the error code.
    Answered(Vec<Result<String, String>>),
    /// An error answer: its HTTP status and error code (none for HTML).
    Failed(u16, Option<String>),
}

async fn send(client: &Client, batch: Vec<PutPartnerEventsRequestEntry>) -> Told {
    match client
        .put_partner_events()
        .set_entries(Some(batch))
        .send()
        .await
    {
        Ok(out) => Told::Answered(
            out.entries()
                .iter()
                .map(|e| match e.event_id() {
                    Some(id) => Ok(id.to_string()),
                    None => Err(e.error_code().unwrap_or_default().to_string()),
                })
                .collect(),
        ),
        Err(err) => {
            let status = err
                .raw_response()
                .map(|r| r.status().as_u16())
                .expect("an HTTP answer");
            Told::Failed(status, err.code().map(str::to_string))
        }
    }
}

/// A plan mixing every rate-based kind, on every entry and call.
fn mixed_plan(seed: u64) -> FaultPlan {
    FaultPlan {
        seed,
        rules: vec![
            FaultRule::everywhere(call_error(400, "ThrottlingException")).at_rate(0.1),
            FaultRule::everywhere(call_error(500, "InternalException")).at_rate(0.1),
            FaultRule::everywhere(Fault::CallHtml { status: 500 }).at_rate(0.1),
            FaultRule::everywhere(call_error(400, "OperationDisabledException")).at_rate(0.1),
            FaultRule::everywhere(entry_error("ThrottlingException")).at_rate(0.2),
            FaultRule::everywhere(entry_error("InternalFailure")).at_rate(0.1),
        ],
    }
}

/// Sends the same 100 calls of 5 entries, one after the other, and gives
/// what the caller was told, replacing event ids (random in any case) by
/// `"ok"`.
async fn run_mixed(emu: &EmulatorHandle) -> Vec<Told> {
    let client = sdk_client(emu, None).await;
    let mut told = Vec::new();
    for _ in 0..100 {
        told.push(match send(&client, entries(5, "Any")).await {
            Told::Answered(results) => Told::Answered(
                results
                    .into_iter()
                    .map(|r| r.map(|_| "ok".to_string()))
                    .collect(),
            ),
            failed => failed,
        });
    }
    told
}

#[tokio::test]
async fn the_same_seed_gives_the_same_faults_in_two_emulators() {
    // One emulator gets the plan from a TOML file at start, the other at
    // run time: the same faults either way.
    let path = std::env::temp_dir().join(format!("faults-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        r#"seed = 42
[[rules]]
rate = 0.1
fault = { kind = "call_error", status = 400, error_type = "ThrottlingException", message = "injected" }
[[rules]]
detail_type = "*"
rate = 0.1
fault = { kind = "call_error", status = 500, error_type = "InternalException", message = "injected" }
[[rules]]
rate = 0.1
fault = { kind = "call_html", status = 500 }
[[rules]]
rate = 0.1
fault = { kind = "call_error", status = 400, error_type = "OperationDisabledException", message = "injected" }
[[rules]]
rate = 0.2
fault = { kind = "entry_error", code = "ThrottlingException", message = "ThrottlingException (injected)" }
[[rules]]
rate = 0.1
fault = { kind = "entry_error", code = "InternalFailure", message = "InternalFailure (injected)" }
"#,
    )
    .unwrap();
    let plan = load_fault_file(&path).expect("the fault file loads");
    std::fs::remove_file(&path).unwrap();
    assert_eq!(plan, mixed_plan(42));

    let first = emulator(record_all().with_fault_plan(plan)).await;
    let second = emulator(record_all()).await;
    second.set_plan(mixed_plan(42));
    let third = emulator(record_all().with_fault_plan(mixed_plan(43))).await;

    let told = run_mixed(&first).await;
    assert_eq!(told, run_mixed(&second).await, "same seed, same faults");
    assert_ne!(told, run_mixed(&third).await, "another seed, other faults");
    // The emulator's own record repeats too.
    let kinds = |emu: &EmulatorHandle| -> Vec<(u16, Option<String>, usize)> {
        emu.calls()
            .into_iter()
            .map(|c| (c.status, c.fault, c.entry_faults))
            .collect()
    };
    assert_eq!(kinds(&first), kinds(&second));

    // Every kind of the plan showed up, as the SDK reports it.
    for expected in [
        Told::Failed(400, Some("ThrottlingException".into())),
        Told::Failed(500, Some("InternalException".into())),
        Told::Failed(500, None),
        Told::Failed(400, Some("OperationDisabledException".into())),
    ] {
        assert!(told.contains(&expected), "{expected:?} in {told:?}");
    }
    let entry_codes: Vec<&str> = told
        .iter()
        .filter_map(|t| match t {
            Told::Answered(results) => Some(results),
            Told::Failed(..) => None,
        })
        .flatten()
        .filter_map(|r| r.as_ref().err().map(String::as_str))
        .collect();
    assert!(entry_codes.contains(&"ThrottlingException"), "{told:?}");
    assert!(entry_codes.contains(&"InternalFailure"), "{told:?}");

    // What each caller was told matches what the emulator recorded.
    for (told, call) in told.iter().zip(first.calls()) {
        match told {
            Told::Answered(results) => {
                let failed = results.iter().filter(|r| r.is_err()).count();
                assert_eq!(call.status, 200);
                assert_eq!(call.failed_entry_count, failed);
                assert_eq!(call.entry_faults, failed, "only injected failures");
                assert_eq!(call.accepted, 5 - failed);
                assert_eq!(call.fault, None);
            }
            Told::Failed(status, code) => {
                assert_eq!(call.status, *status);
                assert_eq!(&call.error_type, code);
                let kind = if code.is_some() {
                    "call_error"
                } else {
                    "call_html"
                };
                assert_eq!(call.fault.as_deref(), Some(kind));
                assert_eq!(call.accepted, 0);
            }
        }
    }
    let accepted: usize = first.calls().iter().map(|c| c.accepted).sum();
    assert_eq!(first.events().len(), accepted);
}

#[tokio::test]
async fn rates_are_roughly_honoured_and_every_told_id_is_held() {
    let emu = emulator(EmulatorConfig {
        faults: vec![
            FaultRule::everywhere(entry_error("ThrottlingException")).at_rate(0.2),
            // Drawn only for entries the first rule spared: 0.8 * 0.1.
            FaultRule::everywhere(entry_error("InternalFailure")).at_rate(0.1),
        ],
        fault_seed: 7,
        ..record_all()
    })
    .await;
    let client = sdk_client(&emu, None).await;
    let mut told_ids = Vec::new();
    let (mut throttled, mut internal) = (0, 0);
    for _ in 0..50 {
        let Told::Answered(results) = send(&client, entries(20, "Any")).await else {
            panic!("no call fault is configured");
        };
        for result in results {
            match result {
                Ok(id) => told_ids.push(id),
                Err(code) if code == "ThrottlingException" => throttled += 1,
                Err(code) if code == "InternalFailure" => internal += 1,
                Err(code) => panic!("unexpected {code}"),
            }
        }
    }
    assert_eq!(told_ids.len() + throttled + internal, 1000);
    assert!(
        (140..=260).contains(&throttled),
        "{throttled} of 1000 at 0.2"
    );
    assert!((40..=120).contains(&internal), "{internal} of 1000 at 0.08");
    let held: Vec<String> = emu.events().into_iter().map(|e| e.event_id).collect();
    assert_eq!(
        held, told_ids,
        "every id told is held, in order, and no other"
    );
    let injected: usize = emu.calls().iter().map(|c| c.entry_faults).sum();
    assert_eq!(injected, throttled + internal);

    // Whole calls at a rate, for one detail type only.
    emu.clear();
    emu.set_faults(vec![FaultRule::new(
        "Flaky",
        call_error(400, "ThrottlingException"),
    )
    .at_rate(0.25)]);
    let mut refused = 0;
    for _ in 0..200 {
        match send(&client, vec![entry("Flaky")]).await {
            Told::Failed(400, Some(code)) if code == "ThrottlingException" => refused += 1,
            Told::Answered(results) => assert!(results[0].is_ok()),
            other => panic!("unexpected {other:?}"),
        }
        // Other detail types are never touched.
        assert!(matches!(
            send(&client, vec![entry("Steady")]).await,
            Told::Answered(_)
        ));
    }
    assert!((25..=75).contains(&refused), "{refused} of 200 at 0.25");
    assert_eq!(emu.events().len(), 400 - refused);
}

#[tokio::test]
async fn delays_are_observed_and_jitter_repeats_under_a_seed() {
    let emu = emulator(EmulatorConfig {
        faults: vec![FaultRule::new(
            "Slow",
            Fault::Delay {
                ms: 50,
                jitter_ms: 0,
            },
        )],
        ..record_all()
    })
    .await;
    let client = sdk_client(&emu, None).await;
    let started = Instant::now();
    assert!(matches!(
        send(&client, vec![entry("Slow")]).await,
        Told::Answered(_)
    ));
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(50), "{elapsed:?}");
    send(&client, vec![entry("Fast")]).await;
    let delays: Vec<u64> = emu.calls().iter().map(|c| c.delay_ms).collect();
    assert_eq!(delays, [50, 0]);
    assert_eq!(emu.events().len(), 2);

    // Jitter: the recorded delays repeat for a seed and stay in range.
    let jitter = FaultPlan {
        seed: 5,
        rules: vec![FaultRule::everywhere(Fault::Delay {
            ms: 1,
            jitter_ms: 9,
        })],
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let emu = emulator(record_all().with_fault_plan(jitter.clone())).await;
        let jittery = sdk_client(&emu, None).await;
        for _ in 0..20 {
            send(&jittery, vec![entry("Any")]).await;
        }
        runs.push(emu.calls().iter().map(|c| c.delay_ms).collect::<Vec<u64>>());
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].iter().all(|d| (1..=10).contains(d)), "{runs:?}");
    assert!(runs[0].iter().any(|d| *d != runs[0][0]), "{runs:?}");
}

#[tokio::test]
async fn a_hung_call_times_out_in_the_sdk_and_may_have_been_accepted() {
    let emu = emulator(record_all()).await;
    let client = sdk_client(&emu, Some(Duration::from_millis(300))).await;
    for accept in [false, true] {
        emu.clear();
        emu.set_faults(vec![FaultRule::new("Hang", Fault::Hang { accept })]);
        let err = client
            .put_partner_events()
            .entries(entry("Hang"))
            .entries(entry("Other"))
            .send()
            .await
            .expect_err("no answer comes");
        assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
        let calls = emu.calls();
        assert_eq!(calls.len(), 1);
        assert!(calls[0].got_no_answer(), "{calls:?}");
        assert_eq!(calls[0].fault.as_deref(), Some("hang"));
        // Accepted or not, the caller cannot tell: OutcomeUnknown.
        let expected = if accept { 2 } else { 0 };
        assert_eq!(calls[0].accepted, expected);
        assert_eq!(emu.events().len(), expected);
    }
}

#[tokio::test]
async fn shutdown_ends_a_hung_call_at_once() {
    let emu = emulator(EmulatorConfig {
        faults: vec![FaultRule::everywhere(Fault::Hang { accept: false })],
        ..record_all()
    })
    .await;
    let client = sdk_client(&emu, None).await;
    let call =
        tokio::spawn(async move { client.put_partner_events().entries(entry("A")).send().await });
    eventually_within(
        "the emulator holding the call",
        Duration::from_secs(5),
        || !emu.calls().is_empty(),
    )
    .await;
    emu.shutdown();
    tokio::time::timeout(Duration::from_secs(5), emu.stopped())
        .await
        .expect("the drain does not wait for the hang");
    let err = call.await.unwrap().expect_err("the connection is dropped");
    assert!(matches!(err, SdkError::DispatchFailure(_)), "{err:?}");
}

#[tokio::test]
async fn a_dropped_connection_is_a_dispatch_failure_not_a_service_error() {
    let emu = emulator(record_all()).await;
    let client = sdk_client(&emu, None).await;
    for accept in [false, true] {
        emu.clear();
        emu.set_faults(vec![FaultRule::new(
            "Drop",
            Fault::DropConnection { accept },
        )]);
        let err = client
            .put_partner_events()
            .entries(entry("Drop"))
            .entries(entry("Other"))
            .send()
            .await
            .expect_err("no answer comes");
        let SdkError::DispatchFailure(failure) = &err else {
            panic!("expected a dispatch failure, got {err:?}");
        };
        // hyper's IncompleteMessage: the connection closed before any
        // answer, which the SDK classes as transient (it would retry it).
        assert_eq!(
            failure.as_other(),
            Some(ErrorKind::TransientError),
            "{failure:?}"
        );
        assert!(err.raw_response().is_none() && err.code().is_none());
        let calls = emu.calls();
        assert!(calls[0].got_no_answer(), "{calls:?}");
        assert_eq!(calls[0].fault.as_deref(), Some("drop_connection"));
        let expected = if accept { 2 } else { 0 };
        assert_eq!(calls[0].accepted, expected);
        assert_eq!(emu.events().len(), expected);
    }
    // The client gets over it: the next call opens a new connection.
    emu.set_faults(Vec::new());
    assert!(matches!(
        send(&client, vec![entry("Drop")]).await,
        Told::Answered(_)
    ));
}

#[tokio::test]
async fn a_dropped_connection_sends_not_one_byte() {
    let emu = emulator(EmulatorConfig {
        faults: vec![FaultRule::everywhere(Fault::DropConnection {
            accept: false,
        })],
        ..record_all()
    })
    .await;
    let body =
        format!(r#"{{"Entries":[{{"Source":"{SOURCE}","DetailType":"A","Detail":"{{}}"}}]}}"#);
    let mut stream = tokio::net::TcpStream::connect(emu.local_addr())
        .await
        .unwrap();
    let request = emulator_request("AWSEvents.PutPartnerEvents", &body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    // A clean close or a reset: either way, no HTTP answer at all.
    assert!(
        answer.is_empty(),
        "{read:?}: {}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(emu.calls().len(), 1);
}

#[tokio::test]
async fn a_short_answer_has_one_result_fewer_than_entries_sent() {
    let emu = emulator(EmulatorConfig {
        faults: vec![FaultRule::new("Short", Fault::ShortEntries)],
        ..record_all()
    })
    .await;
    let client = sdk_client(&emu, None).await;
    let out = client
        .put_partner_events()
        .entries(entry("Short"))
        .entries(entry("A"))
        .entries(entry("B"))
        .send()
        .await
        .expect("a 200");
    assert_eq!(out.entries().len(), 2, "one fewer than the 3 sent");
    assert_eq!(out.failed_entry_count(), 0);
    // EventBridge took all three; the answer lost the last one's id.
    let held: Vec<String> = emu.events().into_iter().map(|e| e.event_id).collect();
    assert_eq!(held.len(), 3);
    let told: Vec<&str> = out.entries().iter().filter_map(|e| e.event_id()).collect();
    assert_eq!(
        told,
        held[..2].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(
        emu.calls(),
        vec![RecordedCall {
            entries: 3,
            size: 3 * (40 + 2) + 5 + 1 + 1,
            status: 200,
            error_type: None,
            failed_entry_count: 0,
            accepted: 3,
            fault: Some("short_entries".into()),
            entry_faults: 0,
            delay_ms: 0,
        }]
    );

    // The moto-like empty answer, for comparison: nothing recorded.
    emu.clear();
    emu.set_faults(vec![FaultRule::everywhere(Fault::EmptyEntries)]);
    let out = client
        .put_partner_events()
        .entries(entry("A"))
        .send()
        .await
        .unwrap();
    assert!(out.entries().is_empty());
    assert!(emu.events().is_empty());
    assert_eq!(emu.calls()[0].fault.as_deref(), Some("empty_entries"));
}

#[tokio::test]
async fn times_limits_a_rate_rule_and_set_seed_restarts_the_draws() {
    let emu = emulator(record_all()).await;
    let client = sdk_client(&emu, None).await;
    emu.set_plan(FaultPlan {
        seed: 9,
        rules: vec![FaultRule::everywhere(entry_error("ThrottlingException"))
            .at_rate(0.5)
            .at_most(3)],
    });
    let mut failed = 0;
    for _ in 0..5 {
        let Told::Answered(results) = send(&client, entries(20, "A")).await else {
            panic!("no call fault");
        };
        failed += results.iter().filter(|r| r.is_err()).count();
    }
    assert_eq!(failed, 3, "a rule with times fires that often at most");

    let pattern = |emu: &EmulatorHandle| {
        emu.calls()
            .iter()
            .map(|c| c.entry_faults)
            .collect::<Vec<usize>>()
    };
    emu.clear();
    emu.set_faults(vec![FaultRule::everywhere(entry_error(
        "ThrottlingException",
    ))
    .at_rate(0.5)]);
    emu.set_seed(1);
    for _ in 0..5 {
        send(&client, entries(20, "A")).await;
    }
    let first = pattern(&emu);
    emu.clear();
    emu.set_seed(1);
    for _ in 0..5 {
        send(&client, entries(20, "A")).await;
    }
    assert_eq!(pattern(&emu), first);
}

#[tokio::test]
async fn every_entry_is_received_once_per_call_whatever_the_calls_fate() {
    let emu = emulator(EmulatorConfig {
        faults: vec![
            FaultRule::new("Hang", Fault::Hang { accept: false }),
            FaultRule::new("Drop", Fault::DropConnection { accept: false }),
            FaultRule::new("Fail", call_error(500, "InternalException")),
            FaultRule::new("Entry", entry_error("InternalFailure")),
        ],
        ..record_all()
    })
    .await;
    let client = sdk_client(&emu, None).await;
    let unique = |detail_type: &str, n: &str| {
        PutPartnerEventsRequestEntry::builder()
            .source(SOURCE)
            .detail_type(detail_type)
            .detail(format!(r#"{{"n":"{n}"}}"#))
            .build()
    };

    // The hung call is on record while it still hangs: received on arrival.
    let hung = {
        let client = client.clone();
        let entry = unique("Hang", "hang");
        tokio::spawn(async move { client.put_partner_events().entries(entry).send().await })
    };
    common::eventually("the hung call is received", || {
        emu.received_count(r#"{"n":"hang"}"#) == 1
    })
    .await;
    assert!(!hung.is_finished(), "the call still hangs");
    hung.abort();

    let err = client
        .put_partner_events()
        .entries(unique("Drop", "drop"))
        .send()
        .await
        .expect_err("the connection is dropped");
    assert!(matches!(err, SdkError::DispatchFailure(_)), "{err:?}");
    assert_eq!(
        send(&client, vec![unique("Fail", "fail")]).await,
        Told::Failed(500, Some("InternalException".into()))
    );
    let Told::Answered(results) = send(&client, vec![unique("Entry", "entry")]).await else {
        panic!("a 200 with a failed entry");
    };
    assert_eq!(results, [Err("InternalFailure".to_string())]);
    for _ in 0..2 {
        let Told::Answered(results) = send(&client, vec![unique("Ok", "ok")]).await else {
            panic!("accepted");
        };
        assert!(results[0].is_ok());
    }

    for (detail, times) in [
        (r#"{"n":"hang"}"#, 1),
        (r#"{"n":"drop"}"#, 1),
        (r#"{"n":"fail"}"#, 1),
        (r#"{"n":"entry"}"#, 1),
        (r#"{"n":"ok"}"#, 2),
    ] {
        assert_eq!(emu.received_count(detail), times, "{detail}");
    }
    let received = emu.received();
    assert_eq!(received.len(), 6);
    assert!(received.iter().all(|r| r.source.as_deref() == Some(SOURCE)));
    let types: Vec<_> = received
        .iter()
        .map(|r| r.detail_type.as_deref().unwrap())
        .collect();
    assert_eq!(types, ["Hang", "Drop", "Fail", "Entry", "Ok", "Ok"]);
    let counts = emu.counts();
    assert_eq!((counts.calls, counts.received, counts.delivered), (6, 6, 2));
    emu.shutdown();
}
