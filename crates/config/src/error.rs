use std::fmt;
use std::path::PathBuf;

/// One problem in a cortex.yaml, located like Cortex located them:
/// `cortex.yaml: iris (AsyncAPI): handler: models: path: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// `name (kind)` of the API, when the problem is inside one.
    pub api: Option<String>,
    /// Field path, outermost first.
    pub path: Vec<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(api) = &self.api {
            write!(f, ": {api}")?;
        }
        for part in &self.path {
            write!(f, ": {part}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a cortex.yaml (validation does not stop at the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}
