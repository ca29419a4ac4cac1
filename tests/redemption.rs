//! End-to-end: the follow-through after `Issued` (docs/resource.md, "Following through"), with
//! `guestreset run` against a real kube-apiserver and the HTTPS Graph simulator, whose admin
//! action `redeem` plays the guest and whose journal counts the reads. The schedule is
//! shortened with `--redemption-first-check` (the later intervals scale with it).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{World, admin_addr, guests};
use graph_sim::{Call, JournalEntry};
use guestreset::resource::{GuestRedemptionReset, RedemptionState};
use guestreset_testsupport::{ChildProcess, wait_until};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

impl World {
    async fn create_for(&self, name: &str, id: &str, email: &str) {
        self.create(name, json!({"user": {"id": id}, "email": email}))
            .await;
    }

    /// Waits until the `Redeemed` condition of the current generation has `reason`.
    async fn wait_redeemed(&self, name: &str, reason: &str, timeout: Duration) -> Condition {
        let api = self.api.clone();
        wait_until(&format!("{name} to be {reason}"), timeout, || {
            let api = api.clone();
            async move {
                let obj = api.get(name).await.map_err(|e| e.to_string())?;
                match redeemed(&obj) {
                    Some(c)
                        if c.reason == reason
                            && c.observed_generation == obj.metadata.generation =>
                    {
                        Ok(Some(c))
                    }
                    other => Err(format!("Redeemed = {other:?}")),
                }
            }
        })
        .await
    }

    /// `kubectl wait --for=condition=Redeemed` (status True), as a user would.
    fn kubectl_wait_redeemed(&self, name: &str, timeout: &str) -> bool {
        self.cp
            .kubectl()
            .args(["wait", "--for=condition=Redeemed", "-n", &self.ns])
            .arg(format!("--timeout={timeout}"))
            .arg(format!("grr/{name}"))
            .output()
            .unwrap()
            .status
            .success()
    }
}

fn redeemed(obj: &GuestRedemptionReset) -> Option<Condition> {
    obj.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Redeemed")
        .cloned()
}

/// The follow-through's reads in the journal: `GET /users/{id}` of a guest after an invitation
/// was issued for it (the preflight's reads come before).
fn follow_reads(journal: &[JournalEntry]) -> Vec<&JournalEntry> {
    let mut issued = HashSet::new();
    let mut reads = vec![];
    for e in journal {
        match e.call {
            Call::PostInvitation if e.status == 201 => {
                issued.insert(e.invited_user_id.clone().unwrap_or_default());
            }
            Call::GetUser if issued.contains(user_of(e)) => reads.push(e),
            _ => {}
        }
    }
    reads
}

fn user_of(e: &JournalEntry) -> &str {
    e.path.rsplit('/').next().unwrap_or("")
}

fn at(e: &JournalEntry) -> jiff::Timestamp {
    e.at.parse().unwrap()
}

