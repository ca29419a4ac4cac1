//! The controller: watches `GuestRedemptionReset` resources and reconciles each one.
//!
//! # Code map
//!
//! The layers, bottom up. A module imports only from the layers below it and its own; the
//! test `tests/architecture.rs` fails on any import cycle in `src/` and on an effect in a pure
//! layer (docs/design.md, "Layers").
//!
//! 1. [`core`] — **pure**: given the resource, its status, the settings, the time and what this
//!    pass has read, the next [`Step`](core::step::Step). No `async fn`, no [`Context`], no
//!    `kube::Api`, no clock: tested exhaustively without I/O. In the order of a pass:
//!    [`decide`](core::decide) (the entry and the issue), [`approval`](core::approval) (four
//!    eyes), [`preflight`](core::preflight), [`recover`](core::recover) (an interrupted
//!    attempt, resolved from evidence), [`follow`](core::follow) (did the guest redeem?, on the
//!    [`schedule`](core::schedule)); their vocabulary: [`input`](core::input) (what the
//!    decision sees), [`step`](core::step) (what it names next), [`report`](core::report)
//!    (what a pass ends with), [`failure`](core::failure) (Graph's errors as the decision needs
//!    them), [`time`](core::time).
//! 2. [`status`] — **pure**: how a report, an intent, a sending mark or a follow-through
//!    changes the status and its conditions.
//! 3. [`audit`] — the audit record of an issuance and the note of an Event.
//! 4. [`exec`] — the executor: [`PassRunner`](exec::pass::PassRunner) asks the decision for a
//!    step, performs it through the [`Io`](exec::io::Io) trait, and repeats until the pass
//!    ends.
//! 5. [`tenant`] — the tenant-wide pause after Graph's abuse answer, and its persisted
//!    [`record`](tenant::record) with the watch that follows it.
//! 6. [`context`] — what every pass shares; [`memory`] is this process's memory of failed
//!    passes and of its own writes; [`failpoint`] the test builds' holds.
//! 7. [`effects`] — the only code holding `kube::Api` or the Graph client:
//!    [`KubeIo`](effects::KubeIo) implements `Io` (status writes, the redeem URL's Secret,
//!    Graph calls), with [`events`](effects::events) and the [`approver`](effects::approver)
//!    review.
//! 8. [`run`](mod@run) — the watch, the passes it starts, the error policy; [`gauges`] the
//!    metrics counted over the watch cache; [`error`] the errors of a pass.
//!
//! The domain migrations (`crate::migration`) sit beside layers 7 and 8: they use the context,
//! the approver review and the status's condition names, and the effects read their plans.

pub mod audit;
pub mod context;
pub mod core;
pub mod effects;
pub mod error;
pub mod exec;
pub mod failpoint;
pub mod gauges;
pub mod memory;
pub mod run;
pub mod status;
pub mod tenant;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod model_tests;

pub use context::Context;
pub use error::Error;
pub use run::{reconcile, run};
