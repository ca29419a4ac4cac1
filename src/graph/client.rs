//! The Graph client: the four calls of the Graph contract (docs/graph.md). Reads and the
//! `mail` PATCH are retried inside; the invitation POST is sent exactly once per call.

use super::credential;
use super::error::{FailureKind, GraphCall, GraphError, MAX_ID_CHARS, bounded, parse_retry_after};
use super::limiter::{WriteLimiter, WriteSlot};
use super::model::{
    DirectoryUser, Invitation, InvitationWire, ResetRedemptionRequest, USER_SELECT, UserPage,
};
use super::query::{email_in_use_filter, encode_path_segment, encode_query_value, mail_filter};
use super::retry::{Idempotency, Retry, RetryPolicy};
use azure_core::credentials::TokenCredential;
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub const DEFAULT_GRAPH_ENDPOINT: &str = "https://graph.microsoft.com";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `Retry-After` believed: the default tenant cool-down (docs/graph.md).
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The largest answer body read: Graph's answers here are a few kilobytes; a page of
/// 100 users with every selected property stays far below it.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// A guard against a server that keeps handing out next links.
const MAX_PAGES: usize = 50;

/// Where Graph is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphSettings {
    /// Without `/v1.0`, e.g. `https://graph.microsoft.com`.
    pub endpoint: String,
    /// The token scope, e.g. `https://graph.microsoft.com/.default`.
    pub scope: String,
    /// Per HTTP attempt, from sending to the last byte of the answer.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// `Retry-After` values above this are taken as this (default 1 hour, the default
    /// tenant cool-down): a deadline computed from an unbounded value can overflow.
    pub max_retry_after: Duration,
    /// Answer bodies are read up to this many bytes (default 1 MiB); a longer one is not
    /// read further (an `InvalidResponse`, which is `Ambiguous` for the POST).
    pub max_body_bytes: usize,
}

impl GraphSettings {
    /// Settings for `endpoint`, with scope `<endpoint>/.default`, a 30 s timeout and
    /// the default retry policy.
    pub fn new(endpoint: impl Into<String>) -> Self {
        let endpoint = endpoint.into().trim_end_matches('/').to_owned();
        GraphSettings {
            scope: format!("{endpoint}/.default"),
            endpoint,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The cap on `Retry-After`; set it to the tenant cool-down.
    pub fn with_max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    pub fn with_max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }
}

impl Default for GraphSettings {
    fn default() -> Self {
        GraphSettings::new(DEFAULT_GRAPH_ENDPOINT)
    }
}

/// Microsoft Graph for guestreset. Cheap to clone: clones share the HTTP pool, the
/// credential (and its token cache) and the write limiter.
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    settings: GraphSettings,
    /// `{endpoint}/v1.0`
    base: String,
    http: reqwest::Client,
    credential: Arc<dyn TokenCredential>,
    limiter: WriteLimiter,
    observer: Option<Arc<dyn GraphObserver>>,
}

/// Sees every HTTP attempt and every limiter wait, for metrics.
pub trait GraphObserver: Send + Sync {
    /// One HTTP attempt: its status, or `None` when no answer came.
    fn request(&self, call: GraphCall, status: Option<u16>, took: Duration);
    /// A write waited this long for the limiter.
    fn limiter_wait(&self, waited: Duration);
}

impl fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphClient")
            .field("endpoint", &self.inner.settings.endpoint)
            .field("scope", &self.inner.settings.scope)
            .finish_non_exhaustive()
    }
}

/// A successful answer.
#[derive(Debug)]
pub(super) struct Answer {
    status: u16,
    body: Vec<u8>,
    request_id: Option<String>,
    client_request_id: String,
}

/// How reading an answer's body ended.
#[derive(Debug)]
pub(super) enum BodyRead {
    Complete(Vec<u8>),
    /// More than `limit` bytes: reading stopped there; `prefix` holds the first `limit`.
    TooLarge {
        prefix: Vec<u8>,
        limit: usize,
    },
    /// The transport failed while reading.
    Failed {
        kind: FailureKind,
        detail: String,
    },
}

impl GraphClient {
    pub fn new(
        settings: GraphSettings,
        http: reqwest::Client,
        credential: Arc<dyn TokenCredential>,
        limiter: WriteLimiter,
    ) -> Self {
        let base = format!("{}/v1.0", settings.endpoint.trim_end_matches('/'));
        GraphClient {
            inner: Arc::new(Inner {
                settings,
                base,
                http,
                credential,
                limiter,
                observer: None,
            }),
        }
    }

