//! The benchmarks. Each one adds its rows to the table; an error ends only that bench.

#[path = "b6.rs"]
mod b6;
#[path = "b7.rs"]
mod b7;
#[path = "b8.rs"]
mod b8;
pub use b6::b6;
pub use b7::b7;
pub use b8::b8;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use graph_sim::{Call, JournalEntry, SeedUser, SimConfig, Simulator};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};

use crate::apiserver;
use crate::floor;
use crate::machine::{CpuMeter, Memory, Processes, mib};
use crate::operator::{Binary, Launch, Metrics, Operator};
use crate::status;
use crate::table::Table;
use crate::world::{self, Cluster, Tracker, calls_by_kind, count_of, describe_counts};

/// Graph latency of the simulator in B1, B4 and B5.
const GRAPH_LATENCY: Duration = Duration::from_millis(20);
/// Creations in flight when a burst of resources is created.
const CREATE_IN_FLIGHT: usize = 32;
/// Issuances in flight in the floor: the controller's default `--concurrency`.
const FLOOR_CONCURRENCY: usize = 16;
/// The write limit "out of the way".
const NO_LIMIT: [&str; 4] = [
    "--max-writes-per-minute",
    "1000000",
    "--write-burst",
    "100000",
];
const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Ctx {
    pub cluster: Cluster,
    pub binary: Binary,
    pub out: PathBuf,
    pub processes: Processes,
}

impl Ctx {
    async fn simulator(&self, label: &str, users: Vec<SeedUser>) -> Result<Simulator> {
        let sim = graph_sim::start(
            SimConfig::new(self.out.join(format!("sim-{label}"))).with_users(users),
        )
        .await?;
        sim.admin().set_latency(GRAPH_LATENCY).await?;
        Ok(sim)
    }

