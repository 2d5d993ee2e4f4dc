//! Typed access to a YAML tree that records every problem with its field path.
//!
//! Messages follow Cortex's `configreader` wording ("must be defined", `key "x" is not
//! supported`, `invalid value (got "a", must be "b" or "c")`, "5 must be greater than 0").

use std::path::PathBuf;

use serde_yaml::{Mapping, Value};

use crate::ConfigError;

/// Collects errors while the file is read; `api` labels errors inside one API.
#[derive(Debug)]
pub(crate) struct Walker {
    pub(crate) file: PathBuf,
    pub(crate) api: Option<String>,
    pub(crate) errors: Vec<ConfigError>,
}

impl Walker {
    pub(crate) fn new(file: PathBuf) -> Walker {
        Walker {
            file,
            api: None,
            errors: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, path: &[&str], message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            api: self.api.clone(),
            path: path.iter().map(|p| p.to_string()).collect(),
            message: message.into(),
        });
    }

    /// Number of errors so far (to tell whether a part added any).
    pub(crate) fn mark(&self) -> usize {
        self.errors.len()
    }

    pub(crate) fn clean_since(&self, mark: usize) -> bool {
        self.errors.len() == mark
    }

    /// The value as a mapping whose keys are all in `allowed`; other keys are errors.
    pub(crate) fn mapping<'v>(
        &mut self,
        path: &[&str],
        value: &'v Value,
        allowed: &[&str],
    ) -> Option<&'v Mapping> {
        let Value::Mapping(map) = value else {
            self.type_error(path, "map", value);
            return None;
        };
        for key in map.keys() {
            match key.as_str() {
                Some(k) if allowed.contains(&k) => {}
                Some(k) => self.error(path, format!("key {k:?} is not supported")),
                None => self.error(path, format!("non string key found: {}", show(key))),
            }
        }
        Some(map)
    }

    /// A required entry: `must be defined` when absent or null.
    pub(crate) fn required<'v>(
        &mut self,
        map: &'v Mapping,
        path: &[&str],
        key: &str,
    ) -> Option<&'v Value> {
        let value = get(map, key);
        if value.is_none() {
            self.error(&with(path, key), "must be defined");
        }
        value
    }

    pub(crate) fn type_error(&mut self, path: &[&str], expected: &str, found: &Value) {
        self.error(
            path,
            format!(
                "invalid type (expected {expected}, found {})",
                describe(found)
            ),
        );
    }

    pub(crate) fn string(&mut self, path: &[&str], value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            other => {
                self.type_error(path, "string", other);
                None
            }
        }
    }

    /// A string that is not empty (after trimming).
    pub(crate) fn non_empty(&mut self, path: &[&str], value: &Value) -> Option<String> {
        let text = self.string(path, value)?;
        if text.trim().is_empty() {
            self.error(path, "cannot be empty");
            return None;
        }
        Some(text)
    }

    pub(crate) fn int(&mut self, path: &[&str], value: &Value) -> Option<i64> {
        let n = value.as_i64();
        if n.is_none() {
            self.type_error(path, "integer", value);
        }
        n
    }

    /// An integer `>= min` that fits in `u32`.
    pub(crate) fn uint(&mut self, path: &[&str], value: &Value, min: u32) -> Option<u32> {
        let n = self.int(path, value)?;
        if n < i64::from(min) {
            self.error(path, format!("{n} must be greater than or equal to {min}"));
            return None;
        }
        match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(
                    path,
                    format!("{n} must be less than or equal to {}", u32::MAX),
                );
                None
            }
        }
    }

    pub(crate) fn float(&mut self, path: &[&str], value: &Value) -> Option<f64> {
        match value.as_f64() {
            Some(x) if x.is_finite() => Some(x),
            _ => {
                self.type_error(path, "float", value);
                None
            }
        }
    }

    /// One of `allowed`, Cortex's wording otherwise.
    pub(crate) fn one_of<'a>(
        &mut self,
        path: &[&str],
        value: &Value,
        allowed: &[&'a str],
    ) -> Option<&'a str> {
        let text = self.string(path, value)?;
        let found = allowed.iter().copied().find(|a| *a == text);
        if found.is_none() {
            self.error(
                path,
                format!("invalid value (got {text:?}, must be {})", or_list(allowed)),
            );
        }
        found
    }
}

/// The entry for `key`, treating YAML `null` as absent (as Cortex did).
pub(crate) fn get<'v>(map: &'v Mapping, key: &str) -> Option<&'v Value> {
    map.get(key).filter(|v| !v.is_null())
}

/// `path` followed by `key`.
pub(crate) fn with<'a>(path: &[&'a str], key: &'a str) -> Vec<&'a str> {
    let mut out = path.to_vec();
    out.push(key);
    out
}

/// `"a", "b", or "c"`.
pub(crate) fn or_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        [rest @ .., last] => format!("{}, or {last}", rest.join(", ")),
    }
}

/// A scalar as the user wrote it (strings quoted); collections by kind.
pub(crate) fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => describe(other),
    }
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

/// A scalar string or number as text (quantities and `N%` may be written either way).
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_alternatives_like_cortex() {
        assert_eq!(or_list(&["a"]), "\"a\"");
        assert_eq!(or_list(&["a", "b"]), "\"a\" or \"b\"");
        assert_eq!(or_list(&["a", "b", "c"]), "\"a\", \"b\", or \"c\"");
    }
}
