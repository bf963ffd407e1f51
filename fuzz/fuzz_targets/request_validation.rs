//! Arbitrary bytes as a `PutPartnerEventsRequest` (prost), then every entry
//! through `entry_from_proto` and `prepare`, against two fixed tenants (the
//! built-in `demo` one and a two-source one) and two call-size limits (the
//! default, and one small enough that short inputs reach `EntryTooLarge`).
//!
//! Invariants: nothing panics; a prepared entry keeps the caller's fields,
//! is bound to the source its key names, passes `check_detail_json`, and its
//! `size` is `entry_size` recomputed and at most the limit; a `detail_struct`
//! that converts is always a valid detail; and no error message carries a
//! detail longer than 8 bytes (payloads never reach errors).
#![no_main]

use std::{collections::BTreeMap, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use partner_events_gateway::{
    api::convert::entry_from_proto,
    config::Config,
    domain::{
        entry::{check_detail_json, entry_size, prepare, EventEntry, MAX_TIME_SECS},
        limits::{DEFAULT_MAX_CALL_BYTES, MAX_DETAIL_TYPE_CHARS, MAX_RESOURCE_CHARS},
        tenant::{SourceRef, Tenant},
    },
    proto::{partner_event_entry::Body, PartnerEventEntry, PutPartnerEventsRequest},
};
use prost::Message;
use prost_types::{value::Kind, Struct, Timestamp, Value};

/// Call-size limits each entry is prepared against.
const LIMITS: [usize; 2] = [DEFAULT_MAX_CALL_BYTES, 96];

/// A detail this long or shorter may well spell a word of a message by
/// chance; the leak check starts above it.
const LEAK_MIN_BYTES: usize = 8;

struct Fixture {
    tenants: Vec<Tenant>,
    /// Every message the conversion and validation can give, each on its own
    /// line with digits folded (see [`fold_digits`]): a detail that spells a
    /// piece of one is not a leak.
    templates: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let demo = Config::local_default()
            .tenants
            .get("demo")
            .expect("the default config has the demo tenant")
            .clone();
        let mut sources = BTreeMap::new();
        sources.insert(
            "billing".to_string(),
            SourceRef::new("aws.partner/example.com/acme/billing", "us-east-1"),
        );
        sources.insert(
            "audit".to_string(),
            SourceRef::new("aws.partner/example.com/acme/audit", "eu-west-1"),
        );
        let acme = Tenant::new("acme".into(), "billing".into(), sources);
        let tenants = vec![demo, acme];
        let templates = probe_messages(&tenants)
            .iter()
            .map(|m| fold_digits(m))
            .collect::<Vec<_>>()
            .join("\n");
        Fixture { tenants, templates }
    })
}

/// The message of every error path, from entries built to take each one.
fn probe_messages(tenants: &[Tenant]) -> Vec<String> {
    let ok = EventEntry {
        time: Some(1_704_164_645),
        detail_type: "InvoicePaid".into(),
        detail: Some(r#"{"invoice":"in_1"}"#.into()),
        resources: vec!["arn:aws:x".into()],
        source_key: String::new(),
    };
    let probes = [
        EventEntry {
            detail_type: String::new(),
            ..ok.clone()
        },
        EventEntry {
            detail_type: "x".repeat(MAX_DETAIL_TYPE_CHARS + 1),
            ..ok.clone()
        },
        EventEntry {
            detail: None,
            ..ok.clone()
        },
        EventEntry {
            detail: Some("[]".into()),
            ..ok.clone()
        },
        EventEntry {
            detail: Some("{".into()),
            ..ok.clone()
        },
        EventEntry {
            detail: Some("{x}".into()),
            ..ok.clone()
        },
        EventEntry {
            detail: Some(format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200))),
            ..ok.clone()
        },
        EventEntry {
            resources: vec!["r".repeat(MAX_RESOURCE_CHARS + 1)],
            ..ok.clone()
        },
        EventEntry {
            resources: vec![String::new()],
            ..ok.clone()
        },
        EventEntry {
            time: Some(MAX_TIME_SECS + 1),
            ..ok.clone()
        },
        EventEntry {
            source_key: "nope".into(),
            ..ok.clone()
        },
        EventEntry {
            detail: Some(format!("{{\"a\":\"{}\"}}", "x".repeat(200))),
            ..ok.clone()
        },
    ];
    let mut messages = Vec::new();
    for tenant in tenants {
        for probe in &probes {
            if let Err(e) = prepare(0, probe.clone(), tenant, LIMITS[1]) {
                messages.push(e.message);
            }
        }
    }
    let proto_ok = PartnerEventEntry {
        detail_type: "InvoicePaid".into(),
        body: Some(Body::Detail("{}".into())),
        ..PartnerEventEntry::default()
    };
    let mut nan = Struct::default();
    nan.fields.insert(
        "x".into(),
        Value {
            kind: Some(Kind::NumberValue(f64::NAN)),
        },
    );
    for probe in [
        PartnerEventEntry {
            time: Some(Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            ..proto_ok.clone()
        },
        PartnerEventEntry {
            body: Some(Body::DetailStruct(nan)),
            ..proto_ok
        },
    ] {
        if let Err(e) = entry_from_proto(probe) {
            messages.push(e.0);
        }
    }
    messages
}

