//! The write fence: until when this process may send Graph writes (docs/design.md, "Leader
//! election"). Without leader election it never closes. A leader moves it forward on every
//! renewal of its Lease that the API server confirmed, to the renewal's time plus the renew
//! deadline; the Graph client checks it right before each write leaves. A leader cut off
//! from the API server so stops writing before its Lease can expire and another replica can
//! take over, even for a write already past every other check.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{SignedDuration, Timestamp};

/// Shared by every clone; cheap to check.
#[derive(Clone, Debug)]
pub struct WriteFence {
    /// Unix milliseconds until which writes may leave; `i64::MAX` never closes.
    until_ms: Arc<AtomicI64>,
}

impl Default for WriteFence {
    fn default() -> Self {
        WriteFence::open()
    }
}

impl WriteFence {
    /// A fence that never closes (a single replica without leader election).
    pub fn open() -> Self {
        WriteFence {
            until_ms: Arc::new(AtomicI64::new(i64::MAX)),
        }
    }

    /// A fence closed until the first confirmed renewal (a replica that elects a leader).
    pub fn closed() -> Self {
        WriteFence {
            until_ms: Arc::new(AtomicI64::new(i64::MIN)),
        }
    }

    /// Whether a write may leave at `now`.
    pub fn allows(&self, now: Timestamp) -> bool {
        now.as_millisecond() < self.until_ms.load(Ordering::Acquire)
    }

    /// Whether a write may leave now.
    pub fn allows_now(&self) -> bool {
        self.allows(Timestamp::now())
    }

    /// The API server confirmed a renewal written at `renewed` (by this process's clock):
    /// writes may leave until `renewed + deadline`. Never moves the fence back.
    pub fn renewed(&self, renewed: Timestamp, deadline: SignedDuration) {
        let until = renewed.saturating_add(deadline).unwrap_or(renewed);
        self.until_ms
            .fetch_max(until.as_millisecond(), Ordering::AcqRel);
    }

    /// Closes the fence for good: this process gave up its leadership.
    pub fn close(&self) {
        self.until_ms.store(i64::MIN, Ordering::Release);
    }

    /// Until when writes may leave, if the fence can close at all.
    pub fn until(&self) -> Option<Timestamp> {
        match self.until_ms.load(Ordering::Acquire) {
            i64::MAX => None,
            ms => Some(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::MIN)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    #[test]
    fn an_open_fence_never_closes() {
        let fence = WriteFence::open();
        assert!(fence.allows(Timestamp::MAX));
        assert_eq!(fence.until(), None);
    }

    #[test]
    fn a_confirmed_renewal_opens_the_fence_until_its_deadline() {
        let fence = WriteFence::closed();
        assert!(!fence.allows(at(0)), "closed until the first renewal");
        let deadline = SignedDuration::from_secs(10);
        fence.renewed(at(0), deadline);
        assert!(fence.allows(at(9)));
        assert!(!fence.allows(at(10)), "the renew deadline passed");
        // An older renewal read late does not move it back.
        fence.renewed(at(5), deadline);
        fence.renewed(at(2), deadline);
        assert!(fence.allows(at(14)));
        assert!(!fence.allows(at(15)));
        fence.close();
        assert!(!fence.allows(at(1)), "closed for good");
    }
}
