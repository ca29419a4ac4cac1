//! Graph's failures as the decision needs them: what can be retried, what is final, what may
//! have taken effect (docs/graph.md).

use super::input::Failure;
use crate::graph::{ErrorClass, FailureKind, GraphError};

/// Graph's refusal of the reset of this user rather than of the application: 403 with
/// `Authorization_RequestDenied` to the POST, as for a user who holds a directory role. A
/// missing permission answers 401, or 403 `Forbidden` (docs/graph.md).
fn refuses_target(err: &GraphError) -> bool {
    err.call == crate::graph::GraphCall::PostInvitation
        && err.status == Some(403)
        && err.code.as_deref() == Some("Authorization_RequestDenied")
}

/// Maps a Graph failure to what the decision needs.
pub fn failure_of(err: &GraphError) -> Failure {
    let text = err.to_string();
    match err.class() {
        ErrorClass::Throttled { retry_after } => Failure::Throttled { retry_after },
        ErrorClass::TransientBeforeSend => Failure::Transient(text),
        ErrorClass::Ambiguous => Failure::Ambiguous(text),
        ErrorClass::AbuseBlocked => Failure::AbuseBlocked(text),
        ErrorClass::Definite if matches!(err.kind, FailureKind::Credential { .. }) => {
            Failure::Forbidden(text)
        }
        ErrorClass::Definite if refuses_target(err) => Failure::TargetRefused(text),
        ErrorClass::Definite if err.is_forbidden() => Failure::Forbidden(text),
        ErrorClass::Definite if err.is_email_not_on_user() => Failure::EmailNotOnUser(text),
        ErrorClass::Definite if err.is_not_found() => Failure::NotFound(text),
        ErrorClass::Definite => Failure::Rejected(text),
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;
    use crate::graph::GraphCall;

    fn answer(call: GraphCall, status: u16, code: &str) -> GraphError {
        let body = format!(r#"{{"error": {{"code": "{code}", "message": "m"}}}}"#);
        GraphError::from_response(call, status, body.as_bytes(), None, None)
    }

    #[test]
    fn a_refused_target_is_told_from_a_missing_permission() {
        let role_holder = answer(
            GraphCall::PostInvitation,
            403,
            "Authorization_RequestDenied",
        );
        assert!(matches!(
            failure_of(&role_holder),
            Failure::TargetRefused(_)
        ));
        // The application's missing permission, as Graph answers it: retried.
        for (status, code) in [(401, "Unauthorized"), (403, "Forbidden")] {
            let missing = answer(GraphCall::PostInvitation, status, code);
            assert!(
                matches!(failure_of(&missing), Failure::Forbidden(_)),
                "{status} {code}"
            );
        }
        // Only the reset refuses a target; a refused PATCH is the permission's.
        let patch = answer(GraphCall::PatchUser, 403, "Authorization_RequestDenied");
        assert!(matches!(failure_of(&patch), Failure::Forbidden(_)));
    }
}
