//! Arbitrary bytes as a `PutPartnerEvents` body (AWS JSON 1.1) to the
//! built-in EventBridge emulator.
//!
//! The emulator's parser and validator (`service::parse`, reached through
//! `service::State::put_partner_events`) are not public, so the body goes
//! through the public entry point: [`Emulator::spawn`] on `127.0.0.1:0`,
//! one `POST /` per input over a kept-alive HTTP/1.1 connection. The
//! emulator runs with no faults and a call-size limit of
//! [`MAX_CALL_BYTES`], small enough that short inputs reach the size check.
//!
//! Invariants: every body gets an HTTP answer (nothing panics or hangs in
//! the emulator); the answer is a 200, or a 400 with a JSON error body
//! whose `__type` is also in `x-amzn-errortype`; a 200 parses as a
//! `PutPartnerEvents` response with exactly one result per request entry,
//! each either an `EventId` or an `ErrorCode` with an `ErrorMessage`, and
//! `FailedEntryCount` counts the latter.
#![no_main]

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use libfuzzer_sys::fuzz_target;
use partner_events_gateway::emulator::{
    Emulator, EmulatorConfig, EmulatorHandle, MAX_ENTRIES_PER_CALL,
};
use serde::Deserialize;

/// The emulator's call-size limit by the AWS formula.
const MAX_CALL_BYTES: usize = 1024;

/// Longer than any answer of an emulator with no delay faults takes.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The request as the emulator reads it (a copy of `emulator::wire`'s
/// shapes, which are not public), to count the entries of a body it
/// accepted.
#[derive(Deserialize)]
struct Request {
    #[serde(rename = "Entries")]
    entries: Option<Vec<RequestEntry>>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestEntry {
    time: Option<f64>,
    source: Option<String>,
    resources: Option<Vec<String>>,
    detail_type: Option<String>,
    detail: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Response {
    failed_entry_count: usize,
    entries: Vec<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "__type")]
    error_type: String,
    #[allow(dead_code)]
    message: String,
}

struct Harness {
    /// Runs the emulator's server task; kept alive for the whole process.
    _runtime: tokio::runtime::Runtime,
    emulator: EmulatorHandle,
    client: Mutex<Client>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let config = EmulatorConfig {
            max_call_bytes: MAX_CALL_BYTES,
            ..EmulatorConfig::default()
        };
        let emulator = runtime
            .block_on(Emulator::spawn("127.0.0.1:0".parse().unwrap(), config))
            .expect("the emulator starts");
        let client = Mutex::new(Client {
            addr: emulator.local_addr(),
            conn: None,
        });
        Harness {
            _runtime: runtime,
            emulator,
            client,
        }
    })
}

/// One HTTP answer.
struct Answer {
    status: u16,
    error_type_header: Option<String>,
    body: Vec<u8>,
}

/// A minimal HTTP/1.1 client on one kept-alive connection: a new TCP
/// connection per input would run out of ephemeral ports (TIME_WAIT).
struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    fn post(&mut self, body: &[u8]) -> Answer {
        let (conn, reused) = match self.conn.take() {
            Some(conn) => (conn, true),
            None => (self.connect(), false),
        };
        let result = match exchange(conn, body) {
            // The server may close a kept-alive connection between two
            // requests; that, and only that, earns one more try.
            Err(e) if reused && is_closed(&e) => {
                eprintln!("emulator_request: kept-alive connection closed ({e}); reconnecting");
                exchange(self.connect(), body)
            }
            other => other,
        };
        match result {
            Ok((answer, conn)) => {
                self.conn = conn;
                answer
            }
            Err(e) => panic!("the emulator gave no HTTP answer: {e} ({:?})", e.kind()),
        }
    }

    fn connect(&self) -> BufReader<TcpStream> {
        let stream = TcpStream::connect(self.addr).expect("connect to the emulator");
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        BufReader::new(stream)
    }
}

/// Whether `e` says the peer closed the connection (as opposed to a
/// timeout, which is a hang, or garbage, which is a broken answer).
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Sends one request; returns the answer and the connection if it stays open.
fn exchange(
    mut conn: BufReader<TcpStream>,
    body: &[u8],
) -> io::Result<(Answer, Option<BufReader<TcpStream>>)> {
    let head = format!(
        "POST / HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         content-type: application/x-amz-json-1.1\r\n\
         x-amz-target: AWSEvents.PutPartnerEvents\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    let stream = conn.get_mut();
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;

    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
    let mut content_length = None;
    let mut chunked = false;
    let mut close = false;
    let mut error_type_header = None;
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((header, ""));
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => content_length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "x-amzn-errortype" => error_type_header = Some(value.to_string()),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
            if size == 0 {
                line.clear();
                conn.read_line(&mut line)?;
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            conn.read_exact(&mut body[start..])?;
            line.clear();
            conn.read_line(&mut line)?;
        }
    } else if let Some(n) = content_length {
        body.resize(n, 0);
        conn.read_exact(&mut body)?;
    } else {
        conn.read_to_end(&mut body)?;
        close = true;
    }
    let answer = Answer {
        status,
        error_type_header,
        body,
    };
    Ok((answer, (!close).then_some(conn)))
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let answer = h.client.lock().unwrap().post(data);
    // Nothing is kept between inputs: recorded events and calls would
    // otherwise grow without bound.
    h.emulator.clear();
    let body = String::from_utf8_lossy(&answer.body);
    match answer.status {
        200 => {
            let response: Response = serde_json::from_slice(&answer.body).unwrap_or_else(|e| {
                panic!("a 200 that is no PutPartnerEvents response ({e}): {body}")
            });
            let request: Request = serde_json::from_slice(data).unwrap_or_else(|e| {
                panic!("a 200 for a body the wire shapes do not read ({e}): {body}")
            });
            let entries = request
                .entries
                .expect("a 200 for a request without Entries");
            assert!(
                (1..=MAX_ENTRIES_PER_CALL).contains(&entries.len()),
                "a 200 for {} entries",
                entries.len()
            );
            assert_eq!(
                response.entries.len(),
                entries.len(),
                "a 200 with {} results for {} entries: {body}",
                response.entries.len(),
                entries.len()
            );
            let mut failed = 0;
            for result in &response.entries {
                let event_id = result.get("EventId").and_then(|v| v.as_str());
                let code = result.get("ErrorCode").and_then(|v| v.as_str());
                let message = result.get("ErrorMessage").and_then(|v| v.as_str());
                match (event_id, code, message) {
                    (Some(id), None, None) => assert!(!id.is_empty(), "an empty EventId"),
                    (None, Some(code), Some(_)) => {
                        assert!(!code.is_empty(), "an empty ErrorCode");
                        failed += 1;
                    }
                    _ => panic!("a result that is neither accepted nor failed: {result:?}"),
                }
            }
            assert_eq!(response.failed_entry_count, failed, "FailedEntryCount");
        }
        400 => {
            let error: ErrorBody = serde_json::from_slice(&answer.body)
                .unwrap_or_else(|e| panic!("a 400 without a JSON error body ({e}): {body}"));
            assert_eq!(
                answer.error_type_header.as_deref(),
                Some(error.error_type.as_str()),
                "x-amzn-errortype and __type differ"
            );
        }
        status => panic!("unexpected HTTP status {status}: {body}"),
    }
});
