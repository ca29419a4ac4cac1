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
}
