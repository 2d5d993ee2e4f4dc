//! Model status and metadata bodies, printed like TF Serving prints its protos
//! (`MessageToJsonString` with whitespace and proto field names; int64 as strings).

use std::collections::BTreeMap;

use serde::Serialize;
use soma_core::{DType, ListedSignature, ListedTensor, TensorEncoding};
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
    /// `SignatureDef.defaults` (TensorFlow's field 4), printed as TF Serving prints every
    /// field, empty or not. Default values themselves are not printed here: a signature
    /// that has some leaves the field out (gRPC's metadata carries them).
    #[serde(skip_serializing_if = "Option::is_none")]
    defaults: Option<BTreeMap<&'a str, ()>>,
}

/// `TensorInfo`: the dtype and shape, then the one encoding that is set (TF Serving's
/// printer puts the `encoding` oneof after them).
#[derive(Serialize)]
struct TensorInfoJson<'a> {
    /// The enum's name, or its number if soma does not know it (as protobuf prints it).
    dtype: serde_json::Value,
    tensor_shape: ShapeJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    coo_sparse: Option<CooSparseJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    composite_tensor: Option<CompositeJson<'a>>,
}

#[derive(Serialize)]
struct CooSparseJson<'a> {
    values_tensor_name: &'a str,
    indices_tensor_name: &'a str,
    dense_shape_tensor_name: &'a str,
}

/// A composite tensor's components; its `type_spec` (a nested `StructuredValue`) is not
/// printed (gRPC's metadata carries it as stored).
#[derive(Serialize)]
struct CompositeJson<'a> {
    components: Vec<TensorInfoJson<'a>>,
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

fn tensor_info(info: &ListedTensor) -> TensorInfoJson<'_> {
    let mut json = TensorInfoJson {
        dtype: match DType::proto_enum_name(info.dtype) {
            Some(name) => name.into(),
            None => info.dtype.into(),
        },
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
        name: None,
        coo_sparse: None,
        composite_tensor: None,
    };
    match &info.encoding {
        TensorEncoding::Name(name) => json.name = Some(name),
        TensorEncoding::CooSparse {
            values_tensor_name,
            indices_tensor_name,
            dense_shape_tensor_name,
        } => {
            json.coo_sparse = Some(CooSparseJson {
                values_tensor_name,
                indices_tensor_name,
                dense_shape_tensor_name,
            })
        }
        TensorEncoding::Composite { components } => {
            json.composite_tensor = Some(CompositeJson {
                components: components.iter().map(tensor_info).collect(),
            })
        }
        TensorEncoding::None => {}
    }
    json
}

fn infos(map: &BTreeMap<String, ListedTensor>) -> BTreeMap<&str, TensorInfoJson<'_>> {
    map.iter()
        .map(|(k, v)| (k.as_str(), tensor_info(v)))
        .collect()
}

fn signature(sig: &ListedSignature) -> SignatureJson<'_> {
    SignatureJson {
        inputs: infos(&sig.inputs),
        outputs: infos(&sig.outputs),
        method_name: &sig.method_name,
        defaults: (!sig.has_defaults).then(BTreeMap::new),
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
    // Every signature, `__saved_model_init_op` and those soma cannot run included.
    let listed = servable.listed_signatures();
    let signatures = proto_json(&SignatureDefMap {
        signature_def: listed
            .iter()
            .map(|(k, v)| (k.as_str(), signature(v)))
            .collect(),
    });
    format!("{{\n\"model_spec\":{spec},\n\"metadata\": {{\"signature_def\": {signatures}}}\n}}\n")
}
