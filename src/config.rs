//! The configuration file: TOML read into serde structs, then checked by
//! [`RawConfig::validate`] into a [`Config`] the rest of the gateway trusts.
//!
//! Every field has a default, so an empty file (or no file) is a working
//! local setup: the gateway on 127.0.0.1:50051, the built-in emulator, and a
//! `demo` tenant. Errors name the field and the problem, because an operator
//! reads them at start-up.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use serde::{Deserialize, Serialize};

use crate::auth::{AuthConfigError, AuthPolicy};
pub use crate::auth::{AuthMode, AuthSection, CallerSection, TokenSection};
pub use crate::cluster::{ClusterSection, ClusterSettings};
use crate::connections::{
    ConnectionLimits, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
};
use crate::domain::{delivery::Delivery, lifecycle::InactivePolicy};
use crate::domain::{
    limits::{
        DEFAULT_MAX_CALL_BYTES, DEFAULT_MAX_ENTRIES_PER_REQUEST, MAX_CALL_BYTES_CEILING,
        MAX_ENTRIES_PER_REQUEST_CEILING,
    },
    source::{is_valid_region, is_valid_source_name},
    tenant::{SourceRef, Tenant, TenantDirectory, DEFAULT_TENANT_WEIGHT},
};
pub use crate::durable::{DurableSection, DurableSettings};
use crate::emulator::{
    Quota as EmulatorQuota, QuotaError as EmulatorQuotaError, SeedSource,
    SourceState as EmulatorSourceState, DEFAULT_MAX_RECORDED_EVENTS, DEFAULT_QUOTA_BURST,
    DEFAULT_QUOTA_CALLS_PER_SECOND, MAX_RECORDED_EVENTS_CEILING,
};
pub use crate::upstream::UpstreamKind;
use crate::{
    pipeline::PipelineSettings,
    upstream::{breaker::BreakerSettings, eventbridge::SdkSettings, retry::RetryPolicy},
};

/// Where the gateway listens by default: loopback, so a fresh checkout
/// never exposes an unauthenticated port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// The demo tenant's source (ACTIVE in the built-in emulator).
pub const DEMO_SOURCE: &str = "aws.partner/example.com/demo/events";
/// The second demo tenant's source: PENDING in the built-in emulator, to
/// show the gateway refusing events that EventBridge would lose.
pub const DEMO_PENDING_SOURCE: &str = "aws.partner/example.com/demo-pending/events";
/// The account the built-in emulator gives its sources.
pub const EMULATOR_ACCOUNT: &str = "123456789012";

/// The largest tenant weight: a round of the fair share is the sum of the
/// busy tenants' weights in calls, so weights stay small.
pub const MAX_TENANT_WEIGHT: u32 = 1_000;

/// The most `server.max_in_flight_entries` may be (a semaphore's bound).
pub const MAX_IN_FLIGHT_ENTRIES_CEILING: usize = 10_000_000;

/// The most `server.max_connections` may be (above it the fd limit or
/// memory is the real bound anyway).
pub const MAX_CONNECTIONS_CEILING: usize = 1_000_000;
/// The longest `server.handshake_timeout_ms` may be: a handshake that has
/// not happened in a minute is not going to.
pub const MAX_HANDSHAKE_TIMEOUT_MS: u64 = 60_000;

/// A config file that could not be read or does not hold.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config: `{field}`: {problem}")]
    Invalid { field: String, problem: String },
}

impl From<crate::cluster::ClusterConfigError> for ConfigError {
    fn from(e: crate::cluster::ClusterConfigError) -> Self {
        Self::Invalid {
            field: format!("cluster.{}", e.field),
            problem: e.problem,
        }
    }
}

impl From<crate::idempotency::IdempotencyConfigError> for ConfigError {
    fn from(e: crate::idempotency::IdempotencyConfigError) -> Self {
        Self::Invalid {
            field: format!("idempotency.{}", e.field),
            problem: e.problem,
        }
    }
}

impl From<crate::durable::DurableConfigError> for ConfigError {
    fn from(e: crate::durable::DurableConfigError) -> Self {
        Self::Invalid {
            field: format!("durable.{}", e.field),
            problem: e.problem,
        }
    }
}

impl From<AuthConfigError> for ConfigError {
    fn from(e: AuthConfigError) -> Self {
        Self::Invalid {
            field: e.field,
            problem: e.problem,
        }
    }
}

/// Protected mode, as Redis has it: no open door by accident. An
/// unauthenticated plaintext gateway listens on loopback only, unless the
/// operator said anyone on the network may write.
fn protected_mode(
    listen: SocketAddr,
    unauthenticated: bool,
    open_to_anyone: bool,
) -> Result<(), ConfigError> {
    if unauthenticated && !open_to_anyone && !listen.ip().is_loopback() {
        return Err(invalid(
            "server.listen",
            format!(
                "`{listen}` is not a loopback address, and with [auth] mode = \"off\" and no [tls] \
                 anyone who reaches it could write events for every tenant. Set [auth] mode = \"required\" \
                 with [tls] or bearer tokens, listen on 127.0.0.1, or, if the network itself authenticates \
                 callers (a service mesh), say so with [auth] allow_anyone_on_network = true"
            ),
        ));
    }
    Ok(())
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The file as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: ServerSection,
    pub upstream: UpstreamSection,
    pub emulator: EmulatorSection,
    pub metrics: MetricsSection,
    pub tls: Option<TlsSection>,
    pub auth: AuthSection,
    pub quotas: QuotasSection,
    pub sources: SourcesSection,
    pub cluster: Option<ClusterSection>,
    pub durable: DurableSection,
    pub idempotency: crate::idempotency::IdempotencySection,
    pub tracing: crate::traces::TracingSection,
    pub tenants: BTreeMap<String, TenantSection>,
}

