//! The floor: the work of one issuance done with nothing else around it, by a minimal
//! controller. It learns of each new resource from a watch (as any controller must), and does
//! the same Graph calls (GET user, list of the email's holders, PATCH mail, POST invitation),
//! the same three status writes in the operator's order (intent before any Graph write, the
//! sending mark, the outcome), each guarded by the object's resourceVersion and shaped like the
//! operator's, and the same Event (Issued), at a fixed concurrency.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use graph_sim::Simulator;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ObjectMeta, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

use crate::status;
use crate::world::{self, Target};

/// `$select` of the controller's user reads.
const USER_SELECT: &str = "id,userType,userPrincipalName,mail,otherMails,externalUserState,externalUserStateChangeDateTime";

/// Everything but RFC 3986 unreserved characters, percent-encoded.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The controller's filter for users that already hold an email.
fn holders_filter(email: &str) -> String {
    format!(
        "userPrincipalName eq '{email}' or mail eq '{email}' or proxyAddresses/any(x:x eq 'SMTP:{email}') or otherMails/any(x:x eq '{email}')"
    )
}

/// Latencies of each kind of step.
#[derive(Default)]
pub struct StepTimes {
    by_step: BTreeMap<&'static str, Vec<Duration>>,
}

impl StepTimes {
    fn add(&mut self, step: &'static str, took: Duration) {
        self.by_step.entry(step).or_default().push(took);
    }

    /// `step: p50 x ms, p95 y ms (n)` for each step.
    pub fn describe(&self) -> Vec<(String, String)> {
        self.by_step
            .iter()
            .map(|(step, times)| {
                let mut sorted = times.clone();
                sorted.sort();
                let at = |q: f64| {
                    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
                    sorted[i].as_secs_f64() * 1000.0
                };
                (
                    (*step).to_owned(),
                    format!("p50 {:.1} ms, p95 {:.1} ms", at(0.5), at(0.95)),
                )
            })
            .collect()
    }
}

/// A minimal Graph client: one token, reqwest, a client-request-id per call.
struct Graph {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Graph {
    async fn connect(sim: &Simulator) -> Result<Graph> {
        let http = graph_sim::client_trusting(sim.ca_pem().as_bytes())?;
        let body = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
            encode(sim.client_id()),
            encode(sim.client_secret()),
            encode(&format!("{}/.default", sim.base_url()))
        );
        let answer: Value = http
            .post(sim.token_url())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let token = answer["access_token"]
            .as_str()
            .context("no access_token in the token answer")?
            .to_owned();
        Ok(Graph {
            http,
            base: format!("{}/v1.0", sim.base_url()),
            token,
        })
    }

    /// The answer and the ids of the call (its `request-id` and `client-request-id`).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(Value, status::CallIds)> {
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("client-request-id", &client_request_id);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let code = response.status();
        let request_id = response
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await?;
        if !code.is_success() {
            bail!("{method} {path}: {code}: {text}");
        }
        let answer = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        let ids = status::CallIds {
            request_id,
            client_request_id,
        };
        Ok((answer, ids))
    }
}

struct Driver {
    api: Api<DynamicObject>,
    events: Api<Event>,
    graph: Graph,
    targets: HashMap<String, Target>,
    times: Mutex<StepTimes>,
}

impl Driver {
    fn time(&self, step: &'static str, since: Instant) {
        self.times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(step, since.elapsed());
    }

    async fn write_status(&self, object: &mut DynamicObject, status: Value) -> Result<()> {
        let started = Instant::now();
        object.data["status"] = status;
        object.metadata.managed_fields = None;
        let name = object.metadata.name.clone().unwrap_or_default();
        // The object carries its resourceVersion: a stale write would be refused (409).
        *object = self
            .api
            .replace_status(&name, &PostParams::default(), object)
            .await
            .with_context(|| format!("status of {name}"))?;
        self.time("status write (guarded)", started);
        Ok(())
    }

