use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use pyo3::prelude::*;
use soma_metrics::Registry;
use soma_runtime::ModelSet;
use tokio::sync::oneshot;

use crate::handler;
use crate::{HandlerError, PyHostError};

/// Stack of a handler thread. Rust's default for spawned threads (2 MiB) is smaller than
/// what CPython's main thread normally gets (8 MiB); deep C recursion in a handler must
/// raise RecursionError, not overflow the stack and take the process down. Only touched
/// pages use memory.
const STACK_SIZE: usize = 16 << 20;

/// Makes each host's module name unique, so a second host for the same API (a reload, or
/// a test) imports its own handler.py instead of reusing the first one's module.
static HOSTS: AtomicU64 = AtomicU64::new(0);

/// What a handler host needs to load and run an API's `Handler`.
#[derive(Debug, Clone)]
pub struct HandlerSpec {
    pub api: String,
    /// The folder of the cortex.yaml; put first on `sys.path`.
    pub project_dir: PathBuf,
    /// `handler.path`, relative to `project_dir`.
    pub handler_path: PathBuf,
    /// `handler.python_path`, relative to `project_dir`, also put on `sys.path`.
    pub python_path: Option<PathBuf>,
    /// `handler.env`, set in `os.environ` before the module is imported.
    pub env: BTreeMap<String, String>,
    /// `handler.config`, given to `Handler.__init__` as `config`.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// The API's models: `Some` for `type: tensorflow` (gives `tensorflow_client`).
    pub models: Option<Arc<ModelSet>>,
    /// Where `metrics_client` records.
    pub metrics: Registry,
    /// Handler instances, each on its own thread.
    pub workers: usize,
}

struct Job {
    body: Bytes,
    content_type: String,
    request_id: String,
    reply: oneshot::Sender<Result<serde_json::Value, HandlerError>>,
}

/// Running `Handler` instances of one API, one per dedicated OS thread.
///
/// Why threads and instances: Cortex ran one workload at a time per replica, in a process
/// with one `Handler`; soma's `workers` setting plays the part of replicas, so N workers are
/// N instances, each used by one thread only (handlers need not be thread-safe). Python
/// never runs on the async runtime's threads, where a slow handler would stall unrelated
/// tasks; jobs reach a free thread through a channel and results come back on a oneshot.
/// Threads wait for the GIL like any Python thread; TensorFlow calls release it.
///
/// Dropping the host closes the job channel; each thread exits after its current job.
#[derive(Debug)]
pub struct HandlerHost {
    jobs: mpsc::Sender<JobHandle>,
    workers: usize,
}

/// Keeps `Job` out of the public Debug output.
struct JobHandle(Job);

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("request_id", &self.0.request_id)
            .finish_non_exhaustive()
    }
}

impl HandlerHost {
    /// Starts `spec.workers` threads, each importing the handler (once per process) and
    /// constructing its own `Handler`. Returns once every `__init__` succeeded, or with the
    /// first failure. Python must have been started with [`crate::init_python`].
    pub async fn start(spec: HandlerSpec) -> Result<HandlerHost, PyHostError> {
        let workers = spec.workers.max(1);
        let (jobs, receiver) = mpsc::channel::<JobHandle>();
        let receiver = Arc::new(Mutex::new(receiver));
        let spec = Arc::new(spec);
        let module_name: Arc<str> = format!(
            "soma_handler_{}_{}",
            spec.api
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>(),
            HOSTS.fetch_add(1, Ordering::Relaxed)
        )
        .into();
        let mut ready = Vec::with_capacity(workers);
        for index in 0..workers {
            let (init_tx, init_rx) = oneshot::channel();
            let (spec, receiver) = (Arc::clone(&spec), Arc::clone(&receiver));
            let module_name = Arc::clone(&module_name);
            std::thread::Builder::new()
                .name(format!("soma-py-{}-{index}", spec.api))
                .stack_size(STACK_SIZE)
                .spawn(move || worker_thread(&spec, &module_name, &receiver, init_tx))
                .map_err(|e| PyHostError::Thread(e.to_string()))?;
            ready.push(init_rx);
        }
        for init in ready {
            init.await.map_err(|_| {
                PyHostError::Thread("a handler thread ended during start-up".into())
            })??;
        }
        Ok(HandlerHost { jobs, workers })
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs one workload on a free handler thread and returns its JSON result.
    pub async fn handle(
        &self,
        body: Bytes,
        content_type: &str,
        request_id: &str,
    ) -> Result<serde_json::Value, HandlerError> {
        let (reply, result) = oneshot::channel();
        let job = Job {
            body,
            content_type: content_type.to_string(),
            request_id: request_id.to_string(),
            reply,
        };
        let gone = || HandlerError {
            message: "the handler threads have stopped".into(),
            traceback: None,
        };
        self.jobs.send(JobHandle(job)).map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }
}

fn worker_thread(
    spec: &HandlerSpec,
    module_name: &str,
    receiver: &Mutex<mpsc::Receiver<JobHandle>>,
    init: oneshot::Sender<Result<(), PyHostError>>,
) {
    // One attach for the thread's whole life, detached while idle, so the thread keeps a
    // single Python thread state. Attaching per job would create and destroy one each time
    // (PyGILState_Ensure/Release), and extensions that cache the thread state in their own
    // thread-locals (pybind11's gil_scoped_acquire, used by TensorFlow) would then use a
    // freed one: `tf.constant` crashed the process on the second call that way.
    Python::attach(|py| {
        let worker = match handler::create(py, spec, module_name) {
            Ok(worker) => {
                let _ = init.send(Ok(()));
                worker
            }
            Err(error) => {
                let _ = init.send(Err(error));
                return;
            }
        };
        loop {
            // Waiting holds the mutex but not the GIL: the next free thread takes the job.
            let next = py.detach(|| receiver.lock().unwrap_or_else(|e| e.into_inner()).recv());
            let Ok(JobHandle(job)) = next else { break };
            let result = handler::call(py, &worker, &job.body, &job.content_type, &job.request_id);
            let _ = job.reply.send(result);
        }
    });
}
