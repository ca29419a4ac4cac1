//! The directory objects and requests exchanged with Microsoft Graph, in the shape Graph uses.

use secrecy::{ExposeSecret, SecretString};
use serde::de::Deserializer;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The user properties every read selects (`$select`); `externalUserState*` are only
/// returned when selected explicitly.
pub const USER_SELECT: &str = "id,userType,userPrincipalName,mail,otherMails,externalUserState,externalUserStateChangeDateTime";

/// A user as read from `GET /users`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryUser {
    pub id: String,
    #[serde(default)]
    pub user_type: Option<String>,
    #[serde(default)]
    pub user_principal_name: Option<String>,
    #[serde(default)]
    pub mail: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub other_mails: Vec<String>,
    /// `PendingAcceptance`, `Accepted`, or absent for users never invited through the API.
    #[serde(default)]
    pub external_user_state: Option<String>,
    #[serde(default, deserialize_with = "lenient_timestamp")]
    pub external_user_state_change_date_time: Option<jiff::Timestamp>,
}

impl DirectoryUser {
    /// `userType == "Guest"`. A missing user type is not a guest: an invitation
    /// for a member converts it irreversibly, so only an explicit Guest counts.
    /// The user principal name, or the id when Graph gave none: how messages name the user.
    pub fn display_name(&self) -> &str {
        self.user_principal_name.as_deref().unwrap_or(&self.id)
    }

    pub fn is_guest(&self) -> bool {
        self.user_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("Guest"))
    }

    /// Whether `email` is on `mail` or `otherMails` (case-insensitive), which Graph
    /// requires before it accepts a redemption reset to that address.
    pub fn carries_email(&self, email: &str) -> bool {
        self.mail
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(email))
            || self
                .other_mails
                .iter()
                .any(|m| m.eq_ignore_ascii_case(email))
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// Graph writes `2024-05-01T10:00:00Z`; a value without an offset is taken as UTC, and
/// an unreadable one as absent, so one odd property never makes the whole read fail.
fn lenient_timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<jiff::Timestamp>, D::Error> {
    let Some(raw) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    Ok(parse_graph_timestamp(&raw))
}

pub(crate) fn parse_graph_timestamp(raw: &str) -> Option<jiff::Timestamp> {
    let raw = raw.trim();
    if let Ok(ts) = raw.parse::<jiff::Timestamp>() {
        return Some(ts);
    }
    raw.parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
}

/// The customised invitation message (`invitedUserMessageInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InvitationMessage {
    /// BCP-47 language (`messageLanguage`); Graph ignores it when `body` is set.
    pub language: Option<String>,
    /// `customizedMessageBody`.
    pub body: Option<String>,
    /// The single cc recipient Graph honours.
    pub cc_recipient: Option<String>,
}

/// `POST /invitations` with `resetRedemption: true` for an existing guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetRedemptionRequest {
    /// Object id of the guest (`invitedUser.id`).
    pub user_id: String,
    /// The new sign-in email (`invitedUserEmailAddress`); must already be on the user object.
    pub email: String,
    /// `inviteRedirectUrl`.
    pub redirect_url: String,
    /// `sendInvitationMessage`.
    pub send_invitation_message: bool,
    /// `invitedUserMessageInfo`, when set.
    pub message: Option<InvitationMessage>,
}

impl Serialize for ResetRedemptionRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct InvitedUser<'a> {
            id: &'a str,
        }
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("invitedUserEmailAddress", &self.email)?;
        map.serialize_entry("inviteRedirectUrl", &self.redirect_url)?;
        map.serialize_entry("sendInvitationMessage", &self.send_invitation_message)?;
        map.serialize_entry("resetRedemption", &true)?;
        map.serialize_entry("invitedUser", &InvitedUser { id: &self.user_id })?;
        if let Some(message) = &self.message {
            map.serialize_entry("invitedUserMessageInfo", &MessageInfo(message))?;
        }
        map.end()
    }
}

struct MessageInfo<'a>(&'a InvitationMessage);

impl Serialize for MessageInfo<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct EmailAddress<'a> {
            address: &'a str,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Recipient<'a> {
            email_address: EmailAddress<'a>,
        }
        let m = self.0;
        let mut map = s.serialize_map(None)?;
        if let Some(language) = &m.language {
            map.serialize_entry("messageLanguage", language)?;
        }
        if let Some(body) = &m.body {
            map.serialize_entry("customizedMessageBody", body)?;
        }
        if let Some(cc) = &m.cc_recipient {
            map.serialize_entry(
                "ccRecipients",
                &[Recipient {
                    email_address: EmailAddress { address: cc },
                }],
            )?;
        }
        map.end()
    }
}

