//! What the plugin tests share: a namespace of their own on the shared control plane with the
//! CRD installed, the plugin run as a process, statuses written as the controller would write
//! them, and kubeconfig files with other contexts and identities.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use guestreset::resource::GuestRedemptionReset;
use guestreset_testsupport::{ControlPlane, describe, wait_until};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::sync::OnceCell;

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-guestreset");
/// The admin of the test control plane, as its client certificate names it.
pub const ADMIN: &str = "guestreset-admin";
pub const GUID: &str = "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41";
pub const REQUESTER: &str = "alice@fabrikam.example";
pub const PLAN: &str = "resolve mail alice@contoso.com: guest 3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41\nset mail to alice@newco.example\ninvite alice@newco.example with resetRedemption";
/// Bound on the API server's asynchronous work (discovery, admission policies).
pub const SETTLE: Duration = Duration::from_secs(90);
/// Bound on one process; a hung plugin must fail the test, not stall it.
const DEADLINE: Duration = Duration::from_secs(120);

/// One test's namespace on the shared control plane.
pub struct Ns {
    pub cp: &'static ControlPlane,
    pub name: String,
    pub api: Api<GuestRedemptionReset>,
}

impl Ns {
    pub async fn new(prefix: &str) -> Ns {
        let cp = control_plane_with_crd().await;
        let name = cp.namespace(prefix).await;
        let api = Api::namespaced(cp.client().await, &name);
        Ns { cp, name, api }
    }

    /// The plugin with the admin's kubeconfig, working in this namespace.
    pub async fn plugin(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run(self.plugin_command(&all)).await
    }

    /// The plugin in this namespace, which must exit with `code`; its stdout and stderr.
    pub async fn expect(&self, args: &[&str], code: i32) -> (String, String) {
        expect_exit(&self.plugin(args).await, code)
    }

    /// The plugin with the admin's kubeconfig and `args` as they are.
    pub fn plugin_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(PLUGIN);
        command
            .args(args)
            .env("KUBECONFIG", self.cp.kubeconfig_path())
            // Everything is on loopback; a proxy of the environment must not get in the way.
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// kubectl of the control plane's release, with a discovery cache of its own.
    pub fn kubectl(&self) -> Command {
        kubectl(self.cp)
    }

    /// A resource created by the admin (through the API, not the plugin).
    pub async fn create(&self, name: &str, email: &str) -> GuestRedemptionReset {
        let obj: GuestRedemptionReset = serde_json::from_value(json!({
            "apiVersion": "guestreset.io/v1alpha1",
            "kind": "GuestRedemptionReset",
            "metadata": {"name": name, "annotations": {"guestreset.io/requested-by": ADMIN}},
            "spec": {"user": {"mail": "alice@contoso.com"}, "email": email},
        }))
        .expect("a valid resource");
        self.api
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"))
    }

    /// Writes `status` through the status subresource, as the controller would.
    pub async fn set_status(&self, name: &str, status: Value) -> GuestRedemptionReset {
        self.api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap_or_else(|e| panic!("write the status of {name}: {e}"))
    }

    /// A spec edit: a new generation.
    pub async fn edit_email(&self, name: &str, email: &str) -> GuestRedemptionReset {
        self.api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"email": email}})),
            )
            .await
            .unwrap_or_else(|e| panic!("edit {name}: {e}"))
    }

    pub async fn get(&self, name: &str) -> GuestRedemptionReset {
        self.api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get {name}: {e}"))
    }
}

/// A command line split as a shell splits words without quotes.
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// The status of a generation waiting for its approval, with a plan and a requester.
pub fn awaiting_approval(generation: i64) -> Value {
    json!({
        "observedGeneration": generation,
        "phase": "Pending",
        "plan": PLAN,
        "requestedBy": REQUESTER,
        "conditions": [ready("Unknown", "AwaitingApproval", "waiting for an approver", generation)],
    })
}

