//! The Graph v1.0 calls guestreset makes, with Graph's rules and answers.

use crate::filter::{self, FilterError};
use crate::model::{Hazard, InvitationRecord, SeedUser};
use crate::reply::{Ctx, Reply};
use crate::state::{Identity, State, UserRecord, now_graph_datetime, now_rfc3339};
use crate::unkind;
use base64::Engine;
use rand::RngCore;
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

/// Query options of one request, decoded.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// `$name`, also accepted without the dollar sign as Graph v1.0 does.
    fn option(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| {
                let k = k.strip_prefix('$').unwrap_or(k);
                k.eq_ignore_ascii_case(name)
            })
            .map(|(_, v)| v.as_str())
    }
}

/// User properties this simulator knows: (name, in Graph's default set without `$select`).
const PROPERTIES: &[(&str, bool)] = &[
    ("businessPhones", true),
    ("displayName", true),
    ("givenName", true),
    ("jobTitle", true),
    ("mail", true),
    ("mobilePhone", true),
    ("officeLocation", true),
    ("preferredLanguage", true),
    ("surname", true),
    ("userPrincipalName", true),
    ("id", true),
    ("accountEnabled", false),
    ("creationType", false),
    ("userType", false),
    ("otherMails", false),
    ("proxyAddresses", false),
    ("externalUserState", false),
    ("externalUserStateChangeDateTime", false),
];

fn property_value(user: &SeedUser, name: &str) -> Value {
    match name {
        "businessPhones" => json!([]),
        "displayName" => json!(user.display_name),
        "mail" => json!(user.mail),
        "userPrincipalName" => json!(user.user_principal_name),
        "id" => json!(user.id),
        "accountEnabled" => json!(true),
        "creationType" => {
            if user.user_type.eq_ignore_ascii_case("Guest") {
                json!("Invitation")
            } else {
                Value::Null
            }
        }
        "userType" => json!(user.user_type),
        "otherMails" => json!(user.other_mails),
        "proxyAddresses" => json!(user.proxy_addresses),
        "externalUserState" => json!(user.external_user_state),
        "externalUserStateChangeDateTime" => json!(user.external_user_state_change_date_time),
        _ => Value::Null,
    }
}

/// Resolves `$select` to canonical property names; `None` means Graph's default set.
fn selection(ctx: &Ctx, query: &Query) -> Result<Option<Vec<&'static str>>, Reply> {
    let Some(raw) = query.option("select").filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for wanted in raw.split(',').map(str::trim) {
        match PROPERTIES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
        {
            Some((name, _)) => {
                if !out.contains(name) {
                    out.push(*name)
                }
            }
            None => {
                return Err(Reply::graph_error(
                    ctx,
                    400,
                    "BadRequest",
                    &format!(
                        "Could not find a property named '{wanted}' on type 'microsoft.graph.user'."
                    ),
                ));
            }
        }
    }
    Ok(Some(out))
}

