//! One test's world for the approval policy: a namespace with its own release of the chart
//! (policy, binding and RBAC, as `helm template` renders them), the example RoleBindings of
//! `examples/rbac/`, and the people who act in it, each a [`Person`] with a client certificate.

use std::future::Future;
use std::time::Duration;

use guestreset::resource::{GuestRedemptionReset, REQUESTED_BY_ANNOTATION};
use guestreset_testsupport::chart::{documents, example_rbac, helm};
use guestreset_testsupport::{ControlPlane, Identity, wait_until};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{
    Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams, ResourceExt,
};
use kube::discovery::{Scope, pinned_kind};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// The user name the controller authenticates as in these tests (`admissionPolicy.controllerUsername`).
pub const CONTROLLER: &str = "guestreset-controller";
/// The groups the RoleBindings of `examples/rbac/` name.
pub const REQUESTERS: &str = "guestreset-requesters";
pub const APPROVERS: &str = "guestreset-approvers";
/// The approver of one reset in `examples/rbac/approver-of-one-reset.yaml`, and that reset.
pub const DAVE: &str = "dave@fabrikam.example";
pub const ONE_RESET: &str = "alice-to-newco";
/// The admin of the control plane's kubeconfig (`system:masters`).
pub const ADMIN: &str = "guestreset-admin";
/// A test-only ClusterRole: writing status without the verb approve, so that a refusal of an
/// approval is the policy's doing and not RBAC's.
const STATUS_WRITER: &str = "guestreset-test-status-writer";
/// Bound on what the API server does asynchronously: a new policy, binding or RoleBinding taking
/// effect.
pub const SETTLE: Duration = Duration::from_secs(60);
const FIELD_MANAGER: &str = "approval-policy-test";
/// A fixed decision time: the policy does not look at it.
pub const AT: &str = "2026-12-02T14:00:00Z";

/// What the test's release of the chart installs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Chart {
    /// `requireApproval: true`.
    RequireApproval,
    /// The chart's defaults: the policy, without the requester annotation being required.
    PolicyOnly,
    /// `admissionPolicy.enabled: false` (and `requireApproval: false`).
    NoPolicy,
}

/// Someone who acts on the API server: a name and their view of the namespace's resets.
pub struct Person {
    pub name: String,
    pub grr: Api<GuestRedemptionReset>,
}

pub struct Fixture {
    pub cp: &'static ControlPlane,
    pub ns: String,
    /// The release's full name, which the policy and its binding are named after.
    pub policy: String,
    /// What `helm template` rendered.
    pub rendered: Vec<Value>,
    /// The control plane's admin (`system:masters`), as a client.
    pub client: kube::Client,
    pub admin: Person,
    pub alice: Person,
    pub bob: Person,
    pub carol: Person,
    pub dave: Person,
    pub controller: Person,
}

/// The people, made once per test binary: alice and carol ask for resets, bob approves, dave
/// approves one reset, the controller is the controller.
pub fn identity(cp: &ControlPlane, name: &str) -> Identity {
    match name {
        "alice" | "carol" => cp.user(name, &[REQUESTERS]),
        "bob" => cp.user(name, &[APPROVERS]),
        _ => cp.user(name, &[]),
    }
}

impl Fixture {
    /// A namespace `prefix-*` with its own release of the chart rendered as `chart` says, the
    /// example RBAC, carol and dave able to write status (without approve), and everything in
    /// effect: every right that the tests rely on is granted, and the policy refuses.
    pub async fn new(prefix: &str, chart: Chart) -> Fixture {
        let cp = ControlPlane::shared().await;
        let ns = cp.namespace(prefix).await;
        Fixture::in_namespace(&ns, chart).await
    }