impl Default for RawConfig {
    fn default() -> Self {
        let mut sources = BTreeMap::new();
        sources.insert(
            "events".to_string(),
            SourceSection {
                name: DEMO_SOURCE.to_string(),
                region: "us-east-1".to_string(),
                alias_of: None,
            },
        );
        let mut pending_sources = BTreeMap::new();
        pending_sources.insert(
            "events".to_string(),
            SourceSection {
                name: DEMO_PENDING_SOURCE.to_string(),
                region: "us-east-1".to_string(),
                alias_of: None,
            },
        );
        let mut tenants = BTreeMap::new();
        tenants.insert(
            "demo-pending".to_string(),
            TenantSection {
                default_source: "events".to_string(),
                sources: pending_sources,
                on_inactive: None,
                weight: DEFAULT_TENANT_WEIGHT,
                delivery: None,
            },
        );
        tenants.insert(
            "demo".to_string(),
            TenantSection {
                default_source: "events".to_string(),
                sources,
                on_inactive: None,
                weight: DEFAULT_TENANT_WEIGHT,
                delivery: None,
            },
        );
        Self {
            server: ServerSection::default(),
            upstream: UpstreamSection::default(),
            emulator: EmulatorSection::default(),
            metrics: MetricsSection::default(),
            tls: None,
            auth: AuthSection::default(),
            quotas: QuotasSection::default(),
            sources: SourcesSection::default(),
            cluster: None,
            durable: DurableSection::default(),
            idempotency: Default::default(),
            tracing: Default::default(),
            tenants,
        }
    }
}

/// `[sources]`: learning each partner event source's state, and what to do
/// with entries for a source that is not ACTIVE.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesSection {
    /// Learn source states from EventBridge (ListPartnerEventSourceAccounts)
    /// and act on them. Needs the permission in deploy/iam-policy.json.
    pub check_state: bool,
    /// How often every source's state is read again.
    pub refresh_ms: u64,
    /// Control-plane calls per second per region (EventBridge's quota for
    /// these is low; stay well inside it).
    pub calls_per_second: f64,
    /// Entries for a source that is not ACTIVE: "refuse" (SourceNotActive,
    /// nothing sent) or "send_and_flag" (sent, with a warning on the result).
    pub on_inactive: InactivePolicy,
    /// Your partner name, the `<partner>` of `aws.partner/<partner>/...`,
    /// used by `sources create` to name new sources.
    pub partner_name: String,
}

impl Default for SourcesSection {
    fn default() -> Self {
        Self {
            check_state: true,
            refresh_ms: 60_000,
            calls_per_second: 5.0,
            on_inactive: InactivePolicy::Refuse,
            partner_name: "example.com".to_string(),
        }
    }
}

/// `[metrics]`: Prometheus text on a separate HTTP port.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Where `/metrics` is served; an empty string turns metrics off.
    pub listen: String,
    /// Add the tenant as a label of the entry counters. Off by default: with
    /// many tenants it multiplies the series.
    pub tenant_label: bool,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".to_string(),
            tenant_label: false,
        }
    }
}

/// `[tls]`: TLS on the gRPC port; with `client_ca_file`, mutual TLS.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The server's certificate chain, PEM.
    pub cert_file: String,
    /// The server's private key, PEM.
    pub key_file: String,
    /// CA bundle (PEM) that client certificates must chain to. Set: clients
    /// may present a certificate, and its SAN URI or DNS names identify them.
    pub client_ca_file: Option<String>,
    /// With `client_ca_file`: refuse connections without a client certificate.
    #[serde(default)]
    pub require_client_cert: bool,
}

/// `[quotas]`: pacing upstream, and limits per tenant and per caller.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasSection {
    /// PutPartnerEvents calls per second per region, kept below
    /// EventBridge's quota (1,400/s by default per account and region) so
    /// that the gateway queues instead of being throttled. 0: no pacing.
    pub upstream_calls_per_second: f64,
    /// Calls that may go out at once above the steady rate.
    pub upstream_burst: u32,
    /// When EventBridge throttles a whole call, lower the pace at once and
    /// recover gradually (as the AWS SDKs' adaptive retry mode does).
    pub adaptive_pacing: bool,
    /// Entries per second one tenant may send. 0: no limit.
    pub tenant_entries_per_second: f64,
    /// Entries per second one caller may send. 0: no limit.
    pub caller_entries_per_second: f64,
    /// Seconds' worth of the per-tenant and per-caller rates that may be
    /// used at once.
    pub burst_seconds: f64,
}

impl Default for QuotasSection {
    fn default() -> Self {
        Self {
            upstream_calls_per_second: 1_000.0,
            upstream_burst: 100,
            adaptive_pacing: true,
            tenant_entries_per_second: 0.0,
            caller_entries_per_second: 0.0,
            burst_seconds: 1.0,
        }
    }
}

