//! The decision: given the resource, its status and what Graph said so far in this pass,
//! what is the next step? A pure function, so that every reason and every crash point can be
//! tested without I/O. The effects layer (`controller/mod.rs`) performs the step, records what it
//! learnt in [`Pass`], and asks again until the answer is a [`Report`].

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::reason::Reason;
use crate::graph::DirectoryUser;
use crate::resource::{Attempt, GuestRedemptionResetSpec, GuestRedemptionResetStatus, UserKey};

/// `externalUserState` after a redemption reset.
const PENDING_ACCEPTANCE: &str = "PendingAcceptance";
/// How often a stopped-by-permission resource is tried again (API.md: every 10 minutes).
pub const FORBIDDEN_RETRY: Duration = Duration::from_secs(600);
/// How often the directory is re-read while waiting for replication.
pub const REPLICATION_POLL: Duration = Duration::from_secs(10);
/// A throttled call without Retry-After waits this long.
pub const THROTTLE_DEFAULT: Duration = Duration::from_secs(30);
/// Graph keeps refusing the reset although the mail was set: after this many tries the
/// refusal is taken as final rather than as the directory's replication delay.
pub const MAIL_PROPAGATION_TRIES: u32 = 6;

/// The resource as the controller sees it at the start of a pass.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    pub spec: &'a GuestRedemptionResetSpec,
    pub generation: i64,
    /// The value of the `guestreset.io/retry` annotation, if any.
    pub retry_annotation: Option<&'a str>,
    pub status: &'a GuestRedemptionResetStatus,
    /// Consecutive failed passes of this generation that the controller remembers.
    pub failures: u32,
}

/// Controller-wide settings that shape decisions.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Lower-case domains an e-mail may belong to; empty means any.
    pub allowed_email_domains: Vec<String>,
    /// How long the directory may take to show a change (new user, reset evidence).
    pub replication_window: SignedDuration,
    /// Allowance for clocks that disagree when comparing Graph's times with ours.
    pub clock_skew: SignedDuration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allowed_email_domains: vec![],
            replication_window: SignedDuration::from_mins(2),
            clock_skew: SignedDuration::from_secs(60),
        }
    }
}

/// Whether invitations may be posted now (API.md 3.7: the tenant-wide pause).
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
    /// 401/403: missing permission or a privileged target.
    Forbidden(String),
    /// Graph's abuse protection blocks invitations for the tenant.
    AbuseBlocked(String),
    /// Graph refused the reset because the email is not on the user object.
    EmailNotOnUser(String),
    /// 404 on a write: the user is gone.
    NotFound(String),
    /// Any other definite 4xx; the text carries Graph's code and message.
    Rejected(String),
}

/// What a lookup of the target found.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    Found(DirectoryUser),
    NotFound,
    /// `user.mail` matched this many users.
    Ambiguous(usize),
}

/// What the invitation POST answered, without the redeem URL (the effects layer keeps it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    pub invitation_id: String,
    pub redeem_status: String,
}

/// What this pass learnt so far, in the order the steps happen.
#[derive(Clone, Debug, Default)]
pub struct Pass {
    pub retry_accepted: bool,
    /// Ready=Pending was written for a generation seen for the first time.
    pub marked_pending: bool,
    pub evidence: Option<Result<Option<DirectoryUser>, Failure>>,
    pub target: Option<Result<Resolution, Failure>>,
    pub holders: Option<Result<Vec<DirectoryUser>, Failure>>,
    pub mail_set: Option<Result<(), Failure>>,
    /// The intent written in this pass.
    pub intent: Option<Attempt>,
    /// `attempt.postStartedAt` written in this pass.
    pub marked_sending: bool,
    pub posted: Option<Result<Posted, Failure>>,
}

