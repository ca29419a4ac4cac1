//! The resourceVersions this process knows to be outdated, per resource: the ones its own
//! guarded writes replaced (and the ones a write found replaced by somebody else). The watch
//! cache delivers a resource's versions in order, so a cached copy at one of them is behind a
//! write whose watch event is still on its way: a pass on it would redo work on a stale view,
//! and the event that is coming triggers the next pass anyway (docs/performance.md, "Passes on
//! a stale cache").

use std::collections::HashMap;

/// Outdated versions kept per resource; a pass writes at most a handful.
const KEPT: usize = 8;

#[derive(Debug, Default)]
pub struct Versions {
    outdated: HashMap<String, Vec<String>>,
}

impl Versions {
    /// A guarded write (or a conflict) showed that `version` of `uid` is no longer current.
    pub fn outdated(&mut self, uid: &str, version: &str) {
        let versions = self.outdated.entry(uid.to_owned()).or_default();
        if !versions.iter().any(|v| v == version) {
            if versions.len() == KEPT {
                versions.remove(0);
            }
            versions.push(version.to_owned());
        }
    }

    /// Whether a cached copy at `version` is behind what this process wrote. A copy that is
    /// not behind has caught up with every write known here: what was kept for the resource
    /// is dropped, since the watch never goes back to an older version.
    pub fn is_behind(&mut self, uid: &str, version: Option<&str>) -> bool {
        let behind = version.is_some_and(|v| {
            self.outdated
                .get(uid)
                .is_some_and(|known| known.iter().any(|k| k == v))
        });
        if !behind {
            self.outdated.remove(uid);
        }
        behind
    }

    /// Keeps the records of the resources `live` says still exist.
    pub fn retain(&mut self, live: impl Fn(&str) -> bool) {
        self.outdated.retain(|uid, _| live(uid));
    }

    pub fn len(&self) -> usize {
        self.outdated.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outdated.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_behind_our_own_write_is_known_until_the_cache_catches_up() {
        let mut v = Versions::default();
        // A pass started from 10 and wrote 11, 12, 13.
        for replaced in ["10", "11", "12"] {
            v.outdated("a", replaced);
        }
        assert!(v.is_behind("a", Some("11")));
        assert!(v.is_behind("a", Some("10")));
        // The last write, or anyone's later one, is current: the record is dropped.
        assert!(!v.is_behind("a", Some("13")));
        assert!(v.is_empty());
        // Other resources and copies without a version are never held back.
        v.outdated("a", "20");
        assert!(!v.is_behind("b", Some("20")));
        assert!(!v.is_behind("a", None));
    }

    #[test]
    fn the_record_stays_small() {
        let mut v = Versions::default();
        for i in 0..20 {
            v.outdated("a", &i.to_string());
        }
        assert!(!v.is_behind("a", Some("3")), "only the newest are kept");
        for i in 12..20 {
            v.outdated("a", &i.to_string());
        }
        assert!(v.is_behind("a", Some("19")));
        v.outdated("b", "1");
        v.retain(|uid| uid == "b");
        assert_eq!(v.len(), 1, "only the live resource's record is left");
    }
}
