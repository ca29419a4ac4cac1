//! `guestreset check`: what a platform engineer runs before the first reset, with the flags
//! and environment of `guestreset run` (docs/install.md, "Checking the installation"). Each
//! check prints one line (see [`report`]); the exit code is non-zero when any failed.
//!
//! The checks: a token from the same credential as `run`; its `roles` claim holds
//! `User.ReadWrite.All`; Graph answers a cheap read; every API-server right the chart grants
//! the controller ([`rights`], one SelfSubjectAccessReview each); the watched namespace
//! exists; the pause record is readable (absent is fine).

pub mod report;
pub mod rights;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ObjectReference};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

use crate::cli::RunArgs;
use crate::graph::claims::{self, ClaimsError, REQUIRED_ROLE};
use crate::graph::{GraphClient, GraphError};
pub use report::{Finding, Report};
use rights::{Right, Scope};

const FIX_CREDENTIAL: &str = "set AZURE_TENANT_ID to the guests' tenant id, AZURE_CLIENT_ID to the app's client id and its credential as docs/install.md says, and AZURE_AUTHORITY_HOST for a sovereign cloud";
const FIX_ROLE: &str = "add the application permission User.ReadWrite.All (Microsoft Graph) to the app and grant admin consent, then wait a few minutes for new tokens";

/// Runs every check; a check that cannot run because an earlier one failed is not reported.
pub async fn run(args: &RunArgs) -> Report {
    let mut report = Report::default();
    graph_checks(args, &mut report).await;
    kubernetes_checks(args, &mut report).await;
    report
}

async fn graph_checks(args: &RunArgs, report: &mut Report) {
    let graph = match args.graph_client() {
        Ok(graph) => graph,
        Err(e) => return report.push(Finding::fail("credential", e.to_string(), FIX_CREDENTIAL)),
    };
    match graph.token_roles().await {
        Err(e) => return report.push(token_failure(&e)),
        Ok(roles) => {
            report.push(Finding::ok(
                "token",
                format!("acquired for scope {}", graph.settings().scope),
            ));
            report.push(roles_finding(roles));
        }
    }
    report.push(probe_finding(&graph, graph.probe().await));
}

fn token_failure(e: &GraphError) -> Finding {
    Finding::fail("token", e.to_string(), FIX_CREDENTIAL)
}

/// The `roles` claim of the token against the one permission the controller needs.
pub fn roles_finding(roles: Result<Vec<String>, ClaimsError>) -> Finding {
    match roles {
        Ok(roles) if claims::grants_required(&roles) => Finding::ok(
            "permission",
            format!("the token's roles hold {REQUIRED_ROLE}"),
        ),
        Ok(roles) if roles.is_empty() => Finding::fail(
            "permission",
            "the token has no roles claim: no application permission is granted",
            FIX_ROLE,
        ),
        Ok(roles) => Finding::fail(
            "permission",
            format!(
                "the token's roles are {} without {REQUIRED_ROLE}",
                roles.join(", ")
            ),
            FIX_ROLE,
        ),
        Err(e) => Finding::fail(
            "permission",
            e.to_string(),
            "use an app-only credential of Microsoft Entra ID, whose access tokens are JWTs",
        ),
    }
}

fn probe_finding(graph: &GraphClient, result: Result<(), GraphError>) -> Finding {
    let endpoint = &graph.settings().endpoint;
    match result {
        Ok(()) => Finding::ok("graph", format!("{endpoint} answered GET /users?$top=1")),
        Err(e) if e.is_forbidden() => Finding::fail("graph", e.to_string(), FIX_ROLE),
        Err(e) => Finding::fail(
            "graph",
            e.to_string(),
            format!(
                "allow egress to {endpoint} (and the authority host) and check --graph-endpoint matches the tenant's cloud"
            ),
        ),
    }
}

async fn kubernetes_checks(args: &RunArgs, report: &mut Report) {
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            return report.push(Finding::fail(
                "kubernetes",
                e.to_string(),
                "run in the controller's pod or set KUBECONFIG to a context of the cluster",
            ));
        }
    };
    let own = args
        .lease_namespace()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let watched = args.watch_namespace();
    let scope = Scope {
        watch_namespace: watched.as_deref(),
        own_namespace: &own,
        lease_name: &args.leader_election_lease_name,
        leader_elect: args.leader_elect,
    };
    rights_checks(&client, &rights::required(&scope), report).await;
    report.push(namespace_finding(&client, watched.as_deref()).await);
    let record = format!("{}-tenant", args.leader_election_lease_name);
    report.push(pause_record_finding(&client, &own, &record).await);
}

/// One line per resource: the verbs granted, or the first one refused.
async fn rights_checks(client: &kube::Client, rights: &[Right], report: &mut Report) {
    let mut rights = rights.iter().peekable();
    while let Some(first) = rights.next() {
        let mut group = vec![first];
        while let Some(next) = rights.next_if(|r| same_resource(r, first)) {
            group.push(next);
        }
        let mut verbs = Vec::new();
        let mut refused = None;
        for right in group {
            match allowed(client, right).await {
                Ok(true) => verbs.push(right.verb),
                Ok(false) => {
                    refused = refused.or(Some(rights_failure(right, "not allowed".into())))
                }
                Err(e) => refused = refused.or(Some(rights_failure(right, e.to_string()))),
            }
        }
        let check = format!("rbac {}", first.resource_path());
        report.push(refused.unwrap_or_else(|| {
            Finding::ok(check, format!("{} {}", verbs.join(", "), where_(first)))
        }));
    }
}

fn same_resource(a: &Right, b: &Right) -> bool {
    (a.resource, a.subresource, &a.namespace) == (b.resource, b.subresource, &b.namespace)
}

