use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::PyModule;

use crate::PyHostError;

static STARTED: OnceLock<Result<PathBuf, PyHostError>> = OnceLock::new();
static GLUE: OnceLock<Py<PyModule>> = OnceLock::new();

/// Starts CPython from a virtual environment, once per process; later calls return the
/// first result. The venv is `explicit`, else `SOMA_PYTHON_ENV`, else `$VIRTUAL_ENV`, else a
/// `.venv` in the current folder, its parents, or above the running executable.
pub fn init_python(explicit: Option<&Path>) -> Result<PathBuf, PyHostError> {
    STARTED.get_or_init(|| start(&find_venv(explicit)?)).clone()
}

fn find_venv(explicit: Option<&Path>) -> Result<PathBuf, PyHostError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = explicit {
        candidates.push(path.to_path_buf());
    } else {
        candidates.extend(std::env::var_os("SOMA_PYTHON_ENV").map(PathBuf::from));
        candidates.extend(std::env::var_os("VIRTUAL_ENV").map(PathBuf::from));
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf));
        for root in std::env::current_dir().ok().into_iter().chain(exe_dir) {
            for venv in root.ancestors().map(|a| a.join(".venv")) {
                // The two walks meet at their common ancestors: each is looked at once.
                if !candidates.contains(&venv) {
                    candidates.push(venv);
                }
            }
        }
    }
    candidates
        .iter()
        .find(|c| c.join("pyvenv.cfg").is_file() && c.join("bin").join("python").exists())
        .cloned()
        .ok_or(PyHostError::EnvNotFound { tried: candidates })
}

/// Initialises CPython with `program_name = <venv>/bin/python`, which makes CPython find the
/// venv's `pyvenv.cfg`, its base installation's standard library and the venv's
/// site-packages, without PYTHONHOME and whatever `python3` is on PATH.
fn start(venv: &Path) -> Result<PathBuf, PyHostError> {
    let program = venv.join("bin").join("python");
    let failed = |message: String| PyHostError::Interpreter {
        venv: venv.to_path_buf(),
        message,
    };
    let c_program =
        CString::new(program.as_os_str().as_encoded_bytes()).map_err(|e| failed(e.to_string()))?;
    // SAFETY: runs once (OnceLock) before any other use of Python in this process; the
    // PyConfig is initialised by CPython, used, and cleared; signal handlers stay Rust's.
    // After initialisation the GIL is released so that any thread can attach.
    #[allow(unsafe_code)]
    unsafe {
        use pyo3::ffi;
        if ffi::Py_IsInitialized() != 0 {
            return Err(failed(
                "Python was already initialised in this process".into(),
            ));
        }
        let mut config = std::mem::MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        let status =
            ffi::PyConfig_SetBytesString(&mut config, &mut config.program_name, c_program.as_ptr());
        if ffi::PyStatus_Exception(status) != 0 {
            ffi::PyConfig_Clear(&mut config);
            return Err(failed("cannot set the program name".into()));
        }
        let status = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            return Err(failed("Py_InitializeFromConfig failed".into()));
        }
        ffi::PyEval_SaveThread();
    }
    Python::attach(|py| glue(py).map(drop)).map_err(|e| failed(e.to_string()))?;
    Ok(venv.to_path_buf())
}

/// soma's Python helper module (`glue.py`), loaded once.
pub(crate) fn glue(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    if let Some(module) = GLUE.get() {
        return Ok(module.bind(py).clone());
    }
    let code = CString::new(include_str!("glue.py"))
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    let module = PyModule::from_code(py, &code, c"soma_glue.py", c"soma_glue")?;
    let _ = GLUE.set(module.clone().unbind());
    Ok(module)
}
