//! The simulated directory and everything the admin API can see or change.

use crate::model::{
    AssertionClaims, FaultAction, FaultRule, Hazard, InvitationRecord, JournalEntry, SeedUser,
    Settings,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

/// Fixed at start.
pub(crate) struct Identity {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub base_url: String,
}

pub(crate) struct Shared {
    pub identity: Identity,
    state: Mutex<State>,
    /// Bumped by `POST /_sim/release`; held responses wait for a change.
    pub release: watch::Sender<u64>,
}

impl Shared {
    pub fn new(
        identity: Identity,
        users: Vec<SeedUser>,
        settings: Settings,
        seed: u64,
    ) -> Arc<Self> {
        let now = Instant::now();
        let state = State {
            users: users
                .into_iter()
                .map(|user| UserRecord::new(user, now))
                .collect(),
            settings,
            rng: seed,
            ..State::default()
        };
        Arc::new(Shared {
            identity,
            state: Mutex::new(state),
            release: watch::Sender::new(0),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct UserRecord {
    pub user: SeedUser,
    /// When the user was added; reads answer 404 until `visible_after_ms` past this.
    pub added: Instant,
    /// The mail the invitation service still sees while a PATCHed mail propagates.
    pub previous_mail: Option<String>,
    pub mail_set_at: Option<Instant>,
    /// What reads show of the redemption state while a reset's effect replicates
    /// (`Settings::evidence_delay_ms`, see `unkind.rs`).
    pub replicating: Option<crate::unkind::Replicating>,
}

impl UserRecord {
    pub fn new(user: SeedUser, now: Instant) -> Self {
        UserRecord {
            user,
            added: now,
            previous_mail: None,
            mail_set_at: None,
            replicating: None,
        }
    }

    pub fn visible(&self, now: Instant) -> bool {
        now >= self.added + Duration::from_millis(self.user.visible_after_ms)
    }

    /// `mail` as the invitation service sees it.
    pub fn invite_view_mail(&self, now: Instant, propagation: Duration) -> Option<&str> {
        match self.mail_set_at {
            Some(at) if now < at + propagation => self.previous_mail.as_deref(),
            _ => self.user.mail.as_deref(),
        }
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub users: Vec<UserRecord>,
    /// access token -> expiry
    pub tokens: HashMap<String, Instant>,
    /// Every token handed out, in order (kept after expiry).
    pub issued_tokens: Vec<String>,
    pub redeem_urls: Vec<String>,
    pub journal: Vec<JournalEntry>,
    pub faults: Vec<FaultRule>,
    pub hazards: Vec<Hazard>,
    pub settings: Settings,
    pub invitations: Vec<InvitationRecord>,
    pub assertions: Vec<AssertionClaims>,
    /// Responses currently held by `HangAfter`.
    pub held: u64,
    /// The state of the seeded generator of latency draws (splitmix64).
    pub rng: u64,
}

impl State {
    pub fn user_by_key(&self, key: &str) -> Option<usize> {
        self.users.iter().position(|r| {
            r.user.id.eq_ignore_ascii_case(key)
                || r.user.user_principal_name.eq_ignore_ascii_case(key)
        })
    }

    pub fn put_user(&mut self, user: SeedUser) {
        let record = UserRecord::new(user, Instant::now());
        match self
            .users
            .iter()
            .position(|r| r.user.id.eq_ignore_ascii_case(&record.user.id))
        {
            Some(i) => self.users[i] = record,
            None => self.users.push(record),
        }
    }

    /// Takes the first rule for `call`, counting it down.
    pub fn take_fault(&mut self, call: crate::model::Call) -> Option<FaultAction> {
        let i = self.faults.iter().position(|r| r.call == call)?;
        let rule = &mut self.faults[i];
        let action = rule.action.clone();
        if let Some(n) = rule.times.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.faults.remove(i);
            }
        }
        Some(action)
    }

    pub fn add_fault(&mut self, rule: FaultRule) {
        // A rule for zero calls would never fire; keeping it would only shadow later rules.
        if rule.times != Some(0) {
            self.faults.push(rule);
        }
    }

    pub fn token_valid(&self, token: &str, now: Instant) -> TokenCheck {
        match self.tokens.get(token) {
            None => TokenCheck::Unknown,
            Some(expiry) if *expiry <= now => TokenCheck::Expired,
            Some(_) => TokenCheck::Valid,
        }
    }

    pub fn journal_append(&mut self, mut entry: JournalEntry) -> u64 {
        entry.seq = self.journal.len() as u64 + 1;
        let seq = entry.seq;
        self.journal.push(entry);
        seq
    }

    /// Dates the answer of journal entry `seq`: its response is leaving now.
    pub fn journal_answered(&mut self, seq: u64, at: String) {
        if let Some(entry) = self.journal.get_mut(seq as usize - 1) {
            entry.answered_at = Some(at);
        }
    }
}

pub(crate) enum TokenCheck {
    Valid,
    Expired,
    Unknown,
}

pub(crate) fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Graph's style for date-time properties, `Z`, with milliseconds: Microsoft's examples show
/// whole seconds, but the type (DateTimeOffset) carries fractions, and a client must not
/// assume it does not. Always three digits, so that two such times still compare as text.
pub(crate) fn now_graph_datetime() -> String {
    let now = OffsetDateTime::now_utc();
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    now.format(&format).unwrap_or_default()
}

/// The `date` inside Graph's `innerError`: no zone designator.
pub(crate) fn now_inner_error_date() -> String {
    let now = OffsetDateTime::now_utc();
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    now.format(&format).unwrap_or_default()
}
