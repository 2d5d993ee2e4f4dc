//! The contract between soma and an inference engine.
//!
//! It is synchronous on purpose: TensorFlow's `TF_SessionRun` blocks, so callers decide
//! which threads run it (never the async runtime's). The TensorFlow implementation lives in
//! `soma-runtime`; unit tests use small fakes.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;

use crate::{ErrorKind, SignatureDef, Tensor};

/// A loaded model version that can run its signatures.
pub trait ModelRunner: Send + Sync + Debug {
    /// Every runnable signature of the model, by key.
    fn signatures(&self) -> &BTreeMap<String, SignatureDef>;

    /// Runs one signature. `inputs` follow the order of the signature's `inputs` map
    /// (sorted by name); the result follows the order of its `outputs` map.
    fn run(&self, signature: &str, inputs: &[&Tensor]) -> Result<Vec<Tensor>, RunError>;
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
