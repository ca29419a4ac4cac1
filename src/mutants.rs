//! Planted defects for the mutation check (docs/design.md, "Tests that can fail"): each names
//! one rule of the contract that a decision enforces, and in the unit tests of this crate a
//! test may plant it for the current thread to show that the model test catches its absence.
//! A binary built with the test-only `failpoints` feature plants the one named by
//! `GUESTRESET_MUTANT` in the whole process, so that `scripts/mutants.sh` can show what the
//! chaos test catches. In every other build [`planted`] is a constant `false`: no build that
//! ships has the switch at all.

/// A rule the mutation check takes away, one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumString, strum::VariantArray)]
pub enum Mutant {
    /// The preflight lets a member through (an invitation would convert it).
    MemberIsGuest,
    /// A pass posts again for an attempt marked as sending instead of recovering it.
    PostAgainAfterMark,
    /// The tenant gate is ignored before a write.
    IgnorePause,
    /// The reads of the user are not refreshed before the POST, however old.
    NoFreshRead,
    /// A pause recorded after the POST hides its answer (the defect the chaos test found).
    PauseHidesAnswer,
    /// Someone else's Secret of the spec's `redeemUrlSecret` name does not stop the reset.
    IgnoreForeignSecret,
    /// Another user carrying the e-mail does not stop the reset.
    IgnoreEmailHolders,
    /// A POST leaves however long after its sending mark the pass stalled.
    SendAfterWindow,
    /// A refused target keeps a mail that an earlier pass of its reset set.
    RefusalKeepsMail,
    /// A stopping process goes on with a pass that has not marked its POST as sending.
    WorkWhileStopping,
    /// The limiter forgets the slots in hand when it refills, so a turn can be saved up.
    SlotsInHandNotCounted,
}

impl Mutant {
    /// The rules of the decision and its executor, which the model test of the controller
    /// must defend.
    pub const DECISIONS: [Mutant; 9] = [
        Mutant::MemberIsGuest,
        Mutant::PostAgainAfterMark,
        Mutant::IgnorePause,
        Mutant::NoFreshRead,
        Mutant::PauseHidesAnswer,
        Mutant::IgnoreForeignSecret,
        Mutant::IgnoreEmailHolders,
        Mutant::WorkWhileStopping,
        Mutant::SendAfterWindow,
    ];
    /// Rules whose interleaving the model meets too rarely to find within CI's cases: a
    /// focused test defends each (its mutation check plants it and requires that test to fail).
    pub const FOCUSED: [Mutant; 1] = [Mutant::RefusalKeepsMail];
    /// The rules of the write limiter, which its own property test must defend.
    pub const LIMITER: [Mutant; 1] = [Mutant::SlotsInHandNotCounted];
}

#[cfg(test)]
thread_local! {
    static PLANTED: std::cell::Cell<Option<Mutant>> = const { std::cell::Cell::new(None) };
}

/// Whether `mutant` is planted on this thread (only ever in this crate's unit tests).
#[cfg(test)]
pub fn planted(mutant: Mutant) -> bool {
    PLANTED.with(|p| p.get() == Some(mutant))
}

/// Whether `mutant` is planted in this process: the one `GUESTRESET_MUTANT` names, read once,
/// in a binary built with the test-only `failpoints` feature.
#[cfg(all(not(test), feature = "failpoints"))]
pub fn planted(mutant: Mutant) -> bool {
    static PLANTED: std::sync::OnceLock<Option<Mutant>> = std::sync::OnceLock::new();
    let named = PLANTED.get_or_init(|| {
        let name = std::env::var("GUESTRESET_MUTANT").ok()?;
        let parsed = name.parse().ok();
        if parsed.is_none() {
            tracing::error!(name, "GUESTRESET_MUTANT names no planted defect");
        }
        parsed
    });
    *named == Some(mutant)
}

/// Whether `mutant` is planted: never, outside this crate's unit tests and the test-only
/// `failpoints` builds.
#[cfg(all(not(test), not(feature = "failpoints")))]
#[inline(always)]
pub const fn planted(_mutant: Mutant) -> bool {
    false
}

/// Runs `f` with `mutant` planted on this thread, and takes it away afterwards (also when
/// `f` panics).
#[cfg(test)]
pub fn with<T>(mutant: Mutant, f: impl FnOnce() -> T) -> T {
    struct Unplant;
    impl Drop for Unplant {
        fn drop(&mut self) {
            PLANTED.with(|p| p.set(None));
        }
    }
    PLANTED.with(|p| p.set(Some(mutant)));
    let _unplant = Unplant;
    f()
}

#[cfg(test)]
mod tests {
    use strum::VariantArray;

    use super::Mutant;

    /// `scripts/mutants.sh` plants every defect by name: its list is the enum's.
    #[test]
    fn the_chaos_mutation_script_names_every_planted_defect() {
        let script = include_str!("../scripts/mutants.sh");
        let line = script
            .lines()
            .find_map(|l| l.strip_prefix("mutants=("))
            .and_then(|l| l.strip_suffix(')'))
            .expect("scripts/mutants.sh lists the defects as mutants=(...)");
        let listed: Vec<&str> = line.split_whitespace().collect();
        let known: Vec<String> = Mutant::VARIANTS.iter().map(|m| format!("{m:?}")).collect();
        assert_eq!(listed, known);
        for name in listed {
            assert!(name.parse::<Mutant>().is_ok(), "{name} parses");
        }
    }
}
