//! The gRPC server metrics (go-grpc-prometheus names) as one tower layer
//! around every service the server hosts, so health and reflection calls
//! are counted like ours, and no handler counts by hand.
//!
//! A call is started when its request arrives and handled once, with its
//! `grpc-status`: from the response headers when the status came there (a
//! trailers-only answer: a refused call, an unknown method), else from the
//! trailers that end the response body. A response, or a body, dropped
//! before its status was sent means the client went away (or its deadline
//! passed): the call counts as CANCELLED. Messages sent and received are not
//! seen here (that would mean parsing gRPC frames): the stream driver
//! counts them.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower::{Layer, Service};

use crate::metrics::{grpc_code_name, GrpcCodeLabels, GrpcLabels, Metrics};

/// The gateway's own service.
const PARTNER_EVENTS: &str = "partnerevents.v1.PartnerEvents";

/// `PartnerEvents/PutPartnerEvents`.
pub const PUT_PARTNER_EVENTS: GrpcLabels = GrpcLabels {
    grpc_type: "unary",
    grpc_service: PARTNER_EVENTS,
    grpc_method: "PutPartnerEvents",
};

/// `PartnerEvents/StreamPartnerEvents`.
pub const STREAM_PARTNER_EVENTS: GrpcLabels = GrpcLabels {
    grpc_type: "bidi_stream",
    grpc_service: PARTNER_EVENTS,
    grpc_method: "StreamPartnerEvents",
};

/// Every method the gateway's server hosts, with its gRPC type (the path
/// of a call says which method it is, not whether it streams).
pub const GATEWAY_METHODS: &[GrpcLabels] = &[
    PUT_PARTNER_EVENTS,
    STREAM_PARTNER_EVENTS,
    GrpcLabels {
        grpc_type: "unary",
        grpc_service: "grpc.health.v1.Health",
        grpc_method: "Check",
    },
    GrpcLabels {
        grpc_type: "server_stream",
        grpc_service: "grpc.health.v1.Health",
        grpc_method: "Watch",
    },
    GrpcLabels {
        grpc_type: "bidi_stream",
        grpc_service: "grpc.reflection.v1.ServerReflection",
        grpc_method: "ServerReflectionInfo",
    },
    GrpcLabels {
        grpc_type: "bidi_stream",
        grpc_service: "grpc.reflection.v1alpha.ServerReflection",
        grpc_method: "ServerReflectionInfo",
    },
];

/// The labels of a call to any path not in the table: a client may send
/// any path, and each must not become a label value of its own.
pub const UNKNOWN_METHOD: GrpcLabels = GrpcLabels {
    grpc_type: "unknown",
    grpc_service: "unknown",
    grpc_method: "unknown",
};

/// The labels of the call to `path` (`/package.Service/Method`).
fn labels_for(methods: &'static [GrpcLabels], path: &str) -> GrpcLabels {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return UNKNOWN_METHOD;
    };
    methods
        .iter()
        .find(|m| m.grpc_service == service && m.grpc_method == method)
        .cloned()
        .unwrap_or(UNKNOWN_METHOD)
}

/// The `grpc-status` in a header map (response headers or trailers).
fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}

/// Counts every call through the service it wraps.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
    methods: &'static [GrpcLabels],
}

impl GrpcMetricsLayer {
    /// A layer counting into `metrics`, labelling calls by `methods`
    /// (others as [`UNKNOWN_METHOD`]).
    pub fn new(metrics: Arc<Metrics>, methods: &'static [GrpcLabels]) -> Self {
        Self { metrics, methods }
    }

    /// The layer for the gateway's server, labelling by [`GATEWAY_METHODS`].
    pub fn gateway(metrics: Arc<Metrics>) -> Self {
        Self::new(metrics, GATEWAY_METHODS)
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
            methods: self.methods,
        }
    }
}

