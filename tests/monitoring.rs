//! End-to-end: the chart's alert rules and Grafana dashboard against what the controller really
//! exposes. The controller drives resets into known states against a real kube-apiserver and the
//! Graph simulator; its `/metrics`, scraped before and after, becomes promtool's input series, and
//! promtool (built from the Go module proxy) checks the rules and the dashboard's queries and
//! tests which alerts fire on the recorded run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{World, admin_addr, http_get};
use graph_sim::{Call, FaultAction, FaultRule, SeedUser};
use guestreset_testsupport::chart::{documents, helm};
use guestreset_testsupport::{describe, promtool};
use serde_json::{Value, json};

const ALICE: &str = "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41";
const BOB: &str = "5b7e2a10-4c3d-4e5f-8a9b-0c1d2e3f4a5b";
const CAROL: &str = "6c8f3b21-5d4e-4f60-9bac-1d2e3f4a5b6c";
const MEMBER: &str = "7d904c32-6e5f-4071-acbd-2e3f4a5b6c7d";
const VALUES: &str = r#"
azure:
  clientId: 1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d
  tenantId: 8f1c2d3e-4b5a-4c6d-9e8f-0a1b2c3d4e5f
metrics:
  prometheusRule:
    enabled: true
  dashboard:
    enabled: true
"#;

fn directory() -> Vec<SeedUser> {
    vec![
        SeedUser::guest(
            ALICE,
            "alice_contoso.com#EXT#@f.onmicrosoft.com",
            "alice@contoso.com",
        ),
        SeedUser::guest(
            BOB,
            "bob_partner.example#EXT#@f.onmicrosoft.com",
            "bob@partner.example",
        ),
        SeedUser::guest(
            CAROL,
            "carol_s.example#EXT#@f.onmicrosoft.com",
            "carol@s.example",
        ),
        SeedUser::member(MEMBER, "mallory@f.onmicrosoft.com", "mallory@f.example"),
    ]
}

fn by_id(id: &str, email: &str) -> Value {
    json!({"user": {"id": id}, "email": email})
}

/// The chart's PrometheusRule and dashboard, rendered with both enabled.
async fn rendered() -> (Value, Value) {
    let manifests = helm()
        .template("guestreset", "guestreset-system", VALUES, &[])
        .await
        .expect("helm template");
    let docs = documents(&manifests);
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule")
        .clone();
    let dashboard = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "guestreset-dashboard")
        .expect("the dashboard ConfigMap");
    let dashboard = serde_json::from_str(dashboard["data"]["guestreset.json"].as_str().unwrap())
        .expect("the dashboard is JSON");
    (rule, dashboard)
}

/// The dashboard's queries, as recording rules so that promtool parses each one.
fn dashboard_rules(dashboard: &Value) -> Value {
    let rules: Vec<Value> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| {
            let id = panel["id"].as_i64().unwrap();
            panel["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| {
                    json!({
                        "record": format!("guestreset:dashboard:panel_{id}_{}", t["refId"].as_str().unwrap()),
                        "expr": t["expr"],
                    })
                })
        })
        .collect();
    assert!(rules.len() >= 10, "{rules:?}");
    json!({"groups": [{"name": "dashboard", "rules": rules}]})
}

