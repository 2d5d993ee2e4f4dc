//! Test support shared by the integration tests of every crate. Not used by the product.
//!
//! * [`repo_root`], [`fixtures`], [`venv_bin`], [`copy_dir`]: where the generated models and the project's
//!   Python environment are (created by `scripts/setup.sh`).
//! * [`MotoServer`]: a real S3-compatible server (`moto_server`) on a free loopback port,
//!   stopped when dropped, with helpers to create buckets and upload folders.
//! * [`RedisServer`]: a real `redis-server` (append-only on) on a free port with a temporary
//!   data directory, stoppable and restartable for outage tests.
//! * [`expected_cases`], [`assert_outputs_match`]: the outputs Python TensorFlow gave for
//!   each fixture (`expected.json`), and the comparison soma's outputs must pass.
//! * [`http`]: a bare HTTP/1.1 client for black-box tests of `soma serve`; [`send_raw`],
//!   [`raw_post`] and [`parse_answers`] for bytes no client library would send.
//! * [`TestPki`]: a CA, server and client certificates for TLS tests, made by `openssl`.
//! * [`Mutator`]: seeded damaged copies of valid requests, for robustness tests of servers.

mod expected;
mod http;
mod moto;
mod mutate;
mod paths;
mod redis;
mod signatures;
mod tls;

pub use expected::{ExpectedCase, assert_outputs_match, expected_cases};
pub use http::{HttpConnection, HttpResponse, http, parse_answers, raw_post, send_raw};
pub use moto::MotoServer;
pub use mutate::Mutator;
pub use paths::{
    copy_dir, fixtures, free_port, repo_root, run_python, run_python_code, tf2_classifier, venv_bin,
};
pub use redis::RedisServer;
pub use signatures::vector_signatures;
pub use tls::TestPki;
