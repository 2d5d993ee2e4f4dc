use std::collections::BTreeMap;
use std::ffi::{CString, c_char};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use soma_core::{DType, ListedSignature, SignatureDef, Tensor, TensorInfo, format_shape};

use crate::error::classify;
use crate::ffi::{TF_Graph, TF_Output, TF_Session, TF_Tensor};
use crate::proto::{config_proto, meta_graph_signatures};
use crate::tensor::{InputTensor, take_output};
use crate::{TensorFlow, TfError};

/// How one session is configured: thread-pool sizes over an optional base config.
/// `intra_op_threads`: `None` = the base config's size, or one thread (soma's default), 0 =
/// TensorFlow's default (one per core), n = n threads. `inter_op_threads`: `None` = the
/// base config's inter-op settings, or run ops in the calling thread (soma's default), 0 =
/// TensorFlow's default pool, n = n threads. soma's defaults keep each run on its calling
/// thread, fastest for request-sized graphs under concurrent requests (see `config_proto`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionOptions {
    pub intra_op_threads: Option<u32>,
    pub inter_op_threads: Option<u32>,
    /// An encoded `ConfigProto` that TensorFlow applies to the session (TF Serving's
    /// `--tensorflow_session_config_file`), with the thread sizes above written over it.
    pub base_config: Option<Arc<[u8]>>,
}

/// A SavedModel loaded into its own TensorFlow session.
pub struct SavedModel {
    pub(crate) tf: Arc<TensorFlow>,
    pub(crate) session: *mut TF_Session,
    graph: *mut TF_Graph,
    dir: PathBuf,
    signatures: BTreeMap<String, SignatureDef>,
    skipped: BTreeMap<String, String>,
    listed: BTreeMap<String, ListedSignature>,
}

// SAFETY (Send + Sync):
// * `TF_SessionRun` may be called from several threads at once on one session:
//   tensorflow/core/public/session.h says "A Session allows concurrent calls to Run(),
//   though a Session must be created / extended by a single thread"; soma creates it in
//   `load` and never extends it. `TF_SessionRun` only reads the `TF_Session` wrapper (it
//   extends the session from the graph only if the graph grew, and soma never adds nodes).
// * The graph is only read after loading: c_api.h says "Graphs are thread-safe when used
//   as directed", and `TF_GraphOperationByName` (in `prepare`) takes the graph's mutex.
// * Nothing here is tied to the thread that created it, so moving the model is fine.
// * The pointers are freed exactly once, in Drop, which needs `&mut self`, so no run can be
//   in flight; `tf` (an Arc) keeps the library mapped until then.
unsafe impl Send for SavedModel {}
unsafe impl Sync for SavedModel {}

