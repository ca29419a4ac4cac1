//! The invariants computed from the simulator's journal and the test's own clock alone, never
//! from a record the controller writes: the tenant pause (8, 9), the write limit in every
//! window (10) and the send window of a POST (11, which takes the mark from the watched
//! statuses and the POST's time from the journal).

use std::collections::BTreeSet;

use graph_sim::{Call, JournalEntry};
use jiff::{SignedDuration, Timestamp};

use crate::{Figures, Violation, describe_entry};

/// After Graph's abuse answer, how long a Graph write may still arrive: the process that got
/// it records the block at once, the other sees the record through its watch within
/// milliseconds, and a write whose check came just before is on its way: no write into a
/// recorded pause after 1 s (docs/design.md, "The tenant pause").
pub const PAUSE_GRACE: SignedDuration = SignedDuration::from_secs(1);
/// How long the process that got the abuse answer may take to record it (the answer's way
/// back, a ConfigMap write): a kill within this long after the answer may have lost the block.
const RECORDING: SignedDuration = SignedDuration::from_millis(500);
/// How long a probe's answer may take when the simulator held it and the journal has no
/// answer: the operators' Graph timeout, after which the controller gave up waiting.
const PROBE_ANSWER: SignedDuration = SignedDuration::from_secs(5);
/// docs/design.md, "The sending window": the POST leaves within 5 s of `postStartedAt`.
const SEND_WINDOW: SignedDuration = SignedDuration::from_secs(5);
/// `postStartedAt` has whole seconds, rounded up (a metav1.Time): the mark was up to 1 s
/// before the value the status shows, never after it.
const MARK_GRANULARITY: SignedDuration = SignedDuration::from_secs(1);
/// The request's way from the controller to the simulator's journal.
const ARRIVAL: SignedDuration = SignedDuration::from_millis(500);
/// A write the journal dates a moment after the controller's slot (the request's way to the
/// simulator): windows are widened by this much.
const WINDOW_SLACK: SignedDuration = SignedDuration::from_millis(200);

/// When one controller process ran, by the test's clock.
#[derive(Clone, Copy, Debug)]
pub struct Life {
    pub start: Timestamp,
    /// When the test SIGKILLed it; None while it still runs.
    pub end: Option<Timestamp>,
}

impl Life {
    /// How long it ran within `[from, to]` (zero when it did not).
    fn overlap(&self, from: Timestamp, to: Timestamp) -> SignedDuration {
        // A request sent just before the kill reaches the journal a moment after it.
        let end = self.end.map_or(to, |e| (e + WINDOW_SLACK).min(to));
        let start = self.start.max(from);
        if end < start {
            SignedDuration::ZERO
        } else {
            end.duration_since(start)
        }
    }

    fn alive_in(&self, from: Timestamp, to: Timestamp) -> bool {
        self.start <= to && self.end.is_none_or(|e| e + WINDOW_SLACK >= from)
    }
}

/// The write limit each process runs with.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

fn at(e: &JournalEntry) -> Option<Timestamp> {
    e.at.parse().ok()
}

fn is_write(e: &JournalEntry) -> bool {
    matches!(e.call, Call::PatchUser | Call::PostInvitation)
}

/// Every Graph write the journal holds (also those a fault answered or dropped: they left the
/// controller), oldest first.
fn writes(journal: &[JournalEntry]) -> Vec<(Timestamp, &JournalEntry)> {
    let mut w: Vec<_> = journal
        .iter()
        .filter(|e| is_write(e))
        .filter_map(|e| Some((at(e)?, e)))
        .collect();
    w.sort_by_key(|(t, e)| (*t, e.seq));
    w
}

