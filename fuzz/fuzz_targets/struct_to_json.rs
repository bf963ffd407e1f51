//! Arbitrary `google.protobuf.Struct`s (built from a small mirror type that
//! `arbitrary` can derive) through `struct_to_json`.
//!
//! Invariants: it fails exactly when the Struct holds NaN or an infinity;
//! otherwise its output parses (serde_json) as a JSON object that holds the
//! same keys and values, whole numbers within +-2^53 come out as JSON
//! integers, and `check_detail_json` accepts it.
//!
//! Nesting is capped at [`MAX_DEPTH`] containers: prost's decode limit (100
//! nested messages, two per Struct level) keeps Structs that arrive over
//! gRPC far shallower, and serde_json's reference parser stops at 128.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use partner_events_gateway::{api::convert::struct_to_json, domain::entry::check_detail_json};
use prost_types::{value::Kind, ListValue, Struct, Value};

const MAX_DEPTH: usize = 64;

/// 2^53: the largest whole number a double carries exactly, and the bound
/// under which `struct_to_json` writes whole numbers as integers.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

/// Numbers arbitrary bit patterns rarely hit.
const SPECIAL_NUMBERS: [f64; 16] = [
    0.0,
    -0.0,
    MAX_SAFE_INTEGER,
    -MAX_SAFE_INTEGER,
    MAX_SAFE_INTEGER + 2.0,
    MAX_SAFE_INTEGER - 1.0,
    9.223_372_036_854_776e18,
    -9.223_372_036_854_776e18,
    1e300,
    f64::MAX,
    f64::MIN_POSITIVE,
    5e-324,
    0.1,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
];

#[derive(Arbitrary, Debug)]
struct MirrorStruct {
    fields: Vec<(String, MirrorValue)>,
}

#[derive(Arbitrary, Debug)]
enum MirrorValue {
    /// A Value with no kind set (written as null).
    Unset,
    Null,
    Bool(bool),
    Number(f64),
    Integer(i64),
    Special(u8),
    Text(String),
    Struct(MirrorStruct),
    List(Vec<MirrorValue>),
}

fn to_struct(m: MirrorStruct, depth: usize) -> Struct {
    Struct {
        fields: m
            .fields
            .into_iter()
            .map(|(k, v)| (k, to_value(v, depth + 1)))
            .collect(),
    }
}

fn to_value(m: MirrorValue, depth: usize) -> Value {
    let kind = match m {
        MirrorValue::Unset => None,
        MirrorValue::Null => Some(Kind::NullValue(0)),
        MirrorValue::Bool(b) => Some(Kind::BoolValue(b)),
        MirrorValue::Number(n) => Some(Kind::NumberValue(n)),
        #[allow(clippy::cast_precision_loss)]
        MirrorValue::Integer(i) => Some(Kind::NumberValue(i as f64)),
        MirrorValue::Special(i) => Some(Kind::NumberValue(
            SPECIAL_NUMBERS[usize::from(i) % SPECIAL_NUMBERS.len()],
        )),
        MirrorValue::Text(s) => Some(Kind::StringValue(s)),
        MirrorValue::Struct(_) | MirrorValue::List(_) if depth >= MAX_DEPTH => {
            Some(Kind::NullValue(0))
        }
        MirrorValue::Struct(s) => Some(Kind::StructValue(to_struct(s, depth))),
        MirrorValue::List(l) => Some(Kind::ListValue(ListValue {
            values: l.into_iter().map(|v| to_value(v, depth + 1)).collect(),
        })),
    };
    Value { kind }
}

fn has_non_finite(s: &Struct) -> bool {
    s.fields.values().any(value_has_non_finite)
}

fn value_has_non_finite(v: &Value) -> bool {
    match &v.kind {
        Some(Kind::NumberValue(n)) => !n.is_finite(),
        Some(Kind::StructValue(s)) => has_non_finite(s),
        Some(Kind::ListValue(l)) => l.values.iter().any(value_has_non_finite),
        _ => false,
    }
}

/// Whether `json` holds what `s` holds.
fn assert_same_struct(s: &Struct, json: &serde_json::Map<String, serde_json::Value>) {
    assert_eq!(s.fields.len(), json.len(), "key count");
    for (k, v) in &s.fields {
        let got = json
            .get(k)
            .unwrap_or_else(|| panic!("key {k:?} missing from the JSON"));
        assert_same_value(v, got);
    }
}

fn assert_same_value(v: &Value, got: &serde_json::Value) {
    use serde_json::Value as J;
    match (&v.kind, got) {
        (None | Some(Kind::NullValue(_)), J::Null) => {}
        (Some(Kind::BoolValue(b)), J::Bool(g)) => assert_eq!(b, g),
        (Some(Kind::StringValue(s)), J::String(g)) => assert_eq!(s, g),
        (Some(Kind::NumberValue(n)), J::Number(g)) => {
            if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
                assert!(
                    g.is_i64() || g.is_u64(),
                    "whole number {n} written as {g}, not as an integer"
                );
            }
            let back = g.as_f64().expect("a JSON number reads as f64");
            // serde_json's default float parser may be one ULP off.
            let tolerance = (n.abs() * 2.0 * f64::EPSILON).max(f64::from_bits(1) * 2.0);
            assert!(
                (back - n).abs() <= tolerance,
                "number {n:e} came back as {back:e} (text {g})"
            );
        }
        (Some(Kind::StructValue(s)), J::Object(g)) => assert_same_struct(s, g),
        (Some(Kind::ListValue(l)), J::Array(g)) => {
            assert_eq!(l.values.len(), g.len(), "list length");
            for (a, b) in l.values.iter().zip(g) {
                assert_same_value(a, b);
            }
        }
        (kind, got) => panic!("{kind:?} came out as {got}"),
    }
}

fuzz_target!(|mirror: MirrorStruct| {
    let s = to_struct(mirror, 0);
    match struct_to_json(&s) {
        Err(e) => assert!(
            has_non_finite(&s),
            "struct_to_json refused a finite Struct: {e}: {s:?}"
        ),
        Ok(json) => {
            assert!(!has_non_finite(&s), "a non-finite number became {json}");
            let parsed: serde_json::Value = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("struct_to_json output is not JSON ({e}): {json}"));
            let object = parsed
                .as_object()
                .unwrap_or_else(|| panic!("struct_to_json output is not an object: {json}"));
            assert_same_struct(&s, object);
            if let Err(e) = check_detail_json(&json) {
                panic!("check_detail_json refuses struct_to_json output: {e:?}: {json}");
            }
        }
    }
});
