//! A local EventBridge that speaks the real wire protocol (AWS JSON 1.1,
//! `POST /`, `x-amz-target: AWSEvents.PutPartnerEvents`), so the gateway
//! reaches it through the real AWS SDK with `endpoint_url`. It validates
//! calls and entries as EventBridge does, records what it accepted, and
//! fails on demand through [`FaultRule`]s. Signatures are not checked.
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
//! # Layout
//! - `server`: the axum router, dispatch on `x-amz-target`, [`Emulator`] and
//!   [`EmulatorHandle`].
//! - `service`: one request body in, one reply out, state updated; no HTTP.
//! - `validate`: the AWS rules as pure functions (size formula, source
//!   pattern, entry and call checks) and their limits as constants.
//! - [`faults`]: fault rules and the book that counts their firings.
//! - `record`: recorded events and calls, and the events file.
//! - `wire`: the JSON shapes and header names.

pub mod faults;
mod record;
mod server;
mod service;
mod validate;
mod wire;

use std::path::PathBuf;

pub use faults::{Fault, FaultRule};
pub use record::{RecordedCall, RecordedEvent};
pub use server::{Emulator, EmulatorHandle};
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
    /// When set, each accepted event is appended to this file as a JSON line.
    pub events_file: Option<PathBuf>,
    /// Fault rules in force from the start.
    pub faults: Vec<FaultRule>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            max_call_bytes: DEFAULT_MAX_CALL_BYTES,
            log_payloads: false,
            events_file: None,
            faults: Vec::new(),
        }
    }
}
