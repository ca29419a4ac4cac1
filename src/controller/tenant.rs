//! The tenant-wide pause (API.md 3.7): after Graph's abuse-protection answer no resource posts
//! an invitation until the cool-down has passed; then exactly one probe may try.

use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

use super::decide::TenantGate;

/// How long other resources wait while the probe is out.
const PROBE_WAIT: SignedDuration = SignedDuration::from_secs(30);

#[derive(Clone, Debug)]
pub struct TenantGuard {
    cooldown: SignedDuration,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    paused_until: Option<Timestamp>,
    probe_out: bool,
}

/// The right to send the one probe after a cool-down, held for one pass. Dropping it lets the
/// next pass probe, unless Graph's answer already closed the question: `block` starts a new
/// cool-down and `clear` ends the pause.
#[derive(Debug)]
pub struct ProbeClaim {
    guard: TenantGuard,
}

impl TenantGuard {
    pub fn new(cooldown: SignedDuration) -> Self {
        TenantGuard {
            cooldown,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a pass starting now may post. After the cool-down the first caller gets the gate
    /// open together with the probe claim; the others keep waiting until the probe answers.
    pub fn gate(&self, now: Timestamp) -> (TenantGate, Option<ProbeClaim>) {
        let mut state = self.lock();
        match state.paused_until {
            None => (TenantGate::Open, None),
            Some(until) if now < until => (TenantGate::Paused { until }, None),
            Some(_) if state.probe_out => (
                TenantGate::Paused {
                    until: now + PROBE_WAIT,
                },
                None,
            ),
            Some(_) => {
                state.probe_out = true;
                (
                    TenantGate::Open,
                    Some(ProbeClaim {
                        guard: self.clone(),
                    }),
                )
            }
        }
    }

    /// Graph blocked invitations: pause every resource for the cool-down.
    pub fn block(&self, now: Timestamp) {
        let mut state = self.lock();
        let until = now + self.cooldown;
        state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
        state.probe_out = false;
    }

    /// A resource reports a block recorded earlier (for example before a restart): keep the
    /// pause until that block's cool-down ends.
    pub fn remember_block(&self, blocked_at: Timestamp, now: Timestamp) {
        let until = blocked_at + self.cooldown;
        if until > now {
            let mut state = self.lock();
            state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
        }
    }

    /// An invitation went through: the tenant is not blocked.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.paused_until = None;
        state.probe_out = false;
    }

    /// Whether issuance is paused at `now` (for the metrics gauge and logs).
    pub fn is_paused(&self, now: Timestamp) -> bool {
        let state = self.lock();
        state
            .paused_until
            .is_some_and(|until| now < until || state.probe_out)
    }
}

impl Drop for ProbeClaim {
    fn drop(&mut self) {
        self.guard.lock().probe_out = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    #[test]
    fn open_until_blocked_then_paused_for_the_cooldown() {
        let guard = TenantGuard::new(SignedDuration::from_hours(1));
        assert_eq!(guard.gate(at(0)).0, TenantGate::Open);
        guard.block(at(0));
        assert_eq!(guard.gate(at(10)).0, TenantGate::Paused { until: at(3600) });
        assert!(guard.is_paused(at(3599)));
    }

    #[test]
    fn one_probe_after_the_cooldown() {
        let guard = TenantGuard::new(SignedDuration::from_secs(60));
        guard.block(at(0));
        let (gate, claim) = guard.gate(at(61));
        assert_eq!(gate, TenantGate::Open);
        let claim = claim.expect("the first caller after the cool-down probes");
        assert!(matches!(
            guard.gate(at(62)),
            (TenantGate::Paused { .. }, None)
        ));
        // The probe is blocked again: a new cool-down starts.
        guard.block(at(63));
        drop(claim);
        assert_eq!(guard.gate(at(64)).0, TenantGate::Paused { until: at(123) });
    }

    #[test]
    fn a_probe_that_never_asked_releases_its_claim() {
        let guard = TenantGuard::new(SignedDuration::from_secs(60));
        guard.block(at(0));
        // A pass that takes the claim but never posts (a dry run, a failed read) ...
        drop(guard.gate(at(61)));
        // ... leaves the probe to the next pass, and the next, until one gets an answer.
        let (gate, claim) = guard.gate(at(62));
        assert_eq!(gate, TenantGate::Open);
        assert!(claim.is_some(), "another resource may probe");
        drop(claim);
        assert!(guard.gate(at(63)).1.is_some());
    }

    #[test]
    fn a_successful_probe_reopens() {
        let guard = TenantGuard::new(SignedDuration::from_secs(60));
        guard.block(at(0));
        let (_, claim) = guard.gate(at(61));
        guard.clear();
        drop(claim);
        assert!(matches!(guard.gate(at(62)), (TenantGate::Open, None)));
        assert!(!guard.is_paused(at(62)));
    }

    #[test]
    fn a_remembered_block_pauses_until_its_cooldown_ends() {
        let guard = TenantGuard::new(SignedDuration::from_secs(60));
        guard.remember_block(at(0), at(30));
        assert_eq!(guard.gate(at(30)).0, TenantGate::Paused { until: at(60) });
        let old = TenantGuard::new(SignedDuration::from_secs(60));
        old.remember_block(at(0), at(90));
        assert_eq!(old.gate(at(90)).0, TenantGate::Open);
    }
}
