//! The Graph client: the four calls of API.md 4, with retries that never repeat a write
//! whose outcome is unknown.

use super::credential;
use super::error::{FailureKind, GraphCall, GraphError, parse_retry_after};
use super::limiter::{WriteLimiter, WriteSlot};
use super::model::{
    DirectoryUser, Invitation, InvitationWire, ResetRedemptionRequest, USER_SELECT, UserPage,
};
use super::query::{email_in_use_filter, encode_path_segment, encode_query_value, mail_filter};
use super::retry::{Idempotency, Retry, RetryPolicy};
use azure_core::credentials::TokenCredential;
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub const DEFAULT_GRAPH_ENDPOINT: &str = "https://graph.microsoft.com";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

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
struct Answer {
    status: u16,
    body: Vec<u8>,
    request_id: Option<String>,
    client_request_id: String,
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
        match self
            .execute(CALL, Method::GET, &url, None, Idempotency::Idempotent)
            .await
        {
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
            let answer = self
                .execute(CALL, Method::GET, &url, None, Idempotency::Idempotent)
                .await?;
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
        let url = format!("{}/users/{}", self.inner.base, encode_path_segment(user_id));
        let body = serde_json::to_vec(&serde_json::json!({ "mail": email }))
            .expect("a JSON object of strings serialises");
        self.execute(
            GraphCall::PatchUser,
            Method::PATCH,
            &url,
            Some(body),
            Idempotency::Idempotent,
        )
        .await?;
        Ok(())
    }

    /// As [`GraphClient::set_mail`], spending a slot the caller already took from the limiter,
    /// so that the caller can check the tenant pause between the wait and the write.
    pub async fn set_mail_in_slot(
        &self,
        slot: WriteSlot,
        user_id: &str,
        email: &str,
    ) -> Result<(), GraphError> {
        let url = format!("{}/users/{}", self.inner.base, encode_path_segment(user_id));
        let body = serde_json::to_vec(&serde_json::json!({ "mail": email }))
            .expect("a JSON object of strings serialises");
        self.execute_with_slot(
            Some(slot),
            GraphCall::PatchUser,
            Method::PATCH,
            &url,
            Some(body),
            Idempotency::Idempotent,
        )
        .await?;
        Ok(())
    }

    /// `POST /invitations` with `resetRedemption: true`. Paced by the write limiter.
    ///
    /// Repeated only when Graph certainly did not process it (no connection, or a
    /// short 429). After a timeout, a lost connection or a 5xx it returns an
    /// [`ErrorClass::Ambiguous`](super::ErrorClass::Ambiguous) error and never POSTs
    /// again: the caller must look for evidence before deciding (API.md 3.3).
    pub async fn reset_redemption(
        &self,
        req: &ResetRedemptionRequest,
    ) -> Result<Invitation, GraphError> {
        self.post_invitation(None, req).await
    }

    /// As [`GraphClient::reset_redemption`], spending a slot the caller already took from the
    /// limiter for the first attempt, so that the wait happens before the caller records that
    /// the request is about to be sent.
    pub async fn reset_redemption_in_slot(
        &self,
        slot: WriteSlot,
        req: &ResetRedemptionRequest,
    ) -> Result<Invitation, GraphError> {
        self.post_invitation(Some(slot), req).await
    }

    async fn post_invitation(
        &self,
        slot: Option<WriteSlot>,
        req: &ResetRedemptionRequest,
    ) -> Result<Invitation, GraphError> {
        const CALL: GraphCall = GraphCall::PostInvitation;
        let url = format!("{}/invitations", self.inner.base);
        let body = serde_json::to_vec(req).expect("the request serialises");
        let answer = self
            .execute_with_slot(
                slot,
                CALL,
                Method::POST,
                &url,
                Some(body),
                Idempotency::NotIdempotent,
            )
            .await?;
        let wire: InvitationWire = decode(CALL, &answer)?;
        let invitation = Invitation::from(wire);
        info!(
            call = CALL.as_str(),
            invitation_id = %invitation.id,
            redeem_status = %invitation.status,
            client_request_id = %answer.client_request_id,
            request_id = answer.request_id.as_deref().unwrap_or(""),
            "invitation issued"
        );
        Ok(invitation)
    }

