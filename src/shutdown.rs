//! The stop of the process: a flag every pass watches, and the count of POSTs in flight that
//! the stop waits for (docs/operations.md, "Stopping").

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    posts: Arc<Posts>,
}

#[derive(Default)]
struct Posts {
    count: AtomicUsize,
    drained: Notify,
}

/// A POST marked as sending; counted until dropped.
pub struct PostInFlight {
    posts: Arc<Posts>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stop requested: SIGTERM, Ctrl-C, a lost Lease.
    pub fn begin(&self) {
        self.token.cancel();
    }

    pub fn is_stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once [`Shutdown::begin`] was called.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    pub fn post_in_flight(&self) -> PostInFlight {
        self.posts.count.fetch_add(1, Ordering::SeqCst);
        PostInFlight {
            posts: self.posts.clone(),
        }
    }

    pub fn posts_in_flight(&self) -> usize {
        self.posts.count.load(Ordering::SeqCst)
    }

    /// Resolves when no POST is in flight.
    pub async fn posts_drained(&self) {
        loop {
            let notified = self.posts.drained.notified();
            if self.posts_in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for PostInFlight {
    fn drop(&mut self) {
        if self.posts.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.posts.drained.notify_waiters();
        }
    }
}
