//! The partner event source lifecycle through the real AWS SDK over HTTP:
//! create, describe, list and delete as `aws-sdk-eventbridge` parses them,
//! the customer's side played through the handle and the control targets,
//! and where events for each state end up.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_config::{retry::RetryConfig, BehaviorVersion, Region};
use aws_sdk_eventbridge::{
    config::Credentials, error::ProvideErrorMetadata, types::EventSourceState,
    types::PutPartnerEventsRequestEntry, Client,
};
use partner_events_gateway::emulator::{
    Emulator, EmulatorConfig, EmulatorHandle, SeedSource, SourceError, SourceState,
    PENDING_EXPIRY_SECS,
};

mod common;

use common::{post_emulator, record_all};

const SOURCE: &str = "aws.partner/example.com/acme/billing";
const ACCOUNT: &str = "123456789012";

async fn emulator(config: EmulatorConfig) -> EmulatorHandle {
    Emulator::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("emulator starts")
}

async fn sdk_client(handle: &EmulatorHandle, region: &'static str) -> Client {
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(handle.endpoint_url())
        .region(Region::new(region))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(RetryConfig::disabled())
        .load()
        .await;
    Client::new(&shared)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The one account line of `ListPartnerEventSourceAccounts` for `name`:
/// account, state, creation and expiration in epoch seconds.
async fn account_line(client: &Client, name: &str) -> (String, EventSourceState, i64, Option<i64>) {
    let out = client
        .list_partner_event_source_accounts()
        .event_source_name(name)
        .limit(10)
        .send()
        .await
        .expect("the source is listed");
    assert_eq!(out.next_token(), None);
    let accounts = out.partner_event_source_accounts();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    let a = &accounts[0];
    (
        a.account().unwrap().to_string(),
        a.state().unwrap().clone(),
        a.creation_time().unwrap().secs(),
        a.expiration_time().map(|t| t.secs()),
    )
}

/// Puts one event for `source` and returns the id the caller was told.
async fn put(client: &Client, source: &str, detail_type: &str) -> String {
    let out = client
        .put_partner_events()
        .entries(
            PutPartnerEventsRequestEntry::builder()
                .source(source)
                .detail_type(detail_type)
                .detail("{}")
                .build(),
        )
        .send()
        .await
        .expect("accepted whatever the source's state");
    assert_eq!(out.failed_entry_count(), 0);
    out.entries()[0].event_id().unwrap().to_string()
}

fn ids(events: Vec<partner_events_gateway::emulator::RecordedEvent>) -> Vec<String> {
    events.into_iter().map(|e| e.event_id).collect()
}

#[tokio::test]
async fn create_describe_list_delete_as_the_sdk_reads_them() {
    let emu = emulator(record_all()).await;
    let client = sdk_client(&emu, "eu-west-1").await;
    let before = now_secs();
    let created = client
        .create_partner_event_source()
        .name(SOURCE)
        .account(ACCOUNT)
        .send()
        .await
        .expect("created");
    let after = now_secs();
    let arn = format!("arn:aws:events:eu-west-1::event-source/{SOURCE}");
    assert_eq!(created.event_source_arn(), Some(arn.as_str()));

    let described = client
        .describe_partner_event_source()
        .name(SOURCE)
        .send()
        .await
        .expect("described");
    assert_eq!(described.arn(), Some(arn.as_str()));
    assert_eq!(described.name(), Some(SOURCE));

    let (account, state, created_at, expires_at) = account_line(&client, SOURCE).await;
    assert_eq!(account, ACCOUNT);
    assert_eq!(state, EventSourceState::Pending);
    assert!((before..=after).contains(&created_at), "{created_at}");
    assert_eq!(expires_at, Some(created_at + PENDING_EXPIRY_SECS as i64));
    assert_eq!(PENDING_EXPIRY_SECS, 90 * 86_400);

    client
        .delete_partner_event_source()
        .name(SOURCE)
        .account(ACCOUNT)
        .send()
        .await
        .expect("deleted");
    let (account, state, created_again, expires_at) = account_line(&client, SOURCE).await;
    assert_eq!(
        (account.as_str(), state, created_again, expires_at),
        (ACCOUNT, EventSourceState::Deleted, created_at, None),
        "still listed, as DELETED"
    );
    let held = emu.source(SOURCE).expect("the handle sees it");
    assert_eq!(held.state, SourceState::Deleted);
    assert!(
        emu.calls().is_empty(),
        "only PutPartnerEvents calls are recorded"
    );
}

#[tokio::test]
async fn refusals_come_back_as_their_modelled_errors() {
    let emu = emulator(record_all()).await;
    let client = sdk_client(&emu, "us-east-1").await;
    let err = client
        .describe_partner_event_source()
        .name(SOURCE)
        .send()
        .await
        .expect_err("unknown");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception()),
        "{err:?}"
    );
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 400);
    let err = client
        .list_partner_event_source_accounts()
        .event_source_name(SOURCE)
        .send()
        .await
        .expect_err("unknown");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception()),
        "{err:?}"
    );

    client
        .create_partner_event_source()
        .name(SOURCE)
        .account(ACCOUNT)
        .send()
        .await
        .unwrap();
    let err = client
        .create_partner_event_source()
        .name(SOURCE)
        .account("210987654321")
        .send()
        .await
        .expect_err("the name is taken");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_resource_already_exists_exception()),
        "{err:?}"
    );
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 400);

    for (name, account) in [
        ("aws.partner/example.com", ACCOUNT),
        ("myapp/acme/billing", ACCOUNT),
        ("aws.partner/example.com/other/billing", "12345"),
    ] {
        let err = client
            .create_partner_event_source()
            .name(name)
            .account(account)
            .send()
            .await
            .expect_err("invalid");
        assert_eq!(err.code(), Some("ValidationException"), "{name} {account}");
        assert_eq!(err.raw_response().unwrap().status().as_u16(), 400);
    }
    let err = client
        .delete_partner_event_source()
        .name(SOURCE)
        .account("210987654321")
        .send()
        .await
        .expect_err("another account's source");
    assert_eq!(err.code(), Some("ResourceNotFoundException"));
    assert_eq!(emu.sources().len(), 1);
}

