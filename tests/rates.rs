//! End-to-end at the rates users run: the write limit in every window and no wait between the
//! checks and the POST (docs/design.md, "Waiting for a write slot", "The write limit in every
//! window", "The sending window"), with the simulator's journal as the ground truth.

mod common;

use std::time::Duration;

use common::World;
use graph_sim::{Call, FaultAction, FaultRule, JournalEntry};
use guestreset::graph::check_windows_within;
use guestreset_testsupport::wait_until;
use jiff::Timestamp;
use serde_json::{Value, json};

/// The simulator stamps a write when it arrives, not when it left: windows get this much
/// slack for the way.
const SLACK: Duration = Duration::from_millis(250);

fn by_id(id: &str, email: &str) -> Value {
    json!({"user": {"id": id}, "email": email})
}

fn at(entry: &JournalEntry) -> Timestamp {
    entry.at.parse().unwrap()
}

/// The Graph writes (mail PATCHes and invitation POSTs) in the journal.
async fn graph_writes(w: &World) -> Vec<JournalEntry> {
    w.journal()
        .await
        .into_iter()
        .filter(|e| matches!(e.call, Call::PatchUser | Call::PostInvitation))
        .collect()
}

/// Every window of the journal's writes holds at most burst + rate·w of them.
fn assert_every_window(writes: &[JournalEntry], per_minute: u32, burst: u32) {
    let base = tokio::time::Instant::now();
    let first = writes.iter().map(at).min().unwrap();
    let times: Vec<_> = writes
        .iter()
        .map(|e| {
            let offset = at(e).duration_since(first);
            base + Duration::try_from(offset).unwrap()
        })
        .collect();
    if let Err(window) = check_windows_within(&times, per_minute, burst, SLACK) {
        let when: Vec<_> = writes.iter().map(|e| (e.at.as_str(), e.call)).collect();
        panic!("{window}: {when:#?}");
    }
}

fn path_names(entry: &JournalEntry, id: &str) -> bool {
    entry.path.contains(id)
}

/// Issue 19, defect 1. A reset holds a kept one-write turn when its e-mail is edited to one
/// the user does not carry: the new generation needs the mail PATCH and the POST. R's guest is
/// made a member while its PATCH is held; S is left alone. At 12 writes a minute, burst 1, with
/// other resets queued behind them, neither may wait for a slot after its checks: R ends
/// `NotAGuest` with no POST, and S's POST leaves within 10 s of the last read of its user.
/// (Before the fix the one-write turn was reused: the PATCH spent it and the POST waited for a
/// slot after the sending mark, 15 s and more behind the queue, and invited the member.)
#[tokio::test(flavor = "multi_thread")]
async fn a_second_write_after_a_spec_edit_is_in_hand_before_the_checks() {
    let (users, ids) = common::guests("q", '4', 7);
    let mut w = World::with_users("turns", users).await;
    w.start_operator(&["--max-writes-per-minute", "12", "--write-burst", "1"]);
    let names = ["b0", "b1", "r", "s", "o4", "o5", "o6"];
    for (name, (i, id)) in names.iter().zip(ids.iter().enumerate()) {
        // Each e-mail is already the guest's: one write (the POST) per reset.
        w.create(name, by_id(id, &format!("q{i}@x.example"))).await;
    }
    let (r, s) = (&ids[2], &ids[3]);
    w.wait_reason("r", "Pending").await;
    w.wait_reason("s", "Pending").await;
    // The next PATCH is answered only once the test lets it go.
    w.admin
        .add_fault(FaultRule::once(Call::PatchUser, FaultAction::HangAfter))
        .await
        .unwrap();
    w.patch_spec("r", json!({"email": "r-new@x.example"})).await;
    w.wait_reason("r", "Pending").await;
    w.patch_spec("s", json!({"email": "s-new@x.example"})).await;
    w.wait_reason("s", "Pending").await;

    // R's PATCH arrives (held); R's guest becomes a member meanwhile.
    let journal = w.admin.clone();
    let r_id = r.clone();
    wait_until("R's mail PATCH", Duration::from_secs(120), || {
        let journal = journal.clone();
        let r_id = r_id.clone();
        async move {
            let entries = journal.journal().await.map_err(|e| e.to_string())?;
            let patched = entries
                .iter()
                .any(|e| e.call == Call::PatchUser && path_names(e, &r_id));
            if patched {
                Ok(Some(()))
            } else {
                Err("not yet".to_owned())
            }
        }
    })
    .await;
    w.admin.convert_to_member(r).await.unwrap();
    w.admin.release_held().await.unwrap();

    w.wait_reason_for("r", "NotAGuest", Duration::from_secs(120))
        .await;
    w.wait_reason_for("s", "Issued", Duration::from_secs(120))
        .await;
    for name in ["b0", "b1", "o4", "o5", "o6"] {
        w.wait_reason_for(name, "Issued", Duration::from_secs(120))
            .await;
    }
    let journal = w.journal().await;
    let post_for = |id: &str| {
        journal
            .iter()
            .filter(|e| e.call == Call::PostInvitation)
            .filter(|e| e.invited_user_id.as_deref() == Some(id))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        post_for(r).is_empty(),
        "a POST for the member: {:#?}",
        post_for(r)
    );
    let s_posts = post_for(s);
    assert_eq!(s_posts.len(), 1, "{s_posts:#?}");
    let post = &s_posts[0];
    let last_read = journal
        .iter()
        .rfind(|e| e.seq < post.seq && e.call == Call::GetUser && path_names(e, s))
        .expect("S's user was read before its POST");
    let age = at(post).duration_since(at(last_read));
    assert!(
        age <= jiff::SignedDuration::from_secs(10),
        "S's POST left {age} after the last read of its user"
    );
    let writes = graph_writes(&w).await;
    assert_eq!(writes.len(), 5 + 2 + 1, "{writes:#?}");
    assert_every_window(&writes, 12, 1);
}

