//! The status documents of one issuance, shaped like the ones the controller writes
//! (docs/resource.md, "status"), so that the floor writes the same amount and the seeded resources read as done.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::world::Target;

pub fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn ready(status: &str, reason: &str, message: &str, generation: i64, since: &str) -> Value {
    json!([{
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    }])
}

fn user(target: &Target) -> Value {
    json!({
        "id": target.user_id,
        "userPrincipalName": target.upn,
        "previousMail": target.old_mail,
    })
}

/// What the operator records of the user's redemption state in the intent
/// (`attempt.userStateBefore`), from the user as Graph returned it.
pub fn state_before(user: &Value) -> Value {
    let mut state = json!({});
    if let Some(s) = user["externalUserState"].as_str() {
        state["externalUserState"] = json!(s);
    }
    if let Some(at) = user["externalUserStateChangeDateTime"].as_str() {
        state["changedAt"] = json!(at);
    }
    state
}

/// Ready=Unknown `InProgress` with the intent record (`status.attempt`: its id, generation,
/// start, the email and the user's state before, as the operator's recovery needs them).
pub fn intent(
    target: &Target,
    generation: i64,
    attempt_id: &str,
    since: &str,
    state_before: Value,
) -> Value {
    json!({
        "observedGeneration": generation,
        "phase": "InProgress",
        "target": target.upn,
        "user": user(target),
        "attempt": {
            "id": attempt_id,
            "generation": generation,
            "startedAt": now(),
            "email": target.email,
            "userStateBefore": state_before,
        },
        "conditions": ready(
            "Unknown",
            "InProgress",
            &format!("issuing the invitation for generation {generation}"),
            generation,
            since,
        ),
    })
}

/// The intent with `attempt.postStartedAt`, written right before the POST.
pub fn sending(mut intent: Value) -> Value {
    intent["attempt"]["postStartedAt"] = json!(now());
    intent
}

/// The ids that find one Graph call in Entra's audit log.
pub struct CallIds {
    pub request_id: String,
    pub client_request_id: String,
}

/// Ready=True `Issued`: the invitation and its history entry with the call's ids, no attempt.
pub fn issued(target: &Target, generation: i64, invitation_id: &str, ids: &CallIds) -> Value {
    let at = now();
    json!({
        "observedGeneration": generation,
        "phase": "Succeeded",
        "target": target.upn,
        "user": user(target),
        "invitation": {
            "id": invitation_id,
            "email": target.email,
            "redeemStatus": "PendingAcceptance",
            "issuedAt": at,
            "generation": generation,
            "recovered": false,
            "requestId": ids.request_id,
            "clientRequestId": ids.client_request_id,
        },
        "history": [{
            "generation": generation,
            "email": target.email,
            "invitationId": invitation_id,
            "issuedAt": at,
            "recovered": false,
            "requestId": ids.request_id,
            "clientRequestId": ids.client_request_id,
        }],
        "conditions": ready(
            "True",
            "Issued",
            &format!(
                "redemption of {} reset to {}; invitation {invitation_id} is PendingAcceptance",
                target.upn, target.email
            ),
            generation,
            &at,
        ),
    })
}

/// The start of the follow-through that the operator's outcome write carries: `redemption`
/// with the first check five minutes on, and condition `Redeemed`.
pub fn with_follow_through(mut issued: Value, generation: i64) -> Value {
    let at = now();
    let next_check = (Timestamp::now() + std::time::Duration::from_secs(300))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    issued["redemption"] = json!({
        "generation": generation,
        "state": "PendingAcceptance",
        "since": at,
        "nextCheckAt": next_check,
    });
    issued["conditions"]
        .as_array_mut()
        .expect("a list of conditions")
        .push(json!({
            "type": "Redeemed",
            "status": "Unknown",
            "reason": "PendingAcceptance",
            "message": format!(
                "issued 0s ago; the guest has not redeemed the invitation yet; next check at {next_check}"
            ),
            "observedGeneration": generation,
            "lastTransitionTime": at,
        }));
    issued
}

impl CallIds {
    /// Ids for a seeded status that no call produced.
    pub fn made_up() -> CallIds {
        CallIds {
            request_id: uuid::Uuid::new_v4().to_string(),
            client_request_id: uuid::Uuid::new_v4().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        crate::world::targets("t", 1, false).remove(0)
    }

    #[test]
    fn issued_reads_as_done_for_its_generation() {
        let ids = CallIds {
            request_id: "r".into(),
            client_request_id: "c".into(),
        };
        let status = with_follow_through(issued(&target(), 3, "inv-1", &ids), 3);
        assert_eq!(status["observedGeneration"], 3);
        assert_eq!(status["conditions"][0]["reason"], "Issued");
        assert_eq!(status["conditions"][0]["status"], "True");
        assert_eq!(status["conditions"][0]["observedGeneration"], 3);
        assert_eq!(status["invitation"]["generation"], 3);
        assert!(status.get("attempt").is_none());
        assert_eq!(status["conditions"][1]["type"], "Redeemed");
        assert_eq!(status["redemption"]["generation"], 3);
        assert_eq!(status["history"][0]["requestId"], "r");
    }

    #[test]
    fn sending_marks_the_attempt() {
        let t = target();
        let user = json!({"externalUserState": "Accepted"});
        let status = sending(intent(&t, 1, "a-1", &now(), state_before(&user)));
        assert_eq!(
            status["attempt"]["userStateBefore"]["externalUserState"],
            "Accepted"
        );
        assert_eq!(status["attempt"]["email"], t.email.as_str());
        assert_eq!(status["attempt"]["id"], "a-1");
        assert!(status["attempt"]["postStartedAt"].is_string());
        assert_eq!(status["user"]["previousMail"], t.old_mail.as_str());
    }
}
