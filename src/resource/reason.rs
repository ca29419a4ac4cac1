//! The reasons of the Ready condition (docs/resource.md, "Reasons of Ready") and what each one
//! implies.

use super::reset::Phase;

/// The condition types of `status.conditions` (docs/resource.md, "Conditions").
/// The readiness of the generation: its reason is a [`Reason`].
pub const READY: &str = "Ready";
/// kstatus's conditions (read by Flux, kpt and Argo CD's health script): True while the
/// controller works or waits, True on a failure that needs a person.
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
/// With `--require-approval`: whether the generation's approval was acted on.
pub const APPROVED: &str = "Approved";
/// Whether the guest redeemed the invitation (the follow-through).
pub const REDEEMED: &str = "Redeemed";

/// A reason of the `Ready` condition. Tests and users match on [`Reason::as_str`], the
/// variant's name.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    strum::Display,
)]
pub enum Reason {
    Pending,
    InProgress,
    Throttled,
    TransientError,
    Issued,
    DryRunComplete,
    UserNotFound,
    AmbiguousUser,
    NotAGuest,
    EmailNotOnUser,
    EmailInUse,
    PolicyDenied,
    Forbidden,
    TenantBlocked,
    OutcomeUnknown,
    GraphRejected,
    AwaitingApproval,
    Denied,
}

/// The `status` of the Ready condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    True,
    False,
    Unknown,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::True => "True",
            Readiness::False => "False",
            Readiness::Unknown => "Unknown",
        }
    }
}

impl Reason {
    /// Every reason, in the order of the table in docs/resource.md.
    pub const ALL: &[Reason] = <Reason as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Reason> {
        s.parse().ok()
    }

    pub fn readiness(self) -> Readiness {
        match self {
            Reason::Pending
            | Reason::InProgress
            | Reason::Throttled
            | Reason::TransientError
            | Reason::AwaitingApproval => Readiness::Unknown,
            Reason::Issued | Reason::DryRunComplete => Readiness::True,
            _ => Readiness::False,
        }
    }

    /// `phase` follows Ready: Unknown → Pending or InProgress, True → Succeeded, False → Failed.
    pub fn phase(self) -> Phase {
        match (self, self.readiness()) {
            // Waiting for a person is not work under way.
            (Reason::Pending | Reason::AwaitingApproval, _) => Phase::Pending,
            (_, Readiness::Unknown) => Phase::InProgress,
            (_, Readiness::True) => Phase::Succeeded,
            (_, Readiness::False) => Phase::Failed,
        }
    }

    /// Events for failures and for trouble on the way are Warnings; the rest are Normal.
    pub fn is_warning(self) -> bool {
        matches!(self.readiness(), Readiness::False)
            || matches!(self, Reason::Throttled | Reason::TransientError)
    }

    /// The `Reconciling` condition (kstatus): the controller still works on the generation, or
    /// waits for a write slot, the end of a tenant pause or an approval.
    pub fn is_reconciling(self) -> bool {
        matches!(self.readiness(), Readiness::Unknown) || self == Reason::TenantBlocked
    }

    /// The `Stalled` condition (kstatus): a failure that needs a person. Every `Ready=False`
    /// reason but `TenantBlocked`, which ends by itself; `Forbidden` is retried every ten
    /// minutes, but only a granted permission (or a changed target) ends it.
    pub fn is_stalled(self) -> bool {
        matches!(self.readiness(), Readiness::False) && self != Reason::TenantBlocked
    }

    /// Settled reasons need nothing more for their generation until the spec or the retry
    /// annotation changes. Forbidden and TenantBlocked are failures that retry on a schedule.
    pub fn is_settled(self) -> bool {
        match self.readiness() {
            Readiness::True => true,
            Readiness::False => !matches!(self, Reason::Forbidden | Reason::TenantBlocked),
            Readiness::Unknown => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_api_md() {
        use Readiness::*;
        // name, Ready, phase, settled, Reconciling, Stalled
        let expected = [
            ("Pending", Unknown, Phase::Pending, false, true, false),
            ("InProgress", Unknown, Phase::InProgress, false, true, false),
            ("Throttled", Unknown, Phase::InProgress, false, true, false),
            (
                "TransientError",
                Unknown,
                Phase::InProgress,
                false,
                true,
                false,
            ),
            ("Issued", True, Phase::Succeeded, true, false, false),
            ("DryRunComplete", True, Phase::Succeeded, true, false, false),
            ("UserNotFound", False, Phase::Failed, true, false, true),
            ("AmbiguousUser", False, Phase::Failed, true, false, true),
            ("NotAGuest", False, Phase::Failed, true, false, true),
            ("EmailNotOnUser", False, Phase::Failed, true, false, true),
            ("EmailInUse", False, Phase::Failed, true, false, true),
            ("PolicyDenied", False, Phase::Failed, true, false, true),
            ("Forbidden", False, Phase::Failed, false, false, true),
            ("TenantBlocked", False, Phase::Failed, false, true, false),
            ("OutcomeUnknown", False, Phase::Failed, true, false, true),
            ("GraphRejected", False, Phase::Failed, true, false, true),
            (
                "AwaitingApproval",
                Unknown,
                Phase::Pending,
                false,
                true,
                false,
            ),
            ("Denied", False, Phase::Failed, true, false, true),
        ];
        assert_eq!(expected.len(), Reason::ALL.len());
        for (name, ready, phase, settled, reconciling, stalled) in expected {
            let reason = Reason::parse(name).unwrap();
            assert_eq!(reason.as_str(), name);
            assert_eq!(reason.readiness(), ready, "{name}");
            assert_eq!(reason.phase(), phase, "{name}");
            assert_eq!(reason.is_settled(), settled, "{name}");
            assert_eq!(reason.is_reconciling(), reconciling, "{name}");
            assert_eq!(reason.is_stalled(), stalled, "{name}");
            assert_eq!(
                reason.is_warning(),
                ready == False || matches!(name, "Throttled" | "TransientError")
            );
        }
    }
}