/// The service [`GrpcMetricsLayer`] makes.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
    methods: &'static [GrpcLabels],
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let labels = labels_for(self.methods, request.uri().path());
        self.metrics.grpc_started.get_or_create(&labels).inc();
        let call = Call {
            metrics: self.metrics.clone(),
            labels,
            started: Instant::now(),
            done: false,
        };
        MeteredFuture {
            // Boxed because the crate forbids `unsafe` (no pin projection);
            // one small allocation beside the many a tonic call makes.
            inner: Box::pin(self.inner.call(request)),
            call: Some(call),
        }
    }
}

/// One call being counted: handled exactly once, CANCELLED when dropped
/// before its status was seen.
struct Call {
    metrics: Arc<Metrics>,
    labels: GrpcLabels,
    started: Instant,
    done: bool,
}

impl Call {
    fn handled(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let l = &self.labels;
        self.metrics
            .grpc_handled
            .get_or_create(&GrpcCodeLabels {
                grpc_type: l.grpc_type,
                grpc_service: l.grpc_service,
                grpc_method: l.grpc_method,
                grpc_code: grpc_code_name(code),
            })
            .inc();
        self.metrics
            .grpc_handling_seconds
            .get_or_create(l)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.handled(Code::Cancelled);
    }
}

/// The response future of [`GrpcMetrics`].
pub struct MeteredFuture<F> {
    inner: Pin<Box<F>>,
    call: Option<Call>,
}

impl<F, ResBody, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<MeteredBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = ready!(this.inner.as_mut().poll(cx));
        let mut call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                if let (Some(code), Some(c)) = (grpc_status(response.headers()), call.as_mut()) {
                    c.handled(code);
                }
                Ok(response.map(|inner| MeteredBody { inner, call }))
            }
            Err(e) => {
                // A service error ends the HTTP/2 stream without a status.
                if let Some(c) = call.as_mut() {
                    c.handled(Code::Unknown);
                }
                Err(e)
            }
        })
    }
}

/// The response body of [`GrpcMetrics`]: passes every frame through and
/// counts the call at the trailers that end it.
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> Body for MeteredBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(call) = this.call.as_mut() {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(trailers) = f.trailers_ref() {
                        call.handled(grpc_status(trailers).unwrap_or(Code::Unknown));
                    }
                }
                // The body broke: the client gets no status.
                Some(Err(_)) => call.handled(Code::Unknown),
                // Ended without trailers: no status either.
                None => call.handled(Code::Unknown),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_known_labels_or_one_fixed_label() {
        assert_eq!(
            labels_for(
                GATEWAY_METHODS,
                "/partnerevents.v1.PartnerEvents/PutPartnerEvents"
            ),
            PUT_PARTNER_EVENTS
        );
        assert_eq!(
            labels_for(GATEWAY_METHODS, "/grpc.health.v1.Health/Watch").grpc_type,
            "server_stream"
        );
        for path in [
            "/partnerevents.v1.PartnerEvents/Nope",
            "/made.up.Service/Method",
            "/",
            "",
            "/a/b/c",
        ] {
            assert_eq!(labels_for(GATEWAY_METHODS, path), UNKNOWN_METHOD, "{path}");
        }
    }

    #[test]
    fn a_call_is_handled_once_and_cancelled_when_dropped_early() {
        let metrics = Arc::new(Metrics::new(false));
        let call = |metrics: &Arc<Metrics>| Call {
            metrics: metrics.clone(),
            labels: PUT_PARTNER_EVENTS,
            started: Instant::now(),
            done: false,
        };
        let mut c = call(&metrics);
        c.handled(Code::Ok);
        c.handled(Code::Internal);
        drop(c);
        drop(call(&metrics));
        let text = metrics.render();
        for (code, n) in [("OK", 1), ("Canceled", 1)] {
            let want = format!(
                r#"grpc_server_handled_total{{grpc_type="unary",grpc_service="partnerevents.v1.PartnerEvents",grpc_method="PutPartnerEvents",grpc_code="{code}"}} {n}"#
            );
            assert!(text.contains(&want), "{want} missing from\n{text}");
        }
        assert!(!text.contains("Internal"), "{text}");
    }
}