/// The status of a generation whose Ready condition says `reason`.
pub fn outcome(status: &str, reason: &str, message: &str, generation: i64) -> Value {
    json!({
        "observedGeneration": generation,
        "conditions": [ready(status, reason, message, generation)],
    })
}

pub fn ready(status: &str, reason: &str, message: &str, generation: i64) -> Value {
    condition("Ready", status, reason, message, generation)
}

pub fn condition(type_: &str, status: &str, reason: &str, message: &str, generation: i64) -> Value {
    json!({
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": "2026-12-02T14:00:00Z",
    })
}

/// The exit code, or a panic that shows what the process said.
pub fn expect_exit(out: &Output, code: i32) -> (String, String) {
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command to its end, within the deadline.
pub async fn run(mut command: Command) -> Output {
    match tokio::time::timeout(DEADLINE, command.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("run {command:?}: {e}"),
        Err(_) => panic!("{command:?} did not finish within {DEADLINE:?}"),
    }
}

/// Runs `command` with `input` on its stdin.
pub async fn run_with_input(mut command: Command, input: &[u8]) -> Output {
    use tokio::io::AsyncWriteExt;
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input).await.expect("write stdin");
    drop(stdin);
    match tokio::time::timeout(DEADLINE, child.wait_with_output()).await {
        Ok(out) => out.expect("wait"),
        Err(_) => panic!("{command:?} did not finish within {DEADLINE:?}"),
    }
}

fn kubectl(cp: &ControlPlane) -> Command {
    let mut command = Command::from(cp.kubectl());
    command
        .arg(format!(
            "--cache-dir={}",
            cp.dir().join("kubectl-cache-plugin").display()
        ))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// The control plane of this test binary with the CRD installed and served; the first caller
/// installs it, later callers wait for that.
async fn control_plane_with_crd() -> &'static ControlPlane {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    let cp = ControlPlane::shared().await;
    INSTALLED
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| cp.install_guestreset_crd())
                .await
                .expect("install task")
                .unwrap_or_else(|e| panic!("install the CRD: {e}"));
            // Established is not yet served by discovery, which kubectl needs for `apply`.
            wait_until(
                "kubectl to resolve grr through discovery",
                SETTLE,
                || async {
                    let mut get = kubectl(cp);
                    get.args(["get", "grr", "--all-namespaces"]);
                    let out = run(get).await;
                    if out.status.success() {
                        Ok(Some(()))
                    } else {
                        Err(describe(&out))
                    }
                },
            )
            .await;
        })
        .await;
    cp
}

/// One context of a kubeconfig written by [`kubeconfig`].
pub struct Context<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    /// A user the admin impersonates (kubeconfig's `as`), or the admin itself.
    pub impersonate: Option<&'a str>,
}

/// `dir/kubeconfig` for the control plane with these contexts, the first one current.
pub fn kubeconfig(cp: &ControlPlane, dir: &Path, contexts: &[Context<'_>]) -> PathBuf {
    let text = std::fs::read_to_string(cp.kubeconfig_path()).expect("read the kubeconfig");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).expect("parse the kubeconfig");
    let admin = config["users"][0]["user"].clone();
    let cluster = config["clusters"][0]["name"].clone();
    let mut users = vec![];
    let mut entries = vec![];
    for context in contexts {
        let mut user = admin.clone();
        if let Some(name) = context.impersonate {
            user["as"] = name.into();
        }
        let mut entry = serde_yaml::Mapping::new();
        entry.insert("name".into(), context.name.into());
        entry.insert("user".into(), user);
        users.push(serde_yaml::Value::Mapping(entry));
        entries.push(
            serde_yaml::to_value(json!({
                "name": context.name,
                "context": {"cluster": cluster.as_str(), "user": context.name, "namespace": context.namespace},
            }))
            .unwrap(),
        );
    }
    config["users"] = users.into();
    config["contexts"] = entries.into();
    config["current-context"] = contexts[0].name.into();
    std::fs::create_dir_all(dir).expect("create the kubeconfig's directory");
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).expect("write the kubeconfig");
    path
}