fn render_user(user: &SeedUser, selected: Option<&[&'static str]>) -> Map<String, Value> {
    let mut map = Map::new();
    match selected {
        Some(names) => {
            for name in names {
                map.insert((*name).to_string(), property_value(user, name));
            }
        }
        None => {
            for (name, default) in PROPERTIES {
                if *default {
                    map.insert((*name).to_string(), property_value(user, name));
                }
            }
        }
    }
    map
}

fn context_url(identity: &Identity, selected: Option<&[&'static str]>, entity: bool) -> String {
    let set = match selected {
        Some(names) => format!("users({})", names.join(",")),
        None => "users".to_string(),
    };
    let suffix = if entity { "/$entity" } else { "" };
    format!("{}/v1.0/$metadata#{set}{suffix}", identity.base_url)
}

fn not_found(ctx: &Ctx, key: &str) -> Reply {
    Reply::graph_error(
        ctx,
        404,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{key}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

/// Finds a user that reads can already see (replication delay honoured).
fn visible_user(state: &State, key: &str, now: Instant) -> Option<usize> {
    state
        .user_by_key(key)
        .filter(|&i| state.users[i].visible(now))
}

pub(crate) fn get_user(
    state: &State,
    identity: &Identity,
    ctx: &Ctx,
    key: &str,
    query: &Query,
) -> Reply {
    let selected = match selection(ctx, query) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    let Some(i) = visible_user(state, key, Instant::now()) else {
        return not_found(ctx, key);
    };
    let user = unkind::as_read(&state.users[i], Instant::now());
    let mut body = render_user(&user, selected.as_deref());
    body.insert(
        "@odata.context".into(),
        json!(context_url(identity, selected.as_deref(), true)),
    );
    Reply::json(200, &Value::Object(body))
}

pub(crate) fn list_users(
    state: &State,
    identity: &Identity,
    ctx: &Ctx,
    query: &Query,
    consistency_eventual: bool,
) -> Reply {
    let selected = match selection(ctx, query) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    if let Some(advanced) = query.option("filter").and_then(filter::parse_advanced) {
        return match advanced {
            Ok(advanced) => list_advanced(
                state,
                identity,
                ctx,
                query,
                consistency_eventual,
                &advanced,
                selected.as_deref(),
            ),
            Err(FilterError::Unsupported(message)) => {
                Reply::graph_error(ctx, 400, "Request_UnsupportedQuery", &message)
            }
            Err(FilterError::Syntax(message)) => {
                Reply::graph_error(ctx, 400, "BadRequest", &message)
            }
        };
    }
    let filter = match query.option("filter") {
        None => None,
        Some(raw) => match filter::parse(raw) {
            Ok(f) => Some(f),
            Err(FilterError::Unsupported(message)) => {
                return Reply::graph_error(ctx, 400, "Request_UnsupportedQuery", &message);
            }
            Err(FilterError::Syntax(message)) => {
                return Reply::graph_error(ctx, 400, "BadRequest", &message);
            }
        },
    };
    let now = Instant::now();
    let value: Vec<Value> = state
        .users
        .iter()
        .filter(|r| r.visible(now))
        .filter(|r| filter.as_ref().is_none_or(|f| f.matches(&r.user)))
        .map(|r| Value::Object(render_user(&unkind::as_read(r, now), selected.as_deref())))
        .collect();
    Reply::json(
        200,
        &json!({
            "@odata.context": context_url(identity, selected.as_deref(), false),
            "value": value,
        }),
    )
}

/// Graph's default page size for `/users`, and its largest.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 999;

/// An advanced query (`endswith(mail,...)`): refused without `ConsistencyLevel: eventual` and
/// `$count=true`, as Graph does; answered a page at a time (`$top`, default 100, at most 999)
/// with `@odata.count` and an `@odata.nextLink` carrying `$skiptoken`.
fn list_advanced(
    state: &State,
    identity: &Identity,
    ctx: &Ctx,
    query: &Query,
    consistency_eventual: bool,
    advanced: &filter::Advanced,
    selected: Option<&[&'static str]>,
) -> Reply {
    if !consistency_eventual {
        return Reply::graph_error(
            ctx,
            400,
            "Request_UnsupportedQuery",
            "Operator 'endsWith' is not supported because the 'ConsistencyLevel:eventual' header is missing. Refer to https://aka.ms/graph-docs/advanced-queries for more information",
        );
    }
    if !query
        .option("count")
        .is_some_and(|c| c.eq_ignore_ascii_case("true"))
    {
        return Reply::graph_error(
            ctx,
            400,
            "Request_UnsupportedQuery",
            "Operator 'endsWith' is not supported because the required parameters might be missing. Try adding $count with a value of true and the 'ConsistencyLevel:eventual' header. Refer to https://aka.ms/graph-docs/advanced-queries for more information",
        );
    }
    let top = match query.option("top") {
        None => DEFAULT_PAGE,
        Some(raw) => match raw.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Reply::graph_error(
                    ctx,
                    400,
                    "Request_BadRequest",
                    &format!(
                        "Invalid page size specified: '{raw}'. Must be between 1 and {MAX_PAGE} inclusive."
                    ),
                );
            }
        },
    };
    let skip = match query.option("skiptoken") {
        None => 0,
        Some(token) => match token
            .strip_prefix("X")
            .and_then(|n| usize::from_str_radix(n, 16).ok())
        {
            Some(n) => n,
            None => {
                return Reply::graph_error(ctx, 400, "Request_BadRequest", "Invalid skip token.");
            }
        },
    };
    let now = Instant::now();
    let matching: Vec<&UserRecord> = state
        .users
        .iter()
        .filter(|r| r.visible(now))
        .filter(|r| advanced.matches(&r.user))
        .collect();
    let value: Vec<Value> = matching
        .iter()
        .skip(skip)
        .take(top)
        .map(|r| Value::Object(render_user(&unkind::as_read(r, now), selected)))
        .collect();
    let mut body = json!({
        "@odata.context": context_url(identity, selected, false),
        "@odata.count": matching.len(),
        "value": value,
    });
    if skip + top < matching.len() {
        let mut next = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &query.0 {
            if !k.trim_start_matches('$').eq_ignore_ascii_case("skiptoken") {
                next.append_pair(k, v);
            }
        }
        next.append_pair("$skiptoken", &format!("X{:x}", skip + top));
        body["@odata.nextLink"] = json!(format!(
            "{}/v1.0/users?{}",
            identity.base_url,
            next.finish()
        ));
    }
    Reply::json(200, &body)
}

/// Graph refuses these anywhere in `invitedUserEmailAddress`.
const FORBIDDEN_ADDRESS_CHARS: &str = "~!#$%^&*()+=[]{}\\/|;:\"<>?,";

/// Whether Graph would take `address` as a primary SMTP address.
pub(crate) fn valid_smtp_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let part_ok = |part: &str| {
        !part.is_empty()
            && !part.starts_with(['.', '-'])
            && !part.ends_with(['.', '-'])
            && !part
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '@')
            && !part.chars().any(|c| FORBIDDEN_ADDRESS_CHARS.contains(c))
    };
    part_ok(local) && part_ok(domain) && domain.contains('.') && !domain.contains("..")
}

/// Address in use as another user's mail or SMTP proxy address.
fn address_taken_by_other(state: &State, address: &str, except: usize) -> bool {
    state.users.iter().enumerate().any(|(i, r)| {
        i != except
            && (r
                .user
                .mail
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(address))
                || r.user.proxy_addresses.iter().any(|p| {
                    p.split_once(':').is_some_and(|(scheme, v)| {
                        scheme.eq_ignore_ascii_case("smtp") && v.eq_ignore_ascii_case(address)
                    })
                }))
    })
}

