//! EventBridge's PutPartnerEvents limits (see shared/EVENTBRIDGE.md) and the
//! gateway's own bounds. Configurable values take their default from here.

/// Entries in one PutPartnerEvents call: the service model allows 1 to 20.
pub const MAX_ENTRIES_PER_CALL: usize = 20;

/// Default size limit of one call by the AWS entry-size formula: the user
/// guide says "less than 256 KB". Configurable, since AWS may have raised it.
pub const DEFAULT_MAX_CALL_BYTES: usize = 256 * 1024;

/// The largest size limit the config accepts (AWS raised PutEvents to 1 MB).
pub const MAX_CALL_BYTES_CEILING: usize = 1024 * 1024;

/// Default for the most entries one gateway request may carry.
pub const DEFAULT_MAX_ENTRIES_PER_REQUEST: usize = 500;

/// The most the config may set `max_entries_per_request` to.
pub const MAX_ENTRIES_PER_REQUEST_CEILING: usize = 10_000;

/// DetailType: at most 128 characters (documented by AWS).
pub const MAX_DETAIL_TYPE_CHARS: usize = 128;

/// One Resources item: at most 2048 characters.
pub const MAX_RESOURCE_CHARS: usize = 2048;

/// Source: 1 to 256 characters.
pub const MAX_SOURCE_CHARS: usize = 256;

/// What a set `Time` adds to an entry's size.
pub const TIME_FIELD_BYTES: usize = 14;

/// Deepest nesting of JSON objects and arrays accepted in a detail: what a
/// recursive parser with serde_json's limit takes (the emulator's model of
/// EventBridge refuses deeper details as MalformedDetail).
pub const MAX_DETAIL_DEPTH: usize = 127;
