//! Signatures for the fake models of tests that need a model but not TensorFlow.

use std::collections::BTreeMap;

use soma_core::{DType, SignatureDef, TensorInfo};

/// One `serving_default` signature, float vector `x` in, float vector `y` out.
pub fn vector_signatures() -> BTreeMap<String, SignatureDef> {
    let info = |name: &str| TensorInfo {
        tensor_name: format!("{name}:0"),
        dtype: DType::Float,
        shape: Some(vec![-1]),
    };
    let signature = SignatureDef {
        method_name: "tensorflow/serving/predict".into(),
        inputs: BTreeMap::from([("x".to_string(), info("x"))]),
        outputs: BTreeMap::from([("y".to_string(), info("y"))]),
    };
    BTreeMap::from([("serving_default".to_string(), signature)])
}
