//! A circuit breaker per region, and a retry budget.
//!
//! When EventBridge in a region keeps failing whole calls, piling more calls
//! onto it only lengthens every caller's wait. After `failures` failed calls
//! in a row the breaker opens: calls for that region fail at once (with a
//! retry-after hint) for `open_for`. Then one probe call at a time is let
//! through; `probes` successes in a row close it, a failure opens it again.
//!
//! The retry budget keeps resends from multiplying load during an outage:
//! each first send earns `ratio` of a resend, plus a floor of `min_per_second`;
//! a resend spends one. Without budget, a failed entry is answered as it is.

use crate::sync::lock;
use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

/// Breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    pub failures: u32,
    pub open_for: Duration,
    pub probes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool, successes: u32 },
}

/// Whether a call may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allow,
    /// A probe in the half-open state: report its result.
    Probe,
    /// Open: fail fast; retry after this long.
    Reject(Duration),
}

/// One region's breaker.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Asks to send a call now.
    pub fn admit(&self) -> Admission {
        let mut s = lock(&self.state);
        match *s {
            State::Closed { .. } => Admission::Allow,
            State::Open { until } => {
                let now = Instant::now();
                if now < until {
                    Admission::Reject(until - now)
                } else {
                    *s = State::HalfOpen {
                        probing: true,
                        successes: 0,
                    };
                    Admission::Probe
                }
            }
            State::HalfOpen { probing: true, .. } => Admission::Reject(self.settings.open_for / 10),
            State::HalfOpen {
                probing: false,
                successes,
            } => {
                *s = State::HalfOpen {
                    probing: true,
                    successes,
                };
                Admission::Probe
            }
        }
    }

    /// How long until calls are let through again, while open.
    pub fn retry_after(&self) -> Option<Duration> {
        match *lock(&self.state) {
            State::Open { until } => until.checked_duration_since(Instant::now()),
            _ => None,
        }
    }

    /// Reports a call's result. Returns Some(open) when the breaker changed
    /// between open and closed, for health and metrics.
    pub fn record(&self, success: bool) -> Option<bool> {
        let mut s = lock(&self.state);
        let was_open = !matches!(*s, State::Closed { .. });
        *s = match (*s, success) {
            (State::Closed { .. }, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 >= self.settings.failures => {
                State::Open {
                    until: Instant::now() + self.settings.open_for,
                }
            }
            (State::Closed { failures }, false) => State::Closed {
                failures: failures + 1,
            },
            (State::HalfOpen { successes, .. }, true) if successes + 1 >= self.settings.probes => {
                State::Closed { failures: 0 }
            }
            (State::HalfOpen { successes, .. }, true) => State::HalfOpen {
                probing: false,
                successes: successes + 1,
            },
            (State::HalfOpen { .. }, false) => State::Open {
                until: Instant::now() + self.settings.open_for,
            },
            // A call admitted before the breaker opened: its result changes
            // nothing now.
            (open @ State::Open { .. }, _) => open,
        };
        let is_open = !matches!(*s, State::Closed { .. });
        (was_open != is_open).then_some(is_open)
    }
}

/// Bounds resends to a share of first sends (see the module docs).
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: f64,
    max_tokens: f64,
    state: Mutex<(f64, Instant)>,
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_second: f64) -> Self {
        let max_tokens = (min_per_second * 10.0).max(100.0);
        Self {
            ratio,
            min_per_second,
            max_tokens,
            state: Mutex::new((max_tokens, Instant::now())),
        }
    }

    fn refill(&self, s: &mut (f64, Instant)) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.min_per_second).min(self.max_tokens);
        s.1 = now;
    }

    /// Credits `entries` first sends.
    pub fn deposit(&self, entries: usize) {
        let mut s = lock(&self.state);
        self.refill(&mut s);
        s.0 = (s.0 + entries as f64 * self.ratio).min(self.max_tokens);
    }

    /// Spends one resend; false when the budget is exhausted.
    pub fn withdraw(&self) -> bool {
        let mut s = lock(&self.state);
        self.refill(&mut s);
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings {
            failures: 3,
            open_for: Duration::from_secs(5),
            probes: 2,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_in_a_row_and_closes_after_probes() {
        let b = breaker();
        assert_eq!(b.record(false), None);
        assert_eq!(b.record(true), None, "a success resets the count");
        assert_eq!(b.record(false), None);
        assert_eq!(b.record(false), None);
        assert_eq!(b.record(false), Some(true), "third failure in a row opens");
        assert!(matches!(b.admit(), Admission::Reject(d) if d <= Duration::from_secs(5)));
        assert!(b.retry_after().is_some());

        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.admit(), Admission::Probe);
        assert!(
            matches!(b.admit(), Admission::Reject(_)),
            "one probe at a time"
        );
        assert_eq!(b.record(true), None);
        assert_eq!(b.admit(), Admission::Probe);
        assert_eq!(b.record(true), Some(false), "closed after two good probes");
        assert_eq!(b.admit(), Admission::Allow);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_again() {
        let b = breaker();
        for _ in 0..3 {
            b.record(false);
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(b.admit(), Admission::Probe);
        assert_eq!(b.record(false), None, "still not closed");
        assert!(matches!(b.admit(), Admission::Reject(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_bounds_resends() {
        let budget = RetryBudget::new(0.1, 0.0);
        // Starts full (100), then earns 0.1 per first send.
        for _ in 0..100 {
            assert!(budget.withdraw());
        }
        assert!(!budget.withdraw());
        budget.deposit(10);
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
    }
}
