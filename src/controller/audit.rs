//! The audit record of an issuance: who asked, who approved and which change, as captured with
//! its intent (`status.attempt.audit`), never the object's current names, which a change during
//! the POST could have rewritten; the log line at its sending mark and at its outcome with
//! everything an auditor joins on (docs/security.md, "From a resource to Entra's audit log");
//! and the bounded note of an Event, the names first.

use kube::ResourceExt;

use super::core::report::Issued;
use crate::resource::{
    Attempt, AuditNames, Decision, GuestRedemptionReset, REQUESTED_BY_ANNOTATION, RETRY_ANNOTATION,
};

/// Events notes are cut to this many bytes.
const EVENT_NOTE_LIMIT: usize = 1000;
/// `changeRef` in a note is cut to this many bytes (the schema's limit), after the names.
const CHANGE_REF_LIMIT: usize = 128;

/// `text` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
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

/// Who asked for the resource's current generation (and retry), who approved it, and the
/// change, as the object says now: what an intent captures.
pub fn capture(obj: &GuestRedemptionReset) -> AuditNames {
    let generation = obj.metadata.generation.unwrap_or(0);
    let retry = obj.annotations().get(RETRY_ANNOTATION).map(String::as_str);
    let approver = obj
        .status
        .as_ref()
        .and_then(|s| s.approval.as_ref())
        .filter(|a| a.decision == Decision::Approved && a.covers(generation, retry))
        .map(|a| a.by.clone());
    AuditNames {
        requested_by: obj.annotations().get(REQUESTED_BY_ANNOTATION).cloned(),
        approved_by: approver,
        change_ref: obj.spec.change_ref.clone(),
    }
}

/// The names of the issuance in flight or last issued for this generation, as captured with its
/// intent; the object's current ones otherwise.
fn names_of(obj: &GuestRedemptionReset) -> AuditNames {
    let generation = obj.metadata.generation.unwrap_or(0);
    let status = obj.status.as_ref();
    let in_flight = status
        .and_then(|s| s.attempt.as_ref())
        .and_then(|a| a.audit.clone());
    let issued = status
        .and_then(|s| s.invitation.as_ref())
        .filter(|i| i.generation == generation)
        .and_then(|i| i.audit.clone());
    in_flight.or(issued).unwrap_or_else(|| capture(obj))
}

/// An Event's note: `requested by …, approved by …: [changeRef] message`, the names first so
/// that neither a long message nor a `changeRef` can push them out of the bounded note, and
/// `changeRef` cut to [`CHANGE_REF_LIMIT`].
fn note_of(obj: &GuestRedemptionReset, message: &str) -> String {
    let names = names_of(obj);
    let people = match (names.requested_by, names.approved_by) {
        (Some(requester), Some(approver)) => {
            format!("requested by {requester}, approved by {approver}: ")
        }
        (Some(requester), None) => format!("requested by {requester}: "),
        (None, Some(approver)) => format!("approved by {approver}: "),
        (None, None) => String::new(),
    };
    match names.change_ref.as_deref() {
        Some(change) => format!("{people}[{}] {message}", truncate(change, CHANGE_REF_LIMIT)),
        None => format!("{people}{message}"),
    }
}

/// The note of an Event on `obj` saying `message`, cut to [`EVENT_NOTE_LIMIT`].
pub fn event_note(obj: &GuestRedemptionReset, message: &str) -> String {
    truncate(&note_of(obj, message), EVENT_NOTE_LIMIT)
}

/// One audit line: what a pass tells the auditor, a value the executor hands to
/// [`Io::audit`](super::exec::io::Io::audit) (production logs it with [`log`], the model test
/// checks it against the status it precedes).
#[derive(Clone, Debug, PartialEq)]
pub enum AuditRecord {
    /// The sending mark: the POST of this attempt may leave now, for these people.
    Sending {
        resource: Resource,
        attempt: String,
        generation: i64,
        email: Option<String>,
        names: AuditNames,
    },
    /// An issuance, answered or recovered, with the ids that find the same call in Entra's
    /// audit log.
    Issued {
        resource: Resource,
        generation: i64,
        user_id: Option<String>,
        email: String,
        invitation_id: String,
        recovered: bool,
        request_id: Option<String>,
        client_request_id: Option<String>,
        names: AuditNames,
    },
}

/// The resource an audit line is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub namespace: String,
    pub name: String,
}

impl Resource {
    fn of(obj: &GuestRedemptionReset) -> Self {
        Resource {
            namespace: obj.namespace().unwrap_or_default(),
            name: obj.name_any(),
        }
    }
}

/// The audit record of a sending mark, with the names the attempt captured.
pub fn sending(obj: &GuestRedemptionReset, attempt: &Attempt) -> AuditRecord {
    AuditRecord::Sending {
        resource: Resource::of(obj),
        attempt: attempt.id.clone(),
        generation: attempt.generation,
        email: attempt.email.clone(),
        names: attempt.audit.clone().unwrap_or_else(|| capture(obj)),
    }
}

