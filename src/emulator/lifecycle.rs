//! The partner-side source operations (`CreatePartnerEventSource`,
//! `DescribePartnerEventSource`, `ListPartnerEventSourceAccounts`,
//! `DeletePartnerEventSource`) and the emulator-only `EmulatorControl.*`
//! targets that play the customer: one request body in, one [`Reply`] out,
//! over [`Sources`]. No faults apply to these operations.

use serde::de::DeserializeOwned;

use super::{
    sources::{check_account, check_name, event_source_arn, SourceError, SourceState, Sources},
    wire::{
        ControlledSource, CreatedSource, DescribedSource, ListAccountsRequest, NameAndAccount,
        NameOnly, Reply, SourceAccount, SourceAccounts, INVALID_STATE_EXCEPTION,
        RESOURCE_ALREADY_EXISTS_EXCEPTION, RESOURCE_NOT_FOUND_EXCEPTION, SERIALIZATION_EXCEPTION,
        TARGET_CONTROL_ASSOCIATE_SOURCE, TARGET_CONTROL_DELETE_EVENT_BUS,
        TARGET_CONTROL_SET_SOURCE_STATE, TARGET_CREATE_PARTNER_EVENT_SOURCE,
        TARGET_DELETE_PARTNER_EVENT_SOURCE, TARGET_DESCRIBE_PARTNER_EVENT_SOURCE,
        TARGET_LIST_PARTNER_EVENT_SOURCE_ACCOUNTS, VALIDATION_EXCEPTION,
    },
};

/// `Limit` of `ListPartnerEventSourceAccounts`: 1 to 100 (the service model).
const MAX_LIST_LIMIT: i64 = 100;

/// The reply to `target`, or `None` when `target` is none of these
/// operations. `region` shapes the ARNs; `now` is epoch seconds.
pub fn answer(
    sources: &mut Sources,
    target: &str,
    region: &str,
    body: &[u8],
    now: u64,
) -> Option<Reply> {
    let result = match target {
        TARGET_CREATE_PARTNER_EVENT_SOURCE => create(sources, region, body, now),
        TARGET_DESCRIBE_PARTNER_EVENT_SOURCE => describe(sources, region, body),
        TARGET_LIST_PARTNER_EVENT_SOURCE_ACCOUNTS => list_accounts(sources, body),
        TARGET_DELETE_PARTNER_EVENT_SOURCE => delete(sources, body),
        TARGET_CONTROL_ASSOCIATE_SOURCE => control(sources, body, |s, name| s.associate(name, now)),
        TARGET_CONTROL_DELETE_EVENT_BUS => {
            control(sources, body, |s, name| s.delete_bus(name, now))
        }
        TARGET_CONTROL_SET_SOURCE_STATE => set_state(sources, body, now),
        _ => return None,
    };
    Some(result.unwrap_or_else(|reply| reply))
}

fn create(sources: &mut Sources, region: &str, body: &[u8], now: u64) -> Result<Reply, Reply> {
    let request: NameAndAccount = read(body)?;
    let name = required(request.name, "name")?;
    let account = required(request.account, "account")?;
    check_name(&name).map_err(invalid)?;
    check_account(&account).map_err(invalid)?;
    sources.create(&name, &account, now).map_err(refused)?;
    Ok(Reply::json(&CreatedSource {
        event_source_arn: event_source_arn(region, &name),
    }))
}

fn describe(sources: &mut Sources, region: &str, body: &[u8]) -> Result<Reply, Reply> {
    let request: NameOnly = read(body)?;
    let name = required(request.name, "name")?;
    check_name(&name).map_err(invalid)?;
    let source = sources.get(&name).map_err(refused)?;
    Ok(Reply::json(&DescribedSource {
        arn: event_source_arn(region, &source.name),
        name: source.name.clone(),
    }))
}

/// A source serves exactly one account, so the one page always holds
/// everything and no `NextToken` is ever issued; one sent in is refused.
fn list_accounts(sources: &mut Sources, body: &[u8]) -> Result<Reply, Reply> {
    let request: ListAccountsRequest = read(body)?;
    let name = required(request.event_source_name, "eventSourceName")?;
    check_name(&name).map_err(invalid)?;
    if request
        .limit
        .is_some_and(|l| !(1..=MAX_LIST_LIMIT).contains(&l))
    {
        return Err(invalid(
            "Value at 'limit' failed to satisfy constraint: Member must have value \
             between 1 and 100"
                .to_string(),
        ));
    }
    if request.next_token.is_some() {
        return Err(invalid("The NextToken is not valid.".to_string()));
    }
    let source = sources.get(&name).map_err(refused)?;
    Ok(Reply::json(&SourceAccounts {
        partner_event_source_accounts: vec![SourceAccount {
            account: source.account.clone(),
            creation_time: source.creation_time,
            expiration_time: source.expiration_time,
            state: source.state.as_str(),
        }],
        next_token: None,
    }))
}