    /// Reports every request and limiter wait to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn GraphObserver>) -> Self {
        Arc::make_mut(&mut self.inner).observer = Some(observer);
        self
    }

    fn observe(&self, call: GraphCall, status: Option<u16>, took: Duration) {
        if let Some(observer) = &self.inner.observer {
            observer.request(call, status, took);
        }
    }

    /// Records a limiter wait taken by the caller (see [`WriteLimiter::take_slot`]).
    pub fn observe_limiter_wait(&self, waited: Duration) {
        if let Some(observer) = &self.inner.observer {
            observer.limiter_wait(waited);
        }
    }

    pub fn settings(&self) -> &GraphSettings {
        &self.inner.settings
    }

    pub fn limiter(&self) -> &WriteLimiter {
        &self.inner.limiter
    }

    /// `GET /users/{id or UPN}`; `None` when Graph answers 404 (which, right after a
    /// user is created, may only mean it has not replicated yet).
    pub async fn get_user(&self, id_or_upn: &str) -> Result<Option<DirectoryUser>, GraphError> {
        const CALL: GraphCall = GraphCall::GetUser;
        if id_or_upn.is_empty() {
            return Ok(None);
        }
        let url = format!(
            "{}/users/{}?$select={USER_SELECT}",
            self.inner.base,
            encode_path_segment(id_or_upn)
        );
        match self.execute(CALL, Method::GET, &url, None).await {
            Ok(answer) => decode::<DirectoryUser>(CALL, &answer).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Users whose `mail` equals `mail` (Graph compares case-insensitively).
    pub async fn find_users_by_mail(&self, mail: &str) -> Result<Vec<DirectoryUser>, GraphError> {
        self.list_users(&mail_filter(mail)).await
    }

    /// Users holding `email` as UPN, mail, SMTP proxy address or one of their other mails.
    pub async fn find_users_holding_email(
        &self,
        email: &str,
    ) -> Result<Vec<DirectoryUser>, GraphError> {
        self.list_users(&email_in_use_filter(email)).await
    }

    async fn list_users(&self, filter: &str) -> Result<Vec<DirectoryUser>, GraphError> {
        const CALL: GraphCall = GraphCall::ListUsers;
        let mut url = format!(
            "{}/users?$filter={}&$select={USER_SELECT}",
            self.inner.base,
            encode_query_value(filter)
        );
        let mut users = Vec::new();
        for _ in 0..MAX_PAGES {
            let answer = self.execute(CALL, Method::GET, &url, None).await?;
            let page: UserPage = decode(CALL, &answer)?;
            users.extend(page.value);
            let Some(next) = page.next_link else {
                return Ok(users);
            };
            // The bearer token goes only to the configured endpoint.
            if !next.starts_with(&format!("{}/", self.inner.base)) {
                return Err(invalid_answer(
                    CALL,
                    &answer,
                    "the next-page link points outside the Graph endpoint",
                ));
            }
            url = next;
        }
        Err(GraphError::new(
            CALL,
            FailureKind::InvalidResponse,
            format!("more than {MAX_PAGES} pages of results"),
        ))
    }

    /// `PATCH /users/{id}` with `{"mail": email}`. Paced by the write limiter; repeated
    /// on failures that may clear, since setting the same value again is harmless.
    pub async fn set_mail(&self, user_id: &str, email: &str) -> Result<(), GraphError> {
        let (url, body) = self.mail_patch(user_id, email);
        self.execute(GraphCall::PatchUser, Method::PATCH, &url, Some(body))
            .await?;
        Ok(())
    }

    /// As [`GraphClient::set_mail`], spending a slot the caller already took from the
    /// limiter, in **one** HTTP attempt: the caller checks the tenant pause between
    /// taking the slot and writing, so the write must not wait (or repeat) afterwards.
    pub async fn set_mail_in_slot(
        &self,
        slot: WriteSlot,
        user_id: &str,
        email: &str,
    ) -> Result<(), GraphError> {
        let (url, body) = self.mail_patch(user_id, email);
        self.send_once(slot, GraphCall::PatchUser, Method::PATCH, &url, Some(body))
            .await?;
        Ok(())
    }

    fn mail_patch(&self, user_id: &str, email: &str) -> (String, Vec<u8>) {
        let url = format!("{}/users/{}", self.inner.base, encode_path_segment(user_id));
        let body = serde_json::to_vec(&serde_json::json!({ "mail": email }))
            .expect("a JSON object of strings serialises");
        (url, body)
    }

    /// `POST /invitations` with `resetRedemption: true`: waits for a write slot, then
    /// as [`GraphClient::reset_redemption_in_slot`].
    pub async fn reset_redemption(
        &self,
        req: &ResetRedemptionRequest,
    ) -> Result<Invitation, GraphError> {
        let (slot, waited) = self.inner.limiter.take_slot().await;
        self.observe_limiter_wait(waited);
        self.reset_redemption_in_slot(slot, req).await
    }

    /// `POST /invitations` with `resetRedemption: true`, spending a slot the caller
    /// already took from the limiter, in exactly **one** HTTP attempt.
    ///
    /// Never repeated here, not even after a 429 or a failure to connect: the caller
    /// records when the POST is sent (`attempt.postStartedAt`) and counts the
    /// replication window from that moment, so a resend must go through the caller,
    /// which marks it first. Every failure comes back classified: `Throttled`,
    /// `TransientBeforeSend`, `Definite`, `AbuseBlocked`, or `Ambiguous` (a timeout, a
    /// lost connection, a 5xx, or a success answer that could not be read), after which
    /// the caller must look for evidence before deciding (docs/graph.md).
    pub async fn reset_redemption_in_slot(
        &self,
        slot: WriteSlot,
        req: &ResetRedemptionRequest,
    ) -> Result<Invitation, GraphError> {
        const CALL: GraphCall = GraphCall::PostInvitation;
        let url = format!("{}/invitations", self.inner.base);
        let body = serde_json::to_vec(req).expect("the request serialises");
        let answer = self
            .send_once(slot, CALL, Method::POST, &url, Some(body))
            .await?;
        let wire: InvitationWire = decode(CALL, &answer)?;
        let invitation =
            wire.into_invitation(answer.request_id.clone(), answer.client_request_id.clone());
        info!(
            call = CALL.as_str(),
            invitation_id = %invitation.id,
            redeem_status = %invitation.status,
            client_request_id = %invitation.client_request_id,
            request_id = invitation.request_id.as_deref().unwrap_or(""),
            "invitation issued"
        );
        Ok(invitation)
    }

    /// One attempt of a write whose slot the caller took.
    async fn send_once(
        &self,
        slot: WriteSlot,
        call: GraphCall,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, GraphError> {
        // The slot pays for this attempt and no other.
        drop(slot);
        self.attempt(call, method, url, body.as_deref(), 1)
            .await
            .map_err(|mut err| {
                err.attempts = 1;
                err
            })
    }

    /// Attempts an idempotent `call` until it succeeds or the retry policy gives up;
    /// a write waits for the limiter before every attempt.
    async fn execute(
        &self,
        call: GraphCall,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, GraphError> {
        debug_assert_ne!(call, GraphCall::PostInvitation, "the POST is never retried");
        let policy = self.inner.settings.retry;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            if call.is_write() {
                self.wait_for_write_slot(call).await;
            }
            let mut err = match self
                .attempt(call, method.clone(), url, body.as_deref(), attempts)
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(err) => err,
            };
            err.attempts = attempts;
            let jitter = rand::random::<f64>();
            match policy.decide_for(attempts, &err, Idempotency::Idempotent, jitter) {
                Retry::After(delay) => {
                    info!(
                        call = call.as_str(),
                        attempt = attempts,
                        class = ?err.class(),
                        delay_ms = delay.as_millis() as u64,
                        error = %err,
                        "retrying Graph call"
                    );
                    tokio::time::sleep(delay).await;
                }
                Retry::GiveUp => return Err(err),
            }
        }
    }

    async fn wait_for_write_slot(&self, call: GraphCall) {
        let waited = self.inner.limiter.acquire().await;
        self.observe_limiter_wait(waited);
        if !waited.is_zero() {
            debug!(
                call = call.as_str(),
                waited_ms = waited.as_millis() as u64,
                "write limiter held the call"
            );
        }
    }

    /// One HTTP attempt, with a fresh `client-request-id`.
    async fn attempt(
        &self,
        call: GraphCall,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        attempt: u32,
    ) -> Result<Answer, GraphError> {
        let inner = &*self.inner;
        let client_request_id = uuid::Uuid::new_v4().to_string();

        // A token failure never reached Graph: no client-request-id to quote.
        let auth = self.authorization(call).await?;
        let mut request = inner
            .http
            .request(method, url)
            .timeout(inner.settings.timeout)
            .header(AUTHORIZATION, auth)
            .header("client-request-id", &client_request_id)
            .header("return-client-request-id", "true")
            .header(ACCEPT, "application/json");
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }

        let started = Instant::now();
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                self.observe(call, None, started.elapsed());
                let kind = transport_failure(&e);
                let detail = error_chain(&e.without_url());
                warn!(
                    call = call.as_str(),
                    attempt,
                    latency_ms = started.elapsed().as_millis() as u64,
                    client_request_id = %client_request_id,
                    failure = ?kind,
                    error = %detail,
                    "Graph call got no answer"
                );
                let mut err = GraphError::new(call, kind, detail);
                err.client_request_id = Some(client_request_id);
                return Err(err);
            }
        };

        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = read_capped(response, inner.settings.max_body_bytes).await;
        self.observe(call, Some(status), started.elapsed());
        let result = interpret(
            call,
            status,
            &headers,
            body,
            client_request_id,
            SystemTime::now(),
            inner.settings.max_retry_after,
        );
        let latency_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(answer) => {
                let request_id = answer.request_id.as_deref().unwrap_or("");
                let client_request_id = &answer.client_request_id;
                info!(call = call.as_str(), attempt, status, latency_ms, request_id, %client_request_id, "Graph call");
            }
            Err(e) => {
                let request_id = e.request_id.as_deref().unwrap_or("");
                let client_request_id = e.client_request_id.as_deref().unwrap_or("");
                warn!(call = call.as_str(), attempt, status, latency_ms, request_id, client_request_id, failure = ?e.kind, "Graph call failed");
            }
        }
        result
    }

    /// `Bearer <token>`, marked sensitive so no debug output of the request shows it.
    async fn authorization(&self, call: GraphCall) -> Result<HeaderValue, GraphError> {
        let inner = &*self.inner;
        let scopes = [inner.settings.scope.as_str()];
        let token = match tokio::time::timeout(
            inner.settings.timeout,
            inner.credential.get_token(&scopes, None),
        )
        .await
        {
            Ok(Ok(token)) => token,
            Ok(Err(e)) => {
                let transient = credential::is_transient(&e);
                let detail = error_chain(&e);
                warn!(
                    call = call.as_str(),
                    transient,
                    error = %detail,
                    "could not get an access token"
                );
                return Err(GraphError::new(
                    call,
                    FailureKind::Credential { transient },
                    format!("scope {}: {detail}", inner.settings.scope),
                ));
            }
            Err(_) => {
                return Err(GraphError::new(
                    call,
                    FailureKind::Credential { transient: true },
                    format!(
                        "no token for scope {} within {}s",
                        inner.settings.scope,
                        inner.settings.timeout.as_secs_f64()
                    ),
                ));
            }
        };
        let mut value =
            HeaderValue::try_from(format!("Bearer {}", token.token.secret())).map_err(|_| {
                GraphError::new(
                    call,
                    FailureKind::Credential { transient: false },
                    "the token service returned a token that is not a valid header value",
                )
            })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// A header's text, bounded; `None` when absent or not visible ASCII.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| bounded(v.trim(), MAX_ID_CHARS))
}

