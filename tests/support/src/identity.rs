//! Test identities: people and programs that talk to the control plane as themselves, with a
//! client certificate signed by the control plane's CA, rather than as the admin or through
//! impersonation. The API server authenticates them exactly as it would a real user (user name
//! from the certificate's CN, groups from its O entries), so admission sees the same `userInfo`
//! and the authorizer the same subject as in a cluster.
//!
//! ```no_run
//! # async fn example() {
//! use guestreset_testsupport::ControlPlane;
//! let cp = ControlPlane::shared().await;
//! let bob = cp.user("bob", &["guestreset-approvers"]);
//! let client = bob.client().await; // kube::Client authenticated as bob
//! let status = bob.kubectl().args(["auth", "whoami"]).status().unwrap();
//! # }
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::{ControlPlane, describe, path_str, unique_suffix};

/// Validity of the certificates: they outlive any test run.
const CERTIFICATE_DAYS: &str = "3650";

/// A user of the control plane with a client certificate (made by [`ControlPlane::user`]).
#[derive(Clone, Debug)]
pub struct Identity {
    /// The user name the API server authenticates (the certificate's CN).
    pub name: String,
    /// The groups the API server adds (the certificate's O entries); it also adds
    /// `system:authenticated`.
    pub groups: Vec<String>,
    /// A kubeconfig for this identity alone: this control plane, its CA, the certificate.
    pub kubeconfig: PathBuf,
    kubectl: PathBuf,
}

impl Identity {
    /// A new client authenticated as this identity. Each call builds its own, so a client never
    /// outlives the runtime of the test that made it.
    pub async fn client(&self) -> kube::Client {
        kube::Client::try_from(crate::config_from(&self.kubeconfig).await)
            .unwrap_or_else(|e| panic!("build a kube client for {}: {e}", self.name))
    }

    /// `kubectl` of the same release as the server, with `KUBECONFIG` set to this identity's.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(&self.kubectl);
        command.env("KUBECONFIG", &self.kubeconfig);
        command
    }
}

/// The identities made so far, by user name.
#[derive(Debug, Default)]
pub(crate) struct Identities(Mutex<BTreeMap<String, Identity>>);

impl ControlPlane {
    /// The identity `name` with `groups`: on the first call for `name`, a P-256 key and a client
    /// certificate (CN = `name`, one O per group) signed by this control plane's CA with the
    /// openssl command line, as `scripts/controlplane.sh` makes the admin's, and a kubeconfig;
    /// later calls return the same identity. Blocks for the openssl runs (tens of milliseconds).
    ///
    /// Panics when `name` was made before with other groups (a certificate cannot change its
    /// groups), when `name` or a group is empty or holds a control character, or when openssl
    /// fails.
    pub fn user(&self, name: &str, groups: &[&str]) -> Identity {
        let mut made = self.identities.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(identity) = made.get(name) {
            assert!(
                identity.groups.iter().eq(groups.iter()),
                "identity {name} exists with groups {:?}, asked for {groups:?}",
                identity.groups
            );
            return identity.clone();
        }
        for part in std::iter::once(&name).chain(groups) {
            assert!(
                !part.is_empty() && !part.chars().any(char::is_control),
                "not a usable user or group name: {part:?}"
            );
        }
        let dir =
            self.dir
                .join("users")
                .join(format!("{}-{}", file_name_part(name), unique_suffix()));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        issue_certificate(&self.dir.join("pki"), &dir, name, groups);
        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &self.server,
            &self.dir.join("pki/ca.crt"),
            &dir,
        );
        let identity = Identity {
            name: name.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            kubeconfig,
            kubectl: self.bin_dir.join("kubectl"),
        };
        made.insert(name.to_owned(), identity.clone());
        identity
    }
}

/// `name` reduced to characters that are safe in a file name (the directory also carries a
/// counter, so two names that reduce alike do not collide).
fn file_name_part(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect()
}

/// `client.key` and `client.crt` in `dir`: a client-authentication certificate for `name` and
/// `groups`, signed by the CA in `pki`.
fn issue_certificate(pki: &Path, dir: &Path, name: &str, groups: &[&str]) {
    // openssl's -subj syntax: /type=value, with \ escaping the separators.
    let escape = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('/', "\\/")
            .replace('+', "\\+")
    };
    let subject: String = groups
        .iter()
        .map(|g| format!("/O={}", escape(g)))
        .chain(std::iter::once(format!("/CN={}", escape(name))))
        .collect();
    fs::write(
        dir.join("client.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .expect("write the certificate extensions");
    // A serial of our own: no shared serial file next to the CA.
    let serial = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
        + u128::from(unique_suffix());
    let serial = format!("0x{serial:x}");
    let ca_crt = pki.join("ca.crt");
    let ca_key = pki.join("ca.key");
    let steps: [&[&str]; 3] = [
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "client.key",
        ],
        &[
            "req",
            "-new",
            "-utf8",
            "-key",
            "client.key",
            "-subj",
            &subject,
            "-out",
            "client.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            path_str(&ca_crt),
            "-CAkey",
            path_str(&ca_key),
            "-set_serial",
            &serial,
            "-days",
            CERTIFICATE_DAYS,
            "-extfile",
            "client.ext",
            "-out",
            "client.crt",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run openssl {}: {e}", args[0]));
        assert!(
            out.status.success(),
            "openssl {} for {name}: {}",
            args[0],
            describe(&out)
        );
    }
    let _ = fs::remove_file(dir.join("client.csr"));
}

/// A kubeconfig (JSON, which is YAML) naming the certificate and the CA by path.
fn write_kubeconfig(path: &Path, server: &str, ca: &Path, dir: &Path) {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "guestreset-test",
            "cluster": {"server": server, "certificate-authority": ca},
        }],
        "users": [{
            "name": "identity",
            "user": {
                "client-certificate": dir.join("client.crt"),
                "client-key": dir.join("client.key"),
            },
        }],
        "contexts": [{
            "name": "guestreset-test",
            "context": {"cluster": "guestreset-test", "user": "identity", "namespace": "default"},
        }],
        "current-context": "guestreset-test",
    });
    fs::write(path, config.to_string()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
