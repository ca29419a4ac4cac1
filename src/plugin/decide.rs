//! `approve NAME` and `deny NAME`: an approver's decision about the current generation,
//! written to `status.approval` through the status subresource (docs/plugin.md, "How a
//! decision is written"). Admission decides whether the caller may; the plugin shows the plan
//! first and makes sure the decision lands on the generation that was shown.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Patch;
use serde_json::json;

use super::cli::DecideArgs;
use super::error::Error;
use super::output;
use super::plan;
use super::session::{Caller, Session};
use super::write;
use crate::resource::{Approval, Decision, GuestRedemptionReset};

pub async fn run(session: &Session, args: &DecideArgs, decision: Decision) -> Result<(), Error> {
    let api = session.api();
    let obj = api.get(&args.name).await?;
    match plan::current_plan(&obj) {
        Ok(view) => output::print(&plan::describe(&view))?,
        Err(why) if args.without_plan => {
            eprintln!("warning: {why}; deciding without a plan (--without-plan)");
        }
        Err(why) => {
            return Err(Error::NotNow(format!(
                "{why}; nothing was decided (--without-plan decides anyway)"
            )));
        }
    }
    let by = session.caller().await?;
    let approval = record(&obj, decision, &by, Timestamp::now(), &args.reason);
    let patch = patch(&obj, &approval);
    write::pause_before_write();
    api.patch_status(&args.name, &write::patch_params(), &Patch::Merge(&patch))
        .await?;
    output::print(&decided(&obj, &approval))
}

/// The decision about the generation that was read, by the caller, now.
pub fn record(
    obj: &GuestRedemptionReset,
    decision: Decision,
    by: &Caller,
    now: Timestamp,
    reason: &str,
) -> Approval {
    Approval {
        generation: plan::generation(obj),
        decision,
        by: by.name.clone(),
        groups: by.groups.clone(),
        at: Time(now),
        reason: reason.to_owned(),
    }
}

/// The status patch that records `approval`, only onto the version of `obj` that was read.
pub fn patch(obj: &GuestRedemptionReset, approval: &Approval) -> serde_json::Value {
    write::locked(json!({ "status": { "approval": approval } }), obj)
}

/// The confirmation line.
pub fn decided(obj: &GuestRedemptionReset, approval: &Approval) -> String {
    format!(
        "{} generation {} of {}/{} as {}: {}\n",
        approval.decision,
        approval.generation,
        obj.namespace().unwrap_or_default(),
        obj.name_any(),
        approval.by,
        approval.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::fixtures::{now, object};

    #[test]
    fn the_record_is_for_the_generation_that_was_read() {
        let obj = object(3, None);
        let approval = record(
            &obj,
            Decision::Approved,
            &Caller::named("bob"),
            now(),
            "CHG-1 reviewed",
        );
        assert_eq!(
            patch(&obj, &approval),
            json!({
                "metadata": {"resourceVersion": "42"},
                "status": {"approval": {
                    "generation": 3,
                    "decision": "Approved",
                    "by": "bob",
                    "at": "2026-12-02T14:01:10Z",
                    "reason": "CHG-1 reviewed",
                }},
            })
        );
    }

    #[test]
    fn a_denial_is_written_the_same_way() {
        let obj = object(5, None);
        let approval = record(
            &obj,
            Decision::Denied,
            &Caller::named("carol"),
            now(),
            "wrong address",
        );
        assert_eq!(approval.generation, 5);
        assert_eq!(
            serde_json::to_value(&approval).unwrap()["decision"],
            "Denied"
        );
        assert_eq!(
            decided(&obj, &approval),
            "Denied generation 5 of identity/alice as carol: wrong address\n"
        );
    }
}
