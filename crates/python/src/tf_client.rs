use std::collections::BTreeMap;
use std::sync::Arc;

use pyo3::exceptions::{PyRuntimeError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyString};
use soma_core::json::tensor_from_json;
use soma_core::{ErrorKind, VersionSpec};
use soma_runtime::{ModelSet, RuntimeError};

use crate::convert::{numpy_tensor, tensor_to_py, to_json};

/// The `tensorflow_client` given to `Handler.__init__` for `type: tensorflow`.
#[pyclass(name = "TensorFlowClient", module = "soma", frozen)]
pub(crate) struct TensorFlowClient {
    models: Arc<ModelSet>,
}

impl TensorFlowClient {
    pub(crate) fn new(models: Arc<ModelSet>) -> TensorFlowClient {
        TensorFlowClient { models }
    }
}

#[pymethods]
impl TensorFlowClient {
    /// Runs the model on `model_input` (a dict of input name → nested list, number, str,
    /// bytes or numpy array) and returns a dict of output name → nested lists.
    /// `model_name` is needed when the API has several models; `model_version` is
    /// "latest" (default), a number or a numeric string.
    #[pyo3(signature = (model_input, model_name = None, model_version = None))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        model_input: &Bound<'py, PyDict>,
        model_name: Option<String>,
        model_version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let version = version_spec(model_version)?;
        let servable = self
            .models
            .resolve(model_name.as_deref(), version)
            .map_err(to_py_error)?;
        let (_, signature) = servable.signature(None).map_err(to_py_error)?;
        let mut tensors = BTreeMap::new();
        let mut unknown = serde_json::Map::new();
        for (key, value) in model_input.iter() {
            let name: String = key
                .extract()
                .map_err(|_| PyValueError::new_err("model_input keys must be strings"))?;
            let Some(info) = signature.inputs.get(&name) else {
                unknown.insert(name, serde_json::Value::Null);
                continue;
            };
            let tensor = match numpy_tensor(py, &name, &value, info.dtype)? {
                Some(tensor) => tensor,
                None => tensor_from_json(&name, &to_json(&value)?, info)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?,
            };
            tensors.insert(name, tensor);
        }
        if !unknown.is_empty() {
            // Let the servable word the error (it lists the inputs the signature takes).
            let err = servable.predict_json(None, &unknown).err();
            return Err(err.map_or_else(|| PyValueError::new_err("unknown input"), to_py_error));
        }
        // TensorFlow runs without the GIL so other handler threads keep going.
        let prediction = py
            .detach(|| servable.predict(None, &tensors))
            .map_err(to_py_error)?;
        let out = PyDict::new(py);
        for (name, tensor) in &prediction.outputs {
            out.set_item(name, tensor_to_py(py, tensor)?)?;
        }
        Ok(out)
    }
}

fn version_spec(value: Option<&Bound<'_, PyAny>>) -> PyResult<VersionSpec> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(VersionSpec::Latest);
    };
    // `bool` is an `int` subclass in Python: True is not version 1.
    if value.is_instance_of::<PyInt>() && !value.is_instance_of::<PyBool>() {
        return value.extract().map(VersionSpec::Number).map_err(|_| {
            PyValueError::new_err(format!(
                "model_version {value} is not a version: versions are 64-bit integers"
            ))
        });
    }
    if let Ok(text) = value.cast::<PyString>() {
        return VersionSpec::parse(text.to_str()?)
            .map_err(|e| PyValueError::new_err(e.to_string()));
    }
    Err(PyValueError::new_err(
        "model_version must be either a parse-able numeric value or 'latest'",
    ))
}

fn to_py_error(error: RuntimeError) -> PyErr {
    match error.kind() {
        ErrorKind::InvalidArgument | ErrorKind::NotFound | ErrorKind::OutOfRange => {
            PyValueError::new_err(error.to_string())
        }
        ErrorKind::DeadlineExceeded => PyTimeoutError::new_err(error.to_string()),
        _ => PyRuntimeError::new_err(error.to_string()),
    }
}