/// `[server]`: the gRPC side.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// gRPC listen address.
    pub listen: String,
    /// How long in-flight calls may run after SIGTERM before the process exits.
    pub shutdown_grace_ms: u64,
    /// Most entries one request (or one stream message) may carry.
    pub max_entries_per_request: usize,
    /// Largest gRPC message accepted, in bytes (tonic's default is 4 MiB).
    pub max_message_bytes: usize,
    /// Entries in flight in the whole gateway. Beyond it streams stop being
    /// read and unary calls wait up to their deadline, then get
    /// RESOURCE_EXHAUSTED.
    pub max_in_flight_entries: usize,
    /// The share of max_in_flight_entries one tenant may hold (0 to 1; at
    /// least max_entries_per_request), so that a flooding tenant leaves room
    /// for the others: beyond it that
    /// tenant's streams stop being read and its unary calls wait up to their
    /// deadline, then get RESOURCE_EXHAUSTED (TENANT_IN_FLIGHT_LIMIT).
    pub max_in_flight_share_per_tenant: f64,
    /// Entries in flight per stream; beyond it the stream stops being read.
    pub stream_window_entries: usize,
    /// Concurrent HTTP/2 streams (calls) per client connection.
    pub max_concurrent_streams: u32,
    /// A plaintext port serving only the health service, for Kubernetes'
    /// gRPC probes, which cannot speak TLS. Empty: none.
    pub health_listen: String,
    /// Connections are closed (gracefully) after this long, so clients
    /// reconnect and spread over replicas behind an L4 balancer. 0: never.
    pub max_connection_age_ms: u64,
    /// How often the config file is checked for changes (tenants and auth
    /// reload without a restart; SIGHUP reloads at once). 0: only SIGHUP.
    pub reload_poll_ms: u64,
    /// A connection that has not sent the HTTP/2 preface and its first
    /// SETTINGS frame (with TLS: finished the TLS handshake) this long after
    /// accept is closed. Applies to the health port too.
    pub handshake_timeout_ms: u64,
    /// A connection with no call open for this long is closed (an open
    /// stream keeps its connection). 0: never. Applies to the health port too.
    pub idle_timeout_ms: u64,
    /// The gateway PINGs each client this often (HTTP/2 keepalive), to find
    /// peers that vanished without closing. 0: no pings.
    pub keepalive_interval_ms: u64,
    /// A PING not answered within this closes the connection.
    pub keepalive_timeout_ms: u64,
    /// Connections open at once; beyond it new ones are closed at accept.
    /// The health port has a budget of its own of the same size.
    pub max_connections: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.to_string(),
            shutdown_grace_ms: 10_000,
            max_entries_per_request: DEFAULT_MAX_ENTRIES_PER_REQUEST,
            max_message_bytes: 4 * 1024 * 1024,
            max_in_flight_entries: 20_000,
            max_in_flight_share_per_tenant: 0.5,
            stream_window_entries: 2_000,
            max_concurrent_streams: 256,
            health_listen: String::new(),
            max_connection_age_ms: 0,
            reload_poll_ms: 2_000,
            handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT.as_millis() as u64,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT.as_millis() as u64,
            keepalive_interval_ms: DEFAULT_KEEPALIVE_INTERVAL.as_millis() as u64,
            keepalive_timeout_ms: DEFAULT_KEEPALIVE_TIMEOUT.as_millis() as u64,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// `[upstream]`: how EventBridge is called.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSection {
    pub kind: UpstreamKind,
    /// Overrides the EventBridge endpoint for every region (an emulator, moto).
    pub endpoint_url: Option<String>,
    /// Size limit of one PutPartnerEvents call by the AWS formula.
    pub max_call_bytes: usize,
    /// Upstream calls in flight at once, per region.
    pub max_concurrent_calls: usize,
    /// How long entries wait for others bound for the same source before a
    /// call that is not full goes out. 0 turns coalescing off.
    pub linger_ms: u64,
    /// The SDK's own attempts for a call that fails whole. 1 by default:
    /// the gateway resends itself, because the SDK's standard retry also
    /// resends a call whose connection broke after sending, which can
    /// deliver its events twice without anyone being told.
    pub sdk_max_attempts: u32,
    pub connect_timeout_ms: u64,
    /// Bound on one upstream call, SDK retries included.
    pub call_timeout_ms: u64,
    /// Sends per entry, the first included, for retryable failures:
    /// InternalFailure, and calls that failed whole with a 5xx, an
    /// unreadable answer, or no connection. ThrottlingException is resent,
    /// paced, until the caller's deadline or the retry budget says no.
    pub entry_max_attempts: u32,
    /// First backoff before resending failed entries; doubles each round,
    /// with full jitter.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Deadline applied to a call that carries no `grpc-timeout`.
    pub default_deadline_ms: u64,
    /// Resends earned per first send (0.2: at most one resend for five
    /// sends), so that an outage does not multiply the load on EventBridge.
    pub retry_budget_ratio: f64,
    /// Resends allowed per second whatever the ratio says.
    pub retry_budget_min_per_second: f64,
    /// Resend entries whose outcome is unknown (timed out after sending,
    /// connection dropped mid-call). They may then be delivered twice:
    /// EventBridge has no idempotency key. Off by default.
    pub resend_unknown: bool,
    /// Failed calls in a row that open a region's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker fails calls fast before probing.
    pub breaker_open_ms: u64,
    /// Successful probe calls in a row that close it again.
    pub breaker_probes: u32,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        Self {
            kind: UpstreamKind::Emulator,
            endpoint_url: None,
            max_call_bytes: DEFAULT_MAX_CALL_BYTES,
            max_concurrent_calls: 64,
            linger_ms: 5,
            sdk_max_attempts: 1,
            connect_timeout_ms: 3_000,
            call_timeout_ms: 10_000,
            entry_max_attempts: 4,
            retry_base_ms: 25,
            retry_max_ms: 1_000,
            default_deadline_ms: 30_000,
            retry_budget_ratio: 0.2,
            retry_budget_min_per_second: 10.0,
            resend_unknown: false,
            breaker_failures: 5,
            breaker_open_ms: 5_000,
            breaker_probes: 2,
        }
    }
}

/// `[emulator]`: the built-in EventBridge, used when `upstream.kind = "emulator"`
/// and no `endpoint_url` is given.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmulatorSection {
    /// Where the in-process emulator listens (port 0 picks a free one).
    pub listen: String,
    /// Log event payloads (Detail). Off by default: payloads are customer data.
    pub log_payloads: bool,
    /// Append every accepted event to this JSON-lines file.
    pub events_file: Option<String>,
    /// Partner event sources the emulator knows, with their states. Every
    /// configured source not listed here is created ACTIVE.
    pub sources: Vec<SeedSource>,
    /// How many of the last accepted events (and received entries, and
    /// calls) the emulator keeps in memory; 0 keeps none. Counts stay whole.
    pub max_recorded_events: usize,
    /// PutPartnerEvents calls per second per region before the emulator
    /// answers ThrottlingException, as EventBridge does (1,400 by default).
    /// 0: unlimited.
    pub quota_calls_per_second: f64,
    /// Calls per region that may come at once above that rate (3,600 by
    /// default); at least 1 unless unlimited.
    pub quota_burst: u32,
}

