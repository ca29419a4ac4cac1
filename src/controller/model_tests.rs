//! Randomized, shrinking tests of the pass against a model of the world: the API server's
//! optimistic concurrency, a directory with one guest, Graph's answers, and two controllers
//! whose passes interleave step by step with crashes, conflicts, spec edits, retry
//! annotations and changes made by others. The executor under test is the controller's own
//! (`PassRunner` and `decide`); only the effects are modelled.
//!
//! The model's world also fails as production's does: status writes that are refused or whose
//! answer is lost after they landed; a process that begins to stop (SIGTERM, or a leader past
//! its renew deadline, whose write fence then holds back even a marked POST); a directory whose
//! reads show a reset's effect up to 100 s late (within the replication window), a guest that
//! is deleted and restored, another user taking the e-mail; someone else's Secret of the
//! `redeemUrlSecret` name; a view of the pause record that shows another process's pause up to
//! 10 s late (the view's freshness bound); a target Graph refuses to reset (it holds a directory
//! role); another resource of the process meeting the abuse answer right after a POST was
//! answered; and a random spread of the follow-through's checks.
//! Reads of the resource itself are quorum reads in production (`read_again`), so they do not
//! lag here either.
//!
//! Invariants, checked on every status write, every Graph write and after every action:
//! - at most one effective POST per generation, plus one per retry value set for it;
//! - a recovered `Issued` only when the attempt's POST took effect, or the directory cannot
//!   tell (someone else changed the guest's redemption state after the state the attempt
//!   recorded, or an earlier reset showed only after the attempt began);
//! - `OutcomeUnknown` only when the attempt's POST took no effect or the guest was deleted
//!   meanwhile, and an attempt whose POST took effect is never dropped without its invitation
//!   recorded;
//! - never a POST for a non-guest, on a read of the user or of the e-mail's holders older than
//!   10 s, to an e-mail another user carried when the holders were read, while the tenant is
//!   paused as the writer's view showed it at its gate read, or to an address outside the
//!   allowed domains;
//! - no Graph write by a pass that found someone else's Secret or did not look; no Graph write
//!   by a stopping process but the POST it marked before it began to stop, and no sending mark
//!   after it began;
//! - a target Graph refused is left with the mail it had before the controller changed it
//!   without a reset (or the report says to put it back by hand), and gets no further POST for
//!   its generation without a new retry value;
//! - at every Graph write, with the real write limiter at the production defaults (6 writes a
//!   minute, burst 3) on the model's clock: the write spends a slot its pass holds and that is
//!   due; a POST leaves at most 5 s after its sending mark and 10 s after the last read of the
//!   user; in every window of length w, at most burst + rate·w writes by a writer, across its
//!   restarts (each restart starts a new limiter);
//! - observedGeneration never goes down;
//! - with approval required (half the cases): never a POST for a generation without an
//!   approval of that generation by someone other than its requester whose right the API
//!   server confirmed, and the controller never changes an approval (docs/resource.md,
//!   "Approval"). The model's approvals include the ones admission would refuse (by the
//!   requester, by someone without the right), as if the policy had been missing.
//!
//! Each step takes a second of the model's clock. `PROPTEST_CASES` sets the number of cases
//! (CI runs the default below); a failure prints the case, the seed and the shrunk sequence
//! of actions.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use super::audit::AuditRecord;
use super::core::input::{
    Failure, FollowUp, Lookup, Posted, Resolution, SecretOwner, Settings, SlotTurn, TenantGate,
};
use super::exec::io::Io;
use super::exec::pass::{End, Outcome, PassRunner};
use super::status;
use crate::graph::{
    DirectoryUser, RedeemUrl, ResetRedemptionRequest, SHORT_WAIT, Turn, TurnKey, WriteLimiter,
    WriteSlot, check_windows,
};
use crate::resource::GuestRedemptionReset;
use crate::resource::reason::Reason;
use tokio::time::Instant;

const USER: &str = "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41";
const ALLOWED: &str = "newco.example";

use super::fixtures::{self, at};

/// Graph's time of a change made in model second `now`: with a fraction of a second, as Graph
/// may give it, a different one from second to second (none in one second of seven).
fn change_time(now: i64) -> Timestamp {
    at(now) + SignedDuration::from_millis(now.rem_euclid(7) * 143)
}

/// The model's second of a time the controller wrote (`at(second)`).
fn model_second(t: Timestamp) -> i64 {
    t.as_second() - at(0).as_second()
}

/// What Graph answers to the call a step makes (a step makes at most one).
#[derive(Clone, Copy, Debug)]
enum Answer {
    Ok,
    /// A 5xx or a lost connection after sending; `took_effect` says what the directory did.
    Ambiguous {
        took_effect: bool,
    },
    Throttled,
    Transient,
    Rejected,
    AbuseBlocked,
    /// Graph refuses to reset this target (403 `Authorization_RequestDenied`: it holds a
    /// directory role). Only a POST is refused; reads and the mail PATCH succeed.
    TargetRefused,
}

#[derive(Clone, Debug)]
enum Action {
    /// Writer 0 or 1 performs one step of its pass (starting one when it has none).
    Step(usize, Answer),
    /// Writer 0 or 1 performs up to this many steps, Graph answering Ok but for the last.
    Burst(usize, u8, Answer),
    /// Writer 0 or 1 performs this many steps, Graph answering Ok; right after a POST of
    /// these steps is answered, another resource of the same process meets the abuse answer
    /// (the pause then reaches a pass whose POST is answered and not yet reported).
    BurstIntoBlock(usize, u8),
    /// The writer's process dies and starts again: its pass, its slots and its limiter's
    /// turns are gone.
    Crash(usize),
    /// Time passes.
    Tick(u16),
    /// A human edits the spec: a new generation, a new e-mail (maybe outside the policy).
    EditSpec { allowed_domain: bool },
    /// A human sets the retry annotation to a new value.
    Retry,
    /// Someone else resets the guest's redemption (PendingAcceptance, now).
    ForeignInvite,
    /// The guest redeems (Accepted, now).
    GuestRedeems,
    /// An admin turns the guest into a member.
    ConvertToMember,
    /// Another resource met Graph's abuse answer: the tenant is paused for every pass, also
    /// one whose POST is out or answered and not yet reported.
    BlockedElsewhere,
    /// An admin puts the spec's e-mail on the user's mail (one write left to make), or takes
    /// it away (the mail PATCH is needed again) — between a turn's reservation and its claim.
    AdminMail { to_spec: bool },
    /// Another writer changes the object's metadata: the next guarded write conflicts.
    Touch,
    /// A decision on the current generation: by the approver, or by the requester (which
    /// admission would refuse); approving or denying.
    Decide { by_requester: bool, approve: bool },
    /// The approver's right to approve is withdrawn or granted again.
    ApproverRight(bool),
    /// The next status write fails: refused, or (`lost_answer`) written and its answer lost.
    ApiFault { lost_answer: bool },
    /// The writer's process begins to stop: SIGTERM, or (`renew_deadline`) its leader Lease
    /// was not renewed in time, which also closes its write fence (no Graph write leaves,
    /// not even a POST already marked). It exits when its pass has ended, and starts again.
    Stop { writer: usize, renew_deadline: bool },
    /// Someone creates a Secret of the spec's `redeemUrlSecret` name that the resource does
    /// not own (replacing the resource's own), or deletes it.
    ForeignSecret(bool),
    /// Another user of the directory takes the spec's e-mail, or gives it up.
    OtherHolder(bool),
    /// The guest is deleted, or restored from the deleted items.
    UserGone(bool),
}

/// What a case fixes for all its actions.
#[derive(Clone, Copy, Debug)]
struct Case {
    require_approval: bool,
    /// Whether the spec names a `redeemUrlSecret`.
    redeem_url_secret: bool,
    /// Seconds before a reset's effect shows in the directory's reads (its change time is
    /// the POST's): within the replication window, as the contract assumes (docs/graph.md).
    evidence_lag: i64,
    /// Seconds before a pause another process recorded shows in this process's view of the
    /// record: at most the view's freshness bound, 10 s (docs/design.md, "The tenant view").
    view_lag: i64,
    /// The seed of the follow-through's random spread.
    jitter_seed: u64,
}

