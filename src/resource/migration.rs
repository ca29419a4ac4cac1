//! The `GuestDomainMigration` resource (docs/resource.md, "GuestDomainMigration"): every guest
//! of a partner domain moved to a new domain as one reviewed plan, one `GuestRedemptionReset`
//! per guest. Its admission rules, like the reset's, live in the CRD.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::approval::{Approval, PolicyVersion};
use super::common::{InvitationMessage, strip_nullable};

/// Label on every reset a migration created, with the migration's name as its value.
pub const MIGRATION_LABEL: &str = "guestreset.io/migration";
/// The data key of the plan ConfigMap holding the planned guests, one a line.
pub const PLAN_KEY: &str = "planned";
/// The data key of the plan ConfigMap holding the excluded users, one a line.
pub const EXCLUDED_KEY: &str = "excluded";
/// The data key of the plan ConfigMap holding the plan's digest.
pub const DIGEST_KEY: &str = "digest";
/// The data key of the mapping ConfigMap read when `spec.mapping.key` is not set.
pub const DEFAULT_MAPPING_KEY: &str = "mapping";

/// A lower-case DNS domain with at least one dot: the `from` and `to` of a migration.
const DOMAIN_RULE: &str =
    r"self.matches(r'^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$')";
const DOMAIN_MESSAGE: &str = "must be a lower-case domain such as contoso.com (a domain only: no '@', the local part of each address is kept)";

/// Moves every guest whose mail is in `from` to the same local part in `to`.
///
/// The controller plans first (the guests found, members and guests whose new address is
/// already in use listed and excluded), records the plan, then creates one
/// GuestRedemptionReset per planned guest. The migration never writes to Graph itself.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "guestreset.io",
    version = "v1alpha1",
    kind = "GuestDomainMigration",
    plural = "guestdomainmigrations",
    shortname = "gdm",
    category = "guestreset",
    namespaced,
    status = "GuestDomainMigrationStatus",
    derive = "PartialEq",
    doc = "Moves every B2B guest of a partner domain to a new domain: a reviewed plan, then one GuestRedemptionReset per guest.",
    validation = Rule::new("self.metadata.name.size() <= 54").message("metadata.name: at most 54 characters (it names and labels the migration's resets and its plan ConfigMap)"),
    printcolumn = r#"{"name": "From", "type": "string", "jsonPath": ".spec.from"}"#,
    printcolumn = r#"{"name": "To", "type": "string", "jsonPath": ".spec.to"}"#,
    printcolumn = r#"{"name": "Planned", "type": "integer", "jsonPath": ".status.progress.planned"}"#,
    printcolumn = r#"{"name": "Issued", "type": "integer", "jsonPath": ".status.progress.issued"}"#,
    printcolumn = r#"{"name": "Failed", "type": "integer", "jsonPath": ".status.progress.failed"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "description": "Reason of the Ready condition", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.from != self.to").message("spec.to must differ from spec.from").field_path(".to"))]
#[serde(rename_all = "camelCase")]
pub struct GuestDomainMigrationSpec {
    /// The partner domain: every user whose mail ends in `@from` is considered.
    #[x_kube(validation = Rule::new(DOMAIN_RULE).message(DOMAIN_MESSAGE))]
    #[schemars(length(min = 3, max = 253))]
    pub from: String,

    /// The new domain. The new e-mail keeps the local part (`ann@from` becomes `ann@to`)
    /// unless the mapping renames it.
    #[x_kube(validation = Rule::new(DOMAIN_RULE).message(DOMAIN_MESSAGE))]
    #[schemars(length(min = 3, max = 253))]
    pub to: String,

    /// Local parts that change (renamed people), from a ConfigMap in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<Mapping>,

    /// Where the guests land after redeeming. Must be an https URL.
    #[serde(default = "super::common::default_redirect_url")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') && self.size() > 8 && !self.contains(' ')").message("must be an https:// URL"))]
    #[schemars(length(max = 2048))]
    pub redirect_url: String,

    /// Whether Microsoft sends the invitation e-mails.
    #[serde(default = "super::common::default_true")]
    pub send_invitation_message: bool,

    /// Customisation of every invitation e-mail, as in GuestRedemptionReset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<InvitationMessage>,

    /// A change or ticket reference for audit; carried into every reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub change_ref: Option<String>,

    /// Plan only: record the plan and create no reset.
    #[serde(default)]
    pub dry_run: bool,
}

/// The renamed local parts: lines `old-local new-local` under a key of a ConfigMap.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Mapping {
    pub config_map_ref: ConfigMapRef,
    /// The data key holding the lines; default `mapping`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

/// A ConfigMap in the migration's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapRef {
    #[schemars(regex(
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    ))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What the controller planned and how far the migration got.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GuestDomainMigrationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling, Stalled (kstatus) and, with --require-approval, Approved.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The plan of observedGeneration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<MigrationPlan>,

    /// Counted from the resets the migration owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,

    /// When the last reset is expected to be issued, at the controller's write limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_completion: Option<Time>,

    /// Who asked for observedGeneration (the guestreset.io/requested-by annotation, which
    /// admission holds to the user who created the migration or last changed its spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,

    /// An approver's decision on the plan (with --require-approval), naming the plan's digest.
    /// Written by the approver through the status subresource; the controller never writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,

    /// The approval policy and binding in force when the controller planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_under: Option<PolicyVersion>,
}

