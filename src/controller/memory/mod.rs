//! This process's memory of the resources it passes over: consecutive failed passes, for the
//! backoff ([`failures`]), and the resourceVersions its own writes replaced, so that no pass
//! acts on a stale cache ([`versions`]). Both keep an entry per resource and forget the
//! resources gone from the watch cache by one rule: once they hold [`PRUNE_AT`] entries
//! together, or twice what the last pruning left, they are pruned against the cache — so that
//! many live entries are not scanned again on every insert.

pub mod failures;
pub mod versions;

use std::collections::HashSet;

use failures::FailureCounts;
use versions::Versions;

/// Entries held before the first pruning.
pub const PRUNE_AT: usize = 256;

#[derive(Debug)]
pub struct Memory {
    failures: FailureCounts,
    versions: Versions,
    /// The number of entries at which the next pruning is due.
    prune_at: usize,
}

impl Default for Memory {
    fn default() -> Self {
        Memory {
            failures: FailureCounts::default(),
            versions: Versions::default(),
            prune_at: PRUNE_AT,
        }
    }
}

impl Memory {
    /// Consecutive failed passes of `generation` of resource `uid`.
    pub fn failures_of(&self, uid: &str, generation: i64) -> u32 {
        self.failures.of(uid, generation)
    }

    /// Counts a failed pass, or forgets the count after one that did not fail; `live` lists
    /// the uids in the watch cache, asked only when a pruning is due.
    pub fn record_failure(
        &mut self,
        uid: &str,
        generation: i64,
        failed: bool,
        live: impl FnOnce() -> HashSet<String>,
    ) {
        self.failures.record(uid, generation, failed);
        self.prune_if_due(live);
    }

    /// A guarded write (or a conflict) showed that `version` of `uid` is no longer current.
    pub fn mark_outdated(
        &mut self,
        uid: &str,
        version: &str,
        live: impl FnOnce() -> HashSet<String>,
    ) {
        self.versions.outdated(uid, version);
        self.prune_if_due(live);
    }

    /// Whether a cached copy at `version` is behind what this process wrote.
    pub fn is_behind(&mut self, uid: &str, version: Option<&str>) -> bool {
        self.versions.is_behind(uid, version)
    }

    /// Entries held, both kinds.
    pub fn len(&self) -> usize {
        self.failures.len() + self.versions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn prune_if_due(&mut self, live: impl FnOnce() -> HashSet<String>) {
        if self.len() < self.prune_at {
            return;
        }
        let live = live();
        self.failures.retain(|uid| live.contains(uid));
        self.versions.retain(|uid| live.contains(uid));
        self.prune_at = (2 * self.len()).max(PRUNE_AT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Defect: entries of deleted or superseded resources were kept forever.
    #[test]
    fn stays_bounded_by_the_live_resources() {
        let mut memory = Memory::default();
        for i in 0..10_000 {
            let uid = format!("uid-{i}");
            let live = || [uid.clone()].into();
            memory.record_failure(&uid, 1, true, live);
            memory.mark_outdated(&uid, "1", live);
        }
        assert!(memory.len() <= PRUNE_AT, "{} entries", memory.len());
    }

    /// Many live entries are not scanned on every insert: the bar doubles after a pruning
    /// that leaves most of them.
    #[test]
    fn live_entries_are_scanned_a_logarithmic_number_of_times() {
        let mut memory = Memory::default();
        let asked = Cell::new(0);
        let all: HashSet<String> = (0..10_000).map(|i| format!("uid-{i}")).collect();
        for i in 0..10_000 {
            memory.record_failure(&format!("uid-{i}"), 1, true, || {
                asked.set(asked.get() + 1);
                all.clone()
            });
        }
        assert_eq!(memory.len(), 10_000, "nothing live is forgotten");
        assert!(
            asked.get() <= 8,
            "the cache was listed {} times",
            asked.get()
        );
    }
}
