//! Fault injection: rules that make the emulator fail an entry or a whole
//! `PutPartnerEvents` call, answer late, hang, drop the connection or answer
//! with a malformed result, for entries of a given `DetailType` or for every
//! entry, always or at a rate.
//!
//! Rules are data (serde, so they can come from a TOML or JSON file, see
//! [`load_fault_file`]) and are armed in a [`FaultBook`] that counts how often
//! each one has fired. Every random draw (a rate, a jitter) comes from one
//! PRNG seeded from the [`FaultPlan`]'s seed, held in the book: the same seed
//! and the same sequence of requests (in the order the emulator handles
//! them) give the same faults.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// The `detail_type` of a rule that applies to every entry and every call.
/// An empty `detail_type` means the same.
pub const EVERY_DETAIL_TYPE: &str = "*";

/// The seed used when none is given: runs are reproducible by default.
pub const DEFAULT_FAULT_SEED: u64 = 0;

/// How long a [`Fault::Hang`] holds a call before dropping the connection,
/// so that a hung call never outlives a forgotten client by more than this.
/// A hang also ends when the emulator shuts down.
pub const HANG_LIMIT: Duration = Duration::from_secs(600);

/// When and how the emulator misbehaves.
///
/// A rule applies to an entry whose `DetailType` is exactly `detail_type`, or
/// to a call containing such an entry; with `detail_type` empty or `"*"` it
/// applies to every entry and every call. Rules are tried in order; the
/// first one that applies, has firings left and (for [`Fault::AtRate`]) wins
/// its draw, fires.
///
/// In a file a rule may carry a `rate` (0.0 to 1.0), which wraps its fault in
/// [`Fault::AtRate`], and may leave out `detail_type` (every entry):
/// `{"rate": 0.1, "fault": {"kind": "entry_error", "code": "ThrottlingException", "message": "Rate exceeded"}}`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(from = "RuleSpec")]
pub struct FaultRule {
    pub detail_type: String,
    pub fault: Fault,
    /// How many times the rule fires (for an entry fault, once per entry
    /// hit; a draw lost at a rate is no firing); `None` fires forever.
    pub times: Option<u32>,
}

/// What a [`FaultRule`] does when it fires. In a file:
/// `{"kind": "call_error", "status": 500, "error_type": "InternalException", "message": "..."}`.
///
/// Three stages, each with its own rules: entry faults ([`Fault::EntryError`])
/// are tried for each entry that passed validation; the delay
/// ([`Fault::Delay`]) is tried once per call, whatever else happens; every
/// other fault is a call fault, tried once per call that passed the
/// call-level checks, and at most one fires.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// The entry fails with this code and message inside a 200 answer; the
    /// call's other entries are handled as usual.
    EntryError { code: String, message: String },
    /// The whole call fails with a JSON error body. A `status` outside
    /// 400..=599 is sent as 500.
    CallError {
        status: u16,
        error_type: String,
        message: String,
    },
    /// The whole call fails with an HTML page and no JSON (a proxy's error
    /// page, or moto's answer to an unknown source).
    CallHtml { status: u16 },
    /// A 200 with `{"FailedEntryCount":0,"Entries":[]}`, as moto answers;
    /// no event is recorded (its entries are, as received).
    EmptyEntries,
    /// The call is handled as usual (its events recorded), but the answer's
    /// `Entries` lacks the last entry's result: one fewer than sent.
    /// `FailedEntryCount` is the true count over all entries.
    ShortEntries,
    /// The answer waits `ms` plus a uniform draw from `0..=jitter_ms`
    /// milliseconds. The call is handled (and its events recorded) before
    /// the wait, so a client that gives up during it has had its events
    /// accepted. Combines with any call fault.
    Delay {
        ms: u64,
        #[serde(default)]
        jitter_ms: u64,
    },
    /// No answer: the emulator holds the call until the client gives up (or
    /// [`HANG_LIMIT`], or shutdown) and then drops the connection. With
    /// `accept`, the call is first handled as usual and its events recorded:
    /// EventBridge took them and the answer was lost.
    Hang {
        #[serde(default)]
        accept: bool,
    },
    /// The emulator reads the request and closes the TCP connection without
    /// any HTTP answer. `accept` as for [`Fault::Hang`].
    DropConnection {
        #[serde(default)]
        accept: bool,
    },
    /// `fault` fires with probability `rate` (0.0 to 1.0) each time it would
    /// otherwise apply: per entry for an entry fault, per call otherwise. In
    /// a file, written as the rule's `rate`.
    #[serde(skip_deserializing)]
    AtRate { rate: f64, fault: Box<Fault> },
}

