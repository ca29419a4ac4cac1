//! The stop of the process, shared by the binary and the controller (docs/operations.md,
//! "Shutdown and restarts").
//!
//! One [`Shutdown`] is created before anything else. SIGTERM, Ctrl-C and a lost Lease call
//! [`Shutdown::begin`]; passes check [`Shutdown::is_stopping`] or race [`Shutdown::stopping`]
//! and abandon themselves, except one that has marked its POST as sending: it holds a
//! [`PostInFlight`] until its outcome is recorded, and the binary waits for
//! [`Shutdown::posts_drained`] (bounded, see [`run_until_deadline`]) before it exits.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Duration;

use futures::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Whether the process is stopping, and how many POSTs it must still let finish.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    stop: CancellationToken,
    /// A watch rather than a bare counter, so that `posts_drained` can wait for zero.
    posts: watch::Sender<usize>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            stop: CancellationToken::new(),
            posts: watch::Sender::new(0),
        }
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the process to stop: SIGTERM, Ctrl-C or a lost Lease. Idempotent.
    pub fn begin(&self) {
        self.inner.stop.cancel();
    }

    pub fn is_stopping(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    /// Resolves once [`Shutdown::begin`] was called (at once if it already was). Cancel-safe.
    pub async fn stopping(&self) {
        self.inner.stop.cancelled().await
    }

    /// Counts a POST as in flight until the returned guard is dropped.
    pub fn post_in_flight(&self) -> PostInFlight {
        self.inner.posts.send_modify(|n| *n += 1);
        PostInFlight {
            inner: self.inner.clone(),
        }
    }

    pub fn posts_in_flight(&self) -> usize {
        *self.inner.posts.borrow()
    }

    /// Resolves when no POST is in flight (at once if none is). Cancel-safe.
    pub async fn posts_drained(&self) {
        let mut count = self.inner.posts.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = count.wait_for(|n| *n == 0).await;
    }
}

/// A POST marked as sending; counted by [`Shutdown::posts_in_flight`] until dropped.
pub struct PostInFlight {
    inner: Arc<Inner>,
}

impl Drop for PostInFlight {
    fn drop(&mut self) {
        self.inner.posts.send_modify(|n| *n -= 1);
    }
}

/// How long a stop may take once it began (docs/operations.md).
#[derive(Clone, Copy, Debug)]
pub struct StopBounds {
    /// How long a POST in flight may still take: the Graph timeout.
    pub post_timeout: Duration,
    /// Time left to the work after the POSTs drained (or at once, when none was in flight):
    /// recording an outcome, ending the watch. Kept under 5 s with room for the exit itself.
    pub grace: Duration,
}

impl StopBounds {
    /// The grace of the contract's 5 s, less what releasing the Lease and exiting may take.
    pub const GRACE: Duration = Duration::from_millis(3500);

    pub fn new(post_timeout: Duration) -> Self {
        StopBounds {
            post_timeout,
            grace: Self::GRACE,
        }
    }
}

/// Runs `work` to its end, unless a stop began and the work outlives the stop's deadline:
/// then it is dropped (abandoned) and `None` returned. The deadline is `grace` after the stop
/// when no POST is in flight, else `grace` after the POSTs drained, waiting for them at most
/// `post_timeout`. The bound holds whatever `work` does, as long as it yields.
pub async fn run_until_deadline<T>(
    shutdown: &Shutdown,
    bounds: StopBounds,
    work: impl Future<Output = T>,
) -> Option<T> {
    let work = std::pin::pin!(work);
    let deadline = async {
        shutdown.stopping().await;
        stop_deadline(shutdown, bounds).await;
    };
    tokio::select! {
        // The work first: one that ends together with its deadline is not abandoned.
        biased;
        out = work => Some(out),
        () = deadline => {
            tracing::warn!(
                posts_in_flight = shutdown.posts_in_flight(),
                "stop deadline reached: abandoning the passes still running; an attempt left \
                 in status is resolved by the next process"
            );
            None
        }
    }
}

/// [`Shutdown::stopping`] as a future that owns its `Shutdown`, for whoever needs a `'static`
/// one (the controller's graceful shutdown).
pub async fn stopping_owned(shutdown: Shutdown) {
    shutdown.stopping().await
}

