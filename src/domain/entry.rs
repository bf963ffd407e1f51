//! One event as a caller sends it, its validation by EventBridge's rules, and
//! its size by the AWS formula.

use super::{
    limits::{MAX_DETAIL_DEPTH, MAX_DETAIL_TYPE_CHARS, MAX_RESOURCE_CHARS, TIME_FIELD_BYTES},
    outcome::codes,
    tenant::{SourceRef, Tenant},
};

/// Earliest and latest `Time` accepted, in epoch seconds (years 1 to 9999):
/// EventBridge's timestamp type cannot carry more, and a value outside is
/// almost always a unit mistake (milliseconds sent as seconds).
pub const MIN_TIME_SECS: i64 = -62_135_596_800;
pub const MAX_TIME_SECS: i64 = 253_402_300_799;

/// One event from a caller, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventEntry {
    /// Epoch seconds, when set.
    pub time: Option<i64>,
    pub detail_type: String,
    /// JSON text; `None` when the caller sent no body at all.
    pub detail: Option<String>,
    pub resources: Vec<String>,
    pub source_key: String,
}

/// An entry that passed validation, bound to its source, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedEntry {
    /// The entry's index in the caller's request.
    pub index: u32,
    pub source: SourceRef,
    pub time: Option<i64>,
    pub detail_type: String,
    pub detail: String,
    pub resources: Vec<String>,
    /// Its size by the AWS formula.
    pub size: usize,
}

/// Why an entry was refused before sending: a code from [`codes`] and a
/// message that names the field, never its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    pub code: &'static str,
    pub message: String,
}

impl EntryError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// An entry's size as AWS counts it: 14 bytes for a set Time, plus the UTF-8
/// byte length of Source, DetailType, Detail and each Resources item.
pub fn entry_size(
    time: Option<i64>,
    source: &str,
    detail_type: &str,
    detail: &str,
    resources: &[String],
) -> usize {
    time.map_or(0, |_| TIME_FIELD_BYTES)
        + source.len()
        + detail_type.len()
        + detail.len()
        + resources.iter().map(String::len).sum::<usize>()
}

/// Validates `entry` as EventBridge would, resolves its source in `tenant`,
/// and checks it fits in one call of `max_call_bytes`.
pub fn prepare(
    index: u32,
    entry: EventEntry,
    tenant: &Tenant,
    max_call_bytes: usize,
) -> Result<PreparedEntry, EntryError> {
    if entry.detail_type.is_empty() {
        return Err(EntryError::new(
            codes::INVALID_ARGUMENT,
            "detail_type is required",
        ));
    }
    let dt_chars = entry.detail_type.chars().count();
    if dt_chars > MAX_DETAIL_TYPE_CHARS {
        return Err(EntryError::new(
            codes::INVALID_ARGUMENT,
            format!(
                "detail_type is {dt_chars} characters; at most {MAX_DETAIL_TYPE_CHARS} are allowed"
            ),
        ));
    }
    let detail = match entry.detail {
        Some(d) if !d.is_empty() => d,
        _ => {
            return Err(EntryError::new(
                codes::INVALID_ARGUMENT,
                "detail is required (a JSON object as text in `detail`, or `detail_struct`)",
            ))
        }
    };
    check_detail_json(&detail)?;
    for (i, r) in entry.resources.iter().enumerate() {
        let n = r.chars().count();
        if n > MAX_RESOURCE_CHARS {
            return Err(EntryError::new(
                codes::INVALID_ARGUMENT,
                format!(
                    "resources[{i}] is {n} characters; at most {MAX_RESOURCE_CHARS} are allowed"
                ),
            ));
        }
        if r.is_empty() {
            return Err(EntryError::new(
                codes::INVALID_ARGUMENT,
                format!("resources[{i}] is empty"),
            ));
        }
    }
    if let Some(t) = entry.time {
        if !(MIN_TIME_SECS..=MAX_TIME_SECS).contains(&t) {
            return Err(EntryError::new(
                codes::INVALID_ARGUMENT,
                format!("time {t} is outside years 1 to 9999 (seconds since the epoch expected)"),
            ));
        }
    }
    let source = tenant.source(&entry.source_key).cloned().ok_or_else(|| {
        let known: Vec<&str> = tenant.source_keys().collect();
        EntryError::new(
            codes::UNKNOWN_SOURCE_KEY,
            format!(
                "tenant `{}` has no source `{}` (it has: {})",
                tenant.id(),
                entry.source_key,
                known.join(", ")
            ),
        )
    })?;
    let size = entry_size(
        entry.time,
        source.name(),
        &entry.detail_type,
        &detail,
        &entry.resources,
    );
    if size > max_call_bytes {
        return Err(EntryError::new(
            codes::ENTRY_TOO_LARGE,
            format!("entry is {size} bytes by the AWS size formula; one call may carry at most {max_call_bytes}"),
        ));
    }
    Ok(PreparedEntry {
        index,
        source,
        time: entry.time,
        detail_type: entry.detail_type,
        detail,
        resources: entry.resources,
        size,
    })
}

