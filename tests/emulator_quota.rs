//! The emulator's quota through the real AWS SDK over HTTP: calls beyond
//! the burst fail whole with HTTP 400 `ThrottlingException` as EventBridge
//! answers them, per region; 0 is unlimited; the counts (in Rust and on
//! `GET /_emulator/counts`) say what reached the emulator and what was
//! throttled.
//!
//! The rates are tiny (one call per 100 s) so that no refill blurs which
//! calls are beyond the burst.

use std::time::Duration;

use aws_config::{retry::RetryConfig, BehaviorVersion, Region};
use aws_sdk_eventbridge::{
    config::Credentials, error::ProvideErrorMetadata, types::PutPartnerEventsRequestEntry, Client,
};
use partner_events_gateway::emulator::{
    Emulator, EmulatorConfig, EmulatorHandle, Quota, QuotaError, RegionCounts, DEFAULT_QUOTA_BURST,
    DEFAULT_QUOTA_CALLS_PER_SECOND,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

use common::record_all;

const SOURCE: &str = "aws.partner/example.com/tenant-7/billing";
/// One call per 100 s: nothing refills within a test.
const TINY_RATE: f64 = 0.01;

async fn emulator(quota: Quota) -> EmulatorHandle {
    Emulator::spawn(
        "127.0.0.1:0".parse().unwrap(),
        EmulatorConfig {
            quota,
            ..record_all()
        },
    )
    .await
    .expect("emulator starts")
}

/// A client for `region` with the SDK's retries as given.
async fn sdk_client(handle: &EmulatorHandle, region: &'static str, retry: RetryConfig) -> Client {
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(handle.endpoint_url())
        .region(Region::new(region))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(retry)
        .load()
        .await;
    Client::new(&shared)
}

fn entries(n: usize) -> Vec<PutPartnerEventsRequestEntry> {
    (0..n)
        .map(|i| {
            PutPartnerEventsRequestEntry::builder()
                .source(SOURCE)
                .detail_type("T")
                .detail(format!(r#"{{"n":{i}}}"#))
                .build()
        })
        .collect()
}

/// What the caller was told: `Ok(accepted entries)` or `Err((HTTP status,
/// error code, message))`.
async fn send(client: &Client, n: usize) -> Result<usize, (u16, String, String)> {
    match client
        .put_partner_events()
        .set_entries(Some(entries(n)))
        .send()
        .await
    {
        Ok(out) => Ok(out
            .entries()
            .iter()
            .filter(|e| e.event_id().is_some())
            .count()),
        Err(err) => Err((
            err.raw_response()
                .map(|r| r.status().as_u16())
                .expect("an HTTP answer"),
            err.code().unwrap_or_default().to_string(),
            err.message().unwrap_or_default().to_string(),
        )),
    }
}

fn throttled() -> Result<usize, (u16, String, String)> {
    Err((400, "ThrottlingException".into(), "Rate exceeded".into()))
}

#[tokio::test]
async fn calls_beyond_the_burst_are_throttled_whole_and_counted() {
    let emu = emulator(Quota::new(TINY_RATE, 5).unwrap()).await;
    let client = sdk_client(&emu, "us-east-1", RetryConfig::disabled()).await;
    let mut told = Vec::new();
    for _ in 0..8 {
        told.push(send(&client, 3).await);
    }
    let mut expected = vec![Ok(3); 5];
    expected.extend(std::iter::repeat_n(throttled(), 3));
    assert_eq!(told, expected, "exactly the calls beyond the burst");

    // Another region has a bucket of its own.
    let eu = sdk_client(&emu, "eu-west-1", RetryConfig::disabled()).await;
    for _ in 0..5 {
        assert_eq!(send(&eu, 1).await, Ok(1));
    }
    assert_eq!(send(&eu, 1).await, throttled());

    // A throttled call accepts nothing, and is recorded as a call.
    assert_eq!(emu.events().len(), 5 * 3 + 5);
    let calls = emu.calls();
    assert_eq!(calls.len(), 14);
    let throttled_calls: Vec<usize> = (0..calls.len())
        .filter(|&i| calls[i].is_throttled())
        .collect();
    assert_eq!(throttled_calls, [5, 6, 7, 13]);
    for i in throttled_calls {
        let c = &calls[i];
        assert_eq!(c.status, 400);
        assert_eq!(c.error_type.as_deref(), Some("ThrottlingException"));
        assert_eq!((c.accepted, c.fault.as_deref()), (0, None));
    }
    let counts = emu.counts();
    assert_eq!(
        (counts.calls, counts.ok_calls, counts.throttled),
        (14, 10, 4)
    );
    assert_eq!(counts.received, 8 * 3 + 6, "throttled entries are received");
    assert_eq!(counts.delivered, 5 * 3 + 5);
    assert_eq!(
        counts.per_region.into_iter().collect::<Vec<_>>(),
        [
            (
                "eu-west-1".to_string(),
                RegionCounts {
                    calls: 6,
                    throttled: 1
                }
            ),
            (
                "us-east-1".to_string(),
                RegionCounts {
                    calls: 8,
                    throttled: 3
                }
            ),
        ]
    );
    emu.shutdown();
}

#[tokio::test]
async fn the_sdk_retries_a_throttled_call_as_throttling() {
    let emu = emulator(Quota::new(TINY_RATE, 1).unwrap()).await;
    let client = sdk_client(&emu, "us-east-1", RetryConfig::disabled()).await;
    assert_eq!(send(&client, 1).await, Ok(1));
    // The SDK's standard retry classes the answer as throttling and tries
    // again: three calls, each throttled.
    let retrying = sdk_client(
        &emu,
        "us-east-1",
        RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(1)),
    )
    .await;
    assert_eq!(send(&retrying, 1).await, throttled());
    let counts = emu.counts();
    assert_eq!((counts.calls, counts.throttled), (4, 3));
    emu.shutdown();
}

#[tokio::test]
async fn zero_is_unlimited_and_the_quota_can_change_at_run_time() {
    let emu = emulator(Quota::new(TINY_RATE, 2).unwrap()).await;
    let client = sdk_client(&emu, "us-east-1", RetryConfig::disabled()).await;
    assert_eq!(send(&client, 1).await, Ok(1));
    assert_eq!(send(&client, 1).await, Ok(1));
    assert_eq!(send(&client, 1).await, throttled());

    emu.set_quota(0.0, 0).unwrap();
    assert!(emu.quota().is_unlimited());
    for _ in 0..200 {
        assert_eq!(send(&client, 1).await, Ok(1));
    }

    // A new quota starts with a full bucket.
    emu.set_quota(TINY_RATE, 3).unwrap();
    for _ in 0..3 {
        assert_eq!(send(&client, 1).await, Ok(1));
    }
    assert_eq!(send(&client, 1).await, throttled());

    // An invalid one is refused and the one in force stays.
    assert_eq!(emu.set_quota(5.0, 0), Err(QuotaError::Burst));
    assert_eq!(emu.set_quota(-1.0, 5), Err(QuotaError::CallsPerSecond));
    assert_eq!(emu.quota(), Quota::new(TINY_RATE, 3).unwrap());
    let counts = emu.counts();
    assert_eq!(
        (counts.calls, counts.ok_calls, counts.throttled),
        (207, 205, 2)
    );
    emu.shutdown();
}

#[tokio::test]
async fn the_default_quota_is_eventbridges() {
    assert_eq!(
        EmulatorConfig::default().quota,
        Quota::new(DEFAULT_QUOTA_CALLS_PER_SECOND, DEFAULT_QUOTA_BURST).unwrap()
    );
    assert_eq!(
        (DEFAULT_QUOTA_CALLS_PER_SECOND, DEFAULT_QUOTA_BURST),
        (1_400.0, 3_600)
    );
    let err = Emulator::spawn(
        "127.0.0.1:0".parse().unwrap(),
        EmulatorConfig {
            quota: Quota {
                calls_per_second: 10.0,
                burst: 0,
            },
            ..EmulatorConfig::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
}

/// One HTTP/1.1 exchange over a fresh connection: the status line, the
/// headers (lowercased names) and the body.
async fn http(addr: std::net::SocketAddr, request: String) -> (String, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (
        status.to_string(),
        headers.to_ascii_lowercase(),
        body.to_string(),
    )
}

fn put_request(body: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: AWSEvents.PutPartnerEvents\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=AKID/20240101/ap-south-1/events/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn the_throttling_answer_is_awss_and_the_counts_are_served_as_json() {
    let emu = emulator(Quota::new(TINY_RATE, 1).unwrap()).await;
    let body =
        format!(r#"{{"Entries":[{{"Source":"{SOURCE}","DetailType":"T","Detail":"{{}}"}}]}}"#);
    let (status, _, _) = http(emu.local_addr(), put_request(&body)).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (status, headers, answer) = http(emu.local_addr(), put_request(&body)).await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert!(
        headers.contains("x-amzn-errortype: throttlingexception"),
        "{headers}"
    );
    assert!(
        headers.contains("content-type: application/x-amz-json-1.1"),
        "{headers}"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&answer).unwrap(),
        serde_json::json!({"__type": "ThrottlingException", "message": "Rate exceeded"})
    );

    let (status, headers, counts) = http(
        emu.local_addr(),
        "GET /_emulator/counts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("content-type: application/json"),
        "{headers}"
    );
    let counts: serde_json::Value = serde_json::from_str(&counts).unwrap();
    assert_eq!(counts["calls"], 2);
    assert_eq!(counts["ok_calls"], 1);
    assert_eq!(counts["throttled"], 1);
    assert_eq!(counts["received"], 2);
    assert_eq!(counts["delivered"], 1);
    assert_eq!(
        counts["per_region"],
        serde_json::json!({"ap-south-1": {"calls": 2, "throttled": 1}})
    );
    assert_eq!(
        counts["per_source"][SOURCE],
        serde_json::json!({"delivered": 1, "undelivered": 0})
    );
    emu.shutdown();
}

const BIN: &str = env!("CARGO_BIN_EXE_partner-events-gateway");

#[tokio::test]
async fn the_emulator_flags_set_the_quota() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = std::process::Command::new(BIN)
        .args(["emulator", "--listen", &addr.to_string()])
        .args(["--quota-calls-per-second", "0.01", "--quota-burst", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the emulator starts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body =
        format!(r#"{{"Entries":[{{"Source":"{SOURCE}","DetailType":"T","Detail":"{{}}"}}]}}"#);
    let (first, _, _) = http(addr, put_request(&body)).await;
    let (second, _, answer) = http(addr, put_request(&body)).await;
    let (_, _, counts) = http(
        addr,
        "GET /_emulator/counts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(first, "HTTP/1.1 200 OK");
    assert_eq!(second, "HTTP/1.1 400 Bad Request", "{answer}");
    let counts: serde_json::Value = serde_json::from_str(&counts).unwrap();
    assert_eq!(
        (counts["calls"].as_u64(), counts["throttled"].as_u64()),
        (Some(2), Some(1))
    );

    // A rate with no burst, or a negative rate, is refused at start.
    for (args, says) in [
        (
            ["--quota-calls-per-second=5", "--quota-burst=0"],
            "--quota-burst",
        ),
        (
            ["--quota-calls-per-second=-1", "--quota-burst=5"],
            "must be 0 (unlimited)",
        ),
    ] {
        let out = std::process::Command::new(BIN)
            .args(["emulator", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
