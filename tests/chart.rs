//! The Helm chart (`charts/guestreset`), the GitOps example (`examples/gitops`) and the
//! rights they grant, checked with a real Helm (built by `scripts/helm.sh`), a real
//! kube-apiserver with RBAC and Pod Security admission, and the kubectl of the same
//! release: lint, the values schema, server-side apply of the rendered manifests, Helm's
//! own install/upgrade/uninstall, `kubectl auth can-i` as the controller's ServiceAccount,
//! the Deployment's hardening (parsed, and enforced by Pod Security admission), and that
//! the binary accepts every argument the chart passes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use futures::future::join_all;
use guestreset_testsupport::chart::{
    CHART_DIR, TOOL_DEADLINE, chart_dir, documents, example_rbac, helm,
};
use guestreset_testsupport::{
    ControlPlane, describe, path_str, pinned_kubernetes_version, repo_root, run_bounded, wait_until,
};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const CRD_FILE: &str = "crds/guestredemptionresets.guestreset.io.yaml";
/// The migrations' resource, for the controller's rights.
const MIGRATIONS: &str = "guestdomainmigrations.guestreset.io";
const MIGRATION_CRD_FILE: &str = "crds/guestdomainmigrations.guestreset.io.yaml";
const CRD_NAME: &str = "guestredemptionresets.guestreset.io";
/// Resources named in RBAC checks.
const LEASES: &str = "leases.coordination.k8s.io";
const CRDS: &str = "customresourcedefinitions.apiextensions.k8s.io";
const CLUSTER_ROLES: &str = "clusterroles.rbac.authorization.k8s.io";
const ROLES: &str = "roles.rbac.authorization.k8s.io";
const POLICIES: &str = "validatingadmissionpolicies.admissionregistration.k8s.io";
const POLICY_BINDINGS: &str = "validatingadmissionpolicybindings.admissionregistration.k8s.io";
const SUBJECT_ACCESS_REVIEWS: &str = "subjectaccessreviews.authorization.k8s.io";
const GITOPS_DIR: &str = "examples/gitops";
const FIELD_MANAGER: &str = "guestreset-chart-test";
/// Bound on what the API server does asynchronously (establishing the CRD).
const SETTLE: Duration = Duration::from_secs(90);

const TENANT_ID: &str = "8f1c2d3e-4b5a-4c6d-9e8f-0a1b2c3d4e5f";
const CLIENT_ID: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

// ------------------------------------------------------------------ helm

/// `helm template RELEASE charts/guestreset -n NAMESPACE -f <values>` for the pinned
/// Kubernetes version: the manifests, or helm's error.
async fn render(release: &str, namespace: &str, values: &str) -> Result<String, String> {
    render_with(release, namespace, values, &[]).await
}

async fn render_with(
    release: &str,
    namespace: &str,
    values: &str,
    extra: &[&str],
) -> Result<String, String> {
    helm().template(release, namespace, values, extra).await
}

async fn render_ok(release: &str, namespace: &str, values: &str) -> Manifests {
    let text = render(release, namespace, values)
        .await
        .unwrap_or_else(|e| panic!("helm template with values\n{values}\nfailed: {e}"));
    Manifests::parse(&text)
}

/// The rendered objects, as JSON.
struct Manifests {
    text: String,
    objects: Vec<Value>,
}

impl Manifests {
    fn parse(text: &str) -> Manifests {
        Manifests {
            text: text.to_owned(),
            objects: documents(text),
        }
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        match self.of_kind(kind).as_slice() {
            [one] => one,
            other => panic!(
                "expected exactly one {kind}, rendered {}:\n{}",
                other.len(),
                self.text
            ),
        }
    }

    fn kinds(&self) -> BTreeSet<String> {
        self.objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    fn deployment(&self) -> &Value {
        self.one("Deployment")
    }

    fn container(&self) -> &Value {
        &self.deployment()["spec"]["template"]["spec"]["containers"][0]
    }

    fn args(&self) -> Vec<String> {
        self.container()["args"]
            .as_array()
            .expect("container args")
            .iter()
            .map(|a| a.as_str().expect("string arg").to_owned())
            .collect()
    }

    fn env(&self, name: &str) -> Option<&Value> {
        self.container()["env"]
            .as_array()
            .expect("container env")
            .iter()
            .find(|e| e["name"] == name)
    }

    fn service_account_name(&self) -> String {
        self.deployment()["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .expect("serviceAccountName")
            .to_owned()
    }

    /// The manifests without the kinds this API server does not serve.
    fn yaml_without(&self, kinds: &[&str]) -> String {
        self.objects
            .iter()
            .filter(|o| !kinds.iter().any(|k| o["kind"] == *k))
            .map(|o| serde_yaml::to_string(o).expect("serialise object"))
            .collect::<Vec<_>>()
            .join("---\n")
    }
}

// ------------------------------------------------------------------ kubectl

/// The control plane with the chart's CRD installed and served; the first caller
/// installs it, later callers wait for that.
async fn control_plane() -> &'static ControlPlane {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    let cp = ControlPlane::shared().await;
    INSTALLED
        .get_or_init(|| async {
            let crd = chart_dir().join("crds").join(crd_file_name());
            let out = kubectl(cp, &["apply", "--server-side", "-f", path_str(&crd)], None).await;
            assert!(out.status.success(), "install the CRD: {}", describe(&out));
            wait_until("the CRD to be served", SETTLE, || async {
                let out = kubectl(cp, &["get", "crd", CRD_NAME, "-o", "json"], None).await;
                let crd: Value = serde_json::from_slice(&out.stdout)
                    .map_err(|e| format!("{e}; {}", describe(&out)))?;
                let established = crd["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Established" && c["status"] == "True");
                Ok::<_, String>(established.then_some(()))
            })
            .await;
        })
        .await;
    cp
}

fn crd_file_name() -> &'static str {
    Path::new(CRD_FILE)
        .file_name()
        .and_then(|n| n.to_str())
        .expect("CRD file name")
}

/// `kubectl ARGS` with a per-request timeout, a discovery cache private to this test
/// binary's server, and `stdin` fed to it when given.
async fn kubectl(cp: &ControlPlane, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = tokio::process::Command::from(cp.kubectl());
    command
        .arg(format!(
            "--cache-dir={}",
            cp.dir().join("kubectl-cache").display()
        ))
        .arg("--request-timeout=30s")
        .args(args)
        .kill_on_drop(true);
    run_bounded(command, stdin, &format!("kubectl {args:?}"), TOOL_DEADLINE).await
}

/// Server-side apply of `yaml`; panics with the server's answer on failure.
async fn apply(cp: &ControlPlane, yaml: &str) {
    let out = apply_result(cp, yaml).await;
    assert!(
        out.status.success(),
        "server-side apply failed: {}\nmanifests:\n{yaml}",
        describe(&out)
    );
}

async fn apply_result(cp: &ControlPlane, yaml: &str) -> Output {
    kubectl(
        cp,
        &[
            "apply",
            "--server-side",
            &format!("--field-manager={FIELD_MANAGER}"),
            "-f",
            "-",
        ],
        Some(yaml),
    )
    .await
}

// ------------------------------------------------------------------ rights

#[derive(Clone, Copy, Debug)]
enum Scope<'a> {
    Namespace(&'a str),
    AllNamespaces,
}

/// One `kubectl auth can-i` question and the answer the chart must give.
#[derive(Debug)]
struct Right<'a> {
    allowed: bool,
    verb: &'a str,
    /// `resource.group`, optionally `/name`.
    resource: String,
    subresource: Option<&'a str>,
    scope: Scope<'a>,
}

fn right<'a>(allowed: bool, verb: &'a str, resource: &str, scope: Scope<'a>) -> Right<'a> {
    Right {
        allowed,
        verb,
        resource: resource.to_owned(),
        subresource: None,
        scope,
    }
}

fn status_right<'a>(allowed: bool, verb: &'a str, scope: Scope<'a>) -> Right<'a> {
    Right {
        subresource: Some("status"),
        ..right(allowed, verb, CRD_NAME, scope)
    }
}

