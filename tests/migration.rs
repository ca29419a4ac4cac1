//! End-to-end: domain migrations (docs/resource.md, "GuestDomainMigration") on a real
//! kube-apiserver and the HTTPS Graph simulator, through `guestreset run`. The simulator's
//! journal is the ground truth of what reached Graph.

#[allow(dead_code)] // the policy tests' fixture; this file uses its world and people
#[path = "approval_policy/fixture.rs"]
mod fixture;

use std::collections::BTreeMap;
use std::time::Duration;

use fixture::{CONTROLLER, Chart, Fixture, identity};
use graph_sim::{Call, JournalEntry, SeedUser};
use guestreset::migration::plan::reset_name;
use guestreset::resource::migration::MIGRATION_LABEL;
use guestreset::resource::{GuestDomainMigration, GuestRedemptionReset, REQUESTED_BY_ANNOTATION};
use guestreset_testsupport::operator::World as Harness;
use guestreset_testsupport::wait_until;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

type World = Harness<GuestDomainMigration>;

fn id(n: u32) -> String {
    format!("c{n:07}-aaaa-4bbb-8ccc-dddddddddddd")
}

fn guest(n: u32, local: &str, domain: &str) -> SeedUser {
    SeedUser::guest(
        &id(n),
        &format!("{local}_{domain}#EXT#@fabrikam.onmicrosoft.com"),
        &format!("{local}@{domain}"),
    )
}

/// contoso.com: four guests that move (lee is renamed by the mapping), a member and a guest
/// whose new address a fabrikam user already holds; and a guest of another domain.
fn directory() -> Vec<SeedUser> {
    let mut member = guest(5, "mem", "contoso.com");
    member.user_type = "Member".into();
    let mut holder = guest(9, "dan", "fabrikam.example");
    holder.user_type = "Member".into();
    vec![
        guest(1, "ann", "contoso.com"),
        guest(2, "bob", "contoso.com"),
        guest(3, "cara", "contoso.com"),
        guest(4, "lee.old", "contoso.com"),
        member,
        guest(6, "dan", "contoso.com"),
        holder,
        guest(7, "zed", "other.example"),
    ]
}

const MAPPING: &str = "# renamed people\nlee.old lee.new\n";

async fn world(prefix: &str) -> World {
    World::start(prefix, directory(), env!("CARGO_BIN_EXE_guestreset")).await
}

fn resets(client: &kube::Client, ns: &str) -> Api<GuestRedemptionReset> {
    Api::namespaced(client.clone(), ns)
}

async fn config_map(client: &kube::Client, ns: &str, name: &str, key: &str, text: &str) {
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name}, "data": {key: text}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
}

fn spec(dry_run: bool) -> Value {
    json!({
        "from": "contoso.com",
        "to": "fabrikam.example",
        "mapping": {"configMapRef": {"name": "contoso-renames"}},
        "changeRef": "CHG-31000",
        "dryRun": dry_run,
    })
}

/// The planned guests and their new addresses.
fn planned() -> Vec<(String, &'static str)> {
    vec![
        (id(1), "ann@fabrikam.example"),
        (id(2), "bob@fabrikam.example"),
        (id(3), "cara@fabrikam.example"),
        (id(4), "lee.new@fabrikam.example"),
    ]
}

fn writes(journal: &[JournalEntry]) -> Vec<&JournalEntry> {
    journal
        .iter()
        .filter(|e| matches!(e.call, Call::PatchUser | Call::PostInvitation))
        .collect()
}

/// POSTs per invited user id.
fn posts_per_user(journal: &[JournalEntry]) -> BTreeMap<String, usize> {
    let mut per = BTreeMap::new();
    for e in journal.iter().filter(|e| e.call == Call::PostInvitation) {
        *per.entry(e.invited_user_id.clone().unwrap_or_default())
            .or_default() += 1;
    }
    per
}

async fn owned_resets(w: &World, name: &str) -> Vec<GuestRedemptionReset> {
    resets(&w.client, &w.ns)
        .list(&ListParams::default().labels(&format!("{MIGRATION_LABEL}={name}")))
        .await
        .unwrap()
        .items
}

fn plan_figures(m: &GuestDomainMigration) -> (i64, i64, i64) {
    let plan = m
        .status
        .as_ref()
        .and_then(|s| s.plan.clone())
        .expect("a plan");
    (plan.guests, plan.members, plan.conflicts)
}