/// The primary SMTP proxy address follows `mail`; the previous one stays as a secondary.
fn set_primary_proxy(user: &mut SeedUser, mail: &str) {
    for p in user.proxy_addresses.iter_mut() {
        if let Some(rest) = p.strip_prefix("SMTP:") {
            *p = format!("smtp:{rest}");
        }
    }
    user.proxy_addresses.retain(|p| {
        !p.split_once(':')
            .is_some_and(|(_, v)| v.eq_ignore_ascii_case(mail))
    });
    user.proxy_addresses.insert(0, format!("SMTP:{mail}"));
}

pub(crate) fn patch_user(state: &mut State, ctx: &Ctx, key: &str, body: &[u8]) -> Reply {
    let patch: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => {
            return Reply::graph_error(
                ctx,
                400,
                "BadRequest",
                "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
            );
        }
    };
    let now = Instant::now();
    let Some(i) = visible_user(state, key, now) else {
        return not_found(ctx, key);
    };
    for (name, value) in &patch {
        match name.as_str() {
            "mail" => match value {
                Value::Null => {}
                Value::String(mail) if valid_smtp_address(mail) => {
                    if address_taken_by_other(state, mail, i) {
                        return Reply::graph_error(
                            ctx,
                            400,
                            "Request_BadRequest",
                            "Another object with the same value for property proxyAddresses already exists.",
                        );
                    }
                }
                _ => return invalid_property(ctx, "mail"),
            },
            "otherMails" => {
                let ok = value
                    .as_array()
                    .is_some_and(|a| a.iter().all(|v| v.as_str().is_some_and(valid_smtp_address)));
                if !ok {
                    return invalid_property(ctx, "otherMails");
                }
            }
            "displayName" => {
                if !value.is_string() {
                    return invalid_property(ctx, "displayName");
                }
            }
            other => {
                return Reply::graph_error(
                    ctx,
                    400,
                    "Request_BadRequest",
                    &format!(
                        "Property '{other}' does not exist as a declared property or extension property."
                    ),
                );
            }
        }
    }

    let propagation = Duration::from_millis(state.settings.mail_propagation_ms);
    let record: &mut UserRecord = &mut state.users[i];
    let mut effects = Vec::new();
    if let Some(value) = patch.get("mail") {
        let new_mail = value.as_str().map(str::to_string);
        if new_mail != record.user.mail {
            record.previous_mail = record
                .invite_view_mail(now, propagation)
                .map(str::to_string);
            record.mail_set_at = Some(now);
            if let Some(mail) = &new_mail {
                set_primary_proxy(&mut record.user, mail);
            }
            record.user.mail = new_mail;
            effects.push("mail set");
        }
    }
    if let Some(Value::Array(items)) = patch.get("otherMails") {
        let mails: Vec<String> = items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        if mails != record.user.other_mails {
            record.user.other_mails = mails;
            effects.push("otherMails set");
        }
    }
    if let Some(Value::String(name)) = patch.get("displayName")
        && record.user.display_name.as_deref() != Some(name)
    {
        record.user.display_name = Some(name.clone());
        effects.push("displayName set");
    }
    let reply = Reply::no_content();
    if effects.is_empty() {
        reply
    } else {
        reply.with_effect(effects.join(", "))
    }
}

