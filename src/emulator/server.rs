//! The HTTP side: an axum router on `POST /` that dispatches on
//! `x-amz-target` (and `GET /_emulator/counts`, the tally as JSON), the
//! [`Emulator`] entry points and the [`EmulatorHandle`].
//! The waiting of faults happens here (delays, hangs), and so does dropping
//! a connection without an answer, through a TCP stream the handler can cut.

use std::{
    future::Future,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::{Body, Bytes},
    extract::{
        connect_info::Connected, rejection::BytesRejection, ConnectInfo, DefaultBodyLimit,
        State as AxumState,
    },
    response::Response,
    routing::{get, post},
    serve::{IncomingStream, Listener},
    Router,
};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use super::{
    faults::{FaultBook, FaultPlan, FaultRule, HANG_LIMIT},
    lifecycle,
    quota::{Quota, QuotaError},
    record::{EventsFile, ReceivedEntry, RecordCounts, RecordedCall, RecordedEvent},
    service::{Answer, Delivery, Limits, State},
    sources::{PartnerSource, SeedSource, SourceError, SourceState, Sources, DEFAULT_REGION},
    wire::{
        ErrorBody, Reply, AUTHORIZATION_HEADER, CONTENT_TYPE_JSON, ERROR_TYPE_HEADER,
        HTML_ERROR_PAGE, REQUEST_ID_HEADER, TARGET_HEADER, TARGET_PUT_PARTNER_EVENTS,
        UNKNOWN_OPERATION_EXCEPTION,
    },
    EmulatorConfig,
};

/// JSON escaping can make a body up to 6 times its AWS size (`\u00XX`), plus
/// field names; anything beyond this is refused before parsing so a runaway
/// client cannot exhaust memory. The call-size rule always triggers first.
fn body_limit(max_call_bytes: usize) -> usize {
    max_call_bytes.saturating_mul(6).saturating_add(64 * 1024)
}

/// The path of the counts, for callers in another process (the bench, an
/// out-of-process test): `GET` answers [`RecordCounts`] as JSON.
pub const COUNTS_PATH: &str = "/_emulator/counts";

/// Now, in epoch seconds: the clock of the source lifecycle.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// State shared by the server task and every handle.
#[derive(Debug)]
struct Shared {
    limits: Limits,
    state: Mutex<State>,
    /// Set once shutdown begins, so that hung calls and delays end and the
    /// graceful drain does not wait for them.
    stopping: watch::Sender<bool>,
}

impl Shared {
    fn new(config: EmulatorConfig) -> io::Result<Self> {
        config.quota.check().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("emulator quota {:?}: {e}", config.quota),
            )
        })?;
        let events_file = config
            .events_file
            .as_deref()
            .map(EventsFile::open)
            .transpose()?;
        let mut sources = Sources::default();
        sources
            .seed(&config.sources, unix_now())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut state = State::new(
            FaultBook::new(config.faults, config.fault_seed),
            sources,
            events_file,
            config.max_recorded_events,
        );
        state.set_quota(config.quota);
        Ok(Self {
            limits: Limits {
                max_call_bytes: config.max_call_bytes,
                log_payloads: config.log_payloads,
            },
            state: Mutex::new(state),
            stopping: watch::Sender::new(false),
        })
    }

    /// The state survives a panic elsewhere (say, a failed assertion in a
    /// test thread holding a handle): the crate's one policy
    /// ([`crate::sync`]).
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Waits `duration`, or less if shutdown begins.
    async fn wait(&self, duration: Duration) {
        let mut stopping = self.stopping.subscribe();
        let _ = tokio::time::timeout(duration, async move {
            // An error means the sender is gone: nothing to wait for.
            stopping.wait_for(|stop| *stop).await.is_ok()
        })
        .await;
    }
}

