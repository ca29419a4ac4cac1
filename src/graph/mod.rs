//! Microsoft Graph: the controller's only way to change the directory.
//!
//! - [`GraphClient`]: the four calls of docs/graph.md, each HTTP attempt with a fresh
//!   `client-request-id`, logged with its status, latency and Graph's `request-id`
//!   (never the token, the redeem URL or the invitation body).
//! - [`GraphError::class`]: what a failure means for the directory — refused
//!   ([`ErrorClass::Definite`]), tenant blocked ([`ErrorClass::AbuseBlocked`]), throttled,
//!   nothing sent ([`ErrorClass::TransientBeforeSend`]), or may have happened
//!   ([`ErrorClass::Ambiguous`]).
//! - [`RetryPolicy`]: reads and the `mail` PATCH are repeated inside the client; the
//!   invitation POST never is: one HTTP attempt per call, the caller resends.
//! - Values from Graph are bounded before use: `Retry-After` is capped
//!   ([`GraphSettings::max_retry_after`]), bodies are read up to
//!   [`GraphSettings::max_body_bytes`], and Graph's code and message are truncated.
//! - [`WriteLimiter`]: the process-wide pace of writes.
//! - [`credential`]: the Azure credential from the standard environment variables.
//! - [`http`]: the one HTTP client, trusting the system roots plus `SSL_CERT_FILE`.

pub mod claims;
pub(crate) mod client;
pub mod credential;
mod error;
#[cfg(test)]
mod fuzz;
pub mod http;
mod limiter;
mod model;
mod observer;
pub mod query;
mod response;
mod retry;
mod settings;

pub use client::domain::{DOMAIN_PAGE_SIZE, DomainListing, domain_filter};
pub use client::{Authorization, GraphClient};
pub use credential::{CredentialError, CredentialKind};
pub use error::{
    ErrorClass, FailureKind, GraphCall, GraphError, GraphErrorDetails, MAX_CODE_CHARS,
    MAX_DETAIL_CHARS, MAX_ERROR_TEXT_CHARS, MAX_ID_CHARS, MAX_MESSAGE_CHARS, parse_retry_after,
};
pub use limiter::{
    Admission, LATE, ReadBudget, SHORT_WAIT, TokenBucket, Turn, TurnKey, WriteLimiter, WriteSlot,
    check_windows, check_windows_within,
};
pub use model::{
    DirectoryUser, Invitation, InvitationMessage, RedeemUrl, ResetRedemptionRequest, USER_SELECT,
};
pub use observer::GraphObserver;
pub use retry::{Idempotency, Retry, RetryPolicy};
pub use settings::{
    DEFAULT_GRAPH_ENDPOINT, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_RETRY_AFTER, DEFAULT_TIMEOUT,
    GraphSettings,
};
