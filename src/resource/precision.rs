//! Times in the status and their precision (docs/design.md, "Times in the status").
//!
//! A Kubernetes `Time` is written with whole seconds, the fraction dropped. That is right for
//! the controller's own clock readings, which are rounded where the direction matters
//! (`ceil_to_second` for the start of a wait), but not for a Graph time that a later read is
//! compared with: Graph's `externalUserStateChangeDateTime` may carry a fraction
//! (`06:22:05.408Z`), and the same change read again looks "strictly later" than the stored
//! `06:22:05Z`. Such a time is written exactly ([`serialize_exact`]) and compared at the
//! precision it has in the status ([`later_than_stored`]), which also reads right a status
//! written by a version that kept whole seconds.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serializer;

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// Writes the time with its fraction of a second, as many digits as it needs (RFC 3339, the
/// `date-time` of the schema; older versions of the controller read it too).
pub fn serialize_exact<S: Serializer>(time: &Option<Time>, s: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(Time(t)) => s.serialize_str(&t.to_string()),
        None => s.serialize_none(),
    }
}

/// Whether `fresh` is certainly later than the moment `stored` stands for.
///
/// The stored value's precision is the coarsest unit it is a whole number of: a value without
/// a fraction may have lost one (a whole-second `Time`), so it stands for any moment of its
/// second, and only a time from the next second on is later. Equal within that precision is
/// not later. A value kept exactly is compared exactly, but for a fraction with trailing
/// zeros (`05.400`), whose last digits are taken as lost: never later when unsure.
pub fn later_than_stored(fresh: Timestamp, stored: Timestamp) -> bool {
    let unit = unit_of(stored);
    fresh.as_nanosecond().div_euclid(unit) * unit > stored.as_nanosecond()
}

/// The coarsest power of ten of nanoseconds, up to a second, that `t` is a multiple of.
fn unit_of(t: Timestamp) -> i128 {
    let mut unit = NANOS_PER_SECOND;
    let nanos = t.as_nanosecond();
    while nanos % unit != 0 {
        unit /= 10;
    }
    unit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_whole_second_stands_for_its_whole_second() {
        let stored = t("2026-12-07T06:22:05Z");
        assert!(!later_than_stored(t("2026-12-07T06:22:05.408Z"), stored));
        assert!(!later_than_stored(
            t("2026-12-07T06:22:05.999999999Z"),
            stored
        ));
        assert!(!later_than_stored(stored, stored));
        assert!(later_than_stored(t("2026-12-07T06:22:06Z"), stored));
        assert!(!later_than_stored(t("2026-12-07T06:22:04.999Z"), stored));
    }

    #[test]
    fn a_fraction_is_compared_at_its_digits() {
        let stored = t("2026-12-07T06:22:05.408Z");
        assert!(!later_than_stored(t("2026-12-07T06:22:05.408Z"), stored));
        assert!(!later_than_stored(t("2026-12-07T06:22:05.4089Z"), stored));
        assert!(later_than_stored(t("2026-12-07T06:22:05.409Z"), stored));
        assert!(later_than_stored(t("2026-12-07T06:22:06Z"), stored));
        // Graph's seven digits.
        let stored = t("2026-12-07T06:22:05.4081234Z");
        assert!(later_than_stored(t("2026-12-07T06:22:05.4081235Z"), stored));
        assert!(!later_than_stored(stored, stored));
    }

    #[test]
    fn trailing_zeros_count_as_lost() {
        let stored = t("2026-12-07T06:22:05.400Z");
        assert!(!later_than_stored(t("2026-12-07T06:22:05.45Z"), stored));
        assert!(later_than_stored(t("2026-12-07T06:22:05.5Z"), stored));
    }

    #[test]
    fn before_the_epoch_rounds_down_too() {
        let stored = t("1969-12-31T23:59:59Z");
        assert!(!later_than_stored(t("1969-12-31T23:59:59.5Z"), stored));
        assert!(later_than_stored(t("1970-01-01T00:00:00Z"), stored));
    }

    #[test]
    fn exact_times_keep_their_fraction_and_read_back_as_written() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct S {
            #[serde(serialize_with = "serialize_exact")]
            at: Option<Time>,
        }
        let exact = S {
            at: Some(Time(t("2026-12-07T06:22:05.408Z"))),
        };
        let json = serde_json::to_string(&exact).unwrap();
        assert_eq!(json, r#"{"at":"2026-12-07T06:22:05.408Z"}"#);
        let back: S = serde_json::from_str(&json).unwrap();
        assert_eq!(back.at, exact.at);
        let whole: S = serde_json::from_str(r#"{"at":"2026-12-07T06:22:05Z"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&whole).unwrap(),
            r#"{"at":"2026-12-07T06:22:05Z"}"#
        );
        let none = S { at: None };
        assert_eq!(serde_json::to_string(&none).unwrap(), r#"{"at":null}"#);
    }
}
