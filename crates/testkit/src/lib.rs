//! Test support shared by the integration tests of every crate. Not used by the product.
//!
//! * [`repo_root`], [`fixtures`], [`venv_bin`]: where the generated models and the project's
//!   Python environment are (created by `scripts/setup.sh`).
//! * [`MotoServer`]: a real S3-compatible server (`moto_server`) on a free loopback port,
//!   stopped when dropped, with helpers to create buckets and upload folders.

mod moto;
mod paths;

pub use moto::MotoServer;
pub use paths::{fixtures, free_port, repo_root, venv_bin};
