//! Seeded end-to-end chaos: two `guestreset run` processes without leader election against the
//! real API server and the HTTPS Graph simulator, while the test SIGKILLs and restarts them,
//! injects every simulator fault, edits specs, sets retry annotations and changes the directory
//! the way other people do. Afterwards the simulator's journal, invitations and hazards, the
//! test's own clock and every status the test saw are checked against the contract
//! (docs/design.md: "One pass", "Interrupted attempts", "Asking again", "The tenant pause",
//! "The chaos test"). No invariant takes its facts from a record the controller writes for
//! itself (the tenant-pause ConfigMap): only from Graph's journal, the test's clock and the
//! statuses the resources report.
//!
//! 1. at most one effective POST per (resource, generation), plus one per retry-annotation
//!    value set before the generation was superseded; per resource at most one per
//!    generation plus one per retry value (a value acts once);
//! 2. `Issued` (or a history entry) for generation g only if an effective POST for g exists,
//!    recorded with g's email; else only if a change of the guest by others is evidence for
//!    one of g's attempts as the watch saw them (later than its `userStateBefore`, not before
//!    its `startedAt` less the clock-skew allowance: docs/design.md, "Interrupted attempts");
//! 3. `OutcomeUnknown` for g only if no effective POST for g preceded it since the last
//!    retry a human asked for from a settled state (or the directory cannot tell);
//! 4. no POST for a non-Guest beyond the race the contract leaves (a read up to 10 s old);
//! 5. the history never lists a generation twice (beyond what retries asked for);
//! 6. never `UserNotFound` or `AmbiguousUser` (no user is ever deleted or duplicated);
//! 7. every resource settles once the chaos stops;
//! 8. no Graph write by any process from 1 s after Graph's abuse answer (journal) until the
//!    cool-down ends;
//! 9. after it, at most one probe (PATCH + POST) per running process until an invitation goes
//!    through or Graph blocks again;
//! 10. in every window w at most burst + rate·w Graph writes per process that ran in it;
//! 11. no POST more than 5 s after the `postStartedAt` before it.
//!
//! Every seed also proves it exercised the world: minimums of kills, fired faults of each
//! kind, tenant blocks, recoveries and conversions, and statuses seen (see [`Minimums`]).
//!
//! Two profiles (`CHAOS_PROFILES=fast,default`, both by default): `fast` at 600 writes a
//! minute (burst 20), 12 resources, 50 s; `default` at the production defaults (6 a minute,
//! burst 3), 5 resources, 100 s. `CHAOS_SEEDS=1,2,3` (default `1`), `CHAOS_RESOURCES` and
//! `CHAOS_SECONDS` override a profile's figures; `scripts/chaos.sh --seeds N --profile P` runs
//! many. The seed fixes the schedule of actions and the simulator's latencies, not the
//! interleaving of real processes, so a seed finds a defect often, not always.

mod oracles;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use graph_sim::{Call, FaultAction, FaultRule, Hazard, InvitationRecord, JournalEntry, SeedUser};
use guestreset::resource::GuestRedemptionReset;
use guestreset_testsupport::operator::{RETRY_ANNOTATION, World, current_ready};
use guestreset_testsupport::wait_until;
use jiff::{SignedDuration, Timestamp};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const DEFAULT_SEEDS: &[u64] = &[1];
/// `--graph-timeout` of the operators.
const GRAPH_TIMEOUT_SECS: i64 = 5;
/// The longest `DelayAfter` the test injects on an answer (a read's answer included).
const MAX_DELAY_AFTER_MS: u64 = 3000;
/// A conversion to member this long before a POST is a race no controller can close: the
/// contract lets a POST follow a read of up to 10 s (docs/design.md, "The sending window"), the send window of 5 s
/// included, and the read's answer may itself have been delayed by the test's fault; 1 s for
/// the request's way. Later POSTs to a member are violations.
const CONVERSION_RACE: SignedDuration =
    SignedDuration::from_millis(10_000 + MAX_DELAY_AFTER_MS as i64 + 1_000);
/// The controller's clock-skew allowance (docs/design.md, "Interrupted attempts": evidence not earlier than the attempt's
/// start less a small allowance; `Settings::clock_skew`).
const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(60);
/// Generations per resource at most (spec edits + 1).
const MAX_GENERATIONS: usize = 5;
/// Ready reasons after which nothing more happens without a human (or a slow retry).
const SETTLED: &[&str] = &[
    "Issued",
    "OutcomeUnknown",
    "NotAGuest",
    "GraphRejected",
    "UserNotFound",
    "AmbiguousUser",
    "EmailInUse",
    "EmailNotOnUser",
    "PolicyDenied",
    "Forbidden",
    "DryRunComplete",
    "Denied",
];

/// What a seed must have exercised, else it proves nothing (and fails).
#[derive(Clone, Copy, Debug)]
struct Minimums {
    kills: usize,
    tenant_blocks: usize,
    recoveries: usize,
    conversions: usize,
    /// Fault kinds (`FaultAction::name`) that must have fired, from the journal.
    fault_kinds: &'static [&'static str],
}

/// One way to run the chaos: the rates, the size, the length.
#[derive(Clone, Copy, Debug)]
struct Profile {
    name: &'static str,
    rate: oracles::Rate,
    resources: usize,
    seconds: u64,
    /// How long the resources may take to settle once the chaos stops.
    settle: Duration,
    /// `--tenant-block-cooldown` of the operators.
    cooldown: SignedDuration,
    /// `--replication-window` of the operators.
    replication_window_secs: u64,
    /// How long the simulator hides a reset's effect on the user (below the window).
    evidence_delay: Duration,
    /// One action every this long, on average.
    pace_ms: (u64, u64),
    /// The share of actions (in %) that SIGKILL a controller at random, besides the kills on
    /// a clock up to the minimum and the crashes right after a mail PATCH. At the default
    /// rates a restarted process starts with an empty bucket (the limit holds across restarts)
    /// and waits 10 s for its first write: a kill every few seconds would leave the world
    /// without writes, and without the POSTs the abuse block and the conversion race need.
    kill_percent: u32,
    /// The share of actions (in %, at most 22) that edit a spec. At the default rates every
    /// edit asks for one or two more writes at 6 a minute and sends its resource to the back of
    /// the line: edits every 11 s outran what two processes can write.
    edit_percent: u32,
    minimums: Minimums,
}

const ALL_FAULT_KINDS: &[&str] = &[
    "Throttle",
    "ServerErrorBefore",
    "ServerErrorAfter",
    "DelayAfter",
    "HangAfter",
    "DropConnectionBefore",
    "DropConnectionAfter",
    "AbuseBlock",
    "Forbidden",
    "Unauthorized",
];

/// 600 writes a minute: many generations, every fault, many races.
const FAST: Profile = Profile {
    name: "fast",
    rate: oracles::Rate {
        per_minute: 600,
        burst: 20,
    },
    resources: 12,
    seconds: 50,
    settle: Duration::from_secs(60),
    cooldown: SignedDuration::from_secs(3),
    replication_window_secs: 6,
    evidence_delay: Duration::from_secs(2),
    pace_ms: (100, 500),
    kill_percent: 8,
    edit_percent: 22,
    minimums: Minimums {
        kills: 3,
        tenant_blocks: 1,
        recoveries: 1,
        conversions: 1,
        fault_kinds: ALL_FAULT_KINDS,
    },
};

