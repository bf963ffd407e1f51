//! Bounds on client connections, so that clients that connect and then say
//! nothing cannot hold the gateway's memory and file descriptors.
//!
//! [`Incoming`] accepts on a listener and refuses (closes at once, counted)
//! a connection beyond `max_connections`. It hands a plaintext connection
//! to tonic only once the client has sent the HTTP/2 preface and its first
//! SETTINGS frame, and closes it if that has not happened within the
//! handshake timeout: a client that says nothing never costs hyper's
//! per-connection buffers. Each connection handed on is a [`Connection`],
//! an IO type that replays those first bytes to hyper and times its own
//! life: it errors its reads and writes, so that hyper drops it, when no
//! call has been open on it for the idle timeout. "No call open"
//! is known from [`CallTrackingLayer`]: every request finds its connection's
//! [`ConnectionInfo`] in its extensions (tonic puts it there from
//! [`Connected`]) and holds a guard until its response body ends, so an open
//! stream keeps its connection busy. The timer is polled with every read and
//! write, and hyper always has a read pending on an HTTP/2 connection: the
//! task wakes when the timer fires, not only on the next byte.
//!
//! With TLS the bytes below rustls are ciphertext and tonic runs the TLS
//! handshake after [`Incoming`]: the connection is handed on at once, and its
//! timer closes it if the TLS handshake is not done within the handshake
//! timeout (done when tonic hands the stream to hyper, which is when it asks
//! for the [`ConnectInfo`](Connected::ConnectInfo)). A client that completes
//! TLS but sends no HTTP/2 preface is closed by the idle timeout instead.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::{future::BoxFuture, stream::FuturesUnordered, StreamExt};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::{Instant, Sleep},
};
use tonic::transport::server::{Connected, TlsConnectInfo};

use crate::metrics::{ClosedLabels, ListenerLabels, Metrics};

/// How long a client has, from accept, to send the HTTP/2 preface and its
/// first SETTINGS frame (with TLS: to finish the TLS handshake). A client
/// on a slow link needs well under a second; five leave room for a
/// starved CPU.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection with no call open for this long is closed. Five minutes:
/// pooled clients keep their connections between bursts, and it is below
/// the 350 s after which an AWS NLB silently forgets an idle flow.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// HTTP/2 PINGs to each client this often, to find peers that vanished
/// without closing (a node that died, a NAT that forgot the flow).
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// A PING not answered within this closes the connection (gRPC's default).
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Connections open at once per listener. Internal callers hold a few each;
/// at ~64 KiB per idle TLS connection, 4,096 fit the deployment's 512 MiB
/// with room for the entries in flight, and stay far below the fd limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;

/// The client's first bytes on an HTTP/2 connection (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An HTTP/2 frame header: 24-bit length, type, flags, 31-bit stream id.
const FRAME_HEADER_LEN: usize = 9;
const FRAME_TYPE_SETTINGS: u8 = 0x4;
const FLAG_ACK: u8 = 0x1;
/// Connections accepted in one poll of [`Incoming`] before it yields to the
/// runtime, so that a flood of connections cannot starve the other tasks.
const ACCEPTS_PER_POLL: usize = 64;
/// Read size while admitting: a client's preface and SETTINGS are ~50 bytes.
const ADMISSION_READ_BYTES: usize = 256;
/// The high bit of [`ConnectionState::calls`]: the connection is closing and
/// admits no new call.
const CLOSING: usize = 1 << (usize::BITS - 1);

/// The limits applied to every connection of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// See [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// See [`DEFAULT_IDLE_TIMEOUT`]; `None`: idle connections stay open.
    pub idle_timeout: Option<Duration>,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Which listener a connection came in on (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// The main gRPC port.
    Grpc,
    /// The plaintext health port.
    Health,
}

impl ListenerKind {
    fn label(self) -> &'static str {
        match self {
            ListenerKind::Grpc => "grpc",
            ListenerKind::Health => "health",
        }
    }
}