/// Detail must be a JSON object (EventBridge answers MalformedDetail
/// otherwise). The error says where the JSON breaks, never what it holds.
pub fn check_detail_json(detail: &str) -> Result<(), EntryError> {
    // The plain objects nearly every detail is pass a one-pass check; the
    // rest get the full decode below, which also words the error.
    if super::json_fast::is_plain_json_object(detail) {
        return Ok(());
    }
    if !detail.trim_start().starts_with('{') {
        return Err(EntryError::new(
            codes::MALFORMED_DETAIL,
            "detail must be a JSON object",
        ));
    }
    // Depth first, for a clear message: EventBridge (and any consumer
    // parsing with a recursive parser) refuses very deep nesting.
    if nesting_depth(detail) > MAX_DETAIL_DEPTH {
        return Err(EntryError::new(
            codes::MALFORMED_DETAIL,
            format!(
                "detail is not valid JSON (nested too deeply: more than {MAX_DETAIL_DEPTH} levels)"
            ),
        ));
    }
    // A full decode, not a skim: numbers beyond the f64 range and lone
    // UTF-16 surrogate escapes are refused, as EventBridge's model (the
    // emulator) refuses them; fuzzing found that a skim let them through.
    // No tree is built (see `CheckedJson`).
    serde_json::from_str::<CheckedJson>(detail).map_err(|e| {
        EntryError::new(
            codes::MALFORMED_DETAIL,
            format!(
                "detail is not valid JSON ({} at line {} column {})",
                json_error_kind(&e),
                e.line(),
                e.column()
            ),
        )
    })?;
    Ok(())
}

/// Deserializes any JSON value the way `serde_json::Value` would (every
/// number and string decoded, the same recursion limit), keeping nothing:
/// validation at about the cost of a skim, without a tree to allocate.
struct CheckedJson;

impl<'de> serde::Deserialize<'de> for CheckedJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedJsonVisitor)
    }
}

struct CheckedJsonVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedJsonVisitor {
    type Value = CheckedJson;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }
    fn visit_i64<E>(self, _: i64) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }
    fn visit_u64<E>(self, _: u64) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }
    fn visit_f64<E>(self, _: f64) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }
    fn visit_str<E>(self, _: &str) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }
    fn visit_unit<E>(self) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<CheckedJson, A::Error> {
        while seq.next_element::<CheckedJson>()?.is_some() {}
        Ok(CheckedJson)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<CheckedJson, A::Error> {
        while map.next_key::<CheckedJson>()?.is_some() {
            map.next_value::<CheckedJson>()?;
        }
        Ok(CheckedJson)
    }
}

