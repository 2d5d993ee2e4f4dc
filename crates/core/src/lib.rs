//! Contracts shared by every soma crate. No I/O lives here.
//!
//! * [`DType`], [`Tensor`]: TensorFlow's element types and a dense, owned tensor.
//! * [`TensorInfo`], [`SignatureDef`]: what a SavedModel signature declares.
//! * [`VersionSpec`]: "latest" or a concrete model version, parsed the way Cortex did.
//! * [`ErrorKind`]: canonical error classes (shaped like TensorFlow's status codes), which
//!   the protocol crates map to HTTP and gRPC codes in one place.
//! * [`json`]: conversion between JSON values and tensors, checked against a signature.

mod dtype;
mod error;
pub mod json;
mod location;
pub mod runner;
mod signature;
mod tensor;
mod version;

pub use dtype::DType;
pub use error::ErrorKind;
pub use location::{LocationError, ModelLocation};
pub use signature::{
    ListedSignature, ListedTensor, SignatureDef, TensorEncoding, TensorInfo, format_shape,
};
pub use tensor::{Element, MAX_RANK, Tensor, TensorData, TensorError, element_count};
pub use version::{VersionSpec, VersionSpecError};