/// Why the gateway closed a connection (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No HTTP/2 preface and SETTINGS (or TLS handshake) in time.
    HandshakeTimeout,
    /// No call open for the idle timeout.
    IdleTimeout,
}

impl CloseReason {
    fn label(self) -> &'static str {
        match self {
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
        }
    }
}

/// What the connections of one listener share: the limits, the count of
/// open ones, and the metric handles (resolved once, not per event).
#[derive(Debug)]
struct Shared {
    limits: ConnectionLimits,
    tls: bool,
    open: AtomicUsize,
    open_gauge: Gauge,
    refused: Counter,
    closed_handshake: Counter,
    closed_idle: Counter,
}

impl Shared {
    fn new(limits: ConnectionLimits, tls: bool, metrics: &Metrics, kind: ListenerKind) -> Self {
        let listener = kind.label();
        let closed = |reason: CloseReason| {
            metrics
                .connections_closed
                .get_or_create(&ClosedLabels {
                    listener,
                    reason: reason.label(),
                })
                .clone()
        };
        Self {
            tls,
            open: AtomicUsize::new(0),
            open_gauge: metrics
                .open_connections
                .get_or_create(&ListenerLabels { listener })
                .clone(),
            refused: metrics
                .refused_connections
                .get_or_create(&ListenerLabels { listener })
                .clone(),
            closed_handshake: closed(CloseReason::HandshakeTimeout),
            closed_idle: closed(CloseReason::IdleTimeout),
            limits,
        }
    }

    /// Takes a place for a new connection, or says there is none.
    fn try_open(self: &Arc<Self>) -> Option<Slot> {
        let max = self.limits.max_connections;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        self.open_gauge.inc();
        Some(Slot(self.clone()))
    }

    fn closed(&self, reason: CloseReason) {
        match reason {
            CloseReason::HandshakeTimeout => self.closed_handshake.inc(),
            CloseReason::IdleTimeout => self.closed_idle.inc(),
        };
    }
}

/// One open connection's place in the count; given back on drop.
#[derive(Debug)]
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.open_gauge.dec();
    }
}

/// Accepted connections of one listener, with TCP_NODELAY (without it,
/// Nagle's algorithm and delayed ACKs hold small answers back by ~40 ms),
/// refused beyond `max_connections`, and (plaintext) handed on only once
/// the client has sent its HTTP/2 preface and first SETTINGS frame: until
/// then a connection costs a socket and a small buffer, not hyper's
/// per-connection state. What `serve_with_incoming` takes.
pub struct Incoming {
    listener: TcpListener,
    shared: Arc<Shared>,
    /// Connections reading their client's handshake.
    admitting: FuturesUnordered<BoxFuture<'static, Option<Connection<TcpStream>>>>,
}

impl Incoming {
    /// Accepts on `listener` under `limits`; `tls` says whether tonic will
    /// run TLS over these connections (see the module docs).
    pub fn new(
        listener: TcpListener,
        limits: ConnectionLimits,
        tls: bool,
        metrics: &Metrics,
        kind: ListenerKind,
    ) -> Self {
        Self {
            listener,
            shared: Arc::new(Shared::new(limits, tls, metrics, kind)),
            admitting: FuturesUnordered::new(),
        }
    }
}

