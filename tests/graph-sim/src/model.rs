//! Types shared by the server, the admin API and its client.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A directory user as the simulator stores it; also the seed-file format.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SeedUser {
    pub id: String,
    pub user_principal_name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// "Guest" or "Member".
    pub user_type: String,
    #[serde(default)]
    pub mail: Option<String>,
    #[serde(default)]
    pub other_mails: Vec<String>,
    #[serde(default)]
    pub proxy_addresses: Vec<String>,
    #[serde(default)]
    pub external_user_state: Option<String>,
    #[serde(default)]
    pub external_user_state_change_date_time: Option<String>,
    /// Holds a directory role: app-only callers cannot reset it (403).
    #[serde(default)]
    pub privileged: bool,
    /// Reads answer 404 until this long after the user was added (replication delay).
    #[serde(default)]
    pub visible_after_ms: u64,
}

impl SeedUser {
    /// An invited guest who has redeemed (`externalUserState: Accepted`).
    pub fn guest(id: &str, upn: &str, mail: &str) -> Self {
        SeedUser {
            id: id.to_string(),
            user_principal_name: upn.to_string(),
            display_name: Some(display_name_of(mail)),
            user_type: "Guest".to_string(),
            mail: Some(mail.to_string()),
            other_mails: Vec::new(),
            proxy_addresses: vec![format!("SMTP:{mail}")],
            external_user_state: Some("Accepted".to_string()),
            external_user_state_change_date_time: Some("2024-01-15T09:30:00Z".to_string()),
            privileged: false,
            visible_after_ms: 0,
        }
    }

    /// An internal member (never invited: `externalUserState` null).
    pub fn member(id: &str, upn: &str, mail: &str) -> Self {
        SeedUser {
            id: id.to_string(),
            user_principal_name: upn.to_string(),
            display_name: Some(display_name_of(mail)),
            user_type: "Member".to_string(),
            mail: Some(mail.to_string()),
            other_mails: Vec::new(),
            proxy_addresses: vec![format!("SMTP:{mail}")],
            external_user_state: None,
            external_user_state_change_date_time: None,
            privileged: false,
            visible_after_ms: 0,
        }
    }
}

/// The tenant whose UPNs [`SeedUser::external_guest`] and [`SeedUser::tenant_member`] make.
pub const SEED_TENANT_DOMAIN: &str = "fabrikam.onmicrosoft.com";

impl SeedUser {
    /// A redeemed guest whose UPN is derived from `mail` the way Entra derives a B2B guest's:
    /// `bob@contoso.com` is `bob_contoso.com#EXT#@fabrikam.onmicrosoft.com`.
    pub fn external_guest(id: &str, mail: &str) -> Self {
        let upn = format!("{}#EXT#@{SEED_TENANT_DOMAIN}", mail.replace('@', "_"));
        Self::guest(id, &upn, mail)
    }

    /// A member whose UPN is `mail`'s local part at the tenant's domain.
    pub fn tenant_member(id: &str, mail: &str) -> Self {
        let local = mail.split('@').next().unwrap_or(mail);
        Self::member(id, &format!("{local}@{SEED_TENANT_DOMAIN}"), mail)
    }
}

fn display_name_of(mail: &str) -> String {
    mail.split('@').next().unwrap_or(mail).to_string()
}

/// Which kind of request a journal entry or fault rule is about.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    Token,
    GetUser,
    ListUsers,
    PatchUser,
    PostInvitation,
    Other,
}