impl std::fmt::Debug for SavedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedModel")
            .field("dir", &self.dir)
            .field("signatures", &self.signatures.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A signature resolved to graph tensors, ready to run many times.
///
/// Inputs and outputs are in a fixed order: sorted by name, as in
/// [`SignatureDef`]'s maps ([`input_names`](Self::input_names),
/// [`output_names`](Self::output_names)).
#[derive(Debug, Clone)]
pub struct PreparedSignature {
    key: String,
    /// The session it belongs to: running it on another model is refused.
    owner: usize,
    input_names: Vec<String>,
    output_names: Vec<String>,
    /// Declared dtype and shape of each input, checked before TensorFlow sees a tensor.
    input_specs: Vec<TensorInfo>,
    pub(crate) inputs: Vec<Output>,
    pub(crate) outputs: Vec<Output>,
}

impl PreparedSignature {
    /// The signature key, e.g. `serving_default`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Input names in the order [`SavedModel::run`] takes the tensors.
    pub fn input_names(&self) -> &[String] {
        &self.input_names
    }

    /// Output names in the order [`SavedModel::run`] returns them (output indexes refer
    /// to this list).
    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Output(OutputRepr);

/// `TF_Output` as plain data, so that it is `Send`/`Sync` (the operation pointer is owned
/// by the graph and only dereferenced by TensorFlow while the model is alive).
#[derive(Debug, Clone, Copy)]
struct OutputRepr {
    oper: usize,
    index: i32,
}

impl Output {
    pub(crate) fn raw(self) -> TF_Output {
        TF_Output {
            oper: self.0.oper as *mut _,
            index: self.0.index,
        }
    }
}

/// The tag sets of `dir`'s MetaGraphs, spelled `{a, b}` and joined, when none of them is
/// `tags`; `None` when one is, or when `saved_model.pb` cannot be read (TensorFlow's own
/// message then says what is wrong).
fn unmatched_tags(dir: &Path, tags: &[&str]) -> Option<String> {
    let bytes = std::fs::read(dir.join("saved_model.pb")).ok()?;
    let sets = crate::read_tag_sets(&bytes).ok()?;
    let mut wanted: Vec<&str> = tags.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    if sets
        .iter()
        .any(|set| set.iter().map(String::as_str).eq(wanted.iter().copied()))
    {
        return None;
    }
    let spelled: Vec<String> = sets
        .iter()
        .map(|set| format!("{{{}}}", set.join(", ")))
        .collect();
    Some(spelled.join(" and "))
}

impl SavedModel {
    /// Loads the MetaGraph whose tags are exactly `tags`, as a set (`serve` unless the
    /// user asks for others), from `dir`. When no MetaGraph has those tags, the error lists
    /// the tag sets the SavedModel does have.
    pub fn load(
        tf: &Arc<TensorFlow>,
        dir: &Path,
        tags: &[&str],
        options: &SessionOptions,
    ) -> Result<SavedModel, TfError> {
        let load_error = |code: i32, message: String| TfError::Load {
            path: dir.to_path_buf(),
            kind: classify(code),
            message,
        };
        let c_dir = CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| load_error(3, "the path contains a NUL byte".into()))?;
        let c_tags: Vec<CString> = tags
            .iter()
            .map(|t| CString::new(*t).unwrap_or_default())
            .collect();
        let tag_ptrs: Vec<*const c_char> = c_tags.iter().map(|t| t.as_ptr()).collect();
        let base = options.base_config.as_deref().unwrap_or_default();
        let config = config_proto(base, options.intra_op_threads, options.inter_op_threads)
            .map_err(|e| load_error(3, format!("invalid session config: {e}")))?;
        let api = &tf.api;
        // SAFETY: every object created here is either handed to the returned SavedModel or
        // deleted before returning; the C strings outlive the call.
        unsafe {
            let opts = (api.new_session_options)();
            if !config.is_empty() {
                let ((), failed) = tf.with_status(|s| {
                    (api.set_config)(opts, config.as_ptr().cast(), config.len(), s)
                });
                if let Some((code, message)) = failed {
                    (api.delete_session_options)(opts);
                    return Err(load_error(
                        code,
                        format!("invalid session options: {message}"),
                    ));
                }
            }
            let graph = (api.new_graph)();
            let meta = (api.new_buffer)();
            let (session, failed) = tf.with_status(|s| {
                (api.load_session_from_saved_model)(
                    opts,
                    std::ptr::null(),
                    c_dir.as_ptr(),
                    tag_ptrs.as_ptr(),
                    tag_ptrs.len() as i32,
                    graph,
                    meta,
                    s,
                )
            });
            (api.delete_session_options)(opts);
            if let Some((code, message)) = failed {
                (api.delete_buffer)(meta);
                (api.delete_graph)(graph);
                let message = match unmatched_tags(dir, tags) {
                    Some(have) => format!("{message} (the MetaGraphs in it are tagged {have})"),
                    None => message,
                };
                return Err(load_error(code, message));
            }
            // The MetaGraphDef buffer is ours to free (a known leak in other bindings).
            let bytes = std::slice::from_raw_parts((*meta).data.cast::<u8>(), (*meta).length);
            let signatures = meta_graph_signatures(bytes);
            (api.delete_buffer)(meta);
            // Built before checking the signatures so that Drop frees the session on error.
            let mut model = SavedModel {
                tf: Arc::clone(tf),
                session,
                graph,
                dir: dir.to_path_buf(),
                signatures: BTreeMap::new(),
                skipped: BTreeMap::new(),
                listed: BTreeMap::new(),
            };
            // TensorFlow produced this MetaGraphDef, so a decoding failure is internal (13).
            let signatures = signatures.map_err(|e| load_error(13, e.to_string()))?;
            model.signatures = signatures.runnable;
            model.skipped = signatures.skipped;
            model.listed = signatures.listed;
            Ok(model)
        }
    }

    /// Runnable signatures by key (sorted), with inputs and outputs sorted by name.
    ///
    /// Left out: `__saved_model_init_op`, and signatures that soma cannot run (a sparse or
    /// composite tensor, or a dtype such as `resource`/`variant`); those are listed with
    /// the reason in [`skipped_signatures`](Self::skipped_signatures), and
    /// [`prepare`](Self::prepare) names the reason too. The model still loads.
    pub fn signatures(&self) -> &BTreeMap<String, SignatureDef> {
        &self.signatures
    }

    /// Signatures present in the model but not runnable by soma: key → reason.
    pub fn skipped_signatures(&self) -> &BTreeMap<String, String> {
        &self.skipped
    }

    /// Every signature of the MetaGraph as its metadata lists it: the runnable ones, the
    /// skipped ones and `__saved_model_init_op` (TF Serving's `GetModelMetadata` lists all).
    pub fn listed_signatures(&self) -> &BTreeMap<String, ListedSignature> {
        &self.listed
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Resolves a signature's tensors in the graph once.
    pub fn prepare(&self, key: &str) -> Result<PreparedSignature, TfError> {
        let signature = self.signatures.get(key).ok_or_else(|| TfError::Signature {
            signature: key.to_string(),
            message: match self.skipped.get(key) {
                Some(reason) => format!("cannot be served: {reason}"),
                None => "no such signature".into(),
            },
        })?;
        let resolve =
            |infos: &BTreeMap<String, soma_core::TensorInfo>| -> Result<Vec<Output>, TfError> {
                infos
                    .values()
                    .map(|info| self.graph_output(key, &info.tensor_name))
                    .collect()
            };
        Ok(PreparedSignature {
            key: key.to_string(),
            owner: self.session as usize,
            input_names: signature.inputs.keys().cloned().collect(),
            output_names: signature.outputs.keys().cloned().collect(),
            input_specs: signature.inputs.values().cloned().collect(),
            inputs: resolve(&signature.inputs)?,
            outputs: resolve(&signature.outputs)?,
        })
    }

    fn graph_output(&self, key: &str, tensor_name: &str) -> Result<Output, TfError> {
        let (op, index) = match tensor_name.rsplit_once(':') {
            Some((op, index)) => (op, index.parse::<i32>().unwrap_or(-1)),
            None => (tensor_name, 0),
        };
        let missing = || TfError::Signature {
            signature: key.to_string(),
            message: format!("tensor {tensor_name} is not in the graph"),
        };
        let c_op = CString::new(op).map_err(|_| missing())?;
        // SAFETY: the graph is alive (owned by self) and the name is a valid C string.
        unsafe {
            let oper = (self.tf.api.graph_operation_by_name)(self.graph, c_op.as_ptr());
            if oper.is_null() || index < 0 || index >= (self.tf.api.operation_num_outputs)(oper) {
                return Err(missing());
            }
            Ok(Output(OutputRepr {
                oper: oper as usize,
                index,
            }))
        }
    }

    /// Runs a prepared signature. `inputs` follow the signature's input order (sorted by
    /// name); `outputs` selects outputs by index (all when `None`).
    pub fn run(
        &self,
        signature: &PreparedSignature,
        inputs: &[&Tensor],
        outputs: Option<&[usize]>,
    ) -> Result<Vec<Tensor>, TfError> {
        if signature.owner != self.session as usize {
            return Err(TfError::InvalidInput(format!(
                "signature '{}' was prepared for another model",
                signature.key
            )));
        }
        if inputs.len() != signature.inputs.len() {
            return Err(TfError::InvalidInput(format!(
                "signature '{}' takes {} inputs, {} were given",
                signature.key,
                signature.inputs.len(),
                inputs.len()
            )));
        }
        for ((tensor, spec), name) in inputs
            .iter()
            .zip(&signature.input_specs)
            .zip(&signature.input_names)
        {
            check_input(&signature.key, name, tensor, spec)?;
        }
        let selected: Vec<TF_Output> = match outputs {
            None => signature.outputs.iter().map(|o| o.raw()).collect(),
            Some(indexes) => indexes
                .iter()
                .map(|i| {
                    signature.outputs.get(*i).map(|o| o.raw()).ok_or_else(|| {
                        TfError::InvalidInput(format!(
                            "signature '{}' has {} outputs; there is no output {i}",
                            signature.key,
                            signature.outputs.len()
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let feeds: Vec<TF_Output> = signature.inputs.iter().map(|o| o.raw()).collect();
        let values = inputs
            .iter()
            .map(|t| InputTensor::new(&self.tf, t))
            .collect::<Result<Vec<_>, _>>()?;
        let value_ptrs: Vec<*mut TF_Tensor> = values.iter().map(|v| v.ptr).collect();
        let mut results: Vec<*mut TF_Tensor> = vec![std::ptr::null_mut(); selected.len()];
        let api = &self.tf.api;
        // SAFETY: all arrays have the lengths passed; input tensors live until `values`
        // drops after the call; TensorFlow fills `results` with tensors we now own (an output
        // may share an input's buffer; buffers are reference-counted, see InputTensor).
        let ((), failed) = self.tf.with_status(|s| unsafe {
            (api.session_run)(
                self.session,
                std::ptr::null(),
                feeds.as_ptr(),
                value_ptrs.as_ptr(),
                feeds.len() as i32,
                selected.as_ptr(),
                results.as_mut_ptr(),
                selected.len() as i32,
                std::ptr::null(),
                0,
                std::ptr::null_mut(),
                s,
            )
        });
        drop(values);
        let mut out = Vec::with_capacity(results.len());
        let mut first_error = failed.map(|(code, message)| TfError::Run {
            kind: classify(code),
            message,
        });
        for ptr in results {
            if ptr.is_null() {
                continue;
            }
            // SAFETY: a non-null result is a tensor owned by us; take_output deletes it.
            match unsafe { take_output(&self.tf, ptr) } {
                Ok(t) => out.push(t),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None if out.len() == selected.len() => Ok(out),
            None => Err(TfError::Run {
                kind: soma_core::ErrorKind::Internal,
                message: "TensorFlow returned fewer outputs than requested".into(),
            }),
        }
    }
}

impl Drop for SavedModel {
    fn drop(&mut self) {
        let api = &self.tf.api;
        // SAFETY: the session and graph were created in `load` and are freed exactly once.
        unsafe {
            let _ = self
                .tf
                .with_status(|s| (api.close_session)(self.session, s));
            let _ = self
                .tf
                .with_status(|s| (api.delete_session)(self.session, s));
            (api.delete_graph)(self.graph);
        }
    }
}

/// Refuses a tensor whose dtype or shape contradicts the signature, before TensorFlow sees
/// it (TensorFlow would reject a wrong dtype too, with a less helpful message, and a wrong
/// shape may only fail deep inside the graph, or not at all).
fn check_input(key: &str, name: &str, tensor: &Tensor, spec: &TensorInfo) -> Result<(), TfError> {
    let dtype: DType = tensor.dtype();
    if dtype != spec.dtype {
        return Err(TfError::InvalidInput(format!(
            "signature '{key}': input '{name}' must be {}, not {dtype}",
            spec.dtype
        )));
    }
    if let Some(declared) = &spec.shape {
        let shape = tensor.shape();
        let fits = shape.len() == declared.len()
            && shape
                .iter()
                .zip(declared)
                .all(|(&n, &d)| d < 0 || n as i64 == d);
        if !fits {
            let given: Vec<i64> = shape.iter().map(|&n| n as i64).collect();
            return Err(TfError::InvalidInput(format!(
                "signature '{key}': input '{name}' has shape {}, which does not fit the declared {}",
                format_shape(Some(&given)),
                format_shape(Some(declared))
            )));
        }
    }
    Ok(())
}
