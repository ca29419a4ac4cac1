//! The plugin's writes: JSON merge patches that apply only to the version of the object the
//! command read and judged, so that a change in between (a spec edit: a new generation) makes
//! the write fail with a conflict instead of acting on something nobody looked at.

use kube::api::{PatchParams, PostParams};
use serde_json::{Value, json};

use crate::resource::GuestRedemptionReset;

/// Recorded in `managedFields`, so that the object shows which writes came from the plugin.
pub const FIELD_MANAGER: &str = "kubectl-guestreset";

pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

pub fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    }
}

/// `patch` plus `metadata.resourceVersion` of `read`: the API server applies a merge patch that
/// carries a resource version only to that version, and answers 409 Conflict otherwise.
pub fn locked(mut patch: Value, read: &GuestRedemptionReset) -> Value {
    let version = read.metadata.resource_version.clone();
    match patch.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(metadata) => {
            metadata.insert("resourceVersion".into(), json!(version));
        }
        None => patch["metadata"] = json!({ "resourceVersion": version }),
    }
    patch
}

/// Test-only fault injection (feature `failpoints`): with `GUESTRESET_FAILPOINT=pause-before-write`
/// the command stops right before its write, says so on stderr, and goes on when a line (or the
/// end of input) arrives on stdin, so that a test can change the object in between.
pub fn pause_before_write() {
    if cfg!(feature = "failpoints")
        && std::env::var("GUESTRESET_FAILPOINT").as_deref() == Ok("pause-before-write")
    {
        eprintln!("failpoint pause-before-write reached");
        let _ = std::io::stdin().read_line(&mut String::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::fixtures::object;

    #[test]
    fn the_patch_carries_the_version_that_was_read() {
        let obj = object(3, None);
        let patch = locked(json!({"status": {"approval": {"generation": 3}}}), &obj);
        assert_eq!(
            patch,
            json!({"metadata": {"resourceVersion": "42"}, "status": {"approval": {"generation": 3}}})
        );
        let patch = locked(json!({"metadata": {"annotations": {"a": "b"}}}), &obj);
        assert_eq!(
            patch,
            json!({"metadata": {"annotations": {"a": "b"}, "resourceVersion": "42"}})
        );
    }
}