/// The invitation Graph created (`201 Created`), with the identifiers an auditor needs
/// to find the same call in Entra's audit log.
#[derive(Debug, Clone)]
pub struct Invitation {
    pub id: String,
    /// Graph's redeem status at issue time: `PendingAcceptance`, `Completed`, `InProgress`, `Error`.
    pub status: String,
    pub invited_user_email_address: String,
    /// `invitedUser.id` as echoed by Graph, when present.
    pub invited_user_id: Option<String>,
    pub redeem_url: RedeemUrl,
    /// Graph's `request-id` response header, when it sent one.
    pub request_id: Option<String>,
    /// The `client-request-id` this client sent with the POST (a UUID).
    pub client_request_id: String,
}

/// `inviteRedeemUrl`: whoever holds it can redeem the invitation, so it is a credential.
/// Held in a [`SecretString`] (zeroed on drop); it prints as `[redacted]`, cannot be
/// serialised, and is read only through [`RedeemUrl::expose_secret`].
#[derive(Clone)]
pub struct RedeemUrl(SecretString);

impl RedeemUrl {
    pub fn new(url: String) -> Self {
        Self(SecretString::from(url))
    }

    /// The URL itself. Call only to hand it to its one destination (the Secret).
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for RedeemUrl {
    fn eq(&self, other: &Self) -> bool {
        self.expose_secret() == other.expose_secret()
    }
}

impl Eq for RedeemUrl {}

impl fmt::Debug for RedeemUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedeemUrl([redacted])")
    }
}

impl fmt::Display for RedeemUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The wire shape of the invitation response; converted at once so the URL never
/// lives in a type that could be printed or serialised.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InvitationWire {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    invited_user_email_address: Option<String>,
    #[serde(default)]
    invited_user: Option<InvitedUserWire>,
    invite_redeem_url: String,
}

#[derive(Deserialize)]
struct InvitedUserWire {
    #[serde(default)]
    id: Option<String>,
}

impl InvitationWire {
    /// The invitation, with the identifiers of the call that created it.
    pub(crate) fn into_invitation(
        self,
        request_id: Option<String>,
        client_request_id: String,
    ) -> Invitation {
        Invitation {
            id: self.id.unwrap_or_default(),
            status: self.status.unwrap_or_default(),
            invited_user_email_address: self.invited_user_email_address.unwrap_or_default(),
            invited_user_id: self.invited_user.and_then(|u| u.id),
            redeem_url: RedeemUrl::new(self.invite_redeem_url),
            request_id,
            client_request_id,
        }
    }
}

/// A page of `GET /users?$filter=...`.
#[derive(Deserialize)]
pub(crate) struct UserPage {
    #[serde(default)]
    pub value: Vec<DirectoryUser>,
    #[serde(rename = "@odata.nextLink", default)]
    pub next_link: Option<String>,
}

