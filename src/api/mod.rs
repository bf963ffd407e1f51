//! The gRPC edge: [`service::PartnerEventsService`] implements
//! `partnerevents.v1.PartnerEvents`; [`convert`] turns protobuf into domain
//! types and back; [`status`] maps request-level errors to `tonic::Status`
//! in one place; [`deadline`] reads the caller's `grpc-timeout`.

pub mod convert;
pub mod deadline;
pub mod service;
pub mod status;
