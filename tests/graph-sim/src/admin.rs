//! Client of the `/_sim/` admin API, usable from the test process or any other.

use crate::model::{
    AssertionClaims, Call, FaultRule, Hazard, InvitationRecord, JournalEntry, Secrets, SeedUser,
    Settings,
};
use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct AdminClient {
    base_url: String,
    http: reqwest::Client,
}

/// A reqwest client that trusts only the given CA (PEM) and never uses a proxy.
pub fn client_trusting(ca_pem: &[u8]) -> Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(ca_pem).context("parsing the CA certificate")?;
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

impl AdminClient {
    /// For another process: the simulator's base URL and the `ca.pem` it wrote.
    pub fn new(base_url: &str, ca_pem: &Path) -> Result<Self> {
        let pem = std::fs::read(ca_pem).with_context(|| format!("reading {}", ca_pem.display()))?;
        Self::from_ca_pem(base_url, &pem)
    }

    pub fn from_ca_pem(base_url: &str, ca_pem: &[u8]) -> Result<Self> {
        Ok(AdminClient {
            base_url: base_url.trim_end_matches('/').to_string(),
            http: client_trusting(ca_pem)?,
        })
    }

    /// The underlying HTTP client (trusts the simulator's CA), handy for driving Graph directly.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn url(&self, path: &str) -> String {
        format!("{}/_sim/{path}", self.base_url)
    }

    async fn check(response: reqwest::Response) -> Result<reqwest::Response> {
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("admin API answered {status}: {body}");
        }
        Ok(response)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let response = self.http.get(self.url(path)).send().await?;
        Ok(Self::check(response).await?.json().await?)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        Ok(Self::check(request.send().await?).await?.json().await?)
    }

    pub async fn journal(&self) -> Result<Vec<JournalEntry>> {
        self.get("journal").await
    }

    /// Journal entries of `POST /v1.0/invitations` (whatever their outcome).
    pub async fn invitation_posts(&self) -> Result<Vec<JournalEntry>> {
        Ok(self
            .journal()
            .await?
            .into_iter()
            .filter(|e| e.call == Call::PostInvitation)
            .collect())
    }

    pub async fn hazards(&self) -> Result<Vec<Hazard>> {
        self.get("hazards").await
    }

    /// Invitations the simulator accepted, with what was asked (no redeem URLs).
    pub async fn invitations(&self) -> Result<Vec<InvitationRecord>> {
        self.get("invitations").await
    }

    /// Claims of the client assertions presented to the token endpoint.
    pub async fn client_assertions(&self) -> Result<Vec<AssertionClaims>> {
        self.get("assertions").await
    }

    /// The user by id or UPN, whether or not Graph reads can see it yet.
    pub async fn user(&self, id: &str) -> Result<Option<SeedUser>> {
        let encoded = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
        let response = self
            .http
            .get(self.url(&format!("users/{encoded}")))
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(Self::check(response).await?.json().await?))
    }

    /// Changes the user as someone other than the client under test would (not journaled):
    /// `change` is `redeem`, `reset` or `member`; returns the user afterwards.
    async fn change_user(&self, id: &str, change: &str) -> Result<SeedUser> {
        let encoded = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
        let value = self
            .send(
                reqwest::Method::POST,
                &format!("users/{encoded}/{change}"),
                None,
            )
            .await?;
        Ok(serde_json::from_value(value)?)
    }

    /// The guest redeems: `externalUserState` becomes `Accepted`, its change time now.
    pub async fn redeem(&self, id: &str) -> Result<SeedUser> {
        self.change_user(id, "redeem").await
    }

    /// A redemption reset by someone else: `externalUserState` becomes `PendingAcceptance`, its
    /// change time now; no journal entry and no invitation record.
    pub async fn foreign_reset(&self, id: &str) -> Result<SeedUser> {
        self.change_user(id, "reset").await
    }

    /// Someone converts the user into an internal member (`userType: Member`); nothing else
    /// about the user changes.
    pub async fn convert_to_member(&self, id: &str) -> Result<SeedUser> {
        self.change_user(id, "member").await
    }

    pub async fn users(&self) -> Result<Vec<SeedUser>> {
        self.get("users").await
    }

    /// Adds the user, or replaces the one with the same id (its visibility delay restarts).
    pub async fn put_user(&self, user: &SeedUser) -> Result<()> {
        self.send(
            reqwest::Method::POST,
            "users",
            Some(serde_json::to_value(user)?),
        )
        .await
        .map(drop)
    }

    /// Appends a rule after the existing ones.
    pub async fn add_fault(&self, rule: FaultRule) -> Result<()> {
        self.send(
            reqwest::Method::POST,
            "faults",
            Some(serde_json::to_value(rule)?),
        )
        .await
        .map(drop)
    }

    pub async fn faults(&self) -> Result<Vec<FaultRule>> {
        self.get("faults").await
    }

    pub async fn clear_faults(&self) -> Result<()> {
        self.send(reqwest::Method::DELETE, "faults", None)
            .await
            .map(drop)
    }

    /// Lets every response held by `HangAfter` go.
    pub async fn release_held(&self) -> Result<()> {
        self.send(reqwest::Method::POST, "release", None)
            .await
            .map(drop)
    }

    /// How many responses `HangAfter` holds right now.
    pub async fn held_count(&self) -> Result<u64> {
        let v: Value = self.get("held").await?;
        v["held"].as_u64().context("held count missing")
    }

    pub async fn settings(&self) -> Result<Settings> {
        self.get("settings").await
    }

    /// A fixed latency of `d` on every Graph response (no spread).
    pub async fn set_latency(&self, d: Duration) -> Result<()> {
        self.put_settings(json!({ "latency_ms": d.as_millis() as u64, "latency_spread_ms": 0 }))
            .await
    }

    /// Reads show a `POST /invitations`' effect on the user's redemption state only `d` later.
    pub async fn set_evidence_delay(&self, d: Duration) -> Result<()> {
        self.put_settings(json!({ "evidence_delay_ms": d.as_millis() as u64 }))
            .await
    }

    /// `Retry-After: seconds` on every 503 Graph answer; `None` for none.
    pub async fn set_retry_after_on_503(&self, seconds: Option<u64>) -> Result<()> {
        self.put_settings(json!({ "retry_after_on_503": seconds }))
            .await
    }

    async fn put_settings(&self, patch: Value) -> Result<()> {
        self.send(reqwest::Method::PUT, "settings", Some(patch))
            .await
            .map(drop)
    }

    /// Tokens issued from now on carry no `roles` claim (no application permission granted).
    pub async fn set_tokens_without_roles(&self, without: bool) -> Result<()> {
        self.send(
            reqwest::Method::PUT,
            "settings",
            Some(json!({ "tokens_without_roles": without })),
        )
        .await
        .map(drop)
    }

    pub async fn set_mail_propagation(&self, d: Duration) -> Result<()> {
        self.send(
            reqwest::Method::PUT,
            "settings",
            Some(json!({ "mail_propagation_ms": d.as_millis() as u64 })),
        )
        .await
        .map(drop)
    }

    /// Number of access tokens handed out so far.
    pub async fn tokens_issued(&self) -> Result<u64> {
        let v: Value = self.get("tokens/count").await?;
        v["count"].as_u64().context("token count missing")
    }

    /// Makes every token issued so far expired (Graph answers 401 until a new one is fetched).
    pub async fn expire_tokens(&self) -> Result<()> {
        self.send(reqwest::Method::POST, "tokens/expire", None)
            .await
            .map(drop)
    }

    /// Every access token and `inviteRedeemUrl` handed out, so tests can check logs for leaks.
    pub async fn issued_tokens_and_redeem_urls(&self) -> Result<Secrets> {
        self.get("secrets").await
    }
}
