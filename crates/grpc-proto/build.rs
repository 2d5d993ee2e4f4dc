//! Compiles TF Serving's .proto files with protox (a protobuf compiler in Rust), so building
//! soma needs no system `protoc`, then generates prost messages and tonic services.

use std::path::{Path, PathBuf};

use prost::Message;

const FILES: [&str; 7] = [
    "tensorflow_serving/apis/prediction_service.proto",
    "tensorflow_serving/apis/model_service.proto",
    // gRPC's health checking service (TF Serving's --enable_grpc_healthcheck_service).
    "grpc/health/v1/health.proto",
    // The record type of SavedModel warm-up files.
    "tensorflow_serving/apis/prediction_log.proto",
    // TensorFlow's session config (--tensorflow_session_config_file).
    "tensorflow/core/protobuf/config.proto",
    // --platform_config_file: the platform map and the "tensorflow" platform's config.
    "tensorflow_serving/config/platform_config.proto",
    "tensorflow_serving/servables/tensorflow/saved_model_bundle_source_adapter.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let descriptors = protox::compile(FILES, [root])?;
    // Kept for tests that compare the contract with the official Python descriptors.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptors.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        // A request's tensor bytes as `Bytes`: decoded from a `Bytes` buffer they are a
        // slice of it, not a copy (a `Vec<u8>` field is filled through a `Bytes` copy
        // first, which held the tensor twice more than its message while it decoded).
        .bytes(".tensorflow.TensorProto.tensor_content")
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