/// Invariants 8 and 9. For each abuse answer at `A` in the journal: no Graph write by any
/// process in `[A + PAUSE_GRACE, A + cooldown)`; once the cool-down is over, until the first
/// probe's POST is answered, at most one probe (one pass: a mail PATCH and a POST) per process
/// that ran. A block whose process the test may have killed before it recorded the block
/// (a kill within 500 ms of the answer) is excused and counted.
pub fn pauses(
    journal: &[JournalEntry],
    lives: &[Life],
    kills: &[Timestamp],
    cooldown: SignedDuration,
    figures: &mut Figures,
) -> Vec<Violation> {
    let writes = writes(journal);
    let blocks: Vec<Timestamp> = journal
        .iter()
        .filter(|e| e.fault.as_deref() == Some("AbuseBlock"))
        .filter_map(at)
        .collect();
    let mut v = Vec::new();
    for (k, &block) in blocks.iter().enumerate() {
        figures.tenant_blocks += 1;
        if kills
            .iter()
            .any(|&kill| kill >= block && kill <= block + RECORDING)
        {
            figures.pauses_lost_to_kills += 1;
            continue;
        }
        let known = block + PAUSE_GRACE;
        let end = block + cooldown;
        for (t, e) in &writes {
            if *t > block && *t < known {
                figures.writes_in_grace += 1;
            } else if *t >= known && *t < end {
                v.push(Violation {
                    invariant: "8 (no Graph write during a tenant pause)",
                    summary: format!(
                        "{} at {t}: Graph blocked the tenant at {block} (journal), paused until {end}, grace until {known}",
                        describe_entry(e)
                    ),
                    detail: String::new(),
                });
            }
        }
        // The probe is checked for the last block of a chain only: a block answered within
        // the cool-down of an earlier one starts a pause of its own.
        if blocks.get(k + 1).is_none_or(|&next| next >= end) {
            v.extend(probes(&writes, lives, block, end, figures));
        }
    }
    v
}

/// Invariant 9 for one pause that ended at `end`: the writes from `end` until the first
/// answer to a POST after it (the time the journal dated the answer; at once for a dropped
/// connection; the Graph timeout for a held answer the client gave up on). Every process gets
/// one probe: at most one POST each, and the writes go to at most one user each (a probe
/// whose mail PATCH got no answer sends it again; that is still one probe). Turns saved up
/// during the pause and spent at its end show up here as writes for other users.
fn probes(
    writes: &[(Timestamp, &JournalEntry)],
    lives: &[Life],
    block: Timestamp,
    end: Timestamp,
    figures: &mut Figures,
) -> Vec<Violation> {
    let Some(over) = writes
        .iter()
        .filter(|(t, e)| *t >= end && e.call == Call::PostInvitation)
        .map(|&(t, e)| answered(t, e))
        .min()
    else {
        return vec![];
    };
    let phase: Vec<&(Timestamp, &JournalEntry)> = writes
        .iter()
        .filter(|(t, _)| *t >= end && *t <= over)
        .collect();
    let processes = lives.iter().filter(|l| l.alive_in(end, over)).count();
    let posts = phase
        .iter()
        .filter(|(_, e)| e.call == Call::PostInvitation)
        .count();
    let users: BTreeSet<Option<&str>> = phase.iter().map(|(_, e)| target(e)).collect();
    figures.probes += posts.min(processes);
    if posts <= processes && users.len() <= processes {
        return vec![];
    }
    let mut detail = String::from("  the writes after the cool-down:\n");
    for (_, e) in &phase {
        detail.push_str(&format!("  {}\n", describe_entry(e)));
    }
    vec![Violation {
        invariant: "9 (one probe per process after a pause)",
        summary: format!(
            "the pause of the block at {block} ended at {end}; until {over} {posts} POSTs and writes for {} users by {processes} process(es): at most one probe (a user's PATCH and POST) each",
            users.len()
        ),
        detail,
    }]
}

/// When the controller had the answer of the write `e` journaled at `t`.
fn answered(t: Timestamp, e: &JournalEntry) -> Timestamp {
    match e.answered_at.as_deref().and_then(|a| a.parse().ok()) {
        Some(answer) => answer,
        None if e.status == 0 => t,
        None => t + PROBE_ANSWER,
    }
}

/// The user a write is for: the object id in a PATCH's path, `invitedUser.id` of a POST.
fn target(e: &JournalEntry) -> Option<&str> {
    match e.call {
        Call::PostInvitation => e.invited_user_id.as_deref(),
        _ => e.path.strip_prefix("/v1.0/users/"),
    }
}