/// A refused right with the chart's grant that gives it.
pub fn rights_failure(right: &Right, why: String) -> Finding {
    let what = match &right.name {
        Some(name) => format!("{} {} {name}", right.verb, right.resource_path()),
        None => format!("{} {}", right.verb, right.resource_path()),
    };
    Finding::fail(
        format!("rbac {}", right.resource_path()),
        format!("cannot {what} {}: {why}", where_(right)),
        "install the chart's RBAC (rbac.create=true, with watchNamespace and the release namespace as used here) or bind the controller's service account to an equivalent Role",
    )
}

fn where_(right: &Right) -> String {
    match &right.namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "in all namespaces".to_owned(),
    }
}

async fn allowed(client: &kube::Client, right: &Right) -> Result<bool, kube::Error> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(right.group.to_owned()),
                resource: Some(right.resource.to_owned()),
                subresource: right.subresource.map(str::to_owned),
                verb: Some(right.verb.to_owned()),
                namespace: right.namespace.clone(),
                name: right.name.clone(),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

async fn namespace_finding(client: &kube::Client, watched: Option<&str>) -> Finding {
    let Some(ns) = watched else {
        return Finding::ok("namespace", "all namespaces are watched");
    };
    let api: Api<Namespace> = Api::all(client.clone());
    match api.get_opt(ns).await {
        Ok(Some(_)) => Finding::ok("namespace", format!("{ns} exists")),
        Ok(None) => Finding::fail(
            "namespace",
            format!("namespace {ns} does not exist"),
            format!(
                "create it (kubectl create namespace {ns}) or set --namespace/watchNamespace to the namespace of the resources"
            ),
        ),
        // Reading namespaces is not a right the controller needs: ask the namespace's
        // admission instead, with a right it has.
        Err(kube::Error::Api(e)) if e.code == 403 => namespace_by_dry_run(client, ns).await,
        Err(e) => Finding::fail(
            "namespace",
            e.to_string(),
            "check the connection to the API server",
        ),
    }
}

/// Whether `ns` exists, asked without `get` on namespaces: a dry-run create of an Event there
/// (the controller creates Events in the watched namespace), which the API server's namespace
/// admission refuses with 404 when the namespace does not exist. Nothing is stored.
async fn namespace_by_dry_run(client: &kube::Client, ns: &str) -> Finding {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&dry_run, &check_event(ns)).await {
        Ok(_) => Finding::ok(
            "namespace",
            format!("{ns} exists (a dry-run Event was admitted there)"),
        ),
        Err(kube::Error::Api(e)) if e.code == 404 => Finding::fail(
            "namespace",
            format!("namespace {ns} does not exist"),
            format!(
                "create it (kubectl create namespace {ns}) or set --namespace/watchNamespace to the namespace of the resources"
            ),
        ),
        Err(e) => Finding::fail(
            "namespace",
            format!(
                "{ns} not verifiable: neither get on namespaces nor a dry-run Event there ({e})"
            ),
            "install the chart's RBAC (the controller creates Events in the watched namespace)",
        ),
    }
}

/// The Event of the dry run: valid as the controller's own are, about no real object.
fn check_event(ns: &str) -> Event {
    Event {
        metadata: ObjectMeta {
            generate_name: Some("guestreset-check-".to_owned()),
            namespace: Some(ns.to_owned()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(jiff::Timestamp::now())),
        reporting_controller: Some(crate::resource::MANAGER.to_owned()),
        reporting_instance: Some("guestreset-check".to_owned()),
        action: Some("Check".to_owned()),
        reason: Some("Check".to_owned()),
        type_: Some("Normal".to_owned()),
        note: Some("guestreset check: does the namespace exist? (dry run, not stored)".to_owned()),
        regarding: Some(ObjectReference {
            api_version: Some(format!("{}/v1alpha1", crate::resource::GROUP)),
            kind: Some("GuestRedemptionReset".to_owned()),
            name: Some("guestreset-check".to_owned()),
            namespace: Some(ns.to_owned()),
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}

async fn pause_record_finding(client: &kube::Client, ns: &str, name: &str) -> Finding {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(_)) => Finding::ok("pause record", format!("ConfigMap {ns}/{name} readable")),
        Ok(None) => Finding::ok(
            "pause record",
            format!("ConfigMap {ns}/{name} absent (no pause recorded)"),
        ),
        Err(e) => Finding::fail(
            "pause record",
            format!("cannot read ConfigMap {ns}/{name}: {e}"),
            "install the chart's <release>-tenant-state Role and RoleBinding in the controller's namespace",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permission_finding_names_what_is_missing() {
        assert!(roles_finding(Ok(vec!["User.ReadWrite.All".into()])).passed());
        let none = roles_finding(Ok(vec![]));
        assert!(
            !none.passed() && none.detail.contains("no roles claim"),
            "{none}"
        );
        let read = roles_finding(Ok(vec!["User.Read.All".into()]));
        assert!(
            read.detail
                .contains("User.Read.All without User.ReadWrite.All"),
            "{read}"
        );
        assert!(read.fix.as_deref().unwrap().contains("admin consent"));
        assert!(!roles_finding(Err(ClaimsError::NotAJwt)).passed());
    }

    #[test]
    fn a_refused_right_says_which_and_where() {
        let right = Right {
            group: "coordination.k8s.io",
            resource: "leases",
            subresource: None,
            verb: "patch",
            namespace: Some("guestreset".into()),
            name: Some("guestreset".into()),
        };
        let line = rights_failure(&right, "not allowed".into()).to_string();
        assert!(
            line.starts_with("FAIL rbac leases: cannot patch leases guestreset in namespace guestreset: not allowed; fix: "),
            "{line}"
        );
    }
}
