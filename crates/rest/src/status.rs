//! Model status and metadata bodies, printed like TF Serving prints its protos
//! (`MessageToJsonString` with whitespace and proto field names; int64 as strings).

use std::collections::BTreeMap;

use serde::Serialize;
use soma_core::{SignatureDef, TensorInfo};
use soma_runtime::{Servable, VersionStatus};

#[derive(Serialize)]
struct StatusResponse {
    model_version_status: Vec<ModelVersionStatus>,
}

#[derive(Serialize)]
struct ModelVersionStatus {
    version: String,
    state: &'static str,
    status: StatusProto,
}

#[derive(Serialize)]
struct StatusProto {
    error_code: &'static str,
    error_message: String,
}

/// Protobuf's JSON printer with `add_whitespace`: one space per level, newline at the end.
fn proto_json(value: &impl Serialize) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serializing these plain structs cannot fail.
    let _ = value.serialize(&mut serializer);
    let mut text = String::from_utf8(out).unwrap_or_default();
    text.push('\n');
    text
}

/// `GetModelStatusResponse` as JSON.
pub(crate) fn status_json(versions: &[VersionStatus]) -> String {
    let model_version_status = versions
        .iter()
        .map(|v| ModelVersionStatus {
            version: v.version.to_string(),
            state: v.state.as_str(),
            status: match &v.error {
                None => StatusProto {
                    error_code: "OK",
                    error_message: String::new(),
                },
                Some((kind, message)) => StatusProto {
                    error_code: kind.as_str(),
                    error_message: message.clone(),
                },
            },
        })
        .collect();
    proto_json(&StatusResponse {
        model_version_status,
    })
}

#[derive(Serialize)]
struct ModelSpec<'a> {
    name: &'a str,
    signature_name: &'a str,
    version: String,
}

#[derive(Serialize)]
struct SignatureDefMap<'a> {
    signature_def: BTreeMap<&'a str, SignatureJson<'a>>,
}

#[derive(Serialize)]
struct SignatureJson<'a> {
    inputs: BTreeMap<&'a str, TensorInfoJson<'a>>,
    outputs: BTreeMap<&'a str, TensorInfoJson<'a>>,
    method_name: &'a str,
}

#[derive(Serialize)]
struct TensorInfoJson<'a> {
    dtype: &'static str,
    tensor_shape: ShapeJson,
    name: &'a str,
}

#[derive(Serialize)]
struct ShapeJson {
    dim: Vec<DimJson>,
    unknown_rank: bool,
}

#[derive(Serialize)]
struct DimJson {
    size: String,
    name: &'static str,
}

fn tensor_info(info: &TensorInfo) -> TensorInfoJson<'_> {
    TensorInfoJson {
        dtype: info.dtype.proto_name(),
        tensor_shape: ShapeJson {
            dim: info
                .shape
                .iter()
                .flatten()
                .map(|d| DimJson {
                    size: d.to_string(),
                    name: "",
                })
                .collect(),
            unknown_rank: info.shape.is_none(),
        },
        name: &info.tensor_name,
    }
}

fn infos(map: &BTreeMap<String, TensorInfo>) -> BTreeMap<&str, TensorInfoJson<'_>> {
    map.iter()
        .map(|(k, v)| (k.as_str(), tensor_info(v)))
        .collect()
}

fn signature(sig: &SignatureDef) -> SignatureJson<'_> {
    SignatureJson {
        inputs: infos(&sig.inputs),
        outputs: infos(&sig.outputs),
        method_name: &sig.method_name,
    }
}

/// `GetModelMetadataResponse` as TF Serving writes it: the two proto JSON parts glued by
/// hand (`http_rest_api_handler.cc`).
pub(crate) fn metadata_json(model: &str, servable: &Servable) -> String {
    let spec = proto_json(&ModelSpec {
        name: model,
        signature_name: "",
        version: servable.version().to_string(),
    });
    let signatures = proto_json(&SignatureDefMap {
        signature_def: servable
            .signatures()
            .iter()
            .map(|(k, v)| (k.as_str(), signature(v)))
            .collect(),
    });
    format!("{{\n\"model_spec\":{spec},\n\"metadata\": {{\"signature_def\": {signatures}}}\n}}\n")
}