/// Which rules are tried where; see [`Fault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Entry,
    Delay,
    Call,
}

impl Fault {
    /// The fault's kind as written in a file (`"call_error"`, ...); for
    /// [`Fault::AtRate`], the kind of the fault it wraps. Recorded in
    /// [`RecordedCall::fault`](super::RecordedCall::fault).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::EntryError { .. } => "entry_error",
            Self::CallError { .. } => "call_error",
            Self::CallHtml { .. } => "call_html",
            Self::EmptyEntries => "empty_entries",
            Self::ShortEntries => "short_entries",
            Self::Delay { .. } => "delay",
            Self::Hang { .. } => "hang",
            Self::DropConnection { .. } => "drop_connection",
            Self::AtRate { fault, .. } => fault.kind(),
        }
    }

    fn stage(&self) -> Stage {
        match self {
            Self::EntryError { .. } => Stage::Entry,
            Self::Delay { .. } => Stage::Delay,
            Self::AtRate { fault, .. } => fault.stage(),
            _ => Stage::Call,
        }
    }

    /// The fault that fires, after any draws; `None` when a draw is lost.
    fn draw(&self, rng: &mut fastrand::Rng) -> Option<Fault> {
        match self {
            Self::AtRate { rate, fault } => (rng.f64() < *rate).then(|| fault.draw(rng))?,
            Self::Delay { ms, jitter_ms } => Some(Self::Delay {
                ms: ms.saturating_add(match jitter_ms {
                    0 => 0,
                    j => rng.u64(0..=*j),
                }),
                jitter_ms: 0,
            }),
            other => Some(other.clone()),
        }
    }

    /// What makes a fault unusable: an error status outside 400..=599, a
    /// rate outside 0.0..=1.0.
    fn check(&self) -> Result<(), String> {
        match self {
            Self::CallError { status, .. } | Self::CallHtml { status }
                if !(400..=599).contains(status) =>
            {
                Err(format!("status {status} is not an HTTP error (400..=599)"))
            }
            Self::AtRate { rate, .. } if !(0.0..=1.0).contains(rate) => {
                Err(format!("rate {rate} is not between 0.0 and 1.0"))
            }
            Self::AtRate { fault, .. } => fault.check(),
            _ => Ok(()),
        }
    }
}

impl FaultRule {
    /// A rule for entries (and calls with an entry) of `detail_type`, firing
    /// every time.
    pub fn new(detail_type: impl Into<String>, fault: Fault) -> Self {
        Self {
            detail_type: detail_type.into(),
            fault,
            times: None,
        }
    }

    /// A rule for every entry and every call, firing every time.
    pub fn everywhere(fault: Fault) -> Self {
        Self::new(EVERY_DETAIL_TYPE, fault)
    }

    /// The same rule, firing only with probability `rate` each time it
    /// applies (wraps the fault in [`Fault::AtRate`]).
    pub fn at_rate(mut self, rate: f64) -> Self {
        self.fault = Fault::AtRate {
            rate,
            fault: Box::new(self.fault),
        };
        self
    }

    /// The same rule, firing at most `times` times.
    pub fn at_most(mut self, times: u32) -> Self {
        self.times = Some(times);
        self
    }

    /// Whether the rule applies to every entry and call.
    pub fn is_for_every_detail_type(&self) -> bool {
        self.detail_type.is_empty() || self.detail_type == EVERY_DETAIL_TYPE
    }