fn delete(sources: &mut Sources, body: &[u8]) -> Result<Reply, Reply> {
    let request: NameAndAccount = read(body)?;
    let name = required(request.name, "name")?;
    let account = required(request.account, "account")?;
    check_name(&name).map_err(invalid)?;
    check_account(&account).map_err(invalid)?;
    sources.delete(&name, &account).map_err(refused)?;
    Ok(Reply::json(&serde_json::json!({})))
}

fn control(
    sources: &mut Sources,
    body: &[u8],
    step: impl FnOnce(&mut Sources, &str) -> Result<(), SourceError>,
) -> Result<Reply, Reply> {
    let request: NameOnly = read(body)?;
    let name = required(request.name, "name")?;
    step(sources, &name).map_err(refused)?;
    controlled(sources, &name)
}

fn set_state(sources: &mut Sources, body: &[u8], now: u64) -> Result<Reply, Reply> {
    let request: NameOnly = read(body)?;
    let name = required(request.name, "name")?;
    let state = required(request.state, "state")?;
    let state = SourceState::from_wire(&state)
        .ok_or_else(|| invalid("State must be one of PENDING, ACTIVE, DELETED.".to_string()))?;
    sources.set_state(&name, state, now).map_err(refused)?;
    controlled(sources, &name)
}

fn controlled(sources: &Sources, name: &str) -> Result<Reply, Reply> {
    let source = sources.get(name).map_err(refused)?;
    Ok(Reply::json(&ControlledSource {
        name: source.name.clone(),
        state: source.state.as_str(),
    }))
}

fn read<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    serde_json::from_slice(body).map_err(|_| {
        Reply::error(
            400,
            SERIALIZATION_EXCEPTION,
            "The request body is not valid JSON for this operation.",
        )
    })
}

