//! A pod without a kubelet: the `podman run` arguments that reproduce a Deployment's pod
//! (security context, limits, environment, volumes, arguments) and the container that runs
//! them, removed when dropped. `tests/image.rs` runs the chart's rendered Deployment with it,
//! `tests/install.rs` the Deployment the walk's `helm install` created.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::ChildProcess;

/// Where the kubelet mounts a pod's ServiceAccount token, CA and namespace.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What the kubelet would have: the pod's name and namespace, its Secrets and ConfigMaps,
/// the ServiceAccount token, and a scratch directory to lay volumes out in.
pub struct PodWorld<'a> {
    pub pod_name: String,
    pub namespace: String,
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub config_maps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub token: String,
    /// Tokens for `projected` `serviceAccountToken` volumes, by audience.
    pub projected_tokens: BTreeMap<String, String>,
    pub cluster_ca: Vec<u8>,
    pub api_port: u16,
    pub dir: &'a Path,
}

/// The `podman run` arguments that reproduce the Deployment's pod: everything before the
/// image reference, and the container's arguments after it. Panics on a field it does
/// not know how to reproduce.
pub fn podman_run_args(deployment: &Value, world: &PodWorld<'_>) -> (Vec<String>, Vec<String>) {
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "one container in the chart's pod");
    let container = &containers[0];
    let mut flags: Vec<String> = vec![];

    // Security context: the container's fields over the pod's.
    let pod_sc = pod["securityContext"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let container_sc = container["securityContext"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for key in pod_sc.keys() {
        assert!(
            [
                "runAsNonRoot",
                "runAsUser",
                "runAsGroup",
                "fsGroup",
                "seccompProfile"
            ]
            .contains(&key.as_str()),
            "pod securityContext.{key} is not reproduced by this test"
        );
    }
    for key in container_sc.keys() {
        assert!(
            [
                "runAsNonRoot",
                "runAsUser",
                "runAsGroup",
                "readOnlyRootFilesystem",
                "allowPrivilegeEscalation",
                "privileged",
                "capabilities",
                "seccompProfile"
            ]
            .contains(&key.as_str()),
            "container securityContext.{key} is not reproduced by this test"
        );
    }
    let field = |key: &str| container_sc.get(key).or_else(|| pod_sc.get(key));
    let uid = field("runAsUser")
        .and_then(Value::as_u64)
        .expect("runAsUser");
    let gid = field("runAsGroup")
        .and_then(Value::as_u64)
        .expect("runAsGroup");
    if field("runAsNonRoot") == Some(&json!(true)) {
        assert_ne!(uid, 0, "runAsNonRoot with runAsUser 0");
    }
    flags.push(format!("--user={uid}:{gid}"));
    if let Some(fs_group) = pod_sc.get("fsGroup").and_then(Value::as_u64) {
        // The kubelet adds fsGroup to the container's groups and gives it the volumes.
        flags.push(format!("--group-add={fs_group}"));
    }
    if field("readOnlyRootFilesystem") == Some(&json!(true)) {
        // Kubernetes mounts no tmpfs of its own on a read-only root; podman would.
        flags.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    if field("allowPrivilegeEscalation") == Some(&json!(false)) {
        flags.push("--security-opt=no-new-privileges".into());
    }
    assert_ne!(field("privileged"), Some(&json!(true)), "privileged");
    if let Some(capabilities) = field("capabilities") {
        for cap in capabilities["drop"].as_array().into_iter().flatten() {
            flags.push(format!("--cap-drop={}", cap.as_str().unwrap()));
        }
        for cap in capabilities["add"].as_array().into_iter().flatten() {
            flags.push(format!("--cap-add={}", cap.as_str().unwrap()));
        }
    }
    for sc in [&pod_sc, &container_sc] {
        if let Some(profile) = sc.get("seccompProfile") {
            // podman's default seccomp profile is the runtime default.
            assert_eq!(profile["type"], "RuntimeDefault", "seccompProfile");
        }
    }

    // Limits (requests only schedule).
    if let Some(limits) = container["resources"]["limits"].as_object() {
        for (resource, quantity) in limits {
            let quantity = quantity.as_str().unwrap();
            match resource.as_str() {
                "memory" => {
                    let mib = quantity.strip_suffix("Mi").expect("memory in Mi");
                    flags.push(format!("--memory={mib}m"));
                    flags.push(format!("--memory-swap={mib}m"));
                }
                "cpu" => {
                    let millis: f64 = quantity
                        .strip_suffix('m')
                        .expect("cpu in m")
                        .parse()
                        .unwrap();
                    flags.push(format!("--cpus={}", millis / 1000.0));
                }
                other => panic!("resources.limits.{other} is not reproduced by this test"),
            }
        }
    }

    // Environment: the kubelet's (the API server's Service, as for every pod), then the
    // container's own.
    let mut env = vec![
        ("KUBERNETES_SERVICE_HOST".to_owned(), "127.0.0.1".to_owned()),
        (
            "KUBERNETES_SERVICE_PORT".to_owned(),
            world.api_port.to_string(),
        ),
    ];
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap().to_owned();
        let value = if let Some(value) = var.get("value") {
            value.as_str().unwrap().to_owned()
        } else if let Some(field) = var["valueFrom"].get("fieldRef") {
            match field["fieldPath"].as_str().unwrap() {
                "metadata.name" => world.pod_name.clone(),
                "metadata.namespace" => world.namespace.clone(),
                other => panic!("env {name}: fieldRef {other} is not reproduced by this test"),
            }
        } else if let Some(key_ref) = var["valueFrom"].get("secretKeyRef") {
            let secret = &world.secrets[key_ref["name"].as_str().unwrap()];
            String::from_utf8(secret[key_ref["key"].as_str().unwrap()].clone()).unwrap()
        } else {
            panic!("env {var} is not reproduced by this test")
        };
        assert!(!value.contains('\n'), "env {name} spans lines");
        env.push((name, value));
    }
    let env_file = world.dir.join("env");
    let mut text = String::new();
    for (name, value) in &env {
        writeln!(text, "{name}={value}").unwrap();
    }
    fs::write(&env_file, text).unwrap();
    flags.push(format!("--env-file={}", env_file.display()));

    // Volumes, laid out as the kubelet would: the ServiceAccount's projected token, and the
    // chart's secret and configMap volumes with their modes and fsGroup ownership.
    let fs_group = pod_sc
        .get("fsGroup")
        .and_then(Value::as_u64)
        .map(|g| g as u32);
    let sa_dir = world.dir.join("serviceaccount");
    write_volume_file(&sa_dir, "token", world.token.as_bytes(), 0o644, fs_group);
    write_volume_file(&sa_dir, "ca.crt", &world.cluster_ca, 0o644, fs_group);
    write_volume_file(
        &sa_dir,
        "namespace",
        world.namespace.as_bytes(),
        0o644,
        fs_group,
    );
    flags.push(format!(
        "--volume={}:{SERVICE_ACCOUNT_DIR}:ro",
        sa_dir.display()
    ));
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = mount["name"].as_str().unwrap();
        let volume = volumes[name];
        let host_dir = world.dir.join("volumes").join(name);
        let (data, source) = if let Some(secret) = volume.get("secret") {
            (
                &world.secrets[secret["secretName"].as_str().unwrap()],
                secret,
            )
        } else if let Some(config_map) = volume.get("configMap") {
            (
                &world.config_maps[config_map["name"].as_str().unwrap()],
                config_map,
            )
        } else if let Some(projected) = volume.get("projected") {
            // Service-account tokens only, each minted beforehand for its audience.
            for source in projected["sources"].as_array().unwrap() {
                let token = &source["serviceAccountToken"];
                assert!(
                    token.is_object(),
                    "projected source {source} is not reproduced by this test"
                );
                let audience = token["audience"].as_str().unwrap();
                let minted = world.projected_tokens.get(audience).unwrap_or_else(|| {
                    panic!("no token minted for the projected audience {audience}")
                });
                let mode = projected["defaultMode"].as_u64().unwrap_or(0o644) as u32;
                let path = token["path"].as_str().unwrap();
                write_volume_file(&host_dir, path, minted.as_bytes(), mode, fs_group);
            }
            flags.push(format!(
                "--volume={}:{}:ro",
                host_dir.display(),
                mount["mountPath"].as_str().unwrap()
            ));
            continue;
        } else {
            panic!("volume {volume} is not reproduced by this test")
        };
        let mode = source["defaultMode"].as_u64().unwrap_or(0o644) as u32;
        let items: Vec<(String, String)> = match source["items"].as_array() {
            Some(items) => items
                .iter()
                .map(|i| {
                    (
                        i["key"].as_str().unwrap().to_owned(),
                        i["path"].as_str().unwrap().to_owned(),
                    )
                })
                .collect(),
            None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
        };
        for (key, path) in items {
            write_volume_file(&host_dir, &path, &data[&key], mode, fs_group);
        }
        let read_only = mount["readOnly"] == json!(true);
        flags.push(format!(
            "--volume={}:{}:{}",
            host_dir.display(),
            mount["mountPath"].as_str().unwrap(),
            if read_only { "ro" } else { "rw" }
        ));
    }

    let mut args: Vec<String> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert!(args.is_empty(), "the chart keeps the image's entrypoint");
    args.extend(
        container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned()),
    );
    (flags, args)
}