    fn operator(
        &self,
        label: &str,
        namespace: &str,
        sim: &Simulator,
        extra: &[&str],
    ) -> Result<Operator> {
        Operator::start(Launch {
            binary: &self.binary,
            kubeconfig: self.cluster.cp.kubeconfig_path(),
            namespace,
            sim,
            extra_args: extra.iter().map(|s| (*s).to_owned()).collect(),
            log_path: self.out.join(format!("guestreset-{label}.log")),
        })
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn graph_calls(journal: &[JournalEntry]) -> usize {
    journal.iter().filter(|e| e.call != Call::Token).count()
}

/// Counters of `/metrics` that moved, or why there are none.
fn metric_changes(before: &Option<Metrics>, after: &Option<Metrics>) -> String {
    match (before, after) {
        (Some(before), Some(after)) => {
            let moved: Vec<String> = after
                .delta(before)
                .into_iter()
                .filter(|(name, _)| !name.contains("_seconds"))
                .map(|(name, change)| format!("{name} +{change}"))
                .collect();
            if moved.is_empty() {
                "no counter moved".into()
            } else {
                moved.join(", ")
            }
        }
        _ => "no /metrics in this build".into(),
    }
}

/// Passes and Graph latency from the operator's histograms over a phase of `elapsed`.
fn pass_analysis(
    before: &Option<Metrics>,
    after: &Option<Metrics>,
    elapsed: Duration,
) -> Vec<(String, String)> {
    let (Some(before), Some(after)) = (before, after) else {
        return vec![];
    };
    after
        .histogram_changes(before)
        .into_iter()
        .map(|h| {
            let what = h.series.trim_start_matches("guestreset_").to_owned();
            let value = if what.starts_with("reconcile_duration") {
                format!(
                    "{} passes, mean {:.0} ms; on average {:.1} passes in flight",
                    h.count,
                    h.mean() * 1000.0,
                    h.sum / elapsed.as_secs_f64()
                )
            } else {
                format!("{} observations, mean {:.1} ms", h.count, h.mean() * 1000.0)
            };
            (what, value)
        })
        .collect()
}

/// What the operator did for a burst, and how long it took.
struct Burst {
    elapsed: Duration,
    created_in: Duration,
    posts: usize,
    calls: String,
    writes: usize,
    events: String,
    cpu: String,
    metrics: String,
    log_counts: String,
    passes: Vec<(String, String)>,
    phases: world::Phases,
    /// The kube-apiserver's requests during the burst, by verb and resource.
    requests: String,
}

/// Starts an operator over a fresh namespace and simulator, creates `n` resources at once
/// and waits until all are Ready=Issued.
async fn operator_burst(ctx: &Ctx, label: &str, n: usize, extra: &[&str]) -> Result<Burst> {
    let targets = world::targets(label, n, false);
    let sim = ctx.simulator(label, world::seed_users(&targets)).await?;
    let namespace = ctx.cluster.namespace(&format!("bench-{label}")).await;
    let api = ctx.cluster.grr(&namespace);
    let tracker = Tracker::start(api.clone()).await?;
    let mut args: Vec<&str> = NO_LIMIT.to_vec();
    args.extend_from_slice(extra);
    let mut op = ctx.operator(label, &namespace, &sim, &args)?;
    op.wait_ready(READY_TIMEOUT).await?;
    let metrics_before = op.metrics().await;
    let requests_before = apiserver::requests(ctx.cluster.cp).await?;
    let cpu = CpuMeter::start(&ctx.processes.with("guestreset", op.pid()));

    let started = Instant::now();
    let objects = targets
        .iter()
        .map(|t| world::new_resource(&ctx.cluster.resource, t))
        .collect();
    world::create_all(&api, objects, CREATE_IN_FLIGHT).await?;
    let created_in = started.elapsed();
    let last = tracker
        .wait_issued(
            n,
            Duration::from_secs(60) + Duration::from_millis(200) * n as u32,
        )
        .await?;
    let elapsed = last - started;
    let cpu = cpu.stop();
    let requests = apiserver::served(
        &requests_before,
        &apiserver::requests(ctx.cluster.cp).await?,
    );
    let metrics_done = op.metrics().await;
    let phases = tracker.phases(started);

    op.settle(Duration::from_secs(120)).await?;
    world::verify_all_issued(&api, n).await?;
    let metrics_after = op.metrics().await;
    let journal = sim.admin().journal().await?;
    let calls = calls_by_kind(&journal);
    let events = ctx.cluster.events_by_reason(&namespace).await?;
    let log_counts = format!(
        "{} 'intent recorded', {} audit lines 'invitation-issued', {} 'starting over' (a guarded write found a newer object), {} 'reconcile failed'",
        op.count_log_lines("intent recorded"),
        op.count_log_lines("invitation-issued"),
        op.count_log_lines("starting over"),
        op.count_log_lines("reconcile failed"),
    );
    op.stop();
    Ok(Burst {
        elapsed,
        created_in,
        posts: count_of(&calls, "PostInvitation"),
        calls: describe_counts(&calls),
        writes: tracker.writes(),
        events: describe_counts(&events),
        cpu: cpu.summary(),
        metrics: metric_changes(&metrics_before, &metrics_after),
        log_counts,
        passes: pass_analysis(&metrics_before, &metrics_done, elapsed),
        phases,
        requests,
    })
}

/// What the floor did for a burst, and how long it took.
struct FloorBurst {
    elapsed: Duration,
    calls: String,
    writes: usize,
    events: String,
    cpu: String,
    phases: world::Phases,
    times: floor::StepTimes,
    requests: String,
}

/// The floor over a fresh namespace and simulator: `n` resources created at once and issued
/// by a minimal client, `concurrency` at a time.
async fn floor_burst(ctx: &Ctx, label: &str, n: usize, concurrency: usize) -> Result<FloorBurst> {
    let targets = world::targets(label, n, false);
    let sim = ctx.simulator(label, world::seed_users(&targets)).await?;
    let namespace = ctx.cluster.namespace(&format!("bench-{label}")).await;
    let api = ctx.cluster.grr(&namespace);
    let tracker = Tracker::start(api.clone()).await?;
    let requests_before = apiserver::requests(ctx.cluster.cp).await?;
    let cpu = CpuMeter::start(&ctx.processes);
    let started = Instant::now();
    let times = floor::run(
        &ctx.cluster,
        &namespace,
        &sim,
        &targets,
        CREATE_IN_FLIGHT,
        concurrency,
    )
    .await?;
    let last = tracker.wait_issued(n, Duration::from_secs(60)).await?;
    let elapsed = last - started;
    let cpu = cpu.stop();
    let requests = apiserver::served(
        &requests_before,
        &apiserver::requests(ctx.cluster.cp).await?,
    );
    let phases = tracker.phases(started);
    world::verify_all_issued(&api, n).await?;
    let calls = calls_by_kind(&sim.admin().journal().await?);
    let events = ctx.cluster.events_by_reason(&namespace).await?;
    Ok(FloorBurst {
        elapsed,
        calls: describe_counts(&calls),
        writes: tracker.writes(),
        events: describe_counts(&events),
        cpu: cpu.summary(),
        phases,
        times,
        requests,
    })
}

fn rate(n: usize, elapsed: Duration) -> String {
    format!(
        "{} ({:.0}/s)",
        secs(elapsed),
        n as f64 / elapsed.as_secs_f64()
    )
}

fn all_times(times: &[Duration]) -> String {
    times
        .iter()
        .map(|t| format!("{:.2}", t.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// B1: a burst of resets through the operator against the floor of the same work, in
/// alternating rounds (the machine is shared; the best round of each is compared).
pub async fn b1(ctx: &Ctx, n: usize, rounds: usize, table: &mut Table) -> Result<()> {
    const B: &str = "B1 burst";
    // The first bursts on a fresh control plane run slower whoever drives them (measured: about
    // 1.5× on 200 resources); one unmeasured burst keeps that out of both sides.
    eprintln!(
        "B1 warm-up: {} resources by the floor, not measured",
        n.min(200)
    );
    let warm_up = floor_burst(ctx, "b1-warm-up", n.min(200), FLOOR_CONCURRENCY).await?;
    let mut operator_runs = Vec::new();
    let mut floor_runs = Vec::new();
    for round in 1..=rounds {
        eprintln!("B1 round {round}/{rounds}: {n} resources through the operator");
        let op = operator_burst(ctx, &format!("b1-op{round}"), n, &[]).await?;
        if op.posts != n {
            eprintln!(
                "\n!!!!! B1 FAILED: {} invitation POSTs for {n} resources !!!!!\n",
                op.posts
            );
        }
        operator_runs.push(op);
        eprintln!("B1 round {round}/{rounds}: the floor, {n} resources by a minimal client");
        floor_runs.push(floor_burst(ctx, &format!("b1-floor{round}"), n, FLOOR_CONCURRENCY).await?);
    }
    let op = operator_runs
        .iter()
        .min_by_key(|r| r.elapsed)
        .context("at least one round")?;
    let fl = floor_runs
        .iter()
        .min_by_key(|r| r.elapsed)
        .context("at least one round")?;
    let op_times: Vec<Duration> = operator_runs.iter().map(|r| r.elapsed).collect();
    let fl_times: Vec<Duration> = floor_runs.iter().map(|r| r.elapsed).collect();
    table.info(
        B,
        format!("operator: {n} created (32 in flight) → all Ready=Issued; Graph 20 ms, --concurrency 16 (best of {rounds}: {} s)", all_times(&op_times)),
        format!("{}; creating took {}", rate(n, op.elapsed), secs(op.created_in)),
    );
    let posts: Vec<String> = operator_runs.iter().map(|r| r.posts.to_string()).collect();
    table.check(
        B,
        "invitation POSTs in the journal, each round",
        posts.join(", "),
        format!("= {n}"),
        operator_runs.iter().all(|r| r.posts == n),
    );
    table.info(
        B,
        format!("floor: a minimal watching client, same Graph calls, guarded status writes and Events, 16 in flight (best of {rounds}: {} s)", all_times(&fl_times)),
        rate(n, fl.elapsed),
    );
    let ratio = op.elapsed.as_secs_f64() / fl.elapsed.as_secs_f64();
    table.target(
        B,
        "ratio operator / floor (best rounds)",
        format!("{ratio:.2}"),
        "≤ 1.5",
        ratio <= 1.5,
    );
    table.info(
        B,
        "warm-up burst before the rounds (floor, not counted)",
        rate(n.min(200), warm_up.elapsed),
    );
    table.info(
        B,
        "Graph calls, operator | floor",
        format!("{} | {}", op.calls, fl.calls),
    );
    table.info(
        B,
        "status writes (resourceVersions seen), operator | floor",
        format!(
            "{} ({:.2}/resource) | {} ({:.2}/resource)",
            op.writes,
            op.writes as f64 / n as f64,
            fl.writes,
            fl.writes as f64 / n as f64
        ),
    );
    table.info(
        B,
        "Events, operator | floor",
        format!("{} | {}", op.events, fl.events),
    );
    table.info(B, "one resource (medians), operator", op.phases.describe());
    table.info(B, "one resource (medians), floor", fl.phases.describe());
    for (what, value) in &op.passes {
        table.info(B, format!("operator {what}"), value.clone());
    }
    table.info(
        B,
        "operator /metrics counters that moved",
        op.metrics.clone(),
    );
    table.info(B, "operator log lines", op.log_counts.clone());
    table.info(B, "CPU-seconds during the operator's burst", op.cpu.clone());
    table.info(B, "CPU-seconds during the floor's burst", fl.cpu.clone());
    table.info(
        B,
        "kube-apiserver requests during the operator's burst",
        op.requests.clone(),
    );
    table.info(
        B,
        "kube-apiserver requests during the floor's burst",
        fl.requests.clone(),
    );
    for (step, latency) in fl.times.describe() {
        table.info(B, format!("floor step latency: {step}"), latency);
    }
    Ok(())
}

/// B1 at other concurrencies, to see what limits throughput.
pub async fn b1_sweep(ctx: &Ctx, n: usize, concurrencies: &[u16], table: &mut Table) -> Result<()> {
    const B: &str = "B1 sweep";
    for &c in concurrencies {
        eprintln!("B1 sweep: operator --concurrency {c}");
        let flag = c.to_string();
        let op = operator_burst(ctx, &format!("b1-c{c}"), n, &["--concurrency", &flag]).await?;
        table.info(
            B,
            format!("operator --concurrency {c}: {n} resources"),
            format!(
                "{}; {}; CPU-s: {}",
                rate(n, op.elapsed),
                op.phases.describe(),
                op.cpu
            ),
        );
        table.info(
            B,
            format!("operator --concurrency {c}: Graph calls; log lines"),
            format!("{}; {}", op.calls, op.log_counts),
        );
        table.info(
            B,
            format!("operator --concurrency {c}: kube-apiserver requests"),
            op.requests.clone(),
        );
        if op.posts != n {
            table.check(
                B,
                format!("POSTs at --concurrency {c}"),
                op.posts.to_string(),
                format!("= {n}"),
                false,
            );
        }
        eprintln!("B1 sweep: floor at {c} in flight");
        let fl = floor_burst(ctx, &format!("b1-f{c}"), n, usize::from(c)).await?;
        table.info(
            B,
            format!("floor at {c} in flight: {n} resources"),
            format!(
                "{}; {}; CPU-s: {}",
                rate(n, fl.elapsed),
                fl.phases.describe(),
                fl.cpu
            ),
        );
        table.info(
            B,
            format!("floor at {c} in flight: kube-apiserver requests"),
            fl.requests,
        );
    }
    Ok(())
}

/// Creates `targets`' resources with their status already Succeeded for generation 1.
async fn create_succeeded(ctx: &Ctx, namespace: &str, targets: &[world::Target]) -> Result<()> {
    create_issued_with(ctx, namespace, targets, |_, _| {}).await
}

/// Creates `targets`' resources with their status already Issued for generation 1, each status
/// first handed to `decorate` with the target's index (B7 adds a follow-through record).
async fn create_issued_with(
    ctx: &Ctx,
    namespace: &str,
    targets: &[world::Target],
    decorate: impl Fn(usize, &mut serde_json::Value) + Sync,
) -> Result<()> {
    let api = ctx.cluster.grr(namespace);
    let objects = targets
        .iter()
        .map(|t| world::new_resource(&ctx.cluster.resource, t))
        .collect();
    world::create_all(&api, objects, 64).await?;
    let decorate = &decorate;
    futures::stream::iter(targets.iter().enumerate())
        .map(|(i, t)| {
            let api = api.clone();
            async move {
                let mut status = status::issued(
                    t,
                    1,
                    &uuid::Uuid::new_v4().to_string(),
                    &status::CallIds::made_up(),
                );
                decorate(i, &mut status);
                api.patch_status(
                    &t.name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"status": status})),
                )
                .await
                .with_context(|| format!("status of {}", t.name))
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    world::verify_all_issued(&api, targets.len()).await
}

fn memory_value(memory: Memory) -> String {
    format!(
        "VmHWM {:.1} MiB, VmRSS {:.1} MiB",
        mib(memory.peak_kib),
        mib(memory.rss_kib)
    )
}

/// B2 (memory idle and over `n` settled resources) and B3 (a restart over them).
pub async fn b2_b3(ctx: &Ctx, n: usize, table: &mut Table) -> Result<()> {
    const B2: &str = "B2 memory";
    const B3: &str = "B3 restart";
    // No users: any Graph call the operator made would show in the journal.
    let sim = ctx.simulator("b2", vec![]).await?;

    eprintln!("B2: idle operator");
    let idle_ns = ctx.cluster.namespace("bench-b2-idle").await;
    let mut op = ctx.operator("b2-idle", &idle_ns, &sim, &[])?;
    let (ready, signal) = op.wait_ready(READY_TIMEOUT).await?;
    let (memory, settled) = op.settle(Duration::from_secs(60)).await?;
    op.stop();
    table.target(
        B2,
        format!(
            "idle, no resources ({}; still after {})",
            signal.describe(),
            secs(settled)
        ),
        memory_value(memory),
        "≤ 20 MiB",
        mib(memory.peak_kib) <= 20.0,
    );
    let _ = ready;

    eprintln!("B2: creating {n} resources with status Succeeded");
    let namespace = ctx.cluster.namespace("bench-b2-done").await;
    let targets = world::targets("b2", n, true);
    let started = Instant::now();
    create_succeeded(ctx, &namespace, &targets).await?;
    eprintln!("B2: created in {}", secs(started.elapsed()));

    eprintln!("B2: operator over {n} settled resources");
    let mut op = ctx.operator("b2-loaded", &namespace, &sim, &[])?;
    let (ready, signal) = op.wait_ready(READY_TIMEOUT).await?;
    let (memory, settled) = op.settle(Duration::from_secs(300)).await?;
    op.stop();
    table.target(
        B2,
        format!(
            "{n} resources already Succeeded (ready after {}, busy {} more)",
            secs(ready),
            secs(settled)
        ),
        memory_value(memory),
        "≤ 64 MiB",
        mib(memory.peak_kib) <= 64.0,
    );
    let _ = signal;

    // Where the memory at scale goes: the controller's cache, measured by a process that holds
    // only that, as watched today and with managedFields dropped before caching.
    eprintln!("B2: store probes over {n} resources");
    let bench = std::env::current_exe()?;
    let kubeconfig = ctx.cluster.cp.kubeconfig_path();
    let empty = crate::probe::measure(
        &bench,
        kubeconfig,
        &idle_ns,
        false,
        &ctx.out.join("probe-empty.log"),
    )
    .await?;
    let full = crate::probe::measure(
        &bench,
        kubeconfig,
        &namespace,
        false,
        &ctx.out.join("probe-full.log"),
    )
    .await?;
    let stripped = crate::probe::measure(
        &bench,
        kubeconfig,
        &namespace,
        true,
        &ctx.out.join("probe-stripped.log"),
    )
    .await?;
    let per_object =
        |m: Memory| (m.rss_kib.saturating_sub(empty.rss_kib)) as f64 * 1024.0 / n as f64;
    table.info(
        B2,
        format!("a bare reflector of typed resources (store probe), empty → {n} as watched today"),
        format!(
            "VmRSS {:.1} → {:.1} MiB ({:.1} KiB per resource)",
            mib(empty.rss_kib),
            mib(full.rss_kib),
            per_object(full) / 1024.0
        ),
    );
    table.info(
        B2,
        format!("the same with metadata.managedFields dropped before caching, {n}"),
        format!(
            "VmRSS {:.1} MiB ({:.1} KiB per resource)",
            mib(stripped.rss_kib),
            per_object(stripped) / 1024.0
        ),
    );

    const RESTARTS: usize = 3;
    let api = ctx.cluster.grr(&namespace);
    let journal_before = sim.admin().journal().await?.len();
    let versions_before = world::resource_versions(&api).await?;
    let tracker = Tracker::start(api.clone()).await?;
    let mut ready_times = Vec::new();
    let mut busy_times = Vec::new();
    let mut signal = None;
    let mut memory = Memory::default();
    let mut reconciles = Vec::new();
    for restart in 1..=RESTARTS {
        eprintln!("B3: restart {restart}/{RESTARTS} over {n} settled resources");
        let mut op = ctx.operator(&format!("b3-restart{restart}"), &namespace, &sim, &[])?;
        let (ready, seen) = op.wait_ready(READY_TIMEOUT).await?;
        let metrics_ready = op.metrics().await;
        let (settled_memory, busy) = op.settle(Duration::from_secs(300)).await?;
        let metrics_settled = op.metrics().await;
        op.stop();
        ready_times.push(ready);
        busy_times.push(busy);
        signal = Some(seen);
        memory = settled_memory;
        reconciles.push(metric_changes(&metrics_ready, &metrics_settled));
    }
    let journal = sim.admin().journal().await?;
    let new_calls = &journal[journal_before.min(journal.len())..];
    let versions_after = world::resource_versions(&api).await?;
    let changed = versions_before
        .iter()
        .filter(|(name, rv)| versions_after.get(*name) != Some(rv))
        .count();
    let graph = graph_calls(new_calls);
    table.check(
        B3,
        format!("Graph calls over {n} settled resources, {RESTARTS} restarts (journal)"),
        format!("{graph} ({} token requests)", new_calls.len() - graph),
        "0",
        graph == 0,
    );
    table.check(
        B3,
        format!(
            "status writes, {RESTARTS} restarts (resourceVersions changed | writes seen by a watch)"
        ),
        format!("{changed} | {}", tracker.writes()),
        "0",
        changed == 0 && tracker.writes() == 0,
    );
    let mut sorted = ready_times.clone();
    sorted.sort();
    table.info(
        B3,
        format!(
            "time from process start to ready ({}), median of {RESTARTS} (all: {} s)",
            signal.map(|s| s.describe()).unwrap_or_default(),
            all_times(&ready_times)
        ),
        secs(sorted[sorted.len() / 2]),
    );
    table.info(
        B3,
        "busy after ready: the first pass over every resource (250 ms steps), each restart",
        format!("{} s", all_times(&busy_times)),
    );
    table.info(B3, "memory after the last restart", memory_value(memory));
    table.info(
        B3,
        "/metrics counters that moved after ready, each restart",
        reconciles.join("; "),
    );
    Ok(())
}

/// B4: `n` resets by a shell loop (curl, jq, kubectl) against the operator doing as many.
pub async fn b4(ctx: &Ctx, n: usize, table: &mut Table) -> Result<()> {
    const B: &str = "B4 by hand";
    eprintln!("B4: {n} resets by a shell loop");
    let targets = world::targets("b4-shell", n, false);
    let sim = ctx
        .simulator("b4-shell", world::seed_users(&targets))
        .await?;
    let namespace = ctx.cluster.namespace("bench-b4-shell").await;
    let api = ctx.cluster.grr(&namespace);
    let objects = targets
        .iter()
        .map(|t| world::new_resource(&ctx.cluster.resource, t))
        .collect();
    world::create_all(&api, objects, CREATE_IN_FLIGHT).await?;
    let list = ctx.out.join("b4-targets.txt");
    let lines: Vec<String> = targets
        .iter()
        .map(|t| format!("{} {} {}", t.name, t.user_id, t.email))
        .collect();
    std::fs::write(&list, lines.join("\n") + "\n")?;
    let script = ctx.out.join("manual-reset.sh");
    std::fs::write(&script, include_str!("manual-reset.sh"))?;
    let log = std::fs::File::create(ctx.out.join("manual-reset.log"))?;

    let started = Instant::now();
    let mut child = tokio::process::Command::new("bash")
        .arg(&script)
        .env("BASE", sim.base_url())
        .env("CA", sim.ca_pem_path())
        .env("TENANT", sim.tenant_id())
        .env("CLIENT_ID", sim.client_id())
        .env("CLIENT_SECRET", sim.client_secret())
        .env("KUBECTL", ctx.cluster.cp.bin_dir().join("kubectl"))
        .env("KUBECONFIG", ctx.cluster.cp.kubeconfig_path())
        .env("NAMESPACE", &namespace)
        .env("TARGETS", &list)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting bash")?;
    let limit = Duration::from_secs(60) + Duration::from_secs(3) * n as u32;
    let exit = tokio::time::timeout(limit, child.wait())
        .await
        .with_context(|| format!("the shell loop took more than {limit:?}"))??;
    let shell = started.elapsed();
    if !exit.success() {
        bail!(
            "the shell loop failed ({exit}); see {}",
            ctx.out.join("manual-reset.log").display()
        );
    }
    world::verify_all_issued(&api, n).await?;
    let shell_posts = sim.admin().invitation_posts().await?.len();
    drop(sim);
    table.info(
        B,
        format!("shell loop: {n} resets (token; GET, PATCH, POST by curl; kubectl status patch)"),
        format!("{} ({:.2}/s)", secs(shell), n as f64 / shell.as_secs_f64()),
    );
    table.check(
        B,
        "shell loop: invitation POSTs",
        shell_posts.to_string(),
        format!("= {n}"),
        shell_posts == n,
    );

    eprintln!("B4: {n} resets by the operator");
    let op = operator_burst(ctx, "b4-operator", n, &[]).await?;
    table.info(
        B,
        format!("operator: {n} resets (create → all Issued; write limit raised)"),
        format!(
            "{} ({:.1}/s)",
            secs(op.elapsed),
            n as f64 / op.elapsed.as_secs_f64()
        ),
    );
    table.check(
        B,
        "operator: invitation POSTs",
        op.posts.to_string(),
        format!("= {n}"),
        op.posts == n,
    );
    table.info(
        B,
        "ratio shell loop / operator",
        format!("{:.1}×", shell.as_secs_f64() / op.elapsed.as_secs_f64()),
    );
    Ok(())
}

/// The most writes in any 60-second window, from the journal's timestamps.
pub fn max_in_window(mut times: Vec<Timestamp>, window: Duration) -> usize {
    times.sort();
    let window = k8s_openapi::jiff::SignedDuration::try_from(window).expect("a short window");
    let mut best = 0;
    let mut end = 0;
    for start in 0..times.len() {
        while end < times.len() && times[end].duration_since(times[start]) < window {
            end += 1;
        }
        best = best.max(end - start);
    }
    best
}

/// B5: the default write limit holds under a burst of 30 resources.
pub async fn b5(ctx: &Ctx, n: usize, table: &mut Table) -> Result<()> {
    const B: &str = "B5 limiter";
    eprintln!("B5: {n} resources under the default write limit (takes minutes)");
    let targets = world::targets("b5", n, true);
    let sim = ctx.simulator("b5", world::seed_users(&targets)).await?;
    let namespace = ctx.cluster.namespace("bench-b5").await;
    let api = ctx.cluster.grr(&namespace);
    let tracker = Tracker::start(api.clone()).await?;
    let mut op = ctx.operator("b5", &namespace, &sim, &[])?;
    op.wait_ready(READY_TIMEOUT).await?;
    let started = Instant::now();
    let objects = targets
        .iter()
        .map(|t| world::new_resource(&ctx.cluster.resource, t))
        .collect();
    world::create_all(&api, objects, n).await?;
    // 6 a minute after a burst of 3, and a margin.
    let limit = Duration::from_secs(120) + Duration::from_secs(10) * n as u32;
    let last = tracker.wait_issued(n, limit).await?;
    let elapsed = last - started;
    let journal = sim.admin().journal().await?;
    op.stop();
    let writes: Vec<Timestamp> = journal
        .iter()
        .filter(|e| matches!(e.call, Call::PatchUser | Call::PostInvitation))
        .map(|e| {
            e.at.parse::<Timestamp>()
                .with_context(|| format!("journal time {:?}", e.at))
        })
        .collect::<Result<_>>()?;
    let calls = calls_by_kind(&journal);
    let posts = count_of(&calls, "PostInvitation");
    let busiest = max_in_window(writes.clone(), Duration::from_secs(60));
    table.target(
        B,
        format!(
            "most Graph writes in any 60 s window ({} writes in all, default 6/min burst 3)",
            writes.len()
        ),
        busiest.to_string(),
        "≤ 9",
        busiest <= 9,
    );
    table.check(
        B,
        "invitation POSTs | mail PATCHes",
        format!("{posts} | {}", count_of(&calls, "PatchUser")),
        format!("{n} | 0"),
        posts == n && count_of(&calls, "PatchUser") == 0,
    );
    table.info(
        B,
        format!("time until all {n} Issued"),
        format!(
            "{} (ideal {:.0} s: {} after the burst of 3 at 10 s each)",
            secs(elapsed),
            (n.saturating_sub(3)) as f64 * 10.0,
            n.saturating_sub(3)
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_window_is_found() {
        let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        // A burst of 3, then one every 10 s: 3 + 6 in the first minute.
        let mut times = vec![at(0), at(0), at(0)];
        times.extend((1..=12).map(|i| at(i * 10)));
        assert_eq!(max_in_window(times, Duration::from_secs(60)), 8);
        let bunched: Vec<Timestamp> = (0..12).map(|i| at(i * 5)).collect();
        assert_eq!(max_in_window(bunched, Duration::from_secs(60)), 12);
        assert_eq!(max_in_window(vec![], Duration::from_secs(60)), 0);
    }
}
