//! Classify, Regress and MultiInference: tf.Example inputs, results per example.
//!
//! As in TF Serving, the examples are serialized into one DT_STRING tensor of shape
//! `[n]` fed to the signature's only input; with `example_list_with_context` the context
//! is merged into each example (serialized context followed by the example, which protobuf
//! parsing merges). Classification signatures return `classes` (DT_STRING) and/or `scores`
//! (DT_FLOAT), both `[n, num_classes]`; regression signatures return `outputs` (DT_FLOAT,
//! `[n]` or `[n, 1]`).

use std::collections::BTreeMap;

use prost::Message;
use soma_core::{DType, ErrorKind, Tensor};
use soma_grpc_proto::tensorflow::serving::{
    Class, ClassificationResult, Classifications, Input, Regression, RegressionResult, input,
};
use soma_metrics::RuntimeApi;
use soma_runtime::Servable;
use tonic::Status;

use crate::status::{from_runtime, invalid};

use soma_runtime::signature_method::{
    CLASSES_OUTPUT as CLASSES, EXAMPLES_INPUT as INPUTS, InferenceApi,
    REGRESSION_OUTPUT as OUTPUTS, SCORES_OUTPUT as SCORES, check_signature,
};
pub(crate) use soma_runtime::signature_method::{CLASSIFY_METHOD, REGRESS_METHOD};

/// Whether a Classify or Regress run counts in TF Serving's `runtime_latency`: a request's
/// does (a warm-up record's too); the runs of a MultiInference's tasks do not, as TF Serving
/// times none of its MultiInference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunTiming {
    Recorded,
    Unrecorded,
}

/// The serialized examples of a request, one per example, context merged in.
pub fn serialize_input(input: Option<&Input>) -> Result<Vec<Vec<u8>>, Status> {
    let examples = match input.and_then(|i| i.kind.as_ref()) {
        None => Vec::new(),
        Some(input::Kind::ExampleList(list)) => {
            list.examples.iter().map(Message::encode_to_vec).collect()
        }
        Some(input::Kind::ExampleListWithContext(list)) => {
            let context = list
                .context
                .as_ref()
                .map(Message::encode_to_vec)
                .unwrap_or_default();
            list.examples
                .iter()
                .map(|e| {
                    let mut bytes = context.clone();
                    e.encode(&mut bytes).expect("a Vec grows as needed");
                    bytes
                })
                .collect()
        }
    };
    if examples.is_empty() {
        return Err(invalid("Input is empty."));
    }
    Ok(examples)
}

/// The key of the signature for a classify/regress request, checked like TF Serving checks
/// it.
fn signature_key<'a>(
    servable: &'a Servable,
    name: Option<&str>,
    api: InferenceApi,
    check_method_name: bool,
) -> Result<&'a str, Status> {
    let (key, sig) = servable.signature(name).map_err(|e| match name {
        Some(name) if e.kind() == ErrorKind::NotFound => {
            invalid(format!("No signature was found with the name: {name}"))
        }
        _ => from_runtime(&e),
    })?;
    check_signature(sig, api, check_method_name).map_err(|e| from_runtime(&e))?;
    Ok(key)
}

/// Runs the signature `key` on `examples`, timed for `api` if `timing` says so.
fn run(
    servable: &Servable,
    key: &str,
    examples: Vec<Vec<u8>>,
    api: RuntimeApi,
    timing: RunTiming,
) -> Result<BTreeMap<String, Tensor>, Status> {
    let n = examples.len();
    let tensor = Tensor::from_strings(vec![n], examples).expect("one string per example");
    let inputs = BTreeMap::from([(INPUTS.to_string(), tensor)]);
    let prediction = servable
        .predict(Some(key), &inputs)
        .map_err(|e| from_runtime(&e))?;
    if timing == RunTiming::Recorded {
        servable.record_runtime_latency(api, prediction.runtime);
    }
    Ok(prediction.outputs)
}