    /// Attempts `call` until it succeeds or the retry policy gives up.
    async fn execute(
        &self,
        call: GraphCall,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        idempotency: Idempotency,
    ) -> Result<Answer, GraphError> {
        self.execute_with_slot(None, call, method, url, body, idempotency)
            .await
    }

    /// As `execute`; a write's first attempt spends `slot` instead of waiting on the limiter.
    async fn execute_with_slot(
        &self,
        mut slot: Option<WriteSlot>,
        call: GraphCall,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        idempotency: Idempotency,
    ) -> Result<Answer, GraphError> {
        let policy = self.inner.settings.retry;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            if call.is_write() && slot.take().is_none() {
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
            let mut err = match self
                .attempt(call, method.clone(), url, body.as_deref(), attempts)
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(err) => err,
            };
            err.attempts = attempts;
            let class = err.class();
            match policy.decide_for(attempts, &err, idempotency, rand::random::<f64>()) {
                Retry::After(delay) => {
                    info!(
                        call = call.as_str(),
                        attempt = attempts,
                        class = ?class,
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
        let with_id = |mut e: GraphError| {
            e.client_request_id = Some(client_request_id.clone());
            e
        };

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
                let latency_ms = started.elapsed().as_millis() as u64;
                let detail = error_chain(&e.without_url());
                warn!(
                    call = call.as_str(),
                    attempt,
                    latency_ms,
                    client_request_id = %client_request_id,
                    failure = ?kind,
                    error = %detail,
                    "Graph call got no answer"
                );
                return Err(with_id(GraphError::new(call, kind, detail)));
            }
        };

        let status = response.status().as_u16();
        let request_id = header(response.headers(), "request-id");
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let read = response.bytes().await;
        self.observe(call, Some(status), started.elapsed());
        let latency_ms = started.elapsed().as_millis() as u64;
        let log_answer = |level_warn: bool| {
            let request_id = request_id.as_deref().unwrap_or("");
            if level_warn {
                warn!(call = call.as_str(), attempt, status, latency_ms, request_id, client_request_id = %client_request_id, "Graph call failed");
            } else {
                info!(call = call.as_str(), attempt, status, latency_ms, request_id, client_request_id = %client_request_id, "Graph call");
            }
        };
        let success = (200..300).contains(&status);
        match read {
            Ok(bytes) if success => {
                log_answer(false);
                Ok(Answer {
                    status,
                    body: bytes.to_vec(),
                    request_id,
                    client_request_id,
                })
            }
            Ok(bytes) => {
                log_answer(true);
                Err(with_id(GraphError::from_response(
                    call,
                    status,
                    &bytes,
                    request_id,
                    retry_after,
                )))
            }
            Err(e) if success => {
                // Graph said yes but the body was lost: it happened, we cannot see what.
                let kind = transport_failure(&e);
                let detail = error_chain(&e.without_url());
                warn!(call = call.as_str(), attempt, status, latency_ms, client_request_id = %client_request_id, error = %detail, "Graph answer lost while reading");
                let mut err = GraphError::new(call, kind, detail);
                err.status = Some(status);
                err.request_id = request_id;
                Err(with_id(err))
            }
            Err(_) => {
                log_answer(true);
                Err(with_id(GraphError::from_response(
                    call,
                    status,
                    b"",
                    request_id,
                    retry_after,
                )))
            }
        }
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

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
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

fn decode<T: DeserializeOwned>(call: GraphCall, answer: &Answer) -> Result<T, GraphError> {
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
    fn error_chain_joins_sources_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(inner);
        assert_eq!(error_chain(&outer), "refused");
    }
}
