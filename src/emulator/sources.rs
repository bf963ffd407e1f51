//! Partner event sources as the emulator keeps them: created by the partner
//! (`CreatePartnerEventSource`), activated when the customer creates an event
//! bus for them, deleted by the partner. Pure data with an explicit clock
//! (`now`, epoch seconds), so the rules are tested without a server.
//!
//! The emulator keeps one namespace of sources for every region: the region
//! of a request only shapes the ARNs in its answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::validate::{is_partner_source, MAX_SOURCE_CHARS};

/// How long a source waits for its customer to create an event bus, from
/// its creation (or from the deletion of its bus): 90 days, as AWS documents.
/// Reported as `ExpirationTime`, not enforced.
pub const PENDING_EXPIRY_SECS: u64 = 90 * 24 * 60 * 60;

/// The region of a request whose signature names none.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The state of a partner event source, as `ListPartnerEventSourceAccounts`
/// reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SourceState {
    /// Created; the customer has no event bus for it (yet, or any more).
    Pending,
    /// The customer has an event bus for it: events are delivered.
    Active,
    /// Deleted by the partner.
    Deleted,
}

impl SourceState {
    /// The name on the wire: `PENDING`, `ACTIVE`, `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Active => "ACTIVE",
            Self::Deleted => "DELETED",
        }
    }

    /// Parses the name on the wire.
    pub fn from_wire(name: &str) -> Option<Self> {
        [Self::Pending, Self::Active, Self::Deleted]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// A partner event source the emulator knows, as the handle reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartnerSource {
    pub name: String,
    /// The one customer AWS account the source serves.
    pub account: String,
    pub state: SourceState,
    /// Epoch seconds.
    pub creation_time: u64,
    /// Epoch seconds; only while [`SourceState::Pending`].
    pub expiration_time: Option<u64>,
}

/// A source the emulator starts with (see `EmulatorConfig::sources`), e.g.
/// the demo tenant's, already `ACTIVE`. In TOML:
/// `{ name = "aws.partner/example.com/demo/billing", account = "123456789012", state = "ACTIVE" }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSource {
    pub name: String,
    pub account: String,
    pub state: SourceState,
}

impl SeedSource {
    pub fn new(name: impl Into<String>, account: impl Into<String>, state: SourceState) -> Self {
        Self {
            name: name.into(),
            account: account.into(),
            state,
        }
    }
}

/// Why a lifecycle step was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("event source {name} does not exist")]
    NotFound { name: String },
    #[error("event source {name} already exists")]
    AlreadyExists { name: String },
    #[error("event source {name} has been deleted")]
    Deleted { name: String },
    #[error("event source {name} has no event bus")]
    NoEventBus { name: String },
    #[error("{0}")]
    Invalid(String),
}

/// Whether `account` is an AWS account id: 12 digits.
pub fn is_account_id(account: &str) -> bool {
    account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
}

/// Checks a source name: the partner pattern and at most 256 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.chars().count() > MAX_SOURCE_CHARS {
        return Err(
            "Value at 'name' failed to satisfy constraint: Member must have \
                    length less than or equal to 256"
                .to_string(),
        );
    }
    if !is_partner_source(name) {
        return Err(
            "Value at 'name' failed to satisfy constraint: Member must satisfy \
                    regular expression pattern: aws\\.partner(/[\\.\\-_A-Za-z0-9]+){2,}"
                .to_string(),
        );
    }
    Ok(())
}

/// Checks an account id.
pub fn check_account(account: &str) -> Result<(), String> {
    if is_account_id(account) {
        Ok(())
    } else {
        Err(
            "Value at 'account' failed to satisfy constraint: Member must satisfy \
             regular expression pattern: \\d{12}"
                .to_string(),
        )
    }
}

/// `arn:aws:events:<region>::event-source/<name>`.
pub fn event_source_arn(region: &str, name: &str) -> String {
    format!("arn:aws:events:{region}::event-source/{name}")
}

/// The sources the emulator knows, by name.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    by_name: BTreeMap<String, PartnerSource>,
}

impl Sources {
    /// Adds the sources an emulator starts with, all created `now`.
    pub fn seed(&mut self, seeds: &[SeedSource], now: u64) -> Result<(), SourceError> {
        for seed in seeds {
            check_name(&seed.name)
                .and_then(|()| check_account(&seed.account))
                .map_err(|reason| {
                    SourceError::Invalid(format!("seed source {}: {reason}", seed.name))
                })?;
            if self.by_name.contains_key(&seed.name) {
                return Err(SourceError::AlreadyExists {
                    name: seed.name.clone(),
                });
            }
            self.create(&seed.name, &seed.account, now)?;
            self.set_state(&seed.name, seed.state, now)?;
        }
        Ok(())
    }

