//! `:predict`: TF Serving's row (`instances`) and columnar (`inputs`) request formats and
//! their responses (`json_tensor.cc`), on top of soma's JSON tensor codec.

use soma_runtime::signature_method::{InferenceApi, check_signature};
use std::collections::BTreeMap;

use serde_json::{Map, Value};
use soma_core::json::{b64_value, json_elements, non_finite_token, quote_non_finite_tokens};
use soma_core::{DType, Element as _, SignatureDef, Tensor, TensorData};
use soma_metrics::RuntimeApi;
use soma_runtime::Servable;

use crate::decimal;
use crate::error::RestError;
use crate::writer::PrettyWriter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Row,
    Columnar,
}

/// Parses a request body the way TF Serving's `ParseJson` does (NaN/Infinity allowed; the
/// top level must be an object).
pub(crate) fn parse_body(body: &[u8]) -> Result<Map<String, Value>, RestError> {
    if body.is_empty() {
        return Err(RestError::invalid(
            "JSON Parse error: The document is empty",
        ));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        RestError::invalid(format!(
            "JSON Parse error: Invalid encoding in string. ({e})"
        ))
    })?;
    let value: Value = crate::document::parse(&quote_non_finite_tokens(text))
        .map_err(|e| RestError::invalid(format!("JSON Parse error: {e}")))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(RestError::invalid("JSON Parse error: Is not object")),
    }
}

/// The optional `signature_name`.
pub(crate) fn signature_name(doc: &Map<String, Value>) -> Result<Option<&str>, RestError> {
    match doc.get("signature_name") {
        None => Ok(None),
        Some(Value::String(name)) if non_finite_token(name).is_none() => Ok(Some(name)),
        Some(_) => Err(RestError::invalid(
            "'signature_name' key must be a string value.",
        )),
    }
}

/// Runs a predict request on `servable` and renders the response body (on a blocking
/// thread: it may wait for a batch). A batched request still waiting at `deadline` fails
/// with DEADLINE_EXCEEDED. The run is timed in TF Serving's `runtime_latency` under
/// `API="Predict"`: TF Serving's REST handler runs the same predictor as its gRPC one.
pub(crate) fn predict(
    servable: &Servable,
    body: &[u8],
    deadline: std::time::Instant,
    check_method_name: bool,
) -> Result<String, RestError> {
    let (key, format, inputs) = parse_request(body, servable, check_method_name)?;
    let prediction = servable.predict_json_until(Some(key), &inputs, Some(deadline))?;
    servable.record_runtime_latency(RuntimeApi::Predict, prediction.runtime);
    render(&prediction.outputs, format)
}

/// Runs a predict request on the async thread that read it, in a batch with the others
/// that thread has read if batching is on ([`Servable::queue_json_in_place`]); for servables
/// that [may answer now](Servable::may_answer_now).
pub(crate) async fn predict_in_place(
    servable: &Servable,
    body: &[u8],
    check_method_name: bool,
) -> Result<String, RestError> {
    let (key, format, inputs) = parse_request(body, servable, check_method_name)?;
    let queued = servable.queue_json_in_place(Some(key), &inputs)?;
    // Let the requests this thread has read join the batch before it runs.
    if queued.worth_yielding(soma_net::thread_may_have_company()) {
        tokio::task::yield_now().await;
    }
    let prediction = queued.await?;
    servable.record_runtime_latency(RuntimeApi::Predict, prediction.runtime);
    render(&prediction.outputs, format)
}

/// The request's signature key, format and inputs by name.
fn parse_request<'s>(
    body: &[u8],
    servable: &'s Servable,
    check_method_name: bool,
) -> Result<(&'s str, Format, Map<String, Value>), RestError> {
    let doc = parse_body(body)?;
    let (key, sig) = signature(servable, signature_name(&doc)?)?;
    check_signature(sig, InferenceApi::Predict, check_method_name)?;
    let (format, inputs) = request_inputs(doc, sig)?;
    Ok((key, format, inputs))
}

/// TF Serving's signature lookup: `serving_default` unless named.
pub(crate) fn signature<'s>(
    servable: &'s Servable,
    name: Option<&str>,
) -> Result<(&'s str, &'s SignatureDef), RestError> {
    let name = name.filter(|n| !n.is_empty()).unwrap_or("serving_default");
    servable
        .signatures()
        .get_key_value(name)
        .map(|(k, s)| (k.as_str(), s))
        .ok_or_else(|| {
            RestError::new(
                soma_core::ErrorKind::FailedPrecondition,
                format!("Serving signature key \"{name}\" not found."),
            )
        })
}