    /// The same in an existing namespace `ns` (an end-to-end test's world).
    pub async fn in_namespace(ns: &str, chart: Chart) -> Fixture {
        let ns = ns.to_owned();
        let cp = ControlPlane::shared().await;
        let admin = cp.client().await;
        static ONCE: OnceCell<()> = OnceCell::const_new();
        ONCE.get_or_init(|| async {
            cp.install_guestreset_crd().expect("install the CRD");
            apply(&admin, status_writer_role(), None).await;
        })
        .await;
        let rendered = render(&ns, chart).await;
        let policy = rendered
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .and_then(|d| d["metadata"]["name"].as_str())
            .expect("a Deployment named after the release")
            .to_owned();

        for object in installed_objects(&rendered) {
            apply(&admin, object, Some(&ns)).await;
        }
        for object in example_rbac(&ns, &policy) {
            apply(&admin, object, Some(&ns)).await;
        }
        let writers = status_writers_binding(&ns, &["carol", DAVE]);
        apply(&admin, writers, Some(&ns)).await;

        let ns_ref = &ns;
        let person = |name: &'static str| async move {
            let client = identity(cp, name).client().await;
            Person {
                name: name.to_owned(),
                grr: Api::namespaced(client, ns_ref),
            }
        };
        let fixture = Fixture {
            cp,
            policy,
            rendered,
            admin: Person {
                name: ADMIN.to_owned(),
                grr: Api::namespaced(admin.clone(), &ns),
            },
            client: admin,
            alice: person("alice").await,
            bob: person("bob").await,
            carol: person("carol").await,
            dave: person(DAVE).await,
            controller: person(CONTROLLER).await,
            ns: ns.clone(),
        };
        fixture.wait_for_rights().await;
        if chart != Chart::NoPolicy {
            fixture.wait_for_policy().await;
        }
        fixture
    }

    /// Until RBAC grants what the example roles, the chart's controller role and the test's
    /// status writers grant: a refusal later is then never a RoleBinding not yet seen.
    async fn wait_for_rights(&self) {
        let rights = [
            ("alice", "create", "", ""),
            ("carol", "update", "", ""),
            ("bob", "approve", "", ""),
            ("bob", "patch", "status", ""),
            ("carol", "patch", "status", ""),
            (DAVE, "approve", "", ONE_RESET),
            (DAVE, "patch", "status", ""),
            (CONTROLLER, "patch", "status", ""),
        ];
        for (who, verb, subresource, name) in rights {
            wait_until(
                &format!("{who} to be allowed to {verb} {subresource} {name}"),
                SETTLE,
                || async {
                    Ok::<_, String>(self.may(who, verb, subresource, name).await.then_some(()))
                },
            )
            .await;
        }
    }

    /// Until the policy refuses a creation (dry run) whose requester annotation names someone
    /// else: the policy and its binding are then in effect in this namespace.
    pub async fn wait_for_policy(&self) {
        let probe = reset("policy-probe", Some("not-the-admin"));
        wait_until("the approval policy to take effect", SETTLE, || async {
            let dry_run = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            match self.admin.grr.create(&dry_run, &probe).await {
                Err(kube::Error::Api(status)) if status.message.contains(&self.marker()) => {
                    Ok(Some(()))
                }
                Ok(_) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
    }

    /// What every refusal by this policy says.
    pub fn marker(&self) -> String {
        format!("ValidatingAdmissionPolicy '{}'", self.policy)
    }

    /// Whether the authorizer lets `who` (with their certificate's groups) `verb` resets (or
    /// their `subresource`, or the one called `name`) in this namespace.
    pub async fn may(&self, who: &str, verb: &str, subresource: &str, name: &str) -> bool {
        let person = identity(self.cp, who);
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(person.name.clone()),
                groups: Some(person.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some("guestreset.io".to_owned()),
                    resource: Some("guestredemptionresets".to_owned()),
                    subresource: (!subresource.is_empty()).then(|| subresource.to_owned()),
                    verb: Some(verb.to_owned()),
                    namespace: Some(self.ns.clone()),
                    name: (!name.is_empty()).then(|| name.to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let reviews: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .expect("create a SubjectAccessReview");
        answer.status.is_some_and(|s| s.allowed)
    }

    /// Binds the ClusterRole `role` to `who` in this namespace (a test-only extra right) and waits
    /// until the authorizer grants `verb` on `subresource` of resets to them.
    pub async fn grant(&self, who: &str, role: &str, verb: &str, subresource: &str) {
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": format!("test-{role}-{}", who.replace('@', "-")), "namespace": self.ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": who}],
        });
        apply(&self.client, binding, Some(&self.ns)).await;
        wait_until(&format!("{who} to be granted {role}"), SETTLE, || async {
            Ok::<_, String>(self.may(who, verb, subresource, "").await.then_some(()))
        })
        .await;
    }

    /// The ClusterRole of the chart's approvers in this release.
    pub fn approver_role(&self) -> String {
        format!("{}-approver", self.policy)
    }

    /// The test's status writers' ClusterRole.
    pub fn status_writer_role(&self) -> &'static str {
        STATUS_WRITER
    }

    /// `by` creates the reset `name`, with the requester annotation when given.
    pub async fn create(
        &self,
        by: &Person,
        name: &str,
        requested_by: Option<&str>,
    ) -> Result<GuestRedemptionReset, kube::Error> {
        by.grr
            .create(&PostParams::default(), &reset(name, requested_by))
            .await
    }

    /// `by` creates `name`, naming themselves as requester; panics when refused.
    pub async fn requested(&self, by: &Person, name: &str) -> GuestRedemptionReset {
        self.create(by, name, Some(&by.name))
            .await
            .unwrap_or_else(|e| panic!("{} could not create {name}: {e}", by.name))
    }

    /// The reset as stored now.
    pub async fn get(&self, name: &str) -> GuestRedemptionReset {
        self.admin
            .grr
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get {name}: {e}"))
    }

    /// `by` merge-patches the reset `name` with `patch`.
    pub async fn patch(
        &self,
        by: &Person,
        name: &str,
        patch: Value,
    ) -> Result<GuestRedemptionReset, kube::Error> {
        by.grr
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
    }

    /// `by` changes the spec of `name` (a new e-mail), with `annotations` in the same patch.
    pub async fn change_spec(
        &self,
        by: &Person,
        name: &str,
        email: &str,
        annotations: Value,
    ) -> Result<GuestRedemptionReset, kube::Error> {
        let patch = json!({"metadata": {"annotations": annotations}, "spec": {"email": email}});
        self.patch(by, name, patch).await
    }

    /// `by` merge-patches the status of `name` with `status`, under the resourceVersion just read
    /// (as an approver does, so that the decision is about what was read).
    pub async fn patch_status(
        &self,
        by: &Person,
        name: &str,
        status: Value,
    ) -> Result<GuestRedemptionReset, kube::Error> {
        let version = self.get(name).await.resource_version();
        let patch = json!({"metadata": {"resourceVersion": version}, "status": status});
        by.grr
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
    }

    /// `by` records `decision` about `generation` of `name`, signed `signed`.
    pub async fn decide_as(
        &self,
        by: &Person,
        name: &str,
        generation: i64,
        decision: &str,
        signed: &str,
    ) -> Result<GuestRedemptionReset, kube::Error> {
        let approval = approval(generation, decision, signed);
        self.patch_status(by, name, json!({"approval": approval}))
            .await
    }

    /// `by` records `decision` about `generation` of `name`, under their own name.
    pub async fn decide(
        &self,
        by: &Person,
        name: &str,
        generation: i64,
        decision: &str,
    ) -> Result<GuestRedemptionReset, kube::Error> {
        self.decide_as(by, name, generation, decision, &by.name)
            .await
    }

    /// Runs `attempt` on the reset `name` and asserts that this policy refused it saying `says`,
    /// and that the stored reset is exactly what it was before.
    pub async fn refused<T: std::fmt::Debug>(
        &self,
        name: &str,
        says: &str,
        attempt: impl Future<Output = Result<T, kube::Error>>,
    ) {
        let before = self.admin.grr.get_opt(name).await.expect("read before");
        let outcome = attempt.await;
        self.assert_refused(outcome, says);
        let after = self.admin.grr.get_opt(name).await.expect("read after");
        assert_eq!(
            after, before,
            "{name} changed although the request was refused"
        );
    }

    /// `outcome` is this policy's refusal saying `says`.
    pub fn assert_refused<T: std::fmt::Debug>(&self, outcome: Result<T, kube::Error>, says: &str) {
        match outcome {
            Err(kube::Error::Api(status)) => {
                assert!(
                    status.message.contains(&self.marker()) && status.message.contains(says),
                    "refused, but not by {} saying {says:?}: {status:?}",
                    self.policy
                );
                assert!(
                    [403, 422].contains(&status.code),
                    "unexpected code: {status:?}"
                );
            }
            other => panic!(
                "expected {} to refuse saying {says:?}, got {other:?}",
                self.policy
            ),
        }
    }
}

