//! Events on the resource: one per transition of Ready and of Redeemed, the note prefixed
//! with `changeRef` and cut to a bounded size.

use kube::Resource;
use kube::runtime::events::{Event, EventType};
use tracing::warn;

use super::Context;
use super::reason::Reason;
use crate::resource::GuestRedemptionReset;

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
    let note = match obj.spec.change_ref.as_deref() {
        Some(change) => format!("[{change}] {message}"),
        None => message.to_owned(),
    };
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
