use std::fmt;
use std::path::{Path, PathBuf};

/// Where a model (or a folder of models) lives: a local folder or an S3 prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelLocation {
    /// An absolute local path.
    Local(PathBuf),
    /// `s3://bucket/prefix/`; `prefix` has no leading `/` and, unless empty, ends in `/`.
    S3 { bucket: String, prefix: String },
}

/// A model path that is neither a usable local path nor `s3://bucket/...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("{0:?}: an S3 path needs a bucket (e.g. s3://bucket/my-dir/)")]
    MissingBucket(String),
    #[error("{0:?}: unsupported scheme; use s3://bucket/prefix/ or a local path")]
    UnsupportedScheme(String),
    #[error("the path is empty")]
    Empty,
}

impl ModelLocation {
    /// Parses a model path from `cortex.yaml`. Local paths are resolved against `base_dir`
    /// (the folder of the `cortex.yaml`); `file://` URLs are accepted as local paths.
    pub fn parse(text: &str, base_dir: &Path) -> Result<ModelLocation, LocationError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(LocationError::Empty);
        }
        if let Some(rest) = trimmed.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(LocationError::MissingBucket(text.to_string()));
            }
            let mut prefix = prefix.trim_matches('/').to_string();
            if !prefix.is_empty() {
                prefix.push('/');
            }
            return Ok(ModelLocation::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        let local = trimmed.strip_prefix("file://").unwrap_or(trimmed);
        if local.contains("://") {
            return Err(LocationError::UnsupportedScheme(text.to_string()));
        }
        let path = Path::new(local);
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            base_dir.join(path)
        };
        Ok(ModelLocation::Local(normalize(&absolute)))
    }

    /// The location of a child folder (used for `models.dir` sub-models).
    pub fn join(&self, child: &str) -> ModelLocation {
        match self {
            ModelLocation::Local(p) => ModelLocation::Local(p.join(child)),
            ModelLocation::S3 { bucket, prefix } => ModelLocation::S3 {
                bucket: bucket.clone(),
                prefix: format!("{prefix}{}/", child.trim_matches('/')),
            },
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, ModelLocation::S3 { .. })
    }
}

/// Removes `.` and `..` components without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl fmt::Display for ModelLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelLocation::Local(p) => write!(f, "{}", p.display()),
            ModelLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_and_local_paths() {
        let base = Path::new("/project");
        assert_eq!(
            ModelLocation::parse("s3://models/iris", base).unwrap(),
            ModelLocation::S3 {
                bucket: "models".into(),
                prefix: "iris/".into()
            }
        );
        assert_eq!(
            ModelLocation::parse("s3://models", base)
                .unwrap()
                .to_string(),
            "s3://models/"
        );
        assert_eq!(
            ModelLocation::parse("./models/../models/iris", base).unwrap(),
            ModelLocation::Local("/project/models/iris".into())
        );
        assert_eq!(
            ModelLocation::parse("/abs/iris/", base).unwrap(),
            ModelLocation::Local("/abs/iris".into())
        );
        assert!(ModelLocation::parse("s3:///x", base).is_err());
        assert!(ModelLocation::parse("gs://b/x", base).is_err());
        assert!(ModelLocation::parse(" ", base).is_err());
    }

    #[test]
    fn join_builds_child_locations() {
        let s3 = ModelLocation::parse("s3://b/zoo/", Path::new("/")).unwrap();
        assert_eq!(s3.join("iris").to_string(), "s3://b/zoo/iris/");
    }
}