/// Asks every question as `user` (concurrently) and fails listing every wrong answer.
async fn expect_rights(cp: &ControlPlane, user: &str, rights: &[Right<'_>]) {
    expect_rights_in_groups(cp, user, &[], rights).await
}

/// [`expect_rights`] as `user` in `groups`.
async fn expect_rights_in_groups(
    cp: &ControlPlane,
    user: &str,
    groups: &[&str],
    rights: &[Right<'_>],
) {
    let as_groups: Vec<String> = groups.iter().map(|g| format!("--as-group={g}")).collect();
    let as_groups = &as_groups;
    let answers = join_all(rights.iter().map(|r| async move {
        let as_user = format!("--as={user}");
        let mut args = vec!["auth", "can-i", r.verb, r.resource.as_str(), &as_user];
        args.extend(as_groups.iter().map(String::as_str));
        let subresource;
        if let Some(sub) = r.subresource {
            subresource = format!("--subresource={sub}");
            args.push(&subresource);
        }
        match r.scope {
            Scope::Namespace(ns) => args.extend(["--namespace", ns]),
            Scope::AllNamespaces => args.push("--all-namespaces"),
        }
        let out = kubectl(cp, &args, None).await;
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let allowed = match (out.status.success(), answer.as_str()) {
            (true, "yes") => true,
            (false, a) if a == "no" || a.starts_with("no -") => false,
            _ => panic!("kubectl {args:?} gave no answer: {}", describe(&out)),
        };
        (r, allowed)
    }))
    .await;
    let wrong: Vec<String> = answers
        .iter()
        .filter(|(r, allowed)| r.allowed != *allowed)
        .map(|(r, allowed)| {
            format!(
                "  {} {}{} in {:?}: got {}, want {}",
                r.verb,
                r.resource,
                r.subresource.map(|s| format!("/{s}")).unwrap_or_default(),
                r.scope,
                yes_no(*allowed),
                yes_no(r.allowed)
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "wrong rights for {user}:\n{}",
        wrong.join("\n")
    );
}

/// A hardening setting and how to remove it from a pod spec.
type Weakening = (&'static str, fn(&mut Value));

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

// ------------------------------------------------------------------ misc

fn chart_yaml() -> Value {
    let text = std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("read Chart.yaml");
    serde_yaml::from_str(&text).expect("parse Chart.yaml")
}

/// Every key/value of `subset` is in `labels`.
fn labels_contain(labels: &Value, subset: &Value) -> bool {
    let (Some(labels), Some(subset)) = (labels.as_object(), subset.as_object()) else {
        return false;
    };
    !subset.is_empty() && subset.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// What OpenShift's restricted SCC needs: no fixed user or group id, it assigns them.
const OPENSHIFT: &str = "podSecurityContext:\n  runAsUser: null\n  runAsGroup: null\n  fsGroup: null\nsecurityContext:\n  runAsUser: null\n  runAsGroup: null\n";

/// A NetworkPolicy with every option set: a Prometheus namespace, the API server's address,
/// Graph through a proxy's address, the cluster DNS by label, and the proxy's port.
const STRICT_NETWORK: &str = "networkPolicy:
  enabled: true
  metrics:
    from:
      - namespaceSelector:
          matchLabels:
            kubernetes.io/metadata.name: monitoring
  apiServer:
    cidrs: [10.0.0.1/32]
  graph:
    cidrs: [192.0.2.10/32, 2001:db8::10/128]
  dns:
    to:
      - namespaceSelector: {}
        podSelector:
          matchLabels:
            k8s-app: kube-dns
    ports: [53, 5353]
  extraEgress:
    - to:
        - ipBlock:
            cidr: 192.0.2.10/32
      ports:
        - port: 3128
          protocol: TCP
";

fn workload_identity_values() -> String {
    format!(
        "azure:\n  tenantId: {TENANT_ID}\n  clientId: {CLIENT_ID}\n  workloadIdentity:\n    enabled: true\n"
    )
}

// ------------------------------------------------------------------ tests

/// The chart ships the repository's CRDs, unchanged: a drift would install an old schema.
#[test]
fn chart_crd_is_the_repository_crd() {
    let root = repo_root();
    for file in [CRD_FILE, MIGRATION_CRD_FILE] {
        let repository = std::fs::read(root.join(file)).expect("read the repository CRD");
        let name = Path::new(file).file_name().expect("CRD file name");
        let in_chart = chart_dir().join("crds").join(name);
        let chart =
            std::fs::read(&in_chart).unwrap_or_else(|e| panic!("read {}: {e}", in_chart.display()));
        assert!(
            repository == chart,
            "{} differs from {file}; copy it: cp {file} {CHART_DIR}/crds/",
            in_chart.display()
        );
    }
    let crds: Vec<_> = std::fs::read_dir(chart_dir().join("crds"))
        .expect("read the chart's crds/")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        crds.len(),
        2,
        "the chart's crds/ holds only the two CRDs: {crds:?}"
    );
}

/// The image the chart deploys by default is the release of this source tree.
#[test]
fn chart_app_version_is_the_crate_version() {
    let chart = chart_yaml();
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "Chart.yaml appVersion must follow Cargo.toml's version"
    );
}

/// `helm lint --strict` (warnings are errors) for every supported shape of the values.
#[tokio::test]
async fn lint_strict_passes_for_each_variant() {
    let helm = helm();
    let variants: Vec<(&str, String)> = vec![
        ("default values", String::new()),
        ("workload identity", workload_identity_values()),
        (
            "single namespace",
            "watchNamespace: identity\nallowedEmailDomains: [newco.example, partner.example]\n"
                .to_owned(),
        ),
        (
            "client secret from an existing Secret",
            format!(
                "azure:\n  tenantId: {TENANT_ID}\n  clientId: {CLIENT_ID}\n  clientSecret:\n    existingSecret: graph-app\n"
            ),
        ),
        (
            "four eyes",
            "requireApproval: true\nwatchNamespace: identity\nadmissionPolicy:\n  controllerUsername: system:serviceaccount:ops:guestreset\n".to_owned(),
        ),
        ("OpenShift's restricted SCC", OPENSHIFT.to_owned()),
        ("NetworkPolicy", STRICT_NETWORK.to_owned()),
        (
            "everything optional on",
            format!(
                "replicas: 3\nazure:\n  tenantId: contoso.onmicrosoft.com\n  clientId: {CLIENT_ID}\n  authorityHost: https://login.microsoftonline.us\n  clientCertificate:\n    existingSecret: graph-cert\n    passwordKey: password\ncaBundle:\n  configMapName: proxy-ca\nmetrics:\n  serviceMonitor:\n    enabled: true\n    labels:\n      release: prometheus\npodDisruptionBudget:\n  enabled: true\nimage:\n  digest: sha256:{}\nextraEnv:\n  - name: HTTPS_PROXY\n    value: http://proxy.internal:3128\n",
                "0".repeat(64)
            ),
        ),
    ];
    let kube_version = pinned_kubernetes_version();
    for (name, values) in &variants {
        let file = helm.values_file(values);
        let out = helm
            .run(&[
                "lint",
                "--strict",
                "--kube-version",
                &kube_version,
                path_str(&chart_dir()),
                "--values",
                path_str(&file),
            ])
            .await;
        assert!(
            out.status.success(),
            "helm lint --strict failed for {name}: {}",
            describe(&out)
        );
    }
}

/// `values.schema.json` (and, for what a schema cannot say clearly, the chart's own
/// checks) refuses values that would render a broken or unsafe release, and the error
/// names the offending value. The neighbouring good values render, so each refusal is
/// the bad value's doing.
#[tokio::test]
async fn bad_values_are_refused_with_the_value_named() {
    let wi = workload_identity_values();
    let ids = format!("azure:\n  tenantId: {TENANT_ID}\n  clientId: {CLIENT_ID}\n");
    // (case, values, what the error must say)
    let cases: Vec<(&str, String, &str)> = vec![
        ("replicas as text", "replicas: two\n".into(), "at '/replicas': got string, want integer"),
        ("unknown log format", "logFormat: xml\n".into(), "at '/logFormat': value must be one of"),
        ("misspelt key", "replica: 2\n".into(), "additional properties 'replica' not allowed"),
        (
            "misspelt nested key",
            "leaderElection:\n  enable: false\n".into(),
            "at '/leaderElection': additional properties 'enable' not allowed",
        ),
        (
            "renew deadline not a duration",
            "leaderElection:\n  renewDeadline: soon\n".into(),
            "at '/leaderElection/renewDeadline'",
        ),
        (
            "two replicas without leader election",
            "leaderElection:\n  enabled: false\n".into(),
            "at '/replicas': maximum: got 2, want 1",
        ),
        (
            "workload identity without a client id",
            "azure:\n  workloadIdentity:\n    enabled: true\n".into(),
            "at '/azure/clientId': minLength",
        ),
        (
            "client secret without tenant",
            format!("azure:\n  clientId: {CLIENT_ID}\n  clientSecret:\n    value: s3cr3t\n"),
            "at '/azure/tenantId': minLength",
        ),
        (
            "client id not a GUID",
            "azure:\n  clientId: my-app\n".into(),
            "at '/azure/clientId'",
        ),
        ("privileged metrics port", "metrics:\n  port: 80\n".into(), "at '/metrics/port': minimum"),
        (
            "grace period shorter than a Graph call",
            "terminationGracePeriodSeconds: 10\n".into(),
            "at '/terminationGracePeriodSeconds': minimum",
        ),
        ("duration in words", "graph:\n  timeout: 30 seconds\n".into(), "at '/graph/timeout'"),
        (
            "plain-http Graph",
            "graph:\n  endpoint: http://graph.microsoft.com\n".into(),
            "at '/graph/endpoint'",
        ),
        ("namespace with capitals", "watchNamespace: Identity\n".into(), "at '/watchNamespace'"),
        ("wildcard domain", "allowedEmailDomains: ['*']\n".into(), "at '/allowedEmailDomains/0'"),
        ("digest that is a tag", "image:\n  digest: latest\n".into(), "at '/image/digest'"),
        (
            "pull policy",
            "image:\n  pullPolicy: Sometimes\n".into(),
            "at '/image/pullPolicy': value must be one of",
        ),
        (
            "zero write rate",
            "writeLimit:\n  perMinute: 0\n".into(),
            "at '/writeLimit/perMinute': minimum",
        ),
        (
            "approval without the policy that enforces it",
            "requireApproval: true\nadmissionPolicy:\n  enabled: false\n".into(),
            "at '/admissionPolicy/enabled': value must be true",
        ),
        (
            "approval as text",
            "requireApproval: \"yes\"\n".into(),
            "at '/requireApproval': got string, want boolean",
        ),
        (
            "misspelt policy key",
            "admissionPolicy:\n  enable: false\n".into(),
            "at '/admissionPolicy': additional properties 'enable' not allowed",
        ),
        (
            "controller user name with a line break",
            "admissionPolicy:\n  controllerUsername: \"guestreset\\nadmin\"\n".into(),
            "at '/admissionPolicy/controllerUsername'",
        ),
        (
            "ServiceMonitor without its Service",
            "metrics:\n  service:\n    enabled: false\n  serviceMonitor:\n    enabled: true\n".into(),
            "at '/metrics/service/enabled': value must be true",
        ),
        (
            "extraEnv entry without a name",
            "extraEnv:\n  - value: x\n".into(),
            "at '/extraEnv/0': missing property 'name'",
        ),
        (
            "two credential methods",
            format!("{wi}  clientSecret:\n    existingSecret: graph-app\n"),
            "azure: choose one credential method, got workloadIdentity and clientSecret",
        ),
        (
            "secret given twice",
            format!("{ids}  clientSecret:\n    existingSecret: graph-app\n    value: s3cr3t\n"),
            "azure.clientSecret: set existingSecret or value, not both",
        ),
        (
            "root user",
            "podSecurityContext:\n  runAsUser: 0\n".into(),
            "at '/podSecurityContext/runAsUser': minimum",
        ),
        (
            "privileged container",
            "securityContext:\n  privileged: true\n".into(),
            "at '/securityContext/privileged'",
        ),
        (
            "API server address without a prefix length",
            "networkPolicy:\n  apiServer:\n    cidrs: [10.0.0.1]\n".into(),
            "at '/networkPolicy/apiServer/cidrs/0'",
        ),
        (
            "misspelt NetworkPolicy key",
            "networkPolicy:\n  enable: true\n".into(),
            "at '/networkPolicy': additional properties 'enable' not allowed",
        ),
        (
            "DNS without a port",
            "networkPolicy:\n  dns:\n    ports: []\n".into(),
            "at '/networkPolicy/dns/ports': minItems",
        ),
        (
            "test timeout in words",
            "helmTest:\n  timeout: soon\n".into(),
            "at '/helmTest/timeout'",
        ),
        (
            "a PodDisruptionBudget that blocks every drain",
            "replicas: 1\nleaderElection:\n  enabled: false\npodDisruptionBudget:\n  enabled: true\n".into(),
            "podDisruptionBudget.minAvailable must be below replicas",
        ),
    ];
    let mut wrong = Vec::new();
    for (case, values, says) in &cases {
        match render("values", "guestreset", values).await {
            Ok(_) => wrong.push(format!("  {case}: accepted\n{values}")),
            Err(e) if !e.contains(says) => {
                wrong.push(format!("  {case}: refused without saying {says:?}: {e}"))
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "bad values:\n{}", wrong.join("\n"));

    for good in [
        "replicas: 1\nleaderElection:\n  enabled: false\npodDisruptionBudget:\n  enabled: false\n"
            .to_owned(),
        wi.clone(),
        format!("{ids}  clientSecret:\n    value: s3cr3t\n"),
        format!("{ids}  clientSecret:\n    existingSecret: graph-app\n"),
        "graph:\n  timeout: 1m30s\nmetrics:\n  port: 9090\nterminationGracePeriodSeconds: 35\n"
            .to_owned(),
        "watchNamespace: identity\nallowedEmailDomains: [newco.example]\n".to_owned(),
        "podDisruptionBudget:\n  enabled: true\nmetrics:\n  serviceMonitor:\n    enabled: true\n"
            .to_owned(),
        "extraEnv:\n  - name: HTTPS_PROXY\n    value: http://proxy:3128\n".to_owned(),
        "requireApproval: true\n".to_owned(),
        "admissionPolicy:\n  enabled: false\n".to_owned(),
        "admissionPolicy:\n  controllerUsername: system:serviceaccount:ops:guestreset\n".to_owned(),
        OPENSHIFT.to_owned(),
        STRICT_NETWORK.to_owned(),
    ] {
        render("values", "guestreset", &good)
            .await
            .unwrap_or_else(|e| panic!("good values\n{good}\nrefused: {e}"));
    }
}

/// The Deployment as rendered by default runs hardened, with the probes, ports,
/// downward-API variables and leader election the controller relies on.
#[tokio::test]
async fn deployment_is_hardened() {
    let m = render_ok("guestreset", "guestreset-system", "").await;
    let deployment = m.deployment();
    let pod = &deployment["spec"]["template"]["spec"];
    let c = m.container();

    assert_eq!(deployment["spec"]["replicas"], 2);
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(0);
    assert!(grace >= 35, "terminationGracePeriodSeconds {grace} < 35");

    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "pod securityContext: {psc}");
    assert_eq!(psc["runAsUser"], 65532, "pod securityContext: {psc}");
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "container securityContext: {sc}");
    assert_eq!(sc["runAsUser"], 65532, "container securityContext: {sc}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
    assert_eq!(sc["privileged"], false, "{sc}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{sc}");
    assert!(sc["capabilities"].get("add").is_none(), "{sc}");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{sc}");
    assert!(pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none());

    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}})
    );

    let app_version = chart_yaml()["appVersion"]
        .as_str()
        .expect("appVersion")
        .to_owned();
    assert_eq!(
        c["image"],
        format!("ghcr.io/guestreset/guestreset:{app_version}")
    );

    assert_eq!(
        c["ports"],
        json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );

    for (var, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        assert_eq!(
            m.env(var).map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]),
            Some(&json!(field)),
            "{var} from the downward API"
        );
    }

    let args = m.args();
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    for expected in [
        "--leader-elect",
        "--leader-election-lease-name=guestreset",
        "--leader-election-lease-duration=15s",
        "--leader-election-renew-deadline=10s",
        "--metrics-addr=0.0.0.0:8080",
        "--log-format=json",
        "--max-writes-per-minute=6",
        "--write-burst=3",
    ] {
        assert!(
            args.iter().any(|a| a == expected),
            "{expected} missing from {args:?}"
        );
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "watches all namespaces by default: {args:?}"
    );
    // No credential is configured by default: the pod falls back to managed identity.
    assert!(m.env("AZURE_CLIENT_SECRET").is_none() && m.env("AZURE_CLIENT_ID").is_none());

    // The metrics Service reaches these pods on the named port.
    let service = m.one("Service");
    assert!(
        labels_contain(
            &deployment["spec"]["template"]["metadata"]["labels"],
            &service["spec"]["selector"]
        ),
        "Service selector {} does not select the pods",
        service["spec"]["selector"]
    );
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    assert!(
        labels_contain(
            &deployment["spec"]["template"]["metadata"]["labels"],
            &deployment["spec"]["selector"]["matchLabels"]
        ),
        "the Deployment's selector must match its pods"
    );

    // Optional objects stay off by default (the PodDisruptionBudget is on: 2 replicas).
    let kinds = m.kinds();
    for absent in [
        "ServiceMonitor",
        "NetworkPolicy",
        "Secret",
        "CustomResourceDefinition",
    ] {
        assert!(
            !kinds.contains(absent),
            "{absent} rendered by default: {kinds:?}"
        );
    }
}

