//! The decision: given the resource, its status and what Graph said so far in this pass,
//! what is the next step? A pure function, so that every reason and every crash point can be
//! tested without I/O. The executor (`controller/pass.rs`) performs the step, records what it
//! learnt in [`Pass`], and asks again until the answer is a [`Report`].
//!
//! The decision runs in the stages of docs/design.md: the **entry** (settled? a retry asked
//! for? a wait? an interrupted attempt to recover? a new generation to acknowledge?), the
//! **preflight** (resolve the user, refuse what must not be done) and the **issue** (intent,
//! mail, write slot, fresh reads, tenant gate, sending mark, POST). Each stage either hands the
//! next one what it needs or stops with the step to take.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::reason::Reason;
use super::recover::recover;
use super::report::{Issued, Report, report_failure};
use crate::graph::DirectoryUser;
use crate::resource::{Attempt, GuestRedemptionResetSpec, GuestRedemptionResetStatus, UserKey};

/// How often the directory is re-read while waiting for replication.
pub const REPLICATION_POLL: Duration = Duration::from_secs(10);
/// Graph keeps refusing the reset although the mail was set: after this many tries the
/// refusal is taken as final rather than as the directory's replication delay.
pub const MAIL_PROPAGATION_TRIES: u32 = 6;
/// A POST is never sent on a read of the user (userType, e-mail holders) older than this: a
/// guest converted to a member in between would be converted irreversibly.
pub const PREFLIGHT_FRESHNESS: SignedDuration = SignedDuration::from_secs(10);
/// Reads older than this are repeated before the tenant check and the sending mark, so that
/// those two steps may take up to the rest of [`PREFLIGHT_FRESHNESS`] before the POST.
pub const REFRESH_AFTER: SignedDuration = SignedDuration::from_secs(5);
/// A POST goes out within this long of its sending mark or not at all: a pass that stalled
/// longer (a paused process) leaves the attempt to recovery, which another writer may already
/// have concluded.
pub const SEND_WINDOW: SignedDuration = SignedDuration::from_secs(5);

/// The resource as the controller sees it now (after this pass's own writes).
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
    /// Lower-case domains an e-mail (and the cc recipient) may belong to; empty means any.
    pub allowed_email_domains: Vec<String>,
    /// How long the directory may take to show a change (new user, reset evidence).
    pub replication_window: SignedDuration,
    /// Allowance for clocks that disagree when comparing Graph's times with ours.
    pub clock_skew: SignedDuration,
    /// How long a POST may still take effect after it was sent (the Graph request timeout).
    pub post_timeout: SignedDuration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allowed_email_domains: vec![],
            replication_window: SignedDuration::from_mins(2),
            clock_skew: SignedDuration::from_secs(60),
            post_timeout: SignedDuration::from_secs(30),
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

/// The preparation of one Graph write: a slot from the limiter, then the tenant gate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WritePrep {
    pub slot: bool,
    pub gate: Option<TenantGate>,
}

/// What this pass learnt so far, in the order the steps happen.
#[derive(Clone, Debug, Default)]
pub struct Pass {
    pub evidence: Option<Read<Option<DirectoryUser>>>,
    pub target: Option<Read<Resolution>>,
    /// The lookup by the spec's mail found nobody and the user's id was tried instead.
    pub resolved_by_id: bool,
    pub holders: Option<Read<Vec<DirectoryUser>>>,
    pub secret: Option<SecretOwner>,
    /// The intent written in this pass.
    pub intent: Option<Attempt>,
    pub mail: WritePrep,
    pub mail_set: Option<Result<(), Failure>>,
    pub invitation: WritePrep,
    /// `attempt.postStartedAt` written in this pass, and when.
    pub marked_sending: bool,
    pub marked_at: Option<Timestamp>,
    pub posted: Option<Result<Posted, Failure>>,
}

impl Pass {
    pub fn prep_mut(&mut self, write: Write) -> &mut WritePrep {
        match write {
            Write::Mail => &mut self.mail,
            Write::Invitation => &mut self.invitation,
        }
    }
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
    /// Wait for a slot of the write limiter.
    TakeSlot { write: Write },
    /// Read the tenant-wide pause, right before a Graph write.
    CheckTenant { write: Write },
    /// `PATCH /users/{id}` setting mail.
    SetMail { user_id: String, email: String },
    /// Write `attempt.postStartedAt` (and the state the POST starts from) with a precondition.
    MarkSending { user: Box<DirectoryUser> },
    /// `POST /invitations`.
    PostInvitation { user_id: String },
    /// Write the outcome to status and stop this pass.
    Report(Box<Report>),
}

impl From<Report> for Step {
    fn from(report: Report) -> Self {
        Step::Report(Box::new(report))
    }
}