impl EmulatorSection {
    /// The quota the fields describe, checked; the error names the field.
    pub fn quota(&self) -> Result<EmulatorQuota, ConfigError> {
        EmulatorQuota::new(self.quota_calls_per_second, self.quota_burst).map_err(|e| match e {
            EmulatorQuotaError::CallsPerSecond => invalid(
                "emulator.quota_calls_per_second",
                "must be 0 (unlimited) or a positive number",
            ),
            EmulatorQuotaError::Burst => invalid(
                "emulator.quota_burst",
                "must be at least 1 unless emulator.quota_calls_per_second is 0 (unlimited)",
            ),
        })
    }
}

impl Default for EmulatorSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4010".to_string(),
            log_payloads: false,
            events_file: None,
            sources: vec![
                SeedSource::new(DEMO_SOURCE, EMULATOR_ACCOUNT, EmulatorSourceState::Active),
                SeedSource::new(
                    DEMO_PENDING_SOURCE,
                    EMULATOR_ACCOUNT,
                    EmulatorSourceState::Pending,
                ),
            ],
            max_recorded_events: DEFAULT_MAX_RECORDED_EVENTS,
            quota_calls_per_second: DEFAULT_QUOTA_CALLS_PER_SECOND,
            quota_burst: DEFAULT_QUOTA_BURST,
        }
    }
}

/// `[tenants.<id>]`: one customer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    /// The key (in `sources`) used when an entry names no `source_key`.
    pub default_source: String,
    pub sources: BTreeMap<String, SourceSection>,
    /// Overrides `sources.on_inactive` for this tenant.
    pub on_inactive: Option<InactivePolicy>,
    /// The tenant's weight when tenants share a region's quota: with calls
    /// waiting for pacing, a tenant of weight 2 gets twice the calls of a
    /// tenant of weight 1. Reloadable.
    #[serde(default = "default_tenant_weight")]
    pub weight: u32,
    /// Overrides `durable.default_delivery` for this tenant's batches that
    /// do not choose (`sync` or `durable`).
    #[serde(default)]
    pub delivery: Option<Delivery>,
}

fn default_tenant_weight() -> u32 {
    DEFAULT_TENANT_WEIGHT
}

/// `[tenants.<id>.sources.<key>]`: one partner event source.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// `aws.partner/<partner>/<namespace>/<name>`
    pub name: String,
    /// The AWS region the source lives in.
    pub region: String,
    /// Another tenant whose source this same one is, said on purpose. A
    /// partner event source belongs to exactly one customer account, so two
    /// tenants naming one source (name and region) is refused unless the
    /// second says whose it is: both tenant ids then reach one customer.
    #[serde(default)]
    pub alias_of: Option<String>,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `[auth] mode = "off"` and no `[tls]`: anyone who reaches the port
    /// may write for every tenant.
    pub unauthenticated: bool,
    /// ... and the operator said so on purpose (`allow_anyone_on_network`).
    pub open_to_anyone: bool,
    /// Plaintext health-only port.
    pub health_listen: Option<SocketAddr>,
    pub max_connection_age: Option<Duration>,
    pub reload_poll: Option<Duration>,
    /// Handshake and idle timeouts and the connection bound, per listener.
    pub connections: ConnectionLimits,
    /// HTTP/2 keepalive PINGs; None: off.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    /// Where `/metrics` is served; None: off.
    pub metrics_listen: Option<SocketAddr>,
    pub metrics_tenant_label: bool,
    pub tls: Option<TlsSection>,
    pub auth: AuthPolicy,
    pub quotas: QuotasSection,
    pub sources: SourcesSettings,
    /// The Redis the replicas share; None: one replica, in-process pacing.
    pub cluster: Option<ClusterSettings>,
    /// The durable queue: always there (DURABLE batches need it).
    pub durable: DurableSettings,
    pub idempotency: crate::idempotency::IdempotencySettings,
    /// Traces over OTLP (off unless an endpoint is set).
    pub tracing: crate::traces::TracingSection,
    pub shutdown_grace: Duration,
    pub max_entries_per_request: usize,
    pub max_message_bytes: usize,
    pub max_in_flight_entries: usize,
    /// One tenant's share of `max_in_flight_entries`, in entries.
    pub max_in_flight_per_tenant: usize,
    pub stream_window_entries: usize,
    pub max_concurrent_streams: u32,
    /// How the AWS SDK clients are built.
    pub sdk: SdkSettings,
    /// How entries are packed, paced, sent and resent.
    pub pipeline: PipelineSettings,
    /// The deadline of a call that carries no `grpc-timeout`.
    pub default_deadline: Duration,
    pub emulator: EmulatorSection,
    pub emulator_listen: SocketAddr,
    /// The built-in emulator's quota, from `emulator.quota_*`.
    pub emulator_quota: EmulatorQuota,
    pub tenants: TenantDirectory,
}

impl Config {
    /// Protected mode for the address the gateway really listens on (a
    /// `--listen` flag, or a listener handed to [`crate::server::start`],
    /// may differ from the file's): see [`protected_mode`].
    pub fn check_listener(&self, addr: SocketAddr) -> Result<(), ConfigError> {
        protected_mode(addr, self.unauthenticated, self.open_to_anyone)
    }

    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        raw.validate()
    }

    /// The built-in configuration used when no file is given.
    pub fn local_default() -> Self {
        RawConfig::default()
            .validate()
            .expect("the built-in default config is valid")
    }
}