    /// Creates a `PENDING` source. A name in use fails, unless its source
    /// was deleted: it is then created afresh (an emulator choice; AWS's
    /// rule for reusing a deleted name is not documented).
    pub fn create(
        &mut self,
        name: &str,
        account: &str,
        now: u64,
    ) -> Result<&PartnerSource, SourceError> {
        if self
            .by_name
            .get(name)
            .is_some_and(|s| s.state != SourceState::Deleted)
        {
            return Err(SourceError::AlreadyExists { name: name.into() });
        }
        let source = PartnerSource {
            name: name.to_string(),
            account: account.to_string(),
            state: SourceState::Pending,
            creation_time: now,
            expiration_time: Some(now.saturating_add(PENDING_EXPIRY_SECS)),
        };
        self.by_name.insert(name.to_string(), source);
        Ok(&self.by_name[name])
    }

    pub fn get(&self, name: &str) -> Result<&PartnerSource, SourceError> {
        self.by_name
            .get(name)
            .ok_or_else(|| SourceError::NotFound { name: name.into() })
    }

    /// Every source, by name.
    pub fn all(&self) -> Vec<PartnerSource> {
        self.by_name.values().cloned().collect()
    }

    /// The partner deletes the source: `DELETED`, still listed. Deleting a
    /// deleted source again succeeds; another account's source is not found.
    pub fn delete(&mut self, name: &str, account: &str) -> Result<(), SourceError> {
        match self.by_name.get_mut(name) {
            Some(source) if source.account == account => {
                source.state = SourceState::Deleted;
                source.expiration_time = None;
                Ok(())
            }
            _ => Err(SourceError::NotFound { name: name.into() }),
        }
    }

    /// The customer creates an event bus for the source: `ACTIVE`.
    pub fn associate(&mut self, name: &str, now: u64) -> Result<(), SourceError> {
        match self.get(name)?.state {
            SourceState::Deleted => Err(SourceError::Deleted { name: name.into() }),
            SourceState::Pending | SourceState::Active => {
                self.set_state(name, SourceState::Active, now)
            }
        }
    }

    /// The customer deletes its event bus: back to `PENDING`, with a new
    /// expiration.
    pub fn delete_bus(&mut self, name: &str, now: u64) -> Result<(), SourceError> {
        match self.get(name)?.state {
            SourceState::Deleted => Err(SourceError::Deleted { name: name.into() }),
            SourceState::Pending => Err(SourceError::NoEventBus { name: name.into() }),
            SourceState::Active => self.set_state(name, SourceState::Pending, now),
        }
    }

    /// Sets the state whatever it was. Entering `PENDING` starts a new
    /// expiration; other states have none.
    pub fn set_state(
        &mut self,
        name: &str,
        state: SourceState,
        now: u64,
    ) -> Result<(), SourceError> {
        let source = self
            .by_name
            .get_mut(name)
            .ok_or_else(|| SourceError::NotFound { name: name.into() })?;
        source.expiration_time = match (source.state, state) {
            (SourceState::Pending, SourceState::Pending) => source.expiration_time,
            (_, SourceState::Pending) => Some(now.saturating_add(PENDING_EXPIRY_SECS)),
            _ => None,
        };
        source.state = state;
        Ok(())
    }

