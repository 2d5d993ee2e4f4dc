//! `TensorProto` <-> [`Tensor`].
//!
//! A `TensorProto` carries its values either as `tensor_content` (raw little-endian bytes,
//! what `tf.make_tensor_proto` sends for NumPy arrays) or in the typed field for its dtype
//! (`float_val`, `int_val`, `half_val`, ...). As in TensorFlow, a single typed value fills a
//! larger shape (`float_val: [0.5]` with shape `[2, 3]` is six 0.5s). Anything else that
//! does not add up (a wrong count, a value out of range for the dtype, values in a field
//! the dtype does not use) is an error rather than TensorFlow's silent padding/truncation.
//!
//! Outputs are written with the typed fields, as TF Serving does by default, so clients
//! that read `response.outputs["y"].float_val` work unchanged.

use soma_core::{DType, Element, Tensor, TensorData};
use soma_grpc_proto::tensorflow::{TensorProto, TensorShapeProto, tensor_shape_proto::Dim};

/// The largest tensor (in bytes) a request may decode to.
pub const MAX_TENSOR_BYTES: usize = i32::MAX as usize;

/// The most tensor (in bytes) a request's lone values may fill, all its inputs together.
/// TensorFlow repeats a lone value to fill the shape (`tf.make_tensor_proto(0.0,
/// shape=...)` sends one), so without a bound a request of a few bytes could make the
/// server allocate and compute gigabytes (audits: 13 GB for one input, then 13 GB for 14
/// inputs of 256 MiB each). 64 MiB holds a zero-filled batch of 64 224×224 RGB float
/// images; a client that needs more sends every value, paying for what it asks.
pub const MAX_REPEATED_BYTES: usize = 64 << 20;

/// Why a `TensorProto` cannot be turned into a tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("dtype {0} is not supported")]
    UnsupportedDType(String),
    #[error("the shape has unknown rank; a tensor needs a known shape")]
    UnknownRank,
    #[error("dimension {index} of the shape is {size}; sizes must be >= 0")]
    NegativeDim { index: usize, size: i64 },
    #[error("shape {shape:?} holds more than {MAX_TENSOR_BYTES} bytes of {dtype}")]
    TooLarge { dtype: DType, shape: Vec<i64> },
    /// More dims or elements than TensorFlow can represent.
    #[error("{0}")]
    Shape(#[from] soma_core::TensorError),
    #[error(
        "tensor_content has {actual} bytes, but a {dtype} tensor of shape {shape:?} needs {expected}"
    )]
    ContentLength {
        dtype: DType,
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    #[error(
        "{field} has {actual} values, but a {dtype} tensor of shape {shape:?} needs {expected} \
         (or a single value to fill it)"
    )]
    ValueCount {
        field: &'static str,
        dtype: DType,
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    #[error("{field} is set, but a {dtype} tensor takes its values from {expected}")]
    WrongField {
        field: &'static str,
        dtype: DType,
        expected: &'static str,
    },
    #[error("{field}[{index}] = {value} is out of range for {dtype}")]
    OutOfRange {
        field: &'static str,
        index: usize,
        value: i64,
        dtype: DType,
    },
    #[error("{field} holds {actual} numbers; complex values need real/imaginary pairs")]
    OddComplex { field: &'static str, actual: usize },
    #[error("tensor_content of a string tensor is malformed: {0}")]
    BadStringContent(&'static str),
    #[error(
        "one {field} value repeated to fill shape {shape:?} makes {bytes} bytes of {dtype}; \
         a request's repeated values may fill at most {MAX_REPEATED_BYTES} bytes in all: \
         send every value"
    )]
    RepeatTooLarge {
        field: &'static str,
        dtype: DType,
        shape: Vec<usize>,
        bytes: usize,
    },
}

