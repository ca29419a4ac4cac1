//! A process-wide token bucket pacing Graph writes (docs/graph.md, "Write limiter"), so that a burst of
//! resources never trips Graph's abuse protection for the tenant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

use crate::mutants::{Mutant, planted};

/// The arithmetic of the bucket, free of I/O. Callers reserve a slot and are told how
/// long to wait for it; reservations may drive the balance negative, which queues the
/// next callers behind them in arrival order.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens, refilled at `per_minute`. Both are at least 1.
    pub fn new(per_minute: u32, burst: u32, now: Instant) -> Self {
        let capacity = f64::from(burst.max(1));
        TokenBucket {
            capacity,
            per_second: f64::from(per_minute.max(1)) / 60.0,
            tokens: capacity,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.updated = self.updated.max(now);
    }

    fn wait_for(&self, deficit: f64) -> Duration {
        if deficit <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(deficit / self.per_second)
        }
    }

    /// Takes one write slot at `now`; returns how long the caller must wait before using it.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        self.wait_for(-self.tokens)
    }

    /// How long a write starting at `now` would wait, without taking a slot.
    pub fn wait_at(&self, now: Instant) -> Duration {
        let mut probe = self.clone();
        probe.refill(now);
        probe.wait_for(1.0 - probe.tokens)
    }
}

/// Which turn a reset asks for: one generation of one resource. A new generation is a new
/// turn (at the back of the line), never the kept turn of an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnKey {
    /// The resource (its uid).
    pub resource: String,
    pub generation: i64,
}

/// The exact account of the writes that leave (docs/design.md, "The write limit in every
/// window"). `free` are the tokens nobody holds; `in_hand` the slots handed to a pass and not
/// yet spent or given back. A slot in hand counts as spent for the refill: `free + in_hand`
/// never exceeds the burst, so a slot may be spent at any moment after it became usable and
/// the writes that leave, at the moments they leave, form a token bucket that never goes
/// below zero — at most `burst + rate·w` of them in any window of length `w`.
#[derive(Debug)]
struct Account {
    capacity: f64,
    per_second: f64,
    free: f64,
    in_hand: u32,
    updated: Instant,
}

impl Account {
    fn refill(&mut self, now: Instant) {
        if now > self.updated {
            let gained = (now - self.updated).as_secs_f64() * self.per_second;
            let in_hand = if planted(Mutant::SlotsInHandNotCounted) {
                0.0
            } else {
                f64::from(self.in_hand)
            };
            let room = self.capacity - in_hand;
            self.free = (self.free + gained).min(room).max(self.free);
            self.updated = now;
        }
    }

    /// The time until `free` reaches `tokens`, without claims in between.
    fn wait_for(&self, tokens: f64) -> Duration {
        let missing = tokens - self.free;
        if missing <= EPSILON {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.per_second)
        }
    }

    /// Hands `count` slots over at `now` (the first needs a free token now): slot `j` is
    /// usable once the tokens the claim borrowed up to it have come in, so a claim larger
    /// than the tokens free spaces its writes at the rate.
    fn claim(&mut self, count: u32, now: Instant) -> Vec<Instant> {
        let before = self.free;
        self.free -= f64::from(count);
        self.in_hand += count;
        (0..count)
            .map(|j| {
                let owed = f64::from(j) + 1.0 - before;
                if owed <= EPSILON {
                    now
                } else {
                    now + Duration::from_secs_f64(owed / self.per_second)
                }
            })
            .collect()
    }
}

/// Float slack for token counts.
const EPSILON: f64 = 1e-9;

/// A turn claimed this long after it fell due is void: its holder went away or met a pause, and
/// the turns behind it must not wait for it (docs/design.md, "The write limit in every window").
pub const LATE: Duration = Duration::from_secs(10);

/// A write slot handed to a pass: spent by the one write it was taken for, at the moment that
/// write leaves, and given back to the limiter when the pass drops it unspent.
#[derive(Debug)]
#[must_use = "a write slot is taken to be spent on a write"]
pub struct WriteSlot {
    ledger: Arc<Mutex<Ledger>>,
    usable_from: Instant,
    spent: bool,
}

impl WriteSlot {
    /// The earliest moment the write may leave.
    pub fn usable_from(&self) -> Instant {
        self.usable_from
    }

