//! Serving the router on one thread per core ([`soma_net::serve_sharded`]).
//!
//! An HTTP/1.1 connection carries one request at a time, so nothing is lost by keeping
//! each connection on one thread: that thread reads, predicts (quick models run in place,
//! batched with the other requests it has read) and writes without waking any other. Slow
//! models still run on a blocking pool (each runtime has its own), so one thread's busy
//! connections do not hold up the others' reads. Measured in BENCHMARKS.md §4.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use axum::Router;
use soma_net::{Connection, Connections, Threading};
use tokio::net::TcpListener;

/// Serves `app` on `listener` until `shutdown` resolves, then lets the open requests
/// finish; on the caller's runtime if `threading.threads` is 0.
pub async fn serve_on_threads(
    listener: TcpListener,
    app: Router,
    threading: Threading,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    if threading.threads == 0 {
        return axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
    }
    let serve = move |connections, stop: soma_net::Stop| {
        axum::serve(HandedOver(connections), app.clone())
            .with_graceful_shutdown(stop.requested())
            .into_future()
    };
    soma_net::serve_sharded(listener, threading, "soma-rest", serve, shutdown).await
}

/// A serving thread's connections, as axum takes them.
struct HandedOver(Connections);

impl axum::serve::Listener for HandedOver {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        self.0.accept().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.0.local_addr())
    }
}