/// The production defaults, 6 writes a minute and a burst of 3, where nearly every reset
/// waits for a turn (issue 19): fewer resources, longer, a slower pace of actions.
const DEFAULT_RATE: Profile = Profile {
    name: "default",
    rate: oracles::Rate {
        per_minute: 6,
        burst: 3,
    },
    resources: 5,
    seconds: 90,
    // The backlog the chaos can leave at 6 writes a minute: a mail PATCH and a POST for each
    // of the 5 resources, one write per 10 s (100 s), after the cool-down (15 s) and its probe,
    // with the replication window (6 s) and a margin. 100 s was less than that: seed 15 ended
    // with two resources Pending on turns due 20 s and 40 s after the deadline.
    settle: Duration::from_secs(160),
    cooldown: SignedDuration::from_secs(15),
    replication_window_secs: 6,
    evidence_delay: Duration::from_secs(2),
    pace_ms: (1500, 3500),
    kill_percent: 2,
    edit_percent: 10,
    minimums: Minimums {
        kills: 2,
        tenant_blocks: 1,
        recoveries: 0,
        conversions: 1,
        fault_kinds: ALL_FAULT_KINDS,
    },
};

fn env_list<T: std::str::FromStr>(name: &str) -> Option<Vec<T>> {
    let list = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
    Some(
        list.split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: comma-separated values, not {s:?}"))
            })
            .collect(),
    )
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    env_list(name).and_then(|v: Vec<T>| v.into_iter().next())
}

