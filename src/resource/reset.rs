//! `GuestRedemptionReset`: spec, status and the admission rules of its CRD.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::approval::{Approval, PolicyVersion};
use super::common::{
    EMAIL_MESSAGE, EMAIL_RULE, InvitationMessage, default_redirect_url, default_true,
    strip_nullable,
};
use super::precision;
use super::redemption::Redemption;

/// Field manager of the controller's writes, reporter of its Events, and the `managed-by` label
/// of what it creates.
pub const MANAGER: &str = "guestreset";
/// API group of the resource.
pub const GROUP: &str = "guestreset.io";
/// Annotation whose new value asks for one more try of the current generation (docs/resource.md,
/// "Asking again").
pub const RETRY_ANNOTATION: &str = "guestreset.io/retry";
/// How many issuances `status.history` keeps.
pub const HISTORY_LIMIT: usize = 10;
/// Key of the redeem URL inside the Secret named by `spec.redeemUrlSecret`.
pub const REDEEM_URL_SECRET_KEY: &str = "redeemUrl";

/// A request to reset the B2B redemption of one guest so that it signs in with `email`.
///
/// The controller issues the invitation once per spec generation and records the outcome in
/// the status. Deleting the resource changes nothing in the directory.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "guestreset.io",
    version = "v1alpha1",
    kind = "GuestRedemptionReset",
    plural = "guestredemptionresets",
    shortname = "grr",
    category = "guestreset",
    namespaced,
    status = "GuestRedemptionResetStatus",
    derive = "PartialEq",
    doc = "Resets the redemption of a Microsoft Entra B2B guest so that it signs in with a new e-mail; issued once per spec generation.",
    printcolumn = r#"{"name": "User", "type": "string", "description": "The target: the resolved user principal name once known, else the spec's key", "jsonPath": ".status.target"}"#,
    printcolumn = r#"{"name": "Email", "type": "string", "description": "The new sign-in e-mail", "jsonPath": ".spec.email"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "description": "Pending, InProgress, Succeeded or Failed", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "description": "Reason of the Ready condition", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name": "Redeemed", "type": "string", "description": "Reason of the Redeemed condition: PendingAcceptance, Accepted or NotRedeemed", "jsonPath": ".status.conditions[?(@.type==\"Redeemed\")].reason"}"#,
    printcolumn = r#"{"name": "Requested-By", "type": "string", "priority": 1, "description": "Who asked for the observed generation (admission's record)", "jsonPath": ".status.requestedBy"}"#,
    printcolumn = r#"{"name": "Approved", "type": "string", "priority": 1, "description": "Reason of the Approved condition, when approval is required: AwaitingApproval, Approved or Denied (as the controller acted on it, for the observed generation)", "jsonPath": ".status.conditions[?(@.type==\"Approved\")].reason"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GuestRedemptionResetSpec {
    /// The guest whose redemption is reset: exactly one of id, userPrincipalName or mail.
    pub user: UserRef,

    /// The new sign-in e-mail (Graph's invitedUserEmailAddress).
    #[x_kube(validation = Rule::new(EMAIL_RULE).message(EMAIL_MESSAGE))]
    #[schemars(length(min = 3, max = 254))]
    pub email: String,

    /// Where the guest lands after redeeming. Must be an https URL.
    #[serde(default = "default_redirect_url")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') && self.size() > 8 && !self.contains(' ')").message("must be an https:// URL"))]
    #[schemars(length(max = 2048))]
    pub redirect_url: String,

    /// Whether Microsoft sends the invitation e-mail. When false, the redeem URL must reach the
    /// guest another way (see redeemUrlSecret).
    #[serde(default = "default_true")]
    pub send_invitation_message: bool,

    /// Customisation of the invitation e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<InvitationMessage>,

    /// When the email is on neither the user's mail nor otherMails, set the user's mail to it
    /// before the reset (Graph refuses a reset to an address the user object does not carry).
    /// When false, such a request fails with EmailNotOnUser.
    #[serde(default = "default_true")]
    pub update_mail: bool,

    /// A Secret in this namespace to receive the redeem URL under the key `redeemUrl`.
    /// The URL is a credential: it is never written to status, events or logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeem_url_secret: Option<SecretRef>,

    /// A change or ticket reference for audit; carried into events and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub change_ref: Option<String>,

    /// Perform the preflight reads only and record what would be done; write nothing to Graph.
    #[serde(default)]
    pub dry_run: bool,
}