#[tokio::test]
async fn the_customer_side_decides_where_events_land() {
    let emu = emulator(record_all()).await;
    let client = sdk_client(&emu, "us-east-1").await;
    client
        .create_partner_event_source()
        .name(SOURCE)
        .account(ACCOUNT)
        .send()
        .await
        .unwrap();

    // PENDING: accepted without a word, not delivered.
    let pending = put(&client, SOURCE, "WhilePending").await;
    assert!(emu.events().is_empty());
    assert_eq!(ids(emu.undelivered()), std::slice::from_ref(&pending));

    // The customer creates its event bus: ACTIVE, delivered.
    emu.associate(SOURCE).unwrap();
    let (_, state, _, expires_at) = account_line(&client, SOURCE).await;
    assert_eq!((state, expires_at), (EventSourceState::Active, None));
    let active = put(&client, SOURCE, "WhileActive").await;
    assert_eq!(ids(emu.events()), std::slice::from_ref(&active));

    // A source the emulator never heard of delivers too.
    let unknown = put(&client, "aws.partner/example.com/nobody/x", "Unknown").await;
    assert_eq!(ids(emu.events()), [active.clone(), unknown]);

    // The customer deletes its bus: PENDING again, with a new expiration.
    let before = now_secs();
    emu.delete_bus(SOURCE).unwrap();
    let (_, state, _, expires_at) = account_line(&client, SOURCE).await;
    assert_eq!(state, EventSourceState::Pending);
    let expires_at = expires_at.expect("a pending source expires");
    assert!(
        expires_at >= before + PENDING_EXPIRY_SECS as i64,
        "{expires_at}"
    );
    let pending_again = put(&client, SOURCE, "AfterBusDeleted").await;
    assert_eq!(
        ids(emu.undelivered()),
        [pending.clone(), pending_again.clone()]
    );
    assert_eq!(
        emu.delete_bus(SOURCE),
        Err(SourceError::NoEventBus {
            name: SOURCE.into()
        })
    );

    // The partner deletes the source: not delivered, and no bus can revive it.
    client
        .delete_partner_event_source()
        .name(SOURCE)
        .account(ACCOUNT)
        .send()
        .await
        .unwrap();
    let deleted = put(&client, SOURCE, "AfterDelete").await;
    assert_eq!(ids(emu.undelivered()), [pending, pending_again, deleted]);
    assert_eq!(
        emu.associate(SOURCE),
        Err(SourceError::Deleted {
            name: SOURCE.into()
        })
    );
    emu.set_source_state(SOURCE, SourceState::Active).unwrap();
    assert_eq!(emu.source(SOURCE).unwrap().state, SourceState::Active);
    assert!(matches!(
        emu.associate("aws.partner/example.com/nobody/x"),
        Err(SourceError::NotFound { .. })
    ));
    // Every call was recorded with every entry accepted.
    let accepted: Vec<usize> = emu.calls().iter().map(|c| c.accepted).collect();
    assert_eq!(accepted, [1, 1, 1, 1, 1]);
    emu.clear();
    assert!(emu.undelivered().is_empty() && emu.events().is_empty());
    assert_eq!(emu.sources().len(), 1, "clear keeps the sources");
}