/// The typed field (proto name) that carries values of `dtype`.
fn value_field(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::Float => "float_val",
        DType::Double => "double_val",
        DType::Int32
        | DType::Int16
        | DType::Int8
        | DType::Uint16
        | DType::Uint8
        | DType::Qint8
        | DType::Quint8
        | DType::Qint16
        | DType::Quint16
        | DType::Qint32 => "int_val",
        DType::String => "string_val",
        DType::Complex64 => "scomplex_val",
        DType::Int64 => "int64_val",
        DType::Bool => "bool_val",
        DType::Complex128 => "dcomplex_val",
        DType::Half | DType::Bfloat16 => "half_val",
        DType::Uint32 => "uint32_val",
        DType::Uint64 => "uint64_val",
        DType::Resource | DType::Variant => return None,
    })
}

/// The number of values in each typed field, by proto name.
fn field_counts(p: &TensorProto) -> [(&'static str, usize); 12] {
    [
        ("float_val", p.float_val.len()),
        ("double_val", p.double_val.len()),
        ("int_val", p.int_val.len()),
        ("string_val", p.string_val.len()),
        ("scomplex_val", p.scomplex_val.len()),
        ("int64_val", p.int64_val.len()),
        ("bool_val", p.bool_val.len()),
        ("dcomplex_val", p.dcomplex_val.len()),
        ("half_val", p.half_val.len()),
        ("uint32_val", p.uint32_val.len()),
        ("uint64_val", p.uint64_val.len()),
        ("tensor_content", p.tensor_content.len()),
    ]
}

/// Decodes a request tensor; its `tensor_content` becomes the tensor's bytes without a copy.
pub fn tensor_from_proto(proto: TensorProto) -> Result<Tensor, CodecError> {
    tensor_from_proto_within(proto, &mut { MAX_REPEATED_BYTES })
}

/// [`tensor_from_proto`] for one input of a request: a lone value repeated to fill its shape
/// takes its bytes from `repeat_allowance`, which the request's inputs share
/// ([`MAX_REPEATED_BYTES`] in all).
pub fn tensor_from_proto_within(
    mut proto: TensorProto,
    repeat_allowance: &mut usize,
) -> Result<Tensor, CodecError> {
    let dtype = DType::from_proto(proto.dtype)
        .filter(|d| d.is_supported())
        .ok_or_else(|| CodecError::UnsupportedDType(dtype_name(proto.dtype)))?;
    let shape = shape_from_proto(proto.tensor_shape.as_ref())?;
    let count = soma_core::element_count(&shape)?;
    let field = value_field(dtype).expect("supported dtypes have a value field");
    let too_large = || CodecError::TooLarge {
        dtype,
        shape: shape.iter().map(|d| *d as i64).collect(),
    };
    // What the decoded tensor takes in memory: its elements, or for strings one `Vec` per
    // element plus the bytes of a string that is repeated to fill the shape (one value fills
    // a shape, as in TensorFlow, so a request of a few bytes may ask for gigabytes).
    let element_bytes = match dtype.byte_size() {
        Some(width) => width,
        None if proto.tensor_content.is_empty() && proto.string_val.len() == 1 => {
            std::mem::size_of::<Vec<u8>>().saturating_add(proto.string_val[0].len())
        }
        None => std::mem::size_of::<Vec<u8>>(),
    };
    let total_bytes = count
        .checked_mul(element_bytes)
        .filter(|b| *b <= MAX_TENSOR_BYTES)
        .ok_or_else(too_large)?;
    let from_content = !proto.tensor_content.is_empty();
    // Values in a field this dtype does not read would be silently ignored by TensorFlow.
    for (name, n) in field_counts(&proto) {
        if n > 0 && name != field && !(name == "tensor_content" && from_content) {
            return Err(CodecError::WrongField {
                field: name,
                dtype,
                expected: field,
            });
        }
    }
    if from_content
        && field_counts(&proto)
            .iter()
            .any(|(n, c)| *n == field && *c > 0)
    {
        return Err(CodecError::WrongField {
            field,
            dtype,
            expected: "tensor_content alone (both were set)",
        });
    }
    let data = if dtype == DType::String {
        let strings = if from_content {
            decode_string_list(&proto.tensor_content, count)?
        } else {
            broadcast_strings(&proto.string_val, count, &shape, repeat_allowance)?
        };
        TensorData::Strings(strings)
    } else if from_content {
        if proto.tensor_content.len() != total_bytes {
            return Err(CodecError::ContentLength {
                dtype,
                shape,
                expected: total_bytes,
                actual: proto.tensor_content.len(),
            });
        }
        TensorData::Fixed(le_to_native(
            dtype,
            Vec::from(std::mem::take(&mut proto.tensor_content)),
        ))
    } else {
        let given = typed_values(dtype, &proto)?;
        TensorData::Fixed(broadcast_fixed(
            dtype,
            field,
            given,
            (count, &shape),
            repeat_allowance,
        )?)
    };
    Ok(Tensor::new(dtype, shape, data).expect("sizes were checked above"))
}

/// Encodes a response tensor with the typed fields (TF Serving's default).
pub fn tensor_into_proto(tensor: Tensor) -> TensorProto {
    let (dtype, shape, data) = tensor.into_parts();
    let mut p = TensorProto {
        dtype: dtype.to_proto(),
        tensor_shape: Some(shape_to_proto(&shape)),
        ..TensorProto::default()
    };
    let bytes = match data {
        TensorData::Strings(strings) => {
            p.string_val = strings;
            return p;
        }
        TensorData::Fixed(bytes) => bytes,
    };
    match dtype {
        DType::Float => p.float_val = read::<f32>(&bytes),
        DType::Double => p.double_val = read::<f64>(&bytes),
        DType::Int32 | DType::Qint32 => p.int_val = read::<i32>(&bytes),
        DType::Int16 | DType::Qint16 => {
            p.int_val = read::<i16>(&bytes).into_iter().map(i32::from).collect()
        }
        DType::Uint16 | DType::Quint16 => {
            p.int_val = read::<u16>(&bytes).into_iter().map(i32::from).collect()
        }
        DType::Int8 | DType::Qint8 => {
            p.int_val = read::<i8>(&bytes).into_iter().map(i32::from).collect()
        }
        DType::Uint8 | DType::Quint8 => p.int_val = bytes.iter().map(|b| i32::from(*b)).collect(),
        DType::Half | DType::Bfloat16 => {
            p.half_val = read::<u16>(&bytes).into_iter().map(i32::from).collect()
        }
        DType::Int64 => p.int64_val = read::<i64>(&bytes),
        DType::Uint32 => p.uint32_val = read::<u32>(&bytes),
        DType::Uint64 => p.uint64_val = read::<u64>(&bytes),
        DType::Bool => p.bool_val = bytes.iter().map(|b| *b != 0).collect(),
        DType::Complex64 => p.scomplex_val = read::<f32>(&bytes),
        DType::Complex128 => p.dcomplex_val = read::<f64>(&bytes),
        DType::String | DType::Resource | DType::Variant => {
            unreachable!("a fixed-width tensor cannot have dtype {dtype}")
        }
    }
    p
}

/// Encodes a tensor with `tensor_content` (strings keep `string_val`). Clients may send
/// either form; this one is used to test that both decode alike.
pub fn tensor_into_content_proto(tensor: Tensor) -> TensorProto {
    let (dtype, shape, data) = tensor.into_parts();
    let mut p = TensorProto {
        dtype: dtype.to_proto(),
        tensor_shape: Some(shape_to_proto(&shape)),
        ..TensorProto::default()
    };
    match data {
        TensorData::Strings(strings) => p.string_val = strings,
        // The swap is its own inverse: native -> little-endian is the same operation.
        TensorData::Fixed(bytes) => p.tensor_content = le_to_native(dtype, bytes).into(),
    }
    p
}

pub(crate) fn shape_to_proto(shape: &[usize]) -> TensorShapeProto {
    TensorShapeProto {
        dim: shape
            .iter()
            .map(|d| Dim {
                size: *d as i64,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    }
}

/// `DT_FLOAT` for known values, the number otherwise.
pub(crate) fn dtype_name(value: i32) -> String {
    DType::from_proto(value)
        .map(|d| d.proto_name().to_string())
        .unwrap_or_else(|| format!("DataType {value}"))
}

fn shape_from_proto(shape: Option<&TensorShapeProto>) -> Result<Vec<usize>, CodecError> {
    // No shape at all is a scalar, as in TensorFlow.
    let Some(shape) = shape else {
        return Ok(Vec::new());
    };
    if shape.unknown_rank {
        return Err(CodecError::UnknownRank);
    }
    shape
        .dim
        .iter()
        .enumerate()
        .map(|(index, d)| {
            usize::try_from(d.size).map_err(|_| CodecError::NegativeDim {
                index,
                size: d.size,
            })
        })
        .collect()
}

fn read<T: Element>(bytes: &[u8]) -> Vec<T> {
    bytes
        .chunks_exact(std::mem::size_of::<T>())
        .map(T::read_ne)
        .collect()
}

fn write<T: Element>(values: impl IntoIterator<Item = T>) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        v.write_ne(&mut out);
    }
    out
}

/// Narrows `int_val`/`half_val` entries to the dtype's width, rejecting values that do not fit.
fn narrow<T: Element + TryFrom<i32>>(
    field: &'static str,
    values: &[i32],
    dtype: DType,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(values.len() * std::mem::size_of::<T>());
    for (index, v) in values.iter().enumerate() {
        let narrowed = T::try_from(*v).map_err(|_| CodecError::OutOfRange {
            field,
            index,
            value: i64::from(*v),
            dtype,
        })?;
        narrowed.write_ne(&mut out);
    }
    Ok(out)
}

/// The native-endian bytes of the values given in the dtype's typed field.
fn typed_values(dtype: DType, p: &TensorProto) -> Result<Vec<u8>, CodecError> {
    let pairs = |field: &'static str, n: usize| {
        if n.is_multiple_of(2) {
            Ok(())
        } else {
            Err(CodecError::OddComplex { field, actual: n })
        }
    };
    Ok(match dtype {
        DType::Float => write(p.float_val.iter().copied()),
        DType::Double => write(p.double_val.iter().copied()),
        DType::Int32 | DType::Qint32 => write(p.int_val.iter().copied()),
        DType::Int16 | DType::Qint16 => narrow::<i16>("int_val", &p.int_val, dtype)?,
        DType::Uint16 | DType::Quint16 => narrow::<u16>("int_val", &p.int_val, dtype)?,
        DType::Int8 | DType::Qint8 => narrow::<i8>("int_val", &p.int_val, dtype)?,
        DType::Uint8 | DType::Quint8 => narrow::<u8>("int_val", &p.int_val, dtype)?,
        DType::Half | DType::Bfloat16 => narrow::<u16>("half_val", &p.half_val, dtype)?,
        DType::Int64 => write(p.int64_val.iter().copied()),
        DType::Uint32 => write(p.uint32_val.iter().copied()),
        DType::Uint64 => write(p.uint64_val.iter().copied()),
        DType::Bool => write(p.bool_val.iter().copied()),
        DType::Complex64 => {
            pairs("scomplex_val", p.scomplex_val.len())?;
            write(p.scomplex_val.iter().copied())
        }
        DType::Complex128 => {
            pairs("dcomplex_val", p.dcomplex_val.len())?;
            write(p.dcomplex_val.iter().copied())
        }
        DType::String | DType::Resource | DType::Variant => {
            unreachable!("{dtype} has no fixed-width values")
        }
    })
}

