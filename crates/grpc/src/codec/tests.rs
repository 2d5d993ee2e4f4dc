use half::{bf16, f16};
use soma_core::{DType, Element, Tensor};
use soma_grpc_proto::tensorflow::{TensorProto, TensorShapeProto, tensor_shape_proto::Dim};

use super::*;

fn shape(dims: &[i64]) -> Option<TensorShapeProto> {
    Some(TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dim {
                size: *d,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    })
}

fn proto(dtype: DType, dims: &[i64]) -> TensorProto {
    TensorProto {
        dtype: dtype.to_proto(),
        tensor_shape: shape(dims),
        ..TensorProto::default()
    }
}

/// One tensor of every dtype soma carries, with edge values.
fn samples() -> Vec<Tensor> {
    fn t<T: Element>(values: &[T]) -> Tensor {
        Tensor::from_slice(vec![values.len() / 2, 2], values).unwrap()
    }
    let mut all = vec![
        t(&[1.5f32, -0.0, f32::MAX, f32::MIN_POSITIVE]),
        t(&[f64::MIN, 0.1, -2.5, f64::EPSILON]),
        t(&[i32::MIN, -1, 0, i32::MAX]),
        t(&[i16::MIN, -1, 0, i16::MAX]),
        t(&[i8::MIN, -1, 0, i8::MAX]),
        t(&[0u8, 1, 128, 255]),
        t(&[0u16, 1, 32768, u16::MAX]),
        t(&[0u32, 1, 1 << 31, u32::MAX]),
        t(&[0u64, 1, 1 << 63, u64::MAX]),
        t(&[i64::MIN, -1, 9_007_199_254_740_993, i64::MAX]),
        t(&[true, false, false, true]),
        t(&[
            f16::from_f32(1.0),
            f16::MAX,
            f16::from_f32(-0.1),
            f16::MIN_POSITIVE_SUBNORMAL,
        ]),
        t(&[
            bf16::from_f32(1.0),
            bf16::MAX,
            bf16::from_f32(-0.1),
            bf16::MIN,
        ]),
        Tensor::from_strings(
            vec![3],
            vec![
                b"".to_vec(),
                "héllo".as_bytes().to_vec(),
                vec![0xff, 0, 0x80],
            ],
        )
        .unwrap(),
    ];
    // Complex and quantized types have no Element type: build them from raw bytes.
    let raw = |dtype: DType, dims: Vec<usize>, bytes: Vec<u8>| {
        Tensor::new(dtype, dims, TensorData::Fixed(bytes)).unwrap()
    };
    let c64: Vec<u8> = [1.0f32, -2.0, 0.5, 3.0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    let c128: Vec<u8> = [1.0f64, -2.0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    all.push(raw(DType::Complex64, vec![2], c64));
    all.push(raw(DType::Complex128, vec![1], c128));
    all.push(raw(DType::Qint8, vec![2], vec![0x80, 0x7f]));
    all.push(raw(DType::Quint8, vec![2], vec![0, 255]));
    all.push(raw(DType::Qint32, vec![1], (-7i32).to_ne_bytes().to_vec()));
    all.push(Tensor::scalar(42.0f32));
    all.push(Tensor::from_slice::<f32>(vec![0, 3], &[]).unwrap());
    all
}

#[test]
fn every_dtype_round_trips_through_typed_fields() {
    for tensor in samples() {
        let p = tensor_into_proto(tensor.clone());
        assert!(p.tensor_content.is_empty(), "{}", tensor.dtype());
        assert_eq!(
            tensor_from_proto(p.clone()).unwrap(),
            tensor,
            "{}",
            tensor.dtype()
        );
    }
}

#[test]
fn every_dtype_round_trips_through_tensor_content() {
    for tensor in samples() {
        let p = tensor_into_content_proto(tensor.clone());
        let fixed = tensor.dtype() != DType::String && tensor.num_elements() > 0;
        assert_eq!(!p.tensor_content.is_empty(), fixed, "{}", tensor.dtype());
        assert_eq!(
            tensor_from_proto(p.clone()).unwrap(),
            tensor,
            "{}",
            tensor.dtype()
        );
    }
}

#[test]
fn typed_fields_are_the_ones_tensorflow_uses() {
    let p = tensor_into_proto(Tensor::from_slice(vec![1], &[f16::from_f32(1.0)]).unwrap());
    assert_eq!(p.half_val, vec![0x3c00]);
    let p = tensor_into_proto(Tensor::from_slice(vec![1], &[bf16::from_f32(1.0)]).unwrap());
    assert_eq!(p.half_val, vec![0x3f80]);
    let p = tensor_into_proto(Tensor::from_slice(vec![2], &[-1i8, 7]).unwrap());
    assert_eq!(p.int_val, vec![-1, 7]);
    let p = tensor_into_proto(Tensor::from_slice(vec![1], &[u64::MAX]).unwrap());
    assert_eq!(p.uint64_val, vec![u64::MAX]);
    assert_eq!(p.dtype, 23);
    assert_eq!(p.tensor_shape.unwrap().dim[0].size, 1);
}

#[test]
fn tensor_content_becomes_the_tensor_without_a_copy() {
    let mut p = proto(DType::Float, &[1024]);
    p.tensor_content = vec![0; 4096].into();
    let address = p.tensor_content.as_ptr();
    let (_, _, data) = tensor_from_proto(p).unwrap().into_parts();
    let TensorData::Fixed(bytes) = data else {
        panic!("a float tensor has fixed-width data")
    };
    assert_eq!(bytes.as_ptr(), address);
}

#[test]
fn tensor_content_is_little_endian() {
    let mut p = proto(DType::Int32, &[2]);
    p.tensor_content = vec![1, 0, 0, 0, 0, 1, 0, 0].into();
    let t = tensor_from_proto(p.clone()).unwrap();
    assert_eq!(t.to_vec::<i32>().unwrap(), vec![1, 256]);
}

#[test]
fn one_typed_value_fills_the_shape() {
    let mut p = proto(DType::Float, &[2, 3]);
    p.float_val = vec![0.5];
    let t = tensor_from_proto(p.clone()).unwrap();
    assert_eq!(t.shape(), &[2, 3]);
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![0.5; 6]);

    let mut p = proto(DType::String, &[3]);
    p.string_val = vec![b"x".to_vec()];
    assert_eq!(
        tensor_from_proto(p.clone()).unwrap().strings().unwrap(),
        &[b"x".to_vec(), b"x".to_vec(), b"x".to_vec()]
    );

    let mut p = proto(DType::Complex64, &[2]);
    p.scomplex_val = vec![1.0, 2.0];
    let t = tensor_from_proto(p.clone()).unwrap();
    assert_eq!(t.bytes().unwrap().len(), 16);

    // No shape at all is a scalar.
    let p = TensorProto {
        dtype: DType::Int64.to_proto(),
        int64_val: vec![7],
        ..TensorProto::default()
    };
    let t = tensor_from_proto(p.clone()).unwrap();
    assert_eq!(t.shape(), &[] as &[usize]);
    assert_eq!(t.to_vec::<i64>().unwrap(), vec![7]);
}

#[test]
fn value_count_mismatches_are_errors() {
    let mut p = proto(DType::Float, &[2, 3]);
    p.float_val = vec![1.0, 2.0];
    let err = tensor_from_proto(p.clone()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "float_val has 2 values, but a float32 tensor of shape [2, 3] needs 6 (or a single value to fill it)"
    );
    p.float_val = vec![];
    assert!(matches!(
        tensor_from_proto(p.clone()),
        Err(CodecError::ValueCount { actual: 0, .. })
    ));
    let mut p = proto(DType::String, &[2]);
    p.string_val = vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
    assert!(matches!(
        tensor_from_proto(p.clone()),
        Err(CodecError::ValueCount {
            expected: 2,
            actual: 3,
            ..
        })
    ));
    let mut p = proto(DType::Complex128, &[1]);
    p.dcomplex_val = vec![1.0];
    assert!(matches!(
        tensor_from_proto(p.clone()),
        Err(CodecError::OddComplex { .. })
    ));
}

#[test]
fn content_length_must_match() {
    let mut p = proto(DType::Double, &[3]);
    p.tensor_content = vec![0; 16].into();
    let err = tensor_from_proto(p.clone()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor_content has 16 bytes, but a float64 tensor of shape [3] needs 24"
    );
}

#[test]
fn values_in_the_wrong_field_are_errors() {
    let mut p = proto(DType::Float, &[1]);
    p.int64_val = vec![1];
    let err = tensor_from_proto(p.clone()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "int64_val is set, but a float32 tensor takes its values from float_val"
    );
    let mut p = proto(DType::Int32, &[1]);
    p.int_val = vec![1];
    p.tensor_content = vec![1, 0, 0, 0].into();
    assert!(matches!(
        tensor_from_proto(p.clone()),
        Err(CodecError::WrongField {
            field: "int_val",
            ..
        })
    ));
}

#[test]
fn narrow_integers_are_range_checked() {
    for (dtype, bad) in [
        (DType::Int8, 128),
        (DType::Uint8, -1),
        (DType::Int16, 40_000),
        (DType::Uint16, 70_000),
        (DType::Half, 65_536),
    ] {
        let mut p = proto(dtype, &[2]);
        if dtype == DType::Half {
            p.half_val = vec![0, bad];
        } else {
            p.int_val = vec![0, bad];
        }
        let err = tensor_from_proto(p.clone()).unwrap_err();
        assert!(
            matches!(err, CodecError::OutOfRange { index: 1, .. }),
            "{dtype}: {err}"
        );
    }
}

#[test]
fn bad_shapes_and_dtypes_are_errors() {
    let mut p = proto(DType::Float, &[-1, 2]);
    p.float_val = vec![1.0];
    assert_eq!(
        tensor_from_proto(p.clone()).unwrap_err(),
        CodecError::NegativeDim { index: 0, size: -1 }
    );
    p.tensor_shape = Some(TensorShapeProto {
        dim: vec![],
        unknown_rank: true,
    });
    assert_eq!(
        tensor_from_proto(p.clone()).unwrap_err(),
        CodecError::UnknownRank
    );
    for dtype in [0, 20, 21, 99] {
        let p = TensorProto {
            dtype,
            ..TensorProto::default()
        };
        assert!(matches!(
            tensor_from_proto(p.clone()),
            Err(CodecError::UnsupportedDType(_))
        ));
    }
    // No tensor beyond the size limit, sent or repeated.
    let mut p = proto(DType::Double, &[1 << 20, 1 << 20]);
    p.double_val = vec![1.0];
    assert!(matches!(
        tensor_from_proto(p.clone()),
        Err(CodecError::TooLarge { .. })
    ));
    // Nor may one string, counted as the memory it takes once repeated: 2^22 copies of 1 KB.
    let mut p = proto(DType::String, &[1 << 22]);
    p.string_val = vec![vec![b'x'; 1000]];
    assert!(matches!(
        tensor_from_proto(p.clone()),
        Err(CodecError::TooLarge { .. })
    ));
}

/// One value fills its shape (TensorFlow's rule) up to 64 MiB for the whole request; past
/// that the client is told to send the values, so a request of a few bytes cannot cost
/// gigabytes.
#[test]
fn lone_values_fill_at_most_64_mib_per_request() {
    let mut p = proto(DType::Float, &[1 << 18, 64]);
    p.float_val = vec![0.5];
    assert_eq!(
        tensor_from_proto(p.clone()).unwrap().num_elements(),
        1 << 24
    );
    p.tensor_shape = shape(&[(1 << 18) + 1, 64]);
    let err = tensor_from_proto(p.clone()).unwrap_err();
    assert!(matches!(err, CodecError::RepeatTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("send every value"), "{err}");
    // Strings count their bytes: 24 + 8 per element.
    let mut p = proto(DType::String, &[(64 << 20) / 32]);
    p.string_val = vec![b"12345678".to_vec()];
    assert!(tensor_from_proto(p.clone()).is_ok());
    p.tensor_shape = shape(&[(64 << 20) / 32 + 1]);
    assert!(matches!(
        tensor_from_proto(p.clone()),
        Err(CodecError::RepeatTooLarge { .. })
    ));
    // The inputs of one request share the allowance: two halves pass, a third is refused.
    let mut half = proto(DType::Float, &[1 << 17, 64]);
    half.float_val = vec![1.0];
    let mut allowance = MAX_REPEATED_BYTES;
    assert!(tensor_from_proto_within(half.clone(), &mut allowance).is_ok());
    assert!(tensor_from_proto_within(half.clone(), &mut allowance).is_ok());
    assert_eq!(allowance, 0);
    assert!(matches!(
        tensor_from_proto_within(half.clone(), &mut allowance),
        Err(CodecError::RepeatTooLarge { .. })
    ));
    // Values sent in full take nothing from it: the limit is on repeating, not on size.
    let mut full = proto(DType::Float, &[(1 << 18) + 1, 64]);
    full.tensor_content = vec![0; ((1 << 18) + 1) * 64 * 4].into();
    assert!(tensor_from_proto_within(full.clone(), &mut allowance).is_ok());
}

/// Shapes TensorFlow aborts the process on (a failed `CHECK` in `TensorShape`) are refused
/// here, before any tensor exists: an element count past int64 (in a plain `usize` product
/// 2^62 * 4 wraps to 0, which an empty value list would have matched) and rank above 254.
#[test]
fn shapes_tensorflow_cannot_represent_are_errors() {
    for values in [vec![], vec![1.0]] {
        let mut p = proto(DType::Float, &[1 << 62, 4]);
        p.float_val = values;
        let err = tensor_from_proto(p.clone()).unwrap_err();
        assert!(matches!(err, CodecError::Shape(_)), "{err}");
        assert!(err.to_string().contains("more elements than"), "{err}");
    }
    let mut p = proto(DType::Float, &[1 << 40, 1 << 30, 0]);
    assert!(matches!(
        tensor_from_proto(p.clone()),
        Err(CodecError::Shape(_))
    ));
    p.tensor_shape = shape(&[1; 255]);
    p.float_val = vec![1.0];
    let err = tensor_from_proto(p.clone()).unwrap_err();
    assert!(err.to_string().contains("rank 255"), "{err}");
    p.tensor_shape = shape(&[1; 254]);
    assert_eq!(tensor_from_proto(p.clone()).unwrap().shape().len(), 254);
}

#[test]
fn string_tensor_content_uses_tensorflows_string_list() {
    let mut p = proto(DType::String, &[2]);
    p.tensor_content = vec![1, 3, b'a', b'x', b'y', b'z'].into();
    let t = tensor_from_proto(p.clone()).unwrap();
    assert_eq!(t.strings().unwrap(), &[b"a".to_vec(), b"xyz".to_vec()]);
    p.tensor_content = vec![1, 3, b'a', b'x'].into();
    assert!(matches!(
        tensor_from_proto(p.clone()),
        Err(CodecError::BadStringContent(_))
    ));
    p.tensor_content = vec![1, 1, b'a', b'x', b'!'].into();
    assert!(matches!(
        tensor_from_proto(p.clone()),
        Err(CodecError::BadStringContent(_))
    ));
}
