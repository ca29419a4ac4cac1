//! The plan of a migration, a pure function of what the directory answered: which guests get
//! a reset, which users are excluded and why, and the digest an approval names
//! (docs/resource.md, "GuestDomainMigration").

use std::collections::{BTreeMap, BTreeSet};

use super::mapping::{Renames, local_part_problem};
use crate::graph::DirectoryUser;
use crate::resource::{GuestDomainMigrationSpec, GuestRedemptionResetSpec, UserRef};

/// One guest that gets a reset.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlannedGuest {
    /// Object id (what the reset targets).
    pub id: String,
    /// The new sign-in e-mail.
    pub email: String,
    /// The mail the guest has now.
    pub mail: String,
}

/// Why a user of the domain gets no reset.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exclusion {
    /// Not a guest: an invitation would convert the member to a B2B user irreversibly.
    Member,
    /// Another user already holds the new address (mail, other mails or UPN).
    AddressInUse { by: String },
    /// Another guest of the plan would get the same new address.
    SameNewAddress,
    /// The new address would not be a valid e-mail.
    InvalidAddress,
}

impl Exclusion {
    /// How the plan ConfigMap writes it.
    pub fn label(&self) -> String {
        match self {
            Exclusion::Member => "Member".to_owned(),
            Exclusion::AddressInUse { by } => format!("AddressInUse:{by}"),
            Exclusion::SameNewAddress => "SameNewAddress".to_owned(),
            Exclusion::InvalidAddress => "InvalidAddress".to_owned(),
        }
    }

    /// Counted as a member in `status.plan.members`, else as a conflict.
    pub fn is_member(&self) -> bool {
        matches!(self, Exclusion::Member)
    }
}

/// A user of the domain that gets no reset.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Excluded {
    pub id: String,
    pub mail: String,
    /// The address a reset would have given, when there is one.
    pub email: Option<String>,
    pub reason: Exclusion,
}

/// The plan: sorted by object id, so that the same directory gives the same plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub planned: Vec<PlannedGuest>,
    pub excluded: Vec<Excluded>,
}

impl Plan {
    pub fn members(&self) -> usize {
        self.excluded
            .iter()
            .filter(|e| e.reason.is_member())
            .count()
    }

    pub fn conflicts(&self) -> usize {
        self.excluded.len() - self.members()
    }
}

/// The new address of `mail` in domain `to`: the local part kept, or renamed by `renames`.
pub fn new_address(mail: &str, to: &str, renames: &Renames) -> Option<String> {
    let (local, _) = mail.rsplit_once('@')?;
    let local = renames
        .get(&local.to_lowercase())
        .map_or(local, String::as_str);
    local_part_problem(local)
        .is_none()
        .then(|| format!("{local}@{to}"))
}

fn in_domain(mail: &str, domain: &str) -> bool {
    mail.rsplit_once('@')
        .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
}