impl futures::Stream for Incoming {
    type Item = io::Result<Connection<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        for accepted in 0.. {
            if accepted == ACCEPTS_PER_POLL {
                // Let the runtime breathe; come back at once.
                cx.waker().wake_by_ref();
                break;
            }
            let stream = match this.listener.poll_accept(cx) {
                Poll::Pending => break,
                Poll::Ready(Ok((stream, _))) => stream,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
            };
            let Some(slot) = this.shared.try_open() else {
                // Dropping the stream closes it before anything is read:
                // the client sees EOF (or a reset) and no SETTINGS.
                this.shared.refused.inc();
                tracing::debug!("connection refused: max_connections reached");
                continue;
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
            let addrs = (stream.local_addr().ok(), stream.peer_addr().ok());
            if this.shared.tls {
                // tonic runs the TLS handshake; the timer covers it.
                return Poll::Ready(Some(Ok(Connection::tls(stream, addrs, slot))));
            }
            this.admitting.push(Box::pin(async move {
                let deadline = Instant::now() + slot.0.limits.handshake_timeout;
                let mut stream = stream;
                match admit(&mut stream, deadline).await {
                    Ok(prefix) => Some(Connection::admitted(stream, addrs, slot, prefix)),
                    Err(Refusal::Timeout) => {
                        slot.0.closed(CloseReason::HandshakeTimeout);
                        tracing::debug!(peer = ?addrs.1, "closing connection: no HTTP/2 handshake in time");
                        None
                    }
                    Err(Refusal::NotHttp2) => {
                        tracing::debug!(peer = ?addrs.1, "closing connection: not HTTP/2");
                        None
                    }
                    Err(Refusal::Gone) => None,
                }
            }));
        }
        loop {
            match this.admitting.poll_next_unpin(cx) {
                Poll::Ready(Some(Some(conn))) => return Poll::Ready(Some(Ok(conn))),
                Poll::Ready(Some(None)) => continue,
                // Empty or waiting: the listener and the admissions have
                // the task's waker.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Why a connection was not handed on.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// No preface and SETTINGS by the deadline.
    Timeout,
    /// The first bytes are not HTTP/2 (the gateway speaks nothing else).
    NotHttp2,
    /// The client closed, or the socket failed.
    Gone,
}

/// Reads the client's preface and first SETTINGS frame by `deadline`;
/// returns every byte read, for hyper to read again.
async fn admit<T: AsyncRead + Unpin>(io: &mut T, deadline: Instant) -> Result<Vec<u8>, Refusal> {
    let mut parser = PrefaceParser::default();
    let mut read = Vec::new();
    let handshake = async {
        let mut chunk = [0u8; ADMISSION_READ_BYTES];
        loop {
            let n = io.read(&mut chunk).await.map_err(|_| Refusal::Gone)?;
            if n == 0 {
                return Err(Refusal::Gone);
            }
            read.extend_from_slice(&chunk[..n]);
            match parser.feed(&chunk[..n]) {
                Progress::More => {}
                Progress::Done => return Ok(()),
                Progress::Invalid => return Err(Refusal::NotHttp2),
            }
        }
    };
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(())) => Ok(read),
        Ok(Err(refusal)) => Err(refusal),
        Err(_) => Err(Refusal::Timeout),
    }
}

/// The state of one connection that its calls can reach.
#[derive(Debug)]
struct ConnectionState {
    /// Calls open, plus [`CLOSING`] once the connection is being closed.
    calls: AtomicUsize,
    /// When the last call ended (or the handshake did), in ms from `opened`.
    idle_since_ms: AtomicU64,
    opened: Instant,
    /// Set when the TLS handshake is done (plaintext connections are
    /// handed on only once their HTTP/2 handshake is).
    tls_done: AtomicBool,
}

impl ConnectionState {
    fn new() -> Self {
        Self {
            calls: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            opened: Instant::now(),
            tls_done: AtomicBool::new(false),
        }
    }

    fn mark_idle_now(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.idle_since_ms.store(ms, Ordering::Release);
    }

    fn idle_since(&self) -> Instant {
        self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }

