//! Pure status rules of a migration: the reasons of Ready with the same kstatus semantics as a
//! reset's (`Reconciling` while at work or waiting, `Stalled` on a failure that needs a
//! person, `lastTransitionTime` moving only when a condition's status flips), the progress
//! counted from the owned resets, and the expected completion at the write limit.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::resource::reason::{APPROVED, READY, RECONCILING, STALLED};
use crate::resource::{
    Decision, GuestDomainMigrationStatus, GuestRedemptionReset, Phase, Progress,
};

/// The reasons of a migration's Ready condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::Display)]
pub enum MigrationReason {
    /// The directory is being read (or a read failed and is tried again).
    Planning,
    /// A dry run: the plan is recorded, nothing is created.
    DryRunComplete,
    /// With --require-approval: the plan waits for a decision by another person.
    AwaitingApproval,
    /// An approver denied the plan; final for the generation.
    Denied,
    /// Resets are created and being issued.
    InProgress,
    /// Every planned guest's invitation was issued.
    Completed,
    /// Every reset settled, some without an invitation (their own status says why).
    CompletedWithFailures,
    /// The mapping ConfigMap holds a line that is not `old-local new-local`.
    InvalidMapping,
    /// The mapping ConfigMap (or its key) does not exist.
    MappingNotFound,
    /// `spec.to` is outside `--allowed-email-domains`.
    DomainNotAllowed,
    /// The plan ConfigMap no longer matches the digest in status: nothing more is created.
    PlanChanged,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Readiness {
    True,
    False,
    Unknown,
}

impl MigrationReason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    fn readiness(self) -> Readiness {
        use MigrationReason::*;
        match self {
            DryRunComplete | Completed => Readiness::True,
            Planning | AwaitingApproval | InProgress => Readiness::Unknown,
            Denied
            | CompletedWithFailures
            | InvalidMapping
            | MappingNotFound
            | DomainNotAllowed
            | PlanChanged => Readiness::False,
        }
    }

    pub fn is_reconciling(self) -> bool {
        self.readiness() == Readiness::Unknown
    }

    pub fn is_stalled(self) -> bool {
        self.readiness() == Readiness::False
    }

    pub fn phase(self) -> Phase {
        match (self, self.readiness()) {
            (MigrationReason::AwaitingApproval, _) => Phase::Pending,
            (_, Readiness::Unknown) => Phase::InProgress,
            (_, Readiness::True) => Phase::Succeeded,
            (_, Readiness::False) => Phase::Failed,
        }
    }

    pub fn is_warning(self) -> bool {
        self.readiness() == Readiness::False
    }
}

fn put(conditions: &mut Vec<Condition>, mut condition: Condition) {
    if let Some(previous) = conditions.iter().find(|c| c.type_ == condition.type_)
        && previous.status == condition.status
    {
        condition.last_transition_time = previous.last_transition_time.clone();
    }
    conditions.retain(|c| c.type_ != condition.type_);
    conditions.push(condition);
}

fn cond(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: i64,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: Some(generation),
        last_transition_time: Time(now),
    }
}

