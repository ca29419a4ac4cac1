//! [`GraphObserver`]: the hook through which the client reports each HTTP attempt and
//! each limiter wait, for the metrics of docs/operations.md. Its own file so the
//! client holds only the calls themselves.

use super::error::GraphCall;
use std::time::Duration;

/// Sees every HTTP attempt and every limiter wait, for metrics.
pub trait GraphObserver: Send + Sync {
    /// One HTTP attempt: its status, or `None` when no answer came.
    fn request(&self, call: GraphCall, status: Option<u16>, took: Duration);
    /// A write waited this long for the limiter.
    fn limiter_wait(&self, waited: Duration);
}