/// Issue 19, defect 2. 40 resets queued at 36 writes a minute with a burst of 18 (the ratio of
/// burst to rate of the defaults, 30 s of writes, at six times their pace, so that the test
/// takes about 80 s rather than 7 minutes); Graph blocks the tenant after a few writes; the
/// cool-down is 40 s, longer than the burst takes to refill, so that the turns falling due
/// during it outnumber the burst. In every window of the journal at most burst + rate·w
/// writes, and none into the pause after 1 s. A guard, not a reproduction: run against the code
/// before the fix (and at 30/min, burst 3, a 30 s cool-down) it passed too, because the
/// requeue's jitter spread the resources that came back after the pause; the saved-up turns
/// are caught by the limiter's tests and the model test.
#[tokio::test(flavor = "multi_thread")]
async fn queued_resets_keep_the_limit_in_every_window_across_a_pause() {
    const N: usize = 40;
    let (users, ids) = common::guests("p", '5', N);
    let mut w = World::with_users("windows", users).await;
    w.start_operator(&[
        "--max-writes-per-minute",
        "36",
        "--write-burst",
        "18",
        "--tenant-block-cooldown",
        "40s",
    ]);
    for (i, id) in ids.iter().enumerate() {
        w.create(&format!("p{i}"), by_id(id, &format!("p{i}@x.example")))
            .await;
    }
    let admin = w.admin.clone();
    wait_until("6 POSTs", Duration::from_secs(60), || {
        let admin = admin.clone();
        async move {
            let posts = admin.invitation_posts().await.map_err(|e| e.to_string())?;
            if posts.len() >= 6 {
                Ok(Some(()))
            } else {
                Err(format!("{} POSTs", posts.len()))
            }
        }
    })
    .await;
    w.admin
        .add_fault(FaultRule::once(
            Call::PostInvitation,
            FaultAction::AbuseBlock,
        ))
        .await
        .unwrap();
    for i in 0..N {
        w.wait_reason_for(&format!("p{i}"), "Issued", Duration::from_secs(180))
            .await;
    }
    let writes = graph_writes(&w).await;
    assert_eq!(writes.len(), N + 1, "one blocked POST, one for each reset");
    assert_every_window(&writes, 36, 18);
    let blocked = writes
        .iter()
        .find(|e| e.status == 403)
        .expect("the abuse answer");
    let pause_end = at(blocked) + jiff::SignedDuration::from_secs(40);
    let into_pause: Vec<_> = writes
        .iter()
        .filter(|e| at(e) > at(blocked) + jiff::SignedDuration::from_secs(1) && at(e) < pause_end)
        .collect();
    assert!(
        into_pause.is_empty(),
        "writes into the pause: {into_pause:#?}"
    );
}
