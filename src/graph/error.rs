//! Graph failures, classified by what they tell about the directory: whether the
//! request took effect, may have, or certainly did not.

use super::model::GraphErrorBody;
use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime};

/// Graph's `error.code` is kept to this many characters.
pub const MAX_CODE_CHARS: usize = 128;
/// Graph's `error.message` is kept to this many characters: the controller copies error
/// text into status and Events, which must stay small whatever Graph (or a proxy) sends.
pub const MAX_MESSAGE_CHARS: usize = 512;
/// A transport, decoding or credential detail is kept to this many characters (a decoding
/// error can quote the body it choked on).
pub const MAX_DETAIL_CHARS: usize = 1024;
/// `request-id` and `client-request-id` are kept to this many characters (a UUID has 36).
pub const MAX_ID_CHARS: usize = 128;
/// No [`GraphError`] displays longer than this many characters: the field bounds above,
/// plus under 200 for the call, the status, `Retry-After`, the attempts and the fixed words.
pub const MAX_ERROR_TEXT_CHARS: usize =
    MAX_CODE_CHARS + MAX_MESSAGE_CHARS + MAX_DETAIL_CHARS + 2 * MAX_ID_CHARS + 200;

/// Which Graph call failed. The names are metric labels and log fields: keep them stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::VariantArray)]
pub enum GraphCall {
    /// `GET /users/{id or upn}`
    #[strum(serialize = "GET /users/{id}")]
    GetUser,
    /// `GET /users?$filter=...`
    #[strum(serialize = "GET /users")]
    ListUsers,
    /// `PATCH /users/{id}` setting `mail`
    #[strum(serialize = "PATCH /users/{id}")]
    PatchUser,
    /// `POST /invitations`
    #[strum(serialize = "POST /invitations")]
    PostInvitation,
}

impl GraphCall {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Writes are paced by the [`WriteLimiter`](super::WriteLimiter).
    pub fn is_write(self) -> bool {
        matches!(self, GraphCall::PatchUser | GraphCall::PostInvitation)
    }
}

// Not strum's Display: it reads `{id}` as a placeholder.
impl fmt::Display for GraphCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a failure means for the directory, and so what is safe to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Graph refused the request (a 4xx other than 429), or no token can be had at all:
    /// nothing happened, and repeating the same request will not help.
    Definite,
    /// Graph's abuse protection blocked invitations for the tenant (403 "Invitations are
    /// blocked for this directory due to suspicious activity"). Nothing happened; do not
    /// try again for a long while.
    AbuseBlocked,
    /// 429: not processed. Try again after `retry_after` when Graph said so.
    Throttled { retry_after: Option<Duration> },
    /// Nothing reached Graph (connect, DNS or TLS failure, or a token that could not be
    /// had for now). Safe to repeat.
    TransientBeforeSend,
    /// The request may have taken effect: a timeout or lost connection after sending, a
    /// 5xx, or a success answer that could not be read.
    Ambiguous,
}

/// How the failure came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// Graph answered with an error status; see `status`, `code`, `message`.
    Status,
    /// No connection could be made (DNS, TCP connect, TLS handshake).
    Connect,
    /// No complete answer within the request timeout, after the request may have been sent.
    Timeout,
    /// The connection failed after the request may have been sent.
    ConnectionLost,
    /// Graph answered with a success status, but its body could not be read or decoded.
    InvalidResponse,
    /// No access token could be acquired. `transient`: the token service or the network
    /// failed for now; otherwise the credential itself is wrong or unusable.
    Credential { transient: bool },
    /// Not sent: this process is past its leader renew deadline (docs/design.md, "Leader
    /// election") and sends no write until it stands by again.
    Fenced,
}

/// A failed Graph call, with everything needed to report it and decide what is safe.
/// Its fields are those of [`GraphErrorDetails`] (through `Deref`), boxed so that
/// results carrying it stay small.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Described(self))]
pub struct GraphError(Box<GraphErrorDetails>);