fn invalid_property(ctx: &Ctx, name: &str) -> Reply {
    Reply::graph_error(
        ctx,
        400,
        "Request_BadRequest",
        &format!("Invalid value specified for property '{name}' of resource 'User'."),
    )
}

fn bad_request(ctx: &Ctx, message: &str) -> Reply {
    Reply::graph_error(ctx, 400, "BadRequest", message)
}

/// A long, unique, credential-bearing URL like the one Graph hands out.
fn redeem_url(tenant_id: &str, user_id: &str) -> String {
    let mut ticket = [0u8; 48];
    rand::rng().fill_bytes(&mut ticket);
    let ticket = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ticket);
    let inner = format!(
        "https://invitations.microsoft.com/redeem/?tenant={tenant_id}&user={user_id}&ticket={ticket}&ver=2.0"
    );
    let encoded: String = form_urlencoded::byte_serialize(inner.as_bytes()).collect();
    format!("https://login.microsoftonline.com/redeem?rd={encoded}")
}

pub(crate) fn post_invitation(
    state: &mut State,
    identity: &Identity,
    ctx: &Ctx,
    body: &[u8],
) -> Reply {
    let request: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => {
            return bad_request(
                ctx,
                "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
            );
        }
    };
    let text = |name: &str| request.get(name).and_then(Value::as_str);
    let flag = |name: &str| request.get(name).and_then(Value::as_bool).unwrap_or(false);

    let Some(address) = text("invitedUserEmailAddress").filter(|s| !s.is_empty()) else {
        return bad_request(ctx, "The invitedUserEmailAddress property is required.");
    };
    let Some(redirect) = text("inviteRedirectUrl").filter(|s| !s.is_empty()) else {
        return bad_request(ctx, "The inviteRedirectUrl property is required.");
    };
    if !(redirect.starts_with("https://") || redirect.starts_with("http://")) {
        return bad_request(ctx, "The inviteRedirectUrl is not a valid absolute URL.");
    }
    if !valid_smtp_address(address) {
        return bad_request(ctx, "The Primary SMTP Address is an invalid value");
    }
    let reset = flag("resetRedemption");
    let send_message = flag("sendInvitationMessage");
    let invited_user_id = request
        .get("invitedUser")
        .and_then(|u| u.get("id"))
        .and_then(Value::as_str);

    let now = Instant::now();
    let propagation = Duration::from_millis(state.settings.mail_propagation_ms);
    let (index, effect) = if reset {
        let Some(user_id) = invited_user_id.filter(|s| !s.is_empty()) else {
            return bad_request(
                ctx,
                "The invitedUser.id property is required when resetRedemption is true.",
            );
        };
        let Some(i) = state
            .users
            .iter()
            .position(|r| r.user.id.eq_ignore_ascii_case(user_id) && r.visible(now))
        else {
            return not_found(ctx, user_id);
        };
        let record = &state.users[i];
        if record.user.privileged {
            return Reply::graph_error(
                ctx,
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            );
        }
        let on_user = record
            .invite_view_mail(now, propagation)
            .is_some_and(|m| m.eq_ignore_ascii_case(address))
            || record
                .user
                .other_mails
                .iter()
                .any(|m| m.eq_ignore_ascii_case(address));
        if !on_user {
            return bad_request(
                ctx,
                "The email you're using to invite this user doesn't match any emails on the user object. Please add this email to the user object and try again.",
            );
        }
        let was_member = !record.user.user_type.eq_ignore_ascii_case("Guest");
        if was_member {
            (i, "member converted")
        } else {
            (i, "invitation issued")
        }
    } else {
        // A plain invitation: an existing user with this address is re-invited, else a guest is created.
        let existing = state.users.iter().position(|r| {
            r.user
                .mail
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(address))
                || r.user
                    .other_mails
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(address))
        });
        match existing {
            Some(i) => (i, "invitation issued"),
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                let upn = format!(
                    "{}#EXT#@simtenant.onmicrosoft.com",
                    address.replace('@', "_")
                );
                let mut guest = SeedUser::guest(&id, &upn, address);
                if let Some(name) = text("invitedUserDisplayName") {
                    guest.display_name = Some(name.to_string());
                }
                state.users.push(UserRecord::new(guest, now));
                (state.users.len() - 1, "guest created")
            }
        }
    };

    let at = now_rfc3339();
    let evidence_delay = Duration::from_millis(state.settings.evidence_delay_ms);
    let record = &mut state.users[index];
    let before = record.user.clone();
    let user = &mut record.user;
    if effect == "member converted" {
        user.user_type = "Guest".to_string();
        state.hazards.push(Hazard {
            at: at.clone(),
            user_id: user.id.clone(),
            description: format!(
                "POST /invitations targeted member {} ({}); the member was converted into a B2B guest",
                user.user_principal_name, user.id
            ),
        });
    }
    user.external_user_state = Some("PendingAcceptance".to_string());
    user.external_user_state_change_date_time = Some(now_graph_datetime());
    let user_id = user.id.clone();
    unkind::hold_back_reset(record, &before, evidence_delay);
    let user = &record.user;
    let display_name = text("invitedUserDisplayName")
        .map(str::to_string)
        .or_else(|| user.display_name.clone());

    let invitation_id = uuid::Uuid::new_v4().to_string();
    let url = redeem_url(&identity.tenant_id, &user_id);
    state.redeem_urls.push(url.clone());

    let message_info = request
        .get("invitedUserMessageInfo")
        .cloned()
        .unwrap_or(Value::Null);
    state.invitations.push(InvitationRecord {
        id: invitation_id.clone(),
        at,
        user_id: user_id.clone(),
        invited_user_email_address: address.to_string(),
        invite_redirect_url: redirect.to_string(),
        reset_redemption: reset,
        send_invitation_message: send_message,
        invited_user_message_info: message_info.clone(),
        client_request_id: Some(ctx.client_request_id.clone()),
    });

    let info = message_info.as_object();
    let cc: Vec<Value> = info
        .and_then(|i| i.get("ccRecipients"))
        .and_then(Value::as_array)
        .map(|list| list.iter().take(1).cloned().collect())
        .unwrap_or_default();
    let body = json!({
        "@odata.context": format!("{}/v1.0/$metadata#invitations/$entity", identity.base_url),
        "id": invitation_id,
        "inviteRedeemUrl": url,
        "invitedUserDisplayName": display_name,
        "invitedUserType": text("invitedUserType").unwrap_or("Guest"),
        "invitedUserEmailAddress": address,
        "sendInvitationMessage": send_message,
        "resetRedemption": reset,
        "inviteRedirectUrl": redirect,
        "status": "PendingAcceptance",
        "invitedUserMessageInfo": {
            "messageLanguage": info.and_then(|i| i.get("messageLanguage")).cloned().unwrap_or(Value::Null),
            "customizedMessageBody": info.and_then(|i| i.get("customizedMessageBody")).cloned().unwrap_or(Value::Null),
            "ccRecipients": cc,
        },
        "invitedUser": { "id": user_id },
    });
    Reply::json(201, &body).with_effect(effect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_address_rules() {
        for ok in [
            "a@b.c",
            "first.last@sub.example.org",
            "a-b@x-y.io",
            "a_b@x.y",
            "a'b@x.y",
        ] {
            assert!(valid_smtp_address(ok), "{ok}");
        }
        for bad in [
            "a#b@x.y", "a!b@x.y", "a b@x.y", "ab@x", "@x.y", "a@", ".a@x.y", "a.@x.y", "-a@x.y",
            "a@-x.y", "a@x.y-", "a,b@x.y", "a<b>@x.y", "a(b)@x.y", "a%b@x.y", "a@@x.y", "a@x..y",
            "plain",
        ] {
            assert!(!valid_smtp_address(bad), "{bad}");
        }
    }

    #[test]
    fn primary_proxy_follows_mail() {
        let mut u = SeedUser::guest("1", "u", "old@x.y");
        u.proxy_addresses.push("smtp:new@x.y".into());
        set_primary_proxy(&mut u, "new@x.y");
        assert_eq!(u.proxy_addresses, vec!["SMTP:new@x.y", "smtp:old@x.y"]);
    }

    #[test]
    fn redeem_urls_are_unique_and_long() {
        let a = redeem_url("t", "u");
        let b = redeem_url("t", "u");
        assert_ne!(a, b);
        assert!(a.starts_with("https://") && a.len() > 150, "{a}");
    }
}