/// Sets Ready, Reconciling, Stalled (and Approved with `approval_required`) for `reason`.
pub fn set_ready(
    status: &mut GuestDomainMigrationStatus,
    generation: i64,
    now: Timestamp,
    reason: MigrationReason,
    message: &str,
    approval_required: bool,
) {
    let ready = match reason.readiness() {
        Readiness::True => "True",
        Readiness::False => "False",
        Readiness::Unknown => "Unknown",
    };
    let said = |on: bool| {
        if on {
            message.to_owned()
        } else {
            String::new()
        }
    };
    let tf = |on: bool| if on { "True" } else { "False" };
    let conditions = &mut status.conditions;
    put(
        conditions,
        cond(
            READY,
            ready,
            reason.as_str(),
            message.to_owned(),
            generation,
            now,
        ),
    );
    let (reconciling, stalled) = (reason.is_reconciling(), reason.is_stalled());
    put(
        conditions,
        cond(
            RECONCILING,
            tf(reconciling),
            reason.as_str(),
            said(reconciling),
            generation,
            now,
        ),
    );
    put(
        conditions,
        cond(
            STALLED,
            tf(stalled),
            reason.as_str(),
            said(stalled),
            generation,
            now,
        ),
    );
    if approval_required {
        let acted_on = !matches!(
            reason,
            MigrationReason::AwaitingApproval
                | MigrationReason::Planning
                | MigrationReason::DryRunComplete
        );
        let decision = status
            .approval
            .as_ref()
            .filter(|a| a.generation == generation && acted_on);
        let approved = match decision {
            Some(a) => {
                let (value, why, verb) = match a.decision {
                    Decision::Approved => ("True", "Approved", "approved"),
                    Decision::Denied => ("False", "Denied", "denied"),
                };
                cond(
                    APPROVED,
                    value,
                    why,
                    format!("{verb} by {} at {}: {}", a.by, a.at.0, a.reason),
                    generation,
                    now,
                )
            }
            None => cond(
                APPROVED,
                "Unknown",
                MigrationReason::AwaitingApproval.as_str(),
                format!("no decision on the plan of generation {generation} was acted on yet"),
                generation,
                now,
            ),
        };
        put(&mut status.conditions, approved);
    } else {
        status.conditions.retain(|c| c.type_ != APPROVED);
    }
    status.observed_generation = Some(generation);
}

/// The Ready condition's reason and message, if any.
pub fn ready_of(status: &GuestDomainMigrationStatus) -> Option<(&str, &str)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| (c.reason.as_str(), c.message.as_str()))
}

/// Where one reset stands, from its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetState {
    Working,
    Issued { redeemed: bool },
    Failed,
}

/// A reset's state as the migration counts it: issued when its Ready reason is `Issued` for
/// its generation, failed when it stopped (`Ready=False` and `Stalled=True`), working otherwise.
pub fn reset_state(reset: &GuestRedemptionReset) -> ResetState {
    let Some(status) = reset.status.as_ref() else {
        return ResetState::Working;
    };
    let generation = reset.metadata.generation.unwrap_or(0);
    let of = |t: &str| status.conditions.iter().find(|c| c.type_ == t);
    let current = status.observed_generation == Some(generation);
    match of(READY) {
        Some(c) if current && c.status == "True" && c.reason == "Issued" => ResetState::Issued {
            redeemed: of("Redeemed").is_some_and(|r| r.status == "True"),
        },
        Some(c)
            if current
                && c.status == "False"
                && of(STALLED).is_some_and(|s| s.status == "True") =>
        {
            ResetState::Failed
        }
        _ => ResetState::Working,
    }
}

/// The progress of `planned` guests given the owned resets' states.
pub fn progress(planned: usize, states: &[ResetState]) -> Progress {
    let count = |f: &dyn Fn(&ResetState) -> bool| states.iter().filter(|s| f(s)).count() as i64;
    Progress {
        planned: planned as i64,
        created: states.len() as i64,
        issued: count(&|s| matches!(s, ResetState::Issued { .. })),
        failed: count(&|s| *s == ResetState::Failed),
        redeemed: count(&|s| matches!(s, ResetState::Issued { redeemed: true })),
    }
}

/// When the last planned reset is expected to be issued: each unsettled guest needs two Graph
/// writes (the mail, then the invitation), at `writes_per_minute`. `None` once all settled.
pub fn expected_completion(
    progress: &Progress,
    writes_per_minute: u32,
    now: Timestamp,
) -> Option<Timestamp> {
    let remaining = progress.planned - progress.issued - progress.failed;
    if remaining <= 0 || writes_per_minute == 0 {
        return None;
    }
    let seconds = remaining * 2 * 60 / i64::from(writes_per_minute);
    now.checked_add(SignedDuration::from_secs(seconds)).ok()
}

/// The migration's outcome once resets exist: in progress, or completed (with failures).
pub fn outcome(progress: &Progress) -> (MigrationReason, String) {
    let settled = progress.issued + progress.failed;
    let figures = format!(
        "{} planned, {} created, {} issued, {} failed, {} redeemed",
        progress.planned, progress.created, progress.issued, progress.failed, progress.redeemed
    );
    if progress.created < progress.planned || settled < progress.planned {
        (MigrationReason::InProgress, figures)
    } else if progress.failed > 0 {
        (
            MigrationReason::CompletedWithFailures,
            format!("{figures}; the failed resets' own status says why"),
        )
    } else {
        (MigrationReason::Completed, figures)
    }
}

