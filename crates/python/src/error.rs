use std::path::PathBuf;

/// Why the handler host could not start.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PyHostError {
    #[error(
        "no Python environment found; looked for a venv at:\n{}\nRun `bash scripts/setup.sh` \
         or point --python-env / SOMA_PYTHON_ENV at the project's virtual environment.",
        tried.iter().map(|p| format!("  - {}", p.display())).collect::<Vec<_>>().join("\n")
    )]
    EnvNotFound { tried: Vec<PathBuf> },
    #[error("cannot start Python from {venv}: {message}")]
    Interpreter { venv: PathBuf, message: String },
    /// Loading `handler.py` or `Handler.__init__` failed.
    #[error("{message}")]
    Init {
        message: String,
        traceback: Option<String>,
    },
    #[error("cannot start a handler thread: {0}")]
    Thread(String),
}

/// Why one workload failed in the handler. The message is shown to the client; the
/// traceback belongs in the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub message: String,
    pub traceback: Option<String>,
}
