//! What the decision sees: the resource ([`Observed`]), the [`Settings`], the tenant gate,
//! what the executor learnt so far in this pass ([`Learned`]), and Graph's failures as the
//! decision needs them ([`Failure`]).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::schedule::Schedule;
use crate::graph::DirectoryUser;
use crate::resource::{
    Attempt, GuestRedemptionResetSpec, GuestRedemptionResetStatus, PolicyVersion, Redemption,
    UserKey,
};

/// The resource as the controller sees it now (after this pass's own writes).
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    pub spec: &'a GuestRedemptionResetSpec,
    pub generation: i64,
    /// The value of the `guestreset.io/retry` annotation, if any.
    pub retry_annotation: Option<&'a str>,
    /// The requester of this generation: the `guestreset.io/requested-by` annotation, which
    /// admission holds to the user who made the generation.
    pub requested_by: Option<&'a str>,
    /// Who asked for the current value of the retry annotation: the
    /// `guestreset.io/retry-requested-by` annotation, which admission holds to the user who set it.
    pub retry_requested_by: Option<&'a str>,
    pub status: &'a GuestRedemptionResetStatus,
    /// Consecutive failed passes of this generation that the controller remembers.
    pub failures: u32,
    /// The GuestDomainMigration that controls this reset (its owner reference), if any.
    pub migration: Option<&'a str>,
}

/// Controller-wide settings that shape decisions.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Lower-case domains an e-mail (and the cc recipient) may belong to; empty means any.
    pub allowed_email_domains: Vec<String>,
    /// How long the directory may take to show a change (new user, reset evidence).
    pub replication_window: SignedDuration,
    /// Allowance for clocks that disagree when comparing Graph's times with ours.
    pub clock_skew: SignedDuration,
    /// How long a POST may still take effect after it was sent (the Graph request timeout).
    pub post_timeout: SignedDuration,
    /// When the follow-through reads the guest after `Issued`, and for how long.
    pub schedule: Schedule,
    /// No Graph write for a generation before a person other than its requester approved it
    /// (`--require-approval`).
    pub require_approval: bool,
    /// The controller's own user name as the API server authenticates it: the requester of
    /// record of the resets it creates for a domain migration.
    pub own_identity: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allowed_email_domains: vec![],
            replication_window: SignedDuration::from_mins(2),
            clock_skew: SignedDuration::from_secs(60),
            post_timeout: SignedDuration::from_secs(30),
            schedule: Schedule::default(),
            require_approval: false,
            own_identity: None,
        }
    }
}

/// Whether Graph writes may happen now (the tenant-wide pause of docs/design.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantGate {
    Open,
    Paused { until: Timestamp },
}

/// A Graph failure, reduced to what the decision needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// 429: not processed; try after the given time.
    Throttled { retry_after: Option<Duration> },
    /// Nothing reached Graph, or a read that may be repeated failed: try again later.
    Transient(String),
    /// The POST may have taken effect (timeout, connection lost, 5xx after sending).
    Ambiguous(String),
    /// 401/403: missing permission (or a refusal Graph does not explain): retried.
    Forbidden(String),
    /// 403 `Authorization_RequestDenied` to the reset: Graph refuses this target (app-only
    /// callers cannot reset a user who holds a directory role). Final.
    TargetRefused(String),
    /// Graph's abuse protection blocks invitations for the tenant.
    AbuseBlocked(String),
    /// Graph refused the reset because the email is not on the user object.
    EmailNotOnUser(String),
    /// 404 on a write: the user is gone.
    NotFound(String),
    /// Any other definite 4xx; the text carries Graph's code and message.
    Rejected(String),
}

/// How the target is looked up: the spec's key, owned so that a step can carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Id(String),
    UserPrincipalName(String),
    Mail(String),
}

impl From<UserKey<'_>> for Lookup {
    fn from(key: UserKey<'_>) -> Self {
        match key {
            UserKey::Id(v) => Lookup::Id(v.to_owned()),
            UserKey::UserPrincipalName(v) => Lookup::UserPrincipalName(v.to_owned()),
            UserKey::Mail(v) => Lookup::Mail(v.to_owned()),
        }
    }
}

/// What a lookup of the target found.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    Found(DirectoryUser),
    NotFound,
    /// `user.mail` matched this many users.
    Ambiguous(usize),
}