/// Reads the body chunk by chunk and stops once it passes `limit`, so that an endless
/// or huge answer costs at most `limit` bytes of memory.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> BodyRead {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    return BodyRead::TooLarge {
                        prefix: body,
                        limit,
                    };
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return BodyRead::Complete(body),
            Err(e) => {
                return BodyRead::Failed {
                    kind: transport_failure(&e),
                    detail: error_chain(&e.without_url()),
                };
            }
        }
    }
}

/// What an answer means: its status, headers and (capped) body, read at `now`.
///
/// A success status whose body could not be read in full may have taken effect, so it
/// is an error of a kind that classifies as `Ambiguous`, never a plain failure. An error
/// status is classified from its status; a cut or lost body only loses the message.
pub(super) fn interpret(
    call: GraphCall,
    status: u16,
    headers: &HeaderMap,
    body: BodyRead,
    client_request_id: String,
    now: SystemTime,
    max_retry_after: Duration,
) -> Result<Answer, GraphError> {
    let request_id = header(headers, "request-id");
    let success = (200..300).contains(&status);
    let mut err = if success {
        match body {
            BodyRead::Complete(body) => {
                return Ok(Answer {
                    status,
                    body,
                    request_id,
                    client_request_id,
                });
            }
            BodyRead::TooLarge { limit, .. } => {
                let detail = format!("the answer is larger than {limit} bytes and was not read");
                unreadable(
                    call,
                    status,
                    request_id,
                    FailureKind::InvalidResponse,
                    detail,
                )
            }
            // An answer arrived, so the request was sent: a read failure is never
            // "could not connect", whatever the transport calls it.
            BodyRead::Failed {
                kind: FailureKind::Timeout,
                detail,
            } => unreadable(call, status, request_id, FailureKind::Timeout, detail),
            BodyRead::Failed { detail, .. } => unreadable(
                call,
                status,
                request_id,
                FailureKind::ConnectionLost,
                detail,
            ),
        }
    } else {
        let bytes = match body {
            BodyRead::Complete(bytes) | BodyRead::TooLarge { prefix: bytes, .. } => bytes,
            BodyRead::Failed { .. } => Vec::new(),
        };
        let retry_after = retry_after(headers, now, max_retry_after);
        GraphError::from_response(call, status, &bytes, request_id, retry_after)
    };
    err.client_request_id = Some(client_request_id);
    Err(err)
}

