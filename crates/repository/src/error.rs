use soma_core::ErrorKind;

/// Everything that can go wrong while listing, validating, downloading or watching models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError {
    /// The local folder (or file) does not exist.
    #[error("{location} does not exist")]
    NotFound { location: String },
    /// The local path exists but is not a folder.
    #[error("{location} is not a directory")]
    NotADirectory { location: String },
    /// The folder does not have a valid model layout. `message` is the full, Cortex-style text
    /// (problem, expected trees, actual tree); `problem` is the short reason.
    #[error("{message}")]
    InvalidLayout {
        location: String,
        problem: String,
        message: String,
    },
    /// A `models.dir` folder with an unusable entry (a file, a reserved name, no models).
    #[error("{location}: {problem}")]
    InvalidDir { location: String, problem: String },
    /// A model of a `models.dir` folder is invalid; every model must be valid.
    #[error("model {name}: {source}")]
    InDir {
        name: String,
        #[source]
        source: Box<RepositoryError>,
    },
    /// `fetch` was asked for a version the discovered model does not have.
    #[error("{location}: version {version} not found")]
    VersionNotFound { location: String, version: i64 },
    /// Listing or reading the storage failed (network, permissions, missing bucket...).
    #[error("{location}: {source}")]
    Storage {
        location: String,
        #[source]
        source: object_store::Error,
    },
    /// A downloaded file does not have the size the listing announced (changed meanwhile?).
    #[error("{location}: {key}: downloaded {actual} bytes, the listing said {expected}")]
    SizeMismatch {
        location: String,
        key: String,
        expected: u64,
        actual: u64,
    },
    /// A key that cannot be stored safely on local disk (e.g. `..` components).
    #[error("{location}: unsafe object key {key:?}")]
    UnsafeKey { location: String, key: String },
    /// A local file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl RepositoryError {
    /// The gRPC-style category of the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RepositoryError::NotFound { .. } | RepositoryError::VersionNotFound { .. } => {
                ErrorKind::NotFound
            }
            RepositoryError::NotADirectory { .. }
            | RepositoryError::InvalidLayout { .. }
            | RepositoryError::InvalidDir { .. }
            | RepositoryError::UnsafeKey { .. } => ErrorKind::InvalidArgument,
            RepositoryError::InDir { source, .. } => source.kind(),
            RepositoryError::Storage { source, .. } => match source {
                object_store::Error::NotFound { .. } => ErrorKind::NotFound,
                _ => ErrorKind::Unavailable,
            },
            RepositoryError::SizeMismatch { .. } => ErrorKind::Unavailable,
            RepositoryError::Io { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> RepositoryError {
        RepositoryError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
