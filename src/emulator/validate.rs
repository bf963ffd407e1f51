//! The rules EventBridge applies to a `PutPartnerEvents` call, as plain
//! functions: the AWS size formula, the partner source pattern, per-entry
//! validation and the call-level checks.
//!
//! These deliberately do not reuse [`crate::domain`]: the emulator is an
//! independent model of AWS, so that a mistake in the gateway's own rules
//! shows up as a disagreement in tests instead of being shared by both sides.

use super::wire::RequestEntry;

/// Fewest entries in one call (the service model's `min`).
pub const MIN_ENTRIES_PER_CALL: usize = 1;
/// Most entries in one call (the service model's `max`).
pub const MAX_ENTRIES_PER_CALL: usize = 20;
/// Default limit on a call's size by the AWS formula ("less than 256 KB").
pub const DEFAULT_MAX_CALL_BYTES: usize = 262_144;
/// What a set `Time` counts towards the size of an entry.
pub const TIME_SIZE_BYTES: usize = 14;
/// Longest `Source`, in characters.
pub const MAX_SOURCE_CHARS: usize = 256;
/// Longest `DetailType`, in characters (documented; the model has no bound).
pub const MAX_DETAIL_TYPE_CHARS: usize = 128;
/// Longest item of `Resources`, in characters.
pub const MAX_RESOURCE_CHARS: usize = 2048;

/// The per-entry code for a missing or ill-formed field.
pub const INVALID_ARGUMENT: &str = "InvalidArgument";
/// The per-entry code for a `Detail` that is not a JSON object.
pub const MALFORMED_DETAIL: &str = "MalformedDetail";

/// Why one entry was refused: the `ErrorCode` and `ErrorMessage` of its result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRejection {
    pub code: &'static str,
    pub message: String,
}

impl EntryRejection {
    fn invalid(field: &str, reason: &str) -> Self {
        Self {
            code: INVALID_ARGUMENT,
            message: format!("Parameter {field} is not valid. Reason: {reason}"),
        }
    }
}

/// The fields of an entry that passed validation, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidEntry<'a> {
    pub source: &'a str,
    pub detail_type: &'a str,
    pub detail: &'a str,
}

/// The size of one entry by the AWS formula: 14 bytes for a set `Time`, plus
/// the UTF-8 byte length of `Source`, `DetailType`, `Detail` and each
/// `Resources` item. Field names and JSON punctuation do not count.
pub fn entry_size(entry: &RequestEntry) -> usize {
    let text = |s: &Option<String>| s.as_deref().map_or(0, str::len);
    let time = if entry.time.is_some() {
        TIME_SIZE_BYTES
    } else {
        0
    };
    let resources: usize = entry.resources.iter().flatten().map(String::len).sum();
    time + text(&entry.source) + text(&entry.detail_type) + text(&entry.detail) + resources
}

/// The size of a call: the sum of its entries' sizes.
pub fn call_size(entries: &[RequestEntry]) -> usize {
    entries.iter().map(entry_size).sum()
}

