//! Entra's token endpoint (client credentials with a secret or a client assertion)
//! and the App Service managed-identity endpoint that azure_identity can use.

use crate::model::AssertionClaims;
use crate::reply::{Ctx, Reply};
use crate::state::{Identity, State};
use base64::Engine;
use rand::RngCore;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub(crate) const TOKEN_LIFETIME_SECS: u64 = 3599;
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The header azure_identity sends for App Service managed identity (value from `IDENTITY_HEADER`).
pub(crate) const IDENTITY_HEADER: &str = "x-identity-header";

/// A JWT shaped like Entra's app-only access tokens: the claims a client may read (`tid`,
/// `appid`, `roles`) and a random signature, so that every token is new.
fn new_access_token(state: &State, identity: &Identity) -> String {
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    let encode = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let mut claims = json!({
        "aud": identity.base_url,
        "tid": identity.tenant_id,
        "appid": identity.client_id,
        "exp": time::OffsetDateTime::now_utc().unix_timestamp() + TOKEN_LIFETIME_SECS as i64,
    });
    if !state.settings.tokens_without_roles {
        claims["roles"] = json!(["User.ReadWrite.All"]);
    }
    let header = json!({"typ": "JWT", "alg": "RS256"}).to_string();
    let payload = claims.to_string();
    format!(
        "{}.{}.{}",
        encode(header.as_bytes()),
        encode(payload.as_bytes()),
        encode(&bytes)
    )
}

fn issue(state: &mut State, identity: &Identity) -> String {
    let token = new_access_token(state, identity);
    state.tokens.insert(
        token.clone(),
        Instant::now() + Duration::from_secs(TOKEN_LIFETIME_SECS),
    );
    state.issued_tokens.push(token.clone());
    token
}

