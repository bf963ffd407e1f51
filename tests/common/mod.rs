//! Test harness: the real gateway on a loopback port, its in-process
//! emulator, and a generated tonic client.
#![allow(dead_code)]

pub mod redis;

use partner_events_gateway::{
    config::Config,
    emulator::{Emulator, EmulatorConfig, EmulatorHandle, SeedSource, SourceState},
    proto::{
        partner_event_entry::Body, partner_events_client::PartnerEventsClient, PartnerEventEntry,
        PutPartnerEventsRequest, PutPartnerEventsResponse,
    },
    server::{self, RunningGateway},
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Identity};

/// A demo-like tenant directory with two sources in two regions.
pub const TENANTS: &str = r#"
[tenants.acme]
default_source = "billing"
[tenants.acme.sources.billing]
name = "aws.partner/example.com/acme/billing"
region = "us-east-1"
[tenants.acme.sources.audit]
name = "aws.partner/example.com/acme/audit"
region = "eu-west-1"
"#;

/// The emulator bound of tests that read every event, entry or call they
/// cause: none is dropped from the records.
pub const RECORD_ALL: usize = usize::MAX;

/// An emulator of the test's own on 127.0.0.1:0 that knows the test
/// tenant's sources ACTIVE (gateways check their sources' states) and
/// records every event.
pub async fn active_emulator() -> EmulatorHandle {
    let config = EmulatorConfig {
        sources: ["billing", "audit"]
            .iter()
            .map(|k| {
                SeedSource::new(
                    format!("aws.partner/example.com/acme/{k}"),
                    "123456789012",
                    SourceState::Active,
                )
            })
            .collect(),
        ..record_all()
    };
    Emulator::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

/// The default emulator config, except that its records keep everything.
pub fn record_all() -> EmulatorConfig {
    EmulatorConfig {
        max_recorded_events: RECORD_ALL,
        ..EmulatorConfig::default()
    }
}

pub struct TestGateway {
    pub gateway: RunningGateway,
    pub client: PartnerEventsClient<Channel>,
    pub channel: Channel,
    /// The durable queue's directory, removed when the test ends.
    pub state: Option<StateDir>,
}

impl TestGateway {
    /// Starts a gateway from TOML (the `[tenants]` above are appended when
    /// the text has none) on 127.0.0.1:0.
    pub async fn start(toml: &str) -> Self {
        let (gateway, url, state) = Self::launch(toml).await;
        let channel = Channel::from_shared(url)
            .unwrap()
            .connect()
            .await
            .expect("client connects");
        Self {
            client: PartnerEventsClient::new(channel.clone()),
            channel,
            gateway,
            state,
        }
    }

    /// Like [`TestGateway::start`], for a gateway the test connects to
    /// itself (TLS): `client` and `channel` are lazy plaintext ones.
    pub async fn start_unconnected(toml: &str) -> Self {
        let (gateway, url, state) = Self::launch(toml).await;
        let channel = Channel::from_shared(url).unwrap().connect_lazy();
        Self {
            client: PartnerEventsClient::new(channel.clone()),
            channel,
            gateway,
            state,
        }
    }

    async fn launch(toml: &str) -> (RunningGateway, String, Option<StateDir>) {
        let text = if toml.contains("[tenants.") {
            toml.to_string()
        } else {
            format!("{toml}\n{TENANTS}")
        };
        let mut config = Config::from_toml(&text, "test").expect("test config is valid");
        // Tests run side by side: never the fixed default ports.
        if config.metrics_listen.is_some() {
            config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        }
        if config.emulator_listen.port() == 4010 {
            config.emulator_listen = "127.0.0.1:0".parse().unwrap();
        }
        // Tests that count upstream calls need every entry of a request in
        // its lane before the linger ends, even on a loaded machine where a
        // task can be starved for more than the default 5 ms.
        if !toml.contains("linger_ms") {
            config.pipeline.linger = std::time::Duration::from_millis(50);
        }
        // Tests read the in-process emulator's events and calls: unless a
        // test sets its own bound, they are all kept.
        if !toml.contains("max_recorded_events") {
            config.emulator.max_recorded_events = RECORD_ALL;
        }
        // Each gateway its own durable queue (one file may be open once).
        let state = (!toml.contains("[durable]")).then(StateDir::new);
        if let Some(state) = &state {
            config.durable.dir = state.path.clone();
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = server::start(config, listener)
            .await
            .expect("gateway starts");
        let url = format!("http://{}", gateway.local_addr());
        (gateway, url, state)
    }

    /// A gateway whose upstream is an emulator of the test's own (the test
    /// tenant's sources ACTIVE, every event recorded) behind a
    /// [`StallProxy`] the test can pause; `extra` is appended to the config.
    pub async fn stallable(extra: &str) -> (Self, EmulatorHandle, StallProxy) {
        let emulator = active_emulator().await;
        let proxy = StallProxy::start(emulator.local_addr()).await;
        // Calls wait on a paused proxy as long as the test needs.
        let gw = Self::start(&format!(
            "[upstream]\nendpoint_url = \"{}\"\ncall_timeout_ms = 60000\n{extra}",
            proxy.url()
        ))
        .await;
        (gw, emulator, proxy)
    }

    pub fn emulator(&self) -> &EmulatorHandle {
        self.gateway
            .emulator()
            .expect("the gateway runs its own emulator")
    }

    /// The source of every event the in-process emulator holds, sorted.
    pub fn event_sources(&self) -> Vec<String> {
        let mut sources: Vec<String> = self
            .emulator()
            .events()
            .into_iter()
            .map(|e| e.source)
            .collect();
        sources.sort();
        sources
    }

    /// Sends one unary request for `tenant` and returns its answer; the call
    /// itself must succeed.
    pub async fn put(
        &self,
        tenant: &str,
        entries: Vec<PartnerEventEntry>,
    ) -> partner_events_gateway::proto::PutPartnerEventsResponse {
        self.client
            .clone()
            .put_partner_events(request(tenant, entries))
            .await
            .expect("the call succeeds")
            .into_inner()
    }

    /// Like [`TestGateway::put`], with the caller's deadline (`grpc-timeout`).
    pub async fn put_within(
        &self,
        tenant: &str,
        entries: Vec<PartnerEventEntry>,
        timeout: std::time::Duration,
    ) -> partner_events_gateway::proto::PutPartnerEventsResponse {
        let mut req = tonic::Request::new(request(tenant, entries));
        req.set_timeout(timeout);
        self.client
            .clone()
            .put_partner_events(req)
            .await
            .expect("the call succeeds")
            .into_inner()
    }

    /// Opens a stream on the harness's client: see [`open_stream`].
    pub async fn open_stream(
        &self,
        buffer: usize,
    ) -> (
        mpsc::Sender<PutPartnerEventsRequest>,
        tonic::Streaming<PutPartnerEventsResponse>,
    ) {
        open_stream(&self.client, buffer).await
    }

    pub async fn stop(self) {
        assert!(self.gateway.shutdown().await, "gateway drained cleanly");
    }
}

/// Opens a StreamPartnerEvents stream on `client`, fed by a channel that
/// holds `buffer` batches; gives the channel's sender and the answers.
pub async fn open_stream(
    client: &PartnerEventsClient<Channel>,
    buffer: usize,
) -> (
    mpsc::Sender<PutPartnerEventsRequest>,
    tonic::Streaming<PutPartnerEventsResponse>,
) {
    let (tx, rx) = mpsc::channel(buffer);
    let answers = client
        .clone()
        .stream_partner_events(ReceiverStream::new(rx))
        .await
        .expect("the stream opens")
        .into_inner();
    (tx, answers)
}

/// Asks the standard health service on `channel` about `service` ("" for
/// the server as a whole).
pub async fn health(
    channel: &Channel,
    service: &str,
) -> Result<tonic_health::pb::health_check_response::ServingStatus, tonic::Status> {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let answer = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await?;
    Ok(answer.into_inner().status())
}

/// An entry with a JSON-text detail.
/// The event ids of an answer in which every entry was accepted.
pub fn ids(r: &PutPartnerEventsResponse) -> Vec<String> {
    r.entries
        .iter()
        .map(|e| {
            assert!(e.error_code.is_empty() && !e.event_id.is_empty(), "{e:?}");
            e.event_id.clone()
        })
        .collect()
}

/// Copies of one keyed batch of `entries` entries, sent concurrently: every
/// answer carries the same event ids, and each entry was sent by exactly
/// one copy (the others answered `deduplicated`).
pub fn assert_sent_once(answers: &[PutPartnerEventsResponse], entries: usize) {
    let first = ids(&answers[0]);
    for a in answers {
        assert_eq!(ids(a), first, "every answer carries the same event ids");
    }
    for i in 0..entries {
        let sent = answers
            .iter()
            .filter(|a| !a.entries[i].deduplicated)
            .count();
        assert_eq!(sent, 1, "entry {i}");
    }
}

/// `n` entries of `detail_type`, keyed `{tag}-{i}`, with details unique to
/// the tag.
pub fn keyed(detail_type: &str, tag: &str, n: usize) -> Vec<PartnerEventEntry> {
    (0..n)
        .map(|i| PartnerEventEntry {
            idempotency_key: format!("{tag}-{i}"),
            ..entry(detail_type, &format!(r#"{{"m":"{tag}-{i}"}}"#))
        })
        .collect()
}

pub fn entry(detail_type: &str, detail: &str) -> PartnerEventEntry {
    PartnerEventEntry {
        time: None,
        detail_type: detail_type.to_string(),
        body: Some(Body::Detail(detail.to_string())),
        resources: vec![],
        source_key: String::new(),
        idempotency_key: String::new(),
        resend_if_unknown: false,
    }
}

pub fn request(tenant: &str, entries: Vec<PartnerEventEntry>) -> PutPartnerEventsRequest {
    PutPartnerEventsRequest {
        tenant_id: tenant.to_string(),
        entries,
        batch_id: "b-1".to_string(),
        delivery: 0,
    }
}

/// A TCP proxy in front of the emulator that can stall: while paused it
/// stops forwarding bytes in either direction, as a hung upstream would.
pub struct StallProxy {
    pub addr: std::net::SocketAddr,
    paused: tokio::sync::watch::Sender<bool>,
}

impl StallProxy {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (paused, _) = tokio::sync::watch::channel(false);
        let gate = paused.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, gate.subscribe()));
                tokio::spawn(pump(ro, wi, gate.subscribe()));
            }
        });
        Self { addr, paused }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// How long [`eventually`] and [`eventually_async`] wait before failing.