/// How deeply objects and arrays nest in `json` (brackets inside strings do
/// not count). Malformed input gives a number too; the parser judges it.
fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn json_error_kind(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => "unexpected end",
        Category::Syntax if e.to_string().contains("recursion limit") => "nested too deeply",
        Category::Syntax => "syntax error",
        Category::Data => "invalid data",
        Category::Io => "read error",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn tenant() -> Tenant {
        let mut s = BTreeMap::new();
        s.insert(
            "main".into(),
            SourceRef::new("aws.partner/p/t/main", "us-east-1"),
        );
        Tenant::new("t".into(), "main".into(), s)
    }

    fn ok_entry() -> EventEntry {
        EventEntry {
            time: Some(1_704_164_645),
            detail_type: "InvoicePaid".into(),
            detail: Some(r#"{"invoice":"in_1"}"#.into()),
            resources: vec!["arn:aws:x".into()],
            source_key: String::new(),
        }
    }

    #[test]
    fn size_follows_the_aws_formula() {
        let p = prepare(0, ok_entry(), &tenant(), 256 * 1024).unwrap();
        assert_eq!(
            p.size,
            14 + "aws.partner/p/t/main".len() + 11 + r#"{"invoice":"in_1"}"#.len() + 9
        );
        let mut e = ok_entry();
        e.time = None;
        e.detail_type = "é".into(); // two bytes
        let p = prepare(0, e, &tenant(), 256 * 1024).unwrap();
        assert_eq!(p.size, "aws.partner/p/t/main".len() + 2 + 18 + 9);
    }

    #[test]
    fn rules() {
        let t = tenant();
        let code = |e: EventEntry| prepare(3, e, &t, 1000).unwrap_err().code;
        assert_eq!(
            code(EventEntry {
                detail_type: String::new(),
                ..ok_entry()
            }),
            codes::INVALID_ARGUMENT
        );
        assert_eq!(
            code(EventEntry {
                detail_type: "x".repeat(129),
                ..ok_entry()
            }),
            codes::INVALID_ARGUMENT
        );
        assert!(prepare(
            0,
            EventEntry {
                detail_type: "é".repeat(128),
                ..ok_entry()
            },
            &t,
            1000
        )
        .is_ok());
        assert_eq!(
            code(EventEntry {
                detail: None,
                ..ok_entry()
            }),
            codes::INVALID_ARGUMENT
        );
        assert_eq!(
            code(EventEntry {
                detail: Some("{".into()),
                ..ok_entry()
            }),
            codes::MALFORMED_DETAIL
        );
        assert_eq!(
            code(EventEntry {
                detail: Some("[1]".into()),
                ..ok_entry()
            }),
            codes::MALFORMED_DETAIL
        );
        assert_eq!(
            code(EventEntry {
                detail: Some("{} x".into()),
                ..ok_entry()
            }),
            codes::MALFORMED_DETAIL
        );
        let deep = format!("{}1{}", "{\"a\":".repeat(128), "}".repeat(128));
        assert_eq!(
            code(EventEntry {
                detail: Some(deep),
                ..ok_entry()
            }),
            codes::MALFORMED_DETAIL
        );
        let deep_ok = format!("{}1{}", "{\"a\":".repeat(127), "}".repeat(127));
        assert!(prepare(
            0,
            EventEntry {
                detail: Some(deep_ok),
                ..ok_entry()
            },
            &t,
            100_000
        )
        .is_ok());
        let brackets_in_strings = format!("{{\"a\":\"{}\"}}", "[{".repeat(200));
        assert!(prepare(
            0,
            EventEntry {
                detail: Some(brackets_in_strings),
                ..ok_entry()
            },
            &t,
            100_000
        )
        .is_ok());
        for odd in [r#"{"n":1e400}"#, r#"{"a":"\ud83d"}"#] {
            assert_eq!(
                code(EventEntry {
                    detail: Some(odd.into()),
                    ..ok_entry()
                }),
                codes::MALFORMED_DETAIL,
                "{odd}"
            );
        }
        assert_eq!(
            code(EventEntry {
                resources: vec!["r".repeat(2049)],
                ..ok_entry()
            }),
            codes::INVALID_ARGUMENT
        );
        assert_eq!(
            code(EventEntry {
                time: Some(MAX_TIME_SECS + 1),
                ..ok_entry()
            }),
            codes::INVALID_ARGUMENT
        );
        assert_eq!(
            code(EventEntry {
                source_key: "nope".into(),
                ..ok_entry()
            }),
            codes::UNKNOWN_SOURCE_KEY
        );
        assert_eq!(
            code(EventEntry {
                detail: Some(format!("{{\"a\":\"{}\"}}", "x".repeat(1000))),
                ..ok_entry()
            }),
            codes::ENTRY_TOO_LARGE
        );
    }

    #[test]
    fn messages_never_carry_the_payload() {
        let e = prepare(
            0,
            EventEntry {
                detail: Some(r#"{"secret": tru}"#.into()),
                ..ok_entry()
            },
            &tenant(),
            1000,
        )
        .unwrap_err();
        assert!(!e.message.contains("secret"), "{}", e.message);
    }
}
