//! `:classify` and `:regress`: JSON `tf.Example`s (`{"context"?, "examples": [...]}`)
//! serialized to protobuf and fed to the signature's `inputs` string tensor, as TF
//! Serving's classifier/regressor do (context features merged into every example).

use serde_json::{Map, Value};
use soma_core::{DType, Tensor, TensorData};
use soma_metrics::RuntimeApi;
use soma_runtime::Servable;

use soma_runtime::signature_method::{EXAMPLES_INPUT, InferenceApi, check_signature};

use crate::decimal;
use crate::error::RestError;
use crate::predict::{parse_body, signature, signature_name};
use crate::writer::PrettyWriter;

/// `check_method_name`: TF Serving's `--enable_signature_method_name_check`.
pub(crate) fn classify(
    servable: &Servable,
    body: &[u8],
    check_method_name: bool,
) -> Result<String, RestError> {
    let outputs = run(servable, body, InferenceApi::Classify, check_method_name)?;
    let classes = outputs.iter().find(|(k, _)| k == "classes").map(|(_, t)| t);
    let scores = outputs.iter().find(|(k, _)| k == "scores").map(|(_, t)| t);
    let rows = classes
        .or(scores)
        .and_then(|t| t.shape().first().copied())
        .unwrap_or(0);
    let labels = classes.and_then(Tensor::strings);
    let values = scores
        .map(|t| t.to_vec::<f32>())
        .transpose()
        .map_err(|e| RestError::invalid(format!("Expected scores of type float: {e}")))?;
    let per_row = |t: Option<&Tensor>| t.and_then(|t| t.shape().get(1).copied()).unwrap_or(1);
    let width = per_row(classes).max(per_row(scores));
    let mut w = PrettyWriter::new();
    w.start_object();
    w.key("results");
    w.start_array();
    for row in 0..rows {
        w.single_line_arrays = true;
        w.start_array();
        for k in 0..width {
            let i = row * width + k;
            w.start_array();
            let label = labels
                .and_then(|l| l.get(i))
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            w.string(&label);
            let score = values
                .as_ref()
                .and_then(|v| v.get(i))
                .copied()
                .unwrap_or(0.0);
            w.raw(&decimal::float32(score));
            w.end_array();
        }
        w.end_array();
        w.single_line_arrays = false;
    }
    w.end_array();
    w.end_object();
    Ok(w.finish())
}

pub(crate) fn regress(
    servable: &Servable,
    body: &[u8],
    check_method_name: bool,
) -> Result<String, RestError> {
    let outputs = run(servable, body, InferenceApi::Regress, check_method_name)?;
    let tensor = outputs
        .iter()
        .find(|(k, _)| k == "outputs")
        .map(|(_, t)| t)
        .ok_or_else(|| {
            RestError::invalid("No output tensor 'outputs' in the regression signature")
        })?;
    let values = tensor
        .to_vec::<f32>()
        .map_err(|e| RestError::invalid(format!("Expected output Tensor of DT_FLOAT: {e}")))?;
    let mut w = PrettyWriter::new();
    w.start_object();
    w.key("results");
    w.single_line_arrays = true;
    w.start_array();
    for v in values {
        w.raw(&decimal::float32(v));
    }
    w.end_array();
    w.end_object();
    Ok(w.finish())
}

fn run(
    servable: &Servable,
    body: &[u8],
    api: InferenceApi,
    check_method_name: bool,
) -> Result<Vec<(String, Tensor)>, RestError> {
    let doc = parse_body(body)?;
    let (key, sig) = signature(servable, signature_name(&doc)?)?;
    check_signature(sig, api, check_method_name)?;
    let (verb, timed) = if api == InferenceApi::Classify {
        ("classify", RuntimeApi::Classify)
    } else {
        ("regress", RuntimeApi::Regress)
    };
    let examples = examples(&doc, verb)?;
    let tensor = Tensor::new(
        DType::String,
        vec![examples.len()],
        TensorData::Strings(examples),
    )
    .map_err(|e| RestError::invalid(e.to_string()))?;
    let inputs = std::collections::BTreeMap::from([(EXAMPLES_INPUT.to_string(), tensor)]);
    let prediction = servable.predict(Some(key), &inputs)?;
    // TF Serving's classifier and regressor time their runs, over REST as over gRPC.
    servable.record_runtime_latency(timed, prediction.runtime);
    Ok(prediction.outputs.into_iter().collect())
}