impl RawConfig {
    /// Checks every field and builds the tenant directory.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let listen: SocketAddr = self.server.listen.parse().map_err(|e| {
            invalid(
                "server.listen",
                format!("`{}` is not an address: {e}", self.server.listen),
            )
        })?;
        let emulator_listen: SocketAddr = self.emulator.listen.parse().map_err(|e| {
            invalid(
                "emulator.listen",
                format!("`{}` is not an address: {e}", self.emulator.listen),
            )
        })?;
        if self.emulator.max_recorded_events > MAX_RECORDED_EVENTS_CEILING {
            return Err(invalid(
                "emulator.max_recorded_events",
                format!(
                    "must be 0 (keep none) to {MAX_RECORDED_EVENTS_CEILING}; \
                     the counts stay whole whatever the bound"
                ),
            ));
        }
        let emulator_quota = self.emulator.quota()?;
        let s = &self.server;
        if s.max_entries_per_request == 0
            || s.max_entries_per_request > MAX_ENTRIES_PER_REQUEST_CEILING
        {
            return Err(invalid(
                "server.max_entries_per_request",
                format!("must be 1 to {MAX_ENTRIES_PER_REQUEST_CEILING}"),
            ));
        }
        if s.max_message_bytes < 1024 {
            return Err(invalid("server.max_message_bytes", "must be at least 1024"));
        }
        if s.stream_window_entries < s.max_entries_per_request {
            return Err(invalid(
                "server.stream_window_entries",
                "must be at least server.max_entries_per_request (a batch must fit the window)",
            ));
        }
        if s.max_in_flight_entries < s.stream_window_entries {
            return Err(invalid(
                "server.max_in_flight_entries",
                "must be at least server.stream_window_entries",
            ));
        }
        if s.max_concurrent_streams == 0 {
            return Err(invalid(
                "server.max_concurrent_streams",
                "must be at least 1",
            ));
        }
        let share = s.max_in_flight_share_per_tenant;
        if !(share > 0.0 && share <= 1.0) {
            return Err(invalid(
                "server.max_in_flight_share_per_tenant",
                "must be more than 0 and at most 1",
            ));
        }
        // At least one request's worth, so that any batch can be admitted.
        let max_in_flight_per_tenant = ((s.max_in_flight_entries as f64 * share).ceil() as usize)
            .max(s.max_entries_per_request)
            .min(s.max_in_flight_entries);
        if s.max_in_flight_entries > MAX_IN_FLIGHT_ENTRIES_CEILING {
            return Err(invalid(
                "server.max_in_flight_entries",
                format!("must be at most {MAX_IN_FLIGHT_ENTRIES_CEILING}"),
            ));
        }
        if !(100..=MAX_HANDSHAKE_TIMEOUT_MS).contains(&s.handshake_timeout_ms) {
            return Err(invalid(
                "server.handshake_timeout_ms",
                format!("must be 100 to {MAX_HANDSHAKE_TIMEOUT_MS}"),
            ));
        }
        if s.idle_timeout_ms != 0 && s.idle_timeout_ms < 100 {
            return Err(invalid(
                "server.idle_timeout_ms",
                "must be 0 (never) or at least 100",
            ));
        }
        if s.keepalive_interval_ms != 0 && s.keepalive_interval_ms < 100 {
            return Err(invalid(
                "server.keepalive_interval_ms",
                "must be 0 (no pings) or at least 100",
            ));
        }
        if s.keepalive_interval_ms != 0 && s.keepalive_timeout_ms < 100 {
            return Err(invalid(
                "server.keepalive_timeout_ms",
                "must be at least 100 while server.keepalive_interval_ms is on",
            ));
        }
        if s.max_connections == 0 || s.max_connections > MAX_CONNECTIONS_CEILING {
            return Err(invalid(
                "server.max_connections",
                format!("must be 1 to {MAX_CONNECTIONS_CEILING}"),
            ));
        }
        let (sdk, pipeline, default_deadline) = self.upstream.settings(&self.quotas)?;
        let tenants = build_directory(&self.tenants)?;
        let parse_optional = |field: &str, v: &str| -> Result<Option<SocketAddr>, ConfigError> {
            if v.is_empty() {
                return Ok(None);
            }
            v.parse()
                .map(Some)
                .map_err(|e| invalid(field, format!("`{v}` is not an address: {e}")))
        };
        let health_listen = parse_optional("server.health_listen", &self.server.health_listen)?;
        let metrics_listen = parse_optional("metrics.listen", &self.metrics.listen)?;
        if let Some(tls) = &self.tls {
            if tls.require_client_cert && tls.client_ca_file.is_none() {
                return Err(invalid(
                    "tls.require_client_cert",
                    "needs tls.client_ca_file (the CA client certificates chain to)",
                ));
            }
        }
        let q = &self.quotas;
        for (field, v) in [
            (
                "quotas.upstream_calls_per_second",
                q.upstream_calls_per_second,
            ),
            (
                "quotas.tenant_entries_per_second",
                q.tenant_entries_per_second,
            ),
            (
                "quotas.caller_entries_per_second",
                q.caller_entries_per_second,
            ),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(invalid(field, "must be 0 (off) or a positive number"));
            }
        }
        if !(q.burst_seconds > 0.0 && q.burst_seconds.is_finite()) {
            return Err(invalid("quotas.burst_seconds", "must be a positive number"));
        }
        if q.upstream_calls_per_second > 0.0 && q.upstream_burst == 0 {
            return Err(invalid("quotas.upstream_burst", "must be at least 1"));
        }
        let auth = AuthPolicy::from_section(&self.auth)?;
        let open_to_anyone = self.auth.mode == AuthMode::Off
            && self.tls.is_none()
            && self.auth.allow_anyone_on_network;
        let unauthenticated = self.auth.mode == AuthMode::Off && self.tls.is_none();
        protected_mode(listen, unauthenticated, open_to_anyone)?;
        let sources = self.sources.settings()?;
        Ok(Config {
            listen,
            unauthenticated,
            open_to_anyone,
            health_listen,
            max_connection_age: (self.server.max_connection_age_ms > 0)
                .then(|| Duration::from_millis(self.server.max_connection_age_ms)),
            reload_poll: (self.server.reload_poll_ms > 0)
                .then(|| Duration::from_millis(self.server.reload_poll_ms)),
            connections: ConnectionLimits {
                handshake_timeout: Duration::from_millis(self.server.handshake_timeout_ms),
                idle_timeout: (self.server.idle_timeout_ms > 0)
                    .then(|| Duration::from_millis(self.server.idle_timeout_ms)),
                max_connections: self.server.max_connections,
            },
            keepalive_interval: (self.server.keepalive_interval_ms > 0)
                .then(|| Duration::from_millis(self.server.keepalive_interval_ms)),
            keepalive_timeout: Duration::from_millis(self.server.keepalive_timeout_ms),
            metrics_listen,
            metrics_tenant_label: self.metrics.tenant_label,
            tls: self.tls,
            auth,
            quotas: self.quotas,
            cluster: self
                .cluster
                .as_ref()
                .map(ClusterSection::settings)
                .transpose()?,
            durable: self.durable.settings()?,
            // An entry may still be in a call this long after its
            // caller's deadline.
            tracing: {
                self.tracing
                    .check()
                    .map_err(|(field, problem)| ConfigError::Invalid {
                        field: format!("tracing.{field}"),
                        problem,
                    })?;
                self.tracing.clone()
            },
            idempotency: self
                .idempotency
                .settings(sdk.connect_timeout + sdk.call_timeout + Duration::from_secs(1))?,
            sources,
            shutdown_grace: Duration::from_millis(self.server.shutdown_grace_ms),
            max_entries_per_request: self.server.max_entries_per_request,
            max_message_bytes: self.server.max_message_bytes,
            max_in_flight_entries: self.server.max_in_flight_entries,
            max_in_flight_per_tenant,
            stream_window_entries: self.server.stream_window_entries,
            max_concurrent_streams: self.server.max_concurrent_streams,
            sdk,
            pipeline,
            default_deadline,
            emulator: self.emulator,
            emulator_listen,
            emulator_quota,
            tenants,
        })
    }
}

