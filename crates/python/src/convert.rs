//! Python ⇄ JSON values and soma tensors.
//!
//! Two directions with different rules: [`result_to_json`] is strict (a handler's result is
//! stored and returned as JSON, so anything JSON cannot hold exactly is an error), while
//! [`to_json`] is lenient (model inputs go on to soma's JSON → tensor rules, which know the
//! signature's dtype and accept `{"b64": ...}` bytes and `"NaN"`).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};
use soma_core::json::non_finite_name;
use soma_core::{DType, Tensor, TensorData};

/// How deep a handler result may nest. It bounds the recursion below (a list that contains
/// itself must not overflow the thread's stack) and matches serde_json's parse limit, so
/// every accepted result can be read back.
const MAX_DEPTH: usize = 128;

/// A handler's result as JSON. Accepts what `json.dumps(allow_nan=False)` accepts — dicts
/// (keys str, int, float, bool or None, turned into strings as json.dumps does), lists,
/// tuples, str, int, float, bool, None, and their subclasses — except integers beyond
/// 64 bits, which JSON readers would round. The error names the offending value and where
/// it is, e.g. `object at ["a"][0] is not a JSON value`.
pub(crate) fn result_to_json(value: &Bound<'_, PyAny>) -> Result<Value, String> {
    strict(value, &mut String::new(), 0)
}

fn strict(value: &Bound<'_, PyAny>, at: &mut String, depth: usize) -> Result<Value, String> {
    let place = |at: &str| {
        if at.is_empty() {
            String::new()
        } else {
            format!(" at {at}")
        }
    };
    if depth > MAX_DEPTH {
        return Err(format!(
            "the value{} is nested more than {MAX_DEPTH} levels deep (or contains itself)",
            place(at)
        ));
    }
    if let Some(scalar) = common_scalar(value) {
        return scalar.map_err(|problem| match problem {
            ScalarProblem::TooBig => {
                format!("the integer {value}{} does not fit in 64 bits", place(at))
            }
            ScalarProblem::NotUnicode(e) => {
                format!("the string{} is not valid Unicode: {e}", place(at))
            }
        });
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        return Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| format!("the float {value}{} is not allowed in JSON", place(at)));
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        let iter = value.try_iter().map_err(|e| e.to_string())?;
        for (index, item) in iter.enumerate() {
            let item = item.map_err(|e| e.to_string())?;
            let len = at.len();
            at.push_str(&format!("[{index}]"));
            items.push(strict(&item, at, depth + 1)?);
            at.truncate(len);
        }
        return Ok(Value::Array(items));
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        let mut map = Map::new();
        for (key, item) in dict.iter() {
            let key = match strict(&key, &mut String::new(), MAX_DEPTH) {
                Ok(Value::String(s)) => s,
                Ok(Value::Null) => "null".to_string(),
                Ok(scalar @ (Value::Bool(_) | Value::Number(_))) => scalar.to_string(),
                _ => {
                    return Err(format!(
                        "the dict key {}{} is not a string",
                        short_repr(&key),
                        place(at)
                    ));
                }
            };
            let len = at.len();
            at.push_str(&format!("[{}]", Value::String(key.clone())));
            let item = strict(&item, at, depth + 1)?;
            at.truncate(len);
            map.insert(key, item);
        }
        return Ok(Value::Object(map));
    }
    let type_name = value
        .get_type()
        .name()
        .map_or_else(|_| "object".to_string(), |n| n.to_string());
    Err(format!("{type_name}{} is not a JSON value", place(at)))
}

/// Why a scalar could not become JSON; each direction words it its own way.
enum ScalarProblem {
    TooBig,
    NotUnicode(PyErr),
}