/// Every argument the chart passes is accepted by `guestreset run` (with the values it
/// renders): clap parses and validates arguments up to `--help`, then prints the help.
#[tokio::test]
async fn the_binary_accepts_the_rendered_arguments() {
    let variants = [
        String::new(),
        format!(
            "watchNamespace: identity\nallowedEmailDomains: [newco.example, partner.example]\ngraph:\n  scope: https://graph.microsoft.com/.default\n  timeout: 1m30s\nlogFormat: text\n{}",
            workload_identity_values()
        ),
        "replicas: 1\nleaderElection:\n  enabled: false\npodDisruptionBudget:\n  enabled: false\n"
            .to_owned(),
        "requireApproval: true\n".to_owned(),
    ];
    for values in &variants {
        let m = render_ok("guestreset", "guestreset-system", values).await;
        let args = m.args();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_guestreset"))
            .args(&args)
            .arg("--help")
            // Only the arguments count: no variable of this process may supply a value.
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run guestreset");
        assert!(
            out.status.success(),
            "guestreset refused the chart's arguments {args:?}: {}",
            describe(&out)
        );
        if values.contains("requireApproval: true") {
            assert!(args.iter().any(|a| a == "--require-approval"), "{args:?}");
            assert!(
                args.iter().any(|a| a == "--admission-policy=guestreset"),
                "the policy the chart installs is the one the controller checks: {args:?}"
            );
        }
    }
    // The probe itself can fail: a flag the binary does not know is refused.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_guestreset"))
        .args(["run", "--no-such-flag", "--help"])
        .env_clear()
        .output()
        .await
        .expect("run guestreset");
    assert!(!out.status.success(), "an unknown flag was accepted");
}