/// A file of a volume: root's, group `fs_group` (as the kubelet does with fsGroup).
pub fn write_volume_file(dir: &Path, name: &str, content: &[u8], mode: u32, fs_group: Option<u32>) {
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join(name);
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    chown(&path, Some(0), fs_group).unwrap();
}

/// A container started with `podman run` in the foreground through `scripts/image.sh` (its
/// output in the child's log); removed, whatever happens, when dropped.
pub struct Container {
    pub name: String,
    pub run: ChildProcess,
    /// `scripts/image.sh` of the repository under test.
    pub image_sh: PathBuf,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("timeout")
            .args(["--kill-after=10", "60", "bash"])
            .arg(&self.image_sh)
            .args(["podman", "rm", "--force", "--time=0", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.run.kill();
    }
}

impl Container {
    /// What the container has written so far (and podman's own complaints).
    pub fn log(&self) -> String {
        self.run.read_log()
    }
}

/// Removes the containers named `<prefix><pid>` whose test process is gone (a SIGKILL ends
/// `podman run`, not the container). `image_sh` is `scripts/image.sh`.
pub fn sweep_stale_containers(image_sh: &Path, prefix: &str) {
    let podman = |args: &[&str]| {
        let mut command = Command::new("timeout");
        command
            .args(["--kill-after=10", "60", "bash"])
            .arg(image_sh)
            .arg("podman")
            .args(args)
            .stdin(Stdio::null());
        command
    };
    let Ok(out) = podman(&[
        "ps",
        "--all",
        "--filter",
        &format!("name={prefix}"),
        "--format",
        "{{.Names}}",
    ])
    .output() else {
        return;
    };
    for name in String::from_utf8_lossy(&out.stdout).lines() {
        let alive = name
            .strip_prefix(prefix)
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = podman(&["rm", "--force", "--time=0", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
