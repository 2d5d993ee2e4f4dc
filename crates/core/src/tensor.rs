use crate::DType;

/// A dense, owned tensor.
///
/// Fixed-width elements are kept as one native-endian byte buffer, laid out exactly as
/// TensorFlow lays out `TF_Tensor` data, so moving a tensor into or out of the runtime is a
/// single copy. Strings are kept as a list of byte strings (TensorFlow strings are bytes,
/// not necessarily UTF-8).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: TensorData,
}

/// The element storage of a [`Tensor`].
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Row-major native-endian elements of a fixed-width dtype.
    Fixed(Vec<u8>),
    /// Row-major elements of a `string` tensor.
    Strings(Vec<Vec<u8>>),
}

/// A tensor whose parts do not agree with each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("dtype {dtype} cannot be stored in a tensor")]
    UnsupportedDType { dtype: DType },
    #[error("a {dtype} tensor of shape {shape:?} needs {expected} {unit}, but {actual} were given")]
    LengthMismatch {
        dtype: DType,
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
        unit: &'static str,
    },
    #[error("the tensor holds {actual} values, not {requested}")]
    WrongElementType { actual: DType, requested: DType },
    #[error(
        "shape {shape:?} has more elements than a tensor can hold (TensorFlow's limit is 2^63 - 1)"
    )]
    TooManyElements { shape: Vec<usize> },
    #[error("a tensor of rank {rank} has more dimensions than TensorFlow's limit of {MAX_RANK}")]
    TooManyDims { rank: usize },
}

/// TensorFlow's largest rank (`TensorShape::MaxDimensions()`).
pub const MAX_RANK: usize = 254;

/// The number of elements of `shape`, checked as TensorFlow checks it when it builds a
/// `TensorShape`: at most [`MAX_RANK`] dims, and no partial product above `int64`'s range.
/// TensorFlow aborts the whole process on a shape that fails these (a failed `CHECK`), so
/// no [`Tensor`] may have one: [`Tensor::new`] refuses it, and decoders that size buffers
/// from a request's shape ask here first.
pub fn element_count(shape: &[usize]) -> Result<usize, TensorError> {
    if shape.len() > MAX_RANK {
        return Err(TensorError::TooManyDims { rank: shape.len() });
    }
    shape
        .iter()
        .try_fold(1usize, |count, dim| {
            count
                .checked_mul(*dim)
                .filter(|count| i64::try_from(*count).is_ok())
        })
        .ok_or_else(|| TensorError::TooManyElements {
            shape: shape.to_vec(),
        })
}

impl Tensor {
    /// Builds a tensor, checking that the data holds exactly `product(shape)` elements
    /// (and that there are no more than TensorFlow can count, see [`element_count`]).
    pub fn new(dtype: DType, shape: Vec<usize>, data: TensorData) -> Result<Tensor, TensorError> {
        let count = element_count(&shape)?;
        match (&data, dtype.byte_size()) {
            (TensorData::Fixed(bytes), Some(width)) => {
                // A length no buffer can have, when the byte count itself overflows.
                let expected = count.saturating_mul(width);
                if bytes.len() != expected {
                    return Err(TensorError::LengthMismatch {
                        dtype,
                        shape,
                        expected,
                        actual: bytes.len(),
                        unit: "bytes",
                    });
                }
            }
            (TensorData::Strings(items), None) if dtype == DType::String => {
                if items.len() != count {
                    return Err(TensorError::LengthMismatch {
                        dtype,
                        shape,
                        expected: count,
                        actual: items.len(),
                        unit: "strings",
                    });
                }
            }
            _ => return Err(TensorError::UnsupportedDType { dtype }),
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// Builds a fixed-width tensor from typed values.
    pub fn from_slice<T: Element>(shape: Vec<usize>, values: &[T]) -> Result<Tensor, TensorError> {
        let mut bytes = Vec::with_capacity(std::mem::size_of_val(values));
        for v in values {
            v.write_ne(&mut bytes);
        }
        Tensor::new(T::DTYPE, shape, TensorData::Fixed(bytes))
    }

    /// Builds a string tensor.
    pub fn from_strings(shape: Vec<usize>, values: Vec<Vec<u8>>) -> Result<Tensor, TensorError> {
        Tensor::new(DType::String, shape, TensorData::Strings(values))
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar<T: Element>(value: T) -> Tensor {
        let mut bytes = Vec::with_capacity(std::mem::size_of::<T>());
        value.write_ne(&mut bytes);
        Tensor {
            dtype: T::DTYPE,
            shape: Vec::new(),
            data: TensorData::Fixed(bytes),
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn into_parts(self) -> (DType, Vec<usize>, TensorData) {
        (self.dtype, self.shape, self.data)
    }

    /// The raw element bytes of a fixed-width tensor.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.data {
            TensorData::Fixed(b) => Some(b),
            TensorData::Strings(_) => None,
        }
    }

    /// The elements of a string tensor.
    pub fn strings(&self) -> Option<&[Vec<u8>]> {
        match &self.data {
            TensorData::Strings(s) => Some(s),
            TensorData::Fixed(_) => None,
        }
    }

    /// Copies the elements out as typed values.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>, TensorError> {
        let (TensorData::Fixed(bytes), true) = (&self.data, self.dtype == T::DTYPE) else {
            return Err(TensorError::WrongElementType {
                actual: self.dtype,
                requested: T::DTYPE,
            });
        };
        Ok(bytes
            .chunks_exact(std::mem::size_of::<T>())
            .map(T::read_ne)
            .collect())
    }
}

/// A Rust type that is the element type of one fixed-width [`DType`].
pub trait Element: Copy + Send + Sync + 'static {
    const DTYPE: DType;
    fn write_ne(self, out: &mut Vec<u8>);
    /// Reads one element from exactly `size_of::<Self>()` bytes.
    fn read_ne(bytes: &[u8]) -> Self;
}

macro_rules! numeric_element {
    ($($ty:ty => $dtype:expr),* $(,)?) => {$(
        impl Element for $ty {
            const DTYPE: DType = $dtype;
            fn write_ne(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_ne_bytes());
            }
            fn read_ne(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$ty>()];
                raw.copy_from_slice(bytes);
                <$ty>::from_ne_bytes(raw)
            }
        }
    )*};
}