/// A stage either hands on what the next stage needs or stops with a step.
type Stage<T> = Result<T, Step>;

/// The decision. See the module documentation.
pub fn decide(
    o: &Observed<'_>,
    settings: &Settings,
    tenant: TenantGate,
    now: Timestamp,
    pass: &Pass,
) -> Step {
    let staged = entry(o, settings, now, pass)
        .and_then(|()| preflight(o, settings, now, pass))
        .and_then(|target| issue(o, tenant, now, pass, &target));
    match staged {
        Ok(never) => match never {},
        Err(step) => step,
    }
}

/// Settled, asked to retry, waiting, recovering an interrupted attempt, or a new generation.
fn entry(o: &Observed<'_>, settings: &Settings, now: Timestamp, pass: &Pass) -> Stage<()> {
    let status = o.status;
    let retry_pending = o
        .retry_annotation
        .filter(|token| Some(*token) != status.retry_token.as_deref());
    if settled_reason(o).is_some() {
        return Err(match retry_pending {
            Some(token) => Step::AcceptRetry {
                token: token.to_owned(),
            },
            None => Step::Nothing,
        });
    }
    if retry_pending.is_none()
        && status.observed_generation == Some(o.generation)
        && let Some(until) = status.next_attempt_at.as_ref().map(|t| t.0)
        && now < until
    {
        return Err(Step::Wait { until });
    }
    // An attempt that was being sent when a pass ended: find out what became of it before
    // anything else, and never post again blindly (docs/design.md, "Interrupted attempts").
    if let Some(attempt) = status.attempt.as_ref()
        && attempt.post_started_at.is_some()
        && pass.intent.is_none()
    {
        return Err(recover(o, settings, now, pass, attempt));
    }
    if status.observed_generation != Some(o.generation) {
        return Err(Step::MarkPending);
    }
    Ok(())
}

/// What the preflight found: the target, and whether its mail must be set first.
struct Target<'p> {
    user: &'p DirectoryUser,
    needs_mail: bool,
}

/// Resolves the user and refuses what must not be done; a dry run ends here.
fn preflight<'p>(
    o: &Observed<'_>,
    settings: &Settings,
    now: Timestamp,
    pass: &'p Pass,
) -> Stage<Target<'p>> {
    let Some(key) = o.spec.user.key() else {
        return Err(Report::new(
            Reason::PolicyDenied,
            "spec.user must name exactly one of id, userPrincipalName or mail",
        )
        .into());
    };
    if let Some(denial) = policy_denial(o.spec, settings) {
        return Err(Report::new(Reason::PolicyDenied, denial).into());
    }
    let user = resolve(o, settings, now, pass, key)?;
    if !user.is_guest() {
        let user_type = user.user_type.as_deref().unwrap_or("none");
        return Err(Report::new(
            Reason::NotAGuest,
            format!(
                "{} has userType {user_type}, not Guest; an invitation would convert it to a B2B user irreversibly, so none is sent",
                user.display_name()
            ),
        )
        .with_user(user)
        .into());
    }
    check_holders(o, pass, user)?;
    let needs_mail = !user.carries_email(&o.spec.email);
    if needs_mail && !o.spec.update_mail {
        return Err(Report::new(
            Reason::EmailNotOnUser,
            format!(
                "{} is on neither mail nor otherMails of {}, and updateMail is false; Graph refuses a reset to an address the user does not carry",
                o.spec.email,
                user.display_name()
            ),
        )
        .with_user(user)
        .into());
    }
    check_secret(o, pass, user)?;
    if o.spec.dry_run {
        return Err(
            Report::new(Reason::DryRunComplete, dry_run_plan(o, user, needs_mail))
                .with_user(user)
                .into(),
        );
    }
    Ok(Target { user, needs_mail })
}

/// The id of the user a mail lookup may fall back to: the status recorded this user with
/// that mail before the controller changed it (docs/design.md, "Lookup after the mail PATCH").
fn fallback_id<'s>(o: &Observed<'s>, key: &UserKey<'_>) -> Option<&'s str> {
    let UserKey::Mail(mail) = key else {
        return None;
    };
    let user = o.status.user.as_ref()?;
    let previous = user.previous_mail.as_deref()?;
    previous
        .eq_ignore_ascii_case(mail)
        .then_some(user.id.as_str())
}

fn resolve<'p>(
    o: &Observed<'_>,
    settings: &Settings,
    now: Timestamp,
    pass: &'p Pass,
    key: UserKey<'_>,
) -> Stage<&'p DirectoryUser> {
    let Some(read) = &pass.target else {
        return Err(Step::ReadUser { lookup: key.into() });
    };
    match &read.result {
        Err(failure) => Err(report_failure(o, failure, "reading the user").into()),
        Ok(Resolution::NotFound) => match fallback_id(o, &key) {
            Some(id) if !pass.resolved_by_id => Err(Step::ReadUserById {
                user_id: id.to_owned(),
            }),
            _ => Err(user_missing(o, settings, now, &key).into()),
        },
        Ok(Resolution::Ambiguous(count)) => Err(Report::new(
            Reason::AmbiguousUser,
            format!("{count} users have {key}; name the guest by id or userPrincipalName"),
        )
        .into()),
        Ok(Resolution::Found(user)) => Ok(user),
    }
}

