//! guestreset: declarative, once-per-generation redemption resets for Microsoft Entra B2B guests.
//!
//! - [`resource`]: the `GuestRedemptionReset` resource and its admission rules (the CRD).
//! - [`graph`]: the Microsoft Graph client, the only way the controller changes the directory.
//! - [`controller`]: the pure decision and the thin effects layer around it.
//! - [`migration`]: domain migrations, one reviewed plan and one reset per guest.
//! - [`metrics`] and [`admin`]: Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` endpoints.
//! - [`admission_policy`]: whether the API server enforces the approval rules.
//! - [`shutdown`]: the stop of the process, shared by the binary and the controller.
//! - [`fence`]: until when this process may send Graph writes (a leader's renew deadline).
//! - [`cli`], [`leader`] and [`telemetry`]: the binary's flags, Lease choreography and logging.
//! - [`plugin`]: the kubectl plugin, `kubectl guestreset` (the second binary).

pub mod admin;
pub mod admission_policy;
pub mod backoff;
pub mod check;
pub mod cli;
pub mod controller;
pub mod fence;
pub mod graph;
pub mod leader;
pub mod metrics;
pub mod migration;
pub mod mutants;
pub mod plugin;
pub mod probe;
pub mod resource;
pub mod shutdown;
pub mod telemetry;
