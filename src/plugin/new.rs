//! `new NAME`: a manifest from flags, printed for a pull request or created with `--apply`.

use std::collections::BTreeMap;

use super::cli::{Connection, NewArgs};
use super::error::Error;
use super::output;
use super::session::Session;
use super::write;
use crate::resource::{
    DEFAULT_REDIRECT_URL, GuestRedemptionReset, GuestRedemptionResetSpec, InvitationMessage,
    REQUESTED_BY_ANNOTATION, SecretRef, UserRef,
};

pub async fn run(connection: &Connection, args: &NewArgs) -> Result<(), Error> {
    for warning in warnings(args) {
        eprintln!("warning: {warning}");
    }
    if !args.apply {
        let obj = manifest(
            args,
            connection.namespace.as_deref(),
            args.requested_by.as_deref(),
        );
        return output::print(&output::render(&obj, args.output));
    }
    let session = Session::connect(connection).await?;
    let requester = session.user_name().await?;
    let obj = manifest(args, Some(&session.namespace), Some(&requester));
    let mut created = session.api().create(&write::post_params(), &obj).await?;
    eprintln!(
        "guestredemptionreset.guestreset.io/{} created in namespace {}, requested by {requester}",
        args.name, session.namespace
    );
    // As kubectl prints objects: without the field managers' bookkeeping.
    created.metadata.managed_fields = None;
    output::print(&output::render(&created, args.output))
}

/// The resource the flags describe. The namespace is set only when one is known (a printed
/// manifest without `-n` goes wherever it is applied); the requester annotation only when
/// `requested_by` is given.
pub fn manifest(
    args: &NewArgs,
    namespace: Option<&str>,
    requested_by: Option<&str>,
) -> GuestRedemptionReset {
    let mut obj = GuestRedemptionReset::new(&args.name, spec(args));
    obj.metadata.namespace = namespace.map(str::to_owned);
    obj.metadata.annotations = requested_by
        .map(|name| BTreeMap::from([(REQUESTED_BY_ANNOTATION.to_owned(), name.to_owned())]));
    obj
}

fn spec(args: &NewArgs) -> GuestRedemptionResetSpec {
    GuestRedemptionResetSpec {
        user: user(args),
        email: args.email.clone(),
        redirect_url: args
            .redirect_url
            .clone()
            .unwrap_or_else(|| DEFAULT_REDIRECT_URL.to_owned()),
        send_invitation_message: !args.no_invitation_message,
        message: message(args),
        update_mail: !args.no_update_mail,
        redeem_url_secret: args
            .redeem_url_secret
            .clone()
            .map(|name| SecretRef { name }),
        change_ref: args.change_ref.clone(),
        dry_run: args.dry_run,
    }
}

/// The one key given (clap's argument group allows exactly one).
fn user(args: &NewArgs) -> UserRef {
    args.user.clone().unwrap_or_else(|| UserRef {
        id: args.user_id.clone(),
        user_principal_name: args.user_principal_name.clone(),
        mail: args.user_mail.clone(),
    })
}

fn message(args: &NewArgs) -> Option<InvitationMessage> {
    let any = args.message_body.is_some() || args.message_language.is_some() || args.cc.is_some();
    any.then(|| InvitationMessage {
        language: args
            .message_language
            .clone()
            .unwrap_or_else(|| "en-US".to_owned()),
        body: args.message_body.clone(),
        cc_recipient: args.cc.clone(),
    })
}

/// Combinations that are valid but probably not what was meant.
pub fn warnings(args: &NewArgs) -> Vec<&'static str> {
    let mut warnings = vec![];
    if args.no_invitation_message && args.redeem_url_secret.is_none() {
        warnings.push("--no-invitation-message without --redeem-url-secret: no e-mail is sent and the redeem URL is kept nowhere, so the guest gets no link");
    }
    if args.no_invitation_message && (args.message_body.is_some() || args.cc.is_some()) {
        warnings.push("--message-body and --cc only shape the invitation e-mail, which --no-invitation-message does not send");
    }
    warnings
}

#[cfg(test)]
#[path = "new_tests.rs"]
mod tests;
