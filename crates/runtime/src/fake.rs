//! A fake engine for unit tests: one signature `serving_default` that doubles a float32
//! input `x` of shape (-1, 2) into output `y`, plus a `broken` signature that always fails.

use std::collections::BTreeMap;

use soma_core::runner::{ModelRunner, RunError};
use soma_core::{DType, ErrorKind, SignatureDef, Tensor, TensorInfo};

#[derive(Debug)]
pub(crate) struct Doubler {
    signatures: BTreeMap<String, SignatureDef>,
}

impl Doubler {
    pub(crate) fn new() -> Doubler {
        let info = |name: &str| TensorInfo {
            tensor_name: format!("{name}:0"),
            dtype: DType::Float,
            shape: Some(vec![-1, 2]),
        };
        let mut sig = SignatureDef {
            method_name: "tensorflow/serving/predict".into(),
            ..SignatureDef::default()
        };
        sig.inputs.insert("x".into(), info("x"));
        sig.outputs.insert("y".into(), info("y"));
        let mut signatures = BTreeMap::new();
        signatures.insert("broken".to_string(), sig.clone());
        signatures.insert("picky".to_string(), sig.clone());
        signatures.insert("stubborn".to_string(), sig.clone());
        signatures.insert("serving_default".to_string(), sig);
        Doubler { signatures }
    }
}

impl ModelRunner for Doubler {
    fn signatures(&self) -> &BTreeMap<String, SignatureDef> {
        &self.signatures
    }

    fn run(&self, signature: &str, inputs: &[&Tensor]) -> Result<Vec<Tensor>, RunError> {
        if signature == "broken" {
            return Err(RunError::new(
                ErrorKind::FailedPrecondition,
                "variable not initialised",
            ));
        }
        let x = inputs[0]
            .to_vec::<f32>()
            .map_err(|e| RunError::new(ErrorKind::Internal, e.to_string()))?;
        if signature == "picky" && x.contains(&0.0) {
            return Err(RunError::new(
                ErrorKind::InvalidArgument,
                "no zeros, please",
            ));
        }
        if signature == "stubborn" && x.iter().any(|v| *v < 2.0) {
            return Err(RunError::new(
                ErrorKind::InvalidArgument,
                "two or more, please",
            ));
        }
        let y: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
        let out = Tensor::from_slice(inputs[0].shape().to_vec(), &y)
            .map_err(|e| RunError::new(ErrorKind::Internal, e.to_string()))?;
        Ok(vec![out])
    }
}