/// Whether `source` matches `aws\.partner(/[\.\-_A-Za-z0-9]+){2,}` as a whole.
pub fn is_partner_source(source: &str) -> bool {
    let Some(rest) = source.strip_prefix("aws.partner/") else {
        return false;
    };
    let segment_ok = |segment: &str| {
        !segment.is_empty()
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    let mut segments = 0;
    for segment in rest.split('/') {
        if !segment_ok(segment) {
            return false;
        }
        segments += 1;
    }
    segments >= 2
}

/// Whether the entry carries all three fields the service requires.
fn is_complete(entry: &RequestEntry) -> bool {
    let present = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    present(&entry.source) && present(&entry.detail_type) && present(&entry.detail)
}

/// Validates one entry as EventBridge does, checking `Source`, `DetailType`,
/// `Detail` and then `Resources`, and reporting the first problem found.
/// An empty string counts as missing.
pub fn validate_entry(entry: &RequestEntry) -> Result<ValidEntry<'_>, EntryRejection> {
    let source = match entry.source.as_deref() {
        None | Some("") => {
            return Err(EntryRejection::invalid(
                "Source",
                "Source is a required argument.",
            ))
        }
        Some(s) if s.chars().count() > MAX_SOURCE_CHARS => {
            return Err(EntryRejection::invalid(
                "Source",
                "Source is longer than 256 characters.",
            ))
        }
        Some(s) if !is_partner_source(s) => return Err(EntryRejection::invalid(
            "Source",
            "Source is not a partner event source name (aws.partner/<partner>/<namespace>/...).",
        )),
        Some(s) => s,
    };
    let detail_type = match entry.detail_type.as_deref() {
        None | Some("") => {
            return Err(EntryRejection::invalid(
                "DetailType",
                "DetailType is a required argument.",
            ))
        }
        Some(d) if d.chars().count() > MAX_DETAIL_TYPE_CHARS => {
            return Err(EntryRejection::invalid(
                "DetailType",
                "DetailType is longer than 128 characters.",
            ))
        }
        Some(d) => d,
    };
    let detail = match entry.detail.as_deref() {
        None | Some("") => {
            return Err(EntryRejection::invalid(
                "Detail",
                "Detail is a required argument.",
            ))
        }
        Some(d) => d,
    };
    if !is_json_object(detail) {
        return Err(EntryRejection {
            code: MALFORMED_DETAIL,
            message: "Detail is malformed.".to_string(),
        });
    }
    let mut resources = entry.resources.iter().flatten();
    if resources.any(|r| r.chars().count() > MAX_RESOURCE_CHARS) {
        return Err(EntryRejection::invalid(
            "Resources",
            "a resource is longer than 2048 characters.",
        ));
    }
    Ok(ValidEntry {
        source,
        detail_type,
        detail,
    })
}

/// Whether `text` is one JSON object (and nothing after it).
fn is_json_object(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.is_object())
}

