//! Recovery of an interrupted attempt: did the POST that was being sent take effect?
//!
//! Evidence is a change of the user's redemption state strictly after the state recorded
//! right before the POST (`attempt.userStateBefore`, compared at the precision the status kept
//! it with), to `PendingAcceptance` or `Accepted`, and not before the attempt began (less a
//! clock-skew allowance). An earlier invitation, by another admin or an older generation, is
//! never evidence. Absence of evidence is concluded only after the replication window, counted
//! from the last moment the POST could have taken effect: the latest `postStartedAt` plus the
//! Graph request timeout.

use std::time::Duration;

use jiff::Timestamp;

use super::input::{Learned, Observed, Settings};
use super::report::{Issued, Report, report_failure};
use super::step::Step;
use super::time::REPLICATION_POLL;
use crate::graph::DirectoryUser;
use crate::resource::Attempt;
use crate::resource::precision::later_than_stored;
use crate::resource::reason::Reason;

/// `externalUserState` values that follow a redemption reset.
const RESET_STATES: [&str; 2] = ["PendingAcceptance", "Accepted"];

pub(super) fn recover(
    o: &Observed<'_>,
    settings: &Settings,
    now: Timestamp,
    pass: &Learned,
    attempt: &Attempt,
) -> Step {
    let Some(user_id) = o.status.user.as_ref().map(|u| u.id.clone()) else {
        return Report::new(
            Reason::OutcomeUnknown,
            "an interrupted attempt left no record of its user; set the guestreset.io/retry annotation to issue again",
        )
        .clear_attempt()
        .for_attempt(&attempt.id)
        .into();
    };
    let Some(read) = &pass.evidence else {
        return Step::ReadEvidence { user_id };
    };
    let user = match &read.result {
        Err(failure) => {
            return report_failure(o, failure, "reading the user for evidence")
                .for_attempt(&attempt.id)
                .into();
        }
        Ok(None) => {
            return Report::new(
                Reason::OutcomeUnknown,
                format!("the user {user_id} of an interrupted attempt no longer exists; set the guestreset.io/retry annotation to issue again"),
            )
            .clear_attempt()
            .for_attempt(&attempt.id)
            .into();
        }
        Ok(Some(user)) => user,
    };
    if is_evidence(user, attempt, settings) {
        return recovered(o, attempt, user).into();
    }
    let sent_at = attempt
        .post_started_at
        .as_ref()
        .map_or(attempt.started_at.0, |t| t.0);
    let deadline = sent_at + settings.post_timeout + settings.replication_window;
    // Absence is concluded only from a read that started after the deadline, however long
    // the pass took between the read and this decision.
    if now < deadline || read.at < deadline {
        return Report::new(
            Reason::InProgress,
            format!(
                "an attempt was interrupted; no evidence of the reset on {} yet, re-reading until {deadline}",
                user.display_name()
            ),
        )
        .requeue(REPLICATION_POLL)
        .for_attempt(&attempt.id)
        .with_user(user)
        .into();
    }
    unknown(o, attempt, user).into()
}

/// Whether the user's state shows THIS attempt's reset.
pub fn is_evidence(user: &DirectoryUser, attempt: &Attempt, settings: &Settings) -> bool {
    let Some(changed) = user.external_user_state_change_date_time else {
        return false;
    };
    let state_fits = user
        .external_user_state
        .as_deref()
        .is_some_and(|s| RESET_STATES.contains(&s));
    // At the precision the status kept: the same change read again is never later.
    let after_before = attempt
        .user_state_before
        .as_ref()
        .and_then(|b| b.changed_at.as_ref())
        .is_none_or(|before| later_than_stored(changed, before.0));
    state_fits && after_before && changed >= attempt.started_at.0 - settings.clock_skew
}

fn recovered(o: &Observed<'_>, attempt: &Attempt, user: &DirectoryUser) -> Report {
    let current = attempt.generation == o.generation;
    let email = attempt
        .email
        .clone()
        .unwrap_or_else(|| o.spec.email.clone());
    let report = Report {
        issued: Some(Issued {
            generation: attempt.generation,
            email,
            invitation_id: String::new(),
            redeem_status: user.external_user_state.clone(),
            recovered: true,
            request_id: None,
            client_request_id: None,
        }),
        ..Report::new(
            if current {
                Reason::Issued
            } else {
                Reason::InProgress
            },
            format!(
                "an interrupted attempt did reset {}: the directory shows {} since {}; the invitation id and redeem URL are not recoverable",
                user.display_name(),
                user.external_user_state.as_deref().unwrap_or_default(),
                user.external_user_state_change_date_time
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            ),
        )
    }
    .clear_attempt()
    .for_attempt(&attempt.id)
    .with_user(user);
    if current {
        report
    } else {
        report.requeue(Duration::from_secs(1))
    }
}

fn unknown(o: &Observed<'_>, attempt: &Attempt, user: &DirectoryUser) -> Report {
    let message = format!(
        "an attempt was interrupted and the directory shows no evidence that {} was reset; a human decides: set the guestreset.io/retry annotation to a new value to issue again, accepting that a second invitation may be sent",
        user.display_name()
    );
    let report = if attempt.generation == o.generation {
        Report::new(Reason::OutcomeUnknown, message)
    } else {
        // The unknown outcome belongs to a superseded generation; the current one goes on.
        Report::new(
            Reason::InProgress,
            format!("generation {}: {message}", attempt.generation),
        )
        .requeue(Duration::from_secs(1))
    };
    report
        .clear_attempt()
        .for_attempt(&attempt.id)
        .with_user(user)
}
