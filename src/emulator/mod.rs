//! A local EventBridge that speaks the real wire protocol (AWS JSON 1.1,
//! `POST /`, `x-amz-target: AWSEvents.<Operation>`), so the gateway reaches
//! it through the real AWS SDK with `endpoint_url`. It validates
//! `PutPartnerEvents` calls and entries as EventBridge does, records what it
//! received and accepted (the last [`EmulatorConfig::max_recorded_events`]
//! of each, with whole counts beside them), models the partner side of the
//! event source lifecycle, enforces EventBridge's quota of calls per region
//! ([`Quota`]), and fails on demand through [`FaultRule`]s. Signatures are
//! not checked.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use partner_events_gateway::emulator::{Emulator, EmulatorConfig};
//! let handle = Emulator::spawn("127.0.0.1:0".parse().unwrap(), EmulatorConfig::default()).await?;
//! let url = handle.endpoint_url(); // give this to the SDK as `endpoint_url`
//! # let _ = url;
//! assert!(handle.events().is_empty());
//! handle.shutdown();
//! # Ok(()) }
//! ```
//!
//! # Operations
//! - `AWSEvents.PutPartnerEvents`: validated, recorded, subject to faults.
//! - `AWSEvents.CreatePartnerEventSource` `{Name, Account}` ->
//!   `{EventSourceArn}`; a new source is `PENDING` and expires (reported,
//!   not enforced) 90 days later. A name in use: `ResourceAlreadyExistsException`.
//! - `AWSEvents.DescribePartnerEventSource` `{Name}` -> `{Arn, Name}`.
//! - `AWSEvents.ListPartnerEventSourceAccounts` `{EventSourceName}` ->
//!   `{PartnerEventSourceAccounts: [{Account, CreationTime, ExpirationTime, State}]}`,
//!   times in epoch seconds, `ExpirationTime` only while `PENDING`.
//! - `AWSEvents.DeletePartnerEventSource` `{Name, Account}` -> `{}`; the
//!   source stays listed as `DELETED`.
//!
//! An unknown source name is `ResourceNotFoundException` (for Delete too,
//! though the service model lists no such error there). ARNs take the region
//! of the request's SigV4 credential scope (default `us-east-1`); the
//! emulator keeps one namespace of sources for all regions.
//!
//! # Quota
//! Like EventBridge, the emulator refuses `PutPartnerEvents` calls beyond a
//! quota per region: a token bucket of [`Quota::calls_per_second`] holding
//! at most [`Quota::burst`] calls, EventBridge's default 1,400/s and 3,600
//! unless [`EmulatorConfig::quota`] (or [`EmulatorHandle::set_quota`]) says
//! otherwise; a rate of 0 is unlimited. A call beyond it fails whole with
//! HTTP 400 `{"__type":"ThrottlingException","message":"Rate exceeded"}`
//! (and `x-amzn-errortype: ThrottlingException`), before its body is
//! judged: it accepts nothing, its entries are still received, and it is
//! recorded as a call ([`RecordedCall::is_throttled`]) and counted
//! ([`RecordCounts::throttled`], [`RecordCounts::per_region`]). The region
//! is the SigV4 credential scope's; partner accounts are not told apart, so
//! every caller of a region shares its bucket.
//!
//! # Delivery
//! Like AWS, `PutPartnerEvents` accepts an event for any well-formed source
//! name whatever its state. [`EmulatorHandle::events`] holds the delivered
//! ones: for `ACTIVE` sources, and for sources the emulator has never heard
//! of, so that a setup with no lifecycle calls at all (the default demo)
//! delivers everything. Events for a known `PENDING` or `DELETED` source go
//! to [`EmulatorHandle::undelivered`].
//!
//! # Records and counts
//! Four records, each keeping its last [`EmulatorConfig::max_recorded_events`]
//! items ([`DEFAULT_MAX_RECORDED_EVENTS`]; 0 keeps none) so that a long run
//! holds bounded memory: [`EmulatorHandle::events`],
//! [`EmulatorHandle::undelivered`], [`EmulatorHandle::received`] (every
//! entry of every call with a readable body, recorded on receipt, before
//! any fault, delay or hang) and [`EmulatorHandle::calls`].
//! [`EmulatorHandle::counts`] tallies calls (per region too, and the
//! throttled ones), received entries and accepted events (per source too)
//! without bound; `GET /_emulator/counts` answers the same tally as JSON for
//! callers in another process. A test that reads every event sets the bound
//! above what it sends.
//!
//! ```sh
//! curl -s http://127.0.0.1:4010/_emulator/counts
//! # {"calls":3,"ok_calls":2,"throttled":1,"received":60,"delivered":40,"undelivered":0,
//! #  "per_source":{...},"per_region":{"us-east-1":{"calls":3,"throttled":1}}}
//! ```
//!
//! # Playing the customer
//! The customer's side (creating or deleting the event bus that activates a
//! source) is not AWS's partner API, so it sits behind emulator-only targets
//! (and [`EmulatorHandle::associate`], [`EmulatorHandle::delete_bus`],
//! [`EmulatorHandle::set_source_state`] in Rust). Each answers
//! `{"Name": ..., "State": ...}`:
//! - `EmulatorControl.AssociateSource` `{Name}`: `PENDING` -> `ACTIVE`.
//! - `EmulatorControl.DeleteEventBus` `{Name}`: `ACTIVE` -> `PENDING`, new expiration.
//! - `EmulatorControl.SetSourceState` `{Name, State}`: any state.
//!
//! ```sh
//! curl -s http://127.0.0.1:4010/ \
//!   -H 'content-type: application/x-amz-json-1.1' \
//!   -H 'x-amz-target: EmulatorControl.AssociateSource' \
//!   -d '{"Name": "aws.partner/example.com/demo/billing"}'
//! # {"Name":"aws.partner/example.com/demo/billing","State":"ACTIVE"}
//! ```
//!
//! # Faults
//! [`FaultRule`]s apply to `PutPartnerEvents` only: per-entry error codes,
//! whole-call errors (JSON or HTML), `Entries` empty or one short, delays,
//! hangs and dropped connections, each for one `DetailType` or every entry,
//! always or at a rate. Rates and jitter draw from a PRNG seeded by
//! [`EmulatorConfig::fault_seed`]: the same seed and the same sequence of
//! requests give the same faults. [`load_fault_file`] reads a
//! [`FaultPlan`] from TOML or JSON; [`RecordedCall`] tells what fired.
//!
//! # Layout
//! - `server`: the axum router, dispatch on `x-amz-target`, waiting and
//!   dropping connections for faults, [`Emulator`] and [`EmulatorHandle`].
//! - `service`: one `PutPartnerEvents` body in, one answer out, state
//!   updated; no HTTP.
//! - `lifecycle`: the source operations and control targets, body in, reply out.
//! - `quota`: the token bucket of calls per region, pure.
//! - `sources`: the partner event sources and their states, pure.
//! - `validate`: the AWS rules as pure functions (size formula, source
//!   pattern, entry and call checks) and their limits as constants.
//! - [`faults`]: fault rules, the seeded book that fires them, fault files.
//! - `record`: recorded events and calls, and the events file.
//! - `wire`: the JSON shapes and header names.

