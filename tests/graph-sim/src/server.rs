//! The HTTPS listener: routing, bearer checks, fault injection, latency and the journal.

use crate::graph::{self, Query};
use crate::model::{Call, FaultAction, FaultRule, JournalEntry, Secrets, SeedUser, Settings};
use crate::reply::{Ctx, Reply, server_error};
use crate::state::{Shared, TokenCheck, now_graph_datetime, now_rfc3339};
use crate::token;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

const MAX_BODY: usize = 1 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Returned by the service to make hyper close the connection without answering.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by injected fault")
    }
}

impl std::error::Error for DropConnection {}

type HttpResponse = Response<Full<Bytes>>;

pub(crate) async fn serve(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    // Dropping this task (Simulator's Drop aborts it) drops the set, which aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, _) = match accepted {
                    Ok(pair) => pair,
                    Err(_) => {
                        // Out of descriptors or similar: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                connections.spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                        return;
                    };
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// What a request is, from method and path.
enum Route {
    Admin,
    Token { tenant: String },
    ManagedIdentity,
    GetUser { key: String },
    PatchUser { key: String },
    ListUsers,
    PostInvitation,
    Other,
}

impl Route {
    fn of(method: &hyper::Method, path: &str) -> Route {
        use hyper::Method;
        if path.starts_with("/_sim/") {
            return Route::Admin;
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::POST, [tenant, "oauth2", "v2.0", "token"]) => Route::Token {
                tenant: decode(tenant),
            },
            (&Method::GET, ["msi", "token"]) => Route::ManagedIdentity,
            (&Method::GET, ["v1.0", "users"]) => Route::ListUsers,
            (&Method::GET, ["v1.0", "users", key]) if !key.is_empty() => {
                Route::GetUser { key: decode(key) }
            }
            (&Method::PATCH, ["v1.0", "users", key]) if !key.is_empty() => {
                Route::PatchUser { key: decode(key) }
            }
            (&Method::POST, ["v1.0", "invitations"]) => Route::PostInvitation,
            _ => Route::Other,
        }
    }

    fn call(&self) -> Call {
        match self {
            Route::Token { .. } | Route::ManagedIdentity => Call::Token,
            Route::GetUser { .. } => Call::GetUser,
            Route::PatchUser { .. } => Call::PatchUser,
            Route::ListUsers => Call::ListUsers,
            Route::PostInvitation => Call::PostInvitation,
            Route::Admin | Route::Other => Call::Other,
        }
    }
}

