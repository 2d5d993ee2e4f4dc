//! One `Handler` instance: loading it (through `glue.py`, which does the Cortex signature
//! checks), calling it, and turning its result or exception into Rust values. Everything
//! here runs on a handler thread with the GIL held.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::convert::result_to_json;
use crate::host::HandlerSpec;
use crate::interpreter::glue;
use crate::metrics_client::MetricsClient;
use crate::tf_client::TensorFlowClient;
use crate::{HandlerError, PyHostError};

/// Imports the handler module (shared by the host's workers under `module_name`) and
/// constructs one `Handler`, wrapped in glue's `Worker` (which keeps its event loop).
pub(crate) fn create(
    py: Python<'_>,
    spec: &HandlerSpec,
    module_name: &str,
) -> Result<Py<PyAny>, PyHostError> {
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
                module_name,
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

/// Runs one workload on `worker` and returns the result as JSON.
pub(crate) fn call(
    py: Python<'_>,
    worker: &Py<PyAny>,
    body: &[u8],
    content_type: &str,
    request_id: &str,
) -> Result<serde_json::Value, HandlerError> {
    let result = worker
        .bind(py)
        .call_method1("handle", (PyBytes::new(py, body), content_type, request_id))
        .map_err(|error| {
            let (message, traceback) = describe(py, &error);
            HandlerError { message, traceback }
        })?;
    result_to_json(&result).map_err(|detail| {
        let type_name = result
            .get_type()
            .name()
            .map_or_else(|_| "object".to_string(), |n| n.to_string());
        HandlerError {
            message: format!(
                "handler returned {type_name}, which is not JSON-serialisable: {detail}"
            ),
            traceback: None,
        }
    })
}

/// `(message, traceback)` of a Python exception, via glue.describe: `"<ExcType>: <msg>"`
/// and the formatted traceback, or only the message for soma's own user-facing errors.
fn describe(py: Python<'_>, error: &PyErr) -> (String, Option<String>) {
    let value = error.value(py);
    // A fetched exception keeps its traceback beside it; attach it so it can be formatted.
    let _ = value.setattr("__traceback__", error.traceback(py));
    let described = glue(py)
        .and_then(|g| g.call_method1("describe", (value,)))
        .and_then(|d| d.extract::<(String, Option<String>)>());
    described.unwrap_or_else(|_| (error.to_string(), None))
}
