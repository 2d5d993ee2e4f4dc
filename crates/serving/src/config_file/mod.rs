//! TF Serving's text-proto files: `--model_config_file` (the `ModelServerConfig` subset
//! below), `--batching_parameters_file` ([`parse_batching_parameters`]),
//! `--monitoring_config_file` ([`parse_monitoring_config`]), `--ssl_config_file`
//! ([`parse_ssl_config`]), and the two whose contents TensorFlow reads, so they are read by
//! their schema with protobuf's full text format ([`schema`]): `--tensorflow_session_config_file`
//! ([`parse_session_config`]) and `--platform_config_file` ([`parse_platform_config`]).
//!
//! ```text
//! model_config_list {
//!   config {
//!     name: "iris"
//!     base_path: "/models/iris"            # or s3://bucket/prefix
//!     model_platform: "tensorflow"
//!     model_version_policy { latest { num_versions: 2 } }   # | all {} | specific { versions: 1 versions: 3 }
//!     version_labels { key: "stable" value: 1 }
//!   }
//! }
//! ```
//!
//! Protobuf text format rules that real files use are accepted: `#` comments, `'` or `"`
//! strings with `\n`-style escapes, adjacent strings joined, optional `:` before `{`,
//! `<...>` as braces, `,`/`;` separators and `versions: [1, 2]` lists. Every error names
//! its line and column.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use soma_runtime::VersionPolicy;
use soma_runtime::batching::{BatchOptions, BatchWindow};
use soma_runtime::hub::ModelConfig;

mod platform;
mod schema;
mod session;
mod ssl;

pub use platform::{PlatformConfig, parse_platform_config};
pub use session::parse_session_config;
pub use ssl::{SslConfig, parse_ssl_config};

/// A problem in a config file, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ConfigFileError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: usize,
    column: usize,
}

impl Pos {
    fn error(self, message: impl Into<String>) -> ConfigFileError {
        ConfigFileError {
            line: self.line,
            column: self.column,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Int(i64),
    /// A number with a fraction or an exponent; no field soma reads takes one, but it is
    /// reported as a number of the wrong kind rather than as a stray character.
    Float(f64),
    Punct(char),
}

fn describe(token: &Token) -> String {
    match token {
        Token::Ident(s) => format!("'{s}'"),
        Token::Str(s) => format!("string {s:?}"),
        Token::Int(n) => format!("number {n}"),
        Token::Float(x) => format!("number {x}"),
        Token::Punct(c) => format!("'{c}'"),
    }
}

fn tokenize(text: &str) -> Result<Vec<(Token, Pos)>, ConfigFileError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let (mut line, mut column) = (1, 1);
    while let Some(&c) = chars.peek() {
        let pos = Pos { line, column };
        let mut advance = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
            let c = chars.next();
            if c == Some('\n') {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
            c
        };
        if c.is_whitespace() {
            advance(&mut chars);
        } else if c == '#' {
            while chars.peek().is_some_and(|&c| c != '\n') {
                advance(&mut chars);
            }
        } else if c == '"' || c == '\'' {
            advance(&mut chars);
            let mut value = String::new();
            loop {
                match advance(&mut chars) {
                    None | Some('\n') => return Err(pos.error("unterminated string")),
                    Some('\\') => match advance(&mut chars) {
                        Some('n') => value.push('\n'),
                        Some('r') => value.push('\r'),
                        Some('t') => value.push('\t'),
                        Some(other) => value.push(other),
                        None => return Err(pos.error("unterminated string")),
                    },
                    Some(q) if q == c => break,
                    Some(other) => value.push(other),
                }
            }
            tokens.push((Token::Str(value), pos));
        } else if c.is_ascii_digit() || c == '-' || c == '+' {
            let mut word = String::new();
            while chars
                .peek()
                .is_some_and(|&c| c.is_ascii_alphanumeric() || "-+.".contains(c))
            {
                word.extend(advance(&mut chars));
            }
            let token = match (word.parse::<i64>(), word.parse::<f64>()) {
                (Ok(n), _) => Token::Int(n),
                (_, Ok(x)) => Token::Float(x),
                _ => return Err(pos.error(format!("invalid number '{word}'"))),
            };
            tokens.push((token, pos));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut word = String::new();
            while chars
                .peek()
                .is_some_and(|&c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                word.extend(advance(&mut chars));
            }
            tokens.push((Token::Ident(word), pos));
        } else if "{}<>[]:,;".contains(c) {
            advance(&mut chars);
            tokens.push((Token::Punct(c), pos));
        } else {
            return Err(pos.error(format!("unexpected character '{c}'")));
        }
    }
    Ok(tokens)
}

/// A parsed field value: a scalar, a nested message, or a `[...]` list of scalars.
#[derive(Debug, Clone)]
enum Value {
    Scalar(Token),
    Message(Vec<Field>),
    List(Vec<(Token, Pos)>),
    /// `[{...}, ...]`, only while parsing: [`Parser::fields`] makes it one field per message.
    Messages(Vec<Vec<Field>>),
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    pos: Pos,
    value: Value,
}

struct Parser {
    tokens: Vec<(Token, Pos)>,
    next: usize,
    end: Pos,
}

impl Parser {
    fn peek(&self) -> Option<&(Token, Pos)> {
        self.tokens.get(self.next)
    }