/// A local EventBridge: AWS JSON 1.1 on `POST /`, reached through the real
/// AWS SDK with `endpoint_url`. Signatures are not checked.
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// Serves on `listener` until `shutdown` resolves, then drains open
    /// connections. Fails only if the events file cannot be opened, a seed
    /// source is invalid, or the listener fails.
    pub async fn serve(
        listener: TcpListener,
        config: EmulatorConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let shared = Arc::new(Shared::new(config)?);
        serve_shared(listener, shared, shutdown).await
    }

    /// Binds `addr` (e.g. `127.0.0.1:0`), serves in a task on the current
    /// tokio runtime, and returns a handle to inspect and stop it. The server
    /// stops on [`EmulatorHandle::shutdown`] or when every clone of the
    /// handle has been dropped.
    pub async fn spawn(addr: SocketAddr, config: EmulatorConfig) -> io::Result<EmulatorHandle> {
        let shared = Arc::new(Shared::new(config)?);
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(false);
        let server_shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let shutdown = async move {
                // An error means every handle is gone: stop as well.
                let _ = stop_rx.wait_for(|stop| *stop).await;
            };
            if let Err(error) = serve_shared(listener, server_shared, shutdown).await {
                tracing::error!(%error, "EventBridge emulator failed");
            }
            done_tx.send_replace(true);
        });
        Ok(EmulatorHandle {
            local_addr,
            shared,
            stop: Arc::new(stop_tx),
            done: done_rx,
        })
    }
}