/// A dry run plans (members and a taken address excluded, the mapping applied, the list in a
/// ConfigMap the migration owns) and writes nothing; the same migration without dryRun then
/// creates one reset per planned guest, owned and named deterministically, and every guest
/// is invited once. Bad input is refused at admission or stops with a condition naming it.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_plans_and_the_migration_then_issues_one_reset_per_guest() {
    let mut w = world("migration-flow").await;
    config_map(&w.client, &w.ns, "contoso-renames", "mapping", MAPPING).await;
    config_map(
        &w.client,
        &w.ns,
        "bad-renames",
        "mapping",
        "ann ann2\nlonely\n",
    )
    .await;
    w.start_operator(&[]);

    // from == to is refused by the API server, naming the field.
    let same = json!({"apiVersion": "guestreset.io/v1alpha1", "kind": "GuestDomainMigration",
        "metadata": {"name": "same"}, "spec": {"from": "contoso.com", "to": "contoso.com"}});
    let refused = w
        .api
        .create(
            &PostParams::default(),
            &serde_json::from_value(same).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("spec.to must differ from spec.from"),
        "{refused}"
    );
    // A malformed mapping line stops the migration with a condition naming the line.
    w.create(
        "bad",
        json!({"from": "contoso.com", "to": "fabrikam.example",
               "mapping": {"configMapRef": {"name": "bad-renames"}}}),
    )
    .await;
    let bad = w.wait_reason_for("bad", "InvalidMapping", WAIT).await;
    let ready = bad.status.unwrap().conditions;
    let message = &ready.iter().find(|c| c.type_ == "Ready").unwrap().message;
    assert!(message.contains("line 2"), "{message}");
    assert!(owned_resets(&w, "bad").await.is_empty());

    w.create("m", spec(true)).await;
    let m = w.wait_reason_for("m", "DryRunComplete", WAIT).await;
    assert_eq!(plan_figures(&m), (4, 1, 1));
    let plan = m.status.as_ref().unwrap().plan.clone().unwrap();
    assert!(plan.digest.starts_with("sha256:"));
    assert_eq!(plan.listed_in, "ConfigMap/m-plan");
    assert!(plan.pages >= 2, "one page for each domain at least");
    let cm = Api::<ConfigMap>::namespaced(w.client.clone(), &w.ns)
        .get("m-plan")
        .await
        .unwrap();
    assert_eq!(
        cm.owner_references()[0].uid,
        m.uid().unwrap(),
        "the plan ConfigMap is owned by the migration"
    );
    let data = cm.data.unwrap();
    for (user, email) in planned() {
        assert!(
            data["planned"].contains(&format!("{user} {email} ")),
            "{}",
            data["planned"]
        );
    }
    assert!(data["excluded"].contains(&format!("{} mem@contoso.com Member", id(5))));
    assert!(data["excluded"].contains(&format!("AddressInUse:{}", id(9))));
    assert_eq!(data["digest"], plan.digest);
    assert!(
        owned_resets(&w, "m").await.is_empty(),
        "a dry run creates nothing"
    );
    let journal = w.journal().await;
    assert!(
        writes(&journal).is_empty(),
        "a dry run writes nothing to Graph"
    );
    // The advanced query, as Graph needs it.
    let listings: Vec<_> = journal
        .iter()
        .filter(|e| {
            e.call == Call::ListUsers && e.query.as_deref().unwrap_or("").contains("endswith")
        })
        .collect();
    assert!(!listings.is_empty());
    assert!(
        listings
            .iter()
            .all(|e| e.status == 200 && e.query.as_deref().unwrap().contains("count=true"))
    );

    // The real run: a new generation, planned again, then one reset per guest.
    w.patch_spec("m", json!({"dryRun": false})).await;
    let m = w.wait_reason_for("m", "Completed", WAIT).await;
    let status = m.status.clone().unwrap();
    let progress = status.progress.unwrap();
    assert_eq!(
        (
            progress.planned,
            progress.created,
            progress.issued,
            progress.failed
        ),
        (4, 4, 4, 0)
    );
    let owned = owned_resets(&w, "m").await;
    assert_eq!(owned.len(), 4);
    for (user, email) in planned() {
        let reset = owned
            .iter()
            .find(|r| r.name_any() == reset_name("m", &user))
            .unwrap_or_else(|| panic!("a reset named for {user}"));
        assert_eq!(reset.spec.email, email);
        assert_eq!(reset.spec.change_ref.as_deref(), Some("CHG-31000"));
        let owner = &reset.owner_references()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            (m.uid().unwrap().as_str(), Some(true))
        );
    }
    let journal = w.journal().await;
    let per_user = posts_per_user(&journal);
    let expected: BTreeMap<String, usize> = planned().into_iter().map(|(u, _)| (u, 1)).collect();
    assert_eq!(
        per_user, expected,
        "one invitation per planned guest, none for the excluded"
    );
    // The plugin shows it, as a person watching the migration sees it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-guestreset"))
        .args(["migration", "status", "m", "-n", &w.ns])
        .env("KUBECONFIG", w.cp.kubeconfig_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("contoso.com -> fabrikam.example"), "{text}");
    assert!(text.contains("] 100%"), "{text}");
    assert!(
        text.contains("4 planned, 4 created, 4 issued, 0 failed"),
        "{text}"
    );
    let reasons: Vec<String> = w
        .events("m")
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in ["Planned", "Started", "Completed"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
}

