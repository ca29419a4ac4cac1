//! docs/install.md, walked top to bottom: every `sh` block of the page runs, in order, in one
//! bash, from a copy of the repository's root, unless the line before it says
//! `<!-- install-walk: skip: REASON -->`; a marker with no reason, or one that precedes no `sh`
//! block, fails the test. The world the page expects is stood in for as follows:
//!
//! - the registry: CNCF Distribution on loopback (`scripts/registry.sh serve`), on plain
//!   HTTP, so `PUBLISH_PLAIN_HTTP=1` is set and the `helm` on PATH adds `--plain-http` to
//!   commands that name an `oci://` reference; the page's `REGISTRY=` line is replaced by the
//!   local registry (the one substitution, which must apply);
//! - the cluster: the tests' real kube-apiserver and etcd, with no node: right after the page's
//!   `helm install` the walk runs a hook that asks this test to play the node for one pod of
//!   the installed Deployment ([`run_deployment_pod`]: the workload identity webhook's
//!   mutation, the image pulled by digest from the local registry and run with podman as
//!   tests/image.rs runs it), and resumes once the pod's readiness probe passed; its kubectl on
//!   PATH, except that `logs deploy/guestreset` prints that pod's log and `exec
//!   deploy/guestreset -- CMD` runs CMD in its container;
//! - the tenant: the Graph simulator, whose app and tenant ids are the ones the stand-in `az`
//!   hands out, holding the page's test guest (`someone@partner.example`), in place of Entra ID
//!   and Microsoft Graph; it exchanges the pod's projected service-account token (workload
//!   identity, section 2 as written) for its access tokens;
//! - Azure: an `az` on PATH with a canned answer for each command the page runs, and a
//!   failure for any other, so that a new `az` command in the page fails the walk until it
//!   gets an answer here. `az aks show` answers the cluster's own service-account issuer.
//!
//! After the walk the test checks what a broken publication would get wrong: the digest the
//! installed Deployment runs is the registry's and the archive's, the chart the registry serves
//! holds exactly `charts/guestreset`, the pushed image runs the controller, the values the
//! page's variables carried reached the release, and publishing again changes nothing; and
//! what section 3 proves: the check in the pod passed every line, the smoke test's dry run
//! ended `DryRunComplete` and wrote nothing, the first real reset ended `Issued` with exactly
//! one `POST /invitations` (for the test guest, to the new address), and every token the
//! tenant issued was for the federated credential's issuer, subject and audience.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use graph_sim::{Call, SeedUser, SimConfig, Simulator};
use guestreset_testsupport::pod::{Container, PodWorld, podman_run_args, sweep_stale_containers};
use guestreset_testsupport::{
    ChildProcess, ControlPlane, build_tool, describe, run_bounded, wait_until,
};
use serde_json::{Value, json};

const PAGE: &str = "docs/install.md";
const SKIP_MARKER: &str = "<!-- install-walk: skip:";
/// The page's line that names the registry, and what the walk puts in its place.
const REGISTRY_LINE: &str = "REGISTRY=$ACR.azurecr.io/guestreset";
/// The stand-in `az`'s identities, which must reach the release through the page's variables.
const APP_ID: &str = "5b7c1e2a-0d3f-4a6b-9c8d-7e6f5a4b3c2d";
const TENANT_ID: &str = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b";
/// The test guest of the page's smoke test, held by the simulator, and the address the page's
/// first real reset moves it to.
const GUEST_ID: &str = "4d2f7a90-3b1c-4e8f-a6d5-0c9b8e7f6a51";
const GUEST_MAIL: &str = "someone@partner.example";
const NEW_MAIL: &str = "someone.else@partner.example";
/// The chart's release, as the page installs it, and the subject its federated credential names.
const RELEASE_NAMESPACE: &str = "guestreset-system";
const SUBJECT: &str = "system:serviceaccount:guestreset-system:guestreset";
/// What the workload identity webhook mounts and injects (azure-workload-identity's mutating
/// webhook: the projected token's audience, directory and file).
const FEDERATED_AUDIENCE: &str = "api://AzureADTokenExchange";
const FEDERATED_TOKEN_DIR: &str = "/var/run/secrets/azure/tokens";
const FEDERATED_TOKEN_FILE: &str = "azure-identity-token";
/// The Graph endpoint the page's install leaves at the chart's default (the global cloud).
const GLOBAL_GRAPH: &str = "https://graph.microsoft.com";
/// How long the stand-in pod may take to pass its readiness probe.
const POD_READY: Duration = Duration::from_secs(60);
/// The command the walk runs right after the page's `helm install` (see [`kubelet_hook`]).
const KUBELET_HOOK: &str = "install-walk-kubelet";
/// Prefix of the stand-in pod's container, followed by the test process's id.
const CONTAINER_PREFIX: &str = "guestreset-install-walk-";
/// Bound on the whole walk: the image is built beforehand (scripts/test.sh), so this is
/// publishing and a handful of helm and kubectl calls; a cold image build takes longer.
const WALK_DEADLINE: Duration = Duration::from_secs(1800);
const TOOL_DEADLINE: Duration = Duration::from_secs(180);

/// This package's root, the repository's (not the harness's, fixed when it was compiled).
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One `sh` block of the page: where it starts, and its text (dedented), or why it is skipped.
#[derive(Debug)]
struct Block {
    line: usize,
    text: String,
    skip: Option<String>,
}

