//! B6: no head-of-line blocking. A backlog of resets queued behind the default write limit (6
//! a minute) must not hold the reconcile workers: a dry run created meanwhile is Ready at once,
//! an interrupted attempt's recovery reads and a missing user's re-reads keep their 10 s
//! schedule, and a queued reset's status says when it is expected to be issued. Figures only:
//! the bench prints what it saw, it asserts nothing about time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use graph_sim::{Call, JournalEntry};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::{Ctx, READY_TIMEOUT, secs};
use crate::status;
use crate::table::Table;
use crate::world::{self, Target, Tracker};

const B: &str = "B6 head of line";
/// The operator re-reads a missing user, and an interrupted attempt's user, every 10 s.
const SCHEDULE: Duration = Duration::from_secs(10);

/// B6 with `n` queued resets, watching the newcomers for `window`.
pub async fn b6(ctx: &Ctx, n: usize, window: Duration, table: &mut Table) -> Result<()> {
    let targets = world::targets("b6", n, false);
    let extra = world::targets("b6-x", 3, true);
    let (dry, interrupted, missing) = (&extra[0], &extra[1], &extra[2]);
    // The missing user is not in the directory: only the other two are seeded.
    let mut users = world::seed_users(&targets);
    users.extend(world::seed_users(&extra[..2]));
    let sim = ctx.simulator("b6", users).await?;
    let namespace = ctx.cluster.namespace("bench-b6").await;
    let api = ctx.cluster.grr(&namespace);
    let tracker = Tracker::start(api.clone()).await?;
    let mut op = ctx.operator("b6", &namespace, &sim, &[])?;
    op.wait_ready(READY_TIMEOUT).await?;

    eprintln!("B6: {n} resets behind the default write limit");
    let started = Instant::now();
    let objects = targets
        .iter()
        .map(|t| world::new_resource(&ctx.cluster.resource, t))
        .collect();
    world::create_all(&api, objects, 32).await?;
    // Every queued reset has had its first pass once each has a status; a controller whose
    // workers sleep never gets there, so the wait is bounded.
    let seen = tracker.wait_worked(n, Duration::from_secs(30)).await;
    table.info(
        B,
        format!("{n} resets created (each a mail PATCH and a POST), default limit 6/min burst 3"),
        format!(
            "{seen} of {n} with a status after {}",
            secs(started.elapsed())
        ),
    );

    let expected_at: HashMap<String, Timestamp> = api
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter_map(|o| Some((o.metadata.name.clone()?, expected(o)?)))
        .collect();

    eprintln!(
        "B6: a dry run, an interrupted attempt and a missing user, for {}",
        secs(window)
    );
    let t0 = Timestamp::now();
    create_interrupted(ctx, &api, interrupted).await?;
    world::create_all(
        &api,
        vec![
            world::new_resource(&ctx.cluster.resource, missing),
            dry_run(ctx, dry),
        ],
        2,
    )
    .await?;
    let dry_ready = wait_dry_run(&api, &dry.name, window).await?;
    table.info(
        B,
        "dry run created behind the queue → Ready=DryRunComplete",
        dry_ready.map_or_else(|| format!("not within {}", secs(window)), secs),
    );
    let rest = window.saturating_sub(Duration::try_from(Timestamp::now().duration_since(t0))?);
    tokio::time::sleep(rest).await;
    let journal = sim.admin().journal().await?;
    let objects = api.list(&Default::default()).await?.items;
    op.stop();

    for (label, target) in [
        ("interrupted attempt: recovery reads", interrupted),
        ("missing user: re-reads", missing),
    ] {
        let reads = reads_of(&journal, &target.user_id, t0);
        table.info(
            B,
            format!("{label} in {} (every 10 s expected)", secs(window)),
            describe_schedule(&reads, t0),
        );
    }
    let queued: Vec<&DynamicObject> = objects
        .iter()
        .filter(|o| {
            targets
                .iter()
                .any(|t| Some(&t.name) == o.metadata.name.as_ref())
        })
        .collect();
    table.info(
        B,
        "queued resets: what their status says",
        expected_times(&queued),
    );
    table.info(
        B,
        "issued during the run: actual POST against the expected time",
        punctuality(&expected_at, &queued),
    );
    let writes: Vec<Timestamp> = journal
        .iter()
        .filter(|e| matches!(e.call, Call::PatchUser | Call::PostInvitation))
        .filter_map(|e| e.at.parse().ok())
        .collect();
    table.info(
        B,
        "Graph writes: in all | most in any 60 s window",
        format!(
            "{} | {}",
            writes.len(),
            super::max_in_window(writes.clone(), Duration::from_secs(60))
        ),
    );
    Ok(())
}

fn dry_run(ctx: &Ctx, target: &Target) -> DynamicObject {
    let mut object = world::new_resource(&ctx.cluster.resource, target);
    object.data["spec"]["dryRun"] = json!(true);
    object
}