impl Case {
    /// No approval, no Secret, a directory and a view without lag.
    fn plain() -> Self {
        Case {
            require_approval: false,
            redeem_url_secret: false,
            evidence_lag: 0,
            view_lag: 0,
            jitter_seed: 1,
        }
    }
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(0i64), 1..=100i64],
        prop_oneof![Just(0i64), 1..=10i64],
        any::<u64>(),
    )
        .prop_map(
            |(require_approval, redeem_url_secret, evidence_lag, view_lag, jitter_seed)| Case {
                require_approval,
                redeem_url_secret,
                evidence_lag,
                view_lag,
                jitter_seed,
            },
        )
}

/// A reset that took effect.
#[derive(Clone, Debug)]
struct Reset {
    attempt: Option<String>,
    sent: i64,
    shows_from: i64,
}

/// The Secret of the spec's `redeemUrlSecret` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Secret {
    Absent,
    /// Created by the controller, owned by the resource.
    Ours,
    /// Someone else's, since this second.
    Foreign {
        since: i64,
    },
}

/// The requester of every generation, and the one approver, in the model.
const REQUESTER: &str = "alice";
const APPROVER: &str = "bob";

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        6 => Just(Answer::Ok),
        1 => any::<bool>().prop_map(|took_effect| Answer::Ambiguous { took_effect }),
        1 => Just(Answer::Throttled),
        1 => Just(Answer::Transient),
        1 => Just(Answer::Rejected),
        1 => Just(Answer::AbuseBlocked),
        1 => Just(Answer::TargetRefused),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        12 => (0..2usize, answer()).prop_map(|(w, a)| Action::Step(w, a)),
        12 => (0..2usize, 2..14u8, answer()).prop_map(|(w, n, a)| Action::Burst(w, n, a)),
        1 => (0..2usize, 2..20u8).prop_map(|(w, n)| Action::BurstIntoBlock(w, n)),
        2 => (0..2usize).prop_map(Action::Crash),
        4 => (1..400u16).prop_map(Action::Tick),
        2 => any::<bool>().prop_map(|allowed_domain| Action::EditSpec { allowed_domain }),
        1 => Just(Action::Retry),
        1 => Just(Action::ForeignInvite),
        1 => Just(Action::GuestRedeems),
        1 => Just(Action::ConvertToMember),
        1 => Just(Action::BlockedElsewhere),
        2 => any::<bool>().prop_map(|to_spec| Action::AdminMail { to_spec }),
        2 => Just(Action::Touch),
        3 => (prop::bool::weighted(0.2), prop::bool::weighted(0.8))
            .prop_map(|(by_requester, approve)| Action::Decide { by_requester, approve }),
        1 => any::<bool>().prop_map(Action::ApproverRight),
        2 => any::<bool>().prop_map(|lost_answer| Action::ApiFault { lost_answer }),
        1 => (0..2usize, any::<bool>())
            .prop_map(|(writer, renew_deadline)| Action::Stop { writer, renew_deadline }),
        1 => any::<bool>().prop_map(Action::ForeignSecret),
        1 => any::<bool>().prop_map(Action::OtherHolder),
        1 => prop::bool::weighted(0.4).prop_map(Action::UserGone),
    ]
}

/// The world both controllers act on.
struct World {
    obj: GuestRedemptionReset,
    rv: u64,
    user: DirectoryUser,
    now: i64,
    paused_until: Option<i64>,
    retry_values: u32,
    /// Retry values set per generation.
    retries: HashMap<i64, u32>,
    /// Effective POSTs per generation, and the attempts whose POST took effect.
    effective: HashMap<i64, u32>,
    effective_attempts: HashSet<String>,
    /// When someone else changed the guest's redemption state.
    foreign_changes: Vec<i64>,
    /// The last read of the user per writer: when, and the userType it showed.
    last_read: [Option<(i64, bool)>; 2],
    /// When each writer's current pass last read the tenant gate.
    last_gate: [Option<i64>; 2],
    /// The retry value each writer's sending mark recorded as seen: its POST is covered by a
    /// decision on that retry, whatever another writer accepted since.
    marked_retry: [Option<String>; 2],
    /// When the current tenant pause began.
    paused_since: Option<i64>,
    settings: Settings,
    next_id: u32,
    /// Whether the API server's authorizer lets the approver approve, now.
    approver_may: bool,
    /// Generations, with the retry value, whose approval by the approver the API server
    /// confirmed to a controller.
    confirmed: HashSet<(i64, Option<String>)>,
    /// The model's second 0 on the limiters' clock.
    base: Instant,
    /// Each writer's write limiter (its process's), at the production defaults.
    limiters: [WriteLimiter; 2],
    /// The write slots each writer's current pass holds.
    held: [std::collections::VecDeque<WriteSlot>; 2],
    /// When each writer's current pass marked its POST as sending.
    marked: [Option<i64>; 2],
    /// When each writer's Graph writes left, across its restarts.
    writes: [Vec<Instant>; 2],
    case: Case,
    /// Who recorded the current pause: a writer (whose process knows at once) or, `None`,
    /// another process (seen `view_lag` later).
    recorded_by: Option<usize>,
    /// The end of the pause each writer's process learnt from its own abuse answer.
    paused_seen: [Option<i64>; 2],
    /// The next status write fails; `Some(true)`: after it landed (the answer is lost).
    api_fault: Option<bool>,
    /// Since when each writer's process is stopping, and whether its write fence is closed.
    stopping: [Option<i64>; 2],
    fenced: [bool; 2],
    secret: Secret,
    /// When each writer's current pass read the Secret's owner.
    secret_read: [Option<i64>; 2],
    /// Another user carrying an e-mail, since then.
    other_holder: Option<(String, i64)>,
    /// When each writer's current pass last read the holders of the spec's e-mail.
    last_holders: [Option<i64>; 2],
    user_gone: bool,
    /// When the guest was deleted.
    deletions: Vec<i64>,
    /// The user's mail before the controller changed it with no reset going out since (the
    /// mail a refused target gets back), and when the PATCH that changed it was made. A PATCH
    /// that finds the user carrying another mail than the controller's last PATCH set (an
    /// admin changed it) replaces it: the admin's mail is what that PATCH overwrites.
    mail_before: Option<(Option<String>, i64)>,
    /// The e-mail of the controller's last mail PATCH with no reset gone out since.
    mail_patched_to: Option<String>,
    /// An admin set the spec's e-mail itself since the last reset that took effect: the user
    /// then carries what the controller's own PATCH would have set, and no read tells the two
    /// apart (the refusal puts back the mail before the controller's planned change).
    admin_set_spec_mail: bool,
    /// When an admin last changed the user's mail.
    admin_mail_at: Option<i64>,
    /// Generations whose POST Graph refused as a target it will not reset, with the number
    /// of retry values set for the generation then.
    refusals: HashMap<i64, u32>,
    /// Resets that took effect and do not show yet: when they show, with their change time.
    unseen: Vec<(i64, Timestamp)>,
    /// Every reset that took effect: its attempt, when it was sent and when it showed.
    resets: Vec<Reset>,
    /// The state of the follow-through's random spread.
    jitter: u64,
    /// The audit lines of every writer, in order.
    audits: Vec<AuditRecord>,
    /// What the case exercised.
    seen: Seen,
}

/// What a run exercised, for the test that requires the model's worlds to happen at all.
#[derive(Clone, Debug, Default)]
struct Seen {
    reasons: HashSet<Reason>,
    faults_fired: u32,
    abandoned_while_stopping: u32,
    fenced_writes: u32,
    recovered_after_lag: u32,
    writes_behind_the_view: u32,
    blocked_after_post: u32,
}

/// The production defaults of the write limit.
const PER_MINUTE: u32 = 6;
const BURST: u32 = 3;

impl World {
    /// The retry annotation's value now.
    fn retry_value(&self) -> Option<String> {
        let annotations = self.obj.metadata.annotations.as_ref()?;
        annotations.get(crate::resource::RETRY_ANNOTATION).cloned()
    }

