//! TensorFlow Serving's gRPC contract, written from its published `.proto` files with the
//! same packages, message names and field numbers (the wire contract), trimmed to what soma
//! serves: `tensorflow.serving.PredictionService`, `tensorflow.serving.ModelService`, their
//! messages, `TensorProto`/`SignatureDef`/`Example` from TensorFlow, the model server
//! config, `PredictionLog` (the records of SavedModel warm-up files), TensorFlow's session
//! `ConfigProto` and gRPC's health checking service (`grpc.health.v1.Health`). Fields soma does
//! not serve are `reserved` in the .proto files, so a client that sends them is still
//! understood (protobuf skips unknown fields).
//!
//! `build.rs` compiles the files with `protox` (no system `protoc`) and generates prost
//! messages plus tonic servers and (transport-free) clients.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Package `tensorflow`: tensors, shapes, signatures, tf.Example.
pub mod tensorflow {
    include!(concat!(env!("OUT_DIR"), "/tensorflow.rs"));

    /// Package `tensorflow.error`: canonical status codes.
    pub mod error {
        include!(concat!(env!("OUT_DIR"), "/tensorflow.error.rs"));
    }

    /// Package `tensorflow.serving`: the TF Serving APIs and model server config.
    pub mod serving {
        include!(concat!(env!("OUT_DIR"), "/tensorflow.serving.rs"));
    }
}

/// Package `grpc.health.v1`: gRPC's standard health checking service.
pub mod grpc {
    pub mod health {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
        }
    }
}

/// The type URL of a `SignatureDefMap` packed in `google.protobuf.Any`, as TF Serving writes it.
pub const SIGNATURE_DEF_MAP_TYPE_URL: &str =
    "type.googleapis.com/tensorflow.serving.SignatureDefMap";

/// The encoded `FileDescriptorSet` of every .proto file above (with google/protobuf imports).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