/// `{"b64": "..."}`: one binary value, not an object of named elements.
fn is_b64(map: &Map<String, Value>) -> bool {
    map.len() == 1 && map.contains_key("b64")
}

fn is_element_object(value: &Value) -> bool {
    matches!(value, Value::Object(map) if !is_b64(map))
}

/// `value`'s map if it is an object of named elements (not `{"b64": ...}`), else `value`.
fn into_element_object(value: Value) -> Result<Map<String, Value>, Value> {
    match value {
        Value::Object(map) if !is_b64(&map) => Ok(map),
        other => Err(other),
    }
}

/// The inputs by name, as nested JSON lists for [`Servable::predict_json`], moved out of
/// the request (a large request's values are not copied).
fn request_inputs(
    mut doc: Map<String, Value>,
    sig: &SignatureDef,
) -> Result<(Format, Map<String, Value>), RestError> {
    match (doc.remove("instances"), doc.remove("inputs")) {
        (Some(_), Some(_)) => Err(RestError::invalid(
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        )),
        (Some(instances), None) => Ok((Format::Row, rows(instances, sig)?)),
        (None, Some(inputs)) => Ok((Format::Columnar, columns(inputs, sig)?)),
        (None, None) => Err(RestError::invalid("Missing 'inputs' or 'instances' key")),
    }
}

fn rows(instances: Value, sig: &SignatureDef) -> Result<Map<String, Value>, RestError> {
    let Value::Array(items) = instances else {
        return Err(RestError::invalid(
            "Excepting 'instances' to be an list/array",
        ));
    };
    let Some(first) = items.first() else {
        return Err(RestError::invalid("No values in 'instances' array"));
    };
    if !first.is_object() && sig.inputs.len() > 1 {
        return Err(RestError::invalid(
            "instances is a plain list, but expecting list of objects as multiple input \
             tensors required as per tensorinfo_map",
        ));
    }
    if !is_element_object(first) {
        if let Some(i) = items.iter().position(is_element_object) {
            return Err(RestError::invalid(format!(
                "Expecting value/list but got object at item {i} of input list"
            )));
        }
        let mut inputs = Map::new();
        if let Some(name) = sig.inputs.keys().next() {
            inputs.insert(name.clone(), Value::Array(items));
        }
        return Ok(inputs);
    }
    let mut columns: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (i, item) in items.into_iter().enumerate() {
        let Ok(object) = into_element_object(item) else {
            return Err(RestError::invalid(format!(
                "Expecting object but got list at item {i} of input list"
            )));
        };
        if let Some(name) = object.keys().find(|name| !sig.inputs.contains_key(*name)) {
            return Err(RestError::invalid(format!(
                "Failed to process element: {i} key: {name} of 'instances' list. Error: \
                 JSON object: does not have named input: {name}"
            )));
        }
        if object.len() != sig.inputs.len() {
            let keys: Vec<&str> = sig.inputs.keys().map(String::as_str).collect();
            return Err(RestError::invalid(format!(
                "Failed to process element: {i} of 'instances' list. JSON object: {} must \
                 only have keys: {}",
                Value::Object(object),
                keys.join(",")
            )));
        }
        for (name, value) in object {
            columns.entry(name).or_default().push(value);
        }
    }
    Ok(columns
        .into_iter()
        .map(|(name, values)| (name, Value::Array(values)))
        .collect())
}

fn columns(inputs: Value, sig: &SignatureDef) -> Result<Map<String, Value>, RestError> {
    let mut object = match into_element_object(inputs) {
        Ok(object) => object,
        Err(plain) => {
            if sig.inputs.len() > 1 {
                return Err(RestError::invalid(
                    "inputs is a plain value/list, but expecting an object as multiple input \
                     tensors required as per tensorinfo_map",
                ));
            }
            let mut map = Map::new();
            if let Some(name) = sig.inputs.keys().next() {
                map.insert(name.clone(), plain);
            }
            return Ok(map);
        }
    };
    let mut map = Map::new();
    for name in sig.inputs.keys() {
        let value = object.remove(name).ok_or_else(|| {
            RestError::invalid(format!("Missing named input: {name} in 'inputs' object."))
        })?;
        map.insert(name.clone(), value);
    }
    Ok(map)
}

