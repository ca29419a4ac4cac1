//! `approve NAME` and `deny NAME`: an approver's decision about the current generation,
//! written to `status.approval` through the status subresource (docs/plugin.md, "How a
//! decision is written"). Admission decides whether the caller may; the plugin shows the plan
//! first and makes sure the decision lands on the generation that was shown, and that it is
//! the one the approver reviewed: named by `--generation` or `--digest`, or confirmed on a
//! terminal after the plan was shown (docs/security.md, "Approval").

use std::io::{BufRead, IsTerminal, Write};

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
use crate::resource::{Approval, Decision, GuestRedemptionReset, RETRY_ANNOTATION, spec_digest};

pub async fn run(session: &Session, args: &DecideArgs, decision: Decision) -> Result<(), Error> {
    let api = session.api();
    let obj = api.get(&args.name).await?;
    let pinned = pinned(&obj, args).map_err(Error::NotNow)?;
    if args.without_plan && !pinned {
        return Err(Error::NotNow(
            "--without-plan needs --generation or --digest naming what you reviewed; nothing was decided".into(),
        ));
    }
    match plan::current_plan(&obj) {
        Ok(view) => output::print(&plan::describe(&view))?,
        Err(why) if args.without_plan => {
            eprintln!("warning: {why}; deciding without a plan (--without-plan)");
        }
        Err(why) => {
            return Err(Error::NotNow(format!(
                "{why}; nothing was decided (--without-plan with --generation or --digest decides anyway)"
            )));
        }
    }
    if !pinned {
        confirm(&obj, decision, std::io::stdin().is_terminal())?;
    }
    let by = session.caller().await?;
    let approval = record(&obj, decision, &by, Timestamp::now(), &args.reason);
    let patch = patch(&obj, &approval);
    write::pause_before_write();
    api.patch_status(&args.name, &write::patch_params(), &Patch::Merge(&patch))
        .await?;
    output::print(&decided(&obj, &approval))
}

/// Whether the approver named what they reviewed (`--generation`, `--digest`); an error when
/// what they named is no longer current, so that nothing is written.
pub fn pinned(obj: &GuestRedemptionReset, args: &DecideArgs) -> Result<bool, String> {
    let generation = plan::generation(obj);
    if let Some(reviewed) = args.generation
        && reviewed != generation
    {
        return Err(format!(
            "you reviewed generation {reviewed}, but the current generation is {generation}: read its plan (kubectl guestreset plan {}) and decide on it; nothing was decided",
            obj.name_any()
        ));
    }
    let digest = spec_digest(&obj.spec);
    if let Some(reviewed) = &args.digest
        && *reviewed != digest
    {
        return Err(format!(
            "you reviewed the spec with digest {reviewed}, but the current spec (generation {generation}) has digest {digest}: read its plan and decide on it; nothing was decided"
        ));
    }
    Ok(args.generation.is_some() || args.digest.is_some())
}

/// Without a pin, the approver confirms the plan just shown on a terminal; a script must name
/// the generation or digest it reviewed.
fn confirm(obj: &GuestRedemptionReset, decision: Decision, terminal: bool) -> Result<(), Error> {
    let what = format!(
        "generation {} (spec digest {})",
        plan::generation(obj),
        spec_digest(&obj.spec)
    );
    if !terminal {
        return Err(Error::Unconfirmed(format!(
            "name what you reviewed: --generation {} or --digest {} (no terminal to confirm {what} on); nothing was decided",
            plan::generation(obj),
            spec_digest(&obj.spec)
        )));
    }
    let mut err = std::io::stderr().lock();
    write!(err, "{decision} {what} as shown above? [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    match super::retry::confirmed(&answer) {
        true => Ok(()),
        false => Err(Error::Unconfirmed("nothing was decided".into())),
    }
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
        retry: obj.annotations().get(RETRY_ANNOTATION).cloned(),
        digest: Some(spec_digest(&obj.spec)),
        admitted_under: obj.status.as_ref().and_then(|s| s.admitted_under.clone()),
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
    fn the_record_is_for_the_generation_retry_spec_and_policy_that_were_read() {
        let mut obj = object(3, None);
        obj.metadata.annotations = Some([(RETRY_ANNOTATION.to_owned(), "r-7".to_owned())].into());
        let admitted = crate::resource::PolicyVersion {
            policy_uid: "p-uid".into(),
            policy_generation: 2,
            binding_uid: "b-uid".into(),
            binding_version: "981".into(),
        };
        obj.status.get_or_insert_default().admitted_under = Some(admitted);
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
                    "retry": "r-7",
                    "digest": spec_digest(&obj.spec),
                    "admittedUnder": {
                        "policyUid": "p-uid", "policyGeneration": 2,
                        "bindingUid": "b-uid", "bindingVersion": "981",
                    },
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

    fn args(generation: Option<i64>, digest: Option<&str>) -> DecideArgs {
        DecideArgs {
            name: "alice".into(),
            reason: "r".into(),
            generation,
            digest: digest.map(str::to_owned),
            without_plan: false,
        }
    }

    #[test]
    fn a_decision_names_what_was_reviewed_or_writes_nothing() {
        let obj = object(3, None);
        let digest = spec_digest(&obj.spec);
        assert_eq!(pinned(&obj, &args(None, None)), Ok(false));
        assert_eq!(pinned(&obj, &args(Some(3), None)), Ok(true));
        assert_eq!(pinned(&obj, &args(None, Some(&digest))), Ok(true));
        let stale = pinned(&obj, &args(Some(2), None)).unwrap_err();
        assert!(stale.contains("current generation is 3"), "{stale}");
        let other = pinned(&obj, &args(Some(3), Some("sha256:00"))).unwrap_err();
        assert!(other.contains(&digest), "{other}");
    }
}
