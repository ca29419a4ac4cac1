//! The schema parts both resources share: the e-mail rule, the invitation e-mail, defaults,
//! and the CRD's post-processing.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Redirect target used when the spec does not name one.
pub const DEFAULT_REDIRECT_URL: &str = "https://myapps.microsoft.com";

/// The e-mail rule shared by `spec.email`, `spec.user.mail` and `spec.message.ccRecipient`.
///
/// One `@`, no white space (`\p{Z}\p{Cc}`, not `\s`, which means only ASCII space in the API
/// server's RE2 but all of Unicode's in other engines), a dotted domain of DNS labels, and a local part without the
/// characters Graph refuses in `invitedUserEmailAddress`; `.` and `-` are allowed in the local
/// part except at its start or end. RE2 syntax, inside a CEL raw string.
pub(super) const EMAIL_RULE: &str = r#"self.matches(r'^[^\p{Z}\p{Cc}@~!#$%^&*()+=\[\]{}\\/|;:"<>?,.-]([^\p{Z}\p{Cc}@~!#$%^&*()+=\[\]{}\\/|;:"<>?,]*[^\p{Z}\p{Cc}@~!#$%^&*()+=\[\]{}\\/|;:"<>?,.-])?@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$') && !self.contains('..')"#;
pub(super) const EMAIL_MESSAGE: &str = "must be an e-mail address: one '@', a dotted domain, no spaces or consecutive dots, and none of ~ ! # $ % ^ & * ( ) + = [ ] { } \\ / | ; : \" < > ? , in the local part (nor '.' or '-' at its start or end)";

/// The invitation e-mail's customisation (Graph's invitedUserMessageInfo).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InvitationMessage {
    /// BCP-47 language of the e-mail; Graph ignores it when body is set.
    #[serde(default = "default_language")]
    #[schemars(regex(pattern = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"))]
    #[schemars(length(min = 2, max = 35))]
    pub language: String,

    /// A custom message body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4000))]
    pub body: Option<String>,

    /// One address to copy on the invitation e-mail (Graph honours a single cc recipient).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(EMAIL_RULE).message(EMAIL_MESSAGE))]
    #[schemars(length(min = 3, max = 254))]
    pub cc_recipient: Option<String>,
}

pub(super) fn default_redirect_url() -> String {
    DEFAULT_REDIRECT_URL.to_owned()
}

pub(super) fn default_true() -> bool {
    true
}

pub(super) fn default_language() -> String {
    "en-US".to_owned()
}

pub(super) fn strip_nullable(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if map.get("nullable") == Some(&serde_json::Value::Bool(true)) {
                map.remove("nullable");
                if let Some(serde_json::Value::Array(variants)) = map.get_mut("enum") {
                    variants.retain(|v| !v.is_null());
                }
            }
            map.values_mut().for_each(strip_nullable);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nullable),
        _ => {}
    }
}