/// An output's elements as JSON, in row-major order: `_bytes` string outputs become
/// `{"b64": ...}` (TF Serving's rule), other strings stay text (or `{"b64"}` when not UTF-8,
/// which JSON cannot carry). Written one by one, without a tree of the whole answer.
/// The output's elements as the writer takes them: float32 and float64 values as the text
/// TF Serving writes for them (see [`is_float`]), the others as JSON values.
fn output_elements<'t>(name: &str, tensor: &'t Tensor) -> Box<dyn Iterator<Item = Value> + 't> {
    match (tensor.dtype(), tensor.data()) {
        (DType::Float, TensorData::Fixed(bytes)) => Box::new(
            bytes
                .chunks_exact(4)
                .map(|b| Value::String(decimal::float32(f32::read_ne(b)))),
        ),
        (DType::Double, TensorData::Fixed(bytes)) => Box::new(
            bytes
                .chunks_exact(8)
                .map(|b| Value::String(decimal::float64(f64::read_ne(b)))),
        ),
        (DType::String, _) if name.ends_with("_bytes") => {
            Box::new(json_elements(tensor).map(to_b64))
        }
        _ => json_elements(tensor),
    }
}

fn to_b64(value: Value) -> Value {
    match value {
        Value::String(text) => b64_value(text.as_bytes()),
        other => other,
    }
}

/// Float outputs' elements are number texts (float32 and float64 as TF Serving writes
/// them, float16 and bfloat16's `NaN`/`Infinity`), written bare.
pub(crate) fn is_float(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::Float | DType::Double | DType::Half | DType::Bfloat16
    )
}

fn render(outputs: &BTreeMap<String, Tensor>, format: Format) -> Result<String, RestError> {
    if outputs.is_empty() {
        return Err(RestError::invalid(
            "Cannot convert empty tensor map to JSON",
        ));
    }
    // Each output's elements, pulled in order as the answer is written.
    let mut values: Vec<_> = outputs
        .iter()
        .map(|(name, t)| {
            (
                name,
                t.shape(),
                output_elements(name, t),
                is_float(t.dtype()),
            )
        })
        .collect();
    let many = values.len() > 1;
    let mut w = PrettyWriter::new();
    w.start_object();
    match format {
        Format::Row => {
            let batch = batch_size(outputs)?;
            w.key("predictions");
            w.start_array();
            for _ in 0..batch {
                if many {
                    w.start_object();
                }
                w.single_line_arrays = true;
                for (name, shape, elements, float) in &mut values {
                    if many {
                        w.key(name);
                    }
                    w.nested(&shape[1..], elements, *float);
                }
                w.single_line_arrays = false;
                if many {
                    w.end_object();
                }
            }
            w.end_array();
        }
        Format::Columnar => {
            w.key("outputs");
            if many {
                w.start_object();
            }
            for (name, shape, elements, float) in &mut values {
                if many {
                    w.key(name);
                }
                w.nested(shape, elements, *float);
            }
            if many {
                w.end_object();
            }
        }
    }
    w.end_object();
    Ok(w.finish())
}

