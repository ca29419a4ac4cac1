//! Four eyes for a migration (docs/security.md, "Approval of a migration"): one decision on the
//! migration's plan, naming the plan's digest, approves the resets the migration creates. Pure
//! checks; the effects layer adds the API server's word on the approver.
//!
//! A reset counts as approved by a migration only when all three hold:
//! (a) its requester of record is the controller itself (admission holds
//!     `guestreset.io/requested-by` to whoever created the reset, so only the controller can
//!     have created it);
//! (b) the migration is its controlling owner (kind, name and uid);
//! (c) its spec is exactly the reset the migration makes for an entry of the approved plan,
//!     and the plan ConfigMap's content hashes to the digest the approval names, so that
//!     someone who may edit ConfigMaps cannot slip a guest in.

use super::plan::{self, PlannedGuest};
use crate::resource::reason::{APPROVED, READY};
use crate::resource::{
    Approval, Decision, GuestDomainMigration, GuestRedemptionReset, REQUESTED_BY_ANNOTATION,
};
use kube::ResourceExt;

/// What the migration's own decision allows.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict<'a> {
    /// No decision on this generation yet.
    Awaiting,
    /// A decision exists but cannot be acted on; the text says why.
    NotActedOn(&'a Approval, String),
    Denied(&'a Approval),
    Approved(&'a Approval),
}

/// The migration's decision for `generation` whose plan has `digest`, checked on the record:
/// a requester of record who is not the approver, and for an approval the digest of the plan.
pub fn verdict<'a>(
    approval: Option<&'a Approval>,
    generation: i64,
    requested_by: Option<&str>,
    digest: &str,
) -> Verdict<'a> {
    let Some(approval) = approval.filter(|a| a.generation == generation) else {
        return Verdict::Awaiting;
    };
    let problem = match requested_by {
        None => Some(format!(
            "generation {generation} has no requester of record (annotation {REQUESTED_BY_ANNOTATION}); is the admission policy installed? Change the spec to ask again"
        )),
        Some(_) if approval.by.trim().is_empty() => {
            Some("the decision names no approver".to_owned())
        }
        Some(requester) if requester == approval.by => Some(format!(
            "{requester} requested generation {generation} and cannot decide on it; another person must"
        )),
        Some(_) => None,
    };
    if let Some(problem) = problem {
        return Verdict::NotActedOn(approval, problem);
    }
    match approval.decision {
        Decision::Denied => Verdict::Denied(approval),
        Decision::Approved => match approval.digest.as_deref() {
            Some(named) if named == digest => Verdict::Approved(approval),
            Some(named) => Verdict::NotActedOn(
                approval,
                format!(
                    "it approves the plan with digest {named}, but the plan of generation {generation} has digest {digest}; review the plan and decide again"
                ),
            ),
            None => Verdict::NotActedOn(
                approval,
                format!(
                    "an approval of a migration must name the digest of the plan it approves ({digest})"
                ),
            ),
        },
    }
}

/// The migration that controls `reset`, by kind and name, with its uid.
pub fn controlling_migration(reset: &GuestRedemptionReset) -> Option<(&str, &str)> {
    reset
        .owner_references()
        .iter()
        .find(|o| {
            o.controller == Some(true)
                && o.kind == "GuestDomainMigration"
                && o.api_version.starts_with("guestreset.io/")
        })
        .map(|o| (o.name.as_str(), o.uid.as_str()))
}

