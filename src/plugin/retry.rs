//! `retry NAME`: a fresh value of the `guestreset.io/retry` annotation, which asks the
//! controller to try the current generation once more (docs/resource.md, "Asking again").
//! Only a failure can be retried; after `OutcomeUnknown` a second invitation may follow, so a
//! person confirms it on a terminal and a script says `--yes`.

use std::io::{BufRead, IsTerminal, Write};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Patch;
use serde_json::json;

use super::cli::RetryArgs;
use super::error::Error;
use super::output;
use super::plan;
use super::session::Session;
use super::write;
use crate::resource::reason::Reason;
use crate::resource::{GuestRedemptionReset, RETRY_ANNOTATION, RETRY_REQUESTED_BY_ANNOTATION};

pub async fn run(session: &Session, args: &RetryArgs) -> Result<(), Error> {
    let api = session.api();
    let obj = api.get(&args.name).await?;
    let failure = retryable(&obj).map_err(Error::NotNow)?;
    let risky = failure == Reason::OutcomeUnknown.as_str();
    match gate(risky, args.yes, std::io::stdin().is_terminal()) {
        Gate::Go => {}
        Gate::Ask => confirm(&obj)?,
        Gate::Refuse => {
            return Err(Error::Unconfirmed(format!(
                "{}; not retried: confirm with --yes (no terminal to ask on)",
                risk(&obj)
            )));
        }
    }
    let token = token(Timestamp::now(), rand::random());
    let by = session.caller().await?;
    let patch = patch(&obj, &token, &by.name);
    write::pause_before_write();
    api.patch(&args.name, &write::patch_params(), &Patch::Merge(&patch))
        .await?;
    output::print(&format!(
        "retry of generation {} of {}/{} requested: {RETRY_ANNOTATION}={token}\n",
        plan::generation(&obj),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    ))
}

/// The Ready reason when the current generation failed (Ready is False for it); otherwise
/// why there is nothing to retry.
pub fn retryable(obj: &GuestRedemptionReset) -> Result<String, String> {
    let generation = plan::generation(obj);
    let Some(ready) = plan::ready(obj) else {
        return Err(format!(
            "nothing to retry: the controller has not reported on generation {generation} yet"
        ));
    };
    let observed = obj.status.as_ref().and_then(|s| s.observed_generation);
    let outcome_of = ready.observed_generation.or(observed);
    if outcome_of != Some(generation) {
        return Err(format!(
            "nothing to retry: {} is the outcome of generation {}; generation {generation} has not been tried yet",
            ready.reason,
            outcome_of.map_or("?".to_owned(), |g| g.to_string())
        ));
    }
    if ready.status != "False" {
        return Err(format!(
            "nothing to retry: generation {generation} is {} (Ready {}); retry is for failures",
            ready.reason, ready.status
        ));
    }
    Ok(ready.reason.clone())
}

/// What happens about a confirmation.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    Go,
    Ask,
    Refuse,
}

pub fn gate(risky: bool, yes: bool, terminal: bool) -> Gate {
    match (risky && !yes, terminal) {
        (false, _) => Gate::Go,
        (true, true) => Gate::Ask,
        (true, false) => Gate::Refuse,
    }
}

fn risk(obj: &GuestRedemptionReset) -> String {
    format!(
        "generation {} of {}/{} ended OutcomeUnknown: Graph may or may not have issued its invitation, so a second invitation may follow (to {})",
        plan::generation(obj),
        obj.namespace().unwrap_or_default(),
        obj.name_any(),
        obj.spec.email
    )
}

/// Asks on the terminal; anything but yes declines.
fn confirm(obj: &GuestRedemptionReset) -> Result<(), Error> {
    let mut err = std::io::stderr().lock();
    write!(err, "{}.\nRetry anyway? [y/N] ", risk(obj))?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if confirmed(&answer) {
        Ok(())
    } else {
        Err(Error::Unconfirmed("not retried".into()))
    }
}

pub fn confirmed(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// The patch that sets the retry annotation to `token`, naming `by` as who asked for it (which
/// admission holds to the caller: with approval required the retry is a new request that
/// someone else decides on), only on the version of `obj` that was read (whose failure was
/// judged and, after OutcomeUnknown, confirmed).
pub fn patch(obj: &GuestRedemptionReset, token: &str, by: &str) -> serde_json::Value {
    let annotation = json!({ "metadata": { "annotations": {
        RETRY_ANNOTATION: token,
        RETRY_REQUESTED_BY_ANNOTATION: by,
    } } });
    write::locked(annotation, obj)
}

/// A value never used before: the time to the second and 32 random bits, so that neither two
/// retries in the same second nor two people at once produce the same value.
pub fn token(now: Timestamp, random: u32) -> String {
    format!("{}-{random:08x}", now.strftime("%Y%m%dT%H%M%SZ"))
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