    /// Admits a call unless the connection is closing.
    fn enter(self: &Arc<Self>) -> Option<CallGuard> {
        self.calls
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n & CLOSING == 0).then_some(n + 1)
            })
            .ok()?;
        Some(CallGuard(self.clone()))
    }

    /// Marks the connection closing if no call is open; from then on no
    /// call is admitted, so no handler runs on a connection being dropped.
    fn close_if_idle(&self) -> bool {
        self.calls
            .compare_exchange(0, CLOSING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn open_calls(&self) -> usize {
        self.calls.load(Ordering::Acquire) & !CLOSING
    }
}

/// Held by a call from its request to the end of its response body.
#[derive(Debug)]
struct CallGuard(Arc<ConnectionState>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        // Stamp before counting down: the idle timer must never see zero
        // calls with the stamp of an earlier idle period.
        self.0.mark_idle_now();
        self.0.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's addresses and its call count: tonic puts this in every
/// request's extensions (with TLS, also wrapped in [`TlsConnectInfo`]).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    local_addr: Option<SocketAddr>,
    remote_addr: Option<SocketAddr>,
    state: Arc<ConnectionState>,
}

impl ConnectionInfo {
    /// The gateway's end of the connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The client's end of the connection.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }
}

/// The client's TLS certificate chain, from a request's extensions.
/// `Request::peer_certs` looks for tonic's own TCP connect info, which
/// connections accepted through [`Incoming`] do not carry.
pub fn peer_certs(
    extensions: &http::Extensions,
) -> Option<Arc<Vec<tonic::transport::CertificateDer<'static>>>> {
    extensions
        .get::<TlsConnectInfo<ConnectionInfo>>()
        .and_then(|i| i.peer_certs())
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TLS: tonic is running the TLS handshake.
    TlsHandshake,
    /// HTTP/2 is up: the idle timer runs.
    Open,
    /// Closed by the gateway: every read and write fails.
    Closed(CloseReason),
}

/// An accepted stream that closes itself on the handshake (TLS) and idle
/// timeouts (see the module docs).
#[derive(Debug)]
pub struct Connection<T> {
    io: T,
    /// Bytes read during admission, given to hyper before the socket's.
    prefix: Vec<u8>,
    prefix_read: usize,
    info: ConnectionInfo,
    phase: Phase,
    /// The TLS handshake deadline, then the next idle check; `None` when
    /// there is nothing left to time (no idle timeout).
    timer: Option<Pin<Box<Sleep>>>,
    slot: Slot,
}

type Addrs = (Option<SocketAddr>, Option<SocketAddr>);

impl<T> Connection<T> {
    /// A plaintext connection whose client has sent `prefix`, a complete
    /// HTTP/2 handshake: idle from now.
    fn admitted(io: T, addrs: Addrs, slot: Slot, prefix: Vec<u8>) -> Self {
        let mut conn = Self::new(io, addrs, slot, Phase::Open, prefix);
        conn.info.state.mark_idle_now();
        let idle = conn.shared().limits.idle_timeout;
        conn.timer = idle.map(|idle| Box::pin(tokio::time::sleep(idle)));
        conn
    }

    /// A connection tonic will run TLS over: the handshake deadline runs.
    fn tls(io: T, addrs: Addrs, slot: Slot) -> Self {
        let mut conn = Self::new(io, addrs, slot, Phase::TlsHandshake, Vec::new());
        let deadline = conn.info.state.opened + conn.shared().limits.handshake_timeout;
        conn.timer = Some(Box::pin(tokio::time::sleep_until(deadline)));
        conn
    }

    fn new(
        io: T,
        (local_addr, remote_addr): Addrs,
        slot: Slot,
        phase: Phase,
        prefix: Vec<u8>,
    ) -> Self {
        Self {
            io,
            prefix,
            prefix_read: 0,
            info: ConnectionInfo {
                local_addr,
                remote_addr,
                state: Arc::new(ConnectionState::new()),
            },
            phase,
            timer: None,
            slot,
        }
    }

    fn shared(&self) -> &Shared {
        &self.slot.0
    }

    fn close(&mut self, reason: CloseReason) -> io::Error {
        self.phase = Phase::Closed(reason);
        self.timer = None;
        self.shared().closed(reason);
        tracing::debug!(reason = reason.label(), peer = ?self.info.remote_addr, "closing connection");
        closed_error(reason)
    }