pub const EVENTUALLY: std::time::Duration = std::time::Duration::from_secs(20);

/// Waits (bounded by [`EVENTUALLY`]) until `cond` holds, checking every
/// few milliseconds.
pub async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    eventually_within(what, EVENTUALLY, cond).await
}

/// Waits until `cond` holds; fails naming `what` after `bound`.
pub async fn eventually_within(
    what: &str,
    bound: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < bound, "timed out waiting for: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// What the condition of [`eventually_async`] answers: `true`, or
/// `Some(value)`, once it holds.
pub trait Holds {
    type Value;
    fn holds(self) -> Option<Self::Value>;
}

impl Holds for bool {
    type Value = ();
    fn holds(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Holds for Option<T> {
    type Value = T;
    fn holds(self) -> Option<T> {
        self
    }
}

/// Like [`eventually`], for a condition that has to await (a call, a
/// scrape): bounded by [`EVENTUALLY`]; gives the value `cond` held with.
pub async fn eventually_async<F, Fut>(what: &str, cond: F) -> <Fut::Output as Holds>::Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
    Fut::Output: Holds,
{
    eventually_async_within(what, EVENTUALLY, cond).await
}

/// Like [`eventually_async`]; fails naming `what` after `bound`.
pub async fn eventually_async_within<F, Fut>(
    what: &str,
    bound: std::time::Duration,
    mut cond: F,
) -> <Fut::Output as Holds>::Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
    Fut::Output: Holds,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = cond().await.holds() {
            return v;
        }
        assert!(start.elapsed() < bound, "timed out waiting for: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Scrapes `/metrics` from `addr` over plain HTTP/1.1 (bounded: 10 s); the
/// answer must be 200.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_string(&mut body),
    )
    .await
    .expect("metrics answer in time")
    .unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// The value of the sample `name` (with its labels, as exposed) in a scrape.
pub fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame as it went over the wire.
pub struct H2Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl H2Frame {
    pub const DATA: u8 = 0x0;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// The ACK flag of SETTINGS and PING.
    pub const ACK: u8 = 0x1;
}

/// Splits bytes read from one direction of an HTTP/2 connection into
/// frames, whatever the read boundaries.
#[derive(Default)]
pub struct H2FrameSplitter {
    buf: Vec<u8>,
    /// Preface bytes still to skip (the client's direction only).
    skip: usize,
}

impl H2FrameSplitter {
    /// For the bytes a client sends: the preface comes first.
    pub fn from_client() -> Self {
        Self {
            buf: Vec::new(),
            skip: H2_PREFACE.len(),
        }
    }

    /// Takes the next bytes; gives every frame they complete.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<H2Frame> {
        let skipped = self.skip.min(bytes.len());
        self.skip -= skipped;
        bytes = &bytes[skipped..];
        self.buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        while self.buf.len() >= 9 {
            let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
            if self.buf.len() < 9 + len {
                break;
            }
            let stream = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]])
                & !(1 << 31);
            frames.push(H2Frame {
                kind: self.buf[3],
                flags: self.buf[4],
                stream,
                payload: self.buf[9..9 + len].to_vec(),
            });
            self.buf.drain(..9 + len);
        }
        frames
    }
}