/// The controller is killed after the first invitation; restarted, it creates no second reset
/// for anyone and no guest is invited twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_mid_migration_duplicates_no_reset_and_no_invitation() {
    let mut w = world("migration-restart").await;
    config_map(&w.client, &w.ns, "contoso-renames", "mapping", MAPPING).await;
    // One write a second: the migration is under way when the controller dies.
    let slow = ["--max-writes-per-minute", "60", "--write-burst", "1"];
    let first = w.start_operator(&slow);
    w.create("m", spec(false)).await;
    wait_until("the first invitation", WAIT, || async {
        Ok::<_, String>((!w.posts().await.is_empty()).then_some(()))
    })
    .await;
    w.operators[first].kill();
    let before = w.posts().await.len();
    assert!(before < 4, "killed mid-migration ({before} invitations)");
    w.start_operator(&slow);
    let m = w.wait_reason_for("m", "Completed", WAIT).await;
    assert_eq!(m.status.unwrap().progress.unwrap().issued, 4);
    assert_eq!(owned_resets(&w, "m").await.len(), 4, "no duplicate reset");
    let per_user = posts_per_user(&w.journal().await);
    assert!(per_user.values().all(|n| *n == 1), "{per_user:?}");
    assert_eq!(per_user.len(), 4);
}

