use std::collections::BTreeMap;

use soma_core::{DType, SignatureDef, Tensor, TensorData, TensorInfo};

use crate::RuntimeError;

/// Picks the signature a model serves by default.
///
/// The configured key wins; else the only signature; else `serving_default`; else
/// `predict`; else an error listing the keys. (Keras `model.export()` writes both `serve`
/// and `serving_default`, so the third rule is the one that usually applies.)
pub fn choose_signature(
    signatures: &BTreeMap<String, SignatureDef>,
    configured: Option<&str>,
    model: &str,
) -> Result<String, RuntimeError> {
    let keys = || {
        let quoted: Vec<String> = signatures.keys().map(|k| format!("'{k}'")).collect();
        quoted.join(", ")
    };
    if signatures.is_empty() {
        return Err(RuntimeError::Model(format!(
            "{model}: the SavedModel has no runnable signature"
        )));
    }
    if let Some(key) = configured {
        if signatures.contains_key(key) {
            return Ok(key.to_string());
        }
        return Err(RuntimeError::Model(format!(
            "{model}: signature_key '{key}' was not found; the model has: {}",
            keys()
        )));
    }
    if signatures.len() == 1 {
        return Ok(signatures.keys().next().cloned().unwrap_or_default());
    }
    for preferred in ["serving_default", "predict"] {
        if signatures.contains_key(preferred) {
            return Ok(preferred.to_string());
        }
    }
    Err(RuntimeError::Model(format!(
        "{model}: several signatures and none is 'serving_default' or 'predict'; set \
         signature_key to one of: {}",
        keys()
    )))
}

/// Zero-valued inputs for a warm-up run: unknown dimensions become 1, an unknown rank a
/// scalar, strings are empty.
pub fn warmup_inputs(signature: &SignatureDef) -> Result<Vec<Tensor>, RuntimeError> {
    filled_inputs(signature, false)
}

/// The same inputs with every number 1 (strings still empty): a second try for a model that
/// refuses zeros (`assert_positive`, one-based ids that index a table).
pub(crate) fn warmup_inputs_of_ones(signature: &SignatureDef) -> Result<Vec<Tensor>, RuntimeError> {
    filled_inputs(signature, true)
}

fn filled_inputs(signature: &SignatureDef, ones: bool) -> Result<Vec<Tensor>, RuntimeError> {
    signature
        .inputs
        .iter()
        .map(|(name, info)| {
            filled_tensor(info, ones)
                .map_err(|e| RuntimeError::Model(format!("input '{name}': {e}")))
        })
        .collect()
}

/// One element equal to 1 in `dtype`'s encoding (little-endian, as TensorFlow's buffers
/// are); `None` for strings, quantized and opaque dtypes, which have no such value.
fn one_of(dtype: DType) -> Option<Vec<u8>> {
    Some(match dtype {
        DType::Float => 1f32.to_le_bytes().to_vec(),
        DType::Double => 1f64.to_le_bytes().to_vec(),
        DType::Half => 0x3C00u16.to_le_bytes().to_vec(),
        DType::Bfloat16 => 0x3F80u16.to_le_bytes().to_vec(),
        DType::Int8 | DType::Uint8 | DType::Bool => vec![1],
        DType::Int16 | DType::Uint16 => 1u16.to_le_bytes().to_vec(),
        DType::Int32 | DType::Uint32 => 1u32.to_le_bytes().to_vec(),
        DType::Int64 | DType::Uint64 => 1u64.to_le_bytes().to_vec(),
        DType::Complex64 => [1f32.to_le_bytes(), 0f32.to_le_bytes()].concat(),
        DType::Complex128 => [1f64.to_le_bytes(), 0f64.to_le_bytes()].concat(),
        _ => return None,
    })
}