    /// Spends the slot on a write leaving at `now`.
    pub fn spend(mut self, now: Instant) {
        self.spent = true;
        let mut ledger = lock(&self.ledger);
        ledger.account.refill(now);
        ledger.account.in_hand -= 1;
        ledger.record(now);
    }
}

impl Drop for WriteSlot {
    fn drop(&mut self) {
        if !self.spent {
            // Unspent: the token goes back; `free + in_hand` is unchanged, so when it is given
            // back does not matter.
            let mut ledger = lock(&self.ledger);
            ledger.account.in_hand -= 1;
            ledger.account.free += 1.0;
        }
    }
}

/// Shared write limiter: clone it freely, every clone draws from the same account.
#[derive(Debug, Clone)]
pub struct WriteLimiter {
    ledger: Arc<Mutex<Ledger>>,
    per_minute: u32,
    burst: u32,
}

#[derive(Debug)]
struct Ledger {
    account: Account,
    /// The turns kept for resources that come back for them, by resource.
    turns: HashMap<String, Kept>,
    next_seq: u64,
    /// With `record_writes`: when each write left (for tests).
    written: Option<Vec<Instant>>,
}

impl Ledger {
    fn record(&mut self, at: Instant) {
        if let Some(written) = &mut self.written {
            written.push(at);
        }
    }

    /// Drops the turns nobody claimed in time.
    fn prune(&mut self, now: Instant) {
        self.turns.retain(|_, kept| kept.due + LATE >= now);
    }

    /// The slots the turns ahead of `seq` will take first.
    fn ahead_of(&self, seq: u64) -> u32 {
        self.turns
            .values()
            .filter(|kept| kept.seq < seq)
            .map(|kept| kept.writes)
            .sum()
    }
}

/// A turn kept for a resource: its place in line, the writes it holds, when it is due.
#[derive(Debug, Clone, Copy)]
struct Kept {
    seq: u64,
    generation: i64,
    writes: u32,
    due: Instant,
    /// When the resource first asked: its wait is from then (for the metric).
    since: Instant,
}

/// A turn due within this long is waited for by the pass itself: ending the pass and coming
/// back would cost more than the wait.
pub const SHORT_WAIT: Duration = Duration::from_secs(1);

/// What the limiter says to a reset that asks for its write slots.
#[derive(Debug)]
pub enum Turn {
    /// The slots, in the order of the writes (each usable from its own moment: a claim larger
    /// than the tokens free spaces its writes at the rate); `waited` is the whole wait since
    /// the turn was first asked for (for the metric).
    Now {
        slots: Vec<WriteSlot>,
        waited: Duration,
    },
    /// Come back after this long: the turn keeps its place in line until then (and [`LATE`]
    /// after).
    After(Duration),
}

impl Default for WriteLimiter {
    /// 6 writes per minute, burst 3.
    fn default() -> Self {
        WriteLimiter::new(6, 3)
    }
}

