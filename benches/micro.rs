//! Micro-benchmarks of the pure functions every entry goes through: entry
//! validation and sizing, the JSON check of `detail`, splitting into calls,
//! and `detail_struct` to JSON text. The load harness (`partner-events-gateway
//! bench`, src/bench.rs) measures the whole path; these say which step costs
//! what per entry.
//!
//! `cargo bench --bench micro` (add `-- --quick` for a short run).

use std::{collections::BTreeMap, hint::black_box};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use partner_events_gateway::{
    api::convert::struct_to_json,
    domain::{
        chunk::split_into_calls,
        entry::{check_detail_json, prepare, EventEntry, PreparedEntry},
        limits::DEFAULT_MAX_CALL_BYTES,
        tenant::{SourceRef, Tenant},
    },
};
use prost_types::{value::Kind, ListValue, Struct, Value};

const SOURCE: &str = "aws.partner/example.com/acme/billing";

fn tenant() -> Tenant {
    let mut sources = BTreeMap::new();
    sources.insert("billing".to_string(), SourceRef::new(SOURCE, "us-east-1"));
    Tenant::new("acme".into(), "billing".into(), sources)
}

/// A JSON object of about `bytes` bytes: line items of an invoice.
fn detail_of(bytes: usize) -> String {
    let mut s = String::from(
        r#"{"invoice":"in_1MtHbELkdIwHu7ixl4OzzPMv","customer":"cus_NffrFeUfNV2Hib","currency":"eur","amount_due":125000,"paid":true,"lines":["#,
    );
    let mut i = 0;
    while s.len() + 80 < bytes {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"id":"il_{i:08}","amount":{},"quantity":{},"taxable":false}}"#,
            1000 + i,
            i % 7
        ));
        i += 1;
    }
    s.push_str("]}");
    s
}

/// What a service typically sends: a detail type, a ~300-byte detail, a
/// time and one resource.
fn typical_entry() -> EventEntry {
    EventEntry {
        time: Some(1_700_000_000),
        detail_type: "InvoicePaid".into(),
        detail: Some(detail_of(300)),
        resources: vec!["arn:aws:example:us-east-1:123456789012:invoice/in_1".into()],
        source_key: String::new(),
    }
}

fn bench_prepare(c: &mut Criterion) {
    let tenant = tenant();
    let entry = typical_entry();
    let mut g = c.benchmark_group("prepare");
    g.throughput(Throughput::Elements(1));
    g.bench_function("typical_entry", |b| {
        b.iter_batched(
            || entry.clone(),
            |e| prepare(0, black_box(e), &tenant, DEFAULT_MAX_CALL_BYTES),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_check_detail_json(c: &mut Criterion) {
    let mut g = c.benchmark_group("check_detail_json");
    for kib in [1usize, 10] {
        let detail = detail_of(kib * 1024);
        g.throughput(Throughput::Bytes(detail.len() as u64));
        g.bench_function(format!("{kib}KiB"), |b| {
            b.iter(|| check_detail_json(black_box(&detail)))
        });
    }
    g.finish();
}

fn bench_split_into_calls(c: &mut Criterion) {
    let tenant = tenant();
    let entries: Vec<PreparedEntry> = (0..500)
        .map(|i| prepare(i, typical_entry(), &tenant, DEFAULT_MAX_CALL_BYTES).expect("valid"))
        .collect();
    let mut g = c.benchmark_group("split_into_calls");
    g.throughput(Throughput::Elements(entries.len() as u64));
    g.bench_function("500_entries", |b| {
        b.iter_batched(
            || entries.clone(),
            |e| split_into_calls(black_box(e), DEFAULT_MAX_CALL_BYTES),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn value(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

/// An invoice as a `google.protobuf.Struct`: strings, numbers (whole and
/// not), a bool, a nested object and a list of objects.
fn typical_struct() -> Struct {
    let mut fields = BTreeMap::new();
    fields.insert(
        "invoice".into(),
        value(Kind::StringValue("in_1MtHbELkdIwHu7ixl4OzzPMv".into())),
    );
    fields.insert(
        "customer".into(),
        value(Kind::StringValue("cus_NffrFeUfNV2Hib".into())),
    );
    fields.insert("amount_due".into(), value(Kind::NumberValue(125_000.0)));
    fields.insert("tax_rate".into(), value(Kind::NumberValue(0.19)));
    fields.insert("paid".into(), value(Kind::BoolValue(true)));
    let mut address = BTreeMap::new();
    address.insert("city".into(), value(Kind::StringValue("Berlin".into())));
    address.insert("country".into(), value(Kind::StringValue("DE".into())));
    fields.insert(
        "address".into(),
        value(Kind::StructValue(Struct { fields: address })),
    );
    let lines = (0..5)
        .map(|i| {
            let mut line = BTreeMap::new();
            line.insert("id".into(), value(Kind::StringValue(format!("il_{i:08}"))));
            line.insert(
                "amount".into(),
                value(Kind::NumberValue(1000.0 + f64::from(i))),
            );
            line.insert(
                "quantity".into(),
                value(Kind::NumberValue(f64::from(i % 7))),
            );
            value(Kind::StructValue(Struct { fields: line }))
        })
        .collect();
    fields.insert(
        "lines".into(),
        value(Kind::ListValue(ListValue { values: lines })),
    );
    Struct { fields }
}

fn bench_struct_to_json(c: &mut Criterion) {
    let s = typical_struct();
    let mut g = c.benchmark_group("struct_to_json");
    g.throughput(Throughput::Elements(1));
    g.bench_function("typical_invoice", |b| {
        b.iter(|| struct_to_json(black_box(&s)))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_prepare,
    bench_check_detail_json,
    bench_split_into_calls,
    bench_struct_to_json
);
criterion_main!(benches);
