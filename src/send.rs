//! `partner-events-gateway send`: ingestion from the shell.
//!
//! Reads entries as JSON lines in the AWS CLI's entry shape (`DetailType`,
//! `Detail`, `Resources`, `Time`, plus an optional `SourceKey`, and the
//! gateway's own `IdempotencyKey` and `ResendIfUnknown`), streams
//! them through `StreamPartnerEvents` in batches, and prints one JSON line
//! per input line as answers arrive (so not always in input order): its
//! line number and event id (with `--durable`, its receipt id), or its
//! error. A line that
//! is not a valid entry is reported without being sent. `Source` is refused:
//! the gateway picks the source from the tenant directory.

use crate::sync::lock;
use std::{
    collections::HashMap,
    io::{BufRead, IsTerminal, Write},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prost_types::Timestamp;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, StreamExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::proto::{
    partner_event_entry::Body, partner_events_client::PartnerEventsClient, DeliveryMode,
    PartnerEventEntry, PutPartnerEventsRequest,
};

/// One input line, as the AWS CLI writes an entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct LineEntry {
    detail_type: Option<String>,
    /// JSON text, or (for convenience) a JSON object.
    detail: Option<serde_json::Value>,
    #[serde(default)]
    resources: Vec<String>,
    /// Epoch seconds, or an RFC 3339 timestamp.
    time: Option<serde_json::Value>,
    #[serde(default)]
    source_key: String,
    /// The gateway's idempotency key (not an EventBridge field).
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    resend_if_unknown: bool,
    /// Refused with a clear message (see the module docs).
    source: Option<String>,
    /// Accepted and ignored: the AWS CLI's files may carry it.
    event_bus_name: Option<String>,
}

/// Turns one input line into an entry, or says why it cannot be one.
pub fn parse_line(line: &str) -> Result<PartnerEventEntry, String> {
    let e: LineEntry = serde_json::from_str(line).map_err(|e| format!("not a JSON entry: {e}"))?;
    if e.source.is_some() {
        return Err(
            "`Source` is set by the gateway from the tenant directory; remove it (use `SourceKey` to pick one of the tenant's sources)"
                .into(),
        );
    }
    let _ = e.event_bus_name;
    let body = match e.detail {
        None => None,
        Some(serde_json::Value::String(s)) => Some(Body::Detail(s)),
        Some(v @ serde_json::Value::Object(_)) => Some(Body::Detail(v.to_string())),
        Some(_) => return Err("`Detail` must be JSON text or a JSON object".into()),
    };
    let time = match e.time {
        None => None,
        Some(serde_json::Value::Number(n)) => {
            let secs = n
                .as_f64()
                .ok_or_else(|| "`Time` is not a number of seconds".to_string())?;
            Some(Timestamp {
                seconds: secs.floor() as i64,
                nanos: 0,
            })
        }
        Some(serde_json::Value::String(s)) => {
            let t = humantime::parse_rfc3339_weak(&s)
                .map_err(|e| format!("`Time` is not an RFC 3339 timestamp: {e}"))?;
            let secs = match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => d.as_secs() as i64,
                Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
            };
            Some(Timestamp {
                seconds: secs,
                nanos: 0,
            })
        }
        Some(_) => return Err("`Time` must be epoch seconds or an RFC 3339 string".into()),
    };
    Ok(PartnerEventEntry {
        time,
        detail_type: e.detail_type.unwrap_or_default(),
        body,
        resources: e.resources,
        source_key: e.source_key,
        idempotency_key: e.idempotency_key,
        resend_if_unknown: e.resend_if_unknown,
    })
}

/// What `send` was asked to do.
pub struct SendArgs {
    pub addr: String,
    pub tenant: String,
    pub batch_size: usize,
    pub input: Box<dyn BufRead + Send>,
    pub tls: Option<ClientTls>,
    /// Sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Ask for DURABLE delivery: each accepted entry's line then carries its
    /// `receipt_id` (no `event_id`: the gateway delivers it later).
    pub durable: bool,
}

