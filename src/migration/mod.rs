//! Domain migrations (`GuestDomainMigration`, docs/resource.md): every guest of a partner
//! domain moved to a new domain as one reviewed plan, then one `GuestRedemptionReset` per
//! planned guest, each with every guarantee of a reset. The migration itself never writes to
//! Graph.
//!
//! [`mapping`] parses the renamed local parts, [`plan`] is the pure planner (and the digest,
//! the reset each guest gets, its name), [`status`] the pure status rules and progress,
//! [`approval`] four eyes on the plan and the check a reset makes before it counts as approved
//! by its migration; [`reconcile`] is the pass against the API server, [`run`] the watch.

pub mod approval;
pub mod mapping;
pub mod plan;
pub mod reconcile;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use tracing::warn;

use crate::controller::context::Context;
use crate::resource::migration::MIGRATION_LABEL;
use crate::resource::{GuestDomainMigration, GuestRedemptionReset};
use reconcile::MigrationError;

/// Runs the migration controller until `shutdown` completes. A missing CRD (a cluster upgraded
/// without applying it) only delays the watch, which retries with backoff.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (migrations, resets): (Api<GuestDomainMigration>, Api<GuestRedemptionReset>) =
        match &namespace {
            Some(ns) => (
                Api::namespaced(ctx.client.clone(), ns),
                Api::namespaced(ctx.client.clone(), ns),
            ),
            None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
        };
    // Many resets change at once during a migration: the queue holds at most one pass per
    // migration, so the changes that arrive during a pass make one more pass, not one each.
    // (No debounce: resets that change more often than it lasts would postpone the count
    // until the last one settled.)
    let config = kube::runtime::controller::Config::default().concurrency(4);
    Controller::new(migrations, watcher::Config::default().any_semantic())
        .owns(
            resets,
            watcher::Config::default()
                .labels(MIGRATION_LABEL)
                .any_semantic(),
        )
        .with_config(config)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "migration pass ended with an error");
            }
        })
        .await;
}

fn error_policy(
    _obj: Arc<GuestDomainMigration>,
    err: &MigrationError,
    _ctx: Arc<Context>,
) -> Action {
    warn!(step = err.step(), error = %err, "migration pass failed; retrying");
    Action::requeue(crate::backoff::spread(
        Duration::from_secs(5),
        rand::random::<f64>(),
    ))
}

/// The controller's own user name, as the API server authenticates it (a SelfSubjectReview):
/// the requester of record of every reset a migration creates, which is how a reset shows it
/// was made by the controller (docs/security.md, "Approval of a migration"). `None` when the
/// API server does not say; migrations then create resets without a requester annotation, and
/// none of them counts as approved by its migration.
pub async fn own_identity(client: &kube::Client) -> Option<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(
            &kube::api::PostParams::default(),
            &SelfSubjectReview::default(),
        )
        .await;
    match review {
        Ok(review) => review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .filter(|name| !name.is_empty()),
        Err(err) => {
            warn!(error = %err, "cannot learn the controller's own user name (SelfSubjectReview); resets created by migrations carry no requester");
            None
        }
    }
}
