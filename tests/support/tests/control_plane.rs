//! The harness against a real control plane. Some tests re-run this test
//! binary as a helper process (see `helper_process`) so that they can kill the
//! owner of a child or of a control plane and watch what survives.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use guestreset_testsupport::{
    ChildProcess, ControlPlane, pinned_kubernetes_version, repo_root, wait_until,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

const HELPER_ENV: &str = "GUESTRESET_TESTSUPPORT_HELPER";
const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn control_plane_serves_the_pinned_release() {
    let cp = ControlPlane::shared().await;
    assert!(
        cp.server_url().starts_with("https://127.0.0.1:"),
        "{}",
        cp.server_url()
    );
    let kubeconfig = fs::read_to_string(cp.kubeconfig_path()).unwrap();
    assert!(kubeconfig.contains(cp.server_url()));
    assert!(kubeconfig.contains("certificate-authority-data:"));

    let info = cp.client().await.apiserver_version().await.unwrap();
    assert_eq!(info.git_version, pinned_kubernetes_version());
    assert_eq!(format!("v{}.{}", info.major, info.minor), minor_release());
}

#[tokio::test]
async fn namespaces_are_fresh_and_distinct() {
    let cp = ControlPlane::shared().await;
    let first = cp.namespace("Harness_Test").await;
    let second = cp.namespace("Harness_Test").await;
    assert_ne!(first, second);
    for name in [&first, &second] {
        assert!(name.starts_with("harness-test-"), "{name}");
        let namespace = Api::<Namespace>::all(cp.client().await)
            .get(name)
            .await
            .unwrap();
        let phase = namespace.status.and_then(|s| s.phase);
        assert_eq!(phase.as_deref(), Some("Active"), "namespace {name}");
    }
}

