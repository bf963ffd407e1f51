//! Distributed traces: the caller's W3C trace context (`traceparent`,
//! `tracestate` in the gRPC metadata) is the parent of a span per batch;
//! each EventBridge call is a span linked to the span of every batch whose
//! entries it carries (and the child of that batch's span when it carries
//! one batch's only); a DURABLE entry's delivery links back to the batch
//! that queued it. Spans carry tenant, region, entries, outcome and
//! attempts: never a payload. Exported over OTLP/gRPC when `[tracing]
//! otlp_endpoint` is set; otherwise nothing is built and every call here
//! does nothing.

use std::time::Duration;

use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::{
        Link, Span as _, SpanContext, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
        Tracer as _, TracerProvider as _,
    },
    Context, KeyValue, SpanId,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider},
    Resource,
};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;

/// `[tracing]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSection {
    /// The OTLP/gRPC endpoint spans go to (`http://collector:4317`); empty:
    /// no traces (the default).
    pub otlp_endpoint: String,
    /// The share of traces the gateway starts itself that are kept (0 to
    /// 1). A caller's sampling decision (its `traceparent`'s flag) is
    /// followed as it is.
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
    /// How long finished spans wait to be exported in one request.
    pub export_delay_ms: u64,
}

impl Default for TracingSection {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            sample_ratio: 1.0,
            service_name: "partner-events-gateway".to_string(),
            export_delay_ms: 1_000,
        }
    }
}

impl TracingSection {
    /// Checks the fields; the message names the one that does not hold.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let e = &self.otlp_endpoint;
        if !(e.is_empty() || e.starts_with("http://") || e.starts_with("https://")) {
            return Err((
                "otlp_endpoint",
                "must be empty or an http:// or https:// URL".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(("sample_ratio", "must be 0 to 1".into()));
        }
        if !(10..=60_000).contains(&self.export_delay_ms) {
            return Err(("export_delay_ms", "must be 10 to 60000".into()));
        }
        Ok(())
    }
}

/// The gateway's tracer, or nothing when traces are off.
pub struct Traces {
    tracer: Option<(SdkTracerProvider, SdkTracer)>,
}

impl Traces {
    /// Traces off.
    pub fn off() -> Self {
        Self { tracer: None }
    }

    /// Starts the exporter (within the tokio runtime: its gRPC client
    /// needs it) when an endpoint is configured.
    pub fn start(section: &TracingSection) -> Result<Self, String> {
        if section.otlp_endpoint.is_empty() {
            return Ok(Self::off());
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(section.otlp_endpoint.clone())
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("the OTLP exporter for {}: {e}", section.otlp_endpoint))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(Duration::from_millis(section.export_delay_ms))
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                section.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(section.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("partner-events-gateway");
        Ok(Self {
            tracer: Some((provider, tracer)),
        })
    }

    pub fn enabled(&self) -> bool {
        self.tracer.is_some()
    }

    /// The caller's trace context from `traceparent` and `tracestate`
    /// (an empty context when there is none, or traces are off).
    pub fn extract(&self, metadata: &MetadataMap) -> Context {
        if self.tracer.is_none() {
            return Context::new();
        }
        TraceContextPropagator::new().extract(&Metadata(metadata))
    }

    /// A batch's span, a child of `parent` (the caller's context);
    /// `attributes` are built only when traces are on.
    pub fn batch(
        &self,
        parent: &Context,
        name: &'static str,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Span {
        let Some((_, tracer)) = &self.tracer else {
            return Span(None);
        };
        let attributes = attributes();
        Span(Some(
            tracer
                .span_builder(name)
                .with_kind(SpanKind::Server)
                .with_attributes(attributes)
                .start_with_context(tracer, parent),
        ))
    }

    /// An EventBridge call's span: linked to every batch in `origins`, and
    /// the child of the one when there is only one (none without origins).
    pub fn call(&self, origins: &[SpanContext], attributes: Vec<KeyValue>) -> Span {
        let Some((_, tracer)) = &self.tracer else {
            return Span(None);
        };
        // Only calls of traced batches: a call of batches whose callers
        // chose not to be sampled starts no trace of its own.
        if origins.is_empty() {
            return Span(None);
        }
        let parent = match origins {
            [one] => Context::new().with_remote_span_context(one.clone()),
            _ => Context::new(),
        };
        Span(Some(
            tracer
                .span_builder("EventBridge/PutPartnerEvents")
                .with_kind(SpanKind::Client)
                .with_attributes(attributes)
                .with_links(origins.iter().cloned().map(Link::with_context).collect())
                .start_with_context(tracer, &parent),
        ))
    }

    /// Exports what is left (at shutdown).
    pub fn shutdown(&self) {
        if let Some((provider, _)) = &self.tracer {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "traces: the last spans could not be exported");
            }
        }
    }
}

/// A span being recorded (or nothing, when traces are off); ends when
/// dropped.
pub struct Span(Option<opentelemetry_sdk::trace::Span>);

impl Span {
    pub fn none() -> Self {
        Self(None)
    }

    /// Its context, for links and for the durable queue (None when off or
    /// not sampled).
    pub fn context(&self) -> Option<SpanContext> {
        let s = self.0.as_ref()?;
        let cx = s.span_context();
        (cx.is_valid() && cx.is_sampled()).then(|| cx.clone())
    }

    pub fn set(&mut self, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(s) = &mut self.0 {
            s.set_attributes(attributes());
        }
    }

    /// Marks the span failed, with a description (never a payload).
    pub fn error(&mut self, description: impl Into<String>) {
        if let Some(s) = &mut self.0 {
            s.set_status(opentelemetry::trace::Status::error(description.into()));
        }
    }
}

/// A span context kept with a DURABLE entry: trace id, span id, flags.
pub fn to_stored(cx: &SpanContext) -> (Vec<u8>, Vec<u8>, u32) {
    (
        cx.trace_id().to_bytes().to_vec(),
        cx.span_id().to_bytes().to_vec(),
        u32::from(cx.trace_flags().to_u8()),
    )
}

/// A stored span context, if it is one.
pub fn from_stored(trace_id: &[u8], span_id: &[u8], flags: u32) -> Option<SpanContext> {
    let trace_id = TraceId::from_bytes(trace_id.try_into().ok()?);
    let span_id = SpanId::from_bytes(span_id.try_into().ok()?);
    let cx = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags as u8),
        true,
        TraceState::default(),
    );
    cx.is_valid().then_some(cx)
}

/// gRPC metadata as the propagator reads it.
struct Metadata<'a>(&'a MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_contexts_round_trip() {
        let cx = SpanContext::new(
            TraceId::from_bytes([7; 16]),
            SpanId::from_bytes([9; 8]),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let (t, s, f) = to_stored(&cx);
        let back = from_stored(&t, &s, f).unwrap();
        assert_eq!(back.trace_id(), cx.trace_id());
        assert_eq!(back.span_id(), cx.span_id());
        assert!(back.is_sampled());
        assert!(from_stored(&[], &[], 0).is_none());
        assert!(from_stored(&[0; 16], &[0; 8], 1).is_none(), "invalid ids");
    }

    #[test]
    fn the_callers_context_is_read_from_metadata() {
        let traces = Traces {
            tracer: Some({
                let provider = SdkTracerProvider::builder().build();
                let tracer = provider.tracer("t");
                (provider, tracer)
            }),
        };
        let mut m = MetadataMap::new();
        m.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let cx = traces.extract(&m);
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_remote() && sc.is_sampled());
        assert!(!Traces::off().extract(&m).span().span_context().is_valid());
    }
}