/// TLS towards the gateway (PEM files).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// The CA that signed the gateway's certificate (system roots otherwise).
    pub ca_cert: Option<std::path::PathBuf>,
    /// A client certificate and key, for mutual TLS.
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
    /// The name to expect in the gateway's certificate (default: the host).
    pub domain: Option<String>,
}

impl ClientTls {
    /// These settings if TLS is wanted: when `forced` (`--tls`), when `addr`
    /// is an `https://` address, or when a CA, a client certificate or a
    /// domain is given (a key alone does not turn it on); `None`: plaintext.
    pub fn wanted(self, forced: bool, addr: &str) -> Option<Self> {
        let wanted = forced
            || addr.starts_with("https://")
            || self.ca_cert.is_some()
            || self.client_cert.is_some()
            || self.domain.is_some();
        wanted.then_some(self)
    }
}

/// The input lines: the file, or stdin when there is none or it is `-`.
pub fn open_input(file: Option<&std::path::Path>) -> std::io::Result<Box<dyn BufRead + Send>> {
    Ok(match file {
        Some(p) if p.as_os_str() != "-" => {
            Box::new(std::io::BufReader::new(std::fs::File::open(p)?))
        }
        _ => Box::new(std::io::BufReader::new(std::io::stdin())),
    })
}

fn tls_config(tls: &ClientTls) -> Result<ClientTlsConfig, String> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let mut cfg = ClientTlsConfig::new().with_enabled_roots();
    if let Some(ca) = &tls.ca_cert {
        cfg = cfg.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(c), Some(k)) => cfg = cfg.identity(Identity::from_pem(read(c)?, read(k)?)),
        (None, None) => {}
        _ => return Err("--client-cert and --client-key go together".into()),
    }
    if let Some(d) = &tls.domain {
        cfg = cfg.domain_name(d.clone());
    }
    Ok(cfg)
}

/// Totals of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub lines: usize,
    pub accepted: usize,
    pub failed: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} lines: {} accepted, {} failed",
            self.lines, self.accepted, self.failed
        )
    }
}

/// How to reach the gateway, as `send` and `dead-letters` take it.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// The gateway's address (`host:port`: http, or https with TLS; or a URL).
    #[arg(
        long,
        default_value = "127.0.0.1:50051",
        env = "PEG_ADDR",
        global = true
    )]
    pub addr: String,
    /// Use TLS (implied by an https:// address or any TLS flag).
    #[arg(long, global = true)]
    pub tls: bool,
    /// CA certificate (PEM) that signed the gateway's certificate.
    #[arg(long, global = true)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Client certificate (PEM), for mutual TLS.
    #[arg(long, global = true)]
    pub client_cert: Option<std::path::PathBuf>,
    /// Client private key (PEM), for mutual TLS.
    #[arg(long, global = true)]
    pub client_key: Option<std::path::PathBuf>,
    /// The name expected in the gateway's certificate.
    #[arg(long, global = true)]
    pub tls_domain: Option<String>,
    /// Bearer token (prefer the environment variable).
    #[arg(long, env = "PEG_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

impl ConnectArgs {
    /// The TLS settings, if TLS is wanted (see [`ClientTls::wanted`]).
    pub fn client_tls(&self) -> Option<ClientTls> {
        ClientTls {
            ca_cert: self.ca_cert.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            domain: self.tls_domain.clone(),
        }
        .wanted(self.tls, &self.addr)
    }
}

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
#[derive(Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    pub fn new(token: Option<&str>) -> Result<Self, String> {
        match token {
            Some(t) => format!("Bearer {t}")
                .parse()
                .map(|v| Self(Some(v)))
                .map_err(|_| "the token has characters a header cannot carry".to_string()),
            None => Ok(Self(None)),
        }
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(a) = &self.0 {
            req.metadata_mut().insert("authorization", a.clone());
        }
        Ok(req)
    }
}

/// A channel to the gateway whose calls carry the bearer token: give it to
/// any generated client's `new`.
pub type GatewayChannel = tonic::service::interceptor::InterceptedService<Channel, BearerToken>;