fn profiles() -> Vec<Profile> {
    let names: Vec<String> =
        env_list("CHAOS_PROFILES").unwrap_or_else(|| vec!["fast".into(), "default".into()]);
    names
        .iter()
        .map(|n| match n.as_str() {
            "fast" => FAST,
            "default" => DEFAULT_RATE,
            other => panic!("CHAOS_PROFILES: fast or default, not {other:?}"),
        })
        .map(|mut p| {
            p.resources = env_number("CHAOS_RESOURCES").unwrap_or(p.resources);
            p.seconds = env_number("CHAOS_SECONDS").unwrap_or(p.seconds);
            p
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn chaos_keeps_once_per_generation() {
    let seeds: Vec<u64> = env_list("CHAOS_SEEDS").unwrap_or_else(|| DEFAULT_SEEDS.to_vec());
    let mut failures = String::new();
    for profile in profiles() {
        println!(
            "chaos: profile {}, seeds {seeds:?}, {} resources each, {} s of chaos",
            profile.name, profile.resources, profile.seconds
        );
        for &seed in &seeds {
            println!("chaos seed {seed} ({}): start", profile.name);
            let report = run_seed(seed, profile).await;
            println!("{}", report.figures());
            failures.push_str(&report.describe_violations(&profile));
        }
    }
    assert!(
        failures.is_empty(),
        "chaos found violations (rerun one with CHAOS_PROFILES=<profile> CHAOS_SEEDS=<seed> \
         GUESTRESET_KEEP_TEST_DIRS=1 cargo test --test chaos -- --nocapture; CHAOS_RESOURCES \
         and CHAOS_SECONDS make a smaller case):{failures}"
    );
}

/// How many violations of one invariant are printed with their journal entries and logs; the
/// rest get their one-line summary.
const DETAILED_PER_INVARIANT: usize = 2;

// ------------------------------------------------------------------ the schedule's records

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Id,
    Mail,
}

#[derive(Clone, Debug)]
struct Generation {
    generation: i64,
    email: String,
    /// When the API server answered the create or patch that made it.
    created: Timestamp,
}

#[derive(Clone, Debug)]
struct Target {
    name: String,
    user_id: String,
    old_mail: String,
    key: Key,
    created: bool,
    /// Converted to a member by the test at this time (the request was sent then).
    converted_at: Option<Timestamp>,
    generations: Vec<Generation>,
    /// When each retry-annotation value was set (the patch's answer).
    retries: Vec<Timestamp>,
}

impl Target {
    fn generation(&self, generation: i64) -> Option<&Generation> {
        self.generations.iter().find(|g| g.generation == generation)
    }

    /// How many issuances the `k`-th generation may have: one, plus one per retry value set
    /// before it was superseded (a value set earlier and not yet acted on may act on this
    /// one: 3.5 records the value, not the generation). Each value acts once, which
    /// [`Target::allowed_in_all`] bounds. Also the retry values, for messages.
    fn allowed_issuances(&self, k: usize) -> (usize, usize) {
        let g = &self.generations[k];
        let until = self.superseded_at(g.generation);
        let retries = self
            .retries
            .iter()
            .filter(|r| until.is_none_or(|u| **r < u))
            .count();
        (1 + retries, retries)
    }

    /// How many issuances the resource may have in all: one per generation, one per retry
    /// value (docs/resource.md, "Asking again").
    fn allowed_in_all(&self) -> usize {
        self.generations.len() + self.retries.len()
    }

    /// When the generation after `g` was made, if one was.
    fn superseded_at(&self, generation: i64) -> Option<Timestamp> {
        self.generations
            .iter()
            .filter(|g| g.generation > generation)
            .map(|g| g.created)
            .min()
    }
}

/// A change of a user's redemption state by someone else.
#[derive(Clone, Debug)]
struct DirectoryChange {
    user_id: String,
    what: &'static str,
    /// When the admin call came back (the change happened before).
    done: Timestamp,
    /// `externalUserStateChangeDateTime` afterwards (whole seconds).
    change_time: Option<Timestamp>,
}

/// Ready's `(observedGeneration, reason)`.
type ReadyState = Option<(i64, String)>;
/// The latest Ready of each resource, by name, as the watch saw it.
type Latest = Arc<Mutex<HashMap<String, ReadyState>>>;

/// One status the watch saw.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    at: Timestamp,
    name: String,
    /// Ready's observedGeneration and reason.
    ready: Option<(i64, String)>,
    /// `(generation, email, recovered)` of every history entry.
    history: Vec<(i64, String, bool)>,
    /// The attempt in flight, as far as the status shows one.
    attempt: Option<SeenAttempt>,
}

/// `status.attempt` as the watch saw it: the bounds of its evidence (docs/design.md, "Interrupted attempts") and its
/// mark (3.7).
#[derive(Clone, Debug, PartialEq)]
struct SeenAttempt {
    id: String,
    generation: i64,
    started_at: Option<Timestamp>,
    post_started_at: Option<Timestamp>,
    /// `userStateBefore.changedAt`; None when the state had never changed (or is not recorded).
    changed_before: Option<Timestamp>,
}

#[derive(Debug)]
struct Violation {
    invariant: &'static str,
    summary: String,
    detail: String,
}

#[derive(Default, Debug)]
struct Figures {
    seed: u64,
    resources: usize,
    generations: usize,
    effective_posts: usize,
    posts_sent: usize,
    /// Mail PATCHes and POSTs the journal holds.
    writes_sent: usize,
    kills: usize,
    faults: usize,
    edits: usize,
    retries: usize,
    foreign_resets: usize,
    redeems: usize,
    conversions: usize,
    hazards: usize,
    /// Races the contract accepts, by kind: evidence from another's change (2), a change in
    /// the same second (3), a POST within the conversion race (4).
    excused_races: BTreeMap<&'static str, usize>,
    /// Abuse answers in the journal, Graph writes in the grace after one, abuse answers whose
    /// process the test killed at once, and probes after a pause.
    tenant_blocks: usize,
    writes_in_grace: usize,
    pauses_lost_to_kills: usize,
    probes: usize,
    /// Issuances recovered by evidence, as the statuses showed them.
    recoveries: usize,
    /// Fault kinds that fired, from the journal.
    fired: BTreeMap<String, usize>,
    /// Statuses the watch saw, and its errors.
    statuses_seen: usize,
    watch_errors: usize,
    final_reasons: BTreeMap<String, usize>,
    runtime: Duration,
}

impl Figures {
    fn excuse(&mut self, kind: &'static str) {
        *self.excused_races.entry(kind).or_default() += 1;
    }

    /// What the seed failed to exercise, against the profile's minimums.
    fn shortfalls(&self, min: &Minimums) -> Vec<String> {
        let mut short = Vec::new();
        let mut need = |what: &str, have: usize, want: usize| {
            if have < want {
                short.push(format!("{what}: {have} < {want}"));
            }
        };
        need("kills", self.kills, min.kills);
        need("tenant blocks", self.tenant_blocks, min.tenant_blocks);
        need("recoveries", self.recoveries, min.recoveries);
        need("conversions", self.conversions, min.conversions);
        need("statuses seen", self.statuses_seen, self.resources);
        for kind in min.fault_kinds {
            need(
                &format!("fired {kind} faults"),
                self.fired.get(*kind).copied().unwrap_or(0),
                1,
            );
        }
        short
    }
}

struct SeedReport {
    profile: &'static str,
    figures: Figures,
    violations: Vec<Violation>,
}

impl SeedReport {
    /// Each violation (they are distinct), the first few of an invariant with the offending
    /// journal entries and log lines.
    fn describe_violations(&self, profile: &Profile) -> String {
        let seed = self.figures.seed;
        let resources = profile.resources;
        let name = profile.name;
        let mut out = String::new();
        let mut printed: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &self.violations {
            let n = printed.entry(v.invariant).or_default();
            *n += 1;
            let _ = writeln!(
                out,
                "\n==== seed {seed} ({name}, {resources} resources) violates invariant {}: {}",
                v.invariant, v.summary
            );
            if *n <= DETAILED_PER_INVARIANT {
                out.push_str(&v.detail);
            }
        }
        out
    }

    fn figures(&self) -> String {
        let f = &self.figures;
        let reasons: Vec<String> = f
            .final_reasons
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        let broken: BTreeMap<&str, usize> =
            self.violations.iter().fold(BTreeMap::new(), |mut m, v| {
                *m.entry(v.invariant).or_default() += 1;
                m
            });
        let excused: usize = f.excused_races.values().sum();
        format!(
            "chaos seed={} profile={} resources={} generations={} effective_posts={} \
             posts_sent={} writes_sent={} kills={} faults={} fired={:?} edits={} retries={} foreign_resets={} \
             redeems={} conversions={} recoveries={} hazards={} excused_races={excused} {:?} \
             tenant_blocks={} writes_in_grace={} pauses_lost_to_kills={} probes={} \
             statuses_seen={} watch_errors={} violations={} by_invariant={broken:?} final={} \
             runtime={}s",
            f.seed,
            self.profile,
            f.resources,
            f.generations,
            f.effective_posts,
            f.posts_sent,
            f.writes_sent,
            f.kills,
            f.faults,
            f.fired,
            f.edits,
            f.retries,
            f.foreign_resets,
            f.redeems,
            f.conversions,
            f.recoveries,
            f.hazards,
            f.excused_races,
            f.tenant_blocks,
            f.writes_in_grace,
            f.pauses_lost_to_kills,
            f.probes,
            f.statuses_seen,
            f.watch_errors,
            self.violations.len(),
            reasons.join(","),
            f.runtime.as_secs()
        )
    }
}

// ------------------------------------------------------------------ one seed

/// What the loop does later, at a time.
enum Later {
    Restart(usize),
    Redeem(String),
    /// A new generation for the resource (index), e.g. after a conversion's race window.
    Edit(usize),
    /// SIGKILL both controllers once the journal holds more than `before` delayed answers of
    /// `call`; checked on every turn until `give_up`.
    KillWhenDelayed {
        call: Call,
        before: usize,
        give_up: Instant,
    },
}

struct Chaos {
    rng: StdRng,
    w: World<GuestRedemptionReset>,
    targets: Vec<Target>,
    changes: Vec<DirectoryChange>,
    /// The operator (index into `w.operators`) in each of the two slots; None while dead.
    slots: [Option<usize>; 2],
    later: Vec<(Instant, Later)>,
    figures: Figures,
    redeem_seen: usize,
    email_counter: usize,
    retry_counter: usize,
    latest: Latest,
    profile: Profile,
    /// When each operator (by index into `w.operators`) ran, and when the test killed one.
    lives: Vec<oracles::Life>,
    kill_times: Vec<Timestamp>,
    /// The fault kinds still to deal before they are drawn at random (see
    /// [`Chaos::inject_fault`]); `u32::MAX` at the bottom once dealt.
    dealt: Vec<u32>,
}

async fn run_seed(seed: u64, profile: Profile) -> SeedReport {
    let n = profile.resources;
    let phase = Duration::from_secs(profile.seconds);
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut targets = Vec::new();
    let mut users = Vec::new();
    for i in 0..n {
        let user_id = uuid::Builder::from_random_bytes(rng.random())
            .into_uuid()
            .to_string();
        let old_mail = format!("c{i}@old.example");
        users.push(SeedUser::guest(
            &user_id,
            &format!("c{i}_old.example#EXT#@fabrikam.onmicrosoft.com"),
            &old_mail,
        ));
        targets.push(Target {
            name: format!("r{i}"),
            user_id,
            old_mail,
            // A third look their guest up by mail: after the controller's own mail PATCH that
            // mail is gone, and only the id in status finds the guest again.
            key: if i % 3 == 2 { Key::Mail } else { Key::Id },
            created: false,
            converted_at: None,
            generations: vec![],
            retries: vec![],
        });
    }
    let w = World::<GuestRedemptionReset>::start_with(
        &format!("chaos-{}-{seed}", profile.name),
        users,
        env!("CARGO_BIN_EXE_guestreset"),
        |config| graph_sim::SimConfig { seed, ..config },
    )
    .await;
    // As unkind as Graph: a reset's effect on the user replicates late, 503s say when to come
    // back, latencies vary (the simulator's default, seeded).
    w.admin
        .set_evidence_delay(profile.evidence_delay)
        .await
        .unwrap();
    w.admin.set_retry_after_on_503(Some(1)).await.unwrap();
    let mut chaos = Chaos {
        rng,
        w,
        targets,
        changes: vec![],
        slots: [None, None],
        later: vec![],
        figures: Figures {
            seed,
            resources: n,
            ..Figures::default()
        },
        redeem_seen: 0,
        email_counter: 0,
        retry_counter: 0,
        latest: Arc::default(),
        profile,
        lives: vec![],
        kill_times: vec![],
        dealt: vec![],
    };
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let watch_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let watch = tokio::spawn(watch_statuses(
        chaos.w.api.clone(),
        seen.clone(),
        chaos.latest.clone(),
        watch_errors.clone(),
    ));
    chaos.start_slot(0);
    chaos.start_slot(1);
    chaos.run(phase).await;
    let settled = chaos.settle().await;
    watch.abort();
    let seen = seen.lock().unwrap().clone();
    let watch_errors = watch_errors.lock().unwrap().clone();
    let mut violations = chaos.check(&seen).await;
    violations.extend(chaos.check_journal(&seen).await);
    if let Err(state) = settled {
        violations.push(Violation {
            invariant: "7 (settles)",
            summary: format!(
                "not every resource settled within {:?} after the chaos",
                profile.settle
            ),
            detail: state,
        });
    }
    chaos.figures.statuses_seen = seen.len();
    chaos.figures.watch_errors = watch_errors.len();
    if !watch_errors.is_empty() {
        violations.push(Violation {
            invariant: "0 (the checks saw everything)",
            summary: format!(
                "the status watch failed {} time(s): statuses may be missing ({:?})",
                watch_errors.len(),
                watch_errors.iter().take(3).collect::<Vec<_>>()
            ),
            detail: String::new(),
        });
    }
    let short = chaos.figures.shortfalls(&profile.minimums);
    if !short.is_empty() {
        violations.push(Violation {
            invariant: "0 (the seed exercised the world)",
            summary: format!(
                "the seed proves little: {} (another seed, or a longer CHAOS_SECONDS)",
                short.join(", ")
            ),
            detail: String::new(),
        });
    }
    chaos.figures.runtime = started.elapsed();
    let mut once = HashSet::new();
    violations.retain(|v| once.insert((v.invariant, v.summary.clone())));
    let mut detailed: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &mut violations {
        let n = detailed.entry(v.invariant).or_default();
        *n += 1;
        if *n <= DETAILED_PER_INVARIANT {
            v.detail.push_str(&chaos.log_excerpt(&v.summary));
        }
    }
    SeedReport {
        profile: profile.name,
        figures: std::mem::take(&mut chaos.figures),
        violations,
    }
}

/// Records every status of the namespace's resources as the watch delivers it, and every
/// error of the watch (a re-list after one may skip statuses: the seed then fails).
async fn watch_statuses(
    api: kube::Api<GuestRedemptionReset>,
    seen: Arc<Mutex<Vec<Seen>>>,
    latest: Latest,
    errors: Arc<Mutex<Vec<String>>>,
) {
    let mut stream = std::pin::pin!(
        watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
    );
    while let Some(item) = stream.next().await {
        let object = match item {
            Ok(object) => object,
            Err(e) => {
                errors.lock().unwrap().push(e.to_string());
                continue;
            }
        };
        let json = serde_json::to_value(&object).expect("a resource serializes");
        let record = observe(&json);
        latest
            .lock()
            .unwrap()
            .insert(record.name.clone(), record.ready.clone());
        let mut seen = seen.lock().unwrap();
        let repeat = seen
            .iter()
            .rev()
            .find(|s| s.name == record.name)
            .is_some_and(|s| {
                s.ready == record.ready
                    && s.history == record.history
                    && s.attempt == record.attempt
            });
        if !repeat {
            seen.push(record);
        }
    }
}

fn observe(json: &Value) -> Seen {
    let status = &json["status"];
    let ready = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| {
            Some((
                c["observedGeneration"].as_i64()?,
                c["reason"].as_str()?.to_owned(),
            ))
        });
    let history = status["history"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    (
                        e["generation"].as_i64().unwrap_or(-1),
                        e["email"].as_str().unwrap_or_default().to_owned(),
                        e["recovered"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Seen {
        at: Timestamp::now(),
        name: json["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        ready,
        history,
        attempt: observe_attempt(&status["attempt"]),
    }
}

fn observe_attempt(a: &Value) -> Option<SeenAttempt> {
    let time = |v: &Value| v.as_str().and_then(|t| t.parse::<Timestamp>().ok());
    Some(SeenAttempt {
        id: a["id"].as_str()?.to_owned(),
        generation: a["generation"].as_i64()?,
        started_at: time(&a["startedAt"]),
        post_started_at: time(&a["postStartedAt"]),
        changed_before: time(&a["userStateBefore"]["changedAt"]),
    })
}

impl Chaos {
    fn start_slot(&mut self, slot: usize) {
        let p = self.profile;
        let index = self.w.start_operator(&[
            "--graph-timeout",
            &format!("{GRAPH_TIMEOUT_SECS}s"),
            "--tenant-block-cooldown",
            &format!("{}s", p.cooldown.as_secs()),
            "--max-writes-per-minute",
            &p.rate.per_minute.to_string(),
            "--write-burst",
            &p.rate.burst.to_string(),
            "--replication-window",
            &format!("{}s", p.replication_window_secs),
        ]);
        debug_assert_eq!(index, self.lives.len());
        self.lives.push(oracles::Life {
            start: Timestamp::now(),
            end: None,
        });
        self.slots[slot] = Some(index);
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(self.rng.random_range(from..to))
    }

    fn next_email(&mut self, i: usize) -> String {
        self.email_counter += 1;
        format!("r{i}.e{}@new.example", self.email_counter)
    }

    /// The chaos phase: creates the resources at random moments of its first 60 %, and
    /// meanwhile kills, restarts, injects faults, edits, retries and changes the directory.
    async fn run(&mut self, phase: Duration) {
        let start = Instant::now();
        let end = start + phase;
        let mut creations: Vec<(Instant, usize)> = (0..self.targets.len())
            .map(|i| {
                let at = self.millis(0, phase.as_millis() as u64 * 6 / 10 + 1);
                (start + at, i)
            })
            .collect();
        creations.sort_by_key(|(at, _)| *at);
        let mut creations = creations.into_iter().peekable();
        // Every seed converts a guest, from 30 % of the phase on, if chance did not before.
        let convert_at = start + phase * 3 / 10;
        // The deck of fault kinds is dealt on a clock too, one every twelfth of the phase,
        // so that a slow profile (few actions) fires them all.
        let mut deal_at = start;
        // And kills, from 40 % of the phase on, one every tenth, until the minimum is met.
        let mut kill_at = start + phase * 4 / 10;
        while Instant::now() < end {
            if self.figures.kills < self.profile.minimums.kills && kill_at <= Instant::now() {
                self.kill_one();
                kill_at = Instant::now() + phase / 10;
            }
            if deal_at <= Instant::now() && self.dealt.last() != Some(&u32::MAX) {
                self.inject_fault().await;
                deal_at = Instant::now() + phase / 12;
            }
            if self.figures.conversions == 0 && convert_at <= Instant::now() {
                self.convert(end).await;
            }
            while let Some((_, i)) = creations.next_if(|(at, _)| *at <= Instant::now()) {
                self.create(i).await;
            }
            self.due_later(false).await;
            self.schedule_redeems().await;
            self.act(end).await;
            // Pacing of the schedule, not a wait for a condition: the next action comes after
            // a random pause, like the people and failures it stands for.
            let (from, to) = self.profile.pace_ms;
            let pause = self.millis(from, to);
            tokio::time::sleep(pause).await;
        }
        for (_, i) in creations {
            self.create(i).await;
        }
        self.due_later(true).await;
        // The chaos stops: no more faults, nothing held, both controllers up. An abuse block
        // that met no POST during the chaos (at the default rate a seed may send its first
        // POSTs only now) stays armed for the first POST to come, so that every seed checks
        // the pause and its probe (invariants 8 and 9).
        let block_fired =
            self.w.admin.journal().await.unwrap().iter().any(|e| {
                e.call == Call::PostInvitation && e.fault.as_deref() == Some("AbuseBlock")
            });
        self.w.admin.clear_faults().await.unwrap();
        if !block_fired {
            self.add_fault(FaultRule::once(
                Call::PostInvitation,
                FaultAction::AbuseBlock,
            ))
            .await;
        }
        self.w.admin.release_held().await.unwrap();
        for slot in 0..2 {
            if self.slots[slot].is_none() {
                self.start_slot(slot);
            }
        }
    }

    async fn create(&mut self, i: usize) {
        // Half the resources keyed by mail meet a crash right after a write took effect,
        // likely their own mail PATCH: afterwards the spec's mail no longer finds the guest.
        let crash = self.targets[i].key == Key::Mail && self.chance(0.5);
        let before = if crash {
            Some(self.delay_next(Call::PatchUser).await)
        } else {
            None
        };
        self.create_resource(i).await;
        if let Some(before) = before {
            self.kill_when_delayed(Call::PatchUser, before);
        }
    }

    /// Delays the next `call`'s answer by 3 s after it took effect; returns how many delayed
    /// answers of that call the journal held before.
    async fn delay_next(&mut self, call: Call) -> usize {
        let before = self.delayed(call).await;
        self.add_fault(FaultRule::once(
            call,
            FaultAction::DelayAfter { millis: 3000 },
        ))
        .await;
        before
    }

    async fn delayed(&self, call: Call) -> usize {
        self.w
            .admin
            .journal()
            .await
            .map(|j| {
                j.iter()
                    .filter(|e| e.call == call && e.fault.as_deref() == Some("DelayAfter"))
                    .count()
            })
            .unwrap_or_default()
    }

    /// Once a delayed answer of `call` (beyond `before`) is in the journal, SIGKILLs every
    /// running controller: a crash after the write took effect, before its answer arrived.
    /// The loop checks on every turn; it gives up after 6 s (the fault then waits for a later
    /// call).
    fn kill_when_delayed(&mut self, call: Call, before: usize) {
        let give_up = Instant::now() + Duration::from_secs(6);
        self.later.push((
            Instant::now(),
            Later::KillWhenDelayed {
                call,
                before,
                give_up,
            },
        ));
    }

    /// SIGKILLs one running controller; it comes back a little later.
    fn kill_one(&mut self) {
        let running: Vec<usize> = (0..2).filter(|&s| self.slots[s].is_some()).collect();
        if running.is_empty() {
            return;
        }
        let slot = running[self.rng.random_range(0..running.len())];
        let index = self.slots[slot].take().expect("running");
        self.kill(index);
        let back = Instant::now() + self.millis(200, 2500);
        self.later.push((back, Later::Restart(slot)));
    }

    /// SIGKILLs operator `index`, noting when (the journal's invariants need the lives).
    fn kill(&mut self, index: usize) {
        self.w.operators[index].kill();
        let now = Timestamp::now();
        self.lives[index].end = Some(now);
        self.kill_times.push(now);
        self.figures.kills += 1;
    }

    fn kill_all(&mut self) {
        for slot in 0..2 {
            if let Some(index) = self.slots[slot].take() {
                self.kill(index);
                let back = Instant::now() + self.millis(300, 2000);
                self.later.push((back, Later::Restart(slot)));
            }
        }
    }

    async fn create_resource(&mut self, i: usize) {
        let email = self.next_email(i);
        let t = &self.targets[i];
        let user = match t.key {
            Key::Id => json!({"id": t.user_id}),
            Key::Mail => json!({"mail": t.old_mail}),
        };
        let name = t.name.clone();
        self.w
            .create(&name, json!({"user": user, "email": email}))
            .await;
        let created = Timestamp::now();
        let generation = self.w.get(&name).await.metadata.generation.unwrap_or(1);
        let t = &mut self.targets[i];
        t.created = true;
        t.generations.push(Generation {
            generation,
            email,
            created,
        });
    }

    /// A spec edit: a new email, hence a new generation.
    async fn edit(&mut self, i: usize) {
        let email = self.next_email(i);
        let name = self.targets[i].name.clone();
        let patched = self
            .w
            .api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"email": email}})),
            )
            .await
            .unwrap();
        let created = Timestamp::now();
        self.targets[i].generations.push(Generation {
            generation: patched.metadata.generation.unwrap_or_default(),
            email,
            created,
        });
        self.figures.edits += 1;
    }

    async fn retry(&mut self, i: usize) {
        self.retry_counter += 1;
        let value = format!("chaos-{}", self.retry_counter);
        let name = self.targets[i].name.clone();
        self.w.annotate_retry(&name, &value).await;
        self.targets[i].retries.push(Timestamp::now());
        self.figures.retries += 1;
        debug_assert_eq!(RETRY_ANNOTATION, "guestreset.io/retry");
    }

    async fn due_later(&mut self, all: bool) {
        let now = Instant::now();
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.later)
            .into_iter()
            .partition(|(at, _)| all || *at <= now);
        self.later = rest;
        for (_, action) in due {
            match action {
                Later::Restart(slot) => {
                    if self.slots[slot].is_none() {
                        self.start_slot(slot);
                    }
                }
                Later::Redeem(user_id) => {
                    if let Ok(user) = self.w.admin.redeem(&user_id).await {
                        self.record_change(&user_id, "redeem", &user);
                        self.figures.redeems += 1;
                    }
                }
                Later::Edit(i) => self.edit(i).await,
                Later::KillWhenDelayed {
                    call,
                    before,
                    give_up,
                } => {
                    if self.delayed(call).await > before {
                        self.kill_all();
                    } else if now < give_up && !all {
                        let again = Later::KillWhenDelayed {
                            call,
                            before,
                            give_up,
                        };
                        self.later.push((now, again));
                    }
                }
            }
        }
    }

    fn record_change(&mut self, user_id: &str, what: &'static str, user: &SeedUser) {
        self.changes.push(DirectoryChange {
            user_id: user_id.to_owned(),
            what,
            done: Timestamp::now(),
            change_time: user
                .external_user_state_change_date_time
                .as_deref()
                .and_then(|t| t.parse().ok()),
        });
    }

    /// A guest who redeems within seconds: some new invitations are redeemed soon after.
    async fn schedule_redeems(&mut self) {
        let Ok(invitations) = self.w.admin.invitations().await else {
            return;
        };
        for inv in invitations.iter().skip(self.redeem_seen) {
            let converted = self
                .targets
                .iter()
                .any(|t| t.user_id == inv.user_id && t.converted_at.is_some());
            if !converted && self.rng.random_bool(0.35) {
                let at = Instant::now() + self.millis(50, 1500);
                self.later.push((at, Later::Redeem(inv.user_id.clone())));
            }
        }
        self.redeem_seen = invitations.len();
    }

    /// A created, id-keyed resource not converted and with room for another generation.
    fn editable(&mut self) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.targets.len())
            .filter(|&i| {
                let t = &self.targets[i];
                t.created
                    && t.key == Key::Id
                    && t.converted_at.is_none()
                    && t.generations.len() < MAX_GENERATIONS
            })
            .collect();
        (!candidates.is_empty()).then(|| candidates[self.rng.random_range(0..candidates.len())])
    }

    async fn act(&mut self, end: Instant) {
        // The mix leaves both controllers up most of the time and the resources busy with new
        // generations: two controllers racing on one resource is where once-per-generation is
        // hardest, and a fault on every other call would leave most resources stopped early.
        match self.rng.random_range(0..100) {
            // SIGKILL one running controller; it comes back a little later.
            roll if roll < self.profile.kill_percent => self.kill_one(),
            0..30 => self.inject_fault().await,
            roll @ 30..52 if roll < 30 + self.profile.edit_percent => {
                if let Some(i) = self.editable() {
                    self.edit(i).await;
                }
            }
            // Someone else resets the guest's redemption shortly before our POST: a new
            // generation follows within moments, and its POST is likely to meet a fault that
            // leaves the outcome open, so recovery has to tell that reset from ours.
            52..60 => {
                if let Some(i) = self.editable() {
                    let user_id = self.targets[i].user_id.clone();
                    let user = self.w.admin.foreign_reset(&user_id).await.unwrap();
                    self.record_change(&user_id, "foreign reset", &user);
                    self.figures.foreign_resets += 1;
                    self.edit(i).await;
                    if self.chance(0.6) {
                        let action = if self.chance(0.5) {
                            FaultAction::DropConnectionBefore
                        } else {
                            FaultAction::ServerErrorBefore { status: 503 }
                        };
                        self.add_fault(FaultRule::once(Call::PostInvitation, action))
                            .await;
                    }
                }
            }
            60..67 => {
                // Not on resources keyed by mail: after their own mail PATCH the spec's mail is
                // no longer the guest's, and whether a retry must still find the guest through
                // the id in status is not what this test is about.
                let created: Vec<usize> = (0..self.targets.len())
                    .filter(|&i| self.targets[i].created && self.targets[i].key == Key::Id)
                    .collect();
                if created.is_empty() {
                    return;
                }
                // Mostly where a human would: on a stopped resource.
                let latest = self.latest.lock().unwrap().clone();
                let stopped: Vec<usize> = created
                    .iter()
                    .copied()
                    .filter(|&i| {
                        latest
                            .get(&self.targets[i].name)
                            .and_then(|r| r.as_ref())
                            .is_some_and(|(_, reason)| {
                                reason != "Issued" && SETTLED.contains(&reason.as_str())
                            })
                    })
                    .collect();
                let pool = if !stopped.is_empty() && self.chance(0.7) {
                    stopped
                } else {
                    created
                };
                let i = pool[self.rng.random_range(0..pool.len())];
                self.retry(i).await;
            }
            // A guest converted to a member. Its generation in flight may still POST within
            // the race window (a read up to 10 s old is allowed, and the read may take the
            // Graph timeout): hazards then are excused. A new generation follows once the
            // window has passed; a POST for it, or any later one, is a violation.
            67..70 => self.convert(end).await,
            70..74 => {
                let _ = self.w.admin.release_held().await;
            }
            // Both controllers die right after a POST or a PATCH took effect.
            74..78 => {
                let call = if self.chance(0.6) {
                    Call::PostInvitation
                } else {
                    Call::PatchUser
                };
                let before = self.delay_next(call).await;
                self.kill_when_delayed(call, before);
            }
            _ => {}
        }
    }

    /// A guest converted to a member, at most one in eight, and only while its race window
    /// fits into the chaos.
    async fn convert(&mut self, end: Instant) {
        let limit = (self.targets.len() / 8).max(1);
        let window = CONVERSION_RACE.unsigned_abs();
        if self.figures.conversions >= limit
            || Instant::now() + window + Duration::from_secs(3) > end
        {
            return;
        }
        if let Some(i) = self.editable() {
            let user_id = self.targets[i].user_id.clone();
            self.targets[i].converted_at = Some(Timestamp::now());
            self.w.admin.convert_to_member(&user_id).await.unwrap();
            self.figures.conversions += 1;
            self.later.push((Instant::now() + window, Later::Edit(i)));
        }
    }

    async fn add_fault(&mut self, rule: FaultRule) {
        self.figures.faults += rule.times.unwrap_or(1) as usize;
        self.w.admin.add_fault(rule).await.unwrap();
    }

    /// One fault of a random kind, mostly on POST /invitations.
    /// The first faults of a seed deal every kind once, in a seeded order, so that each seed
    /// exercises them all ([`Minimums`]); then the kinds are drawn at random.
    async fn inject_fault(&mut self) {
        let call = match self.rng.random_range(0..10) {
            0..6 => Call::PostInvitation,
            6..8 => Call::PatchUser,
            8 => Call::GetUser,
            _ => Call::ListUsers,
        };
        let status = [500, 503, 504][self.rng.random_range(0..3)];
        // The lowest roll of each kind below; the abuse block first, on the first POST to
        // come (at the default rate there are few), the others on reads, which are many.
        const ABUSE: u32 = 86;
        const DECK: [u32; 9] = [0, 14, 28, 44, 56, 66, 78, 95, 97];
        if self.dealt.is_empty() {
            self.dealt = DECK.to_vec();
            self.dealt.shuffle(&mut self.rng);
            self.dealt.insert(0, u32::MAX);
            self.dealt.push(ABUSE);
        }
        let (roll, call) = match self.dealt.pop() {
            Some(ABUSE) => (ABUSE, Call::PostInvitation),
            Some(roll) if roll != u32::MAX => (roll, Call::GetUser),
            _ => {
                self.dealt.push(u32::MAX);
                (self.rng.random_range(0..100), call)
            }
        };
        let action = match roll {
            0..14 => FaultAction::Throttle {
                retry_after_seconds: Some(self.rng.random_range(1..4)),
                retry_after_http_date: self.chance(0.3),
            },
            14..28 => FaultAction::ServerErrorBefore { status },
            28..44 => FaultAction::ServerErrorAfter { status },
            44..56 => FaultAction::DelayAfter {
                millis: self.rng.random_range(500..3000),
            },
            56..66 => FaultAction::HangAfter,
            66..78 => FaultAction::DropConnectionBefore,
            78..86 => FaultAction::DropConnectionAfter,
            // Often enough that most seeds pause the tenant (invariant 8) a few times.
            86..95 if call == Call::PostInvitation => FaultAction::AbuseBlock,
            86..95 => FaultAction::DropConnectionAfter,
            95..97 => FaultAction::Forbidden,
            97..100 => FaultAction::Unauthorized,
            _ => FaultAction::ServerErrorBefore { status },
        };
        let times = if self.chance(0.8) { 1 } else { 2 };
        self.add_fault(FaultRule::times(call, times, action)).await;
    }

    /// Waits until every resource's Ready describes its current generation with a settled
    /// reason; `Err` with the unsettled ones when that takes longer than the profile allows.
    async fn settle(&self) -> Result<(), String> {
        let settle = self.profile.settle;
        let wait = wait_until("every resource to settle", settle + settle, || async {
            match self.unsettled().await {
                Ok(list) if list.is_empty() => Ok(Some(())),
                Ok(list) => Err(list.join(", ")),
                Err(e) => Err(e),
            }
        });
        match tokio::time::timeout(settle, wait).await {
            Ok(()) => Ok(()),
            Err(_) => Err(format!(
                "  still unsettled: {}\n",
                self.unsettled()
                    .await
                    .map_or_else(|e| e, |list| list.join(", "))
            )),
        }
    }

    /// `name reason` of each resource whose Ready is not settled for its current generation.
    async fn unsettled(&self) -> Result<Vec<String>, String> {
        let list = self
            .w
            .api
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(list
            .items
            .iter()
            .filter_map(|o| {
                let json = serde_json::to_value(o).ok()?;
                let ready = current_ready(&json);
                let reason = ready
                    .and_then(|r| r["reason"].as_str())
                    .unwrap_or("(none)")
                    .to_owned();
                // The message says what it waits for (a turn, a pause, a re-read).
                let message = ready.and_then(|r| r["message"].as_str()).unwrap_or("");
                (!SETTLED.contains(&reason.as_str())).then(|| {
                    let name = o.metadata.name.as_deref().unwrap_or("");
                    format!("{name} {reason} ({message})")
                })
            })
            .collect())
    }

    // -------------------------------------------------------------- the invariants

    async fn check(&mut self, seen: &[Seen]) -> Vec<Violation> {
        let admin = &self.w.admin;
        let journal = admin.journal().await.unwrap();
        let invitations = admin.invitations().await.unwrap();
        let hazards = admin.hazards().await.unwrap();
        let list = self.w.api.list(&ListParams::default()).await.unwrap();
        let mut seen = seen.to_vec();
        for object in &list.items {
            let json = serde_json::to_value(object).unwrap();
            seen.push(observe(&json));
            let f = observe(&json);
            let reason = match current_ready(&json) {
                Some(r) => r["reason"].as_str().unwrap_or("(none)").to_owned(),
                None => format!("(not current: {:?})", f.ready),
            };
            *self.figures.final_reasons.entry(reason).or_default() += 1;
        }

        let f = &mut self.figures;
        f.generations = self.targets.iter().map(|t| t.generations.len()).sum();
        f.effective_posts = invitations.len();
        f.hazards = hazards.len();
        f.posts_sent = journal
            .iter()
            .filter(|e| e.call == Call::PostInvitation)
            .count();
        f.writes_sent = journal
            .iter()
            .filter(|e| matches!(e.call, Call::PostInvitation | Call::PatchUser))
            .count();
        for e in &journal {
            if let Some(kind) = &e.fault {
                *f.fired.entry(kind.clone()).or_default() += 1;
            }
        }
        let recovered: HashSet<(&str, i64)> = seen
            .iter()
            .flat_map(|s| {
                s.history
                    .iter()
                    .filter(|h| h.2)
                    .map(|h| (s.name.as_str(), h.0))
            })
            .collect();
        f.recoveries = recovered.len();

        let mut v = Vec::new();
        let by_user: HashMap<&str, &Target> = self
            .targets
            .iter()
            .map(|t| (t.user_id.as_str(), t))
            .collect();
        let effective = |t: &Target, email: &str| -> Vec<&InvitationRecord> {
            invitations
                .iter()
                .filter(|i| {
                    i.user_id.eq_ignore_ascii_case(&t.user_id)
                        && i.invited_user_email_address.eq_ignore_ascii_case(email)
                })
                .collect()
        };
        let entries = |t: &Target| user_entries(&journal, t);

        // 1. At most one effective POST per generation, plus one per retry value.
        for t in &self.targets {
            let mut all = Vec::new();
            for (k, g) in t.generations.iter().enumerate() {
                let posts = effective(t, &g.email);
                let (allowed, retries) = t.allowed_issuances(k);
                if posts.len() > allowed {
                    v.push(Violation {
                        invariant: "1 (once per generation)",
                        summary: format!(
                            "{} generation {} ({}): {} effective POSTs, {allowed} allowed ({retries} retry values set before it was superseded)",
                            t.name,
                            g.generation,
                            g.email,
                            posts.len()
                        ),
                        detail: describe_posts(&journal, &posts),
                    });
                }
                all.extend(posts);
            }
            if all.len() > t.allowed_in_all() {
                v.push(Violation {
                    invariant: "1 (once per generation)",
                    summary: format!(
                        "{}: {} effective POSTs over {} generations and {} retry values (a value acts once)",
                        t.name,
                        all.len(),
                        t.generations.len(),
                        t.retries.len()
                    ),
                    detail: describe_posts(&journal, &all),
                });
            }
            let ours: HashSet<String> = t
                .generations
                .iter()
                .map(|g| g.email.to_ascii_lowercase())
                .collect();
            let strays: Vec<&InvitationRecord> = invitations
                .iter()
                .filter(|i| {
                    i.user_id.eq_ignore_ascii_case(&t.user_id)
                        && !ours.contains(&i.invited_user_email_address.to_ascii_lowercase())
                })
                .collect();
            if !strays.is_empty() {
                v.push(Violation {
                    invariant: "1 (once per generation)",
                    summary: format!(
                        "{}: effective POSTs for an email no generation asked for",
                        t.name
                    ),
                    detail: describe_posts(&journal, &strays),
                });
            }
        }
        for inv in &invitations {
            if !by_user.contains_key(inv.user_id.as_str()) {
                v.push(Violation {
                    invariant: "1 (once per generation)",
                    summary: format!(
                        "an effective POST for a user no resource targets: {}",
                        inv.user_id
                    ),
                    detail: describe_posts(&journal, &[inv]),
                });
            }
        }

        // 2. Issued (Ready, or a history entry) only with an effective POST for the generation.
        let mut claims: BTreeMap<(String, i64), (Timestamp, String)> = BTreeMap::new();
        for s in &seen {
            if let Some((generation, reason)) = &s.ready
                && reason == "Issued"
            {
                claims
                    .entry((s.name.clone(), *generation))
                    .or_insert((s.at, "Ready=Issued".into()));
            }
            for (generation, email, recovered) in &s.history {
                claims.entry((s.name.clone(), *generation)).or_insert((
                    s.at,
                    format!("history entry (email {email}, recovered {recovered})"),
                ));
                if let Some(t) = self.targets.iter().find(|t| t.name == s.name)
                    && let Some(g) = t.generation(*generation)
                    && !g.email.eq_ignore_ascii_case(email)
                {
                    v.push(Violation {
                        invariant: "2 (issued with the generation's email)",
                        summary: format!(
                            "{} history says generation {generation} was issued to {email}, but that generation asked for {}",
                            t.name, g.email
                        ),
                        detail: describe_entries(&entries(t)),
                    });
                }
            }
        }
        for ((name, generation), (at, how)) in &claims {
            let Some(t) = self.targets.iter().find(|t| &t.name == name) else {
                continue;
            };
            let Some(g) = t.generation(*generation) else {
                v.push(Violation {
                    invariant: "2 (issued only if posted)",
                    summary: format!(
                        "{name}: {how} for generation {generation}, which the test never made"
                    ),
                    detail: describe_entries(&entries(t)),
                });
                continue;
            };
            if !effective(t, &g.email).is_empty() {
                continue;
            }
            // Someone else changed the guest's state in a way that is evidence for one of this
            // generation's attempts as the watch saw them (3.3): a race the contract accepts.
            if self.evidence_by_others(t, *generation, &seen) {
                self.figures.excuse("2 evidence by others");
                continue;
            }
            let earlier = self.changes_of(&t.user_id);
            v.push(Violation {
                invariant: "2 (issued only if posted)",
                summary: format!(
                    "{name} generation {generation} ({}) seen {how} at {at}, but no effective POST for it exists; generation made at {}; directory changes by others: {earlier:?}",
                    g.email, g.created
                ),
                detail: describe_entries(&entries(t)),
            });
        }

        // 3. OutcomeUnknown only if no effective POST preceded it (or the directory cannot tell).
        let mut unknown: BTreeMap<(String, i64), Timestamp> = BTreeMap::new();
        for s in &seen {
            if let Some((generation, reason)) = &s.ready
                && reason == "OutcomeUnknown"
            {
                unknown.entry((s.name.clone(), *generation)).or_insert(s.at);
            }
        }
        for ((name, generation), at) in &unknown {
            let Some(t) = self.targets.iter().find(|t| &t.name == name) else {
                continue;
            };
            let Some(g) = t.generation(*generation) else {
                continue;
            };
            // A POST that the resource reported settled, and that a human then asked to retry
            // (the retry annotation from a settled state runs the generation once more),
            // belongs to an earlier attempt: OutcomeUnknown speaks of the attempt after it.
            let settled_between = |from: Timestamp, to: Timestamp| {
                seen.iter().any(|s| {
                    &s.name == name
                        && s.at >= from
                        && s.at <= to
                        && s.ready.as_ref().is_some_and(|(sg, reason)| {
                            sg == generation && SETTLED.contains(&reason.as_str())
                        })
                })
            };
            let superseded = |posted: Timestamp| {
                t.retries
                    .iter()
                    .any(|r| *r > posted && *r < *at && settled_between(posted, *r))
            };
            let before: Vec<&InvitationRecord> = effective(t, &g.email)
                .into_iter()
                .filter(|i| {
                    i.at.parse::<Timestamp>()
                        .is_ok_and(|p| p < *at && !superseded(p))
                })
                .collect();
            if before.is_empty() {
                continue;
            }
            // Graph's change time has whole seconds: another change of the same guest in the
            // same second as our POST leaves nothing to tell them apart.
            let blind = before.iter().any(|p| {
                let second = p.at.parse::<Timestamp>().map(|t| t.as_second()).ok();
                let others = self
                    .changes
                    .iter()
                    .filter(|c| c.user_id == t.user_id)
                    .filter_map(|c| c.change_time.map(|t| t.as_second()))
                    .chain(
                        invitations
                            .iter()
                            .filter(|o| o.user_id == t.user_id && o.id != p.id)
                            .filter_map(|o| o.at.parse::<Timestamp>().ok().map(|t| t.as_second())),
                    )
                    .collect::<Vec<_>>();
                second.is_some_and(|s| others.contains(&s))
            });
            if blind {
                self.figures.excuse("3 same second");
                continue;
            }
            v.push(Violation {
                invariant: "3 (OutcomeUnknown only without a POST)",
                summary: format!(
                    "{name} generation {generation} ({}) seen OutcomeUnknown at {at}, after {} effective POST(s) for it; directory changes by others: {:?}",
                    g.email,
                    before.len(),
                    self.changes_of(&t.user_id)
                ),
                detail: describe_entries(&entries(t)),
            });
        }

        // 4. No POST for a non-Guest, beyond the race window after a conversion.
        for h in &hazards {
            let t = by_user.get(h.user_id.as_str());
            let at = h.at.parse::<Timestamp>().ok();
            let excused = t
                .and_then(|t| t.converted_at)
                .zip(at)
                .is_some_and(|(converted, at)| at <= converted + CONVERSION_RACE);
            if excused {
                self.figures.excuse("4 conversion race");
                continue;
            }
            v.push(Violation {
                invariant: "4 (never a POST for a non-Guest)",
                summary: format!(
                    "{}: {} (converted by the test at {:?})",
                    t.map_or("?", |t| t.name.as_str()),
                    describe_hazard(h),
                    t.and_then(|t| t.converted_at)
                ),
                detail: t.map(|t| describe_entries(&entries(t))).unwrap_or_default(),
            });
        }

        // 5. The history never lists a generation twice (more often than retries asked for it:
        // the retry annotation is honoured from `Issued` too, see "Asking again").
        let mut reported = HashSet::new();
        for s in &seen {
            let Some(t) = self.targets.iter().find(|t| t.name == s.name) else {
                continue;
            };
            let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
            for h in &s.history {
                *counts.entry(h.0).or_default() += 1;
            }
            let over = counts.iter().find(|&(generation, &n)| {
                let allowed = t
                    .generations
                    .iter()
                    .position(|g| g.generation == *generation)
                    .map_or(1, |k| t.allowed_issuances(k).0);
                let allowed = allowed.min(t.allowed_in_all());
                n > 1 && n > allowed
            });
            if let Some((generation, n)) = over
                && reported.insert(s.name.clone())
            {
                v.push(Violation {
                    invariant: "5 (history lists a generation once)",
                    summary: format!(
                        "{} history at {} lists generation {generation} {n} times: {:?}",
                        s.name, s.at, s.history
                    ),
                    detail: describe_entries(&entries(t)),
                });
            }
        }

        // 6. The guests are never deleted or duplicated.
        let mut reported = HashSet::new();
        for s in &seen {
            if let Some((generation, reason)) = &s.ready
                && (reason == "UserNotFound" || reason == "AmbiguousUser")
                && reported.insert(s.name.clone())
            {
                let t = self.targets.iter().find(|t| t.name == s.name);
                v.push(Violation {
                    invariant: "6 (the guest exists)",
                    summary: format!(
                        "{} generation {generation}: {reason} at {}, though its guest {} exists (looked up by {:?}, mail before the reset {})",
                        s.name,
                        s.at,
                        t.map_or("?", |t| t.user_id.as_str()),
                        t.map(|t| t.key),
                        t.map_or("?", |t| t.old_mail.as_str()),
                    ),
                    detail: t.map(|t| describe_entries(&entries(t))).unwrap_or_default(),
                });
            }
        }
        v
    }

    /// Whether a change of the guest by someone else is evidence for an attempt of
    /// `generation` that the watch saw: strictly later than the attempt's
    /// `userStateBefore` and not earlier than its `startedAt` less the clock-skew allowance
    /// (docs/design.md, "Interrupted attempts"). Redeems and foreign resets both leave an evidence state.
    fn evidence_by_others(&self, t: &Target, generation: i64, seen: &[Seen]) -> bool {
        let attempts: Vec<&SeenAttempt> = seen
            .iter()
            .filter(|s| s.name == t.name)
            .filter_map(|s| s.attempt.as_ref())
            .filter(|a| a.generation == generation)
            .collect();
        self.changes
            .iter()
            .filter(|c| c.user_id == t.user_id)
            .filter_map(|c| c.change_time)
            .any(|changed| {
                attempts.iter().any(|a| {
                    a.changed_before.is_none_or(|b| changed > b)
                        && a.started_at.is_some_and(|s| changed >= s - CLOCK_SKEW)
                })
            })
    }

    /// Invariants 8 to 11, from the journal, the test's clock and the marks the statuses
    /// showed.
    async fn check_journal(&mut self, seen: &[Seen]) -> Vec<Violation> {
        let journal = self.w.admin.journal().await.unwrap();
        let p = self.profile;
        let mut v = oracles::pauses(
            &journal,
            &self.lives,
            &self.kill_times,
            p.cooldown,
            &mut self.figures,
        );
        v.extend(oracles::windows(&journal, &self.lives, p.rate));
        for t in &self.targets {
            let marks: Vec<Timestamp> = seen
                .iter()
                .filter(|s| s.name == t.name)
                .filter_map(|s| s.attempt.as_ref()?.post_started_at)
                .collect();
            let posts: Vec<&JournalEntry> = journal
                .iter()
                .filter(|e| e.call == Call::PostInvitation)
                .filter(|e| e.invited_user_id.as_deref() == Some(t.user_id.as_str()))
                .collect();
            v.extend(oracles::send_window(&t.name, &marks, &posts));
        }
        v
    }

    /// The changes of the user's state by others, for messages.
    fn changes_of(&self, user_id: &str) -> Vec<String> {
        self.changes
            .iter()
            .filter(|c| c.user_id == user_id)
            .map(|c| {
                format!(
                    "{} done at {} (change time {})",
                    c.what,
                    c.done,
                    c.change_time.map(|t| t.to_string()).unwrap_or_default()
                )
            })
            .collect()
    }

    /// The operator log lines about the resource a violation names (its first word).
    fn log_excerpt(&self, summary: &str) -> String {
        let name = summary.split([' ', ':']).next().unwrap_or_default();
        if !name.starts_with('r') {
            return String::new();
        }
        let needle = format!("{}/{name}\"", self.w.ns);
        let mut out = String::new();
        for (i, op) in self.w.operators.iter().enumerate() {
            let log = op.read_log();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(&needle)).collect();
            for line in lines.iter().rev().take(12).rev() {
                let line: String = line.chars().take(400).collect();
                let _ = writeln!(out, "  [operator {i}] {line}");
            }
        }
        if out.is_empty() {
            out
        } else {
            format!("  operator log lines about {name} (last 12 of each operator):\n{out}")
        }
    }
}

