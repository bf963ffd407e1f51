//! Prometheus metrics, served as text on a separate HTTP port (`/metrics`).
//!
//! Names follow go-grpc-prometheus for the gRPC side, so existing
//! dashboards work, and `partner_events_*` for the rest. Every label value
//! comes from a small known set: method names, status codes, configured
//! regions, and result codes folded into [`code_label`]. No event id,
//! payload or caller-chosen string ever becomes a label; the tenant only
//! does when the operator turns `metrics.tenant_label` on.

use std::{
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, linear_buckets, Histogram},
    },
    registry::Registry,
};

use crate::domain::{delivery::codes as delivery_codes, outcome::codes};

/// The `code` label of DURABLE entries acknowledged with a receipt (their
/// outcome is counted by the durable metrics later).
pub const QUEUED: &str = "queued";

/// Labels of the gRPC server metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub grpc_type: &'static str,
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcCodeLabels {
    pub grpc_type: &'static str,
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
    pub grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntryLabels {
    pub code: &'static str,
    /// Empty unless `metrics.tenant_label` is on.
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub region: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabels {
    pub region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

/// The listener a connection came in on: `grpc` or `health`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

/// Why the gateway closed a connection: `handshake_timeout` or `idle_timeout`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabels {
    pub listener: &'static str,
    pub reason: &'static str,
}

/// Why a reload of the watched config file ended as it did: `ok` (in
/// force) or `refused` (the file did not load; the config in force stays).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

/// A call to the Redis of cluster mode: what for (`pace`, `limit`,
/// `idempotency_claim`, `idempotency_settle`) and how
/// it ended (`ok`, `error`, `timeout`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedisCallLabels {
    pub op: &'static str,
    pub outcome: &'static str,
}

/// How a durable queue commit ended: `ok` or `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Why DURABLE entries were refused: `full` or `unavailable`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// How a durable delivery round ended for an entry: `delivered`,
/// `dead_lettered` or `retried`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// The durable queue's metrics.
pub struct DurableMetrics {
    pub commits: Family<ResultLabels, Counter>,
    pub commit_seconds: Histogram,
    pub commit_changes: Histogram,
    pub enqueued: Counter,
    pub refused: Family<ReasonLabels, Counter>,
    pub queued_entries: Gauge,
    pub queued_bytes: Gauge,
    pub dead_letters: Gauge,
    pub oldest_age_seconds: Gauge<f64, AtomicU64>,
    pub delivery_lag_seconds: Histogram,
    pub outcomes: Family<OutcomeLabels, Counter>,
    pub replayed: Counter,
    pub unreadable_records: Counter,
    pub damaged_files: Counter,
}

/// Idempotency keys (`partner_events_idempotency_*`).
pub struct IdempotencyMetrics {
    /// Entries with a key, by what the key store said.
    pub entries: Family<ResultLabels, Counter>,
    /// Keys held in this replica's memory.
    pub keys: Gauge,
    pub evicted: Counter,
    /// Keyed entries handled by this replica alone because, in cluster
    /// mode, Redis could not be reached.
    pub local_fallback: Counter,
}

/// The results `partner_events_idempotency_entries_total` counts.
pub const IDEMPOTENCY_RESULTS: [&str; 6] = [
    "new",
    "deduplicated",
    "unknown",
    "reused",
    "in_flight_timeout",
    "forced",
];

impl IdempotencyMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            entries: Family::default(),
            keys: Gauge::default(),
            evicted: Counter::default(),
            local_fallback: Counter::default(),
        };
        for result in IDEMPOTENCY_RESULTS {
            let _ = m.entries.get_or_create(&ResultLabels { result });
        }
        registry.register(
            "partner_events_idempotency_entries",
            "Entries with an idempotency key, by what the key said: new (sent), deduplicated (answered from the first), unknown (the first's outcome is unknown), reused (another event's key), in_flight_timeout (the first was still being sent at the deadline), forced (resent with resend_if_unknown)",
            m.entries.clone(),
        );
        registry.register(
            "partner_events_idempotency_keys",
            "Idempotency keys held in this replica's memory",
            m.keys.clone(),
        );
        registry.register(
            "partner_events_idempotency_evicted",
            "Idempotency keys forgotten before their window ended, to stay within idempotency.max_keys",
            m.evicted.clone(),
        );
        registry.register(
            "partner_events_idempotency_local_fallback",
            "Keyed entries this replica deduplicated alone because Redis could not be reached",
            m.local_fallback.clone(),
        );
        m
    }

    /// Counts `n` keyed entries with `result` (one of [`IDEMPOTENCY_RESULTS`]).
    pub fn count(&self, result: &'static str, n: u64) {
        if n > 0 {
            self.entries
                .get_or_create(&ResultLabels { result })
                .inc_by(n);
        }
    }
}

