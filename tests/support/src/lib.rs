//! Test harness for guestreset's end-to-end tests.
//!
//! * [`ControlPlane::shared`] starts one real etcd + kube-apiserver per test
//!   binary (through `scripts/controlplane.sh`) and hands out clients, `kubectl`
//!   and fresh namespaces.
//! * [`wait_until`] is the one waiting primitive: poll a condition with a deadline.
//! * [`ChildProcess`] runs a program (the operator, a simulator) with its output
//!   in a log file, and makes sure it dies with the test process.
//! * [`describe`] and [`path_str`]: small helpers for messages about commands.
//! * [`ControlPlane::user`] makes test identities ([`Identity`]): users with client
//!   certificates signed by the control plane's CA, each with a client and a `kubectl`.
//! * [`chart`]: Helm (built by `scripts/helm.sh`), the chart rendered with it, and the
//!   example RBAC of `examples/rbac/`.
//! * [`run_bounded`]: a command with a deadline, for tools that could hang.
//! * [`gitops`]: kstatus's verdict and an Argo CD health script over live objects.
//! * `operator` (feature `operator`): the world of an end-to-end test, a namespace,
//!   the Graph simulator and `guestreset run` processes.
//!
//! Every process started here is spawned from one long-lived thread with
//! `PR_SET_PDEATHSIG`, so it is signalled when the test process ends for any
//! reason: a panic, a normal exit, or SIGKILL. (The kernel sends that signal when
//! the *thread* that forked exits, which is why it must be a thread that lives as
//! long as the process.)

use std::ffi::c_int;
use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub mod chart;
pub mod gitops;
mod identity;
#[cfg(feature = "operator")]
pub mod operator;
pub mod pod;
pub mod proxy;

pub use identity::Identity;

/// How long `controlplane.sh run` may take to print READY once the binaries
/// are built (the build itself has no deadline: cold, it takes minutes).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often [`wait_until`] polls.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long a SIGTERMed process may take before it is SIGKILLed.
const TERMINATE_GRACE: Duration = Duration::from_secs(30);
/// Set to keep the per-process scratch directory (control-plane data and logs,
/// child logs) after the test binary exits.
const KEEP_DIRS_ENV: &str = "GUESTRESET_KEEP_TEST_DIRS";

/// The repository root (two levels above this crate's manifest).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .expect("tests/support sits two levels below the repository root")
        .to_path_buf()
}

/// The `.yaml` files directly in `dir` (relative to the repository root), in name order.
pub fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let dir = repo_root().join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The `k8s.io/kubernetes` release pinned in `scripts/controlplane/go.mod`,
/// e.g. `v1.34.10`: the version the control plane's binaries report.
pub fn pinned_kubernetes_version() -> String {
    let go_mod = repo_root().join("scripts/controlplane/go.mod");
    let text =
        fs::read_to_string(&go_mod).unwrap_or_else(|e| panic!("read {}: {e}", go_mod.display()));
    text.lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("k8s.io/kubernetes"))
                .then(|| words.next())
                .flatten()
                .filter(|v| v.starts_with('v'))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no k8s.io/kubernetes requirement in {}", go_mod.display()))
}

// ------------------------------------------------------------------ spawning

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// Spawns `command` from the process-lifetime keeper thread, with `signal` as
/// its parent-death signal.
fn spawn_owned(mut command: Command, signal: c_int) -> io::Result<Child> {
    static KEEPER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testsupport-process-keeper".into())
            .spawn(move || {
                // The sender lives in a static, so this loop (and the thread)
                // lasts until the process exits.
                for mut request in rx {
                    let _ = request.reply.send(request.command.spawn());
                }
            })
            .expect("spawn the process keeper thread");
        tx
    });

    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure only calls async-signal-safe functions (prctl,
    // getppid) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
    let (reply, response) = mpsc::channel();
    keeper
        .send(SpawnRequest { command, reply })
        .map_err(|_| io::Error::other("process keeper thread is gone"))?;
    response
        .recv()
        .map_err(|_| io::Error::other("process keeper thread is gone"))?
}

/// This process's scratch directory: `$TMPDIR/guestreset-tests/<pid>`.
/// Removed at exit (unless `GUESTRESET_KEEP_TEST_DIRS` is set); directories of
/// processes that died without exiting are removed by the next test process.
fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::env::temp_dir().join("guestreset-tests");
        sweep_stale(&root);
        let dir = root.join(std::process::id().to_string());
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("create scratch dir {}: {e}", dir.display()));
        register_exit_cleanup();
        dir
    })
}

