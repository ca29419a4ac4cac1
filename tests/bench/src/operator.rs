//! `guestreset run` as a child process: started like the end-to-end tests start it, watched
//! for readiness, memory and CPU, scraped for metrics.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use graph_sim::Simulator;
use guestreset_testsupport::ChildProcess;
use guestreset_testsupport::operator::guestreset_command;

use crate::machine::{Memory, settle};

/// The log line kube-runtime's controller writes (at debug level) once its watch cache has
/// synced: the same moment `/readyz` turns ready.
const STORE_READY_LINE: &str = "store is ready, starting runner";
const READY_POLL: Duration = Duration::from_millis(10);

/// What the binary offers, found out once from `guestreset run --help`.
#[derive(Clone, Debug)]
pub struct Binary {
    pub path: PathBuf,
    /// `--metrics-addr` (serving `/readyz`, `/healthz`, `/metrics`) is there.
    pub has_metrics: bool,
}

impl Binary {
    pub fn inspect(path: &Path) -> Result<Binary> {
        let output = Command::new(path)
            .args(["run", "--help"])
            .output()
            .with_context(|| format!("running {} run --help", path.display()))?;
        if !output.status.success() {
            bail!(
                "{} run --help failed: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let help = String::from_utf8_lossy(&output.stdout);
        Ok(Binary {
            path: path.to_owned(),
            has_metrics: help.contains("--metrics-addr"),
        })
    }
}

/// How readiness was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadySignal {
    Readyz,
    StoreReadyLog,
    /// The log line said synced, `/readyz` still did not answer 200 long after.
    StoreReadyLogReadyzLagging,
}

impl ReadySignal {
    pub fn describe(self) -> &'static str {
        match self {
            ReadySignal::Readyz => "/readyz 200",
            ReadySignal::StoreReadyLog => "watch cache synced (log line; no /readyz in this build)",
            ReadySignal::StoreReadyLogReadyzLagging => {
                "watch cache synced (log line): /readyz was NOT 200 20 s later"
            }
        }
    }
}

pub struct Operator {
    child: ChildProcess,
    spawned_at: Instant,
    metrics_addr: Option<SocketAddr>,
    http: reqwest::Client,
}