impl WriteLimiter {
    /// `per_minute` writes per minute on average, at most `burst` back to back (both at least
    /// 1); the burst is free from the start.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self::new_at(per_minute, burst, Instant::now())
    }

    /// As [`WriteLimiter::new`], with the account starting at `now` (a virtual clock in tests).
    pub fn new_at(per_minute: u32, burst: u32, now: Instant) -> Self {
        let (per_minute, burst) = (per_minute.max(1), burst.max(1));
        WriteLimiter {
            ledger: Arc::new(Mutex::new(Ledger {
                account: Account {
                    capacity: f64::from(burst),
                    per_second: f64::from(per_minute) / 60.0,
                    free: f64::from(burst),
                    in_hand: 0,
                    updated: now,
                },
                turns: HashMap::new(),
                next_seq: 0,
                written: None,
            })),
            per_minute,
            burst,
        }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Starts the account empty at `now`, with no turns: a process that starts writing (at
    /// start-up, or on taking over the lead) counts the burst its predecessor may have spent
    /// just before, so that the limit holds in every window across a restart.
    pub fn start_empty(&self, now: Instant) {
        let mut ledger = self.lock();
        let account = &mut ledger.account;
        account.free = account.free.min(0.0);
        account.updated = account.updated.max(now);
        ledger.turns.clear();
    }

    /// Drops every kept turn (a tenant pause): after it, the resources queue again from the
    /// account as it is then, never on turns saved up during the pause.
    pub fn drop_turns(&self) {
        self.lock().turns.clear();
    }

    /// Keeps the moments writes leave, for [`WriteLimiter::written`] (tests).
    pub fn record_writes(self) -> Self {
        self.lock().written = Some(Vec::new());
        self
    }

    /// The moments writes left, with [`WriteLimiter::record_writes`].
    pub fn written(&self) -> Vec<Instant> {
        self.lock().written.clone().unwrap_or_default()
    }

    /// Waits for a write slot and hands it over (a write that queues behind no turn: the
    /// client's own retried writes).
    pub async fn take_slot(&self) -> (WriteSlot, Duration) {
        let mut waited = Duration::ZERO;
        loop {
            let now = Instant::now();
            let wait = {
                let mut ledger = self.lock();
                ledger.prune(now);
                ledger.account.refill(now);
                let ahead = ledger.ahead_of(u64::MAX);
                let wait = ledger.account.wait_for(f64::from(ahead) + 1.0);
                if wait.is_zero() {
                    let usable_from = ledger.account.claim(1, now)[0];
                    drop(ledger);
                    return (self.slot(usable_from), waited);
                }
                wait
            };
            tokio::time::sleep(wait).await;
            waited += wait;
        }
    }

    /// Waits for a write slot, spends it and returns the time waited.
    pub async fn acquire(&self) -> Duration {
        let (slot, waited) = self.take_slot().await;
        tokio::time::sleep_until(slot.usable_from()).await;
        slot.spend(Instant::now());
        waited
    }

    /// How long a write starting now would wait (for status reporting; takes no slot).
    pub fn current_wait(&self) -> Duration {
        let now = Instant::now();
        let mut ledger = self.lock();
        ledger.account.refill(now);
        let ahead = ledger.ahead_of(u64::MAX);
        ledger.account.wait_for(f64::from(ahead) + 1.0)
    }

    /// The `writes` slots of `key`'s turn, without waiting. The turn keeps the resource's
    /// place in line from its first ask: it is handed over when the tokens free cover the
    /// turns ahead of it and its own first write (its other writes may be spaced at the rate),
    /// and is otherwise told when that is expected. A turn held for fewer writes than now
    /// asked for is topped up in place; a turn of another generation is dropped and the new
    /// one queues at the back; a turn not claimed within [`LATE`] of its due time is void.
    pub fn turn(&self, key: &TurnKey, writes: u32) -> Turn {
        self.turn_at(key, writes, Instant::now())
    }

    /// As [`WriteLimiter::turn`] at `now` (a virtual clock in tests).
    pub fn turn_at(&self, key: &TurnKey, writes: u32, now: Instant) -> Turn {
        let writes = writes.max(1);
        let mut ledger = self.lock();
        ledger.prune(now);
        ledger.account.refill(now);
        let kept = match ledger.turns.get(&key.resource).copied() {
            Some(kept) if kept.generation == key.generation => Kept {
                writes: kept.writes.max(writes),
                ..kept
            },
            _ => {
                ledger.next_seq += 1;
                Kept {
                    seq: ledger.next_seq,
                    generation: key.generation,
                    writes,
                    due: now,
                    since: now,
                }
            }
        };
        let ahead = f64::from(ledger.ahead_of(kept.seq));
        // The burst is the most the account ever holds: a turn of more writes starts with
        // the burst and spaces the rest.
        let needed = f64::from(kept.writes.min(self.burst));
        let wait = ledger.account.wait_for(ahead + needed);
        if !wait.is_zero() {
            ledger.turns.insert(
                key.resource.clone(),
                Kept {
                    due: now + wait,
                    ..kept
                },
            );
            return Turn::After(wait);
        }
        ledger.turns.remove(&key.resource);
        let usable = ledger.account.claim(writes.min(kept.writes), now);
        drop(ledger);
        Turn::Now {
            slots: usable.into_iter().map(|at| self.slot(at)).collect(),
            waited: now.saturating_duration_since(kept.since),
        }
    }

    fn slot(&self, usable_from: Instant) -> WriteSlot {
        WriteSlot {
            ledger: self.ledger.clone(),
            usable_from,
            spent: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    // The ledger holds plain numbers; a panic elsewhere cannot leave it inconsistent.
    ledger.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the writes leaving at `times` (in any order) keep the limit in every window: at
/// most `burst + per_minute/60 · w` of them in any interval of length `w`. The first window
/// that holds more is the error. A pure function, shared by the limiter's tests and the
/// model test.
pub fn check_windows(times: &[Instant], per_minute: u32, burst: u32) -> Result<(), String> {
    check_windows_within(times, per_minute, burst, Duration::ZERO)
}

/// As [`check_windows`], for write times taken where they arrive rather than where they leave
/// (a server's journal): every window is granted `slack` more length for the jitter of the way.
pub fn check_windows_within(
    times: &[Instant],
    per_minute: u32,
    burst: u32,
    slack: Duration,
) -> Result<(), String> {
    let mut sorted = times.to_vec();
    sorted.sort();
    let rate = f64::from(per_minute.max(1)) / 60.0;
    let bound = |w: f64| f64::from(burst.max(1)) + rate * w;
    for (i, start) in sorted.iter().enumerate() {
        for (j, end) in sorted.iter().enumerate().skip(i) {
            let w = (*end - *start).as_secs_f64();
            let count = (j - i + 1) as f64;
            if count > bound(w + slack.as_secs_f64()) + 1e-6 {
                return Err(format!(
                    "{count} writes within {w:.3} s (from write {i}), more than {:.3}",
                    bound(w)
                ));
            }
        }
    }
    Ok(())
}

/// The read budget of the follow-through (docs/graph.md, "Read budget"): a token bucket of
/// its own, separate from the write limiter, that **never waits**. A read it cannot admit now
/// is given the next free turn of the bucket and told when that is; the caller moves its check
/// there and comes back, and its turn is kept for it under its key. So a backlog of due checks
/// is served in turn at the budget's pace, without a pass ever sleeping on the budget (which
/// would hold a worker that issuance needs) and without a refused read spending a token.
#[derive(Debug, Clone)]
pub struct ReadBudget {
    inner: Arc<Mutex<ReadTurns>>,
    per_minute: u32,
}

#[derive(Debug)]
struct ReadTurns {
    bucket: TokenBucket,
    /// Turns handed out, by the key of whoever will come back for them.
    turns: std::collections::HashMap<String, Instant>,
}

/// Turns older than this that nobody came back for are dropped (the resource went away).
const TURN_EXPIRY: Duration = Duration::from_secs(300);

/// What the budget says to a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Now,
    /// Come back after this long: the turn is kept until then.
    After(Duration),
}

impl ReadBudget {
    /// `per_minute` reads per minute, one at a time (burst 1), so that no minute holds more
    /// reads than the budget plus one.
    pub fn new(per_minute: u32) -> Self {
        ReadBudget {
            inner: Arc::new(Mutex::new(ReadTurns {
                bucket: TokenBucket::new(per_minute, 1, Instant::now()),
                turns: Default::default(),
            })),
            per_minute: per_minute.max(1),
        }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Admits the read of `key` now, or tells it when its turn comes.
    pub fn admit(&self, key: &str) -> Admission {
        self.admit_at(key, Instant::now())
    }

    fn admit_at(&self, key: &str, now: Instant) -> Admission {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&turn) = state.turns.get(key) {
            if turn <= now {
                state.turns.remove(key);
                return Admission::Now;
            }
            return Admission::After(turn - now);
        }
        let wait = state.bucket.reserve(now);
        if wait.is_zero() {
            return Admission::Now;
        }
        if state.turns.len() % 1024 == 1023 {
            state.turns.retain(|_, turn| *turn + TURN_EXPIRY > now);
        }
        state.turns.insert(key.to_owned(), now + wait);
        Admission::After(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_beyond_the_budget_get_turns_in_order_and_keep_them() {
        let budget = ReadBudget::new(60);
        let t0 = Instant::now();
        assert_eq!(budget.admit_at("a", t0), Admission::Now);
        assert_eq!(budget.admit_at("b", t0), Admission::After(secs(1.0)));
        assert_eq!(budget.admit_at("c", t0), Admission::After(secs(2.0)));
        // Asking again early does not lose or move the turn.
        assert_eq!(
            budget.admit_at("c", t0 + secs(0.5)),
            Admission::After(secs(1.5))
        );
        // At its turn each one reads, without taking a second token.
        assert_eq!(budget.admit_at("b", t0 + secs(1.0)), Admission::Now);
        assert_eq!(budget.admit_at("c", t0 + secs(2.0)), Admission::Now);
        // A newcomer queues behind the turns already handed out.
        assert_eq!(
            budget.admit_at("d", t0 + secs(2.0)),
            Admission::After(secs(1.0))
        );
    }

    #[test]
    fn the_budget_never_touches_the_write_limiter() {
        let budget = ReadBudget::new(1);
        let writes = WriteLimiter::new(6, 3);
        for i in 0..50 {
            let _ = budget.admit(&format!("r{i}"));
        }
        assert_eq!(writes.current_wait(), Duration::ZERO);
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn assert_close(actual: Duration, expected: Duration) {
        let diff = actual.as_secs_f64() - expected.as_secs_f64();
        assert!(diff.abs() < 1e-6, "expected {expected:?}, got {actual:?}");
    }

    fn key(resource: &str, generation: i64) -> TurnKey {
        TurnKey {
            resource: resource.into(),
            generation,
        }
    }

    /// The slots of a turn handed over now; panics on a wait.
    fn slots_now(turn: Turn) -> Vec<WriteSlot> {
        match turn {
            Turn::Now { slots, .. } => slots,
            Turn::After(wait) => panic!("expected slots now, got a turn after {wait:?}"),
        }
    }

    fn after(turn: Turn) -> Duration {
        match turn {
            Turn::After(wait) => wait,
            Turn::Now { slots, .. } => panic!("expected a wait, got {} slots", slots.len()),
        }
    }

    /// Spends every slot at the moment it is due.
    fn spend_when_due(slots: Vec<WriteSlot>) {
        for slot in slots {
            let at = slot.usable_from();
            slot.spend(at);
        }
    }

    #[test]
    fn the_window_check_sees_a_crowded_window_and_only_that() {
        let t0 = Instant::now();
        let at = |s: f64| t0 + secs(s);
        // 6/min, burst 3: 3 at once, then one per 10 s.
        let paced = [at(0.0), at(0.0), at(0.0), at(10.0), at(20.0), at(30.0)];
        check_windows(&paced, 6, 3).unwrap();
        // A fourth write 9 s after the burst: 4 in 9 s > 3 + 0.9.
        let early = [at(0.0), at(0.0), at(0.0), at(9.0)];
        assert!(check_windows(&early, 6, 3).is_err());
        // The cumulative bound (burst + rate·t from the start: 6 <= 3 + 61/10) holds, a later
        // window does not: an idle minute, then 6 writes within a second.
        let saved_up = [at(60.0), at(60.0), at(60.0), at(60.5), at(60.5), at(61.0)];
        let err = check_windows(&saved_up, 6, 3).unwrap_err();
        assert!(err.contains("4 writes within 0.500 s"), "{err}");
    }

    #[test]
    fn turns_keep_their_place_and_the_pace() {
        // 6/min, burst 3: one slot every 10 s once the burst is spent.
        let t0 = Instant::now();
        let limiter = WriteLimiter::new_at(6, 3, t0);
        // Two writes (mail and POST) from the burst, at once.
        let a = slots_now(limiter.turn_at(&key("a", 1), 2, t0));
        assert!(a.iter().all(|s| s.usable_from() == t0));
        spend_when_due(a);
        // One token left: b's pair is due when the second comes in, in 10 s; c queues behind.
        assert_close(after(limiter.turn_at(&key("b", 1), 2, t0)), secs(10.0));
        assert_close(after(limiter.turn_at(&key("c", 1), 1, t0)), secs(20.0));
        // Asking again early keeps the place: no second reservation.
        assert_close(
            after(limiter.turn_at(&key("b", 1), 2, t0 + secs(4.0))),
            secs(6.0),
        );
        // c, early, does not pass b.
        assert_close(
            after(limiter.turn_at(&key("c", 1), 1, t0 + secs(10.0))),
            secs(10.0),
        );
        spend_when_due(slots_now(limiter.turn_at(&key("b", 1), 2, t0 + secs(10.0))));
        spend_when_due(slots_now(limiter.turn_at(&key("c", 1), 1, t0 + secs(20.0))));
        // A newcomer queues behind them all.
        assert_close(
            after(limiter.turn_at(&key("d", 1), 1, t0 + secs(20.5))),
            secs(9.5),
        );
    }

    #[test]
    fn a_turn_kept_for_too_few_writes_is_topped_up_and_a_new_generation_queues_again() {
        let t0 = Instant::now();
        let limiter = WriteLimiter::new_at(6, 1, t0);
        spend_when_due(slots_now(limiter.turn_at(&key("first", 1), 1, t0)));
        // r's one-write turn is due in 10 s, s's behind it in 20 s.
        assert_close(after(limiter.turn_at(&key("r", 1), 1, t0)), secs(10.0));
        assert_close(after(limiter.turn_at(&key("s", 1), 1, t0)), secs(20.0));
        // The same generation now needs two writes: handed over at its place, the POST's
        // slot spaced at the rate — never a slot to wait for after the checks.
        let r = slots_now(limiter.turn_at(&key("r", 1), 2, t0 + secs(10.0)));
        let due: Vec<_> = r.iter().map(|s| s.usable_from() - t0).collect();
        assert_eq!(due.len(), 2);
        assert_close(due[0], secs(10.0));
        assert_close(due[1], secs(20.0));
        spend_when_due(r);
        // s, behind r, now waits for r's second slot too.
        assert_close(
            after(limiter.turn_at(&key("s", 1), 1, t0 + secs(20.0))),
            secs(10.0),
        );
        // A new generation of s is a new turn at the back, never the kept one.
        let t = t0 + secs(20.0);
        assert_close(after(limiter.turn_at(&key("u", 1), 1, t)), secs(20.0));
        assert_close(after(limiter.turn_at(&key("s", 2), 2, t)), secs(30.0));
    }

    #[test]
    fn a_late_turn_is_void_and_queues_again() {
        let t0 = Instant::now();
        let limiter = WriteLimiter::new_at(6, 1, t0);
        spend_when_due(slots_now(limiter.turn_at(&key("first", 1), 1, t0)));
        assert_close(after(limiter.turn_at(&key("late", 1), 1, t0)), secs(10.0));
        assert_close(after(limiter.turn_at(&key("next", 1), 1, t0)), secs(20.0));
        // "late" does not come back within LATE of its turn: "next" is not held up by it.
        let t = t0 + secs(20.0) + LATE;
        spend_when_due(slots_now(limiter.turn_at(&key("next", 1), 1, t)));
        // Back at last, "late" queues again behind what the bucket has handed out.
        assert_close(after(limiter.turn_at(&key("late", 1), 1, t)), secs(10.0));
    }

    #[test]
    fn slots_held_unspent_count_against_the_burst_and_come_back_when_dropped() {
        let t0 = Instant::now();
        let limiter = WriteLimiter::new_at(6, 3, t0);
        let held = slots_now(limiter.turn_at(&key("a", 1), 2, t0));
        spend_when_due(slots_now(limiter.turn_at(&key("b", 1), 1, t0)));
        // An hour later the bucket holds one free token: a's two slots may still leave.
        let later = t0 + secs(3600.0);
        assert_close(after(limiter.turn_at(&key("c", 1), 2, later)), secs(10.0));
        drop(held);
        spend_when_due(slots_now(limiter.turn_at(&key("c", 1), 2, later)));
    }

    #[test]
    fn a_restarted_process_starts_with_an_empty_bucket() {
        let t0 = Instant::now();
        let limiter = WriteLimiter::new_at(6, 3, t0);
        limiter.start_empty(t0);
        assert_close(after(limiter.turn_at(&key("a", 1), 1, t0)), secs(10.0));
    }

    /// Whatever the order of asking, coming back late, spending late, dropping slots, pauses
    /// and restarts, the writes that leave keep the limit in every window, and every reset
    /// that keeps coming back is served.
    #[test]
    fn the_limit_holds_in_every_window_whatever_the_callers_do() {
        every_window_property().unwrap();
    }

    /// The mutation check of the limiter: each of its rules taken away, the property above
    /// finds a crowded window.
    #[test]
    fn every_planted_defect_of_the_limiter_is_caught() {
        for mutant in crate::mutants::Mutant::LIMITER {
            let outcome = crate::mutants::with(mutant, every_window_property);
            assert!(outcome.is_err(), "{mutant:?} not caught");
        }
    }

    fn every_window_property() -> Result<(), String> {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
        let op = (0..12u8, 0..6u8, 0..40u16);
        let config = Config {
            cases: 300,
            failure_persistence: None,
            ..Config::default()
        };
        let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
        TestRunner::new_with_rng(config, rng)
            .run(&proptest::collection::vec(op, 1..300), |ops| {
                let written = drive(&ops);
                prop_assert!(
                    check_windows(&written, 6, 3).is_ok(),
                    "{:?}",
                    check_windows(&written, 6, 3)
                );
                Ok(())
            })
            .map_err(|e| e.to_string())
    }

    /// Plays `ops` on a limiter at 6/min, burst 3, on a virtual clock; returns the moments the
    /// writes left.
    fn drive(ops: &[(u8, u8, u16)]) -> Vec<Instant> {
        let t0 = Instant::now();
        let limiter = WriteLimiter::new_at(6, 3, t0).record_writes();
        let mut now = t0;
        let mut held: Vec<(WriteSlot, Duration)> = Vec::new();
        for &(what, who, arg) in ops {
            let delay = secs(f64::from(arg) / 4.0);
            match what {
                0..=5 => {
                    let writes = 1 + u32::from(arg % 2);
                    let generation = i64::from(arg % 3);
                    if let Turn::Now { slots, .. } =
                        limiter.turn_at(&key(&who.to_string(), generation), writes, now)
                    {
                        held.extend(slots.into_iter().map(|s| (s, delay)));
                    }
                }
                6..=8 => now += delay,
                9 => {
                    // Spend what is due, each after its own delay (a slow PATCH or mark).
                    let (due, rest): (Vec<_>, Vec<_>) = held
                        .drain(..)
                        .partition(|(s, late)| s.usable_from() + *late <= now);
                    held = rest;
                    for (slot, late) in due {
                        let at = slot.usable_from() + late;
                        slot.spend(at);
                    }
                }
                10 => held.clear(),
                _ if arg % 2 == 0 => limiter.drop_turns(),
                _ => limiter.start_empty(now),
            }
        }
        limiter.written()
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_outside_any_turn_waits_on_tokio_time() {
        // 600/min: a slot every 100 ms once the burst of 2 is spent.
        let limiter = WriteLimiter::new(600, 2).record_writes();
        let start = Instant::now();
        assert_eq!(limiter.acquire().await, Duration::ZERO);
        assert_eq!(limiter.clone().acquire().await, Duration::ZERO);
        assert_close(limiter.current_wait(), secs(0.1));
        assert_close(limiter.acquire().await, secs(0.1));
        assert_close(start.elapsed(), secs(0.1));
        check_windows(&limiter.written(), 600, 2).unwrap();
        assert_eq!((limiter.per_minute(), limiter.burst()), (600, 2));
    }

    #[test]
    fn burst_is_free_then_paced_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(6, 3, t0);
        assert_eq!(b.reserve(t0), Duration::ZERO);
        assert_eq!(b.reserve(t0), Duration::ZERO);
        assert_eq!(b.reserve(t0), Duration::ZERO);
        // 6/min: one token every 10 s; queued callers wait 10, 20, 30 s.
        assert_close(b.reserve(t0), secs(10.0));
        assert_close(b.reserve(t0), secs(20.0));
        assert_close(b.reserve(t0), secs(30.0));
    }

    #[test]
    fn refill_never_exceeds_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(6, 3, t0);
        for _ in 0..3 {
            b.reserve(t0);
        }
        // An hour idle refills only to the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(b.reserve(later), Duration::ZERO);
        }
        assert_close(b.reserve(later), secs(10.0));
    }

    #[test]
    fn partial_refill_shortens_the_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(60, 1, t0);
        assert_eq!(b.reserve(t0), Duration::ZERO);
        assert_close(b.wait_at(t0 + secs(0.25)), secs(0.75));
        assert_close(b.reserve(t0 + secs(0.25)), secs(0.75));
        // Peeking took nothing: the next caller queues behind the reservation.
        assert_close(b.reserve(t0 + secs(0.25)), secs(1.75));
    }

    #[test]
    fn writes_over_time_follow_the_rate() {
        // 120/min, burst 2: n writes need (n - 2) / 2 seconds.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(120, 2, t0);
        let last = (0..10).map(|_| b.reserve(t0)).last().unwrap();
        assert_close(last, secs(4.0));
    }

    #[test]
    fn zero_settings_are_clamped() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 0, t0);
        assert_eq!(b.reserve(t0), Duration::ZERO);
        assert_close(b.reserve(t0), secs(60.0));
    }
}