fn required(value: Option<String>, field: &str) -> Result<String, Reply> {
    value.ok_or_else(|| {
        invalid(format!(
            "Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ))
    })
}

fn invalid(reason: String) -> Reply {
    Reply::error(
        400,
        VALIDATION_EXCEPTION,
        format!("1 validation error detected: {reason}"),
    )
}

fn refused(error: SourceError) -> Reply {
    let error_type = match &error {
        SourceError::NotFound { .. } => RESOURCE_NOT_FOUND_EXCEPTION,
        SourceError::AlreadyExists { .. } => RESOURCE_ALREADY_EXISTS_EXCEPTION,
        SourceError::Deleted { .. } | SourceError::NoEventBus { .. } => INVALID_STATE_EXCEPTION,
        SourceError::Invalid(_) => VALIDATION_EXCEPTION,
    };
    Reply::error(
        400,
        error_type,
        format!("{}.", capitalized(&error.to_string())),
    )
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "aws.partner/example.com/acme/billing";

    fn call(sources: &mut Sources, target: &str, body: serde_json::Value) -> Reply {
        let body = serde_json::to_vec(&body).unwrap();
        answer(sources, target, "eu-west-1", &body, 1_000).expect("a known target")
    }

    fn json(reply: Reply) -> serde_json::Value {
        match reply {
            Reply::Json(v) => v,
            other => panic!("expected a 200, got {other:?}"),
        }
    }

    fn error(reply: &Reply) -> (u16, &str, &str) {
        match reply {
            Reply::Error {
                status,
                error_type,
                message,
            } => (*status, error_type, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn the_partner_operations_answer_in_the_aws_shapes() {
        let mut sources = Sources::default();
        let created = call(
            &mut sources,
            TARGET_CREATE_PARTNER_EVENT_SOURCE,
            serde_json::json!({"Name": NAME, "Account": "123456789012"}),
        );
        assert_eq!(
            json(created),
            serde_json::json!({"EventSourceArn": format!("arn:aws:events:eu-west-1::event-source/{NAME}")})
        );
        assert_eq!(
            json(call(
                &mut sources,
                TARGET_DESCRIBE_PARTNER_EVENT_SOURCE,
                serde_json::json!({"Name": NAME})
            )),
            serde_json::json!({"Arn": format!("arn:aws:events:eu-west-1::event-source/{NAME}"), "Name": NAME})
        );
        let list = || serde_json::json!({"EventSourceName": NAME, "Limit": 10});
        assert_eq!(
            json(call(
                &mut sources,
                TARGET_LIST_PARTNER_EVENT_SOURCE_ACCOUNTS,
                list()
            )),
            serde_json::json!({"PartnerEventSourceAccounts": [{"Account": "123456789012",
                "CreationTime": 1_000, "ExpirationTime": 1_000 + 7_776_000, "State": "PENDING"}]})
        );
        assert_eq!(
            json(call(
                &mut sources,
                TARGET_CONTROL_ASSOCIATE_SOURCE,
                serde_json::json!({"Name": NAME})
            )),
            serde_json::json!({"Name": NAME, "State": "ACTIVE"})
        );
        assert_eq!(
            json(call(
                &mut sources,
                TARGET_DELETE_PARTNER_EVENT_SOURCE,
                serde_json::json!({"Name": NAME, "Account": "123456789012"})
            )),
            serde_json::json!({})
        );
        assert_eq!(
            json(call(
                &mut sources,
                TARGET_LIST_PARTNER_EVENT_SOURCE_ACCOUNTS,
                list()
            )),
            serde_json::json!({"PartnerEventSourceAccounts": [{"Account": "123456789012",
                "CreationTime": 1_000, "State": "DELETED"}]})
        );
    }

    #[test]
    fn refusals_have_their_aws_types() {
        let mut sources = Sources::default();
        let create = |account: &str| serde_json::json!({"Name": NAME, "Account": account});
        let cases = [
            (
                TARGET_CREATE_PARTNER_EVENT_SOURCE,
                serde_json::json!({"Name": "bad/name", "Account": "123456789012"}),
                VALIDATION_EXCEPTION,
            ),
            (
                TARGET_CREATE_PARTNER_EVENT_SOURCE,
                create("1234"),
                VALIDATION_EXCEPTION,
            ),
            (
                TARGET_CREATE_PARTNER_EVENT_SOURCE,
                serde_json::json!({"Name": NAME}),
                VALIDATION_EXCEPTION,
            ),
            (
                TARGET_DESCRIBE_PARTNER_EVENT_SOURCE,
                serde_json::json!({"Name": NAME}),
                RESOURCE_NOT_FOUND_EXCEPTION,
            ),
            (
                TARGET_LIST_PARTNER_EVENT_SOURCE_ACCOUNTS,
                serde_json::json!({"EventSourceName": NAME}),
                RESOURCE_NOT_FOUND_EXCEPTION,
            ),
            (
                TARGET_DELETE_PARTNER_EVENT_SOURCE,
                create("123456789012"),
                RESOURCE_NOT_FOUND_EXCEPTION,
            ),
            (
                TARGET_CONTROL_ASSOCIATE_SOURCE,
                serde_json::json!({"Name": NAME}),
                RESOURCE_NOT_FOUND_EXCEPTION,
            ),
        ];
        for (target, body, expected) in cases {
            let reply = call(&mut sources, target, body.clone());
            assert_eq!(error(&reply).0, 400, "{target} {body}");
            assert_eq!(error(&reply).1, expected, "{target} {body}");
        }

        json(call(
            &mut sources,
            TARGET_CREATE_PARTNER_EVENT_SOURCE,
            create("123456789012"),
        ));
        let again = call(
            &mut sources,
            TARGET_CREATE_PARTNER_EVENT_SOURCE,
            create("123456789012"),
        );
        assert_eq!(
            error(&again),
            (
                400,
                RESOURCE_ALREADY_EXISTS_EXCEPTION,
                &*format!("Event source {NAME} already exists.")
            )
        );
        let bus = call(
            &mut sources,
            TARGET_CONTROL_DELETE_EVENT_BUS,
            serde_json::json!({"Name": NAME}),
        );
        assert_eq!(error(&bus).1, INVALID_STATE_EXCEPTION);
        for limit in [0, 101] {
            let reply = call(
                &mut sources,
                TARGET_LIST_PARTNER_EVENT_SOURCE_ACCOUNTS,
                serde_json::json!({"EventSourceName": NAME, "Limit": limit}),
            );
            assert_eq!(error(&reply).1, VALIDATION_EXCEPTION);
        }
        let token = call(
            &mut sources,
            TARGET_LIST_PARTNER_EVENT_SOURCE_ACCOUNTS,
            serde_json::json!({"EventSourceName": NAME, "NextToken": "x"}),
        );
        assert_eq!(error(&token).1, VALIDATION_EXCEPTION);
        let state = call(
            &mut sources,
            TARGET_CONTROL_SET_SOURCE_STATE,
            serde_json::json!({"Name": NAME, "State": "GONE"}),
        );
        assert_eq!(error(&state).1, VALIDATION_EXCEPTION);
        assert_eq!(
            json(call(
                &mut sources,
                TARGET_CONTROL_SET_SOURCE_STATE,
                serde_json::json!({"Name": NAME, "State": "DELETED"})
            )),
            serde_json::json!({"Name": NAME, "State": "DELETED"})
        );

        let garbage = answer(
            &mut sources,
            TARGET_DESCRIBE_PARTNER_EVENT_SOURCE,
            "r",
            b"{",
            0,
        );
        assert_eq!(error(&garbage.unwrap()).1, SERIALIZATION_EXCEPTION);
        assert_eq!(
            answer(&mut sources, "AWSEvents.ListRules", "r", b"{}", 0),
            None
        );
    }
}