/// Everything `guestreset run` needs; the command line and environment are the end-to-end
/// tests' own (`guestreset_testsupport::operator::guestreset_command`).
pub struct Launch<'a> {
    pub binary: &'a Binary,
    pub kubeconfig: &'a Path,
    pub namespace: &'a str,
    pub sim: &'a Simulator,
    pub extra_args: Vec<String>,
    pub log_path: PathBuf,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Operator {
    pub fn start(launch: Launch<'_>) -> Result<Operator> {
        let metrics_addr = if launch.binary.has_metrics {
            Some(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
        } else {
            None
        };
        let mut cmd = guestreset_command(
            &launch.binary.path,
            launch.kubeconfig,
            launch.namespace,
            launch.sim,
        );
        cmd.args(&launch.extra_args)
            // kube-runtime says at debug level when its cache has synced: the readiness signal
            // of builds without /readyz. Nothing else of it is per-resource.
            .env("RUST_LOG", "info,kube_runtime::controller=debug");
        if let Some(addr) = metrics_addr {
            cmd.args(["--metrics-addr", &addr.to_string()]);
        }
        let spawned_at = Instant::now();
        let child = ChildProcess::spawn_with_log(cmd, &launch.log_path)
            .with_context(|| format!("starting {}", launch.binary.path.display()))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Operator {
            child,
            spawned_at,
            metrics_addr,
            http,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn log_path(&self) -> &Path {
        self.child.log_path()
    }

    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait() {
            let log = self.child.read_log();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "guestreset exited ({status}); log {}:\n{}",
                self.log_path().display(),
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// Waits until the operator says it is ready; returns the time since it was spawned.
    /// With `/metrics` in the build, that is `/readyz` answering 200; the watch-synced log line
    /// is only the fallback of builds without it, or of a `/readyz` that never turns ready.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(Duration, ReadySignal)> {
        /// How long `/readyz` may lag the watch-synced log line before the line is used.
        const READYZ_GRACE: Duration = Duration::from_secs(20);
        let deadline = Instant::now() + timeout;
        let mut synced: Option<Duration> = None;
        let mut last_error = String::new();
        loop {
            self.check_running()?;
            if synced.is_none() && self.child.read_log().contains(STORE_READY_LINE) {
                synced = Some(self.spawned_at.elapsed());
            }
            match (self.metrics_addr, synced) {
                (Some(addr), _) => {
                    match self
                        .http
                        .get(format!("http://{addr}/readyz"))
                        .timeout(Duration::from_secs(1))
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => {
                            return Ok((self.spawned_at.elapsed(), ReadySignal::Readyz));
                        }
                        Ok(r) => last_error = format!("/readyz answered {}", r.status()),
                        Err(e) => last_error = format!("/readyz: {e:#}"),
                    }
                    if let Some(at) = synced
                        && self.spawned_at.elapsed() > at + READYZ_GRACE
                    {
                        return Ok((at, ReadySignal::StoreReadyLogReadyzLagging));
                    }
                }
                (None, Some(at)) => return Ok((at, ReadySignal::StoreReadyLog)),
                (None, None) => {}
            }
            if Instant::now() >= deadline {
                bail!(
                    "guestreset not ready within {timeout:?} ({last_error}); log {}",
                    self.log_path().display()
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Polls until resident memory and CPU time have stopped moving (the initial reconcile of
    /// every resource is over); see [`crate::machine::settle`].
    pub async fn settle(&mut self, timeout: Duration) -> Result<(Memory, Duration)> {
        let pid = self.pid();
        let child = &mut self.child;
        settle(pid, timeout, || child.is_running()).await
    }

    /// The counters and gauges of `/metrics`, if the build serves it.
    pub async fn metrics(&self) -> Option<Metrics> {
        let addr = self.metrics_addr?;
        let text = self
            .http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(Metrics::parse(&text))
    }

    /// SIGTERM, then SIGKILL after the harness's grace period.
    pub fn stop(&mut self) {
        self.child.terminate();
    }

    /// Lines of the log that carry `needle`.
    pub fn count_log_lines(&self, needle: &str) -> usize {
        self.child
            .read_log()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// Prometheus text exposition, reduced to `series -> value` (histogram buckets left out).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub series: BTreeMap<String, f64>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                // The value follows the last space outside the label set.
                let split = match l.rfind('}') {
                    Some(close) => close + 1,
                    None => l.find(' ')?,
                };
                let (name, rest) = l.split_at(split);
                let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
                Some((name.trim().to_owned(), value))
            })
            .filter(|(name, _)| !name.contains("_bucket"))
            .collect();
        Metrics { series }
    }

    /// Series that moved between `before` and `self`, with the change.
    pub fn delta(&self, before: &Metrics) -> Vec<(String, f64)> {
        self.series
            .iter()
            .filter_map(|(name, after)| {
                let change = after - before.series.get(name).copied().unwrap_or(0.0);
                (change != 0.0).then(|| (name.clone(), change))
            })
            .collect()
    }
}

/// A histogram's change over a phase: how many observations, and their total.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramChange {
    /// The series without `_sum`/`_count`, labels kept, e.g. `x_seconds{call="GET"}`.
    pub series: String,
    pub count: f64,
    pub sum: f64,
}

impl HistogramChange {
    pub fn mean(&self) -> f64 {
        if self.count == 0.0 {
            0.0
        } else {
            self.sum / self.count
        }
    }
}

impl Metrics {
    /// Every histogram (a `_sum` with its `_count`) that moved since `before`.
    pub fn histogram_changes(&self, before: &Metrics) -> Vec<HistogramChange> {
        let get = |m: &Metrics, key: &str| m.series.get(key).copied().unwrap_or(0.0);
        self.series
            .keys()
            .filter_map(|key| {
                let (name, labels) = match key.find('{') {
                    Some(i) => key.split_at(i),
                    None => (key.as_str(), ""),
                };
                let base = name.strip_suffix("_sum")?;
                let count_key = format!("{base}_count{labels}");
                let count = get(self, &count_key) - get(before, &count_key);
                let sum = get(self, key) - get(before, key);
                (count > 0.0).then(|| HistogramChange {
                    series: format!("{base}{labels}"),
                    count,
                    sum,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_changes_pair_sum_and_count() {
        let before = Metrics::parse("h_sum{c=\"a\"} 1\nh_count{c=\"a\"} 2\n");
        let after = Metrics::parse("h_sum{c=\"a\"} 4\nh_count{c=\"a\"} 5\nk_sum 0\nk_count 0\n");
        let changes = after.histogram_changes(&before);
        assert_eq!(
            changes,
            vec![HistogramChange {
                series: "h{c=\"a\"}".into(),
                count: 3.0,
                sum: 3.0
            }]
        );
        assert_eq!(changes[0].mean(), 1.0);
    }

    #[test]
    fn exposition_is_parsed_without_buckets() {
        let text = "# HELP x y\n# TYPE a counter\na_total 3\nb{k=\"v w\"} 1.5\nh_bucket{le=\"1\"} 2\nh_sum 0.25\n";
        let m = Metrics::parse(text);
        assert_eq!(m.series.get("a_total"), Some(&3.0));
        assert_eq!(m.series.get("b{k=\"v w\"}"), Some(&1.5));
        assert_eq!(m.series.get("h_sum"), Some(&0.25));
        assert!(!m.series.keys().any(|k| k.contains("bucket")));
    }

    #[test]
    fn delta_lists_only_what_moved() {
        let before = Metrics::parse("a 1\nb 2\n");
        let after = Metrics::parse("a 1\nb 5\nc 1\n");
        assert_eq!(
            after.delta(&before),
            vec![("b".to_owned(), 3.0), ("c".to_owned(), 1.0)]
        );
    }
}
