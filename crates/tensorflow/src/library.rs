use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use libloading::os::unix::{RTLD_LAZY, RTLD_LOCAL};

use crate::TfError;
use crate::ffi::*;

const LIBRARY_FILE: &str = "libtensorflow_cc.so.2";

/// glibc's `RTLD_NODELETE` (`<dlfcn.h>`), which libloading does not export.
const RTLD_NODELETE: std::os::raw::c_int = 0x01000;

/// The opened TensorFlow library and the C functions soma calls.
///
/// The function pointers stay valid as long as `_library` is loaded, which is as long as
/// this struct lives; everything that calls them holds an `Arc<TensorFlow>`.
pub struct TensorFlow {
    path: PathBuf,
    pub(crate) api: Api,
    _library: libloading::Library,
}

impl std::fmt::Debug for TensorFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorFlow")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

macro_rules! api {
    ($($field:ident: $ty:ident = $symbol:literal),* $(,)?) => {
        pub(crate) struct Api { $(pub(crate) $field: $ty,)* }

        impl Api {
            fn resolve(library: &libloading::Library, path: &Path) -> Result<Api, TfError> {
                Ok(Api { $(
                    // SAFETY: the symbol is a C function of TensorFlow's C API whose signature
                    // is `$ty` (see ffi.rs, transcribed from the C headers).
                    $field: *unsafe { library.get::<$ty>(concat!($symbol, "\0").as_bytes()) }
                        .map_err(|_| TfError::MissingSymbol { path: path.to_path_buf(), symbol: $symbol })?,
                )* })
            }
        }
    };
}

api! {
    version: Version = "TF_Version",
    new_status: NewStatus = "TF_NewStatus",
    delete_status: DeleteStatus = "TF_DeleteStatus",
    get_code: GetCode = "TF_GetCode",
    message: Message = "TF_Message",
    new_graph: NewGraph = "TF_NewGraph",
    delete_graph: DeleteGraph = "TF_DeleteGraph",
    new_session_options: NewSessionOptions = "TF_NewSessionOptions",
    delete_session_options: DeleteSessionOptions = "TF_DeleteSessionOptions",
    set_config: SetConfig = "TF_SetConfig",
    new_buffer: NewBuffer = "TF_NewBuffer",
    delete_buffer: DeleteBuffer = "TF_DeleteBuffer",
    load_session_from_saved_model: LoadSessionFromSavedModel = "TF_LoadSessionFromSavedModel",
    close_session: CloseSession = "TF_CloseSession",
    delete_session: DeleteSession = "TF_DeleteSession",
    graph_operation_by_name: GraphOperationByName = "TF_GraphOperationByName",
    operation_num_outputs: OperationNumOutputs = "TF_OperationNumOutputs",
    session_run: SessionRun = "TF_SessionRun",
    allocate_tensor: AllocateTensor = "TF_AllocateTensor",
    delete_tensor: DeleteTensor = "TF_DeleteTensor",
    tensor_type: TensorType = "TF_TensorType",
    num_dims: NumDims = "TF_NumDims",
    dim: Dim = "TF_Dim",
    tensor_byte_size: TensorByteSize = "TF_TensorByteSize",
    tensor_data: TensorData = "TF_TensorData",
    string_init: StringInit = "TF_StringInit",
    string_copy: StringCopy = "TF_StringCopy",
    string_get_data_pointer: StringGetDataPointer = "TF_StringGetDataPointer",
    string_get_size: StringGetSize = "TF_StringGetSize",
}

/// The library opened by [`TensorFlow::global`]; retried on the next call after a failure.
static GLOBAL: Mutex<Option<Arc<TensorFlow>>> = Mutex::new(None);

impl TensorFlow {
    /// Opens `libtensorflow_cc.so.2` (a file, or a folder that holds it).
    pub fn load(path: &Path) -> Result<Arc<TensorFlow>, TfError> {
        let file = if path.is_dir() {
            path.join(LIBRARY_FILE)
        } else {
            path.to_path_buf()
        };
        // RTLD_NODELETE: TensorFlow's libraries must never be unloaded. Their static
        // initialisers register ops, kernels and at-exit handlers in process-wide tables; a
        // `dlclose` (when this function fails on a wrong library, or a `TensorFlow` is dropped)
        // would leave those pointing at unmapped code, and the next open would register them
        // twice, which crashes at exit with a double free.
        let flags = RTLD_LAZY | RTLD_LOCAL | RTLD_NODELETE;
        // SAFETY: opening TensorFlow runs its static initialisers, which are designed to run
        // on dlopen (Python's `import tensorflow` does the same).
        let library = unsafe { libloading::os::unix::Library::open(Some(&file), flags) }
            .map(libloading::Library::from)
            .map_err(|e| TfError::LibraryOpen {
                path: file.clone(),
                message: e.to_string(),
            })?;
        let api = Api::resolve(&library, &file)?;
        Ok(Arc::new(TensorFlow {
            path: file,
            api,
            _library: library,
        }))
    }