    fn bump(&mut self) -> Option<(Token, Pos)> {
        let token = self.tokens.get(self.next).cloned();
        self.next += 1;
        token
    }

    fn punct(&self, c: char) -> bool {
        matches!(self.peek(), Some((Token::Punct(p), _)) if *p == c)
    }

    /// Fields until `close` (or the end of input when `None`).
    fn fields(&mut self, close: Option<(char, Pos)>) -> Result<Vec<Field>, ConfigFileError> {
        let mut fields = Vec::new();
        loop {
            let Some((token, pos)) = self.bump() else {
                return match close {
                    None => Ok(fields),
                    Some((c, open)) => Err(self.end.error(format!(
                        "missing '{c}' to close the '{}' at line {}, column {}",
                        if c == '}' { '{' } else { '<' },
                        open.line,
                        open.column
                    ))),
                };
            };
            match token {
                Token::Punct(c) if Some(c) == close.map(|(c, _)| c) => return Ok(fields),
                Token::Punct(',' | ';') => continue,
                Token::Ident(name) => match self.value(&name, pos)? {
                    // `name: [{...}, {...}]` is the field `name` once per message.
                    Value::Messages(messages) => {
                        fields.extend(messages.into_iter().map(|m| Field {
                            name: name.clone(),
                            pos,
                            value: Value::Message(m),
                        }))
                    }
                    value => fields.push(Field { name, pos, value }),
                },
                other => {
                    return Err(
                        pos.error(format!("expected a field name, found {}", describe(&other)))
                    );
                }
            }
        }
    }

    /// A `[{...}, {...}]` list of messages (after its `[`): the repeated field's values.
    fn messages(&mut self, open: Pos) -> Result<Value, ConfigFileError> {
        let mut messages = Vec::new();
        loop {
            match self.bump() {
                Some((Token::Punct(']'), _)) => return Ok(Value::Messages(messages)),
                Some((Token::Punct(','), _)) => {}
                Some((Token::Punct('{'), p)) => messages.push(self.fields(Some(('}', p)))?),
                Some((Token::Punct('<'), p)) => messages.push(self.fields(Some(('>', p)))?),
                Some((t, p)) => {
                    return Err(
                        p.error(format!("unexpected {} in a list of messages", describe(&t)))
                    );
                }
                None => return Err(open.error("missing ']' to close this list")),
            }
        }
    }

