use super::*;
use crate::plugin::fixtures::{condition, now, object, status};

#[test]
fn every_failure_of_the_current_generation_can_be_retried() {
    for reason in Reason::ALL {
        let obj = object(3, Some(status(3, *reason, "m")));
        let verdict = retryable(&obj);
        let failed = reason.readiness().as_str() == "False";
        assert_eq!(verdict.is_ok(), failed, "{reason}: {verdict:?}");
        if failed {
            assert_eq!(verdict.unwrap(), reason.as_str());
        } else {
            let why = verdict.unwrap_err();
            assert!(
                why.starts_with("nothing to retry: generation 3 is"),
                "{why}"
            );
            assert!(why.contains(reason.as_str()), "{why}");
        }
    }
}

#[test]
fn a_failure_of_an_older_generation_is_not_retried() {
    let obj = object(4, Some(status(3, Reason::GraphRejected, "m")));
    let why = retryable(&obj).unwrap_err();
    assert!(why.contains("outcome of generation 3"), "{why}");
    assert!(why.contains("generation 4 has not been tried yet"), "{why}");
    // The condition's own generation counts, even when observedGeneration moved on.
    let mut moved = status(4, Reason::Pending, "m");
    moved.conditions = vec![condition("Ready", "False", "GraphRejected", "m", 3)];
    assert!(retryable(&object(4, Some(moved))).is_err());
}

#[test]
fn nothing_reported_nothing_to_retry() {
    let why = retryable(&object(1, None)).unwrap_err();
    assert!(why.contains("has not reported on generation 1"), "{why}");
}

#[test]
fn only_an_unknown_outcome_needs_a_confirmation() {
    assert_eq!(gate(false, false, false), Gate::Go);
    assert_eq!(gate(false, false, true), Gate::Go);
    assert_eq!(gate(true, true, false), Gate::Go);
    assert_eq!(gate(true, true, true), Gate::Go);
    assert_eq!(gate(true, false, true), Gate::Ask);
    assert_eq!(gate(true, false, false), Gate::Refuse);
}

#[test]
fn only_yes_confirms() {
    for yes in ["y", "Y", "yes", "YES\n", " y \n"] {
        assert!(confirmed(yes), "{yes:?}");
    }
    for no in ["", "\n", "n", "no", "yep", "sure", "y y"] {
        assert!(!confirmed(no), "{no:?}");
    }
}

#[test]
fn the_risk_names_the_generation_and_the_address() {
    let risk = risk(&object(2, None));
    assert!(
        risk.contains("generation 2 of identity/alice ended OutcomeUnknown"),
        "{risk}"
    );
    assert!(
        risk.contains("a second invitation may follow (to alice@newco.example)"),
        "{risk}"
    );
}

#[test]
fn tokens_differ_by_time_and_by_chance() {
    assert_eq!(token(now(), 0x1a2b3c), "20261202T140110Z-001a2b3c");
    assert_ne!(token(now(), 1), token(now(), 2));
    let later = now() + jiff::SignedDuration::from_secs(1);
    assert_ne!(token(now(), 1), token(later, 1));
}

#[test]
fn the_patch_sets_the_annotation_and_its_requester_on_the_version_read() {
    assert_eq!(
        patch(&object(3, None), "t-1", "carol"),
        serde_json::json!({"metadata": {"annotations": {
            "guestreset.io/retry": "t-1",
            "guestreset.io/retry-requested-by": "carol",
        }, "resourceVersion": "42"}})
    );
}
