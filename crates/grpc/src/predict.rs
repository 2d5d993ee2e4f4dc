//! Predict and GetModelMetadata.

use soma_runtime::signature_method::{InferenceApi, check_signature};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost::Message;
use soma_core::{ErrorKind, ListedSignature, ListedTensor, SignatureDef, Tensor, TensorEncoding};
use soma_grpc_proto::SIGNATURE_DEF_MAP_TYPE_URL;
use soma_grpc_proto::tensorflow::serving::{
    GetModelMetadataRequest, GetModelMetadataResponse, PredictResponse,
};
use soma_grpc_proto::tensorflow::{self as tf, TensorProto, TensorShapeProto, tensor_info};
use soma_metrics::RuntimeApi;
use soma_runtime::Servable;
use tonic::Status;

use crate::codec::{MAX_REPEATED_BYTES, tensor_from_proto_within, tensor_into_proto};
use crate::spec::{Target, response_spec};
use crate::status::{from_runtime, invalid, status};

const SIGNATURE_DEF_FIELD: &str = "signature_def";

/// Runs one PredictRequest on `servable` (called on a blocking thread: it may wait for a
/// batch). The run is timed in TF Serving's `runtime_latency`, as its `RunPredict` times
/// requests and warm-up records alike.
pub(crate) fn predict(
    servable: &Servable,
    target: &Target,
    inputs: HashMap<String, TensorProto>,
    output_filter: &[String],
    deadline: Option<std::time::Instant>,
    check_method_name: bool,
) -> Result<PredictResponse, Status> {
    let (key, outputs, tensors) =
        decode(servable, target, inputs, output_filter, check_method_name)?;
    let prediction = servable
        .predict_owned(Some(key), tensors, deadline)
        .map_err(|e| from_runtime(&e))?;
    servable.record_runtime_latency(RuntimeApi::Predict, prediction.runtime);
    Ok(response(target, servable, key, outputs, prediction.outputs))
}

/// Runs one PredictRequest on the async thread that read it, in a batch with the others
/// that thread has read if batching is on ([`Servable::queue_owned_in_place`]); for
/// servables that [may answer now](Servable::may_answer_now).
pub(crate) async fn predict_in_place(
    servable: &Servable,
    target: &Target,
    inputs: HashMap<String, TensorProto>,
    output_filter: &[String],
    check_method_name: bool,
) -> Result<PredictResponse, Status> {
    let (key, outputs, tensors) =
        decode(servable, target, inputs, output_filter, check_method_name)?;
    let queued = servable
        .queue_owned_in_place(Some(key), tensors)
        .map_err(|e| from_runtime(&e))?;
    // Let the requests this thread has read join the batch before it runs. Twice: in the
    // first turn the thread reads its other connections, but their requests only become
    // tasks of their own then (hyper spawns one per HTTP/2 stream), and they decode and
    // queue in the next (one channel of 8 streams, iris, `auto`: 3.2 -> 3.6 rows per run,
    // +5% req/s; BENCHMARKS.md §4).
    if queued.worth_yielding(soma_net::thread_may_have_company()) {
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
    }
    let prediction = queued.await.map_err(|e| from_runtime(&e))?;
    servable.record_runtime_latency(RuntimeApi::Predict, prediction.runtime);
    Ok(response(target, servable, key, outputs, prediction.outputs))
}

/// A PredictRequest checked against the servable: the signature key, the outputs to return
/// and the decoded input tensors.
type Decoded<'a> = (&'a str, Vec<String>, BTreeMap<String, Tensor>);

/// Checks the request's signature (its method name too if `check_method_name`), input names
/// and output filter, and decodes its tensors.
fn decode<'a>(
    servable: &'a Servable,
    target: &Target,
    inputs: HashMap<String, TensorProto>,
    output_filter: &[String],
    check_method_name: bool,
) -> Result<Decoded<'a>, Status> {
    let (key, signature) =
        servable
            .signature(target.signature.as_deref())
            .map_err(|e| match target.signature.as_deref() {
                Some(name) if e.kind() == ErrorKind::NotFound => status(
                    ErrorKind::FailedPrecondition,
                    format!("Serving signature key \"{name}\" not found."),
                ),
                _ => from_runtime(&e),
            })?;
    check_signature(signature, InferenceApi::Predict, check_method_name)
        .map_err(|e| from_runtime(&e))?;
    check_input_names(signature, &inputs)?;
    let outputs = selected_outputs(signature, output_filter)?;
    let mut tensors = BTreeMap::new();
    let mut repeat_allowance = MAX_REPEATED_BYTES;
    // By value: a `tensor_content` becomes its tensor's bytes without a copy.
    for (alias, proto) in inputs {
        let tensor = tensor_from_proto_within(proto, &mut repeat_allowance)
            .map_err(|e| invalid(format!("tensor parsing error: {alias}: {e}")))?;
        tensors.insert(alias, tensor);
    }
    Ok((key, outputs, tensors))
}