fn decode(segment: &str) -> String {
    percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<HttpResponse, DropConnection> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(DropConnection),
    };
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let route = Route::of(&method, &path);
    if let Route::Admin = route {
        return Ok(admin(&shared, &method, &path, &body));
    }

    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let sent_client_request_id = header("client-request-id");
    let request_id = uuid::Uuid::new_v4().to_string();
    let ctx = Ctx {
        client_request_id: sent_client_request_id
            .clone()
            .unwrap_or_else(|| request_id.clone()),
        request_id,
    };
    let call = route.call();
    let is_graph = path == "/v1.0" || path.starts_with("/v1.0/");
    let identity = &shared.identity;

    // What a POST /invitations asked for, so the journal can name its target even when the
    // request had no effect.
    let (invited_user_id, invited_email) = if call == Call::PostInvitation {
        invitation_target(&body)
    } else {
        (None, None)
    };
    let journal = |status: u16, effect: Option<String>, fault: Option<&FaultAction>| {
        let entry = JournalEntry {
            seq: 0,
            at: now_rfc3339(),
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            client_request_id: sent_client_request_id.clone(),
            call,
            status,
            effect,
            fault: fault.map(|f| f.name().to_string()),
            invited_user_id: invited_user_id.clone(),
            invited_email: invited_email.clone(),
            answered_at: None,
        };
        shared.lock().journal_append(entry)
    };

    // Decide: authentication, then faults, then the call itself, all under one lock so
    // that the effect and the fault consumption are atomic.
    let (reply, fault) = {
        let mut state = shared.lock();
        let auth_failure = if is_graph {
            bearer_failure(&state, &ctx, header("authorization").as_deref())
        } else {
            None
        };
        if let Some(reply) = auth_failure {
            (reply, None)
        } else {
            let fault = state.take_fault(call);
            match &fault {
                Some(action) if !action.applies_request() => {
                    (fault_reply(&ctx, call, action, identity), fault)
                }
                _ => {
                    let reply = match &route {
                        Route::Token { tenant } => {
                            token::token(&mut state, identity, &ctx, tenant, &body)
                        }
                        Route::ManagedIdentity => token::managed_identity(
                            &mut state,
                            identity,
                            query.as_deref(),
                            header(token::IDENTITY_HEADER).as_deref(),
                        ),
                        Route::GetUser { key } => graph::get_user(
                            &state,
                            identity,
                            &ctx,
                            key,
                            &Query::parse(query.as_deref()),
                        ),
                        Route::ListUsers => graph::list_users(
                            &state,
                            identity,
                            &ctx,
                            &Query::parse(query.as_deref()),
                            header("consistencylevel")
                                .is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual")),
                        ),
                        Route::PatchUser { key } => graph::patch_user(&mut state, &ctx, key, &body),
                        Route::PostInvitation => {
                            graph::post_invitation(&mut state, identity, &ctx, &body)
                        }
                        Route::Admin | Route::Other => other_reply(&ctx, &method, &path),
                    };
                    (reply, fault)
                }
            }
        }
    };
    let (latency, retry_after_503) = if is_graph {
        let mut state = shared.lock();
        (state.draw_latency(), state.settings.retry_after_on_503)
    } else {
        (Duration::ZERO, None)
    };

    let (reply, seq) = match &fault {
        None => {
            let seq = journal(reply.status, reply.effect.clone(), None);
            (reply, seq)
        }
        Some(FaultAction::DropConnectionBefore) => {
            journal(0, None, fault.as_ref());
            return Err(DropConnection);
        }
        Some(FaultAction::DropConnectionAfter) => {
            journal(0, reply.effect.clone(), fault.as_ref());
            return Err(DropConnection);
        }
        Some(FaultAction::ServerErrorAfter { status }) => {
            let error = if call == Call::Token {
                token_server_error(&ctx, *status)
            } else {
                server_error(&ctx, *status)
            };
            let seq = journal(error.status, reply.effect.clone(), fault.as_ref());
            (error, seq)
        }
        Some(FaultAction::DelayAfter { millis }) => {
            let seq = journal(reply.status, reply.effect.clone(), fault.as_ref());
            tokio::time::sleep(Duration::from_millis(*millis)).await;
            (reply, seq)
        }
        Some(FaultAction::HangAfter) => {
            // Counted as held before it is journaled, so a release sent by anyone who saw
            // the journal entry or the held count reaches it.
            let held = Held::new(&shared);
            let seq = journal(reply.status, reply.effect.clone(), fault.as_ref());
            held.wait().await;
            (reply, seq)
        }
        Some(_) => {
            let seq = journal(reply.status, None, fault.as_ref());
            (reply, seq)
        }
    };
    let reply = crate::unkind::retry_after_on_503(reply, retry_after_503);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    // Dated here, not when the body is written: a client that went away during a hold or
    // delay dropped this future before, and its entry keeps no answer.
    shared.lock().journal_answered(seq, now_rfc3339());
    Ok(to_response(reply, &ctx, is_graph || call == Call::Token))
}

/// `invitedUser.id` and `invitedUserEmailAddress` of an invitation request body, as far as
/// they are there.
fn invitation_target(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let text = |v: &Value| v.as_str().map(str::to_string);
    (
        text(&request["invitedUser"]["id"]),
        text(&request["invitedUserEmailAddress"]),
    )
}

/// A response held by `HangAfter` until the next `POST /_sim/release`. If the client goes away
/// first, hyper drops the request future and with it this guard, which keeps the count right.
struct Held<'a> {
    shared: &'a Shared,
    release: tokio::sync::watch::Receiver<u64>,
}

impl<'a> Held<'a> {
    fn new(shared: &'a Shared) -> Self {
        let release = shared.release.subscribe();
        shared.lock().held += 1;
        Held { shared, release }
    }

    async fn wait(mut self) {
        let _ = self.release.changed().await;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.shared.lock().held -= 1;
    }
}

fn bearer_failure(
    state: &crate::state::State,
    ctx: &Ctx,
    authorization: Option<&str>,
) -> Option<Reply> {
    let token = authorization.and_then(|h| {
        let (scheme, token) = h.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let message = match token {
        None | Some("") => "Access token is empty.",
        Some(token) => match state.token_valid(token, Instant::now()) {
            TokenCheck::Valid => return None,
            TokenCheck::Expired => "Lifetime validation failed, the token is expired.",
            TokenCheck::Unknown => {
                "IDX14100: JWT is not well formed, there are no dots (.). The token needs to be in JWS or JWE Compact Serialization Format."
            }
        },
    };
    Some(
        Reply::graph_error(ctx, 401, "InvalidAuthenticationToken", message).with_header(
            "www-authenticate",
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
        ),
    )
}

fn other_reply(ctx: &Ctx, method: &hyper::Method, path: &str) -> Reply {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1.0", "users"] | ["v1.0", "users", _] | ["v1.0", "invitations"] => Reply::graph_error(
            ctx,
            405,
            "Request_BadRequest",
            &format!("The HTTP method '{method}' is not allowed for the request target."),
        ),
        ["v1.0", rest @ ..] => Reply::graph_error(
            ctx,
            400,
            "BadRequest",
            &format!(
                "Resource not found for the segment '{}'.",
                rest.first().copied().unwrap_or_default()
            ),
        ),
        _ => Reply::plain_json(404, &json!({"error": "not_found", "path": path})),
    }
}

