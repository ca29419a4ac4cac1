//! The world of an end-to-end test (feature `operator`): a namespace on the shared control
//! plane, an HTTPS Graph simulator, and `guestreset run` processes pointed at both.
//!
//! [`World`] is generic over the resource type so that this crate never depends on
//! `guestreset` (which depends on this crate for its tests): the tests name
//! `World<GuestRedemptionReset>`, and everything the harness reads from a resource (generation,
//! the Ready condition) it reads from the resource's JSON.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use graph_sim::{AdminClient, JournalEntry, SeedUser, SimConfig, Simulator};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::{ChildProcess, ControlPlane, wait_until};

/// How long [`World::wait_reason`] waits.
pub const WAIT: Duration = Duration::from_secs(60);

/// The annotation that asks for a retry of the current generation (docs/resource.md, "Asking
/// again").
pub const RETRY_ANNOTATION: &str = "guestreset.io/retry";

/// `guestreset run` for one namespace against one simulator: the connection settings every
/// harness uses. The operator watches only `namespace` and keeps its namespaced state (the
/// tenant pause record) there too (`POD_NAMESPACE`), so tests sharing one API server share
/// nothing. Variables of the developer's shell that would change the behaviour are removed.
pub fn guestreset_command(
    binary: &Path,
    kubeconfig: &Path,
    namespace: &str,
    sim: &Simulator,
) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args(["run", "--namespace", namespace, "--log-format", "json"])
        .env("KUBECONFIG", kubeconfig)
        .env("GRAPH_ENDPOINT", sim.base_url())
        .env("AZURE_AUTHORITY_HOST", sim.base_url())
        .env("AZURE_TENANT_ID", sim.tenant_id())
        .env("AZURE_CLIENT_ID", sim.client_id())
        .env("AZURE_CLIENT_SECRET", sim.client_secret())
        .env("SSL_CERT_FILE", sim.ca_pem_path())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("POD_NAMESPACE", namespace);
    for name in [
        "GUESTRESET_FAILPOINT",
        "WATCH_NAMESPACE",
        "ALLOWED_EMAIL_DOMAINS",
        "MAX_WRITES_PER_MINUTE",
        "WRITE_BURST",
        "CONCURRENCY",
        "GRAPH_TIMEOUT",
        "MAX_READS_PER_MINUTE",
        "REDEMPTION_WATCH",
        "REDEMPTION_FIRST_CHECK",
        "LEADER_ELECT",
        "REQUIRE_APPROVAL",
        "ADMISSION_POLICY",
        "POD_NAME",
        "HTTPS_PROXY",
        "https_proxy",
    ] {
        cmd.env_remove(name);
    }
    cmd
}

static CRD: OnceCell<()> = OnceCell::const_new();

/// One test's world: a namespace, a simulator, and the operators it starts.
pub struct World<K> {
    pub cp: &'static ControlPlane,
    pub ns: String,
    pub sim: Simulator,
    pub admin: AdminClient,
    pub api: Api<K>,
    pub client: kube::Client,
    pub operators: Vec<ChildProcess>,
    /// The simulator's state directory (and room for the test's own files).
    pub _state: tempfile::TempDir,
    binary: PathBuf,
}

impl<K> World<K>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
{
    /// Installs the CRD (once per test binary), makes a namespace `prefix-*`, starts a simulator
    /// seeded with `users`; operators started later run `binary`.
    pub async fn start(prefix: &str, users: Vec<SeedUser>, binary: impl Into<PathBuf>) -> Self {
        Self::start_with(prefix, users, binary, |config| config).await
    }

    /// [`World::start`] with the simulator's configuration adjusted by `configure` (its seed,
    /// its latency).
    pub async fn start_with(
        prefix: &str,
        users: Vec<SeedUser>,
        binary: impl Into<PathBuf>,
        configure: impl FnOnce(SimConfig) -> SimConfig,
    ) -> Self {
        let cp = ControlPlane::shared().await;
        CRD.get_or_init(|| async { cp.install_guestreset_crd().unwrap() })
            .await;
        let ns = cp.namespace(prefix).await;
        let state = tempfile::tempdir().unwrap();
        let config = configure(SimConfig::new(state.path()).with_users(users));
        let sim = graph_sim::start(config).await.unwrap();
        let admin = sim.admin();
        let client = cp.client().await;
        World {
            cp,
            api: Api::namespaced(client.clone(), &ns),
            client,
            ns,
            sim,
            admin,
            operators: vec![],
            _state: state,
            binary: binary.into(),
        }
    }

