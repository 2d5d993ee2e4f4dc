//! The contract between soma and an inference engine.
//!
//! It is synchronous on purpose: TensorFlow's `TF_SessionRun` blocks, so callers decide
//! which threads run it (never the async runtime's). The TensorFlow implementation lives in
//! `soma-runtime`; unit tests use small fakes.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;

use crate::{ErrorKind, ListedSignature, SignatureDef, Tensor};

/// A loaded model version that can run its signatures.
pub trait ModelRunner: Send + Sync + Debug {
    /// Every runnable signature of the model, by key.
    fn signatures(&self) -> &BTreeMap<String, SignatureDef>;

    /// Runs one signature. `inputs` follow the order of the signature's `inputs` map
    /// (sorted by name); the result follows the order of its `outputs` map.
    fn run(&self, signature: &str, inputs: &[&Tensor]) -> Result<Vec<Tensor>, RunError>;

    /// Every signature the model lists in its metadata, runnable or not (see
    /// [`ListedSignature`]). By default the runnable ones; an engine that reads more of the
    /// model lists more, and a runner that wraps another passes its list on.
    fn listed_signatures(&self) -> BTreeMap<String, ListedSignature> {
        self.signatures()
            .iter()
            .map(|(key, signature)| (key.clone(), ListedSignature::from(signature)))
            .collect()
    }
}

/// Thread-pool sizes for one model; `None` keeps the engine's (soma's) default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadPools {
    pub intra_op: Option<u32>,
    pub inter_op: Option<u32>,
}

/// Loads model versions from local folders.
pub trait ModelLoader: Send + Sync + Debug {
    fn load(&self, dir: &Path, threads: ThreadPools) -> Result<Box<dyn ModelRunner>, RunError>;
}

/// An engine failure, with the canonical class of the engine's status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RunError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RunError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> RunError {
        RunError {
            kind,
            message: message.into(),
        }
    }
}