/// Plans the migration from `from` to `to`. `found` are the users the directory listed for
/// `from` (members too), `holders` the users holding addresses in `to`: with `found`, they
/// tell which new addresses are already in use. A user listed twice counts once.
pub fn plan(
    from: &str,
    to: &str,
    renames: &Renames,
    found: &[DirectoryUser],
    holders: &[DirectoryUser],
) -> Plan {
    // Who holds which address now, lower case.
    let mut held: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for user in found.iter().chain(holders) {
        let addresses = user
            .mail
            .iter()
            .chain(&user.other_mails)
            .chain(&user.user_principal_name);
        for address in addresses {
            held.entry(address.to_lowercase())
                .or_default()
                .insert(&user.id);
        }
    }
    let mut seen = BTreeSet::new();
    let mut candidates: Vec<(&DirectoryUser, &str, Option<String>)> = vec![];
    let mut excluded = vec![];
    for user in found {
        // The index may lag behind: only a user whose mail is in the domain now counts.
        let Some(mail) = user.mail.as_deref().filter(|m| in_domain(m, from)) else {
            continue;
        };
        if !seen.insert(user.id.as_str()) {
            continue;
        }
        let email = new_address(mail, to, renames);
        if !user.is_guest() {
            excluded.push(Excluded {
                id: user.id.clone(),
                mail: mail.to_owned(),
                email,
                reason: Exclusion::Member,
            });
            continue;
        }
        candidates.push((user, mail, email));
    }
    let mut wanted: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, email) in &candidates {
        if let Some(email) = email {
            *wanted.entry(email.to_lowercase()).or_default() += 1;
        }
    }
    let mut planned = vec![];
    for (user, mail, email) in candidates {
        let Some(email) = email else {
            excluded.push(Excluded {
                id: user.id.clone(),
                mail: mail.to_owned(),
                email: None,
                reason: Exclusion::InvalidAddress,
            });
            continue;
        };
        let key = email.to_lowercase();
        let other_holder = held
            .get(&key)
            .and_then(|ids| ids.iter().find(|id| **id != user.id));
        let reason = match other_holder {
            Some(by) => Some(Exclusion::AddressInUse {
                by: (*by).to_owned(),
            }),
            None if wanted.get(&key).copied().unwrap_or(0) > 1 => Some(Exclusion::SameNewAddress),
            None => None,
        };
        match reason {
            Some(reason) => excluded.push(Excluded {
                id: user.id.clone(),
                mail: mail.to_owned(),
                email: Some(email),
                reason,
            }),
            None => planned.push(PlannedGuest {
                id: user.id.clone(),
                email,
                mail: mail.to_owned(),
            }),
        }
    }
    planned.sort();
    excluded.sort();
    Plan { planned, excluded }
}

/// The spec of the reset a migration creates for `guest`: every value comes from the
/// migration's spec and the plan, so that it can be checked again against both.
pub fn reset_spec(
    spec: &GuestDomainMigrationSpec,
    guest: &PlannedGuest,
) -> GuestRedemptionResetSpec {
    GuestRedemptionResetSpec {
        user: UserRef {
            id: Some(guest.id.clone()),
            ..UserRef::default()
        },
        email: guest.email.clone(),
        redirect_url: spec.redirect_url.clone(),
        send_invitation_message: spec.send_invitation_message,
        message: spec.message.clone(),
        update_mail: true,
        redeem_url_secret: None,
        change_ref: spec.change_ref.clone(),
        dry_run: false,
    }
}

/// The digest an approval names: `sha256:` and hex over the values every reset will carry
/// (redirect URL, whether the e-mail is sent, the message, `changeRef`, the domains) and the
/// planned guests in order (id and new e-mail). Any change to one of them is a new plan.
pub fn digest(spec: &GuestDomainMigrationSpec, planned: &[PlannedGuest]) -> String {
    let guests: Vec<[&str; 2]> = planned
        .iter()
        .map(|g| [g.id.as_str(), g.email.as_str()])
        .collect();
    let canonical = serde_json::json!({
        "from": spec.from,
        "to": spec.to,
        "redirectUrl": spec.redirect_url,
        "sendInvitationMessage": spec.send_invitation_message,
        "message": spec.message,
        "changeRef": spec.change_ref,
        "guests": guests,
    });
    let json = serde_json::to_vec(&canonical).expect("a JSON value serialises");
    let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &json);
    let hex: String = sum.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The planned guests as the plan ConfigMap lists them: `id new-email current-mail`, a line
/// each, in plan order.
pub fn planned_text(planned: &[PlannedGuest]) -> String {
    planned
        .iter()
        .map(|g| format!("{} {} {}\n", g.id, g.email, g.mail))
        .collect()
}

/// The excluded users as the plan ConfigMap lists them: `id mail reason [new-email]`.
pub fn excluded_text(excluded: &[Excluded]) -> String {
    excluded
        .iter()
        .map(|e| {
            let email = e
                .email
                .as_deref()
                .map(|m| format!(" {m}"))
                .unwrap_or_default();
            format!("{} {} {}{email}\n", e.id, e.mail, e.reason.label())
        })
        .collect()
}

