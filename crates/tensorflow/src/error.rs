use std::path::PathBuf;

use soma_core::ErrorKind;

/// Failures of the TensorFlow layer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TfError {
    #[error(
        "the TensorFlow C library (libtensorflow_cc.so.2) was not found; looked in:\n{}\n\
         Run `bash scripts/setup.sh` to create .venv with tensorflow-cpu, or point \
         --tensorflow-lib / SOMA_TENSORFLOW_LIB at the library or its folder.",
        tried.iter().map(|p| format!("  - {}", p.display())).collect::<Vec<_>>().join("\n")
    )]
    LibraryNotFound { tried: Vec<PathBuf> },
    #[error("cannot open the TensorFlow library {path}: {message}")]
    LibraryOpen { path: PathBuf, message: String },
    #[error(
        "the TensorFlow library {path} lacks the C function {symbol} (too old or not the C API build?)"
    )]
    MissingSymbol { path: PathBuf, symbol: &'static str },
    #[error("cannot load the SavedModel in {path}: {message} ({kind})")]
    Load {
        path: PathBuf,
        /// TensorFlow's status code.
        kind: ErrorKind,
        message: String,
    },
    /// `TF_SessionRun` failed; `message` is TensorFlow's own (what TF Serving would return).
    #[error("{message}")]
    Run {
        /// TensorFlow's status code.
        kind: ErrorKind,
        message: String,
    },
    #[error("{0}")]
    InvalidInput(String),
    #[error("cannot read signatures: {0}")]
    Proto(String),
    #[error("signature '{signature}': {message}")]
    Signature { signature: String, message: String },
}

impl TfError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            TfError::LibraryNotFound { .. }
            | TfError::LibraryOpen { .. }
            | TfError::MissingSymbol { .. } => ErrorKind::Unavailable,
            TfError::Load { kind, .. } | TfError::Run { kind, .. } => *kind,
            TfError::InvalidInput(_) => ErrorKind::InvalidArgument,
            TfError::Proto(_) | TfError::Signature { .. } => ErrorKind::FailedPrecondition,
        }
    }
}

/// The class of a failed `TF_Status`'s code (never `TF_OK`: a status is read only when it failed).
pub(crate) fn classify(code: i32) -> ErrorKind {
    ErrorKind::from_code(code).unwrap_or(ErrorKind::Unknown)
}
