//! Typed access to a YAML tree that records every problem with its field path.

use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::ConfigError;

/// Collects errors while one API (or the file) is being read.
#[derive(Debug)]
pub(crate) struct Walker {
    pub(crate) file: PathBuf,
    pub(crate) api: Option<String>,
    pub(crate) errors: Vec<ConfigError>,
}

impl Walker {
    pub(crate) fn error(&mut self, path: &[&str], message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            api: self.api.clone(),
            path: path.iter().map(|p| p.to_string()).collect(),
            message: message.into(),
        });
    }

    /// The value as a mapping whose keys are all in `allowed`; unknown keys are errors.
    pub(crate) fn mapping<'v>(
        &mut self,
        path: &[&str],
        value: &'v Value,
        allowed: &[&str],
    ) -> Option<&'v Mapping> {
        let Value::Mapping(map) = value else {
            self.error(path, format!("must be a map, found {}", describe(value)));
            return None;
        };
        for key in map.keys() {
            match key.as_str() {
                Some(k) if allowed.contains(&k) => {}
                Some(k) => {
                    let mut at = path.to_vec();
                    at.push(k);
                    self.error(&at, "key is not supported");
                }
                None => self.error(
                    path,
                    format!("keys must be strings, found {}", describe(key)),
                ),
            }
        }
        Some(map)
    }

    pub(crate) fn string(&mut self, path: &[&str], value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            other => {
                self.error(path, format!("must be a string, found {}", describe(other)));
                None
            }
        }
    }

    pub(crate) fn int(&mut self, path: &[&str], value: &Value) -> Option<i64> {
        match value.as_i64() {
            Some(n) => Some(n),
            None => {
                self.error(
                    path,
                    format!("must be an integer, found {}", describe(value)),
                );
                None
            }
        }
    }

    /// A non-negative integer that fits in `u32`.
    pub(crate) fn count(&mut self, path: &[&str], value: &Value) -> Option<u32> {
        let n = self.int(path, value)?;
        match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(
                    path,
                    format!("must be greater than or equal to 0 (got {n})"),
                );
                None
            }
        }
    }

    pub(crate) fn float(&mut self, path: &[&str], value: &Value) -> Option<f64> {
        match value.as_f64() {
            Some(x) if x.is_finite() => Some(x),
            _ => {
                self.error(path, format!("must be a number, found {}", describe(value)));
                None
            }
        }
    }

    /// `60s`, `5m`, `1h30m`, or a number of seconds.
    pub(crate) fn duration(&mut self, path: &[&str], value: &Value) -> Option<Duration> {
        if let Some(seconds) = value.as_u64() {
            return Some(Duration::from_secs(seconds));
        }
        let text = self.string(path, value)?;
        match humantime::parse_duration(text.trim()) {
            Ok(d) => Some(d),
            Err(_) => {
                self.error(
                    path,
                    format!("{text:?} is not a duration (use e.g. 60s, 5m, 1h)"),
                );
                None
            }
        }
    }
}

/// The entry for `key`, treating YAML `null` as absent (as Cortex did).
pub(crate) fn get<'v>(map: &'v Mapping, key: &str) -> Option<&'v Value> {
    map.get(key).filter(|v| !v.is_null())
}

pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a map".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}