/// The one audit record per issuance: the resource, the people and the change of the attempt
/// it came from. Written before the outcome is, so that a resource deleted meanwhile loses no
/// record.
pub fn issuance(
    obj: &GuestRedemptionReset,
    issued: &Issued,
    user_id: Option<&str>,
    attempt: Option<&Attempt>,
) -> AuditRecord {
    AuditRecord::Issued {
        resource: Resource::of(obj),
        generation: issued.generation,
        user_id: user_id.map(str::to_owned),
        email: issued.email.clone(),
        invitation_id: issued.invitation_id.clone(),
        recovered: issued.recovered,
        request_id: issued.request_id.clone(),
        client_request_id: issued.client_request_id.clone(),
        names: attempt
            .and_then(|a| a.audit.clone())
            .unwrap_or_else(|| capture(obj)),
    }
}

/// Writes `record` as one structured log line (docs/security.md, "From a resource to Entra's
/// audit log").
pub fn log(record: &AuditRecord) {
    match record {
        AuditRecord::Sending {
            resource,
            attempt,
            generation,
            email,
            names,
        } => tracing::info!(
            audit = "invitation-sending",
            namespace = %resource.namespace,
            name = %resource.name,
            generation = *generation,
            attempt = %attempt,
            email = email.as_deref().unwrap_or_default(),
            change_ref = names.change_ref.as_deref().unwrap_or_default(),
            requested_by = names.requested_by.as_deref().unwrap_or_default(),
            approved_by = names.approved_by.as_deref().unwrap_or_default(),
            "invitation sending"
        ),
        AuditRecord::Issued {
            resource,
            generation,
            user_id,
            email,
            invitation_id,
            recovered,
            request_id,
            client_request_id,
            names,
        } => tracing::info!(
            audit = "invitation-issued",
            namespace = %resource.namespace,
            name = %resource.name,
            generation = *generation,
            user_id = user_id.as_deref().unwrap_or_default(),
            email = %email,
            invitation_id = %invitation_id,
            recovered = *recovered,
            request_id = request_id.as_deref().unwrap_or_default(),
            client_request_id = client_request_id.as_deref().unwrap_or_default(),
            change_ref = names.change_ref.as_deref().unwrap_or_default(),
            requested_by = names.requested_by.as_deref().unwrap_or_default(),
            approved_by = names.approved_by.as_deref().unwrap_or_default(),
            "invitation issued"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures;

    #[test]
    fn the_note_names_the_change_the_requester_and_the_approver() {
        let mut obj = fixtures::resource("a", "ns");
        assert_eq!(note_of(&obj, "issued"), "issued");
        obj.spec.change_ref = Some("CHG-1".into());
        obj.annotations_mut()
            .insert(REQUESTED_BY_ANNOTATION.into(), "alice".into());
        assert_eq!(
            note_of(&obj, "issued"),
            "requested by alice: [CHG-1] issued"
        );
        obj.status = Some(crate::resource::GuestRedemptionResetStatus {
            approval: Some(fixtures::approval(1, Decision::Approved, "bob")),
            ..Default::default()
        });
        assert_eq!(
            note_of(&obj, "issued"),
            "requested by alice, approved by bob: [CHG-1] issued"
        );
        // An approval of another generation, or a denial, approves nothing.
        obj.metadata.generation = Some(2);
        assert_eq!(note_of(&obj, "x"), "requested by alice: [CHG-1] x");
        obj.status.as_mut().unwrap().approval =
            Some(fixtures::approval(2, Decision::Denied, "bob"));
        assert_eq!(note_of(&obj, "x"), "requested by alice: [CHG-1] x");
    }

    #[test]
    fn the_names_of_an_issuance_are_those_of_its_intent_and_come_first() {
        let mut obj = fixtures::resource("a", "ns");
        obj.annotations_mut()
            .insert(REQUESTED_BY_ANNOTATION.into(), "carol".into());
        obj.spec.change_ref = Some(format!("{} (requested by mallory)", "x".repeat(200)));
        let captured = AuditNames {
            requested_by: Some("alice".into()),
            approved_by: Some("bob".into()),
            change_ref: Some("CHG-1".into()),
        };
        let status = obj.status.get_or_insert_default();
        status.attempt = Some(Attempt {
            id: "a1".into(),
            generation: 1,
            started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(fixtures::at(0)),
            post_started_at: None,
            email: None,
            user_state_before: None,
            audit: Some(captured),
        });
        let note = note_of(&obj, &"m".repeat(2000));
        assert!(
            note.starts_with("requested by alice, approved by bob: [CHG-1] m"),
            "{note}"
        );
        // Without a captured record, a long changeRef is cut and cannot push the names out.
        obj.status = None;
        let note = event_note(&obj, &"m".repeat(2000));
        assert!(note.starts_with("requested by carol: [xxx"), "{note}");
        assert!(!note.contains("mallory"), "{note}");
    }
}
