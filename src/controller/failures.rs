//! Consecutive failed passes per resource, for the backoff of transient failures. One entry per
//! failing resource at most: a new generation starts from zero, a pass that did not fail or a
//! deleted resource drops the entry, and entries of resources gone from the cache are pruned
//! once the map grows. Lost on restart, which only shortens one backoff.

use std::collections::{HashMap, HashSet};

/// The map is pruned against the live resources once it holds more entries than this.
const PRUNE_AT: usize = 256;

#[derive(Debug, Default)]
pub struct FailureCounts {
    /// uid → (generation, consecutive failed passes of that generation)
    by_uid: HashMap<String, (i64, u32)>,
}

impl FailureCounts {
    /// Failed passes of `generation` of resource `uid`.
    pub fn of(&self, uid: &str, generation: i64) -> u32 {
        match self.by_uid.get(uid) {
            Some((g, count)) if *g == generation => *count,
            _ => 0,
        }
    }

    /// Counts a failed pass, or forgets the count after one that did not fail; `live` lists the
    /// uids still in the cache, asked only when the map must be pruned.
    pub fn record(
        &mut self,
        uid: &str,
        generation: i64,
        failed: bool,
        live: impl FnOnce() -> HashSet<String>,
    ) {
        if !failed {
            self.by_uid.remove(uid);
            return;
        }
        let entry = self.by_uid.entry(uid.to_owned()).or_insert((generation, 0));
        if entry.0 != generation {
            *entry = (generation, 0);
        }
        entry.1 += 1;
        if self.by_uid.len() > PRUNE_AT {
            let live = live();
            self.by_uid.retain(|uid, _| live.contains(uid));
        }
    }

    /// The resource is gone.
    pub fn forget(&mut self, uid: &str) {
        self.by_uid.remove(uid);
    }

    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> HashSet<String> {
        HashSet::new()
    }

    #[test]
    fn counts_per_generation_and_resets_on_success() {
        let mut counts = FailureCounts::default();
        counts.record("a", 1, true, none);
        counts.record("a", 1, true, none);
        assert_eq!(counts.of("a", 1), 2);
        assert_eq!(counts.of("a", 2), 0, "a new generation starts from zero");
        counts.record("a", 2, true, none);
        assert_eq!(
            (counts.of("a", 2), counts.len()),
            (1, 1),
            "superseded, not kept"
        );
        counts.record("a", 2, false, none);
        assert!(counts.is_empty());
    }

    /// Defect: entries of deleted or superseded resources were kept forever.
    #[test]
    fn stays_bounded_by_the_live_resources() {
        let mut counts = FailureCounts::default();
        for i in 0..10_000 {
            let live = move || [format!("uid-{i}")].into();
            counts.record(&format!("uid-{i}"), 1, true, live);
        }
        assert!(counts.len() <= PRUNE_AT + 1, "{} entries", counts.len());
        counts.forget("uid-9999");
        assert_eq!(counts.of("uid-9999", 1), 0);
    }
}