    /// Polls the timer (registering the task's waker with it) and acts on
    /// it; an error means the connection is closed.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Phase::Closed(reason) = self.phase {
            return Err(closed_error(reason));
        }
        loop {
            let Some(timer) = self.timer.as_mut() else {
                return Ok(());
            };
            if timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            let state = &self.info.state;
            if self.phase == Phase::TlsHandshake {
                if !state.tls_done.load(Ordering::Acquire) {
                    return Err(self.close(CloseReason::HandshakeTimeout));
                }
                self.phase = Phase::Open;
            }
            let Some(idle) = self.shared().limits.idle_timeout else {
                self.timer = None;
                return Ok(());
            };
            let now = Instant::now();
            let next = if state.open_calls() > 0 {
                now + idle
            } else {
                let due = state.idle_since() + idle;
                if due > now {
                    due
                } else if state.close_if_idle() {
                    return Err(self.close(CloseReason::IdleTimeout));
                } else {
                    // A call started since the check.
                    now + idle
                }
            };
            if let Some(timer) = self.timer.as_mut() {
                timer.as_mut().reset(next);
            }
        }
    }
}

fn closed_error(reason: CloseReason) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, reason.label())
}

impl<T: AsyncRead + Unpin> AsyncRead for Connection<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.poll_timer(cx)?;
        if this.prefix_read < this.prefix.len() {
            let rest = &this.prefix[this.prefix_read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.prefix_read += n;
            if this.prefix_read == this.prefix.len() {
                this.prefix = Vec::new();
                this.prefix_read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Connection<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.poll_timer(cx)?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.poll_timer(cx)?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.poll_timer(cx)?;
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<T> Connected for Connection<T> {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        // tonic asks when it hands the stream to hyper: with TLS, that is
        // when the TLS handshake is done.
        if self.shared().tls && !self.info.state.tls_done.swap(true, Ordering::AcqRel) {
            self.info.state.mark_idle_now();
        }
        self.info.clone()
    }
}

/// Whether the client's first bytes are a complete HTTP/2 handshake yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    More,
    Done,
    /// Not HTTP/2.
    Invalid,
}

/// Follows the client preface and the SETTINGS frame that must come first
/// after it (RFC 9113 §3.4), byte by byte: a client may trickle them.
#[derive(Debug, Default)]
struct PrefaceParser {
    seen: usize,
    header: [u8; FRAME_HEADER_LEN],
    /// Payload bytes of the SETTINGS frame still to come, once its header is read.
    payload_left: Option<usize>,
    invalid: bool,
}

impl PrefaceParser {
    fn feed(&mut self, bytes: &[u8]) -> Progress {
        for &b in bytes {
            if self.invalid {
                return Progress::Invalid;
            }
            if let Some(left) = self.payload_left.as_mut() {
                if *left == 0 {
                    return Progress::Done;
                }
                *left -= 1;
                continue;
            }
            if self.seen < PREFACE.len() {
                if b != PREFACE[self.seen] {
                    self.invalid = true;
                    return Progress::Invalid;
                }
            } else {
                self.header[self.seen - PREFACE.len()] = b;
            }
            self.seen += 1;
            if self.seen == PREFACE.len() + FRAME_HEADER_LEN {
                let h = self.header;
                let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                if h[3] != FRAME_TYPE_SETTINGS || h[4] & FLAG_ACK != 0 || stream != 0 {
                    self.invalid = true;
                    return Progress::Invalid;
                }
                self.payload_left = Some(len);
            }
        }
        match self.payload_left {
            _ if self.invalid => Progress::Invalid,
            Some(0) => Progress::Done,
            _ => Progress::More,
        }
    }
}

/// Tracks the calls open on each connection (see the module docs); a call
/// arriving on a connection the idle timer is closing is answered
/// UNAVAILABLE without reaching a handler, so the client may safely retry.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallTrackingLayer;

impl<S> tower::Layer<S> for CallTrackingLayer {
    type Service = CallTracking<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallTracking { inner }
    }
}

/// The service [`CallTrackingLayer`] makes.
#[derive(Debug, Clone)]
pub struct CallTracking<S> {
    inner: S,
}

type Body = tonic::body::Body;

impl<S> tower::Service<http::Request<Body>> for CallTracking<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let guard = match request.extensions().get::<ConnectionInfo>() {
            None => None,
            Some(info) => match info.state.enter() {
                Some(guard) => Some(guard),
                None => {
                    let refused = tonic::Status::unavailable(
                        "connection closing after its idle timeout; retry on a new connection",
                    )
                    .into_http();
                    return Box::pin(async move { Ok(refused) });
                }
            },
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(match guard {
                Some(guard) => response.map(|inner| {
                    Body::new(TrackedBody {
                        inner,
                        guard: Some(guard),
                    })
                }),
                None => response,
            })
        })
    }
}