/// The flow-control credit (RFC 9113 §6.9) a server gave a client on one
/// connection, and what the client used of it.
struct Credit {
    /// The connection window: 65,535 plus the server's WINDOW_UPDATEs on stream 0.
    conn_granted: i64,
    /// DATA the client sent, padding included, on any stream.
    conn_used: i64,
    /// SETTINGS_INITIAL_WINDOW_SIZE as the server last set it.
    initial_stream: i64,
    /// Per stream: the server's WINDOW_UPDATEs, and the DATA the client sent.
    streams: std::collections::HashMap<u32, (i64, i64)>,
}

impl Credit {
    fn left(&self) -> i64 {
        let streams = self
            .streams
            .values()
            .filter(|(_, used)| *used > 0)
            .map(|(granted, used)| self.initial_stream + granted - used);
        streams.fold(self.conn_granted - self.conn_used, i64::min)
    }
}

/// A TCP proxy in front of a plaintext HTTP/2 server, for one client
/// connection, that reads the frames going by to know how much more the
/// client may send before the server reads: a positive signal that a
/// client is held back by flow control.
pub struct H2CreditProxy {
    pub addr: std::net::SocketAddr,
    credit: std::sync::Arc<std::sync::Mutex<Credit>>,
}

impl H2CreditProxy {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let credit = Arc::new(Mutex::new(Credit {
            conn_granted: 65_535,
            conn_used: 0,
            initial_stream: 65_535,
            streams: Default::default(),
        }));
        let counts = credit.clone();
        tokio::spawn(async move {
            let Ok((inbound, _)) = listener.accept().await else {
                return;
            };
            let outbound = tokio::net::TcpStream::connect(target).await.unwrap();
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            let to_server = counts.clone();
            tokio::spawn(pump_frames(
                ri,
                wo,
                H2FrameSplitter::from_client(),
                move |f| {
                    if f.kind == H2Frame::DATA {
                        let mut c = to_server.lock().unwrap();
                        let len = f.payload.len() as i64;
                        c.conn_used += len;
                        c.streams.entry(f.stream).or_default().1 += len;
                    }
                },
            ));
            tokio::spawn(pump_frames(ro, wi, H2FrameSplitter::default(), move |f| {
                let mut c = counts.lock().unwrap();
                match f.kind {
                    H2Frame::SETTINGS if f.flags & H2Frame::ACK == 0 => {
                        for s in f.payload.chunks_exact(6) {
                            // SETTINGS_INITIAL_WINDOW_SIZE
                            if u16::from_be_bytes([s[0], s[1]]) == 0x4 {
                                c.initial_stream =
                                    u32::from_be_bytes([s[2], s[3], s[4], s[5]]) as i64;
                            }
                        }
                    }
                    H2Frame::WINDOW_UPDATE if f.payload.len() == 4 => {
                        let p = &f.payload;
                        let n = (u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & !(1 << 31)) as i64;
                        if f.stream == 0 {
                            c.conn_granted += n;
                        } else {
                            c.streams.entry(f.stream).or_default().0 += n;
                        }
                    }
                    _ => {}
                }
            }));
        });
        Self { addr, credit }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many more DATA bytes the client may send now: the least of the
    /// connection's credit and that of each stream it sent DATA on. 0 means
    /// it cannot send until the server reads and grants more.
    pub fn client_credit(&self) -> i64 {
        self.credit.lock().unwrap().left()
    }
}

