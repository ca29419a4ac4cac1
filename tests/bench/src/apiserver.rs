//! What the operator and the floor cost the API server, by request: `apiserver_request_total`
//! from the kube-apiserver's own `/metrics`, by verb and resource, before and after a burst.
//! The CPU rows say how much; this says on what (docs/performance.md, "The cost round").

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use guestreset_testsupport::ControlPlane;

/// Requests served so far, by `VERB resource[/subresource]`.
pub type Requests = BTreeMap<String, f64>;

/// The API server's request counters now.
pub async fn requests(cp: &ControlPlane) -> Result<Requests> {
    let mut kubectl = tokio::process::Command::from(cp.kubectl());
    let out = kubectl
        .args(["get", "--raw", "/metrics"])
        .output()
        .await
        .context("kubectl get --raw /metrics")?;
    if !out.status.success() {
        bail!(
            "kubectl get --raw /metrics: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
}

/// The `apiserver_request_total` samples of an exposition, summed by verb and resource.
pub fn parse(exposition: &str) -> Requests {
    let mut requests = Requests::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or("")
                .to_owned()
        };
        let (verb, resource, sub) = (label("verb"), label("resource"), label("subresource"));
        let key = match sub.as_str() {
            "" => format!("{verb} {resource}"),
            sub => format!("{verb} {resource}/{sub}"),
        };
        *requests.entry(key).or_default() += value;
    }
    requests
}

/// The requests served between two snapshots, most first, as one line.
pub fn served(before: &Requests, after: &Requests) -> String {
    let mut moved: Vec<(&String, f64)> = after
        .iter()
        .map(|(key, n)| (key, n - before.get(key).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n >= 1.0)
        .collect();
    moved.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let total: f64 = moved.iter().map(|(_, n)| n).sum();
    let parts: Vec<String> = moved
        .iter()
        .map(|(key, n)| format!("{key} {n:.0}"))
        .collect();
    format!("{total:.0} requests: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_summed_by_verb_and_resource() {
        let exposition = r#"# HELP apiserver_request_total Counter of apiserver requests
apiserver_request_total{code="200",component="apiserver",dry_run="",group="guestreset.io",resource="guestredemptionresets",scope="resource",subresource="status",verb="PUT",version="v1alpha1"} 2
apiserver_request_total{code="409",component="apiserver",dry_run="",group="guestreset.io",resource="guestredemptionresets",scope="resource",subresource="status",verb="PUT",version="v1alpha1"} 1
apiserver_request_total{code="404",component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="GET",version="v1"} 4
apiserver_request_total_other{verb="GET"} 9
"#;
        let before = parse(exposition);
        assert_eq!(before["PUT guestredemptionresets/status"], 3.0);
        assert_eq!(before["GET configmaps"], 4.0);
        assert_eq!(before.len(), 2);
        let mut after = before.clone();
        *after.get_mut("GET configmaps").unwrap() += 2000.0;
        *after.get_mut("PUT guestredemptionresets/status").unwrap() += 3000.0;
        assert_eq!(
            served(&before, &after),
            "5000 requests: PUT guestredemptionresets/status 3000, GET configmaps 2000"
        );
    }
}