/// What is known about a failed Graph call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphErrorDetails {
    pub call: GraphCall,
    pub kind: FailureKind,
    /// HTTP status, when Graph answered.
    pub status: Option<u16>,
    /// Graph's `error.code`.
    pub code: Option<String>,
    /// Graph's `error.message`.
    pub message: Option<String>,
    /// Transport or credential detail, when Graph did not answer.
    pub detail: Option<String>,
    /// Graph's `request-id` (response header, else `innerError.request-id`).
    pub request_id: Option<String>,
    /// The `client-request-id` this client sent with the last attempt.
    pub client_request_id: Option<String>,
    /// The `Retry-After` Graph sent with a 429 or 503.
    pub retry_after: Option<Duration>,
    /// HTTP attempts made, including the failed last one (0 when no attempt could start).
    pub attempts: u32,
}

struct Described<'a>(&'a GraphError);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        describe(self.0, f)
    }
}

fn describe(e: &GraphError, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "{}: ", e.call)?;
    let status = e.status.unwrap_or_default();
    match &e.kind {
        FailureKind::Status => {
            write!(f, "Graph answered HTTP {status}")?;
            if let Some(code) = &e.code {
                write!(f, " {}", Clipped(code, MAX_CODE_CHARS))?;
            }
            if let Some(message) = &e.message {
                write!(f, ": {}", Clipped(message, MAX_MESSAGE_CHARS))?;
            }
        }
        FailureKind::Connect => f.write_str("could not connect to Graph (nothing was sent)")?,
        FailureKind::Timeout => {
            f.write_str("no answer within the timeout (the request may have taken effect)")?
        }
        FailureKind::ConnectionLost => {
            f.write_str("connection lost (the request may have taken effect)")?
        }
        FailureKind::InvalidResponse => write!(
            f,
            "HTTP {status} with an unreadable body (the request may have taken effect)"
        )?,
        FailureKind::Credential { transient: true } => {
            f.write_str("could not get an access token for now")?
        }
        FailureKind::Credential { transient: false } => {
            f.write_str("the Azure credential cannot get an access token")?
        }
        FailureKind::Fenced => {
            f.write_str("not sent, this process is past its leader renew deadline")?
        }
    }
    if let Some(detail) = &e.detail {
        write!(f, ": {}", Clipped(detail, MAX_DETAIL_CHARS))?;
    }
    if let Some(retry_after) = e.retry_after {
        write!(f, " (retry after {}s)", retry_after.as_secs_f64())?;
    }
    let ids: Vec<String> = [
        e.request_id
            .as_ref()
            .map(|id| format!("request-id {}", Clipped(id, MAX_ID_CHARS))),
        e.client_request_id
            .as_ref()
            .map(|id| format!("client-request-id {}", Clipped(id, MAX_ID_CHARS))),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !ids.is_empty() {
        write!(f, " [{}]", ids.join(", "))?;
    }
    if e.attempts > 1 {
        write!(f, " after {} attempts", e.attempts)?;
    }
    Ok(())
}

/// Writes at most `.1` characters of `.0`, unsafe characters as spaces, with `…` marking
/// a cut. The fields are bounded when the error is made; this keeps the Display bounded
/// even for a field set afterwards.
struct Clipped<'a>(&'a str, usize);

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Clipped(text, max) = *self;
        let cut = text.chars().count() > max;
        let keep = if cut { max.saturating_sub(1) } else { max };
        for c in text.chars().take(keep) {
            f.write_char(if is_unsafe(c) { ' ' } else { c })?;
        }
        if cut && max > 0 {
            f.write_char('…')?;
        }
        Ok(())
    }
}

/// Control characters, and the bidirectional overrides that make text display other than
/// it reads: neither belongs in a status message or an Event.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` bounded for display in status, Events and logs: see [`Clipped`].
pub(crate) fn bounded(text: &str, max_chars: usize) -> String {
    Clipped(text, max_chars).to_string()
}

impl std::ops::Deref for GraphError {
    type Target = GraphErrorDetails;
    fn deref(&self) -> &GraphErrorDetails {
        &self.0
    }
}

impl std::ops::DerefMut for GraphError {
    fn deref_mut(&mut self) -> &mut GraphErrorDetails {
        &mut self.0
    }
}