/// Checks what fails a whole call with `ValidationException`: the number of
/// entries, the call size against `max_call_bytes`, and a call in which no
/// entry has `Source`, `DetailType` and `Detail` together. Returns the
/// message on failure.
pub fn check_call(entries: &[RequestEntry], max_call_bytes: usize) -> Result<(), String> {
    if entries.len() < MIN_ENTRIES_PER_CALL {
        return Err(
            "1 validation error detected: Value at 'entries' failed to satisfy \
                    constraint: Member must have length greater than or equal to 1"
                .to_string(),
        );
    }
    if entries.len() > MAX_ENTRIES_PER_CALL {
        return Err(
            "1 validation error detected: Value at 'entries' failed to satisfy \
                    constraint: Member must have length less than or equal to 20"
                .to_string(),
        );
    }
    if call_size(entries) > max_call_bytes {
        return Err("Total size of the entries in the request is over the limit.".to_string());
    }
    if !entries.iter().any(is_complete) {
        return Err(
            "No entry has all of the required arguments Source, DetailType and Detail.".to_string(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "aws.partner/example.com/tenant-7/billing";

    fn entry(detail_type: &str, detail: &str) -> RequestEntry {
        RequestEntry {
            source: Some(SOURCE.to_string()),
            detail_type: Some(detail_type.to_string()),
            detail: Some(detail.to_string()),
            ..RequestEntry::default()
        }
    }

    #[test]
    fn size_counts_time_as_14_and_text_as_utf8_bytes() {
        let mut e = entry("Paid", r#"{"a":"é"}"#);
        // 40 + 4 + 10 ("é" is two bytes).
        assert_eq!(entry_size(&e), 54);
        e.time = Some(1_704_164_645.0);
        assert_eq!(entry_size(&e), 68);
        e.resources = Some(vec!["arn:1".into(), "arn:22".into()]);
        assert_eq!(entry_size(&e), 79);
        assert_eq!(entry_size(&RequestEntry::default()), 0);
        assert_eq!(call_size(&[e.clone(), e]), 158);
    }

    #[test]
    fn source_pattern_needs_two_segments_of_allowed_characters() {
        for ok in [
            SOURCE,
            "aws.partner/a/b",
            "aws.partner/a.b-c_D9/x/y/z",
            "aws.partner/../-",
        ] {
            assert!(is_partner_source(ok), "{ok}");
        }
        for bad in [
            "",
            "aws.partner",
            "aws.partner/",
            "aws.partner/a",
            "aws.partner/a/",
            "aws.partner//b",
            "aws.partner/a//b",
            "aws.partner/a/b/",
            "aws.partnerX/a/b",
            "awsXpartner/a/b",
            "aws.partner/a b/c",
            "aws.partner/a/é",
            "aws.partner/a/b:c",
            " aws.partner/a/b",
            "myapp/a/b",
        ] {
            assert!(!is_partner_source(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_good_entry_passes_with_its_fields() {
        let e = entry("Paid", r#"{"invoice":"in_1"}"#);
        assert_eq!(
            validate_entry(&e),
            Ok(ValidEntry {
                source: SOURCE,
                detail_type: "Paid",
                detail: r#"{"invoice":"in_1"}"#
            })
        );
    }

    #[test]
    fn each_rule_gives_its_code() {
        let code = |e: &RequestEntry| validate_entry(e).map(|_| ()).map_err(|r| r.code);
        let mut e = entry("Paid", "{}");
        e.source = None;
        assert_eq!(code(&e), Err(INVALID_ARGUMENT));
        e.source = Some("aws.partner/a".into());
        assert_eq!(code(&e), Err(INVALID_ARGUMENT));
        e.source = Some(format!(
            "aws.partner/a/{}",
            "b".repeat(MAX_SOURCE_CHARS - 14)
        ));
        assert_eq!(e.source.as_ref().unwrap().len(), MAX_SOURCE_CHARS);
        assert_eq!(code(&e), Ok(()));
        e.source = Some(format!(
            "aws.partner/a/{}",
            "b".repeat(MAX_SOURCE_CHARS - 13)
        ));
        assert_eq!(code(&e), Err(INVALID_ARGUMENT));

        let mut e = entry("", "{}");
        assert_eq!(code(&e), Err(INVALID_ARGUMENT));
        e.detail_type = Some("é".repeat(MAX_DETAIL_TYPE_CHARS));
        assert_eq!(code(&e), Ok(()), "the limit is in characters, not bytes");
        e.detail_type = Some("x".repeat(MAX_DETAIL_TYPE_CHARS + 1));
        assert_eq!(code(&e), Err(INVALID_ARGUMENT));

        let mut e = entry("Paid", "{}");
        e.detail = None;
        assert_eq!(code(&e), Err(INVALID_ARGUMENT));
        for bad in ["{", "[]", "\"s\"", "1", "null", "{} {}", "{'a':1}"] {
            e.detail = Some(bad.into());
            assert_eq!(code(&e), Err(MALFORMED_DETAIL), "{bad}");
        }
        e.detail = Some(r#" {"a":[1,{"b":null}]} "#.into());
        assert_eq!(code(&e), Ok(()));

        let mut e = entry("Paid", "{}");
        e.resources = Some(vec!["r".into(), "é".repeat(MAX_RESOURCE_CHARS)]);
        assert_eq!(code(&e), Ok(()));
        e.resources = Some(vec!["r".into(), "x".repeat(MAX_RESOURCE_CHARS + 1)]);
        assert_eq!(code(&e), Err(INVALID_ARGUMENT));
    }

    #[test]
    fn messages_name_the_field_and_never_the_payload() {
        let mut e = entry("Paid", "{\"secret\":");
        let r = validate_entry(&e).unwrap_err();
        assert_eq!(r.message, "Detail is malformed.");
        e.detail_type = None;
        let r = validate_entry(&e).unwrap_err();
        assert_eq!(
            r.message,
            "Parameter DetailType is not valid. Reason: DetailType is a required argument."
        );
    }

    #[test]
    fn call_checks_count_size_and_completeness() {
        let good = entry("Paid", "{}");
        assert!(check_call(&[], 1000)
            .unwrap_err()
            .contains("greater than or equal to 1"));
        assert!(check_call(&vec![good.clone(); 20], 100_000).is_ok());
        assert!(check_call(&vec![good.clone(); 21], 100_000)
            .unwrap_err()
            .contains("less than or equal to 20"));

        let size = entry_size(&good);
        assert!(check_call(&[good.clone(), good.clone()], 2 * size).is_ok());
        assert_eq!(
            check_call(&[good.clone(), good.clone()], 2 * size - 1).unwrap_err(),
            "Total size of the entries in the request is over the limit."
        );

        let mut no_detail = good.clone();
        no_detail.detail = None;
        let mut no_source = good.clone();
        no_source.source = Some(String::new());
        assert!(check_call(&[no_detail.clone(), no_source.clone()], 10_000)
            .unwrap_err()
            .contains("No entry"));
        // One complete entry is enough, even an invalid one.
        let mut bad_detail = good;
        bad_detail.detail = Some("nope".into());
        assert!(check_call(&[no_detail, no_source, bad_detail], 10_000).is_ok());
    }
}