/// Forwards bytes unchanged, showing each complete frame to `seen` first.
async fn pump_frames(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frames: H2FrameSplitter,
    mut seen: impl FnMut(&H2Frame) + Send + 'static,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        frames.feed(&buf[..n]).iter().for_each(&mut seen);
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The SPIFFE identity of the billing client of [`pki`].
pub const BILLING: &str = "spiffe://example.org/ns/billing/sa/billing";
/// The SPIFFE identity of a client [`pki`] signs that no table authorizes.
pub const INTRUDER: &str = "spiffe://example.org/ns/other/sa/other";

/// A CA, a server certificate for `localhost` signed by it, and two client
/// identities (SPIFFE URIs [`BILLING`] and [`INTRUDER`]), in PEM files under
/// `dir` (`ca.pem`, `server.pem`/`.key`, `billing.pem`/`.key`,
/// `intruder.pem`/`.key`), generated at test time.
pub struct Pki {
    pub dir: std::path::PathBuf,
    pub ca_pem: String,
    pub billing: Identity,
    pub intruder: Identity,
}

pub fn pki() -> Pki {
    let dir = std::env::temp_dir().join(format!(
        "peg-pki-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();

    let client = |uri: &str, file: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        Identity::from_pem(cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca.pem(),
        billing: client(BILLING, "billing"),
        intruder: client(INTRUDER, "intruder"),
        dir,
    }
}

/// A TLS channel to `localhost` at `addr`'s port, trusting `ca_pem`; with
/// `identity`, a client certificate too.
pub async fn tls_channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<Identity>,
) -> Channel {
    use tonic::transport::{Certificate, ClientTlsConfig};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS client connects")
}

/// A port on 127.0.0.1 that nothing listens on: bound, noted and freed.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_partner-events-gateway");

/// A run of the binary under test, its stderr read line by line on a
/// thread of its own (so it never blocks on a full pipe); killed if the
/// test ends before [`Spawned::terminate`].
pub struct Spawned {
    child: Option<std::process::Child>,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every stderr line read so far.
    pub log: Vec<String>,
    _state: Option<StateDir>,
}

/// A directory for a gateway's durable queue, removed on drop.
pub struct StateDir {
    pub path: std::path::PathBuf,
}

impl StateDir {
    pub fn new() -> Self {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "peg-state-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }
}

impl Default for StateDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl Spawned {
    /// Starts `command` with stdout discarded and stderr read, and (unless
    /// the test set `PEG_STATE_DIR`) a durable queue directory of its own.
    pub fn start(mut command: std::process::Command) -> Self {
        use std::io::BufRead;
        let state = (!command.get_envs().any(|(k, _)| k == "PEG_STATE_DIR")).then(StateDir::new);
        if let Some(state) = &state {
            command.env("PEG_STATE_DIR", &state.path);
        }
        let mut child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        Self {
            child: Some(child),
            lines,
            log: Vec::new(),
            _state: state,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Reads the log until a line contains `needle` (bounded: 30 s); fails
    /// if the process ends first.
    pub async fn wait_for_line(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while !self.log.iter().any(|l| l.contains(needle)) {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => self.log.push(line),
                Ok(None) => panic!("exited before logging {needle:?}: {:#?}", self.log),
                Err(_) => panic!("no {needle:?} within 30 s: {:#?}", self.log),
            }
        }
    }

    /// Every stderr line read so far, with those waiting taken in.
    pub fn drain(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        self.log.clone()
    }

    /// Sends SIGTERM and waits for the exit; gives its status and the
    /// whole log.
    pub async fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let mut child = self.child.take().unwrap();
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        // The child has exited: its stderr closes, the reader ends, and the
        // channel yields the rest of the log and then None.
        while let Some(line) = self.lines.recv().await {
            self.log.push(line);
        }
        (status, std::mem::take(&mut self.log))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The resident set (`VmRSS`) of process `pid`, in KiB (Linux `/proc`).
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// The request text of a JSON-protocol call with `x-amz-target: target`
/// to the emulator, over HTTP/1.1, as the SDK would not write it.
pub fn emulator_request(target: &str, body: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/x-amz-json-1.1\r\n\
         x-amz-target: {target}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A raw HTTP/1.1 answer: its status line, its headers lower-cased, and its body.
pub struct RawAnswer {
    pub status_line: String,
    pub headers: String,
    pub body: String,
}

impl RawAnswer {
    pub fn status(&self) -> u16 {
        self.status_line.split(' ').nth(1).unwrap().parse().unwrap()
    }
}

/// POSTs [`emulator_request`] to the emulator at `addr` and reads the answer.
pub async fn post_emulator(addr: std::net::SocketAddr, target: &str, body: &str) -> RawAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(emulator_request(target, body).as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let (status_line, headers) = head.split_once("\r\n").unwrap();
    RawAnswer {
        status_line: status_line.to_string(),
        headers: headers.to_lowercase(),
        body: body.to_string(),
    }
}