/// Ends `stream` when the stop begins, and drops it then, polled or not. kube-runtime's
/// graceful shutdown stops polling its trigger stream but keeps it, with the reflector's
/// writer inside, alive; a stop before the watch cache's first sync then leaves the runner
/// waiting forever for that sync. Dropped, the writer ends that wait at once (no pass can
/// have started before the sync).
pub fn end_on_stop<S>(stream: S, shutdown: Shutdown) -> impl Stream<Item = S::Item> + Send
where
    S: Stream + Send + 'static,
{
    // The stream, and the waker of its consumer's last poll, to tell it the stream ended.
    let slot = Arc::new(Mutex::new((Some(Box::pin(stream)), None::<Waker>)));
    tokio::spawn({
        let slot = Arc::downgrade(&slot);
        async move {
            shutdown.stopping().await;
            if let Some(slot) = slot.upgrade() {
                let (stream, waker) = std::mem::take(&mut *lock(&slot));
                drop(stream);
                if let Some(consumer) = waker {
                    consumer.wake();
                }
            }
        }
    });
    futures::stream::poll_fn(move |cx| {
        let mut slot = lock(&slot);
        let (stream, waker) = &mut *slot;
        let Some(stream) = stream.as_mut() else {
            return Poll::Ready(None);
        };
        *waker = Some(cx.waker().clone());
        stream.as_mut().poll_next(cx)
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs a start-up step unless the stop begins first (`None`): building clients, joining the
/// Lease and the like must not hold a stopping process.
pub async fn unless_stopped<T>(shutdown: &Shutdown, step: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        () = shutdown.stopping() => None,
        out = step => Some(out),
    }
}

/// Installs the SIGTERM and SIGINT handlers right now (not at a first poll, so that no signal
/// that arrives later is missed) and begins the stop on either. Needs the Tokio runtime.
pub fn stop_on_signals(shutdown: &Shutdown) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = interrupt.recv() => tracing::info!("interrupt received, shutting down"),
        }
        shutdown.begin();
    });
    Ok(())
}

