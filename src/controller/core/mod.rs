//! The pure decision: given what the controller observed and what this pass has read, the
//! next step. See the code map in [`crate::controller`].

pub mod approval;
pub mod decide;
pub mod failure;
pub mod follow;
pub mod input;
pub mod preflight;
pub mod recover;
pub mod report;
pub mod schedule;
pub mod step;
pub mod time;