    fn value(&mut self, name: &str, at: Pos) -> Result<Value, ConfigFileError> {
        let colon = self.punct(':');
        if colon {
            self.bump();
        }
        let Some((token, pos)) = self.bump() else {
            return Err(self.end.error(format!("missing value for '{name}'")));
        };
        match token {
            Token::Punct('{') => Ok(Value::Message(self.fields(Some(('}', pos)))?)),
            Token::Punct('<') => Ok(Value::Message(self.fields(Some(('>', pos)))?)),
            Token::Punct('[') if matches!(self.peek(), Some((Token::Punct('{' | '<'), _))) => {
                self.messages(pos)
            }
            Token::Punct('[') => {
                let mut items = Vec::new();
                loop {
                    match self.bump() {
                        Some((Token::Punct(']'), _)) => return Ok(Value::List(items)),
                        Some((Token::Punct(','), _)) => {}
                        Some((
                            t @ (Token::Int(_) | Token::Float(_) | Token::Str(_) | Token::Ident(_)),
                            p,
                        )) => items.push((t, p)),
                        Some((t, p)) => {
                            return Err(p.error(format!("unexpected {} in a list", describe(&t))));
                        }
                        None => return Err(pos.error("missing ']' to close this list")),
                    }
                }
            }
            // Adjacent strings are one string, as in C: long PEM texts are often written as
            // one quoted line per PEM line.
            Token::Str(mut text) if colon => {
                while let Some((Token::Str(more), _)) = self.peek() {
                    text.push_str(more);
                    self.bump();
                }
                Ok(Value::Scalar(Token::Str(text)))
            }
            t @ (Token::Int(_) | Token::Float(_) | Token::Ident(_)) if colon => {
                Ok(Value::Scalar(t))
            }
            t => Err(at.error(format!(
                "expected ':' or '{{' after '{name}', found {}",
                describe(&t)
            ))),
        }
    }
}

/// The fields of a whole text-proto file.
fn top_level_fields(text: &str) -> Result<Vec<Field>, ConfigFileError> {
    let end = Pos {
        line: text.lines().count().max(1),
        column: text.lines().last().map_or(1, |l| l.chars().count() + 1),
    };
    let mut parser = Parser {
        tokens: tokenize(text)?,
        next: 0,
        end,
    };
    parser.fields(None)
}

/// Parses a `--model_config_file` into the models it lists; `None` for a file without a
/// `model_config_list` (an empty file), which TF Serving reads as a config of no kind: a
/// server may start with it (and no models), but a running server's list is not replaced
/// by it.
pub fn parse_model_config_file(text: &str) -> Result<Option<Vec<ModelConfig>>, ConfigFileError> {
    let top = top_level_fields(text)?;
    let mut models = Vec::new();
    let mut seen_list = false;
    for field in top {
        match field.name.as_str() {
            "model_config_list" if !seen_list => {
                seen_list = true;
                for config in message(&field)? {
                    if config.name != "config" {
                        return Err(unknown(config, "model_config_list", &["config"]));
                    }
                    let model = model_config(config)?;
                    if models.iter().any(|m: &ModelConfig| m.name == model.name) {
                        return Err(config
                            .pos
                            .error(format!("model name '{}' is used twice", model.name)));
                    }
                    models.push(model);
                }
            }
            "model_config_list" => {
                return Err(field.pos.error("model_config_list is given twice"));
            }
            _ => return Err(unknown(&field, "the config file", &["model_config_list"])),
        }
    }
    Ok(seen_list.then_some(models))
}

/// TF Serving's default path for Prometheus metrics (`PrometheusExporter::kPrometheusPath`).
pub const DEFAULT_PROMETHEUS_PATH: &str = "/monitoring/prometheus/metrics";

/// Parses a `--monitoring_config_file` (`prometheus_config { enable: true path: "..." }`):
/// the path to serve Prometheus metrics on, `None` if they are not enabled. An empty path
/// means TF Serving's default, [`DEFAULT_PROMETHEUS_PATH`].
pub fn parse_monitoring_config(text: &str) -> Result<Option<String>, ConfigFileError> {
    let mut enabled = false;
    let mut path = String::new();
    for field in top_level_fields(text)? {
        if field.name != "prometheus_config" {
            return Err(unknown(
                &field,
                "the monitoring config",
                &["prometheus_config"],
            ));
        }
        for inner in message(&field)? {
            match inner.name.as_str() {
                "enable" => enabled = boolean(inner)?,
                "path" => {
                    path = string(inner)?;
                    if !path.is_empty() && !path.starts_with('/') {
                        return Err(inner
                            .pos
                            .error(format!("'path' must start with '/' (got \"{path}\")")));
                    }
                }
                _ => return Err(unknown(inner, "prometheus_config", &["enable", "path"])),
            }
        }
    }
    if path.is_empty() {
        path = DEFAULT_PROMETHEUS_PATH.to_string();
    }
    Ok(enabled.then_some(path))
}

fn unknown(field: &Field, within: &str, known: &[&str]) -> ConfigFileError {
    field.pos.error(format!(
        "unknown field '{}' in {within} (expected {})",
        field.name,
        known.join(", ")
    ))
}

fn message(field: &Field) -> Result<&[Field], ConfigFileError> {
    match &field.value {
        Value::Message(fields) => Ok(fields),
        _ => Err(field
            .pos
            .error(format!("'{}' must be a message ({{ ... }})", field.name))),
    }
}

fn string(field: &Field) -> Result<String, ConfigFileError> {
    match &field.value {
        Value::Scalar(Token::Str(s)) => Ok(s.clone()),
        _ => Err(field
            .pos
            .error(format!("'{}' must be a quoted string", field.name))),
    }
}

fn int(field: &Field) -> Result<i64, ConfigFileError> {
    match &field.value {
        Value::Scalar(Token::Int(n)) => Ok(*n),
        _ => Err(field
            .pos
            .error(format!("'{}' must be an integer", field.name))),
    }
}

fn model_config(config: &Field) -> Result<ModelConfig, ConfigFileError> {
    let (mut name, mut base_path) = (None, None);
    let mut policy = VersionPolicy::default();
    let mut labels = BTreeMap::new();
    for field in message(config)? {
        match field.name.as_str() {
            "name" => name = Some(string(field)?),
            "base_path" => base_path = Some(string(field)?),
            "model_platform" => {
                let platform = string(field)?;
                if platform != "tensorflow" {
                    return Err(field.pos.error(format!(
                        "model_platform '{platform}' is not supported (only 'tensorflow')"
                    )));
                }
            }
            "model_version_policy" => policy = version_policy(field)?,
            "version_labels" => {
                let (key, value) = label(field)?;
                labels.insert(key, value);
            }
            _ => {
                return Err(unknown(
                    field,
                    "config",
                    &[
                        "name",
                        "base_path",
                        "model_platform",
                        "model_version_policy",
                        "version_labels",
                    ],
                ));
            }
        }
    }
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| config.pos.error("config has no name"))?;
    let base_path = base_path.filter(|p| !p.is_empty()).ok_or_else(|| {
        config
            .pos
            .error(format!("config '{name}' has no base_path"))
    })?;
    Ok(ModelConfig {
        name,
        base_path,
        policy,
        labels,
    })
}

