//! A process-wide token bucket pacing Graph writes (docs/graph.md, "Write limiter"), so that a burst of
//! resources never trips Graph's abuse protection for the tenant.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

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

/// A write slot already taken from the limiter; spent by the one write it was taken for.
#[derive(Debug)]
#[must_use = "a write slot is taken to be spent on a write"]
pub struct WriteSlot {
    _taken: (),
}

/// Shared write limiter: clone it freely, every clone draws from the same bucket.
#[derive(Debug, Clone)]
pub struct WriteLimiter {
    bucket: Arc<Mutex<WriteTurns>>,
    per_minute: u32,
    burst: u32,
}

#[derive(Debug)]
struct WriteTurns {
    bucket: TokenBucket,
    /// Slots reserved for a resource that comes back for them at their turn, by its key.
    held: std::collections::HashMap<String, Held>,
}

/// Slots taken from the bucket for one resource, usable from `at`.
#[derive(Debug, Clone, Copy)]
struct Held {
    at: Instant,
    count: u32,
    /// When they were reserved: the limiter's wait is from then to `at`.
    since: Instant,
}

/// A turn due within this long is waited for by the pass itself: ending the pass and coming
/// back would cost more than the wait.
pub const SHORT_WAIT: Duration = Duration::from_secs(1);

/// What the limiter says to a reset that asks for its write slots.
#[derive(Debug)]
pub enum Turn {
    /// The slots, usable once `wait` (at most [`SHORT_WAIT`]) has passed; `waited` is the
    /// whole wait since they were reserved (for the metric).
    Now {
        slots: Vec<WriteSlot>,
        wait: Duration,
        waited: Duration,
    },
    /// Come back after this long: the slots are kept for the key until then.
    After(Duration),
}

impl Default for WriteLimiter {
    /// 6 writes per minute, burst 3.
    fn default() -> Self {
        WriteLimiter::new(6, 3)
    }
}

