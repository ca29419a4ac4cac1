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

/// Ready=Unknown `InProgress` with the intent record (`status.attempt`).
pub fn intent(target: &Target, generation: i64, attempt_id: &str, since: &str) -> Value {
    json!({
        "observedGeneration": generation,
        "phase": "InProgress",
        "target": target.upn,
        "user": user(target),
        "attempt": {"id": attempt_id, "generation": generation, "startedAt": now()},
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

/// Ready=True `Issued`: the invitation, its history entry, no attempt.
pub fn issued(target: &Target, generation: i64, invitation_id: &str) -> Value {
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
        },
        "history": [{
            "generation": generation,
            "email": target.email,
            "invitationId": invitation_id,
            "issuedAt": at,
            "recovered": false,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        crate::world::targets("t", 1, false).remove(0)
    }

    #[test]
    fn issued_reads_as_done_for_its_generation() {
        let status = issued(&target(), 3, "inv-1");
        assert_eq!(status["observedGeneration"], 3);
        assert_eq!(status["conditions"][0]["reason"], "Issued");
        assert_eq!(status["conditions"][0]["status"], "True");
        assert_eq!(status["conditions"][0]["observedGeneration"], 3);
        assert_eq!(status["invitation"]["generation"], 3);
        assert!(status.get("attempt").is_none());
    }

    #[test]
    fn sending_marks_the_attempt() {
        let t = target();
        let status = sending(intent(&t, 1, "a-1", &now()));
        assert_eq!(status["attempt"]["id"], "a-1");
        assert!(status["attempt"]["postStartedAt"].is_string());
        assert_eq!(status["user"]["previousMail"], t.old_mail.as_str());
    }
}
