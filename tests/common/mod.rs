//! What the end-to-end test files of this crate share: the harness's world for this crate's
//! resource and binary, and numbered guests to seed the simulator with.

use graph_sim::SeedUser;
use guestreset::resource::GuestRedemptionReset;

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