fn retry_after(headers: &HeaderMap, now: SystemTime, max: Duration) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, now, max)
}

/// Graph said yes but its answer could not be read: it happened, we cannot see what.
fn unreadable(
    call: GraphCall,
    status: u16,
    request_id: Option<String>,
    kind: FailureKind,
    detail: String,
) -> GraphError {
    let mut err = GraphError::new(call, kind, detail);
    err.status = Some(status);
    err.request_id = request_id;
    err
}

/// A connect failure (DNS, TCP, TLS) happened before anything was sent; any other
/// transport failure may have happened after Graph got the request.
fn transport_failure(e: &reqwest::Error) -> FailureKind {
    if e.is_connect() {
        FailureKind::Connect
    } else if e.is_timeout() {
        FailureKind::Timeout
    } else {
        FailureKind::ConnectionLost
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

pub(super) fn decode<T: DeserializeOwned>(
    call: GraphCall,
    answer: &Answer,
) -> Result<T, GraphError> {
    serde_json::from_slice(&answer.body)
        .map_err(|e| invalid_answer(call, answer, &format!("cannot decode the answer: {e}")))
}

fn invalid_answer(call: GraphCall, answer: &Answer, detail: &str) -> GraphError {
    let mut err = GraphError::new(call, FailureKind::InvalidResponse, detail);
    err.status = Some(answer.status);
    err.request_id = answer.request_id.clone();
    err.client_request_id = Some(answer.client_request_id.clone());
    err.attempts = 1;
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ErrorClass;

    #[test]
    fn settings_derive_scope_from_endpoint() {
        let s = GraphSettings::new("https://graph.microsoft.us/");
        assert_eq!(s.endpoint, "https://graph.microsoft.us");
        assert_eq!(s.scope, "https://graph.microsoft.us/.default");
        assert_eq!(s.timeout, Duration::from_secs(30));
        assert_eq!(
            GraphSettings::default().scope,
            "https://graph.microsoft.com/.default"
        );
        let s = s
            .with_scope("api://x/.default")
            .with_timeout(Duration::from_secs(5));
        assert_eq!(s.scope, "api://x/.default");
        assert_eq!(s.timeout, Duration::from_secs(5));
    }

    #[test]
    fn settings_bound_what_graph_sends_by_default() {
        let s = GraphSettings::default();
        assert_eq!(s.max_retry_after, Duration::from_secs(3600));
        assert_eq!(s.max_body_bytes, 1 << 20);
        let s = s
            .with_max_retry_after(Duration::from_secs(60))
            .with_max_body_bytes(10);
        assert_eq!(
            (s.max_retry_after, s.max_body_bytes),
            (Duration::from_secs(60), 10)
        );
    }

    const CAP: Duration = Duration::from_secs(3600);

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn run(
        call: GraphCall,
        status: u16,
        h: &HeaderMap,
        body: BodyRead,
    ) -> Result<Answer, GraphError> {
        interpret(
            call,
            status,
            h,
            body,
            "client-1".into(),
            SystemTime::now(),
            CAP,
        )
    }

    #[test]
    fn a_success_too_large_to_read_may_have_taken_effect() {
        let h = headers(&[("request-id", "req-1")]);
        let too_large = || BodyRead::TooLarge {
            prefix: b"{\"id\":".to_vec(),
            limit: 7,
        };
        let err = run(GraphCall::PostInvitation, 201, &h, too_large()).unwrap_err();
        assert_eq!(err.kind, FailureKind::InvalidResponse);
        assert_eq!(
            err.class(),
            ErrorClass::Ambiguous,
            "the POST may have happened"
        );
        assert_eq!(err.status, Some(201));
        assert_eq!(err.request_id.as_deref(), Some("req-1"));
        assert_eq!(err.client_request_id.as_deref(), Some("client-1"));
        assert!(err.to_string().contains("larger than 7 bytes"), "{err}");
        let read = run(GraphCall::GetUser, 200, &h, too_large()).unwrap_err();
        assert_eq!(read.kind, FailureKind::InvalidResponse);
    }

    #[test]
    fn a_success_whose_body_was_lost_is_ambiguous() {
        let lost = BodyRead::Failed {
            kind: FailureKind::Timeout,
            detail: "timed out".into(),
        };
        let err = run(GraphCall::PostInvitation, 201, &HeaderMap::new(), lost).unwrap_err();
        assert_eq!(
            (err.kind.clone(), err.class()),
            (FailureKind::Timeout, ErrorClass::Ambiguous)
        );
        assert_eq!(err.status, Some(201));
    }

    /// Found by the property tests: a read failure the transport calls a connect
    /// failure made a 201 "nothing was sent", which would let the POST be resent.
    #[test]
    fn a_success_is_never_nothing_sent() {
        let failed = BodyRead::Failed {
            kind: FailureKind::Connect,
            detail: String::new(),
        };
        let err = run(GraphCall::PostInvitation, 201, &HeaderMap::new(), failed).unwrap_err();
        assert_eq!(err.kind, FailureKind::ConnectionLost);
        assert_eq!(err.class(), ErrorClass::Ambiguous);
    }

    #[test]
    fn an_error_status_is_classified_even_with_a_cut_body() {
        let h = headers(&[("retry-after", "18446744073709551615")]);
        let cut = BodyRead::TooLarge {
            prefix: b"{\"error\":{\"code\":\"TooMany".to_vec(),
            limit: 26,
        };
        let err = run(GraphCall::PostInvitation, 429, &h, cut).unwrap_err();
        assert_eq!(
            err.class(),
            ErrorClass::Throttled {
                retry_after: Some(CAP)
            }
        );
        let lost = BodyRead::Failed {
            kind: FailureKind::ConnectionLost,
            detail: "reset".into(),
        };
        let err = run(GraphCall::PostInvitation, 403, &HeaderMap::new(), lost).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Definite);
    }

    #[test]
    fn request_id_header_is_bounded() {
        let long = "r".repeat(4096);
        let h = headers(&[("request-id", &long)]);
        let answer = run(
            GraphCall::GetUser,
            200,
            &h,
            BodyRead::Complete(b"{}".to_vec()),
        )
        .unwrap();
        assert_eq!(answer.request_id.unwrap().chars().count(), MAX_ID_CHARS);
    }

    /// A server that answers 200 with a chunked body that never ends, counting what it wrote.
    fn endless_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = written.clone();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 4096];
            let _ = conn.read(&mut request);
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
            if conn.write_all(head.as_bytes()).is_err() {
                return;
            }
            let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
            // Until the client hangs up.
            while conn.write_all(chunk.as_bytes()).is_ok() {
                counter.fetch_add(0x4000, Ordering::Relaxed);
            }
        });
        (url, written)
    }

    /// The body is read incrementally: an endless answer stops at the cap instead of
    /// filling memory (reading it whole would never end, and the guard below would fire).
    #[tokio::test]
    async fn an_endless_body_is_read_only_up_to_the_cap() {
        let (url, _written) = endless_server();
        let response = reqwest::Client::new().get(&url).send().await.unwrap();
        let limit = 100_000;
        let read = tokio::time::timeout(Duration::from_secs(30), read_capped(response, limit))
            .await
            .expect("reading stops at the cap");
        match read {
            BodyRead::TooLarge { prefix, limit: l } => {
                assert_eq!((prefix.len(), l), (limit, limit));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn error_chain_joins_sources_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(inner);
        assert_eq!(error_chain(&outer), "refused");
    }
}
