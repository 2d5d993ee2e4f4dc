//! Busy polling: a serving thread keeps its runtime polling its sockets for a while after
//! I/O instead of going to sleep (see [`Threading::busy_poll`](crate::Threading::busy_poll)).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
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
    /// Only while it holds one of the process's [`SPIN_SLOTS`]; without one it sleeps until
    /// its next I/O and tries again then.
    pub(crate) async fn spin(self: Arc<Self>, window: Duration) {
        self.spin_with(window, &SPIN_SLOTS).await;
    }

    async fn spin_with(self: Arc<Self>, window: Duration, slots: &SpinSlots) {
        loop {
            if self.recent(window)
                && let Some(_slot) = slots.take()
            {
                while self.recent(window) {
                    // A yielded task makes the runtime poll its sockets without blocking.
                    tokio::task::yield_now().await;
                }
                continue;
            }
            let notified = self.wake.notified();
            self.sleeping.store(true, Ordering::Relaxed);
            if !self.recent(window) || slots.all_taken() {
                notified.await;
            }
            self.sleeping.store(false, Ordering::Relaxed);
        }
    }
}

/// How many threads of this process may busy-poll at once: one fewer than the cores, and at
/// least one. A spinning thread holds a core; when every core spins, the processes that
/// send the requests (and other serving threads with work) wait for the scheduler instead.
/// Measured with wrk on 2 cores, iris, 8 connections: every thread spinning served 10-25%
/// fewer requests than no busy polling at all, while one connection gained 60% from it;
/// with one spinning thread, polling gains at 1 and 8 connections and is even at 64
/// (BENCHMARKS.md §4).
pub(crate) static SPIN_SLOTS: LazyLock<SpinSlots> =
    LazyLock::new(|| SpinSlots::new(crate::cores().saturating_sub(1).max(1)));

#[derive(Debug)]
pub(crate) struct SpinSlots {
    free: AtomicUsize,
}

/// A taken spin slot; dropping it gives the slot back.
pub(crate) struct SpinSlot<'a>(&'a SpinSlots);

impl SpinSlots {
    pub(crate) fn new(slots: usize) -> SpinSlots {
        SpinSlots {
            free: AtomicUsize::new(slots),
        }
    }

    fn take(&self) -> Option<SpinSlot<'_>> {
        self.free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok()
            .map(|_| SpinSlot(self))
    }

    fn all_taken(&self) -> bool {
        self.free.load(Ordering::Acquire) == 0
    }
}

impl Drop for SpinSlot<'_> {
    fn drop(&mut self) {
        self.0.free.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn slots_are_taken_until_none_is_left_and_come_back_when_dropped() {
        let slots = SpinSlots::new(2);
        let first = slots.take().expect("two free");
        let second = slots.take().expect("one free");
        assert!(slots.all_taken());
        assert!(slots.take().is_none());
        drop(first);
        assert!(!slots.all_taken());
        assert!(slots.take().is_some());
        drop(second);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn only_as_many_threads_spin_as_there_are_slots() {
        let slots: &'static SpinSlots = Box::leak(Box::new(SpinSlots::new(1)));
        // Long enough that a loaded machine does not end it between two assertions.
        let window = Duration::from_millis(400);
        let (first, second) = (Arc::new(Warmth::new()), Arc::new(Warmth::new()));
        first.touch();
        second.touch();
        tokio::spawn(Arc::clone(&first).spin_with(window, slots));
        settle().await;
        assert!(slots.all_taken(), "the first took the slot");
        assert!(!first.sleeping.load(Ordering::Relaxed), "and spins");

        tokio::spawn(Arc::clone(&second).spin_with(window, slots));
        settle().await;
        assert!(
            second.sleeping.load(Ordering::Relaxed),
            "no slot left: it sleeps"
        );

        // The first's I/O stops: its window passes and the slot is free again.
        tokio::time::sleep(window * 2).await;
        assert!(!slots.all_taken());
        assert!(first.sleeping.load(Ordering::Relaxed));
        // The second takes the slot at its next I/O.
        second.touch();
        settle().await;
        assert!(slots.all_taken());
        assert!(!second.sleeping.load(Ordering::Relaxed));
    }
}
