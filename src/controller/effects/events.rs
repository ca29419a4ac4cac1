//! The Events on the resource: one per transition of Ready and of Redeemed, with the bounded
//! note of [`audit::event_note`].

use kube::Resource;
use kube::runtime::events::{Event, EventType};
use tracing::warn;

use crate::controller::audit;
use crate::controller::context::Context;
use crate::resource::GuestRedemptionReset;
use crate::resource::reason::Reason;

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
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_owned(),
        note: Some(audit::event_note(obj, message)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %err, "could not publish an event");
    }
}
