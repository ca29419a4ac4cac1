//! The executor: runs a pass by asking the decision for a step and performing it through
//! [`io::Io`]. See the code map in [`crate::controller`].

pub mod io;
pub mod pass;
