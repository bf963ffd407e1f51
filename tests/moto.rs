//! Against moto, an independent EventBridge emulator (PyPI `moto[server]`),
//! started by `scripts/test`: the gateway's events arrive on the customer's
//! side, and moto's empty `Entries` answer is reported as `OutcomeUnknown`.
//!
//! moto delivers partner events to the customer account's default bus, where
//! a rule sends them to an SQS queue. The partner is moto's default account
//! (dummy credentials); the customer is picked with the `x-moto-account-id`
//! header, which moto reads instead of the signature.

mod common;

use aws_config::{BehaviorVersion, Region};
use common::{entry, TestGateway};

const CUSTOMER: &str = "111122223333";
const REGION: &str = "us-east-1";

/// moto's URL, or None when this run has no moto (then the test says so and
/// passes, unless REQUIRE_MOTO is set, as `scripts/test` does).
fn moto_endpoint() -> Option<String> {
    match std::env::var("MOTO_ENDPOINT") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("REQUIRE_MOTO").is_none(),
                "REQUIRE_MOTO is set but MOTO_ENDPOINT is not: run the tests with scripts/test"
            );
            eprintln!("MOTO_ENDPOINT unset: skipping the moto test (scripts/test runs it)");
            None
        }
    }
}

async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(aws_sdk_eventbridge::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await
}

macro_rules! as_customer {
    ($op:expr) => {
        $op.customize()
            .mutate_request(|r| {
                r.headers_mut().insert("x-moto-account-id", CUSTOMER);
            })
            .send()
            .await
            .expect(stringify!($op))
    };
}

#[tokio::test]
async fn events_reach_the_customer_bus_through_moto() {
    let Some(endpoint) = moto_endpoint() else {
        return;
    };
    let shared = sdk_config(&endpoint).await;
    let events = aws_sdk_eventbridge::Client::new(&shared);
    let sqs = aws_sdk_sqs::Client::new(&shared);

    // A source of its own per run: moto keeps state between runs, and a
    // second CreatePartnerEventSource for one account doubles deliveries.
    let unique = format!("t{}x{}", std::process::id(), fastrand::u32(..));
    let source = format!("aws.partner/example.com/{unique}/billing");

    // The customer: a queue, and a rule on its default bus sending partner events there.
    let queue_url = as_customer!(sqs.create_queue().queue_name(&unique))
        .queue_url
        .unwrap();
    let attrs = as_customer!(sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn));
    let queue_arn =
        attrs.attributes.unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    as_customer!(events
        .put_rule()
        .name(&unique)
        .event_pattern(format!(r#"{{"source":["{source}"]}}"#)));
    as_customer!(events.put_targets().rule(&unique).targets(
        aws_sdk_eventbridge::types::Target::builder()
            .id("q")
            .arn(&queue_arn)
            .build()
            .unwrap()
    ));

    // The partner (us): the source, created for the customer's account.
    events
        .create_partner_event_source()
        .name(&source)
        .account(CUSTOMER)
        .send()
        .await
        .expect("CreatePartnerEventSource");

    // The gateway, pointed at moto as if it were AWS.
    let config = format!(
        "[upstream]\nkind = \"aws\"\nendpoint_url = \"{endpoint}\"\n\
         [tenants.acme]\ndefault_source = \"billing\"\n\
         [tenants.acme.sources.billing]\nname = \"{source}\"\nregion = \"{REGION}\"\n"
    );
    let gw = TestGateway::start(&config).await;
    let details: Vec<String> = (0..3)
        .map(|i| format!(r#"{{"invoice":"in_{i}","n":{i}}}"#))
        .collect();
    let resp = gw
        .put(
            "acme",
            details.iter().map(|d| entry("InvoicePaid", d)).collect(),
        )
        .await;

    // moto answers `"Entries": []`: accepted, but no ids to attribute.
    assert_eq!(resp.entries.len(), 3);
    assert_eq!(resp.failed_entry_count, 3);
    for (i, r) in resp.entries.iter().enumerate() {
        assert_eq!(r.index, i as u32);
        assert_eq!(r.error_code, "OutcomeUnknown", "{r:?}");
        assert!(r.event_id.is_empty());
        assert_eq!(r.attempts, 1, "an unknown outcome is not resent");
    }

    // ... and yet the events are on the customer's side, each exactly once.
    let mut got: Vec<serde_json::Value> = Vec::new();
    for _ in 0..10 {
        let out = as_customer!(sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1));
        for m in out.messages.unwrap_or_default() {
            got.push(serde_json::from_str(m.body.as_deref().unwrap()).unwrap());
        }
        if got.len() >= 3 {
            break;
        }
    }
    assert_eq!(got.len(), 3, "{got:#?}");
    got.sort_by_key(|e| e["detail"]["n"].as_i64());
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e["source"], source.as_str());
        assert_eq!(e["detail-type"], "InvoicePaid");
        assert_eq!(e["detail"]["invoice"], format!("in_{i}"));
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_unknown_source_at_moto_fails_without_losing_entries() {
    let Some(endpoint) = moto_endpoint() else {
        return;
    };
    // moto answers a source nobody created with an HTML 500 page.
    let config = format!(
        "[upstream]\nkind = \"aws\"\nendpoint_url = \"{endpoint}\"\nsdk_max_attempts = 1\n\
         [tenants.ghost]\ndefault_source = \"s\"\n\
         [tenants.ghost.sources.s]\nname = \"aws.partner/example.com/never-created-{}/s\"\nregion = \"{REGION}\"\n",
        std::process::id()
    );
    let gw = TestGateway::start(&config).await;
    let resp = gw
        .put("ghost", vec![entry("A", "{}"), entry("B", "{}")])
        .await;
    assert_eq!(resp.failed_entry_count, 2);
    for r in &resp.entries {
        assert_eq!(r.error_code, "UpstreamError", "{r:?}");
    }
    gw.stop().await;
}
