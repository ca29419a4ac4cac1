//! `status [NAME]`: where resets stand, for people (a table, or one resource in detail) or for
//! machines (`-o yaml|json`: the objects' status with what identifies it).

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::cli::StatusArgs;
use super::error::Error;
use super::output;
use super::plan;
use super::session::Session;
use crate::resource::reason::Reason;
use crate::resource::{Approval, GuestRedemptionReset, GuestRedemptionResetStatus};

const NONE: &str = "-";

pub async fn run(session: &Session, args: &StatusArgs) -> Result<(), Error> {
    let objs = match &args.name {
        Some(name) => vec![session.api().get(name).await?],
        None => list(session, args.all_namespaces).await?,
    };
    if objs.is_empty() && args.output.is_none() {
        let place = if args.all_namespaces {
            "any namespace".to_owned()
        } else {
            format!("namespace {}", session.namespace)
        };
        eprintln!("No GuestRedemptionResets found in {place}.");
        return Ok(());
    }
    let now = Timestamp::now();
    let text = match (args.output, &args.name) {
        (Some(format), Some(_)) => output::render(&document(&objs[0]), format),
        (Some(format), None) => output::render(&documents(&objs), format),
        (None, Some(_)) => describe(&summarize(&objs[0], now)),
        (None, None) => table(&objs, now, args.all_namespaces),
    };
    output::print(&text)
}

async fn list(session: &Session, all: bool) -> Result<Vec<GuestRedemptionReset>, Error> {
    let api: Api<GuestRedemptionReset> = if all {
        Api::all(session.client.clone())
    } else {
        session.api()
    };
    Ok(api.list(&ListParams::default()).await?.items)
}

/// The machine-readable form: the status as stored, with what tells whether it is current.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Document<'a> {
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    pub status: Option<&'a GuestRedemptionResetStatus>,
}

#[derive(Serialize, Debug)]
pub struct Documents<'a> {
    pub items: Vec<Document<'a>>,
}

pub fn document(obj: &GuestRedemptionReset) -> Document<'_> {
    Document {
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        generation: plan::generation(obj),
        status: obj.status.as_ref(),
    }
}

pub fn documents(objs: &[GuestRedemptionReset]) -> Documents<'_> {
    Documents {
        items: objs.iter().map(document).collect(),
    }
}

/// One resource as people read it; every field is ready to print.
#[derive(Debug, PartialEq)]
pub struct Summary {
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    pub ready: String,
    pub message: Option<String>,
    pub age: String,
    pub requested_by: String,
    pub approval: String,
    /// When and why, for the detailed view.
    pub approval_note: Option<String>,
    pub redeemed: String,
    pub next_try: Option<String>,
}

pub fn summarize(obj: &GuestRedemptionReset, now: Timestamp) -> Summary {
    let generation = plan::generation(obj);
    let status = obj.status.as_ref();
    let ready = plan::ready(obj);
    Summary {
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        generation,
        ready: ready_text(obj),
        message: ready.map(|c| c.message.clone()).filter(|m| !m.is_empty()),
        age: obj
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(NONE.to_owned(), |t| {
                output::human_duration(now.duration_since(t.0))
            }),
        requested_by: status
            .and_then(|s| s.requested_by.clone())
            .unwrap_or_else(|| NONE.to_owned()),
        approval: status
            .and_then(|s| s.approval.as_ref())
            .map_or(NONE.to_owned(), |a| approval_text(a, generation)),
        approval_note: status
            .and_then(|s| s.approval.as_ref())
            .map(|a| format!("at {}: {}", output::clock(a.at.0, now), a.reason)),
        redeemed: redeemed_text(obj, now),
        next_try: next_try(obj, now),
    }
}

/// Ready's reason, with the generation it is about when that is not the current one.
fn ready_text(obj: &GuestRedemptionReset) -> String {
    let Some(ready) = plan::ready(obj) else {
        return NONE.to_owned();
    };
    let observed = obj.status.as_ref().and_then(|s| s.observed_generation);
    match ready.observed_generation.or(observed) {
        Some(g) if g == plan::generation(obj) => ready.reason.clone(),
        Some(g) => format!("{} (gen {g})", ready.reason),
        None => format!("{} (gen ?)", ready.reason),
    }
}

/// The decision, by whom, and for which generation; one for an older generation is void.
fn approval_text(approval: &Approval, generation: i64) -> String {
    let stale = if approval.generation == generation {
        ""
    } else {
        ", stale"
    };
    format!(
        "{} by {} (gen {}{stale})",
        approval.decision, approval.by, approval.generation
    )
}

/// The Redeemed condition's reason, with the next check while the guest has not redeemed.
fn redeemed_text(obj: &GuestRedemptionReset, now: Timestamp) -> String {
    let status = obj.status.as_ref();
    let condition = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Redeemed"));
    let Some(condition) = condition else {
        return NONE.to_owned();
    };
    let next_check = status
        .and_then(|s| s.redemption.as_ref())
        .and_then(|r| r.next_check_at.as_ref());
    match next_check {
        Some(at) => format!(
            "{} (next check {})",
            condition.reason,
            output::due(at.0, now)
        ),
        None => condition.reason.clone(),
    }
}

/// When a waiting reset of the current generation is tried again: a write slot (Throttled), a
/// backoff (TransientError), the tenant pause (TenantBlocked), a slow retry (Forbidden).
fn next_try(obj: &GuestRedemptionReset, now: Timestamp) -> Option<String> {
    let status = obj.status.as_ref()?;
    let at = status.next_attempt_at.as_ref()?;
    let reason = Reason::parse(&plan::ready(obj)?.reason)?;
    let current = status.observed_generation == Some(plan::generation(obj));
    (current && !reason.is_settled()).then(|| output::due(at.0, now))
}

pub fn table(objs: &[GuestRedemptionReset], now: Timestamp, with_namespace: bool) -> String {
    let mut headers = vec![
        "NAME",
        "READY",
        "AGE",
        "REQUESTED-BY",
        "APPROVAL",
        "REDEEMED",
        "NEXT-TRY",
    ];
    if with_namespace {
        headers.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = objs
        .iter()
        .map(|obj| row(summarize(obj, now), with_namespace))
        .collect();
    output::table(&headers, &rows)
}

fn row(s: Summary, with_namespace: bool) -> Vec<String> {
    let next = s.next_try.unwrap_or_else(|| NONE.to_owned());
    let cells = [
        s.name,
        s.ready,
        s.age,
        s.requested_by,
        s.approval,
        s.redeemed,
        next,
    ];
    with_namespace
        .then_some(s.namespace)
        .into_iter()
        .chain(cells)
        .collect()
}

/// One resource in detail, with Ready's message.
pub fn describe(s: &Summary) -> String {
    let fields = [
        ("Name", Some(s.name.clone())),
        ("Namespace", Some(s.namespace.clone())),
        ("Generation", Some(s.generation.to_string())),
        ("Ready", Some(s.ready.clone())),
        ("Message", s.message.clone()),
        ("Age", Some(s.age.clone())),
        ("Requested by", Some(s.requested_by.clone())),
        ("Approval", Some(approval_line(s))),
        ("Redeemed", Some(s.redeemed.clone())),
        ("Next try", s.next_try.clone()),
    ];
    fields
        .into_iter()
        .filter_map(|(label, value)| value.map(|v| format!("{:<14}{v}\n", format!("{label}:"))))
        .collect()
}

fn approval_line(s: &Summary) -> String {
    match &s.approval_note {
        Some(note) => format!("{} {note}", s.approval),
        None => s.approval.clone(),
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
