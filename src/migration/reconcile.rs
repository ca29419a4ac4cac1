//! One pass over a migration, against the API server and Graph (reads only): check the input,
//! plan once per generation, stop for a dry run or a decision, then create the missing
//! resets and count where they stand. The rules are the pure functions of [`super::plan`],
//! [`super::status`] and [`super::approval`]; this is the thin layer of effects around them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{Instrument, info, warn};

use super::approval::{Verdict, verdict};
use super::mapping;
use super::plan::{self, PlannedGuest};
use super::status::{self as mstatus, MigrationReason, ResetState};
use crate::controller::context::Context;
use crate::resource::MANAGER;
use crate::resource::migration::{
    DEFAULT_MAPPING_KEY, DIGEST_KEY, EXCLUDED_KEY, MIGRATION_LABEL, PLAN_KEY,
};
use crate::resource::{
    GuestDomainMigration, GuestDomainMigrationStatus, GuestRedemptionReset, MigrationPlan,
    REQUESTED_BY_ANNOTATION,
};

/// A pass's failure: the step and the API server's or Graph's error.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("the migration has no namespace or name")]
    Unaddressable,
    #[error("{step}: {source}")]
    Kube {
        step: &'static str,
        #[source]
        source: kube::Error,
    },
}

impl MigrationError {
    pub fn step(&self) -> &'static str {
        match self {
            MigrationError::Unaddressable => "address",
            MigrationError::Kube { step, .. } => step,
        }
    }
}

fn kube_err(step: &'static str) -> impl FnOnce(kube::Error) -> MigrationError {
    move |source| MigrationError::Kube { step, source }
}

/// While resets are at work, the migration counts them again at least this often (their
/// changes also wake it, through the watch of owned resets).
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// A failed directory read, a missing mapping: tried again after about this long.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Resets created at once.
const CREATE_CONCURRENCY: usize = 8;

/// The name of the ConfigMap holding a migration's plan.
pub fn plan_config_map(migration: &str) -> String {
    format!("{migration}-plan")
}

fn owner_reference(obj: &GuestDomainMigration) -> Option<OwnerReference> {
    let mut owner = obj.controller_owner_ref(&())?;
    // Deleting the migration must not wait on its resets (nor need the right to block it).
    owner.block_owner_deletion = None;
    Some(owner)
}

/// What a pass works with.
struct Pass<'a> {
    ctx: &'a Context,
    obj: &'a GuestDomainMigration,
    ns: String,
    name: String,
    generation: i64,
    status: GuestDomainMigrationStatus,
    api: Api<GuestDomainMigration>,
}

/// Reconciles one migration.
pub async fn reconcile(
    obj: Arc<GuestDomainMigration>,
    ctx: Arc<Context>,
) -> Result<Action, MigrationError> {
    let ns = obj.namespace().ok_or(MigrationError::Unaddressable)?;
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(MigrationError::Unaddressable)?;
    // Deleting a migration creates no more resets and touches nothing in the directory.
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let span = tracing::info_span!(
        "migration",
        resource = %format!("{ns}/{name}"),
        generation = obj.meta().generation.unwrap_or(0),
        change_ref = obj.spec.change_ref.as_deref().unwrap_or(""),
    );
    let mut pass = Pass {
        ctx: &ctx,
        obj: &obj,
        api: Api::namespaced(ctx.client.clone(), &ns),
        generation: obj.meta().generation.unwrap_or(0),
        status: obj.status.clone().unwrap_or_default(),
        ns,
        name,
    };
    pass.run().instrument(span).await
}

