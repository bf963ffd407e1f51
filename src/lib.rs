//! partner-events-gateway: a gRPC gateway in front of AWS EventBridge
//! `PutPartnerEvents`.
//!
//! Internal services call [`api`] with batches of events for a tenant; the
//! gateway maps the tenant to its partner event source and region, validates
//! each entry as EventBridge would, splits the work into EventBridge calls,
//! sends them through the AWS SDK, resends what failed retryably, and answers
//! with one result per entry.
//!
//! # Layout
//! - [`config`]: the config file (serde) -> a validated [`config::Config`].
//! - [`domain`]: pure, synchronous rules: entries and their validation, the
//!   AWS size formula, the tenant directory, splitting into calls, result codes.
//! - [`upstream`]: the [`upstream::Upstream`] trait the pipeline sends
//!   through, its EventBridge (AWS SDK) adapter, and retry decisions.
//! - [`pipeline`]: turns one validated batch into upstream calls (coalescing
//!   lanes, the fair share of each region's pacing between tenants, the call
//!   and its resends within the caller's deadline) and puts the results back
//!   in order, each entry's sends counted.
//! - [`api`]: the tonic service: admission (identity, checks, quotas, room in
//!   flight), the batch path, the stream driver, one error -> status map, and
//!   the gRPC metrics layer.
//!
//! A request's way, one module per step: [`api::service`] (the tonic call)
//! -> [`api::admission`] -> [`api::batch`] (validation) -> [`pipeline`]
//! (lanes, the region's scheduler, the call) -> [`upstream::eventbridge`]
//! (the AWS SDK).
//! - [`connections`]: bounds on client connections: count, handshake and
//!   idle timeouts.
//! - [`server`]: assembles the gRPC server (reflection, health, shutdown).
//! - [`sources`]: the source-state refresher and the `sources` commands.
//! - [`send`]: the `send` subcommand, a streaming client for the shell, and
//!   the connection code (address, TLS, bearer token) its siblings share.
//! - [`dead_letters`]: the `dead-letters` subcommand, the operators' client
//!   of the DeadLetters service (list, show, replay, purge).
//! - [`emulator`]: a local EventBridge speaking the same wire protocol, used by
//!   default and by the tests.
//! - [`auth`]: caller identity (mTLS, bearer tokens) and the tenant table.
//! - [`quota`]: token buckets for upstream pacing and per-tenant/caller limits.
//! - [`metrics`]: Prometheus metrics on a separate port.
//! - [`telemetry`]: logging set-up.
//! - [`sync`]: the one lock-poisoning policy.
//! - [`bench`]: the `bench` subcommand, a load harness with a direct-SDK baseline.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod dead_letters;
pub mod domain;
pub mod durable;
pub mod emulator;
pub mod idempotency;
pub mod metrics;
pub mod pipeline;
pub mod quota;
pub mod send;
pub mod server;
pub mod sources;
pub mod sync;
pub mod telemetry;
pub mod traces;
pub mod upstream;

/// Generated protobuf and tonic code for `partnerevents.v1`.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("partnerevents.v1");

    /// The encoded descriptor set of `proto/`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("partnerevents_descriptor");
}
