//! Handing a request's work to the least busy serving thread ([`run_balanced`]).

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;

/// Work moves to another thread only when this one has at least this many more requests
/// in hand: moving costs a wake-up of the other thread and one back, which the usual jitter
/// between threads with the same number of connections does not repay. Measured (gRPC,
/// iris, h2load; BENCHMARKS.md §4): 2 moved too much at 8 connections of one stream each,
/// 8 too little on one connection of 8 streams.
const MARGIN: usize = 4;

/// The margin of a thread with a single open connection: when one busy connection is all it
/// serves, it also does all of that connection's framing, so its requests should move
/// sooner. Measured (gRPC, iris, h2load, one connection of 8 streams, alternating): +10-19%
/// without batching, +7-9% with `auto`; 64 streams +0-4%; BENCHMARKS.md §4.
const MARGIN_ONE_CONNECTION: usize = 2;

/// The serving threads of one server, as seen from each of them.
#[derive(Debug)]
pub(crate) struct Peers {
    threads: Vec<Peer>,
    /// Tasks every thread runs besides connections and requests (its busy-poll task).
    background: usize,
}

#[derive(Debug)]
struct Peer {
    runtime: Handle,
    /// The thread's open connections.
    open: Arc<AtomicUsize>,
    /// Its requests whose work it handed to another thread: they wait, and cost it nothing.
    handed_off: AtomicUsize,
}

impl Peer {
    /// Tasks on the thread other than its connections, its `background` tasks and the
    /// requests it handed off: the requests it is answering (an HTTP/2 stream is a task of
    /// its own) and work handed to it. A cheap reading (three counters and a constant),
    /// exact enough to compare threads.
    fn backlog(&self, background: usize) -> usize {
        let tasks = self.runtime.metrics().num_alive_tasks();
        tasks
            .saturating_sub(background)
            .saturating_sub(self.open.load(Ordering::Relaxed))
            .saturating_sub(self.handed_off.load(Ordering::Relaxed))
    }
}

impl Peers {
    pub(crate) fn new(threads: Vec<(Handle, Arc<AtomicUsize>)>, background: usize) -> Arc<Peers> {
        let threads = threads
            .into_iter()
            .map(|(runtime, open)| Peer {
                runtime,
                open,
                handed_off: AtomicUsize::new(0),
            })
            .collect();
        Arc::new(Peers {
            threads,
            background,
        })
    }

    /// Where the next piece of work of thread `here` should run.
    fn pick(&self, here: usize) -> usize {
        let mine = self.threads[here].backlog(self.background);
        let (least, theirs) = self
            .threads
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != here)
            .map(|(i, peer)| (i, peer.backlog(self.background)))
            .min_by_key(|&(_, backlog)| backlog)
            .unwrap_or((here, mine));
        let margin = if self.threads[here].open.load(Ordering::Relaxed) == 1 {
            MARGIN_ONE_CONNECTION
        } else {
            MARGIN
        };
        if mine >= theirs + margin { least } else { here }
    }
}

/// Counts one while it lives.
struct Count<'a>(&'a AtomicUsize);

impl<'a> Count<'a> {
    fn up(counter: &'a AtomicUsize) -> Count<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Count(counter)
    }
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

thread_local! {
    /// The serving threads this thread belongs to, and its place among them.
    static HERE: RefCell<Option<(Arc<Peers>, usize)>> = const { RefCell::new(None) };
}

/// Marks the current thread as serving thread `index` of `peers`.
pub(crate) fn enter(peers: Arc<Peers>, index: usize) {
    HERE.with(|here| *here.borrow_mut() = Some((peers, index)));
}

/// Whether other requests may be waiting to be polled on this serving thread: it has more
/// than one open connection (an HTTP/1.1 connection is one task, whose next request the
/// thread reads when it polls it), or more than one request in hand (each request of an
/// HTTP/2 connection is a task of its own, and so is work handed over by another thread). A
/// request about to run alone can yield first, so that requests read in the same turn of
/// the thread join its batch. False outside a serving thread.
pub fn thread_may_have_company() -> bool {
    HERE.with(|h| {
        h.borrow().as_ref().is_some_and(|(peers, here)| {
            let peer = &peers.threads[*here];
            peer.open.load(Ordering::Relaxed) > 1 || peer.backlog(peers.background) > 1
        })
    })
}

/// Runs `work` on this serving thread, or, when this thread has clearly more requests in
/// hand than another serving thread of the same server, on that one (and wakes this one
/// with the result). Outside a serving thread of [`serve_sharded`](crate::serve_sharded),
/// runs it here. A panic in `work` is resumed in the caller, wherever `work` ran; dropping
/// the caller (a client that cancels its call) drops `work`, wherever it runs.
pub async fn run_balanced<T, W>(work: W) -> T
where
    T: Send + 'static,
    W: Future<Output = T> + Send + 'static,
{
    // The common case, staying here, reads the thread-local without cloning its `Arc`.
    let moving = HERE.with(|h| {
        let here = h.borrow();
        let (peers, here) = here.as_ref()?;
        let target = peers.pick(*here);
        (target != *here).then(|| (Arc::clone(peers), *here, target))
    });
    let Some((peers, here, target)) = moving else {
        return work.await;
    };
    let _waiting = Count::up(&peers.threads[here].handed_off);
    // Serving threads keep their runtimes until every thread of the server has stopped
    // serving (see `serve_sharded`), so the other thread runs this to the end unless this
    // caller is dropped first.
    let mut handed = AbortOnDrop(peers.threads[target].runtime.spawn(work));
    match (&mut handed.0).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a serving thread dropped work handed to it: {e}"),
    }
}

/// A task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
