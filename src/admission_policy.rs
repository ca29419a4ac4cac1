//! Is the approval policy installed? With `--require-approval` the four-eyes rules live in the
//! API server (docs/security.md, "Approval"): a ValidatingAdmissionPolicy and a binding that
//! denies. Without them anyone allowed to patch the status could write an approval, so the
//! controller does not become ready (nor reconcile) until both exist, and checks again before
//! it acts on any approval.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::Client;
use kube::api::Api;

use crate::resource::PolicyVersion;

/// How often start-up looks for the policy while it is missing.
pub const POLL: Duration = Duration::from_secs(5);

/// Why the installed objects do not enforce the approval rules; `None` when they do.
pub fn problem(
    name: &str,
    policy: Option<&ValidatingAdmissionPolicy>,
    binding: Option<&ValidatingAdmissionPolicyBinding>,
) -> Option<String> {
    let Some(policy) = policy else {
        return Some(format!(
            "the ValidatingAdmissionPolicy {name} is not installed; install the chart with requireApproval=true (docs/install.md)"
        ));
    };
    let fails_closed = policy
        .spec
        .as_ref()
        .and_then(|s| s.failure_policy.as_deref())
        .is_none_or(|p| p == "Fail");
    if !fails_closed {
        return Some(format!(
            "the ValidatingAdmissionPolicy {name} has failurePolicy Ignore; approvals must fail closed"
        ));
    }
    let Some(binding) = binding.and_then(|b| b.spec.as_ref()) else {
        return Some(format!(
            "the ValidatingAdmissionPolicyBinding {name} is not installed; without it the policy is not enforced"
        ));
    };
    if binding.policy_name.as_deref() != Some(name) {
        return Some(format!(
            "the ValidatingAdmissionPolicyBinding {name} binds {:?}, not the policy {name}",
            binding.policy_name
        ));
    }
    let denies = binding
        .validation_actions
        .as_ref()
        .is_some_and(|actions| actions.iter().any(|a| a == "Deny"));
    (!denies).then(|| {
        format!("the ValidatingAdmissionPolicyBinding {name} does not Deny; approvals would only be audited")
    })
}

/// Reads the policy and its binding (both named `name`) and says what is wrong, if anything.
pub async fn check(client: &Client, name: &str) -> Result<Option<String>, kube::Error> {
    Ok(enforced(client, name).await?.err())
}

/// Reads the policy and its binding (both named `name`): which versions of them enforce the
/// approval rules now, or what is wrong.
pub async fn enforced(
    client: &Client,
    name: &str,
) -> Result<Result<PolicyVersion, String>, kube::Error> {
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let policy = policies.get_opt(name).await?;
    let binding = bindings.get_opt(name).await?;
    if let Some(problem) = problem(name, policy.as_ref(), binding.as_ref()) {
        return Ok(Err(problem));
    }
    let (policy, binding) = (policy.unwrap_or_default(), binding.unwrap_or_default());
    Ok(Ok(PolicyVersion {
        policy_uid: policy.metadata.uid.unwrap_or_default(),
        policy_generation: policy.metadata.generation.unwrap_or_default(),
        binding_uid: binding.metadata.uid.unwrap_or_default(),
        binding_version: binding.metadata.resource_version.unwrap_or_default(),
    }))
}

/// Why a decision must not be acted on although its author may approve: it was not written
/// under the policy and binding in force now (none named, or others: the binding was deleted,
/// re-created or edited since, and a decision written meanwhile was admitted by nothing).
pub fn admitted_problem(named: Option<&PolicyVersion>, now: &PolicyVersion) -> Option<String> {
    match named {
        None => Some(
            "it names no approval policy it was admitted under (status.approval.admittedUnder); decide with kubectl guestreset once the plan is on record".to_owned(),
        ),
        Some(named) if named != now => Some(format!(
            "it was written under approval policy {}/{} and binding {}/{}, but {}/{} and {}/{} are in force now: the policy was re-created or edited since, so nothing shows that it admitted this decision",
            named.policy_uid,
            named.policy_generation,
            named.binding_uid,
            named.binding_version,
            now.policy_uid,
            now.policy_generation,
            now.binding_uid,
            now.binding_version
        )),
        Some(_) => None,
    }
}

/// Waits until the policy is installed, saying what is missing now and then. Returns only once
/// it is (the caller races this with the stop).
pub async fn wait_until_installed(client: &Client, name: &str) {
    let mut said = None;
    loop {
        let found = match check(client, name).await {
            Ok(None) => {
                tracing::info!(policy = name, "the approval policy is installed");
                return;
            }
            Ok(Some(problem)) => problem,
            Err(err) => format!("cannot read the approval policy {name}: {err}"),
        };
        if said.as_ref() != Some(&found) {
            tracing::error!(
                policy = name,
                problem = %found,
                "--require-approval: not ready, and nothing is reconciled, until the approval policy is enforced"
            );
            said = Some(found);
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicyBindingSpec, ValidatingAdmissionPolicySpec,
    };
    use kube::api::ObjectMeta;

    fn policy(failure: Option<&str>) -> ValidatingAdmissionPolicy {
        ValidatingAdmissionPolicy {
            metadata: ObjectMeta::default(),
            spec: Some(ValidatingAdmissionPolicySpec {
                failure_policy: failure.map(str::to_owned),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn binding(policy: &str, actions: &[&str]) -> ValidatingAdmissionPolicyBinding {
        ValidatingAdmissionPolicyBinding {
            metadata: ObjectMeta::default(),
            spec: Some(ValidatingAdmissionPolicyBindingSpec {
                policy_name: Some(policy.to_owned()),
                validation_actions: Some(actions.iter().map(|a| (*a).to_owned()).collect()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn only_a_bound_denying_fail_closed_policy_counts() {
        let (p, b) = (policy(Some("Fail")), binding("gr", &["Deny"]));
        assert_eq!(problem("gr", Some(&p), Some(&b)), None);
        assert_eq!(problem("gr", Some(&policy(None)), Some(&b)), None);
        let cases = [
            (None, Some(b.clone()), "is not installed"),
            (Some(p.clone()), None, "Binding gr is not installed"),
            (Some(policy(Some("Ignore"))), Some(b.clone()), "Ignore"),
            (Some(p.clone()), Some(binding("other", &["Deny"])), "binds"),
            (
                Some(p.clone()),
                Some(binding("gr", &["Audit", "Warn"])),
                "does not Deny",
            ),
        ];
        for (policy, binding, says) in cases {
            let found = problem("gr", policy.as_ref(), binding.as_ref());
            assert!(
                found.as_deref().is_some_and(|f| f.contains(says)),
                "{found:?} should say {says}"
            );
        }
    }

    #[test]
    fn a_decision_counts_only_under_the_policy_in_force() {
        let now = PolicyVersion {
            policy_uid: "p".into(),
            policy_generation: 1,
            binding_uid: "b".into(),
            binding_version: "10".into(),
        };
        assert_eq!(admitted_problem(Some(&now), &now), None);
        assert!(admitted_problem(None, &now).is_some());
        let recreated = PolicyVersion {
            binding_uid: "b2".into(),
            ..now.clone()
        };
        let edited = PolicyVersion {
            binding_version: "12".into(),
            ..now.clone()
        };
        let policy_edited = PolicyVersion {
            policy_generation: 3,
            ..now.clone()
        };
        for named in [recreated, edited, policy_edited] {
            let problem = admitted_problem(Some(&named), &now).unwrap();
            assert!(problem.contains("re-created or edited"), "{problem}");
        }
    }
}