/// Runs a classification signature; returns the signature key used and the result.
/// `check_method_name`: TF Serving's `--enable_signature_method_name_check`.
pub fn classify(
    servable: &Servable,
    signature_name: Option<&str>,
    examples: Vec<Vec<u8>>,
    check_method_name: bool,
    timing: RunTiming,
) -> Result<(String, ClassificationResult), Status> {
    let key = signature_key(
        servable,
        signature_name,
        InferenceApi::Classify,
        check_method_name,
    )?;
    let n = examples.len();
    let mut outputs = run(servable, key, examples, RuntimeApi::Classify, timing)?;
    let result = classification_result(n, outputs.remove(CLASSES), outputs.remove(SCORES))?;
    Ok((key.to_string(), result))
}

/// Runs a regression signature; returns the signature key used and the result.
pub fn regress(
    servable: &Servable,
    signature_name: Option<&str>,
    examples: Vec<Vec<u8>>,
    check_method_name: bool,
    timing: RunTiming,
) -> Result<(String, RegressionResult), Status> {
    let key = signature_key(
        servable,
        signature_name,
        InferenceApi::Regress,
        check_method_name,
    )?;
    let n = examples.len();
    let mut outputs = run(servable, key, examples, RuntimeApi::Regress, timing)?;
    let values = outputs.remove(OUTPUTS).expect("the signature declares it");
    Ok((key.to_string(), regression_result(n, &values)?))
}

/// Builds the per-example classes from the `classes` and/or `scores` outputs.
pub fn classification_result(
    n: usize,
    classes: Option<Tensor>,
    scores: Option<Tensor>,
) -> Result<ClassificationResult, Status> {
    let check = |t: &Tensor, name: &str, dtype: DType| {
        if t.shape().len() != 2 {
            return Err(invalid(format!(
                "Expected Tensor shape: [batch_size num_classes] but got {:?}",
                t.shape()
            )));
        }
        if t.dtype() != dtype {
            return Err(invalid(format!(
                "Expected {name} Tensor of {}. Got: {}",
                dtype.proto_name(),
                t.dtype().proto_name()
            )));
        }
        if t.shape()[0] != n {
            return Err(invalid(format!(
                "Expected {name} output batch size of {n}. Got: {}",
                t.shape()[0]
            )));
        }
        Ok(t.shape()[1])
    };
    let labels = classes
        .as_ref()
        .map(|t| check(t, CLASSES, DType::String))
        .transpose()?;
    let widths = scores
        .as_ref()
        .map(|t| check(t, SCORES, DType::Float))
        .transpose()?;
    let num_classes = match (labels, widths) {
        (Some(a), Some(b)) if a != b => {
            return Err(invalid(format!(
                "Tensors class and score should match in dim_size(1). Got {a} vs. {b}"
            )));
        }
        (a, b) => a.or(b).unwrap_or(0),
    };
    let labels = classes.as_ref().and_then(Tensor::strings);
    let scores = scores.map(|t| t.to_vec::<f32>().expect("checked to be float32"));
    let classifications = (0..n)
        .map(|i| Classifications {
            classes: (0..num_classes)
                .map(|c| {
                    let at = i * num_classes + c;
                    Class {
                        label: labels
                            .map(|l| String::from_utf8_lossy(&l[at]).into_owned())
                            .unwrap_or_default(),
                        score: scores.as_ref().map(|s| s[at]).unwrap_or_default(),
                    }
                })
                .collect(),
        })
        .collect();
    Ok(ClassificationResult { classifications })
}

/// Builds the per-example values from the `outputs` output (`[n]` or `[n, 1]`).
pub fn regression_result(n: usize, values: &Tensor) -> Result<RegressionResult, Status> {
    let shape_ok = match values.shape() {
        [batch] | [batch, 1] => *batch == n,
        _ => false,
    };
    if !shape_ok {
        return Err(invalid(format!(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] with batch_size {n}, but got {:?}",
            values.shape()
        )));
    }
    if values.dtype() != DType::Float {
        return Err(invalid(format!(
            "Expected output Tensor of DT_FLOAT. Got: {}",
            values.dtype().proto_name()
        )));
    }
    let regressions = values
        .to_vec::<f32>()
        .expect("checked to be float32")
        .into_iter()
        .map(|value| Regression { value })
        .collect();
    Ok(RegressionResult { regressions })
}

#[cfg(test)]
mod tests;