/// `POST /{tenant}/oauth2/v2.0/token`
pub(crate) fn token(
    state: &mut State,
    identity: &Identity,
    ctx: &Ctx,
    tenant: &str,
    body: &[u8],
) -> Reply {
    let form: HashMap<String, String> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let missing = |name: &str| {
        Reply::entra_error(
            ctx,
            400,
            "invalid_request",
            900144,
            &format!("The request body must contain the following parameter: '{name}'."),
        )
    };

    if !tenant.eq_ignore_ascii_case(&identity.tenant_id) {
        return Reply::entra_error(
            ctx,
            400,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    let Some(grant_type) = field("grant_type") else {
        return missing("grant_type");
    };
    if grant_type != "client_credentials" {
        return Reply::entra_error(
            ctx,
            400,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant_type}'."),
        );
    }
    let Some(client_id) = field("client_id") else {
        return missing("client_id");
    };
    if !client_id.eq_ignore_ascii_case(&identity.client_id) {
        return Reply::entra_error(
            ctx,
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        );
    }
    let Some(scope) = field("scope") else {
        return missing("scope");
    };
    if scope.contains(' ') || !scope.ends_with("/.default") {
        return Reply::entra_error(
            ctx,
            400,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    }

    match (field("client_secret"), field("client_assertion")) {
        (Some(secret), _) => {
            if secret != identity.client_secret {
                return Reply::entra_error(
                    ctx,
                    401,
                    "invalid_client",
                    7000215,
                    &format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                    ),
                );
            }
        }
        (None, Some(assertion)) => {
            if field("client_assertion_type") != Some(JWT_BEARER) {
                return Reply::entra_error(
                    ctx,
                    400,
                    "invalid_request",
                    50027,
                    "Invalid client_assertion_type: it must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
                );
            }
            match assertion_claims(assertion) {
                Ok(claims) => state.assertions.push(claims),
                Err(AssertionError::Expired) => {
                    return Reply::entra_error(
                        ctx,
                        400,
                        "invalid_client",
                        700024,
                        "Client assertion is not within its valid time range.",
                    );
                }
                Err(AssertionError::Malformed(why)) => {
                    return Reply::entra_error(
                        ctx,
                        400,
                        "invalid_client",
                        50027,
                        &format!("JWT token is invalid or is malformed ({why})."),
                    );
                }
            }
        }
        (None, None) => {
            return Reply::entra_error(
                ctx,
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
    }

    let access_token = issue(state, identity);
    Reply::plain_json(
        200,
        &json!({
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECS,
            "ext_expires_in": TOKEN_LIFETIME_SECS,
            "access_token": access_token,
        }),
    )
    .with_effect("token issued")
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AssertionError {
    Malformed(String),
    Expired,
}

/// Reads `aud`, `iss`, `sub` (and `exp` when present) from a JWT without checking its signature.
pub(crate) fn assertion_claims(jwt: &str) -> Result<AssertionClaims, AssertionError> {
    let malformed = |why: &str| AssertionError::Malformed(why.to_string());
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 || parts.iter().take(2).any(|p| p.is_empty()) {
        return Err(malformed("a JWT has three dot-separated parts"));
    }
    let decode = |part: &str| -> Result<Value, AssertionError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .map_err(|_| malformed("not base64url"))?;
        serde_json::from_slice(&bytes).map_err(|_| malformed("not JSON"))
    };
    let header = decode(parts[0])?;
    if header.get("alg").and_then(Value::as_str).is_none() {
        return Err(malformed("header without alg"));
    }
    let payload = decode(parts[1])?;
    let claim = |name: &str| -> Result<String, AssertionError> {
        let value = match payload.get(name) {
            Some(Value::String(s)) => s.clone(),
            // `aud` may be a list; the first entry is the audience.
            Some(Value::Array(items)) => items
                .first()
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        if value.trim().is_empty() {
            Err(malformed(&format!("claim '{name}' missing")))
        } else {
            Ok(value)
        }
    };
    let claims = AssertionClaims {
        aud: claim("aud")?,
        iss: claim("iss")?,
        sub: claim("sub")?,
    };
    if let Some(exp) = payload.get("exp") {
        let exp = exp
            .as_i64()
            .ok_or_else(|| malformed("exp is not a number"))?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if exp <= now {
            return Err(AssertionError::Expired);
        }
    }
    Ok(claims)
}

/// `GET /msi/token?api-version=2019-08-01&resource=...` with `x-identity-header`, the
/// App Service protocol azure_identity's `ManagedIdentityCredential` speaks when
/// `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set. The header must carry the client secret.
pub(crate) fn managed_identity(
    state: &mut State,
    identity: &Identity,
    query: Option<&str>,
    identity_header: Option<&str>,
) -> Reply {
    let params: HashMap<String, String> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let error = |status: u16, message: &str| {
        Reply::plain_json(status, &json!({"statusCode": status, "message": message}))
    };
    if identity_header != Some(identity.client_secret.as_str()) {
        return error(401, "The identity header is missing or wrong.");
    }
    if !params.contains_key("api-version") {
        return error(400, "The api-version parameter is required.");
    }
    let Some(resource) = params.get("resource").filter(|r| !r.is_empty()) else {
        return error(400, "The resource parameter is required.");
    };
    if let Some(client_id) = params.get("client_id")
        && !client_id.eq_ignore_ascii_case(&identity.client_id)
    {
        return error(
            400,
            "The requested identity has not been assigned to this resource.",
        );
    }
    let access_token = issue(state, identity);
    let expires_on = time::OffsetDateTime::now_utc().unix_timestamp() + TOKEN_LIFETIME_SECS as i64;
    Reply::plain_json(
        200,
        &json!({
            "access_token": access_token,
            "expires_on": expires_on.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        }),
    )
    .with_effect("token issued")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &Value) -> String {
        let e = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!(
            "{}.{}.c2ln",
            e(&json!({"alg":"RS256","typ":"JWT"})),
            e(payload)
        )
    }

    #[test]
    fn reads_claims_of_a_federated_token() {
        let claims = assertion_claims(&jwt(&json!({
            "aud": ["api://AzureADTokenExchange"],
            "iss": "https://oidc.example/cluster",
            "sub": "system:serviceaccount:guestreset:controller",
            "exp": 4_000_000_000i64,
        })))
        .unwrap();
        assert_eq!(claims.aud, "api://AzureADTokenExchange");
        assert_eq!(claims.sub, "system:serviceaccount:guestreset:controller");
    }

    #[test]
    fn refuses_malformed_and_expired_assertions() {
        assert!(matches!(
            assertion_claims("not-a-jwt"),
            Err(AssertionError::Malformed(_))
        ));
        assert!(matches!(
            assertion_claims(&jwt(&json!({"aud": "a", "iss": "i"}))),
            Err(AssertionError::Malformed(_))
        ));
        assert_eq!(
            assertion_claims(&jwt(&json!({"aud": "a", "iss": "i", "sub": "s", "exp": 1}))),
            Err(AssertionError::Expired)
        );
    }
}