fn check_holders(o: &Observed<'_>, pass: &Pass, user: &DirectoryUser) -> Stage<()> {
    let holders = match &pass.holders {
        None => {
            return Err(Step::ReadEmailHolders {
                email: o.spec.email.clone(),
            });
        }
        Some(Read {
            result: Err(failure),
            ..
        }) => {
            return Err(report_failure(o, failure, "checking who holds the email")
                .with_user(user)
                .into());
        }
        Some(Read {
            result: Ok(holders),
            ..
        }) => holders,
    };
    match holders.iter().find(|h| h.id != user.id) {
        Some(other) => Err(Report::new(
            Reason::EmailInUse,
            format!(
                "{} is already used by another user, {} ({})",
                o.spec.email,
                other.display_name(),
                other.id
            ),
        )
        .with_user(user)
        .into()),
        None => Ok(()),
    }
}

/// The redeem URL may only go to a Secret this resource creates or already owns.
fn check_secret(o: &Observed<'_>, pass: &Pass, user: &DirectoryUser) -> Stage<()> {
    let Some(secret) = &o.spec.redeem_url_secret else {
        return Ok(());
    };
    match &pass.secret {
        None => Err(Step::CheckSecret {
            name: secret.name.clone(),
        }),
        Some(SecretOwner::Foreign) => Err(Report::new(
            Reason::PolicyDenied,
            format!(
                "Secret {} exists and is not owned by this resource; the controller never writes into or adopts a Secret it did not create. Name a new Secret in spec.redeemUrlSecret",
                secret.name
            ),
        )
        .with_user(user)
        .into()),
        Some(_) => Ok(()),
    }
}

/// From the intent to the POST: every Graph write prepared by a slot, fresh reads and the
/// tenant gate, and the POST marked as sending right before it goes.
fn issue(
    o: &Observed<'_>,
    tenant: TenantGate,
    now: Timestamp,
    pass: &Pass,
    target: &Target<'_>,
) -> Stage<std::convert::Infallible> {
    let user = target.user;
    if let TenantGate::Paused { until } = tenant {
        return Err(tenant_blocked(now, until, user).into());
    }
    let Some(intent) = &pass.intent else {
        return Err(Step::RecordIntent {
            user: Box::new(user.clone()),
        });
    };
    if target.needs_mail && pass.mail_set.is_none() {
        prepare(pass.mail, Write::Mail, now, user)?;
        return Err(Step::SetMail {
            user_id: user.id.clone(),
            email: o.spec.email.clone(),
        });
    }
    if let Some(Err(failure)) = &pass.mail_set {
        return Err(report_failure(o, failure, "setting the user's mail")
            .clear_attempt()
            .with_user(user)
            .into());
    }
    if !pass.invitation.slot {
        return Err(Step::TakeSlot {
            write: Write::Invitation,
        });
    }
    if !pass.marked_sending {
        refresh_if_stale(o, now, pass, user)?;
        prepare(pass.invitation, Write::Invitation, now, user)?;
        return Err(Step::MarkSending {
            user: Box::new(user.clone()),
        });
    }
    let Some(posted) = &pass.posted else {
        if pass
            .marked_at
            .is_some_and(|marked| now.duration_since(marked) > SEND_WINDOW)
        {
            return Err(Report::new(
                Reason::InProgress,
                "the invitation was marked as sending but the pass stalled before sending it; looking for evidence in the directory instead",
            )
            .requeue(Duration::from_secs(1))
            .for_attempt(&intent.id)
            .with_user(user)
            .into());
        }
        return Err(Step::PostInvitation {
            user_id: user.id.clone(),
        });
    };
    Err(posted_report(o, posted, user)
        .for_attempt(&intent.id)
        .into())
}

/// A slot, then the tenant gate read right before the write.
fn prepare(prep: WritePrep, write: Write, now: Timestamp, user: &DirectoryUser) -> Stage<()> {
    match prep {
        WritePrep { slot: false, .. } => Err(Step::TakeSlot { write }),
        WritePrep { gate: None, .. } => Err(Step::CheckTenant { write }),
        WritePrep {
            gate: Some(TenantGate::Paused { until }),
            ..
        } => Err(tenant_blocked(now, until, user).into()),
        WritePrep {
            gate: Some(TenantGate::Open),
            ..
        } => Ok(()),
    }
}

