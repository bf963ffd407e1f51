//! Keys in the Redis the replicas share (cluster mode): one record per key
//! with the window as its time to live; each batch's keys are claimed in
//! one script call and settled in another (see `claim.lua`).

use std::{sync::Arc, time::Duration};

use redis::Script;

use super::{Claim, First, Keyed, Settle, Token};
use crate::{cluster::Cluster, durable::Receipt};

pub(super) struct RemoteKeys {
    cluster: Arc<Cluster>,
    claim: Script,
    settle: Script,
    window: Duration,
}

impl RemoteKeys {
    pub(super) fn new(cluster: Arc<Cluster>, window: Duration) -> Self {
        Self {
            cluster,
            claim: Script::new(include_str!("claim.lua")),
            settle: Script::new(include_str!("settle.lua")),
            window,
        }
    }

    /// None when Redis did not answer (the caller claims in memory).
    pub(super) async fn claim(&self, keyed: &[Keyed], lease: Duration) -> Option<Vec<Claim>> {
        let mut inv = self.claim.prepare_invoke();
        inv.arg(self.window.as_millis() as u64)
            .arg(lease.as_millis().max(1) as u64);
        let mut tokens = Vec::with_capacity(keyed.len());
        for k in keyed {
            // Random: tokens of every replica share one space.
            let token = fastrand::u64(1..);
            tokens.push(token);
            inv.key(self.cluster.idempotency_key(k.hash))
                .arg(format!("{:032x}", k.fingerprint))
                .arg(token)
                .arg(if k.resend_if_unknown { "1" } else { "0" });
        }
        let answers: Vec<String> = self.cluster.invoke("idempotency_claim", &inv).await?;
        if answers.len() != keyed.len() {
            tracing::warn!(
                asked = keyed.len(),
                answered = answers.len(),
                "Redis answered an idempotency claim for the wrong number of keys; handling them in memory"
            );
            return None;
        }
        Some(
            answers
                .iter()
                .zip(tokens)
                .zip(keyed)
                .map(|((a, id), k)| {
                    let token = Token {
                        id,
                        remote: true,
                        forced: false,
                        fingerprint: k.fingerprint,
                    };
                    parse(a, token)
                })
                .collect(),
        )
    }

    /// Settles keys claimed in Redis; false when Redis did not answer
    /// (they stay in flight there until their lease ends, then count as
    /// unknown).
    pub(super) async fn settle(&self, items: &[(u128, Token, Settle)]) -> bool {
        let mut inv = self.settle.prepare_invoke();
        for (hash, token, how) in items {
            let (state, rest) = match how {
                Settle::Release => ("", String::new()),
                Settle::Keep(First::Accepted { event_id, attempts }) => {
                    ("A", format!("{attempts}|{event_id}"))
                }
                Settle::Keep(First::Queued { receipt }) => ("Q", receipt.to_text()),
                Settle::Keep(First::Unknown { attempts }) => ("U", attempts.to_string()),
            };
            inv.key(self.cluster.idempotency_key(*hash))
                .arg(token.id)
                .arg(state)
                .arg(rest);
        }
        let settled: Option<u64> = self.cluster.invoke("idempotency_settle", &inv).await;
        settled.is_some()
    }
}

/// One key's answer from `claim.lua`.
fn parse(answer: &str, token: Token) -> Claim {
    match answer {
        "M" => {
            return Claim::Mine {
                token,
                forced: false,
            }
        }
        "N" => {
            return Claim::Mine {
                token: Token {
                    forced: true,
                    ..token
                },
                forced: true,
            }
        }
        "R" => return Claim::Reused,
        _ => {}
    }
    let mut parts = answer.splitn(5, '|');
    let state = parts.next().unwrap_or("");
    let rest = parts.nth(3).unwrap_or("");
    match state {
        "F" => Claim::InFlight,
        "A" => {
            let (attempts, event_id) = rest.split_once('|').unwrap_or(("0", rest));
            Claim::Seen(First::Accepted {
                event_id: event_id.into(),
                attempts: attempts.parse().unwrap_or(0),
            })
        }
        "Q" => match Receipt::parse(rest) {
            Some(receipt) => Claim::Seen(First::Queued { receipt }),
            None => Claim::Seen(First::Unknown { attempts: 0 }),
        },
        // U, or a record this version does not know: nothing is sent.
        _ => Claim::Seen(First::Unknown {
            attempts: rest.parse().unwrap_or(0),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse() {
        let t = Token {
            id: 7,
            remote: true,
            forced: false,
            fingerprint: 0xab,
        };
        assert_eq!(
            parse("M", t),
            Claim::Mine {
                token: t,
                forced: false
            }
        );
        assert_eq!(parse("R", t), Claim::Reused);
        assert_eq!(parse("F|ab|9|123|", t), Claim::InFlight);
        assert_eq!(
            parse("A|ab|9|0|2|id-1|x", t),
            Claim::Seen(First::Accepted {
                event_id: "id-1|x".into(),
                attempts: 2
            })
        );
        let r = Receipt(0xabc);
        assert_eq!(
            parse(&format!("Q|ab|9|0|{}", r.to_text()), t),
            Claim::Seen(First::Queued { receipt: r })
        );
        assert_eq!(
            parse("U|ab|9|0|3", t),
            Claim::Seen(First::Unknown { attempts: 3 })
        );
    }
}
