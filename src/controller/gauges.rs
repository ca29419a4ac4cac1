//! The gauges counted over the watch cache rather than at each event: pending redemptions (count
//! and oldest age) and the per-resource condition series. They cost no API call and agree with
//! what the leader's cache holds, so a deleted reset's series go with it.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use super::context::{Context, Watched};
use super::core::follow::pending_summary;
use crate::metrics::{ResourceCondition, ResourceRow};
use crate::resource::GuestRedemptionReset;
use crate::resource::reason::{APPROVED, READY, REDEEMED};

/// How often the gauges of pending redemptions are counted over the watch cache.
const GAUGE_PERIOD: Duration = Duration::from_secs(10);

/// The conditions with a series per resource: what happened (Ready), whether the guest
/// redeemed (Redeemed) and the approval (Approved). Reconciling and Stalled follow Ready's
/// reason and would only multiply the series.
const EXPORTED: [&str; 3] = [READY, REDEEMED, APPROVED];

/// Serves the per-resource series from `reader` at each scrape, and keeps the gauges of
/// pending redemptions current until the task is aborted.
pub async fn keep(reader: Store<Watched>, ctx: Arc<Context>) {
    let rows_from = reader.clone();
    ctx.metrics
        .resources
        .follow(move || condition_rows(rows_from.state().iter().filter_map(|o| o.0.as_ref().ok())));
    let mut tick = tokio::time::interval(GAUGE_PERIOD);
    loop {
        tick.tick().await;
        let objects = reader.state();
        let valid = objects.iter().filter_map(|o| o.0.as_ref().ok());
        let (count, oldest) = pending_summary(valid, Timestamp::now());
        let oldest = Duration::try_from(oldest).unwrap_or_default();
        ctx.metrics.set_pending_redemptions(count, oldest);
    }
}

/// One row per exported condition of each reset.
pub fn condition_rows<'a>(
    resources: impl IntoIterator<Item = &'a GuestRedemptionReset>,
) -> Vec<ResourceRow> {
    let mut rows = Vec::new();
    for obj in resources {
        let Some(status) = &obj.status else { continue };
        for condition in EXPORTED {
            let Some(c) = status.conditions.iter().find(|c| c.type_ == condition) else {
                continue;
            };
            let labels = ResourceCondition {
                namespace: obj.namespace().unwrap_or_default(),
                name: obj.name_any(),
                condition,
                status: c.status.clone(),
                reason: c.reason.clone(),
            };
            rows.push((labels, c.last_transition_time.0.as_second()));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn condition(type_: &str, status: &str, reason: &str, second: i64) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: Time(Timestamp::from_second(second).unwrap()),
        }
    }

    #[test]
    fn a_row_per_exported_condition_none_for_a_reset_without_status() {
        let mut seen = GuestRedemptionReset::new("alice", serde_json::from_value(
            serde_json::json!({"user": {"id": "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41"}, "email": "a@b.example"}),
        ).unwrap());
        seen.metadata.namespace = Some("identity".into());
        let fresh = seen.clone();
        seen.status = Some(crate::resource::GuestRedemptionResetStatus {
            conditions: vec![
                condition("Ready", "True", "Issued", 100),
                condition("Reconciling", "False", "Issued", 100),
                condition("Redeemed", "Unknown", "PendingAcceptance", 90),
            ],
            ..Default::default()
        });
        let rows = condition_rows([&fresh, &seen]);
        let got: Vec<(&str, &str, &str, i64)> = rows
            .iter()
            .map(|(l, at)| (l.condition, l.status.as_str(), l.reason.as_str(), *at))
            .collect();
        assert_eq!(
            got,
            [
                ("Ready", "True", "Issued", 100),
                ("Redeemed", "Unknown", "PendingAcceptance", 90)
            ]
        );
        assert!(
            rows.iter()
                .all(|(l, _)| l.namespace == "identity" && l.name == "alice")
        );
    }
}
