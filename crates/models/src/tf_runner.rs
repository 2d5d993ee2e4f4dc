use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use soma_core::runner::{ModelRunner, RunError, ThreadPools};
use soma_core::{ListedSignature, SignatureDef, Tensor};
use soma_tensorflow::{PreparedSignature, SavedModel, SessionOptions, TensorFlow, TfError};

/// A SavedModel loaded in TensorFlow, with every signature resolved to graph tensors once,
/// so a prediction only looks up its signature and runs.
#[derive(Debug)]
pub struct TfRunner {
    model: SavedModel,
    prepared: HashMap<String, PreparedSignature>,
}

impl TfRunner {
    /// Loads the MetaGraph tagged `serve` of the SavedModel in `dir`.
    pub fn load(
        tf: &Arc<TensorFlow>,
        dir: &Path,
        threads: ThreadPools,
    ) -> Result<TfRunner, TfError> {
        TfRunner::load_tagged(tf, dir, &["serve"], threads, None)
    }

    /// Loads the MetaGraph whose tag set is `tags` (TF Serving's `--saved_model_tags`), in a
    /// session configured by `session_config` (an encoded `ConfigProto`, TF Serving's
    /// `--tensorflow_session_config_file`) under the thread pools `threads`.
    pub fn load_tagged(
        tf: &Arc<TensorFlow>,
        dir: &Path,
        tags: &[&str],
        threads: ThreadPools,
        session_config: Option<&Arc<[u8]>>,
    ) -> Result<TfRunner, TfError> {
        let options = SessionOptions {
            intra_op_threads: threads.intra_op,
            inter_op_threads: threads.inter_op,
            base_config: session_config.cloned(),
        };
        let model = SavedModel::load(tf, dir, tags, &options)?;
        let prepared = model
            .signatures()
            .keys()
            .map(|key| Ok((key.clone(), model.prepare(key)?)))
            .collect::<Result<HashMap<_, _>, TfError>>()?;
        Ok(TfRunner { model, prepared })
    }
}

impl ModelRunner for TfRunner {
    fn signatures(&self) -> &BTreeMap<String, SignatureDef> {
        self.model.signatures()
    }

    fn listed_signatures(&self) -> BTreeMap<String, ListedSignature> {
        self.model.listed_signatures().clone()
    }

    fn run(&self, signature: &str, inputs: &[&Tensor]) -> Result<Vec<Tensor>, RunError> {
        let prepared = self.prepared.get(signature).ok_or_else(|| {
            RunError::new(
                soma_core::ErrorKind::NotFound,
                format!("no signature '{signature}'"),
            )
        })?;
        self.model
            .run(prepared, inputs, None)
            .map_err(|e| RunError::new(e.kind(), e.to_string()))
    }
}
