//! What the pure tests of the controller share: a guest as Graph returns it and a spec that
//! names it by id, on one clock of whole seconds (Graph's change times may carry a fraction).

use jiff::Timestamp;

use crate::graph::DirectoryUser;
use crate::resource::{GuestRedemptionResetSpec, UserRef};

/// The tests' clock: `secs` after a fixed moment.
pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

/// A guest who redeemed a day ago (Graph's change time with milliseconds), with `mail` as its
/// only address.
pub fn guest(id: &str, mail: &str) -> DirectoryUser {
    DirectoryUser {
        id: id.into(),
        user_type: Some("Guest".into()),
        user_principal_name: Some(format!(
            "{}#EXT#@fabrikam.onmicrosoft.com",
            mail.replace('@', "_")
        )),
        mail: Some(mail.into()),
        other_mails: vec![],
        external_user_state: Some("Accepted".into()),
        external_user_state_change_date_time: Some(
            at(-86_400) + jiff::SignedDuration::from_millis(250),
        ),
    }
}

/// A spec that resets user `id` to `email`, with the defaults of the CRD.
pub fn spec(id: &str, email: &str) -> GuestRedemptionResetSpec {
    GuestRedemptionResetSpec {
        user: UserRef {
            id: Some(id.into()),
            ..Default::default()
        },
        email: email.into(),
        redirect_url: "https://myapps.microsoft.com".into(),
        send_invitation_message: true,
        message: None,
        update_mail: true,
        redeem_url_secret: None,
        change_ref: None,
        dry_run: false,
    }
}

/// A resource `name` in `namespace` with the spec of [`spec`], at generation 1.
pub fn resource(name: &str, namespace: &str) -> crate::resource::GuestRedemptionReset {
    let mut obj = crate::resource::GuestRedemptionReset::new(
        name,
        spec(
            "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41",
            "alice@newco.example",
        ),
    );
    obj.metadata.namespace = Some(namespace.into());
    obj.metadata.generation = Some(1);
    obj
}

/// A decision on `generation` by `by`, a member of the group `approvers`.
pub fn approval(
    generation: i64,
    decision: crate::resource::Decision,
    by: &str,
) -> crate::resource::Approval {
    crate::resource::Approval {
        generation,
        decision,
        by: by.into(),
        groups: vec!["approvers".into()],
        at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(0)),
        reason: "reviewed in CHG-1".into(),
        retry: None,
        admitted_under: None,
        digest: None,
    }
}
