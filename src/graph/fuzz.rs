//! Property tests of everything that reads what Graph sends: arbitrary statuses, header
//! values (as bytes), bodies (bytes, and JSON of the right names in the wrong shapes),
//! body reads cut short, and clocks. Whatever comes in: no panic, `Retry-After` never
//! above the cap, error text never above its bounds, and a success whose body could
//! not be read is never anything but `Ambiguous`.

use super::error::{
    ErrorClass, FailureKind, GraphCall, GraphError, MAX_CODE_CHARS, MAX_DETAIL_CHARS,
    MAX_ERROR_TEXT_CHARS, MAX_ID_CHARS, MAX_MESSAGE_CHARS, parse_retry_after,
};
use super::model::{DirectoryUser, InvitationWire, UserPage, parse_graph_timestamp};
use super::response::{BodyRead, decode, interpret};
use proptest::prelude::*;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use std::time::{Duration, SystemTime};
use strum::VariantArray;

/// Cases per property and run; the parsers are fast, so many.
const CASES: u32 = 1024;

/// The last second of year 9999, the latest an HTTP date can name.
const LAST_HTTP_DATE_SECS: u64 = 253_402_300_799;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(CASES)
}

fn call() -> impl Strategy<Value = GraphCall> {
    proptest::sample::select(GraphCall::VARIANTS)
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        any::<u16>(),
        100u16..600,
        proptest::sample::select(&[200u16, 201, 204, 400, 401, 403, 404, 408, 429, 500, 503][..]),
    ]
}

fn cap() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::from_secs(3600)),
        (0u64..=86_400 * 365).prop_map(Duration::from_secs),
    ]
}

/// Clocks from 1970 to the end of year 9999.
fn now() -> impl Strategy<Value = SystemTime> {
    (0..=LAST_HTTP_DATE_SECS).prop_map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
}

/// What a `Retry-After` might hold: numbers of every size, HTTP dates of every year,
/// and anything else.
fn retry_after_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        "[0-9]{15,40}",
        "[ \t]{0,2}[0-9]{1,6}[ \t]{0,2}",
        "(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-3][0-9] (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} [0-2][0-9]:[0-5][0-9]:[0-6][0-9] GMT",
        "(Monday|Sunday), [0-3][0-9]-(Jan|Dec)-[0-9]{2} [0-2][0-9]:[0-5][0-9]:[0-5][0-9] GMT",
        "(Mon|Sun) (Jan|Dec) [ 0-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-5][0-9] [0-9]{4}",
        any::<String>(),
    ]
}

/// A header value as bytes: text above, or arbitrary bytes.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        retry_after_text().prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..300),
        "[!-~]{0,3000}".prop_map(String::into_bytes),
    ]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    const NAMES: &[&str] = &[
        "retry-after",
        "request-id",
        "content-type",
        "client-request-id",
    ];
    proptest::collection::vec((proptest::sample::select(NAMES), header_bytes()), 0..5).prop_map(
        |pairs| {
            let mut map = HeaderMap::new();
            for (name, bytes) in pairs {
                // Bytes no HTTP parser would hand over cannot arrive.
                if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                    map.append(HeaderName::from_static(name), value);
                }
            }
            map
        },
    )
}

/// The property names Graph's answers use, so that generated JSON hits the decoders'
/// fields with values of the wrong type.
const KEYS: &[&str] = &[
    "id",
    "userType",
    "userPrincipalName",
    "mail",
    "otherMails",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "value",
    "@odata.nextLink",
    "error",
    "code",
    "message",
    "innerError",
    "request-id",
    "status",
    "inviteRedeemUrl",
    "invitedUserEmailAddress",
    "invitedUser",
];

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "[0-9T:.Z+-]{0,30}".prop_map(Value::from),
        (0usize..5000).prop_map(|n| Value::from("m\u{7}é".repeat(n))),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            proptest::collection::vec(
                (
                    prop_oneof![
                        proptest::sample::select(KEYS).prop_map(str::to_owned),
                        any::<String>()
                    ],
                    inner
                ),
                0..8
            )
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        // Graph's error shape with anything inside.
        (json(), json(), json()).prop_map(|(code, message, inner)| {
            let body = serde_json::json!({"error": {"code": code, "message": message, "innerError": inner}});
            serde_json::to_vec(&body).unwrap()
        }),
        // The right shapes, cut anywhere.
        (json(), any::<prop::sample::Index>()).prop_map(|(v, at)| {
            let bytes = serde_json::to_vec(&v).unwrap();
            bytes[..at.index(bytes.len() + 1)].to_vec()
        }),
    ]
}