/// The page's `sh` blocks in order. Panics on a marker that is malformed or precedes no `sh`
/// block, and on a shell block in another dialect (`bash`, `shell`, `console` with `$`
/// prompts are for showing, not running: they must be `sh` or not shell at all).
fn shell_blocks(page: &str) -> Vec<Block> {
    let lines: Vec<&str> = page.lines().collect();
    let mut blocks = vec![];
    let mut i = 0;
    let mut pending_skip: Option<(usize, String)> = None;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(SKIP_MARKER) {
            let reason = rest
                .strip_suffix("-->")
                .unwrap_or_else(|| panic!("{PAGE}:{}: the marker must end with -->", i + 1))
                .trim();
            assert!(
                !reason.is_empty(),
                "{PAGE}:{}: a skip needs a reason",
                i + 1
            );
            pending_skip = Some((i + 1, reason.to_owned()));
            i += 1;
            continue;
        }
        if let Some(info) = trimmed.strip_prefix("```") {
            let indent = line.len() - trimmed.len();
            let start = i + 1;
            let mut body = vec![];
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                body.push(lines[i].get(indent..).unwrap_or("").to_owned());
                i += 1;
            }
            let info = info.trim();
            assert!(
                !["bash", "shell", "zsh"].contains(&info),
                "{PAGE}:{start}: a shell block to run is ```sh (got ```{info})"
            );
            let skip = pending_skip.take();
            if info == "sh" {
                blocks.push(Block {
                    line: start,
                    text: body.join("\n"),
                    skip: skip.map(|(_, reason)| reason),
                });
            } else if let Some((at, _)) = skip {
                panic!("{PAGE}:{at}: the skip marker precedes a ```{info} block, not a ```sh one");
            }
        } else if !trimmed.is_empty()
            && let Some((at, _)) = pending_skip.take()
        {
            panic!("{PAGE}:{at}: the skip marker must be the line right before a ```sh block");
        }
        i += 1;
    }
    blocks
}

/// The parser keeps the page honest: a block is run unless marked, a marker needs a reason
/// and a `sh` block right after it, and a shell block in another dialect is refused.
#[test]
fn the_markers_are_read_strictly() {
    let blocks = shell_blocks(
        "text\n```sh\necho one\n```\n<!-- install-walk: skip: not here -->\n```sh\necho two\n```\n\
         ```yaml\na: 1\n```\n  ```sh\n  echo three\n  ```\n",
    );
    let seen: Vec<(&str, Option<&str>)> = blocks
        .iter()
        .map(|b| (b.text.as_str(), b.skip.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("echo one", None),
            ("echo two", Some("not here")),
            ("echo three", None)
        ]
    );
    for bad in [
        "<!-- install-walk: skip: -->\n```sh\nx\n```\n",
        "<!-- install-walk: skip: why -->\n```yaml\nx\n```\n",
        "<!-- install-walk: skip: why -->\nprose\n```sh\nx\n```\n",
        "```bash\nx\n```\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| shell_blocks(bad)).is_err(),
            "accepted: {bad:?}"
        );
    }
}

fn write_executable(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The stand-in `az`: a canned answer for each command of the page, a failure for any other.
/// Every call is logged, one line each.
fn az_stub(log: &Path, issuer: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
set -euo pipefail
printf '%s\n' "$*" >>{log}
case "$*" in
  "ad app create "*"--query appId -o tsv") echo {APP_ID} ;;
  "ad sp show "*"--query appOwnerOrganizationId -o tsv") echo {TENANT_ID} ;;
  "aks show "*"--query oidcIssuerProfile.issuerUrl -o tsv") echo {issuer} ;;
  "ad sp create "* | "ad app permission add "* | "ad app permission admin-consent "* | \
    "aks update "* | "ad app federated-credential create "*) ;;
  *)
    echo "az (the install walk's stand-in): no canned answer for: az $*" >&2
    exit 1
    ;;
esac
"#,
        log = log.display()
    )
}

/// The walk's `kubectl`: the control plane's, except for the two forms of the page that need
/// the pod the kubelet stand-in runs: `logs` prints its log, and `exec ... --` runs the command
/// in its container (`podman exec`), with the one argument the stand-in rewrites for the pod
/// rewritten the same way.
fn kubectl_wrapper(
    kubectl: &Path,
    pod_log: &Path,
    image_sh: &Path,
    container: &str,
    graph: &str,
) -> String {
    format!(
        r#"#!/usr/bin/env bash
set -euo pipefail
case "$*" in
  "-n {RELEASE_NAMESPACE} logs deploy/guestreset")
    # head closing the pipe early is not an error.
    cat {log} || [[ $? -eq 141 ]]
    exit 0
    ;;
  "-n {RELEASE_NAMESPACE} exec deploy/guestreset -- "*)
    shift 5
    args=()
    for arg in "$@"; do
      [[ $arg == --graph-endpoint={GLOBAL_GRAPH} ]] && arg=--graph-endpoint={graph}
      args+=("$arg")
    done
    exec bash {image_sh} podman exec {container} "${{args[@]}}"
    ;;
esac
exec {kubectl} "$@"
"#,
        kubectl = kubectl.display(),
        log = pod_log.display(),
        image_sh = image_sh.display(),
    )
}