/// The next thing to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The status already says everything about this generation.
    Nothing,
    /// Act on a new value of the retry annotation: start this generation afresh.
    AcceptRetry { token: String },
    /// Nothing before this time: the last pass asked to wait (`status.nextAttemptAt`).
    Wait { until: Timestamp },
    /// Say that a new generation was seen (Ready=Unknown, Pending) before working on it.
    MarkPending,
    /// Read the user of an interrupted attempt to look for evidence of the reset.
    ReadEvidence { user_id: String },
    /// Resolve the target by its key.
    ReadUser,
    /// Look for users that already hold the new e-mail.
    ReadEmailHolders,
    /// `PATCH /users/{id}` setting mail.
    SetMail { user_id: String },
    /// Write `status.attempt` with a precondition; only then may the POST start.
    RecordIntent,
    /// Wait for a write slot, then write `attempt.postStartedAt` with a precondition.
    MarkSending,
    /// `POST /invitations`.
    PostInvitation { user_id: String },
    /// Write the outcome to status and stop this pass.
    Report(Box<Report>),
}

/// What happened, for the status, the Event and the requeue.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub reason: Reason,
    pub message: String,
    /// When to look again; `None` waits for a change of the resource.
    pub requeue: Option<Duration>,
    /// What becomes of `status.attempt`.
    pub attempt: AttemptChange,
    /// The resolved user to record, when this pass resolved it.
    pub user: Option<DirectoryUser>,
    /// An invitation to record.
    pub issued: Option<Issued>,
    /// New value of `status.userMissingSince` (`Some(None)` clears it).
    pub user_missing_since: Option<Option<Timestamp>>,
    /// Whether the tenant-wide pause should start (Graph's abuse answer).
    pub pause_tenant: bool,
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
}

impl Report {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Report {
            reason,
            message: message.into(),
            requeue: None,
            attempt: AttemptChange::Keep,
            user: None,
            issued: None,
            user_missing_since: None,
            pause_tenant: false,
        }
    }

    fn requeue(mut self, after: Duration) -> Self {
        self.requeue = Some(after);
        self
    }

    fn clear_attempt(mut self) -> Self {
        self.attempt = AttemptChange::Clear;
        self
    }

    fn with_user(mut self, user: &DirectoryUser) -> Self {
        self.user = Some(user.clone());
        self
    }
}

/// Capped exponential backoff for transient failures: 5 s, 10 s, 20 s, ... up to 5 minutes.
/// The effects layer adds jitter.
pub fn transient_backoff(failures: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << failures.min(6));
    Duration::from_secs(secs.min(300))
}

