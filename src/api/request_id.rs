//! Request ids: the caller's `x-request-id` when it is a short token, else
//! one the gateway makes. They tie a call's log lines together.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    OnceLock,
};

use tonic::metadata::MetadataMap;

/// Longest caller-given `x-request-id` kept: it goes into every log line.
const MAX_REQUEST_ID_CHARS: usize = 64;

/// The caller's `x-request-id` when it is a short token, else a new one.
pub fn request_id(metadata: &MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= MAX_REQUEST_ID_CHARS
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(new_request_id)
}

/// A new request id: 32 hex digits, unique in this process (a counter)
/// and across replicas (added to a random 128-bit start). A fresh UUID per
/// call cost a `getrandom` system call on every request.
fn new_request_id() -> String {
    static START: OnceLock<u128> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| uuid::Uuid::new_v4().as_u128());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:032x}", start.wrapping_add(u128::from(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_tokens_and_never_repeat() {
        let mut metadata = MetadataMap::new();
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| request_id(&metadata)).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids
            .iter()
            .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        // A caller's own id is kept when it is a short token, replaced otherwise.
        metadata.insert("x-request-id", "caller-42_a".parse().unwrap());
        assert_eq!(request_id(&metadata), "caller-42_a");
        metadata.insert("x-request-id", "no spaces".parse().unwrap());
        assert_eq!(request_id(&metadata).len(), 32);
    }
}