    /// A `guestreset run` command for this world, watching only its namespace, with limits
    /// loose enough for tests (600 writes a minute, a 6 s replication window).
    pub fn operator_command(&self, extra: &[&str]) -> Command {
        let mut cmd =
            guestreset_command(&self.binary, self.cp.kubeconfig_path(), &self.ns, &self.sim);
        cmd.args([
            "--max-writes-per-minute",
            "600",
            "--write-burst",
            "20",
            "--replication-window",
            "6s",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .env("RUST_LOG", "info,guestreset=debug");
        cmd
    }

    pub fn start_operator(&mut self, extra: &[&str]) -> usize {
        let child = ChildProcess::spawn(self.operator_command(extra)).unwrap();
        self.operators.push(child);
        self.operators.len() - 1
    }

    pub fn start_operator_with(&mut self, cmd: Command) -> usize {
        self.operators.push(ChildProcess::spawn(cmd).unwrap());
        self.operators.len() - 1
    }

    pub async fn create(&self, name: &str, spec: Value) {
        self.create_annotated(name, spec, json!({})).await;
    }

    pub async fn create_annotated(&self, name: &str, spec: Value, annotations: Value) {
        let obj: K = serde_json::from_value(json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": {"name": name, "annotations": annotations},
            "spec": spec,
        }))
        .unwrap();
        self.api.create(&PostParams::default(), &obj).await.unwrap();
    }

    pub async fn patch_spec(&self, name: &str, spec: Value) {
        self.api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .unwrap();
    }

    pub async fn annotate_retry(&self, name: &str, value: &str) {
        let patch = json!({"metadata": {"annotations": {RETRY_ANNOTATION: value}}});
        self.api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    pub async fn get(&self, name: &str) -> K {
        self.api.get(name).await.unwrap()
    }

    /// Waits until Ready has `reason` for the current generation; returns the resource.
    pub async fn wait_reason(&self, name: &str, reason: &str) -> K {
        self.wait_reason_for(name, reason, WAIT).await
    }

    pub async fn wait_reason_for(&self, name: &str, reason: &str, timeout: Duration) -> K {
        let api = self.api.clone();
        wait_until(&format!("{name} to be {reason}"), timeout, || {
            let api = api.clone();
            async move {
                let obj = api.get(name).await.map_err(|e| e.to_string())?;
                let json = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
                match current_ready(&json) {
                    Some(ready) if ready["reason"] == reason => Ok(Some(obj)),
                    _ => Err(format!("Ready = {}", describe_ready(&json))),
                }
            }
        })
        .await
    }

    pub async fn journal(&self) -> Vec<JournalEntry> {
        self.admin.journal().await.unwrap()
    }

    pub async fn posts(&self) -> Vec<JournalEntry> {
        self.admin.invitation_posts().await.unwrap()
    }

    /// The Events about the resource `name`.
    pub async fn events(&self, name: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect()
    }

    /// Every operator's log so far, one after the other.
    pub fn logs(&self) -> String {
        self.operators
            .iter()
            .map(|o| o.read_log())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every operator log line, checked for credentials: no access token, no redeem URL.
    pub async fn assert_no_secrets_in_logs(&self) {
        let secrets = self.admin.issued_tokens_and_redeem_urls().await.unwrap();
        let logs = self.logs();
        assert!(!logs.is_empty());
        for token in &secrets.access_tokens {
            assert!(
                !logs.contains(token.as_str()),
                "an access token is in the operator's logs"
            );
        }
        for url in &secrets.redeem_urls {
            assert!(
                !logs.contains(url.as_str()),
                "a redeem URL is in the operator's logs"
            );
        }
    }
}

impl<K> Drop for World<K> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, op) in self.operators.iter().enumerate() {
                let log = op.read_log();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                eprintln!(
                    "---- operator {i} log (last {} lines, newest last)",
                    tail.len()
                );
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// The Ready condition of a resource's JSON, if it describes the current generation.
pub fn current_ready(resource: &Value) -> Option<&Value> {
    let ready = resource["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    (ready["observedGeneration"] == resource["metadata"]["generation"]).then_some(ready)
}

/// `(status, reason, message, observedGeneration)` of the Ready condition, for messages.
fn describe_ready(resource: &Value) -> String {
    let ready = resource["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
    match ready {
        Some(c) => format!(
            "Some(({}, {}, {}, {}))",
            c["status"], c["reason"], c["message"], c["observedGeneration"]
        ),
        None => "None".into(),
    }
}