/// The journal entries about the target's guest: reads of it (by id or by any of its mails),
/// PATCHes of it and invitation requests for it.
fn user_entries<'a>(journal: &'a [JournalEntry], t: &Target) -> Vec<&'a JournalEntry> {
    let mut mails: Vec<String> = t.generations.iter().map(|g| g.email.clone()).collect();
    mails.push(t.old_mail.clone());
    journal
        .iter()
        .filter(|e| {
            let query = e
                .query
                .as_deref()
                .map(|q| {
                    percent_encoding::percent_decode_str(q)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .unwrap_or_default();
            e.path.contains(&t.user_id)
                || e.invited_user_id.as_deref() == Some(t.user_id.as_str())
                || (e.call == Call::ListUsers && mails.iter().any(|m| query.contains(m.as_str())))
        })
        .collect()
}

fn describe_entry(e: &JournalEntry) -> String {
    format!(
        "#{} {} {} {}{} -> {}{}{}{}",
        e.seq,
        e.at,
        e.method,
        e.path,
        e.query
            .as_deref()
            .map(|q| format!(
                "?{}",
                percent_encoding::percent_decode_str(q).decode_utf8_lossy()
            ))
            .unwrap_or_default(),
        e.status,
        e.fault
            .as_deref()
            .map(|f| format!(" fault={f}"))
            .unwrap_or_default(),
        e.effect
            .as_deref()
            .map(|f| format!(" effect={f:?}"))
            .unwrap_or_default(),
        e.invited_email
            .as_deref()
            .map(|m| format!(" email={m}"))
            .unwrap_or_default(),
    )
}

fn describe_entries(entries: &[&JournalEntry]) -> String {
    let skipped = entries.len().saturating_sub(40);
    let mut out = String::from("  journal entries about its guest");
    if skipped > 0 {
        let _ = write!(out, " (last 40 of {})", entries.len());
    }
    out.push_str(":\n");
    for e in entries.iter().skip(skipped) {
        let line: String = describe_entry(e).chars().take(240).collect();
        let _ = writeln!(out, "  {line}");
    }
    out
}

fn describe_posts(journal: &[JournalEntry], posts: &[&InvitationRecord]) -> String {
    let mut out = String::from("  the effective POSTs:\n");
    for p in posts {
        let entry = journal
            .iter()
            .find(|e| e.call == Call::PostInvitation && e.client_request_id == p.client_request_id);
        let _ = writeln!(
            out,
            "  invitation {} at {} for {} <{}>: {}",
            p.id,
            p.at,
            p.user_id,
            p.invited_user_email_address,
            entry.map_or("(no journal entry)".into(), describe_entry)
        );
    }
    out
}

fn describe_hazard(h: &Hazard) -> String {
    format!("hazard at {}: {}", h.at, h.description)
}