impl DurableMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            commits: Family::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            commit_changes: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            enqueued: Counter::default(),
            refused: Family::default(),
            queued_entries: Gauge::default(),
            queued_bytes: Gauge::default(),
            dead_letters: Gauge::default(),
            oldest_age_seconds: Gauge::default(),
            // From a second to a day.
            delivery_lag_seconds: Histogram::new(exponential_buckets(0.001, 2.5, 20)),
            outcomes: Family::default(),
            replayed: Counter::default(),
            unreadable_records: Counter::default(),
            damaged_files: Counter::default(),
        };
        for result in ["ok", "error"] {
            let _ = m.commits.get_or_create(&ResultLabels { result });
        }
        for reason in ["full", "unavailable"] {
            let _ = m.refused.get_or_create(&ReasonLabels { reason });
        }
        for outcome in ["delivered", "dead_lettered", "retried"] {
            let _ = m.outcomes.get_or_create(&OutcomeLabels { outcome });
        }
        let r = registry;
        r.register(
            "partner_events_durable_commits",
            "Durable queue commits (each one fsync), by result",
            m.commits.clone(),
        );
        r.register(
            "partner_events_durable_commit_seconds",
            "Time per durable queue commit, fsync included",
            m.commit_seconds.clone(),
        );
        r.register(
            "partner_events_durable_commit_changes",
            "Changes (batches, outcomes) per durable queue commit",
            m.commit_changes.clone(),
        );
        r.register(
            "partner_events_durable_enqueued",
            "DURABLE entries acknowledged (on disk)",
            m.enqueued.clone(),
        );
        r.register(
            "partner_events_durable_refused",
            "DURABLE entries refused whole with their batch, by reason",
            m.refused.clone(),
        );
        r.register(
            "partner_events_durable_queue_entries",
            "DURABLE entries queued, not yet delivered or dead-lettered",
            m.queued_entries.clone(),
        );
        r.register(
            "partner_events_durable_queue_bytes",
            "Bytes of queued entries and dead letters, against durable.max_bytes",
            m.queued_bytes.clone(),
        );
        r.register(
            "partner_events_durable_dead_letters",
            "Dead letters held",
            m.dead_letters.clone(),
        );
        r.register(
            "partner_events_durable_oldest_age_seconds",
            "Age of the oldest queued entry (0 when none)",
            m.oldest_age_seconds.clone(),
        );
        r.register(
            "partner_events_durable_delivery_lag_seconds",
            "From acknowledgement to delivery, per DURABLE entry",
            m.delivery_lag_seconds.clone(),
        );
        r.register(
            "partner_events_durable_outcomes",
            "Ends of durable delivery rounds per entry, by outcome",
            m.outcomes.clone(),
        );
        r.register(
            "partner_events_durable_replayed",
            "Dead letters put back in the queue",
            m.replayed.clone(),
        );
        r.register(
            "partner_events_durable_unreadable_records",
            "Queue records that did not decode at start-up (kept aside, not delivered)",
            m.unreadable_records.clone(),
        );
        r.register(
            "partner_events_durable_damaged_files",
            "Queue files that did not open at start-up (moved aside, salvaged)",
            m.damaged_files.clone(),
        );
        m
    }

    /// Counts DURABLE entries refused for `reason`.
    pub fn refused(&self, reason: &'static str, n: u64) {
        self.refused
            .get_or_create(&ReasonLabels { reason })
            .inc_by(n);
    }

    /// Counts `n` entries' rounds ending with `outcome`.
    pub fn outcome(&self, outcome: &'static str, n: u64) {
        if n > 0 {
            self.outcomes
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(n);
        }
    }
}

