//! Consecutive failed passes per resource, for the backoff of transient failures. One entry per
//! failing resource at most: a new generation starts from zero, a pass that did not fail drops
//! the entry, and entries of resources gone from the cache are pruned by the memory's rule
//! ([`super::Memory`]). Lost on restart, which only shortens one backoff.

use std::collections::HashMap;

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

    /// Counts a failed pass, or forgets the count after one that did not fail.
    pub fn record(&mut self, uid: &str, generation: i64, failed: bool) {
        if !failed {
            self.by_uid.remove(uid);
            return;
        }
        let entry = self.by_uid.entry(uid.to_owned()).or_insert((generation, 0));
        if entry.0 != generation {
            *entry = (generation, 0);
        }
        entry.1 += 1;
    }

    /// Keeps the counts of the resources `live` says still exist.
    pub fn retain(&mut self, live: impl Fn(&str) -> bool) {
        self.by_uid.retain(|uid, _| live(uid));
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

    #[test]
    fn counts_per_generation_and_resets_on_success() {
        let mut counts = FailureCounts::default();
        counts.record("a", 1, true);
        counts.record("a", 1, true);
        assert_eq!(counts.of("a", 1), 2);
        assert_eq!(counts.of("a", 2), 0, "a new generation starts from zero");
        counts.record("a", 2, true);
        assert_eq!(
            (counts.of("a", 2), counts.len()),
            (1, 1),
            "superseded, not kept"
        );
        counts.record("a", 2, false);
        assert!(counts.is_empty());
    }
}