fn retry_after(seconds: Option<u64>, http_date: bool) -> Option<String> {
    let seconds = seconds?;
    Some(if http_date {
        httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(seconds))
    } else {
        seconds.to_string()
    })
}

/// The answer for a fault that stops the request before it takes effect.
fn fault_reply(
    ctx: &Ctx,
    call: Call,
    action: &FaultAction,
    identity: &crate::state::Identity,
) -> Reply {
    if call == Call::Token {
        return token_fault_reply(ctx, action);
    }
    match action {
        FaultAction::Throttle {
            retry_after_seconds,
            retry_after_http_date,
        } => {
            let reply = Reply::graph_error(
                ctx,
                429,
                "TooManyRequests",
                "Too many requests. Please try again later.",
            )
            .with_header("x-ms-throttle-scope", "Tenant_Application/ReadWrite/*")
            .with_header("x-ms-throttle-limit-percentage", "1.0");
            match retry_after(*retry_after_seconds, *retry_after_http_date) {
                Some(value) => reply.with_header("retry-after", value),
                None => reply,
            }
        }
        FaultAction::ServerErrorBefore { status } => server_error(ctx, *status),
        FaultAction::AbuseBlock => Reply::graph_error(
            ctx,
            403,
            "Forbidden",
            "Invitations are blocked for this directory due to suspicious activity. Please contact Microsoft support to unblock this directory.",
        ),
        FaultAction::Forbidden => {
            Reply::graph_error(ctx, 403, "Forbidden", "Generic authorization exception.")
        }
        FaultAction::Unauthorized => Reply::graph_error(
            ctx,
            401,
            "Unauthorized",
            &format!(
                "Insufficient privileges to perform requested operation by the application '{}'. ControllerName=MSGraphInviteAPI, ActionName=CreateInvite, URL absolute path=/api/{}/invites",
                identity.client_id, identity.tenant_id
            ),
        ),
        // Faults that apply the request never reach here.
        _ => server_error(ctx, 500),
    }
}

fn token_server_error(ctx: &Ctx, status: u16) -> Reply {
    Reply::entra_error(
        ctx,
        status,
        "temporarily_unavailable",
        90033,
        "A transient error has occurred. Please try again.",
    )
}

fn token_fault_reply(ctx: &Ctx, action: &FaultAction) -> Reply {
    match action {
        FaultAction::Throttle {
            retry_after_seconds,
            retry_after_http_date,
        } => {
            let reply = Reply::entra_error(
                ctx,
                429,
                "temporarily_unavailable",
                90055,
                "TenantThrottlingThreshold: The tenant has been throttled due to too many requests.",
            );
            match retry_after(*retry_after_seconds, *retry_after_http_date) {
                Some(value) => reply.with_header("retry-after", value),
                None => reply,
            }
        }
        FaultAction::ServerErrorBefore { status } => token_server_error(ctx, *status),
        FaultAction::Unauthorized => Reply::entra_error(
            ctx,
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided.",
        ),
        _ => Reply::entra_error(
            ctx,
            400,
            "unauthorized_client",
            7000112,
            "Application is disabled.",
        ),
    }
}