/// A reset of a fixed guest to a new e-mail, named `name`.
pub fn reset(name: &str, requested_by: Option<&str>) -> GuestRedemptionReset {
    let annotations: serde_json::Map<String, Value> = requested_by
        .map(|r| (REQUESTED_BY_ANNOTATION.to_owned(), Value::from(r)))
        .into_iter()
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "guestreset.io/v1alpha1",
        "kind": "GuestRedemptionReset",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "user": {"id": "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41"},
            "email": "alice@newco.example",
            "changeRef": "CHG-20931",
        },
    }))
    .expect("a valid reset")
}

/// An approval record as the plugin writes it.
pub fn approval(generation: i64, decision: &str, by: &str) -> Value {
    json!({
        "generation": generation,
        "decision": decision,
        "by": by,
        "at": AT,
        "reason": "CHG-20931 reviewed",
    })
}

/// The test's release of the chart: release and namespace `ns`, watching `ns` (so the policy is
/// bound to `ns` only and tests do not see each other's), the controller as [`CONTROLLER`].
async fn render(ns: &str, chart: Chart) -> Vec<Value> {
    let watch = format!("watchNamespace={ns}");
    let controller = format!("admissionPolicy.controllerUsername={CONTROLLER}");
    let mut sets = vec!["--set", &watch, "--set-string", &controller];
    match chart {
        Chart::RequireApproval => sets.extend(["--set", "requireApproval=true"]),
        Chart::PolicyOnly => {}
        Chart::NoPolicy => sets.extend(["--set", "admissionPolicy.enabled=false"]),
    }
    let text = helm()
        .template(ns, ns, "", &sets)
        .await
        .unwrap_or_else(|e| panic!("helm template: {e}"));
    documents(&text)
}

