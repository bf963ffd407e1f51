//! The gRPC edge: `partnerevents.v1.PartnerEvents`, from a tonic request to
//! one result per entry. A call goes through one module per step:
//!
//! - [`service`]: the thin tonic impl ([`service::PartnerEventsService`])
//!   and [`service::Core`], the state every call shares.
//! - [`request_id`]: the id that ties a call's log lines together.
//! - [`admission`]: caller identity, request-level checks, quotas, and
//!   in-flight permits; what passes is an [`admission::AdmittedBatch`].
//! - [`batch`]: an admitted batch -> per-entry validation -> the pipeline
//!   -> the response.
//! - [`stream`]: the driver of one `StreamPartnerEvents` stream.
//! - [`status`]: [`status::ApiError`], every way a call or a stream batch is
//!   refused, and its one mapping to `tonic::Status`.
//! - [`metrics_layer`]: the gRPC server metrics, as a tower layer around
//!   every service the server hosts.
//! - [`deliveries`]: `WatchDeliveries` and `GetDeliveries`, the outcomes of
//!   DURABLE entries; [`admin`]: the `DeadLetters` operators' service.
//! - [`convert`]: protobuf <-> domain types; [`deadline`]: the caller's
//!   `grpc-timeout`.

pub mod admin;
pub mod admission;
pub mod batch;
pub mod convert;
pub mod deadline;
pub mod deliveries;
pub mod metrics_layer;
pub mod request_id;
pub mod service;
pub mod status;
pub mod stream;