    fn new(case: Case) -> Self {
        let require_approval = case.require_approval;
        let base = Instant::now();
        let mut spec = fixtures::spec(USER, &format!("alice1@{ALLOWED}"));
        if case.redeem_url_secret {
            spec.redeem_url_secret = Some(crate::resource::SecretRef {
                name: "alice-redeem-url".into(),
            });
        }
        let mut obj = GuestRedemptionReset::new("alice", spec);
        obj.metadata.annotations = Some(
            [(
                crate::resource::REQUESTED_BY_ANNOTATION.to_owned(),
                REQUESTER.to_owned(),
            )]
            .into(),
        );
        obj.metadata.namespace = Some("identity".into());
        obj.metadata.uid = Some("uid-alice".into());
        obj.metadata.generation = Some(1);
        obj.metadata.resource_version = Some("1".into());
        World {
            obj,
            rv: 1,
            user: fixtures::guest(USER, "alice@contoso.com"),
            now: 0,
            paused_until: None,
            retry_values: 0,
            retries: HashMap::new(),
            effective: HashMap::new(),
            effective_attempts: HashSet::new(),
            foreign_changes: Vec::new(),
            last_read: [None, None],
            last_gate: [None, None],
            marked_retry: [None, None],
            paused_since: None,
            settings: Settings {
                allowed_email_domains: vec![ALLOWED.into()],
                replication_window: SignedDuration::from_mins(2),
                clock_skew: SignedDuration::from_secs(60),
                post_timeout: SignedDuration::from_secs(30),
                // A short follow-through, so that its reads and writes interleave with the
                // issuance of the two writers within a case.
                schedule: super::core::schedule::Schedule {
                    first: SignedDuration::from_secs(10),
                    watch: SignedDuration::from_mins(2),
                },
                require_approval,
                own_identity: None,
            },
            next_id: 0,
            approver_may: true,
            confirmed: HashSet::new(),
            base,
            // As in production: a process that starts issuing starts with an empty bucket.
            limiters: [0, 1].map(|_| {
                let limiter = WriteLimiter::new_at(PER_MINUTE, BURST, base);
                limiter.start_empty(base);
                limiter
            }),
            held: Default::default(),
            marked: [None, None],
            writes: Default::default(),
            case,
            recorded_by: None,
            paused_seen: [None, None],
            api_fault: None,
            stopping: [None, None],
            fenced: [false, false],
            secret: Secret::Absent,
            secret_read: [None, None],
            other_holder: None,
            last_holders: [None, None],
            user_gone: false,
            deletions: Vec::new(),
            mail_before: None,
            mail_patched_to: None,
            admin_set_spec_mail: false,
            admin_mail_at: None,
            refusals: HashMap::new(),
            unseen: Vec::new(),
            resets: Vec::new(),
            jitter: case.jitter_seed | 1,
            audits: Vec::new(),
            seen: Seen::default(),
        }
    }

    /// The tenant pause as the writer's process sees it now: its own abuse answer at once,
    /// a pause recorded by another process `view_lag` seconds after it was recorded.
    fn paused_for(&self, writer: usize) -> Option<i64> {
        let own = self.paused_seen[writer].filter(|until| self.now < *until);
        let recorded = self
            .paused_until
            .filter(|until| self.now < *until && self.visible_from(writer) <= self.now);
        own.max(recorded)
    }

    /// From when the current pause shows in the writer's view of the record.
    fn visible_from(&self, writer: usize) -> i64 {
        let since = self.paused_since.unwrap_or(i64::MIN);
        if self.recorded_by == Some(writer) {
            since
        } else {
            since.saturating_add(self.case.view_lag)
        }
    }

    /// The directory's reads now: the resets whose effect has shown are applied, unless a
    /// later change of the state is already there.
    fn settle(&mut self) {
        let now = self.now;
        let (shown, unseen): (Vec<_>, Vec<_>) =
            self.unseen.drain(..).partition(|(from, _)| *from <= now);
        self.unseen = unseen;
        for (_, changed) in shown {
            let current = self.user.external_user_state_change_date_time;
            if current.is_none_or(|c| c < changed) {
                self.user.external_user_state = Some("PendingAcceptance".into());
                self.user.external_user_state_change_date_time = Some(changed);
            }
        }
    }

    fn instant(&self, secs: i64) -> Instant {
        self.base + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    }

    /// The model's second at or after `instant`.
    fn second_of(&self, instant: Instant) -> i64 {
        (instant - self.base).as_secs_f64().ceil() as i64
    }

    /// The writer's process starts again: a new limiter, started empty now.
    fn restart(&mut self, writer: usize) {
        self.held[writer].clear();
        self.stopping[writer] = None;
        self.fenced[writer] = false;
        self.paused_seen[writer] = None;
        let limiter = WriteLimiter::new_at(PER_MINUTE, BURST, self.base);
        limiter.start_empty(self.instant(self.now));
        self.limiters[writer] = limiter;
    }

    /// The writer's pass ended: the slots it did not spend go back.
    fn end_pass(&mut self, writer: usize) {
        self.held[writer].clear();
        self.marked[writer] = None;
    }

    fn generation(&self) -> i64 {
        self.obj.metadata.generation.unwrap_or(0)
    }

    fn bump(&mut self) {
        self.rv += 1;
        self.obj.metadata.resource_version = Some(self.rv.to_string());
    }

    fn sent_attempt(&self) -> Option<String> {
        let attempt = self.obj.status.as_ref()?.attempt.as_ref()?;
        attempt.post_started_at.as_ref()?;
        Some(attempt.id.clone())
    }

    /// Someone else changed the guest's redemption state.
    fn foreign_change(&mut self, state: &str) {
        self.user.external_user_state = Some(state.into());
        self.user.external_user_state_change_date_time = Some(change_time(self.now));
        self.foreign_changes.push(self.now);
    }

    /// Whether someone else changed the guest's state after the state the attempt started
    /// from: then the directory cannot tell their change from ours.
    fn clouded(&self, attempt: &crate::resource::Attempt) -> bool {
        let before = attempt
            .user_state_before
            .as_ref()
            .and_then(|b| b.changed_at.as_ref())
            .map(|t| t.0);
        let foreign = self
            .foreign_changes
            .iter()
            .any(|t| before.is_none_or(|b| change_time(*t) > b));
        // A reset of another attempt, sent before this one began and shown only after: the
        // state this attempt recorded as before could not include it (replication lag).
        let started = model_second(attempt.started_at.0);
        let unseen_before = self.resets.iter().any(|r| {
            r.attempt.as_deref() != Some(attempt.id.as_str())
                && r.sent < started
                && r.shows_from > started
                && before.is_none_or(|b| change_time(r.sent) > b)
        });
        foreign || unseen_before
    }

    fn apply(&mut self, action: &Action) {
        match *action {
            Action::Tick(secs) => self.now += i64::from(secs),
            Action::BlockedElsewhere => {
                self.paused_since = Some(self.now);
                self.paused_until = Some(self.now + 3600);
                self.recorded_by = None;
            }
            Action::ApiFault { lost_answer } => self.api_fault = Some(lost_answer),
            Action::Stop {
                writer,
                renew_deadline,
            } => {
                self.stopping[writer].get_or_insert(self.now);
                self.fenced[writer] |= renew_deadline;
            }
            Action::ForeignSecret(foreign) => {
                self.secret = match (foreign, self.secret) {
                    (true, Secret::Foreign { since }) => Secret::Foreign { since },
                    (true, _) => Secret::Foreign { since: self.now },
                    (false, _) => Secret::Absent,
                };
            }
            Action::OtherHolder(holds) => {
                self.other_holder = holds.then(|| (self.obj.spec.email.clone(), self.now));
            }
            Action::UserGone(gone) => {
                if gone && !self.user_gone {
                    self.deletions.push(self.now);
                }
                self.user_gone = gone;
            }
            Action::EditSpec { allowed_domain } => {
                let generation = self.generation() + 1;
                let domain = if allowed_domain {
                    ALLOWED
                } else {
                    "elsewhere.example"
                };
                self.obj.spec.email = format!("alice{generation}@{domain}");
                self.obj.metadata.generation = Some(generation);
                self.bump();
            }
            Action::Retry => {
                self.retry_values += 1;
                let value = self.retry_values.to_string();
                *self.retries.entry(self.generation()).or_default() += 1;
                self.obj
                    .metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(crate::resource::RETRY_ANNOTATION.to_owned(), value);
                self.bump();
            }
            Action::Decide {
                by_requester,
                approve,
            } => {
                let by = if by_requester { REQUESTER } else { APPROVER };
                let decision = if approve {
                    crate::resource::Decision::Approved
                } else {
                    crate::resource::Decision::Denied
                };
                let mut approval = fixtures::approval(self.generation(), decision, by);
                // The decision names the retry it decides on, as the plugin writes it.
                approval.retry = self.retry_value();
                let status = self.obj.status.get_or_insert_default();
                // A decision is final for its generation and retry: the API server refuses a
                // second one (the policy's rule this model keeps; the others it lets through).
                if status
                    .approval
                    .as_ref()
                    .is_some_and(|a| a.covers(approval.generation, approval.retry.as_deref()))
                {
                    return;
                }
                status.approval = Some(approval);
                self.bump();
            }
            Action::ApproverRight(may) => self.approver_may = may,
            Action::ForeignInvite => self.foreign_change("PendingAcceptance"),
            Action::GuestRedeems => self.foreign_change("Accepted"),
            Action::ConvertToMember => self.user.user_type = Some("Member".into()),
            Action::AdminMail { to_spec } => {
                self.admin_mail_at = Some(self.now);
                self.admin_set_spec_mail |= to_spec;
                self.user.mail = Some(if to_spec {
                    self.obj.spec.email.clone()
                } else {
                    "someone@elsewhere.example".into()
                });
            }
            Action::Touch => self.bump(),
            Action::Step(..)
            | Action::Burst(..)
            | Action::BurstIntoBlock(..)
            | Action::Crash(_) => {}
        }
    }