/// A response body holding its call's guard until it ends or is dropped
/// (a stream the client reset is dropped by hyper).
struct TrackedBody {
    inner: Body,
    guard: Option<CallGuard>,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const SETTINGS_EMPTY: [u8; 9] = [0, 0, 0, FRAME_TYPE_SETTINGS, 0, 0, 0, 0, 0];

    fn handshake() -> Vec<u8> {
        let mut v = PREFACE.to_vec();
        // One setting (6 bytes): SETTINGS_ENABLE_PUSH = 0.
        v.extend_from_slice(&[0, 0, 6, FRAME_TYPE_SETTINGS, 0, 0, 0, 0, 0]);
        v.extend_from_slice(&[0, 2, 0, 0, 0, 0]);
        v
    }

    #[test]
    fn the_parser_follows_a_preface_and_settings_in_any_chunks() {
        let all = handshake();
        let mut p = PrefaceParser::default();
        assert_eq!(p.feed(&all), Progress::Done);
        let mut p = PrefaceParser::default();
        for (i, b) in all.iter().enumerate() {
            let want = if i + 1 == all.len() {
                Progress::Done
            } else {
                Progress::More
            };
            assert_eq!(p.feed(std::slice::from_ref(b)), want, "byte {i}");
        }
        let mut p = PrefaceParser::default();
        let mut empty = PREFACE.to_vec();
        empty.extend_from_slice(&SETTINGS_EMPTY);
        assert_eq!(p.feed(&empty), Progress::Done);
    }

    #[test]
    fn the_parser_refuses_what_is_not_http2() {
        let mut p = PrefaceParser::default();
        assert_eq!(p.feed(b"GET / HTTP/1.1\r\n"), Progress::Invalid);
        assert_eq!(p.feed(PREFACE), Progress::Invalid, "stays refused");

        let mut p = PrefaceParser::default();
        assert_eq!(p.feed(PREFACE), Progress::More, "preface alone");
        // A PING where SETTINGS must come.
        assert_eq!(p.feed(&[0, 0, 8, 0x6, 0, 0, 0, 0, 0]), Progress::Invalid);

        let mut p = PrefaceParser::default();
        p.feed(PREFACE);
        // A SETTINGS ACK is not the client's SETTINGS.
        assert_eq!(
            p.feed(&[0, 0, 0, FRAME_TYPE_SETTINGS, FLAG_ACK, 0, 0, 0, 0]),
            Progress::Invalid
        );
    }

    fn shared(limits: ConnectionLimits, tls: bool) -> (Arc<Shared>, Metrics) {
        let metrics = Metrics::new(false);
        let s = Arc::new(Shared::new(limits, tls, &metrics, ListenerKind::Grpc));
        (s, metrics)
    }

    fn limits(handshake_ms: u64, idle_ms: Option<u64>, max: usize) -> ConnectionLimits {
        ConnectionLimits {
            handshake_timeout: Duration::from_millis(handshake_ms),
            idle_timeout: idle_ms.map(Duration::from_millis),
            max_connections: max,
        }
    }

    fn closed_count(metrics: &Metrics, reason: CloseReason) -> u64 {
        metrics
            .connections_closed
            .get_or_create(&ClosedLabels {
                listener: "grpc",
                reason: reason.label(),
            })
            .get()
    }

