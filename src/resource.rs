//! The `GuestRedemptionReset` resource: spec, status and the admission rules that the
//! API server enforces through the CRD's OpenAPI schema and CEL rules.
//!
//! Validation lives in the schema, not in the controller, so that `kubectl apply` of a bad
//! manifest is refused before anything is stored, with a message that names the field.
//!
//! The files, bottom up: [`common`] (the e-mail rule, the invitation e-mail), [`approval`] and
//! [`redemption`] (parts of the status), [`precision`] (times as stored), [`reset`] and
//! [`migration`] (the two resources), [`reason`] (the API's words: condition types and
//! reasons, shared by the controller, the metrics and the plugin).

mod approval;
mod common;
pub mod migration;
pub mod precision;
pub mod reason;
mod redemption;
mod reset;

pub use approval::{
    Approval, Decision, PolicyVersion, REQUESTED_BY_ANNOTATION, RETRY_REQUESTED_BY_ANNOTATION,
};
pub use common::{DEFAULT_REDIRECT_URL, InvitationMessage};
pub use migration::{
    GuestDomainMigration, GuestDomainMigrationSpec, GuestDomainMigrationStatus, MigrationPlan,
    Progress,
};
pub use redemption::{Redemption, RedemptionState};
pub use reset::*;