/// The default install applies to a real API server, and its ServiceAccount holds every
/// right the controller uses, everywhere, and nothing more.
#[tokio::test]
async fn default_install_grants_exactly_the_controller_rights() {
    let cp = control_plane().await;
    let ns = cp.namespace("chart-default").await;
    let other = cp.namespace("chart-other").await;
    let release = ns.clone();
    let text = render_with(&release, &ns, "", &["--include-crds"])
        .await
        .unwrap_or_else(|e| panic!("helm template: {e}"));
    let m = Manifests::parse(&text);
    assert!(m.kinds().contains("ClusterRole") && m.kinds().contains("ClusterRoleBinding"));
    apply(cp, &m.text).await;

    let sa = m.service_account_name();
    let user = service_account_user(&ns, &sa);
    let lease = format!("leases.coordination.k8s.io/{release}-guestreset");
    let other_lease = "leases.coordination.k8s.io/someone-else";
    let mut rights = Vec::new();
    for scope in [
        Scope::Namespace(&other),
        Scope::Namespace(&ns),
        Scope::AllNamespaces,
    ] {
        for verb in ["get", "list", "watch"] {
            rights.push(right(true, verb, CRD_NAME, scope));
        }
        for verb in ["get", "update", "patch"] {
            rights.push(status_right(true, verb, scope));
        }
        for verb in ["create", "patch"] {
            rights.push(right(true, verb, "events.events.k8s.io", scope));
            rights.push(right(true, verb, "secrets", scope));
        }
        for verb in ["get", "list", "watch", "delete", "update"] {
            rights.push(right(false, verb, "secrets", scope));
        }
        for verb in ["update", "patch", "delete", "deletecollection"] {
            rights.push(right(false, verb, CRD_NAME, scope));
        }
        // Domain migrations: read them, write their status, create their resets, keep their
        // plan in a ConfigMap and read the mapping ConfigMap they name.
        rights.push(right(true, "create", CRD_NAME, scope));
        for verb in ["get", "list", "watch"] {
            rights.push(right(true, verb, MIGRATIONS, scope));
        }
        for verb in ["create", "update", "patch", "delete"] {
            rights.push(right(false, verb, MIGRATIONS, scope));
        }
        for verb in ["get", "create", "patch"] {
            rights.push(right(true, verb, "configmaps", scope));
        }
        rights.push(right(false, "delete", "configmaps", scope));
        rights.push(status_right(false, "create", scope));
        rights.push(right(false, "approve", CRD_NAME, scope));
        rights.push(right(false, "approve", MIGRATIONS, scope));
        rights.push(right(false, "create", "events", scope));
        rights.push(right(false, "list", "pods", scope));
        rights.push(right(false, "get", "serviceaccounts", scope));
    }
    let tenant_state = format!("configmaps/{release}-guestreset-tenant");
    rights.extend([
        right(true, "get", &tenant_state, Scope::Namespace(&ns)),
        right(true, "list", &tenant_state, Scope::Namespace(&ns)),
        right(true, "watch", &tenant_state, Scope::Namespace(&ns)),
        right(false, "list", "configmaps", Scope::Namespace(&ns)),
        right(false, "watch", "configmaps", Scope::Namespace(&ns)),
        right(
            false,
            "watch",
            "configmaps/someone-else",
            Scope::Namespace(&ns),
        ),
        right(true, "update", &tenant_state, Scope::Namespace(&ns)),
        right(true, "delete", &tenant_state, Scope::Namespace(&ns)),
        right(true, "create", "configmaps", Scope::Namespace(&ns)),
        // Watched everywhere (no watchNamespace), a migration's mapping and plan ConfigMaps
        // may be in any namespace: get, create and patch on ConfigMaps, but never update,
        // delete, list or watch of another's.
        right(
            true,
            "get",
            "configmaps/someone-else",
            Scope::Namespace(&ns),
        ),
        right(
            false,
            "update",
            "configmaps/someone-else",
            Scope::Namespace(&ns),
        ),
        right(false, "update", &tenant_state, Scope::Namespace(&other)),
        right(false, "delete", &tenant_state, Scope::Namespace(&other)),
        right(true, "create", "configmaps", Scope::Namespace(&other)),
        right(true, "get", &lease, Scope::Namespace(&ns)),
        right(true, "patch", &lease, Scope::Namespace(&ns)),
        right(true, "create", LEASES, Scope::Namespace(&ns)),
        right(false, "update", &lease, Scope::Namespace(&ns)),
        right(false, "delete", &lease, Scope::Namespace(&ns)),
        right(false, "get", other_lease, Scope::Namespace(&ns)),
        right(false, "patch", other_lease, Scope::Namespace(&ns)),
        right(false, "list", LEASES, Scope::Namespace(&ns)),
        right(false, "get", &lease, Scope::Namespace(&other)),
        right(false, "create", LEASES, Scope::Namespace(&other)),
        right(false, "patch", &lease, Scope::Namespace(&other)),
        right(false, "create", LEASES, Scope::AllNamespaces),
        right(false, "get", CRDS, Scope::AllNamespaces),
        // Approval is off: no second look at approvers, no reading of the policy.
        right(
            false,
            "create",
            SUBJECT_ACCESS_REVIEWS,
            Scope::AllNamespaces,
        ),
        right(
            false,
            "get",
            &format!("{POLICIES}/{release}-guestreset"),
            Scope::AllNamespaces,
        ),
        right(false, "create", CLUSTER_ROLES, Scope::AllNamespaces),
        right(false, "escalate", ROLES, Scope::Namespace(&ns)),
        right(
            false,
            "impersonate",
            "serviceaccounts",
            Scope::Namespace(&ns),
        ),
    ]);
    expect_rights(cp, &user, &rights).await;
}

/// With `watchNamespace`, every right but the Lease and the tenant-pause ConfigMap is confined
/// to that namespace: no ClusterRole for the controller, nothing else in the release namespace
/// or a third one, nothing cluster-wide.
#[tokio::test]
async fn single_namespace_install_is_confined_to_its_namespace() {
    let cp = control_plane().await;
    let ns = cp.namespace("chart-single").await;
    let watched = cp.namespace("chart-watched").await;
    let other = cp.namespace("chart-third").await;
    let release = ns.clone();
    let values = format!("watchNamespace: {watched}\n");
    let m = render_ok(&release, &ns, &values).await;
    // The only ClusterRoles are the people's (bound by nobody yet): the controller is given
    // nothing cluster-wide.
    assert!(
        !m.kinds().contains("ClusterRoleBinding"),
        "a single-namespace install binds nothing cluster-wide: {:?}",
        m.kinds()
    );
    let release_full_name = format!("{release}-guestreset");
    for role in m.of_kind("ClusterRole") {
        let name = role["metadata"]["name"].as_str().unwrap_or_default();
        assert!(
            [
                format!("{release_full_name}-requester"),
                format!("{release_full_name}-approver")
            ]
            .iter()
            .any(|n| n == name),
            "ClusterRole {name} in a single-namespace install"
        );
    }
    assert!(
        m.args().contains(&format!("--namespace={watched}")),
        "the controller must be told its namespace: {:?}",
        m.args()
    );
    for role in m
        .of_kind("Role")
        .into_iter()
        .chain(m.of_kind("RoleBinding"))
    {
        let name = role["metadata"]["name"].as_str().unwrap_or_default();
        let expected = if name.ends_with("-leader-election") || name.ends_with("-tenant-state") {
            &ns
        } else {
            &watched
        };
        assert_eq!(role["metadata"]["namespace"], json!(expected), "{name}");
    }
    apply(cp, &m.text).await;

    let user = service_account_user(&ns, &m.service_account_name());
    let lease = format!("leases.coordination.k8s.io/{release}-guestreset");
    let w = Scope::Namespace(&watched);
    let mut rights = vec![
        right(true, "list", CRD_NAME, w),
        right(true, "watch", CRD_NAME, w),
        right(true, "get", CRD_NAME, w),
        status_right(true, "update", w),
        status_right(true, "patch", w),
        right(true, "create", "events.events.k8s.io", w),
        right(true, "patch", "events.events.k8s.io", w),
        right(true, "create", "secrets", w),
        right(true, "patch", "secrets", w),
        right(false, "get", "secrets", w),
        right(false, "list", "secrets", w),
        right(false, "delete", "secrets", w),
        right(true, "create", CRD_NAME, w),
        right(false, "delete", CRD_NAME, w),
        right(true, "watch", MIGRATIONS, w),
        right(false, "create", MIGRATIONS, w),
        right(true, "get", &lease, Scope::Namespace(&ns)),
        right(true, "patch", &lease, Scope::Namespace(&ns)),
        right(true, "create", LEASES, Scope::Namespace(&ns)),
        right(false, "create", LEASES, w),
        right(
            true,
            "get",
            &format!("configmaps/{release}-guestreset-tenant"),
            Scope::Namespace(&ns),
        ),
        right(true, "create", "configmaps", w),
        right(false, "list", "configmaps", w),
        right(false, "list", CRD_NAME, Scope::AllNamespaces),
        right(false, "watch", CRD_NAME, Scope::AllNamespaces),
        right(false, "create", "secrets", Scope::AllNamespaces),
    ];
    for outside in [Scope::Namespace(&ns), Scope::Namespace(&other)] {
        for verb in ["get", "list", "watch"] {
            rights.push(right(false, verb, CRD_NAME, outside));
        }
        rights.push(status_right(false, "update", outside));
        rights.push(status_right(false, "patch", outside));
        rights.push(right(false, "create", "events.events.k8s.io", outside));
        rights.push(right(false, "create", "secrets", outside));
        rights.push(right(false, "patch", "secrets", outside));
    }
    expect_rights(cp, &user, &rights).await;
}

