//! The one backoff formula of the controller and the Graph client: capped exponential, with
//! jitter applied by the caller's choice (full jitter for a client's retries, a spread of up to
//! a fifth for requeues, so that many resources do not retry in lockstep).

use std::time::Duration;

/// Capped exponential backoff: `base × 2^(n−1)` before retry number `n`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max }
    }

    /// The wait before retry number `n` (1 for the first), without jitter.
    pub fn ceiling(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// Full jitter: a fraction `jitter` in [0, 1] of the ceiling.
    pub fn full_jitter(&self, n: u32, jitter: f64) -> Duration {
        self.ceiling(n).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// `wait` plus up to a fifth more, `jitter` in [0, 1] choosing how much.
pub fn spread(wait: Duration, jitter: f64) -> Duration {
    wait + wait.mul_f64(jitter.clamp(0.0, 1.0) * 0.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn doubles_and_caps_without_overflow() {
        let b = Backoff::new(S(5), S(300));
        let waits: Vec<u64> = (1..=8).map(|n| b.ceiling(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.ceiling(u32::MAX), S(300));
        assert_eq!(b.ceiling(0), S(5));
        assert_eq!(b.full_jitter(3, 0.5), S(10));
        assert_eq!(b.full_jitter(3, 7.0), S(20), "jitter is clamped");
    }

    #[test]
    fn spread_adds_at_most_a_fifth() {
        assert_eq!(spread(S(10), 0.0), S(10));
        assert_eq!(spread(S(10), 1.0), S(12));
        assert_eq!(spread(S(10), -3.0), S(10));
    }
}
