//! The gRPC lane: plaintext HTTP/2 connections served without hyper's HTTP/2 server.
//!
//! Why: on iris a prediction costs a few microseconds, and on one channel of 8 streams
//! h2's server (its shared stream store, a task and a body channel per stream) with hyper
//! and tonic's body plumbing took more CPU than the prediction (`perf`, BENCHMARKS.md §4):
//! gRPC served fewer requests than soma's REST. TF Serving's clients send unary calls
//! only, so a server for them needs far less than a general HTTP/2 server: read a
//! request's headers and its whole body, answer with headers, one body and trailers.
//!
//! What the lane does itself (`connection`): the connection preface and SETTINGS, stream
//! states and ids, flow control both ways, PING, RST_STREAM, GOAWAY (graceful shutdown,
//! `max_connection_age`), keepalive pings, the message size limit. h2's own framing layer
//! (`h2::Codec`, public with h2's `unstable` feature) reads and writes the frames, with
//! HPACK, CONTINUATION and frame size checks.
//!
//! What answers (`answer`): `Predict` with a plain (uncompressed) message calls the
//! PredictionService directly; every other request goes through tonic's router, as under a
//! tonic server (tests compare the two servers' answers). A connection's only request runs in the
//! connection's own task (as a REST request does in the quick lane: on a connection of one
//! stream at a time, h2load with 8 or 64 connections, 4–8% less server CPU per request than
//! in a task of its own); with others in flight, each runs as a task of its own, as under
//! hyper, so that they run side by side and `soma_net` can move them to another thread.
//!
//! Connections come from `soma_net`'s serving threads (TCP) or from [`serve_here`] on the
//! caller's runtime (the Unix socket, and TCP for a server without serving threads,
//! `--grpc_io_threads=0`), over TLS when it is on ([`serve_accepted`]).

mod answer;
mod connection;

use std::sync::Arc;
use std::time::Duration;

use tonic::body::Body;
use tonic::codegen::http::Response;
use tonic::service::Routes;
use tower::Layer as _;
use tower::util::MapResponse;

use soma_grpc_proto::tensorflow::serving::prediction_service_server::PredictionService;

use connection::serve_connection;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::tls::TlsSettings;

/// tonic's router behind the size-limit status rewrite.
type Router = MapResponse<Routes, fn(Response<Body>) -> Response<Body>>;

/// What every connection of one server shares.
pub(crate) struct Lane {
    /// Answers plain Predicts (soma's own service, or the null server's).
    pub(crate) predictions: Arc<dyn PredictionService>,
    /// Every service of the server, as tonic's server would route them, behind `limit`'s
    /// rewrite of size-limit statuses.
    pub(crate) router: Router,
    /// The largest request message (and, checked by the services, response).
    pub(crate) max_message_bytes: usize,
    /// PING every this long; close the connection if the answer takes longer than the second.
    pub(crate) keepalive: Option<(Duration, Duration)>,
    /// Send GOAWAY once a connection is this old.
    pub(crate) max_connection_age: Option<Duration>,
    /// Then close it once this has passed too.
    pub(crate) max_connection_age_grace: Option<Duration>,
    /// Drop a connection whose answers have waited this long to be sent without a byte
    /// moving. `None`: never.
    pub(crate) stalled_send_timeout: Option<Duration>,
    /// Request bytes held at once, over every connection.
    pub(crate) request_bytes: Arc<crate::held::RequestBytes>,
}

impl Lane {
    pub(crate) fn new(
        predictions: Arc<dyn PredictionService>,
        routes: Routes,
        options: &crate::GrpcOptions,
        request_bytes: Arc<crate::held::RequestBytes>,
    ) -> Arc<Lane> {
        let keepalive = options.keepalive_interval.map(|interval| {
            let timeout = options.keepalive_timeout.unwrap_or(Duration::from_secs(20));
            (interval, timeout)
        });
        Arc::new(Lane {
            predictions,
            router: crate::limit::layer().layer(routes),
            max_message_bytes: options.max_message_bytes,
            keepalive,
            max_connection_age: options.max_connection_age,
            max_connection_age_grace: options.max_connection_age_grace,
            stalled_send_timeout: options.stalled_send_timeout,
            request_bytes,
        })
    }
}

/// Serves one accepted connection until it closes, after soma's TLS handshake when `tls` is
/// on (a failed handshake closes it).
pub(crate) async fn serve_accepted<T>(
    io: T,
    lane: Arc<Lane>,
    tls: Option<TlsSettings>,
    stop: soma_net::Stop,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match tls {
        None => serve_connection(io, lane, stop).await,
        Some(tls) => {
            if let Some(io) = tls.accept(io).await {
                serve_connection(io, lane, stop).await;
            }
        }
    }
}

/// Serves `listener`'s connections on the caller's runtime until `shutdown`; then accepts
/// no more and returns once every open connection has answered its requests and closed.
pub(crate) async fn serve_here(
    listener: impl soma_net::Listener<Io: AsyncRead + AsyncWrite + Unpin>,
    lane: Arc<Lane>,
    tls: Option<TlsSettings>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let serve = |io, stop| serve_accepted(io, Arc::clone(&lane), tls.clone(), stop);
    soma_net::serve_here(listener, serve, shutdown).await;
}