fn version_policy(field: &Field) -> Result<VersionPolicy, ConfigFileError> {
    let fields = message(field)?;
    let [choice] = fields else {
        return Err(field
            .pos
            .error("model_version_policy needs exactly one of latest, all, specific"));
    };
    match choice.name.as_str() {
        "latest" => {
            let mut n = 1;
            for f in message(choice)? {
                if f.name != "num_versions" {
                    return Err(unknown(f, "latest", &["num_versions"]));
                }
                n = u32::try_from(int(f)?)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| f.pos.error("num_versions must be a positive integer"))?;
            }
            Ok(VersionPolicy::Latest(n))
        }
        "all" => match message(choice)? {
            [] => Ok(VersionPolicy::All),
            [f, ..] => Err(unknown(f, "all", &[])),
        },
        "specific" => {
            let mut versions = BTreeSet::new();
            for f in message(choice)? {
                if f.name != "versions" {
                    return Err(unknown(f, "specific", &["versions"]));
                }
                match &f.value {
                    Value::List(items) => {
                        for (token, pos) in items {
                            match token {
                                Token::Int(n) => versions.insert(*n),
                                _ => return Err(pos.error("versions must be integers")),
                            };
                        }
                    }
                    _ => {
                        versions.insert(int(f)?);
                    }
                }
            }
            if versions.is_empty() {
                return Err(choice.pos.error("specific needs at least one version"));
            }
            Ok(VersionPolicy::Specific(versions))
        }
        _ => Err(unknown(
            choice,
            "model_version_policy",
            &["latest", "all", "specific"],
        )),
    }
}

