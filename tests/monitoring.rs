//! deploy/monitoring/: the Grafana dashboard and the Prometheus alert rules
//! name only metrics the gateway exports. A gateway in cluster mode (a Redis
//! of the test's own) with metrics on takes SYNC, DURABLE and keyed batches,
//! good and bad, one of them failing retryably once; every metric name in a
//! dashboard query or an alert expression must then be in its `/metrics`
//! (a histogram by its `_bucket`, `_sum` or `_count`).

mod common;

use std::{collections::BTreeSet, path::PathBuf};

use common::{entry, eventually_async, redis::RedisServer, sample, scrape, TestGateway};
use partner_events_gateway::{
    emulator::{Fault, FaultRule},
    proto::{DeliveryMode, PartnerEventEntry, PutPartnerEventsRequest},
};

fn monitoring_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring")
}

/// Every PromQL expression of the dashboard's panels.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring_dir().join("dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard.json is JSON");
    assert_eq!(dashboard["uid"], "partner-events-gateway");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap_or_else(|| {
            panic!("panel {} has no targets", panel["title"]);
        });
        assert!(
            !targets.is_empty(),
            "panel {} has no queries",
            panel["title"]
        );
        for t in targets {
            queries.push(t["expr"].as_str().expect("a target's expr").to_string());
        }
    }
    queries
}

/// Every alert's expression; each alert has a summary and a severity.
fn alert_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring_dir().join("alerts.yaml")).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("alerts.yaml is YAML");
    let mut exprs = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("an alert name");
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{name} has a summary"
            );
            assert!(
                rule["labels"]["severity"].as_str().is_some(),
                "{name} has a severity"
            );
            exprs.push(rule["expr"].as_str().expect("an expr").to_string());
        }
    }
    exprs
}

/// The gateway's metric names in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts = rest.starts_with("partner_events_") || rest.starts_with("grpc_server_");
        let after_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts && after_word {
            let len = rest
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
                .count();
            names.insert(rest[..len].to_string());
            i += len;
        } else {
            i += 1;
        }
    }
    names
}

fn keyed(detail_type: &str, key: &str) -> PartnerEventEntry {
    PartnerEventEntry {
        idempotency_key: key.into(),
        ..entry(detail_type, r#"{"n":1}"#)
    }
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_name_is_exported() {
    let queries = dashboard_queries();
    let alerts = alert_expressions();
    let named: BTreeSet<String> = queries
        .iter()
        .chain(&alerts)
        .flat_map(|e| metric_names(e))
        .collect();
    assert!(named.len() >= 30, "{named:?}");

    let redis = RedisServer::start();
    let gw = TestGateway::start(&format!(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n[cluster]\nurl = \"{}\"\nkey_prefix = \"monitoring-{}\"\n[upstream]\nretry_base_ms = 1\n",
        redis.url(),
        fastrand::u64(..)
    ))
    .await;
    let addr = gw.gateway.metrics_addr().unwrap();
    eventually_async("the replica joins through Redis", || async {
        sample(&scrape(addr).await, "partner_events_cluster_joined") == Some(1.0)
    })
    .await;
    // One retryable failure, resent.
    gw.emulator().set_faults(vec![FaultRule {
        detail_type: "Flaky".into(),
        fault: Fault::EntryError {
            code: "InternalFailure".into(),
            message: "once".into(),
        },
        times: Some(1),
    }]);
    gw.put(
        "acme",
        vec![
            entry("Good", r#"{"n":1}"#),
            entry("Bad", "not json"),
            entry("Flaky", r#"{"n":2}"#),
        ],
    )
    .await;
    for _ in 0..2 {
        gw.put("acme", vec![keyed("Keyed", "k1")]).await;
    }
    let durable = PutPartnerEventsRequest {
        tenant_id: "acme".into(),
        entries: vec![entry("Durable", r#"{"n":3}"#)],
        batch_id: String::new(),
        delivery: DeliveryMode::Durable as i32,
    };
    gw.client.clone().put_partner_events(durable).await.unwrap();
    let text = eventually_async("the DURABLE entry is delivered", || async {
        let text = scrape(addr).await;
        (sample(
            &text,
            "partner_events_durable_outcomes_total{outcome=\"delivered\"}",
        ) == Some(1.0))
        .then_some(text)
    })
    .await;

    let exported: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = named.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named in deploy/monitoring but not exported: {missing:?}\nexported: {exported:?}"
    );
    gw.stop().await;
}

#[test]
fn names_are_read_out_of_expressions() {
    let names = metric_names(
        r#"sum(rate(partner_events_entries_total{code!="ok"}[5m])) / histogram_quantile(0.99, grpc_server_handling_seconds_bucket)"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "grpc_server_handling_seconds_bucket",
            "partner_events_entries_total"
        ]
    );
}