/// The decision. See the module documentation.
pub fn decide(
    o: &Observed<'_>,
    settings: &Settings,
    tenant: TenantGate,
    now: Timestamp,
    pass: &Pass,
) -> Step {
    let status = o.status;
    let retry_pending = o
        .retry_annotation
        .filter(|token| Some(*token) != status.retry_token.as_deref());

    if !pass.retry_accepted && settled_reason(o).is_some() {
        return match retry_pending {
            Some(token) => Step::AcceptRetry {
                token: token.to_owned(),
            },
            None => Step::Nothing,
        };
    }

    if retry_pending.is_none()
        && !pass.retry_accepted
        && status.observed_generation == Some(o.generation)
        && let Some(until) = status.next_attempt_at.as_ref().map(|t| t.0)
        && now < until
    {
        return Step::Wait { until };
    }

    // An attempt that was being sent when the last pass ended: find out what became of it
    // before anything else, and never post again blindly (API.md 3.3).
    if let Some(attempt) = status
        .attempt
        .as_ref()
        .filter(|a| a.post_started_at.is_some())
        && pass.intent.is_none()
    {
        return recover(o, settings, now, pass, attempt);
    }

    if status.observed_generation != Some(o.generation)
        && !pass.marked_pending
        && !pass.retry_accepted
    {
        return Step::MarkPending;
    }

    let Some(key) = o.spec.user.key() else {
        return Step::Report(Box::new(Report::new(
            Reason::PolicyDenied,
            "spec.user must name exactly one of id, userPrincipalName or mail",
        )));
    };

    if let Some(denial) = policy_denial(&o.spec.email, settings) {
        return Step::Report(Box::new(Report::new(Reason::PolicyDenied, denial)));
    }

    let user = match &pass.target {
        None => return Step::ReadUser,
        Some(Err(failure)) => {
            return Step::Report(Box::new(report_failure(o, failure, "reading the user")));
        }
        Some(Ok(Resolution::NotFound)) => {
            return Step::Report(Box::new(user_missing(o, settings, now, &key)));
        }
        Some(Ok(Resolution::Ambiguous(count))) => {
            return Step::Report(Box::new(Report::new(
                Reason::AmbiguousUser,
                format!("{count} users have {key}; name the guest by id or userPrincipalName"),
            )));
        }
        Some(Ok(Resolution::Found(user))) => user,
    };
    let upn = user.user_principal_name.as_deref().unwrap_or(&user.id);

    if !user.is_guest() {
        let user_type = user.user_type.as_deref().unwrap_or("none");
        return Step::Report(Box::new(
            Report::new(
                Reason::NotAGuest,
                format!(
                    "{upn} has userType {user_type}, not Guest; an invitation would convert it to a B2B user irreversibly, so none is sent"
                ),
            )
            .with_user(user),
        ));
    }

    let holders = match &pass.holders {
        None => return Step::ReadEmailHolders,
        Some(Err(failure)) => {
            return Step::Report(Box::new(
                report_failure(o, failure, "checking who holds the email").with_user(user),
            ));
        }
        Some(Ok(holders)) => holders,
    };
    if let Some(other) = holders.iter().find(|h| h.id != user.id) {
        let other_upn = other.user_principal_name.as_deref().unwrap_or(&other.id);
        return Step::Report(Box::new(
            Report::new(
                Reason::EmailInUse,
                format!(
                    "{} is already used by another user, {other_upn} ({})",
                    o.spec.email, other.id
                ),
            )
            .with_user(user),
        ));
    }

    let needs_mail = !user.carries_email(&o.spec.email);
    if needs_mail && !o.spec.update_mail {
        return Step::Report(Box::new(
            Report::new(
                Reason::EmailNotOnUser,
                format!(
                    "{} is on neither mail nor otherMails of {upn}, and updateMail is false; Graph refuses a reset to an address the user does not carry",
                    o.spec.email
                ),
            )
            .with_user(user),
        ));
    }

    if o.spec.dry_run {
        return Step::Report(Box::new(
            Report::new(Reason::DryRunComplete, dry_run_plan(o, user, needs_mail)).with_user(user),
        ));
    }

    if let TenantGate::Paused { until } = tenant {
        let wait = until.duration_since(now).max(SignedDuration::from_secs(1));
        return Step::Report(Box::new(
            Report::new(
                Reason::TenantBlocked,
                format!(
                    "invitations are paused for the whole tenant after Graph's abuse protection blocked them; one probe will be tried after {until}"
                ),
            )
            .requeue(Duration::try_from(wait).unwrap_or(THROTTLE_DEFAULT))
            .with_user(user),
        ));
    }

    if needs_mail {
        match &pass.mail_set {
            None => {
                return Step::SetMail {
                    user_id: user.id.clone(),
                };
            }
            Some(Err(failure)) => {
                return Step::Report(Box::new(
                    report_failure(o, failure, "setting the user's mail").with_user(user),
                ));
            }
            Some(Ok(())) => {}
        }
    }

    if pass.intent.is_none() {
        return Step::RecordIntent;
    }
    if !pass.marked_sending {
        return Step::MarkSending;
    }
    match &pass.posted {
        None => Step::PostInvitation { user_id: user.id.clone() },
        Some(Ok(posted)) => Step::Report(Box::new(
            Report {
                issued: Some(Issued {
                    generation: o.generation,
                    email: o.spec.email.clone(),
                    invitation_id: posted.invitation_id.clone(),
                    redeem_status: Some(posted.redeem_status.clone()),
                    recovered: false,
                }),
                ..Report::new(
                    Reason::Issued,
                    format!(
                        "redemption of {upn} reset to {}; invitation {} is {}",
                        o.spec.email, posted.invitation_id, posted.redeem_status
                    ),
                )
            }
            .clear_attempt()
            .with_user(user),
        )),
        Some(Err(Failure::Ambiguous(detail))) => Step::Report(Box::new(
            // The attempt stays: the next pass looks for evidence instead of posting again.
            Report::new(
                Reason::InProgress,
                format!("the invitation request may or may not have taken effect ({detail}); looking for evidence in the directory"),
            )
            .requeue(Duration::from_secs(1))
            .with_user(user),
        )),
        // The read showed the email on the user (or the PATCH just put it there): the invite
        // service has not caught up with the directory yet.
        Some(Err(Failure::EmailNotOnUser(detail))) if o.failures + 1 < MAIL_PROPAGATION_TRIES =>
        {
            Step::Report(Box::new(
                Report::new(
                    Reason::TransientError,
                    format!("Graph does not see the new mail on {upn} yet ({detail}); retrying while the directory replicates"),
                )
                .requeue(transient_backoff(o.failures))
                .clear_attempt()
                .with_user(user),
            ))
        }
        Some(Err(failure)) => {
            Step::Report(Box::new(report_failure(o, failure, "posting the invitation").clear_attempt().with_user(user)))
        }
    }
}

