//! The gateway's rules, as plain synchronous functions over owned types: no
//! tonic, prost or AWS SDK in here.
//!
//! - [`limits`]: EventBridge's limits as named constants.
//! - [`source`]: partner event source names and region names.
//! - [`tenant`]: the tenant directory (tenant -> sources -> region).
//! - [`entry`]: one event, its validation and its size by the AWS formula.
//! - [`json_fast`]: the one-pass check that vouches for plain JSON objects.
//! - [`chunk`]: splitting entries into calls of at most 20 entries and the size limit.
//! - [`lifecycle`]: partner event source states and the inactive-source policy.
//! - [`outcome`]: per-entry results and the error codes callers see.
//! - [`delivery`]: SYNC or DURABLE, and the durable queue's codes.

pub mod chunk;
pub mod delivery;
pub mod entry;
pub mod json_fast;
pub mod lifecycle;
pub mod limits;
pub mod outcome;
pub mod source;
pub mod tenant;
