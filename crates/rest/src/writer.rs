//! A port of the part of rapidjson's `PrettyWriter` (indent 4) that TF Serving uses for
//! predict responses, so the bytes match: objects one member per line, arrays either one
//! element per line or, in single-line mode, `[a, b, c]`.

use std::fmt::Write as _;

use serde_json::Value;

#[derive(Debug)]
struct Level {
    in_array: bool,
    count: usize,
}

#[derive(Debug, Default)]
pub(crate) struct PrettyWriter {
    out: String,
    stack: Vec<Level>,
    /// rapidjson's `kFormatSingleLineArray`.
    pub(crate) single_line_arrays: bool,
}

impl PrettyWriter {
    pub(crate) fn new() -> PrettyWriter {
        PrettyWriter::default()
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }

    fn indent(&mut self) {
        let width = self.stack.len() * 4;
        self.out.extend(std::iter::repeat_n(' ', width));
    }

    fn prefix(&mut self) {
        let single = self.single_line_arrays;
        let Some(level) = self.stack.last_mut() else {
            return;
        };
        let count = level.count;
        level.count += 1;
        if level.in_array {
            if count > 0 {
                self.out.push(',');
                if single {
                    self.out.push(' ');
                }
            }
            if !single {
                self.out.push('\n');
                self.indent();
            }
        } else {
            if count > 0 {
                self.out.push_str(if count % 2 == 0 { ",\n" } else { ": " });
            } else {
                self.out.push('\n');
            }
            if count % 2 == 0 {
                self.indent();
            }
        }
    }

    pub(crate) fn start_object(&mut self) {
        self.prefix();
        self.stack.push(Level {
            in_array: false,
            count: 0,
        });
        self.out.push('{');
    }

    pub(crate) fn end_object(&mut self) {
        let empty = self.stack.pop().is_none_or(|l| l.count == 0);
        if !empty {
            self.out.push('\n');
            self.indent();
        }
        self.out.push('}');
    }

    pub(crate) fn start_array(&mut self) {
        self.prefix();
        self.stack.push(Level {
            in_array: true,
            count: 0,
        });
        self.out.push('[');
    }

    pub(crate) fn end_array(&mut self) {
        let empty = self.stack.pop().is_none_or(|l| l.count == 0);
        if !empty && !self.single_line_arrays {
            self.out.push('\n');
            self.indent();
        }
        self.out.push(']');
    }

    pub(crate) fn key(&mut self, key: &str) {
        self.string(key);
    }

    pub(crate) fn string(&mut self, text: &str) {
        self.prefix();
        let quoted = serde_json::to_string(text).unwrap_or_default();
        self.out.push_str(&quoted);
    }

    /// A number, `true`/`false` or a bare token like `NaN`, written as given.
    pub(crate) fn raw(&mut self, token: &str) {
        self.prefix();
        self.out.push_str(token);
    }

    /// Writes `elements` (row-major) nested by `shape`, as [`value`](Self::value) writes
    /// the tree they make, without building it.
    pub(crate) fn nested(
        &mut self,
        shape: &[usize],
        elements: &mut dyn Iterator<Item = Value>,
        numbers_as_text: bool,
    ) {
        match shape.split_first() {
            None => self.value(&elements.next().unwrap_or(Value::Null), numbers_as_text),
            Some((&n, rest)) => {
                self.start_array();
                for _ in 0..n {
                    self.nested(rest, elements, numbers_as_text);
                }
                self.end_array();
            }
        }
    }

    /// Writes a JSON value; with `numbers_as_text` (float tensors, whose JSON has no
    /// strings) a string is a number's text (`0.972686529`, `NaN`, `Infinity`), written bare.
    pub(crate) fn value(&mut self, value: &Value, numbers_as_text: bool) {
        match value {
            Value::Null => self.raw("null"),
            Value::Bool(b) => self.raw(if *b { "true" } else { "false" }),
            Value::Number(n) => {
                let mut text = String::new();
                let _ = write!(text, "{n}");
                self.raw(&text);
            }
            Value::String(s) if numbers_as_text => self.raw(s),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.start_array();
                for item in items {
                    self.value(item, numbers_as_text);
                }
                self.end_array();
            }
            Value::Object(map) => {
                self.start_object();
                for (k, v) in map {
                    self.key(k);
                    self.value(v, numbers_as_text);
                }
                self.end_object();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn row_format_matches_tf_serving_bytes() {
        let mut w = PrettyWriter::new();
        w.start_object();
        w.key("predictions");
        w.start_array();
        for row in [json!([1.0, 1.0, 1.0]), json!([2.5, "NaN", 3.0])] {
            w.single_line_arrays = true;
            w.value(&row, true);
            w.single_line_arrays = false;
        }
        w.end_array();
        w.end_object();
        assert_eq!(
            w.finish(),
            "{\n    \"predictions\": [[1.0, 1.0, 1.0], [2.5, NaN, 3.0]\n    ]\n}"
        );
    }

    #[test]
    fn default_mode_puts_each_element_on_its_line() {
        let mut w = PrettyWriter::new();
        w.start_object();
        w.key("outputs");
        w.value(&json!([[1, 2]]), false);
        w.end_object();
        assert_eq!(
            w.finish(),
            "{\n    \"outputs\": [\n        [\n            1,\n            2\n        ]\n    ]\n}"
        );
    }
}
