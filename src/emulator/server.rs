//! The HTTP side: an axum router on `POST /` that dispatches on
//! `x-amz-target`, the [`Emulator`] entry points and the [`EmulatorHandle`].

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use axum::{
    body::{Body, Bytes},
    extract::{rejection::BytesRejection, DefaultBodyLimit, State as AxumState},
    response::Response,
    routing::post,
    Router,
};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use tokio::{net::TcpListener, sync::watch};

use super::{
    faults::FaultRule,
    record::{EventsFile, RecordedCall, RecordedEvent},
    service::{Limits, State},
    wire::{
        ErrorBody, Reply, CONTENT_TYPE_JSON, ERROR_TYPE_HEADER, HTML_ERROR_PAGE, REQUEST_ID_HEADER,
        TARGET_HEADER, TARGET_PUT_PARTNER_EVENTS, UNKNOWN_OPERATION_EXCEPTION,
    },
    EmulatorConfig,
};

/// JSON escaping can make a body up to 6 times its AWS size (`\u00XX`), plus
/// field names; anything beyond this is refused before parsing so a runaway
/// client cannot exhaust memory. The call-size rule always triggers first.
fn body_limit(max_call_bytes: usize) -> usize {
    max_call_bytes.saturating_mul(6).saturating_add(64 * 1024)
}

/// State shared by the server task and every handle.
#[derive(Debug)]
struct Shared {
    limits: Limits,
    state: Mutex<State>,
}

impl Shared {
    fn new(config: EmulatorConfig) -> std::io::Result<Self> {
        let events_file = config
            .events_file
            .as_deref()
            .map(EventsFile::open)
            .transpose()?;
        Ok(Self {
            limits: Limits {
                max_call_bytes: config.max_call_bytes,
                log_payloads: config.log_payloads,
            },
            state: Mutex::new(State::new(config.faults, events_file)),
        })
    }

    /// The state survives a panic elsewhere (say, a failed assertion in a
    /// test thread holding a handle): poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A local EventBridge: AWS JSON 1.1 on `POST /`, reached through the real
/// AWS SDK with `endpoint_url`. Signatures are not checked.
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// Serves on `listener` until `shutdown` resolves, then drains open
    /// connections. Fails only if the events file cannot be opened or the
    /// listener fails.
    pub async fn serve(
        listener: TcpListener,
        config: EmulatorConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let shared = Arc::new(Shared::new(config)?);
        serve_shared(listener, shared, shutdown).await
    }

    /// Binds `addr` (e.g. `127.0.0.1:0`), serves in a task on the current
    /// tokio runtime, and returns a handle to inspect and stop it. The server
    /// stops on [`EmulatorHandle::shutdown`] or when every clone of the
    /// handle has been dropped.
    pub async fn spawn(
        addr: SocketAddr,
        config: EmulatorConfig,
    ) -> std::io::Result<EmulatorHandle> {
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
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", post(dispatch))
        .layer(DefaultBodyLimit::max(body_limit(
            shared.limits.max_call_bytes,
        )))
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Routes on `x-amz-target`, as AWS JSON services do; other operations are
/// added as further arms.
async fn dispatch(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let target = headers
        .get(TARGET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let reply = match target {
        TARGET_PUT_PARTNER_EVENTS => match body {
            Ok(body) => shared.lock().put_partner_events(&shared.limits, &body),
            Err(rejection) => shared.lock().unreadable_body(rejection.status().as_u16()),
        },
        _ => Reply::error(
            400,
            UNKNOWN_OPERATION_EXCEPTION,
            "The operation named by x-amz-target is not supported by this emulator.",
        ),
    };
    into_response(reply)
}

fn into_response(reply: Reply) -> Response {
    let status = reply.status();
    let (content_type, error_type, body) = match reply {
        Reply::Accepted(response) => (
            CONTENT_TYPE_JSON,
            None,
            serde_json::to_vec(&response).unwrap_or_default(),
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
/// recorded, its fault rules, and a way to stop it. Clones share all of it.
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

    /// Every accepted event, in the order accepted.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.shared.lock().events().to_vec()
    }

    /// Every `PutPartnerEvents` call received, failed ones included, in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.shared.lock().calls().to_vec()
    }

    /// Replaces the fault rules; firing counts start afresh.
    pub fn set_faults(&self, faults: Vec<FaultRule>) {
        self.shared.lock().set_faults(faults);
    }

    /// Forgets the recorded events and calls (the fault rules stay).
    pub fn clear(&self) {
        self.shared.lock().clear();
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
