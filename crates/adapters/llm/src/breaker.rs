//! Circuit breakers: a provider that keeps failing is skipped for a while
//! instead of making every request wait for its timeout.
//!
//! Closed: calls go through; `failure_threshold` consecutive transient
//! failures open the breaker. Open: calls are refused until `open_for` has
//! passed. Half-open: exactly one probe goes through (concurrent callers are
//! refused while it is in flight); its success closes the breaker, its
//! failure opens it again. Time comes from a [`Clock`], so tests move it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use karen_domain::Clock;
use karen_domain::ports::LlmError;
use time::OffsetDateTime;

/// What a breaker currently lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Every call goes through.
    Closed,
    /// Calls are refused.
    Open,
    /// One probe may go through (or is in flight).
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed { consecutive_failures: u32 },
    Open { since: OffsetDateTime },
    HalfOpen { probe_in_flight: bool },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Bumped at every change of phase, so that a call admitted under an
    /// earlier phase cannot change the current one when it finishes late.
    generation: u64,
}

/// A circuit breaker for one provider, shared by every request to it.
pub struct CircuitBreaker {
    failure_threshold: u32,
    open_for: Duration,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker opening after `failure_threshold` (at least 1)
    /// consecutive transient failures, for `open_for`.
    pub fn new(failure_threshold: u32, open_for: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            failure_threshold: failure_threshold.max(1),
            open_for,
            clock,
            inner: Mutex::new(Inner {
                phase: Phase::Closed {
                    consecutive_failures: 0,
                },
                generation: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent even if a holder panicked: every update
        // is a single assignment.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open_period_over(&self, since: OffsetDateTime) -> bool {
        let elapsed = self.clock.now() - since;
        // A negative elapsed time (the clock went back) keeps it open.
        Duration::try_from(elapsed).is_ok_and(|elapsed| elapsed >= self.open_for)
    }

    /// The current state; an open breaker whose time is up reads as half-open.
    pub fn state(&self) -> BreakerState {
        match self.lock().phase {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { since } if self.open_period_over(since) => BreakerState::HalfOpen,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make a call: a permit to report the outcome with, or `None`
    /// when the breaker refuses the call.
    pub fn try_acquire(&self) -> Option<BreakerPermit<'_>> {
        let mut inner = self.lock();
        let probe = match inner.phase {
            Phase::Closed { .. } => false,
            Phase::Open { since } if self.open_period_over(since) => {
                inner.phase = Phase::HalfOpen {
                    probe_in_flight: true,
                };
                inner.generation += 1;
                true
            }
            Phase::HalfOpen {
                probe_in_flight: false,
            } => {
                inner.phase = Phase::HalfOpen {
                    probe_in_flight: true,
                };
                true
            }
            Phase::Open { .. } | Phase::HalfOpen { .. } => return None,
        };
        Some(BreakerPermit {
            breaker: self,
            generation: inner.generation,
            probe,
            resolved: false,
        })
    }

    fn record_success(&self, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        match inner.phase {
            Phase::Closed { .. } => {
                inner.phase = Phase::Closed {
                    consecutive_failures: 0,
                }
            }
            Phase::HalfOpen { .. } => {
                inner.phase = Phase::Closed {
                    consecutive_failures: 0,
                };
                inner.generation += 1;
            }
            Phase::Open { .. } => {}
        }
    }

    fn record_failure(&self, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        let open = match inner.phase {
            Phase::Closed {
                consecutive_failures,
            } => {
                let failures = consecutive_failures.saturating_add(1);
                inner.phase = Phase::Closed {
                    consecutive_failures: failures,
                };
                failures >= self.failure_threshold
            }
            Phase::HalfOpen { .. } => true,
            Phase::Open { .. } => false,
        };
        if open {
            inner.phase = Phase::Open {
                since: self.clock.now(),
            };
            inner.generation += 1;
        }
    }

    /// A half-open probe that ended without an outcome (its caller went
    /// away): let the next caller probe instead.
    fn release_probe(&self, generation: u64) {
        let mut inner = self.lock();
        if inner.generation == generation && matches!(inner.phase, Phase::HalfOpen { .. }) {
            inner.phase = Phase::HalfOpen {
                probe_in_flight: false,
            };
        }
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("failure_threshold", &self.failure_threshold)
            .field("open_for", &self.open_for)
            .field("state", &self.state())
            .finish()
    }
}

/// Leave to make one call; report how it went with [`BreakerPermit::record`].
#[derive(Debug)]
pub struct BreakerPermit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    probe: bool,
    resolved: bool,
}

impl BreakerPermit<'_> {
    /// Whether this call is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Reports the outcome. Only transient errors count as failures: a
    /// provider that answers "bad request" is up, and skipping it would not
    /// help the next request.
    pub fn record(mut self, outcome: Result<(), &LlmError>) {
        self.resolved = true;
        match outcome {
            Err(error) if error.is_transient() => self.breaker.record_failure(self.generation),
            _ => self.breaker.record_success(self.generation),
        }
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        if !self.resolved && self.probe {
            self.breaker.release_probe(self.generation);
        }
    }
}

/// Circuit breakers by provider name, shared across requests: every request
/// to a provider sees the same breaker.
pub struct BreakerRegistry {
    failure_threshold: u32,
    open_for: Duration,
    clock: Arc<dyn Clock>,
    breakers: Mutex<HashMap<String, Arc<CircuitBreaker>>>,
}

impl BreakerRegistry {
    /// A registry whose breakers open after `failure_threshold` consecutive
    /// transient failures, for `open_for`.
    pub fn new(failure_threshold: u32, open_for: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            failure_threshold,
            open_for,
            clock,
            breakers: Mutex::new(HashMap::new()),
        }
    }

