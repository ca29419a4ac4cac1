//! The controller's second look at an approver: a SubjectAccessReview asks the API server's
//! authorizer whether the user who wrote the decision, with the groups it was authenticated
//! with, holds the verb `approve` on this resource now (docs/security.md, "Approval").

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::resource::{Approval, GROUP, GuestRedemptionReset};

/// The verb an approver needs on `guestredemptionresets` (group guestreset.io).
pub const APPROVE_VERB: &str = "approve";

/// The review that asks whether the approval's author may approve `obj`.
pub fn review_of(obj: &GuestRedemptionReset, approval: &Approval) -> SubjectAccessReview {
    review_for(
        "guestredemptionresets",
        obj.namespace().as_deref(),
        &obj.name_any(),
        approval,
    )
}

/// The review that asks whether the approval's author may approve the object `name` of
/// `resource` (a plural of group guestreset.io) in `namespace`.
pub fn review_for(
    resource: &str,
    namespace: Option<&str>,
    name: &str,
    approval: &Approval,
) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(approval.by.clone()),
            groups: (!approval.groups.is_empty()).then(|| approval.groups.clone()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(GROUP.to_owned()),
                resource: Some(resource.to_owned()),
                verb: Some(APPROVE_VERB.to_owned()),
                namespace: namespace.map(str::to_owned),
                name: Some(name.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// Asks the API server whether the admission policy `policy` is still enforced and whether the
/// approval's author may approve `obj`; the error says why the approval must not be acted on.
pub async fn may_approve(
    client: Client,
    policy: Option<String>,
    obj: &GuestRedemptionReset,
    approval: &Approval,
) -> Result<Result<(), String>, kube::Error> {
    may_approve_review(client, policy, review_of(obj, approval), approval).await
}

/// As [`may_approve`] for the review `review` (of any resource of the group).
pub async fn may_approve_review(
    client: Client,
    policy: Option<String>,
    review: SubjectAccessReview,
    approval: &Approval,
) -> Result<Result<(), String>, kube::Error> {
    let resource = review
        .spec
        .resource_attributes
        .as_ref()
        .and_then(|a| a.resource.clone())
        .unwrap_or_default();
    if let Some(policy) = policy {
        let now = match crate::admission_policy::enforced(&client, &policy).await? {
            Ok(now) => now,
            Err(problem) => return Ok(Err(problem)),
        };
        let named = approval.admitted_under.as_ref();
        if let Some(problem) = crate::admission_policy::admitted_problem(named, &now) {
            return Ok(Err(problem));
        }
    }
    let reviews: Api<SubjectAccessReview> = Api::all(client);
    let answer = reviews.create(&PostParams::default(), &review).await?;
    let allowed = answer
        .status
        .is_some_and(|s| s.allowed && s.denied != Some(true));
    Ok(allowed.then_some(()).ok_or_else(|| {
        format!(
            "the API server says {} may not approve {resource} here (verb {APPROVE_VERB} on {resource}.guestreset.io)",
            approval.by
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures;

    #[test]
    fn the_review_names_the_user_groups_verb_and_object() {
        let obj = fixtures::resource("alice-to-newco", "identity");
        let approval = fixtures::approval(1, crate::resource::Decision::Approved, "bob");
        let review = review_of(&obj, &approval).spec;
        assert_eq!(review.user.as_deref(), Some("bob"));
        assert_eq!(review.groups, Some(vec!["approvers".to_owned()]));
        let attrs = review.resource_attributes.unwrap();
        assert_eq!(attrs.group.as_deref(), Some("guestreset.io"));
        assert_eq!(attrs.resource.as_deref(), Some("guestredemptionresets"));
        assert_eq!(attrs.verb.as_deref(), Some("approve"));
        assert_eq!(attrs.namespace.as_deref(), Some("identity"));
        assert_eq!(attrs.name.as_deref(), Some("alice-to-newco"));
    }
}