/// None, bool, int (64 bits) and str, which both directions convert alike. `None` for any
/// other type. (bool is tested before int: it is an int subclass in Python.)
fn common_scalar(value: &Bound<'_, PyAny>) -> Option<Result<Value, ScalarProblem>> {
    if value.is_none() {
        return Some(Ok(Value::Null));
    }
    if let Ok(b) = value.cast::<PyBool>() {
        return Some(Ok(Value::Bool(b.is_true())));
    }
    if value.is_instance_of::<PyInt>() {
        let number = value.extract::<i64>().map(Value::from);
        let number = number.or_else(|_| value.extract::<u64>().map(Value::from));
        return Some(number.map_err(|_| ScalarProblem::TooBig));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Some(
            s.to_str()
                .map(|s| Value::String(s.to_string()))
                .map_err(ScalarProblem::NotUnicode),
        );
    }
    None
}

/// `repr(value)`, cut short: error messages must stay readable.
fn short_repr(value: &Bound<'_, PyAny>) -> String {
    let text = value
        .repr()
        .map_or_else(|_| "<unprintable>".to_string(), |r| r.to_string());
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// A Python value as JSON, for soma's JSON → tensor rules: bytes become `{"b64": ...}`,
/// numpy values go through `.tolist()`.
pub(crate) fn to_json(value: &Bound<'_, PyAny>) -> PyResult<Value> {
    if let Some(scalar) = common_scalar(value) {
        return scalar.map_err(|problem| match problem {
            ScalarProblem::TooBig => {
                PyValueError::new_err(format!("integer {value} does not fit in 64 bits"))
            }
            ScalarProblem::NotUnicode(e) => e,
        });
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        let x = f.value();
        return Ok(Number::from_f64(x)
            .map_or_else(|| Value::String(non_finite_name(x).into()), Value::Number));
    }
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(soma_core::json::b64_value(b.as_bytes()));
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        return value
            .try_iter()?
            .map(|item| to_json(&item?))
            .collect::<PyResult<Vec<_>>>()
            .map(Value::Array);
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        let mut map = Map::new();
        for (k, v) in dict.iter() {
            let key: String = k
                .extract()
                .map_err(|_| PyTypeError::new_err("dict keys must be strings"))?;
            map.insert(key, to_json(&v)?);
        }
        return Ok(Value::Object(map));
    }
    if value.hasattr("tolist")? {
        return to_json(&value.call_method0("tolist")?);
    }
    Err(PyTypeError::new_err(format!(
        "cannot send a {} to a model; use lists, numbers, strings, bytes or numpy arrays",
        value.get_type().name()?
    )))
}

/// numpy's name for a dtype soma can copy straight from an array's memory.
fn numpy_name(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::Float => "float32",
        DType::Double => "float64",
        DType::Half => "float16",
        DType::Int8 => "int8",
        DType::Int16 => "int16",
        DType::Int32 => "int32",
        DType::Int64 => "int64",
        DType::Uint8 => "uint8",
        DType::Uint16 => "uint16",
        DType::Uint32 => "uint32",
        DType::Uint64 => "uint64",
        DType::Bool => "bool",
        _ => return None,
    })
}

