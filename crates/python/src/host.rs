use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use soma_metrics::Registry;
use soma_runtime::ModelSet;
use tokio::sync::oneshot;

use crate::interpreter::glue;
use crate::metrics_client::MetricsClient;
use crate::tf_client::TensorFlowClient;
use crate::{HandlerError, PyHostError};

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
        let mut ready = Vec::with_capacity(workers);
        for index in 0..workers {
            let (init_tx, init_rx) = oneshot::channel();
            let (spec, receiver) = (Arc::clone(&spec), Arc::clone(&receiver));
            std::thread::Builder::new()
                .name(format!("soma-py-{}-{index}", spec.api))
                .spawn(move || worker_thread(&spec, &receiver, init_tx))
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
    receiver: &Mutex<mpsc::Receiver<JobHandle>>,
    init: oneshot::Sender<Result<(), PyHostError>>,
) {
    let worker = match Python::attach(|py| create_worker(py, spec)) {
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
        // Waiting here holds the mutex but not the GIL: the next free thread takes the job.
        let next = receiver.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(JobHandle(job)) = next else { break };
        let result = Python::attach(|py| run(py, &worker, &job));
        let _ = job.reply.send(result);
    }
    Python::attach(|_py| drop(worker));
}

fn create_worker(py: Python<'_>, spec: &HandlerSpec) -> Result<Py<PyAny>, PyHostError> {
    let build = || -> PyResult<Py<PyAny>> {
        let glue = glue(py)?;
        let kind = if spec.models.is_some() {
            "tensorflow"
        } else {
            "python"
        };
        let env = PyDict::new(py);
        for (key, value) in &spec.env {
            env.set_item(key, value)?;
        }
        let python_path = spec
            .python_path
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned());
        let loaded = glue.call_method1(
            "load_handler",
            (
                &spec.api,
                spec.project_dir.to_string_lossy().as_ref(),
                spec.handler_path.to_string_lossy().as_ref(),
                python_path,
                env,
                kind,
            ),
        )?;
        let config_json = serde_json::Value::Object(spec.config.clone()).to_string();
        let config = py.import("json")?.call_method1("loads", (config_json,))?;
        let tf_client = match &spec.models {
            Some(models) => Some(Py::new(py, TensorFlowClient::new(Arc::clone(models)))?),
            None => None,
        };
        let metrics = Py::new(py, MetricsClient::new(spec.metrics.clone()))?;
        Ok(glue
            .getattr("Worker")?
            .call1((loaded, config, tf_client, metrics))?
            .unbind())
    };
    build().map_err(|error| {
        let (message, traceback) = describe(py, &error);
        PyHostError::Init { message, traceback }
    })
}

fn run(py: Python<'_>, worker: &Py<PyAny>, job: &Job) -> Result<serde_json::Value, HandlerError> {
    let call = || -> PyResult<String> {
        let body = PyBytes::new(py, &job.body);
        worker
            .bind(py)
            .call_method1("handle", (body, &job.content_type, &job.request_id))?
            .extract()
    };
    let text = call().map_err(|error| {
        let (message, traceback) = describe(py, &error);
        HandlerError { message, traceback }
    })?;
    serde_json::from_str(&text).map_err(|e| HandlerError {
        message: format!("the handler's result is not valid JSON: {e}"),
        traceback: None,
    })
}

/// `(message, traceback)` of a Python exception, via glue.describe.
fn describe(py: Python<'_>, error: &PyErr) -> (String, Option<String>) {
    let value = error.value(py);
    // A fetched exception keeps its traceback beside it; attach it so it can be formatted.
    let _ = value.setattr("__traceback__", error.traceback(py));
    let described = glue(py)
        .and_then(|g| g.call_method1("describe", (value,)))
        .and_then(|d| d.extract::<(String, Option<String>)>());
    described.unwrap_or_else(|_| (error.to_string(), None))
}