/// The tenths of the settled resets that an Event marks: `Some(n)` when the migration just
/// crossed `n` tenths of its plan (from `before` settled to `after`).
pub fn tenth_crossed(planned: i64, before: i64, after: i64) -> Option<i64> {
    if planned <= 0 || after <= before {
        return None;
    }
    let tenth = |settled: i64| settled * 10 / planned;
    (tenth(after) > tenth(before)).then(|| tenth(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn kstatus_conditions_follow_the_reason() {
        let mut status = GuestDomainMigrationStatus::default();
        set_ready(
            &mut status,
            1,
            at(0),
            MigrationReason::InProgress,
            "working",
            false,
        );
        let get = |s: &GuestDomainMigrationStatus, t: &str| {
            s.conditions.iter().find(|c| c.type_ == t).cloned().unwrap()
        };
        assert_eq!(get(&status, READY).status, "Unknown");
        assert_eq!(get(&status, RECONCILING).status, "True");
        assert_eq!(get(&status, STALLED).status, "False");
        assert!(status.conditions.iter().all(|c| c.type_ != APPROVED));
        set_ready(
            &mut status,
            1,
            at(5),
            MigrationReason::InProgress,
            "still",
            false,
        );
        assert_eq!(get(&status, READY).last_transition_time, Time(at(0)));
        set_ready(
            &mut status,
            1,
            at(9),
            MigrationReason::CompletedWithFailures,
            "done",
            false,
        );
        assert_eq!(get(&status, READY).status, "False");
        assert_eq!(get(&status, STALLED).status, "True");
        assert_eq!(get(&status, STALLED).message, "done");
        assert_eq!(get(&status, RECONCILING).status, "False");
        assert_eq!(get(&status, READY).last_transition_time, Time(at(9)));
        set_ready(
            &mut status,
            2,
            at(10),
            MigrationReason::Completed,
            "ok",
            true,
        );
        assert_eq!(get(&status, READY).status, "True");
        assert_eq!(get(&status, APPROVED).status, "Unknown");
        assert_eq!(status.observed_generation, Some(2));
    }

    #[test]
    fn progress_and_outcome() {
        use ResetState::*;
        let states = [
            Working,
            Issued { redeemed: true },
            Issued { redeemed: false },
            Failed,
        ];
        let p = progress(5, &states);
        assert_eq!(
            p,
            Progress {
                planned: 5,
                created: 4,
                issued: 2,
                failed: 1,
                redeemed: 1
            }
        );
        assert_eq!(outcome(&p).0, MigrationReason::InProgress);
        let done = progress(2, &[Issued { redeemed: false }, Failed]);
        assert_eq!(outcome(&done).0, MigrationReason::CompletedWithFailures);
        let done = progress(1, &[Issued { redeemed: false }]);
        assert_eq!(outcome(&done).0, MigrationReason::Completed);
        assert_eq!(outcome(&progress(0, &[])).0, MigrationReason::Completed);
    }

    #[test]
    fn expected_completion_is_two_writes_per_guest_at_the_limit() {
        let p = Progress {
            planned: 10,
            created: 10,
            issued: 3,
            failed: 1,
            redeemed: 0,
        };
        // 6 guests left, 12 writes at 6 a minute: two minutes.
        assert_eq!(expected_completion(&p, 6, at(0)), Some(at(120)));
        let done = Progress {
            planned: 1,
            created: 1,
            issued: 1,
            failed: 0,
            redeemed: 0,
        };
        assert_eq!(expected_completion(&done, 6, at(0)), None);
    }

    #[test]
    fn every_tenth_is_marked_once() {
        assert_eq!(tenth_crossed(20, 0, 1), None);
        assert_eq!(tenth_crossed(20, 1, 2), Some(1));
        assert_eq!(tenth_crossed(20, 2, 3), None);
        assert_eq!(tenth_crossed(20, 3, 20), Some(10));
        assert_eq!(tenth_crossed(5, 0, 1), Some(2));
        assert_eq!(tenth_crossed(0, 0, 0), None);
    }
}
