//! The controller image, built by `scripts/image.sh` and run with podman the way the Helm
//! chart runs the pod: the chart is rendered, and its Deployment's security context,
//! arguments, environment, volumes and limits become podman's flags (a field this file does
//! not know fails the test, so the two cannot drift apart). The container talks to the test
//! control plane as the chart's ServiceAccount (in-cluster variables and a mounted token) and
//! to the Graph simulator with a client certificate read through OpenSSL from a read-only
//! mount, reconciles a reset to `Issued`, serves its admin endpoints and stops on SIGTERM.
//!
//! The image is checked against the Dockerfile too: the same user, entrypoint, command, port
//! and labels, and exactly the files the binary needs.
//!
//! `scripts/test.sh` builds the image before the tests and passes its archive in
//! `GUESTRESET_IMAGE_ARCHIVE`; without it, the first test builds it (a release build).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use graph_sim::{Call, SeedUser, SimConfig};
use guestreset_testsupport::pod::{Container, PodWorld, podman_run_args, sweep_stale_containers};
use guestreset_testsupport::{ChildProcess, ControlPlane, wait_until};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

const ALICE: &str = "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41";
const WAIT: Duration = Duration::from_secs(60);
/// How long the controller may take to exit on SIGTERM when no POST is in flight.
const STOP_BOUND: Duration = Duration::from_secs(5);
/// Bound on one podman, kubectl or helm call that is not a container run.
const TOOL_DEADLINE: &str = "180";
/// The release name the chart is rendered with, hence the Lease's and ServiceAccount's name.
const RELEASE: &str = "guestreset";

// ------------------------------------------------------------------ tools