    /// Reads a connection as hyper would, until the gateway closes it.
    fn read_until_closed<T: AsyncRead + Unpin + Send + 'static>(
        mut conn: Connection<T>,
    ) -> tokio::task::JoinHandle<io::Error> {
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) => return io::Error::other("client closed"),
                    Ok(_) => {}
                    Err(e) => return e,
                }
            }
        })
    }

    /// A connection over an in-memory pipe whose client has shaken hands.
    fn admitted(
        shared: &Arc<Shared>,
    ) -> (
        DuplexStream,
        ConnectionInfo,
        tokio::task::JoinHandle<io::Error>,
    ) {
        let (client, server) = tokio::io::duplex(4096);
        let conn = Connection::admitted(
            server,
            (None, None),
            shared.try_open().unwrap(),
            handshake(),
        );
        let info = conn.connect_info();
        (client, info, read_until_closed(conn))
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_not_admitted_past_the_deadline() {
        let (_client, mut server) = tokio::io::duplex(4096);
        let start = Instant::now();
        let got = admit(&mut server, start + Duration::from_millis(1_000)).await;
        assert_eq!(got, Err(Refusal::Timeout));
        assert_eq!(start.elapsed(), Duration::from_millis(1_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_preface_without_settings_is_not_a_handshake() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(PREFACE).await.unwrap();
        let start = Instant::now();
        let got = admit(&mut server, start + Duration::from_millis(1_000)).await;
        assert_eq!(got, Err(Refusal::Timeout));
        assert_eq!(start.elapsed(), Duration::from_millis(1_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_handshake_is_admitted_with_every_byte_kept() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let mut sent = handshake();
        sent.extend_from_slice(b"and a HEADERS frame after it");
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                for piece in sent.chunks(5) {
                    client.write_all(piece).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                client
            })
        };
        let got = admit(&mut server, Instant::now() + Duration::from_secs(1))
            .await
            .unwrap();
        assert!(sent.starts_with(&got) && got.len() >= handshake().len());
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn what_is_not_http2_is_not_admitted() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(admit(&mut server, deadline).await, Err(Refusal::NotHttp2));
        let (client, mut server) = tokio::io::duplex(4096);
        drop(client);
        assert_eq!(admit(&mut server, deadline).await, Err(Refusal::Gone));
    }

    #[tokio::test]
    async fn hyper_reads_the_admission_bytes_first() {
        let (shared, _metrics) = shared(limits(1_000, None, 10), false);
        let (mut client, server) = tokio::io::duplex(4096);
        let mut conn = Connection::admitted(
            server,
            (None, None),
            shared.try_open().unwrap(),
            b"abc".to_vec(),
        );
        client.write_all(b"def").await.unwrap();
        drop(client);
        let mut all = Vec::new();
        conn.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"abcdef");
    }

    #[tokio::test(start_paused = true)]
    async fn an_admitted_connection_with_no_call_is_closed_when_idle() {
        let (shared, metrics) = shared(limits(1_000, Some(5_000), 10), false);
        let start = Instant::now();
        let (_client, _info, reader) = admitted(&shared);
        let err = reader.await.unwrap();
        assert_eq!(err.to_string(), "idle_timeout");
        assert_eq!(start.elapsed(), Duration::from_millis(5_000));
        assert_eq!(closed_count(&metrics, CloseReason::IdleTimeout), 1);
        assert_eq!(shared.open.load(Ordering::Acquire), 0, "slot given back");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_call_keeps_the_connection() {
        let (shared, metrics) = shared(limits(1_000, Some(2_000), 10), false);
        let (_client, info, reader) = admitted(&shared);
        let guard = info.state.enter().expect("admitted");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!reader.is_finished(), "closed with a call open");
        let ended = Instant::now();
        drop(guard);
        let err = reader.await.unwrap();
        assert_eq!(err.to_string(), "idle_timeout");
        assert_eq!(ended.elapsed(), Duration::from_millis(2_000));
        assert_eq!(closed_count(&metrics, CloseReason::IdleTimeout), 1);
        assert!(info.state.enter().is_none(), "no call after closing");
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_idle_timeout_a_connection_stays() {
        let (shared, _metrics) = shared(limits(1_000, None, 10), false);
        let (client, _info, reader) = admitted(&shared);
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        assert!(!reader.is_finished());
        drop(client);
        assert_eq!(reader.await.unwrap().to_string(), "client closed");
    }

    #[tokio::test(start_paused = true)]
    async fn with_tls_the_handshake_ends_when_tonic_takes_the_stream() {
        let (shared, metrics) = shared(limits(1_000, Some(4_000), 10), true);
        let (_client, server) = tokio::io::duplex(4096);
        let conn = Connection::tls(server, (None, None), shared.try_open().unwrap());
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _info = conn.connect_info();
        let err = read_until_closed(conn).await.unwrap();
        assert_eq!(err.to_string(), "idle_timeout");
        assert_eq!(start.elapsed(), Duration::from_millis(4_500));
        assert_eq!(closed_count(&metrics, CloseReason::IdleTimeout), 1);
        assert_eq!(closed_count(&metrics, CloseReason::HandshakeTimeout), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn with_tls_a_stalled_tls_handshake_is_closed() {
        let (shared, metrics) = shared(limits(1_000, Some(4_000), 10), true);
        let (_client, server) = tokio::io::duplex(4096);
        let conn = Connection::tls(server, (None, None), shared.try_open().unwrap());
        let start = Instant::now();
        let err = read_until_closed(conn).await.unwrap();
        assert_eq!(err.to_string(), "handshake_timeout");
        assert_eq!(start.elapsed(), Duration::from_millis(1_000));
        assert_eq!(closed_count(&metrics, CloseReason::HandshakeTimeout), 1);
        assert_eq!(shared.open.load(Ordering::Acquire), 0, "slot given back");
    }

    #[test]
    fn places_are_bounded_and_given_back() {
        let (shared, metrics) = shared(limits(1_000, None, 2), false);
        let a = shared.try_open().unwrap();
        let b = shared.try_open().unwrap();
        assert!(shared.try_open().is_none());
        let gauge = metrics
            .open_connections
            .get_or_create(&ListenerLabels { listener: "grpc" })
            .get();
        assert_eq!(gauge, 2);
        drop(a);
        let c = shared.try_open().expect("a place was given back");
        drop((b, c));
        assert_eq!(shared.open.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn incoming_admits_handshakes_refuses_beyond_the_limit_and_times_out() {
        let metrics = Metrics::new(false);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = Incoming::new(
            listener,
            limits(300, None, 2),
            false,
            &metrics,
            ListenerKind::Grpc,
        );
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut talker = TcpStream::connect(addr).await.unwrap();
        assert!(
            next(&mut incoming, 100).await.is_none(),
            "not before the handshake"
        );
        talker.write_all(&handshake()).await.unwrap();
        let conn = next(&mut incoming, 5_000).await.expect("admitted");
        assert!(conn.io.nodelay().unwrap());

        // Two places, both taken (one still admitting): the next is refused.
        let mut refused = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 8];
        let closed = async {
            loop {
                // Keep polling `incoming`, as tonic's accept loop does.
                tokio::select! {
                    r = refused.read(&mut buf) => return r.unwrap_or(0),
                    _ = incoming.next() => {}
                }
            }
        };
        let n = tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("closed at once");
        assert_eq!(n, 0, "EOF, nothing sent");
        let count = |m: &Metrics| {
            m.refused_connections
                .get_or_create(&ListenerLabels { listener: "grpc" })
                .get()
        };
        assert_eq!(count(&metrics), 1);

        // The silent one is closed at its deadline; its place is given back.
        assert!(next(&mut incoming, 1_000).await.is_none());
        assert_eq!(closed_count(&metrics, CloseReason::HandshakeTimeout), 1);
        assert_eq!(shared_open(&incoming), 1, "only the admitted one is open");
        drop(conn);
        assert_eq!(shared_open(&incoming), 0);
    }

    /// The next connection `incoming` hands on within `ms`, if any.
    async fn next(incoming: &mut Incoming, ms: u64) -> Option<Connection<TcpStream>> {
        tokio::time::timeout(Duration::from_millis(ms), incoming.next())
            .await
            .ok()
            .map(|c| c.unwrap().unwrap())
    }

    fn shared_open(incoming: &Incoming) -> usize {
        incoming.shared.open.load(Ordering::Acquire)
    }
}