    /// Whether events put for `source` reach a customer: the source is
    /// `ACTIVE`, or unknown to the emulator (so that a setup without any
    /// lifecycle calls delivers everything).
    pub fn delivers(&self, source: &str) -> bool {
        self.by_name
            .get(source)
            .is_none_or(|s| s.state == SourceState::Active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "aws.partner/example.com/acme/billing";
    const ACCOUNT: &str = "123456789012";

    #[test]
    fn a_source_goes_pending_active_pending_deleted() {
        let mut sources = Sources::default();
        let created = sources.create(NAME, ACCOUNT, 1_000).unwrap().clone();
        assert_eq!(
            created,
            PartnerSource {
                name: NAME.into(),
                account: ACCOUNT.into(),
                state: SourceState::Pending,
                creation_time: 1_000,
                expiration_time: Some(1_000 + 7_776_000),
            }
        );
        assert!(!sources.delivers(NAME));
        assert!(sources.delivers("aws.partner/example.com/other/billing"));
        assert_eq!(
            sources.create(NAME, "210987654321", 1_001),
            Err(SourceError::AlreadyExists { name: NAME.into() })
        );
        assert_eq!(
            sources.delete_bus(NAME, 1_002),
            Err(SourceError::NoEventBus { name: NAME.into() })
        );

        sources.associate(NAME, 2_000).unwrap();
        sources.associate(NAME, 2_001).unwrap();
        assert_eq!(sources.get(NAME).unwrap().state, SourceState::Active);
        assert_eq!(sources.get(NAME).unwrap().expiration_time, None);
        assert!(sources.delivers(NAME));

        sources.delete_bus(NAME, 3_000).unwrap();
        let s = sources.get(NAME).unwrap();
        assert_eq!(
            (s.state, s.expiration_time, s.creation_time),
            (
                SourceState::Pending,
                Some(3_000 + PENDING_EXPIRY_SECS),
                1_000
            )
        );
        // Staying PENDING keeps the running expiration.
        sources
            .set_state(NAME, SourceState::Pending, 4_000)
            .unwrap();
        assert_eq!(
            sources.get(NAME).unwrap().expiration_time,
            Some(3_000 + PENDING_EXPIRY_SECS)
        );

        assert_eq!(
            sources.delete(NAME, "210987654321"),
            Err(SourceError::NotFound { name: NAME.into() })
        );
        sources.delete(NAME, ACCOUNT).unwrap();
        sources.delete(NAME, ACCOUNT).unwrap();
        assert_eq!(sources.get(NAME).unwrap().state, SourceState::Deleted);
        assert!(!sources.delivers(NAME));
        assert_eq!(
            sources.associate(NAME, 5_000),
            Err(SourceError::Deleted { name: NAME.into() })
        );
        assert_eq!(
            sources.delete_bus(NAME, 5_000),
            Err(SourceError::Deleted { name: NAME.into() })
        );

        // A deleted name can be created afresh.
        let again = sources.create(NAME, "210987654321", 6_000).unwrap();
        assert_eq!(
            (again.state, again.creation_time, again.account.as_str()),
            (SourceState::Pending, 6_000, "210987654321")
        );
        assert_eq!(sources.all().len(), 1);
    }

    #[test]
    fn unknown_names_are_not_found() {
        let mut sources = Sources::default();
        let not_found = Err(SourceError::NotFound { name: NAME.into() });
        assert_eq!(sources.get(NAME).map(|_| ()), not_found);
        assert_eq!(sources.associate(NAME, 1), not_found);
        assert_eq!(sources.delete_bus(NAME, 1), not_found);
        assert_eq!(sources.delete(NAME, ACCOUNT), not_found);
        assert_eq!(sources.set_state(NAME, SourceState::Active, 1), not_found);
    }

    #[test]
    fn seeds_are_checked_and_take_their_state() {
        let mut sources = Sources::default();
        sources
            .seed(
                &[
                    SeedSource::new(NAME, ACCOUNT, SourceState::Active),
                    SeedSource::new("aws.partner/example.com/b/x", ACCOUNT, SourceState::Pending),
                ],
                10,
            )
            .unwrap();
        let states: Vec<_> = sources.all().into_iter().map(|s| s.state).collect();
        assert_eq!(states, [SourceState::Active, SourceState::Pending]);

        let bad = [SeedSource::new("my/source", ACCOUNT, SourceState::Active)];
        assert!(matches!(
            Sources::default().seed(&bad, 0),
            Err(SourceError::Invalid(m)) if m.contains("pattern")
        ));
        let bad = [SeedSource::new(NAME, "12345", SourceState::Active)];
        assert!(matches!(
            Sources::default().seed(&bad, 0),
            Err(SourceError::Invalid(m)) if m.contains("account")
        ));
        let twice = [
            SeedSource::new(NAME, ACCOUNT, SourceState::Deleted),
            SeedSource::new(NAME, ACCOUNT, SourceState::Active),
        ];
        assert!(matches!(
            Sources::default().seed(&twice, 0),
            Err(SourceError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn names_accounts_states_and_arns() {
        assert!(check_name(NAME).is_ok());
        assert!(check_name("aws.partner/a").is_err());
        assert!(check_name(&format!("aws.partner/a/{}", "b".repeat(250))).is_err());
        assert!(is_account_id("000000000000"));
        for bad in ["", "12345678901", "1234567890123", "12345678901a"] {
            assert!(!is_account_id(bad), "{bad}");
        }
        for state in [
            SourceState::Pending,
            SourceState::Active,
            SourceState::Deleted,
        ] {
            assert_eq!(SourceState::from_wire(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{}\"", state.as_str())
            );
        }
        assert_eq!(SourceState::from_wire("active"), None);
        assert_eq!(
            event_source_arn("eu-west-1", NAME),
            "arn:aws:events:eu-west-1::event-source/aws.partner/example.com/acme/billing"
        );
        let seed: SeedSource = toml::from_str(&format!(
            "name = \"{NAME}\"\naccount = \"{ACCOUNT}\"\nstate = \"ACTIVE\"\n"
        ))
        .unwrap();
        assert_eq!(seed, SeedSource::new(NAME, ACCOUNT, SourceState::Active));
    }
}
