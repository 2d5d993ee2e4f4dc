//! Serving TCP connections on one thread per core, each thread with its own single-threaded
//! tokio runtime; shared by soma's REST and gRPC front ends.
//!
//! Why: on tokio's shared work-stealing runtime, every request that wakes a connection task
//! also wakes an idle worker to look for work to steal; on small models it mostly finds
//! none and goes back to sleep. Those wake-ups were a fifth of the REST server's CPU at 8
//! connections (`perf`: the scheduler's lock and context-switch symbols). With
//! [`serve_sharded`], an acceptor hands every new connection to the thread with the fewest
//! open connections, and that thread reads, predicts (quick models run in place, batched
//! with the other requests it has read) and writes without waking any other.
//!
//! * [`Threading::busy_poll`]: a thread that has just read a request or sent an answer
//!   keeps polling its sockets for a while instead of sleeping: on one connection this cuts
//!   the time to pick up the next request by a third, at the cost of a core kept busy
//!   while requests keep coming. At most one thread fewer than the cores spins at a time
//!   (process-wide), so a spinning server never takes every core from its clients and
//!   its other threads.
//! * [`run_balanced`]: what is given up by keeping a connection on one thread is stealing.
//!   An HTTP/2 connection carries many requests at once, and one busy connection would
//!   keep one core busy while the other idles; a front end runs each request's work through
//!   `run_balanced`, which moves it to the least busy thread when its own has clearly more
//!   in hand.
//! * [`thread_may_have_company`]: a thread polls its ready connections one after another, so
//!   a request about to run a batch alone asks whether other connections on its thread may
//!   have requests to add, and yields first if so.
//!
//! Measured in BENCHMARKS.md §4. [`serve_here`] serves a listener on the caller's runtime
//! instead (servers without threads of their own, Unix sockets), with the same [`Stop`].

mod balance;
mod busy_poll;
mod connection;
mod here;
mod shards;
mod write_deadline;

use std::time::Duration;

pub use balance::{run_balanced, thread_may_have_company};
pub use connection::Connection;
pub use here::{Listener, serve_here};
pub use shards::{Connections, Stop, serve_sharded};
pub use write_deadline::WriteDeadline;

/// How [`serve_sharded`] spreads connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Threading {
    /// Threads that serve connections, each with a single-threaded runtime (see the crate
    /// docs); 0: the caller's runtime serves them all.
    pub threads: usize,
    /// After a thread reads a request or sends an answer it keeps polling its sockets,
    /// without sleeping, for this long: the next request of a busy connection is read at
    /// once instead of after a wake-up (on a virtual machine, tens of microseconds). Costs
    /// CPU that other processes on the machine may need, so at most one thread fewer than
    /// the cores spins at once. Zero: sleep as soon as there is nothing to do.
    pub busy_poll: Duration,
    /// For front ends that read requests one at a time (REST): a connection that sends
    /// nothing for this long while the server waits for its next request, or for the rest
    /// of one, is closed, so idle and stalled clients cannot hold every file descriptor.
    /// `None`: never. The front end applies it; a prediction in progress is not waiting.
    pub idle_timeout: Option<Duration>,
}

impl Threading {
    /// How long a serving thread polls after its last read or write by default: about one
    /// connection's turnaround on loopback (a client that sends its next request at once),
    /// short enough that a thread with nothing coming soon goes to sleep (BENCHMARKS.md §4).
    pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(30);

    /// How long a REST connection may send nothing while it is waited for: longer than
    /// the idle timeouts of common load balancers (AWS's 60 s), which must close an idle
    /// connection before the server does, or a request sent as the server closes is lost.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);

    /// A thread per core, each polling for `busy_poll` after its I/O.
    pub fn per_core(busy_poll: Duration) -> Threading {
        Threading {
            threads: cores(),
            busy_poll,
            idle_timeout: Some(Threading::DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// The cores this process may run on (1 if unknown).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
