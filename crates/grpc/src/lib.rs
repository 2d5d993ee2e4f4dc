//! TensorFlow Serving-compatible gRPC for soma.
//!
//! [`serve`] runs tonic services for `tensorflow.serving.PredictionService` (Predict,
//! GetModelMetadata, Classify, Regress, MultiInference) and `tensorflow.serving.ModelService`
//! (GetModelStatus, HandleReloadConfigRequest) over an `Arc<dyn ModelHub>`; the messages
//! come from `soma-grpc-proto`, so TF Serving's own clients work unchanged.
//!
//! Design:
//! * [`codec`]: `TensorProto` <-> `soma_core::Tensor`, both the typed fields and
//!   `tensor_content`, TF's one-value broadcasting, and errors instead of TF's silent
//!   padding. Outputs use the typed fields, as TF Serving does.
//! * `spec`: `ModelSpec` -> hub lookup, with TF Serving's messages (`Servable not found for
//!   request: Latest(m)`, `Unrecognized servable version label: l`, ...).
//! * `predict`, [`examples`]: the request semantics of TF Serving (default signature,
//!   input/output alias checks, `output_filter`, SignatureDefMap in `google.protobuf.Any`,
//!   tf.Example batches for classify/regress).
//! * [`status::grpc_code`]: the one mapping from `soma_core::ErrorKind` to gRPC codes.
//! * Concurrency: the servable is resolved on the async runtime (a map lookup under a short
//!   read lock), then decoding, TensorFlow and encoding run on tokio's blocking pool (quick
//!   models: in place). There is no lock around predictions; TensorFlow's own thread pools
//!   do the parallel work.
//! * Threads: with [`GrpcOptions::threading`], TCP connections are served on threads of
//!   their own (`soma_net`), and a request of a busy connection moves to the least busy
//!   thread; without, on the caller's runtime.
//! * `lane`: every connection, TCP or Unix socket, plaintext or TLS, is served by soma's
//!   own HTTP/2 server for unary calls, which answers plain Predicts directly and everything
//!   else through tonic's router (tonic's services, not its server).
//! * Metrics: Predict, Classify, Regress and MultiInference are counted by status and timed
//!   in [`GrpcOptions::metrics`], as REST requests are (`entrypoint="GRPC"`).
//! * Message size: one limit for requests and responses ([`GrpcOptions::max_message_bytes`]);
//!   a request over it gets RESOURCE_EXHAUSTED, as from a C++ gRPC server, and so does a
//!   prediction whose response would be over it (checked before sending, with a message
//!   that names the limit).
//! * Compression: requests compressed with gzip or deflate (`grpc-encoding`) are accepted,
//!   as a C++ gRPC server accepts them, and held to the same size limit once inflated.
//!   Responses are sent uncompressed (gRPC's server default; TF Serving sets no other).
//! * `health`: `grpc.health.v1.Health` if [`GrpcOptions::health`], SERVING as its
//!   [`HealthReport`] says: while the server runs (TF Serving's), or while every model has
//!   an AVAILABLE version.
//! * [`warmup`]: replays a version's recorded warm-up requests (TF Serving's
//!   `assets.extra/tf_serving_warmup_requests`) before it serves, through the code above.
//! * Connections: optional HTTP/2 keepalive pings and a maximum connection age
//!   ([`GrpcOptions`]), as gRPC servers take them from channel arguments.
//! * [`tls`]: optional TLS on every listener, with or without client certificates (TF
//!   Serving's `--ssl_config_file`), checked before the server starts.

pub mod codec;
pub mod examples;
mod health;
mod held;
mod inflate;
mod lane;
mod limit;
mod models;
mod predict;
mod service;
mod spec;
pub mod status;
mod tfrecord;
pub mod tls;
pub mod warmup;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lane::Lane;
use soma_grpc_proto::grpc::health::v1::health_server::HealthServer;
use soma_grpc_proto::tensorflow::serving::model_service_server::ModelServiceServer;
use soma_grpc_proto::tensorflow::serving::prediction_service_server::{
    PredictionService, PredictionServiceServer,
};
use soma_metrics::Registry;
use soma_runtime::{ConcurrencyLimit, ModelHub};
use tokio::net::{TcpListener, UnixListener};
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;

pub use health::HealthReport;
pub use soma_net::Threading;
pub use status::grpc_code;
pub use tls::{TlsError, TlsSettings};