    /// Checks a status write against the invariants before it lands.
    fn check_write(&mut self, next: &GuestRedemptionReset) -> Result<(), String> {
        let old = self.obj.status.clone().unwrap_or_default();
        let new = next.status.clone().unwrap_or_default();
        if new.approval != old.approval {
            return Err("the controller changed the approval".into());
        }
        if new.observed_generation < old.observed_generation {
            return Err(format!(
                "observedGeneration went down: {:?} -> {:?}",
                old.observed_generation, new.observed_generation
            ));
        }
        self.check_refusal(&old, &new)?;
        self.check_audit(&old, &new)?;
        let Some(cleared) = old.attempt.as_ref().filter(|a| {
            a.post_started_at.is_some() && new.attempt.as_ref().map(|n| &n.id) != Some(&a.id)
        }) else {
            return Ok(());
        };
        let took_effect = self.effective_attempts.contains(&cleared.id);
        let clouded = self.clouded(cleared);
        let reason = status::ready_reason(&new);
        let recovered_for_it = new.invitation.as_ref().is_some_and(|i| {
            i.recovered && i.generation == cleared.generation && new.invitation != old.invitation
        });
        if recovered_for_it && self.case.evidence_lag > 0 {
            self.seen.recovered_after_lag += 1;
        }
        if recovered_for_it && !took_effect && !clouded {
            return Err(format!(
                "attempt {} recorded as issued (recovered) but its POST took no effect",
                cleared.id
            ));
        }
        let issued_for_it = new
            .invitation
            .as_ref()
            .is_some_and(|i| i.generation == cleared.generation);
        // The guest was deleted after the attempt began: no read can show its evidence, and
        // `OutcomeUnknown` (stopped until a human asks again) is the honest answer.
        let started = model_second(cleared.started_at.0);
        let unknowable =
            reason == Some(Reason::OutcomeUnknown) && self.deletions.iter().any(|t| *t >= started);
        if unknowable {
            return Ok(());
        }
        if took_effect && !issued_for_it {
            return Err(format!(
                "attempt {} dropped ({:?}) although its POST took effect: the generation would be posted again",
                cleared.id, reason
            ));
        }
        if reason == Some(Reason::OutcomeUnknown) && took_effect {
            return Err(format!(
                "attempt {} reported OutcomeUnknown although its POST took effect",
                cleared.id
            ));
        }
        Ok(())
    }

    /// An invitation recorded in the status follows its audit line: the same generation,
    /// invitation, e-mail and outcome, with the names its attempt captured.
    fn check_audit(
        &self,
        old: &crate::resource::GuestRedemptionResetStatus,
        new: &crate::resource::GuestRedemptionResetStatus,
    ) -> Result<(), String> {
        let Some(invitation) = new
            .invitation
            .as_ref()
            .filter(|i| old.invitation.as_ref() != Some(*i))
        else {
            return Ok(());
        };
        let logged = self.audits.iter().any(|record| {
            matches!(record, AuditRecord::Issued {
                generation, invitation_id, email, recovered, names, ..
            } if *generation == invitation.generation
                && *invitation_id == invitation.id
                && *email == invitation.email
                && *recovered == invitation.recovered
                && invitation.audit.as_ref().is_none_or(|a| a == names))
        });
        if !logged {
            return Err(format!(
                "generation {}: invitation {:?} recorded without its audit line",
                invitation.generation, invitation.id
            ));
        }
        Ok(())
    }

    /// A target Graph refused is left as it was: when the refusal is reported, the user's
    /// mail is the one it had before the controller changed it without a reset, or the report
    /// says to put it back by hand (the restore failed). An admin's change of the mail since
    /// the controller's last read before its PATCH excuses it.
    fn check_refusal(
        &self,
        old: &crate::resource::GuestRedemptionResetStatus,
        new: &crate::resource::GuestRedemptionResetStatus,
    ) -> Result<(), String> {
        let refused = |s: &crate::resource::GuestRedemptionResetStatus| {
            status::ready_reason(s) == Some(Reason::Forbidden) && s.next_attempt_at.is_none()
        };
        if !refused(new) || refused(old) {
            return Ok(());
        }
        let Some((before, patched_at)) = &self.mail_before else {
            return Ok(());
        };
        let message = new
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.message.as_str())
            .unwrap_or_default();
        // Graph's PATCH has no precondition: an admin's change in the seconds between the last
        // read of the user and the PATCH (at most 10 s, the reads' freshness) is the race left.
        let touched = self.admin_mail_at.is_some_and(|t| t + 10 >= *patched_at);
        let indistinguishable = self.admin_set_spec_mail;
        if self.user.mail != *before
            && !message.contains("by hand")
            && !touched
            && !indistinguishable
        {
            return Err(format!(
                "a refused target left with mail {:?} instead of {before:?}: {message}",
                self.user.mail
            ));
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        for (generation, count) in &self.effective {
            let allowed = 1 + self.retries.get(generation).copied().unwrap_or(0);
            if *count > allowed {
                return Err(format!(
                    "generation {generation}: {count} effective POSTs, at most {allowed} allowed"
                ));
            }
        }
        Ok(())
    }
}

/// One writer's view of the world for one step.
struct ModelIo<'w> {
    w: &'w mut World,
    writer: usize,
    answer: Answer,
    violation: Option<String>,
    /// Whether a status write of this step failed as the case's `ApiFault` asked.
    fault_fired: bool,
    /// Whether another resource of this process meets the abuse answer right after this
    /// step's POST is answered.
    block_after_post: bool,
}

/// The API server's answer to a status write that failed (or whose answer was lost).
fn api_error() -> kube::Error {
    let status =
        kube::core::Status::failure("etcdserver: request timed out", "Timeout").with_code(504);
    kube::Error::Api(Box::new(status))
}

/// Whether `next` marks the POST as sending where `current` had not.
fn marks_sending_now(next: &GuestRedemptionReset, current: &GuestRedemptionReset) -> bool {
    let marked = |o: &GuestRedemptionReset| {
        o.status
            .as_ref()
            .and_then(|s| s.attempt.as_ref())
            .is_some_and(|a| a.post_started_at.is_some())
    };
    marked(next) && !marked(current)
}

