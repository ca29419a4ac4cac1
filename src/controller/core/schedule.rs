//! The follow-through's schedule of reads (docs/resource.md, "Following through"): frequent
//! while a redemption is likely (the first minutes), then rarer, then daily, until the watch
//! ends. Pure arithmetic on times, so that it is tested without a clock.

use jiff::{SignedDuration, Timestamp};

/// The schedule is these multiples of the first interval: with the default of 5 minutes,
/// every 5 minutes for the first quarter hour, every 15 minutes up to an hour, hourly up to
/// 6 hours, every 6 hours up to a day, then daily.
const TIERS: [(i32, i32); 4] = [(3, 1), (12, 3), (72, 12), (288, 72)];
const LAST_TIER: i32 = 288;
/// Each interval is stretched by up to this fraction, drawn per check, so that resources
/// issued together (or deferred together by the read budget) do not read in lockstep.
const SPREAD: f64 = 0.2;

/// The schedule's settings (flags `--redemption-first-check` and `--redemption-watch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub first: SignedDuration,
    pub watch: SignedDuration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            first: SignedDuration::from_mins(5),
            watch: SignedDuration::from_hours(30 * 24),
        }
    }
}

impl Schedule {
    /// The interval between checks at `age` since the issuance: the schedule's step there.
    pub fn step(&self, age: SignedDuration) -> SignedDuration {
        let first = self.first.max(SignedDuration::from_secs(1));
        TIERS
            .iter()
            .find(|(until, _)| age < first * *until)
            .map_or(first * LAST_TIER, |(_, every)| first * *every)
    }

    /// When the watch ends: a guest that has not redeemed by then is `NotRedeemed`.
    pub fn deadline(&self, since: Timestamp) -> Timestamp {
        since.saturating_add(self.watch).unwrap_or(Timestamp::MAX)
    }

    /// The check after one made at `now`, stretched by `spread` (0 to 1) and never after the
    /// deadline, so that the last check falls on it.
    pub fn next_check(&self, since: Timestamp, now: Timestamp, spread: f64) -> Timestamp {
        let step = self.step(now.duration_since(since));
        let next = now + stretch(step, spread);
        next.min(self.deadline(since).max(now))
    }

    /// The first check of a follow-through that starts at `since`.
    pub fn first_check(&self, since: Timestamp, spread: f64) -> Timestamp {
        self.next_check(since, since, spread)
    }
}

/// `step` lengthened by up to [`SPREAD`] of itself; `spread` outside 0..1 is clamped.
pub fn stretch(step: SignedDuration, spread: f64) -> SignedDuration {
    step.mul_f64(1.0 + SPREAD * spread.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mins(m: i64) -> SignedDuration {
        SignedDuration::from_mins(m)
    }

    fn t0() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn steps_decay_from_minutes_to_daily() {
        let s = Schedule::default();
        let cases = [
            (mins(0), mins(5)),
            (mins(14), mins(5)),
            (mins(15), mins(15)),
            (mins(59), mins(15)),
            (mins(60), mins(60)),
            (mins(6 * 60 - 1), mins(60)),
            (mins(6 * 60), mins(6 * 60)),
            (mins(24 * 60), mins(24 * 60)),
            (mins(20 * 24 * 60), mins(24 * 60)),
        ];
        for (age, step) in cases {
            assert_eq!(s.step(age), step, "at age {age}");
        }
    }

    #[test]
    fn a_short_first_interval_scales_the_whole_schedule() {
        let s = Schedule {
            first: SignedDuration::from_secs(2),
            watch: SignedDuration::from_secs(60),
        };
        assert_eq!(
            s.step(SignedDuration::from_secs(5)),
            SignedDuration::from_secs(2)
        );
        assert_eq!(
            s.step(SignedDuration::from_secs(6)),
            SignedDuration::from_secs(6)
        );
        assert_eq!(
            s.step(SignedDuration::from_secs(600)),
            SignedDuration::from_secs(576)
        );
    }

    #[test]
    fn the_spread_lengthens_by_at_most_a_fifth() {
        let s = Schedule::default();
        assert_eq!(s.first_check(t0(), 0.0), t0() + mins(5));
        assert_eq!(s.first_check(t0(), 1.0), t0() + mins(6));
        assert_eq!(s.first_check(t0(), 7.0), t0() + mins(6), "clamped");
        let mid = s.first_check(t0(), 0.5);
        assert!(mid > t0() + mins(5) && mid < t0() + mins(6));
    }

    #[test]
    fn checks_over_a_30_day_watch_are_few_and_end_on_the_deadline() {
        let s = Schedule::default();
        let (since, mut at, mut checks) = (t0(), s.first_check(t0(), 0.0), 1);
        while at < s.deadline(since) {
            let next = s.next_check(since, at, 0.0);
            assert!(next > at, "the schedule always moves on");
            at = next;
            checks += 1;
        }
        assert_eq!(
            at,
            s.deadline(since),
            "the last check falls on the deadline"
        );
        // 3 + 3 + 5 + 3 checks in the first day, then one a day.
        assert!((40..=45).contains(&checks), "{checks} checks");
    }

    #[test]
    fn a_check_after_the_deadline_is_not_pushed_back_before_now() {
        let s = Schedule {
            first: mins(5),
            watch: mins(10),
        };
        let late = t0() + mins(30);
        assert_eq!(s.next_check(t0(), late, 0.0), late);
    }
}
