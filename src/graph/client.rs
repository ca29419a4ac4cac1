//! The Graph client: the four calls of the Graph contract (docs/graph.md). Reads and the
//! `mail` PATCH are retried inside; the invitation POST is sent exactly once per call.

use super::credential;
use super::error::{FailureKind, GraphCall, GraphError};
use super::limiter::{WriteLimiter, WriteSlot};
use super::model::{
    DirectoryUser, Invitation, InvitationWire, ResetRedemptionRequest, USER_SELECT, UserPage,
};
use super::observer::GraphObserver;
use super::query::{email_in_use_filter, encode_path_segment, encode_query_value, mail_filter};
use super::response::{
    Answer, decode, error_chain, interpret, invalid_answer, read_capped, transport_failure,
};
use super::retry::{Idempotency, Retry};
use super::settings::GraphSettings;
use crate::fence::WriteFence;
use azure_core::credentials::TokenCredential;
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// The migration's advanced query: every user of a mail domain, page by page.
pub mod domain;
/// The follow-through's single-attempt read.
mod once;
/// What `guestreset check` asks of Graph: the token's roles and one cheap read.
mod probe;

/// A guard against a server that keeps handing out next links.
const MAX_PAGES: usize = 50;

/// An access token in hand, as the `Authorization` header (marked sensitive: no debug output
/// shows it).
#[derive(Clone)]
pub struct Authorization(HeaderValue);

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authorization(..)")
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
    /// Checked right before each write leaves: a leader past its renew deadline sends none.
    fence: WriteFence,
}

impl fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphClient")
            .field("endpoint", &self.inner.settings.endpoint)
            .field("scope", &self.inner.settings.scope)
            .finish_non_exhaustive()
    }
}

/// One HTTP request to Graph as an attempt sends it; `extra` are headers beyond the usual ones
/// (the advanced query's `ConsistencyLevel: eventual`).
struct Request<'a> {
    call: GraphCall,
    method: Method,
    url: &'a str,
    body: Option<&'a [u8]>,
    extra: &'a [(&'static str, &'static str)],
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
                fence: WriteFence::open(),
            }),
        }
    }

    /// Reports every request and limiter wait to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn GraphObserver>) -> Self {
        Arc::make_mut(&mut self.inner).observer = Some(observer);
        self
    }

    /// Sends writes only while `fence` allows them (docs/design.md, "Leader election").
    pub fn with_write_fence(mut self, fence: WriteFence) -> Self {
        Arc::make_mut(&mut self.inner).fence = fence;
        self
    }

    /// The fence this client checks before each write.
    pub fn write_fence(&self) -> &WriteFence {
        &self.inner.fence
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
        let auth = self.authorization(GraphCall::PatchUser).await?;
        self.send_once(
            slot,
            auth,
            GraphCall::PatchUser,
            Method::PATCH,
            &url,
            Some(body),
        )
        .await?;
        Ok(())
    }

    fn mail_patch(&self, user_id: &str, email: &str) -> (String, Vec<u8>) {
        let url = format!("{}/users/{}", self.inner.base, encode_path_segment(user_id));
        let body = serde_json::to_vec(&serde_json::json!({ "mail": email }))
            .expect("a JSON object of strings serialises");
        (url, body)
    }

    /// `POST /invitations` with `resetRedemption: true`: waits for a write slot and a token,
    /// then as [`GraphClient::reset_redemption_sending`].
    pub async fn reset_redemption(
        &self,
        req: &ResetRedemptionRequest,
    ) -> Result<Invitation, GraphError> {
        let (slot, waited) = self.inner.limiter.take_slot().await;
        self.observe_limiter_wait(waited);
        tokio::time::sleep_until(slot.usable_from()).await;
        let auth = self.post_authorization().await?;
        self.reset_redemption_sending(slot, auth, req).await
    }

    /// The access token of the POST, fetched before its sending mark, so that nothing but
    /// the HTTP call stands between the mark and the request (docs/design.md, "The sending
    /// window").
    pub async fn post_authorization(&self) -> Result<Authorization, GraphError> {
        self.authorization(GraphCall::PostInvitation)
            .await
            .map(Authorization)
    }

    /// `POST /invitations` with `resetRedemption: true`, spending a slot the caller
    /// already took from the limiter with a token it already holds, in exactly **one** HTTP
    /// attempt and without any wait before it.
    ///
    /// Never repeated here, not even after a 429 or a failure to connect: the caller
    /// records when the POST is sent (`attempt.postStartedAt`) and counts the
    /// replication window from that moment, so a resend must go through the caller,
    /// which marks it first. Every failure comes back classified: `Throttled`,
    /// `TransientBeforeSend`, `Definite`, `AbuseBlocked`, or `Ambiguous` (a timeout, a
    /// lost connection, a 5xx, or a success answer that could not be read), after which
    /// the caller must look for evidence before deciding (docs/graph.md).
    pub async fn reset_redemption_sending(
        &self,
        slot: WriteSlot,
        auth: Authorization,
        req: &ResetRedemptionRequest,
    ) -> Result<Invitation, GraphError> {
        const CALL: GraphCall = GraphCall::PostInvitation;
        let url = format!("{}/invitations", self.inner.base);
        let body = serde_json::to_vec(req).expect("the request serialises");
        let answer = self
            .send_once(slot, auth.0, CALL, Method::POST, &url, Some(body))
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

    /// One attempt of a write whose slot and token the caller holds: the slot is spent as
    /// the request leaves.
    async fn send_once(
        &self,
        slot: WriteSlot,
        auth: HeaderValue,
        call: GraphCall,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, GraphError> {
        slot.spend(Instant::now());
        let request = Request {
            call,
            method,
            url,
            body: body.as_deref(),
            extra: &[],
        };
        self.attempt_with(auth, request, 1)
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
        self.execute_with(call, method, url, body, &[]).await
    }

    /// As [`GraphClient::execute`], with `extra` headers on every attempt.
    async fn execute_with(
        &self,
        call: GraphCall,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        extra: &[(&'static str, &'static str)],
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
                .attempt(call, method.clone(), url, body.as_deref(), attempts, extra)
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

    /// One HTTP attempt with a token fetched for it.
    async fn attempt(
        &self,
        call: GraphCall,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        attempt: u32,
        extra: &[(&'static str, &'static str)],
    ) -> Result<Answer, GraphError> {
        // A token failure never reached Graph: no client-request-id to quote.
        let auth = self.authorization(call).await?;
        let request = Request {
            call,
            method,
            url,
            body,
            extra,
        };
        self.attempt_with(auth, request, attempt).await
    }

    /// One HTTP attempt, with a fresh `client-request-id`.
    async fn attempt_with(
        &self,
        auth: HeaderValue,
        request: Request<'_>,
        attempt: u32,
    ) -> Result<Answer, GraphError> {
        let Request {
            call,
            method,
            url,
            body,
            extra,
        } = request;
        let inner = &*self.inner;
        let client_request_id = uuid::Uuid::new_v4().to_string();

        // The last moment before the write leaves: nothing may wait between here and Graph.
        if call.is_write() && !inner.fence.allows_now() {
            warn!(
                call = call.as_str(),
                "not sent: this process is past its leader renew deadline"
            );
            return Err(GraphError::new(
                call,
                FailureKind::Fenced,
                "the leader Lease was not renewed in time",
            ));
        }
        let mut request = inner
            .http
            .request(method, url)
            .timeout(inner.settings.timeout)
            .header(AUTHORIZATION, auth)
            .header("client-request-id", &client_request_id)
            .header("return-client-request-id", "true")
            .header(ACCEPT, "application/json");
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
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