#[tokio::test]
async fn seeded_sources_start_in_their_state() {
    let demo = "aws.partner/example.com/demo/billing";
    let waiting = "aws.partner/example.com/demo2/billing";
    let emu = emulator(EmulatorConfig {
        sources: vec![
            SeedSource::new(demo, ACCOUNT, SourceState::Active),
            SeedSource::new(waiting, ACCOUNT, SourceState::Pending),
        ],
        ..record_all()
    })
    .await;
    let client = sdk_client(&emu, "us-west-2").await;
    assert_eq!(
        account_line(&client, demo).await.1,
        EventSourceState::Active
    );
    let (_, state, created_at, expires_at) = account_line(&client, waiting).await;
    assert_eq!(state, EventSourceState::Pending);
    assert_eq!(expires_at, Some(created_at + PENDING_EXPIRY_SECS as i64));
    let described = client
        .describe_partner_event_source()
        .name(demo)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.arn(),
        Some(format!("arn:aws:events:us-west-2::event-source/{demo}").as_str()),
        "the ARN takes the caller's region"
    );
    let delivered = put(&client, demo, "A").await;
    let held_back = put(&client, waiting, "B").await;
    assert_eq!(ids(emu.events()), [delivered]);
    assert_eq!(ids(emu.undelivered()), [held_back]);

    // Sources can be added at run time as well.
    emu.add_source(SeedSource::new(SOURCE, ACCOUNT, SourceState::Pending))
        .unwrap();
    assert!(matches!(
        emu.add_source(SeedSource::new(SOURCE, ACCOUNT, SourceState::Active)),
        Err(SourceError::AlreadyExists { .. })
    ));
    let names: Vec<String> = emu.sources().into_iter().map(|s| s.name).collect();
    assert_eq!(names, [SOURCE, demo, waiting]);
}

/// POSTs `body` with `x-amz-target: target`; gives the status code and the
/// JSON body.
async fn control(emu: &EmulatorHandle, target: &str, body: &str) -> (u16, serde_json::Value) {
    let answer = post_emulator(emu.local_addr(), target, body).await;
    (answer.status(), serde_json::from_str(&answer.body).unwrap())
}

#[tokio::test]
async fn control_targets_play_the_customer_over_http() {
    let emu = emulator(EmulatorConfig {
        sources: vec![SeedSource::new(SOURCE, ACCOUNT, SourceState::Pending)],
        ..record_all()
    })
    .await;
    let name = format!(r#"{{"Name":"{SOURCE}"}}"#);
    assert_eq!(
        control(&emu, "EmulatorControl.AssociateSource", &name).await,
        (200, serde_json::json!({"Name": SOURCE, "State": "ACTIVE"}))
    );
    assert_eq!(emu.source(SOURCE).unwrap().state, SourceState::Active);
    assert_eq!(
        control(&emu, "EmulatorControl.DeleteEventBus", &name).await,
        (200, serde_json::json!({"Name": SOURCE, "State": "PENDING"}))
    );
    let (status, body) = control(&emu, "EmulatorControl.DeleteEventBus", &name).await;
    assert_eq!(
        (status, &body["__type"]),
        (400, &"InvalidStateException".into())
    );
    assert_eq!(
        control(
            &emu,
            "EmulatorControl.SetSourceState",
            &format!(r#"{{"Name":"{SOURCE}","State":"DELETED"}}"#)
        )
        .await,
        (200, serde_json::json!({"Name": SOURCE, "State": "DELETED"}))
    );
    assert_eq!(emu.source(SOURCE).unwrap().state, SourceState::Deleted);
    let (status, body) = control(
        &emu,
        "EmulatorControl.AssociateSource",
        r#"{"Name":"aws.partner/example.com/nobody/x"}"#,
    )
    .await;
    assert_eq!(
        (status, &body["__type"]),
        (400, &"ResourceNotFoundException".into())
    );
    let (status, body) = control(&emu, "EmulatorControl.Reboot", "{}").await;
    assert_eq!(
        (status, &body["__type"]),
        (400, &"UnknownOperationException".into())
    );
}