/// Identifies the target user by exactly one key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.id), has(self.userPrincipalName), has(self.mail)].filter(x, x).size() == 1").message("exactly one of id, userPrincipalName or mail must be set"))]
pub struct UserRef {
    /// The user's object id (a GUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    #[schemars(length(max = 36))]
    pub id: Option<String>,

    /// The user's principal name, e.g. alice_contoso.com#EXT#@fabrikam.onmicrosoft.com.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(r"self.matches(r'^[^\p{Z}\p{Cc}@]+@[^\p{Z}\p{Cc}@]+\.[^\p{Z}\p{Cc}@]+$')").message("must be a user principal name: one '@' with a dotted domain and no spaces"))]
    #[schemars(length(min = 3, max = 256))]
    pub user_principal_name: Option<String>,

    /// The guest's current mail; must match exactly one user in the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(EMAIL_RULE).message(EMAIL_MESSAGE))]
    #[schemars(length(min = 3, max = 254))]
    pub mail: Option<String>,
}

/// A Secret in the resource's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name (a DNS subdomain).
    #[schemars(regex(
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    ))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What the controller observed and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GuestRedemptionResetStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Pending, InProgress, Succeeded or Failed; follows the Ready condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// The target as shown by `kubectl get`: the resolved user principal name once known,
    /// else the spec's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,

    /// Standard conditions; Ready tells whether the reset for observedGeneration is done.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The resolved target, as seen in the preflight read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<ResolvedUser>,

    /// The latest invitation issued, for whichever generation it fulfils.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation: Option<IssuedInvitation>,

    /// The intent record, present only while an issuance is in flight. It is written before the
    /// invitation is posted, so an interrupted attempt is recognised and never posted blindly again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<Attempt>,

    /// The last issuances, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub history: Vec<HistoryEntry>,

    /// Since when the target has been missing from the directory. A user is only reported
    /// UserNotFound once it stayed missing for the replication window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_missing_since: Option<Time>,

    /// When the controller tries again after a wait (throttling, a transient failure, a missing
    /// permission, the tenant pause). Passes before then do nothing, so the controller's own
    /// status writes never turn a wait into a loop, and a restart does not retry early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Time>,

    /// The value of the guestreset.io/retry annotation that was last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_token: Option<String>,

    /// The follow-through after `Issued`: has the guest redeemed the new invitation?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redemption: Option<Redemption>,

    /// Who asked for observedGeneration: the guestreset.io/requested-by annotation, which
    /// admission holds to the user who created the resource or last changed its spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,

    /// An approver's decision (with --require-approval). Written by the approver through the
    /// status subresource, checked by admission; the controller never writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,

    /// What the controller will do once the generation is approved: the preflight's findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,

    /// The approval policy and binding in force when the controller planned (with
    /// --require-approval); an approver copies it into the decision, which counts only while
    /// they are still in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_under: Option<PolicyVersion>,
}

/// The user as Graph described it in the preflight read.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedUser {
    /// Object id.
    pub id: String,
    /// User principal name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    /// The user's mail before this reset changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_mail: Option<String>,
    /// The user's mail before the controller set a generation's e-mail on it, while no reset
    /// has gone with that change ("" when it had none): what a target Graph refuses to reset
    /// gets back, whichever pass made the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_changed_from: Option<String>,
    /// The e-mail the controller set with that change: while the user still carries it, the
    /// change is the controller's and `mailChangedFrom` stays; a mail someone else set since
    /// is what the next change replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_changed_to: Option<String>,
}

