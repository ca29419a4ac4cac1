//! The approval stage of the decision (docs/resource.md, "Approval"): with
//! `--require-approval`, nothing is written to Graph for a generation until a person other
//! than its requester approved it. Admission enforces who may write an approval
//! (docs/security.md, "Approval"); this stage checks the record again before acting on it, so
//! that an approval written while the policy was missing, or by someone whose right was
//! withdrawn since, is never acted on.

use super::input::{Learned, Observed, Settings};
use super::report::Report;
use super::step::{Stage, Step};
use crate::resource::reason::{READY, Reason};
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
    /// Created by the controller for a migration whose approved plan covers it (the
    /// approver of the plan).
    ByMigration,
}

/// The approval stage: the gate for this generation, or the step that stops the pass.
pub(super) fn approval<'o>(
    o: &Observed<'o>,
    settings: &Settings,
    pass: &Learned,
) -> Stage<Gate<'o>> {
    if !settings.require_approval {
        return Ok(Gate::NotRequired);
    }
    // An approval covers the generation and the retry it names; a retry of a settled
    // generation is a new request that waits for its own (docs/resource.md, "Approval").
    let Some(approval) = o
        .status
        .approval
        .as_ref()
        .filter(|a| a.covers(o.generation, o.retry_annotation))
    else {
        // A reset the controller created for a migration is approved by the decision on the
        // migration's plan, once the plan is shown to cover it (docs/security.md, "Approval of
        // a migration"); anyone else's reset, owned by a migration or not, needs its own.
        if let Some(name) = by_migration(o, settings) {
            match &pass.migration_grant {
                None => {
                    return Err(Step::CheckMigration {
                        name: name.to_owned(),
                    });
                }
                Some(Ok(_)) => return Ok(Gate::ByMigration),
                Some(Err(_)) if awaiting_already(o) => return Err(Step::Nothing),
                Some(Err(problem)) => {
                    return Err(Report::new(
                        Reason::AwaitingApproval,
                        format!(
                            "created for migration {name}, whose approval does not cover it: {problem}; nothing is written to Graph"
                        ),
                    )
                    .into());
                }
            }
        }
        return match (awaiting_already(o), &pass.policy) {
            // The plan is on record and the approvers were told; a status change brings the
            // decision. Planning again on every event would only spend Graph reads.
            (true, _) => Err(Step::Nothing),
            // The plan names the policy in force, which a decision must carry to count.
            (false, None) => Err(Step::ReadPolicy),
            (false, Some(_)) => Ok(Gate::Awaiting),
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

/// The migration whose approval may cover this reset: the reset names the controller itself as
/// its requester (admission holds that annotation to whoever created the reset) and a
/// migration as its controlling owner.
fn by_migration<'o>(o: &Observed<'o>, settings: &Settings) -> Option<&'o str> {
    let me = settings.own_identity.as_deref()?;
    (o.requested_by == Some(me))
        .then_some(o.migration)
        .flatten()
}

/// The report of a generation waiting for its approval, with the plan on record.
pub(super) fn awaiting(o: &Observed<'_>, pass: &Learned, plan: String) -> Report {
    let requester = o.requested_by.unwrap_or("(not recorded)");
    let request = match o.retry_annotation {
        None => format!("generation {} requested by {requester}", o.generation),
        Some(token) => format!(
            "retry {token} of generation {} requested by {} (generation requested by {requester})",
            o.generation,
            o.retry_requested_by.unwrap_or("(not recorded)")
        ),
    };
    Report {
        plan: Some(format!("generation {}: {plan}", o.generation)),
        admitted_under: pass.policy.clone().flatten(),
        ..Report::new(
            Reason::AwaitingApproval,
            format!(
                "{request} awaits approval by another person; nothing is written to Graph before it. Plan: {plan}"
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
    if let Some(problem) = retry_problem(o, approval) {
        return Some(problem);
    }
    if let Some(problem) = digest_problem(o, approval) {
        return Some(problem);
    }
    (approval.by == requester).then(|| {
        format!(
            "{requester} requested generation {} and cannot decide on it; another person must",
            o.generation
        )
    })
}

/// An approval that pins a spec digest approves that spec only: it is refused when the digest
/// is not the current spec's (a denial stops whatever it names).
fn digest_problem(o: &Observed<'_>, approval: &Approval) -> Option<String> {
    let pinned = approval.digest.as_deref()?;
    let current = crate::resource::spec_digest(o.spec);
    (approval.decision == Decision::Approved && pinned != current).then(|| {
        format!(
            "it approves the spec with digest {pinned}, but the spec of generation {} has digest {current}; review the plan and decide again",
            o.generation
        )
    })
}

/// An approval of a retry needs a retry requester of record other than the approver.
fn retry_problem(o: &Observed<'_>, approval: &Approval) -> Option<String> {
    let token = approval.retry.as_deref()?;
    match o.retry_requested_by {
        None => Some(format!(
            "retry {token} has no requester of record (annotation guestreset.io/retry-requested-by), so four eyes cannot be shown; is the admission policy installed? Ask for the retry again"
        )),
        Some(by) if by == approval.by => Some(format!(
            "{by} asked for retry {token} and cannot decide on it; another person must"
        )),
        Some(_) => None,
    }
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

/// The status already shows this generation waiting for approval, planned for the current
/// retry (a new retry value is a new request: planned again, with the policy in force now).
fn awaiting_already(o: &Observed<'_>) -> bool {
    o.status.observed_generation == Some(o.generation)
        && o.status.retry_token.as_deref() == o.retry_annotation
        && o.status.conditions.iter().any(|c| {
            c.type_ == READY
                && c.reason == Reason::AwaitingApproval.as_str()
                && c.observed_generation == Some(o.generation)
        })
}
