//! The Helm chart of the repository (`charts/guestreset`) for the tests that render, lint or
//! install it: Helm itself (built by `scripts/helm.sh`, isolated from the user's Helm setup),
//! `helm template` for the pinned Kubernetes version, the rendered YAML as JSON values, and the
//! example RoleBindings of `examples/rbac/` made fit for a test's namespace and release.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::{describe, path_str, pinned_kubernetes_version, repo_root, run_bounded, yaml_files};

/// Where the chart lives, relative to the repository root.
pub const CHART_DIR: &str = "charts/guestreset";
/// Where the example RBAC for people lives, relative to the repository root.
pub const EXAMPLE_RBAC_DIR: &str = "examples/rbac";
/// The namespace the examples are written for.
pub const EXAMPLE_NAMESPACE: &str = "identity";
/// The full name of a release called `guestreset`, which the examples' role references use.
pub const EXAMPLE_FULLNAME: &str = "guestreset";
/// Bound on one helm invocation: a hung tool must fail the test.
pub const TOOL_DEADLINE: Duration = Duration::from_secs(120);

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    repo_root().join(CHART_DIR)
}

/// The helm of `scripts/helm.sh build` and a home of its own.
pub struct Helm {
    bin: PathBuf,
    /// Helm's config, cache and data homes, and the values files of the tests: nothing
    /// of the user's Helm setup is read or written.
    home: tempfile::TempDir,
}

/// The helm of `scripts/helm.sh build`, built on first use. A failed build fails every
/// test with the script's reason; nothing is skipped.
pub fn helm() -> &'static Helm {
    static HELM: OnceLock<Result<Helm, String>> = OnceLock::new();
    let built = HELM.get_or_init(|| {
        let bin = crate::build_tool("helm")?;
        let home = tempfile::tempdir().map_err(|e| format!("helm home: {e}"))?;
        Ok(Helm { bin, home })
    });
    match built {
        Ok(helm) => helm,
        Err(e) => panic!("helm is unavailable: {e}"),
    }
}

impl Helm {
    /// Runs helm without any cluster: rendering and linting must not depend on one.
    pub async fn run(&self, args: &[&str]) -> Output {
        let home = self.home.path();
        self.run_with_kubeconfig(args, &home.join("no-kubeconfig"))
            .await
    }

    /// Runs helm against the cluster of `kubeconfig`.
    pub async fn run_with_kubeconfig(&self, args: &[&str], kubeconfig: &Path) -> Output {
        let home = self.home.path();
        let mut command = tokio::process::Command::new(&self.bin);
        command
            .args(args)
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("HELM_NAMESPACE")
            .env_remove("HELM_KUBECONTEXT")
            .env("KUBECONFIG", kubeconfig)
            // The test API server is on loopback; never through a proxy.
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .kill_on_drop(true);
        run_bounded(command, None, &format!("helm {args:?}"), TOOL_DEADLINE).await
    }

    /// Writes `values` (YAML) to a fresh file and returns its path.
    pub fn values_file(&self, values: &str) -> PathBuf {
        let file = tempfile::Builder::new()
            .prefix("values-")
            .suffix(".yaml")
            .tempfile_in(self.home.path())
            .expect("create values file");
        std::fs::write(file.path(), values).expect("write values file");
        let (_, path) = file.keep().expect("keep values file");
        path
    }

    /// `helm template RELEASE charts/guestreset --namespace NAMESPACE --values <values> EXTRA...`
    /// for the pinned Kubernetes version: the manifests, or helm's error.
    pub async fn template(
        &self,
        release: &str,
        namespace: &str,
        values: &str,
        extra: &[&str],
    ) -> Result<String, String> {
        let values_file = self.values_file(values);
        let chart = chart_dir();
        let kube_version = pinned_kubernetes_version();
        let mut args = vec![
            "template",
            release,
            path_str(&chart),
            "--namespace",
            namespace,
            "--kube-version",
            &kube_version,
            "--values",
            path_str(&values_file),
        ];
        args.extend_from_slice(extra);
        let out = self.run(&args).await;
        if out.status.success() {
            Ok(String::from_utf8(out.stdout).expect("helm prints UTF-8"))
        } else {
            Err(describe(&out))
        }
    }
}

/// The documents of a multi-document YAML text, as JSON values, without the empty ones.
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("the YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The objects of `examples/rbac/` (file by file, in name order), moved from the namespace
/// `identity` to `namespace`, with the references to the ClusterRoles of a release named
/// `guestreset` turned into references to those of the release whose full name is `fullname`.
pub fn example_rbac(namespace: &str, fullname: &str) -> Vec<Value> {
    let prefix = format!("{EXAMPLE_FULLNAME}-");
    yaml_files(EXAMPLE_RBAC_DIR)
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file)
                .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            documents(&text)
        })
        .map(|mut object| {
            assert_eq!(
                object["metadata"]["namespace"], EXAMPLE_NAMESPACE,
                "every example of {EXAMPLE_RBAC_DIR} is for namespace {EXAMPLE_NAMESPACE}: {object}"
            );
            object["metadata"]["namespace"] = Value::from(namespace);
            if let Some(role_ref) = object
                .get_mut("roleRef")
                .filter(|r| r["kind"] == "ClusterRole")
            {
                let name = role_ref["name"].as_str().unwrap_or_default();
                let suffix = name.strip_prefix(&prefix).unwrap_or_else(|| {
                    panic!("{name} is not a ClusterRole of the release {EXAMPLE_FULLNAME}")
                });
                role_ref["name"] = Value::from(format!("{fullname}-{suffix}"));
            }
            object
        })
        .collect()
}