/// The plan's figures; the list itself is in the ConfigMap `listedIn` names.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MigrationPlan {
    /// The spec generation planned.
    pub generation: i64,
    /// Guests that get a reset.
    pub guests: i64,
    /// Members found in the domain: excluded (a reset would convert them to B2B users).
    pub members: i64,
    /// Guests whose new address is already in use (or wanted by two guests): excluded.
    pub conflicts: i64,
    /// `sha256:` and hex, over the spec's values and the sorted plan: what an approval names.
    #[schemars(length(max = 80))]
    pub digest: String,
    /// `ConfigMap/<name>`: the full list, owned by the migration.
    #[schemars(length(max = 300))]
    pub listed_in: String,
    /// Directory pages read to make the plan.
    #[serde(default)]
    pub pages: i64,
    pub planned_at: Time,
}

/// How many of the planned guests are where.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub planned: i64,
    /// Resets created.
    pub created: i64,
    /// Resets whose invitation was issued.
    pub issued: i64,
    /// Resets that stopped without an invitation (EmailInUse, NotAGuest, ...).
    pub failed: i64,
    /// Guests who redeemed the new invitation.
    pub redeemed: i64,
}

/// The CustomResourceDefinition as installed.
pub fn crd() -> CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut value = serde_json::to_value(GuestDomainMigration::crd())
        .expect("the derived CRD always serialises");
    strip_nullable(&mut value);
    serde_json::from_value(value).expect("stripping nullable keeps a valid CRD")
}

/// The CRD as YAML, exactly as committed under `crds/`.
pub fn crd_yaml() -> String {
    let body = serde_yaml::to_string(&crd()).expect("the CRD always serialises");
    format!(
        "# Generated by `guestreset crd --kind migration` from src/resource/migration.rs; do not edit.\n---\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn schema() -> Value {
        let crd = serde_json::to_value(crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    fn failures(name: &str, spec: Value) -> Vec<String> {
        let object = json!({
            "apiVersion": "guestreset.io/v1alpha1",
            "kind": "GuestDomainMigration",
            "metadata": {"name": name, "namespace": "n"},
            "spec": spec,
        });
        match kube::core::cel::Validator::new().validate(&schema(), &object, None) {
            Ok(()) => vec![],
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_plain_migration_passes() {
        let spec = json!({"from": "contoso.com", "to": "fabrikam.example",
            "mapping": {"configMapRef": {"name": "renames"}}, "changeRef": "CHG-1"});
        assert_eq!(failures("m", spec), Vec::<String>::new());
    }

    #[test]
    fn from_equal_to_is_refused_naming_to() {
        let failed = failures("m", json!({"from": "contoso.com", "to": "contoso.com"}));
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(
            failed[0].contains("spec.to must differ from spec.from"),
            "{failed:?}"
        );
    }

    #[test]
    fn domains_only_lower_case_and_no_local_part() {
        for bad in [
            "ann@contoso.com",
            "Contoso.com",
            "contoso",
            "-contoso.com",
            "contoso..com",
            "contoso.com.",
            "con toso.com",
        ] {
            let failed = failures("m", json!({"from": bad, "to": "fabrikam.example"}));
            assert!(
                failed.len() == 1
                    && failed[0].starts_with("spec.from: must be a lower-case domain"),
                "{bad}: {failed:?}"
            );
            let failed = failures("m", json!({"from": "fabrikam.example", "to": bad}));
            assert!(
                failed.len() == 1 && failed[0].starts_with("spec.to: must be a lower-case domain"),
                "{bad}: {failed:?}"
            );
        }
    }

    #[test]
    fn long_names_are_refused() {
        let name = "m".repeat(55);
        let failed = failures(&name, json!({"from": "a.example", "to": "b.example"}));
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(
            failed[0].contains("metadata.name: at most 54"),
            "{failed:?}"
        );
        assert!(
            failures(
                &"m".repeat(54),
                json!({"from": "a.example", "to": "b.example"})
            )
            .is_empty()
        );
    }

    #[test]
    fn every_spec_string_is_bounded_and_nothing_nullable() {
        fn walk(path: &str, schema: &Value, unbounded: &mut Vec<String>) {
            if schema["type"] == "string" && schema.get("maxLength").is_none() {
                unbounded.push(path.to_owned());
            }
            if let Some(props) = schema["properties"].as_object() {
                for (name, sub) in props {
                    walk(&format!("{path}.{name}"), sub, unbounded);
                }
            }
        }
        let mut unbounded = vec![];
        walk("spec", &schema()["properties"]["spec"], &mut unbounded);
        assert_eq!(unbounded, Vec::<String>::new());
        let text = serde_json::to_string(&crd()).unwrap();
        assert!(!text.contains("nullable"));
        assert!(!text.contains("x-kubernetes-preserve-unknown-fields"));
    }

    #[test]
    fn crd_yaml_round_trips() {
        let parsed: CustomResourceDefinition = serde_yaml::from_str(&crd_yaml()).unwrap();
        assert_eq!(parsed, crd());
    }
}
