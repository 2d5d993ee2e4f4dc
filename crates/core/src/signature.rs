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