/// One request the simulator answered (or dropped). Never holds tokens or redeem URLs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    pub seq: u64,
    /// RFC 3339, when the request was decided (before any injected delay or hold).
    pub at: String,
    pub method: String,
    /// The path as received (still percent-encoded).
    pub path: String,
    pub query: Option<String>,
    pub client_request_id: Option<String>,
    pub call: Call,
    /// The status sent, or to be sent once a held response is released;
    /// 0 when the connection was dropped without a response.
    pub status: u16,
    /// What changed in the directory, e.g. "mail set", "invitation issued", "member converted".
    pub effect: Option<String>,
    /// Name of the injected fault action, e.g. "ServerErrorAfter".
    pub fault: Option<String>,
    /// For `POST /invitations`: `invitedUser.id` as sent (whatever the outcome).
    #[serde(default)]
    pub invited_user_id: Option<String>,
    /// For `POST /invitations`: `invitedUserEmailAddress` as sent (whatever the outcome).
    #[serde(default)]
    pub invited_email: Option<String>,
    /// RFC 3339, when the response left (after any injected delay, hold or latency); `None`
    /// while it is held, when the connection was dropped, or when the client went away first.
    #[serde(default)]
    pub answered_at: Option<String>,
}

/// A fault injected into matching calls, in rule order; `times: None` lasts until cleared.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    pub call: Call,
    pub times: Option<u32>,
    pub action: FaultAction,
}

impl FaultRule {
    pub fn new(call: Call, times: Option<u32>, action: FaultAction) -> Self {
        FaultRule {
            call,
            times,
            action,
        }
    }

    /// Applies to the next matching call only.
    pub fn once(call: Call, action: FaultAction) -> Self {
        Self::new(call, Some(1), action)
    }

    /// Applies to the next `n` matching calls.
    pub fn times(call: Call, n: u32, action: FaultAction) -> Self {
        Self::new(call, Some(n), action)
    }

    /// Applies to every matching call until the faults are cleared.
    pub fn always(call: Call, action: FaultAction) -> Self {
        Self::new(call, None, action)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// 429 `TooManyRequests`; `Retry-After` in seconds, or as an HTTP date when asked.
    Throttle {
        retry_after_seconds: Option<u64>,
        retry_after_http_date: bool,
    },
    /// A 5xx; nothing is applied.
    ServerErrorBefore { status: u16 },
    /// The request is applied, then a 5xx is answered.
    ServerErrorAfter { status: u16 },
    /// The request is applied, the response is delayed.
    DelayAfter { millis: u64 },
    /// The request is applied, the response is held until released or the client goes away.
    HangAfter,
    /// The connection is closed without a response; nothing is applied.
    DropConnectionBefore,
    /// The request is applied, then the connection is closed without a response.
    DropConnectionAfter,
    /// 403 abuse protection ("Invitations are blocked for this directory ..."); nothing is applied.
    AbuseBlock,
    /// 403 "Generic authorization exception."; nothing is applied.
    Forbidden,
    /// 401 "Insufficient privileges ..."; nothing is applied.
    Unauthorized,
}

impl FaultAction {
    pub fn name(&self) -> &'static str {
        match self {
            FaultAction::Throttle { .. } => "Throttle",
            FaultAction::ServerErrorBefore { .. } => "ServerErrorBefore",
            FaultAction::ServerErrorAfter { .. } => "ServerErrorAfter",
            FaultAction::DelayAfter { .. } => "DelayAfter",
            FaultAction::HangAfter => "HangAfter",
            FaultAction::DropConnectionBefore => "DropConnectionBefore",
            FaultAction::DropConnectionAfter => "DropConnectionAfter",
            FaultAction::AbuseBlock => "AbuseBlock",
            FaultAction::Forbidden => "Forbidden",
            FaultAction::Unauthorized => "Unauthorized",
        }
    }

    /// Whether the request still takes effect under this fault.
    pub fn applies_request(&self) -> bool {
        matches!(
            self,
            FaultAction::ServerErrorAfter { .. }
                | FaultAction::DelayAfter { .. }
                | FaultAction::HangAfter
                | FaultAction::DropConnectionAfter
        )
    }
}

/// Something done that a careful client should never cause (an invitation that converted a member).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Hazard {
    pub at: String,
    pub user_id: String,
    pub description: String,
}

/// Every credential the simulator handed out, so tests can check that none leaked into logs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Secrets {
    pub access_tokens: Vec<String>,
    pub redeem_urls: Vec<String>,
}