async fn stop_deadline(shutdown: &Shutdown, bounds: StopBounds) {
    let in_flight = shutdown.posts_in_flight();
    if in_flight > 0 {
        tracing::info!(
            posts_in_flight = in_flight,
            "stopping: waiting for the POSTs in flight and their outcomes"
        );
    }
    if tokio::time::timeout(bounds.post_timeout, shutdown.posts_drained())
        .await
        .is_err()
    {
        tracing::warn!(
            posts_in_flight = shutdown.posts_in_flight(),
            "stopping: a POST outlived the Graph timeout; its outcome is left to recovery"
        );
    }
    tokio::time::sleep(bounds.grace).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::future::pending;

    /// `fut`, or a failure after 30 s: a future that never resolves fails its test at once
    /// instead of hanging the suite.
    async fn bounded<F: Future>(fut: F) -> F::Output {
        tokio::time::timeout(std::time::Duration::from_secs(30), fut)
            .await
            .expect("resolved within 30 s")
    }

    /// True when `fut` is already resolved, polling it once.
    fn is_ready<F: Future>(fut: F) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::pin::pin!(fut).poll(&mut cx).is_ready()
    }

    #[test]
    fn begin_is_seen_by_every_clone_and_resolves_stopping() {
        let shutdown = Shutdown::new();
        let pass = shutdown.clone();
        assert!(!pass.is_stopping());
        assert!(!is_ready(pass.stopping()));
        shutdown.begin();
        shutdown.begin();
        assert!(pass.is_stopping());
        assert!(is_ready(pass.stopping()));
    }

    #[tokio::test]
    async fn stopping_wakes_a_waiter_that_started_before_begin() {
        let shutdown = Shutdown::new();
        let waiter = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.stopping().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        shutdown.begin();
        bounded(waiter).await.unwrap();
    }

    #[test]
    fn posts_are_counted_until_their_guards_drop() {
        let shutdown = Shutdown::new();
        assert!(is_ready(shutdown.posts_drained()), "none in flight");
        let first = shutdown.post_in_flight();
        let second = shutdown.clone().post_in_flight();
        assert_eq!(shutdown.posts_in_flight(), 2);
        assert!(!is_ready(shutdown.posts_drained()));
        drop(first);
        assert_eq!(shutdown.posts_in_flight(), 1);
        assert!(!is_ready(shutdown.posts_drained()));
        drop(second);
        assert_eq!(shutdown.posts_in_flight(), 0);
        assert!(is_ready(shutdown.posts_drained()));
    }

    #[tokio::test]
    async fn posts_drained_wakes_when_the_last_guard_drops() {
        let shutdown = Shutdown::new();
        let guard = shutdown.post_in_flight();
        let waiter = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.posts_drained().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(guard);
        bounded(waiter).await.unwrap();
    }

    #[tokio::test]
    async fn a_stream_ended_by_the_stop_is_dropped_without_another_poll() {
        struct Writer(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Writer {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = Writer(dropped.clone());
        let watch = futures::stream::iter([1, 2])
            .chain(futures::stream::pending())
            .map(move |n| {
                let _owned_by_the_stream = &writer;
                n
            });
        let shutdown = Shutdown::new();
        let mut events = std::pin::pin!(end_on_stop(watch, shutdown.clone()));
        assert_eq!(bounded(events.next()).await, Some(1));
        assert_eq!(bounded(events.next()).await, Some(2));
        shutdown.begin();
        // kube-runtime stops polling at the stop: the drop must not wait for a poll.
        let dropped_soon = async {
            while !dropped.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), dropped_soon)
            .await
            .expect("the stream was dropped at the stop");
        assert_eq!(bounded(events.next()).await, None);
    }

    #[tokio::test]
    async fn a_consumer_waiting_on_a_stream_ended_by_the_stop_sees_its_end() {
        let shutdown = Shutdown::new();
        let mut events = Box::pin(end_on_stop(
            futures::stream::pending::<u8>(),
            shutdown.clone(),
        ));
        let waiting = tokio::spawn(async move { events.next().await });
        tokio::task::yield_now().await;
        shutdown.begin();
        let end = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(end.expect("woken at the stop").unwrap(), None);
    }

    #[tokio::test]
    async fn start_up_steps_give_way_to_the_stop() {
        let shutdown = Shutdown::new();
        assert_eq!(unless_stopped(&shutdown, async { 1 }).await, Some(1));
        let stopper = shutdown.clone();
        let hung_step = async move {
            stopper.begin();
            pending::<u8>().await
        };
        assert_eq!(bounded(unless_stopped(&shutdown, hung_step)).await, None);
        assert_eq!(unless_stopped(&shutdown, async { 2 }).await, None);
    }

    // Real time, short bounds: timers never fire early, so the lower bounds are exact; the
    // upper bounds leave room for a loaded machine.
    const BOUNDS: StopBounds = StopBounds {
        post_timeout: Duration::from_millis(400),
        grace: Duration::from_millis(200),
    };
    const SLACK: Duration = Duration::from_secs(2);

    fn assert_took(started: tokio::time::Instant, expected: Duration) {
        let took = started.elapsed();
        assert!(
            took >= expected && took < expected + SLACK,
            "took {took:?}, expected {expected:?}"
        );
    }

    #[tokio::test]
    async fn work_that_ends_is_returned_whether_or_not_stopping() {
        let shutdown = Shutdown::new();
        assert_eq!(
            run_until_deadline(&shutdown, BOUNDS, async { 7 }).await,
            Some(7)
        );
        shutdown.begin();
        assert_eq!(
            run_until_deadline(&shutdown, BOUNDS, async { 8 }).await,
            Some(8)
        );
    }

    #[tokio::test]
    async fn without_a_stop_there_is_no_deadline() {
        let shutdown = Shutdown::new();
        let run = run_until_deadline(&shutdown, BOUNDS, pending::<()>());
        let longer_than_any_bound = BOUNDS.post_timeout + BOUNDS.grace * 2;
        assert!(
            tokio::time::timeout(longer_than_any_bound, run)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn hung_work_is_abandoned_a_grace_after_the_stop_when_no_post_is_in_flight() {
        let shutdown = Shutdown::new();
        let started = tokio::time::Instant::now();
        let stop_after = Duration::from_millis(100);
        let stopper = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(stop_after).await;
            stopper.begin();
        });
        let out = bounded(run_until_deadline(&shutdown, BOUNDS, pending::<()>())).await;
        assert_eq!(out, None);
        assert_took(started, stop_after + BOUNDS.grace);
    }

    #[tokio::test]
    async fn a_post_in_flight_extends_the_deadline_until_it_drains_plus_grace() {
        let shutdown = Shutdown::new();
        let guard = shutdown.post_in_flight();
        shutdown.begin();
        let started = tokio::time::Instant::now();
        let answered_after = Duration::from_millis(300);
        tokio::spawn(async move {
            tokio::time::sleep(answered_after).await;
            drop(guard);
        });
        let out = bounded(run_until_deadline(&shutdown, BOUNDS, pending::<()>())).await;
        assert_eq!(out, None);
        assert_took(started, answered_after + BOUNDS.grace);
    }

    #[tokio::test]
    async fn a_post_that_never_drains_is_given_up_after_the_graph_timeout() {
        let shutdown = Shutdown::new();
        let _stuck = shutdown.post_in_flight();
        shutdown.begin();
        let started = tokio::time::Instant::now();
        let out = bounded(run_until_deadline(&shutdown, BOUNDS, pending::<()>())).await;
        assert_eq!(out, None);
        assert_took(started, BOUNDS.post_timeout + BOUNDS.grace);
    }

    #[tokio::test]
    async fn work_that_records_its_outcome_after_its_post_is_not_abandoned() {
        let shutdown = Shutdown::new();
        let guard = shutdown.post_in_flight();
        shutdown.begin();
        let bounds = StopBounds {
            post_timeout: Duration::from_secs(1),
            grace: Duration::from_millis(500),
        };
        let work = async move {
            // The POST answers after the grace alone would have passed.
            tokio::time::sleep(bounds.grace + Duration::from_millis(200)).await;
            drop(guard);
            tokio::time::sleep(Duration::from_millis(50)).await;
            "outcome recorded"
        };
        let out = bounded(run_until_deadline(&shutdown, bounds, work)).await;
        assert_eq!(out, Some("outcome recorded"));
    }
}
