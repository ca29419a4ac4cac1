//! `plan NAME`: what the controller will do once the current generation is approved
//! (`status.plan`), for which generation, and who asked. Approve and deny show the same view
//! before they write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use serde::Serialize;

use super::error::Error;
use super::output::{self, Format};
use super::session::Session;
use crate::resource::reason::{Readiness, Reason};
use crate::resource::{Approval, GuestRedemptionReset};

/// The plan of the current generation.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    pub plan: String,
    /// A decision already made about this generation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

/// Why there is no plan to show for the current generation.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum NoPlan {
    #[error(
        "not planned yet: the controller has not reported on generation {generation} ({})",
        observed.map_or("no status yet".to_owned(), |o| format!("the status is for generation {o}"))
    )]
    NotObserved {
        generation: i64,
        observed: Option<i64>,
    },
    #[error("not planned yet: generation {generation} is {reason}")]
    Underway { generation: i64, reason: String },
    #[error(
        "no plan for generation {generation}: approval is not required here (it went ahead: {reason})"
    )]
    NotRequired { generation: i64, reason: String },
    #[error(
        "no plan for generation {generation}: it stopped before one was made ({reason}: {message})"
    )]
    Stopped {
        generation: i64,
        reason: String,
        message: String,
    },
}

pub async fn run(session: &Session, name: &str, format: Option<Format>) -> Result<(), Error> {
    let obj = session.api().get(name).await?;
    let view = current_plan(&obj).map_err(|why| Error::NotNow(why.to_string()))?;
    let text = match format {
        Some(format) => output::render(&view, format),
        None => describe(&view),
    };
    output::print(&text)
}

/// The plan when the status shows one for the current generation: its `observedGeneration`
/// is the object's generation and `plan` is set.
pub fn current_plan(obj: &GuestRedemptionReset) -> Result<PlanView, NoPlan> {
    let generation = generation(obj);
    let status = obj.status.clone().unwrap_or_default();
    if status.observed_generation != Some(generation) {
        return Err(NoPlan::NotObserved {
            generation,
            observed: status.observed_generation,
        });
    }
    let Some(plan) = status.plan else {
        return Err(without_plan(generation, ready(obj)));
    };
    Ok(PlanView {
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        generation,
        requested_by: status.requested_by,
        plan,
        approval: status
            .approval
            .filter(|a| a.for_generation(generation).is_some()),
    })
}

/// Why an observed generation has no plan, from its Ready condition.
fn without_plan(generation: i64, ready: Option<&Condition>) -> NoPlan {
    let Some(ready) = ready else {
        return NoPlan::Underway {
            generation,
            reason: "without a Ready condition".into(),
        };
    };
    let reason = ready.reason.clone();
    match Reason::parse(&reason).map(Reason::readiness) {
        Some(Readiness::True) => NoPlan::NotRequired { generation, reason },
        Some(Readiness::False) => NoPlan::Stopped {
            generation,
            reason,
            message: ready.message.clone(),
        },
        Some(Readiness::Unknown) | None => NoPlan::Underway { generation, reason },
    }
}

/// The object's generation; the API server sets it on every custom resource.
pub fn generation(obj: &GuestRedemptionReset) -> i64 {
    obj.metadata.generation.unwrap_or_default()
}

/// The Ready condition, whichever generation it describes.
pub fn ready(obj: &GuestRedemptionReset) -> Option<&Condition> {
    let status = obj.status.as_ref()?;
    status.conditions.iter().find(|c| c.type_ == "Ready")
}

/// The plan for people: where it belongs, who asked, and the controller's words indented.
pub fn describe(view: &PlanView) -> String {
    let requester = view.requested_by.as_deref().unwrap_or("unknown");
    let mut text = format!(
        "Plan for generation {} of {}/{}, requested by {requester}:\n",
        view.generation, view.namespace, view.name
    );
    for line in view.plan.lines() {
        text.push_str(&format!("  {line}\n"));
    }
    if let Some(a) = &view.approval {
        text.push_str(&format!(
            "Already decided: {} by {} at {}: {}\n",
            a.decision, a.by, a.at.0, a.reason
        ));
    }
    text
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
