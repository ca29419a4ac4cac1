//! When the client repeats a failed call by itself: a pure decision from the attempt
//! number and the failure's class. The client asks it about reads and `set_mail` only;
//! the invitation POST is never repeated by the client (docs/graph.md, "The invitation
//! POST: one attempt per call").

use super::error::{ErrorClass, GraphError};
use crate::backoff::Backoff;
use std::time::Duration;

/// Whether repeating the request could do something twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Reads, and the `mail` PATCH (setting the same value twice is the same as once).
    Idempotent,
    /// `POST /invitations`: a second one sends a second invitation. (The client sends it
    /// once per call and never asks the policy; kept so the policy stays total.)
    NotIdempotent,
}

/// The decision after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    After(Duration),
    GiveUp,
}

/// Capped exponential backoff with full jitter, and `Retry-After` honoured when short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Backoff ceiling of the first retry; doubles with each retry.
    pub base_delay: Duration,
    /// Backoff ceiling.
    pub max_delay: Duration,
    /// The longest `Retry-After` waited inside the client; a longer one is returned to
    /// the caller as `Throttled`.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// Full-jitter backoff before retry number `attempt` (1 for the first retry):
    /// `jitter` × min(max_delay, base_delay × 2^(attempt-1)), `jitter` in [0, 1).
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        Backoff::new(self.base_delay, self.max_delay).full_jitter(attempt, jitter)
    }

    /// After `attempts_made` attempts, the last failing with `class`: wait and retry, or give up.
    ///
    /// An ambiguous outcome is never retried for a non-idempotent call: the caller
    /// must find out what happened first. A 429 and a failure before sending prove
    /// the request was not processed, so even the POST may be repeated after them.
    pub fn decide(
        &self,
        attempts_made: u32,
        class: ErrorClass,
        idempotency: Idempotency,
        jitter: f64,
    ) -> Retry {
        if attempts_made >= self.max_attempts {
            return Retry::GiveUp;
        }
        let backoff = || Retry::After(self.backoff(attempts_made, jitter));
        match class {
            ErrorClass::Definite | ErrorClass::AbuseBlocked => Retry::GiveUp,
            ErrorClass::Throttled {
                retry_after: Some(after),
            } => {
                if after <= self.max_retry_after {
                    Retry::After(after)
                } else {
                    Retry::GiveUp
                }
            }
            ErrorClass::Throttled { retry_after: None } => backoff(),
            ErrorClass::TransientBeforeSend => backoff(),
            ErrorClass::Ambiguous => match idempotency {
                Idempotency::Idempotent => backoff(),
                Idempotency::NotIdempotent => Retry::GiveUp,
            },
        }
    }

    /// [`decide`](Self::decide) for a concrete error: a `Retry-After` that came with a
    /// retried 5xx (Graph sends one with some 503s) is waited at least, or, when longer
    /// than `max_retry_after`, ends the retries so the caller can wait it out.
    pub fn decide_for(
        &self,
        attempts_made: u32,
        error: &GraphError,
        idempotency: Idempotency,
        jitter: f64,
    ) -> Retry {
        match self.decide(attempts_made, error.class(), idempotency, jitter) {
            Retry::After(delay) => match error.retry_after {
                Some(hint) if hint > self.max_retry_after => Retry::GiveUp,
                Some(hint) => Retry::After(delay.max(hint)),
                None => Retry::After(delay),
            },
            Retry::GiveUp => Retry::GiveUp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Idempotency::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, 0.999_999), MS(500).mul_f64(0.999_999));
        assert_eq!(p.backoff(2, 1.0), MS(1000));
        assert_eq!(p.backoff(3, 1.0), MS(2000));
        assert_eq!(p.backoff(4, 1.0), MS(4000));
        assert_eq!(p.backoff(5, 1.0), MS(8000));
        assert_eq!(p.backoff(6, 1.0), MS(8000), "capped");
        assert_eq!(p.backoff(200, 1.0), MS(8000), "no overflow");
        assert_eq!(
            p.backoff(3, 0.0),
            Duration::ZERO,
            "full jitter reaches zero"
        );
        assert_eq!(p.backoff(3, 0.5), MS(1000));
    }

    #[test]
    fn definite_and_abuse_never_retry() {
        let p = RetryPolicy::default();
        for class in [ErrorClass::Definite, ErrorClass::AbuseBlocked] {
            for idem in [Idempotent, NotIdempotent] {
                assert_eq!(p.decide(1, class, idem, 0.5), Retry::GiveUp);
            }
        }
    }

    #[test]
    fn ambiguous_is_retried_only_when_idempotent() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.decide(1, ErrorClass::Ambiguous, Idempotent, 0.5),
            Retry::After(MS(250))
        );
        assert_eq!(
            p.decide(1, ErrorClass::Ambiguous, NotIdempotent, 0.5),
            Retry::GiveUp
        );
    }

    #[test]
    fn before_send_failures_are_retried_even_for_the_post() {
        let p = RetryPolicy::default();
        for idem in [Idempotent, NotIdempotent] {
            assert_eq!(
                p.decide(2, ErrorClass::TransientBeforeSend, idem, 1.0),
                Retry::After(MS(1000))
            );
        }
    }

    #[test]
    fn short_retry_after_is_honoured_long_one_returned() {
        let p = RetryPolicy::default();
        let short = ErrorClass::Throttled {
            retry_after: Some(Duration::from_secs(3)),
        };
        let long = ErrorClass::Throttled {
            retry_after: Some(Duration::from_secs(60)),
        };
        let none = ErrorClass::Throttled { retry_after: None };
        for idem in [Idempotent, NotIdempotent] {
            assert_eq!(
                p.decide(1, short, idem, 0.1),
                Retry::After(Duration::from_secs(3))
            );
            assert_eq!(p.decide(1, long, idem, 0.1), Retry::GiveUp);
            assert_eq!(p.decide(1, none, idem, 1.0), Retry::After(MS(500)));
        }
    }

    #[test]
    fn retry_after_of_a_server_error_is_a_floor() {
        use crate::graph::GraphCall;
        let p = RetryPolicy::default();
        let unavailable = |secs| {
            GraphError::from_response(
                GraphCall::GetUser,
                503,
                b"{}",
                None,
                Some(Duration::from_secs(secs)),
            )
        };
        assert_eq!(
            p.decide_for(1, &unavailable(3), Idempotent, 0.5),
            Retry::After(Duration::from_secs(3))
        );
        assert_eq!(
            p.decide_for(1, &unavailable(60), Idempotent, 0.5),
            Retry::GiveUp
        );
        assert_eq!(
            p.decide_for(1, &unavailable(3), NotIdempotent, 0.5),
            Retry::GiveUp,
            "a 503 on the POST stays ambiguous"
        );
        let plain = GraphError::from_response(GraphCall::GetUser, 500, b"", None, None);
        assert_eq!(
            p.decide_for(1, &plain, Idempotent, 1.0),
            Retry::After(MS(500))
        );
    }

    #[test]
    fn attempts_are_capped() {
        let p = RetryPolicy::default();
        assert!(matches!(
            p.decide(3, ErrorClass::TransientBeforeSend, Idempotent, 0.5),
            Retry::After(_)
        ));
        assert_eq!(
            p.decide(4, ErrorClass::TransientBeforeSend, Idempotent, 0.5),
            Retry::GiveUp
        );
        assert_eq!(
            RetryPolicy::none().decide(1, ErrorClass::Ambiguous, Idempotent, 0.5),
            Retry::GiveUp
        );
    }
}
