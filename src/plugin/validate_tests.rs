//! The local checks against the authority: the CRD's CEL rules evaluated offline, and the
//! schema's bounds and patterns read from the CRD as installed.

use super::*;
use serde_json::{Value, json};

const GUID: &str = "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41";

fn schema() -> Value {
    let crd = serde_json::to_value(crate::resource::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Whether the CEL rules of the CRD accept `spec` for the field at `path`.
fn cel_accepts(spec: Value, path: &str) -> bool {
    let object = json!({
        "apiVersion": "guestreset.io/v1alpha1",
        "kind": "GuestRedemptionReset",
        "metadata": {"name": "t", "namespace": "n"},
        "spec": spec,
    });
    match kube::core::cel::Validator::new().validate(&schema(), &object, None) {
        Ok(()) => true,
        Err(errors) => !errors
            .iter()
            .any(|e| e.to_string().starts_with(&format!("{path}:"))),
    }
}

fn email_fixtures() -> Vec<String> {
    let cases: Value =
        serde_json::from_str(include_str!("../../tests/fixtures/emails.json")).unwrap();
    let mut all: Vec<String> = serde_json::from_value(cases["valid"].clone()).unwrap();
    let invalid: Vec<String> = serde_json::from_value(cases["invalid"].clone()).unwrap();
    all.extend(invalid);
    all.extend(
        [
            "al\u{00a0}ice@newco.example",
            "alice@newco.example\n",
            "al\u{2028}ice@newco.example",
            "\u{0085}alice@newco.example",
            "ünïcode@newco.example",
            "a@b.c",
            "a.b-c@d.ef",
            "alice@b_c.example",
            "alice@xn--bcher-kva.example",
            "alice@newco.example.",
            "a@b.co",
        ]
        .map(str::to_owned),
    );
    all
}

/// A spec with the value under test in one place.
type SpecWith = fn(&str) -> Value;

#[test]
fn email_agrees_with_the_cel_rule_for_every_address_field() {
    let places: [(&str, SpecWith); 3] = [
        ("spec.email", |x| json!({"user": {"id": GUID}, "email": x})),
        (
            "spec.user.mail",
            |x| json!({"user": {"mail": x}, "email": "a@b.co"}),
        ),
        (
            "spec.message.ccRecipient",
            |x| json!({"user": {"id": GUID}, "email": "a@b.co", "message": {"ccRecipient": x}}),
        ),
    ];
    let cases = email_fixtures();
    assert!(cases.len() > 50);
    for address in &cases {
        // The CEL rule; the length bounds are the schema's, checked below.
        let local = email_shape(address);
        assert_eq!(
            email(address).is_ok(),
            local && address.chars().count() <= EMAIL_LEN.1
        );
        for (path, spec) in places {
            assert_eq!(
                local,
                cel_accepts(spec(address), path),
                "{path} {address:?}"
            );
        }
    }
}

#[test]
fn upn_agrees_with_the_cel_rule() {
    let cases = [
        "alice_contoso.com#EXT#@fabrikam.onmicrosoft.com",
        "a@b.c",
        "a@.bc",
        "a@bc.",
        "a@b..c",
        "a@bc",
        "@b.c",
        "a@b@c.d",
        "a b@c.d",
        "a\u{00a0}b@c.d",
        "a\tb@c.d",
        "al~ice#EXT#@x.example",
    ];
    for upn_value in cases {
        let spec = json!({"user": {"userPrincipalName": upn_value}, "email": "a@b.co"});
        assert_eq!(
            upn_shape(upn_value),
            cel_accepts(spec, "spec.user.userPrincipalName"),
            "{upn_value:?}"
        );
    }
}

#[test]
fn redirect_agrees_with_the_cel_rule() {
    let cases = [
        "https://myapps.microsoft.com",
        "https://x",
        "https://",
        "http://x.example",
        "https://a b.example",
        "https://a\tb.example",
        "HTTPS://x.example",
        "ftp://x",
    ];
    for url in cases {
        let spec = json!({"user": {"id": GUID}, "email": "a@b.co", "redirectUrl": url});
        assert_eq!(
            redirect_shape(url),
            cel_accepts(spec, "spec.redirectUrl"),
            "{url:?}"
        );
    }
}

/// The bounds and patterns of the schema that the local checks implement; a change to the
/// schema fails here until the checks follow it.
#[test]
fn bounds_and_patterns_are_the_schemas() {
    let schema = schema();
    let spec = &schema["properties"]["spec"]["properties"];
    let approval = &schema["properties"]["status"]["properties"]["approval"]["properties"];
    let bounds = |field: &Value, (min, max): (usize, usize)| {
        assert_eq!(field["maxLength"], json!(max), "{field}");
        if min > 0 {
            assert_eq!(field["minLength"], json!(min), "{field}");
        }
    };
    bounds(&spec["email"], EMAIL_LEN);
    bounds(&spec["user"]["properties"]["mail"], EMAIL_LEN);
    bounds(&spec["message"]["properties"]["ccRecipient"], EMAIL_LEN);
    bounds(&spec["user"]["properties"]["userPrincipalName"], UPN_LEN);
    bounds(&spec["redirectUrl"], (0, REDIRECT_MAX));
    bounds(&spec["message"]["properties"]["body"], BODY_LEN);
    bounds(&spec["message"]["properties"]["language"], LANGUAGE_LEN);
    bounds(&spec["changeRef"], CHANGE_REF_LEN);
    bounds(
        &spec["redeemUrlSecret"]["properties"]["name"],
        (1, DNS_NAME_MAX),
    );
    bounds(&approval["reason"], REASON_LEN);
    bounds(&approval["by"], (1, BY_MAX));
    let pattern = |field: &Value| field["pattern"].as_str().unwrap().to_owned();
    assert_eq!(
        pattern(&spec["user"]["properties"]["id"]),
        r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    );
    assert_eq!(
        pattern(&spec["message"]["properties"]["language"]),
        r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
    );
    assert_eq!(
        pattern(&spec["redeemUrlSecret"]["properties"]["name"]),
        r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    );
}

#[test]
fn guids_follow_the_schema_pattern() {
    assert!(guid(GUID).is_ok());
    assert!(guid(&GUID.to_uppercase()).is_ok());
    for bad in [
        "",
        "{3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41}",
        "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e4",
        "3f0a6c1e8d2b4c559b0e2f6a1d9c7e41",
        "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e4g",
        "3f0a6c1e-8d2b-4c55-9b0e2-f6a1d9c7e41",
    ] {
        assert!(guid(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn languages_follow_the_schema_pattern() {
    for good in ["en", "en-US", "zh-Hant-TW", "deu", "de-CH-1996"] {
        assert!(language(good).is_ok(), "{good}");
    }
    for bad in [
        "e",
        "english",
        "en_US",
        "en-",
        "en-U",
        "en-123456789",
        "e1",
        "",
    ] {
        assert!(language(bad).is_err(), "{bad}");
    }
}

#[test]
fn dns_names_follow_the_schema_pattern() {
    for good in ["a", "alice-redeem-url", "a.b-c.d", "0abc", &"a".repeat(253)] {
        assert!(dns_name(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "A",
        "-a",
        "a-",
        "a..b",
        ".a",
        "a_b",
        "a b",
        &"a".repeat(254),
    ] {
        assert!(dns_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn user_is_recognised_by_its_shape() {
    let key = |v: &str| user_auto(v).map(|u| u.key().map(|k| format!("{k:?}")));
    assert_eq!(key(GUID).unwrap().unwrap(), format!("Id({GUID:?})"));
    let upn_value = "alice_contoso.com#EXT#@fabrikam.onmicrosoft.com";
    assert_eq!(
        key(upn_value).unwrap().unwrap(),
        format!("UserPrincipalName({upn_value:?})")
    );
    let lower = "alice_contoso.com#ext#@fabrikam.onmicrosoft.com";
    assert!(
        key(lower)
            .unwrap()
            .unwrap()
            .starts_with("UserPrincipalName")
    );
    assert_eq!(
        key("alice@contoso.com").unwrap().unwrap(),
        "Mail(\"alice@contoso.com\")"
    );
    // A UPN without #EXT# is taken as a mail; one the mail rule refuses says so.
    let err = user_auto("al+ice@contoso.com").unwrap_err();
    assert!(err.contains("current mail"), "{err}");
    let err = user_auto("alice").unwrap_err();
    assert!(err.contains("--user-id"), "{err}");
    assert!(user_auto("bad upn#EXT#@x.example").is_err());
}

#[test]
fn reasons_and_names_must_say_something() {
    assert!(reason("CHG-1 reviewed").is_ok());
    for blank in ["", "  ", "\n\t"] {
        assert!(reason(blank).unwrap_err().contains("empty"));
        assert!(user_name(blank).is_err());
    }
    assert!(reason(&"x".repeat(1024)).is_ok());
    assert!(reason(&"x".repeat(1025)).unwrap_err().contains("1024"));
    assert!(user_name("alice@fabrikam.example").is_ok());
}

#[test]
fn lengths_count_characters_not_bytes() {
    assert!(message_body(&"é".repeat(4000)).is_ok());
    assert!(message_body(&"é".repeat(4001)).is_err());
    assert!(message_body("").is_err());
    assert!(change_ref(&"x".repeat(128)).is_ok());
    assert!(change_ref(&"x".repeat(129)).is_err());
}