/// A numeric numpy array as a tensor of `dtype`, copied from its memory in one go. Casts
/// that numpy calls "same kind" (float64 → float32) are allowed; others are errors. `None`
/// when `value` is not a numeric numpy array (the JSON path handles it).
pub(crate) fn numpy_tensor(
    py: Python<'_>,
    name: &str,
    value: &Bound<'_, PyAny>,
    dtype: DType,
) -> PyResult<Option<Tensor>> {
    if !value.hasattr("__array_interface__")? {
        return Ok(None);
    }
    let kind: String = value.getattr("dtype")?.getattr("kind")?.extract()?;
    let Some(target) = numpy_name(dtype).filter(|_| "biuf".contains(kind.as_str())) else {
        return Ok(None);
    };
    // numpy casts booleans to numbers and back as "same kind"; a list of them is refused
    // (as in the REST API), and so is an array.
    if (kind == "b") != (dtype == DType::Bool) {
        let found = if kind == "b" { "booleans" } else { "numbers" };
        return Err(PyValueError::new_err(format!(
            "input '{name}': cannot convert the array to {dtype}: it holds {found}"
        )));
    }
    let numpy = py.import("numpy")?;
    let array = numpy.call_method1("ascontiguousarray", (value,))?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("casting", "same_kind")?;
    let array = array
        .call_method("astype", (target,), Some(&kwargs))
        .map_err(|e| {
            PyValueError::new_err(format!(
                "input '{name}': cannot convert the array to {dtype}: {e}"
            ))
        })?;
    let shape: Vec<usize> = array.getattr("shape")?.extract()?;
    let bytes: Vec<u8> = array.call_method0("tobytes")?.extract()?;
    Tensor::new(dtype, shape, TensorData::Fixed(bytes))
        .map(Some)
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// A tensor as nested Python lists that keep its shape. Floats keep their exact value,
/// int64 stays exact, strings are `str` when UTF-8 and `bytes` otherwise.
pub(crate) fn tensor_to_py<'py>(py: Python<'py>, tensor: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    if matches!(
        tensor.dtype(),
        DType::Complex64
            | DType::Complex128
            | DType::Qint8
            | DType::Quint8
            | DType::Qint16
            | DType::Quint16
            | DType::Qint32
    ) {
        // Rare types go through soma's JSON encoding (complex values as [real, imag]).
        let text = soma_core::json::tensor_to_json(tensor).to_string();
        return py.import("json")?.call_method1("loads", (text,));
    }
    let flat = flat_values(py, tensor)?;
    let mut iter = flat.into_iter();
    nest(py, tensor.shape(), &mut iter)
}

fn nest<'py>(
    py: Python<'py>,
    shape: &[usize],
    values: &mut impl Iterator<Item = Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    match shape.split_first() {
        None => Ok(values.next().unwrap_or_else(|| py.None().into_bound(py))),
        Some((&n, rest)) => {
            let items = (0..n)
                .map(|_| nest(py, rest, values))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyList::new(py, items)?.into_any())
        }
    }
}

fn flat_values<'py>(py: Python<'py>, tensor: &Tensor) -> PyResult<Vec<Bound<'py, PyAny>>> {
    macro_rules! each {
        ($ty:ty, $conv:expr) => {
            tensor
                .to_vec::<$ty>()
                .map_err(|e| PyValueError::new_err(e.to_string()))?
                .into_iter()
                .map(|v| Ok($conv(v).into_pyobject(py)?.to_owned().into_any()))
                .collect::<PyResult<Vec<_>>>()
        };
    }
    match tensor.dtype() {
        DType::String => Ok(tensor
            .strings()
            .unwrap_or_default()
            .iter()
            .map(|s| match std::str::from_utf8(s) {
                Ok(text) => PyString::new(py, text).into_any(),
                Err(_) => PyBytes::new(py, s).into_any(),
            })
            .collect()),
        DType::Float => each!(f32, f64::from),
        DType::Double => each!(f64, |v| v),
        DType::Half => each!(half::f16, |v: half::f16| f64::from(v.to_f32())),
        DType::Bfloat16 => each!(half::bf16, |v: half::bf16| f64::from(v.to_f32())),
        DType::Int8 => each!(i8, |v| v),
        DType::Int16 => each!(i16, |v| v),
        DType::Int32 => each!(i32, |v| v),
        DType::Int64 => each!(i64, |v| v),
        DType::Uint8 => each!(u8, |v| v),
        DType::Uint16 => each!(u16, |v| v),
        DType::Uint32 => each!(u32, |v| v),
        DType::Uint64 => each!(u64, |v| v),
        DType::Bool => each!(bool, |v| v),
        other => Err(PyValueError::new_err(format!(
            "outputs of dtype {other} are not supported in Python"
        ))),
    }
}