/// Settings of the gRPC server.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// The largest request or response message, in bytes. TF Serving allows `i32::MAX`.
    pub max_message_bytes: usize,
    /// Request bytes held at once over every connection of the listener (the bodies
    /// received, until each request's work ends); a request that would go past it fails with
    /// RESOURCE_EXHAUSTED. Never less than one largest message: see
    /// [`GrpcOptions::request_bytes_budget`].
    pub max_request_bytes_in_flight: usize,
    /// Where inference requests are counted and timed (TF Serving's `request_count`, with
    /// `entrypoint="GRPC"`); share it with the REST front end's to serve both on `/metrics`.
    pub metrics: Registry,
    /// How often to send an HTTP/2 PING on a connection (gRPC's `grpc.keepalive_time_ms`);
    /// a peer that does not answer within `keepalive_timeout` is disconnected. `None`: no pings.
    pub keepalive_interval: Option<Duration>,
    /// How long to wait for a PING's answer; `None`: 20 s.
    pub keepalive_timeout: Option<Duration>,
    /// Connections older than this are asked to go away (HTTP/2 GOAWAY): clients open a new
    /// one for their next requests, so they spread over the servers behind a load balancer
    /// (`grpc.max_connection_age_ms`); requests already running finish. `None`: connections
    /// live as long as their clients keep them.
    pub max_connection_age: Option<Duration>,
    /// How long the requests of a connection asked to go away for its age may still run;
    /// then the connection is closed and the ones left fail (`grpc.max_connection_age_grace_ms`).
    /// `None`: as long as they take (gRPC's default).
    pub max_connection_age_grace: Option<Duration>,
    /// A connection whose answers have waited this long to be sent, with none of their
    /// bytes moving (the client does not read them, or gives no flow-control window for
    /// them), is dropped, with its requests. `None`: never.
    /// Default: [`DEFAULT_STALLED_SEND_TIMEOUT`].
    pub stalled_send_timeout: Option<Duration>,
    /// At most this many inference RPCs are processed at once; the others wait (TF
    /// Serving's `--grpc_max_threads`). `None`: no limit. Servers given clones of one
    /// limit share it.
    pub max_concurrent: Option<ConcurrencyLimit>,
    /// Also serve `grpc.health.v1.Health` (TF Serving's `--enable_grpc_healthcheck_service`),
    /// reporting as said.
    pub health: Option<HealthReport>,
    /// Check that a signature's `method_name` fits the API that runs it (TF Serving's
    /// `--enable_signature_method_name_check`, off by default): Classify needs
    /// `tensorflow/serving/classify`, Regress `.../regress`, Predict one of the three. Off,
    /// TensorFlow 2 models (which save every signature as `.../predict`) can be classified.
    pub check_signature_method_names: bool,
    /// TLS on the listener (TF Serving applies its `--ssl_config_file` to the TCP port and
    /// the Unix socket alike). `None`: plaintext HTTP/2.
    pub tls: Option<TlsSettings>,
    /// Threads that serve TCP connections, each with its own (`soma_net`), and their busy
    /// polling. A connection stays on its thread; the requests of a connection that
    /// carries more at once than its thread keeps up with move to the least busy thread
    /// (decoding and the RPC's work; the HTTP/2 framing stays). Zero threads: the caller's
    /// runtime serves every connection (and the Unix socket always).
    pub threading: Threading,
}

impl Default for GrpcOptions {
    fn default() -> GrpcOptions {
        GrpcOptions {
            max_message_bytes: i32::MAX as usize,
            max_request_bytes_in_flight: DEFAULT_REQUEST_BYTES_IN_FLIGHT,
            metrics: Registry::new(),
            keepalive_interval: None,
            keepalive_timeout: None,
            max_connection_age: None,
            max_connection_age_grace: None,
            stalled_send_timeout: Some(DEFAULT_STALLED_SEND_TIMEOUT),
            max_concurrent: None,
            health: None,
            check_signature_method_names: false,
            tls: None,
            threading: Threading::default(),
        }
    }
}

impl GrpcOptions {
    /// The request bytes the server holds at once: [`GrpcOptions::max_request_bytes_in_flight`],
    /// or, if that is smaller, one largest message with its 5-byte gRPC prefix, so that every
    /// message the size limit allows can be received when nothing else is.
    pub fn request_bytes_budget(&self) -> usize {
        self.max_request_bytes_in_flight
            .max(self.max_message_bytes.saturating_add(5))
    }
}

/// The default [`GrpcOptions::max_request_bytes_in_flight`]: 2 GiB, TF Serving's largest
/// message. Decoding a request takes up to about as much again (typed values are read into a
/// list, then into the tensor), so at most ~4–6 GB are taken by requests being received and
/// decoded at once.
pub const DEFAULT_REQUEST_BYTES_IN_FLIGHT: usize = 2 << 30;

/// The default [`GrpcOptions::stalled_send_timeout`]: 75 s, as REST's idle timeout, longer
/// than any pause a client that reads its answers makes.
pub const DEFAULT_STALLED_SEND_TIMEOUT: Duration = Duration::from_secs(75);