/// Checks the number of given elements: exactly `count`, or one that fills the shape.
fn broadcast_fixed(
    dtype: DType,
    field: &'static str,
    given: Vec<u8>,
    (count, shape): (usize, &[usize]),
    repeat_allowance: &mut usize,
) -> Result<Vec<u8>, CodecError> {
    let width = dtype.byte_size().expect("fixed-width dtype");
    let elements = given.len() / width;
    if elements == count {
        Ok(given)
    } else if elements == 1 {
        check_repeat(field, dtype, shape, count * width, repeat_allowance)?;
        Ok(given.repeat(count))
    } else {
        Err(CodecError::ValueCount {
            field,
            dtype,
            shape: shape.to_vec(),
            expected: count,
            // Complex fields hold two numbers per element.
            actual: given.len() / component_width(dtype),
        })
    }
}

fn broadcast_strings(
    given: &[Vec<u8>],
    count: usize,
    shape: &[usize],
    repeat_allowance: &mut usize,
) -> Result<Vec<Vec<u8>>, CodecError> {
    if given.len() == count {
        Ok(given.to_vec())
    } else if given.len() == 1 {
        let bytes = count * (std::mem::size_of::<Vec<u8>>() + given[0].len());
        check_repeat("string_val", DType::String, shape, bytes, repeat_allowance)?;
        Ok(vec![given[0].clone(); count])
    } else {
        Err(CodecError::ValueCount {
            field: "string_val",
            dtype: DType::String,
            shape: shape.to_vec(),
            expected: count,
            actual: given.len(),
        })
    }
}

