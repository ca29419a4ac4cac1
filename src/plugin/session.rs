//! The connection to the API server, chosen as kubectl chooses it: `--kubeconfig`, else the
//! files in `KUBECONFIG`, else `~/.kube/config`, else the in-cluster configuration; the
//! context of `--context`, else the current one; the namespace of `-n`, else the context's.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};

use super::cli::Connection;
use super::error::Error;
use crate::resource::GuestRedemptionReset;

/// A client and the namespace the command works in.
pub struct Session {
    pub client: kube::Client,
    pub namespace: String,
}

impl Session {
    pub async fn connect(connection: &Connection) -> Result<Session, Error> {
        let mut config = load_config(connection).await?;
        impersonate(&mut config.auth_info, connection);
        // A CLI waits for answers, not for watches: every request is bounded.
        config.read_timeout = connection.request_timeout();
        config.write_timeout = connection.request_timeout();
        let namespace = connection
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config)?;
        Ok(Session { client, namespace })
    }

    /// The resources of the session's namespace.
    pub fn api(&self) -> Api<GuestRedemptionReset> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The caller's user name as the API server authenticated it: what admission compares
    /// the requester annotation and the approver with.
    pub async fn user_name(&self) -> Result<String, Error> {
        Ok(self.caller().await?.name)
    }

    /// The caller as the API server authenticated them: the user name, and the groups an
    /// approval records so that the controller can ask the API server about the approver's
    /// right again with them.
    pub async fn caller(&self) -> Result<Caller, Error> {
        let review = Api::<SelfSubjectReview>::all(self.client.clone())
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .map_err(|e| Error::WhoAmI(format!("SelfSubjectReview: {e}")))?;
        let user = review.status.and_then(|s| s.user_info).unwrap_or_default();
        let name = user
            .username
            .filter(|name| !name.is_empty())
            .ok_or_else(|| {
                Error::WhoAmI("SelfSubjectReview answered without a user name".into())
            })?;
        Ok(Caller {
            name,
            groups: user.groups.unwrap_or_default(),
        })
    }
}

/// Who runs the plugin, as the API server sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub groups: Vec<String>,
}

impl Caller {
    /// A caller without groups (tests, and callers the API server names only).
    pub fn named(name: &str) -> Caller {
        Caller {
            name: name.to_owned(),
            groups: vec![],
        }
    }
}

/// kubectl's `--as` and `--as-group`: each replaces what the kubeconfig's user says, when
/// given. The API server authorises the impersonation itself, then treats every request
/// (the SelfSubjectReview that names the approver included) as the impersonated user's.
fn impersonate(auth: &mut AuthInfo, connection: &Connection) {
    if let Some(user) = &connection.impersonate {
        auth.impersonate = Some(user.clone());
    }
    if !connection.impersonate_groups.is_empty() {
        auth.impersonate_groups = Some(connection.impersonate_groups.clone());
    }
}

async fn load_config(connection: &Connection) -> Result<kube::Config, Error> {
    let options = KubeConfigOptions {
        context: connection.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&connection.kubeconfig, &connection.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(config_error)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options).await,
        (None, None) => return kube::Config::infer().await.map_err(config_error),
    };
    config.map_err(config_error)
}

fn config_error(err: impl std::error::Error) -> Error {
    Error::Config(super::error::with_causes(&err))
}
