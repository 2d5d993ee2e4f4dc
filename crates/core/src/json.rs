//! JSON ⇄ tensor conversion, checked against a signature.
//!
//! Inputs are nested JSON lists (or a scalar). The dtype always comes from the signature;
//! the shape is inferred from the nesting and checked against the signature's known
//! dimensions. Every error names the input and says what was expected.
//!
//! Encoding rules, shared by the CLI, the Python `tensorflow_client` and the REST API:
//! * numbers go to any numeric dtype; integers must be integral and fit the dtype's range,
//!   floats must fit the dtype's finite range; the strings `"NaN"`, `"Infinity"` and
//!   `"-Infinity"` are accepted for floating-point inputs because JSON has no such numbers;
//! * `string` inputs take JSON strings (UTF-8) or `{"b64": "<base64>"}` for raw bytes;
//! * `bool` inputs take `true` / `false`;
//! * outputs keep their shape as nested lists; int64/uint64 stay exact; strings that are
//!   not valid UTF-8 become `{"b64": ...}`; float32, float16 and bfloat16 are printed with the
//!   shortest decimal that round-trips in their own precision; complex values are
//!   `[real, imag]` pairs; non-finite floats become `"NaN"`, `"Infinity"`, `"-Infinity"`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Number, Value};

use crate::{DType, ErrorKind, Tensor, TensorData, TensorInfo, format_shape};

/// An input value that does not fit the signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("input '{input}': {problem}")]
pub struct InputError {
    pub input: String,
    pub problem: String,
}

