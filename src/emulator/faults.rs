//! Deterministic fault injection: rules that make the emulator fail an
//! entry or a whole call when a request carries a given `DetailType`.
//!
//! Rules are data (serde, so they can come from a file) and are armed in a
//! [`FaultBook`] that counts how often each one has fired. Random rates and a
//! seed are meant to join as further optional fields of [`FaultRule`] and
//! state in the book.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// When and how the emulator misbehaves.
///
/// A rule applies to an entry whose `DetailType` is exactly `detail_type`, or
/// to a call containing such an entry. Rules are tried in order; the first
/// one that applies and has firings left wins.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub detail_type: String,
    pub fault: Fault,
    /// How many times the rule fires (for [`Fault::EntryError`], once per
    /// entry hit); `None` fires forever.
    #[serde(default)]
    pub times: Option<u32>,
}

/// What a [`FaultRule`] does when it fires. In a file:
/// `{"kind": "call_error", "status": 500, "error_type": "InternalException", "message": "..."}`.
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
    /// nothing is recorded.
    EmptyEntries,
}

impl Fault {
    fn is_entry_fault(&self) -> bool {
        matches!(self, Self::EntryError { .. })
    }
}

/// A rule together with how many firings it has left.
#[derive(Clone, Debug)]
struct ArmedRule {
    rule: FaultRule,
    remaining: Option<u32>,
}

impl ArmedRule {
    /// Uses up one firing; false when none is left.
    fn take(&mut self) -> bool {
        match &mut self.remaining {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }
}

/// The armed rules of one emulator.
#[derive(Clone, Debug, Default)]
pub struct FaultBook {
    rules: Vec<ArmedRule>,
}

impl FaultBook {
    pub fn new(rules: Vec<FaultRule>) -> Self {
        Self {
            rules: rules
                .into_iter()
                .map(|rule| ArmedRule {
                    remaining: rule.times,
                    rule,
                })
                .collect(),
        }
    }

    /// Fires the first call-level rule (anything but [`Fault::EntryError`])
    /// whose `detail_type` is among `detail_types` and that has firings left.
    pub fn fire_call<'a>(
        &mut self,
        detail_types: impl Iterator<Item = &'a str> + Clone,
    ) -> Option<Fault> {
        self.rules
            .iter_mut()
            .filter(|a| !a.rule.fault.is_entry_fault())
            .find(|a| {
                detail_types.clone().any(|d| d == a.rule.detail_type) && a.remaining != Some(0)
            })
            .and_then(|a| a.take().then(|| a.rule.fault.clone()))
    }

    /// Fires the first [`Fault::EntryError`] rule for `detail_type` that has
    /// firings left, giving its code and message.
    pub fn fire_entry(&mut self, detail_type: &str) -> Option<(String, String)> {
        let armed = self.rules.iter_mut().find(|a| {
            a.rule.fault.is_entry_fault()
                && a.rule.detail_type == detail_type
                && a.remaining != Some(0)
        })?;
        armed.take();
        match &armed.rule.fault {
            Fault::EntryError { code, message } => Some((code.clone(), message.clone())),
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
    #[error("fault file {path} is not a JSON list of fault rules: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("fault file {path}, rule {index}: status {status} is not an HTTP error (400..=599)")]
    Status {
        path: PathBuf,
        index: usize,
        status: u16,
    },
}

/// Reads fault rules from a JSON file holding a list of [`FaultRule`]s, e.g.
/// `[{"detail_type": "Flaky", "times": 1, "fault": {"kind": "entry_error",
/// "code": "ThrottlingException", "message": "Rate exceeded"}}]`.
pub fn from_file(path: &Path) -> Result<Vec<FaultRule>, FaultFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FaultFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let rules: Vec<FaultRule> =
        serde_json::from_str(&text).map_err(|source| FaultFileError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
    for (index, rule) in rules.iter().enumerate() {
        if let Fault::CallError { status, .. } | Fault::CallHtml { status } = rule.fault {
            if !(400..=599).contains(&status) {
                return Err(FaultFileError::Status {
                    path: path.to_path_buf(),
                    index,
                    status,
                });
            }
        }
    }
    Ok(rules)
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

    #[test]
    fn entry_rules_count_each_hit_and_then_step_aside() {
        let mut book = FaultBook::new(vec![throttle("A", Some(2)), throttle("B", None)]);
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
        let mut book = FaultBook::new(vec![first, throttle("A", Some(1))]);
        assert_eq!(book.fire_entry("A").unwrap().0, "First");
        assert_eq!(book.fire_entry("A").unwrap().0, "ThrottlingException");
        assert_eq!(book.fire_entry("A"), None);
    }

    #[test]
    fn call_rules_match_any_entry_and_fire_once_per_call() {
        let mut book = FaultBook::new(vec![html("H", Some(1)), throttle("H", None)]);
        assert_eq!(book.fire_call(["X", "Y"].into_iter()), None);
        assert_eq!(
            book.fire_call(["X", "H", "H"].into_iter()),
            Some(Fault::CallHtml { status: 500 })
        );
        assert_eq!(book.fire_call(["H"].into_iter()), None);
        assert!(book.fire_entry("H").is_some());
        let mut never = FaultBook::new(vec![html("H", Some(0))]);
        assert_eq!(never.fire_call(["H"].into_iter()), None);
    }

    #[test]
    fn rules_read_from_json() {
        let text = r#"[
          {"detail_type": "Flaky", "times": 1,
           "fault": {"kind": "entry_error", "code": "ThrottlingException", "message": "Rate exceeded"}},
          {"detail_type": "Boom",
           "fault": {"kind": "call_error", "status": 500, "error_type": "InternalException", "message": "oops"}},
          {"detail_type": "Html", "fault": {"kind": "call_html", "status": 502}},
          {"detail_type": "Moto", "fault": {"kind": "empty_entries"}}
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

        let typo = r#"[{"detail_type": "A", "fault": {"kind": "call_html", "stauts": 500}}]"#;
        assert!(serde_json::from_str::<Vec<FaultRule>>(typo).is_err());
        let extra = r#"[{"detail_type": "A", "fault": {"kind": "empty_entries"}, "rate": 1}]"#;
        assert!(serde_json::from_str::<Vec<FaultRule>>(extra).is_err());
    }

    #[test]
    fn from_file_reads_and_checks_statuses() {
        let dir = std::env::temp_dir();
        let good = dir.join(format!("faults-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(
            &good,
            r#"[{"detail_type": "A", "fault": {"kind": "call_html", "status": 503}}]"#,
        )
        .unwrap();
        let mut expected = html("A", None);
        expected.fault = Fault::CallHtml { status: 503 };
        assert_eq!(from_file(&good).unwrap(), vec![expected]);
        std::fs::write(
            &good,
            r#"[{"detail_type": "A", "fault": {"kind": "call_html", "status": 200}}]"#,
        )
        .unwrap();
        assert!(matches!(
            from_file(&good),
            Err(FaultFileError::Status {
                index: 0,
                status: 200,
                ..
            })
        ));
        std::fs::remove_file(&good).unwrap();
        assert!(matches!(from_file(&good), Err(FaultFileError::Read { .. })));
    }
}
