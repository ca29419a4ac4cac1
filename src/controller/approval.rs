//! The approval stage of the decision (docs/resource.md, "Approval"): with
//! `--require-approval`, nothing is written to Graph for a generation until a person other
//! than its requester approved it. Admission enforces who may write an approval
//! (docs/security.md, "Approval"); this stage checks the record again before acting on it, so
//! that an approval written while the policy was missing, or by someone whose right was
//! withdrawn since, is never acted on.

use super::preflight::Stage;
use super::reason::Reason;
use super::report::Report;
use super::step::{Observed, Pass, Settings, Step};
use crate::resource::{Approval, Decision};

/// What the approval stage hands on to the preflight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Gate<'a> {
    /// Approval is not required (the controller runs without `--require-approval`).
    NotRequired,
    /// No decision yet: run the preflight, then report the plan and wait.
    Awaiting,
    /// Approved by this user, and checked again.
    Approved(&'a Approval),
}

/// The approval stage: the gate for this generation, or the step that stops the pass.
pub(super) fn approval<'o>(o: &Observed<'o>, settings: &Settings, pass: &Pass) -> Stage<Gate<'o>> {
    if !settings.require_approval {
        return Ok(Gate::NotRequired);
    }
    let Some(approval) = o
        .status
        .approval
        .as_ref()
        .filter(|a| a.generation == o.generation)
    else {
        return match awaiting_already(o) {
            // The plan is on record and the approvers were told; a status change brings the
            // decision. Planning again on every event would only spend Graph reads.
            true => Err(Step::Nothing),
            false => Ok(Gate::Awaiting),
        };
    };
    if let Some(problem) = record_problem(o, approval) {
        return Err(not_acted_on(approval, &problem).into());
    }
    match &pass.approver_allowed {
        None => Err(Step::CheckApprover {
            approval: Box::new(approval.clone()),
        }),
        // The API server may grant the right (or the policy be installed) later: look again
        // on the schedule of a missing permission rather than only on the next change.
        Some(Err(problem)) => Err(not_acted_on(approval, problem)
            .requeue(super::report::FORBIDDEN_RETRY)
            .into()),
        Some(Ok(())) => match approval.decision {
            Decision::Denied => Err(denied(o, approval).into()),
            Decision::Approved => Ok(Gate::Approved(approval)),
        },
    }
}

/// The report of a generation waiting for its approval, with the plan on record.
pub(super) fn awaiting(o: &Observed<'_>, plan: String) -> Report {
    let requester = o.requested_by.unwrap_or("(not recorded)");
    Report {
        plan: Some(format!("generation {}: {plan}", o.generation)),
        ..Report::new(
            Reason::AwaitingApproval,
            format!(
                "generation {} requested by {requester} awaits approval by another person; nothing is written to Graph before it. Plan: {plan}",
                o.generation
            ),
        )
    }
}

/// Why a recorded decision cannot be acted on, whatever the API server says of its author.
fn record_problem(o: &Observed<'_>, approval: &Approval) -> Option<String> {
    let Some(requester) = o.requested_by else {
        return Some(format!(
            "generation {} has no requester of record (annotation guestreset.io/requested-by), so four eyes cannot be shown; is the admission policy installed? Change the spec to ask again",
            o.generation
        ));
    };
    if approval.by.trim().is_empty() {
        return Some("the decision names no approver".to_owned());
    }
    (approval.by == requester).then(|| {
        format!(
            "{requester} requested generation {} and cannot decide on it; another person must",
            o.generation
        )
    })
}

/// A decision the controller will not act on: it keeps waiting for a valid one (a spec change
/// starts a new generation, which admission lets a proper approver decide on).
fn not_acted_on(approval: &Approval, problem: &str) -> Report {
    Report::new(
        Reason::AwaitingApproval,
        format!(
            "the decision {} by {} on generation {} is not acted on: {problem}",
            approval.decision, approval.by, approval.generation
        ),
    )
}

fn denied(o: &Observed<'_>, approval: &Approval) -> Report {
    Report::new(
        Reason::Denied,
        format!(
            "{} denied generation {} at {}: {}; nothing was written to Graph. Change the spec to ask again",
            approval.by, o.generation, approval.at.0, approval.reason
        ),
    )
}

/// The status already shows this generation waiting for approval.
fn awaiting_already(o: &Observed<'_>) -> bool {
    o.status.observed_generation == Some(o.generation)
        && o.status.conditions.iter().any(|c| {
            c.type_ == super::status::READY
                && c.reason == Reason::AwaitingApproval.as_str()
                && c.observed_generation == Some(o.generation)
        })
}