    fn applies_to(&self, detail_type: &str) -> bool {
        self.is_for_every_detail_type() || self.detail_type == detail_type
    }

    /// Checks what a file can get wrong; see [`load_fault_file`].
    pub fn check(&self) -> Result<(), String> {
        self.fault.check()
    }
}

/// A rule as written in a file: a rule-level `rate`, and `detail_type`
/// optional (`"*"` when left out).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    #[serde(default = "every_detail_type")]
    detail_type: String,
    fault: Fault,
    #[serde(default)]
    times: Option<u32>,
    #[serde(default)]
    rate: Option<f64>,
}

fn every_detail_type() -> String {
    EVERY_DETAIL_TYPE.to_string()
}

impl From<RuleSpec> for FaultRule {
    fn from(spec: RuleSpec) -> Self {
        let rule = Self {
            detail_type: spec.detail_type,
            fault: spec.fault,
            times: spec.times,
        };
        match spec.rate {
            Some(rate) => rule.at_rate(rate),
            None => rule,
        }
    }
}

/// Fault rules and the seed of their draws: what a fault file holds.
///
/// TOML:
/// ```toml
/// seed = 42
/// [[rules]]
/// rate = 0.05
/// fault = { kind = "entry_error", code = "ThrottlingException", message = "Rate exceeded" }
/// [[rules]]
/// fault = { kind = "delay", ms = 20, jitter_ms = 30 }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    /// Seed of the PRNG behind rates and jitter; [`DEFAULT_FAULT_SEED`] when
    /// left out.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub rules: Vec<FaultRule>,
}

impl FaultPlan {
    /// The plan's rules, each [checked](FaultRule::check); the error names
    /// the first bad rule's index.
    pub fn check(&self) -> Result<(), (usize, String)> {
        self.rules
            .iter()
            .enumerate()
            .try_for_each(|(index, rule)| rule.check().map_err(|reason| (index, reason)))
    }
}

/// A rule together with how many firings it has left.
#[derive(Clone, Debug)]
struct ArmedRule {
    rule: FaultRule,
    remaining: Option<u32>,
}

impl ArmedRule {
    fn new(rule: FaultRule) -> Self {
        Self {
            remaining: rule.times,
            rule,
        }
    }

    fn has_firings_left(&self) -> bool {
        self.remaining != Some(0)
    }

    /// Uses up one firing.
    fn take(&mut self) {
        if let Some(n) = &mut self.remaining {
            *n = n.saturating_sub(1);
        }
    }
}

/// The armed rules of one emulator and the PRNG of their draws.
#[derive(Clone, Debug)]
pub struct FaultBook {
    rules: Vec<ArmedRule>,
    rng: fastrand::Rng,
}

impl Default for FaultBook {
    fn default() -> Self {
        Self::new(Vec::new(), DEFAULT_FAULT_SEED)
    }
}

impl FaultBook {
    pub fn new(rules: Vec<FaultRule>, seed: u64) -> Self {
        Self {
            rules: rules.into_iter().map(ArmedRule::new).collect(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Replaces the rules (firing counts start afresh); the PRNG goes on
    /// where it was.
    pub fn set_rules(&mut self, rules: Vec<FaultRule>) {
        self.rules = rules.into_iter().map(ArmedRule::new).collect();
    }

    /// Restarts the PRNG from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = fastrand::Rng::with_seed(seed);
    }

    /// Fires the first rule of `stage` that applies to one of `detail_types`
    /// (per [`FaultRule::applies_to`]), has firings left and wins its draws.
    /// A draw is made only for a rule that otherwise applies, so the draws
    /// depend on the requests alone.
    fn fire<'a>(
        &mut self,
        stage: Stage,
        detail_types: impl Iterator<Item = &'a str> + Clone,
    ) -> Option<Fault> {
        for armed in &mut self.rules {
            if armed.rule.fault.stage() != stage
                || !armed.has_firings_left()
                || !(armed.rule.is_for_every_detail_type()
                    || detail_types.clone().any(|d| armed.rule.applies_to(d)))
            {
                continue;
            }
            if let Some(fault) = armed.rule.fault.draw(&mut self.rng) {
                armed.take();
                return Some(fault);
            }
        }
        None
    }

    /// Fires the first call-level rule (see [`Fault`]) for a call whose
    /// entries have `detail_types`.
    pub fn fire_call<'a>(
        &mut self,
        detail_types: impl Iterator<Item = &'a str> + Clone,
    ) -> Option<Fault> {
        self.fire(Stage::Call, detail_types)
    }