/// Without leader election there is no Lease right and no `--leader-elect`; a single
/// replica is the only shape the schema allows then.
#[tokio::test]
async fn leader_election_off_drops_the_lease_rights() {
    let cp = control_plane().await;
    let ns = cp.namespace("chart-noleader").await;
    let release = ns.clone();
    let m = render_ok(
        &release,
        &ns,
        "replicas: 1\nleaderElection:\n  enabled: false\npodDisruptionBudget:\n  enabled: false\n",
    )
    .await;
    assert_eq!(m.deployment()["spec"]["replicas"], 1);
    // The lease name stays: it also names the tenant-pause ConfigMap.
    assert!(
        !m.args().iter().any(|a| a == "--leader-elect"
            || a.starts_with("--leader-election-lease-duration")
            || a.starts_with("--leader-election-renew-deadline")),
        "{:?}",
        m.args()
    );
    apply(cp, &m.text).await;
    let user = service_account_user(&ns, &m.service_account_name());
    let s = Scope::Namespace(&ns);
    expect_rights(
        cp,
        &user,
        &[
            right(false, "create", LEASES, s),
            right(
                false,
                "get",
                &format!("leases.coordination.k8s.io/{release}-guestreset"),
                s,
            ),
            // The controller's own rights are still there.
            right(true, "watch", CRD_NAME, s),
            status_right(true, "patch", s),
        ],
    )
    .await;
}

/// The credential options render what the Azure SDK variables and the workload identity
/// webhook expect, and the workload-identity variant applies to the API server.
#[tokio::test]
async fn credential_options_render_as_documented() {
    let cp = control_plane().await;

    // Workload identity through the webhook: annotation on the ServiceAccount, label on
    // the pods, no secret anywhere.
    let ns = cp.namespace("chart-wi").await;
    let m = render_ok(&ns, &ns, &workload_identity_values()).await;
    let sa = m.one("ServiceAccount");
    assert_eq!(
        sa["metadata"]["annotations"]["azure.workload.identity/client-id"],
        CLIENT_ID
    );
    assert_eq!(
        m.deployment()["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    assert_eq!(
        m.env("AZURE_CLIENT_ID").map(|e| &e["value"]),
        Some(&json!(CLIENT_ID))
    );
    assert_eq!(
        m.env("AZURE_TENANT_ID").map(|e| &e["value"]),
        Some(&json!(TENANT_ID))
    );
    assert!(m.env("AZURE_CLIENT_SECRET").is_none());
    assert!(!m.kinds().contains("Secret"));
    apply(cp, &m.text).await;

    // Workload identity without the webhook: the chart projects the token itself, at the
    // path AZURE_FEDERATED_TOKEN_FILE names, for the audience Entra ID expects.
    let m = render_ok(
        "guestreset",
        "guestreset-system",
        &format!("{}    useWebhook: false\n", workload_identity_values()),
    )
    .await;
    let pod = &m.deployment()["spec"]["template"];
    assert!(
        pod["metadata"]["labels"]
            .get("azure.workload.identity/use")
            .is_none()
    );
    let token_file = m
        .env("AZURE_FEDERATED_TOKEN_FILE")
        .expect("AZURE_FEDERATED_TOKEN_FILE")["value"]
        .as_str()
        .expect("value")
        .to_owned();
    let mount = &m.container()["volumeMounts"][0];
    let source = &pod["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(source["audience"], "api://AzureADTokenExchange");
    assert_eq!(
        format!(
            "{}/{}",
            mount["mountPath"].as_str().unwrap_or("?"),
            source["path"].as_str().unwrap_or("?")
        ),
        token_file
    );

    // A client secret given as a value: the chart stores it in a Secret and the pod reads
    // it from there, never from a plain value.
    let m = render_ok(
        "guestreset",
        "guestreset-system",
        &format!("azure:\n  tenantId: {TENANT_ID}\n  clientId: {CLIENT_ID}\n  clientSecret:\n    value: s3cr3t\n"),
    )
    .await;
    let secret = m.one("Secret");
    let reference =
        &m.env("AZURE_CLIENT_SECRET").expect("AZURE_CLIENT_SECRET")["valueFrom"]["secretKeyRef"];
    assert_eq!(reference["name"], secret["metadata"]["name"]);
    let key = reference["key"].as_str().expect("key");
    assert_eq!(secret["data"][key], "czNjcjN0", "base64 of the value");
    assert!(
        !m.text.contains("s3cr3t"),
        "the secret must not appear in plain text"
    );

    // An existing Secret: referenced, not created.
    let m = render_ok(
        "guestreset",
        "guestreset-system",
        &format!("azure:\n  tenantId: {TENANT_ID}\n  clientId: {CLIENT_ID}\n  clientSecret:\n    existingSecret: graph-app\n    key: secret\n"),
    )
    .await;
    assert!(!m.kinds().contains("Secret"));
    assert_eq!(
        m.env("AZURE_CLIENT_SECRET")
            .map(|e| &e["valueFrom"]["secretKeyRef"]),
        Some(&json!({"name": "graph-app", "key": "secret"}))
    );

    // A client certificate: mounted, and AZURE_CLIENT_CERTIFICATE_PATH names the file.
    let m = render_ok(
        "guestreset",
        "guestreset-system",
        &format!("azure:\n  tenantId: {TENANT_ID}\n  clientId: {CLIENT_ID}\n  clientCertificate:\n    existingSecret: graph-cert\n"),
    )
    .await;
    let path = m
        .env("AZURE_CLIENT_CERTIFICATE_PATH")
        .expect("certificate path")["value"]
        .as_str()
        .expect("value")
        .to_owned();
    let mount = &m.container()["volumeMounts"][0];
    let volume = &m.deployment()["spec"]["template"]["spec"]["volumes"][0]["secret"];
    assert_eq!(volume["secretName"], "graph-cert");
    assert_eq!(
        format!(
            "{}/{}",
            mount["mountPath"].as_str().unwrap_or("?"),
            volume["items"][0]["path"].as_str().unwrap_or("?")
        ),
        path
    );
}

/// The pod template passes the `restricted` Pod Security Standard, as enforced by the
/// API server's admission; the same pod without any one hardening setting is refused.
#[tokio::test]
async fn pod_template_passes_restricted_pod_security() {
    let cp = control_plane().await;
    let ns = cp.namespace("chart-psa").await;
    let out = kubectl(
        cp,
        &[
            "label",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest",
        ],
        None,
    )
    .await;
    assert!(out.status.success(), "label namespace: {}", describe(&out));

    let variants = [
        ("default", String::new()),
        ("openshift", OPENSHIFT.to_owned()),
        (
            "every volume option",
            format!(
                "{}    useWebhook: false\ncaBundle:\n  configMapName: proxy-ca\n",
                workload_identity_values()
            ),
        ),
    ];
    for (variant, values) in &variants {
        let m = render_ok("guestreset", &ns, values).await;
        let template = &m.deployment()["spec"]["template"];
        let pod = |name: &str, spec: &Value| {
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": template["metadata"]["labels"]},
                "spec": spec,
            })
            .to_string()
        };
        let name = format!("psa-{}", variant.replace(' ', "-"));
        let out = apply_result(cp, &pod(&name, &template["spec"])).await;
        assert!(
            out.status.success(),
            "the {variant} pod template is refused under restricted: {}",
            describe(&out)
        );
        // The `helm test` Pod runs in the same namespace, under the same standard.
        let mut test_pod = m.one("Pod").clone();
        test_pod["metadata"]["name"] = json!(format!("{name}-test"));
        let out = apply_result(cp, &test_pod.to_string()).await;
        assert!(
            out.status.success(),
            "the {variant} test Pod is refused under restricted: {}",
            describe(&out)
        );
    }

    // Each setting is needed: without it, the API server refuses the pod.
    const SECURITY_CONTEXTS: [&str; 2] = ["/securityContext", "/containers/0/securityContext"];
    let m = render_ok("guestreset", &ns, "").await;
    let spec = &m.deployment()["spec"]["template"]["spec"];
    let weakened: [Weakening; 4] = [
        ("allowPrivilegeEscalation", |s| {
            s["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true)
        }),
        ("capabilities", |s| {
            s["containers"][0]["securityContext"]
                .as_object_mut()
                .expect("securityContext")
                .remove("capabilities");
        }),
        ("runAsNonRoot", |s| {
            for sc in SECURITY_CONTEXTS {
                let sc = s.pointer_mut(sc).and_then(Value::as_object_mut).expect(sc);
                sc.remove("runAsNonRoot");
                sc.insert("runAsUser".into(), json!(0));
            }
        }),
        ("seccompProfile", |s| {
            for sc in SECURITY_CONTEXTS {
                let sc = s.pointer_mut(sc).and_then(Value::as_object_mut).expect(sc);
                sc.remove("seccompProfile");
            }
        }),
    ];
    for (setting, weaken) in weakened {
        let mut spec = spec.clone();
        weaken(&mut spec);
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": format!("psa-without-{}", setting.to_lowercase()), "namespace": ns},
            "spec": spec,
        });
        let out = apply_result(cp, &pod.to_string()).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("violates PodSecurity"),
            "a pod without {setting} was not refused by Pod Security admission: {}",
            describe(&out)
        );
    }
}