/// Who owns the Secret the spec names for the redeem URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretOwner {
    /// No such Secret: the controller will create it, owned by the resource.
    Absent,
    /// This resource owns it (it created it before): it may be updated.
    ThisResource,
    /// Someone else's Secret: never read into, written or adopted.
    Foreign,
}

/// What the invitation POST answered, without the redeem URL (the executor keeps it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    pub invitation_id: String,
    pub redeem_status: String,
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
}

/// A read and the moment it started, so that the decision can tell how fresh it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Read<T> {
    pub result: Result<T, Failure>,
    pub at: Timestamp,
}

/// Which Graph write a slot or a tenant check is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Mail,
    Invitation,
}

/// The preparation of one Graph write, once its slot is reserved: the tenant gate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WritePrep {
    pub gate: Option<TenantGate>,
}

/// When the write slots reserved for a reset may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotTurn {
    /// Now: this pass holds them.
    Now,
    /// This pass holds them, the last (the POST's) usable from this time: a burst smaller
    /// than the writes spaces them at the rate. The pass waits for it before its fresh reads.
    Spaced { last: Timestamp },
    /// Not before this time: the limiter keeps them for the resource until it comes back.
    At(Timestamp),
}

/// What this pass learnt so far, in the order the steps happen.
#[derive(Clone, Debug, Default)]
pub struct Learned {
    /// The API server's answer: may the approver of this generation approve it (and is the
    /// policy that enforces approvals still in place)? The error says why not.
    pub approver_allowed: Option<Result<(), String>>,
    /// The approval policy in force, read before a plan is published (`None` inside: it is not
    /// enforced now); approvers copy it into their decision.
    pub policy: Option<Option<PolicyVersion>>,
    pub evidence: Option<Read<Option<DirectoryUser>>>,
    pub target: Option<Read<Resolution>>,
    /// The lookup by the spec's mail found nobody and the user's id was tried instead.
    pub resolved_by_id: bool,
    pub holders: Option<Read<Vec<DirectoryUser>>>,
    pub secret: Option<SecretOwner>,
    /// The intent written in this pass.
    pub intent: Option<Attempt>,
    /// The write slots of this reset, reserved before the intent.
    pub slots: Option<SlotTurn>,
    /// How many writes those slots were taken for.
    pub slot_writes: u32,
    pub mail: WritePrep,
    pub mail_set: Option<Result<(), Failure>>,
    /// The user and the e-mail holders were read again after the mail PATCH (reads from
    /// before it are repeated before the POST).
    pub user_read_after_mail: bool,
    pub holders_read_after_mail: bool,
    /// The POST's write slot is usable (the wait for a spaced slot is over).
    pub slot_awaited: bool,
    /// The access token of the POST is in hand (or why not), before the sending mark.
    pub send_ready: Option<Result<(), Failure>>,
    pub invitation: WritePrep,
    /// `attempt.postStartedAt` written in this pass, and when.
    pub marked_sending: bool,
    pub marked_at: Option<Timestamp>,
    pub posted: Option<Result<Posted, Failure>>,
    /// The mail set in this pass was put back after Graph refused the target.
    pub mail_restored: Option<Result<(), Failure>>,
    /// A random draw (0 to 1) for this pass, which spreads the follow-through's checks.
    pub spread: f64,
    /// The follow-through's read of the guest in this pass.
    pub redemption_read: Option<Read<Option<DirectoryUser>>>,
    /// The follow-through record was written in this pass: nothing more to do until its
    /// next check.
    pub redemption_recorded: bool,
    /// Whether the approved plan of the controlling migration covers this reset: the approver,
    /// or why not (docs/security.md, "Approval of a migration").
    pub migration_grant: Option<Result<String, String>>,
}

impl Learned {
    pub fn prep_mut(&mut self, write: Write) -> &mut WritePrep {
        match write {
            Write::Mail => &mut self.mail,
            Write::Invitation => &mut self.invitation,
        }
    }
}

/// A new follow-through record; `changed` when its state changed (an Event says so).
#[derive(Clone, Debug, PartialEq)]
pub struct FollowUp {
    pub redemption: Redemption,
    pub message: String,
    pub changed: bool,
}