/// The response with the `outputs` asked for, taken from those the model `produced`.
fn response(
    target: &Target,
    servable: &Servable,
    key: &str,
    outputs: Vec<String>,
    mut produced: BTreeMap<String, Tensor>,
) -> PredictResponse {
    let outputs = outputs
        .into_iter()
        .filter_map(|alias| {
            let tensor: Tensor = produced.remove(&alias)?;
            Some((alias, tensor_into_proto(tensor)))
        })
        .collect();
    PredictResponse {
        model_spec: Some(response_spec(&target.name, servable, Some(key))),
        outputs,
    }
}

/// TF Serving's check and message for missing or extra inputs.
fn check_input_names(
    signature: &SignatureDef,
    inputs: &HashMap<String, TensorProto>,
) -> Result<(), Status> {
    let sent: BTreeSet<&str> = inputs.keys().map(String::as_str).collect();
    let wanted: BTreeSet<&str> = signature.inputs.keys().map(String::as_str).collect();
    if sent == wanted {
        return Ok(());
    }
    let join = |set: &BTreeSet<&str>| join_names(set);
    let extra: BTreeSet<&str> = sent.difference(&wanted).copied().collect();
    let missing: BTreeSet<&str> = wanted.difference(&sent).copied().collect();
    if sent.len() == wanted.len() {
        let alias = extra.first().expect("same size, different sets");
        return Err(invalid(format!(
            "input tensor alias not found in signature: {alias}. Inputs expected to be in the set {{{}}}.",
            join(&wanted)
        )));
    }
    Err(invalid(format!(
        "input size does not match signature: {}!={} len({{{}}}) != len({{{}}}). Sent extra: {{{}}}. Missing but required: {{{}}}.",
        sent.len(),
        wanted.len(),
        join(&sent),
        join(&wanted),
        join(&extra),
        join(&missing)
    )))
}

/// Names joined with commas as TF Serving lists them, shortened past ~1 KB: the message
/// travels in the `grpc-message` trailer, and gRPC clients refuse metadata over 8–16 KiB
/// (a request with 10,000 inputs got RESOURCE_EXHAUSTED from its own client instead of
/// this INVALID_ARGUMENT).
fn join_names(names: &BTreeSet<&str>) -> String {
    const MAX_CHARS: usize = 1024;
    let mut text = String::new();
    for (shown, name) in names.iter().enumerate() {
        if shown > 0 {
            text.push(',');
        }
        if text.len() + name.len() > MAX_CHARS {
            text.push_str(&format!("... {} more", names.len() - shown));
            break;
        }
        text.push_str(name);
    }
    text
}

/// The output aliases to return: `output_filter`, or every output of the signature.
fn selected_outputs(signature: &SignatureDef, filter: &[String]) -> Result<Vec<String>, Status> {
    if filter.is_empty() {
        return Ok(signature.outputs.keys().cloned().collect());
    }
    let mut seen = BTreeSet::new();
    for alias in filter {
        if !signature.outputs.contains_key(alias) {
            let names: Vec<&str> = signature.outputs.keys().map(String::as_str).collect();
            return Err(invalid(format!(
                "output tensor alias not found in signature: {alias} Outputs expected to be in the set {{{}}}.",
                names.join(",")
            )));
        }
        if !seen.insert(alias) {
            return Err(invalid(format!("duplicate output tensor alias: {alias}")));
        }
    }
    Ok(filter.to_vec())
}

/// Validates a GetModelMetadataRequest before any model is looked up.
pub(crate) fn check_metadata_request(request: &GetModelMetadataRequest) -> Result<(), Status> {
    if request.metadata_field.is_empty() {
        return Err(invalid(
            "GetModelMetadataRequest must specify at least one metadata_field",
        ));
    }
    if let Some(field) = request
        .metadata_field
        .iter()
        .find(|f| *f != SIGNATURE_DEF_FIELD)
    {
        return Err(invalid(format!("Metadata field {field} is not supported")));
    }
    Ok(())
}

/// The servable's signatures, packed as TF Serving packs them: every signature of the
/// MetaGraph, each as the SavedModel stores it.
pub(crate) fn metadata(name: &str, servable: &Servable) -> GetModelMetadataResponse {
    let any = prost_types::Any {
        type_url: SIGNATURE_DEF_MAP_TYPE_URL.to_string(),
        value: signature_def_map(&servable.listed_signatures()),
    };
    GetModelMetadataResponse {
        model_spec: Some(response_spec(name, servable, None)),
        metadata: [(SIGNATURE_DEF_FIELD.to_string(), any)].into(),
    }
}