    /// The delay before answering a call whose entries have `detail_types`,
    /// from the first delay rule that fires, jitter drawn.
    pub fn fire_delay<'a>(
        &mut self,
        detail_types: impl Iterator<Item = &'a str> + Clone,
    ) -> Option<Duration> {
        match self.fire(Stage::Delay, detail_types)? {
            Fault::Delay { ms, .. } => Some(Duration::from_millis(ms)),
            _ => None,
        }
    }

    /// Fires the first [`Fault::EntryError`] rule for an entry of
    /// `detail_type`, giving its code and message.
    pub fn fire_entry(&mut self, detail_type: &str) -> Option<(String, String)> {
        match self.fire(Stage::Entry, std::iter::once(detail_type))? {
            Fault::EntryError { code, message } => Some((code, message)),
            _ => None,
        }
    }
}

/// Why a fault file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FaultFileError {
    #[error("cannot read fault file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fault file {path} is not a fault plan: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("fault file {path}, rule {index}: {reason}")]
    Rule {
        path: PathBuf,
        index: usize,
        reason: String,
    },
}

/// Reads a [`FaultPlan`] from a file: TOML when the name ends in `.toml`
/// (`seed = 1` and `[[rules]]` tables), JSON otherwise (either
/// `{"seed": 1, "rules": [...]}` or just the list of rules, seed 0). Every
/// rule is checked: error statuses in 400..=599, rates in 0.0..=1.0.
///
/// ```json
/// {"seed": 7, "rules": [
///   {"detail_type": "Flaky", "times": 1, "fault": {"kind": "entry_error",
///    "code": "ThrottlingException", "message": "Rate exceeded"}},
///   {"rate": 0.01, "fault": {"kind": "drop_connection", "accept": true}}
/// ]}
/// ```
pub fn load_fault_file(path: &Path) -> Result<FaultPlan, FaultFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FaultFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parse_error = |reason: String| FaultFileError::Parse {
        path: path.to_path_buf(),
        reason,
    };
    let plan = if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str::<FaultPlan>(&text).map_err(|e| parse_error(e.to_string()))?
    } else if text.trim_start().starts_with('[') {
        FaultPlan {
            seed: DEFAULT_FAULT_SEED,
            rules: serde_json::from_str(&text).map_err(|e| parse_error(e.to_string()))?,
        }
    } else {
        serde_json::from_str::<FaultPlan>(&text).map_err(|e| parse_error(e.to_string()))?
    };
    plan.check()
        .map_err(|(index, reason)| FaultFileError::Rule {
            path: path.to_path_buf(),
            index,
            reason,
        })?;
    Ok(plan)
}