impl ModelIo<'_> {
    fn read_failure(&self) -> Option<Failure> {
        match self.answer {
            Answer::Throttled => Some(Failure::Throttled { retry_after: None }),
            Answer::Transient | Answer::Ambiguous { .. } => Some(Failure::Transient("503".into())),
            Answer::Rejected => Some(Failure::Rejected("400".into())),
            Answer::Ok | Answer::AbuseBlocked | Answer::TargetRefused => None,
        }
    }

    /// A read of the user by id: `None` while the guest is deleted.
    fn read_user(&mut self) -> Result<Option<DirectoryUser>, Failure> {
        if let Some(failure) = self.read_failure() {
            return Err(failure);
        }
        self.w.settle();
        let user = (!self.w.user_gone).then(|| self.w.user.clone());
        let guest = user.as_ref().is_some_and(DirectoryUser::is_guest);
        self.w.last_read[self.writer] = Some((self.w.now, guest));
        Ok(user)
    }

    fn paused(&self) -> Option<Timestamp> {
        self.w.paused_for(self.writer).map(at)
    }

    /// A Graph write is about to leave: the answer of a write that cannot leave (the leader's
    /// write fence is closed) or that finds no user, if so.
    fn refused_write(&self) -> Option<Failure> {
        if self.w.fenced[self.writer] {
            return Some(Failure::Transient(
                "not sent: past the renew deadline".into(),
            ));
        }
        self.w
            .user_gone
            .then(|| Failure::NotFound("404 Request_ResourceNotFound".into()))
    }

    /// No Graph write into a pause that this writer's view showed when its pass last read the
    /// gate, nor without such a read while the tenant is paused.
    fn check_pause(&self, what: &str) -> Result<(), String> {
        if self.w.paused_until.is_none_or(|until| self.w.now >= until) {
            return Ok(());
        }
        match self.w.last_gate[self.writer] {
            None => Err(format!("a {what} without reading the tenant gate")),
            Some(gate) if self.w.visible_from(self.writer) <= gate => Err(format!(
                "a {what} while the tenant is paused (recorded at {:?}, gate read at {gate})",
                self.w.paused_since
            )),
            Some(_) => Ok(()),
        }
    }

    /// A stopping process writes nothing to Graph but the POST it marked before it began
    /// to stop.
    fn check_stopping(&self, what: &str) -> Result<(), String> {
        let Some(since) = self.w.stopping[self.writer] else {
            return Ok(());
        };
        match self.w.marked[self.writer] {
            Some(marked) if what == "POST" && marked < since => Ok(()),
            _ => Err(format!(
                "a {what} by a process stopping since {since} (marked: {:?})",
                self.w.marked[self.writer]
            )),
        }
    }

    /// No Graph write by a pass that found someone else's Secret, nor by one that did not
    /// look (docs/resource.md, "The redeem URL").
    fn check_secret(&self, what: &str) -> Result<(), String> {
        if !self.w.case.redeem_url_secret {
            return Ok(());
        }
        match (self.w.secret_read[self.writer], self.w.secret) {
            (None, _) => Err(format!("a {what} without checking the redeem URL's Secret")),
            (Some(read), Secret::Foreign { since }) if since <= read => Err(format!(
                "a {what} after the pass found someone else's Secret (since {since}, read {read})"
            )),
            _ => Ok(()),
        }
    }

    /// The e-mail is nobody else's as of a read of its holders no older than 10 s.
    fn check_holders(&self, email: &str) -> Result<(), String> {
        let now = self.w.now;
        let read = match self.w.last_holders[self.writer] {
            Some(read) if now - read <= 10 => read,
            other => {
                return Err(format!(
                    "a POST on a read of the e-mail's holders from {other:?}, now {now}"
                ));
            }
        };
        match &self.w.other_holder {
            Some((held, since)) if held == email && *since <= read => Err(format!(
                "a POST to {email}, which another user carries since {since} (read at {read})"
            )),
            _ => Ok(()),
        }
    }

    /// The controller's duty at the sending mark: the POST that follows acts on a read of a
    /// guest no older than 10 s.
    fn check_mark(&self) -> Result<(), String> {
        match self.w.last_read[self.writer] {
            Some((_, false)) => Err("marked sending for a user last read as a non-guest".into()),
            Some((read_at, _)) if self.w.now - read_at > 10 => Err(format!(
                "marked sending on a user read {} s before",
                self.w.now - read_at
            )),
            None => Err("marked sending without a read of the user".into()),
            Some(_) => Ok(()),
        }
    }

    /// The invariants of every Graph write, with the slot it spends: the slot was handed to
    /// this pass and is due, and the writer's writes keep the limit in every window.
    fn check_write(&mut self, slot: Option<WriteSlot>) -> Result<(), String> {
        let now = self.w.instant(self.w.now);
        let slot = slot.ok_or("a Graph write without a write slot in hand")?;
        if slot.usable_from() > now {
            return Err(format!(
                "a Graph write {:?} before its slot was due",
                slot.usable_from() - now
            ));
        }
        slot.spend(now);
        let writes = &mut self.w.writes[self.writer];
        writes.push(now);
        check_windows(writes, PER_MINUTE, BURST)
            .map_err(|e| format!("the write limit broke in a window: {e}"))
    }

    /// The sending window: the POST leaves within 5 s of its mark and 10 s of the last read
    /// of the user.
    fn check_send_window(&self) -> Result<(), String> {
        let now = self.w.now;
        let marked = self.w.marked[self.writer].ok_or("a POST without a sending mark")?;
        if now - marked > 5 {
            return Err(format!("a POST {} s after its sending mark", now - marked));
        }
        match self.w.last_read[self.writer] {
            Some((read_at, _)) if now - read_at <= 10 => Ok(()),
            other => Err(format!(
                "a POST on a read of the user from {other:?}, now {now}"
            )),
        }
    }

    /// A write of this step leaves: the first invariant it breaks is the step's violation; one
    /// that finds no user gets Graph's answer for it.
    fn leave<const N: usize>(&mut self, checks: [Result<(), String>; N]) -> Result<(), Failure> {
        if let Some(violation) = checks.into_iter().find_map(Result::err) {
            self.violation = Some(violation);
        }
        if let Some(refused) = self.refused_write() {
            return Err(refused);
        }
        self.count_write_behind_the_view();
        Ok(())
    }

    /// A write leaves while the tenant is paused and this writer's view does not show it yet.
    fn count_write_behind_the_view(&mut self) {
        let paused = self.w.paused_until.is_some_and(|until| self.w.now < until);
        if paused && self.w.paused_for(self.writer).is_none() {
            self.w.seen.writes_behind_the_view += 1;
        }
    }

    /// The restore of a refused target's mail after its POST, as the effect makes it: a slot
    /// of its own from the limiter (waited for), not sent during a pause.
    fn restore_mail(&mut self, _user_id: &str, mail: &str) -> Result<(), Failure> {
        let key = TurnKey {
            resource: "restore".into(),
            generation: self.w.generation(),
        };
        let slot = loop {
            let now = self.w.instant(self.w.now);
            match self.w.limiters[self.writer].turn_at(&key, 1, now) {
                Turn::Now { mut slots, .. } => break slots.pop(),
                Turn::After(wait) => self.w.now = self.w.second_of(now + wait),
            }
        };
        if self.paused().is_some() {
            return Err(Failure::Transient(
                "the tenant pause holds Graph writes".into(),
            ));
        }
        if let Some(refused) = self.refused_write() {
            return Err(refused);
        }
        if let Err(violation) = self.check_write(slot) {
            self.violation = Some(violation);
        }
        match self.answer {
            Answer::Ok | Answer::Ambiguous { .. } | Answer::TargetRefused => {
                self.w.user.mail = Some(mail.to_owned());
                Ok(())
            }
            _ => Err(Failure::Transient("503".into())),
        }
    }

    /// The invariants a POST must satisfy when it is sent. A pause that showed in the
    /// writer's view only after its pass read the gate is the one race left (the sending mark
    /// lies between); a pause the gate could show is a violation.
    fn check_post(&self, request: &ResetRedemptionRequest) -> Result<(), String> {
        if self.w.last_read[self.writer].is_some_and(|(_, guest)| !guest) {
            return Err("a POST for a user last read as a non-guest".into());
        }
        let generation = generation_of(&request.email);
        let retries = self.w.retries.get(&generation).copied().unwrap_or(0);
        if self.w.refusals.get(&generation) == Some(&retries) {
            return Err(format!(
                "a POST for generation {generation} after Graph's final refusal of the target"
            ));
        }
        self.check_pause("POST")?;
        self.check_stopping("POST")?;
        self.check_secret("POST")?;
        self.check_holders(&request.email)?;
        if self.w.settings.require_approval {
            let generation = generation_of(&request.email);
            // Every POST follows a decision confirmed for that generation and that retry: the
            // retry value its pass saw, which its sending mark recorded as seen (another writer
            // may have accepted a newer retry since; that one needs its own decision).
            let retry = self.w.marked_retry[self.writer].clone();
            if !self.w.confirmed.contains(&(generation, retry)) {
                let approval = self.w.obj.status.as_ref().and_then(|s| s.approval.as_ref());
                return Err(format!(
                    "a POST for generation {generation} without a confirmed approval by another person (approval: {approval:?})"
                ));
            }
        }
        if !request.email.ends_with(&format!("@{ALLOWED}")) {
            return Err(format!(
                "a POST to {} outside the allowed domains",
                request.email
            ));
        }
        Ok(())
    }
}

