//! The decision's times: how fresh a read must be, how long a POST may follow its mark, how
//! often replication is polled, and the conversions between a wait and a stored time.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// How often the directory is re-read while waiting for replication.
pub const REPLICATION_POLL: Duration = Duration::from_secs(10);
/// A POST is never sent on a read of the user (userType, e-mail holders) older than this: a
/// guest converted to a member in between would be converted irreversibly.
pub const PREFLIGHT_FRESHNESS: SignedDuration = SignedDuration::from_secs(10);
/// Reads older than this are repeated before the tenant check and the sending mark, so that
/// those two steps may take up to the rest of [`PREFLIGHT_FRESHNESS`] before the POST.
pub const REFRESH_AFTER: SignedDuration = SignedDuration::from_secs(5);
/// A POST goes out within this long of its sending mark or not at all: a pass that stalled
/// longer (a paused process) leaves the attempt to recovery, which another writer may already
/// have concluded.
pub const SEND_WINDOW: SignedDuration = SignedDuration::from_secs(5);

/// Kubernetes stores times to the second, dropping the fraction. A time that starts a wait is
/// rounded up instead, so that the stored wait is never shorter than the one decided.
pub fn ceil_to_second(t: Timestamp) -> Time {
    let second = t.as_second() + i64::from(t.subsec_nanosecond() > 0);
    Time(Timestamp::from_second(second).unwrap_or(t))
}

/// The wait from `now` until `until`, never negative.
pub fn until_from(now: Timestamp, until: Timestamp) -> Duration {
    Duration::try_from(until.duration_since(now)).unwrap_or_default()
}
