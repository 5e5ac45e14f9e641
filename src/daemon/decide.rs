//! What the scheduler does after a job's run ends — log it, retry it, wait for the next
//! slot or alert — as one pure function of the run's outcome, the attempt, the retry
//! settings, the job's next slot and `now`. Nothing here reads the clock.

use chrono::{DateTime, Duration, Utc};

use super::run::Finished;
use super::state::Outcome;
use crate::config::NotifyEvent;

/// The longest wait between retries, in seconds.
const MAX_BACKOFF: i64 = 3600;

/// `daemon.retries` and `daemon.retry_backoff`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub retries: u32,
    pub backoff: Duration,
}

/// The decision after a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterRun {
    Succeeded,
    /// Another process held the lock; nothing to alert.
    Skipped,
    /// Interrupted (shutdown); nothing of it was committed.
    Aborted,
    /// A transient failure with attempts left: run again at `at` as attempt `attempt`.
    Retry {
        at: DateTime<Utc>,
        attempt: u32,
    },
    /// A transient failure whose retry would come after the job's next regular slot, which
    /// then serves as the retry; not yet alerted.
    WaitForNextSlot,
    /// A failure to alert, as this event.
    Alert(NotifyEvent),
}

/// Decides what follows a run that ended as `finished`, which was attempt `attempt`, the
/// job having failed `consecutive_failures` times in a row (this run included).
pub fn after_run(
    finished: &Finished,
    attempt: u32,
    consecutive_failures: u32,
    policy: &RetryPolicy,
    stopping: bool,
    next_slot: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> AfterRun {
    match finished.outcome {
        Outcome::Success => return AfterRun::Succeeded,
        Outcome::Skipped => return AfterRun::Skipped,
        Outcome::Aborted => return AfterRun::Aborted,
        Outcome::Failure => {}
    }
    if finished.transient && !stopping {
        let at = now + backoff(policy.backoff, attempt);
        let next_first = next_slot.is_some_and(|n| n <= at);
        if attempt <= policy.retries && !next_first {
            return AfterRun::Retry {
                at,
                attempt: attempt + 1,
            };
        }
        if next_first && consecutive_failures <= policy.retries {
            return AfterRun::WaitForNextSlot;
        }
    }
    AfterRun::Alert(if finished.verify_failed {
        NotifyEvent::VerifyFailure
    } else if finished.drill_failed {
        NotifyEvent::DrillFailure
    } else {
        NotifyEvent::Failure
    })
}

/// The wait before retry `attempt + 1`: `base`, doubled per attempt, at most an hour.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1i64 << attempt.saturating_sub(1).min(20);
    let seconds = base
        .num_seconds()
        .max(1)
        .saturating_mul(factor)
        .min(MAX_BACKOFF);
    Duration::seconds(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn ended(outcome: Outcome, transient: bool) -> Finished {
        Finished {
            outcome,
            exit_code: Some(4),
            transient,
            message: None,
            verify_failed: false,
            drill_failed: false,
            started: at("2026-12-01T00:00:00Z"),
            seconds: 1.0,
        }
    }

    const POLICY: RetryPolicy = RetryPolicy {
        retries: 2,
        backoff: Duration::seconds(30),
    };

    #[test]
    fn backoff_doubles_from_the_base_and_stops_at_an_hour() {
        let base = Duration::seconds(30);
        let waits: Vec<i64> = (1..=5).map(|a| backoff(base, a).num_seconds()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480]);
        assert_eq!(backoff(base, 40).num_seconds(), 3600);
        assert_eq!(backoff(Duration::zero(), 1).num_seconds(), 1);
    }

    #[test]
    fn success_skip_and_abort_are_never_retried_or_alerted_as_failures() {
        let now = at("2026-12-01T00:00:10Z");
        for (outcome, expected) in [
            (Outcome::Success, AfterRun::Succeeded),
            (Outcome::Skipped, AfterRun::Skipped),
            (Outcome::Aborted, AfterRun::Aborted),
        ] {
            let decision = after_run(&ended(outcome, true), 1, 0, &POLICY, false, None, now);
            assert_eq!(decision, expected);
        }
    }

    #[test]
    fn a_transient_failure_is_retried_with_backoff_then_alerted_after_the_last_attempt() {
        let now = at("2026-12-01T00:00:10Z");
        let next_slot = Some(at("2026-12-01T06:00:00Z"));
        let failed = ended(Outcome::Failure, true);
        assert_eq!(
            after_run(&failed, 1, 1, &POLICY, false, next_slot, now),
            AfterRun::Retry {
                at: at("2026-12-01T00:00:40Z"),
                attempt: 2
            }
        );
        assert_eq!(
            after_run(&failed, 2, 2, &POLICY, false, next_slot, now),
            AfterRun::Retry {
                at: at("2026-12-01T00:01:10Z"),
                attempt: 3
            }
        );
        assert_eq!(
            after_run(&failed, 3, 3, &POLICY, false, next_slot, now),
            AfterRun::Alert(NotifyEvent::Failure)
        );
    }

    #[test]
    fn a_permanent_failure_or_one_during_shutdown_is_alerted_at_once() {
        let now = at("2026-12-01T00:00:10Z");
        let permanent = ended(Outcome::Failure, false);
        assert_eq!(
            after_run(&permanent, 1, 1, &POLICY, false, None, now),
            AfterRun::Alert(NotifyEvent::Failure)
        );
        let transient = ended(Outcome::Failure, true);
        assert_eq!(
            after_run(&transient, 1, 1, &POLICY, true, None, now),
            AfterRun::Alert(NotifyEvent::Failure)
        );
        let mut verify = permanent.clone();
        verify.verify_failed = true;
        assert_eq!(
            after_run(&verify, 1, 1, &POLICY, false, None, now),
            AfterRun::Alert(NotifyEvent::VerifyFailure)
        );
        let mut drill = permanent;
        drill.drill_failed = true;
        assert_eq!(
            after_run(&drill, 1, 1, &POLICY, false, None, now),
            AfterRun::Alert(NotifyEvent::DrillFailure)
        );
    }

    #[test]
    fn a_next_slot_before_the_retry_takes_its_place_until_failures_exceed_the_retries() {
        let now = at("2026-12-01T00:00:10Z");
        let soon = Some(at("2026-12-01T00:00:20Z"));
        let failed = ended(Outcome::Failure, true);
        assert_eq!(
            after_run(&failed, 1, 1, &POLICY, false, soon, now),
            AfterRun::WaitForNextSlot
        );
        assert_eq!(
            after_run(&failed, 1, 3, &POLICY, false, soon, now),
            AfterRun::Alert(NotifyEvent::Failure)
        );
    }
}