/// The operator's metrics, from its admin endpoints.
async fn metrics_of(op: &ChildProcess) -> String {
    let addr = admin_addr(op).await;
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

// ---------------------------------------------------------------- the flow

#[tokio::test(flavor = "multi_thread")]
async fn a_redemption_flips_redeemed_to_true_within_one_scheduled_check() {
    let (users, ids) = guests("a", '1', 2);
    let mut w = World::with_users("redeem", users).await;
    let op = w.start_operator(&["--redemption-first-check", "2s"]);
    w.create(
        "alice",
        json!({"user": {"id": ids[0]}, "email": "a0@new.example", "changeRef": "CHG-7"}),
    )
    .await;
    w.wait_reason("alice", "Issued").await;
    let pending = w.wait_redeemed("alice", "PendingAcceptance", WAIT).await;
    assert_eq!(pending.status, "Unknown");
    assert!(
        pending.message.starts_with("issued "),
        "{}",
        pending.message
    );
    assert!(!w.kubectl_wait_redeemed("alice", "1s"), "not redeemed yet");

    // The guest redeems; at this age the schedule reads every 2 or 6 seconds (plus a fifth).
    let redeemed_at = Instant::now();
    let redeemed = jiff::Timestamp::now();
    w.admin.redeem(&ids[0]).await.unwrap();
    assert!(w.kubectl_wait_redeemed("alice", "30s"));
    let took = redeemed_at.elapsed();
    println!("redemption: Redeemed flipped {took:?} after the guest redeemed");
    // Within one scheduled check, counted rather than timed: the first read of the guest
    // after the redemption flipped it, and none followed (the watch is over).
    let reads: Vec<JournalEntry> = w
        .journal()
        .await
        .into_iter()
        .filter(|e| e.call == Call::GetUser && e.path.contains(&ids[0]))
        .filter(|e| {
            e.at.parse::<jiff::Timestamp>()
                .is_ok_and(|at| at > redeemed)
        })
        .collect();
    assert_eq!(reads.len(), 1, "one check after the redemption: {reads:#?}");
    let obj = w.get("alice").await;
    let record = obj.status.as_ref().unwrap().redemption.clone().unwrap();
    assert_eq!(record.state, RedemptionState::Accepted);
    assert_eq!(record.next_check_at, None);
    let sim_user = w.admin.user(&ids[0]).await.unwrap().unwrap();
    assert_eq!(
        record.accepted_at.map(|t| t.0.as_second()),
        sim_user
            .external_user_state_change_date_time
            .map(|t| t.parse::<jiff::Timestamp>().unwrap().as_second())
    );
    // The printer column shows it.
    let out =
        w.cp.kubectl()
            .args(["get", "grr", "alice", "-n", &w.ns])
            .output()
            .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("REDEEMED") && table.contains("Accepted"),
        "{table}"
    );
    // An Event for each change, with the changeRef: the Issued one tells the start.
    let events = w.events("alice").await;
    for reason in ["Issued", "Accepted"] {
        let event = events
            .iter()
            .find(|e| e.reason.as_deref() == Some(reason))
            .unwrap_or_else(|| panic!("no {reason} Event in {events:?}"));
        assert!(event.note.as_deref().unwrap_or("").starts_with("[CHG-7]"));
    }
    let metrics = metrics_of(&w.operators[op]).await;
    assert!(metrics.contains(r#"guestreset_redemption_outcomes_total{state="Accepted"} 1"#));
    // Nothing is read after the end, while another guest's follow-through goes on.
    let reads_of_alice = |journal: &[JournalEntry]| {
        follow_reads(journal)
            .into_iter()
            .filter(|e| user_of(e) == ids[0])
            .count()
    };
    let before = reads_of_alice(&w.journal().await);
    w.create_for("bob", &ids[1], "a1@new.example").await;
    wait_until("bob's follow-through to read twice", WAIT, || async {
        let journal = w.journal().await;
        let bob = follow_reads(&journal)
            .into_iter()
            .filter(|e| user_of(e) == ids[1])
            .count();
        (bob >= 2).then_some(())
    })
    .await;
    assert_eq!(reads_of_alice(&w.journal().await), before);
    w.assert_no_secrets_in_logs().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_redemption_is_not_redeemed_after_the_watch() {
    let (users, ids) = guests("n", '2', 1);
    let mut w = World::with_users("notredeemed", users).await;
    // A watch of 20 s: long enough for the gauges (counted every 10 s) to see it pending.
    let op = w.start_operator(&[
        "--redemption-first-check",
        "1s",
        "--redemption-watch",
        "20s",
    ]);
    w.create_for("nora", &ids[0], "n0@new.example").await;
    w.wait_reason("nora", "Issued").await;
    let metrics_pending = wait_until("the pending gauge to count nora", WAIT, || async {
        let text = metrics_of(&w.operators[op]).await;
        text.contains("guestreset_redemptions_pending 1")
            .then_some(text)
    })
    .await;
    assert!(metrics_pending.contains("guestreset_redemption_oldest_pending_age_seconds"));

    let c = w
        .wait_redeemed("nora", "NotRedeemed", Duration::from_secs(30))
        .await;
    assert_eq!(c.status, "False");
    assert!(
        c.message.contains("within the watch of 20s"),
        "{}",
        c.message
    );
    let obj = w.get("nora").await;
    let record = obj.status.unwrap().redemption.unwrap();
    let watched = record
        .last_checked_at
        .unwrap()
        .0
        .duration_since(record.since.0);
    assert!(watched >= jiff::SignedDuration::from_secs(20), "{watched}");
    let warning = w
        .events("nora")
        .await
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("NotRedeemed"))
        .expect("a NotRedeemed Event");
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    // The schedule over 20 s: 1 s steps to 3 s of age, 3 s steps to 12 s, then the deadline.
    let reads = follow_reads(&w.journal().await).len();
    assert!((5..=10).contains(&reads), "{reads} reads in a 20 s watch");
    let text = wait_until("the gauge to drop to 0", WAIT, || async {
        let text = metrics_of(&w.operators[op]).await;
        text.contains("guestreset_redemptions_pending 0")
            .then_some(text)
    })
    .await;
    assert!(text.contains(r#"guestreset_redemption_outcomes_total{state="NotRedeemed"} 1"#));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spec_edit_restarts_the_follow_through() {
    let (users, ids) = guests("e", '3', 1);
    let mut w = World::with_users("refollow", users).await;
    w.start_operator(&["--redemption-first-check", "1s"]);
    w.create_for("eve", &ids[0], "e0@new.example").await;
    w.wait_reason("eve", "Issued").await;
    w.admin.redeem(&ids[0]).await.unwrap();
    w.wait_redeemed("eve", "Accepted", WAIT).await;

    w.patch_spec("eve", json!({"email": "e0@newer.example"}))
        .await;
    // Right after the edit, kubectl wait no longer sees the old generation's redemption.
    assert!(!w.kubectl_wait_redeemed("eve", "2s"));
    w.wait_reason("eve", "Issued").await;
    let c = w.wait_redeemed("eve", "PendingAcceptance", WAIT).await;
    assert_eq!(c.observed_generation, Some(2));
    let record = w.get("eve").await.status.unwrap().redemption.unwrap();
    assert_eq!((record.generation, record.accepted_at), (2, None));
    // The redemption of the new invitation counts for the new generation.
    w.admin.redeem(&ids[0]).await.unwrap();
    assert!(w.kubectl_wait_redeemed("eve", "30s"));
    assert_eq!(w.posts().await.len(), 2, "one invitation per generation");
}

// ---------------------------------------------------------------- cost

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_over_issued_resources_reads_only_what_is_due() {
    const N: usize = 10;
    const DUE: usize = 4;
    let (users, ids) = guests("r", '4', N + 1);
    let mut w = World::with_users("restart", users).await;
    // The first check 2 minutes after issuance: none is due while the test runs, unless made so.
    let args = ["--redemption-first-check", "120s"];
    let op = w.start_operator(&args);
    for (i, id) in ids.iter().take(N).enumerate() {
        w.create_for(&format!("r{i}"), id, &format!("r{i}@new.example"))
            .await;
    }
    for i in 0..N {
        w.wait_redeemed(&format!("r{i}"), "PendingAcceptance", WAIT)
            .await;
    }
    w.operators[op].kill();
    // Make the first DUE resources due, as if their time had come while the operator was down.
    let past = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(5);
    for i in 0..DUE {
        let patch = json!({"status": {"redemption": {"nextCheckAt": past.to_string()}}});
        w.api
            .patch_status(
                &format!("r{i}"),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .unwrap();
    }
    let versions: Vec<String> = futures_versions(&w, N).await;
    let journal_before = w.journal().await.len();

    w.start_operator(&args);
    for i in 0..DUE {
        let name = format!("r{i}");
        wait_until(&format!("{name} to be checked"), WAIT, || async {
            let obj = w.get(&name).await;
            obj.status?.redemption?.last_checked_at.map(|_| ())
        })
        .await;
    }
    // A resource issued after the restart: the operator has been through its whole queue.
    w.create_for("sentinel", &ids[N], "sentinel@new.example")
        .await;
    w.wait_reason("sentinel", "Issued").await;

    let journal = w.journal().await;
    let reads_after: Vec<&str> = journal[journal_before..]
        .iter()
        .filter(|e| e.call == Call::GetUser && ids[..N].iter().any(|id| id == user_of(e)))
        .map(user_of)
        .collect();
    let mut due: Vec<&str> = ids[..DUE].iter().map(String::as_str).collect();
    let mut read = reads_after.clone();
    due.sort();
    read.sort();
    assert_eq!(
        read, due,
        "exactly one read per due resource, none for the others"
    );
    let after = futures_versions(&w, N).await;
    for i in DUE..N {
        assert_eq!(after[i], versions[i], "r{i} was not due: no status write");
    }
    println!(
        "restart over {N} issued resources: {} reads ({DUE} due)",
        read.len()
    );
}

async fn futures_versions(w: &World, n: usize) -> Vec<String> {
    let mut versions = vec![];
    for i in 0..n {
        let obj = w.get(&format!("r{i}")).await;
        versions.push(obj.metadata.resource_version.unwrap_or_default());
    }
    versions
}

/// Issues `names` at once and returns how long until all are `Issued`.
async fn burst(w: &World, names: &[(String, String)]) -> Duration {
    let started = Instant::now();
    for (i, (name, id)) in names.iter().enumerate() {
        w.create_for(name, id, &format!("{name}-{i}@new.example"))
            .await;
    }
    for (name, _) in names {
        w.wait_reason(name, "Issued").await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_stay_within_the_budget_while_a_burst_issues() {
    const N: usize = 20;
    let (users, ids) = guests("b", '5', 2 * N);
    let mut w = World::with_users("budget", users).await;
    let named = |tag: &str, ids: &[String]| -> Vec<(String, String)> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| (format!("{tag}{i}"), id.clone()))
            .collect()
    };
    // Without follow-through reads during the burst (the first check an hour away).
    let quiet = w.start_operator(&["--redemption-first-check", "1h"]);
    let without = burst(&w, &named("q", &ids[..N])).await;
    w.operators[quiet].terminate();
    // With every resource wanting a read each second, and a budget of one read per 2 s.
    let busy = w.start_operator(&[
        "--redemption-first-check",
        "1s",
        "--max-reads-per-minute",
        "30",
    ]);
    let with = burst(&w, &named("f", &ids[N..])).await;
    // Let the follow-through run on a while after the burst, then measure its reads.
    let text = wait_until("reads to be deferred by the budget", WAIT, || async {
        let text = metrics_of(&w.operators[busy]).await;
        text.contains(r#"redemption_checks_total{result="deferred"}"#)
            .then_some(text)
    })
    .await;
    assert!(text.contains(r#"redemption_checks_total{result="read"}"#));
    // Deferred checks come back in turn: wait for a dozen reads (about 24 s at this budget).
    let reads: Vec<jiff::Timestamp> = wait_until("a dozen follow-through reads", WAIT, || async {
        let journal = w.journal().await;
        let reads: Vec<_> = follow_reads(&journal).into_iter().map(at).collect();
        (reads.len() >= 12).then_some(reads)
    })
    .await;
    // At most 30 a minute: never more than 1 + (window / 2 s) in any window.
    for (i, start) in reads.iter().enumerate() {
        for window in [2, 10, 60] {
            let within = reads[i..]
                .iter()
                .filter(|t| t.duration_since(*start) < jiff::SignedDuration::from_secs(window))
                .count();
            assert!(
                within as i64 <= 1 + window / 2,
                "{within} reads within {window} s of {start}"
            );
        }
    }
    // The budget never delays issuance: the same burst, with and without the reads.
    let slower = with.as_secs_f64() / without.as_secs_f64();
    println!(
        "burst of {N}: {without:?} without follow-through, {with:?} with ({:+.0} %); {} reads",
        (slower - 1.0) * 100.0,
        reads.len()
    );
    assert!(
        with <= without.mul_f64(1.5) + Duration::from_secs(2),
        "issuance slowed from {without:?} to {with:?}"
    );
}
