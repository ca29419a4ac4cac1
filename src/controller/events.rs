//! The audit trail on the resource: one Event per transition of Ready and of Redeemed, the note
//! prefixed with `changeRef` and naming the requester and the approver, cut to a bounded size;
//! and one structured log line per issuance with everything an auditor joins on
//! (docs/security.md, "From a resource to Entra's audit log").

use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use tracing::warn;

use super::Context;
use super::reason::Reason;
use super::report::Issued;
use crate::resource::{GuestRedemptionReset, REQUESTED_BY_ANNOTATION};

/// Events notes are cut to this many bytes.
const EVENT_NOTE_LIMIT: usize = 1000;

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Emits an Event on the resource; its note carries `changeRef` when set.
pub async fn publish(ctx: &Context, obj: &GuestRedemptionReset, reason: Reason, message: &str) {
    publish_event(ctx, obj, reason.as_str(), reason.is_warning(), message).await;
}

pub async fn publish_event(
    ctx: &Context,
    obj: &GuestRedemptionReset,
    reason: &str,
    warning: bool,
    message: &str,
) {
    let note = note_of(obj, message);
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_owned(),
        note: Some(truncate(&note, EVENT_NOTE_LIMIT)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %err, "could not publish an event");
    }
}

/// Who asked for the resource's current generation, and who approved it (when someone did).
fn people(obj: &GuestRedemptionReset) -> (Option<&str>, Option<&str>) {
    let generation = obj.metadata.generation.unwrap_or(0);
    let requester = obj
        .annotations()
        .get(REQUESTED_BY_ANNOTATION)
        .map(String::as_str);
    let approver = obj
        .status
        .as_ref()
        .and_then(|s| s.approval.as_ref())
        .filter(|a| a.for_generation(generation) == Some(crate::resource::Decision::Approved))
        .map(|a| a.by.as_str());
    (requester, approver)
}

/// An Event's note: `[changeRef] message (requested by …, approved by …)`.
fn note_of(obj: &GuestRedemptionReset, message: &str) -> String {
    let mut note = match obj.spec.change_ref.as_deref() {
        Some(change) => format!("[{change}] {message}"),
        None => message.to_owned(),
    };
    match people(obj) {
        (Some(requester), Some(approver)) => note.push_str(&format!(
            " (requested by {requester}, approved by {approver})"
        )),
        (Some(requester), None) => note.push_str(&format!(" (requested by {requester})")),
        (None, Some(approver)) => note.push_str(&format!(" (approved by {approver})")),
        (None, None) => {}
    }
    note
}

/// The one log line per issuance: the resource, the people, the change, and the ids that find
/// the same call in Entra's audit log.
pub fn log_issuance(obj: &GuestRedemptionReset, issued: &Issued, user_id: Option<&str>) {
    let (requester, approver) = people(obj);
    tracing::info!(
        audit = "invitation-issued",
        namespace = obj.namespace().as_deref().unwrap_or_default(),
        name = %obj.name_any(),
        generation = issued.generation,
        user_id = user_id.unwrap_or_default(),
        email = %issued.email,
        invitation_id = %issued.invitation_id,
        recovered = issued.recovered,
        request_id = issued.request_id.as_deref().unwrap_or_default(),
        client_request_id = issued.client_request_id.as_deref().unwrap_or_default(),
        change_ref = obj.spec.change_ref.as_deref().unwrap_or_default(),
        requested_by = requester.unwrap_or_default(),
        approved_by = approver.unwrap_or_default(),
        "invitation issued"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures;
    use crate::resource::Decision;

    #[test]
    fn the_note_names_the_change_the_requester_and_the_approver() {
        let mut obj = fixtures::resource("a", "ns");
        assert_eq!(note_of(&obj, "issued"), "issued");
        obj.spec.change_ref = Some("CHG-1".into());
        obj.annotations_mut()
            .insert(REQUESTED_BY_ANNOTATION.into(), "alice".into());
        assert_eq!(
            note_of(&obj, "issued"),
            "[CHG-1] issued (requested by alice)"
        );
        obj.status = Some(crate::resource::GuestRedemptionResetStatus {
            approval: Some(fixtures::approval(1, Decision::Approved, "bob")),
            ..Default::default()
        });
        assert_eq!(
            note_of(&obj, "issued"),
            "[CHG-1] issued (requested by alice, approved by bob)"
        );
        // An approval of another generation, or a denial, approves nothing.
        obj.metadata.generation = Some(2);
        assert_eq!(note_of(&obj, "x"), "[CHG-1] x (requested by alice)");
        obj.status.as_mut().unwrap().approval =
            Some(fixtures::approval(2, Decision::Denied, "bob"));
        assert_eq!(note_of(&obj, "x"), "[CHG-1] x (requested by alice)");
    }
}
