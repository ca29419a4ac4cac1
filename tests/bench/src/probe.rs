//! The store probe: a process that holds what the controller's cache holds, a reflector of
//! typed `GuestRedemptionReset`s watched as the controller watches them, with or without
//! `metadata.managedFields`, so that the memory of the cache and of that one field are known.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;
use guestreset::resource::GuestRedemptionReset;
use guestreset_testsupport::ChildProcess;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};

use crate::machine::{Memory, settle};

const SYNCED: &str = "STORE SYNCED";

/// Runs in the child: caches the namespace's resources and idles until killed.
pub async fn run(namespace: &str, strip_managed_fields: bool) -> Result<()> {
    let client = kube::Client::try_default().await?;
    let api: Api<GuestRedemptionReset> = Api::namespaced(client, namespace);
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(move |object| {
            if strip_managed_fields {
                object.managed_fields_mut().clear();
            }
        });
    tokio::spawn(reflector(writer, stream).for_each(|_| futures::future::ready(())));
    reader.wait_until_ready().await?;
    println!("{SYNCED} {}", reader.state().len());
    std::future::pending::<()>().await;
    Ok(())
}

/// Starts a probe over `namespace` and returns its memory once it has cached everything.
pub async fn measure(
    bench: &Path,
    kubeconfig: &Path,
    namespace: &str,
    strip_managed_fields: bool,
    log: &Path,
) -> Result<Memory> {
    let mut cmd = Command::new(bench);
    cmd.args(["store-probe", namespace])
        .env("KUBECONFIG", kubeconfig)
        .env("NO_PROXY", "127.0.0.1,localhost");
    if strip_managed_fields {
        cmd.arg("--strip-managed-fields");
    }
    let mut child = ChildProcess::spawn_with_log(cmd, log)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !child.read_log().contains(SYNCED) {
        if !child.is_running() || Instant::now() >= deadline {
            bail!("the store probe did not sync; log {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.pid();
    let (memory, _) = settle(pid, Duration::from_secs(60), || child.is_running()).await?;
    child.kill();
    Ok(memory)
}
