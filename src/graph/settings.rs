//! Where Graph is and how to talk to it: [`GraphSettings`], its defaults and its
//! builder methods, including the bounds on what Graph sends (`Retry-After`, body
//! size; docs/graph.md). Apart from the client: settings are plain values, built from
//! the configuration before any client exists.

use super::retry::RetryPolicy;
use std::time::Duration;

pub const DEFAULT_GRAPH_ENDPOINT: &str = "https://graph.microsoft.com";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `Retry-After` believed: the default tenant cool-down (docs/graph.md).
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The largest answer body read: Graph's answers here are a few kilobytes; a page of
/// 100 users with every selected property stays far below it.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

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
}
