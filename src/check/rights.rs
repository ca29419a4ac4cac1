//! The API-server rights the chart grants the controller (charts/guestreset/templates/rbac.yaml),
//! as `guestreset check` asks for them one SelfSubjectAccessReview each.

/// One verb on one resource, where the controller uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Right {
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    pub verb: &'static str,
    /// `None`: all namespaces (the chart's ClusterRole without watchNamespace).
    pub namespace: Option<String>,
    /// Rights the chart limits to one object name.
    pub name: Option<String>,
}

impl Right {
    /// `guestredemptionresets/status` or `leases`, as a check's name.
    pub fn resource_path(&self) -> String {
        match self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.to_owned(),
        }
    }
}

/// Where the controller works: the watched namespace, its own, the Lease.
pub struct Scope<'a> {
    pub watch_namespace: Option<&'a str>,
    pub own_namespace: &'a str,
    pub lease_name: &'a str,
    pub leader_elect: bool,
}

/// Every right the controller uses, grouped by resource in the order of the chart's rules.
pub fn required(scope: &Scope<'_>) -> Vec<Right> {
    let watched = scope.watch_namespace.map(str::to_owned);
    let own = Some(scope.own_namespace.to_owned());
    let right =
        |group, resource, subresource, verb, namespace: &Option<String>, name: Option<String>| {
            Right {
                group,
                resource,
                subresource,
                verb,
                namespace: namespace.clone(),
                name,
            }
        };
    let mut rights = Vec::new();
    for verb in ["get", "list", "watch"] {
        rights.push(right(
            "guestreset.io",
            "guestredemptionresets",
            None,
            verb,
            &watched,
            None,
        ));
    }
    rights.push(right(
        "guestreset.io",
        "guestredemptionresets",
        Some("status"),
        "patch",
        &watched,
        None,
    ));
    for verb in ["create", "patch"] {
        rights.push(right("events.k8s.io", "events", None, verb, &watched, None));
    }
    for verb in ["create", "patch"] {
        rights.push(right("", "secrets", None, verb, &watched, None));
    }
    let record = Some(format!("{}-tenant", scope.lease_name));
    rights.push(right("", "configmaps", None, "create", &own, None));
    for verb in ["get", "list", "watch", "update", "delete"] {
        rights.push(right("", "configmaps", None, verb, &own, record.clone()));
    }
    if scope.leader_elect {
        let lease = Some(scope.lease_name.to_owned());
        rights.push(right(
            "coordination.k8s.io",
            "leases",
            None,
            "create",
            &own,
            None,
        ));
        for verb in ["get", "patch"] {
            rights.push(right(
                "coordination.k8s.io",
                "leases",
                None,
                verb,
                &own,
                lease.clone(),
            ));
        }
    }
    rights
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(leader_elect: bool) -> Scope<'static> {
        Scope {
            watch_namespace: Some("identity"),
            own_namespace: "guestreset",
            lease_name: "guestreset",
            leader_elect,
        }
    }

    #[test]
    fn the_lease_is_checked_only_with_leader_election() {
        let with = required(&scope(true));
        let without = required(&scope(false));
        assert!(with.iter().any(|r| r.resource == "leases"
            && r.verb == "patch"
            && r.name.as_deref() == Some("guestreset")));
        assert!(without.iter().all(|r| r.resource != "leases"));
    }

    #[test]
    fn resources_in_the_watched_namespace_state_in_the_own() {
        let rights = required(&scope(false));
        let ns_of = |resource: &str| {
            rights
                .iter()
                .filter(|r| r.resource == resource)
                .map(|r| r.namespace.as_deref())
                .collect::<Vec<_>>()
        };
        assert!(
            ns_of("guestredemptionresets")
                .iter()
                .all(|ns| *ns == Some("identity"))
        );
        assert!(ns_of("secrets").iter().all(|ns| *ns == Some("identity")));
        assert!(
            ns_of("configmaps")
                .iter()
                .all(|ns| *ns == Some("guestreset"))
        );
        let record = rights
            .iter()
            .find(|r| r.resource == "configmaps" && r.verb == "get")
            .unwrap();
        assert_eq!(record.name.as_deref(), Some("guestreset-tenant"));
        let status = rights
            .iter()
            .find(|r| r.subresource == Some("status"))
            .unwrap();
        assert_eq!(
            (status.verb, status.resource_path().as_str()),
            ("patch", "guestredemptionresets/status")
        );
    }

    #[test]
    fn all_namespaces_without_a_watched_one() {
        let rights = required(&Scope {
            watch_namespace: None,
            ..scope(false)
        });
        let crs = rights
            .iter()
            .find(|r| r.resource == "guestredemptionresets")
            .unwrap();
        assert_eq!(crs.namespace, None);
    }
}