/// The reason the current generation is settled with, if it is.
fn settled_reason(o: &Observed<'_>) -> Option<Reason> {
    let status = o.status;
    if status.observed_generation != Some(o.generation) {
        return None;
    }
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    if ready.observed_generation != Some(o.generation) {
        return None;
    }
    Reason::parse(&ready.reason).filter(|r| r.is_settled())
}

fn recover(
    o: &Observed<'_>,
    settings: &Settings,
    now: Timestamp,
    pass: &Pass,
    attempt: &Attempt,
) -> Step {
    let Some(user_id) = o.status.user.as_ref().map(|u| u.id.clone()) else {
        return Step::Report(Box::new(
            Report::new(
                Reason::OutcomeUnknown,
                "an interrupted attempt left no record of its user; set the guestreset.io/retry annotation to issue again",
            )
            .clear_attempt(),
        ));
    };
    let sent_at = attempt
        .post_started_at
        .as_ref()
        .map_or(attempt.started_at.0, |t| t.0);
    let evidence = match &pass.evidence {
        None => return Step::ReadEvidence { user_id },
        Some(Err(failure)) => {
            return Step::Report(Box::new(report_failure(
                o,
                failure,
                "reading the user for evidence",
            )));
        }
        Some(Ok(user)) => user,
    };
    let Some(user) = evidence else {
        return Step::Report(Box::new(
            Report::new(
                Reason::OutcomeUnknown,
                format!("the user {user_id} of an interrupted attempt no longer exists; set the guestreset.io/retry annotation to issue again"),
            )
            .clear_attempt(),
        ));
    };
    let reset_seen = user.external_user_state.as_deref() == Some(PENDING_ACCEPTANCE)
        && user
            .external_user_state_change_date_time
            .is_some_and(|changed| changed >= attempt.started_at.0 - settings.clock_skew);
    let upn = user.user_principal_name.as_deref().unwrap_or(&user.id);
    if reset_seen {
        return Step::Report(Box::new(
            Report {
                issued: Some(Issued {
                    generation: attempt.generation,
                    email: o.spec.email.clone(),
                    invitation_id: String::new(),
                    redeem_status: user.external_user_state.clone(),
                    recovered: true,
                }),
                ..Report::new(
                    if attempt.generation == o.generation { Reason::Issued } else { Reason::InProgress },
                    format!(
                        "an interrupted attempt did reset {upn}: the directory shows PendingAcceptance since {}; the invitation id and redeem URL are not recoverable",
                        user.external_user_state_change_date_time.map(|t| t.to_string()).unwrap_or_default()
                    ),
                )
            }
            .requeue_if(attempt.generation != o.generation, Duration::from_secs(1))
            .clear_attempt()
            .with_user(user),
        ));
    }
    let deadline = sent_at + settings.replication_window;
    if now < deadline {
        return Step::Report(Box::new(
            Report::new(
                Reason::InProgress,
                format!("an attempt was interrupted; no evidence of the reset on {upn} yet, re-reading until {deadline}"),
            )
            .requeue(REPLICATION_POLL)
            .with_user(user),
        ));
    }
    let message = format!(
        "an attempt was interrupted and the directory shows no evidence that {upn} was reset; a human decides: set the guestreset.io/retry annotation to a new value to issue again, accepting that a second invitation may be sent"
    );
    if attempt.generation == o.generation {
        Step::Report(Box::new(
            Report::new(Reason::OutcomeUnknown, message)
                .clear_attempt()
                .with_user(user),
        ))
    } else {
        // The unknown outcome belongs to a superseded generation; the current one goes on.
        Step::Report(Box::new(
            Report::new(
                Reason::InProgress,
                format!("generation {}: {message}", attempt.generation),
            )
            .requeue(Duration::from_secs(1))
            .clear_attempt()
            .with_user(user),
        ))
    }
}