numeric_element! {
    f32 => DType::Float,
    f64 => DType::Double,
    i8 => DType::Int8,
    i16 => DType::Int16,
    i32 => DType::Int32,
    i64 => DType::Int64,
    u8 => DType::Uint8,
    u16 => DType::Uint16,
    u32 => DType::Uint32,
    u64 => DType::Uint64,
    half::f16 => DType::Half,
    half::bf16 => DType::Bfloat16,
}

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn write_ne(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
    fn read_ne(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_round_trip() {
        let t = Tensor::from_slice(vec![2, 2], &[1.5f32, -2.0, 3.25, 0.0]).unwrap();
        assert_eq!(t.dtype(), DType::Float);
        assert_eq!(t.bytes().unwrap().len(), 16);
        assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.5, -2.0, 3.25, 0.0]);
        assert!(t.to_vec::<i32>().is_err());
    }

    #[test]
    fn length_must_match_shape() {
        let err = Tensor::from_slice(vec![3], &[1i64, 2]).unwrap_err();
        assert!(err.to_string().contains("needs 24 bytes"), "{err}");
        let err = Tensor::from_strings(vec![2], vec![b"a".to_vec()]).unwrap_err();
        assert!(err.to_string().contains("needs 2 strings"), "{err}");
        assert!(Tensor::new(DType::Resource, vec![], TensorData::Fixed(vec![])).is_err());
    }

    #[test]
    fn shapes_tensorflow_would_abort_on_are_refused() {
        // 2^62 * 4 wraps to 0 in a plain product: an empty buffer would have "matched" it,
        // and TensorFlow aborts the process on such a shape.
        let wrapping = vec![1 << 62, 4];
        let err = Tensor::new(DType::Float, wrapping, TensorData::Fixed(vec![])).unwrap_err();
        assert!(matches!(err, TensorError::TooManyElements { .. }), "{err}");
        let err = Tensor::from_strings(vec![1 << 32, 1 << 31], vec![]).unwrap_err();
        assert!(err.to_string().contains("more elements than"), "{err}");
        // Past int64 without wrapping a usize, also on the way to a zero (TensorFlow checks
        // each partial product).
        assert!(element_count(&[1 << 63]).is_err());
        assert!(element_count(&[1 << 62, 2, 0]).is_err());
        assert_eq!(element_count(&[(1 << 62) + 1, 1]), Ok((1 << 62) + 1));
        assert_eq!(element_count(&[0, 1 << 62, 1 << 62]), Ok(0));
        // Rank.
        assert_eq!(element_count(&[1; MAX_RANK]), Ok(1));
        let err = Tensor::from_slice(vec![1; MAX_RANK + 1], &[1.0f32]).unwrap_err();
        assert_eq!(err, TensorError::TooManyDims { rank: 255 });
        // Bytes that overflow while elements do not: a length mismatch, not a panic.
        let err = Tensor::new(DType::Double, vec![1 << 62], TensorData::Fixed(vec![])).unwrap_err();
        assert!(matches!(err, TensorError::LengthMismatch { .. }), "{err}");
    }

    #[test]
    fn scalars_have_rank_zero() {
        let t = Tensor::scalar(true);
        assert_eq!(t.shape(), &[] as &[usize]);
        assert_eq!(t.num_elements(), 1);
        assert_eq!(t.to_vec::<bool>().unwrap(), vec![true]);
    }
}