/// The most writes `rate` lets the processes send within `[from, to]`: each process that ran
/// then has its own bucket, full when it starts (burst) and refilled while it runs.
fn allowed(lives: &[Life], rate: Rate, from: Timestamp, to: Timestamp) -> f64 {
    let per_second = f64::from(rate.per_minute) / 60.0;
    lives
        .iter()
        .filter(|l| l.alive_in(from, to))
        .map(|l| {
            let ran = l.overlap(from - WINDOW_SLACK, to + WINDOW_SLACK);
            f64::from(rate.burst) + per_second * ran.as_secs_f64()
        })
        .sum()
}

/// Invariant 10: in every window `[t_i, t_j]` between two writes of the journal, at most
/// burst + rate·w writes per process that ran in it (two processes without leader election
/// are two limiters). Reports the worst window only.
pub fn windows(journal: &[JournalEntry], lives: &[Life], rate: Rate) -> Vec<Violation> {
    let writes = writes(journal);
    let mut worst: Option<(usize, usize, f64)> = None;
    for i in 0..writes.len() {
        for j in i..writes.len() {
            let count = j - i + 1;
            let bound = allowed(lives, rate, writes[i].0, writes[j].0);
            let excess = count as f64 - bound.floor();
            if excess > 0.0 && worst.is_none_or(|(_, _, e)| excess > e) {
                worst = Some((i, j, excess));
            }
        }
    }
    let Some((i, j, _)) = worst else {
        return vec![];
    };
    let (from, to) = (writes[i].0, writes[j].0);
    let mut detail = String::from("  the writes of the window:\n");
    for (_, e) in &writes[i..=j] {
        detail.push_str(&format!("  {}\n", describe_entry(e)));
    }
    vec![Violation {
        invariant: "10 (the write limit in every window)",
        summary: format!(
            "{} Graph writes from {from} to {to} ({:.1} s); {} processes ran then, each allowed {} + {}/min: {:.1}",
            j - i + 1,
            to.duration_since(from).as_secs_f64(),
            lives.iter().filter(|l| l.alive_in(from, to)).count(),
            rate.burst,
            rate.per_minute,
            allowed(lives, rate, from, to)
        ),
        detail,
    }]
}

