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
    bucket: Arc<Mutex<TokenBucket>>,
    per_minute: u32,
    burst: u32,
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
            bucket: Arc::new(Mutex::new(TokenBucket::new(
                per_minute,
                burst,
                Instant::now(),
            ))),
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
        let wait = self.lock().reserve(Instant::now());
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
        self.lock().wait_at(Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TokenBucket> {
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