    /// The breaker for `key`, created closed on first use.
    pub fn get(&self, key: &str) -> Arc<CircuitBreaker> {
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        let breaker = breakers.entry(key.to_owned()).or_insert_with(|| {
            Arc::new(CircuitBreaker::new(
                self.failure_threshold,
                self.open_for,
                Arc::clone(&self.clock),
            ))
        });
        Arc::clone(breaker)
    }
}

impl fmt::Debug for BreakerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("BreakerRegistry")
            .field("failure_threshold", &self.failure_threshold)
            .field("open_for", &self.open_for)
            .field("breakers", &*breakers)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use karen_domain::ManualClock;
    use time::macros::datetime;

    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(30);

    fn breaker(threshold: u32) -> (Arc<ManualClock>, CircuitBreaker) {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        (
            clock.clone(),
            CircuitBreaker::new(threshold, OPEN_FOR, clock),
        )
    }

    fn fail(breaker: &CircuitBreaker) {
        breaker
            .try_acquire()
            .unwrap()
            .record(Err(&LlmError::Timeout));
    }

    fn succeed(breaker: &CircuitBreaker) {
        breaker.try_acquire().unwrap().record(Ok(()));
    }

    #[test]
    fn opens_after_consecutive_transient_failures() {
        let (_clock, breaker) = breaker(3);
        fail(&breaker);
        fail(&breaker);
        assert_eq!(breaker.state(), BreakerState::Closed);
        fail(&breaker);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.try_acquire().is_none());
    }

    #[test]
    fn a_success_resets_the_count() {
        let (_clock, breaker) = breaker(2);
        fail(&breaker);
        succeed(&breaker);
        fail(&breaker);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn non_transient_errors_do_not_count() {
        let (_clock, breaker) = breaker(1);
        let error = LlmError::Upstream {
            status: 400,
            message: "bad".into(),
        };
        breaker.try_acquire().unwrap().record(Err(&error));
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn half_opens_after_the_open_period_and_admits_one_probe() {
        let (clock, breaker) = breaker(1);
        fail(&breaker);
        clock.advance(OPEN_FOR - Duration::from_secs(1));
        assert!(breaker.try_acquire().is_none());
        clock.advance(Duration::from_secs(1));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let probe = breaker.try_acquire().unwrap();
        assert!(probe.is_probe());
        assert!(
            breaker.try_acquire().is_none(),
            "a second caller waits for the probe"
        );
        probe.record(Ok(()));
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(!breaker.try_acquire().unwrap().is_probe());
    }

    #[test]
    fn a_failed_probe_opens_it_again_for_a_full_period() {
        let (clock, breaker) = breaker(1);
        fail(&breaker);
        clock.advance(OPEN_FOR);
        let probe = breaker.try_acquire().unwrap();
        clock.advance(Duration::from_secs(10));
        probe.record(Err(&LlmError::Connection("refused".into())));
        assert_eq!(breaker.state(), BreakerState::Open);
        clock.advance(OPEN_FOR - Duration::from_secs(1));
        assert!(breaker.try_acquire().is_none());
        clock.advance(Duration::from_secs(1));
        assert!(breaker.try_acquire().unwrap().is_probe());
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_caller_probe() {
        let (clock, breaker) = breaker(1);
        fail(&breaker);
        clock.advance(OPEN_FOR);
        drop(breaker.try_acquire().unwrap());
        let probe = breaker.try_acquire().unwrap();
        assert!(probe.is_probe());
    }

    #[test]
    fn late_results_of_calls_admitted_before_opening_are_ignored() {
        let (clock, breaker) = breaker(1);
        let slow_call = breaker.try_acquire().unwrap();
        fail(&breaker);
        assert_eq!(breaker.state(), BreakerState::Open);
        slow_call.record(Ok(()));
        assert_eq!(
            breaker.state(),
            BreakerState::Open,
            "a stale success does not close it"
        );
        clock.advance(OPEN_FOR);
        breaker.try_acquire().unwrap().record(Ok(()));
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn registry_shares_one_breaker_per_key() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let registry = BreakerRegistry::new(1, OPEN_FOR, clock);
        let first = registry.get("openai");
        fail(&first);
        assert_eq!(registry.get("openai").state(), BreakerState::Open);
        assert!(Arc::ptr_eq(&first, &registry.get("openai")));
        assert_eq!(registry.get("anthropic").state(), BreakerState::Closed);
    }
}
