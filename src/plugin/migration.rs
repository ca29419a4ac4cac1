//! `migration status NAME`: where a domain migration stands (docs/plugin.md): its reason, the
//! plan, the decision, and a progress bar of the settled resets; `-o yaml|json` prints the
//! status as stored.

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use serde::Serialize;

use super::cli::MigrationStatusArgs;
use super::error::Error;
use super::output;
use super::session::Session;
use crate::resource::migration::Progress;
use crate::resource::{GuestDomainMigration, GuestDomainMigrationStatus};

/// Characters of the bar between its brackets.
const BAR_WIDTH: usize = 30;

pub async fn status(session: &Session, args: &MigrationStatusArgs) -> Result<(), Error> {
    let api: Api<GuestDomainMigration> =
        Api::namespaced(session.client.clone(), &session.namespace);
    let obj = api.get(&args.name).await?;
    let text = match args.output {
        Some(format) => output::render(&Document::of(&obj), format),
        None => describe(&obj, Timestamp::now()),
    };
    output::print(&text)
}

/// The machine-readable form.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Document<'a> {
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    pub status: Option<&'a GuestDomainMigrationStatus>,
}

impl<'a> Document<'a> {
    pub fn of(obj: &'a GuestDomainMigration) -> Self {
        Document {
            namespace: obj.namespace().unwrap_or_default(),
            name: obj.name_any(),
            generation: obj.metadata.generation.unwrap_or(0),
            status: obj.status.as_ref(),
        }
    }
}

/// `[#########---------------------]  30%`: the share of the plan settled (issued or failed).
pub fn progress_bar(progress: &Progress, width: usize) -> String {
    let settled = (progress.issued + progress.failed).max(0) as usize;
    let planned = progress.planned.max(0) as usize;
    let (filled, percent) = if planned == 0 {
        (width, 100)
    } else {
        let settled = settled.min(planned);
        (settled * width / planned, settled * 100 / planned)
    };
    format!(
        "[{}{}] {percent:>3}%",
        "#".repeat(filled),
        "-".repeat(width - filled)
    )
}

/// The human form.
pub fn describe(obj: &GuestDomainMigration, now: Timestamp) -> String {
    let generation = obj.metadata.generation.unwrap_or(0);
    let status = obj.status.clone().unwrap_or_default();
    let mut lines = vec![
        ("Name", obj.name_any()),
        ("Namespace", obj.namespace().unwrap_or_default()),
        ("Migration", format!("{} -> {}", obj.spec.from, obj.spec.to)),
    ];
    if let Some(change) = &obj.spec.change_ref {
        lines.push(("Change", change.clone()));
    }
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.observed_generation == Some(generation));
    lines.push((
        "Ready",
        match ready {
            Some(c) => format!("{} ({}): {}", c.reason, c.status, c.message),
            None => format!("generation {generation} not observed yet"),
        },
    ));
    if let Some(by) = &status.requested_by {
        lines.push(("Requested-By", by.clone()));
    }
    if let Some(a) = status
        .approval
        .as_ref()
        .filter(|a| a.generation == generation)
    {
        lines.push((
            "Approval",
            format!(
                "{} by {} at {}{}: {}",
                a.decision,
                a.by,
                a.at.0,
                a.digest
                    .as_deref()
                    .map(|d| format!(" (plan {d})"))
                    .unwrap_or_default(),
                a.reason
            ),
        ));
    }
    if let Some(plan) = status.plan.as_ref().filter(|p| p.generation == generation) {
        lines.push((
            "Plan",
            format!(
                "{} guests; {} members and {} conflicts excluded; {}; listed in {}",
                plan.guests, plan.members, plan.conflicts, plan.digest, plan.listed_in
            ),
        ));
    }
    if let Some(progress) = &status.progress {
        lines.push(("Progress", progress_bar(progress, BAR_WIDTH)));
        lines.push((
            "",
            format!(
                "{} planned, {} created, {} issued, {} failed, {} redeemed",
                progress.planned,
                progress.created,
                progress.issued,
                progress.failed,
                progress.redeemed
            ),
        ));
    }
    if let Some(at) = &status.expected_completion {
        let left = at.0.duration_since(now);
        let minutes = (left.as_secs().max(0) + 59) / 60;
        lines.push((
            "Expected",
            format!("{} (in about {minutes} min, at the write limit)", at.0),
        ));
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 2;
    lines
        .into_iter()
        .map(|(k, v)| {
            let key = if k.is_empty() {
                String::new()
            } else {
                format!("{k}:")
            };
            format!("{key:<width$}{v}\n")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(planned: i64, issued: i64, failed: i64) -> Progress {
        Progress {
            planned,
            created: planned,
            issued,
            failed,
            redeemed: 0,
        }
    }

    #[test]
    fn the_bar_fills_with_the_settled_share() {
        assert_eq!(progress_bar(&progress(10, 0, 0), 10), "[----------]   0%");
        assert_eq!(progress_bar(&progress(10, 2, 1), 10), "[###-------]  30%");
        assert_eq!(progress_bar(&progress(3, 3, 0), 10), "[##########] 100%");
        assert_eq!(progress_bar(&progress(0, 0, 0), 4), "[####] 100%");
        // More settled than planned (a stale count) never overflows the bar.
        assert_eq!(progress_bar(&progress(2, 5, 0), 4), "[####] 100%");
    }

    #[test]
    fn describe_shows_the_plan_the_bar_and_the_counts() {
        let mut obj: GuestDomainMigration = serde_json::from_value(serde_json::json!({
            "apiVersion": "guestreset.io/v1alpha1", "kind": "GuestDomainMigration",
            "metadata": {"name": "m", "namespace": "identity", "generation": 1},
            "spec": {"from": "contoso.com", "to": "fabrikam.example", "changeRef": "CHG-1"},
            "status": {
                "observedGeneration": 1,
                "conditions": [{"type": "Ready", "status": "Unknown", "reason": "InProgress",
                    "message": "m", "observedGeneration": 1, "lastTransitionTime": "2026-12-07T12:00:00Z"}],
                "plan": {"generation": 1, "guests": 20, "members": 1, "conflicts": 0,
                    "digest": "sha256:ab", "listedIn": "ConfigMap/m-plan", "plannedAt": "2026-12-07T12:00:00Z"},
                "progress": {"planned": 20, "created": 20, "issued": 10, "failed": 0, "redeemed": 2},
            }
        }))
        .unwrap();
        let text = describe(&obj, Timestamp::now());
        assert!(text.contains("contoso.com -> fabrikam.example"), "{text}");
        assert!(text.contains("InProgress (Unknown)"), "{text}");
        assert!(
            text.contains("20 guests; 1 members and 0 conflicts excluded; sha256:ab"),
            "{text}"
        );
        assert!(
            text.contains("[###############---------------]  50%"),
            "{text}"
        );
        assert!(
            text.contains("20 planned, 20 created, 10 issued, 0 failed, 2 redeemed"),
            "{text}"
        );
        obj.metadata.generation = Some(2);
        assert!(describe(&obj, Timestamp::now()).contains("generation 2 not observed yet"));
    }
}
