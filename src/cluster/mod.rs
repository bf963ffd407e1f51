//! Cluster mode: the replicas of one deployment share, through Redis (or
//! Valkey), the pacing of EventBridge calls per region and the per-tenant
//! and per-caller limits. Without `[cluster]` nothing here runs.

mod settings;

pub use settings::{redact, ClusterConfigError, ClusterSection, ClusterSettings};