fn sweep_stale(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn unique_suffix() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

// ------------------------------------------------------------ child process

/// A process owned by the test: output goes to a log file, it is SIGKILLed
/// on drop, and it gets SIGKILL from the kernel if the test process dies.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    log_path: PathBuf,
    status: Option<ExitStatus>,
}

impl ChildProcess {
    /// Spawns `command` with stdin closed and stdout and stderr appended to a
    /// fresh log file in the scratch directory.
    pub fn spawn(command: Command) -> io::Result<ChildProcess> {
        let program = Path::new(command.get_program())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "child".into());
        let log_path = scratch_dir().join(format!("{program}-{}.log", unique_suffix()));
        Self::spawn_with_log(command, log_path)
    }

    /// Like [`ChildProcess::spawn`], with the log at `log_path` (appended to).
    pub fn spawn_with_log(
        mut command: Command,
        log_path: impl Into<PathBuf>,
    ) -> io::Result<ChildProcess> {
        let log_path = log_path.into();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn_owned(command, libc::SIGKILL)?;
        Ok(ChildProcess {
            child,
            log_path,
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process has written so far (lossy UTF-8).
    pub fn read_log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The exit status if the process has exited, without blocking.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for killed child");
        self.status = Some(status);
        status
    }

    /// SIGTERM, then wait for the exit; SIGKILL if it takes longer than 30 s.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }
        // SAFETY: plain kill(2) on our own, not yet reaped, child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + TERMINATE_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

// ------------------------------------------------------------ control plane

/// A real kube-apiserver backed by etcd, on loopback, started once per test
/// binary. No kube-controller-manager runs: namespaces are never finalized,
/// service accounts get no tokens; the API, admission and RBAC are real.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    bin_dir: PathBuf,
    identities: identity::Identities,
}

/// Set when the control plane failed to start, so its logs outlive the process.
static KEEP_SCRATCH: AtomicBool = AtomicBool::new(false);
static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
/// The `controlplane.sh run` process, stopped by the exit handler.
static RUNNER: Mutex<Option<Child>> = Mutex::new(None);

impl ControlPlane {
    /// The control plane of this test binary, started by the first caller.
    /// Panics (in every caller) if it cannot be started.
    pub async fn shared() -> &'static ControlPlane {
        if let Some(started) = SHARED.get() {
            return Self::unwrap_started(started);
        }
        tokio::task::spawn_blocking(Self::shared_blocking)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// [`ControlPlane::shared`] for code outside an async runtime.
    pub fn shared_blocking() -> &'static ControlPlane {
        Self::unwrap_started(SHARED.get_or_init(Self::start))
    }

    fn unwrap_started(started: &'static Result<ControlPlane, String>) -> &'static ControlPlane {
        match started {
            Ok(cp) => cp,
            Err(e) => panic!("control plane unavailable: {e}"),
        }
    }

    fn start() -> Result<ControlPlane, String> {
        let script = repo_root().join("scripts/controlplane.sh");
        let dir = scratch_dir().join("controlplane");

        let mut build = Command::new("bash");
        build
            .arg(&script)
            .arg("build")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Inherited: a cold build takes minutes and says what it is doing.
            .stderr(Stdio::inherit());
        let output = spawn_owned(build, libc::SIGTERM)
            .and_then(Child::wait_with_output)
            .map_err(|e| format!("run {} build: {e}", script.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{} build failed: {}",
                script.display(),
                output.status
            ));
        }
        let bin_dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());

        let log_path = scratch_dir().join("controlplane.log");
        let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let mut run = Command::new("bash");
        run.arg(&script)
            .arg("run")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = spawn_owned(run, libc::SIGTERM)
            .map_err(|e| format!("run {} run: {e}", script.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        *RUNNER.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);

        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let failure = |what: &str| {
            stop_runner();
            // Keep the logs for whoever reads this message.
            KEEP_SCRATCH.store(true, Ordering::Relaxed);
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!(
                "{what}; control plane files in {}; last lines of {}:\n{}",
                dir.display(),
                log_path.display(),
                tail.join("\n")
            )
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let ready = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.starts_with("READY ") => break line,
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(failure(&format!("no READY within {READY_TIMEOUT:?}")));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(failure("controlplane.sh run exited before READY"));
                }
            }
        };
        let field = |key: &str| {
            ready
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .map(str::to_owned)
                .ok_or_else(|| format!("malformed READY line {ready:?}"))
        };
        Ok(ControlPlane {
            kubeconfig: PathBuf::from(field("kubeconfig=")?),
            server: field("server=")?,
            dir,
            bin_dir,
            identities: identity::Identities::default(),
        })
    }

    /// Admin kubeconfig (client certificate in `system:masters`, embedded CA).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// A copy of the admin kubeconfig, written to `path`, that reaches the API server through
    /// `proxy` (a [`proxy::TcpProxy`] in front of [`ControlPlane::server_url`]).
    pub fn kubeconfig_via(&self, proxy: &proxy::TcpProxy, path: &Path) -> PathBuf {
        let original = fs::read_to_string(&self.kubeconfig).unwrap();
        let servers = original.matches(self.server.as_str()).count();
        assert_eq!(servers, 1, "one server in {}", self.kubeconfig.display());
        fs::write(path, original.replace(self.server.as_str(), &proxy.url())).unwrap();
        path.to_owned()
    }

    /// The API server's address, for a proxy in front of it.
    pub fn server_addr(&self) -> std::net::SocketAddr {
        let authority = self.server.trim_start_matches("https://");
        authority
            .parse()
            .expect("the API server listens on an IP address")
    }

    /// Directory holding `etcd`, `kube-apiserver` and `kubectl`.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Directory with the control plane's certificates, etcd data and logs
    /// (`etcd.log`, `kube-apiserver.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin client configuration, read from this control plane's
    /// kubeconfig only (never from the environment's KUBECONFIG or proxies).
    pub async fn config(&self) -> kube::Config {
        config_from(&self.kubeconfig).await
    }

    /// A new admin client. Each call builds its own, so a client never
    /// outlives the runtime of the test that made it.
    pub async fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config().await).expect("build kube client")
    }

    /// A client that impersonates `user` (and `groups`), for permission checks.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> kube::Client {
        let mut config = self.config().await;
        config.auth_info.impersonate = Some(user.to_owned());
        if !groups.is_empty() {
            config.auth_info.impersonate_groups =
                Some(groups.iter().map(|g| (*g).to_owned()).collect());
        }
        kube::Client::try_from(config).expect("build impersonating kube client")
    }

    /// `kubectl` of the same release as the server, with `KUBECONFIG` set.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(self.bin_dir.join("kubectl"));
        command.env("KUBECONFIG", &self.kubeconfig);
        command
    }

    /// Applies the repository's CRDs (server-side, so repeating it is harmless) and waits until
    /// the API server has established them.
    pub fn install_guestreset_crd(&self) -> Result<(), String> {
        let kubectl = |args: &[&str]| {
            let out = self
                .kubectl()
                .args(args)
                .output()
                .map_err(|e| format!("kubectl {}: {e}", args.join(" ")))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "kubectl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        for name in [
            "guestredemptionresets.guestreset.io",
            "guestdomainmigrations.guestreset.io",
        ] {
            let crd = repo_root().join(format!("crds/{name}.yaml"));
            kubectl(&["apply", "--server-side", "-f", &crd.to_string_lossy()])?;
            kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &format!("crd/{name}"),
            ])?;
        }
        Ok(())
    }

    /// Creates a fresh namespace named `<prefix>-<random>` and returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        let mut prefix: String = prefix
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_alphanumeric() { c } else { '-' }
            })
            .collect();
        prefix.truncate(40);
        let prefix = prefix.trim_matches('-');
        let prefix = if prefix.is_empty() { "test" } else { prefix };
        let namespace = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let created = Api::<Namespace>::all(self.client().await)
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("create namespace {prefix}-*: {e}"));
        created.metadata.name.expect("created namespace has a name")
    }
}