/// Reads [`planned_text`] back; `None` when a line is not three fields.
pub fn parse_planned(text: &str) -> Option<Vec<PlannedGuest>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut fields = line.split(' ');
            let (Some(id), Some(email), Some(mail), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return None;
            };
            Some(PlannedGuest {
                id: id.to_owned(),
                email: email.to_owned(),
                mail: mail.to_owned(),
            })
        })
        .collect()
}

/// The name of the reset for `user_id`: `<migration>-<first 8 hex of sha256(user id)>`, at
/// most 63 characters (admission holds migration names to 54).
pub fn reset_name(migration: &str, user_id: &str) -> String {
    let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, user_id.as_bytes());
    let hex: String = sum.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let prefix: String = migration.chars().take(54).collect();
    format!("{prefix}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, kind: &str, mail: &str) -> DirectoryUser {
        DirectoryUser {
            id: id.into(),
            user_type: Some(kind.into()),
            user_principal_name: Some(format!("{id}#EXT#@t.onmicrosoft.com")),
            mail: Some(mail.into()),
            other_mails: vec![],
            external_user_state: None,
            external_user_state_change_date_time: None,
        }
    }

    fn spec() -> GuestDomainMigrationSpec {
        serde_json::from_value(serde_json::json!({"from": "contoso.com", "to": "fabrikam.example"}))
            .unwrap()
    }

    #[test]
    fn guests_are_planned_members_and_taken_addresses_excluded() {
        let found = vec![
            user("3", "Guest", "Cara@Contoso.com"),
            user("1", "Guest", "ann@contoso.com"),
            user("2", "Member", "bob@contoso.com"),
            user("4", "Guest", "dan@contoso.com"),
            // Listed by a lagging index, but its mail moved on: not part of the domain now.
            user("5", "Guest", "eve@elsewhere.example"),
        ];
        let mut holder = user("9", "Member", "dan@fabrikam.example");
        holder.mail = Some("x@fabrikam.example".into());
        holder.other_mails = vec!["DAN@fabrikam.example".into()];
        let plan = plan(
            "contoso.com",
            "fabrikam.example",
            &Renames::new(),
            &found,
            &[holder],
        );
        assert_eq!(
            plan.planned,
            vec![
                PlannedGuest {
                    id: "1".into(),
                    email: "ann@fabrikam.example".into(),
                    mail: "ann@contoso.com".into()
                },
                PlannedGuest {
                    id: "3".into(),
                    email: "Cara@fabrikam.example".into(),
                    mail: "Cara@Contoso.com".into()
                },
            ]
        );
        assert_eq!(plan.excluded.len(), 2);
        assert_eq!(plan.excluded[0].reason, Exclusion::Member);
        assert_eq!(
            plan.excluded[1].reason,
            Exclusion::AddressInUse { by: "9".into() }
        );
        assert_eq!((plan.members(), plan.conflicts()), (1, 1));
    }

    #[test]
    fn a_guest_already_holding_its_new_address_is_planned() {
        let mut ann = user("1", "Guest", "ann@contoso.com");
        ann.other_mails = vec!["ann@fabrikam.example".into()];
        let plan = plan(
            "contoso.com",
            "fabrikam.example",
            &Renames::new(),
            &[ann.clone()],
            &[ann],
        );
        assert_eq!(plan.planned.len(), 1);
        assert!(plan.excluded.is_empty());
    }

    #[test]
    fn renames_apply_and_two_guests_wanting_one_address_are_both_excluded() {
        let mut renames = Renames::new();
        renames.insert("ann.lee".into(), "ann".into());
        let found = vec![
            user("1", "Guest", "ann@contoso.com"),
            user("2", "Guest", "Ann.Lee@contoso.com"),
            user("3", "Guest", "bo@contoso.com"),
        ];
        let plan = plan("contoso.com", "fabrikam.example", &renames, &found, &[]);
        assert_eq!(plan.planned.len(), 1);
        assert_eq!(plan.planned[0].email, "bo@fabrikam.example");
        assert!(
            plan.excluded
                .iter()
                .all(|e| e.reason == Exclusion::SameNewAddress)
        );
        assert_eq!(plan.excluded.len(), 2);
    }

    #[test]
    fn the_plan_and_digest_do_not_depend_on_the_directory_order() {
        let a = vec![
            user("1", "Guest", "a@contoso.com"),
            user("2", "Guest", "b@contoso.com"),
        ];
        let b: Vec<_> = a.iter().rev().cloned().chain(a.clone()).collect();
        let (pa, pb) = (
            plan("contoso.com", "fabrikam.example", &Renames::new(), &a, &[]),
            plan("contoso.com", "fabrikam.example", &Renames::new(), &b, &[]),
        );
        assert_eq!(pa, pb);
        assert_eq!(digest(&spec(), &pa.planned), digest(&spec(), &pb.planned));
    }

    #[test]
    fn the_digest_covers_every_value_a_reset_carries() {
        let planned = plan(
            "contoso.com",
            "fabrikam.example",
            &Renames::new(),
            &[user("1", "Guest", "a@contoso.com")],
            &[],
        )
        .planned;
        let base = digest(&spec(), &planned);
        assert!(base.starts_with("sha256:") && base.len() == 71);
        let mut changed = spec();
        changed.change_ref = Some("CHG-2".into());
        assert_ne!(digest(&changed, &planned), base);
        let mut changed = spec();
        changed.send_invitation_message = false;
        assert_ne!(digest(&changed, &planned), base);
        let mut other = planned.clone();
        other[0].email = "z@fabrikam.example".into();
        assert_ne!(digest(&spec(), &other), base);
        // A dry run plans the same plan: the digest an approver reads does not change.
        let mut dry = spec();
        dry.dry_run = true;
        assert_eq!(digest(&dry, &planned), base);
    }

    #[test]
    fn the_configmap_text_reads_back() {
        let planned = vec![
            PlannedGuest {
                id: "1".into(),
                email: "a@f.example".into(),
                mail: "a@c.com".into(),
            },
            PlannedGuest {
                id: "2".into(),
                email: "b@f.example".into(),
                mail: "b@c.com".into(),
            },
        ];
        assert_eq!(parse_planned(&planned_text(&planned)), Some(planned));
        assert_eq!(parse_planned("1 a@f.example\n"), None);
        assert_eq!(parse_planned("1 a b c\n"), None);
    }

    #[test]
    fn reset_names_are_deterministic_and_short() {
        let a = reset_name(
            "contoso-to-fabrikam",
            "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41",
        );
        assert_eq!(
            a,
            reset_name(
                "contoso-to-fabrikam",
                "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41"
            )
        );
        assert_ne!(
            a,
            reset_name(
                "contoso-to-fabrikam",
                "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e42"
            )
        );
        assert!(
            a.starts_with("contoso-to-fabrikam-") && a.len() == "contoso-to-fabrikam-".len() + 8
        );
        assert!(reset_name(&"m".repeat(54), "x").len() <= 63);
    }

    #[test]
    fn reset_spec_carries_the_migration_values() {
        let mut spec = spec();
        spec.change_ref = Some("CHG-1".into());
        let guest = PlannedGuest {
            id: "1".into(),
            email: "a@f.example".into(),
            mail: "a@c.com".into(),
        };
        let reset = reset_spec(&spec, &guest);
        assert_eq!(reset.user.id.as_deref(), Some("1"));
        assert_eq!(reset.email, "a@f.example");
        assert_eq!(reset.change_ref.as_deref(), Some("CHG-1"));
        assert!(reset.update_mail && !reset.dry_run && reset.redeem_url_secret.is_none());
    }
}
