//! The [`Step`] the decision names next: a read, a write, or the report a pass ends with.

use jiff::Timestamp;

use super::input::{FollowUp, Lookup, Write};
use super::report::Report;
use crate::graph::DirectoryUser;
use crate::resource::Approval;

/// The next thing to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The status already says everything about this generation.
    Nothing,
    /// Act on a new value of the retry annotation: start this generation afresh.
    AcceptRetry { token: String },
    /// Nothing before this time: the last pass asked to wait (`status.nextAttemptAt`).
    Wait { until: Timestamp },
    /// Ask the API server whether the author of the decision may approve this resource.
    CheckApprover { approval: Box<Approval> },
    /// Read the controlling migration and its plan: does its approval cover this reset?
    CheckMigration { name: String },
    /// Read which approval policy and binding are in force, for the plan.
    ReadPolicy,
    /// Read the user of an interrupted attempt to look for evidence of the reset.
    ReadEvidence { user_id: String },
    /// Resolve the target by the spec's key.
    ReadUser { lookup: Lookup },
    /// Read the target by its object id: after the mail was changed, or to refresh a read.
    ReadUserById { user_id: String },
    /// Look for users that already hold the new e-mail.
    ReadEmailHolders { email: String },
    /// Find out who owns the Secret named for the redeem URL.
    CheckSecret { name: String },
    /// Write `status.attempt` with a precondition, before any Graph write.
    RecordIntent { user: Box<DirectoryUser> },
    /// Reserve the write slots of this reset (or claim those reserved for it before).
    TakeSlots { writes: u32 },
    /// Wait until the POST's write slot is usable (before the reads that precede the POST).
    AwaitSlot { until: Timestamp },
    /// Get the POST's access token in hand, before the fresh reads and the sending mark.
    PrepareSend,
    /// Read the tenant-wide pause, right before a Graph write.
    CheckTenant { write: Write },
    /// `PATCH /users/{id}` setting mail.
    SetMail { user_id: String, email: String },
    /// Write `attempt.postStartedAt` (and the state the POST starts from) with a precondition.
    MarkSending { user: Box<DirectoryUser> },
    /// `POST /invitations`.
    PostInvitation { user_id: String },
    /// `PATCH /users/{id}` putting back the mail this pass changed, after Graph refused to
    /// reset the target: no changed mail without a reset.
    RestoreMail { user_id: String, mail: String },
    /// Write the outcome to status and stop this pass.
    Report(Box<Report>),
    /// Read the guest's redemption state for the follow-through (within the read budget).
    CheckRedemption { user_id: String },
    /// Write the follow-through record (and the `Redeemed` condition).
    RecordRedemption(Box<FollowUp>),
}

impl From<Report> for Step {
    fn from(report: Report) -> Self {
        Step::Report(Box::new(report))
    }
}

/// A stage either hands on what the next stage needs or stops with a step.
pub type Stage<T> = Result<T, Step>;
