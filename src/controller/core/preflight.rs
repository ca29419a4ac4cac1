//! The preflight stage of the decision: resolve the user and refuse what must not be done,
//! before anything is written to Graph. A dry run ends here with its plan.

use jiff::Timestamp;

use super::input::{Learned, Observed, Read, Resolution, SecretOwner, Settings};
use super::report::{Report, report_failure};
use super::step::{Stage, Step};
use super::time::REPLICATION_POLL;
use crate::graph::DirectoryUser;
use crate::mutants::{Mutant, planted};
use crate::resource::reason::Reason;
use crate::resource::{GuestRedemptionResetSpec, UserKey};

/// What the preflight found: the target, and whether its mail must be set first.
pub(super) struct Target<'p> {
    pub user: &'p DirectoryUser,
    pub needs_mail: bool,
    spec: &'p GuestRedemptionResetSpec,
}

impl Target<'_> {
    /// What issuing would do, in words: the plan an approver reviews.
    pub fn plan(&self) -> String {
        plan(self.spec, self.user, self.needs_mail)
    }
}

/// Resolves the user and refuses what must not be done; a dry run ends here.
pub(super) fn preflight<'p>(
    o: &Observed<'p>,
    settings: &Settings,
    now: Timestamp,
    pass: &'p Learned,
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
    if !user.is_guest() && !planted(Mutant::MemberIsGuest) {
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
    let target = Target {
        user,
        needs_mail,
        spec: o.spec,
    };
    if o.spec.dry_run {
        let plan = format!("dry run, nothing written to Graph. Would {}", target.plan());
        return Err(Report::new(Reason::DryRunComplete, plan)
            .with_user(user)
            .into());
    }
    Ok(target)
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
    pass: &'p Learned,
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

fn check_holders(o: &Observed<'_>, pass: &Learned, user: &DirectoryUser) -> Stage<()> {
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
    let other = holders.iter().find(|h| h.id != user.id);
    match other.filter(|_| !planted(Mutant::IgnoreEmailHolders)) {
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
fn check_secret(o: &Observed<'_>, pass: &Learned, user: &DirectoryUser) -> Stage<()> {
    let Some(secret) = &o.spec.redeem_url_secret else {
        return Ok(());
    };
    match &pass.secret {
        None => Err(Step::CheckSecret {
            name: secret.name.clone(),
        }),
        Some(SecretOwner::Foreign) if !planted(Mutant::IgnoreForeignSecret) => Err(Report::new(
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

fn plan(spec: &GuestRedemptionResetSpec, user: &DirectoryUser, needs_mail: bool) -> String {
    let name = user.display_name();
    let mut plan = String::new();
    if needs_mail {
        plan.push_str(&format!(
            "set mail of {name} from {} to {}, then ",
            user.mail.as_deref().unwrap_or("(none)"),
            spec.email
        ));
    }
    plan.push_str(&format!(
        "reset the redemption of {name} ({}) to {}, {} the invitation e-mail",
        user.id,
        spec.email,
        if spec.send_invitation_message {
            "sending"
        } else {
            "without"
        }
    ));
    if let Some(secret) = &spec.redeem_url_secret {
        plan.push_str(&format!(
            ", and store the redeem URL in Secret {}",
            secret.name
        ));
    }
    plan.push_str(&graph_values(spec, user, needs_mail));
    plan
}

/// Every value Graph receives, one per line, and the digest of the spec they come from: what
/// an approver reviews and pins (docs/resource.md, "Approval"). Nothing of the spec that
/// reaches Graph is left out, so a cc recipient or a message body cannot hide behind the
/// sentence above.
fn graph_values(spec: &GuestRedemptionResetSpec, user: &DirectoryUser, needs_mail: bool) -> String {
    let none = || "(none)".to_owned();
    let message = spec.message.as_ref();
    let lines = [
        ("target", format!("{} ({})", user.id, user.display_name())),
        ("new e-mail", spec.email.clone()),
        (
            "mail change",
            match needs_mail {
                true => format!(
                    "{} -> {}",
                    user.mail.as_deref().unwrap_or("(none)"),
                    spec.email
                ),
                false => "none".to_owned(),
            },
        ),
        (
            "invitation e-mail sent",
            spec.send_invitation_message.to_string(),
        ),
        (
            "cc recipient",
            message
                .and_then(|m| m.cc_recipient.clone())
                .unwrap_or_else(none),
        ),
        (
            "message language",
            message.map(|m| m.language.clone()).unwrap_or_else(none),
        ),
        (
            "message body",
            message
                .and_then(|m| m.body.as_deref())
                .map_or_else(none, |b| format!("{b:?}")),
        ),
        ("redirect URL", spec.redirect_url.clone()),
        (
            "redeem URL Secret",
            spec.redeem_url_secret
                .as_ref()
                .map_or_else(none, |s| s.name.clone()),
        ),
        ("spec digest", crate::resource::spec_digest(spec)),
    ];
    lines
        .iter()
        .map(|(what, value)| format!("\n{what}: {value}"))
        .collect()
}
