//! Failpoints of a `failpoints` build: where a test holds a pass to cut the process off.

/// Test-only fault injection, read from `GUESTRESET_FAILPOINT` at start-up: `hang-after-intent`
/// stops a pass right after the intent was recorded, so a test can kill the process there;
/// `stall-before-post=SECS` holds a pass that far between its sending mark and the POST (a
/// process descheduled or paused there), so a test can cut the process off meanwhile. Only a
/// build with the `failpoints` feature reads the variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failpoint {
    HangAfterIntent,
    StallBeforePost(std::time::Duration),
}

impl Failpoint {
    pub fn from_env() -> Option<Self> {
        if !cfg!(feature = "failpoints") {
            return None;
        }
        let value = std::env::var("GUESTRESET_FAILPOINT").ok()?;
        if value == "hang-after-intent" {
            return Some(Failpoint::HangAfterIntent);
        }
        let secs = value.strip_prefix("stall-before-post=")?.parse().ok()?;
        Some(Failpoint::StallBeforePost(std::time::Duration::from_secs(
            secs,
        )))
    }
}