/// The client configuration of the kubeconfig at `path` only (never the environment's
/// KUBECONFIG or proxies).
async fn config_from(path: &Path) -> kube::Config {
    let kubeconfig =
        Kubeconfig::read_from(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("load {}: {e}", path.display()));
    config.proxy_url = None;
    config
}

/// SIGTERM to `controlplane.sh run`, whose trap stops etcd and kube-apiserver,
/// and a bounded wait for it to finish.
fn stop_runner() {
    // try_lock: this also runs at exit, where blocking on a lock could hang.
    let Ok(mut runner) = RUNNER.try_lock() else {
        return;
    };
    if let Some(mut child) = runner.take() {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + TERMINATE_GRACE;
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Registered once: at a normal exit of the test binary (including libtest's
/// exit after failures), stop the control plane and remove the scratch dir.
fn register_exit_cleanup() {
    extern "C" fn cleanup() {
        stop_runner();
        if std::env::var_os(KEEP_DIRS_ENV).is_none() && !KEEP_SCRATCH.load(Ordering::Relaxed) {
            let dir = std::env::temp_dir()
                .join("guestreset-tests")
                .join(std::process::id().to_string());
            let _ = fs::remove_dir_all(dir);
        }
    }
    // SAFETY: registering a plain extern "C" function that does not unwind.
    unsafe {
        libc::atexit(cleanup);
    }
}

// ------------------------------------------------------------------ waiting

/// What one poll of [`wait_until`] found.
pub trait Attempt {
    type Output;
    /// `Ok(value)` when done, `Err(state)` when not yet (with what was seen).
    fn check(self) -> Result<Self::Output, Option<String>>;
}

impl<T> Attempt for Option<T> {
    type Output = T;
    fn check(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

/// `Ok(None)` and `Err(_)` both mean "not yet"; the error text is reported if
/// the deadline passes, so an `Err` is also the way to describe a wrong state.
impl<T, E: Display> Attempt for Result<Option<T>, E> {
    type Output = T;
    fn check(self) -> Result<T, Option<String>> {
        match self {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(None),
            Err(e) => Err(Some(e.to_string())),
        }
    }
}

/// Calls `f` every 200 ms until it yields a value, and returns that value.
/// Panics naming `what` and the last observed state once `timeout` has passed
/// (also when one call of `f` is still running at the deadline).
pub async fn wait_until<F, Fut>(
    what: &str,
    timeout: Duration,
    mut f: F,
) -> <Fut::Output as Attempt>::Output
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Attempt,
{
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: Option<String> = None;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match tokio::time::timeout_at(deadline, f()).await {
            Ok(outcome) => match outcome.check() {
                Ok(value) => return value,
                Err(state) => last = state.or(last),
            },
            Err(_) => {
                last = Some(format!(
                    "(attempt {attempts} still running at the deadline) {}",
                    last.as_deref().unwrap_or("")
                ))
            }
        }
        let next = tokio::time::Instant::now() + POLL_INTERVAL;
        if next >= deadline {
            panic!(
                "timed out after {:?} ({attempts} attempts) waiting for {what}; last observed: {}",
                start.elapsed(),
                last.as_deref().unwrap_or("nothing (condition never held)")
            );
        }
        tokio::time::sleep_until(next).await;
    }
}

// ------------------------------------------------------------------ tools

/// Runs `scripts/NAME.sh build`, which builds a tool from the Go module proxy into the cache
/// (or finds it there) and prints its path.
pub fn build_tool(name: &str) -> Result<PathBuf, String> {
    let script = repo_root().join(format!("scripts/{name}.sh"));
    let out = Command::new("bash")
        .arg(&script)
        .arg("build")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {}: {e}", script.display()))?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !bin.is_file() {
        return Err(format!(
            "{} build failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(bin)
}

/// The tool, or a panic with the reason its build failed (every test that needs it fails;
/// none is skipped).
pub fn tool_or_panic(built: &Result<PathBuf, String>) -> &Path {
    match built {
        Ok(bin) => bin,
        Err(e) => panic!("a tool the test needs is unavailable: {e}"),
    }
}

/// promtool, built by `scripts/promtool.sh` on first use.
pub fn promtool() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    tool_or_panic(BIN.get_or_init(|| build_tool("promtool")))
}

// ------------------------------------------------------------------ messages

/// A finished command for a failure message: exit status, stdout and stderr.
pub fn describe(out: &Output) -> String {
    format!(
        "{}; stdout: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// Runs `command` to completion with stdout and stderr captured and `stdin` (if any) fed to it,
/// and panics naming `what` if that takes longer than `deadline`: a hung tool fails the test
/// instead of stalling it. Make the command with `kill_on_drop(true)` so that it dies then.
pub async fn run_bounded(
    mut command: tokio::process::Command,
    stdin: Option<&str>,
    what: &str,
    deadline: Duration,
) -> Output {
    use tokio::io::AsyncWriteExt;
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = async {
        let mut child = command.spawn()?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            pipe.write_all(input.as_bytes()).await?;
            drop(pipe);
        }
        child.wait_with_output().await
    };
    match tokio::time::timeout(deadline, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("run {what}: {e}"),
        Err(_) => panic!("{what} did not finish within {deadline:?}"),
    }
}

/// A path as a command argument; the repository's and the scratch paths are UTF-8.
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("paths are UTF-8")
}