pub mod faults;
mod lifecycle;
mod quota;
mod record;
mod server;
mod service;
mod sources;
mod validate;
mod wire;

use std::path::PathBuf;

pub use faults::{
    load_fault_file, Fault, FaultFileError, FaultPlan, FaultRule, DEFAULT_FAULT_SEED,
    EVERY_DETAIL_TYPE, HANG_LIMIT,
};
pub use quota::{Quota, QuotaError, DEFAULT_QUOTA_BURST, DEFAULT_QUOTA_CALLS_PER_SECOND};
pub use record::{
    ReceivedEntry, RecordCounts, RecordedCall, RecordedEvent, RegionCounts, SourceCounts,
    DEFAULT_MAX_RECORDED_EVENTS, MAX_RECORDED_EVENTS_CEILING, NO_ANSWER,
};
pub use server::{Emulator, EmulatorHandle, COUNTS_PATH};
pub use sources::{
    PartnerSource, SeedSource, SourceError, SourceState, DEFAULT_REGION, PENDING_EXPIRY_SECS,
};
pub use validate::{
    DEFAULT_MAX_CALL_BYTES, MAX_DETAIL_TYPE_CHARS, MAX_ENTRIES_PER_CALL, MAX_RESOURCE_CHARS,
    MAX_SOURCE_CHARS,
};

/// How an emulator behaves.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Limit on a call's size by the AWS formula; a larger call fails with
    /// `ValidationException`.
    pub max_call_bytes: usize,
    /// Whether accepted events are logged with their `Detail`.
    pub log_payloads: bool,
    /// When set, each delivered event is appended to this file as a JSON line.
    pub events_file: Option<PathBuf>,
    /// Fault rules in force from the start.
    pub faults: Vec<FaultRule>,
    /// Seed of the PRNG behind fault rates and jitter.
    pub fault_seed: u64,
    /// Partner event sources that exist from the start, e.g. the demo
    /// tenant's `ACTIVE` one. An invalid or repeated one fails the start.
    pub sources: Vec<SeedSource>,
    /// How many items each record (delivered events, undelivered events,
    /// received entries, calls) keeps: the last ones, older ones dropped.
    /// 0 keeps none, `usize::MAX` keeps all; [`EmulatorHandle::counts`] is
    /// whole either way.
    pub max_recorded_events: usize,
    /// `PutPartnerEvents` calls per region before `ThrottlingException`:
    /// EventBridge's default unless set; [`Quota::UNLIMITED`] turns it off.
    /// An invalid one fails the start.
    pub quota: Quota,
}

impl EmulatorConfig {
    /// The same config with `plan`'s rules and seed.
    pub fn with_fault_plan(self, plan: FaultPlan) -> Self {
        Self {
            faults: plan.rules,
            fault_seed: plan.seed,
            ..self
        }
    }
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            max_call_bytes: DEFAULT_MAX_CALL_BYTES,
            log_payloads: false,
            events_file: None,
            faults: Vec::new(),
            fault_seed: DEFAULT_FAULT_SEED,
            sources: Vec::new(),
            max_recorded_events: DEFAULT_MAX_RECORDED_EVENTS,
            quota: Quota::EVENTBRIDGE_DEFAULT,
        }
    }
}
