//! The four-eyes part of the status (docs/resource.md, "Approval"): who asked for a generation
//! and what an approver decided about it. The admission policy shipped in the chart
//! (docs/security.md, "Approval") is what makes these fields trustworthy: it lets only a holder
//! of the `approve` verb who is not the requester write `approval`, and only for the current
//! generation.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Annotation naming the requester of the current generation. Admission accepts it only when
/// it equals the user making the change, on creation and on every spec change, and refuses any
/// change to it otherwise: it is the API server's record of who asked, never a free field.
pub const REQUESTED_BY_ANNOTATION: &str = "guestreset.io/requested-by";

/// Annotation naming who asked for the current value of `guestreset.io/retry`. Admission holds
/// it to the user who sets or changes the retry annotation, and refuses any other change to it:
/// with approval required a retry is a new request, and its requester may not decide on it.
pub const RETRY_REQUESTED_BY_ANNOTATION: &str = "guestreset.io/retry-requested-by";

/// An approver's decision about one generation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// The spec generation decided on; any spec change makes a new generation that needs a new
    /// decision.
    pub generation: i64,
    pub decision: Decision,
    /// The approver's user name, as the API server authenticated it.
    #[schemars(length(min = 1, max = 512))]
    pub by: String,
    /// The approver's groups, as the API server authenticated them: the controller asks the
    /// API server again whether this user, with these groups, may approve, before it acts on
    /// the approval (an approve right granted to a group would otherwise look missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub groups: Vec<String>,
    /// When the approver decided.
    pub at: Time,
    /// Why: a review note, a change ticket.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// The value of the `guestreset.io/retry` annotation decided on, absent when there was
    /// none: an approval covers this retry only (a new retry needs a new approval), while a
    /// denial is final for the whole generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub retry: Option<String>,
    /// The digest of the spec the approver read (`sha256:` and hex, as the plan shows it): the
    /// controller acts on the decision only while it is the digest of the current spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 80))]
    pub digest: Option<String>,
    /// The admission policy and binding in force when the decision was written, as the
    /// controller published them in `status.admittedUnder` (docs/security.md, "Approval"): the
    /// controller acts only when they are still the ones in force, so a decision written while
    /// the policy was unbound, re-created or edited is never acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_under: Option<PolicyVersion>,
}

/// The identity and version of the approval policy and its binding: the uids change when they
/// are re-created; the policy's generation and the binding's resourceVersion change with every
/// edit (the binding has no status, so its resourceVersion moves only with a change, and it
/// cannot be guessed ahead as a generation can).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyVersion {
    #[schemars(length(max = 64))]
    pub policy_uid: String,
    pub policy_generation: i64,
    #[schemars(length(max = 64))]
    pub binding_uid: String,
    #[schemars(length(max = 64))]
    pub binding_version: String,
}

/// Approved lets the controller issue the generation; Denied is final for it.
#[derive(
    schemars::JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    strum::IntoStaticStr,
    strum::Display,
)]
pub enum Decision {
    Approved,
    Denied,
}

impl Approval {
    /// The decision, when it is about `generation`.
    pub fn for_generation(&self, generation: i64) -> Option<Decision> {
        (self.generation == generation).then_some(self.decision)
    }

    /// Whether the decision covers `generation` with the retry annotation `retry`: a denial
    /// covers every retry of its generation, an approval only the retry it names.
    pub fn covers(&self, generation: i64, retry: Option<&str>) -> bool {
        self.generation == generation
            && (self.decision == Decision::Denied || self.retry.as_deref() == retry)
    }
}
