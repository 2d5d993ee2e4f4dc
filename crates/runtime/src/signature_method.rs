//! TF Serving's checks of a SignatureDef against the API that runs it (its
//! `PreProcessClassification`, `PreProcessRegression` and predict's `VerifySignature`),
//! shared by the gRPC and REST front ends so both answer alike.
//!
//! `method_name` is checked only when asked (TF Serving's
//! `--enable_signature_method_name_check`, off by default): TensorFlow 2 writes
//! `tensorflow/serving/predict` into every signature it saves, so a native TF2 model with a
//! classification signature (one string input `inputs`, outputs `classes` and/or `scores`)
//! can only be classified with the check off. The shape checks always apply.

use soma_core::SignatureDef;

use crate::RuntimeError;

pub const PREDICT_METHOD: &str = "tensorflow/serving/predict";
pub const CLASSIFY_METHOD: &str = "tensorflow/serving/classify";
pub const REGRESS_METHOD: &str = "tensorflow/serving/regress";

/// The input that classify and regress feed serialized `tf.Example`s to.
pub const EXAMPLES_INPUT: &str = "inputs";
pub const CLASSES_OUTPUT: &str = "classes";
pub const SCORES_OUTPUT: &str = "scores";
pub const REGRESSION_OUTPUT: &str = "outputs";

/// The API a request came in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InferenceApi {
    Predict,
    Classify,
    Regress,
}

/// Checks `signature` for `api` as TF Serving does; `check_method_name` also requires its
/// `method_name` to fit the API.
pub fn check_signature(
    signature: &SignatureDef,
    api: InferenceApi,
    check_method_name: bool,
) -> Result<(), RuntimeError> {
    let invalid = |message: String| Err(RuntimeError::InvalidInput(message));
    let method = signature.method_name.as_str();
    match api {
        InferenceApi::Predict => {
            if check_method_name
                && ![PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD].contains(&method)
            {
                return Err(RuntimeError::Internal(format!(
                    "Expected prediction signature method_name to be one of \
                     {{{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: {method}"
                )));
            }
            Ok(())
        }
        InferenceApi::Classify | InferenceApi::Regress => {
            let (kind, expected) = if api == InferenceApi::Classify {
                ("classification", CLASSIFY_METHOD)
            } else {
                ("regression", REGRESS_METHOD)
            };
            if check_method_name && method != expected {
                return invalid(format!(
                    "Expected {kind} signature method_name to be {expected}. Was: {method}"
                ));
            }
            if signature.inputs.len() != 1 {
                return invalid("Expected one input Tensor.".into());
            }
            let outputs = signature.outputs.len();
            if api == InferenceApi::Classify && !(1..=2).contains(&outputs) {
                return invalid(format!(
                    "Expected one or two output Tensors, found {outputs}"
                ));
            }
            if api == InferenceApi::Regress && outputs != 1 {
                return invalid("Expected one output Tensor.".into());
            }
            if !signature.inputs.contains_key(EXAMPLES_INPUT) {
                return invalid(format!(
                    "No {kind} inputs found in SignatureDef: expected an input named \
                     \"{EXAMPLES_INPUT}\""
                ));
            }
            let has = |name: &str| signature.outputs.contains_key(name);
            if api == InferenceApi::Classify && !has(CLASSES_OUTPUT) && !has(SCORES_OUTPUT) {
                return invalid(format!(
                    "Expected classification signature outputs to contain at least one of \
                     \"{CLASSES_OUTPUT}\" or \"{SCORES_OUTPUT}\""
                ));
            }
            if api == InferenceApi::Regress && !has(REGRESSION_OUTPUT) {
                return invalid(format!(
                    "No regression outputs found in SignatureDef: expected an output named \
                     \"{REGRESSION_OUTPUT}\""
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use soma_core::{DType, TensorInfo};

    use super::*;

    fn signature(method: &str, inputs: &[&str], outputs: &[&str]) -> SignatureDef {
        let info = |names: &[&str]| -> BTreeMap<String, TensorInfo> {
            names
                .iter()
                .map(|n| {
                    let info = TensorInfo {
                        tensor_name: format!("{n}:0"),
                        dtype: DType::Float,
                        shape: Some(vec![-1]),
                    };
                    (n.to_string(), info)
                })
                .collect()
        };
        SignatureDef {
            method_name: method.into(),
            inputs: info(inputs),
            outputs: info(outputs),
        }
    }

    fn message(result: Result<(), RuntimeError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn a_tf2_classifier_passes_unless_method_names_are_checked() {
        let tf2 = signature(PREDICT_METHOD, &["inputs"], &["classes", "scores"]);
        assert_eq!(check_signature(&tf2, InferenceApi::Classify, false), Ok(()));
        assert_eq!(
            message(check_signature(&tf2, InferenceApi::Classify, true)),
            "Expected classification signature method_name to be tensorflow/serving/classify. \
             Was: tensorflow/serving/predict"
        );
        let tf1 = signature(CLASSIFY_METHOD, &["inputs"], &["scores"]);
        assert_eq!(check_signature(&tf1, InferenceApi::Classify, true), Ok(()));
        let regressor = signature(PREDICT_METHOD, &["inputs"], &["outputs"]);
        assert_eq!(
            check_signature(&regressor, InferenceApi::Regress, false),
            Ok(())
        );
    }

    #[test]
    fn shapes_are_checked_either_way() {
        let iris = signature(PREDICT_METHOD, &["x"], &["output_0"]);
        for check in [false, true] {
            let e = message(check_signature(&iris, InferenceApi::Classify, check));
            let want = if check {
                "method_name"
            } else {
                "No classification inputs found"
            };
            assert!(e.contains(want), "{e}");
        }
        let e = message(check_signature(&iris, InferenceApi::Regress, false));
        assert!(e.contains("No regression inputs found"), "{e}");
        let two_inputs = signature(PREDICT_METHOD, &["inputs", "y"], &["scores"]);
        assert_eq!(
            message(check_signature(&two_inputs, InferenceApi::Classify, false)),
            "Expected one input Tensor."
        );
        let classifier = signature(PREDICT_METHOD, &["inputs"], &["classes", "scores"]);
        assert_eq!(
            message(check_signature(&classifier, InferenceApi::Regress, false)),
            "Expected one output Tensor."
        );
        let no_scores = signature(PREDICT_METHOD, &["inputs"], &["logits"]);
        assert!(
            message(check_signature(&no_scores, InferenceApi::Classify, false))
                .contains("at least one of \"classes\" or \"scores\"")
        );
        let no_outputs = signature(PREDICT_METHOD, &["inputs"], &["value"]);
        assert!(
            message(check_signature(&no_outputs, InferenceApi::Regress, false))
                .contains("No regression outputs found")
        );
    }

    #[test]
    fn predict_takes_any_signature_unless_method_names_are_checked() {
        let odd = signature("custom/method", &["x"], &["y"]);
        assert_eq!(check_signature(&odd, InferenceApi::Predict, false), Ok(()));
        let error = check_signature(&odd, InferenceApi::Predict, true).unwrap_err();
        assert_eq!(error.kind(), soma_core::ErrorKind::Internal);
        let classify = signature(CLASSIFY_METHOD, &["inputs"], &["scores"]);
        assert_eq!(
            check_signature(&classify, InferenceApi::Predict, true),
            Ok(())
        );
    }
}
