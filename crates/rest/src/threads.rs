//! Serving the router on one thread per core ([`soma_net::serve_sharded`]).
//!
//! An HTTP/1.1 connection carries one request at a time, so nothing is lost by keeping
//! each connection on one thread: that thread reads, predicts (quick models run in place,
//! batched with the other requests it has read) and writes without waking any other. Slow
//! models still run on a blocking pool (each runtime has its own), so one thread's busy
//! connections do not hold up the others' reads. Each connection starts in the quick lane
//! (`quick_lane.rs`) and moves to hyper at its first request the lane does not take.
//! Measured in BENCHMARKS.md §4.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use soma_net::{Connections, Stop, Threading, WriteDeadline};
use tokio::net::TcpListener;

use crate::quick_lane::{self, QuickLane};

/// Serves `app` on `listener`, with `lane`'s requests answered in the quick lane, until
/// `shutdown` resolves, then lets the open requests finish. With `threading.threads` 0,
/// serves them on the caller's runtime.
pub async fn serve_on_threads<L: QuickLane>(
    listener: TcpListener,
    app: Router,
    lane: L,
    threading: Threading,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let lane = Arc::new(lane);
    if threading.threads == 0 {
        return serve_shared(listener, app, lane, threading.idle_timeout, shutdown).await;
    }
    let idle_timeout = threading.idle_timeout;
    let serve = move |connections, stop| {
        serve_thread(
            connections,
            stop,
            app.clone(),
            Arc::clone(&lane),
            idle_timeout,
        )
    };
    soma_net::serve_sharded(listener, threading, "soma-rest", serve, shutdown).await
}

/// One serving thread: each connection starts in the quick lane.
async fn serve_thread<L: QuickLane>(
    connections: Connections,
    stop: Stop,
    app: Router,
    lane: Arc<L>,
    idle_timeout: Option<Duration>,
) -> io::Result<()> {
    connections
        .serve_each(stop, |connection, stop| {
            let lane = Arc::clone(&lane);
            let connection = WriteDeadline::new(connection, idle_timeout);
            quick_lane::serve_connection(connection, app.clone(), lane, stop, idle_timeout)
        })
        .await
}

/// Serves `app` on the caller's runtime, a task per connection, each starting in the quick
/// lane as on the serving threads, until `shutdown`; then lets every connection finish its
/// requests and waits for them.
async fn serve_shared<L: QuickLane>(
    listener: TcpListener,
    app: Router,
    lane: Arc<L>,
    idle_timeout: Option<Duration>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let serve = |io, stop| {
        let connection = WriteDeadline::new(io, idle_timeout);
        quick_lane::serve_connection(
            connection,
            app.clone(),
            Arc::clone(&lane),
            stop,
            idle_timeout,
        )
    };
    soma_net::serve_here(listener, serve, shutdown).await;
    Ok(())
}