impl UpstreamSection {
    /// Checks `[upstream]` and returns the typed settings its modules use:
    /// the SDK's, the pipeline's (with the pacing of `quotas`), and the
    /// deadline of a call that carries none.
    pub fn settings(
        &self,
        quotas: &QuotasSection,
    ) -> Result<(SdkSettings, PipelineSettings, Duration), ConfigError> {
        let u = self;
        if u.max_call_bytes < 1024 || u.max_call_bytes > MAX_CALL_BYTES_CEILING {
            return Err(invalid(
                "upstream.max_call_bytes",
                format!("must be 1024 to {MAX_CALL_BYTES_CEILING}"),
            ));
        }
        if u.linger_ms > 1_000 {
            return Err(invalid("upstream.linger_ms", "must be at most 1000"));
        }
        if u.max_concurrent_calls == 0 {
            return Err(invalid(
                "upstream.max_concurrent_calls",
                "must be at least 1",
            ));
        }
        if u.sdk_max_attempts == 0 {
            return Err(invalid("upstream.sdk_max_attempts", "must be at least 1"));
        }
        if u.entry_max_attempts == 0 {
            return Err(invalid("upstream.entry_max_attempts", "must be at least 1"));
        }
        if u.retry_base_ms > u.retry_max_ms {
            return Err(invalid(
                "upstream.retry_base_ms",
                "must not exceed upstream.retry_max_ms",
            ));
        }
        for (field, v) in [
            ("upstream.connect_timeout_ms", u.connect_timeout_ms),
            ("upstream.call_timeout_ms", u.call_timeout_ms),
            ("upstream.default_deadline_ms", u.default_deadline_ms),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        if !(u.retry_budget_ratio >= 0.0 && u.retry_budget_ratio.is_finite()) {
            return Err(invalid("upstream.retry_budget_ratio", "must be 0 or more"));
        }
        if !(u.retry_budget_min_per_second >= 0.0 && u.retry_budget_min_per_second.is_finite()) {
            return Err(invalid(
                "upstream.retry_budget_min_per_second",
                "must be 0 or more",
            ));
        }
        if u.breaker_failures == 0 || u.breaker_probes == 0 || u.breaker_open_ms == 0 {
            return Err(invalid(
                "upstream.breaker_failures",
                "breaker_failures, breaker_open_ms and breaker_probes must be at least 1",
            ));
        }
        if let Some(url) = &u.endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "upstream.endpoint_url",
                    format!("`{url}` must start with http:// or https://"),
                ));
            }
        }
        let ms = Duration::from_millis;
        let sdk = SdkSettings {
            kind: u.kind,
            endpoint_url: u.endpoint_url.clone(),
            max_attempts: u.sdk_max_attempts,
            connect_timeout: ms(u.connect_timeout_ms),
            call_timeout: ms(u.call_timeout_ms),
        };
        let pipeline = PipelineSettings {
            max_call_bytes: u.max_call_bytes,
            linger: ms(u.linger_ms),
            max_concurrent_calls_per_region: u.max_concurrent_calls,
            upstream_calls_per_second: quotas.upstream_calls_per_second,
            upstream_burst: quotas.upstream_burst,
            adaptive_pacing: quotas.adaptive_pacing,
            retry: RetryPolicy {
                max_attempts: u.entry_max_attempts,
                base: ms(u.retry_base_ms),
                max: ms(u.retry_max_ms),
                resend_unknown: u.resend_unknown,
            },
            breaker: BreakerSettings {
                failures: u.breaker_failures,
                open_for: ms(u.breaker_open_ms),
                probes: u.breaker_probes,
            },
            retry_budget_ratio: u.retry_budget_ratio,
            retry_budget_min_per_second: u.retry_budget_min_per_second,
        };
        Ok((sdk, pipeline, ms(u.default_deadline_ms)))
    }
}