impl From<GraphErrorDetails> for GraphError {
    fn from(details: GraphErrorDetails) -> Self {
        GraphError(Box::new(details))
    }
}

const ABUSE_BLOCK_MARKER: &str = "suspicious activity";
const EMAIL_NOT_ON_USER_MARKER: &str = "match any emails on the user object";

impl GraphError {
    /// An error of `kind` without an HTTP answer.
    pub fn new(call: GraphCall, kind: FailureKind, detail: impl Into<String>) -> Self {
        GraphError::from(GraphErrorDetails {
            call,
            kind,
            status: None,
            code: None,
            message: None,
            detail: Some(bounded(&detail.into(), MAX_DETAIL_CHARS)),
            request_id: None,
            client_request_id: None,
            retry_after: None,
            attempts: 0,
        })
    }

    /// An error answer from Graph: its status, `Retry-After` (already capped, see
    /// [`parse_retry_after`]) and body. Graph's code and message are bounded here, since
    /// they end up in status and Events.
    pub fn from_response(
        call: GraphCall,
        status: u16,
        body: &[u8],
        request_id: Option<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        let parsed: GraphErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let inner_request_id = parsed.error.inner_error.and_then(|i| i.request_id);
        let message = parsed.error.message.or_else(|| body_excerpt(body));
        GraphError::from(GraphErrorDetails {
            call,
            kind: FailureKind::Status,
            status: Some(status),
            code: parsed.error.code.map(|c| bounded(&c, MAX_CODE_CHARS)),
            message: message.map(|m| bounded(&m, MAX_MESSAGE_CHARS)),
            detail: None,
            request_id: request_id
                .or(inner_request_id)
                .map(|id| bounded(&id, MAX_ID_CHARS)),
            client_request_id: None,
            retry_after,
            attempts: 0,
        })
    }

    /// What this failure means for the directory.
    pub fn class(&self) -> ErrorClass {
        match &self.kind {
            FailureKind::Status => match self.status.unwrap_or_default() {
                429 => ErrorClass::Throttled {
                    retry_after: self.retry_after,
                },
                403 if self.message_contains(ABUSE_BLOCK_MARKER) => ErrorClass::AbuseBlocked,
                // 408: the server gave up waiting while reading the request; whether it
                // acted on a part of it is not known.
                408 => ErrorClass::Ambiguous,
                400..=499 => ErrorClass::Definite,
                _ => ErrorClass::Ambiguous,
            },
            FailureKind::Connect => ErrorClass::TransientBeforeSend,
            FailureKind::Timeout | FailureKind::ConnectionLost | FailureKind::InvalidResponse => {
                ErrorClass::Ambiguous
            }
            FailureKind::Credential { transient: true } => ErrorClass::TransientBeforeSend,
            FailureKind::Credential { transient: false } => ErrorClass::Definite,
            FailureKind::Fenced => ErrorClass::TransientBeforeSend,
        }
    }

    /// 404: the object does not exist (or is not yet replicated).
    pub fn is_not_found(&self) -> bool {
        self.kind == FailureKind::Status && self.status == Some(404)
    }

    /// 401/403 from Graph for a missing permission or a privileged target
    /// (not the abuse block, which has its own class).
    pub fn is_forbidden(&self) -> bool {
        self.kind == FailureKind::Status
            && matches!(self.status, Some(401 | 403))
            && self.class() != ErrorClass::AbuseBlocked
    }

    /// Graph's 400 "The email you're using to invite this user doesn't match any emails
    /// on the user object".
    pub fn is_email_not_on_user(&self) -> bool {
        self.kind == FailureKind::Status
            && self.status == Some(400)
            && self.message_contains(EMAIL_NOT_ON_USER_MARKER)
    }

    /// Invitations are blocked for the tenant by Graph's abuse protection.
    pub fn is_abuse_blocked(&self) -> bool {
        self.class() == ErrorClass::AbuseBlocked
    }

    /// 429.
    pub fn is_throttled(&self) -> bool {
        matches!(self.class(), ErrorClass::Throttled { .. })
    }