/// Invariant 11: every POST the journal holds for a resource's guest follows a
/// `postStartedAt` of that resource by at most 5 s. `marks` are the resource's marks the
/// status watch saw, `name` and the POSTs are its.
pub fn send_window(name: &str, marks: &[Timestamp], posts: &[&JournalEntry]) -> Vec<Violation> {
    let mut v = Vec::new();
    for e in posts {
        let Some(sent) = at(e) else { continue };
        let latest = marks
            .iter()
            .filter(|&&m| m - MARK_GRANULARITY <= sent + ARRIVAL)
            .max();
        let in_time = latest.is_some_and(|&m| sent <= m + SEND_WINDOW + ARRIVAL);
        if !in_time {
            v.push(Violation {
                invariant: "11 (a POST within 5 s of its mark)",
                summary: format!(
                    "{name}: {} sent at {sent}; the latest postStartedAt before it: {latest:?}",
                    describe_entry(e)
                ),
                detail: String::new(),
            });
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_800_000_000_000 + ms).unwrap()
    }

    fn entry(seq: u64, ms: i64, call: Call, status: u16, fault: Option<&str>) -> JournalEntry {
        JournalEntry {
            seq,
            at: t(ms).to_string(),
            method: "POST".into(),
            path: "/v1.0/invitations".into(),
            query: None,
            client_request_id: None,
            call,
            status,
            effect: None,
            fault: fault.map(str::to_owned),
            invited_user_id: None,
            invited_email: None,
            // Answered at once, unless held or dropped.
            answered_at: (fault != Some("HangAfter") && status != 0).then(|| t(ms).to_string()),
        }
    }

    fn post(seq: u64, ms: i64) -> JournalEntry {
        entry(seq, ms, Call::PostInvitation, 201, None)
    }

    /// A write for `user`: a mail PATCH, or a POST when `call` says so.
    fn write_for(user: &str, seq: u64, ms: i64, call: Call, fault: Option<&str>) -> JournalEntry {
        let status = match (call, fault) {
            (_, Some("DropConnectionBefore")) => 0,
            (Call::PostInvitation, _) => 201,
            _ => 204,
        };
        let mut e = entry(seq, ms, call, status, fault);
        match call {
            Call::PostInvitation => e.invited_user_id = Some(user.to_owned()),
            _ => {
                e.method = "PATCH".into();
                e.path = format!("/v1.0/users/{user}");
            }
        }
        e
    }

    fn pauses_with_a_3_s_cooldown(
        journal: &[JournalEntry],
        kills: &[Timestamp],
    ) -> (Vec<Violation>, Figures) {
        let mut figures = Figures::default();
        let cooldown = SignedDuration::from_secs(3);
        let v = pauses(journal, &one_life(), kills, cooldown, &mut figures);
        (v, figures)
    }

    fn one_life() -> Vec<Life> {
        vec![Life {
            start: t(-100_000),
            end: None,
        }]
    }

    /// Invariant 8: a write in the grace after the abuse answer is counted, one after it and
    /// before the end of the cool-down is a violation, one after that is not; invariant 9:
    /// the pause ends with one probe.
    #[test]
    fn writes_during_a_pause_are_found_from_the_journal_alone() {
        let journal = [
            post(1, 0),
            entry(2, 100, Call::PostInvitation, 403, Some("AbuseBlock")),
            post(3, 900),  // within the grace
            post(4, 1500), // every process knew: a violation
            post(5, 3000), // still paused (the cool-down ends at +3100)
            post(6, 3200), // the probe, which goes through
            post(7, 4000), // after the probe's answer
        ];
        let (v, figures) = pauses_with_a_3_s_cooldown(&journal, &[]);
        let found: Vec<&str> = v.iter().map(|v| v.summary.as_str()).collect();
        assert_eq!(v.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with(&describe_entry(&journal[3])),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with(&describe_entry(&journal[4])),
            "{found:#?}"
        );
        assert_eq!((figures.tenant_blocks, figures.writes_in_grace), (1, 1));
        assert_eq!(figures.probes, 1);
    }

    #[test]
    fn saved_up_turns_spent_when_a_pause_ends_are_more_than_one_probe() {
        let mut journal = vec![entry(1, 0, Call::PostInvitation, 403, Some("AbuseBlock"))];
        // The probe hangs; mail PATCHes for four more users follow at once.
        journal.push(entry(2, 3000, Call::PostInvitation, 200, Some("HangAfter")));
        journal.extend((3..7).map(|seq| {
            write_for(
                &format!("u{seq}"),
                seq,
                3000 + seq as i64,
                Call::PatchUser,
                None,
            )
        }));
        let (v, _) = pauses_with_a_3_s_cooldown(&journal, &[]);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].invariant.starts_with("9 "), "{v:#?}");
        // A kill right after the abuse answer may have lost the block: excused.
        let kills = [t(300)];
        let (v, figures) = pauses_with_a_3_s_cooldown(&journal, &kills);
        assert!(v.is_empty(), "{v:#?}");
        assert_eq!(figures.pauses_lost_to_kills, 1);
    }

    /// A probe whose mail PATCH lost its connection sends it again before its POST: one
    /// user, one probe. A second user's PATCH before any answer is a second probe.
    #[test]
    fn a_probe_that_sends_its_patch_again_is_one_probe() {
        let block = entry(1, 0, Call::PostInvitation, 403, Some("AbuseBlock"));
        let probe = [
            write_for("u1", 2, 3100, Call::PatchUser, Some("DropConnectionBefore")),
            write_for("u1", 3, 4500, Call::PatchUser, None),
            write_for("u1", 4, 4600, Call::PostInvitation, Some("HangAfter")),
        ];
        let journal: Vec<_> = std::iter::once(block.clone())
            .chain(probe.clone())
            .collect();
        let (v, figures) = pauses_with_a_3_s_cooldown(&journal, &[]);
        assert!(v.is_empty(), "{v:#?}");
        assert_eq!(figures.probes, 1);
        let mut second = journal.clone();
        second.push(write_for("u2", 5, 5000, Call::PatchUser, None));
        let (v, _) = pauses_with_a_3_s_cooldown(&second, &[]);
        assert_eq!(v.len(), 1, "{v:#?}");
    }

    /// The phase ends at the first answer to any probe, dated by the journal. A CI run (seed 1
    /// at 600 writes a minute) had this: the first process's probe held until its timeout;
    /// the second's PATCH lost its connection and went again, its POST was answered 2.5 s
    /// late, and its next write followed that answer. Counted until the first POST's timeout,
    /// five writes looked like more than two probes.
    #[test]
    fn writes_after_the_first_answer_to_a_probe_are_free() {
        let two = [one_life()[0], one_life()[0]];
        let mut delayed = write_for("u2", 5, 3400, Call::PostInvitation, Some("DelayAfter"));
        delayed.answered_at = Some(t(5900).to_string());
        let journal = [
            entry(1, 0, Call::PostInvitation, 403, Some("AbuseBlock")),
            write_for("u1", 2, 3100, Call::PostInvitation, Some("HangAfter")),
            write_for("u2", 3, 3150, Call::PatchUser, Some("DropConnectionBefore")),
            write_for("u2", 4, 3300, Call::PatchUser, None),
            delayed,
            write_for("u3", 6, 6000, Call::PatchUser, None),
        ];
        let mut figures = Figures::default();
        let cooldown = SignedDuration::from_secs(3);
        let v = pauses(&journal, &two, &[], cooldown, &mut figures);
        assert!(v.is_empty(), "{v:#?}");
        assert_eq!(figures.probes, 2);
        // Before that answer, the third user's PATCH is a third probe for two processes.
        let mut early = journal.clone();
        early[5] = write_for("u3", 6, 5800, Call::PatchUser, None);
        let v = pauses(&early, &two, &[], cooldown, &mut figures);
        assert_eq!(v.len(), 1, "{v:#?}");
    }

    #[test]
    fn a_burst_beyond_the_bucket_is_found_in_its_window() {
        let rate = Rate {
            per_minute: 6,
            burst: 3,
        };
        // Three at once, then one 10 s later: exactly the bucket.
        let fits: Vec<_> = [0, 10, 20, 10_000]
            .iter()
            .enumerate()
            .map(|(i, &ms)| post(i as u64, ms))
            .collect();
        assert!(windows(&fits, &one_life(), rate).is_empty());
        // A fourth within 5 s of the three: one too many.
        let over: Vec<_> = [0, 10, 20, 5_000]
            .iter()
            .enumerate()
            .map(|(i, &ms)| post(i as u64, ms))
            .collect();
        let v = windows(&over, &one_life(), rate);
        assert_eq!(v.len(), 1, "{v:#?}");
        // Two processes are two buckets.
        let two = [one_life()[0], one_life()[0]];
        assert!(windows(&over, &two, rate).is_empty());
        // A process that started after the window does not widen it.
        let late = [
            one_life()[0],
            Life {
                start: t(60_000),
                end: None,
            },
        ];
        assert_eq!(windows(&over, &late, rate).len(), 1);
    }

    #[test]
    fn a_post_long_after_its_mark_is_found() {
        // Marks are whole seconds, rounded up: the one at +31 s may precede a POST at +30.3 s.
        let marks = [t(0), t(20_000), t(31_000)];
        let posts = [post(1, 4_000), post(2, 20_100), post(5, 30_300)];
        let refs: Vec<&JournalEntry> = posts.iter().collect();
        assert!(send_window("r0", &marks, &refs).is_empty());
        let late = [post(3, 12_000), post(4, -2_000)];
        let refs: Vec<&JournalEntry> = late.iter().collect();
        let v = send_window("r0", &marks, &refs);
        assert_eq!(v.len(), 2, "{v:#?}");
    }
}