/// `[sources]`, checked: what the refresher and the API use.
#[derive(Debug, Clone)]
pub struct SourcesSettings {
    pub check_state: bool,
    pub refresh: Duration,
    pub calls_per_second: f64,
    pub on_inactive: InactivePolicy,
    pub partner_name: String,
}

impl SourcesSection {
    /// Checks `[sources]` and returns its typed settings.
    pub fn settings(&self) -> Result<SourcesSettings, ConfigError> {
        if self.refresh_ms < 100 {
            return Err(invalid("sources.refresh_ms", "must be at least 100"));
        }
        if !(self.calls_per_second > 0.0 && self.calls_per_second.is_finite()) {
            return Err(invalid(
                "sources.calls_per_second",
                "must be a positive number",
            ));
        }
        Ok(SourcesSettings {
            check_state: self.check_state,
            refresh: Duration::from_millis(self.refresh_ms),
            calls_per_second: self.calls_per_second,
            on_inactive: self.on_inactive,
            partner_name: self.partner_name.clone(),
        })
    }
}

fn build_directory(raw: &BTreeMap<String, TenantSection>) -> Result<TenantDirectory, ConfigError> {
    if raw.is_empty() {
        return Err(invalid("tenants", "at least one tenant is required"));
    }
    check_sources_not_shared(raw)?;
    let mut tenants = Vec::with_capacity(raw.len());
    for (id, t) in raw {
        let field = format!("tenants.{id}");
        if id.is_empty() {
            return Err(invalid("tenants", "a tenant id must not be empty"));
        }
        if t.sources.is_empty() {
            return Err(invalid(
                format!("{field}.sources"),
                "at least one source is required",
            ));
        }
        let mut sources = BTreeMap::new();
        for (key, s) in &t.sources {
            let f = format!("{field}.sources.{key}");
            if !is_valid_source_name(&s.name) {
                return Err(invalid(
                    format!("{f}.name"),
                    format!(
                        "`{}` is not a partner event source name \
                         (aws.partner/<partner>/<namespace>/<name>, at most 256 characters)",
                        s.name
                    ),
                ));
            }
            if !is_valid_region(&s.region) {
                return Err(invalid(
                    format!("{f}.region"),
                    format!("`{}` is not an AWS region name", s.region),
                ));
            }
            sources.insert(key.clone(), SourceRef::new(&s.name, &s.region));
        }
        if !sources.contains_key(&t.default_source) {
            return Err(invalid(
                format!("{field}.default_source"),
                format!(
                    "`{}` is not one of this tenant's sources ({})",
                    t.default_source,
                    t.sources.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if t.weight == 0 || t.weight > MAX_TENANT_WEIGHT {
            return Err(invalid(
                format!("{field}.weight"),
                format!("must be 1 to {MAX_TENANT_WEIGHT}"),
            ));
        }
        tenants.push(
            Tenant::new(id.clone(), t.default_source.clone(), sources)
                .with_inactive_policy(t.on_inactive)
                .with_delivery(t.delivery)
                .with_weight(t.weight),
        );
    }
    Ok(TenantDirectory::new(tenants))
}

/// Refuses two tenants naming one partner event source (name and region),
/// unless the second names the first in `alias_of`: a source belongs to one
/// customer account, so one tenant's events would reach the other's
/// customer.
fn check_sources_not_shared(raw: &BTreeMap<String, TenantSection>) -> Result<(), ConfigError> {
    // (name, region) -> the first tenant and key naming it.
    let mut owners: BTreeMap<(&str, &str), (&str, &str)> = BTreeMap::new();
    for (id, t) in raw {
        for (key, s) in &t.sources {
            let field = format!("tenants.{id}.sources.{key}");
            if let Some(other) = &s.alias_of {
                let names_it = raw.get(other).is_some_and(|o| {
                    o.sources
                        .values()
                        .any(|os| os.name == s.name && os.region == s.region)
                });
                if other == id || !names_it {
                    return Err(invalid(
                        format!("{field}.alias_of"),
                        format!(
                            "`{other}` must be another tenant with a source named `{}` in {}",
                            s.name, s.region
                        ),
                    ));
                }
            }
            match owners.get(&(s.name.as_str(), s.region.as_str())) {
                None => {
                    owners.insert((&s.name, &s.region), (id, key));
                }
                Some((owner, _)) if *owner == id => {}
                Some((owner, owner_key)) => {
                    let aliased = s.alias_of.as_deref() == Some(*owner)
                        || raw[*owner].sources[*owner_key].alias_of.as_deref() == Some(id);
                    if !aliased {
                        return Err(invalid(
                            field,
                            format!(
                                "tenants `{owner}` (source `{owner_key}`) and `{id}` (source `{key}`) both name \
                                 `{}` in {}; a partner event source belongs to one customer account, so one \
                                 tenant's events would reach the other's customer. If both tenants really are \
                                 that one customer, set alias_of = \"{owner}\" on tenants.{id}.sources.{key}",
                                s.name, s.region
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_TENANTS_ONE_SOURCE: &str = r#"
[tenants.a]
default_source = "x"
[tenants.a.sources.x]
name = "aws.partner/example.com/a/events"
region = "us-east-1"
[tenants.b]
default_source = "y"
[tenants.b.sources.y]
name = "aws.partner/example.com/a/events"
region = "us-east-1"
"#;

    #[test]
    fn two_tenants_naming_one_source_are_refused_with_both_named() {
        let e = Config::from_toml(TWO_TENANTS_ONE_SOURCE, "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tenants `a` (source `x`) and `b` (source `y`)"),
            "{e}"
        );
        assert!(e.contains("alias_of"), "{e}");
        // The same name in another region is another source.
        let other_region =
            TWO_TENANTS_ONE_SOURCE.replacen("region = \"us-east-1\"", "region = \"eu-west-1\"", 1);
        assert!(Config::from_toml(&other_region, "t").is_ok());
    }

    #[test]
    fn a_shared_source_marked_as_an_alias_is_taken() {
        let aliased = format!("{TWO_TENANTS_ONE_SOURCE}alias_of = \"a\"\n");
        let c = Config::from_toml(&aliased, "t").unwrap();
        assert_eq!(c.tenants.len(), 2);
        // An alias must name the tenant that has the source.
        let wrong = format!("{TWO_TENANTS_ONE_SOURCE}alias_of = \"b\"\n");
        let e = Config::from_toml(&wrong, "t").unwrap_err().to_string();
        assert!(e.contains("tenants.b.sources.y.alias_of"), "{e}");
    }

    #[test]
    fn no_unauthenticated_plaintext_listener_off_loopback() {
        let e = Config::from_toml("[server]\nlisten = \"0.0.0.0:50051\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server.listen") && e.contains("allow_anyone_on_network"),
            "{e}"
        );
        // Said on purpose, it serves; loopback needs nothing.
        let open = "[server]\nlisten = \"0.0.0.0:50051\"\n[auth]\nallow_anyone_on_network = true\n";
        assert!(Config::from_toml(open, "t").is_ok());
        assert!(Config::from_toml("[server]\nlisten = \"127.0.0.1:50051\"\n", "t").is_ok());
        assert!(Config::from_toml("[server]\nlisten = \"[::1]:50051\"\n", "t").is_ok());
    }

    #[test]
    fn empty_file_is_the_local_default() {
        let c = Config::from_toml("", "t").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.sdk.kind, UpstreamKind::Emulator);
        assert_eq!(c.connections, ConnectionLimits::default());
        assert_eq!(c.keepalive_interval, Some(DEFAULT_KEEPALIVE_INTERVAL));
        let demo = c.tenants.get("demo").unwrap();
        assert_eq!(
            demo.source("").unwrap().name(),
            "aws.partner/example.com/demo/events"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = Config::from_toml(
            "[tenants.a]\ndefault_source = \"x\"\n[tenants.a.sources.y]\nname = \"aws.partner/a/b\"\nregion = \"us-east-1\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tenants.a.default_source"), "{e}");

        let e = Config::from_toml(
            "[tenants.a]\ndefault_source = \"y\"\n[tenants.a.sources.y]\nname = \"partner/a/b\"\nregion = \"us-east-1\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tenants.a.sources.y.name"), "{e}");

        let e = Config::from_toml("[server]\nlisten = \"nope\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.listen"), "{e}");

        for (text, field) in [
            ("handshake_timeout_ms = 0", "server.handshake_timeout_ms"),
            (
                "handshake_timeout_ms = 600000",
                "server.handshake_timeout_ms",
            ),
            ("idle_timeout_ms = 5", "server.idle_timeout_ms"),
            ("keepalive_interval_ms = 5", "server.keepalive_interval_ms"),
            ("keepalive_timeout_ms = 0", "server.keepalive_timeout_ms"),
            ("max_connections = 0", "server.max_connections"),
        ] {
            let e = Config::from_toml(&format!("[server]\n{text}\n"), "t")
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
        let c = Config::from_toml(
            "[server]\nidle_timeout_ms = 0\nkeepalive_interval_ms = 0\nkeepalive_timeout_ms = 0\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.connections.idle_timeout, None, "0 turns idle closing off");
        assert_eq!(c.keepalive_interval, None, "0 turns pings off");

        let e = Config::from_toml("[server]\nlistn = \"x\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");

        let e = Config::from_toml("[emulator]\nmax_recorded_events = 10000001\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("emulator.max_recorded_events"), "{e}");
    }

    #[test]
    fn the_emulator_quota_is_eventbridges_by_default_and_checked() {
        let c = Config::local_default();
        assert_eq!(c.emulator_quota, EmulatorQuota::EVENTBRIDGE_DEFAULT);
        let c = Config::from_toml(
            "[emulator]\nquota_calls_per_second = 20\nquota_burst = 5\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.emulator_quota, EmulatorQuota::new(20.0, 5).unwrap());
        let c = Config::from_toml(
            "[emulator]\nquota_calls_per_second = 0\nquota_burst = 0\n",
            "t",
        )
        .unwrap();
        assert!(c.emulator_quota.is_unlimited());
        for (text, field) in [
            (
                "[emulator]\nquota_calls_per_second = -1.0\n",
                "emulator.quota_calls_per_second",
            ),
            (
                "[emulator]\nquota_calls_per_second = nan\n",
                "emulator.quota_calls_per_second",
            ),
            ("[emulator]\nquota_burst = 0\n", "emulator.quota_burst"),
        ] {
            let e = Config::from_toml(text, "t").unwrap_err().to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
    }

    #[test]
    fn the_emulator_record_is_bounded_by_default() {
        let c = Config::from_toml("", "t").unwrap();
        assert_eq!(c.emulator.max_recorded_events, DEFAULT_MAX_RECORDED_EVENTS);
        let c = Config::from_toml("[emulator]\nmax_recorded_events = 0\n", "t").unwrap();
        assert_eq!(c.emulator.max_recorded_events, 0);
    }
}