impl InputError {
    fn new(input: &str, problem: impl Into<String>) -> InputError {
        InputError {
            input: input.to_string(),
            problem: problem.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// Converts one JSON input value into a tensor of the signature's dtype and shape.
pub fn tensor_from_json(
    input: &str,
    value: &Value,
    info: &TensorInfo,
) -> Result<Tensor, InputError> {
    if !info.dtype.is_supported() || matches!(info.dtype, DType::Complex64 | DType::Complex128) {
        return Err(InputError::new(
            input,
            format!("dtype {} cannot be sent as JSON", info.dtype),
        ));
    }
    let shape = infer_shape(input, value, info.shape.as_deref())?;
    check_shape(input, &shape, info.shape.as_deref())?;
    // The shape was inferred from the value itself, so it counts what is there.
    let count: usize = shape.iter().product();
    let data = if info.dtype == DType::String {
        let mut items = Vec::with_capacity(count);
        for_each_leaf(value, &mut Vec::new(), &mut |index, leaf| {
            items.push(string_leaf(input, index, leaf)?);
            Ok(())
        })?;
        TensorData::Strings(items)
    } else {
        let width = info.dtype.byte_size().unwrap_or(0);
        let mut bytes = Vec::with_capacity(count * width);
        for_each_leaf(value, &mut Vec::new(), &mut |index, leaf| {
            push_number(input, index, leaf, info.dtype, &mut bytes)
        })?;
        TensorData::Fixed(bytes)
    };
    Tensor::new(info.dtype, shape, data).map_err(|e| InputError::new(input, e.to_string()))
}

/// Walks the first element at each nesting level to find the shape, then checks that every
/// list at the same depth has the same length (no ragged input).
fn infer_shape(
    input: &str,
    value: &Value,
    declared: Option<&[i64]>,
) -> Result<Vec<usize>, InputError> {
    let mut shape = Vec::new();
    let mut cursor = value;
    while let Value::Array(items) = cursor {
        shape.push(items.len());
        match items.first() {
            Some(first) => cursor = first,
            None => {
                // An empty list: the remaining dimensions come from the signature if known.
                if let Some(dims) = declared {
                    for d in dims.iter().skip(shape.len()) {
                        shape.push(usize::try_from(*d).unwrap_or(0));
                    }
                }
                return Ok(shape);
            }
        }
    }
    check_rectangular(input, value, &shape, 0, &mut Vec::new())?;
    Ok(shape)
}

fn check_rectangular(
    input: &str,
    value: &Value,
    shape: &[usize],
    depth: usize,
    index: &mut Vec<usize>,
) -> Result<(), InputError> {
    match (value, shape.get(depth)) {
        (Value::Array(items), Some(&expected)) => {
            if items.len() != expected {
                return Err(InputError::new(
                    input,
                    format!(
                        "ragged input: the list at {} has {} elements, but its siblings have {}",
                        format_index(index),
                        items.len(),
                        expected
                    ),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                index.push(i);
                check_rectangular(input, item, shape, depth + 1, index)?;
                index.pop();
            }
            Ok(())
        }
        (Value::Array(_), None) => Err(InputError::new(
            input,
            format!(
                "ragged input: {} is a list, but its siblings are values of rank {}",
                format_index(index),
                depth
            ),
        )),
        (_, Some(_)) => Err(InputError::new(
            input,
            format!(
                "ragged input: {} is a single value, but a list of {} was expected there",
                format_index(index),
                shape[depth]
            ),
        )),
        (_, None) => Ok(()),
    }
}

fn check_shape(input: &str, actual: &[usize], declared: Option<&[i64]>) -> Result<(), InputError> {
    let Some(dims) = declared else {
        return Ok(());
    };
    let matches = dims.len() == actual.len()
        && dims
            .iter()
            .zip(actual)
            .all(|(d, a)| *d < 0 || usize::try_from(*d) == Ok(*a));
    if matches {
        return Ok(());
    }
    let mut problem = format!(
        "expected shape {} but the value has shape {}",
        format_shape(Some(dims)),
        format_actual(actual)
    );
    if dims.len() == actual.len() + 1 && dims.first() == Some(&-1) {
        problem.push_str(" (the first dimension is the batch: wrap a single example in a list)");
    }
    Err(InputError::new(input, problem))
}

fn format_actual(shape: &[usize]) -> String {
    let dims: Vec<i64> = shape.iter().map(|d| *d as i64).collect();
    format_shape(Some(&dims))
}

fn format_index(index: &[usize]) -> String {
    if index.is_empty() {
        return "the top level".to_string();
    }
    index.iter().map(|i| format!("[{i}]")).collect()
}

/// Calls `visit` on every leaf of `value` in row-major order, with the leaf's index (for
/// error messages). One index buffer serves the whole walk: copying it per leaf was a heap
/// allocation per element, several times the element itself.
fn for_each_leaf<'v, E>(
    value: &'v Value,
    index: &mut Vec<usize>,
    visit: &mut impl FnMut(&[usize], &'v Value) -> Result<(), E>,
) -> Result<(), E> {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                index.push(i);
                for_each_leaf(item, index, visit)?;
                index.pop();
            }
            Ok(())
        }
        leaf => visit(index, leaf),
    }
}

fn string_leaf(input: &str, index: &[usize], leaf: &Value) -> Result<Vec<u8>, InputError> {
    match leaf {
        Value::String(s) if non_finite_token(s).is_none() => Ok(s.as_bytes().to_vec()),
        Value::Object(map) => match b64_field(map) {
            Some(Value::String(encoded)) => B64.decode(encoded).map_err(|e| {
                InputError::new(
                    input,
                    format!("invalid base64 at {}: {e}", format_index(index)),
                )
            }),
            _ => Err(InputError::new(
                input,
                format!(
                    "expected a string or {{\"b64\": ...}} at {}, found an object",
                    format_index(index)
                ),
            )),
        },
        other => Err(InputError::new(
            input,
            format!(
                "expected a string at {}, found {}",
                format_index(index),
                describe(other)
            ),
        )),
    }
}

fn b64_field(map: &Map<String, Value>) -> Option<&Value> {
    if map.len() == 1 { map.get("b64") } else { None }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => match s.strip_prefix(TOKEN_MARK) {
            Some(token) if non_finite_token(s).is_some() => format!("the number {token}"),
            _ => format!("the string {s:?}"),
        },
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn push_number(
    input: &str,
    index: &[usize],
    leaf: &Value,
    dtype: DType,
    out: &mut Vec<u8>,
) -> Result<(), InputError> {
    let wrong = |expected: &str| {
        InputError::new(
            input,
            format!(
                "expected {expected} ({dtype}) at {}, found {}",
                format_index(index),
                describe(leaf)
            ),
        )
    };
    match dtype {
        DType::Bool => match leaf {
            Value::Bool(b) => out.push(u8::from(*b)),
            _ => return Err(wrong("true or false")),
        },
        DType::Float | DType::Double | DType::Half | DType::Bfloat16 => {
            let x = float_leaf(leaf).ok_or_else(|| wrong("a number"))?;
            // Rounded to the dtype first: a number that rounds to its largest value (as
            // soma prints it: 3.4028235e38 for float32) is that value, and only one that
            // rounds to infinity overflows.
            let (bytes, infinite): (Vec<u8>, bool) = match dtype {
                DType::Float => ((x as f32).to_ne_bytes().into(), (x as f32).is_infinite()),
                DType::Double => (x.to_ne_bytes().into(), false),
                DType::Half => {
                    let h = half::f16::from_f64(x);
                    (h.to_ne_bytes().into(), h.is_infinite())
                }
                _ => {
                    let b = half::bf16::from_f64(x);
                    (b.to_ne_bytes().into(), b.is_infinite())
                }
            };
            if x.is_finite() && infinite {
                return Err(InputError::new(
                    input,
                    format!(
                        "the number {x} at {} overflows {dtype}",
                        format_index(index)
                    ),
                ));
            }
            out.extend_from_slice(&bytes);
        }
        _ => {
            let n = match leaf {
                Value::Number(n) => integer_of(n).ok_or_else(|| wrong("an integer"))?,
                _ => return Err(wrong("an integer")),
            };
            let (min, max) = int_range(dtype);
            if n < min || n > max {
                return Err(InputError::new(
                    input,
                    format!(
                        "the number {n} at {} overflows {dtype} (range {min}..={max})",
                        format_index(index)
                    ),
                ));
            }
            let width = dtype.byte_size().unwrap_or(0);
            // Two's complement truncation is exact after the range check.
            out.extend_from_slice(&(n as u128).to_ne_bytes()[..width]);
        }
    }
    Ok(())
}

/// The integer value of a JSON number, accepting floats only when they are integral.
fn integer_of(n: &Number) -> Option<i128> {
    if let Some(i) = n.as_i64() {
        return Some(i128::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Some(i128::from(u));
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 1.8e19).then_some(f as i128)
}

fn float_leaf(leaf: &Value) -> Option<f64> {
    match leaf {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.starts_with(TOKEN_MARK) => non_finite_token(s),
        Value::String(s) => match s.as_str() {
            "NaN" | "nan" => Some(f64::NAN),
            "Infinity" | "inf" => Some(f64::INFINITY),
            "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn int_range(dtype: DType) -> (i128, i128) {
    match dtype {
        DType::Int8 | DType::Qint8 => (i8::MIN.into(), i8::MAX.into()),
        DType::Uint8 | DType::Quint8 => (0, u8::MAX.into()),
        DType::Int16 | DType::Qint16 => (i16::MIN.into(), i16::MAX.into()),
        DType::Uint16 | DType::Quint16 => (0, u16::MAX.into()),
        DType::Int32 | DType::Qint32 => (i32::MIN.into(), i32::MAX.into()),
        DType::Uint32 => (0, u32::MAX.into()),
        DType::Uint64 => (0, u64::MAX.into()),
        _ => (i64::MIN.into(), i64::MAX.into()),
    }
}

/// Converts a tensor to nested JSON lists that keep its shape.
pub fn tensor_to_json(tensor: &Tensor) -> Value {
    nest(tensor.shape(), &mut json_elements(tensor))
}

/// The elements of `tensor` as JSON values, in row-major order: what [`tensor_to_json`]
/// nests by the shape. A writer that knows the shape can write them one at a time instead
/// of building the tree (an answer of millions of rows would hold a `Value` per element).
pub fn json_elements(tensor: &Tensor) -> Box<dyn Iterator<Item = Value> + '_> {
    match tensor.data() {
        TensorData::Strings(items) => Box::new(items.iter().map(|s| bytes_to_json(s))),
        TensorData::Fixed(bytes) => fixed_values(tensor.dtype(), bytes),
    }
}

/// A string tensor element: text if it is UTF-8, else `{"b64": ...}`.
pub fn bytes_to_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_string()),
        Err(_) => b64_value(bytes),
    }
}

/// `{"b64": "<base64>"}`.
pub fn b64_value(bytes: &[u8]) -> Value {
    let mut map = Map::new();
    map.insert("b64".into(), Value::String(B64.encode(bytes)));
    Value::Object(map)
}

fn nest(shape: &[usize], values: &mut impl Iterator<Item = Value>) -> Value {
    match shape.split_first() {
        None => values.next().unwrap_or(Value::Null),
        Some((&n, rest)) => Value::Array((0..n).map(|_| nest(rest, values)).collect()),
    }
}

fn fixed_values(dtype: DType, bytes: &[u8]) -> Box<dyn Iterator<Item = Value> + '_> {
    macro_rules! each {
        ($ty:ty, $conv:expr) => {{
            const W: usize = std::mem::size_of::<$ty>();
            Box::new(bytes.chunks_exact(W).map(|chunk| {
                let mut raw = [0u8; W];
                raw.copy_from_slice(chunk);
                $conv(<$ty>::from_ne_bytes(raw))
            }))
        }};
    }
    match dtype {
        DType::Float => each!(f32, f32_to_json),
        DType::Double => each!(f64, f64_to_json),
        DType::Half => each!(half::f16, |x: half::f16| f32_to_json(x.to_f32())),
        DType::Bfloat16 => each!(half::bf16, |x: half::bf16| f32_to_json(x.to_f32())),
        DType::Int8 | DType::Qint8 => each!(i8, Value::from),
        DType::Uint8 | DType::Quint8 => each!(u8, Value::from),
        DType::Int16 | DType::Qint16 => each!(i16, Value::from),
        DType::Uint16 | DType::Quint16 => each!(u16, Value::from),
        DType::Int32 | DType::Qint32 => each!(i32, Value::from),
        DType::Uint32 => each!(u32, Value::from),
        DType::Int64 => each!(i64, Value::from),
        DType::Uint64 => each!(u64, Value::from),
        DType::Bool => Box::new(bytes.iter().map(|b| Value::Bool(*b != 0))),
        DType::Complex64 => Box::new(bytes.chunks_exact(8).map(|pair| {
            let re = f32::from_ne_bytes([pair[0], pair[1], pair[2], pair[3]]);
            let im = f32::from_ne_bytes([pair[4], pair[5], pair[6], pair[7]]);
            Value::Array(vec![f32_to_json(re), f32_to_json(im)])
        })),
        DType::Complex128 => Box::new(bytes.chunks_exact(16).map(|pair| {
            let mut re = [0u8; 8];
            let mut im = [0u8; 8];
            re.copy_from_slice(&pair[..8]);
            im.copy_from_slice(&pair[8..]);
            Value::Array(vec![
                f64_to_json(f64::from_ne_bytes(re)),
                f64_to_json(f64::from_ne_bytes(im)),
            ])
        })),
        DType::String | DType::Resource | DType::Variant => Box::new(std::iter::empty()),
    }
}

/// A float32 as the shortest decimal that round-trips in float32 (`0.30625477`, not
/// `0.30625477433204651`), so JSON output reads like TensorFlow's own printing.
pub fn f32_to_json(x: f32) -> Value {
    if !x.is_finite() {
        return non_finite(f64::from(x));
    }
    let mut digits = zmij::Buffer::new();
    let shortest: f64 = digits.format_finite(x).parse().unwrap_or(f64::from(x));
    Number::from_f64(shortest).map_or(Value::Null, Value::Number)
}

fn f64_to_json(x: f64) -> Value {
    Number::from_f64(x).map_or_else(|| non_finite(x), Value::Number)
}

fn non_finite(x: f64) -> Value {
    Value::String(non_finite_name(x).to_string())
}

/// The token TF Serving (and soma) writes for a non-finite float: `NaN`, `Infinity` or
/// `-Infinity`.
pub fn non_finite_name(x: f64) -> &'static str {
    if x.is_nan() {
        "NaN"
    } else if x > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// What starts the string [`quote_non_finite_tokens`] makes of a bare token: U+0000, which
/// no sensible string input starts with, so that a token is told from the string `"NaN"`.
const TOKEN_MARK: char = '\0';

/// The value of a bare `NaN`, `Infinity` or `-Infinity` token as
/// [`quote_non_finite_tokens`] wrote it; `None` for any other string.
pub fn non_finite_token(s: &str) -> Option<f64> {
    match s.strip_prefix(TOKEN_MARK)? {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Makes TF Serving's non-standard JSON parseable: the bare tokens `NaN`, `Infinity` and
/// `-Infinity` (accepted by TF Serving's parser, rejected by RFC 8259 parsers) are turned,
/// wherever they stand as values, into strings marked as tokens ([`non_finite_token`]), so
/// that [`tensor_from_json`] reads them as non-finite numbers for floating-point inputs and
/// refuses them for string inputs (a bare `NaN` is a number, not the string `"NaN"`). Text
/// inside strings is untouched.
pub fn quote_non_finite_tokens(text: &str) -> std::borrow::Cow<'_, str> {
    const TOKENS: [&str; 3] = ["-Infinity", "Infinity", "NaN"];
    if !TOKENS.iter().any(|t| text.contains(t)) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = TOKENS.iter().find(|t| rest.starts_with(**t)) {
            out.push_str("\"\\u0000");
            out.push_str(token);
            out.push('"');
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod non_finite_tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bare_tokens_are_quoted_outside_strings_only() {
        assert_eq!(
            quote_non_finite_tokens(
                r#"{"x": [NaN, -Infinity, Infinity, "NaN and Infinity", "a\"NaN"]}"#
            ),
            r#"{"x": ["\u0000NaN", "\u0000-Infinity", "\u0000Infinity", "NaN and Infinity", "a\"NaN"]}"#
        );
        assert!(matches!(
            quote_non_finite_tokens("[1, 2]"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    fn parsed(text: &str) -> Value {
        serde_json::from_str(&quote_non_finite_tokens(text)).unwrap()
    }

    /// A bare token is a number: non-finite for a float input, a type error for a string
    /// input; the string "NaN" stays a string (and soma's own "NaN" output a float).
    #[test]
    fn a_bare_token_is_a_number_and_a_quoted_one_a_string() {
        let float = TensorInfo {
            tensor_name: "f:0".into(),
            dtype: DType::Float,
            shape: None,
        };
        let string = TensorInfo {
            dtype: DType::String,
            ..float.clone()
        };
        let t = tensor_from_json("f", &parsed("[NaN, -Infinity]"), &float).unwrap();
        assert_eq!(tensor_to_json(&t), json!(["NaN", "-Infinity"]));
        let t = tensor_from_json("f", &parsed(r#"["NaN", "Infinity"]"#), &float).unwrap();
        assert_eq!(tensor_to_json(&t), json!(["NaN", "Infinity"]));

        let err = tensor_from_json("s", &parsed("[NaN]"), &string).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input 's': expected a string at [0], found the number NaN"
        );
        let t = tensor_from_json("s", &parsed(r#"["NaN"]"#), &string).unwrap();
        assert_eq!(tensor_to_json(&t), json!(["NaN"]));
        assert_eq!(non_finite_token("NaN"), None);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn info(dtype: DType, shape: Option<Vec<i64>>) -> TensorInfo {
        TensorInfo {
            tensor_name: "t:0".into(),
            dtype,
            shape,
        }
    }

    #[test]
    fn float32_outputs_are_their_shortest_round_tripping_decimal() {
        assert_eq!(f32_to_json(0.1).to_string(), "0.1");
        assert_eq!(f32_to_json(0.30625477).to_string(), "0.30625477");
        assert_eq!(f32_to_json(-3.0e-7).to_string(), "-3e-7");
        assert_eq!(f32_to_json(f32::MAX).as_f64(), Some(3.4028235e38));
        // Over a spread of bit patterns (every exponent, varied mantissas, both signs): the
        // decimal reads back as the same float32 and has no more digits than Rust's own
        // shortest printing (the two may break a tie between equally short decimals apart).
        let digits = |e: String| e.split('e').next().unwrap().replace(['-', '.'], "").len();
        for i in 0..200_000u32 {
            let x = f32::from_bits(i.wrapping_mul(0x9E37_79B9));
            if x.is_finite() {
                let printed = f32_to_json(x).as_f64().unwrap();
                assert_eq!(printed as f32, x, "{x:e}");
                assert!(
                    digits(format!("{printed:e}")) <= digits(format!("{x:e}")),
                    "{x:e}"
                );
            }
        }
    }

    #[test]
    fn nested_lists_become_tensors_with_their_shape() {
        let t = tensor_from_json(
            "x",
            &json!([[5.1, 3.5, 1.4, 0.2], [1, 2, 3, 4]]),
            &info(DType::Float, Some(vec![-1, 4])),
        )
        .unwrap();
        assert_eq!(t.shape(), &[2, 4]);
        assert_eq!(t.to_vec::<f32>().unwrap()[..2], [5.1, 3.5]);
    }

    #[test]
    fn shape_is_checked_against_known_dimensions() {
        let err = tensor_from_json(
            "x",
            &json!([1.0, 2.0, 3.0, 4.0]),
            &info(DType::Float, Some(vec![-1, 4])),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "input 'x': expected shape (-1, 4) but the value has shape (4,) (the first dimension \
             is the batch: wrap a single example in a list)"
        );
        let err = tensor_from_json(
            "x",
            &json!([[1.0, 2.0, 3.0]]),
            &info(DType::Float, Some(vec![-1, 4])),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("expected shape (-1, 4) but the value has shape (1, 3)")
        );
        // Unknown rank accepts anything.
        assert!(tensor_from_json("x", &json!([[[1]]]), &info(DType::Float, None)).is_ok());
    }

    #[test]
    fn ragged_input_is_rejected_with_its_position() {
        let err =
            tensor_from_json("x", &json!([[1, 2], [3]]), &info(DType::Int32, None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input 'x': ragged input: the list at [1] has 1 elements, but its siblings have 2"
        );
        let err =
            tensor_from_json("x", &json!([[1, 2], 3]), &info(DType::Int32, None)).unwrap_err();
        assert!(err.to_string().contains("[1] is a single value"), "{err}");
        let err = tensor_from_json("x", &json!([1, [2]]), &info(DType::Int32, None)).unwrap_err();
        assert!(err.to_string().contains("[1] is a list"), "{err}");
    }

    #[test]
    fn wrong_types_and_overflow_name_the_input() {
        let err = tensor_from_json("ids", &json!([1, "2"]), &info(DType::Int64, Some(vec![-1])))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "input 'ids': expected an integer (int64) at [1], found the string \"2\""
        );
        let err =
            tensor_from_json("b", &json!([300]), &info(DType::Uint8, Some(vec![-1]))).unwrap_err();
        assert!(
            err.to_string()
                .contains("300 at [0] overflows uint8 (range 0..=255)"),
            "{err}"
        );
        let err =
            tensor_from_json("f", &json!([1e39]), &info(DType::Float, Some(vec![-1]))).unwrap_err();
        assert!(err.to_string().contains("overflows float32"), "{err}");
        // What rounds to the largest finite value is that value: soma's own printing of
        // float32's, bfloat16's and float16's largest values reads back.
        let largest = |dtype| match dtype {
            DType::Float => [f32::MAX.to_ne_bytes(), (-f32::MAX).to_ne_bytes()].concat(),
            DType::Bfloat16 => {
                [half::bf16::MAX.to_ne_bytes(), half::bf16::MIN.to_ne_bytes()].concat()
            }
            _ => [half::f16::MAX.to_ne_bytes(), half::f16::MIN.to_ne_bytes()].concat(),
        };
        for (dtype, text) in [
            (DType::Float, "3.4028235e38"),
            (DType::Bfloat16, "3.3895314e38"),
            (DType::Half, "65519"),
        ] {
            let value: Value = serde_json::from_str(&format!("[{text}, -{text}]")).unwrap();
            let t = tensor_from_json("f", &value, &info(dtype, Some(vec![-1]))).unwrap();
            assert_eq!(t.bytes().unwrap(), largest(dtype), "{dtype}");
        }
        for (dtype, text) in [(DType::Half, "65520"), (DType::Float, "3.41e38")] {
            let value: Value = serde_json::from_str(&format!("[{text}]")).unwrap();
            let err = tensor_from_json("f", &value, &info(dtype, Some(vec![-1]))).unwrap_err();
            assert!(err.to_string().contains("overflows"), "{dtype} {err}");
        }
        let err =
            tensor_from_json("i", &json!([1.5]), &info(DType::Int32, Some(vec![-1]))).unwrap_err();
        assert!(err.to_string().contains("expected an integer"), "{err}");
        let err =
            tensor_from_json("s", &json!([1]), &info(DType::String, Some(vec![-1]))).unwrap_err();
        assert!(
            err.to_string().contains("expected a string at [0]"),
            "{err}"
        );
        let err =
            tensor_from_json("f", &json!(["x"]), &info(DType::Float, Some(vec![-1]))).unwrap_err();
        assert!(err.to_string().contains("expected a number"), "{err}");
    }

    #[test]
    fn int64_is_exact_both_ways() {
        let big = 9_007_199_254_740_993_i64; // 2^53 + 1: not representable as f64
        let t = tensor_from_json(
            "ids",
            &json!([big, -big]),
            &info(DType::Int64, Some(vec![-1])),
        )
        .unwrap();
        assert_eq!(t.to_vec::<i64>().unwrap(), vec![big, -big]);
        assert_eq!(tensor_to_json(&t), json!([big, -big]));
        let u = tensor_from_json("u", &json!([u64::MAX]), &info(DType::Uint64, None)).unwrap();
        assert_eq!(tensor_to_json(&u), json!([u64::MAX]));
    }

    #[test]
    fn strings_and_b64_round_trip() {
        let t = tensor_from_json(
            "s",
            &json!(["héllo", {"b64": "//4="}]),
            &info(DType::String, Some(vec![-1])),
        )
        .unwrap();
        assert_eq!(t.strings().unwrap()[1], vec![0xff, 0xfe]);
        assert_eq!(tensor_to_json(&t), json!(["héllo", {"b64": "//4="}]));
        let err =
            tensor_from_json("s", &json!([{"b64": "!!"}]), &info(DType::String, None)).unwrap_err();
        assert!(err.to_string().contains("invalid base64 at [0]"), "{err}");
    }

    #[test]
    fn floats_print_in_their_own_precision() {
        let t =
            Tensor::from_slice(vec![3], &[0.306_254_77_f32, f32::NAN, f32::NEG_INFINITY]).unwrap();
        assert_eq!(
            tensor_to_json(&t).to_string(),
            r#"[0.30625477,"NaN","-Infinity"]"#
        );
        let h = Tensor::from_slice(vec![1], &[half::f16::from_f32(0.1)]).unwrap();
        assert_eq!(tensor_to_json(&h).to_string(), "[0.099975586]");
        let t = tensor_from_json("f", &json!(["NaN", 1]), &info(DType::Double, None)).unwrap();
        assert!(t.to_vec::<f64>().unwrap()[0].is_nan());
    }

    #[test]
    fn scalars_bools_and_empty_lists() {
        let t = tensor_from_json("k", &json!(7), &info(DType::Int32, Some(vec![]))).unwrap();
        assert_eq!(t.shape(), &[] as &[usize]);
        assert_eq!(tensor_to_json(&t), json!(7));
        let b = tensor_from_json("b", &json!([true, false]), &info(DType::Bool, None)).unwrap();
        assert_eq!(tensor_to_json(&b), json!([true, false]));
        let e = tensor_from_json("x", &json!([]), &info(DType::Float, Some(vec![-1, 4]))).unwrap();
        assert_eq!(e.shape(), &[0, 4]);
        assert_eq!(tensor_to_json(&e), json!([]));
    }
}
