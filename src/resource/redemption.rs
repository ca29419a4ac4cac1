//! The follow-through's part of the status (docs/resource.md, "Following through").

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The follow-through of one issued generation (docs/resource.md, "Following through").
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Redemption {
    /// The generation whose invitation is followed; a new generation starts afresh.
    pub generation: i64,
    pub state: RedemptionState,
    /// When the issuance began (the attempt's start): the watch and the age count from here,
    /// and only a change of the guest's state after it (less the clock-skew allowance) counts.
    pub since: Time,
    /// `externalUserStateChangeDateTime` of the redemption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_at: Option<Time>,
    /// No read of the guest before this time; absent once the state is final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check_at: Option<Time>,
}

/// The state of a follow-through; also the reason of the `Redeemed` condition.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedemptionState {
    PendingAcceptance,
    Accepted,
    NotRedeemed,
}

impl RedemptionState {
    pub fn as_str(self) -> &'static str {
        match self {
            RedemptionState::PendingAcceptance => "PendingAcceptance",
            RedemptionState::Accepted => "Accepted",
            RedemptionState::NotRedeemed => "NotRedeemed",
        }
    }

    /// The `status` of the `Redeemed` condition.
    pub fn condition_status(self) -> &'static str {
        match self {
            RedemptionState::PendingAcceptance => "Unknown",
            RedemptionState::Accepted => "True",
            RedemptionState::NotRedeemed => "False",
        }
    }

    pub fn is_final(self) -> bool {
        self != RedemptionState::PendingAcceptance
    }
}