impl WriteLimiter {
    /// `per_minute` writes per minute on average, at most `burst` back to back (both at least 1).
    pub fn new(per_minute: u32, burst: u32) -> Self {
        WriteLimiter {
            bucket: Arc::new(Mutex::new(WriteTurns {
                bucket: TokenBucket::new(per_minute, burst, Instant::now()),
                held: Default::default(),
            })),
            per_minute: per_minute.max(1),
            burst: burst.max(1),
        }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Waits for a write slot; returns the time waited. A caller dropped while waiting
    /// forfeits its slot (the bucket errs towards fewer writes, never more).
    pub async fn acquire(&self) -> Duration {
        let wait = self.lock().bucket.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }

    /// Waits for a write slot and hands it over, for a caller that must record something
    /// between the wait and the write (the invitation's intent record).
    pub async fn take_slot(&self) -> (WriteSlot, Duration) {
        let waited = self.acquire().await;
        (WriteSlot { _taken: () }, waited)
    }

    /// How long a write starting now would wait (for status reporting; takes no slot).
    pub fn current_wait(&self) -> Duration {
        self.lock().bucket.wait_at(Instant::now())
    }

    /// The `writes` slots of the resource `key`, without waiting: the slots kept for it when
    /// it has some (an earlier pass reserved them), otherwise fresh ones from the bucket, in
    /// arrival order. Slots due later than [`SHORT_WAIT`] are kept under `key` until their
    /// turn; the bucket has spent them already, so the pace stays the bucket's whether or not
    /// the resource comes back (a turn nobody claims is a write that never happens). Kept
    /// slots live in this process only: after a restart the resource reserves again.
    pub fn turn(&self, key: &str, writes: u32) -> Turn {
        self.turn_at(key, writes, Instant::now())
    }

    fn turn_at(&self, key: &str, writes: u32, now: Instant) -> Turn {
        let mut state = self.lock();
        let held = match state.held.get(key).copied() {
            Some(held) => held,
            None => {
                let wait = (0..writes.max(1))
                    .map(|_| state.bucket.reserve(now))
                    .fold(Duration::ZERO, Duration::max);
                if state.held.len() % 256 == 255 {
                    state.held.retain(|_, h| h.at + TURN_EXPIRY > now);
                }
                Held {
                    at: now + wait,
                    count: writes.max(1),
                    since: now,
                }
            }
        };
        let wait = held.at.saturating_duration_since(now);
        if wait > SHORT_WAIT {
            state.held.insert(key.to_owned(), held);
            return Turn::After(wait);
        }
        state.held.remove(key);
        let slots = (0..held.count).map(|_| WriteSlot { _taken: () }).collect();
        let waited = held.at.saturating_duration_since(held.since);
        Turn::Now {
            slots,
            wait,
            waited,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WriteTurns> {
        // The bucket holds plain numbers; a panic elsewhere cannot leave it inconsistent.
        self.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }
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

    fn now_slots(turn: Turn) -> (usize, Duration) {
        match turn {
            Turn::Now { slots, wait, .. } => (slots.len(), wait),
            Turn::After(wait) => panic!("expected slots now, got a turn after {wait:?}"),
        }
    }

    #[test]
    fn turns_are_kept_for_their_resource_and_keep_the_pace() {
        // 6/min, burst 3: one slot every 10 s once the burst is spent.
        let limiter = WriteLimiter::new(6, 3);
        let t0 = Instant::now();
        // Two writes (mail and POST) from the burst, at once.
        assert_eq!(now_slots(limiter.turn_at("a", 2, t0)), (2, Duration::ZERO));
        // The third slot of the burst and the next refill: b's pair is due in 10 s.
        let Turn::After(b) = limiter.turn_at("b", 2, t0) else {
            panic!("b must wait for its second slot")
        };
        assert_close(b, secs(10.0));
        let Turn::After(c) = limiter.turn_at("c", 1, t0) else {
            panic!("c queues behind b")
        };
        assert_close(c, secs(20.0));
        // Asking again early keeps the turn; it takes no second slot from the bucket.
        let Turn::After(again) = limiter.turn_at("b", 2, t0 + secs(4.0)) else {
            panic!("b's turn is still ahead")
        };
        assert_close(again, secs(6.0));
        // At its turn b gets both slots, c its one, and a newcomer queues behind them all.
        assert_eq!(
            now_slots(limiter.turn_at("b", 2, t0 + secs(10.0))),
            (2, Duration::ZERO)
        );
        assert_eq!(
            now_slots(limiter.turn_at("c", 1, t0 + secs(20.5))),
            (1, Duration::ZERO)
        );
        let Turn::After(d) = limiter.turn_at("d", 1, t0 + secs(20.5)) else {
            panic!("d queues behind c")
        };
        assert_close(d, secs(9.5));
        // A turn due within a moment is handed over with the wait that is left.
        let (n, wait) = now_slots(limiter.turn_at("d", 1, t0 + secs(29.5)));
        assert_eq!(n, 1);
        assert_close(wait, secs(0.5));
    }

    #[test]
    fn kept_turns_never_let_more_writes_through_than_the_bucket() {
        // Whatever the order of asking and coming back, the slots handed out by any time t
        // are at most burst + rate * t.
        let limiter = WriteLimiter::new(6, 3);
        let t0 = Instant::now();
        let mut handed = Vec::new();
        for step in 0..600u32 {
            let now = t0 + secs(f64::from(step) * 0.5);
            let key = format!("r{}", step % 40);
            if let Turn::Now { slots, wait, .. } = limiter.turn_at(&key, 1 + step % 2, now) {
                handed.extend(std::iter::repeat_n(now + wait, slots.len()));
            }
        }
        handed.sort();
        for (i, at) in handed.iter().enumerate() {
            let allowed = 3.0 + at.duration_since(t0).as_secs_f64() / 10.0;
            assert!(
                (i + 1) as f64 <= allowed + 1e-6,
                "slot {} handed out at {:?}, more than the bucket allows",
                i + 1,
                at.duration_since(t0)
            );
        }
        assert!(handed.len() > 20, "the queue moved: {}", handed.len());
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

    #[tokio::test]
    async fn limiter_waits_on_tokio_time() {
        // 600/min: a slot every 100 ms once the burst of 2 is spent.
        let limiter = WriteLimiter::new(600, 2);
        let clone = limiter.clone();
        let start = Instant::now();
        assert_eq!(limiter.acquire().await, Duration::ZERO);
        assert_eq!(clone.acquire().await, Duration::ZERO);
        let pending = limiter.current_wait();
        assert!(pending > secs(0.05) && pending <= secs(0.1), "{pending:?}");
        let waited = clone.acquire().await;
        assert!(waited > secs(0.05) && waited <= secs(0.1), "{waited:?}");
        assert!(start.elapsed() >= waited, "the wait really happened");
        assert_eq!((limiter.per_minute(), limiter.burst()), (600, 2));
    }
}