/// Run right after the page's `helm install`: asks the test's kubelet stand-in to run the
/// Deployment's pod (a line on the request FIFO) and waits until it answers that the pod passed
/// its readiness probe (a line on the answer FIFO, opened first so the answer cannot be lost).
fn kubelet_hook(request: &Path, answer: &Path) -> String {
    format!(
        r#"#!/usr/bin/env bash
set -euo pipefail
exec 4<>{answer}
printf 'run\n' >{request}
if ! IFS= read -r -t {secs} -u 4 reply; then
  echo "install-walk: no answer from the kubelet stand-in" >&2
  exit 1
fi
[[ $reply == ready ]] || {{ echo "install-walk: the kubelet stand-in: $reply" >&2; exit 1; }}
"#,
        answer = answer.display(),
        request = request.display(),
        secs = POD_READY.as_secs() + 120,
    )
}

/// The walk's `helm`: the cached one, with `--plain-http` for commands that name an `oci://`
/// reference (the local registry has no TLS).
fn helm_wrapper(helm: &Path) -> String {
    format!(
        r#"#!/usr/bin/env bash
for arg in "$@"; do
  if [[ $arg == oci://* ]]; then
    exec {helm} "$@" --plain-http
  fi
done
exec {helm} "$@"
"#,
        helm = helm.display()
    )
}

/// `kubectl ARGS` (the control plane's, admin), parsed as JSON.
async fn kubectl_value(cp: &ControlPlane, args: &[&str]) -> Value {
    let mut command = tokio::process::Command::from(cp.kubectl());
    command.args(args).kill_on_drop(true);
    let what = format!("kubectl {}", args.join(" "));
    let out = run_bounded(command, None, &what, TOOL_DEADLINE).await;
    assert!(out.status.success(), "{what}: {}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `kubectl ARGS` (the control plane's, admin): its stdout.
async fn kubectl_text(cp: &ControlPlane, args: &[&str]) -> String {
    let mut command = tokio::process::Command::from(cp.kubectl());
    command.args(args).kill_on_drop(true);
    let what = format!("kubectl {}", args.join(" "));
    let out = run_bounded(command, None, &what, TOOL_DEADLINE).await;
    assert!(out.status.success(), "{what}: {}", describe(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Replaces the argument `from` of `args` by `to`; panics unless `from` is there exactly once.
fn rewrite_arg(args: &mut Value, from: &str, to: String) {
    let args = args.as_array_mut().unwrap();
    let at: Vec<usize> = (0..args.len()).filter(|&i| args[i] == from).collect();
    assert_eq!(at.len(), 1, "the Deployment passes {from} once: {args:?}");
    args[at[0]] = json!(to);
}

/// Plays the node for the Deployment the page's `helm install` created, as far as one pod of
/// it goes, and returns that pod's container once its readiness probe passes:
///
/// - the workload identity webhook: the pod template must carry the label it acts on; it gets
///   the webhook's mutation (the client and tenant ids of the ServiceAccount's annotations, the
///   authority host of the cloud, here the simulator, and the projected token with audience
///   `api://AzureADTokenExchange` that `AZURE_FEDERATED_TOKEN_FILE` names);
/// - the node's network, where the tenant's hosts are the simulator's: the global Graph
///   endpoint the install left at the chart's default is the simulator's address (the one
///   argument rewritten, and only if it is the default), the simulator's CA is trusted
///   (`SSL_CERT_FILE`, as the chart's `caBundle` would mount it), and the metrics port, which
///   a pod has in its own network namespace, is a free one of the host's;
/// - the kubelet: the image pulled by the Deployment's reference (digest) from the local
///   registry, the ServiceAccount's token and the cluster's CA mounted, the security context,
///   limits, environment and volumes of the template (tests/support's `pod`), the container
///   run with podman on the host's network (the API server and the simulator are on its
///   loopback), and the readiness probe (`/readyz`) polled until it passes.
async fn run_deployment_pod(
    cp: &ControlPlane,
    sim: &Simulator,
    dir: &Path,
    container_name: &str,
    pod_log: &Path,
    http: &reqwest::Client,
) -> Container {
    let mut deployment = kubectl_value(
        cp,
        &[
            "-n",
            RELEASE_NAMESPACE,
            "get",
            "deploy",
            "guestreset",
            "-o",
            "json",
        ],
    )
    .await;
    let template = &mut deployment["spec"]["template"];
    let service_account = template["spec"]["serviceAccountName"]
        .as_str()
        .unwrap()
        .to_owned();
    let sa = kubectl_value(
        cp,
        &[
            "-n",
            RELEASE_NAMESPACE,
            "get",
            "serviceaccount",
            &service_account,
            "-o",
            "json",
        ],
    )
    .await;

    // The webhook.
    assert_eq!(
        template["metadata"]["labels"]["azure.workload.identity/use"], "true",
        "the webhook mutates only pods labelled azure.workload.identity/use: {template}"
    );
    let annotation = |key: &str| {
        sa["metadata"]["annotations"][key]
            .as_str()
            .unwrap_or_else(|| panic!("the ServiceAccount has no {key} annotation: {sa}"))
            .to_owned()
    };
    let container = &mut template["spec"]["containers"][0];
    let env = container["env"].as_array_mut().unwrap();
    let set = |env: &Vec<Value>, name: &str| env.iter().any(|v| v["name"] == name);
    assert!(
        !set(env, "AZURE_AUTHORITY_HOST") && !set(env, "AZURE_FEDERATED_TOKEN_FILE"),
        "the webhook provides these: {env:?}"
    );
    for (name, value) in [
        (
            "AZURE_CLIENT_ID",
            annotation("azure.workload.identity/client-id"),
        ),
        (
            "AZURE_TENANT_ID",
            annotation("azure.workload.identity/tenant-id"),
        ),
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            format!("{FEDERATED_TOKEN_DIR}/{FEDERATED_TOKEN_FILE}"),
        ),
        ("AZURE_AUTHORITY_HOST", sim.base_url()),
        // The node's trust: the simulator's CA.
        (
            "SSL_CERT_FILE",
            "/etc/install-walk/tenant-ca/ca.crt".to_owned(),
        ),
    ] {
        if !set(env, name) {
            env.push(json!({"name": name, "value": value}));
        }
    }
    let mounts = container
        .as_object_mut()
        .unwrap()
        .entry("volumeMounts")
        .or_insert_with(|| json!([]));
    mounts.as_array_mut().unwrap().extend([
        json!({"name": "azure-identity-token", "mountPath": FEDERATED_TOKEN_DIR, "readOnly": true}),
        json!({"name": "install-walk-tenant-ca", "mountPath": "/etc/install-walk/tenant-ca", "readOnly": true}),
    ]);

    // The node's network.
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    rewrite_arg(
        &mut container["args"],
        &format!("--graph-endpoint={GLOBAL_GRAPH}"),
        format!("--graph-endpoint={}", sim.base_url()),
    );
    rewrite_arg(
        &mut container["args"],
        "--metrics-addr=0.0.0.0:8080",
        format!("--metrics-addr=127.0.0.1:{metrics_port}"),
    );
    let image = container["image"].as_str().unwrap().to_owned();
    let volumes = template["spec"]
        .as_object_mut()
        .unwrap()
        .entry("volumes")
        .or_insert_with(|| json!([]));
    volumes.as_array_mut().unwrap().extend([
        json!({"name": "azure-identity-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": FEDERATED_AUDIENCE, "expirationSeconds": 3600, "path": FEDERATED_TOKEN_FILE}}]}}),
        json!({"name": "install-walk-tenant-ca", "configMap": {"name": "install-walk-tenant-ca"}}),
    ]);

    // The kubelet: tokens, the image, the container.
    let token = |audience: Option<&'static str>| {
        let service_account = service_account.clone();
        async move {
            let mut args = vec![
                "-n",
                RELEASE_NAMESPACE,
                "create",
                "token",
                &service_account,
                "--duration=3600s",
            ];
            if let Some(audience) = audience {
                args.extend(["--audience", audience]);
            }
            kubectl_text(cp, &args).await.trim().to_owned()
        }
    };
    let pod_dir = dir.join("pod");
    fs::create_dir_all(&pod_dir).unwrap();
    // Readable by 65532 only through the mounts.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&pod_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let world = PodWorld {
        pod_name: "guestreset-install-walk".to_owned(),
        namespace: RELEASE_NAMESPACE.to_owned(),
        secrets: BTreeMap::new(),
        config_maps: BTreeMap::from([(
            "install-walk-tenant-ca".to_owned(),
            BTreeMap::from([("ca.crt".to_owned(), sim.ca_pem().as_bytes().to_vec())]),
        )]),
        token: token(None).await,
        projected_tokens: BTreeMap::from([(
            FEDERATED_AUDIENCE.to_owned(),
            token(Some(FEDERATED_AUDIENCE)).await,
        )]),
        cluster_ca: fs::read(cp.dir().join("pki/ca.crt")).unwrap(),
        api_port: cp.server_addr().port(),
        dir: &pod_dir,
    };
    let (flags, args) = podman_run_args(&deployment, &world);
    let image_sh = repo_root().join("scripts/image.sh");
    tokio::task::block_in_place(|| sweep_stale_containers(&image_sh, CONTAINER_PREFIX));
    let mut pull = tokio::process::Command::new("bash");
    pull.arg(&image_sh)
        .args(["podman", "pull", "--quiet", "--tls-verify=false", &image])
        .kill_on_drop(true);
    let out = run_bounded(pull, None, "podman pull", TOOL_DEADLINE).await;
    assert!(
        out.status.success(),
        "podman pull {image}: {}",
        describe(&out)
    );
    let mut run = Command::new("bash");
    run.arg(&image_sh)
        .args([
            "podman",
            "run",
            "--name",
            container_name,
            "--network=host",
            "--pull=never",
        ])
        .args(&flags)
        .arg(&image)
        .args(&args);
    let mut container = Container {
        name: container_name.to_owned(),
        run: ChildProcess::spawn_with_log(run, pod_log).unwrap(),
        image_sh,
    };
    let readyz = format!("http://127.0.0.1:{metrics_port}/readyz");
    let deadline = Instant::now() + POD_READY;
    loop {
        if let Ok(response) = http.get(&readyz).send().await
            && response.status() == 200
        {
            return container;
        }
        if let Some(status) = container.run.try_wait() {
            panic!(
                "the pod's container exited ({status}) before it was ready:\n{}",
                container.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the pod was not ready within {POD_READY:?}:\n{}",
            container.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The local registry on a free loopback port, serving once `/v2/` answers.
async fn start_registry(dir: &Path, http: &reqwest::Client) -> (ChildProcess, String) {
    let binary = tokio::task::block_in_place(|| build_tool("registry"))
        .unwrap_or_else(|e| panic!("the registry is unavailable: {e}"));
    assert!(binary.is_file());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut serve = Command::new("bash");
    serve
        .arg(repo_root().join("scripts/registry.sh"))
        .arg("serve")
        .arg(dir)
        .arg(&addr);
    let mut child = ChildProcess::spawn(serve).unwrap();
    let url = format!("http://{addr}/v2/");
    wait_until(
        "the registry to answer /v2/",
        Duration::from_secs(30),
        || {
            let (http, url) = (http.clone(), url.clone());
            let exited = child.try_wait();
            async move {
                if let Some(status) = exited {
                    return Err(format!("the registry exited: {status}"));
                }
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => Ok(Some(())),
                    Ok(r) => Err(format!("HTTP {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await;
    (child, addr)
}

/// The digest the registry serves for `repository:reference`.
async fn registry_digest(
    http: &reqwest::Client,
    addr: &str,
    repository: &str,
    tag: &str,
) -> String {
    let response = http
        .head(format!("http://{addr}/v2/{repository}/manifests/{tag}"))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{repository}:{tag} in the registry");
    response.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// `key=value` lines of publish.sh's output.
fn printed(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.contains(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The files of a chart archive, by path.
fn chart_files(tgz: &Path, into: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::create_dir_all(into).unwrap();
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(tgz)
        .arg("-C")
        .arg(into)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {}", describe(&out));
    let mut files = BTreeMap::new();
    let mut stack = vec![into.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(into).unwrap().display().to_string();
                files.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_user_follows_install_md_top_to_bottom() {
    let root = repo_root();
    let page = fs::read_to_string(root.join(PAGE)).unwrap();
    let blocks = shell_blocks(&page);
    let run: Vec<&Block> = blocks.iter().filter(|b| b.skip.is_none()).collect();
    assert!(
        run.len() >= 5,
        "the walk runs most of the page's blocks: {blocks:#?}"
    );
    // Section 3, "Checking the installation", runs whole: it needs the pod.
    for needle in [
        "logs deploy/guestreset",
        "-- guestreset check",
        "wait grr/smoke-test",
        "wait grr/first-reset",
    ] {
        assert!(
            run.iter().any(|b| b.text.contains(needle)),
            "a block of the walk runs `{needle}`: {blocks:#?}"
        );
    }
    let publish_block = run
        .iter()
        .position(|b| b.text.contains("scripts/publish.sh"))
        .expect("a block that runs scripts/publish.sh");
    let install_block = run
        .iter()
        .position(|b| b.text.contains("helm install"))
        .expect("a block that runs helm install");
    assert!(
        publish_block < install_block,
        "publishing comes before installing"
    );

    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let cp = ControlPlane::shared().await;
    let (mut registry, addr) = start_registry(&dir.join("registry"), &http).await;
    let registry_path = format!("{addr}/guestreset");

    // The user's working copy: the repository's entries, linked, so that files the page
    // writes (publish.txt) stay out of the real one.
    let work = dir.join("work");
    fs::create_dir_all(&work).unwrap();
    for entry in fs::read_dir(&root).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "target" {
            std::os::unix::fs::symlink(entry.path(), work.join(entry.file_name())).unwrap();
        }
    }
    // The tenant: the Graph simulator with the stand-in az's identities (the app's client id,
    // its home tenant) and the page's test guest, invited and redeemed.
    let sim = graph_sim::start(
        SimConfig {
            tenant_id: TENANT_ID.to_owned(),
            client_id: APP_ID.to_owned(),
            ..SimConfig::new(dir.join("sim"))
        }
        .with_users([SeedUser::external_guest(GUEST_ID, GUEST_MAIL)]),
    )
    .await
    .unwrap();
    let admin = sim.admin();
    // The cluster's service-account issuer, which `az aks show` answers for the OIDC issuer:
    // the federated credential then names the issuer of the tokens the pod will present.
    let discovery = kubectl_value(cp, &["get", "--raw", "/.well-known/openid-configuration"]).await;
    let issuer = discovery["issuer"].as_str().unwrap().to_owned();

    // PATH: az, helm and kubectl stand-ins (kubectl is the control plane's but for the forms
    // that need a running pod), and the kubelet hook.
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let az_log = dir.join("az.log");
    write_executable(&bin.join("az"), &az_stub(&az_log, &issuer));
    let helm = tokio::task::block_in_place(|| build_tool("helm"))
        .unwrap_or_else(|e| panic!("helm is unavailable: {e}"));
    write_executable(&bin.join("helm"), &helm_wrapper(&helm));
    let container_name = format!("{CONTAINER_PREFIX}{}", std::process::id());
    let pod_log = dir.join("pod.log");
    let image_sh = root.join("scripts/image.sh");
    write_executable(
        &bin.join("kubectl"),
        &kubectl_wrapper(
            &cp.bin_dir().join("kubectl"),
            &pod_log,
            &image_sh,
            &container_name,
            &sim.base_url(),
        ),
    );
    let (request_fifo, answer_fifo) = (dir.join("kubelet.request"), dir.join("kubelet.answer"));
    for fifo in [&request_fifo, &answer_fifo] {
        let out = Command::new("mkfifo").arg(fifo).output().unwrap();
        assert!(out.status.success(), "mkfifo: {}", describe(&out));
    }
    write_executable(
        &bin.join(KUBELET_HOOK),
        &kubelet_hook(&request_fifo, &answer_fifo),
    );

    let mut script = String::from("set -euo pipefail\n");
    let mut substituted = 0;
    for (i, block) in run.iter().enumerate() {
        let mut text = block.text.clone();
        if text.lines().any(|l| l.trim() == REGISTRY_LINE) {
            text = text.replace(REGISTRY_LINE, &format!("REGISTRY={registry_path}"));
            substituted += 1;
        }
        script.push_str(&format!(
            "printf 'install-walk: %s\\n' '{PAGE}:{}' >&2\n{text}\n",
            block.line
        ));
        if i == install_block {
            // The pod the install's Deployment asks for, run by the kubelet stand-in.
            script.push_str(&format!("{KUBELET_HOOK}\n"));
        }
    }
    assert_eq!(
        substituted, 1,
        "exactly one runnable block sets {REGISTRY_LINE}"
    );
    let script_path = dir.join("walk.sh");
    fs::write(&script_path, &script).unwrap();

    let helm_home = dir.join("helm");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let walk_env = |command: &mut tokio::process::Command| {
        command
            .current_dir(&work)
            .env("PATH", &path)
            .env("KUBECONFIG", cp.kubeconfig_path())
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_DATA_HOME", helm_home.join("data"))
            .env("PUBLISH_PLAIN_HTTP", "1")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .kill_on_drop(true);
    };
    let mut walk = tokio::process::Command::new("bash");
    walk.arg(&script_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    walk_env(&mut walk);
    // The kubelet hook's requests, read by a thread (opening a FIFO blocks until its writer).
    let (requests_tx, mut requests) = tokio::sync::mpsc::unbounded_channel();
    let fifo = request_fifo.clone();
    std::thread::spawn(move || {
        while let Ok(file) = fs::File::open(&fifo) {
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                if requests_tx.send(line).is_err() {
                    return;
                }
            }
        }
    });
    let started = Instant::now();
    let walk_ended = walk.spawn().unwrap().wait_with_output();
    tokio::pin!(walk_ended);
    let walk_deadline = tokio::time::sleep(WALK_DEADLINE);
    tokio::pin!(walk_deadline);
    let mut pod: Option<Container> = None;
    let mut pod_ready_after = None;
    let out = loop {
        tokio::select! {
            out = &mut walk_ended => break out.unwrap(),
            Some(request) = requests.recv() => {
                assert_eq!(request, "run", "the kubelet hook's request");
                assert!(pod.is_none(), "the kubelet hook ran twice");
                let asked = Instant::now();
                pod = Some(
                    run_deployment_pod(cp, &sim, dir, &container_name, &pod_log, &http).await,
                );
                pod_ready_after = Some(asked.elapsed());
                fs::write(&answer_fifo, "ready\n").unwrap();
            }
            () = &mut walk_deadline => panic!("the walk did not finish within {WALK_DEADLINE:?}"),
        }
    };
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last_block = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("install-walk: "))
        .next_back()
        .unwrap_or("before the first block");
    if !out.status.success() {
        // Where the resets stand (the printer columns carry Ready's reason).
        let mut get = tokio::process::Command::from(cp.kubectl());
        get.args(["get", "grr", "-A", "-o", "wide"])
            .kill_on_drop(true);
        let resets = run_bounded(get, None, "kubectl get grr", TOOL_DEADLINE).await;
        panic!(
            "the walk failed in the block at {last_block}: {}\nregistry log:\n{}\n\
             resets:\n{}\npod log:\n{}",
            describe(&out),
            registry.read_log(),
            String::from_utf8_lossy(&resets.stdout),
            pod.as_ref().map(Container::log).unwrap_or_default()
        );
    }
    let pod = pod.expect("the kubelet hook ran after helm install");
    println!(
        "install walk: {} of {} sh blocks run ({} skipped with a reason) in {} ms; \
         the stand-in pod was ready {} ms after the install",
        run.len(),
        blocks.len(),
        blocks.len() - run.len(),
        took.as_millis(),
        pod_ready_after.unwrap().as_millis()
    );

    // Section 3 against the pod: its log, the check run in it, the smoke test's dry run and
    // the first real reset.
    let walk_stdout = String::from_utf8_lossy(&out.stdout);
    let pod_log_text = pod.log();
    let first_log_line = pod_log_text.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<Value>(first_log_line).is_ok()
            && walk_stdout.lines().any(|l| l == first_log_line),
        "kubectl logs printed the pod's JSON log:\n{walk_stdout}\npod log:\n{pod_log_text}"
    );
    let check_lines: Vec<&str> = walk_stdout
        .lines()
        .filter(|l| l.starts_with("ok ") || l.starts_with("FAIL "))
        .collect();
    for check in [
        "token",
        "permission",
        "graph",
        "rbac guestredemptionresets",
        "rbac guestredemptionresets/status",
        "rbac events",
        "rbac secrets",
        "rbac configmaps",
        "rbac leases",
        "namespace",
        "pause record",
    ] {
        assert!(
            check_lines
                .iter()
                .any(|l| l.starts_with(&format!("ok {check}: "))),
            "guestreset check in the pod: no `ok {check}` in:\n{}",
            check_lines.join("\n")
        );
    }
    assert!(
        check_lines.iter().all(|l| l.starts_with("ok ")),
        "{check_lines:#?}"
    );
    let ready = |resource: &Value| {
        let conditions = resource["status"]["conditions"].as_array().cloned();
        let ready = conditions
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .unwrap_or_else(|| panic!("no Ready condition: {resource}"));
        assert_eq!(
            ready["observedGeneration"], resource["metadata"]["generation"],
            "{resource}"
        );
        ready
    };
    let smoke = kubectl_value(
        cp,
        &["-n", "identity", "get", "grr", "smoke-test", "-o", "json"],
    )
    .await;
    assert_eq!(smoke["spec"]["dryRun"], true, "{smoke}");
    assert_eq!(ready(&smoke)["reason"], "DryRunComplete", "{smoke}");
    let first = kubectl_value(
        cp,
        &["-n", "identity", "get", "grr", "first-reset", "-o", "json"],
    )
    .await;
    assert_ne!(first["spec"]["dryRun"], true, "{first}");
    assert_eq!(first["spec"]["email"], NEW_MAIL, "{first}");
    assert_eq!(ready(&first)["reason"], "Issued", "{first}");
    // In the tenant: one invitation, the real reset's; the dry run wrote nothing.
    let posts = admin.invitation_posts().await.unwrap();
    assert_eq!(posts.len(), 1, "exactly one POST /invitations: {posts:#?}");
    assert_eq!(posts[0].status, 201, "{posts:#?}");
    assert_eq!(
        posts[0].invited_user_id.as_deref(),
        Some(GUEST_ID),
        "{posts:#?}"
    );
    assert_eq!(
        posts[0].invited_email.as_deref(),
        Some(NEW_MAIL),
        "{posts:#?}"
    );
    let guest = admin.user(GUEST_ID).await.unwrap().expect("the test guest");
    assert_eq!(guest.mail.as_deref(), Some(NEW_MAIL), "{guest:?}");
    assert_eq!(
        guest.external_user_state.as_deref(),
        Some("PendingAcceptance"),
        "{guest:?}"
    );
    // Every token came from the workload identity exchange: the pod's projected token, issued
    // by the cluster for the subject and audience of the page's federated credential.
    let assertions = admin.client_assertions().await.unwrap();
    assert!(
        !assertions.is_empty(),
        "no client assertion reached the tenant"
    );
    for claims in &assertions {
        assert_eq!(claims.iss, issuer, "{assertions:?}");
        assert_eq!(claims.sub, SUBJECT, "{assertions:?}");
        assert_eq!(claims.aud, FEDERATED_AUDIENCE, "{assertions:?}");
    }
    let journal = admin.journal().await.unwrap();
    assert!(
        journal
            .iter()
            .filter(|e| e.call == Call::Token)
            .all(|e| e.status == 200),
        "{journal:#?}"
    );

    // What the page's publish step printed, and what the registry holds.
    let publish_txt = fs::read_to_string(dir.join("work/publish.txt")).unwrap();
    let values = printed(&publish_txt);
    assert_eq!(values["image.repository"], registry_path, "{publish_txt}");
    let image_digest = values["image.digest"].clone();
    let chart_version = values["chart.version"].clone();
    assert_eq!(
        values["chart"],
        format!("oci://{registry_path}/charts/guestreset")
    );
    let archive = std::env::var("GUESTRESET_IMAGE_ARCHIVE")
        .ok()
        .filter(|a| !a.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // Where publish.sh finds it by default (scripts/image.sh's cache).
            let cache = std::env::var("GUESTRESET_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    std::env::var("XDG_CACHE_HOME")
                        .map(PathBuf::from)
                        .unwrap_or_else(|_| {
                            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache")
                        })
                        .join("guestreset")
                });
            cache.join("image/guestreset.oci.tar")
        });
    let index = Command::new("tar")
        .arg("-xOf")
        .arg(&archive)
        .arg("index.json")
        .output()
        .unwrap();
    let index: Value = serde_json::from_slice(&index.stdout).unwrap();
    let archive_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let served = registry_digest(&http, &addr, "guestreset", &tag).await;
    assert_eq!(image_digest, served, "the printed digest is the registry's");
    assert_eq!(
        image_digest, archive_digest,
        "the registry holds the archive's image"
    );
    let chart_served =
        registry_digest(&http, &addr, "guestreset/charts/guestreset", &chart_version).await;
    assert_eq!(values["chart.digest"], chart_served, "{publish_txt}");

    // The release: the chart from the registry, the pushed image by digest, the identities
    // of the stand-in az carried by the page's variables, and the approval upgrade.
    let kubectl_json = |args: &[&str]| {
        let mut command = tokio::process::Command::from(cp.kubectl());
        command.args(args).args(["-o", "json"]).kill_on_drop(true);
        let what = format!("kubectl {args:?}");
        async move {
            let out = run_bounded(command, None, &what, TOOL_DEADLINE).await;
            assert!(out.status.success(), "{what}: {}", describe(&out));
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        }
    };
    let deployment =
        kubectl_json(&["-n", "guestreset-system", "get", "deploy", "guestreset"]).await;
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        format!("{registry_path}:{tag}@{image_digest}"),
        "the Deployment runs the pushed image by its digest"
    );
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--require-approval"), "{args:?}");
    assert!(args.contains(&"--namespace=identity"), "{args:?}");
    let service_account = kubectl_json(&[
        "-n",
        "guestreset-system",
        "get",
        "serviceaccount",
        "guestreset",
    ])
    .await;
    let annotations = &service_account["metadata"]["annotations"];
    assert_eq!(annotations["azure.workload.identity/client-id"], APP_ID);
    assert_eq!(annotations["azure.workload.identity/tenant-id"], TENANT_ID);

    let mut helm_cmd = tokio::process::Command::new(bin.join("helm"));
    helm_cmd.args([
        "-n",
        "guestreset-system",
        "get",
        "metadata",
        "guestreset",
        "-o",
        "json",
    ]);
    walk_env(&mut helm_cmd);
    let out = run_bounded(helm_cmd, None, "helm get metadata", TOOL_DEADLINE).await;
    assert!(out.status.success(), "{}", describe(&out));
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(metadata["version"], chart_version.as_str());
    assert_eq!(metadata["status"], "deployed");
    assert_eq!(
        metadata["revision"], 3,
        "install, the upgrade, the approval upgrade"
    );

    // The az calls the page makes, in its order, with the variables filled in.
    let az_calls = fs::read_to_string(&az_log).unwrap();
    let attach = az_calls
        .lines()
        .position(|l| l == "aks update -g RG -n CLUSTER --attach-acr myacr")
        .unwrap_or_else(|| {
            panic!("az aks update --attach-acr with the registry's name:\n{az_calls}")
        });
    let federated = az_calls
        .lines()
        .position(|l| l.starts_with(&format!("ad app federated-credential create --id {APP_ID}")))
        .unwrap_or_else(|| panic!("the federated credential for the app:\n{az_calls}"));
    assert!(attach < federated, "{az_calls}");
    // The call's JSON spans lines of the log: from its first line to the next call's.
    let credential: String = az_calls
        .lines()
        .skip(federated)
        .take_while(|l| *l != "}")
        .collect();
    assert!(
        credential.contains(&format!("\"issuer\": \"{issuer}\""))
            && credential.contains(&format!("\"subject\": \"{SUBJECT}\"")),
        "the cluster's issuer and the pod's subject reached the federated credential:\n{az_calls}"
    );

    // The chart the registry serves is the source tree's chart, file for file.
    fs::create_dir_all(dir.join("pulled")).unwrap();
    let mut pull = tokio::process::Command::new(bin.join("helm"));
    pull.args([
        "pull",
        &values["chart"],
        "--version",
        &chart_version,
        "--destination",
    ])
    .arg(dir.join("pulled"));
    walk_env(&mut pull);
    let out = run_bounded(pull, None, "helm pull", TOOL_DEADLINE).await;
    assert!(out.status.success(), "{}", describe(&out));
    let mut package = tokio::process::Command::new(&helm);
    package
        .arg("package")
        .arg(root.join("charts/guestreset"))
        .arg("--destination")
        .arg(dir.join("packaged"));
    walk_env(&mut package);
    let out = run_bounded(package, None, "helm package", TOOL_DEADLINE).await;
    assert!(out.status.success(), "{}", describe(&out));
    let tgz = format!("guestreset-{chart_version}.tgz");
    let pulled = chart_files(&dir.join("pulled").join(&tgz), &dir.join("pulled/x"));
    let packaged = chart_files(&dir.join("packaged").join(&tgz), &dir.join("packaged/x"));
    assert!(pulled.contains_key("guestreset/values.schema.json"));
    assert_eq!(
        pulled.keys().collect::<Vec<_>>(),
        packaged.keys().collect::<Vec<_>>()
    );
    for (file, content) in &packaged {
        assert!(
            pulled[file] == *content,
            "{file} differs in the pushed chart"
        );
    }

    // The pushed image, pulled back by digest, is the controller: it prints the CRD.
    let image_sh = |args: &[&str]| {
        let mut command = tokio::process::Command::new("bash");
        command
            .arg(root.join("scripts/image.sh"))
            .args(args)
            .kill_on_drop(true);
        command
    };
    let reference = format!("{registry_path}@{image_digest}");
    let out = run_bounded(
        image_sh(&[
            "podman",
            "pull",
            "--quiet",
            "--tls-verify=false",
            &reference,
        ]),
        None,
        "podman pull",
        TOOL_DEADLINE,
    )
    .await;
    assert!(out.status.success(), "{}", describe(&out));
    let out = run_bounded(
        image_sh(&[
            "podman",
            "run",
            "--rm",
            "--pull=never",
            "--network=none",
            &reference,
            "crd",
        ]),
        None,
        "podman run crd",
        TOOL_DEADLINE,
    )
    .await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        fs::read_to_string(root.join("crds/guestredemptionresets.guestreset.io.yaml")).unwrap(),
        "the pushed image's guestreset prints the CRD"
    );

    // Publishing again changes nothing.
    let publish = |target: &str| {
        let mut command = tokio::process::Command::new("bash");
        command.arg(root.join("scripts/publish.sh")).arg(target);
        walk_env(&mut command);
        command
    };
    let out = run_bounded(
        publish(&registry_path),
        None,
        "publish.sh again",
        WALK_DEADLINE,
    )
    .await;
    assert!(out.status.success(), "{}", describe(&out));
    let again = String::from_utf8_lossy(&out.stdout);
    assert_eq!(again, publish_txt, "a second publication prints the same");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("left as it is"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        registry_digest(&http, &addr, "guestreset/charts/guestreset", &chart_version).await,
        chart_served,
        "the chart was not pushed again"
    );

    // A registry that is not there: a clear error before anything is loaded or pushed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run_bounded(
        publish(&format!("127.0.0.1:{closed}/guestreset")),
        None,
        "publish.sh to nothing",
        TOOL_DEADLINE,
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr.contains("is unreachable"), "{stderr}");
    assert!(!stderr.contains("loading"), "nothing loaded: {stderr}");
    assert!(out.stdout.is_empty(), "{}", describe(&out));

    // The kubelet stops the pod; the container is removed.
    drop(pod);
    registry.terminate();
}