impl Report {
    fn requeue_if(self, condition: bool, after: Duration) -> Self {
        if condition { self.requeue(after) } else { self }
    }
}

fn user_missing(
    o: &Observed<'_>,
    settings: &Settings,
    now: Timestamp,
    key: &UserKey<'_>,
) -> Report {
    let since = o.status.user_missing_since.as_ref().map_or(now, |t| t.0);
    let deadline = since + settings.replication_window;
    let mut report = if now < deadline {
        Report::new(
            Reason::InProgress,
            format!("no user with {key} yet; the directory may still be replicating, re-reading until {deadline}"),
        )
        .requeue(REPLICATION_POLL)
    } else {
        Report::new(
            Reason::UserNotFound,
            format!(
                "no user with {key} in the directory (looked for {})",
                settings.replication_window
            ),
        )
    };
    report.user_missing_since = Some(Some(since));
    report
}

/// The report for a failed Graph call; `doing` says what the controller was doing.
fn report_failure(o: &Observed<'_>, failure: &Failure, doing: &str) -> Report {
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
        Failure::AbuseBlocked(detail) => Report {
            pause_tenant: true,
            ..Report::new(
                Reason::TenantBlocked,
                format!("Graph's abuse protection blocked invitations for this tenant: {detail}; all issuance pauses"),
            )
        },
        Failure::EmailNotOnUser(detail) => Report::new(Reason::GraphRejected, format!("Graph refused {doing}: {detail}")),
        Failure::NotFound(detail) => Report::new(Reason::UserNotFound, format!("Graph no longer finds the user while {doing}: {detail}")),
        Failure::Rejected(detail) => Report::new(Reason::GraphRejected, format!("Graph refused {doing}: {detail}")),
    }
}

/// Refuses an e-mail outside `--allowed-email-domains`.
pub fn policy_denial(email: &str, settings: &Settings) -> Option<String> {
    if settings.allowed_email_domains.is_empty() {
        return None;
    }
    let domain = email
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    if settings.allowed_email_domains.contains(&domain) {
        None
    } else {
        Some(format!(
            "{email} is outside the allowed e-mail domains ({}); the controller refuses it",
            settings.allowed_email_domains.join(", ")
        ))
    }
}

fn dry_run_plan(o: &Observed<'_>, user: &DirectoryUser, needs_mail: bool) -> String {
    let upn = user.user_principal_name.as_deref().unwrap_or(&user.id);
    let mut plan = String::from("dry run, nothing written to Graph. Would ");
    if needs_mail {
        plan.push_str(&format!(
            "set mail of {upn} from {} to {}, then ",
            user.mail.as_deref().unwrap_or("(none)"),
            o.spec.email
        ));
    }
    plan.push_str(&format!(
        "reset the redemption of {upn} ({}) to {}, {} the invitation e-mail",
        user.id,
        o.spec.email,
        if o.spec.send_invitation_message {
            "sending"
        } else {
            "without"
        }
    ));
    if let Some(secret) = &o.spec.redeem_url_secret {
        plan.push_str(&format!(
            ", and store the redeem URL in Secret {}",
            secret.name
        ));
    }
    plan
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