/// The optional PodDisruptionBudget and ServiceMonitor select what they should, and the
/// PodDisruptionBudget is accepted by the API server (which does not serve
/// ServiceMonitors: the Prometheus Operator's CRD is not installed there).
#[tokio::test]
async fn optional_objects_select_the_controller() {
    let cp = control_plane().await;
    let ns = cp.namespace("chart-optional").await;
    let m = render_ok(
        &ns,
        &ns,
        "podDisruptionBudget:\n  enabled: true\nmetrics:\n  serviceMonitor:\n    enabled: true\n    labels:\n      release: prometheus\n",
    )
    .await;
    let pod_labels = &m.deployment()["spec"]["template"]["metadata"]["labels"];
    let pdb = m.one("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(labels_contain(
        pod_labels,
        &pdb["spec"]["selector"]["matchLabels"]
    ));

    let monitor = m.one("ServiceMonitor");
    let service = m.one("Service");
    assert!(labels_contain(
        &service["metadata"]["labels"],
        &monitor["spec"]["selector"]["matchLabels"]
    ));
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!([ns])
    );

    apply(cp, &m.yaml_without(&["ServiceMonitor"])).await;
    let out = kubectl(
        cp,
        &["get", "poddisruptionbudget", "-n", &ns, "-o", "name"],
        None,
    )
    .await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("poddisruptionbudget"),
        "{}",
        describe(&out)
    );
}

/// `examples/gitops` renders with kubectl's kustomize, lists every file of `resets/`,
/// puts everything in `identity`, carries a change reference on each reset, and the
/// result is accepted by the API server's admission (CRD schema and CEL rules).
#[tokio::test]
async fn gitops_example_renders_and_applies() {
    let cp = control_plane().await;
    let dir = repo_root().join(GITOPS_DIR);

    let kustomization: Value = serde_yaml::from_str(
        &std::fs::read_to_string(dir.join("kustomization.yaml")).expect("read kustomization"),
    )
    .expect("parse kustomization");
    assert_eq!(kustomization["namespace"], "identity");
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("resource path").to_owned())
        .collect();
    let files: BTreeSet<String> = std::fs::read_dir(dir.join("resets"))
        .expect("read resets/")
        .map(|e| format!("resets/{}", e.expect("entry").file_name().to_string_lossy()))
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    assert_eq!(
        listed, files,
        "kustomization.yaml must list exactly the files of resets/"
    );
    assert!((2..=3).contains(&files.len()), "{files:?}");

    let out = kubectl(cp, &["kustomize", path_str(&dir)], None).await;
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        describe(&out)
    );
    let rendered = Manifests::parse(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(rendered.objects.len(), files.len());
    let mut names = BTreeMap::new();
    for object in &rendered.objects {
        let name = object["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        assert_eq!(object["kind"], "GuestRedemptionReset", "{name}");
        assert_eq!(object["metadata"]["namespace"], "identity", "{name}");
        let change = object["spec"]["changeRef"].as_str().unwrap_or_default();
        assert!(!change.is_empty(), "{name} has no changeRef");
        names.insert(name, change.to_owned());
    }

    // Into a fresh namespace instead of `identity`, so that reruns start clean.
    let ns = cp.namespace("gitops").await;
    let relocated: Vec<String> = rendered
        .objects
        .iter()
        .map(|o| {
            let mut o = o.clone();
            o["metadata"]["namespace"] = json!(ns);
            // Applied here by the admin, whom a policy of another release would refuse as
            // requester of Flux's resets; tests/approval_policy.rs applies them as Flux.
            let annotations = o["metadata"]["annotations"]
                .as_object_mut()
                .expect("annotations");
            assert!(annotations.remove("guestreset.io/requested-by").is_some());
            serde_yaml::to_string(&o).expect("serialise")
        })
        .collect();
    apply(cp, &relocated.join("---\n")).await;

    let out = kubectl(cp, &["get", CRD_NAME, "-n", &ns, "-o", "json"], None).await;
    assert!(out.status.success(), "{}", describe(&out));
    let list: Value = serde_json::from_slice(&out.stdout).expect("kubectl get -o json");
    let stored: BTreeMap<String, String> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                o["spec"]["changeRef"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(stored, names);
}

/// Helm itself installs, upgrades and uninstalls the chart on the API server: the NOTES
/// name the federated-credential subject to register, an upgrade to a single namespace
/// replaces the ClusterRole by a Role, and an uninstall removes the release's objects
/// but leaves the CRD (and so every GuestRedemptionReset) alone.
#[tokio::test]
async fn helm_installs_upgrades_and_uninstalls() {
    let cp = control_plane().await;
    let helm = helm();
    let ns = cp.namespace("chart-helm").await;
    let watched = cp.namespace("chart-helm-watched").await;
    let release = ns.clone();
    let fullname = format!("{release}-guestreset");
    let chart = chart_dir();
    let kubeconfig = cp.kubeconfig_path();
    let helm_at = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        helm.run_with_kubeconfig(&args, kubeconfig).await
    };
    let install_args = |verb: &str, values: &str| -> Vec<String> {
        vec![
            verb.to_owned(),
            release.clone(),
            path_str(&chart).to_owned(),
            "--namespace".to_owned(),
            ns.clone(),
            "--values".to_owned(),
            path_str(&helm.values_file(values)).to_owned(),
        ]
    };

    let out = helm_at(install_args("install", &workload_identity_values())).await;
    assert!(out.status.success(), "helm install: {}", describe(&out));
    let notes = String::from_utf8_lossy(&out.stdout);
    let subject = format!("system:serviceaccount:{ns}:{fullname}");
    assert!(
        notes.contains(&subject),
        "NOTES must name {subject}:\n{notes}"
    );
    assert!(notes.contains("allowedEmailDomains is empty"), "{notes}");
    let test = format!("helm test {release} -n {ns} --logs");
    assert!(notes.contains(&test), "NOTES must name {test}:\n{notes}");
    assert!(
        notes.contains(&format!(
            "ValidatingAdmissionPolicy {fullname} lets only the controller"
        )),
        "{notes}"
    );
    let exists = |kind: &'static str, name: String, namespace: Option<String>| async move {
        let mut args = vec![
            "get".to_owned(),
            kind.to_owned(),
            name,
            "-o".into(),
            "name".into(),
        ];
        if let Some(namespace) = namespace {
            args.extend(["--namespace".to_owned(), namespace]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = kubectl(cp, &args, None).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        match (out.status.success(), stderr.contains("NotFound")) {
            (true, _) => true,
            (false, true) => false,
            _ => panic!("kubectl {args:?}: {}", describe(&out)),
        }
    };
    assert!(exists("deployment", fullname.clone(), Some(ns.clone())).await);
    assert!(exists("clusterrole", fullname.clone(), None).await);
    assert!(exists("validatingadmissionpolicy", fullname.clone(), None).await);
    assert!(exists("validatingadmissionpolicybinding", fullname.clone(), None).await);

    let out = helm_at(install_args(
        "upgrade",
        &format!("{}watchNamespace: {watched}\n", workload_identity_values()),
    ))
    .await;
    assert!(out.status.success(), "helm upgrade: {}", describe(&out));
    assert!(
        !exists("clusterrole", fullname.clone(), None).await,
        "the ClusterRole outlived the upgrade"
    );
    assert!(!exists("clusterrolebinding", fullname.clone(), None).await);
    assert!(exists("role", fullname.clone(), Some(watched.clone())).await);
    assert!(exists("rolebinding", fullname.clone(), Some(watched.clone())).await);

    let out = helm_at(vec![
        "uninstall".into(),
        release.clone(),
        "--namespace".into(),
        ns.clone(),
    ])
    .await;
    assert!(out.status.success(), "helm uninstall: {}", describe(&out));
    assert!(!exists("deployment", fullname.clone(), Some(ns.clone())).await);
    assert!(!exists("role", fullname.clone(), Some(watched.clone())).await);
    assert!(!exists("validatingadmissionpolicy", fullname.clone(), None).await);
    assert!(
        exists("crd", CRD_NAME.to_owned(), None).await,
        "uninstall must keep the CRD"
    );
}

/// The approval values: `requireApproval` renders the policy that requires the requester
/// annotation, passes the controller its two flags and grants it what its checks need;
/// `admissionPolicy.controllerUsername` names the one user who writes status, by default the
/// chart's ServiceAccount; with `watchNamespace` the binding selects that namespace only. The
/// defaults install the policy without the requirement and without the flags;
/// `admissionPolicy.enabled: false` installs none.
#[tokio::test]
async fn approval_values_render_the_policy_the_flags_and_the_rights() {
    let m = render_ok("guestreset", "guestreset-system", "requireApproval: true\n").await;
    let policy = m.one("ValidatingAdmissionPolicy");
    let binding = m.one("ValidatingAdmissionPolicyBinding");
    assert_eq!(policy["metadata"]["name"], "guestreset");
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    assert_eq!(
        policy["spec"]["matchConstraints"]["resourceRules"],
        json!([{
            "apiGroups": ["guestreset.io"],
            "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"],
            "resources": [
                "guestredemptionresets",
                "guestredemptionresets/status",
                "guestdomainmigrations",
                "guestdomainmigrations/status",
            ],
        }])
    );
    assert_eq!(
        policy_variable(policy, "isController"),
        r#"request.userInfo.username == "system:serviceaccount:guestreset-system:guestreset""#
    );
    assert_eq!(
        binding["spec"],
        json!({"policyName": "guestreset", "validationActions": ["Deny"]}),
        "bound everywhere, denying"
    );
    let args = m.args();
    for flag in ["--require-approval", "--admission-policy=guestreset"] {
        assert!(args.iter().any(|a| a == flag), "{flag} missing: {args:?}");
    }
    let approval = named(&m, "ClusterRole", "guestreset-approval");
    assert_eq!(
        approval["rules"],
        json!([
            {
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["validatingadmissionpolicies", "validatingadmissionpolicybindings"],
                "resourceNames": ["guestreset"],
                "verbs": ["get"],
            },
            {
                "apiGroups": ["authorization.k8s.io"],
                "resources": ["subjectaccessreviews"],
                "verbs": ["create"],
            },
        ])
    );
    let approval_binding = named(&m, "ClusterRoleBinding", "guestreset-approval");
    assert_eq!(
        approval_binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "guestreset", "namespace": "guestreset-system"}])
    );

    // One namespace, another controller user: the binding selects the namespace by the label
    // the API server sets on every namespace; the policy and binding being cluster-scoped, so
    // is the right to read them.
    let m = render_ok(
        "guestreset",
        "guestreset-system",
        "requireApproval: true\nwatchNamespace: identity\nadmissionPolicy:\n  controllerUsername: ops-controller\n",
    )
    .await;
    assert_eq!(
        policy_variable(m.one("ValidatingAdmissionPolicy"), "isController"),
        r#"request.userInfo.username == "ops-controller""#
    );
    assert_eq!(
        m.one("ValidatingAdmissionPolicyBinding")["spec"]["matchResources"],
        json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "identity"}}})
    );
    named(&m, "ClusterRole", "guestreset-approval");

    // The defaults: the policy, no flags, no approval rights; the people's roles.
    let m = render_ok("guestreset", "guestreset-system", "").await;
    m.one("ValidatingAdmissionPolicy");
    m.one("ValidatingAdmissionPolicyBinding");
    assert!(
        !m.args().iter().any(|a| a.contains("approval")),
        "{:?}",
        m.args()
    );
    let cluster_roles: BTreeSet<&str> = m
        .of_kind("ClusterRole")
        .iter()
        .filter_map(|r| r["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        cluster_roles,
        BTreeSet::from(["guestreset", "guestreset-requester", "guestreset-approver"])
    );

    // No policy, no people's roles.
    let m = render_ok(
        "guestreset",
        "guestreset-system",
        "admissionPolicy:\n  enabled: false\nrbac:\n  userRoles: false\n",
    )
    .await;
    let kinds = m.kinds();
    assert!(
        !kinds.contains("ValidatingAdmissionPolicy")
            && !kinds.contains("ValidatingAdmissionPolicyBinding"),
        "{kinds:?}"
    );
    assert_eq!(m.of_kind("ClusterRole").len(), 1, "the controller's only");
}