/// Takes `bytes` of repeated values from the request's allowance, or refuses them. `bytes`
/// is within [`MAX_TENSOR_BYTES`] (checked before), so it did not overflow.
fn check_repeat(
    field: &'static str,
    dtype: DType,
    shape: &[usize],
    bytes: usize,
    allowance: &mut usize,
) -> Result<(), CodecError> {
    if let Some(left) = allowance.checked_sub(bytes) {
        *allowance = left;
        return Ok(());
    }
    Err(CodecError::RepeatTooLarge {
        field,
        dtype,
        shape: shape.to_vec(),
        bytes,
    })
}

/// The width of one number: an element, or one half of a complex element.
fn component_width(dtype: DType) -> usize {
    let width = dtype.byte_size().unwrap_or(1);
    match dtype {
        DType::Complex64 | DType::Complex128 => width / 2,
        _ => width,
    }
}

/// Little-endian wire bytes to the native layout of [`Tensor`] (a copy on little-endian
/// machines, a per-number byte swap on big-endian ones).
fn le_to_native(dtype: DType, mut bytes: Vec<u8>) -> Vec<u8> {
    if cfg!(target_endian = "big") {
        for number in bytes.chunks_exact_mut(component_width(dtype)) {
            number.reverse();
        }
    }
    bytes
}

/// TensorFlow's encoding of a string tensor in `tensor_content`: `count` varint32 lengths,
/// then the bytes of every string back to back.
fn decode_string_list(content: &[u8], count: usize) -> Result<Vec<Vec<u8>>, CodecError> {
    let mut rest = content;
    let mut lengths = Vec::with_capacity(count.min(content.len()));
    for _ in 0..count {
        let (len, used) = read_varint32(rest)?;
        lengths.push(len as usize);
        rest = &rest[used..];
    }
    let mut strings = Vec::with_capacity(lengths.len());
    for len in lengths {
        if rest.len() < len {
            return Err(CodecError::BadStringContent("a string runs past the end"));
        }
        let (s, tail) = rest.split_at(len);
        strings.push(s.to_vec());
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(CodecError::BadStringContent(
            "bytes left over after the last string",
        ));
    }
    Ok(strings)
}

fn read_varint32(bytes: &[u8]) -> Result<(u32, usize), CodecError> {
    let mut value: u32 = 0;
    for (i, b) in bytes.iter().take(5).enumerate() {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(CodecError::BadStringContent("a string length is truncated"))
}

#[cfg(test)]
mod tests;
