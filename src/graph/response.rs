//! Reading Graph's answers: the body read up to a cap ([`read_capped`]), headers
//! bounded before use, and an answer turned into an [`Answer`] or a classified
//! [`GraphError`] ([`interpret`], [`decode`]). Apart from the client so that these
//! steps, which decide whether a failed POST may have happened (docs/graph.md), are
//! tested (and fuzzed) on their own, without a credential or a Graph.

use super::error::{FailureKind, GraphCall, GraphError, MAX_ID_CHARS, bounded, parse_retry_after};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::de::DeserializeOwned;
use std::time::{Duration, SystemTime};

/// A successful answer.
#[derive(Debug)]
pub(super) struct Answer {
    status: u16,
    body: Vec<u8>,
    pub(super) request_id: Option<String>,
    pub(super) client_request_id: String,
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

/// A header's text, bounded; `None` when absent or not visible ASCII.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| bounded(v.trim(), MAX_ID_CHARS))
}

/// Reads the body chunk by chunk and stops once it passes `limit`, so that an endless
/// or huge answer costs at most `limit` bytes of memory.
pub(super) async fn read_capped(mut response: reqwest::Response, limit: usize) -> BodyRead {
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
pub(super) fn transport_failure(e: &reqwest::Error) -> FailureKind {
    if e.is_connect() {
        FailureKind::Connect
    } else if e.is_timeout() {
        FailureKind::Timeout
    } else {
        FailureKind::ConnectionLost
    }
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
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

pub(super) fn invalid_answer(call: GraphCall, answer: &Answer, detail: &str) -> GraphError {
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
    use reqwest::header::HeaderValue;

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