/// Each run of ASCII digits (with a leading `-`) becomes `0`, so that
/// counts, positions and limits compare equal whatever their value.
fn fold_digits(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let starts_number =
            c.is_ascii_digit() || (c == '-' && chars.peek().is_some_and(char::is_ascii_digit));
        if starts_number {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('0');
        } else {
            out.push(c);
        }
    }
    out
}

/// A valid JSON object of exactly `len` bytes (`len` >= 7) that says
/// nothing: the same entry with it in place of the detail takes the same
/// path past the detail check and gets the same size.
fn neutral_detail(len: usize) -> String {
    format!("{{\"\":\"{}\"}}", "x".repeat(len - 7))
}

/// Fails if `message` carries `detail`, unless the detail only spells text
/// the message has anyway: a piece of a template, or of the message the same
/// entry gets with a neutral detail (echoed source keys, sizes).
fn assert_no_leak(detail: &str, message: &str, neutral_message: Option<&str>) {
    if detail.len() <= LEAK_MIN_BYTES || !message.contains(detail) {
        return;
    }
    let folded = fold_digits(detail);
    if fixture().templates.contains(&folded) {
        return;
    }
    if neutral_message.is_some_and(|n| fold_digits(n).contains(&folded)) {
        return;
    }
    panic!("an error message carries the detail: detail={detail:?} message={message:?}");
}

fn check_entry(index: u32, proto: PartnerEventEntry) {
    let text_detail = match &proto.body {
        Some(Body::Detail(d)) => Some(d.clone()),
        _ => None,
    };
    let from_struct = matches!(proto.body, Some(Body::DetailStruct(_)));
    let entry = match entry_from_proto(proto) {
        Ok(entry) => entry,
        Err(e) => {
            if let Some(d) = &text_detail {
                assert_no_leak(d, &e.0, None);
            }
            return;
        }
    };
    if from_struct {
        let json = entry
            .detail
            .as_deref()
            .expect("a struct body gives a detail");
        if let Err(e) = check_detail_json(json) {
            panic!("struct_to_json gave a detail check_detail_json refuses: {json:?}: {e:?}");
        }
    }
    for tenant in &fixture().tenants {
        for limit in LIMITS {
            match prepare(index, entry.clone(), tenant, limit) {
                Ok(p) => {
                    assert_eq!(p.index, index);
                    assert_eq!(p.time, entry.time);
                    assert_eq!(p.detail_type, entry.detail_type);
                    assert_eq!(Some(&p.detail), entry.detail.as_ref());
                    assert_eq!(p.resources, entry.resources);
                    assert_eq!(Some(&p.source), tenant.source(&entry.source_key));
                    assert!(check_detail_json(&p.detail).is_ok());
                    let size = entry_size(
                        p.time,
                        p.source.name(),
                        &p.detail_type,
                        &p.detail,
                        &p.resources,
                    );
                    assert_eq!(p.size, size, "size is not the AWS formula");
                    assert!(p.size <= limit, "size {} over the limit {limit}", p.size);
                }
                Err(e) => {
                    let Some(detail) = entry.detail.as_deref() else {
                        continue;
                    };
                    if detail.len() <= LEAK_MIN_BYTES || !e.message.contains(detail) {
                        continue;
                    }
                    let neutral = EventEntry {
                        detail: Some(neutral_detail(detail.len())),
                        ..entry.clone()
                    };
                    let neutral_message = prepare(index, neutral, tenant, limit).err();
                    assert_no_leak(
                        detail,
                        &e.message,
                        neutral_message.as_ref().map(|n| n.message.as_str()),
                    );
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = PutPartnerEventsRequest::decode(data) else {
        return;
    };
    for (index, entry) in request.entries.into_iter().enumerate() {
        check_entry(u32::try_from(index).unwrap_or(u32::MAX), entry);
    }
});
