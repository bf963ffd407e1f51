//! Protobuf <-> domain conversion.
//!
//! `detail_struct` (a `google.protobuf.Struct`) becomes JSON text here.
//! Struct numbers are doubles: a whole number within +-2^53 is written as
//! an integer (`42`, not `42.0`) so that it reaches consumers as the caller
//! meant it; NaN and infinities have no JSON form and are refused.

use prost_types::{value::Kind, Struct, Value};

use crate::{
    domain::{
        entry::EventEntry,
        outcome::{EntryResult, Outcome},
    },
    proto::{partner_event_entry::Body, PartnerEventEntry, PartnerEventResult},
};

/// Largest integer a double carries exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

/// Why a protobuf entry could not become a domain entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(pub String);

/// A protobuf entry as a domain entry.
pub fn entry_from_proto(e: PartnerEventEntry) -> Result<EventEntry, ConvertError> {
    let detail = match e.body {
        None => None,
        Some(Body::Detail(d)) => Some(d),
        Some(Body::DetailStruct(s)) => Some(struct_to_json(&s)?),
    };
    let time = match e.time {
        None => None,
        Some(t) => {
            if !(0..1_000_000_000).contains(&t.nanos) {
                return Err(ConvertError(format!(
                    "time.nanos {} is outside 0 to 999999999",
                    t.nanos
                )));
            }
            Some(t.seconds)
        }
    };
    Ok(EventEntry {
        time,
        detail_type: e.detail_type,
        detail,
        resources: e.resources,
        source_key: e.source_key,
    })
}

/// JSON text of a Struct (see the module docs for numbers).
pub fn struct_to_json(s: &Struct) -> Result<String, ConvertError> {
    let mut out = String::new();
    write_struct(s, &mut out)?;
    Ok(out)
}

fn write_struct(s: &Struct, out: &mut String) -> Result<(), ConvertError> {
    out.push('{');
    // Struct fields are a BTreeMap: keys come out sorted, so the same value
    // always gives the same text.
    for (i, (k, v)) in s.fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(k).expect("a string serializes"));
        out.push(':');
        write_value(v, out)?;
    }
    out.push('}');
    Ok(())
}

fn write_value(v: &Value, out: &mut String) -> Result<(), ConvertError> {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => out.push_str("null"),
        Some(Kind::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Kind::NumberValue(n)) => {
            if !n.is_finite() {
                return Err(ConvertError(
                    "detail_struct holds NaN or an infinity, which JSON cannot carry".into(),
                ));
            }
            if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
                out.push_str(&(*n as i64).to_string());
            } else {
                out.push_str(&serde_json::to_string(n).expect("a finite number serializes"));
            }
        }
        Some(Kind::StringValue(s)) => {
            out.push_str(&serde_json::to_string(s).expect("a string serializes"))
        }
        Some(Kind::StructValue(s)) => write_struct(s, out)?,
        Some(Kind::ListValue(l)) => {
            out.push('[');
            for (i, item) in l.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
    }
    Ok(())
}

/// A domain result as a protobuf result for entry `index`.
pub fn result_to_proto(index: u32, r: EntryResult) -> PartnerEventResult {
    match r.outcome {
        Outcome::Accepted { event_id } => PartnerEventResult {
            index,
            event_id,
            error_code: String::new(),
            error_message: String::new(),
            attempts: r.attempts,
            warning: String::new(),
            receipt_id: String::new(),
            deduplicated: false,
        },
        Outcome::Failed { code, message } => PartnerEventResult {
            index,
            event_id: String::new(),
            error_code: code,
            error_message: message,
            attempts: r.attempts,
            warning: String::new(),
            receipt_id: String::new(),
            deduplicated: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost_types::ListValue;

    use super::*;

    fn num(n: f64) -> Value {
        Value {
            kind: Some(Kind::NumberValue(n)),
        }
    }

    #[test]
    fn struct_becomes_compact_json_with_integers_kept() {
        let mut inner = BTreeMap::new();
        inner.insert(
            "b".to_string(),
            Value {
                kind: Some(Kind::BoolValue(true)),
            },
        );
        let mut fields = BTreeMap::new();
        fields.insert("id".to_string(), num(9_007_199_254_740_992.0));
        fields.insert("amount".to_string(), num(12.5));
        fields.insert("n".to_string(), num(-3.0));
        fields.insert(
            "s".to_string(),
            Value {
                kind: Some(Kind::StringValue("a\"b".into())),
            },
        );
        fields.insert(
            "o".to_string(),
            Value {
                kind: Some(Kind::StructValue(Struct { fields: inner })),
            },
        );
        fields.insert(
            "l".to_string(),
            Value {
                kind: Some(Kind::ListValue(ListValue {
                    values: vec![
                        num(1.0),
                        Value {
                            kind: Some(Kind::NullValue(0)),
                        },
                    ],
                })),
            },
        );
        let s = Struct { fields };
        let json = struct_to_json(&s).unwrap();
        assert_eq!(
            json,
            r#"{"amount":12.5,"id":9007199254740992,"l":[1,null],"n":-3,"o":{"b":true},"s":"a\"b"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["id"].as_u64(), Some(9_007_199_254_740_992));
    }

    #[test]
    fn nan_is_refused() {
        let mut fields = BTreeMap::new();
        fields.insert("x".to_string(), num(f64::NAN));
        assert!(struct_to_json(&Struct { fields }).is_err());
    }
}