/// Reads just the rules of a fault file; see [`load_fault_file`].
pub fn from_file(path: &Path) -> Result<Vec<FaultRule>, FaultFileError> {
    load_fault_file(path).map(|plan| plan.rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(detail_type: &str, times: Option<u32>) -> FaultRule {
        FaultRule {
            detail_type: detail_type.into(),
            fault: Fault::EntryError {
                code: "ThrottlingException".into(),
                message: "Rate exceeded".into(),
            },
            times,
        }
    }

    fn html(detail_type: &str, times: Option<u32>) -> FaultRule {
        FaultRule {
            detail_type: detail_type.into(),
            fault: Fault::CallHtml { status: 500 },
            times,
        }
    }

    fn book(rules: Vec<FaultRule>) -> FaultBook {
        FaultBook::new(rules, DEFAULT_FAULT_SEED)
    }

    #[test]
    fn entry_rules_count_each_hit_and_then_step_aside() {
        let mut book = book(vec![throttle("A", Some(2)), throttle("B", None)]);
        let hit = |book: &mut FaultBook, d| book.fire_entry(d).map(|(c, _)| c);
        assert_eq!(hit(&mut book, "X"), None);
        assert_eq!(hit(&mut book, "A").as_deref(), Some("ThrottlingException"));
        assert_eq!(hit(&mut book, "A").as_deref(), Some("ThrottlingException"));
        assert_eq!(hit(&mut book, "A"), None);
        for _ in 0..5 {
            assert!(hit(&mut book, "B").is_some());
        }
        assert_eq!(
            book.fire_call(["A", "B"].into_iter()),
            None,
            "entry rules are not call rules"
        );
    }

    #[test]
    fn an_exhausted_rule_lets_the_next_one_apply() {
        let mut first = throttle("A", Some(1));
        first.fault = Fault::EntryError {
            code: "First".into(),
            message: String::new(),
        };
        let mut book = book(vec![first, throttle("A", Some(1))]);
        assert_eq!(book.fire_entry("A").unwrap().0, "First");
        assert_eq!(book.fire_entry("A").unwrap().0, "ThrottlingException");
        assert_eq!(book.fire_entry("A"), None);
    }

    #[test]
    fn call_rules_match_any_entry_and_fire_once_per_call() {
        let mut book = book(vec![html("H", Some(1)), throttle("H", None)]);
        assert_eq!(book.fire_call(["X", "Y"].into_iter()), None);
        assert_eq!(
            book.fire_call(["X", "H", "H"].into_iter()),
            Some(Fault::CallHtml { status: 500 })
        );
        assert_eq!(book.fire_call(["H"].into_iter()), None);
        assert!(book.fire_entry("H").is_some());
        let mut never = FaultBook::new(vec![html("H", Some(0))], 1);
        assert_eq!(never.fire_call(["H"].into_iter()), None);
    }

    #[test]
    fn wildcard_rules_apply_to_everything_even_calls_without_detail_types() {
        for wildcard in ["*", ""] {
            let mut book = book(vec![html(wildcard, Some(1)), throttle(wildcard, Some(1))]);
            assert_eq!(
                book.fire_call(std::iter::empty()),
                Some(Fault::CallHtml { status: 500 })
            );
            assert!(book.fire_entry("Anything").is_some());
            assert_eq!(book.fire_entry("Anything"), None);
        }
        assert!(FaultRule::everywhere(Fault::EmptyEntries).is_for_every_detail_type());
        assert!(!FaultRule::new("A", Fault::EmptyEntries).is_for_every_detail_type());
    }

    #[test]
    fn a_rate_fires_about_that_often_and_the_same_way_for_the_same_seed() {
        let rules = vec![throttle("*", None).at_rate(0.25)];
        let run = |seed| {
            let mut book = FaultBook::new(rules.clone(), seed);
            (0..4000)
                .map(|_| book.fire_entry("A").is_some())
                .collect::<Vec<bool>>()
        };
        let first = run(7);
        assert_eq!(first, run(7));
        assert_ne!(first, run(8));
        let fired = first.iter().filter(|f| **f).count();
        assert!((850..=1150).contains(&fired), "{fired} of 4000 at 0.25");
        let mut never = FaultBook::new(vec![throttle("*", None).at_rate(0.0)], 1);
        let mut always = FaultBook::new(vec![throttle("*", None).at_rate(1.0)], 1);
        for _ in 0..100 {
            assert_eq!(never.fire_entry("A"), None);
            assert!(always.fire_entry("A").is_some());
        }
    }

    #[test]
    fn a_lost_draw_uses_no_firing_and_lets_later_rules_apply() {
        // Rate 0 never wins, so the `times: 1` budget is still there when
        // the rate is raised, and the next rule answers meanwhile.
        let mut book = book(vec![
            throttle("A", Some(1)).at_rate(0.0),
            html("A", None),
            html("A", None),
        ]);
        for _ in 0..10 {
            assert_eq!(book.fire_entry("A"), None);
        }
        assert_eq!(
            book.fire_call(["A"].into_iter()),
            Some(Fault::CallHtml { status: 500 })
        );
        book.set_rules(vec![throttle("A", Some(1)).at_rate(1.0)]);
        assert!(book.fire_entry("A").is_some());
        assert_eq!(book.fire_entry("A"), None);
    }

    #[test]
    fn delays_are_their_own_stage_with_jitter_drawn_in_range() {
        let mut book = book(vec![
            FaultRule::everywhere(Fault::Delay {
                ms: 10,
                jitter_ms: 5,
            }),
            html("*", None),
        ]);
        let delays: Vec<u128> = (0..200)
            .map(|_| book.fire_delay(["A"].into_iter()).unwrap().as_millis())
            .collect();
        assert!(delays.iter().all(|d| (10..=15).contains(d)), "{delays:?}");
        assert!(delays.contains(&10) && delays.contains(&15), "{delays:?}");
        assert_eq!(
            book.fire_call(["A"].into_iter()),
            Some(Fault::CallHtml { status: 500 }),
            "a delay rule is no call rule"
        );
        let mut fixed = FaultBook::new(
            vec![FaultRule::new(
                "Slow",
                Fault::Delay {
                    ms: 50,
                    jitter_ms: 0,
                },
            )],
            3,
        );
        assert_eq!(fixed.fire_delay(["Fast"].into_iter()), None);
        assert_eq!(
            fixed.fire_delay(["Fast", "Slow"].into_iter()),
            Some(Duration::from_millis(50))
        );
    }

    #[test]
    fn kinds_name_the_wrapped_fault() {
        let rule = FaultRule::everywhere(Fault::DropConnection { accept: true }).at_rate(0.5);
        assert_eq!(rule.fault.kind(), "drop_connection");
        assert_eq!(Fault::ShortEntries.kind(), "short_entries");
        assert_eq!(Fault::Hang { accept: false }.kind(), "hang");
    }

    #[test]
    fn rules_read_from_json() {
        let text = r#"[
          {"detail_type": "Flaky", "times": 1,
           "fault": {"kind": "entry_error", "code": "ThrottlingException", "message": "Rate exceeded"}},
          {"detail_type": "Boom",
           "fault": {"kind": "call_error", "status": 500, "error_type": "InternalException", "message": "oops"}},
          {"detail_type": "Html", "fault": {"kind": "call_html", "status": 502}},
          {"detail_type": "Moto", "fault": {"kind": "empty_entries"}},
          {"rate": 0.5, "fault": {"kind": "hang"}},
          {"detail_type": "*", "fault": {"kind": "drop_connection", "accept": true}},
          {"fault": {"kind": "delay", "ms": 5}},
          {"detail_type": "Short", "fault": {"kind": "short_entries"}}
        ]"#;
        let rules: Vec<FaultRule> = serde_json::from_str(text).unwrap();
        assert_eq!(rules[0], throttle("Flaky", Some(1)));
        assert_eq!(
            rules[1].fault,
            Fault::CallError {
                status: 500,
                error_type: "InternalException".into(),
                message: "oops".into()
            }
        );
        assert_eq!(rules[1].times, None);
        assert_eq!(rules[2].fault, Fault::CallHtml { status: 502 });
        assert_eq!(rules[3].fault, Fault::EmptyEntries);
        assert_eq!(
            rules[4],
            FaultRule::everywhere(Fault::Hang { accept: false }).at_rate(0.5)
        );
        assert_eq!(
            rules[5],
            FaultRule::everywhere(Fault::DropConnection { accept: true })
        );
        assert_eq!(
            rules[6].fault,
            Fault::Delay {
                ms: 5,
                jitter_ms: 0
            }
        );
        assert_eq!(rules[7].fault, Fault::ShortEntries);

        let typo = r#"[{"detail_type": "A", "fault": {"kind": "call_html", "stauts": 500}}]"#;
        assert!(serde_json::from_str::<Vec<FaultRule>>(typo).is_err());
        let extra = r#"[{"detail_type": "A", "fault": {"kind": "empty_entries"}, "rat": 1}]"#;
        assert!(serde_json::from_str::<Vec<FaultRule>>(extra).is_err());
        let nested = r#"[{"fault": {"kind": "at_rate", "rate": 1, "fault": {"kind": "hang"}}}]"#;
        assert!(
            serde_json::from_str::<Vec<FaultRule>>(nested).is_err(),
            "a rate is written on the rule"
        );
    }

    fn temp_file(ext: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("faults-{}.{ext}", uuid::Uuid::new_v4()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn from_file_reads_and_checks_statuses() {
        let good = temp_file(
            "json",
            r#"[{"detail_type": "A", "fault": {"kind": "call_html", "status": 503}}]"#,
        );
        let mut expected = html("A", None);
        expected.fault = Fault::CallHtml { status: 503 };
        assert_eq!(from_file(&good).unwrap(), vec![expected]);
        std::fs::write(
            &good,
            r#"[{"detail_type": "A", "fault": {"kind": "call_html", "status": 200}}]"#,
        )
        .unwrap();
        let err = from_file(&good).unwrap_err();
        assert!(
            matches!(&err, FaultFileError::Rule { index: 0, reason, .. } if reason.contains("status 200")),
            "{err}"
        );
        std::fs::remove_file(&good).unwrap();
        assert!(matches!(from_file(&good), Err(FaultFileError::Read { .. })));
    }

    #[test]
    fn a_plan_reads_from_toml_and_json_objects() {
        let toml_text = r#"
seed = 42
[[rules]]
rate = 0.05
fault = { kind = "entry_error", code = "ThrottlingException", message = "Rate exceeded" }
[[rules]]
detail_type = "Slow"
times = 3
fault = { kind = "delay", ms = 20, jitter_ms = 30 }
"#;
        let expected = FaultPlan {
            seed: 42,
            rules: vec![
                throttle("*", None).at_rate(0.05),
                FaultRule::new(
                    "Slow",
                    Fault::Delay {
                        ms: 20,
                        jitter_ms: 30,
                    },
                )
                .at_most(3),
            ],
        };
        let path = temp_file("toml", toml_text);
        assert_eq!(load_fault_file(&path).unwrap(), expected);
        std::fs::remove_file(&path).unwrap();

        let json_text = r#"{"seed": 42, "rules": [
            {"rate": 0.05, "fault": {"kind": "entry_error", "code": "ThrottlingException", "message": "Rate exceeded"}},
            {"detail_type": "Slow", "times": 3, "fault": {"kind": "delay", "ms": 20, "jitter_ms": 30}}]}"#;
        let path = temp_file("json", json_text);
        assert_eq!(load_fault_file(&path).unwrap(), expected);
        std::fs::remove_file(&path).unwrap();

        let path = temp_file("toml", "rules = []\n");
        assert_eq!(load_fault_file(&path).unwrap(), FaultPlan::default());
        std::fs::write(&path, "sead = 1\n").unwrap();
        assert!(matches!(
            load_fault_file(&path),
            Err(FaultFileError::Parse { .. })
        ));
        std::fs::write(
            &path,
            "[[rules]]\nfault = { kind = \"call_html\", status = 500 }\n[[rules]]\nrate = 1.5\nfault = { kind = \"hang\" }\n",
        )
        .unwrap();
        let err = load_fault_file(&path).unwrap_err();
        assert!(
            matches!(&err, FaultFileError::Rule { index: 1, reason, .. } if reason.contains("rate 1.5")),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
