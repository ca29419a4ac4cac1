//! B8: a domain migration of many guests. The plan must take at most 60 s and read at most one
//! directory page per 100 guests; the resets it creates must then be issued within the default
//! write limit's window bound (B5's: 9 in any 60 s), and the controller's resident memory must stay within 100 MiB
//! throughout (planning, creating every reset, issuing).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use graph_sim::{Call, SeedUser};
use guestreset::resource::GuestDomainMigration;
use kube::api::{Api, ListParams, PostParams};

use super::{Ctx, READY_TIMEOUT, memory_value, secs};
use crate::machine::{Memory, mib};
use crate::table::Table;

const B: &str = "B8 migration";
const FROM: &str = "partner.example";
const TO: &str = "newpartner.example";
/// The write limit while B8 issues: the production default (6 a minute, burst 3), whose window
/// bound B5 checks: at most 9 writes in any 60 s.
const PER_MINUTE: u64 = 6;
const BURST: u64 = 3;
const MEMORY_LIMIT_MIB: f64 = 100.0;

fn users(n: usize) -> Vec<SeedUser> {
    let mut users: Vec<SeedUser> = (0..n)
        .map(|i| {
            SeedUser::guest(
                &format!("b8{i:06}-aaaa-4bbb-8ccc-dddddddddddd"),
                &format!("g{i}_{FROM}#EXT#@fabrikam.onmicrosoft.com"),
                &format!("g{i}@{FROM}"),
            )
        })
        .collect();
    // A few members of the domain: listed, excluded.
    for i in 0..10 {
        users.push(SeedUser::member(
            &format!("b9{i:06}-aaaa-4bbb-8ccc-dddddddddddd"),
            &format!("m{i}@{FROM}"),
            &format!("m{i}@{FROM}"),
        ));
    }
    users
}

/// Samples the operator's memory every half second until `done` resolves; the largest RSS.
async fn watch_memory<T>(pid: u32, done: impl std::future::Future<Output = T>) -> (T, Memory) {
    let mut peak = Memory::default();
    tokio::pin!(done);
    loop {
        if let Some(m) = Memory::of(pid)
            && m.rss_kib > peak.rss_kib
        {
            peak = m;
        }
        tokio::select! {
            out = &mut done => {
                if let Some(m) = Memory::of(pid) {
                    peak.peak_kib = peak.peak_kib.max(m.peak_kib);
                }
                return (out, peak);
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// B8 over `n` guests, issuing for `window` after the resets exist.
pub async fn b8(ctx: &Ctx, n: usize, window: Duration, table: &mut Table) -> Result<()> {
    let sim = ctx.simulator("b8", users(n)).await?;
    let namespace = ctx.cluster.namespace("bench-b8").await;
    let migrations: Api<GuestDomainMigration> =
        Api::namespaced(ctx.cluster.client.clone(), &namespace);
    // The operator's defaults: 6 writes a minute, burst 3.
    let mut op = ctx.operator("b8", &namespace, &sim, &[])?;
    op.wait_ready(READY_TIMEOUT).await?;
    let pid = op.pid();
    eprintln!("B8: a migration of {n} guests");
    let migration: GuestDomainMigration = serde_json::from_value(serde_json::json!({
        "apiVersion": "guestreset.io/v1alpha1", "kind": "GuestDomainMigration",
        "metadata": {"name": "b8"},
        "spec": {"from": FROM, "to": TO, "changeRef": "B8"},
    }))?;
    let started = Instant::now();
    migrations
        .create(&PostParams::default(), &migration)
        .await?;
    let (planned, plan_memory) = watch_memory(pid, async {
        loop {
            let m = migrations.get("b8").await?;
            if let Some(plan) = m.status.and_then(|s| s.plan) {
                return Ok::<_, anyhow::Error>((plan, started.elapsed()));
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!("no plan within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let (plan, took) = planned?;
    let journal = sim.admin().journal().await?;
    let pages = journal
        .iter()
        .filter(|e| {
            e.call == Call::ListUsers && e.query.as_deref().unwrap_or("").contains("endswith")
        })
        .count();
    let page_bound = n.div_ceil(100);
    table.check(
        B,
        format!(
            "plan of {n} guests ({} planned, {} members excluded): time | directory pages",
            plan.guests, plan.members
        ),
        format!("{} | {pages} (status says {})", secs(took), plan.pages),
        format!("≤ 60 s | ≤ {page_bound}"),
        took <= Duration::from_secs(60) && pages <= page_bound && plan.guests == n as i64,
    );

    // Every reset created; then the issuance for a window at the write limit.
    let resets = ctx.cluster.grr(&namespace);
    let created_started = Instant::now();
    let (created, create_memory) = watch_memory(pid, async {
        loop {
            let count = resets
                .list_metadata(&ListParams::default().labels("guestreset.io/migration=b8"))
                .await?
                .items
                .len();
            if count >= n {
                return Ok::<_, anyhow::Error>(created_started.elapsed());
            }
            if created_started.elapsed() > Duration::from_secs(600) {
                bail!("{count} of {n} resets created within 600 s");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let created = created.context("creating the resets")?;
    table.info(
        B,
        format!("{n} resets created by the migration"),
        secs(created),
    );

    let window_start = Instant::now();
    let ((), issue_memory) = watch_memory(pid, tokio::time::sleep(window)).await;
    let elapsed = window_start.elapsed();
    let journal = sim.admin().journal().await?;
    let writes: Vec<k8s_openapi::jiff::Timestamp> = journal
        .iter()
        .filter(|e| matches!(e.call, Call::PatchUser | Call::PostInvitation))
        .map(|e| e.at.parse().context("journal time"))
        .collect::<Result<_>>()?;
    // B5's window bound: the burst plus a minute's rate.
    let bound = (BURST + PER_MINUTE) as usize;
    let busiest = super::max_in_window(writes.clone(), Duration::from_secs(60));
    table.check(
        B,
        format!(
            "most Graph writes in any 60 s, from the plan to {} after the last reset was created ({} writes in all, default {PER_MINUTE}/min burst {BURST})",
            secs(elapsed),
            writes.len()
        ),
        busiest.to_string(),
        format!("≤ {bound}"),
        busiest <= bound && busiest >= PER_MINUTE as usize,
    );
    op.stop();
    let peak = [plan_memory, create_memory, issue_memory]
        .into_iter()
        .map(|m| m.rss_kib)
        .max()
        .unwrap_or(0);
    table.check(
        B,
        "controller memory, largest RSS sampled while planning | creating | issuing",
        format!(
            "{:.1} | {:.1} | {:.1} MiB ({})",
            mib(plan_memory.rss_kib),
            mib(create_memory.rss_kib),
            mib(issue_memory.rss_kib),
            memory_value(issue_memory)
        ),
        format!("≤ {MEMORY_LIMIT_MIB} MiB"),
        mib(peak) <= MEMORY_LIMIT_MIB,
    );
    Ok(())
}
