use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use soma_models::ModelOptions;

/// Settings of `soma serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address of the HTTP gateway.
    pub listen: SocketAddr,
    /// Where the embedded database (queue, states, payloads, results) lives.
    pub data_dir: PathBuf,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// How long finished workloads and their results are kept (Cortex: 7 days).
    pub retention: Duration,
    /// How long running workloads may take to finish after a shutdown signal.
    pub grace: Duration,
    /// Fixed workers per API; `None` autoscales each API between its `min_replicas` and
    /// `max_replicas` (Cortex's algorithm), starting at `init_replicas`.
    pub workers: Option<usize>,
    /// Upper bound on an autoscaled API's workers in this process (one handler thread each).
    pub max_workers: usize,
    /// How often the autoscaler decides (Cortex: 10 s).
    pub autoscale_every: Duration,
    /// Longest sleep of an idle worker between queue polls. Submissions in the same process
    /// wake workers at once; those of other processes (a shared backend) are seen at the
    /// next poll, so keep it short there.
    pub poll_interval: Duration,
    /// Workloads each worker slot claims ahead while it runs one
    /// ([`soma_worker::WorkerOptions::prefetch`]); pays off on a remote backend.
    pub prefetch: usize,
    /// How long a running workload is held before another worker may take it over.
    pub lease: Duration,
    /// The project's Python environment (a venv); `None` searches for `.venv`.
    pub python_env: Option<PathBuf>,
    pub models: ModelOptions,
    /// How often model folders are polled for new and removed versions.
    pub model_poll_interval: Duration,
    /// Where TF Serving's gRPC API is served, if anywhere.
    pub grpc_listen: Option<SocketAddr>,
    /// The largest gRPC request or response message, in bytes
    /// ([`soma_grpc::GrpcOptions::max_message_bytes`]).
    pub grpc_max_message_bytes: usize,
    /// HTTP/2 keepalive PINGs on gRPC connections ([`soma_grpc::GrpcOptions::keepalive_interval`]).
    pub grpc_keepalive_interval: Option<Duration>,
    /// GOAWAY for older gRPC connections ([`soma_grpc::GrpcOptions::max_connection_age`]).
    pub grpc_max_connection_age: Option<Duration>,
    /// How long an aged gRPC connection's requests may still run
    /// ([`soma_grpc::GrpcOptions::max_connection_age_grace`]).
    pub grpc_max_connection_age_grace: Option<Duration>,
    /// TLS on the gRPC port ([`soma_grpc::GrpcOptions::tls`]).
    pub grpc_tls: Option<soma_grpc::TlsSettings>,
}

impl ServeOptions {
    pub const DEFAULT_BODY_LIMIT: usize = 32 * 1024 * 1024;
    /// Each worker slot has its own `Handler` instance (constructed at start-up), so the cap
    /// keeps start-up time and memory in check.
    pub const DEFAULT_MAX_WORKERS: usize = 4;
    pub const DEFAULT_AUTOSCALE_EVERY: Duration = Duration::from_secs(10);
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
    /// TF Serving's `--file_system_poll_wait_seconds` default.
    pub const DEFAULT_MODEL_POLL_INTERVAL: Duration = Duration::from_secs(1);
}