impl Io for ModelIo<'_> {
    fn audit(&mut self, record: AuditRecord) {
        self.w.audits.push(record);
    }

    fn now(&self) -> Timestamp {
        at(self.w.now)
    }

    fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let stopping = self.is_stopping();
        async move {
            if !stopping {
                std::future::pending::<()>().await;
            }
        }
    }

    fn is_stopping(&self) -> bool {
        self.w.stopping[self.writer].is_some()
    }

    fn local_gate(&self, _now: Timestamp) -> TenantGate {
        self.paused()
            .map_or(TenantGate::Open, |until| TenantGate::Paused { until })
    }

    fn new_attempt_id(&mut self) -> String {
        self.w.next_id += 1;
        format!("attempt-{}", self.w.next_id)
    }

    async fn can_approve(
        &mut self,
        _obj: &GuestRedemptionReset,
        approval: &crate::resource::Approval,
    ) -> Result<Result<(), String>, kube::Error> {
        let may = approval.by == APPROVER && self.w.approver_may;
        if may && approval.decision == crate::resource::Decision::Approved {
            let retry = approval.retry.clone();
            self.w.confirmed.insert((approval.generation, retry));
        }
        Ok(may.then_some(()).ok_or_else(|| "no right".to_owned()))
    }

    async fn resolve(&mut self, _lookup: &Lookup) -> Result<Resolution, Failure> {
        let user = self.read_user()?;
        Ok(user.map_or(Resolution::NotFound, Resolution::Found))
    }

    async fn get_user(&mut self, _id: &str) -> Result<Option<DirectoryUser>, Failure> {
        self.read_user()
    }

    async fn email_holders(&mut self, email: &str) -> Result<Vec<DirectoryUser>, Failure> {
        if let Some(failure) = self.read_failure() {
            return Err(failure);
        }
        self.w.settle();
        self.w.last_holders[self.writer] = Some(self.w.now);
        let user = &self.w.user;
        let guest = (!self.w.user_gone && user.carries_email(email)).then(|| user.clone());
        let other = self
            .w
            .other_holder
            .as_ref()
            .filter(|(held, _)| held == email)
            .map(|_| fixtures::guest("7c1d2e3f-0000-4000-8000-00000000beef", email));
        Ok(guest.into_iter().chain(other).collect())
    }

    async fn secret_owner(
        &mut self,
        _obj: &GuestRedemptionReset,
        _name: &str,
    ) -> Result<SecretOwner, kube::Error> {
        self.w.secret_read[self.writer] = Some(self.w.now);
        Ok(match self.w.secret {
            Secret::Absent => SecretOwner::Absent,
            Secret::Ours => SecretOwner::ThisResource,
            Secret::Foreign { .. } => SecretOwner::Foreign,
        })
    }

    /// The real limiter of this writer, on the model's clock: a turn due within a moment is
    /// waited for (the clock moves), a later one is kept and the pass ends.
    async fn take_slots(&mut self, obj: &GuestRedemptionReset, writes: u32) -> SlotTurn {
        let key = TurnKey {
            resource: obj.metadata.uid.clone().unwrap_or_default(),
            generation: obj.metadata.generation.unwrap_or(0),
        };
        loop {
            let now = self.w.instant(self.w.now);
            match self.w.limiters[self.writer].turn_at(&key, writes, now) {
                Turn::Now { slots, .. } => {
                    let last = slots.last().map(WriteSlot::usable_from);
                    self.w.held[self.writer] = slots.into();
                    return match last.filter(|last| *last > now) {
                        Some(last) => SlotTurn::Spaced {
                            last: at(self.w.second_of(last)),
                        },
                        None => SlotTurn::Now,
                    };
                }
                Turn::After(wait) if wait <= SHORT_WAIT => {
                    self.w.now = self.w.second_of(now + wait);
                }
                Turn::After(wait) => return SlotTurn::At(at(self.w.second_of(now + wait))),
            }
        }
    }

    async fn sleep_until(&mut self, until: Timestamp) {
        self.w.now = self.w.now.max(until.as_second());
    }

    async fn tenant_gate(&mut self) -> Result<TenantGate, kube::Error> {
        self.w.last_gate[self.writer] = Some(self.w.now);
        Ok(self.local_gate(at(self.w.now)))
    }

    async fn set_mail(&mut self, user_id: &str, email: &str) -> Result<(), Failure> {
        if self.w.marked[self.writer].is_some() {
            return self.restore_mail(user_id, email);
        }
        let slot = self.w.held[self.writer].pop_front();
        if self.w.fenced[self.writer] {
            self.w.seen.fenced_writes += 1;
            return Err(self.refused_write().expect("fenced"));
        }
        let paused_now = match self.paused() {
            Some(_) => Err("a PATCH while the tenant is paused in this writer's view".into()),
            None => Ok(()),
        };
        let checks = [
            paused_now,
            self.check_pause("PATCH"),
            self.check_stopping("PATCH"),
            self.check_secret("PATCH"),
            self.check_write(slot),
        ];
        self.leave(checks)?;
        match self.answer {
            Answer::Ok | Answer::Ambiguous { .. } | Answer::TargetRefused => {
                let before = self.w.user.mail.clone();
                let ours_still_there =
                    self.w.mail_patched_to.is_some() && before == self.w.mail_patched_to;
                if self.w.mail_before.is_none() || !ours_still_there {
                    self.w.mail_before = Some((before, self.w.now));
                }
                self.w.mail_patched_to = Some(email.to_owned());
                self.w.user.mail = Some(email.to_owned());
                Ok(())
            }
            _ => Err(Failure::Transient("503".into())),
        }
    }

    async fn post_invitation(
        &mut self,
        request: &ResetRedemptionRequest,
    ) -> Result<(Posted, RedeemUrl), Failure> {
        let slot = self.w.held[self.writer].pop_back();
        if self.w.fenced[self.writer] {
            self.w.seen.fenced_writes += 1;
            return Err(self.refused_write().expect("fenced"));
        }
        let checks = [
            self.check_send_window(),
            self.check_post(request),
            self.check_write(slot),
        ];
        self.leave(checks)?;
        let took_effect = matches!(
            self.answer,
            Answer::Ok | Answer::Ambiguous { took_effect: true }
        );
        if took_effect {
            let generation = generation_of(&request.email);
            *self.w.effective.entry(generation).or_default() += 1;
            if let Some(id) = self.w.sent_attempt() {
                self.w.effective_attempts.insert(id);
            }
            // The mail now goes with a reset.
            self.w.mail_before = None;
            self.w.mail_patched_to = None;
            self.w.admin_set_spec_mail = false;
            let shows_from = self.w.now + self.w.case.evidence_lag;
            self.w.unseen.push((shows_from, change_time(self.w.now)));
            self.w.resets.push(Reset {
                attempt: self.w.sent_attempt(),
                sent: self.w.now,
                shows_from,
            });
            self.w.settle();
        }
        if self.block_after_post {
            // Another resource of this process: its process knows at once.
            let until = self.w.now + 3600;
            self.w.paused_since = Some(self.w.now);
            self.w.paused_until = Some(until);
            self.w.recorded_by = Some(self.writer);
            self.w.paused_seen[self.writer] = Some(until);
            self.w.seen.blocked_after_post += 1;
        }
        match self.answer {
            Answer::Ok => Ok((
                Posted {
                    invitation_id: format!("inv-{}", self.w.next_id),
                    redeem_status: "PendingAcceptance".into(),
                    request_id: None,
                    client_request_id: None,
                },
                RedeemUrl::new("https://invitations.example/redeem".into()),
            )),
            Answer::Ambiguous { .. } => Err(Failure::Ambiguous("504".into())),
            Answer::Throttled => Err(Failure::Throttled { retry_after: None }),
            Answer::Transient => Err(Failure::Transient("connect".into())),
            Answer::Rejected => Err(Failure::Rejected("400".into())),
            Answer::AbuseBlocked => Err(Failure::AbuseBlocked("blocked".into())),
            Answer::TargetRefused => {
                let generation = generation_of(&request.email);
                let retries = self.w.retries.get(&generation).copied().unwrap_or(0);
                self.w.refusals.insert(generation, retries);
                Err(Failure::TargetRefused(
                    "403 Authorization_RequestDenied: Insufficient privileges".into(),
                ))
            }
        }
    }

    async fn write_status(
        &mut self,
        obj: &GuestRedemptionReset,
    ) -> Result<Option<GuestRedemptionReset>, kube::Error> {
        if obj.metadata.resource_version != self.w.obj.metadata.resource_version {
            return Ok(None);
        }
        let fault = self.w.api_fault.take();
        if fault == Some(false) {
            self.fault_fired = true;
            return Err(api_error());
        }
        let marks_sending = marks_sending_now(obj, &self.w.obj);
        if marks_sending && self.is_stopping() {
            self.violation = Some("marked a POST as sending while stopping".into());
        }
        if let Err(violation) = self.w.check_write(obj) {
            self.violation = Some(violation);
        }
        if let Some(reason) = obj.status.as_ref().and_then(status::ready_reason) {
            self.w.seen.reasons.insert(reason);
        }
        if marks_sending {
            if let Err(violation) = self.check_mark() {
                self.violation = Some(violation);
            }
            self.w.marked_retry[self.writer] =
                obj.status.as_ref().and_then(|s| s.retry_token.clone());
        }
        self.w.obj.status = obj.status.clone();
        self.w.bump();
        if fault == Some(true) {
            self.fault_fired = true;
            return Err(api_error());
        }
        Ok(Some(self.w.obj.clone()))
    }

    async fn read_again(
        &mut self,
        _obj: &GuestRedemptionReset,
    ) -> Result<Option<GuestRedemptionReset>, kube::Error> {
        Ok(Some(self.w.obj.clone()))
    }

    async fn store_secret(
        &mut self,
        _obj: &GuestRedemptionReset,
        _name: &str,
        _url: &RedeemUrl,
    ) -> Result<(), String> {
        match self.w.secret {
            // As the effect does: someone else's Secret is never written or adopted.
            Secret::Foreign { .. } => Err("a Secret of that name belongs to someone else".into()),
            Secret::Absent | Secret::Ours => {
                self.w.secret = Secret::Ours;
                Ok(())
            }
        }
    }

    async fn pause_tenant(&mut self, now: Timestamp) -> Timestamp {
        self.w.limiters[self.writer].drop_turns();
        let until = self.w.now + 3600;
        self.w.paused_since = Some(self.w.now);
        self.w.paused_until = Some(self.w.paused_until.map_or(until, |u| u.max(until)));
        self.w.recorded_by = Some(self.writer);
        self.w.paused_seen[self.writer] = Some(until);
        now + SignedDuration::from_hours(1)
    }

    async fn clear_tenant(&mut self) {
        self.w.paused_until = None;
        self.w.paused_seen = [None, None];
    }

    async fn publish(&mut self, _obj: &GuestRedemptionReset, _reason: Reason, _message: &str) {}

    fn sending(&mut self, marked_at: Timestamp) {
        self.w.marked[self.writer] = Some(model_second(marked_at));
    }

    async fn intent_recorded(&mut self) {}

    /// A draw of the case's own generator (xorshift), so that the follow-through's spread
    /// varies from case to case and from check to check.
    fn spread(&mut self) -> f64 {
        let mut x = self.w.jitter;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.w.jitter = x;
        (x % 1000) as f64 / 1000.0
    }

    /// The follow-through's read: the directory as it is, or the step's failure. It does not
    /// count as a read before a POST (`last_read`), which only the issuance's reads may be.
    async fn read_redemption(
        &mut self,
        _obj: &GuestRedemptionReset,
        _user_id: &str,
    ) -> Result<Option<DirectoryUser>, Failure> {
        if let Some(failure) = self.read_failure() {
            return Err(failure);
        }
        self.w.settle();
        Ok((!self.w.user_gone).then(|| self.w.user.clone()))
    }

    async fn redemption_changed(&mut self, _obj: &GuestRedemptionReset, _follow_up: &FollowUp) {}
}

