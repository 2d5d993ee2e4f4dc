//! Adapts the Python handler host to the workers' `WorkloadHandler` contract.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use soma_config::ApiSpec;
use soma_metrics::Registry;
use soma_python::{HandlerHost, HandlerSpec, PyHostError};
use soma_runtime::ModelSet;
use soma_worker::{HandlerFailure, Workload, WorkloadHandler};

#[derive(Debug)]
struct PythonHandler {
    host: HandlerHost,
}

#[async_trait]
impl WorkloadHandler for PythonHandler {
    async fn handle(&self, workload: Workload) -> Result<serde_json::Value, HandlerFailure> {
        self.host
            .handle(
                workload.payload,
                &workload.content_type,
                workload.id.as_str(),
            )
            .await
            .map_err(|e| HandlerFailure {
                message: e.message,
                traceback: e.traceback,
            })
    }
}

/// Starts the API's Python `Handler` (one instance per worker). The error message is what
/// `/readyz` shows; a Python traceback goes to the log.
pub(crate) async fn start(
    api: &ApiSpec,
    project_dir: &Path,
    models: Option<Arc<ModelSet>>,
    workers: usize,
    python_env: Option<&Path>,
    metrics: Registry,
) -> Result<Arc<dyn WorkloadHandler>, String> {
    let env = python_env.map(Path::to_path_buf);
    tokio::task::spawn_blocking(move || soma_python::init_python(env.as_deref()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let spec = HandlerSpec {
        api: api.name.clone(),
        project_dir: project_dir.to_path_buf(),
        handler_path: api.handler.path.clone(),
        python_path: api.handler.python_path.clone(),
        env: api.handler.env.clone(),
        config: api.handler.config.clone(),
        models,
        metrics,
        workers,
    };
    match HandlerHost::start(spec).await {
        Ok(host) => Ok(Arc::new(PythonHandler { host })),
        Err(PyHostError::Init { message, traceback }) => {
            if let Some(traceback) = traceback {
                tracing::error!(api = %api.name, %traceback, "Handler failed to initialise");
            }
            Err(format!("{}: {message}", api.handler.path.display()))
        }
        Err(other) => Err(other.to_string()),
    }
}