/// Row format needs every output batched the same (`MakeRowFormatJsonFromTensors`).
fn batch_size(outputs: &BTreeMap<String, Tensor>) -> Result<usize, RestError> {
    let mut batch = 0;
    for (name, tensor) in outputs {
        let Some(&size) = tensor.shape().first() else {
            return Err(RestError::invalid(format!(
                "Tensor name: {name} has no shape information "
            )));
        };
        if size < 1 {
            return Err(RestError::invalid(format!(
                "Tensor name: {name} has invalid batch size: {size}"
            )));
        }
        if batch != 0 && batch != size {
            return Err(RestError::invalid(format!(
                "Tensor name: {name} has inconsistent batch size: {size} expecting: {batch}"
            )));
        }
        batch = size;
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bytes_outputs_are_base64_and_other_strings_text() {
        let t = Tensor::from_strings(vec![2], vec![b"hi".to_vec(), vec![0xff]]).unwrap();
        let elements = |name| output_elements(name, &t).collect::<Vec<_>>();
        assert_eq!(
            elements("image_bytes"),
            [json!({"b64": "aGk="}), json!({"b64": "/w=="})]
        );
        assert_eq!(elements("label"), [json!("hi"), json!({"b64": "/w=="})]);
    }

    /// The answer is written from the tensors' elements, nested by their shapes, exactly
    /// as rapidjson writes TF Serving's tree of the same values.
    #[test]
    fn answers_are_written_as_the_tree_of_their_values_would_be() {
        let m = Tensor::from_slice(
            vec![2, 2, 3],
            &[
                1f32,
                2.5,
                f32::NAN,
                4.0,
                5.0,
                6.0,
                7.0,
                8.0,
                9.0,
                10.0,
                11.0,
                f32::INFINITY,
            ],
        )
        .unwrap();
        let s = Tensor::from_strings(vec![2, 1], vec![b"a".to_vec(), vec![0xff]]).unwrap();
        let empty = Tensor::from_slice::<i64>(vec![2, 0], &[]).unwrap();
        let outputs = BTreeMap::from([
            ("m".to_string(), m),
            ("s_bytes".to_string(), s),
            ("e".to_string(), empty),
        ]);
        for format in [Format::Row, Format::Columnar] {
            let mut w = PrettyWriter::new();
            w.start_object();
            let (key, many_rows) = match format {
                Format::Row => ("predictions", Some(2)),
                Format::Columnar => ("outputs", None),
            };
            w.key(key);
            let trees: Vec<(&String, Value, bool)> = outputs
                .iter()
                .map(|(n, t)| {
                    (
                        n,
                        Value::Array(output_elements(n, t).collect()),
                        is_float(t.dtype()),
                    )
                })
                .map(|(n, flat, float)| (n, nest_like(outputs[n].shape(), flat), float))
                .collect();
            match many_rows {
                Some(rows) => {
                    w.start_array();
                    for row in 0..rows {
                        w.start_object();
                        w.single_line_arrays = true;
                        for (n, tree, float) in &trees {
                            w.key(n);
                            w.value(&tree[row], *float);
                        }
                        w.single_line_arrays = false;
                        w.end_object();
                    }
                    w.end_array();
                }
                None => {
                    w.start_object();
                    for (n, tree, float) in &trees {
                        w.key(n);
                        w.value(tree, *float);
                    }
                    w.end_object();
                }
            }
            w.end_object();
            assert_eq!(render(&outputs, format).unwrap(), w.finish());
        }
    }

    /// `flat` (an array) nested by `shape`, as `tensor_to_json` nests.
    fn nest_like(shape: &[usize], flat: Value) -> Value {
        let Value::Array(items) = flat else {
            unreachable!()
        };
        fn go(shape: &[usize], items: &mut impl Iterator<Item = Value>) -> Value {
            match shape.split_first() {
                None => items.next().unwrap(),
                Some((&n, rest)) => Value::Array((0..n).map(|_| go(rest, items)).collect()),
            }
        }
        go(shape, &mut items.into_iter())
    }

    #[test]
    fn row_format_needs_one_batch_size() {
        let a = Tensor::from_slice(vec![2], &[1f32, 2.0]).unwrap();
        let b = Tensor::from_slice(vec![3], &[1f32, 2.0, 3.0]).unwrap();
        let outputs = BTreeMap::from([("a".to_string(), a), ("b".to_string(), b.clone())]);
        assert_eq!(
            render(&outputs, Format::Row).unwrap_err().message,
            "Tensor name: b has inconsistent batch size: 3 expecting: 2"
        );
        let scalar = BTreeMap::from([("s".to_string(), Tensor::scalar(1f32))]);
        assert_eq!(
            render(&scalar, Format::Row).unwrap_err().message,
            "Tensor name: s has no shape information "
        );
        let two = BTreeMap::from([("a".to_string(), b.clone()), ("b".to_string(), b)]);
        assert_eq!(
            render(&two, Format::Row).unwrap(),
            "{\n    \"predictions\": [\n        {\n            \"a\": 1.0,\n            \"b\": 1.0\n        },\n        {\n            \"a\": 2.0,\n            \"b\": 2.0\n        },\n        {\n            \"a\": 3.0,\n            \"b\": 3.0\n        }\n    ]\n}"
        );
    }
}