/// Client connections open now, by listener.
pub const OPEN_CONNECTIONS: &str = "partner_events_open_connections";
/// Connections refused at accept (`server.max_connections` reached); the
/// exposition adds `_total`.
pub const REFUSED_CONNECTIONS: &str = "partner_events_refused_connections";
/// Connections the gateway closed, by listener and reason; the exposition
/// adds `_total`.
pub const CONNECTIONS_CLOSED: &str = "partner_events_connections_closed";
/// Reloads of the watched config file, by result (`ok`, `refused`); the
/// exposition adds `_total`.
pub const CONFIG_RELOADS: &str = "partner_events_config_reloads";
/// The `result` label values of [`CONFIG_RELOADS`].
pub const RELOAD_RESULTS: [&str; 2] = ["ok", "refused"];

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    pub tenant_label: bool,
    pub grpc_started: Family<GrpcLabels, Counter>,
    pub grpc_handled: Family<GrpcCodeLabels, Counter>,
    pub grpc_handling_seconds: Family<GrpcLabels, Histogram>,
    pub grpc_msg_received: Family<GrpcLabels, Counter>,
    pub grpc_msg_sent: Family<GrpcLabels, Counter>,
    pub entries: Family<EntryLabels, Counter>,
    pub upstream_calls: Family<CallLabels, Counter>,
    pub upstream_call_seconds: Family<RegionLabels, Histogram>,
    pub upstream_call_entries: Histogram,
    pub retries: Family<RegionLabels, Counter>,
    pub in_flight_entries: Gauge,
    pub open_streams: Gauge,
    pub breaker_open: Family<RegionLabels, Gauge>,
    pub sources: Family<StateLabels, Gauge>,
    pub source_refresh_errors: Counter,
    pub open_connections: Family<ListenerLabels, Gauge>,
    pub refused_connections: Family<ListenerLabels, Counter>,
    pub connections_closed: Family<ClosedLabels, Counter>,
    pub config_reloads: Family<ReloadLabels, Counter>,
    /// The calls per second a region's calls go out at now (adaptive
    /// pacing and cluster mode move it).
    pub upstream_pace: Family<RegionLabels, Gauge<f64, AtomicU64>>,
    pub cluster_joined: Gauge,
    pub cluster_fallbacks: Counter,
    pub cluster_redis_calls: Family<RedisCallLabels, Counter>,
    pub cluster_redis_seconds: Histogram,
    pub durable: DurableMetrics,
    pub idempotency: IdempotencyMetrics,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new(tenant_label: bool) -> Self {
        let mut registry = Registry::default();
        let grpc_started = Family::<GrpcLabels, Counter>::default();
        let grpc_handled = Family::<GrpcCodeLabels, Counter>::default();
        let grpc_handling_seconds = Family::<GrpcLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        let grpc_msg_received = Family::<GrpcLabels, Counter>::default();
        let grpc_msg_sent = Family::<GrpcLabels, Counter>::default();
        let entries = Family::<EntryLabels, Counter>::default();
        let upstream_calls = Family::<CallLabels, Counter>::default();
        let upstream_call_seconds = Family::<RegionLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        let upstream_call_entries = Histogram::new(linear_buckets(1.0, 1.0, 20));
        let retries = Family::<RegionLabels, Counter>::default();
        let in_flight_entries = Gauge::default();
        let open_streams = Gauge::default();
        let breaker_open = Family::<RegionLabels, Gauge>::default();
        let sources = Family::<StateLabels, Gauge>::default();
        let source_refresh_errors = Counter::default();
        let open_connections = Family::<ListenerLabels, Gauge>::default();
        let refused_connections = Family::<ListenerLabels, Counter>::default();
        let connections_closed = Family::<ClosedLabels, Counter>::default();
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        let upstream_pace = Family::<RegionLabels, Gauge<f64, AtomicU64>>::default();
        let cluster_joined = Gauge::default();
        let cluster_fallbacks = Counter::default();
        let cluster_redis_calls = Family::<RedisCallLabels, Counter>::default();
        let cluster_redis_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        // Both series from the start: an alert on `refused` needs a 0 to rise from.
        for result in RELOAD_RESULTS {
            let _ = config_reloads.get_or_create(&ReloadLabels { result });
        }

        registry.register(
            "grpc_server_started",
            "RPCs started on the server",
            grpc_started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, by status code",
            grpc_handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time to handle an RPC",
            grpc_handling_seconds.clone(),
        );
        registry.register(
            "grpc_server_msg_received",
            "Stream messages received",
            grpc_msg_received.clone(),
        );
        registry.register(
            "grpc_server_msg_sent",
            "Stream messages sent",
            grpc_msg_sent.clone(),
        );
        registry.register(
            "partner_events_entries",
            "Entries answered, by result code (ok for an event id)",
            entries.clone(),
        );
        registry.register(
            "partner_events_upstream_calls",
            "PutPartnerEvents calls, by region and outcome",
            upstream_calls.clone(),
        );
        registry.register(
            "partner_events_upstream_call_seconds",
            "PutPartnerEvents call latency, SDK retries included",
            upstream_call_seconds.clone(),
        );
        registry.register(
            "partner_events_upstream_call_entries",
            "Entries per PutPartnerEvents call",
            upstream_call_entries.clone(),
        );
        registry.register(
            "partner_events_retries",
            "Entries resent after a retryable failure",
            retries.clone(),
        );
        registry.register(
            "partner_events_in_flight_entries",
            "Entries admitted and not yet answered",
            in_flight_entries.clone(),
        );
        registry.register(
            "partner_events_open_streams",
            "Open StreamPartnerEvents streams",
            open_streams.clone(),
        );
        registry.register(
            "partner_events_breaker_open",
            "1 while a region's circuit breaker is open",
            breaker_open.clone(),
        );
        registry.register(
            "partner_events_sources",
            "Configured partner event sources, by the state EventBridge last gave",
            sources.clone(),
        );
        registry.register(
            "partner_events_source_refresh_errors",
            "Source state reads that failed (the last known state was kept)",
            source_refresh_errors.clone(),
        );
        registry.register(
            OPEN_CONNECTIONS,
            "Client connections open, by listener",
            open_connections.clone(),
        );
        registry.register(
            REFUSED_CONNECTIONS,
            "Connections closed at accept because server.max_connections were open",
            refused_connections.clone(),
        );
        registry.register(
            CONNECTIONS_CLOSED,
            "Connections the gateway closed: no HTTP/2 handshake in time, or idle",
            connections_closed.clone(),
        );
        registry.register(
            CONFIG_RELOADS,
            "Reloads of the watched config file: in force (ok) or refused",
            config_reloads.clone(),
        );
        registry.register(
            "partner_events_upstream_pace_calls_per_second",
            "PutPartnerEvents calls per second a region's calls may go out at now",
            upstream_pace.clone(),
        );
        registry.register(
            "partner_events_cluster_joined",
            "1 while the replica shares pacing and limits through Redis, 0 while alone",
            cluster_joined.clone(),
        );
        registry.register(
            "partner_events_cluster_fallbacks",
            "Times the replica lost Redis and went on alone",
            cluster_fallbacks.clone(),
        );
        registry.register(
            "partner_events_cluster_redis_calls",
            "Calls to Redis, by what for and how they ended",
            cluster_redis_calls.clone(),
        );
        registry.register(
            "partner_events_cluster_redis_seconds",
            "Redis round trips, seconds",
            cluster_redis_seconds.clone(),
        );

        let durable = DurableMetrics::register(&mut registry);
        let idempotency = IdempotencyMetrics::register(&mut registry);
        Self {
            durable,
            idempotency,
            registry,
            tenant_label,
            grpc_started,
            grpc_handled,
            grpc_handling_seconds,
            grpc_msg_received,
            grpc_msg_sent,
            entries,
            upstream_calls,
            upstream_call_seconds,
            upstream_call_entries,
            retries,
            in_flight_entries,
            open_streams,
            breaker_open,
            sources,
            source_refresh_errors,
            open_connections,
            refused_connections,
            connections_closed,
            config_reloads,
            upstream_pace,
            cluster_joined,
            cluster_fallbacks,
            cluster_redis_calls,
            cluster_redis_seconds,
        }
    }

    /// Counts one call to Redis.
    pub fn cluster_redis_call(&self, op: &'static str, outcome: &'static str) {
        self.cluster_redis_calls
            .get_or_create(&RedisCallLabels { op, outcome })
            .inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Counts `n` answered entries with the same `code`.
    pub fn entries_with(&self, code: &str, tenant: &str, n: u64) {
        self.entries
            .get_or_create(&EntryLabels {
                code: code_label(code),
                tenant: if self.tenant_label {
                    tenant.to_string()
                } else {
                    String::new()
                },
            })
            .inc_by(n);
    }

    /// Records one upstream call.
    pub fn upstream_call(
        &self,
        region: &str,
        outcome: &'static str,
        entries: usize,
        took: Duration,
    ) {
        self.upstream_calls
            .get_or_create(&CallLabels {
                region: region.to_string(),
                outcome,
            })
            .inc();
        self.upstream_call_seconds
            .get_or_create(&RegionLabels {
                region: region.to_string(),
            })
            .observe(took.as_secs_f64());
        self.upstream_call_entries.observe(entries as f64);
    }

    /// Counts one reload of the watched config file; `result` is one of
    /// [`RELOAD_RESULTS`].
    pub fn config_reload(&self, result: &'static str) {
        debug_assert!(RELOAD_RESULTS.contains(&result));
        self.config_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    pub fn retry(&self, region: &str) {
        self.retries
            .get_or_create(&RegionLabels {
                region: region.to_string(),
            })
            .inc();
    }
}

/// Result codes as label values: the known ones as they are, "ok" for an
/// accepted entry, and "other" for anything else EventBridge may invent, so
/// the label set stays bounded.
pub fn code_label(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        codes::INVALID_ARGUMENT,
        codes::MALFORMED_DETAIL,
        codes::ENTRY_TOO_LARGE,
        codes::UNKNOWN_SOURCE_KEY,
        codes::OUTCOME_UNKNOWN,
        codes::UPSTREAM_ERROR,
        codes::UPSTREAM_UNAVAILABLE,
        codes::DEADLINE_EXCEEDED,
        codes::SHUTTING_DOWN,
        codes::INVALID_BATCH,
        codes::UNKNOWN_TENANT,
        codes::THROTTLING,
        codes::INTERNAL_FAILURE,
        codes::REGION_UNAVAILABLE,
        codes::SOURCE_NOT_ACTIVE,
        codes::SOURCE_NOT_FOUND,
        codes::PERMISSION_DENIED,
        codes::RATE_LIMITED,
        "AccessDeniedException",
        "InvalidAccountIdException",
        "NotAuthorizedForSourceException",
        "NotAuthorizedForDetailTypeException",
        "RedactionFailure",
        "InternalException",
        "ValidationException",
        "OperationDisabledException",
        QUEUED,
        delivery_codes::QUEUE_FULL,
        delivery_codes::QUEUE_UNAVAILABLE,
        delivery_codes::MAX_DELIVERY_AGE_EXCEEDED,
    ];
    if code.is_empty() {
        return "ok";
    }
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("other")
}