impl Pass<'_> {
    fn requested_by(&self) -> Option<&str> {
        self.obj
            .annotations()
            .get(REQUESTED_BY_ANNOTATION)
            .map(String::as_str)
    }

    fn approval_required(&self) -> bool {
        self.ctx.settings.require_approval
    }

    async fn run(&mut self) -> Result<Action, MigrationError> {
        let spec = &self.obj.spec;
        let allowed = &self.ctx.settings.allowed_email_domains;
        if !allowed.is_empty() && !allowed.contains(&spec.to) {
            let message = format!(
                "spec.to {} is outside --allowed-email-domains ({}); nothing is planned or created",
                spec.to,
                allowed.join(", ")
            );
            self.report(MigrationReason::DomainNotAllowed, &message)
                .await?;
            return Ok(Action::await_change());
        }
        let current_plan = self
            .status
            .plan
            .as_ref()
            .filter(|p| p.generation == self.generation)
            .cloned();
        let plan = match current_plan {
            Some(plan) => plan,
            None => match self.make_plan().await? {
                Some(plan) => plan,
                None => return Ok(Action::requeue(RETRY_AFTER)),
            },
        };
        if spec.dry_run {
            let message = format!(
                "dry run: {} guests planned, {} members and {} conflicts excluded (digest {}, listed in {}); nothing is created",
                plan.guests, plan.members, plan.conflicts, plan.digest, plan.listed_in
            );
            self.report(MigrationReason::DryRunComplete, &message)
                .await?;
            return Ok(Action::await_change());
        }
        if self.approval_required() && !self.approved(&plan).await? {
            return Ok(Action::await_change());
        }
        let Some(planned) = self.verified_plan(&plan).await? else {
            return Ok(Action::await_change());
        };
        self.issue(&plan, &planned).await
    }

    /// Reads the mapping, pages the directory, writes the plan ConfigMap and records the plan.
    /// `None` when the plan cannot be made now (the status says why).
    async fn make_plan(&mut self) -> Result<Option<MigrationPlan>, MigrationError> {
        let spec = &self.obj.spec;
        let renames = match self.read_mapping().await? {
            Ok(renames) => renames,
            Err((reason, message)) => {
                self.report(reason, &message).await?;
                return Ok(None);
            }
        };
        let started = std::time::Instant::now();
        let listed = async {
            let found = self.ctx.graph.list_domain_users(&spec.from).await?;
            let holders = self.ctx.graph.list_domain_users(&spec.to).await?;
            Ok::<_, crate::graph::GraphError>((found, holders))
        };
        let (found, holders) = match listed.await {
            Ok(listed) => listed,
            Err(err) => {
                warn!(error = %err, "could not read the directory for the plan");
                let message = format!("reading the directory failed; trying again: {err}");
                self.report(MigrationReason::Planning, &message).await?;
                return Ok(None);
            }
        };
        let made = plan::plan(&spec.from, &spec.to, &renames, &found.users, &holders.users);
        let digest = plan::digest(spec, &made.planned);
        let config_map = plan_config_map(&self.name);
        self.write_plan_config_map(&config_map, &made, &digest)
            .await?;
        let now = Timestamp::now();
        let recorded = MigrationPlan {
            generation: self.generation,
            guests: made.planned.len() as i64,
            members: made.members() as i64,
            conflicts: made.conflicts() as i64,
            digest: digest.clone(),
            listed_in: format!("ConfigMap/{config_map}"),
            pages: (found.pages + holders.pages) as i64,
            planned_at: Time(now),
        };
        info!(
            guests = recorded.guests,
            members = recorded.members,
            conflicts = recorded.conflicts,
            pages = recorded.pages,
            took_ms = started.elapsed().as_millis() as u64,
            digest = %digest,
            "migration planned"
        );
        self.ctx.metrics.migration_plans.inc();
        self.status.plan = Some(recorded.clone());
        self.status.progress = Some(mstatus::progress(made.planned.len(), &[]));
        self.status.expected_completion = None;
        self.status.requested_by = self.requested_by().map(str::to_owned);
        if self.approval_required() {
            self.status.admitted_under = match &self.ctx.approval_policy {
                Some(policy) => crate::admission_policy::enforced(&self.ctx.client, policy)
                    .await
                    .map_err(kube_err("read the approval policy"))?
                    .ok(),
                None => None,
            };
        }
        let message = format!(
            "planned {} guests from {} to {} ({} members and {} conflicts excluded; digest {}, listed in ConfigMap/{config_map})",
            recorded.guests,
            self.obj.spec.from,
            self.obj.spec.to,
            recorded.members,
            recorded.conflicts,
            recorded.digest
        );
        let reason = if self.obj.spec.dry_run {
            MigrationReason::DryRunComplete
        } else if self.approval_required() {
            MigrationReason::AwaitingApproval
        } else {
            MigrationReason::InProgress
        };
        self.report(reason, &message).await?;
        self.event("Planned", false, &message).await;
        Ok(Some(recorded))
    }

    /// The renames of `spec.mapping`, or the reason and message that stop the migration.
    async fn read_mapping(
        &self,
    ) -> Result<Result<mapping::Renames, (MigrationReason, String)>, MigrationError> {
        let Some(spec) = &self.obj.spec.mapping else {
            return Ok(Ok(mapping::Renames::new()));
        };
        let name = &spec.config_map_ref.name;
        let key = spec.key.as_deref().unwrap_or(DEFAULT_MAPPING_KEY);
        let maps: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let found = maps
            .get_opt(name)
            .await
            .map_err(kube_err("read the mapping ConfigMap"))?;
        let Some(text) = found.and_then(|cm| cm.data).and_then(|mut d| d.remove(key)) else {
            return Ok(Err((
                MigrationReason::MappingNotFound,
                format!(
                    "spec.mapping: ConfigMap {name} with key {key} was not found in namespace {}; nothing is planned",
                    self.ns
                ),
            )));
        };
        Ok(mapping::parse(&text).map_err(|err| {
            (
                MigrationReason::InvalidMapping,
                format!("spec.mapping: ConfigMap {name} key {key}, {err}; nothing is planned"),
            )
        }))
    }

    async fn write_plan_config_map(
        &self,
        name: &str,
        made: &plan::Plan,
        digest: &str,
    ) -> Result<(), MigrationError> {
        let data = BTreeMap::from([
            (PLAN_KEY.to_owned(), plan::planned_text(&made.planned)),
            (EXCLUDED_KEY.to_owned(), plan::excluded_text(&made.excluded)),
            (DIGEST_KEY.to_owned(), digest.to_owned()),
        ]);
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(self.ns.clone()),
                labels: Some(BTreeMap::from([(
                    MIGRATION_LABEL.to_owned(),
                    self.name.clone(),
                )])),
                owner_references: owner_reference(self.obj).map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        };
        let maps: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        maps.patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&cm),
        )
        .await
        .map_err(kube_err("write the plan ConfigMap"))?;
        Ok(())
    }

    /// With `--require-approval`: whether the plan's approval can be acted on now. Reports the
    /// wait (or the denial) when not.
    async fn approved(&mut self, plan: &MigrationPlan) -> Result<bool, MigrationError> {
        let approval = self.status.approval.clone();
        let requested_by = self.requested_by().map(str::to_owned);
        let message = match verdict(
            approval.as_ref(),
            self.generation,
            requested_by.as_deref(),
            &plan.digest,
        ) {
            Verdict::Awaiting => format!(
                "the plan of generation {} (digest {}, {} guests, listed in {}) requested by {} awaits approval by another person; no reset is created before it",
                self.generation,
                plan.digest,
                plan.guests,
                plan.listed_in,
                requested_by.as_deref().unwrap_or("(not recorded)")
            ),
            Verdict::NotActedOn(a, problem) => format!(
                "the decision {} by {} on generation {} is not acted on: {problem}",
                a.decision, a.by, a.generation
            ),
            Verdict::Denied(a) => {
                let message = format!(
                    "{} denied the plan of generation {} at {}: {}; no reset is created. Change the spec to ask again",
                    a.by, self.generation, a.at.0, a.reason
                );
                self.report(MigrationReason::Denied, &message).await?;
                return Ok(false);
            }
            Verdict::Approved(a) => {
                let review = crate::controller::effects::approver::review_for(
                    "guestdomainmigrations",
                    Some(&self.ns),
                    &self.name,
                    a,
                );
                let allowed = crate::controller::effects::approver::may_approve_review(
                    self.ctx.client.clone(),
                    self.ctx.approval_policy.clone(),
                    review,
                    a,
                )
                .await
                .map_err(kube_err("check the approver"))?;
                match allowed {
                    Ok(()) => return Ok(true),
                    Err(problem) => format!(
                        "the decision {} by {} on generation {} is not acted on: {problem}",
                        a.decision, a.by, a.generation
                    ),
                }
            }
        };
        self.report(MigrationReason::AwaitingApproval, &message)
            .await?;
        Ok(false)
    }

    /// The planned guests from the plan ConfigMap, checked against the digest in status. A
    /// list that no longer hashes to it stops the migration: nothing more is created.
    async fn verified_plan(
        &mut self,
        plan: &MigrationPlan,
    ) -> Result<Option<Vec<PlannedGuest>>, MigrationError> {
        let maps: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let name = plan_config_map(&self.name);
        let text = maps
            .get_opt(&name)
            .await
            .map_err(kube_err("read the plan ConfigMap"))?
            .and_then(|cm| cm.data)
            .and_then(|mut d| d.remove(PLAN_KEY));
        let planned = text.as_deref().and_then(plan::parse_planned);
        match planned {
            Some(planned) if plan::digest(&self.obj.spec, &planned) == plan.digest => {
                Ok(Some(planned))
            }
            _ => {
                let message = format!(
                    "ConfigMap {name} no longer holds the plan with digest {}; no more resets are created. Change the spec to plan again",
                    plan.digest
                );
                self.report(MigrationReason::PlanChanged, &message).await?;
                Ok(None)
            }
        }
    }

    /// Creates the missing resets and records the progress.
    async fn issue(
        &mut self,
        plan: &MigrationPlan,
        planned: &[PlannedGuest],
    ) -> Result<Action, MigrationError> {
        let resets: Api<GuestRedemptionReset> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let uid = self.obj.uid().unwrap_or_default();
        // Only the resets of the plan count: a reset someone else labelled or gave an owner
        // reference to this migration is neither counted nor approved by it.
        let names: std::collections::HashSet<String> = planned
            .iter()
            .map(|g| plan::reset_name(&self.name, &g.id))
            .collect();
        let ns = self.ns.clone();
        let owned = |meta: &ObjectMeta| {
            meta.namespace.as_deref() == Some(ns.as_str())
                && meta.name.as_ref().is_some_and(|n| names.contains(n))
                && meta
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.uid == uid && o.controller == Some(true))
        };
        // Counted from the reset controller's watch cache: no list of the API server per pass
        // (a migration of thousands would otherwise read them all at every change of one).
        let cached = |ctx: &Context| {
            ctx.cached_resets(|r| owned(&r.metadata).then(|| mstatus::reset_state(r)))
        };
        let before = self.status.progress.clone().unwrap_or_default();
        let mut states = cached(self.ctx).unwrap_or_default();
        if states.len() < planned.len() {
            // Which exist, by the API server's word (the cache may lag behind): names and
            // owners only.
            let have: std::collections::HashSet<String> = resets
                .list_metadata(
                    &ListParams::default().labels(&format!("{MIGRATION_LABEL}={}", self.name)),
                )
                .await
                .map_err(kube_err("list the migration's resets"))?
                .items
                .into_iter()
                .filter(|r| owned(&r.metadata))
                .filter_map(|r| r.metadata.name)
                .collect();
            let missing: Vec<&PlannedGuest> = planned
                .iter()
                .filter(|g| !have.contains(&plan::reset_name(&self.name, &g.id)))
                .collect();
            if !missing.is_empty() && before.created < planned.len() as i64 {
                // The decision is on record as acted on before any reset exists: a reset's own
                // check of the migration's approval reads it.
                let (reason, message) =
                    mstatus::outcome(&mstatus::progress(planned.len(), &states));
                self.report(reason, &message).await?;
                if before.created == 0 {
                    let message = format!(
                        "creating {} resets from {} to {} (digest {})",
                        missing.len(),
                        self.obj.spec.from,
                        self.obj.spec.to,
                        plan.digest
                    );
                    self.event("Started", false, &message).await;
                }
                for chunk in missing.chunks(CREATE_CONCURRENCY) {
                    let created = futures::future::join_all(
                        chunk
                            .iter()
                            .map(|guest| self.create_reset(&resets, (*guest).clone())),
                    )
                    .await;
                    for result in created {
                        result?;
                    }
                }
                states = cached(self.ctx).unwrap_or_default();
                let shown = states.len();
                // Just created: at work, even before the cache shows them.
                states.extend(std::iter::repeat_n(
                    ResetState::Working,
                    planned.len().saturating_sub(shown),
                ));
            } else {
                // Every reset was created once: one deleted since is never created again (a
                // new object is a new request, which could invite its guest a second time);
                // it counts as failed. Those the cache does not show yet are at work.
                let shown = states.len();
                let deleted = missing.len();
                states.extend(std::iter::repeat_n(
                    ResetState::Working,
                    planned.len().saturating_sub(shown + deleted),
                ));
                states.extend(std::iter::repeat_n(ResetState::Failed, deleted));
            }
        }
        let progress = mstatus::progress(planned.len(), &states);
        let now = Timestamp::now();
        self.status.expected_completion =
            mstatus::expected_completion(&progress, self.ctx.graph.limiter().per_minute(), now)
                .map(Time);
        self.status.progress = Some(progress.clone());
        let (reason, message) = mstatus::outcome(&progress);
        let was = mstatus::ready_of(&self.status).map(|(r, _)| r.to_owned());
        self.report(reason, &message).await?;
        let settled = |p: &crate::resource::migration::Progress| p.issued + p.failed;
        if reason != MigrationReason::InProgress && was.as_deref() != Some(reason.as_str()) {
            self.event(reason.as_str(), reason.is_warning(), &message)
                .await;
        } else if let Some(tenth) =
            mstatus::tenth_crossed(progress.planned, settled(&before), settled(&progress))
        {
            self.event("Progress", false, &format!("{}0%: {message}", tenth))
                .await;
        }
        Ok(match reason {
            MigrationReason::InProgress => Action::requeue(PROGRESS_EVERY),
            // Redemptions keep coming after the last issue: counted on the resets' changes.
            _ => Action::await_change(),
        })
    }

    async fn create_reset(
        &self,
        resets: &Api<GuestRedemptionReset>,
        guest: PlannedGuest,
    ) -> Result<(), MigrationError> {
        let name = plan::reset_name(&self.name, &guest.id);
        let mut reset = GuestRedemptionReset::new(&name, plan::reset_spec(&self.obj.spec, &guest));
        reset.metadata.namespace = Some(self.ns.clone());
        reset.metadata.labels = Some(BTreeMap::from([(
            MIGRATION_LABEL.to_owned(),
            self.name.clone(),
        )]));
        reset.metadata.owner_references = owner_reference(self.obj).map(|o| vec![o]);
        if let Some(me) = &self.ctx.settings.own_identity {
            reset.metadata.annotations = Some(BTreeMap::from([(
                REQUESTED_BY_ANNOTATION.to_owned(),
                me.clone(),
            )]));
        }
        match resets.create(&PostParams::default(), &reset).await {
            Ok(_) => {
                self.ctx.metrics.migration_resets_created.inc();
                Ok(())
            }
            // Created by an earlier pass whose list did not show it yet: the same reset.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(err) => Err(MigrationError::Kube {
                step: "create a reset",
                source: err,
            }),
        }
    }

    /// Writes Ready (with Reconciling, Stalled, Approved) for `reason` and the rest of the
    /// status this pass holds; never `status.approval`, which is the approvers' record.
    async fn report(
        &mut self,
        reason: MigrationReason,
        message: &str,
    ) -> Result<(), MigrationError> {
        let before = self.status.clone();
        let approval_required = self.approval_required();
        mstatus::set_ready(
            &mut self.status,
            self.generation,
            Timestamp::now(),
            reason,
            message,
            approval_required,
        );
        if self.status.requested_by.is_none() {
            self.status.requested_by = self.requested_by().map(str::to_owned);
        }
        if before == self.status && before.observed_generation == Some(self.generation) {
            return Ok(());
        }
        let mut body = serde_json::to_value(&self.status).expect("a status serialises");
        if let Value::Object(map) = &mut body {
            map.remove("approval");
            for key in [
                "plan",
                "progress",
                "expectedCompletion",
                "requestedBy",
                "admittedUnder",
            ] {
                map.entry(key).or_insert(Value::Null);
            }
        }
        self.api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": body })),
            )
            .await
            .map_err(kube_err("write the migration's status"))?;
        Ok(())
    }

    async fn event(&self, reason: &str, warning: bool, message: &str) {
        let note = match &self.obj.spec.change_ref {
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
            note: Some(note.chars().take(1000).collect()),
            action: "Migrate".to_owned(),
            secondary: None,
        };
        if let Err(err) = self
            .ctx
            .recorder
            .publish(&event, &self.obj.object_ref(&()))
            .await
        {
            warn!(error = %err, "could not publish an event");
        }
    }
}
