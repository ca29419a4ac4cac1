//! The `roles` claim of an app-only access token, read without verifying the signature: the
//! token is the one the credential just handed us, and `guestreset check` only wants to say
//! which application permissions Entra put in it. The token itself is never printed.

use base64::Engine;
use serde::Deserialize;

/// The application permission every Graph call of the controller needs (docs/install.md).
pub const REQUIRED_ROLE: &str = "User.ReadWrite.All";

/// Why no `roles` could be read from a token.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("the access token is not a JWT (three dot-separated parts)")]
    NotAJwt,
    #[error("the access token's payload is not base64url")]
    NotBase64,
    #[error("the access token's payload is not a JSON object")]
    NotJson,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    roles: Vec<String>,
}

/// The `roles` of a JWT access token; empty when the claim is absent (no permission granted).
pub fn roles(jwt: &str) -> Result<Vec<String>, ClaimsError> {
    let mut parts = jwt.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ClaimsError::NotAJwt);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| ClaimsError::NotBase64)?;
    let payload: Payload = serde_json::from_slice(&bytes).map_err(|_| ClaimsError::NotJson)?;
    Ok(payload.roles)
}

/// Whether `roles` grant the controller's permission (Entra spells roles exactly; compared
/// without case all the same, as a hand-made app role might differ in case only).
pub fn grants_required(roles: &[String]) -> bool {
    roles.iter().any(|r| r.eq_ignore_ascii_case(REQUIRED_ROLE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt(payload: &serde_json::Value) -> String {
        let e = |v: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.c2ln",
            e(json!({"alg": "RS256"}).to_string()),
            e(payload.to_string())
        )
    }

    #[test]
    fn reads_the_roles_of_an_app_only_token() {
        let token = jwt(&json!({"tid": "t", "roles": ["User.Read.All", "User.ReadWrite.All"]}));
        let roles = roles(&token).unwrap();
        assert_eq!(roles, ["User.Read.All", "User.ReadWrite.All"]);
        assert!(grants_required(&roles));
    }

    #[test]
    fn a_token_without_the_permission_does_not_grant_it() {
        assert_eq!(
            roles(&jwt(&json!({"tid": "t"}))).unwrap(),
            Vec::<String>::new()
        );
        let read_only = roles(&jwt(&json!({"roles": ["User.Read.All"]}))).unwrap();
        assert!(!grants_required(&read_only));
    }

    #[test]
    fn refuses_what_is_not_a_jwt() {
        assert_eq!(roles("opaque"), Err(ClaimsError::NotAJwt));
        assert_eq!(roles("a.b.c.d"), Err(ClaimsError::NotAJwt));
        assert_eq!(roles("a.!!.c"), Err(ClaimsError::NotBase64));
        let not_json = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("[1");
        assert_eq!(roles(&format!("a.{not_json}.c")), Err(ClaimsError::NotJson));
    }
}
