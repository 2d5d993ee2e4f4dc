//! The validated configuration, with Cortex's defaults applied.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use soma_core::ModelLocation;

/// A whole cortex.yaml.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    /// The folder of the cortex.yaml (absolute): handler paths and local model paths are
    /// relative to it.
    pub project_dir: PathBuf,
    pub apis: Vec<ApiSpec>,
}

/// One API.
#[derive(Debug, Clone)]
pub struct ApiSpec {
    pub name: String,
    pub kind: ApiKind,
    pub handler: HandlerSpec,
    pub compute: Compute,
    pub autoscaling: Autoscaling,
    pub update_strategy: UpdateStrategy,
    pub networking: Networking,
}

/// Cortex's API kinds. soma runs only `AsyncAPI`; the others are recognised so that their
/// error says so instead of "unknown kind".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    AsyncApi,
}

impl fmt::Display for ApiKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AsyncAPI")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerType {
    Python,
    TensorFlow,
}

impl fmt::Display for HandlerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandlerType::Python => "python",
            HandlerType::TensorFlow => "tensorflow",
        })
    }
}

/// `handler.log_level` (default `info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone)]
pub struct HandlerSpec {
    pub handler_type: HandlerType,
    /// `handler.path`, relative to the project folder.
    pub path: PathBuf,
    pub models: Option<ModelsSpec>,
    pub config: serde_json::Map<String, serde_json::Value>,
    /// `handler.python_path`, relative to the project folder.
    pub python_path: Option<PathBuf>,
    pub image: Option<String>,
    pub tensorflow_serving_image: Option<String>,
    pub env: BTreeMap<String, String>,
    pub log_level: LogLevel,
    /// Size of the memory-backed `/dev/shm`; never more than `compute.mem`.
    pub shm_size: Option<Memory>,
    pub dependencies: Dependencies,
    pub processes_per_replica: u32,
    pub threads_per_process: u32,
    /// Server-side batching for every model of the API (an entry of `models.paths` may
    /// set its own).
    pub server_side_batching: Option<ServerSideBatching>,
}

/// `server_side_batching`: concurrent predictions on one model merged into one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSideBatching {
    /// 2..=1024, as Cortex.
    pub max_batch_size: usize,
    pub batch_interval: BatchInterval,
}

/// How long a batch waits for more requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchInterval {
    Fixed(std::time::Duration),
    /// soma extension: adapt to the arrival rate (no wait at light load).
    Auto,
}

/// `handler.dependencies`: project-relative files installed at start (all optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependencies {
    pub pip: String,
    pub conda: String,
    pub shell: String,
}

#[derive(Debug, Clone)]
pub struct ModelsSpec {
    pub source: ModelSource,
    pub signature_key: Option<String>,
    /// soma extension: TensorFlow thread pools for every model of the API.
    pub threads: ThreadPools,
}

/// `models.path` (one model), `models.paths` (named models) or `models.dir` (a folder whose
/// sub-folders are models).
#[derive(Debug, Clone)]
pub enum ModelSource {
    Single(ModelLocation),
    Named(Vec<NamedModel>),
    Dir(ModelLocation),
}

#[derive(Debug, Clone)]
pub struct NamedModel {
    pub name: String,
    pub location: ModelLocation,
    pub signature_key: Option<String>,
    pub threads: ThreadPools,
    /// Overrides `handler.server_side_batching` for this model.
    pub server_side_batching: Option<ServerSideBatching>,
}

/// soma extension (`intra_op_threads`, `inter_op_threads`): TensorFlow's thread-pool sizes.
/// Unset: one intra-op thread, and ops run in the calling thread (no inter-op pool), so a
/// run stays on its calling thread (fastest for request-sized graphs under concurrent
/// requests). 0: TensorFlow's default pool (one thread per core). n: n threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadPools {
    pub intra_op: Option<u32>,
    pub inter_op: Option<u32>,
}

/// `compute`: what one replica asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Compute {
    /// Default `200m`, at least `20m`.
    pub cpu: Cpu,
    /// At least `20Mi` when given.
    pub mem: Option<Memory>,
    pub gpu: u32,
    /// 0 or 1 (Cortex's limit), not together with `gpu`.
    pub inf: u32,
    /// `None`: any node group.
    pub node_groups: Option<Vec<String>>,
}

/// A CPU quantity as written (`200m`, `1`, `0.5`) and its value in millicores.
#[derive(Debug, Clone, PartialEq)]
pub struct Cpu {
    pub text: String,
    pub millicores: f64,
}

/// A memory quantity as written (`512Mi`, `2G`, `1048576`) and its value in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Memory {
    pub text: String,
    pub bytes: f64,
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `autoscaling`, with Cortex's defaults. soma runs `init_replicas` workers.
#[derive(Debug, Clone, PartialEq)]
pub struct Autoscaling {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub init_replicas: u32,
    pub max_replica_concurrency: u32,
    pub target_replica_concurrency: f64,
    pub window: Duration,
    pub downscale_stabilization_period: Duration,
    pub upscale_stabilization_period: Duration,
    pub max_downscale_factor: f64,
    pub max_upscale_factor: f64,
    pub downscale_tolerance: f64,
    pub upscale_tolerance: f64,
}

/// `update_strategy` (default 25% each; never both zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateStrategy {
    pub max_surge: IntOrPercent,
    pub max_unavailable: IntOrPercent,
}

/// A replica count or a percentage (0–100) of the replicas, like Kubernetes' IntOrString.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOrPercent {
    Int(u32),
    Percent(u32),
}

impl IntOrPercent {
    pub fn is_zero(self) -> bool {
        matches!(self, IntOrPercent::Int(0) | IntOrPercent::Percent(0))
    }
}

impl fmt::Display for IntOrPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrPercent::Int(n) => write!(f, "{n}"),
            IntOrPercent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Networking {
    /// Canonical: a leading `/`, no trailing `/`.
    pub endpoint: String,
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
        })
    }
}
