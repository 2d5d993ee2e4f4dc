use soma_core::ErrorKind;
use soma_repository::RepositoryError;
use soma_runtime::RuntimeError;
use soma_tensorflow::TfError;

/// Why the models of an API could not be inspected or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelsError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    /// A model location that cannot be read, with the cortex.yaml field that names it.
    #[error("{field}: {source}")]
    Location {
        field: String,
        source: RepositoryError,
    },
    #[error(transparent)]
    TensorFlow(#[from] TfError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The API asks for Inferentia (`compute.inf > 0`), which needs AWS Neuron.
    #[error(
        "model '{model}' is an Inferentia (Neuron) model (compute.inf > 0); its layout is valid, \
         but soma cannot execute it because the AWS Neuron runtime is not available here. Set \
         compute.inf to 0 and point the model path at a regular TensorFlow SavedModel."
    )]
    NeuronUnavailable { model: String },
    #[error("model '{model}': {message}")]
    Inspect { model: String, message: String },
    #[error("a model loading task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Several model folders of a `models.dir` are invalid, each with its error (at least two).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ModelsError>),
}

impl ModelsError {
    /// `source`, said of the location given at `field` (none: as it is).
    pub(crate) fn at(field: &str, source: RepositoryError) -> ModelsError {
        if field.is_empty() {
            return ModelsError::Repository(source);
        }
        ModelsError::Location {
            field: field.to_string(),
            source,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            ModelsError::Repository(e) | ModelsError::Location { source: e, .. } => e.kind(),
            ModelsError::TensorFlow(e) => e.kind(),
            ModelsError::Runtime(e) => e.kind(),
            ModelsError::NeuronUnavailable { .. } => ErrorKind::Unimplemented,
            ModelsError::Inspect { .. } => ErrorKind::FailedPrecondition,
            ModelsError::Task(_) => ErrorKind::Internal,
            ModelsError::Several(errors) => errors
                .first()
                .map_or(ErrorKind::InvalidArgument, ModelsError::kind),
        }
    }

    /// The errors this one stands for: itself, or each of [`ModelsError::Several`].
    pub fn each(&self) -> Vec<&ModelsError> {
        match self {
            ModelsError::Several(errors) => errors.iter().collect(),
            other => vec![other],
        }
    }
}