fn to_response(reply: Reply, ctx: &Ctx, echo_ids: bool) -> HttpResponse {
    let mut builder = Response::builder().status(reply.status);
    if echo_ids {
        builder = builder
            .header("request-id", &ctx.request_id)
            .header("client-request-id", &ctx.client_request_id);
    }
    for (name, value) in &reply.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            builder = builder.header(name, value);
        }
    }
    let body = match reply.body {
        Some((bytes, content_type)) => {
            builder = builder.header("content-type", content_type);
            Full::new(Bytes::from(bytes))
        }
        None => Full::new(Bytes::new()),
    };
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn admin_json(status: u16, value: &Value) -> HttpResponse {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn admin_error(status: u16, message: &str) -> HttpResponse {
    admin_json(status, &json!({ "error": message }))
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[derive(serde::Deserialize)]
struct SettingsPatch {
    latency_ms: Option<u64>,
    latency_spread_ms: Option<u64>,
    mail_propagation_ms: Option<u64>,
    evidence_delay_ms: Option<u64>,
    /// `Some(None)` (JSON null) takes the `Retry-After` off 503 answers again.
    #[serde(default, deserialize_with = "some")]
    retry_after_on_503: Option<Option<u64>>,
    tokens_without_roles: Option<bool>,
}

/// Tells a field set to null from a field left out.
fn some<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `/_sim/...`: inspection and control, no bearer needed, never journaled.
fn admin(shared: &Shared, method: &hyper::Method, path: &str, body: &[u8]) -> HttpResponse {
    use hyper::Method;
    let rest = path.trim_start_matches("/_sim/").trim_end_matches('/');
    let segments: Vec<String> = rest.split('/').map(decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let mut state = shared.lock();
    match (method, segments.as_slice()) {
        (&Method::GET, ["journal"]) => admin_json(200, &to_value(&state.journal)),
        (&Method::GET, ["hazards"]) => admin_json(200, &to_value(&state.hazards)),
        (&Method::GET, ["invitations"]) => admin_json(200, &to_value(&state.invitations)),
        (&Method::GET, ["assertions"]) => admin_json(200, &to_value(&state.assertions)),
        (&Method::GET, ["users"]) => {
            let users: Vec<&SeedUser> = state.users.iter().map(|r| &r.user).collect();
            admin_json(200, &to_value(&users))
        }
        (&Method::GET, ["users", id]) => match state.user_by_key(id) {
            Some(i) => admin_json(200, &to_value(&state.users[i].user)),
            None => admin_error(404, "no such user"),
        },
        (&Method::POST, ["users"]) => match serde_json::from_slice::<SeedUser>(body) {
            Ok(user) => {
                state.put_user(user);
                admin_json(200, &json!({}))
            }
            Err(e) => admin_error(400, &e.to_string()),
        },
        (&Method::POST, ["users", id, change]) => {
            let Some(i) = state.user_by_key(id) else {
                return admin_error(404, "no such user");
            };
            crate::unkind::forget_replication(&mut state.users[i]);
            let user = &mut state.users[i].user;
            match *change {
                // The guest redeemed their invitation.
                "redeem" => {
                    user.external_user_state = Some("Accepted".to_string());
                    user.external_user_state_change_date_time = Some(now_graph_datetime());
                }
                // Someone else (another admin, a script) reset the redemption: the same
                // change of state a POST /invitations makes, without our journal or invitations.
                "reset" => {
                    user.external_user_state = Some("PendingAcceptance".to_string());
                    user.external_user_state_change_date_time = Some(now_graph_datetime());
                }
                // Someone converted the guest into an internal member.
                "member" => user.user_type = "Member".to_string(),
                _ => return admin_error(404, "unknown user change"),
            }
            admin_json(200, &to_value(&state.users[i].user))
        }
        (&Method::GET, ["faults"]) => admin_json(200, &to_value(&state.faults)),
        (&Method::POST, ["faults"]) => match serde_json::from_slice::<FaultRule>(body) {
            Ok(rule) => {
                state.add_fault(rule);
                admin_json(200, &json!({}))
            }
            Err(e) => admin_error(400, &e.to_string()),
        },
        (&Method::DELETE, ["faults"]) => {
            state.faults.clear();
            admin_json(200, &json!({}))
        }
        (&Method::POST, ["release"]) => {
            let held = state.held;
            shared.release.send_modify(|n| *n += 1);
            admin_json(200, &json!({ "released": held }))
        }
        (&Method::GET, ["held"]) => admin_json(200, &json!({ "held": state.held })),
        (&Method::GET, ["settings"]) => admin_json(200, &to_value(&state.settings)),
        (&Method::PUT, ["settings"]) => match serde_json::from_slice::<SettingsPatch>(body) {
            Ok(patch) => {
                let settings: &mut Settings = &mut state.settings;
                if let Some(v) = patch.latency_ms {
                    settings.latency_ms = v;
                }
                if let Some(v) = patch.mail_propagation_ms {
                    settings.mail_propagation_ms = v;
                }
                if let Some(v) = patch.latency_spread_ms {
                    settings.latency_spread_ms = v;
                }
                if let Some(v) = patch.evidence_delay_ms {
                    settings.evidence_delay_ms = v;
                }
                if let Some(v) = patch.retry_after_on_503 {
                    settings.retry_after_on_503 = v;
                }
                if let Some(v) = patch.tokens_without_roles {
                    settings.tokens_without_roles = v;
                }
                admin_json(200, &to_value(&state.settings))
            }
            Err(e) => admin_error(400, &e.to_string()),
        },
        (&Method::GET, ["tokens", "count"]) => {
            admin_json(200, &json!({ "count": state.issued_tokens.len() }))
        }
        (&Method::POST, ["tokens", "expire"]) => {
            let now = Instant::now();
            for expiry in state.tokens.values_mut() {
                *expiry = now;
            }
            admin_json(200, &json!({}))
        }
        (&Method::GET, ["secrets"]) => admin_json(
            200,
            &to_value(&Secrets {
                access_tokens: state.issued_tokens.clone(),
                redeem_urls: state.redeem_urls.clone(),
            }),
        ),
        _ => admin_error(404, "unknown admin route"),
    }
}