/// With --require-approval: the plan waits; the requester cannot approve it; after planning a
/// guest becomes a member and another's new address is taken; bob approves the plan by its
/// digest, and only the two untouched guests are invited (the member never is, the taken
/// address stops with EmailInUse). carol's reset owned by the approved migration is not
/// approved by it.
#[tokio::test(flavor = "multi_thread")]
async fn an_approved_plan_issues_its_resets_and_nothing_else() {
    let mut w = world("migration-approval").await;
    let fx = Fixture::in_namespace(&w.ns, Chart::RequireApproval).await;
    let controller = identity(w.cp, CONTROLLER);
    let mut cmd = w.operator_command(&[
        "--require-approval",
        "--admission-policy",
        &fx.policy,
        "--leader-election-lease-name",
        &fx.policy,
    ]);
    cmd.env("KUBECONFIG", &controller.kubeconfig);
    w.start_operator_with(cmd);
    config_map(&w.client, &w.ns, "contoso-renames", "mapping", MAPPING).await;

    let alice: Api<GuestDomainMigration> =
        Api::namespaced(identity(w.cp, "alice").client().await, &w.ns);
    let bob: Api<GuestDomainMigration> =
        Api::namespaced(identity(w.cp, "bob").client().await, &w.ns);
    let m: GuestDomainMigration = serde_json::from_value(json!({
        "apiVersion": "guestreset.io/v1alpha1", "kind": "GuestDomainMigration",
        "metadata": {"name": "m", "annotations": {REQUESTED_BY_ANNOTATION: "alice"}},
        "spec": spec(false),
    }))
    .unwrap();
    alice.create(&PostParams::default(), &m).await.unwrap();
    let m = w.wait_reason_for("m", "AwaitingApproval", WAIT).await;
    assert_eq!(plan_figures(&m), (4, 1, 1));
    let status = m.status.clone().unwrap();
    let digest = status.plan.clone().unwrap().digest;
    assert!(
        owned_resets(&w, "m").await.is_empty(),
        "no reset before approval"
    );

    // The directory changes after planning.
    w.admin.convert_to_member(&id(3)).await.unwrap();
    let mut taker = guest(8, "bob", "fabrikam.example");
    taker.user_type = "Member".into();
    w.admin.put_user(&taker).await.unwrap();

    let decision = |by: &str| {
        json!({"status": {"approval": {
            "generation": 1, "decision": "Approved", "by": by,
            "at": "2026-12-07T12:00:00Z", "reason": "CHG-31000 reviewed",
            "digest": digest, "admittedUnder": status.admitted_under,
            "groups": identity(w.cp, by).groups,
        }}})
    };
    // The requester may not approve her own plan.
    let own = alice
        .patch_status(
            "m",
            &PatchParams::default(),
            &Patch::Merge(decision("alice")),
        )
        .await;
    assert!(own.is_err(), "alice approved her own plan");
    bob.patch_status("m", &PatchParams::default(), &Patch::Merge(decision("bob")))
        .await
        .unwrap();
    let done = w.wait_reason_for("m", "CompletedWithFailures", WAIT).await;
    let progress = done.status.unwrap().progress.unwrap();
    assert_eq!(
        (progress.created, progress.issued, progress.failed),
        (4, 2, 2)
    );

    let grr = resets(&w.client, &w.ns);
    let reason = |r: &GuestRedemptionReset| {
        r.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.reason.clone())
    };
    let cara = grr.get(&reset_name("m", &id(3))).await.unwrap();
    assert_eq!(reason(&cara).as_deref(), Some("NotAGuest"));
    // The audit record of an issued reset names the plan's approver.
    let ann = grr.get(&reset_name("m", &id(1))).await.unwrap();
    let audit = ann.status.unwrap().invitation.unwrap().audit.unwrap();
    assert_eq!(audit.approved_by.as_deref(), Some("bob"));
    assert_eq!(audit.requested_by.as_deref(), Some(CONTROLLER));
    assert_eq!(audit.change_ref.as_deref(), Some("CHG-31000"));
    let bob_reset = grr.get(&reset_name("m", &id(2))).await.unwrap();
    assert_eq!(reason(&bob_reset).as_deref(), Some("EmailInUse"));
    let journal = w.journal().await;
    let per_user = posts_per_user(&journal);
    let expected: BTreeMap<String, usize> = [(id(1), 1), (id(4), 1)].into_iter().collect();
    assert_eq!(per_user, expected);
    assert!(
        writes(&journal).iter().all(|e| !e.path.contains(&id(3))),
        "the guest turned member is never written to"
    );

    // carol's attack: a reset owned by the approved migration, for a guest outside its plan.
    let carol = resets(&identity(w.cp, "carol").client().await, &w.ns);
    let owner = json!([{"apiVersion": "guestreset.io/v1alpha1", "kind": "GuestDomainMigration",
        "name": "m", "uid": done_uid(&w).await, "controller": true}]);
    let sneaky = |requester: &str| -> GuestRedemptionReset {
        serde_json::from_value(json!({
            "apiVersion": "guestreset.io/v1alpha1", "kind": "GuestRedemptionReset",
            "metadata": {"name": "m-sneaky", "ownerReferences": owner,
                "labels": {MIGRATION_LABEL: "m"},
                "annotations": {REQUESTED_BY_ANNOTATION: requester}},
            "spec": {"user": {"id": id(7)}, "email": "zed@evil.example", "changeRef": "CHG-31000"},
        }))
        .unwrap()
    };
    // She cannot claim to be the controller ...
    let claimed = carol
        .create(&PostParams::default(), &sneaky(CONTROLLER))
        .await;
    assert!(
        claimed.is_err(),
        "carol created a reset in the controller's name"
    );
    // ... and as herself the migration's approval does not cover her reset.
    carol
        .create(&PostParams::default(), &sneaky("carol"))
        .await
        .unwrap();
    let sneaky = wait_until("carol's reset to await its own approval", WAIT, || async {
        let r = grr.get("m-sneaky").await.map_err(|e| e.to_string())?;
        Ok::<_, String>((reason(&r).as_deref() == Some("AwaitingApproval")).then_some(r))
    })
    .await;
    assert!(sneaky.status.unwrap().approval.is_none());
    let journal = w.journal().await;
    assert!(
        writes(&journal)
            .iter()
            .all(|e| !e.path.contains(&id(7))
                && e.invited_user_id.as_deref() != Some(id(7).as_str())),
        "nothing written for carol's target"
    );
    // The migration counts only the resets it planned.
    let m = w.get("m").await;
    assert_eq!(m.status.unwrap().progress.unwrap().created, 4);
}

async fn done_uid(w: &World) -> String {
    w.get("m").await.uid().unwrap()
}

/// A `to` outside --allowed-email-domains stops the migration with a condition naming it,
/// before the directory is read.
#[tokio::test(flavor = "multi_thread")]
async fn a_domain_outside_the_allowed_ones_stops_before_any_read() {
    let mut w = world("migration-allowed").await;
    w.start_operator(&["--allowed-email-domains", "fabrikam.example"]);
    w.create(
        "elsewhere",
        json!({"from": "contoso.com", "to": "elsewhere.example"}),
    )
    .await;
    let m = w
        .wait_reason_for("elsewhere", "DomainNotAllowed", WAIT)
        .await;
    let status = m.status.unwrap();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("spec.to elsewhere.example"),
        "{}",
        ready.message
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True")
    );
    assert!(status.plan.is_none());
    let journal = w.journal().await;
    assert!(
        journal.iter().all(|e| e.call != Call::ListUsers),
        "nothing read from the directory"
    );
    assert!(owned_resets(&w, "elsewhere").await.is_empty());
}