/// This package's root, the repository's. (Not the harness's `repo_root`, which is fixed
/// when the harness is compiled and so may name another checkout sharing the target dir.)
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/image.sh ARGS`, under `timeout` so a hung podman fails the test.
fn image_sh(args: &[&str]) -> Command {
    let mut command = Command::new("timeout");
    command
        .args(["--kill-after=10", TOOL_DEADLINE, "bash"])
        .arg(repo_root().join("scripts/image.sh"))
        .args(args)
        .stdin(Stdio::null());
    command
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// Runs a short command to completion off the async workers; its stdout, or a panic with
/// everything it said.
fn run_ok(what: &str, mut command: Command) -> String {
    let out = tokio::task::block_in_place(|| command.output())
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(out.status.success(), "{}", describe(what, &out));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn podman(args: &[&str]) -> String {
    let mut full = vec!["podman"];
    full.extend_from_slice(args);
    run_ok(&format!("podman {}", args.join(" ")), image_sh(&full))
}

struct Image {
    reference: String,
}

/// The image, built (unless `GUESTRESET_IMAGE_ARCHIVE` names one) and loaded into the
/// cache's podman storage once per test binary. A failure fails every test; nothing is
/// skipped.
fn image() -> &'static Image {
    static IMAGE: OnceLock<Result<Image, String>> = OnceLock::new();
    let built = IMAGE.get_or_init(|| {
        let archive = match std::env::var("GUESTRESET_IMAGE_ARCHIVE") {
            Ok(path) if !path.is_empty() => path,
            _ => {
                // No `timeout` here: cold, the release build takes many minutes.
                let mut build = Command::new("bash");
                build
                    .arg(repo_root().join("scripts/image.sh"))
                    .arg("build")
                    .stdin(Stdio::null())
                    .stderr(Stdio::inherit());
                let out = build.output().map_err(|e| format!("image.sh build: {e}"))?;
                if !out.status.success() {
                    return Err(describe("scripts/image.sh build", &out));
                }
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            }
        };
        sweep_stale_containers(&repo_root().join("scripts/image.sh"), CONTAINER_PREFIX);
        let out = image_sh(&["load", &archive])
            .output()
            .map_err(|e| format!("image.sh load: {e}"))?;
        let reference = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || reference.is_empty() {
            return Err(describe(&format!("scripts/image.sh load {archive}"), &out));
        }
        Ok(Image { reference })
    });
    match built {
        Ok(image) => image,
        Err(e) => panic!("the image is unavailable: {e}"),
    }
}

/// Prefix of the containers this file starts, followed by the test process's id.
const CONTAINER_PREFIX: &str = "guestreset-image-test-";

fn image_blocking() -> &'static Image {
    tokio::task::block_in_place(image)
}

// ------------------------------------------------------------------ the Dockerfile

/// The Dockerfile's instructions of the final stage, continuation lines joined.
fn dockerfile_runtime_stage() -> Vec<(String, String)> {
    let text = fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (instruction, rest) = current.split_once(' ').unwrap_or((&current, ""));
        instructions.push((instruction.to_ascii_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    let last_from = instructions
        .iter()
        .rposition(|(i, _)| i == "FROM")
        .expect("a FROM in the Dockerfile");
    instructions.split_off(last_from)
}

/// `key="value" key2=value2 ...` of a LABEL instruction.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').expect("key=value in LABEL");
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').expect("closing quote in LABEL");
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(' ').unwrap_or((after, "")),
        };
        labels.insert(key.trim().to_owned(), value.to_owned());
        rest = after.trim();
    }
    labels
}

fn json_array(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("exec form {text:?}: {e}"))
}

// ------------------------------------------------------------------ structure

#[tokio::test(flavor = "multi_thread")]
async fn the_image_is_what_the_dockerfile_describes() {
    let image = image_blocking();
    let inspected: Value =
        serde_json::from_str(&podman(&["image", "inspect", &image.reference])).unwrap();
    let config = &inspected[0]["Config"];

    let stage = dockerfile_runtime_stage();
    let find = |name: &str| -> Vec<&str> {
        stage
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, rest)| rest.as_str())
            .collect()
    };
    assert_eq!(config["User"], find("USER")[0], "USER");
    assert_eq!(
        config["Entrypoint"],
        json!(json_array(find("ENTRYPOINT")[0])),
        "ENTRYPOINT"
    );
    assert_eq!(config["Cmd"], json!(json_array(find("CMD")[0])), "CMD");
    for port in find("EXPOSE") {
        assert!(
            config["ExposedPorts"].get(format!("{port}/tcp")).is_some(),
            "EXPOSE {port}: {}",
            config["ExposedPorts"]
        );
    }
    let labels = &config["Labels"];
    let mut dockerfile_labels = BTreeMap::new();
    for text in find("LABEL") {
        dockerfile_labels.extend(parse_labels(text));
    }
    for (key, value) in &dockerfile_labels {
        if value.contains('$') {
            // Set from a build argument: checked below for what image.sh puts there.
            continue;
        }
        assert_eq!(labels[key], value.as_str(), "label {key}");
    }
    for key in [
        "org.opencontainers.image.source",
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
        "org.opencontainers.image.licenses",
    ] {
        assert!(
            dockerfile_labels.contains_key(key),
            "the Dockerfile sets no {key}"
        );
        assert!(labels[key].is_string(), "the image has no label {key}");
    }
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    let revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .unwrap();
    assert!(
        revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()),
        "revision {revision:?} is not a commit"
    );
    let user = config["User"].as_str().unwrap();
    assert!(
        user.split(':')
            .all(|id| id.parse::<u32>().is_ok_and(|n| n != 0)),
        "the user must be numeric and not root (runAsNonRoot checks it): {user:?}"
    );
    let binary = json_array(find("ENTRYPOINT")[0]).remove(0);
    assert!(
        find("COPY")
            .iter()
            .any(|c| c.split_whitespace().last() == Some(binary.as_str())),
        "the Dockerfile copies the binary to {binary}"
    );

    // The files: exactly the binary, what the loader maps for it, the CA bundle and the
    // user and name-service databases.
    let root = PathBuf::from(podman(&["image", "mount", &image.reference]).trim());
    let files = files_under(&root);
    let needed = shared_libraries(&root.join(binary.trim_start_matches('/')));
    podman(&["image", "unmount", &image.reference]);
    let mut expected: BTreeSet<String> = [
        binary.as_str(),
        "/etc/passwd",
        "/etc/group",
        "/etc/nsswitch.conf",
        "/etc/ssl/certs/ca-certificates.crt",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    expected.extend(needed.iter().cloned());
    let found: BTreeSet<String> = files.keys().cloned().collect();
    assert_eq!(found, expected, "the image's files");
    for lib in [
        "libc.so.6",
        "libssl.so.3",
        "libcrypto.so.3",
        "libgcc_s.so.1",
    ] {
        assert!(
            needed.iter().any(|p| p.ends_with(lib)),
            "ldd names no {lib}: {needed:?}"
        );
    }
    let passwd = String::from_utf8_lossy(&files["/etc/passwd"]).into_owned();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with(&format!("nonroot:x:{0}:{0}:", user_id(user)))),
        "no passwd entry for {user}:\n{passwd}"
    );
    let bundle = String::from_utf8_lossy(&files["/etc/ssl/certs/ca-certificates.crt"]).into_owned();
    let roots = bundle.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(
        roots >= 50,
        "the CA bundle holds {roots} certificates, not a system bundle"
    );
    let nsswitch = String::from_utf8_lossy(&files["/etc/nsswitch.conf"]).into_owned();
    assert!(
        nsswitch
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["hosts:", "files", "dns"]),
        "hosts: files dns (as distroless), else /etc/hosts is read after DNS:\n{nsswitch}"
    );
}

fn user_id(user: &str) -> &str {
    user.split(':').next().unwrap()
}

/// Every regular file under `root` (as `/path` inside the image) with its content.
fn files_under(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            let path = entry.path();
            if kind.is_dir() {
                pending.push(path);
            } else {
                let inside = format!("/{}", path.strip_prefix(root).unwrap().display());
                assert!(
                    kind.is_file(),
                    "{inside} is not a regular file (a link would dangle outside the build host)"
                );
                files.insert(inside, fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// The absolute paths ldd names for `binary` (the loader included, the vDSO not).
fn shared_libraries(binary: &Path) -> BTreeSet<String> {
    let mut ldd = Command::new("ldd");
    ldd.arg(binary);
    let listing = run_ok("ldd", ldd);
    assert!(!listing.contains("not found"), "{listing}");
    listing
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [_, "=>", path, ..] if path.starts_with('/') => Some(path.to_string()),
                [path, ..] if path.starts_with('/') => Some(path.to_string()),
                _ => None,
            }
        })
        .collect()
}

// ------------------------------------------------------------------ the chart's pod

/// `helm template` of the chart with `values`, as parsed documents.
fn render_chart(namespace: &str, values: &str, dir: &Path) -> Vec<Value> {
    let mut build = Command::new("bash");
    build
        .arg(repo_root().join("scripts/helm.sh"))
        .arg("build")
        .stdin(Stdio::null());
    let helm = run_ok("scripts/helm.sh build", build).trim().to_owned();
    let values_file = dir.join("values.yaml");
    fs::write(&values_file, values).unwrap();
    let mut template = Command::new("timeout");
    template
        .args([TOOL_DEADLINE, &helm, "template", RELEASE])
        .arg(repo_root().join("charts/guestreset"))
        .args(["--namespace", namespace, "--values"])
        .arg(&values_file)
        // Helm's own files stay out of the user's home.
        .env("HELM_CONFIG_HOME", dir.join("helm/config"))
        .env("HELM_CACHE_HOME", dir.join("helm/cache"))
        .env("HELM_DATA_HOME", dir.join("helm/data"));
    let manifests = run_ok("helm template", template);
    serde_yaml::Deserializer::from_str(&manifests)
        .filter_map(|doc| {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            (!value.is_null()).then_some(value)
        })
        .collect()
}

fn kubectl(cp: &ControlPlane, args: &[&str], stdin: Option<&str>) -> String {
    let what = format!("kubectl {}", args.join(" "));
    tokio::task::block_in_place(|| {
        let mut command = cp.kubectl();
        command
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", describe(&what, &out));
        String::from_utf8(out.stdout).unwrap()
    })
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn inspect(container: &Container) -> Value {
    let text = podman(&["container", "inspect", &container.name]);
    let mut all: Value = serde_json::from_str(&text).unwrap();
    all[0].take()
}

fn timestamp(value: &Value) -> jiff::Timestamp {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {value}"))
}

/// The process's `/proc/PID/status` lines of interest, e.g. `Uid`.
fn proc_status(pid: u64) -> BTreeMap<String, String> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect()
}

/// The memory limit (bytes) and CPU limit (cores) of the cgroups of process `pid`, from
/// cgroup v1 controllers or the unified v2 hierarchy, whichever holds them.
fn cgroup_limits(pid: u64) -> (Option<u64>, Option<f64>) {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path_of = |controller: &str| {
        cgroups.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_owned())
        })
    };
    let read = |file: String| fs::read_to_string(file).ok().map(|t| t.trim().to_owned());
    if let (Some(memory), Some(cpu)) = (path_of("memory"), path_of("cpu")) {
        let limit = read(format!(
            "/sys/fs/cgroup/memory{memory}/memory.limit_in_bytes"
        ));
        let quota = read(format!("/sys/fs/cgroup/cpu{cpu}/cpu.cfs_quota_us"));
        let period = read(format!("/sys/fs/cgroup/cpu{cpu}/cpu.cfs_period_us"));
        let cores = match (quota, period) {
            (Some(q), Some(p)) => Some(q.parse::<f64>().unwrap() / p.parse::<f64>().unwrap()),
            _ => None,
        };
        return (limit.and_then(|l| l.parse().ok()), cores);
    }
    let unified = path_of("").expect("a cgroup");
    let limit = read(format!("/sys/fs/cgroup{unified}/memory.max"));
    let cores = read(format!("/sys/fs/cgroup{unified}/cpu.max")).and_then(|t| {
        let (quota, period) = t.split_once(' ')?;
        Some(quota.parse::<f64>().ok()? / period.parse::<f64>().ok()?)
    });
    (limit.and_then(|l| l.parse().ok()), cores)
}

async fn http_get(client: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let response = client.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_as_the_chart_runs_the_pod() {
    let image = image_blocking();
    let cp = ControlPlane::shared().await;
    cp.install_guestreset_crd().unwrap();
    let namespace = cp.namespace("image").await;
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    // Readable by 65532 only through the mounts the flags below make.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();

    let sim = graph_sim::start(SimConfig::new(dir.join("sim")).with_users([SeedUser::guest(
        ALICE,
        "alice_contoso.com#EXT#@fabrikam.onmicrosoft.com",
        "alice@contoso.com",
    )]))
    .await
    .unwrap();
    let admin = sim.admin();

    // The credential file: a PKCS#12 certificate with a password, which the controller
    // reads through the image's libssl and libcrypto.
    let (key, cert, pfx) = (dir.join("key.pem"), dir.join("cert.pem"), dir.join("p12"));
    let mut openssl = Command::new("openssl");
    openssl.args([
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
    ]);
    openssl.args(["-subj", "/CN=guestreset-image-test", "-keyout"]);
    openssl.arg(&key).arg("-out").arg(&cert);
    run_ok("openssl req", openssl);
    let mut openssl = Command::new("openssl");
    openssl.args(["pkcs12", "-export", "-passout", "pass:p12-pass", "-inkey"]);
    openssl
        .arg(&key)
        .arg("-in")
        .arg(&cert)
        .arg("-out")
        .arg(&pfx);
    run_ok("openssl pkcs12", openssl);

    // The chart, configured for this simulator. The Graph endpoint is named by host name,
    // so that the image's name service (nsswitch.conf, /etc/hosts) is used as well.
    let metrics_port = free_port();
    let graph_endpoint = format!("https://localhost:{}", sim.addr().port());
    let values = format!(
        r#"replicas: 1
# One replica cannot keep one through a drain (the chart refuses the PDB with it).
podDisruptionBudget:
  enabled: false
watchNamespace: {namespace}
graph:
  endpoint: {graph_endpoint}
replicationWindow: 6s
metrics:
  port: {metrics_port}
azure:
  tenantId: {tenant}
  clientId: {client}
  authorityHost: {authority}
  clientCertificate:
    existingSecret: guestreset-azure
    key: client-certificate.p12
    passwordKey: password
caBundle:
  configMapName: graph-ca
  key: ca.crt
"#,
        tenant = sim.tenant_id(),
        client = sim.client_id(),
        authority = sim.base_url(),
    );
    let manifests = tokio::task::block_in_place(|| render_chart(&namespace, &values, dir));
    let of_kinds = |kinds: &[&str]| -> Vec<&Value> {
        manifests
            .iter()
            .filter(|m| kinds.contains(&m["kind"].as_str().unwrap_or("")))
            .collect()
    };
    // The controller's identity and rights, as the chart grants them.
    let rbac = of_kinds(&[
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
    ]);
    let rbac_yaml: String = rbac
        .iter()
        .map(|m| format!("---\n{}", serde_yaml::to_string(m).unwrap()))
        .collect();
    kubectl(cp, &["apply", "-f", "-"], Some(&rbac_yaml));
    let service_account = of_kinds(&["ServiceAccount"])[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = kubectl(
        cp,
        &[
            "create",
            "token",
            &service_account,
            "-n",
            &namespace,
            "--duration=3600s",
        ],
        None,
    );
    let deployment = of_kinds(&["Deployment"])[0];

    let pod_name = format!("{RELEASE}-image-{}", std::process::id());
    let world = PodWorld {
        pod_name: pod_name.clone(),
        namespace: namespace.clone(),
        secrets: BTreeMap::from([(
            "guestreset-azure".to_owned(),
            BTreeMap::from([
                ("client-certificate.p12".to_owned(), fs::read(&pfx).unwrap()),
                ("password".to_owned(), b"p12-pass".to_vec()),
            ]),
        )]),
        config_maps: BTreeMap::from([(
            "graph-ca".to_owned(),
            BTreeMap::from([("ca.crt".to_owned(), sim.ca_pem().as_bytes().to_vec())]),
        )]),
        token: token.trim().to_owned(),
        projected_tokens: BTreeMap::new(),
        cluster_ca: fs::read(cp.dir().join("pki/ca.crt")).unwrap(),
        api_port: cp.server_url().rsplit(':').next().unwrap().parse().unwrap(),
        dir,
    };
    let (flags, args) = podman_run_args(deployment, &world);

    // Start: as the kubelet would, with the host's network (the control plane and the
    // simulator are on its loopback) and nothing pulled.
    let name = format!("{CONTAINER_PREFIX}{}", std::process::id());
    // Not under `timeout`: the container runs until the test stops it.
    let mut run = Command::new("bash");
    run.arg(repo_root().join("scripts/image.sh"));
    run.args([
        "podman",
        "run",
        "--name",
        &name,
        "--network=host",
        "--pull=never",
    ])
    .args(&flags)
    .arg(&image.reference)
    .args(&args);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let spawned = Instant::now();
    let mut container = Container {
        name: name.clone(),
        run: ChildProcess::spawn(run).unwrap(),
        image_sh: repo_root().join("scripts/image.sh"),
    };

    // Start-up: polled finely (25 ms) so that the time to ready is measured, not the poll.
    let readyz = format!("http://127.0.0.1:{metrics_port}/readyz");
    let ready_at = {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((200, _)) = http_get(&http, &readyz).await {
                break jiff::Timestamp::now();
            }
            if let Some(status) = container.run.try_wait() {
                panic!(
                    "the container exited ({status}) before /readyz said ready:\n{}",
                    container.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "/readyz not ready within {WAIT:?}:\n{}",
                container.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    let spawn_to_ready = spawned.elapsed();
    let state = tokio::task::block_in_place(|| inspect(&container));
    let started_at = timestamp(&state["State"]["StartedAt"]);
    let start_to_ready = ready_at.duration_since(started_at);

    // Confinement, from the kernel's view of the container's process.
    let pid = state["State"]["Pid"].as_u64().unwrap();
    let status = proc_status(pid);
    assert_eq!(status["Uid"], "65532 65532 65532 65532", "{status:?}");
    assert_eq!(status["Gid"], "65532 65532 65532 65532", "{status:?}");
    assert_eq!(status["CapEff"], "0000000000000000", "{status:?}");
    assert_eq!(status["CapPrm"], "0000000000000000", "{status:?}");
    assert_eq!(status["CapBnd"], "0000000000000000", "{status:?}");
    assert_eq!(status["NoNewPrivs"], "1", "{status:?}");
    assert_eq!(status["Seccomp"], "2", "a seccomp filter: {status:?}");
    let mounts = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root_mount = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .expect("a root mount");
    assert!(
        root_mount
            .split_whitespace()
            .nth(5)
            .is_some_and(|o| o.split(',').any(|o| o == "ro")),
        "the root file system is read-only: {root_mount}"
    );
    // The chart's limits, as the kernel enforces them.
    let (memory_limit, cpu_limit) = cgroup_limits(pid);
    assert_eq!(memory_limit, Some(128 << 20), "memory limit in bytes");
    assert_eq!(cpu_limit, Some(0.2), "CPU limit in cores");

    // Health, then a reset to Issued.
    let healthz = format!("http://127.0.0.1:{metrics_port}/healthz");
    assert_eq!(http_get(&http, &healthz).await.map(|r| r.0), Some(200));
    let client = cp.client().await;
    let api: Api<guestreset::resource::GuestRedemptionReset> =
        Api::namespaced(client.clone(), &namespace);
    let reset = serde_json::from_value(json!({
        "apiVersion": "guestreset.io/v1alpha1",
        "kind": "GuestRedemptionReset",
        "metadata": {"name": "alice"},
        "spec": {"user": {"id": ALICE}, "email": "alice@newco.example"},
    }))
    .unwrap();
    api.create(&PostParams::default(), &reset).await.unwrap();
    wait_until("alice to be Issued", WAIT, || {
        let api = api.clone();
        async move {
            let obj = api.get("alice").await.map_err(|e| e.to_string())?;
            let ready = obj
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
            match ready {
                Some(c)
                    if c.reason == "Issued" && c.observed_generation == obj.metadata.generation =>
                {
                    Ok(Some(()))
                }
                other => Err(format!("Ready = {other:?}")),
            }
        }
    })
    .await;
    let posts = admin.invitation_posts().await.unwrap();
    assert_eq!(posts.len(), 1, "one POST: {posts:?}");
    assert_eq!(posts[0].status, 201);
    let assertions = admin.client_assertions().await.unwrap();
    assert!(
        !assertions.is_empty() && assertions.iter().all(|a| a.iss == sim.client_id()),
        "tokens through the client certificate: {assertions:?}"
    );
    assert!(
        admin
            .journal()
            .await
            .unwrap()
            .iter()
            .any(|e| e.call == Call::PatchUser),
        "the mail was set"
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let holder = leases
        .get(RELEASE)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(
        holder.as_deref(),
        Some(pod_name.as_str()),
        "the Lease holder"
    );

    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let needles = [
        r#"guestreset_graph_requests_total{call="POST /invitations",status="201"} 1"#,
        r#"guestreset_outcomes_total{reason="Issued"} 1"#,
        "guestreset_leader 1",
    ];
    wait_until("/metrics to show the reset", WAIT, || {
        let (http, metrics) = (http.clone(), metrics.clone());
        async move {
            let (status, text) = http_get(&http, &metrics).await.ok_or("no answer")?;
            match needles
                .iter()
                .find(|n| status != 200 || !text.contains(**n))
            {
                None => Ok(Some(())),
                Some(missing) => Err(format!("{missing} missing (HTTP {status})")),
            }
        }
    })
    .await;
    // The chart asks for JSON logs.
    let log = container.log();
    assert!(
        log.lines()
            .filter(|l| l.starts_with('{'))
            .all(|l| serde_json::from_str::<Value>(l).is_ok())
            && log.lines().any(|l| l.starts_with('{')),
        "JSON log lines:\n{log}"
    );

    let peak_memory = proc_status(pid)["VmHWM"].clone();

    // SIGTERM, as the kubelet stops a pod, with no POST in flight.
    let signalled_at = jiff::Timestamp::now();
    let signalled = Instant::now();
    podman(&["kill", "--signal=TERM", &name]);
    let exited = {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = container.run.try_wait() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "still running 40 s after SIGTERM:\n{}",
                container.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let podman_returned = signalled.elapsed();
    let state = tokio::task::block_in_place(|| inspect(&container));
    let finished_at = timestamp(&state["State"]["FinishedAt"]);
    let stop = finished_at.duration_since(signalled_at);
    let log = container.log();
    println!(
        "image {}: podman run to /readyz {} ms, container start to /readyz {} ms; \
         peak memory {peak_memory} after the reset; \
         SIGTERM to exit {} ms (podman run returned after {} ms); exit code {}",
        image.reference,
        spawn_to_ready.as_millis(),
        start_to_ready.as_millis(),
        stop.as_millis(),
        podman_returned.as_millis(),
        state["State"]["ExitCode"]
    );
    assert_eq!(
        state["State"]["ExitCode"], 0,
        "exit status {exited}:\n{log}"
    );
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(
        stop.as_secs_f64() <= STOP_BOUND.as_secs_f64(),
        "the controller took {stop} to exit after SIGTERM (bound {STOP_BOUND:?}):\n{log}"
    );
}