/// Why the gRPC server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("gRPC server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the gRPC server accepts connections: a TCP port, or a Unix socket (TF Serving's
/// `--grpc_socket_path`, for clients on the same machine).
#[derive(Debug)]
pub enum GrpcListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl From<TcpListener> for GrpcListener {
    fn from(listener: TcpListener) -> GrpcListener {
        GrpcListener::Tcp(listener)
    }
}

impl From<UnixListener> for GrpcListener {
    fn from(listener: UnixListener) -> GrpcListener {
        GrpcListener::Unix(listener)
    }
}

/// A tonic service with the size limit on its messages both ways, and gzip and deflate
/// requests accepted.
macro_rules! with_limits {
    ($server:expr, $limit:expr) => {
        $server
            .max_decoding_message_size($limit)
            .max_encoding_message_size($limit)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Deflate)
    };
}

/// Serves the hub's models over gRPC on `listener` until `shutdown` resolves; in-flight
/// requests are allowed to finish. Each call is its own server: serving a TCP port and a
/// Unix socket takes two calls (with clones of one `options`, they share
/// `max_concurrent`).
pub async fn serve(
    hub: Arc<dyn ModelHub>,
    listener: impl Into<GrpcListener>,
    options: GrpcOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    let (predictions, routes) = services(hub, &options);
    serve_routes(predictions, routes, listener.into(), options, shutdown).await
}

/// The services [`serve`] serves, routed by tonic's router, for tests that hold soma's
/// HTTP/2 server to tonic's: served by tonic's server, they answer as a tonic gRPC server
/// would.
#[doc(hidden)]
pub fn tonic_routes(hub: Arc<dyn ModelHub>, options: &GrpcOptions) -> Routes {
    services(hub, options).1
}

/// soma's PredictionService, and every service of the server behind tonic's router.
fn services(hub: Arc<dyn ModelHub>, options: &GrpcOptions) -> (Arc<service::Predictions>, Routes) {
    let limit = options.max_message_bytes;
    let predictions = Arc::new(service::Predictions {
        hub: Arc::clone(&hub),
        max_response_bytes: limit,
        metrics: options.metrics.clone(),
        limit: options.max_concurrent.clone(),
        check_method_names: options.check_signature_method_names,
    });
    let mut routes = Routes::new(with_limits!(
        PredictionServiceServer::from_arc(Arc::clone(&predictions)),
        limit
    ))
    .add_service(with_limits!(
        ModelServiceServer::new(service::Models {
            hub: Arc::clone(&hub),
        }),
        limit
    ));
    if let Some(report) = options.health {
        routes = routes.add_service(HealthServer::new(health::HealthService { hub, report }));
    }
    (predictions, routes)
}

/// Serves `predictions` alone, as [`serve`] serves soma's own PredictionService (the
/// lane's direct Predict included): a way to measure the serving stack itself, with a
/// service that does no work (`soma-bench null-server`).
pub async fn serve_predictions<P: PredictionService>(
    predictions: P,
    listener: TcpListener,
    options: GrpcOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    let predictions = Arc::new(predictions);
    let routes = Routes::new(with_limits!(
        PredictionServiceServer::from_arc(Arc::clone(&predictions)),
        options.max_message_bytes
    ));
    serve_routes(predictions, routes, listener.into(), options, shutdown).await
}

/// Serves `routes` on `listener` with soma's HTTP/2 server (the lane), over TLS when it is
/// on, with `predictions` answering plain Predicts directly: TCP on serving threads, or, with
/// none, on the caller's runtime, as the Unix socket always is.
async fn serve_routes(
    predictions: Arc<dyn PredictionService>,
    routes: Routes,
    listener: GrpcListener,
    options: GrpcOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    let threading = options.threading;
    let request_bytes = held::RequestBytes::new(options.request_bytes_budget());
    let lane = Lane::new(predictions, routes, &options, request_bytes);
    let tls = options.tls;
    match listener {
        GrpcListener::Tcp(listener) if threading.threads > 0 => {
            let serve = move |connections: soma_net::Connections, stop: soma_net::Stop| {
                let (lane, tls) = (Arc::clone(&lane), tls.clone());
                connections.serve_each(stop, move |connection, stop| {
                    lane::serve_accepted(connection, Arc::clone(&lane), tls.clone(), stop)
                })
            };
            soma_net::serve_sharded(listener, threading, "soma-grpc", serve, shutdown).await?;
        }
        GrpcListener::Tcp(listener) => {
            lane::serve_here(listener, lane, tls, shutdown).await;
        }
        GrpcListener::Unix(listener) => lane::serve_here(listener, lane, tls, shutdown).await,
    }
    Ok(())
}