async fn run_promtool(args: &[&str], dir: &Path) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(promtool())
            .args(args)
            .current_dir(dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("promtool answers within 120 s")
    .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The samples of a text exposition: series (name and labels, as written) to value.
fn samples(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The metric names a PromQL text uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("guestreset_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// A metric as its `# TYPE` line names it: counters and histograms without their suffixes.
fn family(name: &str) -> &str {
    ["_total", "_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// An alert's annotations as Prometheus renders them for `labels`.
fn annotations(rule: &Value, labels: &BTreeMap<&str, &str>) -> Value {
    let mut out = serde_json::Map::new();
    for (key, text) in rule["annotations"].as_object().unwrap() {
        let mut text = text.as_str().unwrap().to_owned();
        for (label, value) in labels {
            text = text.replace(&format!("{{{{ $labels.{label} }}}}"), value);
        }
        out.insert(key.clone(), json!(text));
    }
    Value::Object(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_and_dashboard_hold_against_a_recorded_run() {
    let (rule, dashboard) = rendered().await;
    let dir = tempfile::tempdir().unwrap();
    let groups = &rule["spec"];
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(groups).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("dashboard.yaml"),
        serde_yaml::to_string(&dashboard_rules(&dashboard)).unwrap(),
    )
    .unwrap();
    run_promtool(
        &["check", "rules", "rules.yaml", "dashboard.yaml"],
        dir.path(),
    )
    .await;

    // A run with one reset issued, one refused (a member), one Forbidden and one held by a
    // tenant pause, scraped once before and once after.
    let mut w = World::with_users("monitoring", directory()).await;
    w.start_operator(&["--tenant-block-cooldown", "1h"]);
    let metrics_url = format!("http://{}/metrics", admin_addr(&w.operators[0]).await);
    let (_, before) = http_get(&metrics_url).await.expect("/metrics");
    w.create("issued", by_id(ALICE, "alice@newco.example"))
        .await;
    w.wait_reason("issued", "Issued").await;
    w.create("member", by_id(MEMBER, "mallory@newco.example"))
        .await;
    w.wait_reason("member", "NotAGuest").await;
    w.admin
        .add_fault(FaultRule::always(
            Call::PostInvitation,
            FaultAction::Forbidden,
        ))
        .await
        .unwrap();
    w.create("forbidden", by_id(BOB, "bob@newco.example")).await;
    w.wait_reason("forbidden", "Forbidden").await;
    w.admin.clear_faults().await.unwrap();
    w.admin
        .add_fault(FaultRule::always(
            Call::PostInvitation,
            FaultAction::AbuseBlock,
        ))
        .await
        .unwrap();
    w.create("blocked", by_id(CAROL, "carol@newco.example"))
        .await;
    w.wait_reason("blocked", "TenantBlocked").await;
    // The per-resource series are read from the watch cache at each scrape.
    let after = guestreset_testsupport::wait_until("a series per reset", Duration::from_secs(30), || async {
        let (_, text) = http_get(&metrics_url).await?;
        text.contains(&format!(
            r#"guestreset_resource_condition{{namespace="{}",name="blocked",condition="Ready",status="False",reason="TenantBlocked"}} 1"#,
            w.ns
        ))
        .then_some(text)
    })
    .await;

    // Every metric a rule or a panel reads is one the controller exposes.
    let exprs: Vec<String> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .chain(
            dashboard_rules(&dashboard)["groups"][0]["rules"]
                .as_array()
                .unwrap(),
        )
        .map(|r| r["expr"].as_str().unwrap().to_owned())
        .collect();
    for name in exprs.iter().flat_map(|e| metric_names(e)) {
        assert!(
            after.contains(&format!("# TYPE {} ", family(&name))),
            "{name} is read by a rule or panel but not exposed:\n{after}"
        );
    }

    // The recorded run as promtool's input: the first scrape for 5 minutes, then the second.
    let (before, after) = (samples(&before), samples(&after));
    let input: Vec<Value> = after
        .iter()
        .map(|(series, value)| {
            let first = before.get(series).map_or("_", String::as_str);
            json!({"series": series, "values": format!("{first}x5 {value}x25")})
        })
        .collect();
    let alert = |name: &str| {
        rule["spec"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["alert"] == name)
            .unwrap_or_else(|| panic!("no alert {name}"))
            .clone()
    };
    let fired = |name: &str, labels: BTreeMap<&str, &str>| {
        let rule = alert(name);
        let mut exp = json!(labels);
        exp["severity"] = rule["labels"]["severity"].clone();
        json!({"exp_labels": exp, "exp_annotations": annotations(&rule, &labels)})
    };
    let ns = w.ns.as_str();
    let stopped = |name, reason| {
        fired(
            "GuestresetResetStopped",
            BTreeMap::from([("namespace", ns), ("name", name), ("reason", reason)]),
        )
    };
    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": input,
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "GuestresetResetStopped",
                 "exp_alerts": [stopped("forbidden", "Forbidden"), stopped("member", "NotAGuest")]},
                {"eval_time": "10m", "alertname": "GuestresetTenantBlocked",
                 "exp_alerts": [fired("GuestresetTenantBlocked", BTreeMap::new())]},
                {"eval_time": "10m", "alertname": "GuestresetPermissionMissing",
                 "exp_alerts": [fired("GuestresetPermissionMissing", BTreeMap::new())]},
                {"eval_time": "10m", "alertname": "GuestresetNoLeader", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "GuestresetAbsent", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "GuestresetOutcomeUnknown", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "GuestresetResetStuck", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "GuestresetEffectsFailing", "exp_alerts": []},
                {"eval_time": "4m", "alertname": "GuestresetPermissionMissing", "exp_alerts": []},
            ],
        }],
    });
    std::fs::write(
        dir.path().join("tests.yaml"),
        serde_yaml::to_string(&tests).unwrap(),
    )
    .unwrap();
    run_promtool(&["test", "rules", "tests.yaml"], dir.path()).await;
}

/// The rules' own unit tests, over synthetic series for what a short run cannot show: the
/// absent controller, a leaderless pair, a failing Graph, a reset stuck for hours.
#[tokio::test]
async fn the_rules_unit_tests_pass() {
    let (rule, _) = rendered().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&rule["spec"]).unwrap(),
    )
    .unwrap();
    let fixture =
        guestreset_testsupport::repo_root().join("tests/fixtures/promtool/alerts-test.yaml");
    std::fs::copy(&fixture, dir.path().join("tests.yaml")).unwrap();
    run_promtool(&["test", "rules", "tests.yaml"], dir.path()).await;
}
