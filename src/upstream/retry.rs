//! Retry decisions as data, and the backoff between resends.
//!
//! The SDK retries calls that fail whole; it never resends the failed
//! entries of a successful answer. That is done here: an entry whose code is
//! retryable is resent (with the other such entries, never with ones already
//! answered) after a jittered exponential backoff, while attempts remain and
//! the caller's deadline leaves room.

use std::time::Duration;

use crate::domain::outcome::{codes, is_retryable_code, Outcome};

/// Bounds on resending failed entries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per entry, the first send included.
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
    /// Resend entries whose outcome is unknown (they may then be delivered
    /// twice). Off by default.
    pub resend_unknown: bool,
}

/// What to do with one entry after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Its outcome is final: report it.
    Done,
    /// Resend it.
    Retry,
    /// It failed retryably but has used all its attempts: report it.
    Exhausted,
}

impl RetryPolicy {
    /// Decides after `attempts` sends of an entry that ended in `outcome`.
    pub fn decide(&self, outcome: &Outcome, attempts: u32) -> Decision {
        match outcome {
            // Throttling is EventBridge saying "slower", not failing: the
            // entry was not taken and the pace is lowered (adaptive
            // pacing), so it is resent, paced, until the caller's deadline
            // or the retry budget says no, however often it was throttled.
            Outcome::Failed { code, .. } if code == codes::THROTTLING => Decision::Retry,
            Outcome::Failed { code, .. }
                if is_retryable_code(code)
                    || (self.resend_unknown && code == codes::OUTCOME_UNKNOWN) =>
            {
                if attempts < self.max_attempts {
                    Decision::Retry
                } else {
                    Decision::Exhausted
                }
            }
            _ => Decision::Done,
        }
    }

    /// The wait before resend round `round` (1 for the first resend):
    /// `base * 2^(round-1)` capped at `max`, with equal jitter (half fixed,
    /// half random) so that callers throttled together do not come back
    /// together.
    pub fn backoff(&self, round: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << round.saturating_sub(1).min(20))
            .min(self.max);
        let half = exp / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            resend_unknown: false,
        }
    }

    #[test]
    fn decisions() {
        let p = policy();
        let throttled = Outcome::failed("ThrottlingException", "");
        assert_eq!(p.decide(&throttled, 1), Decision::Retry);
        // Throttled entries wait for the pace, not for a count of attempts.
        assert_eq!(p.decide(&throttled, 30), Decision::Retry);
        assert_eq!(
            p.decide(&Outcome::failed("InternalFailure", ""), 3),
            Decision::Exhausted
        );
        assert_eq!(
            p.decide(&Outcome::failed("InternalFailure", ""), 2),
            Decision::Retry
        );
        assert_eq!(
            p.decide(&Outcome::failed("MalformedDetail", ""), 1),
            Decision::Done
        );
        assert_eq!(
            p.decide(&Outcome::failed("InternalException", ""), 1),
            Decision::Retry
        );
        assert_eq!(
            p.decide(&Outcome::failed("AccessDeniedException", ""), 1),
            Decision::Done
        );
        let unknown = Outcome::failed("OutcomeUnknown", "");
        assert_eq!(p.decide(&unknown, 1), Decision::Done);
        let resend = RetryPolicy {
            resend_unknown: true,
            ..p
        };
        assert_eq!(resend.decide(&unknown, 1), Decision::Retry);
        assert_eq!(
            p.decide(
                &Outcome::Accepted {
                    event_id: "x".into()
                },
                1
            ),
            Decision::Done
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = policy();
        for _ in 0..100 {
            let b1 = p.backoff(1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100));
            let b3 = p.backoff(3);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400));
            let b9 = p.backoff(9);
            assert!(b9 >= Duration::from_millis(500) && b9 <= Duration::from_millis(1000));
        }
    }
}
