//! The configuration file: TOML read into serde structs, then checked by
//! [`RawConfig::validate`] into a [`Config`] the rest of the gateway trusts.
//!
//! Every field has a default, so an empty file (or no file) is a working
//! local setup: the gateway on 127.0.0.1:50051, the built-in emulator, and a
//! `demo` tenant. Errors name the field and the problem, because an operator
//! reads them at start-up.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use serde::Deserialize;

use crate::domain::{
    limits::{
        DEFAULT_MAX_CALL_BYTES, DEFAULT_MAX_ENTRIES_PER_REQUEST, MAX_CALL_BYTES_CEILING,
        MAX_ENTRIES_PER_REQUEST_CEILING,
    },
    source::{is_valid_region, is_valid_source_name},
    tenant::{SourceRef, Tenant, TenantDirectory},
};

/// Where the gateway listens by default: loopback, so a fresh checkout
/// never exposes an unauthenticated port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// The most `server.max_in_flight_entries` may be (a semaphore's bound).
pub const MAX_IN_FLIGHT_ENTRIES_CEILING: usize = 10_000_000;

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

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: ServerSection,
    pub upstream: UpstreamSection,
    pub emulator: EmulatorSection,
    pub tenants: BTreeMap<String, TenantSection>,
}

impl Default for RawConfig {
    fn default() -> Self {
        let mut sources = BTreeMap::new();
        sources.insert(
            "events".to_string(),
            SourceSection {
                name: "aws.partner/example.com/demo/events".to_string(),
                region: "us-east-1".to_string(),
            },
        );
        let mut tenants = BTreeMap::new();
        tenants.insert(
            "demo".to_string(),
            TenantSection {
                default_source: "events".to_string(),
                sources,
            },
        );
        Self {
            server: ServerSection::default(),
            upstream: UpstreamSection::default(),
            emulator: EmulatorSection::default(),
            tenants,
        }
    }
}

/// `[server]`: the gRPC side.
#[derive(Debug, Clone, Deserialize)]
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
    /// Entries in flight per stream; beyond it the stream stops being read.
    pub stream_window_entries: usize,
    /// Concurrent HTTP/2 streams (calls) per client connection.
    pub max_concurrent_streams: u32,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.to_string(),
            shutdown_grace_ms: 10_000,
            max_entries_per_request: DEFAULT_MAX_ENTRIES_PER_REQUEST,
            max_message_bytes: 4 * 1024 * 1024,
            max_in_flight_entries: 20_000,
            stream_window_entries: 2_000,
            max_concurrent_streams: 256,
        }
    }
}

/// Which EventBridge the gateway talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamKind {
    /// The built-in emulator, started in-process (or the one at
    /// `endpoint_url`); requests are signed with dummy credentials.
    Emulator,
    /// AWS (or any endpoint at `endpoint_url`), with credentials from the
    /// standard AWS chain (environment, profile, web identity/IRSA, IMDS).
    Aws,
}

/// `[upstream]`: how EventBridge is called.
#[derive(Debug, Clone, Deserialize)]
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
    /// The SDK's own attempts for a call that fails whole (throttling, 5xx).
    pub sdk_max_attempts: u32,
    pub connect_timeout_ms: u64,
    /// Bound on one upstream call, SDK retries included.
    pub call_timeout_ms: u64,
    /// Attempts per entry for per-entry retryable errors (ThrottlingException,
    /// InternalFailure), the first send included.
    pub entry_max_attempts: u32,
    /// First backoff before resending failed entries; doubles each round,
    /// with full jitter.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Deadline applied to a call that carries no `grpc-timeout`.
    pub default_deadline_ms: u64,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        Self {
            kind: UpstreamKind::Emulator,
            endpoint_url: None,
            max_call_bytes: DEFAULT_MAX_CALL_BYTES,
            max_concurrent_calls: 64,
            linger_ms: 5,
            sdk_max_attempts: 3,
            connect_timeout_ms: 3_000,
            call_timeout_ms: 10_000,
            entry_max_attempts: 4,
            retry_base_ms: 25,
            retry_max_ms: 1_000,
            default_deadline_ms: 30_000,
        }
    }
}

/// `[emulator]`: the built-in EventBridge, used when `upstream.kind = "emulator"`
/// and no `endpoint_url` is given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmulatorSection {
    /// Where the in-process emulator listens (port 0 picks a free one).
    pub listen: String,
    /// Log event payloads (Detail). Off by default: payloads are customer data.
    pub log_payloads: bool,
    /// Append every accepted event to this JSON-lines file.
    pub events_file: Option<String>,
}

impl Default for EmulatorSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".to_string(),
            log_payloads: false,
            events_file: None,
        }
    }
}

/// `[tenants.<id>]`: one customer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    /// The key (in `sources`) used when an entry names no `source_key`.
    pub default_source: String,
    pub sources: BTreeMap<String, SourceSection>,
}

/// `[tenants.<id>.sources.<key>]`: one partner event source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// `aws.partner/<partner>/<namespace>/<name>`
    pub name: String,
    /// The AWS region the source lives in.
    pub region: String,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub shutdown_grace: Duration,
    pub max_entries_per_request: usize,
    pub max_message_bytes: usize,
    pub max_in_flight_entries: usize,
    pub stream_window_entries: usize,
    pub max_concurrent_streams: u32,
    pub upstream: UpstreamSection,
    pub emulator: EmulatorSection,
    pub emulator_listen: SocketAddr,
    pub tenants: TenantDirectory,
}

impl Config {
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
        if s.max_in_flight_entries > MAX_IN_FLIGHT_ENTRIES_CEILING {
            return Err(invalid(
                "server.max_in_flight_entries",
                format!("must be at most {MAX_IN_FLIGHT_ENTRIES_CEILING}"),
            ));
        }
        let u = &self.upstream;
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
        if let Some(url) = &u.endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "upstream.endpoint_url",
                    format!("`{url}` must start with http:// or https://"),
                ));
            }
        }
        let tenants = build_directory(&self.tenants)?;
        Ok(Config {
            listen,
            shutdown_grace: Duration::from_millis(self.server.shutdown_grace_ms),
            max_entries_per_request: self.server.max_entries_per_request,
            max_message_bytes: self.server.max_message_bytes,
            max_in_flight_entries: self.server.max_in_flight_entries,
            stream_window_entries: self.server.stream_window_entries,
            max_concurrent_streams: self.server.max_concurrent_streams,
            upstream: self.upstream,
            emulator: self.emulator,
            emulator_listen,
            tenants,
        })
    }
}

fn build_directory(raw: &BTreeMap<String, TenantSection>) -> Result<TenantDirectory, ConfigError> {
    if raw.is_empty() {
        return Err(invalid("tenants", "at least one tenant is required"));
    }
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
        tenants.push(Tenant::new(id.clone(), t.default_source.clone(), sources));
    }
    Ok(TenantDirectory::new(tenants))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_local_default() {
        let c = Config::from_toml("", "t").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.upstream.kind, UpstreamKind::Emulator);
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

        let e = Config::from_toml("[server]\nlistn = \"x\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