/// Connects to the gateway at `addr` (`host:port`, http unless `tls`; or a
/// URL), with TLS when `tls` is set, the token on every call.
pub async fn connect(
    addr: &str,
    tls: Option<&ClientTls>,
    token: Option<&str>,
) -> Result<GatewayChannel, String> {
    let bearer = BearerToken::new(token)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("{scheme}://{addr}")
    };
    let mut builder = Channel::from_shared(endpoint.clone())
        .map_err(|e| format!("bad address {endpoint}: {e}"))?;
    if endpoint.starts_with("https://") {
        let _ = rustls::crypto::ring::default_provider().install_default();
        builder = builder
            .tls_config(tls_config(&tls.cloned().unwrap_or_default())?)
            .map_err(|e| format!("TLS set-up failed: {e}"))?;
    }
    let channel = builder
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {endpoint}: {}", with_causes(&e)))?;
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel, bearer,
    ))
}

/// An error and its causes, `: `-separated (tonic's transport error alone
/// says only "transport error").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// Streams the input and writes one result line per input line to `out`.
pub async fn run(args: SendArgs, out: &mut (dyn Write + Send)) -> Result<Summary, String> {
    let channel = connect(&args.addr, args.tls.as_ref(), args.token.as_deref()).await?;
    let mut client = PartnerEventsClient::new(channel);

    // Lines are read on a blocking thread; batches go out as they fill.
    // `lines_by_batch` maps each batch in flight to its entries' line numbers.
    let lines_by_batch: Arc<Mutex<HashMap<u64, Vec<usize>>>> = Arc::default();
    let (req_tx, req_rx) = mpsc::channel::<PutPartnerEventsRequest>(4);
    let (bad_tx, mut bad_rx) = mpsc::unbounded_channel::<(usize, String)>();
    let reader = {
        let tenant = args.tenant.clone();
        let batch_size = args.batch_size.max(1);
        let lines_by_batch = lines_by_batch.clone();
        let mut input = args.input;
        let delivery = if args.durable {
            DeliveryMode::Durable
        } else {
            DeliveryMode::Unspecified
        } as i32;
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut entries = Vec::with_capacity(batch_size);
            let mut lines = Vec::with_capacity(batch_size);
            let mut sequence = 0u64;
            let mut flush =
                |entries: &mut Vec<PartnerEventEntry>, lines: &mut Vec<usize>| -> bool {
                    if entries.is_empty() {
                        return true;
                    }
                    lock(&lines_by_batch).insert(sequence, std::mem::take(lines));
                    let req = PutPartnerEventsRequest {
                        tenant_id: tenant.clone(),
                        entries: std::mem::take(entries),
                        batch_id: format!("send-{sequence}"),
                        delivery,
                    };
                    sequence += 1;
                    req_tx.blocking_send(req).is_ok()
                };
            let mut text = String::new();
            let mut n = 0usize;
            loop {
                text.clear();
                match input.read_line(&mut text) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(format!("cannot read input line {}: {e}", n + 1)),
                }
                n += 1;
                if text.trim().is_empty() {
                    continue;
                }
                match parse_line(text.trim()) {
                    Ok(e) => {
                        entries.push(e);
                        lines.push(n);
                        if entries.len() == batch_size && !flush(&mut entries, &mut lines) {
                            return Ok(());
                        }
                    }
                    Err(msg) => {
                        let _ = bad_tx.send((n, msg));
                    }
                }
            }
            flush(&mut entries, &mut lines);
            Ok(())
        })
    };

    let mut responses = client
        .stream_partner_events(ReceiverStream::new(req_rx))
        .await
        .map_err(|s| format!("the gateway refused the stream: {}", s.message()))?
        .into_inner();

    let write = |out: &mut (dyn Write + Send), row: serde_json::Value, summary: &mut Summary| {
        summary.lines += 1;
        if row.get("error_code").is_none() {
            summary.accepted += 1;
        } else {
            summary.failed += 1;
        }
        writeln!(out, "{row}").map_err(|e| format!("cannot write output: {e}"))
    };
    let progress = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut summary = Summary::default();
    let mut stream_error = None;
    let mut bad_open = true;
    loop {
        tokio::select! {
            bad = bad_rx.recv(), if bad_open => match bad {
                Some((line, msg)) => write(out, json!({"line": line, "error_code": "InvalidLine", "error_message": msg}), &mut summary)?,
                None => bad_open = false,
            },
            r = responses.next() => match r {
                None => break,
                Some(Err(status)) => {
                    stream_error = Some(format!("the stream ended early: {:?}: {}", status.code(), status.message()));
                    break;
                }
                Some(Ok(resp)) => {
                    let lines = lock(&lines_by_batch).remove(&resp.sequence).unwrap_or_default();
                    for (r, line) in resp.entries.iter().zip(lines) {
                        let mut row = if !r.error_code.is_empty() {
                            json!({"line": line, "error_code": r.error_code, "error_message": r.error_message})
                        } else if !r.receipt_id.is_empty() {
                            json!({"line": line, "receipt_id": r.receipt_id})
                        } else {
                            json!({"line": line, "event_id": r.event_id})
                        };
                        if r.deduplicated {
                            row["deduplicated"] = true.into();
                        }
                        write(out, row, &mut summary)?;
                    }
                    if progress && last_progress.elapsed() > Duration::from_millis(250) {
                        last_progress = Instant::now();
                        eprint!(
                            "\r{} entries answered ({:.0}/s)   ",
                            summary.lines,
                            summary.lines as f64 / started.elapsed().as_secs_f64().max(0.001)
                        );
                    }
                }
            },
        }
    }
    if progress {
        eprintln!();
    }
    // The stream may end before the reader notices (an error): stop it.
    drop(responses);
    reader
        .await
        .map_err(|e| format!("input reader failed: {e}"))??;
    while let Ok((line, msg)) = bad_rx.try_recv() {
        write(
            out,
            json!({"line": line, "error_code": "InvalidLine", "error_message": msg}),
            &mut summary,
        )?;
    }
    // Batches the gateway never answered still get a line each.
    let reason =
        stream_error.unwrap_or_else(|| "the gateway did not answer this entry's batch".into());
    let mut left: Vec<usize> = lock(&lines_by_batch).drain().flat_map(|(_, l)| l).collect();
    left.sort_unstable();
    for line in left {
        write(
            out,
            json!({"line": line, "error_code": "NotAnswered", "error_message": reason}),
            &mut summary,
        )?;
    }
    out.flush()
        .map_err(|e| format!("cannot write output: {e}"))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_cli_shape() {
        let e = parse_line(
            r#"{"DetailType":"InvoicePaid","Detail":"{\"a\":1}","Resources":["arn:x"],"Time":1704164645}"#,
        )
        .unwrap();
        assert_eq!(e.detail_type, "InvoicePaid");
        assert_eq!(e.body, Some(Body::Detail(r#"{"a":1}"#.into())));
        assert_eq!(e.resources, vec!["arn:x"]);
        assert_eq!(e.time.unwrap().seconds, 1_704_164_645);

        let e = parse_line(r#"{"DetailType":"X","Detail":{"b":[1,2]},"Time":"2024-01-02T03:04:05Z","SourceKey":"audit"}"#)
            .unwrap();
        assert_eq!(e.body, Some(Body::Detail(r#"{"b":[1,2]}"#.into())));
        assert_eq!(e.time.unwrap().seconds, 1_704_164_645);
        assert_eq!(e.source_key, "audit");

        let e = parse_line(
            r#"{"DetailType":"X","Detail":"{}","IdempotencyKey":"order-1","ResendIfUnknown":true}"#,
        )
        .unwrap();
        assert_eq!(e.idempotency_key, "order-1");
        assert!(e.resend_if_unknown);
    }

    #[test]
    fn refusals() {
        assert!(parse_line("{").unwrap_err().contains("not a JSON entry"));
        assert!(
            parse_line(r#"{"Source":"aws.partner/a/b","DetailType":"X","Detail":"{}"}"#)
                .unwrap_err()
                .contains("SourceKey")
        );
        assert!(parse_line(r#"{"DetailType":"X","Detail":5}"#).is_err());
        assert!(parse_line(r#"{"DetailType":"X","Detial":"{}"}"#)
            .unwrap_err()
            .contains("unknown field"));
    }
}
