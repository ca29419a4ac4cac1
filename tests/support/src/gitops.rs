//! What GitOps tools make of live objects: `gitops-check` (tests/gitops-check, built by
//! `scripts/gitops-check.sh`) computes kstatus's verdict, as Flux's `wait` and kpt read it, and
//! runs an Argo CD health script the way Argo CD runs one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// One object as the tools see it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub name: String,
    /// kstatus: `Current`, `InProgress`, `Failed`, `Terminating`, `NotFound` or `Unknown`.
    pub kstatus: String,
    pub kstatus_message: String,
    /// Argo CD: `Healthy`, `Progressing`, `Degraded`, `Suspended`, `Missing` or `Unknown`.
    pub argo: String,
    pub argo_message: String,
}

/// The binary of `scripts/gitops-check.sh build`, built on first use. A failed build fails
/// every test that needs it, with the script's reason.
pub fn gitops_check() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    crate::tool_or_panic(BIN.get_or_init(|| crate::build_tool("gitops-check")))
}

/// The verdicts on `objects` (one object, or a List as `kubectl get -o json` prints it), with
/// the Argo CD health script at `health_lua`.
pub async fn judge(objects: &serde_json::Value, health_lua: &Path) -> Vec<Verdict> {
    let mut child = tokio::process::Command::new(gitops_check())
        .arg(health_lua)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start gitops-check");
    let mut stdin = child.stdin.take().expect("gitops-check's stdin");
    stdin
        .write_all(objects.to_string().as_bytes())
        .await
        .expect("write to gitops-check");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("gitops-check answers within 30 s")
        .expect("gitops-check runs");
    assert!(
        out.status.success(),
        "gitops-check: {}",
        crate::describe(&out)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}