/// An invitation issued by Graph.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssuedInvitation {
    /// Graph's invitation id; empty when the outcome was recovered rather than answered.
    #[serde(default)]
    pub id: String,
    /// The e-mail the invitation was issued for.
    pub email: String,
    /// Graph's invitation status at issue time (e.g. PendingAcceptance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeem_status: Option<String>,
    /// When the invitation was issued (or the evidence of it was seen).
    pub issued_at: Time,
    /// The spec generation this invitation fulfils.
    pub generation: i64,
    /// True when the outcome was inferred from the directory after an interrupted attempt.
    #[serde(default)]
    pub recovered: bool,
    /// Graph's `request-id` of the POST, to find the call in Entra's audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The `client-request-id` the controller sent with the POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    /// Who asked, who approved and the change, from the attempt this invitation came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditNames>,
}

/// The record of an issuance in flight.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// A fresh UUID per attempt.
    pub id: String,
    /// The spec generation the attempt serves.
    pub generation: i64,
    /// When the attempt was recorded, before the invitation was posted.
    pub started_at: Time,
    /// Set immediately before the invitation POST is sent. An attempt without it never reached
    /// Graph and is safe to start again; one with it may have taken effect (docs/design.md,
    /// "Interrupted attempts").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_started_at: Option<Time>,
    /// The e-mail this attempt issues for, so that a recovered attempt of an older generation
    /// is recorded with that generation's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The user's redemption state as read right before the POST: only a strictly later change
    /// is evidence that this attempt's reset happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_state_before: Option<UserStateBefore>,
    /// Who asked, who approved and the change, as they were when the intent was recorded: the
    /// audit line and the Event of the outcome take them from here, so a spec or annotation
    /// change during the POST cannot rewrite them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditNames>,
}

/// The people and the change of one issuance, captured with its intent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditNames {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub requested_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub change_ref: Option<String>,
}

/// `externalUserState` and its change time, as the preflight read them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserStateBefore {
    /// `PendingAcceptance`, `Accepted`, or absent when the user was never invited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_user_state: Option<String>,
    /// `externalUserStateChangeDateTime`, with the fraction of a second Graph gave (a status
    /// written by an earlier controller holds whole seconds). Recovery compares a fresh read
    /// with it at the precision it has here: equal within that precision is not later.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "precision::serialize_exact"
    )]
    pub changed_at: Option<Time>,
}

/// One past issuance.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The spec generation it fulfilled.
    pub generation: i64,
    /// The e-mail it was issued for.
    pub email: String,
    /// Graph's invitation id (empty when recovered).
    #[serde(default)]
    pub invitation_id: String,
    /// When it was issued.
    pub issued_at: Time,
    /// True when inferred after an interrupted attempt.
    #[serde(default)]
    pub recovered: bool,
    /// Graph's `request-id` of the POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The `client-request-id` the controller sent with the POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
}

impl From<&IssuedInvitation> for HistoryEntry {
    fn from(i: &IssuedInvitation) -> Self {
        HistoryEntry {
            generation: i.generation,
            email: i.email.clone(),
            invitation_id: i.id.clone(),
            issued_at: i.issued_at.clone(),
            recovered: i.recovered,
            request_id: i.request_id.clone(),
            client_request_id: i.client_request_id.clone(),
        }
    }
}

/// The coarse state shown to humans; follows the Ready condition.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    InProgress,
    Succeeded,
    Failed,
}

/// The key that identifies the target user, as the spec gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserKey<'a> {
    Id(&'a str),
    UserPrincipalName(&'a str),
    Mail(&'a str),
}

impl UserRef {
    /// The single key the admission rules guarantee; `None` only for an object that bypassed
    /// admission (the controller reports it instead of panicking).
    pub fn key(&self) -> Option<UserKey<'_>> {
        match (&self.id, &self.user_principal_name, &self.mail) {
            (Some(id), None, None) => Some(UserKey::Id(id)),
            (None, Some(upn), None) => Some(UserKey::UserPrincipalName(upn)),
            (None, None, Some(mail)) => Some(UserKey::Mail(mail)),
            _ => None,
        }
    }
}

impl std::fmt::Display for UserKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserKey::Id(id) => write!(f, "id {id}"),
            UserKey::UserPrincipalName(upn) => write!(f, "{upn}"),
            UserKey::Mail(mail) => write!(f, "mail {mail}"),
        }
    }
}