/// With `requireApproval` and the example RoleBindings applied, `kubectl auth can-i` gives the
/// answers docs/install.md promises: approvers may `approve` and write status, requesters may
/// not; the approver of one reset may approve that one only; the controller may read exactly
/// the policy and its binding and ask SubjectAccessReviews, and may not approve.
#[tokio::test]
async fn approval_rights_are_as_documented() {
    let cp = control_plane().await;
    let ns = cp.namespace("chart-approval").await;
    let watched = cp.namespace("chart-approval-watched").await;
    let other = cp.namespace("chart-approval-other").await;
    let release = ns.clone();
    let fullname = format!("{release}-guestreset");
    let m = render_ok(
        &release,
        &ns,
        &format!("requireApproval: true\nwatchNamespace: {watched}\n"),
    )
    .await;
    apply(cp, &m.text).await;
    let examples: Vec<String> = example_rbac(&watched, &fullname)
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("serialise"))
        .collect();
    apply(cp, &examples.join("---\n")).await;

    let w = Scope::Namespace(&watched);
    let o = Scope::Namespace(&other);
    let everywhere = Scope::AllNamespaces;
    let one_reset = format!("{CRD_NAME}/alice-to-newco");
    let another = format!("{CRD_NAME}/another-reset");
    let bob = [
        right(true, "approve", CRD_NAME, w),
        right(true, "approve", &one_reset, w),
        status_right(true, "get", w),
        status_right(true, "patch", w),
        status_right(true, "update", w),
        right(true, "get", CRD_NAME, w),
        right(true, "list", CRD_NAME, w),
        right(false, "create", CRD_NAME, w),
        right(false, "update", CRD_NAME, w),
        right(false, "patch", CRD_NAME, w),
        right(false, "delete", CRD_NAME, w),
        right(false, "approve", CRD_NAME, o),
        status_right(false, "patch", o),
        right(false, "approve", CRD_NAME, everywhere),
    ];
    expect_rights_in_groups(cp, "bob", &["guestreset-approvers"], &bob).await;
    let alice = [
        right(true, "create", CRD_NAME, w),
        right(true, "update", CRD_NAME, w),
        right(true, "patch", CRD_NAME, w),
        right(true, "delete", CRD_NAME, w),
        right(true, "watch", CRD_NAME, w),
        right(false, "approve", CRD_NAME, w),
        status_right(false, "patch", w),
        status_right(false, "update", w),
        right(false, "create", CRD_NAME, o),
    ];
    expect_rights_in_groups(cp, "alice", &["guestreset-requesters"], &alice).await;
    let dave = [
        right(true, "approve", &one_reset, w),
        right(true, "get", &one_reset, w),
        Right {
            subresource: Some("status"),
            ..right(true, "patch", &one_reset, w)
        },
        right(false, "approve", &another, w),
        right(false, "approve", CRD_NAME, w),
        Right {
            subresource: Some("status"),
            ..right(false, "patch", &another, w)
        },
        right(false, "approve", &one_reset, o),
    ];
    expect_rights(cp, "dave@fabrikam.example", &dave).await;

    let controller = service_account_user(&ns, &m.service_account_name());
    let policy = format!("{POLICIES}/{fullname}");
    let policy_binding = format!("{POLICY_BINDINGS}/{fullname}");
    let rights = [
        right(true, "get", &policy, everywhere),
        right(true, "get", &policy_binding, everywhere),
        right(true, "create", SUBJECT_ACCESS_REVIEWS, everywhere),
        right(
            false,
            "get",
            &format!("{POLICIES}/someone-else"),
            everywhere,
        ),
        right(false, "list", POLICIES, everywhere),
        right(false, "watch", POLICIES, everywhere),
        right(false, "update", &policy, everywhere),
        right(false, "patch", &policy, everywhere),
        right(false, "delete", &policy, everywhere),
        right(false, "delete", &policy_binding, everywhere),
        right(false, "create", POLICY_BINDINGS, everywhere),
        right(false, "approve", CRD_NAME, w),
        right(false, "approve", CRD_NAME, everywhere),
        right(false, "update", CRD_NAME, w),
        status_right(true, "patch", w),
    ];
    expect_rights(cp, &controller, &rights).await;
}

/// The expression of the policy's variable `name`.
fn policy_variable<'a>(policy: &'a Value, name: &str) -> &'a str {
    policy["spec"]["variables"]
        .as_array()
        .expect("variables")
        .iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["expression"].as_str())
        .unwrap_or_else(|| panic!("no variable {name}"))
}

/// The rendered object of `kind` called `name`.
fn named<'a>(m: &'a Manifests, kind: &str, name: &str) -> &'a Value {
    m.of_kind(kind)
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered:\n{}", m.text))
}

