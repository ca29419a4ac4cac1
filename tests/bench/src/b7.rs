//! B7: the follow-through over many issued resources. A tenth of them are due for a check when
//! the operator starts, the rest a day later: the Graph reads per minute must stay within the
//! read budget (default 60), only due guests may be read and only their status written, and a
//! restart must read none of those already checked.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Result;
use graph_sim::{Call, JournalEntry, Simulator};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::DynamicObject;

use super::{Ctx, READY_TIMEOUT, create_issued_with, memory_value, secs};
use crate::machine::Memory;
use crate::table::Table;
use crate::world::{self, Target};

const B: &str = "B7 follow-through";
/// The operator's default read budget, which B7 runs with.
const BUDGET: usize = 60;

/// B7 over `n` issued resources, observing each phase for `window`.
pub async fn b7(ctx: &Ctx, n: usize, window: Duration, table: &mut Table) -> Result<()> {
    let due_n = (n / 10).max(1);
    let targets = world::targets("b7", n, true);
    let sim = ctx.simulator("b7", world::seed_users(&targets)).await?;
    let namespace = ctx.cluster.namespace("bench-b7").await;
    let api = ctx.cluster.grr(&namespace);
    eprintln!("B7: creating {n} issued resources under follow-through, {due_n} due");
    create_following(ctx, &namespace, &targets, due_n).await?;
    let due: HashSet<&str> = targets[..due_n]
        .iter()
        .map(|t| t.user_id.as_str())
        .collect();
    let names: HashMap<&str, &str> = targets
        .iter()
        .map(|t| (t.user_id.as_str(), t.name.as_str()))
        .collect();

    eprintln!("B7: the operator over them for {}", secs(window));
    let run = observe(ctx, &sim, &api, &namespace, "b7-first", window).await?;
    let read_first: HashSet<&str> = run.reads.iter().map(|(_, id)| id.as_str()).collect();
    let per_minute = max_per_minute(&run.reads);
    table.check(
        B,
        format!(
            "Graph reads per minute (most in any 60 s), {n} resources, {due_n} due, budget {BUDGET}"
        ),
        format!(
            "{per_minute} (total {} in {})",
            run.reads.len(),
            secs(window)
        ),
        format!("≤ {}", BUDGET + 1),
        per_minute <= BUDGET + 1 && !run.reads.is_empty(),
    );
    let stray_reads = read_first.iter().filter(|id| !due.contains(*id)).count();
    let due_names: HashSet<&str> = due.iter().map(|id| names[id]).collect();
    let stray_writes = run
        .written
        .iter()
        .filter(|n| !due_names.contains(n.as_str()))
        .count();
    table.check(
        B,
        "reads | status writes of resources that were not due",
        format!("{stray_reads} | {stray_writes}"),
        "0 | 0",
        stray_reads == 0 && stray_writes == 0,
    );
    table.info(
        B,
        "status writes of due resources (one per completed check)",
        run.written.len().to_string(),
    );
    table.info(
        B,
        format!("memory after {}", secs(window)),
        memory_value(run.memory),
    );

    eprintln!("B7: a restart over them for {}", secs(window));
    let again = observe(ctx, &sim, &api, &namespace, "b7-restart", window).await?;
    restart_rows(&again, &read_first, &due, &names, table);
    Ok(())
}

/// After a restart: no read or write of a resource checked before it or not due.
fn restart_rows(
    again: &Run,
    read_first: &HashSet<&str>,
    due: &HashSet<&str>,
    names: &HashMap<&str, &str>,
    table: &mut Table,
) {
    let due_names: HashSet<&str> = due.iter().map(|id| names[id]).collect();
    let repeated = again
        .reads
        .iter()
        .filter(|(_, id)| read_first.contains(id.as_str()) || !due.contains(id.as_str()))
        .count();
    let checked_names: HashSet<&str> = read_first.iter().map(|id| names[id]).collect();
    let rewritten = again
        .written
        .iter()
        .filter(|n| checked_names.contains(n.as_str()) || !due_names.contains(n.as_str()))
        .count();
    table.check(
        B,
        format!(
            "after a restart: reads | status writes of resources not due (checked before, or due in a day); {} reads of the {} still due",
            again.reads.len() - repeated,
            due.len() - read_first.len()
        ),
        format!("{repeated} | {rewritten}"),
        "0 | 0",
        repeated == 0 && rewritten == 0,
    );
    table.info(B, "memory after the restart", memory_value(again.memory));
}

/// What one operator run did: the follow-through reads (time, user id), the resources whose
/// status changed, the memory at the end.
struct Run {
    reads: Vec<(Timestamp, String)>,
    written: Vec<String>,
    memory: Memory,
}

async fn observe(
    ctx: &Ctx,
    sim: &Simulator,
    api: &kube::Api<DynamicObject>,
    namespace: &str,
    label: &str,
    window: Duration,
) -> Result<Run> {
    let versions = world::resource_versions(api).await?;
    let journal_before = sim.admin().journal().await?.len();
    let mut op = ctx.operator(label, namespace, sim, &[])?;
    op.wait_ready(READY_TIMEOUT).await?;
    // A benchmark window, not a synchronisation: the reads spread over it by design.
    tokio::time::sleep(window).await;
    let memory = Memory::of(op.pid()).unwrap_or_default();
    op.stop();
    let journal = sim.admin().journal().await?;
    let reads = journal[journal_before.min(journal.len())..]
        .iter()
        .filter(|e| e.call == Call::GetUser)
        .map(|e| Ok((e.at.parse()?, user_of(e).to_owned())))
        .collect::<Result<Vec<_>>>()?;
    let after = world::resource_versions(api).await?;
    let written = after
        .into_iter()
        .filter(|(name, rv)| versions.get(name) != Some(rv))
        .map(|(name, _)| name)
        .collect();
    Ok(Run {
        reads,
        written,
        memory,
    })
}

fn user_of(e: &JournalEntry) -> &str {
    e.path.rsplit('/').next().unwrap_or("")
}

/// The most reads within any 60 seconds.
fn max_per_minute(reads: &[(Timestamp, String)]) -> usize {
    let mut times: Vec<Timestamp> = reads.iter().map(|(t, _)| *t).collect();
    times.sort();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]) < SignedDuration::from_secs(60))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Issued resources with a follow-through an hour old: the first `due_n` due a minute ago, the
/// others in a day.
async fn create_following(
    ctx: &Ctx,
    namespace: &str,
    targets: &[Target],
    due_n: usize,
) -> Result<()> {
    let now = Timestamp::now();
    create_issued_with(ctx, namespace, targets, |i, status| {
        let next = if i < due_n {
            now - SignedDuration::from_mins(1)
        } else {
            now + SignedDuration::from_hours(24)
        };
        status["redemption"] = serde_json::json!({
            "generation": 1,
            "state": "PendingAcceptance",
            "since": second(now - SignedDuration::from_hours(1)),
            "nextCheckAt": second(next),
        });
    })
    .await
}

fn second(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}