/// The rendered objects that decide what is allowed (the policy and RBAC), with the chart's
/// bindings of its ServiceAccount bound to [`CONTROLLER`] instead: the tests run no pod.
fn installed_objects(rendered: &[Value]) -> Vec<Value> {
    const KINDS: [&str; 6] = [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    rendered
        .iter()
        .filter(|o| KINDS.iter().any(|k| o["kind"] == *k))
        .cloned()
        .map(|mut o| {
            if let Some(subjects) = o.get_mut("subjects").and_then(Value::as_array_mut) {
                for subject in subjects.iter_mut() {
                    assert_eq!(subject["kind"], "ServiceAccount", "{subject}");
                    *subject = json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CONTROLLER});
                }
            }
            o
        })
        .collect()
}

fn status_writer_role() -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": STATUS_WRITER},
        "rules": [{
            "apiGroups": ["guestreset.io"],
            "resources": ["guestredemptionresets/status"],
            "verbs": ["get", "patch", "update"],
        }],
    })
}

fn status_writers_binding(ns: &str, users: &[&str]) -> Value {
    let subjects: Vec<Value> = users
        .iter()
        .map(|u| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u}))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "test-status-writers", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": STATUS_WRITER},
        "subjects": subjects,
    })
}

/// Server-side apply of one object (in `namespace` when it is namespaced).
pub async fn apply(client: &kube::Client, object: Value, namespace: Option<&str>) {
    let (group, version) = match object["apiVersion"].as_str().expect("apiVersion") {
        gv if gv.contains('/') => gv.split_once('/').expect("group/version"),
        v => ("", v),
    };
    let kind = object["kind"].as_str().expect("kind");
    let (resource, capabilities) =
        pinned_kind(client, &GroupVersionKind::gvk(group, version, kind))
            .await
            .unwrap_or_else(|e| panic!("discover {kind}: {e}"));
    let api: Api<DynamicObject> = match (capabilities.scope, namespace) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
        (Scope::Namespaced, None) => panic!("{kind} needs a namespace"),
        (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
    };
    let name = object["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
}