/// A tensor for `info` with every element 0 (or 1 where `ones` and the dtype has a one):
/// unknown dimensions become 1, an unknown rank a scalar, strings are empty.
fn filled_tensor(info: &TensorInfo, ones: bool) -> Result<Tensor, soma_core::TensorError> {
    let shape: Vec<usize> = info
        .shape
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|d| usize::try_from(*d).unwrap_or(1))
        .collect();
    let count: usize = shape.iter().product();
    let one = if ones { one_of(info.dtype) } else { None };
    let data = match (info.dtype, one) {
        (DType::String, _) => TensorData::Strings(vec![Vec::new(); count]),
        (_, Some(one)) => TensorData::Fixed(one.repeat(count)),
        (other, None) => TensorData::Fixed(vec![0; count * other.byte_size().unwrap_or(0)]),
    };
    Tensor::new(info.dtype, shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sigs(keys: &[&str]) -> BTreeMap<String, SignatureDef> {
        keys.iter()
            .map(|k| (k.to_string(), SignatureDef::default()))
            .collect()
    }

    #[test]
    fn configured_key_wins_or_fails_with_the_list() {
        let s = sigs(&["serving_default", "triple"]);
        assert_eq!(choose_signature(&s, Some("triple"), "m").unwrap(), "triple");
        let err = choose_signature(&s, Some("nope"), "m").unwrap_err();
        assert_eq!(
            err.to_string(),
            "m: signature_key 'nope' was not found; the model has: 'serving_default', 'triple'"
        );
    }

    #[test]
    fn fallback_order_is_only_then_serving_default_then_predict() {
        assert_eq!(
            choose_signature(&sigs(&["alpha"]), None, "m").unwrap(),
            "alpha"
        );
        assert_eq!(
            choose_signature(&sigs(&["serve", "serving_default"]), None, "m").unwrap(),
            "serving_default"
        );
        assert_eq!(
            choose_signature(&sigs(&["other", "predict"]), None, "m").unwrap(),
            "predict"
        );
        let err = choose_signature(&sigs(&["alpha", "beta"]), None, "m").unwrap_err();
        assert!(
            err.to_string()
                .contains("set signature_key to one of: 'alpha', 'beta'")
        );
        assert!(choose_signature(&sigs(&[]), None, "m").is_err());
    }

    #[test]
    fn warmup_inputs_fill_unknown_dimensions_with_one() {
        let mut sig = SignatureDef::default();
        sig.inputs.insert(
            "x".into(),
            TensorInfo {
                tensor_name: "x:0".into(),
                dtype: DType::Float,
                shape: Some(vec![-1, 4]),
            },
        );
        sig.inputs.insert(
            "s".into(),
            TensorInfo {
                tensor_name: "s:0".into(),
                dtype: DType::String,
                shape: None,
            },
        );
        let inputs = warmup_inputs(&sig).unwrap();
        assert_eq!(inputs[0].shape(), &[] as &[usize]);
        assert_eq!(inputs[1].shape(), &[1, 4]);
        assert_eq!(inputs[1].to_vec::<f32>().unwrap(), vec![0.0; 4]);
        let ones = warmup_inputs_of_ones(&sig).unwrap();
        assert_eq!(ones[1].to_vec::<f32>().unwrap(), vec![1.0; 4]);
        assert_eq!(ones[0].shape(), &[] as &[usize], "strings stay empty");
        for (dtype, one) in [
            // IEEE half: sign 0, exponent 15 (biased), mantissa 0.
            (DType::Half, (15u16 << 10).to_le_bytes().to_vec()),
            // bfloat16: the upper half of float32's 1.0.
            (
                DType::Bfloat16,
                ((1f32.to_bits() >> 16) as u16).to_le_bytes().to_vec(),
            ),
            (DType::Int64, 1i64.to_le_bytes().to_vec()),
        ] {
            let info = TensorInfo {
                tensor_name: "v:0".into(),
                dtype,
                shape: Some(vec![2]),
            };
            let filled = filled_tensor(&info, true).unwrap();
            assert_eq!(filled.bytes(), Some(one.repeat(2).as_slice()), "{dtype:?}");
        }
    }
}
