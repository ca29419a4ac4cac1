//! Where the simulator is as unkind as Graph (README, "Like Graph, not kinder"): a latency that
//! varies from call to call, a reset's effect on the user that reads see only later, and
//! `Retry-After` on 503 answers.

use crate::model::SeedUser;
use crate::reply::Reply;
use crate::state::{State, UserRecord};
use std::borrow::Cow;
use std::time::{Duration, Instant};

/// The redemption state reads keep showing until a reset's effect has replicated.
#[derive(Clone, Debug)]
pub(crate) struct Replicating {
    until: Instant,
    state: Option<String>,
    changed_at: Option<String>,
}

impl State {
    /// How long this Graph response waits: the fixed latency plus a seeded uniform draw of
    /// up to the spread.
    pub fn draw_latency(&mut self) -> Duration {
        let spread = self.settings.latency_spread_ms;
        let extra = if spread == 0 {
            0
        } else {
            splitmix64(&mut self.rng) % (spread + 1)
        };
        self.settings.latency() + Duration::from_millis(extra)
    }
}

/// One step of splitmix64: small, seeded, and enough for latency draws.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Called with the user as it was before a `POST /invitations` changed its redemption state:
/// reads show that earlier state for `delay`. A second reset within the delay keeps the
/// earliest state and extends the delay; `delay` zero shows the change at once.
pub(crate) fn hold_back_reset(record: &mut UserRecord, before: &SeedUser, delay: Duration) {
    if delay.is_zero() {
        return;
    }
    let until = Instant::now() + delay;
    match &mut record.replicating {
        Some(r) if Instant::now() < r.until => r.until = until,
        _ => {
            record.replicating = Some(Replicating {
                until,
                state: before.external_user_state.clone(),
                changed_at: before.external_user_state_change_date_time.clone(),
            })
        }
    }
}

/// A change by someone else (a redeem, a foreign reset) is newer than any reset still
/// replicating: reads show it from now on.
pub(crate) fn forget_replication(record: &mut UserRecord) {
    record.replicating = None;
}

/// The user as a Graph read sees it now.
pub(crate) fn as_read(record: &UserRecord, now: Instant) -> Cow<'_, SeedUser> {
    match &record.replicating {
        Some(r) if now < r.until => {
            let mut user = record.user.clone();
            user.external_user_state = r.state.clone();
            user.external_user_state_change_date_time = r.changed_at.clone();
            Cow::Owned(user)
        }
        _ => Cow::Borrowed(&record.user),
    }
}

/// Graph sends `Retry-After` with some 5xx answers: here with every 503 when the setting asks.
pub(crate) fn retry_after_on_503(reply: Reply, seconds: Option<u64>) -> Reply {
    match seconds {
        Some(s) if reply.status == 503 => reply.with_header("retry-after", s.to_string()),
        _ => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_draws_are_seeded_and_stay_within_the_spread() {
        let draws = |seed: u64| {
            let mut state = State {
                rng: seed,
                ..State::default()
            };
            state.settings.latency_ms = 5;
            state.settings.latency_spread_ms = 45;
            (0..200)
                .map(|_| state.draw_latency().as_millis() as u64)
                .collect::<Vec<_>>()
        };
        let a = draws(7);
        assert_eq!(a, draws(7), "the same seed draws the same latencies");
        assert_ne!(a, draws(8));
        assert!(a.iter().all(|ms| (5..=50).contains(ms)), "{a:?}");
        assert!(a.iter().any(|&ms| ms < 15) && a.iter().any(|&ms| ms > 40));
    }

    #[test]
    fn a_reset_is_read_late_and_a_newer_change_at_once() {
        let old = SeedUser::guest("1", "u", "a@b.c");
        let mut record = UserRecord::new(old.clone(), Instant::now());
        record.user.external_user_state = Some("PendingAcceptance".into());
        record.user.external_user_state_change_date_time = Some("2030-01-01T00:00:00Z".into());
        hold_back_reset(&mut record, &old, Duration::from_secs(60));
        let now = Instant::now();
        assert_eq!(
            as_read(&record, now).external_user_state,
            old.external_user_state
        );
        let later = now + Duration::from_secs(61);
        assert_eq!(
            as_read(&record, later).external_user_state.as_deref(),
            Some("PendingAcceptance")
        );
        forget_replication(&mut record);
        assert_eq!(
            as_read(&record, now).external_user_state.as_deref(),
            Some("PendingAcceptance")
        );
    }
}
