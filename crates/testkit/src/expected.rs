use std::path::Path;

use serde_json::{Map, Value};

/// One case of a fixture's `expected.json`: inputs and the outputs Python TensorFlow gave.
#[derive(Debug, Clone)]
pub struct ExpectedCase {
    pub version: i64,
    pub signature: String,
    pub inputs: Map<String, Value>,
    /// Output name → `{"dtype", "shape", "values"}` (values flattened).
    pub outputs: Map<String, Value>,
}

/// Every case of `<model_dir>.expected.json`, written by scripts/make_models.py beside the
/// model folder (inside it, it would break the folder's layout).
pub fn expected_cases(model_dir: &Path) -> Vec<ExpectedCase> {
    let mut name = model_dir.as_os_str().to_owned();
    name.push(".expected.json");
    let path = std::path::PathBuf::from(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let root: Map<String, Value> = serde_json::from_str(&text).expect("expected.json");
    let mut cases = Vec::new();
    for (version, signatures) in root {
        for (signature, list) in signatures.as_object().expect("signatures") {
            for case in list.as_array().expect("cases") {
                cases.push(ExpectedCase {
                    version: version.parse().expect("version"),
                    signature: signature.clone(),
                    inputs: case["inputs"].as_object().cloned().expect("inputs"),
                    outputs: case["outputs"].as_object().cloned().expect("outputs"),
                });
            }
        }
    }
    cases
}

/// Checks soma's JSON outputs (nested lists) against the expected ones: same names, shapes
/// and values; floating-point values must be bitwise equal at their dtype's precision
/// (float32/float16/bfloat16 compared as float32, float64 exactly), integers exactly.
pub fn assert_outputs_match(
    actual: &Map<String, Value>,
    expected: &Map<String, Value>,
    context: &str,
) {
    let mut names: Vec<&String> = actual.keys().collect();
    names.sort();
    let mut wanted: Vec<&String> = expected.keys().collect();
    wanted.sort();
    assert_eq!(names, wanted, "{context}: output names");
    for (name, spec) in expected {
        let dtype = spec["dtype"].as_str().expect("dtype");
        let shape: Vec<usize> = serde_json::from_value(spec["shape"].clone()).expect("shape");
        let values = spec["values"].as_array().expect("values");
        let (actual_shape, flat) = flatten(&actual[name]);
        assert_eq!(actual_shape, shape, "{context}: output {name} shape");
        assert_eq!(flat.len(), values.len(), "{context}: output {name} size");
        for (i, (got, want)) in flat.iter().zip(values).enumerate() {
            let same = match dtype {
                "float32" | "float16" | "bfloat16" => {
                    as_f64(got).map(|g| g as f32) == as_f64(want).map(|w| w as f32)
                }
                "float64" => as_f64(got) == as_f64(want),
                _ => *got == want,
            };
            assert!(
                same,
                "{context}: output {name}[{i}] ({dtype}): got {got}, expected {want}"
            );
        }
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s == "NaN" => Some(f64::NAN),
        Value::String(s) if s == "Infinity" => Some(f64::INFINITY),
        Value::String(s) if s == "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// The shape and row-major values of nested JSON lists.
fn flatten(value: &Value) -> (Vec<usize>, Vec<&Value>) {
    let mut shape = Vec::new();
    let mut cursor = value;
    while let Value::Array(items) = cursor {
        shape.push(items.len());
        match items.first() {
            Some(first) => cursor = first,
            None => break,
        }
    }
    let mut flat = Vec::new();
    collect(value, &mut flat);
    (shape, flat)
}

fn collect<'v>(value: &'v Value, out: &mut Vec<&'v Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
        leaf => out.push(leaf),
    }
}
