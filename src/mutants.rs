//! Planted defects for the mutation check (docs/design.md, "Tests that can fail"): each names
//! one rule of the contract that a decision enforces, and in the unit tests of this crate a
//! test may plant it for the current thread to show that the model test catches its absence.
//! Outside `cfg(test)` nothing can plant one: [`planted`] is a constant `false`, so no build
//! that ships has the switch at all.

/// A rule the mutation check takes away, one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Whether `mutant` is planted: never, outside this crate's unit tests.
#[cfg(not(test))]
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