fn label(field: &Field) -> Result<(String, i64), ConfigFileError> {
    let (mut key, mut value) = (None, None);
    for f in message(field)? {
        match f.name.as_str() {
            "key" => key = Some(string(f)?),
            "value" => value = Some(int(f)?),
            _ => return Err(unknown(f, "version_labels", &["key", "value"])),
        }
    }
    match (key, value) {
        (Some(k), Some(v)) => Ok((k, v)),
        _ => Err(field.pos.error("version_labels needs a key and a value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_model_config_file(text).unwrap_err().to_string()
    }

    #[test]
    fn the_documented_forms() {
        let text = r#"
# two models
model_config_list {
  config {
    name: 'iris'
    base_path: "/models/iris"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: 'stable' value: 1 }
    version_labels { key: 'canary' value: 2 }
  }
  config: <
    name: "mlp", base_path: "s3://bucket/mlp";
    model_version_policy: { latest: { num_versions: 2 } }
  >
  config { name: "all" base_path: "/a" model_version_policy { all {} } }
  config { name: "list" base_path: "/l" model_version_policy { specific { versions: [3, 4] } } }
  config { name: "labels" base_path: "/b" version_labels: [{ key: 'a', value: 1 }, < key: 'b' value: 2 >] }
}
"#;
        let models = parse_model_config_file(text).unwrap().unwrap();
        assert_eq!(models.len(), 5);
        assert_eq!(models[0].name, "iris");
        assert_eq!(models[0].base_path, "/models/iris");
        assert_eq!(
            models[0].policy,
            VersionPolicy::Specific(BTreeSet::from([1, 2]))
        );
        assert_eq!(
            models[0].labels,
            BTreeMap::from([("stable".into(), 1), ("canary".into(), 2)])
        );
        assert_eq!(models[1].policy, VersionPolicy::Latest(2));
        assert_eq!(models[1].base_path, "s3://bucket/mlp");
        assert_eq!(models[2].policy, VersionPolicy::All);
        assert_eq!(
            models[3].policy,
            VersionPolicy::Specific(BTreeSet::from([3, 4]))
        );
        // A repeated message as a list, as protobuf's text format allows.
        assert_eq!(
            models[4].labels,
            BTreeMap::from([("a".into(), 1), ("b".into(), 2)])
        );
        // No list at all, and an empty one (which unloads every model on a reload).
        assert_eq!(parse_model_config_file("# nothing\n").unwrap(), None);
        assert_eq!(
            parse_model_config_file("model_config_list {}").unwrap(),
            Some(vec![])
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        assert_eq!(
            err("model_config_list {\n  config {\n    nme: 'x'\n  }\n}"),
            "line 3, column 5: unknown field 'nme' in config (expected name, base_path, \
             model_platform, model_version_policy, version_labels)"
        );
        assert_eq!(
            err("model_config_list {\n  config { name: 'x' base_path: '/x'\n}"),
            "line 3, column 2: missing '}' to close the '{' at line 1, column 19"
        );
        assert_eq!(
            err("model_config_list { config { name: 'x } }"),
            "line 1, column 36: unterminated string"
        );
        assert_eq!(
            err("model_config_list { config { name: x base_path: '/x' } }"),
            "line 1, column 30: 'name' must be a quoted string"
        );
        assert_eq!(
            err("model_config_list { config { base_path: '/x' } }"),
            "line 1, column 21: config has no name"
        );
        assert_eq!(
            err("model_config_list { config { name: 'x' } }"),
            "line 1, column 21: config 'x' has no base_path"
        );
        assert_eq!(
            err(
                "model_config_list { config { name: 'x' base_path: '/x' model_platform: 'onnx' } }"
            ),
            "line 1, column 56: model_platform 'onnx' is not supported (only 'tensorflow')"
        );
        assert_eq!(
            err(
                "model_config_list { config { name: 'x' base_path: '/x'\n model_version_policy { latest { num_versions: 0 } } } }"
            ),
            "line 2, column 34: num_versions must be a positive integer"
        );
        assert_eq!(
            err(
                "model_config_list { config { name: 'x' base_path: '/x'\n model_version_policy { newest {} } } }"
            ),
            "line 2, column 25: unknown field 'newest' in model_version_policy (expected latest, all, specific)"
        );
        assert_eq!(
            err(
                "model_config_list { config { name: 'x' base_path: '/x'\n version_labels { key: 'a' } } }"
            ),
            "line 2, column 2: version_labels needs a key and a value"
        );
        assert_eq!(
            err("custom_model_config {}"),
            "line 1, column 1: unknown field 'custom_model_config' in the config file (expected model_config_list)"
        );
        assert_eq!(
            err(
                "model_config_list { config { name: 'x' base_path: '/x' } config { name: 'x' base_path: '/y' } }"
            ),
            "line 1, column 58: model name 'x' is used twice"
        );
        assert_eq!(
            err("model_config_list { config { name: 'x' base_path: '/x' version: 3 } }"),
            "line 1, column 56: unknown field 'version' in config (expected name, base_path, model_platform, model_version_policy, version_labels)"
        );
        assert_eq!(
            err("model_config_list { = }"),
            "line 1, column 21: unexpected character '='"
        );
        assert_eq!(
            err(
                "model_config_list { config { name: 'x' base_path: '/x'\n model_version_policy { latest { num_versions: 1.5 } } } }"
            ),
            "line 2, column 34: 'num_versions' must be an integer"
        );
        assert_eq!(
            err("model_config_list { config: [{ name: 'x' }, 3] }"),
            "line 1, column 45: unexpected number 3 in a list of messages"
        );
        assert_eq!(
            err("model_config_list 3"),
            "line 1, column 1: expected ':' or '{' after 'model_config_list', found number 3"
        );
    }
}

/// Parses TF Serving's `--batching_parameters_file` (a text-proto `BatchingParameters`).
/// Numeric fields are `google.protobuf` wrappers (`max_batch_size { value: 128 }`); the bare
/// form `max_batch_size: 128` is accepted too. Unset fields keep TF Serving's defaults
/// ([`BatchOptions::default`]); invalid values are errors that name the field. soma
/// extension: `batch_timeout_micros: auto` (or `{ value: auto }`) adapts the window to the
/// arrival rate (see [`BatchWindow::Auto`]).
pub fn parse_batching_parameters(text: &str) -> Result<BatchOptions, ConfigFileError> {
    let mut options = BatchOptions::default();
    let mut positions: Vec<(&'static str, Pos)> = Vec::new();
    let top = top_level_fields(text)?;
    for field in &top {
        let count = |field: &Field| -> Result<usize, ConfigFileError> {
            let n = wrapped(field, int)?;
            usize::try_from(n).map_err(|_| {
                field
                    .pos
                    .error(format!("'{}' must not be negative", field.name))
            })
        };
        let name: &'static str = match field.name.as_str() {
            "max_batch_size" => {
                options.max_batch_size = count(field)?;
                "max_batch_size"
            }
            "batch_timeout_micros" => {
                // soma extension: `auto` adapts the window to the arrival rate.
                options.window = if wrapped(field, is_auto)? {
                    BatchWindow::Auto
                } else {
                    BatchWindow::Fixed(Duration::from_micros(count(field)? as u64))
                };
                "batch_timeout_micros"
            }
            "max_enqueued_batches" => {
                options.max_enqueued_batches = count(field)?;
                "max_enqueued_batches"
            }
            "num_batch_threads" => {
                options.num_batch_threads = count(field)?;
                "num_batch_threads"
            }
            "allowed_batch_sizes" => {
                match &field.value {
                    Value::List(items) => {
                        for (token, pos) in items {
                            let Token::Int(n) = token else {
                                return Err(pos.error("allowed_batch_sizes must be integers"));
                            };
                            options
                                .allowed_batch_sizes
                                .push(usize::try_from(*n).map_err(|_| {
                                    pos.error("allowed_batch_sizes must not be negative")
                                })?);
                        }
                    }
                    _ => options.allowed_batch_sizes.push(count(field)?),
                }
                "allowed_batch_sizes"
            }
            "pad_variable_length_inputs" => {
                options.pad_variable_length_inputs = wrapped(field, boolean)?;
                "pad_variable_length_inputs"
            }
            // Accepted for compatibility; soma has no named thread pools and never splits a
            // request (one larger than max_batch_size runs on its own).
            "thread_pool_name" | "enable_large_batch_splitting" | "max_execution_batch_size" => {
                continue;
            }
            _ => {
                return Err(unknown(
                    field,
                    "the batching parameters",
                    &[
                        "max_batch_size",
                        "batch_timeout_micros",
                        "max_enqueued_batches",
                        "num_batch_threads",
                        "allowed_batch_sizes",
                        "pad_variable_length_inputs",
                        "thread_pool_name",
                        "enable_large_batch_splitting",
                        "max_execution_batch_size",
                    ],
                ));
            }
        };
        positions.push((name, field.pos));
    }
    options.validate().map_err(|message| {
        // The field the message names first.
        let pos = positions
            .iter()
            .filter_map(|(name, pos)| message.find(name).map(|at| (at, *pos)))
            .min_by_key(|(at, _)| *at)
            .map_or(Pos { line: 1, column: 1 }, |(_, pos)| pos);
        pos.error(message)
    })?;
    Ok(options)
}

/// The value of a wrapper message (`{ value: x }`) or a bare scalar.
fn wrapped<T>(
    field: &Field,
    read: fn(&Field) -> Result<T, ConfigFileError>,
) -> Result<T, ConfigFileError> {
    match &field.value {
        Value::Message(inner) => match inner.as_slice() {
            [value] if value.name == "value" => read(value),
            // An empty wrapper holds the default value, as protobuf reads it.
            [] => read(&Field {
                name: field.name.clone(),
                pos: field.pos,
                value: Value::Scalar(Token::Int(0)),
            }),
            _ => Err(field
                .pos
                .error(format!("'{}' must be {{ value: ... }}", field.name))),
        },
        _ => read(field),
    }
}

fn is_auto(field: &Field) -> Result<bool, ConfigFileError> {
    Ok(matches!(&field.value, Value::Scalar(Token::Ident(s)) if s == "auto"))
}

/// A bool as protobuf's text format writes it (`true`, `True`, `t`, `1`, and the same for
/// false).
fn boolean(field: &Field) -> Result<bool, ConfigFileError> {
    match &field.value {
        Value::Scalar(Token::Ident(s)) if matches!(s.as_str(), "true" | "True" | "t") => Ok(true),
        Value::Scalar(Token::Ident(s)) if matches!(s.as_str(), "false" | "False" | "f") => {
            Ok(false)
        }
        Value::Scalar(Token::Int(1)) => Ok(true),
        Value::Scalar(Token::Int(0)) => Ok(false),
        _ => Err(field
            .pos
            .error(format!("'{}' must be true or false", field.name))),
    }
}

#[cfg(test)]
mod batching_tests {
    use super::*;

    #[test]
    fn the_documented_file_and_defaults() {
        let options = parse_batching_parameters(
            "max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n\
             max_enqueued_batches { value: 1000000 }\nnum_batch_threads { value: 8 }\n",
        )
        .unwrap();
        assert_eq!(options.max_batch_size, 128);
        assert_eq!(options.window, BatchWindow::Fixed(Duration::ZERO));
        assert_eq!(options.max_enqueued_batches, 1_000_000);
        assert_eq!(options.num_batch_threads, 8);
        assert_eq!(
            parse_batching_parameters("").unwrap(),
            BatchOptions::default()
        );
        let options = parse_batching_parameters(
            "max_batch_size: 8\nallowed_batch_sizes: 2\nallowed_batch_sizes: [4, 8]\n\
             pad_variable_length_inputs: true\nbatch_timeout_micros { value: 500 }",
        )
        .unwrap();
        assert_eq!(options.allowed_batch_sizes, [2, 4, 8]);
        assert!(options.pad_variable_length_inputs);
        assert_eq!(
            options.window,
            BatchWindow::Fixed(Duration::from_micros(500))
        );
    }

    #[test]
    fn errors_name_the_field_and_its_place() {
        let error = |text: &str| parse_batching_parameters(text).unwrap_err().to_string();
        assert_eq!(
            error("max_batch_size { value: 0 }"),
            "line 1, column 1: max_batch_size must be positive"
        );
        assert_eq!(
            error("\nnum_batch_threads { value: -1 }"),
            "line 2, column 1: 'num_batch_threads' must not be negative"
        );
        assert_eq!(
            error("max_batch_size { value: 8 }\nallowed_batch_sizes: 4"),
            "line 2, column 1: the last entry of allowed_batch_sizes (4) must equal max_batch_size (8)"
        );
        assert!(error("batch_size: 3").starts_with("line 1, column 1: unknown field 'batch_size'"));
        assert_eq!(
            error("pad_variable_length_inputs: 2"),
            "line 1, column 1: 'pad_variable_length_inputs' must be true or false"
        );
        // As protobuf reads them: an empty wrapper is its default, 1 and 0 are bools.
        assert_eq!(
            error("num_batch_threads { }"),
            "line 1, column 1: num_batch_threads must be positive"
        );
        let bools = parse_batching_parameters("pad_variable_length_inputs: 1").unwrap();
        assert!(bools.pad_variable_length_inputs);
    }
}

#[cfg(test)]
mod monitoring_tests {
    use super::*;

    #[test]
    fn monitoring_config_gives_the_prometheus_path() {
        let parse = parse_monitoring_config;
        assert_eq!(
            parse("prometheus_config {\n  enable: true,\n  path: \"/m/p\"\n}\n").unwrap(),
            Some("/m/p".into())
        );
        assert_eq!(
            parse("prometheus_config { enable: true }").unwrap(),
            Some(DEFAULT_PROMETHEUS_PATH.into())
        );
        assert_eq!(
            parse("prometheus_config { enable: false path: \"/x\" }").unwrap(),
            None
        );
        assert_eq!(parse("").unwrap(), None);
        let error = |text: &str| parse(text).unwrap_err().to_string();
        assert_eq!(
            error("prometheus_config { enable: true path: \"metrics\" }"),
            "line 1, column 34: 'path' must start with '/' (got \"metrics\")"
        );
        assert_eq!(
            error("prometheus_config { port: 9 }"),
            "line 1, column 21: unknown field 'port' in prometheus_config (expected enable, path)"
        );
        assert_eq!(
            error("prometheus { enable: true }"),
            "line 1, column 1: unknown field 'prometheus' in the monitoring config (expected \
             prometheus_config)"
        );
    }
}
