//! Objects for the plugin's unit tests, as the API server and the controller would leave them.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::ObjectMeta;

use crate::resource::reason::Reason;
use crate::resource::{
    Approval, Decision, GuestRedemptionReset, GuestRedemptionResetSpec, GuestRedemptionResetStatus,
};

pub const NOW: &str = "2026-12-02T14:01:10Z";

pub fn now() -> Timestamp {
    NOW.parse().unwrap()
}

pub fn at(text: &str) -> Time {
    Time(text.parse().unwrap())
}

/// `identity/alice` at `generation`, created ten minutes before [`NOW`], resource version "42".
pub fn object(generation: i64, status: Option<GuestRedemptionResetStatus>) -> GuestRedemptionReset {
    // Through serde, so that the CRD's defaults fill in the rest.
    let spec: GuestRedemptionResetSpec = serde_json::from_value(serde_json::json!({
        "user": {"mail": "alice@contoso.com"},
        "email": "alice@newco.example",
    }))
    .expect("a valid spec");
    let mut obj = GuestRedemptionReset::new("alice", spec);
    obj.metadata = ObjectMeta {
        name: Some("alice".into()),
        namespace: Some("identity".into()),
        generation: Some(generation),
        resource_version: Some("42".into()),
        creation_timestamp: Some(at("2026-12-02T13:51:10Z")),
        ..ObjectMeta::default()
    };
    obj.status = status;
    obj
}

/// A status for `generation` whose Ready condition has `reason`.
pub fn status(generation: i64, reason: Reason, message: &str) -> GuestRedemptionResetStatus {
    GuestRedemptionResetStatus {
        observed_generation: Some(generation),
        phase: Some(reason.phase()),
        conditions: vec![condition(
            "Ready",
            reason.readiness().as_str(),
            reason.as_str(),
            message,
            generation,
        )],
        ..GuestRedemptionResetStatus::default()
    }
}

pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: i64,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: at("2026-12-02T13:55:00Z"),
    }
}

pub fn approval(generation: i64, decision: Decision, by: &str) -> Approval {
    Approval {
        generation,
        decision,
        by: by.into(),
        groups: vec![],
        at: at("2026-12-02T13:58:00Z"),
        reason: "CHG-1 reviewed".into(),
        retry: None,
        admitted_under: None,
        digest: None,
    }
}