/// The CustomResourceDefinition as installed.
///
/// Optional fields are plain optional, not `nullable`: the API server then drops an explicit
/// `null` instead of storing it, so `has(self.id)` in the CEL rules means a real value.
pub fn crd() -> CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut value = serde_json::to_value(GuestRedemptionReset::crd())
        .expect("the derived CRD always serialises");
    strip_nullable(&mut value);
    serde_json::from_value(value).expect("stripping nullable keeps a valid CRD")
}

/// The digest of a spec that a plan shows and a decision pins: `sha256:` and the hex SHA-256
/// of the spec's JSON (fields in declaration order, as this crate writes it), so that the
/// plugin and the controller compute the same value for the same spec.
pub fn spec_digest(spec: &GuestRedemptionResetSpec) -> String {
    let json = serde_json::to_vec(spec).expect("a spec serializes");
    let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &json);
    let hex: String = sum.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The CRD as YAML, exactly as committed under `crds/`.
pub fn crd_yaml() -> String {
    let body = serde_yaml::to_string(&crd()).expect("the CRD always serialises");
    format!("# Generated by `guestreset crd` from src/resource/reset.rs; do not edit.\n---\n{body}")
}

#[cfg(test)]
mod tests {
    //! The CEL rules evaluated offline with kube's `cel` feature, against the CRD as installed.
    //! The real API server checks the same rules in tests/admission.rs; these are the fast,
    //! exhaustive half.

    use super::*;
    use crate::resource::DEFAULT_REDIRECT_URL;
    use serde_json::{Value, json};

