//! The few protobuf messages soma reads or writes, declared by hand (field numbers from
//! `tensorflow/core/protobuf/{saved_model,meta_graph,config}.proto`), so no `protoc` is
//! needed. prost skips the fields not declared here, such as the (large) GraphDef.

use std::collections::{BTreeMap, HashMap};

use prost::Message as _;
use soma_core::{DType, ListedSignature, ListedTensor, SignatureDef, TensorEncoding, TensorInfo};

use crate::TfError;

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SavedModelProto {
    #[prost(message, repeated, tag = "2")]
    pub(crate) meta_graphs: Vec<MetaGraphDef>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct MetaGraphDef {
    #[prost(message, optional, tag = "1")]
    pub(crate) meta_info_def: Option<MetaInfoDef>,
    #[prost(map = "string, message", tag = "5")]
    pub(crate) signature_def: HashMap<String, SignatureDefProto>,
}

/// The same MetaGraphDef with each signature left serialized (a message and bytes share
/// their wire form), for metadata that passes the stored signatures on whole.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct MetaGraphStoredSignatures {
    #[prost(map = "string, bytes", tag = "5")]
    pub(crate) signature_def: HashMap<String, Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct MetaInfoDef {
    #[prost(string, repeated, tag = "4")]
    pub(crate) tags: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SignatureDefProto {
    #[prost(map = "string, message", tag = "1")]
    pub(crate) inputs: HashMap<String, TensorInfoProto>,
    #[prost(map = "string, message", tag = "2")]
    pub(crate) outputs: HashMap<String, TensorInfoProto>,
    #[prost(string, tag = "3")]
    pub(crate) method_name: String,
    /// Input name → `TensorProto`, kept encoded: only whether there are any is read.
    #[prost(map = "string, bytes", tag = "4")]
    pub(crate) defaults: HashMap<String, Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TensorInfoProto {
    /// Set for dense tensors; sparse (4) and composite (5) encodings leave it empty.
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(int32, tag = "2")]
    pub(crate) dtype: i32,
    #[prost(message, optional, tag = "3")]
    pub(crate) tensor_shape: Option<TensorShapeProto>,
    #[prost(message, optional, tag = "4")]
    pub(crate) coo_sparse: Option<CooSparseProto>,
    #[prost(message, optional, tag = "5")]
    pub(crate) composite_tensor: Option<CompositeTensorProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CooSparseProto {
    #[prost(string, tag = "1")]
    pub(crate) values_tensor_name: String,
    #[prost(string, tag = "2")]
    pub(crate) indices_tensor_name: String,
    #[prost(string, tag = "3")]
    pub(crate) dense_shape_tensor_name: String,
}

/// `CompositeTensor`'s flat components (its `type_spec`, field 1, is not read).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CompositeTensorProto {
    #[prost(message, repeated, tag = "2")]
    pub(crate) components: Vec<TensorInfoProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub(crate) dim: Vec<DimProto>,
    #[prost(bool, tag = "3")]
    pub(crate) unknown_rank: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DimProto {
    #[prost(int64, tag = "1")]
    pub(crate) size: i64,
}

/// `ConfigProto`'s thread-pool fields, as read from a session config soma was given.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ConfigProto {
    #[prost(int32, tag = "2")]
    pub(crate) intra_op_parallelism_threads: i32,
    #[prost(int32, tag = "5")]
    pub(crate) inter_op_parallelism_threads: i32,
    #[prost(bool, tag = "9")]
    pub(crate) use_per_session_threads: bool,
    /// `session_inter_op_thread_pool` (`ThreadPoolOptionProto`s), only counted.
    #[prost(bytes = "vec", repeated, tag = "12")]
    pub(crate) session_inter_op_thread_pool: Vec<Vec<u8>>,
}

/// Signatures read from a MetaGraphDef: the runnable ones, and why the others were left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Signatures {
    pub(crate) runnable: BTreeMap<String, SignatureDef>,
    /// Signature key → the reason it cannot be served (sparse/composite tensors, or a
    /// dtype soma cannot carry such as `resource`/`variant`/an unknown number).
    pub(crate) skipped: BTreeMap<String, String>,
    /// Every signature as the model's metadata lists it, `__saved_model_init_op` included.
    pub(crate) listed: BTreeMap<String, ListedSignature>,
}

/// The runnable signatures of the `serve` MetaGraph of a `saved_model.pb`, read without
/// TensorFlow (see [`SavedModel::signatures`](crate::SavedModel::signatures) for what is
/// left out).
pub fn read_signatures(saved_model_pb: &[u8]) -> Result<BTreeMap<String, SignatureDef>, TfError> {
    let model = SavedModelProto::decode(saved_model_pb)
        .map_err(|e| TfError::Proto(format!("saved_model.pb is not a SavedModel: {e}")))?;
    let serve = model
        .meta_graphs
        .iter()
        .find(|m| {
            m.meta_info_def
                .as_ref()
                .is_some_and(|i| i.tags.iter().any(|t| t == "serve"))
        })
        .or(model.meta_graphs.first())
        .ok_or_else(|| TfError::Proto("saved_model.pb has no MetaGraph".into()))?;
    Ok(signatures(serve).runnable)
}

/// The tag set of each MetaGraph in a `saved_model.pb`, each sorted, in file order.
pub fn read_tag_sets(saved_model_pb: &[u8]) -> Result<Vec<Vec<String>>, TfError> {
    let model = SavedModelProto::decode(saved_model_pb)
        .map_err(|e| TfError::Proto(format!("saved_model.pb is not a SavedModel: {e}")))?;
    Ok(model
        .meta_graphs
        .iter()
        .map(|m| {
            let mut tags = m
                .meta_info_def
                .as_ref()
                .map(|i| i.tags.clone())
                .unwrap_or_default();
            tags.sort();
            tags.dedup();
            tags
        })
        .collect())
}

/// Decodes a serialized MetaGraphDef (as returned by `TF_LoadSessionFromSavedModel`).
pub(crate) fn meta_graph_signatures(bytes: &[u8]) -> Result<Signatures, TfError> {
    let meta = MetaGraphDef::decode(bytes).map_err(|e| TfError::Proto(e.to_string()))?;
    let mut found = signatures(&meta);
    let stored =
        MetaGraphStoredSignatures::decode(bytes).map_err(|e| TfError::Proto(e.to_string()))?;
    for (key, bytes) in stored.signature_def {
        if let Some(listed) = found.listed.get_mut(&key) {
            listed.stored = Some(bytes);
        }
    }
    Ok(found)
}

/// Splits the signatures into runnable and skipped ones, and lists them all for the model's
/// metadata. `__saved_model_init_op` (and any other `__` key) is TensorFlow's own
/// bookkeeping, not a signature: neither runnable nor skipped, but listed.
///
/// Unsupported signatures are skipped rather than failing the load, because a SavedModel
/// often carries extra signatures (e.g. for training) next to the one that is served; the
/// reason is kept so that asking for a skipped signature can say why it is missing.
fn signatures(meta: &MetaGraphDef) -> Signatures {
    let mut out = Signatures::default();
    for (key, sig) in &meta.signature_def {
        out.listed.insert(key.clone(), listed(sig));
        if key.starts_with("__") {
            continue;
        }
        match convert(sig) {
            Ok(def) => {
                out.runnable.insert(key.clone(), def);
            }
            Err(reason) => {
                out.skipped.insert(key.clone(), reason);
            }
        }
    }
    out
}

fn listed(sig: &SignatureDefProto) -> ListedSignature {
    let list = |map: &HashMap<String, TensorInfoProto>| {
        map.iter()
            .map(|(alias, info)| (alias.clone(), listed_tensor(info)))
            .collect()
    };
    ListedSignature {
        method_name: sig.method_name.clone(),
        inputs: list(&sig.inputs),
        outputs: list(&sig.outputs),
        stored: None,
        has_defaults: !sig.defaults.is_empty(),
    }
}

fn listed_tensor(info: &TensorInfoProto) -> ListedTensor {
    // A oneof: the field that came last on the wire wins, but TensorFlow writes one.
    let encoding = if let Some(composite) = &info.composite_tensor {
        TensorEncoding::Composite {
            components: composite.components.iter().map(listed_tensor).collect(),
        }
    } else if let Some(sparse) = &info.coo_sparse {
        TensorEncoding::CooSparse {
            values_tensor_name: sparse.values_tensor_name.clone(),
            indices_tensor_name: sparse.indices_tensor_name.clone(),
            dense_shape_tensor_name: sparse.dense_shape_tensor_name.clone(),
        }
    } else if info.name.is_empty() {
        TensorEncoding::None
    } else {
        TensorEncoding::Name(info.name.clone())
    };
    ListedTensor {
        dtype: info.dtype,
        shape: dims(info),
        encoding,
    }
}

fn convert(sig: &SignatureDefProto) -> Result<SignatureDef, String> {
    let tensors = |map: &HashMap<String, TensorInfoProto>, side: &str| {
        map.iter()
            .map(|(name, info)| {
                tensor_info(info)
                    .map(|t| (name.clone(), t))
                    .map_err(|e| format!("{side} '{name}' {e}"))
            })
            .collect::<Result<BTreeMap<_, _>, String>>()
    };
    Ok(SignatureDef {
        method_name: sig.method_name.clone(),
        inputs: tensors(&sig.inputs, "input")?,
        outputs: tensors(&sig.outputs, "output")?,
    })
}

fn tensor_info(info: &TensorInfoProto) -> Result<TensorInfo, String> {
    if info.name.is_empty() {
        return Err("is a sparse or composite tensor, which soma cannot feed or fetch".into());
    }
    let dtype = match DType::from_proto(info.dtype) {
        Some(d) if d.is_supported() => d,
        Some(d) => return Err(format!("has dtype {d}, which soma cannot carry")),
        None => return Err(format!("has an unknown dtype (enum value {})", info.dtype)),
    };
    Ok(TensorInfo {
        tensor_name: info.name.clone(),
        dtype,
        shape: dims(info),
    })
}

/// The tensor's dimensions; `None` when its rank is unknown (or no shape is given).
fn dims(info: &TensorInfoProto) -> Option<Vec<i64>> {
    match &info.tensor_shape {
        Some(shape) if shape.unknown_rank => None,
        Some(shape) => Some(shape.dim.iter().map(|d| d.size).collect()),
        None => None,
    }
}

/// Serialized ConfigProto: `base` (a config soma was given, or nothing) with the
/// thread-pool sizes.
///
/// `intra`: `None` = the base's size if it sets one, else one thread, so an op's work is
/// not split over a pool; 0 = TensorFlow's default (one thread per core); n = n threads.
/// `inter`: `None` = the base's inter-op settings if it has any, else run the graph's ops in
/// the calling thread (ConfigProto's negative value); 0 = TensorFlow's default pool, shared
/// by the process; n = a pool of n threads of this session's own. (Without
/// `use_per_session_threads` TensorFlow would make one pool for the whole process, sized by
/// the first session that asks, and every later session with its own size would silently
/// share it.) A size given here overrides the base's, as TF Serving's thread flags override
/// its session config file.
///
/// TensorFlow's intra-op pool has no such switch in the C API: it is made once per process,
/// sized by the first session loaded (see README, "cortex.yaml").
///
/// Both defaults keep a run on its calling thread: concurrent requests still run in
/// parallel, each on its own thread, and no run pays for thread hand-offs. On this
/// project's 2-core machine the inter-op default took iris from 34 µs to 11 µs per call, and
/// the intra-op one took a 64-row iris batch from ~70 µs to 16 µs and a 3×1024 MLP from 0.56
/// to 0.41 ms per call (BENCHMARKS.md).
pub(crate) fn config_proto(
    base: &[u8],
    intra: Option<u32>,
    inter: Option<u32>,
) -> Result<Vec<u8>, prost::DecodeError> {
    use prost::encoding::{bool as boolean, int32};
    let given = ConfigProto::decode(base)?;
    let clamp = |n: u32| n.min(i32::MAX as u32) as i32;
    // Protobuf merges a message's encodings: appended fields override the base's. They are
    // written even when 0 (prost's derived encoding would leave a 0 out), so that an
    // explicit 0 overrides a base's size too.
    let mut config = base.to_vec();
    match intra {
        Some(n) => int32::encode(2, &clamp(n), &mut config),
        None if given.intra_op_parallelism_threads != 0 => {}
        None => int32::encode(2, &1, &mut config),
    }
    let base_sets_inter = given.inter_op_parallelism_threads != 0
        || given.use_per_session_threads
        || !given.session_inter_op_thread_pool.is_empty();
    match inter {
        Some(n) => {
            int32::encode(5, &clamp(n), &mut config);
            boolean::encode(9, &(n > 0), &mut config);
        }
        None if base_sets_inter => {}
        None => int32::encode(5, &-1, &mut config),
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread fields of `config_proto(base, intra, inter)` as TensorFlow reads them:
    /// (intra, inter, use_per_session_threads).
    fn threads(base: &[u8], intra: Option<u32>, inter: Option<u32>) -> (i32, i32, bool) {
        let c = ConfigProto::decode(config_proto(base, intra, inter).unwrap().as_slice()).unwrap();
        (
            c.intra_op_parallelism_threads,
            c.inter_op_parallelism_threads,
            c.use_per_session_threads,
        )
    }

    #[test]
    fn config_proto_matches_the_probe_bytes() {
        assert_eq!(
            config_proto(&[], Some(1), Some(1)).unwrap(),
            vec![0x10, 1, 0x28, 1, 0x48, 1],
            "n inter-op threads: a pool of the session's own (field 9)"
        );
        // Default: one intra-op thread, inter_op_parallelism_threads = -1 (ops run in the
        // caller's thread).
        assert_eq!(threads(&[], None, None), (1, -1, false));
        assert_eq!(threads(&[], Some(0), Some(0)), (0, 0, false));
    }

    #[test]
    fn a_base_config_keeps_its_other_fields_and_the_flags_override_its_threads() {
        let pool = ConfigProto {
            session_inter_op_thread_pool: vec![vec![0x08, 2]],
            ..ConfigProto::default()
        };
        let base = ConfigProto {
            intra_op_parallelism_threads: 4,
            inter_op_parallelism_threads: 3,
            use_per_session_threads: true,
            ..ConfigProto::default()
        };
        let mut with_other = base.encode_to_vec();
        // allow_soft_placement (field 7) = true: not a thread field, kept as it is.
        with_other.extend([0x38, 1]);
        let merged = config_proto(&with_other, None, None).unwrap();
        assert!(merged.starts_with(&with_other));
        assert_eq!(threads(&with_other, None, None), (4, 3, true));
        // Flags override, 0 included.
        assert_eq!(threads(&with_other, Some(0), Some(0)), (0, 0, false));
        assert_eq!(threads(&with_other, Some(2), Some(5)), (2, 5, true));
        // A base without thread settings gets soma's defaults; one with inter-op pools
        // keeps them.
        assert_eq!(threads(&[0x38, 1], None, None), (1, -1, false));
        assert_eq!(threads(&pool.encode_to_vec(), None, None), (1, 0, false));
        assert!(config_proto(&[0xff], None, None).is_err());
    }

    #[test]
    fn unsupported_signatures_are_skipped_with_a_reason() {
        let info = |name: &str, dtype: i32| TensorInfoProto {
            name: name.into(),
            dtype,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![DimProto { size: -1 }, DimProto { size: 4 }],
                unknown_rank: false,
            }),
            coo_sparse: None,
            composite_tensor: None,
        };
        let sparse = TensorInfoProto {
            coo_sparse: Some(CooSparseProto {
                values_tensor_name: "v:0".into(),
                indices_tensor_name: "i:0".into(),
                dense_shape_tensor_name: "s:0".into(),
            }),
            ..info("", 1)
        };
        let composite = TensorInfoProto {
            composite_tensor: Some(CompositeTensorProto {
                components: vec![info("c:0", 9)],
            }),
            ..info("", 1)
        };
        let sig = |input: TensorInfoProto| SignatureDefProto {
            inputs: HashMap::from([("x".to_string(), input)]),
            outputs: HashMap::from([("y".to_string(), info("out:0", 1))]),
            method_name: "tensorflow/serving/predict".into(),
            defaults: HashMap::new(),
        };
        let meta = MetaGraphDef {
            meta_info_def: None,
            signature_def: HashMap::from([
                ("ok".to_string(), sig(info("in:0", 1))),
                ("resource".to_string(), sig(info("in:0", 20))),
                ("unknown".to_string(), sig(info("in:0", 77))),
                ("sparse".to_string(), sig(sparse)),
                ("ragged".to_string(), sig(composite)),
                ("__saved_model_init_op".to_string(), sig(info("in:0", 1))),
            ]),
        };
        let found = meta_graph_signatures(&meta.encode_to_vec()).unwrap();
        assert_eq!(found.runnable.keys().collect::<Vec<_>>(), ["ok"]);
        assert_eq!(found.runnable["ok"].inputs["x"].shape, Some(vec![-1, 4]));
        assert_eq!(
            found.skipped,
            BTreeMap::from([
                (
                    "ragged".to_string(),
                    "input 'x' is a sparse or composite tensor, which soma cannot feed or fetch"
                        .to_string()
                ),
                (
                    "resource".to_string(),
                    "input 'x' has dtype resource, which soma cannot carry".to_string()
                ),
                (
                    "sparse".to_string(),
                    "input 'x' is a sparse or composite tensor, which soma cannot feed or fetch"
                        .to_string()
                ),
                (
                    "unknown".to_string(),
                    "input 'x' has an unknown dtype (enum value 77)".to_string()
                ),
            ])
        );
        // The metadata lists every signature as stored, the init op included.
        assert_eq!(
            found.listed.keys().collect::<Vec<_>>(),
            [
                "__saved_model_init_op",
                "ok",
                "ragged",
                "resource",
                "sparse",
                "unknown"
            ]
        );
        assert_eq!(found.listed["unknown"].inputs["x"].dtype, 77);
        assert_eq!(
            found.listed["sparse"].inputs["x"].encoding,
            TensorEncoding::CooSparse {
                values_tensor_name: "v:0".into(),
                indices_tensor_name: "i:0".into(),
                dense_shape_tensor_name: "s:0".into(),
            }
        );
        let TensorEncoding::Composite { components } = &found.listed["ragged"].inputs["x"].encoding
        else {
            panic!("a composite tensor");
        };
        // Each signature also as stored, for gRPC's metadata.
        assert_eq!(
            found.listed["sparse"].stored.as_deref(),
            Some(meta.signature_def["sparse"].encode_to_vec().as_slice())
        );
        assert_eq!(components[0].encoding, TensorEncoding::Name("c:0".into()));
        assert_eq!(components[0].shape, Some(vec![-1, 4]));
        assert!(!found.listed["ok"].has_defaults);

        // A signature with a default value for an input (a `tf.function` argument with one).
        let mut with_default = sig(info("in:0", 1));
        with_default
            .defaults
            .insert("x".into(), vec![8, 1, 0x52, 4, 0, 0, 128, 63]);
        let meta = MetaGraphDef {
            signature_def: HashMap::from([("d".to_string(), with_default)]),
            ..meta
        };
        let found = meta_graph_signatures(&meta.encode_to_vec()).unwrap();
        assert!(found.listed["d"].has_defaults);
    }

    #[test]
    fn junk_is_not_a_saved_model() {
        assert!(read_signatures(b"junk").is_err());
    }
}