async fn serve_shared(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let signal_shared = Arc::clone(&shared);
    let shutdown = async move {
        shutdown.await;
        signal_shared.stopping.send_replace(true);
    };
    let app = Router::new()
        .route("/", post(dispatch))
        .route(COUNTS_PATH, get(counts))
        .layer(DefaultBodyLimit::max(body_limit(
            shared.limits.max_call_bytes,
        )))
        .with_state(shared);
    axum::serve(
        CuttableListener(listener),
        app.into_make_service_with_connect_info::<ConnectionCut>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Routes on `x-amz-target`, as AWS JSON services do.
async fn dispatch(
    AxumState(shared): AxumState<Arc<Shared>>,
    ConnectInfo(cut): ConnectInfo<ConnectionCut>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let target = headers
        .get(TARGET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if target == TARGET_PUT_PARTNER_EVENTS {
        let region = region_of(&headers);
        let answer = match body {
            Ok(body) => shared
                .lock()
                .put_partner_events(&shared.limits, &region, &body),
            Err(rejection) => {
                let status = rejection.status().as_u16();
                return into_response(shared.lock().unreadable_body(&region, status));
            }
        };
        return deliver(&shared, &cut, answer).await;
    }
    // An unreadable body reads as empty: a lifecycle operation refuses it
    // as not JSON.
    let body = body.unwrap_or_default();
    let reply = lifecycle::answer(
        shared.lock().sources_mut(),
        target,
        &region_of(&headers),
        &body,
        unix_now(),
    )
    .unwrap_or_else(|| {
        Reply::error(
            400,
            UNKNOWN_OPERATION_EXCEPTION,
            "The operation named by x-amz-target is not supported by this emulator.",
        )
    });
    into_response(reply)
}

/// `GET /_emulator/counts`: the whole tally, as [`EmulatorHandle::counts`].
async fn counts(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    let counts = shared.lock().counts();
    let mut response = Response::new(Body::from(serde_json::to_vec(&counts).unwrap_or_default()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Waits out the answer's delay, then replies, hangs or drops.
async fn deliver(shared: &Shared, cut: &ConnectionCut, answer: Answer) -> Response {
    if !answer.delay.is_zero() {
        shared.wait(answer.delay).await;
    }
    match answer.delivery {
        Delivery::Reply(reply) => into_response(reply),
        Delivery::Hang => {
            // A client that gives up closes its end; the server may only
            // notice when it writes, so the hang is bounded.
            shared.wait(HANG_LIMIT).await;
            cut.cut();
            Response::new(Body::empty())
        }
        Delivery::Drop => {
            // The response is never written: hyper's first write fails and
            // it closes the connection.
            cut.cut();
            Response::new(Body::empty())
        }
    }
}

/// The region in the SigV4 credential scope
/// (`Credential=AKID/20240101/eu-west-1/events/aws4_request`), or
/// [`DEFAULT_REGION`].
fn region_of(headers: &HeaderMap) -> String {
    headers
        .get(AUTHORIZATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|auth| {
            let scope = auth.split("Credential=").nth(1)?;
            let scope = scope.split([',', ' ']).next()?;
            let region = scope.split('/').nth(2)?;
            (!region.is_empty()).then(|| region.to_string())
        })
        .unwrap_or_else(|| DEFAULT_REGION.to_string())
}

/// The switch that cuts one connection: once set, its stream fails every
/// read and write, so hyper gives up on the connection and closes it
/// without sending what it was about to.
#[derive(Clone, Debug, Default)]
struct ConnectionCut(Arc<AtomicBool>);

impl ConnectionCut {
    fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn is_cut(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn check(&self) -> io::Result<()> {
        if self.is_cut() {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection dropped by an emulator fault",
            ))
        } else {
            Ok(())
        }
    }
}

impl Connected<IncomingStream<'_, CuttableListener>> for ConnectionCut {
    fn connect_info(stream: IncomingStream<'_, CuttableListener>) -> Self {
        stream.io().cut.clone()
    }
}

/// A TCP listener whose connections can be cut by their handler.
struct CuttableListener(TcpListener);

impl Listener for CuttableListener {
    type Io = CuttableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (inner, addr) = Listener::accept(&mut self.0).await;
        let stream = CuttableStream {
            inner,
            cut: ConnectionCut::default(),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A TCP stream that fails once its [`ConnectionCut`] is set.
#[derive(Debug)]
struct CuttableStream {
    inner: TcpStream,
    cut: ConnectionCut,
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.cut.check()?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.cut.check()?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.cut.check()?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.cut.check()?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

fn into_response(reply: Reply) -> Response {
    let status = reply.status();
    let (content_type, error_type, body) = match reply {
        Reply::Accepted(response) => (
            CONTENT_TYPE_JSON,
            None,
            serde_json::to_vec(&response).unwrap_or_default(),
        ),
        Reply::Json(value) => (
            CONTENT_TYPE_JSON,
            None,
            serde_json::to_vec(&value).unwrap_or_default(),
        ),
        Reply::Error {
            error_type,
            message,
            ..
        } => {
            let body = serde_json::to_vec(&ErrorBody {
                error_type: &error_type,
                message: &message,
            })
            .unwrap_or_default();
            (CONTENT_TYPE_JSON, Some(error_type), body)
        }
        Reply::Html { .. } => ("text/html; charset=utf-8", None, HTML_ERROR_PAGE.into()),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert(REQUEST_ID_HEADER, id);
    }
    // The SDK prefers this header to the body's `__type`. A fault's error
    // type that is no valid header value still travels in the body.
    if let Some(Ok(value)) = error_type.as_deref().map(HeaderValue::from_str) {
        headers.insert(ERROR_TYPE_HEADER, value);
    }
    response
}

/// A running emulator started by [`Emulator::spawn`]: its address, what it
/// recorded, its fault rules and sources, and a way to stop it. Clones share
/// all of it.
#[derive(Clone)]
pub struct EmulatorHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<watch::Sender<bool>>,
    done: watch::Receiver<bool>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// The address the emulator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL to give the SDK as `endpoint_url`, e.g. `http://127.0.0.1:4010`.
    /// A wildcard bind address is replaced by loopback.
    pub fn endpoint_url(&self) -> String {
        let mut addr = self.local_addr;
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
            _ => {}
        }
        format!("http://{addr}")
    }

    /// The accepted events that were delivered, in the order accepted:
    /// events for `ACTIVE` sources and for sources the emulator has never
    /// heard of (so a setup without lifecycle calls delivers everything).
    /// Only the last [`EmulatorConfig::max_recorded_events`]; see
    /// [`EmulatorHandle::counts`] for the whole tally.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.shared.lock().events()
    }

    /// The accepted events that were not delivered because their source
    /// exists and is `PENDING` or `DELETED` (AWS accepts them without a
    /// word), in the order accepted. Only the last
    /// [`EmulatorConfig::max_recorded_events`].
    pub fn undelivered(&self) -> Vec<RecordedEvent> {
        self.shared.lock().undelivered()
    }

    /// The entries of every `PutPartnerEvents` call with a readable body,
    /// in the order received, whatever became of the call: accepted, failed
    /// whole or per entry, hung, dropped. Each is recorded on receipt,
    /// before any injected delay or hang, so a client that gave up still
    /// finds its attempt here; a resent entry appears once per call that
    /// carried it. Only the last [`EmulatorConfig::max_recorded_events`]
    /// (`counts().received` is the whole number).
    pub fn received(&self) -> Vec<ReceivedEntry> {
        self.shared.lock().received()
    }

    /// How many times an entry with this `Detail` text was received (see
    /// [`EmulatorHandle::received`]): the number of calls that carried it,
    /// or more if a call carried it twice. Counted over the retained
    /// record, so exact only while `counts().received` has not exceeded
    /// [`EmulatorConfig::max_recorded_events`]: a test that relies on it
    /// sets the bound above what it sends.
    pub fn received_count(&self, detail: &str) -> usize {
        self.shared.lock().received_count(detail)
    }

    /// The `PutPartnerEvents` calls received, failed ones included, in
    /// order. Only the last [`EmulatorConfig::max_recorded_events`].
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.shared.lock().calls()
    }

    /// The whole tally since the start or the last
    /// [`clear`](EmulatorHandle::clear): calls, received entries and
    /// accepted events (per source too), never truncated by the bound.
    pub fn counts(&self) -> RecordCounts {
        self.shared.lock().counts()
    }

    /// Puts a quota of `calls_per_second` (0: unlimited) and `burst` calls
    /// per region in force, every region starting with a full bucket.
    /// Refused, and the quota in force kept, when the burst is 0 with a
    /// rate, or the rate is negative or not finite.
    pub fn set_quota(&self, calls_per_second: f64, burst: u32) -> Result<(), QuotaError> {
        let quota = Quota::new(calls_per_second, burst)?;
        self.shared.lock().set_quota(quota);
        Ok(())
    }

    /// The quota in force.
    pub fn quota(&self) -> Quota {
        self.shared.lock().quota()
    }

    /// Replaces the fault rules; firing counts start afresh, the PRNG goes
    /// on where it was.
    pub fn set_faults(&self, faults: Vec<FaultRule>) {
        self.shared.lock().set_faults(faults);
    }

    /// Replaces the fault rules and restarts the PRNG from the plan's seed:
    /// from here on, the same requests give the same faults as in any
    /// emulator given the same plan.
    pub fn set_plan(&self, plan: FaultPlan) {
        let mut state = self.shared.lock();
        state.set_faults(plan.rules);
        state.faults_mut().reseed(plan.seed);
    }

    /// Restarts the PRNG from `seed`; the rules and their counts stay.
    pub fn set_seed(&self, seed: u64) {
        self.shared.lock().faults_mut().reseed(seed);
    }

    /// Forgets the recorded events (delivered or not), received entries and
    /// calls, and zeroes the counts; the fault rules, the quota (and how
    /// much of it is used) and the sources stay.
    pub fn clear(&self) {
        self.shared.lock().clear();
    }

    /// Every partner event source the emulator knows, by name.
    pub fn sources(&self) -> Vec<PartnerSource> {
        self.shared.lock().sources().all()
    }

    /// The source named `source_name`, if the emulator knows it.
    pub fn source(&self, source_name: &str) -> Option<PartnerSource> {
        self.shared.lock().sources().get(source_name).ok().cloned()
    }

    /// Adds a source as if the partner had created it (and set its state),
    /// without going through `CreatePartnerEventSource`.
    pub fn add_source(&self, source: SeedSource) -> Result<(), SourceError> {
        self.shared
            .lock()
            .sources_mut()
            .seed(std::slice::from_ref(&source), unix_now())
    }

    /// Plays the customer creating an event bus for the source: `ACTIVE`,
    /// its events delivered from now on. Fails for an unknown or deleted
    /// source.
    pub fn associate(&self, source_name: &str) -> Result<(), SourceError> {
        self.shared
            .lock()
            .sources_mut()
            .associate(source_name, unix_now())
    }

    /// Plays the customer deleting its event bus: back to `PENDING` with a
    /// new expiration. Fails unless the source is `ACTIVE`.
    pub fn delete_bus(&self, source_name: &str) -> Result<(), SourceError> {
        self.shared
            .lock()
            .sources_mut()
            .delete_bus(source_name, unix_now())
    }

    /// Sets a known source's state, whatever it was.
    pub fn set_source_state(
        &self,
        source_name: &str,
        state: SourceState,
    ) -> Result<(), SourceError> {
        self.shared
            .lock()
            .sources_mut()
            .set_state(source_name, state, unix_now())
    }

    /// Asks the server to stop: it stops accepting and drains open
    /// connections. Returns at once; see [`EmulatorHandle::stopped`].
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Resolves once the server task has finished (after [`shutdown`]).
    ///
    /// [`shutdown`]: EmulatorHandle::shutdown
    pub async fn stopped(&self) {
        let mut done = self.done.clone();
        // An error means the task is gone (it panicked): stopped as well.
        let _ = done.wait_for(|done| *done).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_limit_leaves_room_for_escaping() {
        assert_eq!(body_limit(262_144), 262_144 * 6 + 65_536);
        assert_eq!(body_limit(usize::MAX), usize::MAX);
    }

    #[test]
    fn error_replies_carry_the_type_in_header_and_body() {
        let response = into_response(Reply::error(400, "ValidationException", "bad"));
        assert_eq!(response.status(), 400);
        let h = response.headers();
        assert_eq!(h[header::CONTENT_TYPE], CONTENT_TYPE_JSON);
        assert_eq!(h[ERROR_TYPE_HEADER], "ValidationException");
        assert!(h.contains_key(REQUEST_ID_HEADER));

        let response = into_response(Reply::html(502));
        assert_eq!(response.status(), 502);
        assert!(!response.headers().contains_key(ERROR_TYPE_HEADER));
        assert!(response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
    }

    #[test]
    fn the_region_comes_from_the_credential_scope() {
        let mut headers = HeaderMap::new();
        assert_eq!(region_of(&headers), "us-east-1");
        headers.insert(
            AUTHORIZATION_HEADER,
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKID/20240101/eu-west-1/events/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=abc",
            ),
        );
        assert_eq!(region_of(&headers), "eu-west-1");
        headers.insert(
            AUTHORIZATION_HEADER,
            HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=AKID/20240101"),
        );
        assert_eq!(region_of(&headers), "us-east-1");
    }

    #[test]
    fn json_replies_are_200_json() {
        let response = into_response(Reply::json(&serde_json::json!({"Arn": "a"})));
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE_JSON);
        assert!(!response.headers().contains_key(ERROR_TYPE_HEADER));
    }

    #[tokio::test]
    async fn an_invalid_seed_source_fails_the_start() {
        let config = EmulatorConfig {
            sources: vec![SeedSource::new(
                "not-a-partner-source",
                "123456789012",
                SourceState::Active,
            )],
            ..EmulatorConfig::default()
        };
        let err = Emulator::spawn("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("not-a-partner-source"), "{err}");
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let handle = Emulator::spawn("127.0.0.1:0".parse().unwrap(), EmulatorConfig::default())
            .await
            .unwrap();
        let addr = handle.local_addr();
        assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
        handle.clone().shutdown();
        handle.stopped().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn a_wildcard_address_is_reached_through_loopback() {
        let handle = Emulator::spawn("0.0.0.0:0".parse().unwrap(), EmulatorConfig::default())
            .await
            .unwrap();
        let port = handle.local_addr().port();
        assert_eq!(handle.endpoint_url(), format!("http://127.0.0.1:{port}"));
        handle.shutdown();
    }
}