/// The gRPC code as go-grpc-prometheus names it.
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    before_render: Arc<dyn Fn() + Send + Sync>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::{routing::get, Router};
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            let before_render = before_render.clone();
            async move {
                before_render();
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    let _: SocketAddr = listener.local_addr()?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_fold_into_a_bounded_set() {
        assert_eq!(code_label(""), "ok");
        assert_eq!(code_label("ThrottlingException"), "ThrottlingException");
        assert_eq!(code_label("SomethingNewFromAws"), "other");
    }

    #[test]
    fn renders_the_expected_names() {
        let m = Metrics::new(false);
        m.entries_with("", "acme", 1);
        m.entries_with("MalformedDetail", "acme", 1);
        m.upstream_call("us-east-1", "ok", 20, Duration::from_millis(12));
        let text = m.render();
        for name in [
            "partner_events_entries_total{code=\"ok\",tenant=\"\"} 1",
            "partner_events_entries_total{code=\"MalformedDetail\",tenant=\"\"} 1",
            "partner_events_upstream_calls_total{region=\"us-east-1\",outcome=\"ok\"} 1",
            "partner_events_upstream_call_entries_count 1",
            "partner_events_config_reloads_total{result=\"ok\"} 0",
            "partner_events_config_reloads_total{result=\"refused\"} 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(!text.contains("acme"), "no tenant label unless turned on");
    }
}