/// Whether `reset` is approved by the approved plan of `migration`, whose plan ConfigMap
/// lists `listed`; `Ok` names the approver. See the module documentation for the three rules.
pub fn grant(
    reset: &GuestRedemptionReset,
    own_identity: &str,
    migration: &GuestDomainMigration,
    listed: Option<&str>,
) -> Result<String, String> {
    // (a) created by the controller.
    let requester = reset.annotations().get(REQUESTED_BY_ANNOTATION);
    if requester.map(String::as_str) != Some(own_identity) {
        return Err(format!(
            "it was not created by the controller ({own_identity}) but requested by {}",
            requester.map_or("nobody of record", String::as_str)
        ));
    }
    // (b) controlled by this very migration.
    let (name, uid) = controlling_migration(reset).ok_or("it has no controlling migration")?;
    if name != migration.name_any() || Some(uid) != migration.metadata.uid.as_deref() {
        return Err(format!("its owner {name} ({uid}) is not this migration"));
    }
    // The migration's decision, acted on by the controller, for its current generation.
    let generation = migration.metadata.generation.unwrap_or(0);
    let status = migration
        .status
        .as_ref()
        .ok_or("the migration has no status")?;
    let acted_on = status.conditions.iter().any(|c| {
        c.type_ == APPROVED && c.status == "True" && c.observed_generation == Some(generation)
    }) && status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.observed_generation == Some(generation));
    let plan = status
        .plan
        .as_ref()
        .filter(|p| p.generation == generation)
        .ok_or("the migration has no plan for its current generation")?;
    let requested_by = migration
        .annotations()
        .get(REQUESTED_BY_ANNOTATION)
        .map(String::as_str);
    let approval = match verdict(
        status.approval.as_ref(),
        generation,
        requested_by,
        &plan.digest,
    ) {
        Verdict::Approved(a) if acted_on => a,
        Verdict::Approved(_) => return Err("the migration's approval was not acted on".into()),
        Verdict::Awaiting => return Err("the migration's plan is not approved".into()),
        Verdict::Denied(a) => return Err(format!("{} denied the migration's plan", a.by)),
        Verdict::NotActedOn(_, problem) => return Err(problem),
    };
    // (c) an entry of the approved plan, whose list hashes to the approved digest.
    let listed = listed.ok_or("the plan ConfigMap is missing")?;
    let planned: Vec<PlannedGuest> =
        plan::parse_planned(listed).ok_or("the plan ConfigMap is malformed")?;
    if plan::digest(&migration.spec, &planned) != plan.digest {
        return Err(format!(
            "the plan ConfigMap does not hash to the approved digest {}",
            plan.digest
        ));
    }
    let id = reset.spec.user.id.as_deref().ok_or("it names no user id")?;
    let entry = planned
        .iter()
        .find(|g| g.id == id)
        .ok_or_else(|| format!("user {id} is not in the approved plan"))?;
    if plan::reset_spec(&migration.spec, entry) != reset.spec {
        return Err(format!(
            "its spec is not the reset the approved plan makes for user {id}"
        ));
    }
    Ok(approval.by.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{GuestDomainMigrationSpec, GuestDomainMigrationStatus, MigrationPlan};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
    use std::collections::BTreeMap;

    const CONTROLLER: &str = "system:serviceaccount:guestreset-system:guestreset";

    fn at() -> Time {
        Time(jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    fn approval(by: &str, digest: &str) -> Approval {
        Approval {
            generation: 1,
            decision: Decision::Approved,
            by: by.into(),
            groups: vec![],
            at: at(),
            reason: "ok".into(),
            retry: None,
            digest: Some(digest.into()),
            admitted_under: None,
        }
    }

    fn planned() -> Vec<PlannedGuest> {
        vec![
            PlannedGuest {
                id: "id-1".into(),
                email: "ann@fabrikam.example".into(),
                mail: "ann@contoso.com".into(),
            },
            PlannedGuest {
                id: "id-2".into(),
                email: "bob@fabrikam.example".into(),
                mail: "bob@contoso.com".into(),
            },
        ]
    }

    fn migration() -> GuestDomainMigration {
        let spec: GuestDomainMigrationSpec = serde_json::from_value(serde_json::json!({
            "from": "contoso.com", "to": "fabrikam.example", "changeRef": "CHG-1"
        }))
        .unwrap();
        let digest = plan::digest(&spec, &planned());
        let mut m = GuestDomainMigration::new("m", spec);
        m.metadata.namespace = Some("identity".into());
        m.metadata.uid = Some("uid-m".into());
        m.metadata.generation = Some(1);
        m.metadata.annotations = Some(BTreeMap::from([(
            REQUESTED_BY_ANNOTATION.into(),
            "alice".into(),
        )]));
        let condition = |t: &str| Condition {
            type_: t.into(),
            status: "True".into(),
            reason: "x".into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: at(),
        };
        m.status = Some(GuestDomainMigrationStatus {
            observed_generation: Some(1),
            conditions: vec![condition(READY), condition(APPROVED)],
            plan: Some(MigrationPlan {
                generation: 1,
                guests: 2,
                digest: digest.clone(),
                listed_in: "ConfigMap/m-plan".into(),
                planned_at: at(),
                members: 0,
                conflicts: 0,
                pages: 1,
            }),
            approval: Some(approval("bob", &digest)),
            ..GuestDomainMigrationStatus::default()
        });
        m
    }

    fn reset_for(
        m: &GuestDomainMigration,
        guest: &PlannedGuest,
        requester: &str,
    ) -> GuestRedemptionReset {
        let mut r = GuestRedemptionReset::new("r", plan::reset_spec(&m.spec, guest));
        r.metadata.annotations = Some(BTreeMap::from([(
            REQUESTED_BY_ANNOTATION.into(),
            requester.into(),
        )]));
        r.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "guestreset.io/v1alpha1".into(),
            kind: "GuestDomainMigration".into(),
            name: "m".into(),
            uid: "uid-m".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        r
    }

    #[test]
    fn a_reset_the_controller_made_from_the_approved_plan_is_granted() {
        let m = migration();
        let text = plan::planned_text(&planned());
        let r = reset_for(&m, &planned()[0], CONTROLLER);
        assert_eq!(grant(&r, CONTROLLER, &m, Some(&text)), Ok("bob".into()));
    }

    #[test]
    fn a_reset_someone_else_created_is_not_granted_even_with_the_owner_reference() {
        // carol creates a reset for a planned guest, owned by the approved migration.
        let m = migration();
        let text = plan::planned_text(&planned());
        let r = reset_for(&m, &planned()[0], "carol");
        let err = grant(&r, CONTROLLER, &m, Some(&text)).unwrap_err();
        assert!(err.contains("requested by carol"), "{err}");
    }

    #[test]
    fn a_guest_slipped_into_the_configmap_is_not_granted() {
        let m = migration();
        let mallory = PlannedGuest {
            id: "id-9".into(),
            email: "mallory@fabrikam.example".into(),
            mail: "m@contoso.com".into(),
        };
        let mut tampered = planned();
        tampered.push(mallory.clone());
        let r = reset_for(&m, &mallory, CONTROLLER);
        let err = grant(&r, CONTROLLER, &m, Some(&plan::planned_text(&tampered))).unwrap_err();
        assert!(
            err.contains("does not hash to the approved digest"),
            "{err}"
        );
        // With the untampered list the guest is simply not in the plan.
        let err = grant(&r, CONTROLLER, &m, Some(&plan::planned_text(&planned()))).unwrap_err();
        assert!(err.contains("not in the approved plan"), "{err}");
    }

    #[test]
    fn another_owner_a_changed_spec_or_an_unapproved_plan_is_not_granted() {
        let m = migration();
        let text = plan::planned_text(&planned());
        let mut r = reset_for(&m, &planned()[0], CONTROLLER);
        r.metadata.owner_references.as_mut().unwrap()[0].uid = "uid-other".into();
        assert!(
            grant(&r, CONTROLLER, &m, Some(&text))
                .unwrap_err()
                .contains("not this migration")
        );
        let mut r = reset_for(&m, &planned()[0], CONTROLLER);
        r.spec.email = "ann@evil.example".into();
        assert!(
            grant(&r, CONTROLLER, &m, Some(&text))
                .unwrap_err()
                .contains("not the reset")
        );
        let r = reset_for(&m, &planned()[0], CONTROLLER);
        let mut unapproved = migration();
        unapproved.status.as_mut().unwrap().approval = None;
        assert!(grant(&r, CONTROLLER, &unapproved, Some(&text)).is_err());
        let mut not_acted = migration();
        not_acted
            .status
            .as_mut()
            .unwrap()
            .conditions
            .retain(|c| c.type_ != APPROVED);
        assert!(grant(&r, CONTROLLER, &not_acted, Some(&text)).is_err());
        assert!(grant(&r, CONTROLLER, &m, None).is_err());
    }

    #[test]
    fn the_verdict_follows_the_record() {
        let a = approval("bob", "sha256:x");
        assert_eq!(
            verdict(None, 1, Some("alice"), "sha256:x"),
            Verdict::Awaiting
        );
        assert_eq!(
            verdict(Some(&a), 1, Some("alice"), "sha256:x"),
            Verdict::Approved(&a)
        );
        assert!(matches!(
            verdict(Some(&a), 1, Some("bob"), "sha256:x"),
            Verdict::NotActedOn(..)
        ));
        assert!(matches!(
            verdict(Some(&a), 1, None, "sha256:x"),
            Verdict::NotActedOn(..)
        ));
        assert!(matches!(
            verdict(Some(&a), 1, Some("alice"), "sha256:y"),
            Verdict::NotActedOn(..)
        ));
        assert_eq!(
            verdict(Some(&a), 2, Some("alice"), "sha256:x"),
            Verdict::Awaiting
        );
        let mut no_digest = a.clone();
        no_digest.digest = None;
        assert!(matches!(
            verdict(Some(&no_digest), 1, Some("alice"), "sha256:x"),
            Verdict::NotActedOn(..)
        ));
        let mut denied = a.clone();
        denied.decision = Decision::Denied;
        assert_eq!(
            verdict(Some(&denied), 1, Some("alice"), "sha256:y"),
            Verdict::Denied(&denied)
        );
    }
}