    fn schema() -> Value {
        let crd = serde_json::to_value(crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    fn object(spec: Value) -> Value {
        json!({
            "apiVersion": "guestreset.io/v1alpha1",
            "kind": "GuestRedemptionReset",
            "metadata": {"name": "t", "namespace": "n"},
            "spec": spec,
        })
    }

    /// The field paths of the CEL rules that fail for this spec.
    fn failures(spec: Value) -> Vec<String> {
        match kube::core::cel::Validator::new().validate(&schema(), &object(spec), None) {
            Ok(()) => vec![],
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn with_email(email: &str) -> Value {
        json!({"user": {"id": "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41"}, "email": email})
    }

    /// The shared list of addresses, also sent to the real API server by tests/admission.rs.
    fn email_cases(kind: &str) -> Vec<String> {
        let cases: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/emails.json")).unwrap();
        serde_json::from_value(cases[kind].clone()).unwrap()
    }

    #[test]
    fn valid_emails_pass() {
        for email in email_cases("valid") {
            assert_eq!(
                failures(with_email(&email)),
                Vec::<String>::new(),
                "{email}"
            );
        }
    }

    #[test]
    fn emails_graph_refuses_fail_naming_the_field() {
        let bad = email_cases("invalid");
        assert!(bad.len() >= 40);
        for email in bad {
            let failed = failures(with_email(&email));
            assert!(
                failed.len() == 1 && failed[0].starts_with("spec.email: must be an e-mail address"),
                "{email:?}: {failed:?}"
            );
        }
    }

    #[test]
    fn user_needs_exactly_one_key() {
        let id = "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41";
        let upn = "alice_contoso.com#EXT#@fabrikam.onmicrosoft.com";
        for user in [
            json!({"id": id}),
            json!({"userPrincipalName": upn}),
            json!({"mail": "alice@contoso.com"}),
        ] {
            assert!(
                failures(json!({"user": user, "email": "a@b.co"})).is_empty(),
                "{user}"
            );
        }
        for user in [
            json!({}),
            json!({"id": id, "userPrincipalName": upn}),
            json!({"id": id, "mail": "alice@contoso.com"}),
            json!({"id": id, "userPrincipalName": upn, "mail": "alice@contoso.com"}),
        ] {
            assert_eq!(
                failures(json!({"user": user, "email": "a@b.co"})),
                vec!["spec.user: exactly one of id, userPrincipalName or mail must be set"],
                "{user}"
            );
        }
    }

    #[test]
    fn user_mail_and_upn_and_cc_follow_their_rules() {
        let spec = |user: Value, cc: &str| json!({"user": user, "email": "a@b.co", "message": {"ccRecipient": cc}});
        assert!(
            failures(spec(
                json!({"mail": "bob@contoso.com"}),
                "boss@fabrikam.example"
            ))
            .is_empty()
        );
        assert_eq!(
            failures(spec(
                json!({"mail": "bob@contoso"}),
                "boss@fabrikam.example"
            ))
            .len(),
            1
        );
        let cc = failures(spec(
            json!({"mail": "bob@contoso.com"}),
            "boss;x@fabrikam.example",
        ));
        assert!(
            cc.len() == 1 && cc[0].starts_with("spec.message.ccRecipient:"),
            "{cc:?}"
        );
        let upn = failures(spec(
            json!({"userPrincipalName": "no spaces@x.example"}),
            "b@c.de",
        ));
        assert!(
            upn.len() == 1 && upn[0].starts_with("spec.user.userPrincipalName:"),
            "{upn:?}"
        );
    }

    #[test]
    fn redirect_must_be_https() {
        let spec =
            |url: &str| json!({"user": {"mail": "a@b.co"}, "email": "a@b.co", "redirectUrl": url});
        assert!(failures(spec("https://myapps.microsoft.com")).is_empty());
        for url in [
            "http://myapps.microsoft.com",
            "https://",
            "ftp://x",
            "https://a b.example",
            "myapps.microsoft.com",
        ] {
            assert_eq!(
                failures(spec(url)),
                vec!["spec.redirectUrl: must be an https:// URL"],
                "{url}"
            );
        }
    }

    #[test]
    fn defaults_are_in_the_schema() {
        let schema = schema();
        let spec = &schema["properties"]["spec"]["properties"];
        assert_eq!(spec["redirectUrl"]["default"], json!(DEFAULT_REDIRECT_URL));
        assert_eq!(spec["sendInvitationMessage"]["default"], json!(true));
        assert_eq!(spec["updateMail"]["default"], json!(true));
        assert_eq!(spec["dryRun"]["default"], json!(false));
        assert_eq!(
            spec["message"]["properties"]["language"]["default"],
            json!("en-US")
        );
    }

    #[test]
    fn every_spec_string_is_bounded() {
        fn walk(path: &str, schema: &Value, unbounded: &mut Vec<String>) {
            if schema["type"] == "string" && schema.get("maxLength").is_none() {
                unbounded.push(path.to_owned());
            }
            if let Some(props) = schema["properties"].as_object() {
                for (name, sub) in props {
                    walk(&format!("{path}.{name}"), sub, unbounded);
                }
            }
            if schema.get("items").is_some() {
                walk(&format!("{path}[]"), &schema["items"], unbounded);
            }
        }
        let mut unbounded = vec![];
        walk("spec", &schema()["properties"]["spec"], &mut unbounded);
        assert_eq!(unbounded, Vec::<String>::new());
    }

    #[test]
    fn no_field_is_nullable_and_no_unknown_fields_are_kept() {
        let text = serde_json::to_string(&crd()).unwrap();
        assert!(!text.contains("nullable"));
        assert!(!text.contains("x-kubernetes-preserve-unknown-fields"));
    }

    #[test]
    fn user_key_is_the_single_key() {
        let user = UserRef {
            mail: Some("a@b.co".into()),
            ..Default::default()
        };
        assert_eq!(user.key(), Some(UserKey::Mail("a@b.co")));
        let two = UserRef {
            id: Some("x".into()),
            mail: Some("a@b.co".into()),
            ..Default::default()
        };
        assert_eq!(two.key(), None);
        assert_eq!(UserRef::default().key(), None);
    }

    #[test]
    fn crd_yaml_round_trips() {
        let yaml = crd_yaml();
        let parsed: CustomResourceDefinition = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(parsed, crd());
    }
}