/// A serialized `SignatureDefMap` (`map<string, SignatureDef> signature_def = 1`), written
/// by hand so that stored signatures go out byte for byte: prost would drop the fields
/// soma's protos leave out (a composite tensor's `type_spec`). A signature an engine did
/// not read from a SavedModel is encoded from what soma knows of it.
fn signature_def_map(listed: &BTreeMap<String, ListedSignature>) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let mut out = Vec::new();
    for (key, signature) in listed {
        let value = match &signature.stored {
            Some(stored) => stored.clone(),
            None => signature_to_proto(signature).encode_to_vec(),
        };
        // A map entry: key = 1, value = 2.
        let mut entry = Vec::with_capacity(key.len() + value.len() + 12);
        encode_key(1, WireType::LengthDelimited, &mut entry);
        encode_varint(key.len() as u64, &mut entry);
        entry.extend_from_slice(key.as_bytes());
        encode_key(2, WireType::LengthDelimited, &mut entry);
        encode_varint(value.len() as u64, &mut entry);
        entry.extend_from_slice(&value);
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(entry.len() as u64, &mut out);
        out.extend_from_slice(&entry);
    }
    out
}

pub(crate) fn signature_to_proto(signature: &ListedSignature) -> tf::SignatureDef {
    let infos = |map: &BTreeMap<String, ListedTensor>| {
        map.iter()
            .map(|(alias, info)| (alias.clone(), tensor_info_to_proto(info)))
            .collect()
    };
    tf::SignatureDef {
        inputs: infos(&signature.inputs),
        outputs: infos(&signature.outputs),
        method_name: signature.method_name.clone(),
        defaults: HashMap::new(),
    }
}

fn tensor_info_to_proto(info: &ListedTensor) -> tf::TensorInfo {
    let shape = match &info.shape {
        None => TensorShapeProto {
            dim: Vec::new(),
            unknown_rank: true,
        },
        Some(dims) => TensorShapeProto {
            dim: dims
                .iter()
                .map(|d| tf::tensor_shape_proto::Dim {
                    size: *d,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        },
    };
    let encoding = match &info.encoding {
        TensorEncoding::Name(name) => Some(tensor_info::Encoding::Name(name.clone())),
        TensorEncoding::CooSparse {
            values_tensor_name,
            indices_tensor_name,
            dense_shape_tensor_name,
        } => Some(tensor_info::Encoding::CooSparse(tensor_info::CooSparse {
            values_tensor_name: values_tensor_name.clone(),
            indices_tensor_name: indices_tensor_name.clone(),
            dense_shape_tensor_name: dense_shape_tensor_name.clone(),
        })),
        // Only a SavedModel has composite tensors, and its signatures go out as stored.
        TensorEncoding::Composite { .. } | TensorEncoding::None => None,
    };
    tf::TensorInfo {
        dtype: info.dtype,
        tensor_shape: Some(shape),
        encoding,
    }
}

#[cfg(test)]
mod tests {
    use soma_core::{DType, SignatureDef, TensorInfo};
    use soma_grpc_proto::tensorflow::serving::SignatureDefMap;

    use super::*;

    /// The hand-written map decodes as protobuf's: stored signatures byte for byte (here one
    /// with a field soma's protos do not declare), the others encoded from what soma knows.
    #[test]
    fn signature_def_maps_pass_stored_signatures_on_whole() {
        let known = SignatureDef {
            method_name: "tensorflow/serving/predict".into(),
            inputs: BTreeMap::from([(
                "x".to_string(),
                TensorInfo {
                    tensor_name: "x:0".into(),
                    dtype: DType::Float,
                    shape: Some(vec![-1, 4]),
                },
            )]),
            outputs: BTreeMap::new(),
        };
        let mut stored = ListedSignature::from(&known);
        let mut bytes = signature_to_proto(&stored).encode_to_vec();
        // Field 9 (varint 1), unknown to prost's SignatureDef.
        bytes.extend([0x48, 0x01]);
        stored.stored = Some(bytes.clone());
        let listed = BTreeMap::from([
            ("a".to_string(), ListedSignature::from(&known)),
            ("b".to_string(), stored),
        ]);
        let map = signature_def_map(&listed);
        let decoded = SignatureDefMap::decode(map.as_slice()).unwrap();
        assert_eq!(decoded.signature_def["a"], signature_to_proto(&listed["a"]));
        assert_eq!(decoded.signature_def["b"], signature_to_proto(&listed["a"]));
        let b_entry = [&[0x0a, 1, b'b', 0x12, bytes.len() as u8][..], &bytes].concat();
        assert!(map.windows(b_entry.len()).any(|w| w == b_entry));
    }
}
