//! What a pass ends with: the [`Report`] of the decision, and the report of a failed Graph call.

use std::time::Duration;

use super::input::{Failure, FollowUp, Observed};
use crate::backoff::Backoff;
use crate::graph::DirectoryUser;
use crate::resource::reason::Reason;

/// How often a stopped-by-permission resource is tried again (every 10 minutes).
pub const FORBIDDEN_RETRY: Duration = Duration::from_secs(600);
/// A throttled call without Retry-After waits this long.
pub const THROTTLE_DEFAULT: Duration = Duration::from_secs(30);

/// What happened, for the status, the Event and the requeue.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub reason: Reason,
    pub message: String,
    /// When to look again; `None` waits for a change of the resource.
    pub requeue: Option<Duration>,
    /// What becomes of `status.attempt`.
    pub attempt: AttemptChange,
    /// The attempt this report is the outcome of. Such a report is written only onto that
    /// attempt: when the status holds another attempt or none, it has moved on and the report
    /// is dropped (docs/design.md, "The attempt-id rule").
    pub for_attempt: Option<String>,
    /// The resolved user to record, when this pass resolved it.
    pub user: Option<DirectoryUser>,
    /// An invitation to record.
    pub issued: Option<Issued>,
    /// New value of `status.userMissingSince` (`Some(None)` clears it).
    pub user_missing_since: Option<Option<jiff::Timestamp>>,
    /// Whether the tenant-wide pause should start (Graph's abuse answer).
    pub pause_tenant: bool,
    /// The follow-through an `Issued` report starts (docs/resource.md, "Following through").
    pub redemption: Option<FollowUp>,
    /// What the controller will do once the generation is approved (`status.plan`).
    pub plan: Option<String>,
    /// The approval policy in force when the plan was made (`status.admittedUnder`), written
    /// with the plan.
    pub admitted_under: Option<crate::resource::PolicyVersion>,
    /// The requeue is a turn kept for this resource (a write slot): it is taken at that time,
    /// without the jitter that spreads other retries.
    pub on_time: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptChange {
    Keep,
    Clear,
}

/// An invitation to record in status and history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub generation: i64,
    pub email: String,
    pub invitation_id: String,
    pub redeem_status: Option<String>,
    pub recovered: bool,
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
}

impl Report {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Report {
            reason,
            message: message.into(),
            requeue: None,
            attempt: AttemptChange::Keep,
            for_attempt: None,
            user: None,
            issued: None,
            user_missing_since: None,
            pause_tenant: false,
            redemption: None,
            plan: None,
            admitted_under: None,
            on_time: false,
        }
    }

    /// The requeue is kept exactly (see [`Report::on_time`]).
    pub fn on_time(mut self) -> Self {
        self.on_time = true;
        self
    }

    pub fn requeue(mut self, after: Duration) -> Self {
        self.requeue = Some(after);
        self
    }

    pub fn clear_attempt(mut self) -> Self {
        self.attempt = AttemptChange::Clear;
        self
    }

    pub fn for_attempt(mut self, id: &str) -> Self {
        self.for_attempt = Some(id.to_owned());
        self
    }

    pub fn with_user(mut self, user: &DirectoryUser) -> Self {
        self.user = Some(user.clone());
        self
    }
}

/// Backoff for transient failures: 5 s, 10 s, 20 s, ... up to 5 minutes.
const TRANSIENT: Backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));

/// The wait after `failures` consecutive failed passes (the requeue adds the spread).
pub fn transient_backoff(failures: u32) -> Duration {
    TRANSIENT.ceiling(failures.saturating_add(1))
}

/// The report for a failed Graph call; `doing` says what the controller was doing.
pub fn report_failure(o: &Observed<'_>, failure: &Failure, doing: &str) -> Report {
    match failure {
        Failure::Throttled { retry_after } => {
            let after = retry_after.unwrap_or(THROTTLE_DEFAULT);
            Report::new(
                Reason::Throttled,
                format!("Graph throttled {doing}; retrying after {}s", after.as_secs()),
            )
            .requeue(after)
        }
        Failure::Transient(detail) | Failure::Ambiguous(detail) => {
            let after = transient_backoff(o.failures);
            Report::new(
                Reason::TransientError,
                format!("{doing} failed: {detail}; retrying in {}s", after.as_secs()),
            )
            .requeue(after)
        }
        Failure::Forbidden(detail) => Report::new(
            Reason::Forbidden,
            format!(
                "Graph refused {doing}: {detail}. The application needs User.ReadWrite.All, and app-only calls cannot reset a user who holds a directory role; retrying every 10 minutes"
            ),
        )
        .requeue(FORBIDDEN_RETRY),
        Failure::TargetRefused(detail) => Report::new(
            Reason::Forbidden,
            format!(
                "Graph refused {doing}: {detail}. Even with User.ReadWrite.All, app-only calls cannot reset a user who holds a directory role: a person with the User Administrator role resets this one; not retried"
            ),
        ),
        Failure::AbuseBlocked(detail) => Report {
            pause_tenant: true,
            ..Report::new(
                Reason::TenantBlocked,
                format!(
                    "Graph's abuse protection blocked invitations for this tenant: {detail}; all issuance pauses"
                ),
            )
        },
        Failure::EmailNotOnUser(detail) | Failure::Rejected(detail) => Report::new(
            Reason::GraphRejected,
            format!("Graph refused {doing}: {detail}"),
        ),
        Failure::NotFound(detail) => Report::new(
            Reason::UserNotFound,
            format!("Graph no longer finds the user while {doing}: {detail}"),
        ),
    }
}
