//! The TensorFlow C library, opened at run time from the `tensorflow-cpu` wheel.
//!
//! Nothing here links TensorFlow at build time: [`TensorFlow::load`] `dlopen`s
//! `libtensorflow_cc.so.2` (which pulls in `libtensorflow_framework.so.2` by its RUNPATH) and
//! resolves every C function once. So soma builds and starts without TensorFlow; only
//! running a model needs it, and a missing library is a precise error listing where soma
//! looked ([`locate`]).
//!
//! * [`SavedModel::load`] loads a SavedModel (`TF_LoadSessionFromSavedModel`) and reads its
//!   signatures from the returned MetaGraphDef; [`SavedModel::prepare`] resolves a signature
//!   to graph tensors once; [`SavedModel::run`] runs it (`TF_SessionRun`, callable from many
//!   threads at once, with no lock).
//! * [`read_signatures`] parses the signatures out of a `saved_model.pb` without TensorFlow.
//!
//! Decisions worth knowing:
//! * Signatures soma cannot run (sparse/composite tensors, `resource`/`variant`/unknown
//!   dtypes) do not fail the load: they are left out of [`SavedModel::signatures`] and
//!   listed with the reason in [`SavedModel::skipped_signatures`].
//! * [`SavedModel::run`] checks each input's dtype and shape against the signature first
//!   ([`TfError::InvalidInput`]); TensorFlow's own failures keep its code and message
//!   ([`TfError::Run`], [`TfError::Load`]) and map to [`soma_core::ErrorKind`] via
//!   [`TfError::kind`].
//! * Every TensorFlow object is deleted on every path; string tensors are freed by
//!   `TF_DeleteTensor` when their last reference goes (see `tensor.rs`), because an output
//!   may share an input's buffer.
//!
//! This is the only crate of soma allowed `unsafe` code; each block says why it is sound.
#![allow(unsafe_code)]

mod bench;
mod error;
mod ffi;
mod library;
mod proto;
mod session;
mod tensor;

pub use error::TfError;
pub use library::{TensorFlow, locate};
pub use proto::{read_signatures, read_tag_sets};
pub use session::{PreparedSignature, SavedModel, SessionOptions};