    async fn event(&self, object: &DynamicObject, reason: &str, note: String) -> Result<()> {
        let started = Instant::now();
        let name = object.metadata.name.clone().unwrap_or_default();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{}", &suffix[..16])),
                namespace: object.metadata.namespace.clone(),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(Timestamp::now())),
            action: Some("Reconcile".into()),
            reason: Some(reason.into()),
            note: Some(note),
            type_: Some("Normal".into()),
            reporting_controller: Some("guestreset".into()),
            reporting_instance: Some("guestreset".into()),
            regarding: Some(ObjectReference {
                api_version: Some(format!("{}/{}", world::GROUP, world::VERSION)),
                kind: Some(world::KIND.into()),
                name: Some(name),
                namespace: object.metadata.namespace.clone(),
                uid: object.metadata.uid.clone(),
                resource_version: object.metadata.resource_version.clone(),
                ..ObjectReference::default()
            }),
            ..Event::default()
        };
        self.events.create(&PostParams::default(), &event).await?;
        self.time("event create", started);
        Ok(())
    }

    async fn graph(
        &self,
        step: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(Value, status::CallIds)> {
        let started = Instant::now();
        let answer = self.graph.call(method, path, body).await?;
        self.time(step, started);
        Ok(answer)
    }

    async fn issue(&self, mut object: DynamicObject) -> Result<()> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let target = self
            .targets
            .get(&name)
            .with_context(|| format!("no target for {name}"))?;
        let generation = object.metadata.generation.unwrap_or(1);

        // No Pending write or Event: the operator's intent acknowledges the generation.
        let (user, _) = self
            .graph(
                "Graph GET user",
                reqwest::Method::GET,
                &format!("/users/{}?$select={USER_SELECT}", target.user_id),
                None,
            )
            .await?;
        if user["userType"] != "Guest" {
            bail!("{} is not a guest", target.user_id);
        }
        let (holders, _) = self
            .graph(
                "Graph list holders",
                reqwest::Method::GET,
                &format!(
                    "/users?$filter={}&$select={USER_SELECT}",
                    encode(&holders_filter(&target.email))
                ),
                None,
            )
            .await?;
        if holders["value"]
            .as_array()
            .is_some_and(|v| v.iter().any(|h| h["id"] != target.user_id.as_str()))
        {
            bail!("{} is held by another user", target.email);
        }
        // The intent before any Graph write, the sending mark right before the POST.
        let attempt = uuid::Uuid::new_v4().to_string();
        let intent = status::intent(
            target,
            generation,
            &attempt,
            &status::now(),
            status::state_before(&user),
        );
        self.write_status(&mut object, intent.clone()).await?;
        if user["mail"] != target.email.as_str() {
            self.graph(
                "Graph PATCH mail",
                reqwest::Method::PATCH,
                &format!("/users/{}", target.user_id),
                Some(json!({"mail": target.email})),
            )
            .await?;
        }
        self.write_status(&mut object, status::sending(intent))
            .await?;
        let (invitation, ids) = self
            .graph(
                "Graph POST invitation",
                reqwest::Method::POST,
                "/invitations",
                Some(json!({
                    "invitedUserEmailAddress": target.email,
                    "inviteRedirectUrl": "https://myapps.microsoft.com",
                    "sendInvitationMessage": true,
                    "resetRedemption": true,
                    "invitedUser": {"id": target.user_id},
                    "invitedUserMessageInfo": {"messageLanguage": "en-US"},
                })),
            )
            .await?;
        let invitation_id = invitation["id"].as_str().unwrap_or_default().to_owned();
        let issued = status::with_follow_through(
            status::issued(target, generation, &invitation_id, &ids),
            generation,
        );
        let message = issued["conditions"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.write_status(&mut object, issued).await?;
        self.event(&object, "Issued", message).await?;
        Ok(())
    }
}

/// Creates the resources (`create_in_flight` at once) and issues each as its watch reports it
/// new (no status yet), with `concurrency` issuances at once. Returns the step latencies.
pub async fn run(
    cluster: &world::Cluster,
    namespace: &str,
    sim: &Simulator,
    targets: &[Target],
    create_in_flight: usize,
    concurrency: usize,
) -> Result<StepTimes> {
    let driver = Arc::new(Driver {
        api: cluster.grr(namespace),
        events: Api::namespaced(cluster.client.clone(), namespace),
        graph: Graph::connect(sim).await?,
        targets: targets
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect(),
        times: Mutex::default(),
    });
    let objects = targets
        .iter()
        .map(|t| world::new_resource(&cluster.resource, t))
        .collect();
    let api = cluster.grr(namespace);
    let create = async move { world::create_all(&api, objects, create_in_flight).await };
    let created = new_resources(cluster.grr(namespace)).take(targets.len());
    let failures = Mutex::new(Vec::new());
    let work = created.for_each_concurrent(concurrency, |object| {
        let driver = driver.clone();
        let failures = &failures;
        async move {
            if let Err(err) = driver.issue(object).await {
                failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{err:#}"));
            }
        }
    });
    let (created, ()) = tokio::join!(create, work);
    created?;
    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(first) = failures.first() {
        bail!("{} floor issuances failed; first: {first}", failures.len());
    }
    let driver = Arc::try_unwrap(driver)
        .map_err(|_| anyhow::anyhow!("the floor's driver is still shared"))?;
    Ok(driver.times.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// Each resource once, when the watch first reports it without a status.
fn new_resources(api: Api<DynamicObject>) -> impl futures::Stream<Item = DynamicObject> {
    let mut seen = std::collections::HashSet::new();
    watcher(api, watcher::Config::default()).filter_map(move |event| {
        let object = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => Some(o),
            _ => None,
        };
        let new = object.filter(|o| {
            o.data.get("status").is_none_or(Value::is_null)
                && seen.insert(o.metadata.name.clone().unwrap_or_default())
        });
        futures::future::ready(new)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_and_query_values_are_percent_encoded() {
        assert_eq!(
            encode("https://127.0.0.1:1/.default"),
            "https%3A%2F%2F127.0.0.1%3A1%2F.default"
        );
        assert_eq!(encode("mail eq 'a@b.c'"), "mail%20eq%20%27a%40b.c%27");
    }
}