    /// The token could not be acquired (the request never reached Graph).
    pub fn is_credential(&self) -> bool {
        matches!(self.kind, FailureKind::Credential { .. })
    }

    /// Whether the request may have taken effect.
    pub fn may_have_taken_effect(&self) -> bool {
        self.class() == ErrorClass::Ambiguous
    }

    fn message_contains(&self, needle: &str) -> bool {
        self.message
            .as_deref()
            .is_some_and(|m| m.to_ascii_lowercase().contains(needle))
    }
}

/// A body that is not Graph's JSON (a proxy's page, say): a short excerpt of it. Only the
/// start is decoded, so a huge body costs no more than a small one.
fn body_excerpt(body: &[u8]) -> Option<String> {
    const EXCERPT_CHARS: usize = 300;
    // UTF-8 takes at most 4 bytes a character; a cut character decodes as U+FFFD.
    let head = &body[..body.len().min(EXCERPT_CHARS * 4)];
    let text = String::from_utf8_lossy(head);
    let text = text.trim();
    (!text.is_empty()).then(|| text.chars().take(EXCERPT_CHARS).collect())
}

/// `Retry-After` as delay-seconds or as an HTTP date (relative to `now`; a date in the
/// past means now), never more than `max`. Anything else is ignored.
///
/// The cap is what makes the value safe to use: Graph (or anything between it and us)
/// can send `18446744073709551615`, and a deadline computed from that overflows
/// `Instant` and timestamp arithmetic, which panics. A number too large for `u64` is
/// still "a very long time", so it becomes `max` too.
pub fn parse_retry_after(value: &str, now: SystemTime, max: Duration) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let after = if value.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(after.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;

    fn status_error(call: GraphCall, status: u16, body: &str) -> GraphError {
        GraphError::from_response(call, status, body.as_bytes(), None, None)
    }

    fn graph_body(code: &str, message: &str) -> String {
        serde_json::json!({"error": {"code": code, "message": message,
            "innerError": {"request-id": "req-inner", "client-request-id": "c"}}})
        .to_string()
    }

    #[test]
    fn four_xx_are_definite() {
        for status in [400, 401, 403, 404, 409, 412] {
            let e = status_error(
                GraphCall::PostInvitation,
                status,
                &graph_body("X", "refused"),
            );
            assert_eq!(e.class(), ErrorClass::Definite, "status {status}");
        }
    }

    #[test]
    fn not_found_is_told_apart() {
        let e = status_error(
            GraphCall::GetUser,
            404,
            &graph_body(
                "Request_ResourceNotFound",
                "Resource 'x' does not exist or one of its queried reference-property objects are not present.",
            ),
        );
        assert!(e.is_not_found());
        assert!(!e.is_forbidden());
        assert_eq!(e.code.as_deref(), Some("Request_ResourceNotFound"));
        assert_eq!(e.request_id.as_deref(), Some("req-inner"));
    }

    #[test]
    fn forbidden_and_unauthorized_are_told_apart_from_abuse() {
        let e401 = status_error(
            GraphCall::PostInvitation,
            401,
            &graph_body(
                "Authorization_RequestDenied",
                "Insufficient privileges to perform requested operation by the application '00000003'.",
            ),
        );
        assert!(e401.is_forbidden());
        let e403 = status_error(
            GraphCall::PatchUser,
            403,
            &graph_body("Forbidden", "Generic authorization exception."),
        );
        assert!(e403.is_forbidden());
        assert_eq!(e403.class(), ErrorClass::Definite);
        assert!(!e403.is_abuse_blocked());
    }

    #[test]
    fn abuse_block_has_its_own_class() {
        let e = status_error(
            GraphCall::PostInvitation,
            403,
            &graph_body(
                "Forbidden",
                "Invitations are blocked for this directory due to suspicious activity. Please contact Microsoft support to unblock.",
            ),
        );
        assert_eq!(e.class(), ErrorClass::AbuseBlocked);
        assert!(e.is_abuse_blocked());
        assert!(!e.is_forbidden());
    }

    #[test]
    fn email_not_on_user_is_recognised_with_either_apostrophe() {
        for msg in [
            "The email you're using to invite this user doesn't match any emails on the user object. Please add this email to the user object and try again.",
            "The email you\u{2019}re using to invite this user doesn\u{2019}t match any emails on the user object.",
        ] {
            let e = status_error(
                GraphCall::PostInvitation,
                400,
                &graph_body("BadRequest", msg),
            );
            assert!(e.is_email_not_on_user(), "{msg}");
            assert_eq!(e.class(), ErrorClass::Definite);
        }
        let other = status_error(
            GraphCall::PostInvitation,
            400,
            &graph_body("BadRequest", "The Primary SMTP Address is an invalid value"),
        );
        assert!(!other.is_email_not_on_user());
    }

    #[test]
    fn throttled_carries_retry_after() {
        let e = GraphError::from_response(
            GraphCall::ListUsers,
            429,
            b"{}",
            Some("r".into()),
            Some(Duration::from_secs(7)),
        );
        assert_eq!(
            e.class(),
            ErrorClass::Throttled {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert!(e.is_throttled());
        assert_eq!(e.request_id.as_deref(), Some("r"), "header wins over body");
    }

    #[test]
    fn server_errors_are_ambiguous() {
        for status in [500, 502, 503, 504, 408] {
            let e = status_error(GraphCall::PostInvitation, status, "<html>oops</html>");
            assert_eq!(e.class(), ErrorClass::Ambiguous, "status {status}");
            assert!(e.may_have_taken_effect());
            assert_eq!(e.message.as_deref(), Some("<html>oops</html>"));
        }
    }

    #[test]
    fn transport_kinds_map_to_classes() {
        let cases = [
            (FailureKind::Connect, ErrorClass::TransientBeforeSend),
            (FailureKind::Timeout, ErrorClass::Ambiguous),
            (FailureKind::ConnectionLost, ErrorClass::Ambiguous),
            (FailureKind::InvalidResponse, ErrorClass::Ambiguous),
            (
                FailureKind::Credential { transient: true },
                ErrorClass::TransientBeforeSend,
            ),
            (
                FailureKind::Credential { transient: false },
                ErrorClass::Definite,
            ),
        ];
        for (kind, class) in cases {
            let e = GraphError::new(GraphCall::PostInvitation, kind.clone(), "detail");
            assert_eq!(e.class(), class, "{kind:?}");
        }
    }

    #[test]
    fn display_names_call_status_code_and_ids() {
        let mut e = status_error(
            GraphCall::PostInvitation,
            403,
            &graph_body("Forbidden", "Generic authorization exception."),
        );
        e.client_request_id = Some("client-1".into());
        let text = e.to_string();
        assert!(text.starts_with("POST /invitations: Graph answered HTTP 403 Forbidden"));
        assert!(text.contains("request-id req-inner"));
        assert!(text.contains("client-request-id client-1"));
        let cred = GraphError::new(
            GraphCall::GetUser,
            FailureKind::Credential { transient: false },
            "ClientSecretCredential authentication failed. AADSTS7000215: Invalid client secret.",
        );
        assert!(
            cred.to_string()
                .contains("credential cannot get an access token")
        );
        assert!(cred.to_string().contains("Invalid client secret"));
    }

    const CAP: Duration = Duration::from_secs(3600);

    #[test]
    fn retry_after_seconds() {
        let now = SystemTime::now();
        assert_eq!(
            parse_retry_after("5", now, CAP),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after(" 120 ", now, CAP),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", now, CAP), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now, CAP),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now, CAP),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
    }

    #[test]
    fn retry_after_garbage_is_ignored() {
        let now = SystemTime::now();
        for v in [
            "",
            "soon",
            "-5",
            "1.5",
            "5s",
            "Wed, 99 Foo 2015",
            "+5",
            "0x10",
        ] {
            assert_eq!(parse_retry_after(v, now, CAP), None, "{v:?}");
        }
    }

    /// The defect: `Retry-After: 18446744073709551615` came back as is, and the deadline
    /// the controller computed from it overflowed and panicked.
    #[test]
    fn retry_after_u64_max_is_capped_and_usable_as_a_deadline() {
        let now = SystemTime::now();
        let after = parse_retry_after("18446744073709551615", now, CAP).unwrap();
        assert_eq!(after, CAP);
        // What callers do with it must not overflow.
        assert!(tokio::time::Instant::now().checked_add(after).is_some());
        assert!(jiff::Timestamp::now().checked_add(after).is_ok());
        assert!(now.checked_add(after).is_some());
    }

    #[test]
    fn retry_after_beyond_u64_and_far_dates_are_capped() {
        let now = SystemTime::now();
        for v in [
            "18446744073709551616",
            "99999999999999999999999999999999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(parse_retry_after(v, now, CAP), Some(CAP), "{v:?}");
        }
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now, CAP),
            Some(Duration::ZERO)
        );
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", epoch, Duration::MAX),
            Some(Duration::from_secs(253_402_300_799)),
            "an uncapped far date is exact, not a panic"
        );
    }

    #[test]
    fn graph_code_and_message_are_bounded_for_status_and_events() {
        let long = format!(
            "Invitations are blocked {}\n\u{7}{}",
            "é".repeat(600),
            "x".repeat(2000)
        );
        let body =
            serde_json::json!({"error": {"code": "C".repeat(1000), "message": long}}).to_string();
        let e = GraphError::from_response(
            GraphCall::PostInvitation,
            400,
            body.as_bytes(),
            Some("r".repeat(10_000)),
            None,
        );
        let message = e.message.as_deref().unwrap();
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS);
        assert!(message.ends_with('…'));
        assert!(message.starts_with("Invitations are blocked éé"));
        assert!(!message.chars().any(char::is_control), "{message:?}");
        assert_eq!(e.code.as_deref().unwrap().chars().count(), MAX_CODE_CHARS);
        assert_eq!(
            e.request_id.as_deref().unwrap().chars().count(),
            MAX_ID_CHARS
        );
        let text = e.to_string();
        assert!(
            text.chars().count() <= MAX_ERROR_TEXT_CHARS,
            "{}",
            text.len()
        );
    }

    #[test]
    fn control_characters_in_a_message_become_spaces() {
        let body = graph_body("Bad", "line one\r\nline two\u{1b}[31m");
        let e = status_error(GraphCall::GetUser, 400, &body);
        assert_eq!(e.message.as_deref(), Some("line one  line two [31m"));
    }

    #[test]
    fn bidirectional_overrides_become_spaces() {
        let body = graph_body("Bad", "user \u{202E}gnp.exe\u{202C} \u{2066}x\u{2069}");
        let e = status_error(GraphCall::GetUser, 400, &body);
        assert_eq!(e.message.as_deref(), Some("user  gnp.exe   x "));
    }

    #[test]
    fn a_huge_non_json_body_gives_a_short_excerpt() {
        let body = "<html>".to_owned() + &"x".repeat(1 << 20);
        let e = status_error(GraphCall::GetUser, 502, &body);
        assert_eq!(e.message.as_deref().unwrap().chars().count(), 300);
    }

    #[test]
    fn display_stays_bounded_whatever_the_fields_hold() {
        let mut e = GraphError::new(GraphCall::PatchUser, FailureKind::Status, "d".repeat(5000));
        e.status = Some(u16::MAX);
        e.code = Some("c".repeat(5000));
        e.message = Some("m".repeat(5000));
        e.request_id = Some("r".repeat(5000));
        e.client_request_id = Some("q".repeat(5000));
        e.retry_after = Some(Duration::MAX);
        e.attempts = u32::MAX;
        let text = e.to_string();
        assert!(
            text.chars().count() <= MAX_ERROR_TEXT_CHARS,
            "{}",
            text.chars().count()
        );
    }

    #[test]
    fn call_names_are_the_metric_labels() {
        let names: Vec<&str> = GraphCall::VARIANTS.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "GET /users/{id}",
                "GET /users",
                "PATCH /users/{id}",
                "POST /invitations"
            ]
        );
        for call in GraphCall::VARIANTS {
            assert_eq!(call.to_string(), call.as_str());
        }
    }
}