/// Graph's error body: `{"error": {"code", "message", "innerError": {"request-id", ...}}}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct GraphErrorBody {
    #[serde(default)]
    pub error: GraphErrorDetail,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GraphErrorDetail {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub inner_error: Option<InnerError>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct InnerError {
    #[serde(rename = "request-id", default)]
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request() -> ResetRedemptionRequest {
        ResetRedemptionRequest {
            user_id: "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41".into(),
            email: "alice@newco.example".into(),
            redirect_url: "https://myapps.microsoft.com".into(),
            send_invitation_message: true,
            message: None,
        }
    }

    #[test]
    fn reset_request_serialises_as_graph_expects() {
        let value = serde_json::to_value(request()).unwrap();
        assert_eq!(
            value,
            json!({
                "invitedUserEmailAddress": "alice@newco.example",
                "inviteRedirectUrl": "https://myapps.microsoft.com",
                "sendInvitationMessage": true,
                "resetRedemption": true,
                "invitedUser": {"id": "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41"}
            })
        );
    }

    #[test]
    fn reset_request_with_message_serialises_message_info() {
        let mut req = request();
        req.send_invitation_message = false;
        req.message = Some(InvitationMessage {
            language: Some("de-DE".into()),
            body: Some("Your access moves.".into()),
            cc_recipient: Some("manager@fabrikam.example".into()),
        });
        let value = serde_json::to_value(req).unwrap();
        assert_eq!(value["sendInvitationMessage"], json!(false));
        assert_eq!(
            value["invitedUserMessageInfo"],
            json!({
                "messageLanguage": "de-DE",
                "customizedMessageBody": "Your access moves.",
                "ccRecipients": [{"emailAddress": {"address": "manager@fabrikam.example"}}]
            })
        );
    }

    #[test]
    fn partial_message_omits_unset_fields() {
        let mut req = request();
        req.message = Some(InvitationMessage {
            language: Some("en-US".into()),
            ..Default::default()
        });
        let value = serde_json::to_value(req).unwrap();
        assert_eq!(
            value["invitedUserMessageInfo"],
            json!({"messageLanguage": "en-US"})
        );
    }

    #[test]
    fn redeem_url_is_redacted_in_debug_and_display() {
        let secret = "https://login.microsoftonline.com/redeem?rd=SECRET-TICKET";
        let inv: Invitation = serde_json::from_value::<InvitationWire>(json!({
            "id": "inv-1",
            "status": "PendingAcceptance",
            "invitedUserEmailAddress": "alice@newco.example",
            "inviteRedeemUrl": secret,
            "invitedUser": {"id": "u-1"}
        }))
        .unwrap()
        .into_invitation(Some("req-1".into()), "client-1".into());
        assert_eq!(inv.redeem_url.to_string(), "[redacted]");
        assert!(!format!("{:?}", inv.redeem_url).contains("SECRET"));
        assert!(!format!("{inv:?}").contains("SECRET"));
        assert!(!format!("{inv:#?}").contains("SECRET"));
        assert_eq!(inv.redeem_url.expose_secret(), secret);
        assert_eq!(inv.invited_user_id.as_deref(), Some("u-1"));
        assert_eq!(inv.status, "PendingAcceptance");
    }

    #[test]
    fn user_deserialises_from_graph_json() {
        let user: DirectoryUser = serde_json::from_value(json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
            "id": "u-1",
            "userType": "Guest",
            "userPrincipalName": "alice_contoso.com#EXT#@fabrikam.onmicrosoft.com",
            "mail": "alice@contoso.com",
            "otherMails": ["Alice@NewCo.example"],
            "externalUserState": "PendingAcceptance",
            "externalUserStateChangeDateTime": "2024-05-01T10:00:00Z"
        }))
        .unwrap();
        assert!(user.is_guest());
        assert!(user.carries_email("ALICE@contoso.com"));
        assert!(user.carries_email("alice@newco.example"));
        assert!(!user.carries_email("alice@other.example"));
        assert_eq!(
            user.external_user_state_change_date_time,
            Some("2024-05-01T10:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn user_tolerates_nulls_and_odd_timestamps() {
        let user: DirectoryUser = serde_json::from_value(json!({
            "id": "u-2",
            "userType": null,
            "mail": null,
            "otherMails": null,
            "externalUserState": null,
            "externalUserStateChangeDateTime": "2024-05-01T10:00:00"
        }))
        .unwrap();
        assert!(!user.is_guest(), "no userType is not a guest");
        assert!(user.other_mails.is_empty());
        assert!(!user.carries_email("x@example.com"));
        assert_eq!(
            user.external_user_state_change_date_time,
            Some("2024-05-01T10:00:00Z".parse().unwrap())
        );
        let garbled: DirectoryUser = serde_json::from_value(json!({
            "id": "u-3", "userType": "Member", "externalUserStateChangeDateTime": "yesterday"
        }))
        .unwrap();
        assert_eq!(garbled.external_user_state_change_date_time, None);
        assert!(!garbled.is_guest());
    }

    #[test]
    fn graph_error_body_parses() {
        let body: GraphErrorBody = serde_json::from_str(
            r#"{"error":{"code":"Request_ResourceNotFound","message":"Resource 'x' does not exist","innerError":{"request-id":"r-1","client-request-id":"c-1","date":"2024-01-01T00:00:00"}}}"#,
        )
        .unwrap();
        assert_eq!(body.error.code.as_deref(), Some("Request_ResourceNotFound"));
        assert_eq!(
            body.error.inner_error.and_then(|i| i.request_id).as_deref(),
            Some("r-1")
        );
    }
}