/// Run-time settings (`PUT /_sim/settings` takes any subset).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Added to every Graph response.
    pub latency_ms: u64,
    /// Up to this much more, drawn uniformly per Graph response from the simulator's seeded
    /// generator (`SimConfig::seed`): Graph's latency varies from call to call.
    #[serde(default)]
    pub latency_spread_ms: u64,
    /// How long after a `PATCH` of `mail` the invitation service still sees the previous mail.
    pub mail_propagation_ms: u64,
    /// How long after a `POST /invitations` reads still show the user's previous
    /// `externalUserState` and change time: the directory replicates a reset's effect late,
    /// so evidence of an interrupted POST may arrive partway through the replication window.
    #[serde(default)]
    pub evidence_delay_ms: u64,
    /// `Retry-After` (seconds) on every 503 Graph answer (Graph sends one on some 5xx);
    /// 500 and 504 answers never carry one.
    #[serde(default)]
    pub retry_after_on_503: Option<u64>,
    /// Tokens carry no `roles` claim, as when no application permission was consented.
    #[serde(default)]
    pub tokens_without_roles: bool,
}

impl Settings {
    /// The fixed part of the latency (see [`Settings::latency_spread_ms`] for the rest).
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }
}

/// An invitation as it was requested and accepted (the redeem URL is left out).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct InvitationRecord {
    pub id: String,
    pub at: String,
    pub user_id: String,
    pub invited_user_email_address: String,
    pub invite_redirect_url: String,
    pub reset_redemption: bool,
    pub send_invitation_message: bool,
    /// `invitedUserMessageInfo` as sent (null when absent).
    pub invited_user_message_info: serde_json::Value,
    /// The `client-request-id` of the POST (the journal entry's), or Graph's request id when
    /// none was sent.
    #[serde(default)]
    pub client_request_id: Option<String>,
}

/// The claims of a client assertion presented to the token endpoint (the JWT itself is not kept).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AssertionClaims {
    pub aud: String,
    pub iss: String,
    pub sub: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_rules_read_from_the_documented_json() {
        let hang: FaultRule =
            serde_json::from_str(r#"{"call":"PostInvitation","times":1,"action":"HangAfter"}"#)
                .unwrap();
        assert_eq!(
            hang,
            FaultRule::once(Call::PostInvitation, FaultAction::HangAfter)
        );
        let throttle: FaultRule = serde_json::from_str(
            r#"{"call":"GetUser","times":null,"action":{"Throttle":{"retry_after_seconds":5,"retry_after_http_date":false}}}"#,
        )
        .unwrap();
        assert_eq!(throttle.times, None);
        assert_eq!(throttle.action.name(), "Throttle");
        assert!(!throttle.action.applies_request());
        assert!(FaultAction::DropConnectionAfter.applies_request());
    }

    #[test]
    fn derived_upns_follow_entra() {
        let guest = SeedUser::external_guest("1", "o'reilly@contoso.com");
        assert_eq!(
            guest.user_principal_name,
            "o'reilly_contoso.com#EXT#@fabrikam.onmicrosoft.com"
        );
        assert_eq!(
            guest,
            SeedUser::guest("1", &guest.user_principal_name, "o'reilly@contoso.com")
        );
        let member = SeedUser::tenant_member("2", "dave@fabrikam.example");
        assert_eq!(member.user_principal_name, "dave@fabrikam.onmicrosoft.com");
        assert_eq!(member.user_type, "Member");
    }

    #[test]
    fn seed_users_use_camel_case_and_default_the_optional_fields() {
        let users: Vec<SeedUser> = serde_yaml::from_str(
            "- id: x\n  userPrincipalName: u\n  userType: Guest\n  mail: a@b.c\n  visibleAfterMs: 5\n",
        )
        .unwrap();
        assert_eq!(users[0].visible_after_ms, 5);
        assert!(users[0].other_mails.is_empty() && !users[0].privileged);
    }
}