/// The user and the e-mail holders are read again when the reads are older than
/// [`REFRESH_AFTER`], so that the POST never acts on a read older than [`PREFLIGHT_FRESHNESS`].
fn refresh_if_stale(
    o: &Observed<'_>,
    now: Timestamp,
    pass: &Pass,
    user: &DirectoryUser,
) -> Stage<()> {
    let stale = |at: Timestamp| now.duration_since(at) > REFRESH_AFTER;
    if pass.target.as_ref().is_some_and(|r| stale(r.at)) {
        return Err(Step::ReadUserById {
            user_id: user.id.clone(),
        });
    }
    if pass.holders.as_ref().is_some_and(|r| stale(r.at)) {
        return Err(Step::ReadEmailHolders {
            email: o.spec.email.clone(),
        });
    }
    Ok(())
}

fn tenant_blocked(now: Timestamp, until: Timestamp, user: &DirectoryUser) -> Report {
    let wait = until.duration_since(now).max(SignedDuration::from_secs(1));
    Report::new(
        Reason::TenantBlocked,
        format!(
            "invitations are paused for the whole tenant after Graph's abuse protection blocked them; one probe will be tried after {until}"
        ),
    )
    .requeue(Duration::try_from(wait).unwrap_or(super::report::THROTTLE_DEFAULT))
    // An intent that never reached Graph is dropped: nothing was sent for it.
    .clear_attempt()
    .with_user(user)
}

/// The report for the POST's answer.
fn posted_report(
    o: &Observed<'_>,
    posted: &Result<Posted, Failure>,
    user: &DirectoryUser,
) -> Report {
    let name = user.display_name();
    match posted {
        Ok(posted) => Report {
            issued: Some(Issued {
                generation: o.generation,
                email: o.spec.email.clone(),
                invitation_id: posted.invitation_id.clone(),
                redeem_status: Some(posted.redeem_status.clone()),
                recovered: false,
                request_id: posted.request_id.clone(),
                client_request_id: posted.client_request_id.clone(),
            }),
            ..Report::new(
                Reason::Issued,
                format!(
                    "redemption of {name} reset to {}; invitation {} is {}",
                    o.spec.email, posted.invitation_id, posted.redeem_status
                ),
            )
        }
        .clear_attempt()
        .with_user(user),
        // The attempt stays: the next pass looks for evidence instead of posting again.
        Err(Failure::Ambiguous(detail)) => Report::new(
            Reason::InProgress,
            format!(
                "the invitation request may or may not have taken effect ({detail}); looking for evidence in the directory"
            ),
        )
        .requeue(Duration::from_secs(1))
        .with_user(user),
        // The read showed the email on the user (or the PATCH just put it there): the invite
        // service has not caught up with the directory yet.
        Err(Failure::EmailNotOnUser(detail)) if o.failures + 1 < MAIL_PROPAGATION_TRIES => {
            Report::new(
                Reason::TransientError,
                format!(
                    "Graph does not see the new mail on {name} yet ({detail}); retrying while the directory replicates"
                ),
            )
            .requeue(super::report::transient_backoff(o.failures))
            .clear_attempt()
            .with_user(user)
        }
        Err(failure) => report_failure(o, failure, "posting the invitation")
            .clear_attempt()
            .with_user(user),
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

/// Refuses an e-mail, or a cc recipient, outside `--allowed-email-domains`.
pub fn policy_denial(spec: &GuestRedemptionResetSpec, settings: &Settings) -> Option<String> {
    if settings.allowed_email_domains.is_empty() {
        return None;
    }
    let cc = spec
        .message
        .as_ref()
        .and_then(|m| m.cc_recipient.as_deref());
    let outside = |address: &str| {
        let domain = address
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        !settings.allowed_email_domains.contains(&domain)
    };
    let allowed = settings.allowed_email_domains.join(", ");
    if outside(&spec.email) {
        return Some(format!(
            "{} is outside the allowed e-mail domains ({allowed}); the controller refuses it",
            spec.email
        ));
    }
    cc.filter(|cc| outside(cc)).map(|cc| {
        format!(
            "the cc recipient {cc} is outside the allowed e-mail domains ({allowed}); the invitation mail and its link would reach it, so the controller refuses it"
        )
    })
}

fn dry_run_plan(o: &Observed<'_>, user: &DirectoryUser, needs_mail: bool) -> String {
    let name = user.display_name();
    let mut plan = String::from("dry run, nothing written to Graph. Would ");
    if needs_mail {
        plan.push_str(&format!(
            "set mail of {name} from {} to {}, then ",
            user.mail.as_deref().unwrap_or("(none)"),
            o.spec.email
        ));
    }
    plan.push_str(&format!(
        "reset the redemption of {name} ({}) to {}, {} the invitation e-mail",
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