/// The defaults run 2 replicas with a PodDisruptionBudget keeping one through a drain.
#[tokio::test]
async fn defaults_keep_a_replica_through_voluntary_disruptions() {
    let m = render_ok("guestreset", "guestreset-system", "").await;
    assert_eq!(m.deployment()["spec"]["replicas"], 2);
    let pdb = m.one("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1, "{pdb}");
}

/// `helm install` against a cluster fails early, naming the namespace and the fix, when
/// `watchNamespace` does not exist; `helm template` (no cluster to look it up in) renders.
#[tokio::test]
async fn install_refuses_a_watched_namespace_that_does_not_exist() {
    let cp = control_plane().await;
    let helm = helm();
    let ns = cp.namespace("chart-nowatched").await;
    let missing = format!("{ns}-missing");
    let values = format!("watchNamespace: {missing}\n{}", workload_identity_values());
    let file = helm.values_file(&values);
    let chart = chart_dir();
    let args = [
        "install",
        ns.as_str(),
        path_str(&chart),
        "--namespace",
        ns.as_str(),
        "--values",
        path_str(&file),
    ];
    let out = helm.run_with_kubeconfig(&args, cp.kubeconfig_path()).await;
    assert!(!out.status.success(), "helm install: {}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "watchNamespace: namespace \"{missing}\" does not exist"
        )) && stderr.contains(&format!("kubectl create namespace {missing}")),
        "{stderr}"
    );
    let m = render_ok(&ns, &ns, &values).await;
    assert!(
        m.of_kind("Role")
            .iter()
            .any(|r| r["metadata"]["namespace"] == missing.as_str())
    );
}

/// Pod and container security contexts are values; a key set to null is left out of the
/// Deployment and the test Pod alike (OpenShift's restricted SCC assigns the ids), and the
/// rest of the hardening stays.
#[tokio::test]
async fn security_contexts_are_values_and_null_keys_are_left_out() {
    let m = render_ok("guestreset", "guestreset-system", OPENSHIFT).await;
    let test_pod = &m.one("Pod")["spec"];
    let pods = [&m.deployment()["spec"]["template"]["spec"], test_pod];
    for pod in pods {
        let psc = &pod["securityContext"];
        let sc = &pod["containers"][0]["securityContext"];
        for key in ["runAsUser", "runAsGroup", "fsGroup"] {
            assert!(psc.get(key).is_none(), "pod {key}: {psc}");
            assert!(sc.get(key).is_none(), "container {key}: {sc}");
        }
        assert_eq!(psc["runAsNonRoot"], true, "{psc}");
        assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{psc}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{sc}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc}");
    }

    let values = "podSecurityContext:\n  runAsUser: 1000700000\n  supplementalGroups: [5555]\n";
    let m = render_ok("guestreset", "guestreset-system", values).await;
    let psc = &m.deployment()["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(psc["runAsUser"], 1000700000, "{psc}");
    assert_eq!(psc["supplementalGroups"], json!([5555]), "{psc}");
    assert_eq!(psc["fsGroup"], 65532, "the other defaults stay: {psc}");
    assert_eq!(m.one("Pod")["spec"]["securityContext"], *psc);
}

/// The NetworkPolicy selects the controller pods only, lets the test Pod and the configured
/// peers reach the metrics port and nothing else in, lets out only the API server, HTTPS
/// (Entra ID and Graph), DNS and the extra rules, and is accepted by the API server. The
/// instance metadata endpoint is allowed exactly when the pod uses a managed identity.
#[tokio::test]
async fn network_policy_allows_what_the_controller_needs() {
    let cp = control_plane().await;
    let ns = cp.namespace("chart-netpol").await;
    let m = render_ok(&ns, &ns, STRICT_NETWORK).await;
    let policy = m.one("NetworkPolicy");
    let spec = &policy["spec"];
    let pod_labels = &m.deployment()["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        spec["podSelector"]["matchLabels"],
        m.deployment()["spec"]["selector"]["matchLabels"]
    );
    assert!(
        !labels_contain(
            &m.one("Pod")["metadata"]["labels"],
            &spec["podSelector"]["matchLabels"]
        ),
        "the test Pod is not a controller pod"
    );
    assert!(labels_contain(
        pod_labels,
        &spec["podSelector"]["matchLabels"]
    ));
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));

    let ingress = spec["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1, "{ingress:?}");
    assert_eq!(
        ingress[0]["ports"],
        json!([{"port": 8080, "protocol": "TCP"}])
    );
    let from = ingress[0]["from"].as_array().unwrap();
    assert!(
        labels_contain(
            &m.one("Pod")["metadata"]["labels"],
            &from[0]["podSelector"]["matchLabels"]
        ),
        "the test Pod may reach /readyz: {from:?}"
    );
    let monitoring = json!({"kubernetes.io/metadata.name": "monitoring"});
    assert_eq!(from[1]["namespaceSelector"]["matchLabels"], monitoring);
    assert_eq!(from.len(), 2);

    let tcp = |ports: &[u16]| -> Value {
        ports
            .iter()
            .map(|p| json!({"port": p, "protocol": "TCP"}))
            .collect()
    };
    let to = |cidrs: &[&str]| -> Value {
        cidrs
            .iter()
            .map(|c| json!({"ipBlock": {"cidr": c}}))
            .collect()
    };
    let dns_ports: Value = [53, 5353]
        .iter()
        .flat_map(|p| ["UDP", "TCP"].map(|proto| json!({"port": p, "protocol": proto})))
        .collect();
    let kube_dns =
        json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]);
    let expected = json!([
        {"ports": tcp(&[443, 6443]), "to": to(&["10.0.0.1/32"])},
        {"ports": tcp(&[443]), "to": to(&["192.0.2.10/32", "2001:db8::10/128"])},
        {"ports": tcp(&[80]), "to": to(&["169.254.169.254/32"])},
        {"ports": dns_ports, "to": kube_dns},
        {"ports": tcp(&[3128]), "to": to(&["192.0.2.10/32"])},
    ]);
    assert_eq!(spec["egress"], expected);
    apply(cp, &serde_yaml::to_string(policy).unwrap()).await;
    let out = kubectl(cp, &["get", "networkpolicy", "-n", &ns, "-o", "json"], None).await;
    let stored: Value = serde_json::from_slice(&out.stdout).expect("kubectl get -o json");
    assert_eq!(
        stored["items"][0]["spec"]["egress"], expected,
        "stored as rendered"
    );

    // The defaults: any address on the API server's ports, every address on 443, DNS anywhere.
    let defaults = format!(
        "networkPolicy:\n  enabled: true\n{}",
        workload_identity_values()
    );
    let m = render_ok(&ns, &ns, &defaults).await;
    let egress = &m.one("NetworkPolicy")["spec"]["egress"];
    let expected = json!([
        {"ports": tcp(&[443, 6443])},
        {"ports": tcp(&[443]), "to": to(&["0.0.0.0/0", "::/0"])},
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
    ]);
    assert_eq!(
        *egress, expected,
        "workload identity needs no metadata endpoint"
    );
    let mut policy = m.one("NetworkPolicy").clone();
    policy["metadata"]["name"] = json!("defaults");
    apply(cp, &policy.to_string()).await;
}

/// The `helm test` Pod GETs /readyz through the metrics Service with the binary's own
/// `probe` (the image has no shell), is a test hook that is deleted once it passed, is not
/// selected by the Service, and its arguments are accepted by the binary. Without the
/// Service, or with helmTest.enabled false, there is none.
#[tokio::test]
async fn the_test_hook_probes_readyz_through_the_service() {
    let m = render_ok("rel", "guestreset-system", "metrics:\n  port: 9090\n").await;
    let pod = m.one("Pod");
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    let deletion = &pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"];
    assert_eq!(deletion, "before-hook-creation,hook-succeeded");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], m.container()["image"]);
    let service = m.one("Service");
    assert!(
        !labels_contain(&pod["metadata"]["labels"], &service["spec"]["selector"]),
        "the Service must not route to the test Pod"
    );
    let url = format!(
        "http://{}.guestreset-system.svc:{}/readyz",
        service["metadata"]["name"].as_str().unwrap(),
        service["spec"]["ports"][0]["port"]
    );
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["probe", "--timeout=10s", url.as_str()]);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_guestreset"))
        .args(&args)
        .arg("--help")
        .env_clear()
        .output()
        .await
        .expect("run guestreset");
    assert!(out.status.success(), "{}", describe(&out));

    for off in [
        "helmTest:\n  enabled: false\n",
        "metrics:\n  service:\n    enabled: false\n",
    ] {
        let m = render_ok("rel", "guestreset-system", off).await;
        assert!(m.of_kind("Pod").is_empty(), "{off}");
    }
}

/// `guestreset probe` as the hook runs it, against a tiny local server: exit 0 on 2xx, 1 with
/// a one-line reason otherwise.
#[tokio::test]
async fn the_probe_exits_by_the_answer() {
    use axum::http::StatusCode;
    let app = axum::Router::new()
        .route("/readyz", axum::routing::get(|| async { "ready" }))
        .route(
            "/down",
            axum::routing::get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "stopping") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let probe = |path: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_guestreset"))
            .args(["probe", "--timeout=30s", &format!("http://{addr}{path}")])
            .env_clear()
            .output()
    };
    let ok = probe("/readyz").await.unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", describe(&ok));
    let down = probe("/down").await.unwrap();
    assert_eq!(down.status.code(), Some(1), "{}", describe(&down));
    let stderr = String::from_utf8_lossy(&down.stderr);
    let reason = format!("GET http://{addr}/down: 503 Service Unavailable: stopping\n");
    assert_eq!(stderr, reason);
}
