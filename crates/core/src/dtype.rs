use std::fmt;

/// TensorFlow element types, with the numbers of `tensorflow/core/framework/types.proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum DType {
    Float = 1,
    Double = 2,
    Int32 = 3,
    Uint8 = 4,
    Int16 = 5,
    Int8 = 6,
    String = 7,
    Complex64 = 8,
    Int64 = 9,
    Bool = 10,
    Qint8 = 11,
    Quint8 = 12,
    Qint32 = 13,
    Bfloat16 = 14,
    Qint16 = 15,
    Quint16 = 16,
    Uint16 = 17,
    Complex128 = 18,
    Half = 19,
    Resource = 20,
    Variant = 21,
    Uint32 = 22,
    Uint64 = 23,
}

impl DType {
    /// Every dtype, in proto order.
    pub const ALL: [DType; 23] = [
        DType::Float,
        DType::Double,
        DType::Int32,
        DType::Uint8,
        DType::Int16,
        DType::Int8,
        DType::String,
        DType::Complex64,
        DType::Int64,
        DType::Bool,
        DType::Qint8,
        DType::Quint8,
        DType::Qint32,
        DType::Bfloat16,
        DType::Qint16,
        DType::Quint16,
        DType::Uint16,
        DType::Complex128,
        DType::Half,
        DType::Resource,
        DType::Variant,
        DType::Uint32,
        DType::Uint64,
    ];

    /// The dtype for a proto enum value; `_REF` variants (value + 100) map to their base type.
    pub fn from_proto(value: i32) -> Option<DType> {
        let base = if value > 100 { value - 100 } else { value };
        DType::ALL.iter().copied().find(|d| *d as i32 == base)
    }

    /// The proto enum value.
    pub fn to_proto(self) -> i32 {
        self as i32
    }

    /// Python/NumPy-style name, as TensorFlow prints it (`float32`, `int64`, `string`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::Float => "float32",
            DType::Double => "float64",
            DType::Int32 => "int32",
            DType::Uint8 => "uint8",
            DType::Int16 => "int16",
            DType::Int8 => "int8",
            DType::String => "string",
            DType::Complex64 => "complex64",
            DType::Int64 => "int64",
            DType::Bool => "bool",
            DType::Qint8 => "qint8",
            DType::Quint8 => "quint8",
            DType::Qint32 => "qint32",
            DType::Bfloat16 => "bfloat16",
            DType::Qint16 => "qint16",
            DType::Quint16 => "quint16",
            DType::Uint16 => "uint16",
            DType::Complex128 => "complex128",
            DType::Half => "float16",
            DType::Resource => "resource",
            DType::Variant => "variant",
            DType::Uint32 => "uint32",
            DType::Uint64 => "uint64",
        }
    }

    /// The proto name, e.g. `DT_FLOAT`.
    pub fn proto_name(self) -> &'static str {
        match self {
            DType::Float => "DT_FLOAT",
            DType::Double => "DT_DOUBLE",
            DType::Int32 => "DT_INT32",
            DType::Uint8 => "DT_UINT8",
            DType::Int16 => "DT_INT16",
            DType::Int8 => "DT_INT8",
            DType::String => "DT_STRING",
            DType::Complex64 => "DT_COMPLEX64",
            DType::Int64 => "DT_INT64",
            DType::Bool => "DT_BOOL",
            DType::Qint8 => "DT_QINT8",
            DType::Quint8 => "DT_QUINT8",
            DType::Qint32 => "DT_QINT32",
            DType::Bfloat16 => "DT_BFLOAT16",
            DType::Qint16 => "DT_QINT16",
            DType::Quint16 => "DT_QUINT16",
            DType::Uint16 => "DT_UINT16",
            DType::Complex128 => "DT_COMPLEX128",
            DType::Half => "DT_HALF",
            DType::Resource => "DT_RESOURCE",
            DType::Variant => "DT_VARIANT",
            DType::Uint32 => "DT_UINT32",
            DType::Uint64 => "DT_UINT64",
        }
    }

    /// The proto enum name of any `DataType` number soma knows, as protobuf's JSON printer
    /// writes it: `DT_INVALID` for 0 (`__saved_model_init_op`'s outputs), `DT_FLOAT_REF`
    /// for a reference type; `None` for a number soma does not know.
    pub fn proto_enum_name(value: i32) -> Option<String> {
        if value == 0 {
            return Some("DT_INVALID".to_string());
        }
        let base = DType::ALL.iter().find(|d| **d as i32 == value % 100)?;
        match value / 100 {
            0 => Some(base.proto_name().to_string()),
            1 => Some(format!("{}_REF", base.proto_name())),
            _ => None,
        }
    }

    /// Bytes per element for fixed-width types; `None` for string, resource and variant.
    pub fn byte_size(self) -> Option<usize> {
        match self {
            DType::Bool | DType::Uint8 | DType::Int8 | DType::Qint8 | DType::Quint8 => Some(1),
            DType::Int16
            | DType::Uint16
            | DType::Qint16
            | DType::Quint16
            | DType::Half
            | DType::Bfloat16 => Some(2),
            DType::Float | DType::Int32 | DType::Uint32 | DType::Qint32 => Some(4),
            DType::Double | DType::Int64 | DType::Uint64 | DType::Complex64 => Some(8),
            DType::Complex128 => Some(16),
            DType::String | DType::Resource | DType::Variant => None,
        }
    }

    /// Whether soma can carry values of this type in and out of a model.
    pub fn is_supported(self) -> bool {
        !matches!(self, DType::Resource | DType::Variant)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_round_trip_and_ref_types() {
        for d in DType::ALL {
            assert_eq!(DType::from_proto(d.to_proto()), Some(d));
        }
        assert_eq!(DType::from_proto(101), Some(DType::Float));
        assert_eq!(DType::from_proto(0), None);
        assert_eq!(DType::from_proto(24), None);
    }

    #[test]
    fn proto_enum_names() {
        let name = DType::proto_enum_name;
        assert_eq!(name(0).as_deref(), Some("DT_INVALID"));
        assert_eq!(name(1).as_deref(), Some("DT_FLOAT"));
        assert_eq!(name(123).as_deref(), Some("DT_UINT64_REF"));
        assert_eq!(name(24), None);
        assert_eq!(name(100), None);
        assert_eq!(name(201), None);
        assert_eq!(name(-1), None);
    }
}
