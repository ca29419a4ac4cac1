//! Responses in the shapes Graph and Entra use.

use crate::state::{now_inner_error_date, now_rfc3339};
use serde_json::{Value, json};

pub(crate) const GRAPH_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";
pub(crate) const PLAIN_JSON: &str = "application/json; charset=utf-8";

/// Per-request identifiers Graph echoes in headers and error bodies.
pub(crate) struct Ctx {
    pub request_id: String,
    /// The caller's `client-request-id`, or the request id when none was sent (as Graph does).
    pub client_request_id: String,
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Option<(Vec<u8>, &'static str)>,
    pub headers: Vec<(&'static str, String)>,
    /// What changed in the directory.
    pub effect: Option<String>,
}

impl Reply {
    pub fn json(status: u16, value: &Value) -> Self {
        Reply {
            status,
            body: Some((value.to_string().into_bytes(), GRAPH_JSON)),
            headers: Vec::new(),
            effect: None,
        }
    }

    pub fn plain_json(status: u16, value: &Value) -> Self {
        Reply {
            status,
            body: Some((value.to_string().into_bytes(), PLAIN_JSON)),
            headers: Vec::new(),
            effect: None,
        }
    }

    pub fn no_content() -> Self {
        Reply {
            status: 204,
            body: None,
            headers: Vec::new(),
            effect: None,
        }
    }

    /// `{"error":{"code","message","innerError":{...}}}`
    pub fn graph_error(ctx: &Ctx, status: u16, code: &str, message: &str) -> Self {
        let body = json!({
            "error": {
                "code": code,
                "message": message,
                "innerError": {
                    "date": now_inner_error_date(),
                    "request-id": ctx.request_id,
                    "client-request-id": ctx.client_request_id,
                }
            }
        });
        Reply::json(status, &body)
    }

    /// Entra's OAuth error body (what azure_identity parses: `error_codes`, `error_description`).
    pub fn entra_error(
        ctx: &Ctx,
        status: u16,
        error: &str,
        aadsts: u32,
        description: &str,
    ) -> Self {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let timestamp = now_rfc3339();
        let body = json!({
            "error": error,
            "error_description": format!(
                "AADSTS{aadsts}: {description} Trace ID: {trace_id} Correlation ID: {} Timestamp: {timestamp}",
                ctx.client_request_id
            ),
            "error_codes": [aadsts],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": ctx.client_request_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={aadsts}"),
        });
        Reply::plain_json(status, &body)
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_effect(mut self, effect: impl Into<String>) -> Self {
        self.effect = Some(effect.into());
        self
    }
}

/// Graph's answers to injected 5xx.
pub(crate) fn server_error(ctx: &Ctx, status: u16) -> Reply {
    let (code, message) = match status {
        500 => ("generalException", "An unexpected error occurred."),
        502 => ("BadGateway", "Bad gateway."),
        503 => (
            "serviceNotAvailable",
            "The service is temporarily unavailable. Please retry later.",
        ),
        504 => (
            "GatewayTimeout",
            "The gateway did not receive a response in time.",
        ),
        _ => ("UnknownError", ""),
    };
    Reply::graph_error(ctx, status, code, message)
}