/// A resource whose last pass marked its POST as sending and never reported: recovery reads
/// the user every 10 s until the replication window has passed.
async fn create_interrupted(ctx: &Ctx, api: &Api<DynamicObject>, target: &Target) -> Result<()> {
    world::create_all(
        api,
        vec![world::new_resource(&ctx.cluster.resource, target)],
        1,
    )
    .await?;
    let now = status::now();
    let mut record = status::intent(
        target,
        1,
        &uuid::Uuid::new_v4().to_string(),
        &now,
        json!({}),
    );
    record["attempt"]["postStartedAt"] = json!(now);
    api.patch_status(
        &target.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": record})),
    )
    .await
    .with_context(|| format!("status of {}", target.name))?;
    Ok(())
}

/// From now until the dry run is Ready=DryRunComplete (polled every 50 ms), or `None`.
async fn wait_dry_run(
    api: &Api<DynamicObject>,
    name: &str,
    window: Duration,
) -> Result<Option<Duration>> {
    let started = Instant::now();
    while started.elapsed() < window {
        let object = api.get(name).await?;
        if world::current_ready_reason(&object).as_deref() == Some("DryRunComplete") {
            return Ok(Some(started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(None)
}

/// The times of `GET /users/{id}` for this user since `since`.
fn reads_of(journal: &[JournalEntry], user_id: &str, since: Timestamp) -> Vec<Timestamp> {
    journal
        .iter()
        .filter(|e| e.call == Call::GetUser && e.path.contains(user_id))
        .filter_map(|e| e.at.parse::<Timestamp>().ok())
        .filter(|at| *at >= since)
        .collect()
}

fn describe_schedule(reads: &[Timestamp], t0: Timestamp) -> String {
    let Some(first) = reads.first() else {
        return "no read at all".into();
    };
    let gaps: Vec<f64> = reads
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64())
        .collect();
    let late = gaps
        .iter()
        .map(|g| (g - SCHEDULE.as_secs_f64()).abs())
        .fold(0.0, f64::max);
    format!(
        "{} reads, the first {:.1} s after create; gaps {} s; furthest from 10 s: {late:.1} s",
        reads.len(),
        first.duration_since(t0).as_secs_f64(),
        gaps.iter()
            .map(|g| format!("{g:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn ready_of(object: &DynamicObject) -> Option<&Value> {
    object.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

/// How many queued resets carry an expected time, and the range of those times.
fn expected_times(queued: &[&DynamicObject]) -> String {
    let mut by_reason: HashMap<String, usize> = HashMap::new();
    let mut times = Vec::new();
    for object in queued {
        let reason = ready_of(object)
            .and_then(|c| c["reason"].as_str())
            .unwrap_or("(no status)");
        *by_reason.entry(reason.to_owned()).or_default() += 1;
        if let Some(at) = expected(object) {
            times.push(at);
        }
    }
    times.sort();
    let mut reasons: Vec<String> = by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
    reasons.sort();
    let range = match (times.first(), times.last()) {
        (Some(first), Some(last)) => format!(
            "; expected times from {first} to {last} ({:.1} h of queue)",
            last.duration_since(*first).as_secs_f64() / 3600.0
        ),
        _ => String::new(),
    };
    format!(
        "by Ready reason: {}; {} with an expected time (nextAttemptAt and the message){range}",
        reasons.join(", "),
        times.len()
    )
}

/// `status.nextAttemptAt` when Ready's message names the same expected time.
fn expected(object: &DynamicObject) -> Option<Timestamp> {
    let at = object.data["status"]["nextAttemptAt"].as_str()?;
    let message = ready_of(object)?["message"].as_str()?;
    let parsed: Timestamp = at.parse().ok()?;
    message.contains("expected").then_some(parsed)
}

/// For the resets issued during the run: `status.invitation.issuedAt` against the time their
/// status said to expect, as sampled once the queue had formed.
fn punctuality(expected_at: &HashMap<String, Timestamp>, objects: &[&DynamicObject]) -> String {
    let mut deltas: Vec<f64> = objects
        .iter()
        .filter_map(|o| {
            let expected = expected_at.get(o.metadata.name.as_ref()?)?;
            let issued: Timestamp = o.data["status"]["invitation"]["issuedAt"]
                .as_str()?
                .parse()
                .ok()?;
            Some(issued.duration_since(*expected).as_secs_f64())
        })
        .collect();
    deltas.sort_by(f64::total_cmp);
    match (deltas.first(), deltas.last()) {
        (Some(early), Some(late)) => format!(
            "{} issued with an expected time: issued {early:+.1} to {late:+.1} s from it (issuedAt is to the second)",
            deltas.len()
        ),
        _ => "none issued that had an expected time".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_names_the_gaps_and_the_worst() {
        let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        let text = describe_schedule(&[at(1), at(11), at(23)], at(0));
        assert!(text.starts_with("3 reads, the first 1.0 s"), "{text}");
        assert!(text.contains("gaps 10.0, 12.0 s"), "{text}");
        assert!(text.ends_with("2.0 s"), "{text}");
        assert_eq!(describe_schedule(&[], at(0)), "no read at all");
    }
}