/// The serialized examples, each prefixed with the serialized context (protobuf merge).
fn examples(doc: &Map<String, Value>, verb: &str) -> Result<Vec<Vec<u8>>, RestError> {
    let context = match doc.get("context") {
        Some(value) => example(value)?,
        None => Vec::new(),
    };
    let list = doc.get("examples").ok_or_else(|| {
        RestError::invalid(format!(
            "When method is {verb}, key 'examples' is expected and was not found"
        ))
    })?;
    let Value::Array(items) = list else {
        return Err(RestError::invalid(
            "Expecting 'examples' value to be an list/array",
        ));
    };
    if items.is_empty() {
        return Err(RestError::invalid("'examples' value is an empty array"));
    }
    items
        .iter()
        .map(|item| {
            let mut bytes = context.clone();
            bytes.extend(example(item)?);
            Ok(bytes)
        })
        .collect()
}

/// A JSON object of features as a serialized `tf.Example`.
fn example(value: &Value) -> Result<Vec<u8>, RestError> {
    let Value::Object(features) = value else {
        return Err(RestError::invalid(format!(
            "Example must be JSON object but got JSON {}",
            json_type(value)
        )));
    };
    let mut features_bytes = Vec::new();
    for (name, content) in features {
        let values: Vec<&Value> = match content {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        let feature = feature(name, &values)?;
        // map<string, Feature> entry: key = 1, value = 2.
        let mut entry = Vec::new();
        proto::bytes_field(&mut entry, 1, name.as_bytes());
        proto::bytes_field(&mut entry, 2, &feature);
        proto::bytes_field(&mut features_bytes, 1, &entry);
    }
    let mut example = Vec::new();
    proto::bytes_field(&mut example, 1, &features_bytes);
    Ok(example)
}

#[derive(PartialEq)]
enum Kind {
    Bytes,
    Float,
    Int64,
}

fn feature(name: &str, values: &[&Value]) -> Result<Vec<u8>, RestError> {
    let mut kind = None;
    let (mut bytes, mut floats, mut ints) = (Vec::new(), Vec::new(), Vec::new());
    let unexpected = |v: &Value| {
        RestError::invalid(format!(
            "Feature: {name} has element with unexpected JSON type: {}",
            json_type(v)
        ))
    };
    for value in values {
        let this = match value {
            Value::Bool(b) => {
                ints.push(i64::from(*b));
                Kind::Int64
            }
            // A bare NaN / Infinity token (see `quote_non_finite_tokens`) is a float.
            Value::String(s) => match soma_core::json::non_finite_token(s) {
                Some(x) => {
                    floats.push(x as f32);
                    Kind::Float
                }
                None => {
                    bytes.push(s.as_bytes().to_vec());
                    Kind::Bytes
                }
            },
            Value::Object(map) if map.len() == 1 && map.contains_key("b64") => {
                let decoded = soma_core::json::tensor_from_json(
                    name,
                    value,
                    &soma_core::TensorInfo {
                        tensor_name: String::new(),
                        dtype: DType::String,
                        shape: Some(Vec::new()),
                    },
                )
                .map_err(|e| RestError::invalid(e.to_string()))?;
                bytes.extend(decoded.strings().unwrap_or_default().iter().cloned());
                Kind::Bytes
            }
            Value::Number(n) if n.is_f64() => {
                let x = n.as_f64().unwrap_or_default();
                // TF Serving's `IsLosslessDecimal<float>`: beyond float32's range the cast
                // would give an infinity the client never sent.
                if x.is_finite() && (x > f64::from(f32::MAX) || x < f64::from(f32::MIN)) {
                    return Err(RestError::invalid(format!(
                        "Cannot convert JSON value: {n} to float without loss of precision."
                    )));
                }
                floats.push(x as f32);
                Kind::Float
            }
            Value::Number(n) => {
                let v = n.as_i64().ok_or_else(|| {
                    RestError::invalid(format!(
                        "Feature: {name} has uint64 element. Only int64 is supported."
                    ))
                })?;
                ints.push(v);
                Kind::Int64
            }
            other => return Err(unexpected(other)),
        };
        if kind.as_ref().is_some_and(|k| *k != this) {
            let expected = match kind {
                Some(Kind::Bytes) => "bytes",
                Some(Kind::Float) => "float",
                _ => "int64",
            };
            return Err(RestError::invalid(format!(
                "Unexpected element type in feature: {name} expecting type: {expected}"
            )));
        }
        kind = Some(this);
    }
    // Feature: bytes_list = 1, float_list = 2, int64_list = 3; each list's values = 1.
    let mut list = Vec::new();
    let field = match kind {
        Some(Kind::Float) => {
            let packed: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
            proto::bytes_field(&mut list, 1, &packed);
            2
        }
        Some(Kind::Int64) => {
            let mut packed = Vec::new();
            for v in ints {
                proto::varint(&mut packed, v as u64);
            }
            proto::bytes_field(&mut list, 1, &packed);
            3
        }
        _ => {
            for b in &bytes {
                proto::bytes_field(&mut list, 1, b);
            }
            1
        }
    };
    let mut feature = Vec::new();
    proto::bytes_field(&mut feature, field, &list);
    Ok(feature)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The two protobuf wire primitives a `tf.Example` needs.
mod proto {
    pub(super) fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field (wire type 2).
    pub(super) fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
        varint(out, u64::from(field << 3 | 2));
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn examples_serialize_like_protobuf() {
        // Example{features{feature{key:"a" value{int64_list{value:[1,2]}}}}}
        let bytes = example(&json!({"a": [1, 2]})).unwrap();
        assert_eq!(
            bytes,
            [10, 13, 10, 11, 10, 1, b'a', 18, 6, 26, 4, 10, 2, 1, 2]
        );
        let err = example(&json!({"a": [1, 2.5]})).unwrap_err();
        assert_eq!(
            err.message,
            "Unexpected element type in feature: a expecting type: int64"
        );
        assert_eq!(
            example(&json!([1])).unwrap_err().message,
            "Example must be JSON object but got JSON array"
        );
    }

    /// Bare NaN / Infinity tokens are floats, beside other floats; the string "NaN" is bytes.
    #[test]
    fn bare_non_finite_tokens_are_float_features() {
        let body = br#"{"examples": [{"x": [1.5, NaN, -Infinity], "s": "NaN"}]}"#;
        let doc = parse_body(body).unwrap();
        let [bytes] = &examples(&doc, "classify").unwrap()[..] else {
            panic!("one example");
        };
        let expected = example(&json!({"x": [1.5, 0.0, 0.0], "s": "NaN"})).unwrap();
        // The same message but for the float values: NaN and -inf in place of the zeros.
        let mut floats = Vec::new();
        for x in [1.5f32, f32::NAN, f32::NEG_INFINITY] {
            floats.extend(x.to_le_bytes());
        }
        let zeros: Vec<u8> = [1.5f32, 0.0, 0.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let at = expected
            .windows(12)
            .position(|w| w == zeros)
            .expect("packed floats");
        let mut want = expected.clone();
        want[at..at + 12].copy_from_slice(&floats);
        assert_eq!(*bytes, want);
        let err = example(&json!({"x": [1, "\u{0}NaN"]})).unwrap_err();
        assert_eq!(
            err.message,
            "Unexpected element type in feature: x expecting type: int64"
        );
    }

    /// A number past float32's range is refused (TF Serving's `IsLosslessDecimal<float>`),
    /// where a cast would send TensorFlow an infinity; float32's own limits are kept.
    #[test]
    fn float_features_beyond_float32_are_refused() {
        for x in [json!(1e39), json!(-1e300)] {
            let err = example(&json!({"x": [1.5, x.clone()]})).unwrap_err();
            assert_eq!(
                err.message,
                format!("Cannot convert JSON value: {x} to float without loss of precision.")
            );
        }
        let max = f64::from(f32::MAX);
        assert!(example(&json!({"x": [max, -max, 1e-50]})).is_ok());
    }
}