fn body_read() -> impl Strategy<Value = BodyRead> {
    let kind = proptest::sample::select(
        &[
            FailureKind::Timeout,
            FailureKind::ConnectionLost,
            FailureKind::Connect,
        ][..],
    );
    prop_oneof![
        4 => body().prop_map(BodyRead::Complete),
        1 => (body(), 0usize..2_000_000).prop_map(|(prefix, limit)| BodyRead::TooLarge { prefix, limit }),
        1 => (kind, any::<String>()).prop_map(|(kind, detail)| BodyRead::Failed { kind, detail }),
    ]
}

fn chars(text: Option<&str>) -> usize {
    text.map_or(0, |t| t.chars().count())
}

/// What every error must satisfy, whatever it was made from.
fn check_error(err: &GraphError, cap: Duration) -> Result<(), TestCaseError> {
    let class = err.class();
    if let ErrorClass::Throttled {
        retry_after: Some(after),
    } = class
    {
        prop_assert!(after <= cap, "Retry-After {after:?} above the cap {cap:?}");
    }
    prop_assert!(err.retry_after.is_none_or(|after| after <= cap));
    prop_assert!(chars(err.message.as_deref()) <= MAX_MESSAGE_CHARS);
    prop_assert!(chars(err.code.as_deref()) <= MAX_CODE_CHARS);
    prop_assert!(chars(err.detail.as_deref()) <= MAX_DETAIL_CHARS);
    prop_assert!(chars(err.request_id.as_deref()) <= MAX_ID_CHARS);
    for text in [&err.message, &err.code, &err.detail].into_iter().flatten() {
        prop_assert!(!text.chars().any(char::is_control), "{text:?}");
    }
    let display = err.to_string();
    prop_assert!(display.chars().count() <= MAX_ERROR_TEXT_CHARS);
    // The helpers agree with the class.
    prop_assert_eq!(err.may_have_taken_effect(), class == ErrorClass::Ambiguous);
    prop_assert_eq!(err.is_abuse_blocked(), class == ErrorClass::AbuseBlocked);
    prop_assert!(!(err.is_forbidden() && err.is_abuse_blocked()));
    // Each answer is at most one of the things the controller tells apart, and each of them
    // is definite (nothing happened), except a 429, which is its own class.
    let named = [
        err.is_not_found(),
        err.is_email_not_on_user(),
        err.is_throttled(),
        err.is_abuse_blocked(),
        err.is_forbidden(),
    ];
    prop_assert!(
        named.iter().filter(|n| **n).count() <= 1,
        "{named:?} for {err:?}"
    );
    if err.is_not_found() || err.is_email_not_on_user() {
        prop_assert_eq!(class, ErrorClass::Definite);
    }
    prop_assert_eq!(
        err.is_throttled(),
        matches!(class, ErrorClass::Throttled { .. })
    );
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn retry_after_is_never_above_the_cap(
        text in retry_after_text(),
        now in now(),
        cap in cap(),
    ) {
        if let Some(after) = parse_retry_after(&text, now, cap) {
            prop_assert!(after <= cap);
        }
    }

    #[test]
    fn retry_after_numbers_are_exact_below_the_cap(secs in any::<u64>(), cap in cap()) {
        let expected = Duration::from_secs(secs).min(cap);
        prop_assert_eq!(parse_retry_after(&secs.to_string(), SystemTime::now(), cap), Some(expected));
    }

    #[test]
    fn error_answers_are_bounded(
        call in call(),
        status in status(),
        body in body(),
        request_id in proptest::option::of(any::<String>()),
        retry_after in proptest::option::of(retry_after_text()),
        now in now(),
        cap in cap(),
    ) {
        let retry_after = retry_after.and_then(|t| parse_retry_after(&t, now, cap));
        let err = GraphError::from_response(call, status, &body, request_id, retry_after);
        check_error(&err, cap)?;
        prop_assert_eq!(err.kind.clone(), FailureKind::Status);
        if status == 429 {
            prop_assert!(err.is_throttled(), "429 is always Throttled");
        }
    }

    /// The whole way from an HTTP answer to a decoded value or a classified error.
    #[test]
    fn answers_are_interpreted_and_decoded_without_panic(
        call in call(),
        status in status(),
        headers in headers(),
        body in body_read(),
        now in now(),
        cap in cap(),
    ) {
        let success = (200..300).contains(&status);
        let complete = matches!(body, BodyRead::Complete(_));
        match interpret(call, status, &headers, body, "client-1".into(), now, cap) {
            Ok(answer) => {
                prop_assert!(success && complete);
                decode_every_way(call, &answer, cap)?;
            }
            Err(err) => {
                check_error(&err, cap)?;
                prop_assert_eq!(err.status, Some(status));
                prop_assert_eq!(err.client_request_id.as_deref(), Some("client-1"));
                if success {
                    // A success that could not be read may have taken effect.
                    prop_assert!(!complete);
                    prop_assert_eq!(err.class(), ErrorClass::Ambiguous);
                } else {
                    prop_assert_eq!(err.kind.clone(), FailureKind::Status);
                }
            }
        }
    }

    #[test]
    fn decoders_take_any_body(body in body()) {
        // A user is a guest exactly when its JSON says `userType: Guest` (in any case), and
        // carries an e-mail only when the JSON holds that address.
        if let Ok(user) = serde_json::from_slice::<DirectoryUser>(&body) {
            let json: Value = serde_json::from_slice(&body).unwrap_or_default();
            let says_guest = json["userType"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case("Guest"));
            prop_assert_eq!(user.is_guest(), says_guest);
            if user.carries_email("a@b.example") {
                prop_assert!(String::from_utf8_lossy(&body).to_ascii_lowercase().contains("a@b.example"));
            }
        }
        // A page decodes whenever its `value` is absent or a list the user decoder takes.
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body)
            && !map.contains_key("value")
            && !map.contains_key("@odata.nextLink")
        {
            prop_assert!(serde_json::from_slice::<UserPage>(&body).is_ok(), "{map:?}");
        }
        if let Ok(wire) = serde_json::from_slice::<InvitationWire>(&body) {
            let invitation = wire.into_invitation(None, "c".into());
            prop_assert_eq!(format!("{:?}", invitation.redeem_url), "RedeemUrl([redacted])");
            prop_assert_eq!(invitation.redeem_url.to_string(), "[redacted]");
        }
    }

    #[test]
    fn graph_timestamps_parse_or_are_absent(text in prop_oneof![
        any::<String>(),
        "[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}T[0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})?",
    ]) {
        // What parses names the instant the text does: without a zone, the text's own
        // wall-clock time is UTC.
        if let Some(ts) = parse_graph_timestamp(&text) {
            let text = text.trim();
            let zoneless = text.len() == 19 && !text.contains(['Z', 'z', '+']);
            if zoneless {
                prop_assert!(ts.to_string().starts_with(text), "{text} read as {ts}");
            }
            prop_assert_eq!(Some(ts), parse_graph_timestamp(&ts.to_string()));
        }
    }
}

/// Decodes `answer` as each answer type; a decoding failure is a bounded error.
fn decode_every_way(
    call: GraphCall,
    answer: &super::response::Answer,
    cap: Duration,
) -> Result<(), TestCaseError> {
    let errors = [
        decode::<DirectoryUser>(call, answer).err(),
        decode::<UserPage>(call, answer).err(),
        decode::<InvitationWire>(call, answer).err(),
    ];
    for err in errors.iter().flatten() {
        check_error(err, cap)?;
        prop_assert_eq!(err.class(), ErrorClass::Ambiguous);
    }
    Ok(())
}