#[tokio::test]
async fn kubectl_matches_the_server_version() {
    let cp = ControlPlane::shared().await;
    let output = cp
        .kubectl()
        .args(["version", "-o", "json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let version: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let expected = pinned_kubernetes_version();
    assert_eq!(version["clientVersion"]["gitVersion"], expected.as_str());
    assert_eq!(version["serverVersion"]["gitVersion"], expected.as_str());
}

#[tokio::test]
async fn rbac_is_enforced() {
    let cp = ControlPlane::shared().await;
    let namespace = cp.namespace("rbac").await;

    let as_nobody = cp.client_as("jane", &[]).await;
    let err = Api::<Namespace>::all(as_nobody)
        .list(&Default::default())
        .await
        .expect_err("an unprivileged user must not list namespaces");
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 Forbidden, got {other}"),
    }

    let robot = format!("system:serviceaccount:{namespace}:robot");
    let can_i = |user: &str| {
        let output = cp
            .kubectl()
            .args(["auth", "can-i", "get", "secrets", "-n", &namespace])
            .arg(format!("--as={user}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(can_i(&robot), "no");

    let grant = cp
        .kubectl()
        .args(["-n", &namespace, "create", "role", "read-secrets"])
        .args(["--verb=get", "--resource=secrets"])
        .output()
        .unwrap();
    assert!(grant.status.success(), "{grant:?}");
    let bind = cp
        .kubectl()
        .args(["-n", &namespace, "create", "rolebinding", "robot-reads"])
        .args(["--role=read-secrets"])
        .arg(format!("--serviceaccount={namespace}:robot"))
        .output()
        .unwrap();
    assert!(bind.status.success(), "{bind:?}");
    // The authorizer reads roles from an informer cache, so the grant shows up
    // shortly after it is written rather than at once.
    wait_until("the role binding to take effect", 10 * SECOND, || async {
        match can_i(&robot).as_str() {
            "yes" => Ok(Some(())),
            other => Err(format!("can-i said {other:?}")),
        }
    })
    .await;
    // Only that namespace, and only that service account.
    let other = cp.namespace("rbac-other").await;
    let output = cp
        .kubectl()
        .args(["auth", "can-i", "get", "secrets", "-n", &other])
        .arg(format!("--as={robot}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "no");
    assert_eq!(
        can_i(&format!("system:serviceaccount:{namespace}:someone-else")),
        "no"
    );
}

#[tokio::test]
async fn child_output_goes_to_its_log_and_terminate_sends_sigterm() {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "trap 'echo got-term; exit 3' TERM; echo to-stdout; echo to-stderr >&2; \
         while :; do sleep 0.05; done",
    ]);
    let mut child = ChildProcess::spawn(command).unwrap();
    wait_until("both streams in the log", 10 * SECOND, || async {
        let log = child.read_log();
        (log.contains("to-stdout") && log.contains("to-stderr")).then_some(())
    })
    .await;
    assert!(child.log_path().exists());
    assert!(child.is_running());
    let status = child.terminate();
    assert_eq!(status.code(), Some(3), "{status:?}");
    assert!(child.read_log().contains("got-term"));

    let mut sleeper = ChildProcess::spawn(sleep_command()).unwrap();
    let pid = sleeper.pid();
    assert_eq!(sleeper.kill().signal(), Some(libc::SIGKILL));
    assert!(!process_alive(pid));
}

#[tokio::test]
async fn dropping_a_child_kills_it() {
    let child = ChildProcess::spawn(sleep_command()).unwrap();
    let pid = child.pid();
    assert!(process_alive(pid));
    drop(child);
    // Drop reaps the child, so it is gone at once, not eventually.
    assert!(!process_alive(pid));
}

#[tokio::test]
async fn child_outlives_the_thread_that_asked_for_it() {
    let flag = std::env::temp_dir().join(format!("testsupport-flag-{}", std::process::id()));
    let _ = fs::remove_file(&flag);
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; echo saw-flag; exec sleep 600",
        flag.display()
    );
    let (mut child, tid) = std::thread::spawn(move || {
        let mut command = Command::new("sh");
        command.args(["-c", &script]);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        (ChildProcess::spawn(command).unwrap(), tid)
    })
    .join()
    .unwrap();
    // Once the thread's task entry is gone the kernel has already sent any
    // parent-death signal bound to that thread.
    let task = PathBuf::from(format!("/proc/self/task/{tid}"));
    wait_until("the spawning thread to be gone", 10 * SECOND, || async {
        (!task.exists()).then_some(())
    })
    .await;
    fs::write(&flag, b"").unwrap();
    wait_until("the child to see the flag", 10 * SECOND, || async {
        child.read_log().contains("saw-flag").then_some(())
    })
    .await;
    assert!(child.is_running(), "{:?}", child.try_wait());
    let _ = fs::remove_file(&flag);
}

#[tokio::test]
async fn child_dies_when_its_owner_process_is_killed() {
    let mut owner = helper("own-child");
    let pid: u32 = wait_until("the helper to report its child", 30 * SECOND, || async {
        reported(&owner, "CHILD_PID=")
    })
    .await
    .parse()
    .unwrap();
    assert!(
        process_alive(pid),
        "grandchild {pid} should run while its owner does"
    );
    owner.kill();
    wait_until("the orphaned grandchild to die", 10 * SECOND, || async {
        (!process_alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn control_plane_stops_when_its_test_process_is_killed() {
    let mut owner = helper("control-plane");
    let (dir, etcd, apiserver) = helper_control_plane(&owner).await;
    assert!(process_alive(etcd) && process_alive(apiserver));
    owner.kill();
    wait_until("etcd and kube-apiserver to stop", 60 * SECOND, || async {
        match (process_alive(etcd), process_alive(apiserver)) {
            (false, false) => Ok(Some(())),
            alive => Err(format!("alive (etcd, kube-apiserver): {alive:?}")),
        }
    })
    .await;
    // Killed, the helper could not remove its directory; the next process
    // that starts a control plane would sweep it, but that may be a while.
    let _ = fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn control_plane_stops_and_is_removed_when_its_test_process_exits() {
    let mut owner = helper("control-plane-exit");
    let (dir, etcd, apiserver) = helper_control_plane(&owner).await;
    let status = wait_until("the helper to exit", 60 * SECOND, || {
        let status = owner.try_wait();
        async move { status }
    })
    .await;
    assert!(status.success(), "{status:?}\n{}", owner.read_log());
    // The exit handler waited for the control plane before returning.
    assert!(!process_alive(etcd), "etcd survived");
    assert!(!process_alive(apiserver), "kube-apiserver survived");
    assert!(!dir.exists(), "{} was left behind", dir.display());
}

#[test]
fn repo_root_holds_the_script() {
    assert!(repo_root().join("scripts/controlplane.sh").is_file());
    assert!(pinned_kubernetes_version().starts_with("v1."));
}

/// Not a test: the body of the helper processes above. It is ignored so that a
/// plain `cargo test` skips it, and does nothing without the helper variable.
#[test]
#[ignore = "helper process, started by other tests"]
fn helper_process() {
    let Ok(role) = std::env::var(HELPER_ENV) else {
        return;
    };
    match role.as_str() {
        "own-child" => {
            let child = ChildProcess::spawn(sleep_command()).unwrap();
            println!("CHILD_PID={}", child.pid());
            park_forever();
        }
        "control-plane" | "control-plane-exit" => {
            let cp = ControlPlane::shared_blocking();
            let pid = |name: &str| fs::read_to_string(cp.dir().join(name)).unwrap();
            println!("CP_DIR={}", cp.dir().parent().unwrap().display());
            println!("ETCD_PID={}", pid("etcd.pid").trim());
            println!("APISERVER_PID={}", pid("kube-apiserver.pid").trim());
            if role == "control-plane" {
                park_forever();
            }
        }
        other => panic!("unknown helper role {other}"),
    }
}

fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

fn helper(role: &str) -> ChildProcess {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["helper_process", "--exact", "--ignored", "--nocapture"])
        .env(HELPER_ENV, role);
    ChildProcess::spawn(command).unwrap()
}

/// The scratch dir and the etcd and kube-apiserver pids of a helper's control plane.
async fn helper_control_plane(owner: &ChildProcess) -> (PathBuf, u32, u32) {
    // Generous: the helper builds nothing (the cache is warm) but starts a
    // second control plane next to this binary's own.
    let apiserver: u32 = wait_until("the helper's control plane", 180 * SECOND, || async {
        reported(owner, "APISERVER_PID=")
    })
    .await
    .parse()
    .unwrap();
    let line = |key| reported(owner, key).unwrap().unwrap();
    let etcd: u32 = line("ETCD_PID=").parse().unwrap();
    let dir = PathBuf::from(line("CP_DIR="));
    (dir, etcd, apiserver)
}

/// The value of the first `KEY=value` line the helper printed, or why not yet.
fn reported(owner: &ChildProcess, key: &str) -> Result<Option<String>, String> {
    let log = owner.read_log();
    if let Some(value) = log.lines().find_map(|l| l.strip_prefix(key)) {
        return Ok(Some(value.trim().to_owned()));
    }
    if log.contains("panicked") {
        return Err(format!("helper failed:\n{log}"));
    }
    Ok(None)
}

fn sleep_command() -> Command {
    let mut command = Command::new("sleep");
    command.arg("600");
    command
}

/// Whether `pid` is a live process (a zombie awaiting its reaper counts as dead).
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => match stat.rsplit_once(')') {
            Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

fn minor_release() -> String {
    let version = pinned_kubernetes_version();
    let mut parts = version.splitn(3, '.');
    format!("{}.{}", parts.next().unwrap(), parts.next().unwrap())
}

/// `cp.user` makes someone the API server authenticates as themselves (user name and groups
/// from the certificate, no impersonation), through its client and its kubectl alike, with no
/// rights beyond `system:authenticated`; the same name gives the same identity.
#[tokio::test]
async fn identities_are_authenticated_as_themselves() {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    use kube::api::PostParams;

    let cp = ControlPlane::shared().await;
    let name = "erin@fabrikam.example";
    let groups = ["team-a", "ops/identity+approvers"];
    let erin = cp.user(name, &groups);
    assert_eq!(erin.name, name);

    let client = erin.client().await;
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let user = review.status.and_then(|s| s.user_info).expect("userInfo");
    assert_eq!(user.username.as_deref(), Some(name));
    let mut expected: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    expected.push("system:authenticated".to_owned());
    assert_eq!(user.groups, Some(expected));

    let out = erin
        .kubectl()
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), name);

    let listed = Api::<Namespace>::all(client)
        .list(&Default::default())
        .await;
    assert!(
        matches!(&listed, Err(kube::Error::Api(s)) if s.code == 403),
        "a new identity holds no rights: {listed:?}"
    );

    assert_eq!(cp.user(name, &groups).kubeconfig, erin.kubeconfig);
    let other_groups = std::panic::catch_unwind(|| cp.user(name, &["team-a"]));
    assert!(other_groups.is_err(), "the same name with other groups");
}
