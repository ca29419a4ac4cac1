//! What the end-to-end test files of this crate share: the harness's world for this crate's
//! resource and binary, and numbered guests to seed the simulator with.

use std::time::Duration;

use graph_sim::SeedUser;
use guestreset::resource::GuestRedemptionReset;
use guestreset_testsupport::{ChildProcess, wait_until};
use serde_json::Value;

/// One test's world: a namespace, a simulator, and the operators it starts (the harness in
/// `guestreset_testsupport::operator`, for this crate's resource and binary).
pub struct World(pub guestreset_testsupport::operator::World<GuestRedemptionReset>);

impl World {
    pub async fn with_users(prefix: &str, users: Vec<SeedUser>) -> World {
        World(
            guestreset_testsupport::operator::World::start(
                prefix,
                users,
                env!("CARGO_BIN_EXE_guestreset"),
            )
            .await,
        )
    }
}

impl std::ops::Deref for World {
    type Target = guestreset_testsupport::operator::World<GuestRedemptionReset>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for World {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// `n` guests `{tag}{i}@x.example` whose ids start with `first_digit`; the users and their ids.
#[allow(dead_code)] // not every test file seeds numbered guests
pub fn guests(tag: &str, first_digit: char, n: usize) -> (Vec<SeedUser>, Vec<String>) {
    let ids: Vec<String> = (0..n)
        .map(|i| format!("{first_digit}{i:07}-aaaa-4bbb-8ccc-dddddddddddd"))
        .collect();
    let users = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let upn = format!("{tag}{i}_x.example#EXT#@fabrikam.onmicrosoft.com");
            SeedUser::guest(id, &upn, &format!("{tag}{i}@x.example"))
        })
        .collect();
    (users, ids)
}

/// The address the operator's admin endpoints listen on, from its log.
#[allow(dead_code)] // not every test file serves the admin endpoints
pub async fn admin_addr(op: &ChildProcess) -> String {
    wait_until(
        "the admin endpoints to listen",
        Duration::from_secs(60),
        || async {
            op.read_log()
                .lines()
                .find(|l| l.contains("admin endpoints listening"))
                .and_then(|l| {
                    let v: Value = serde_json::from_str(l).ok()?;
                    v["fields"]["addr"].as_str().map(str::to_owned)
                })
        },
    )
    .await
}

/// A GET's status and body; `None` when nothing answered.
#[allow(dead_code)]
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}
