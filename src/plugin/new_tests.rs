use clap::Parser;
use serde_json::{Value, json};

use super::*;
use crate::plugin::cli::{Cli, Command};
use crate::plugin::output::{Format, render};

const GUID: &str = "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41";

fn args(extra: &[&str]) -> NewArgs {
    let argv = ["kubectl-guestreset", "new", "alice-to-newco"]
        .iter()
        .chain(extra)
        .copied();
    match Cli::try_parse_from(argv).unwrap().command {
        Command::New(args) => *args,
        other => panic!("{other:?}"),
    }
}

fn json_of(obj: &GuestRedemptionReset) -> Value {
    serde_json::to_value(obj).unwrap()
}

#[test]
fn a_minimal_manifest_has_the_key_the_email_and_the_defaults_spelled_out() {
    let obj = manifest(
        &args(&["--user", GUID, "--email", "alice@newco.example"]),
        None,
        None,
    );
    assert_eq!(
        json_of(&obj),
        json!({
            "apiVersion": "guestreset.io/v1alpha1",
            "kind": "GuestRedemptionReset",
            "metadata": {"name": "alice-to-newco"},
            "spec": {
                "user": {"id": GUID},
                "email": "alice@newco.example",
                "redirectUrl": "https://myapps.microsoft.com",
                "sendInvitationMessage": true,
                "updateMail": true,
                "dryRun": false,
            },
        })
    );
}

#[test]
fn every_flag_lands_in_its_field() {
    let a = args(&[
        "--user-principal-name",
        "alice_contoso.com#EXT#@fabrikam.onmicrosoft.com",
        "--email",
        "alice@newco.example",
        "--change-ref",
        "CHG-20931",
        "--dry-run",
        "--message-body",
        "Your access moves.",
        "--message-language",
        "de-CH",
        "--cc",
        "manager@fabrikam.example",
        "--no-invitation-message",
        "--no-update-mail",
        "--redirect-url",
        "https://portal.fabrikam.example",
        "--redeem-url-secret",
        "alice-redeem-url",
    ]);
    let spec = json_of(&manifest(&a, Some("identity"), Some("flux")));
    assert_eq!(
        spec,
        json!({
            "apiVersion": "guestreset.io/v1alpha1",
            "kind": "GuestRedemptionReset",
            "metadata": {
                "name": "alice-to-newco",
                "namespace": "identity",
                "annotations": {"guestreset.io/requested-by": "flux"},
            },
            "spec": {
                "user": {"userPrincipalName": "alice_contoso.com#EXT#@fabrikam.onmicrosoft.com"},
                "email": "alice@newco.example",
                "redirectUrl": "https://portal.fabrikam.example",
                "sendInvitationMessage": false,
                "message": {
                    "language": "de-CH",
                    "body": "Your access moves.",
                    "ccRecipient": "manager@fabrikam.example",
                },
                "updateMail": false,
                "redeemUrlSecret": {"name": "alice-redeem-url"},
                "changeRef": "CHG-20931",
                "dryRun": true,
            },
        })
    );
}

#[test]
fn user_flags_pick_their_key() {
    let key = |flag: &str, value: &str| {
        json_of(&manifest(
            &args(&[flag, value, "--email", "a@b.co"]),
            None,
            None,
        ))["spec"]["user"]
            .clone()
    };
    assert_eq!(key("--user", GUID), json!({"id": GUID}));
    assert_eq!(key("--user-id", GUID), json!({"id": GUID}));
    let upn = "bob_partner.example#EXT#@fabrikam.onmicrosoft.com";
    assert_eq!(key("--user", upn), json!({"userPrincipalName": upn}));
    assert_eq!(
        key("--user", "bob@partner.example"),
        json!({"mail": "bob@partner.example"})
    );
    assert_eq!(
        key("--user-mail", "bob@partner.example"),
        json!({"mail": "bob@partner.example"})
    );
    assert_eq!(
        key("--user-principal-name", "bob@fabrikam.onmicrosoft.com"),
        json!({"userPrincipalName": "bob@fabrikam.onmicrosoft.com"})
    );
}

#[test]
fn a_cc_alone_makes_a_message_in_the_default_language() {
    let a = args(&[
        "--user-mail",
        "a@b.co",
        "--email",
        "a@b.co",
        "--cc",
        "boss@b.co",
    ]);
    assert_eq!(
        json_of(&manifest(&a, None, None))["spec"]["message"],
        json!({"language": "en-US", "ccRecipient": "boss@b.co"})
    );
}

#[test]
fn no_requester_no_annotation() {
    let a = args(&["--user-mail", "a@b.co", "--email", "a@b.co"]);
    let value = json_of(&manifest(&a, None, None));
    assert!(value["metadata"].get("annotations").is_none(), "{value}");
    assert!(value.get("status").is_none(), "{value}");
}

#[test]
fn the_manifest_passes_the_crds_rules_offline() {
    let crd = serde_json::to_value(crate::resource::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let a = args(&[
        "--user",
        "alice@contoso.com",
        "--email",
        "alice@newco.example",
        "--cc",
        "boss@fabrikam.example",
        "--redirect-url",
        "https://x.example",
    ]);
    let value = json_of(&manifest(&a, Some("identity"), None));
    kube::core::cel::Validator::new()
        .validate(schema, &value, None)
        .unwrap();
}

#[test]
fn yaml_and_json_read_back_as_the_same_resource() {
    let a = args(&[
        "--user",
        GUID,
        "--email",
        "alice@newco.example",
        "--dry-run",
    ]);
    let obj = manifest(&a, None, Some("guestreset-admin"));
    let yaml = render(&obj, Format::Yaml);
    assert!(
        yaml.starts_with("apiVersion: guestreset.io/v1alpha1\nkind: GuestRedemptionReset\n"),
        "{yaml}"
    );
    let from_yaml: GuestRedemptionReset = serde_yaml::from_str(&yaml).unwrap();
    let from_json: GuestRedemptionReset =
        serde_json::from_str(&render(&obj, Format::Json)).unwrap();
    assert_eq!(from_yaml, obj);
    assert_eq!(from_json, obj);
}

#[test]
fn a_silent_reset_without_a_secret_is_warned_about() {
    let silent = args(&[
        "--user",
        GUID,
        "--email",
        "a@b.co",
        "--no-invitation-message",
    ]);
    assert_eq!(warnings(&silent).len(), 1);
    assert!(warnings(&silent)[0].contains("--redeem-url-secret"));
    let kept = args(&[
        "--user",
        GUID,
        "--email",
        "a@b.co",
        "--no-invitation-message",
        "--redeem-url-secret",
        "s",
    ]);
    assert!(warnings(&kept).is_empty());
    let mixed = args(&[
        "--user",
        GUID,
        "--email",
        "a@b.co",
        "--no-invitation-message",
        "--redeem-url-secret",
        "s",
        "--cc",
        "boss@b.co",
    ]);
    assert_eq!(warnings(&mixed).len(), 1);
    assert!(warnings(&args(&["--user", GUID, "--email", "a@b.co"])).is_empty());
}
