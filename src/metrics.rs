//! Prometheus metrics, served on `/metrics` by [`crate::admin`].

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::graph::{GraphCall, GraphObserver};
use crate::resource::RedemptionState;
use crate::resource::reason::Reason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error` (an error of the effects layer, not a Graph failure).
    pub result: &'static str,
    /// The step whose effect failed (`MarkSending`, `WriteReport`, ...); empty when ok.
    pub step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GraphLabels {
    pub call: &'static str,
    /// The HTTP status, or `none` when no answer came.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabel {
    pub call: &'static str,
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabel, Counter>,
    pub reconcile_duration: Histogram,
    pub outcomes: Family<ReasonLabel, Counter>,
    pub graph_requests: Family<GraphLabels, Counter>,
    pub graph_duration: Family<CallLabel, Histogram>,
    pub limiter_wait: Histogram,
    pub tenant_paused: Gauge,
    pub tenant_record: TenantRecordMetrics,
    pub leader: Gauge,
    pub redemptions_pending: Gauge,
    pub redemption_oldest_pending: AgeGauge,
    pub redemption_outcomes: Family<StateLabel, Counter>,
    pub redemption_checks: Family<ResultOnlyLabel, Counter>,
    /// One series per condition of each live reset, read from the watch cache at each scrape.
    pub resources: ResourceStates,
    /// Plans made for domain migrations.
    pub migration_plans: Counter,
    /// Resets created by domain migrations.
    pub migration_resets_created: Counter,
}

/// One condition of one live reset (`Ready`, `Redeemed`, `Approved`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceCondition {
    pub namespace: String,
    pub name: String,
    pub condition: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
}

/// A condition and its `lastTransitionTime` in Unix seconds.
pub type ResourceRow = (ResourceCondition, i64);
type RowSource = Box<dyn Fn() -> Vec<ResourceRow> + Send + Sync>;

/// The per-resource series: computed at each scrape from the rows the controller's watch cache
/// gives (so a deleted reset's series disappear with it, and nothing is kept between scrapes).
/// Empty until the controller installs its source, and on a replica that does not lead.
#[derive(Clone, Default)]
pub struct ResourceStates(Arc<OnceLock<RowSource>>);

impl ResourceStates {
    /// Installs where the rows come from (the first call wins).
    pub fn follow(&self, source: impl Fn() -> Vec<ResourceRow> + Send + Sync + 'static) {
        let _ = self.0.set(Box::new(source));
    }
}

impl std::fmt::Debug for ResourceStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceStates")
            .field("following", &self.0.get().is_some())
            .finish()
    }
}

impl Collector for ResourceStates {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.0.get().map(|source| source()).unwrap_or_default();
        let mut present = encoder.encode_descriptor(
            "resource_condition",
            "1 for each condition of each live GuestRedemptionReset, labelled with its status and reason",
            None,
            MetricType::Gauge,
        )?;
        for (labels, _) in &rows {
            present.encode_family(labels)?.encode_gauge(&1i64)?;
        }
        let mut since = encoder.encode_descriptor(
            "resource_condition_transition_timestamp_seconds",
            "When each condition of each live GuestRedemptionReset last changed status (Unix seconds)",
            None,
            MetricType::Gauge,
        )?;
        for (labels, at) in &rows {
            since.encode_family(labels)?.encode_gauge(at)?;
        }
        Ok(())
    }
}

/// How the check before each Graph write learns of the persisted tenant pause.
#[derive(Clone, Debug, Default)]
pub struct TenantRecordMetrics {
    /// 1 while the watch follows the record (the check reads memory).
    pub followed: Gauge,
    /// Reads of the record from the API server, made while the watch was not following it.
    pub reads: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultOnlyLabel {
    /// `read` (a Graph read was made) or `deferred` (the read budget moved the check).
    pub result: &'static str,
}

fn latency_histogram() -> Histogram {
    // 5 ms to about 40 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("guestreset");
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reconciles",
            "Reconcile passes by result",
            reconciles.clone(),
        );
        let reconcile_duration = latency_histogram();
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconcile pass, Graph calls and status writes included",
            reconcile_duration.clone(),
        );
        let outcomes = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "outcomes",
            "Reports written to status, by the Ready condition's reason",
            outcomes.clone(),
        );
        let graph_requests = Family::<GraphLabels, Counter>::default();
        registry.register(
            "graph_requests",
            "Graph HTTP requests by call and status",
            graph_requests.clone(),
        );
        let graph_duration = Family::<CallLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "graph_request_duration_seconds",
            "Latency of Graph HTTP requests by call",
            graph_duration.clone(),
        );
        let limiter_wait = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "write_limiter_wait_seconds",
            "Time Graph writes waited for the controller-wide write limiter",
            limiter_wait.clone(),
        );
        let tenant_paused = Gauge::default();
        registry.register(
            "tenant_paused",
            "1 while invitations are paused after Graph's abuse-protection answer",
            tenant_paused.clone(),
        );
        let tenant_record = TenantRecordMetrics::default();
        registry.register(
            "tenant_record_followed",
            "1 while a watch follows the persisted tenant-pause record, so the check before each Graph write reads no object",
            tenant_record.followed.clone(),
        );
        registry.register(
            "tenant_record_reads",
            "Reads of the persisted tenant-pause record from the API server before a Graph write, made while the watch was not following it",
            tenant_record.reads.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process holds the leader lease (or runs without leader election)",
            leader.clone(),
        );
        let follow = register_follow_through(&mut registry);
        // Every reason's counter exists from the start at 0: a series that appears with its
        // first increment already at 1 shows no increase() to an alert rule.
        for reason in Reason::ALL {
            let _zero = outcomes.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        for state in [RedemptionState::Accepted, RedemptionState::NotRedeemed] {
            let _zero = follow.outcomes.get_or_create(&StateLabel {
                state: state.as_str(),
            });
        }
        for result in ["read", "deferred"] {
            let _zero = follow.checks.get_or_create(&ResultOnlyLabel { result });
        }
        let resources = ResourceStates::default();
        registry.register_collector(Box::new(resources.clone()));
        let migration_plans = Counter::default();
        registry.register(
            "migration_plans",
            "Plans made for GuestDomainMigrations (one per generation)",
            migration_plans.clone(),
        );
        let migration_resets_created = Counter::default();
        registry.register(
            "migration_resets_created",
            "GuestRedemptionResets created by GuestDomainMigrations",
            migration_resets_created.clone(),
        );
        Metrics {
            resources,
            migration_plans,
            migration_resets_created,
            registry,
            redemptions_pending: follow.pending,
            redemption_oldest_pending: follow.oldest,
            redemption_outcomes: follow.outcomes,
            redemption_checks: follow.checks,
            reconciles,
            reconcile_duration,
            outcomes,
            graph_requests,
            graph_duration,
            limiter_wait,
            tenant_paused,
            tenant_record,
            leader,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn record_outcome(&self, reason: Reason) {
        self.outcomes
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// A follow-through changed state; the final ones are counted.
    pub fn record_redemption(&self, state: RedemptionState) {
        if state.is_final() {
            self.redemption_outcomes
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .inc();
        }
    }

    pub fn record_redemption_check(&self, result: &'static str) {
        self.redemption_checks
            .get_or_create(&ResultOnlyLabel { result })
            .inc();
    }

    /// The pending follow-throughs, as counted over the watch cache.
    pub fn set_pending_redemptions(&self, count: i64, oldest: Duration) {
        self.redemptions_pending.set(count);
        self.redemption_oldest_pending.set(oldest.as_secs_f64());
    }

    /// A finished reconcile: `failed_step` names the step whose effect failed, if one did.
    pub fn record_reconcile(&self, failed_step: Option<&'static str>, took: Duration) {
        let label = match failed_step {
            None => ResultLabel {
                result: "ok",
                step: "",
            },
            Some(step) => ResultLabel {
                result: "error",
                step,
            },
        };
        self.reconciles.get_or_create(&label).inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }
}

/// The age of the oldest pending redemption, in seconds.
type AgeGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

struct FollowThrough {
    pending: Gauge,
    oldest: AgeGauge,
    outcomes: Family<StateLabel, Counter>,
    checks: Family<ResultOnlyLabel, Counter>,
}

/// The follow-through's metrics: pending redemptions, the oldest one's age, how they ended,
/// and the checks the read budget let through or deferred.
fn register_follow_through(registry: &mut Registry) -> FollowThrough {
    let redemptions_pending = Gauge::default();
    registry.register(
        "redemptions_pending",
        "Issued resets whose guest has not redeemed the new invitation yet (Redeemed=Unknown)",
        redemptions_pending.clone(),
    );
    let redemption_oldest_pending = AgeGauge::default();
    registry.register_with_unit(
        "redemption_oldest_pending_age",
        "Age of the oldest pending redemption, counted from its issuance",
        prometheus_client::registry::Unit::Seconds,
        redemption_oldest_pending.clone(),
    );
    let redemption_outcomes = Family::<StateLabel, Counter>::default();
    registry.register(
        "redemption_outcomes",
        "Follow-throughs that ended, by state: Accepted (redeemed) or NotRedeemed",
        redemption_outcomes.clone(),
    );
    let redemption_checks = Family::<ResultOnlyLabel, Counter>::default();
    registry.register(
        "redemption_checks",
        "Follow-through checks: read (one Graph read) or deferred by the read budget",
        redemption_checks.clone(),
    );
    FollowThrough {
        pending: redemptions_pending,
        oldest: redemption_oldest_pending,
        outcomes: redemption_outcomes,
        checks: redemption_checks,
    }
}

impl GraphObserver for Metrics {
    fn request(&self, call: GraphCall, status: Option<u16>, took: Duration) {
        let status = status.map_or_else(|| "none".to_owned(), |s| s.to_string());
        self.graph_requests
            .get_or_create(&GraphLabels {
                call: call.as_str(),
                status,
            })
            .inc();
        self.graph_duration
            .get_or_create(&CallLabel {
                call: call.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    fn limiter_wait(&self, waited: Duration) {
        self.limiter_wait.observe(waited.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric_with_its_labels() {
        let metrics = Metrics::new();
        metrics.record_outcome(Reason::Issued);
        metrics.record_reconcile(None, Duration::from_millis(20));
        metrics.record_reconcile(Some("MarkSending"), Duration::from_millis(20));
        metrics.request(
            GraphCall::PostInvitation,
            Some(201),
            Duration::from_millis(30),
        );
        metrics.request(GraphCall::GetUser, None, Duration::from_millis(30));
        metrics.limiter_wait(Duration::from_secs(2));
        metrics.tenant_paused.set(1);
        metrics.tenant_record.followed.set(1);
        metrics.tenant_record.reads.inc();
        metrics.record_redemption(RedemptionState::PendingAcceptance);
        metrics.record_redemption(RedemptionState::Accepted);
        metrics.record_redemption(RedemptionState::NotRedeemed);
        metrics.record_redemption_check("deferred");
        metrics.set_pending_redemptions(3, Duration::from_secs(7200));
        metrics.resources.follow(|| {
            vec![(
                ResourceCondition {
                    namespace: "identity".into(),
                    name: "alice".into(),
                    condition: "Ready",
                    status: "False".into(),
                    reason: "NotAGuest".into(),
                },
                1_800_000_000,
            )]
        });
        let text = metrics.encode();
        for needle in [
            r#"guestreset_outcomes_total{reason="Issued"} 1"#,
            r#"guestreset_outcomes_total{reason="OutcomeUnknown"} 0"#,
            r#"guestreset_reconciles_total{result="ok",step=""} 1"#,
            r#"guestreset_reconciles_total{result="error",step="MarkSending"} 1"#,
            r#"guestreset_graph_requests_total{call="POST /invitations",status="201"} 1"#,
            r#"guestreset_graph_requests_total{call="GET /users/{id}",status="none"} 1"#,
            "guestreset_graph_request_duration_seconds_bucket",
            "guestreset_write_limiter_wait_seconds_sum 2.0",
            "guestreset_tenant_paused 1",
            "guestreset_tenant_record_followed 1",
            "guestreset_tenant_record_reads_total 1",
            "guestreset_reconcile_duration_seconds_count 2",
            r#"guestreset_redemption_outcomes_total{state="Accepted"} 1"#,
            r#"guestreset_redemption_outcomes_total{state="NotRedeemed"} 1"#,
            r#"guestreset_redemption_checks_total{result="deferred"} 1"#,
            "guestreset_redemptions_pending 3",
            "guestreset_redemption_oldest_pending_age_seconds 7200.0",
            r#"guestreset_resource_condition{namespace="identity",name="alice",condition="Ready",status="False",reason="NotAGuest"} 1"#,
            r#"guestreset_resource_condition_transition_timestamp_seconds{namespace="identity",name="alice",condition="Ready",status="False",reason="NotAGuest"} 1800000000"#,
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert!(
            !text.contains(r#"state="PendingAcceptance""#),
            "only ended follow-throughs are counted"
        );
    }
}