/// Each generation issues for its own address, `alice{generation}@...`.
fn generation_of(email: &str) -> i64 {
    email
        .trim_start_matches("alice")
        .split('@')
        .next()
        .and_then(|g| g.parse().ok())
        .expect("the model's addresses carry their generation")
}

/// Runs the actions; the first broken invariant is the error.
fn run(actions: &[Action]) -> Result<(), String> {
    run_with(Case::plain(), actions)
}

/// Runs the actions in the world the case fixes.
fn run_with(case: Case, actions: &[Action]) -> Result<(), String> {
    run_seeing(case, actions).0
}

/// Runs the actions; also says what the run exercised.
fn run_seeing(case: Case, actions: &[Action]) -> (Result<(), String>, Seen) {
    let mut world = World::new(case);
    let result = run_in(&mut world, actions);
    (result, world.seen)
}

fn run_in(world: &mut World, actions: &[Action]) -> Result<(), String> {
    // MODEL_TRACE=1 prints the world after every action (for reading a shrunk case).
    let trace = std::env::var_os("MODEL_TRACE").is_some();
    let mut passes: [Option<PassRunner>; 2] = [None, None];
    let expanded = actions
        .iter()
        .enumerate()
        .flat_map(|(i, action)| match *action {
            Action::Burst(writer, n, last) => (1..=n)
                .map(|k| {
                    let answer = if k == n { last } else { Answer::Ok };
                    (i, Action::Step(writer, answer))
                })
                .collect::<Vec<_>>(),
            Action::BurstIntoBlock(writer, n) => (1..=n)
                .map(|_| (i, Action::BurstIntoBlock(writer, 1)))
                .collect::<Vec<_>>(),
            _ => vec![(i, action.clone())],
        });
    for (i, action) in expanded {
        match &action {
            Action::Step(writer, _) | Action::BurstIntoBlock(writer, _)
                if passes[*writer].is_none() && world.stopping[*writer].is_some() =>
            {
                // The stopping process has drained its pass: it exits, and a new one starts.
                world.restart(*writer);
            }
            Action::Step(writer, _) | Action::BurstIntoBlock(writer, _) => {
                let (answer, block_after_post) = match action {
                    Action::Step(_, answer) => (answer, false),
                    _ => (Answer::Ok, true),
                };
                if passes[*writer].is_none() {
                    world.last_gate[*writer] = None;
                    world.secret_read[*writer] = None;
                    world.last_holders[*writer] = None;
                }
                let runner =
                    passes[*writer].get_or_insert_with(|| PassRunner::new(world.obj.clone(), 0));
                let settings = world.settings.clone();
                let mut io = ModelIo {
                    w: &mut *world,
                    writer: *writer,
                    answer,
                    violation: None,
                    fault_fired: false,
                    block_after_post,
                };
                let flow = futures::executor::block_on(runner.step(&mut io, &settings));
                // Every step takes time: Graph's change times of two resets never coincide.
                io.w.now += 1;
                if let Some(violation) = io.violation {
                    return Err(format!("action {i} ({action:?}): {violation}"));
                }
                let fault_fired = io.fault_fired;
                world.seen.faults_fired += u32::from(fault_fired);
                let ended = match flow {
                    Ok(()) => false,
                    Err(End::Done(outcome)) => {
                        let stopping = world.stopping[*writer].is_some();
                        if stopping && matches!(outcome, Outcome::Abandoned) {
                            world.seen.abandoned_while_stopping += 1;
                        }
                        true
                    }
                    // A status write the case made fail: the pass ends with its error, and the
                    // resource is queued again (its backoff is the runner's, not the model's).
                    Err(End::Failed(_)) if fault_fired => true,
                    Err(End::Failed(err)) => return Err(format!("an effect failed: {err}")),
                };
                if ended {
                    passes[*writer] = None;
                    world.end_pass(*writer);
                }
            }
            Action::Crash(writer) => {
                passes[*writer] = None;
                world.restart(*writer);
            }
            other => world.apply(other),
        }
        if trace {
            let status = world.obj.status.clone().unwrap_or_default();
            eprintln!(
                "{:>4}s #{i} {action:?}: gen {} {:?} attempt {:?} invitation {:?} effective {:?}",
                world.now,
                world.generation(),
                status::ready_reason(&status),
                status
                    .attempt
                    .as_ref()
                    .map(|a| (&a.id, a.generation, a.post_started_at.is_some())),
                status
                    .invitation
                    .as_ref()
                    .map(|i| (i.generation, i.recovered)),
                world.effective,
            );
        }
        world
            .check()
            .map_err(|e| format!("after action {i} ({action:?}): {e}"))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(3000),
        max_shrink_iters: 20_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn once_per_generation_and_honest_outcomes_under_any_interleaving(
        case in case(),
        actions in proptest::collection::vec(action(), 1..120)
    ) {
        if let Err(violation) = run_with(case, &actions) {
            prop_assert!(false, "{violation}\ncase: {case:?}\nactions: {actions:#?}");
        }
    }
}

/// The model's worlds happen: over the cases CI runs, every failure the model adds is met
/// and leads where it should (a model whose new actions never fired would pass anything).
/// Prints what the cases exercised.
#[test]
fn the_model_exercises_every_failure_it_models() {
    let strategy = (case(), proptest::collection::vec(action(), 1..120));
    let total = std::cell::RefCell::new(Seen::default());
    fixed_runner(true)
        .run(&strategy, |(case, actions)| {
            let (result, seen) = run_seeing(case, &actions);
            let mut total = total.borrow_mut();
            total.reasons.extend(seen.reasons);
            total.faults_fired += seen.faults_fired;
            total.abandoned_while_stopping += seen.abandoned_while_stopping;
            total.fenced_writes += seen.fenced_writes;
            total.recovered_after_lag += seen.recovered_after_lag;
            total.writes_behind_the_view += seen.writes_behind_the_view;
            total.blocked_after_post += seen.blocked_after_post;
            result.map_err(TestCaseError::fail)
        })
        .unwrap();
    let total = total.into_inner();
    println!("{total:?}");
    for reason in [
        Reason::Issued,
        Reason::OutcomeUnknown,
        Reason::TenantBlocked,
        Reason::PolicyDenied,
        Reason::EmailInUse,
        Reason::UserNotFound,
        Reason::NotAGuest,
        Reason::Forbidden,
    ] {
        assert!(
            total.reasons.contains(&reason),
            "no case reached {reason:?}"
        );
    }
    assert!(total.faults_fired > 0, "no status write failed");
    assert!(
        total.abandoned_while_stopping > 0,
        "no pass was abandoned by a stop"
    );
    assert!(total.fenced_writes > 0, "no write met a closed fence");
    assert!(total.recovered_after_lag > 0, "no evidence showed late");
    assert!(
        total.blocked_after_post > 0,
        "no pause met an answered POST"
    );
    assert!(
        total.writes_behind_the_view > 0,
        "no write went out while the writer's view lagged behind a pause"
    );
}

/// The cases of the fixed-seed runs (the exercise test; the mutation check, per planted
/// defect): as many as CI runs of the property test.
const FIXED_CASES: u32 = 3000;

/// A runner of `FIXED_CASES` cases on a fixed seed, so that what a run exercised and how
/// soon a planted defect is caught are the same from run to run; `shrink` or stop at the
/// first failing case.
fn fixed_runner(shrink: bool) -> proptest::test_runner::TestRunner {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut config = Config {
        cases: FIXED_CASES,
        failure_persistence: None,
        ..Config::default()
    };
    if !shrink {
        config.max_shrink_iters = 0;
    }
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

/// The mutation check: each rule of the decision ([`crate::mutants::Mutant::DECISIONS`]) taken
/// away in turn (the limiter's are its own property test's to catch), the model
/// test must find a case that breaks an invariant, within the cases CI runs. A model that
/// missed one would pass whatever the controller did about that rule. Prints how many cases
/// each took to catch.
#[test]
fn every_planted_defect_is_caught_by_the_model() {
    use crate::mutants::{self, Mutant};
    use proptest::test_runner::TestError;
    let strategy = (case(), proptest::collection::vec(action(), 1..120));
    let mut missed = Vec::new();
    for mutant in Mutant::DECISIONS {
        let cases = std::cell::Cell::new(0u32);
        let outcome = mutants::with(mutant, || {
            fixed_runner(false).run(&strategy, |(case, actions)| {
                cases.set(cases.get() + 1);
                run_with(case, &actions).map_err(TestCaseError::fail)
            })
        });
        match outcome {
            Err(TestError::Fail(why, _)) => {
                println!("{mutant:?}: caught after {} cases: {why}", cases.get());
            }
            other => {
                println!(
                    "{mutant:?}: NOT caught in {} cases ({other:?})",
                    cases.get()
                );
                missed.push(mutant);
            }
        }
    }
    assert!(missed.is_empty(), "the model test misses {missed:?}");
}

/// The model itself must be able to fail: a controller that ignored the attempt-id rule
/// would be caught. Here the rule is sound, so a plain run of many steps ends Issued once.
#[test]
fn the_model_reaches_issued_with_one_post() {
    let actions: Vec<Action> = std::iter::repeat_n(Action::Step(0, Answer::Ok), 20).collect();
    let mut world_actions = vec![Action::Tick(20)];
    world_actions.extend(actions);
    world_actions.push(Action::Tick(1));
    run(&world_actions).unwrap();
    let mut world = World::new(Case::plain());
    // The limiter starts empty, as in production: the two slots (mail, POST) are there at 20 s.
    world.now = 20;
    let mut runner = Some(PassRunner::new(world.obj.clone(), 0));
    for _ in 0..20 {
        let Some(r) = runner.as_mut() else { break };
        let settings = world.settings.clone();
        let mut io = ModelIo {
            w: &mut world,
            writer: 0,
            answer: Answer::Ok,
            violation: None,
            fault_fired: false,
            block_after_post: false,
        };
        match futures::executor::block_on(r.step(&mut io, &settings)) {
            Ok(()) => {}
            Err(End::Done(Outcome::Reported(report))) => {
                assert_eq!(report.reason, Reason::Issued);
                runner = None;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(world.effective.get(&1), Some(&1));
}

/// Defect (found by the model with 60,000 cases): writer 0's POST takes effect and its process
/// dies before the outcome is written; writer 1's evidence read is refused (a definite 4xx),
/// which settles the resource as `GraphRejected` with the attempt kept; a human then sets the
/// retry annotation, and accepting it dropped the attempt, so the generation would have been
/// posted again blindly. The attempt is now resolved first (here: evidence, `Issued`).
#[test]
fn a_retry_never_drops_an_attempt_that_may_have_taken_effect() {
    use Action::{ApiFault, Burst, Crash, Retry, Step, Tick};
    let actions = vec![
        Burst(0, 4, Answer::Ok),
        ApiFault { lost_answer: false },
        Burst(0, 9, Answer::Ok),
        Tick(7),
        // Slots, intent, gate, mail, gate, fresh reads and the sending mark.
        Burst(0, 15, Answer::Ok),
        // The POST takes effect; the process dies before writing its outcome.
        Step(0, Answer::Ok),
        Step(1, Answer::Rejected),
        Crash(0),
        Burst(1, 2, Answer::Ok),
        Retry,
        Burst(0, 4, Answer::Ok),
    ];
    let mut world = World::new(Case::plain());
    run_in(&mut world, &actions).unwrap();
    let status = world.obj.status.clone().unwrap_or_default();
    let invitation = status.invitation.as_ref();
    assert!(
        invitation.is_some_and(|i| i.recovered && i.generation == 1),
        "the interrupted attempt was recovered before the retry: {invitation:?}"
    );
    // The retry was set while the attempt was unresolved: seen, and not acted on.
    assert_eq!(status.retry_token.as_deref(), Some("1"));
    assert_eq!(status::ready_reason(&status), Some(Reason::Issued));
    assert_eq!(world.effective.get(&1), Some(&1), "one invitation");
}

/// Steps `writer` until its pass ends (or `max` steps), with Graph answering `answer`.
fn steps(actions: &mut Vec<Action>, writer: usize, answer: Answer, n: usize) {
    actions.extend(std::iter::repeat_n(Action::Step(writer, answer), n));
}

/// Defect: a stale outcome re-applied over a newer one gave a second invitation. Controller A's
/// POST answers 504 after taking effect; B recovers the attempt from evidence and records
/// `Issued`; A's "look for evidence" report then conflicts and must be dropped, not re-applied
/// (which would reopen the generation and post again).
#[test]
fn a_stale_outcome_is_never_applied_over_a_newer_one() {
    let mut actions = Vec::new();
    // A: ReadUser, ReadEmailHolders, TakeSlots, RecordIntent, CheckTenant, SetMail,
    // CheckTenant, MarkSending: eight steps, then the POST takes effect and answers 504.
    steps(&mut actions, 0, Answer::Ok, 8);
    steps(&mut actions, 0, Answer::Ambiguous { took_effect: true }, 1);
    // B recovers: reads the evidence and reports Issued (recovered).
    steps(&mut actions, 1, Answer::Ok, 3);
    // A's report now conflicts.
    steps(&mut actions, 0, Answer::Ok, 3);
    actions.push(Action::Tick(30));
    steps(&mut actions, 0, Answer::Ok, 14);
    steps(&mut actions, 1, Answer::Ok, 14);
    run(&actions).unwrap();
}
