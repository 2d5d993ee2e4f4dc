//! Busy polling: a serving thread keeps its runtime polling its sockets for a while after
//! I/O instead of going to sleep (see [`Threading::busy_poll`](crate::Threading::busy_poll)).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// When a thread last read from or wrote to a connection, and how to wake its busy-poll
/// task.
#[derive(Debug)]
pub(crate) struct Warmth {
    base: Instant,
    last_io_ns: AtomicU64,
    sleeping: AtomicBool,
    wake: Notify,
}

impl Warmth {
    pub(crate) fn new() -> Warmth {
        Warmth {
            base: Instant::now(),
            last_io_ns: AtomicU64::new(0),
            sleeping: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A connection of this thread just did I/O.
    pub(crate) fn touch(&self) {
        self.last_io_ns.store(self.now_ns(), Ordering::Relaxed);
        if self.sleeping.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    fn recent(&self, window: Duration) -> bool {
        let since = self
            .now_ns()
            .saturating_sub(self.last_io_ns.load(Ordering::Relaxed));
        u128::from(since) < window.as_nanos()
    }

    /// Yields (which polls the sockets without blocking) while I/O was recent, so that
    /// the next request of a busy connection is read without the thread going to sleep.
    pub(crate) async fn spin(self: Arc<Self>, window: Duration) {
        loop {
            if self.recent(window) {
                // A yielded task makes the runtime poll its sockets without blocking.
                tokio::task::yield_now().await;
                continue;
            }
            let notified = self.wake.notified();
            self.sleeping.store(true, Ordering::Relaxed);
            if !self.recent(window) {
                notified.await;
            }
            self.sleeping.store(false, Ordering::Relaxed);
        }
    }
}