    /// The process-wide library: found with [`locate`] and opened once (opening costs
    /// 0.1–0.2 s and maps ~800 MB of code, so it is shared by every model).
    ///
    /// Once a library is open, later calls return it and ignore `explicit`. A failure is
    /// not remembered: the next call looks again (so installing TensorFlow, or fixing
    /// `SOMA_TENSORFLOW_LIB`, does not need a restart). That retry is why this is a
    /// `Mutex<Option<_>>` rather than a `OnceLock` (whose fallible init is unstable); the
    /// lock is held while opening, so concurrent first callers open the library once.
    pub fn global(explicit: Option<&Path>) -> Result<Arc<TensorFlow>, TfError> {
        let mut global = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tf) = global.as_ref() {
            return Ok(Arc::clone(tf));
        }
        let tf = TensorFlow::load(&locate(explicit)?)?;
        *global = Some(Arc::clone(&tf));
        Ok(tf)
    }

    /// The library file in use.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// TensorFlow's version, e.g. `2.21.0`.
    pub fn version(&self) -> String {
        // SAFETY: TF_Version returns a static NUL-terminated string.
        unsafe { CStr::from_ptr((self.api.version)()) }
            .to_string_lossy()
            .into_owned()
    }

    /// Runs `f` with a fresh TF_Status and turns a non-OK status into `(code, message)`.
    pub(crate) fn with_status<T>(
        &self,
        f: impl FnOnce(*mut TF_Status) -> T,
    ) -> (T, Option<(i32, String)>) {
        // SAFETY: a status is created, used by `f` only, read, and deleted here.
        unsafe {
            let status = (self.api.new_status)();
            let value = f(status);
            let code = (self.api.get_code)(status);
            let failure = (code != 0).then(|| {
                let message = CStr::from_ptr((self.api.message)(status))
                    .to_string_lossy()
                    .into_owned();
                (code, message)
            });
            (self.api.delete_status)(status);
            (value, failure)
        }
    }
}

/// Finds `libtensorflow_cc.so.2`, in this order:
/// 1. `explicit` (the file, or a folder holding it), if given; nothing else is tried;
/// 2. else `SOMA_TENSORFLOW_LIB` (file or folder), if set; nothing else is tried;
/// 3. `$VIRTUAL_ENV/lib/python3*/site-packages/tensorflow/`;
/// 4. `.venv/lib/python3*/site-packages/tensorflow/` in the current folder and each of its
///    ancestors, then in the running executable's folder and each of its ancestors.
///
/// The error lists every place tried and how to fix it.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, TfError> {
    let mut tried = Vec::new();
    let mut check = |candidate: PathBuf| -> Option<PathBuf> {
        // A folder, or a missing path that does not look like a file name: the library
        // would be inside it.
        let file = if candidate.is_dir() || candidate.extension().is_none() && !candidate.exists() {
            candidate.join(LIBRARY_FILE)
        } else {
            candidate
        };
        if file.is_file() {
            return Some(file);
        }
        tried.push(file);
        None
    };
    if let Some(path) = explicit {
        return check(path.to_path_buf()).ok_or(TfError::LibraryNotFound { tried });
    }
    if let Some(path) = std::env::var_os("SOMA_TENSORFLOW_LIB").filter(|p| !p.is_empty()) {
        return check(PathBuf::from(path)).ok_or(TfError::LibraryNotFound { tried });
    }
    let mut envs: Vec<PathBuf> = std::env::var_os("VIRTUAL_ENV")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        roots.push(dir);
    }
    for root in roots {
        envs.extend(root.ancestors().map(|a| a.join(".venv")));
    }
    let mut seen = std::collections::HashSet::new();
    envs.retain(|env| seen.insert(env.clone()));
    for env in envs {
        for site in site_packages(&env) {
            if let Some(found) = check(site.join("tensorflow")) {
                return Ok(found);
            }
        }
    }
    Err(TfError::LibraryNotFound { tried })
}

/// `<env>/lib/python3*/site-packages` folders (or the pattern itself, for the error message).
fn site_packages(env: &Path) -> Vec<PathBuf> {
    let lib = env.join("lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages"))
        .collect();
    found.sort();
    if found.is_empty() {
        found.push(lib.join("python3*").join("site-packages"));
    }
    found
}
