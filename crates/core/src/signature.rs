use std::collections::BTreeMap;

use crate::DType;

/// One input or output of a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The graph tensor the signature binds to, e.g. `serving_default_x:0`.
    pub tensor_name: String,
    pub dtype: DType,
    /// Dimensions, `-1` where unknown; `None` when even the rank is unknown.
    pub shape: Option<Vec<i64>>,
}

/// A SavedModel signature: named inputs and outputs plus the method it implements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SignatureDef {
    /// e.g. `tensorflow/serving/predict`.
    pub method_name: String,
    pub inputs: BTreeMap<String, TensorInfo>,
    pub outputs: BTreeMap<String, TensorInfo>,
}

/// A signature as a model's metadata lists it (TF Serving's `GetModelMetadata`): every
/// signature of the served MetaGraph, runnable or not, TensorFlow's `__saved_model_init_op`
/// included, with its tensors as the SavedModel declares them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListedSignature {
    pub method_name: String,
    pub inputs: BTreeMap<String, ListedTensor>,
    pub outputs: BTreeMap<String, ListedTensor>,
    /// The serialized `SignatureDef` as the SavedModel stores it, when the engine read one:
    /// what gRPC's metadata sends, whole (a composite tensor's `type_spec` included).
    pub stored: Option<Vec<u8>>,
    /// The signature stores default values for some inputs (`SignatureDef.defaults`, from
    /// a `tf.function`'s arguments with defaults); gRPC's metadata carries them in `stored`.
    pub has_defaults: bool,
}

/// One input or output of a [`ListedSignature`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTensor {
    /// TensorFlow's `DataType` number: also those soma cannot carry (`DT_INVALID` = 0 for
    /// `__saved_model_init_op`, `_REF` types, numbers it does not know).
    pub dtype: i32,
    /// Dimensions, `-1` where unknown; `None` when even the rank is unknown.
    pub shape: Option<Vec<i64>>,
    pub encoding: TensorEncoding,
}

/// How a signature tensor is bound to the graph (`TensorInfo`'s `encoding`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorEncoding {
    /// A dense tensor, e.g. `serving_default_x:0`.
    Name(String),
    /// A sparse tensor's three dense parts.
    CooSparse {
        values_tensor_name: String,
        indices_tensor_name: String,
        dense_shape_tensor_name: String,
    },
    /// A composite tensor (ragged, ...): its flat components (its `type_spec` is only in
    /// [`ListedSignature::stored`]).
    Composite { components: Vec<ListedTensor> },
    /// No encoding set.
    None,
}

impl From<&TensorInfo> for ListedTensor {
    fn from(info: &TensorInfo) -> ListedTensor {
        ListedTensor {
            dtype: info.dtype.to_proto(),
            shape: info.shape.clone(),
            encoding: TensorEncoding::Name(info.tensor_name.clone()),
        }
    }
}

impl From<&SignatureDef> for ListedSignature {
    fn from(signature: &SignatureDef) -> ListedSignature {
        let list = |map: &BTreeMap<String, TensorInfo>| {
            map.iter()
                .map(|(alias, info)| (alias.clone(), ListedTensor::from(info)))
                .collect()
        };
        ListedSignature {
            method_name: signature.method_name.clone(),
            inputs: list(&signature.inputs),
            outputs: list(&signature.outputs),
            stored: None,
            has_defaults: false,
        }
    }
}

/// Formats a signature shape the way `saved_model_cli` does: `(-1, 4)`, `()` or `unknown rank`.
pub fn format_shape(shape: Option<&[i64]>) -> String {
    match shape {
        None => "unknown rank".to_string(),
        Some([one]) => format!("({one},)"),
        Some(dims) => {
            let parts: Vec<String> = dims.iter().map(i64::to_string).collect();
            format!("({})", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_print_like_saved_model_cli() {
        assert_eq!(format_shape(Some(&[-1, 4])), "(-1, 4)");
        assert_eq!(format_shape(Some(&[-1])), "(-1,)");
        assert_eq!(format_shape(Some(&[])), "()");
        assert_eq!(format_shape(None), "unknown rank");
    }
}
