//! Cortex-style Python handlers, embedded with PyO3.
//!
//! * [`init_python`] starts CPython from the project's virtual environment (once per
//!   process) so the handlers' packages (numpy, tensorflow, ...) are importable without
//!   `PYTHONHOME`.
//! * [`HandlerHost`] loads `handler.py`, checks the `Handler` class as Cortex did, and runs
//!   one `Handler` instance per worker on its own OS thread (Python never runs on the async
//!   runtime's threads). Each call decodes the payload by Content-Type, calls
//!   `handle_async` (plain or `async def`) with the arguments it declares, and returns the
//!   result as JSON. soma accepts any JSON value as the result (Cortex required a dict);
//!   integers beyond 64 bits, NaN/infinity and non-JSON objects fail the call with a
//!   message that says where the bad value is. A Python exception (even `SystemExit`)
//!   fails only that call: the message is `"<ExcType>: <msg>"`, the traceback is separate
//!   for the log.
//! * `tensorflow_client.predict(...)` runs soma's predict path with the GIL released;
//!   `metrics_client` records Prometheus metrics in the shared registry.
//!
//! The Python half of the contract (module loading, Cortex's signature checks, payload
//! decoding, the per-worker event loop) lives in `glue.py`, embedded in the binary;
//! `handler.rs` drives it and `convert.rs` holds the Python ⇄ JSON ⇄ tensor rules.
//!
//! Linking: PyO3 links `libpython3.11.so` of `PYO3_PYTHON` (.cargo/config.toml: the
//! project's `.venv/bin/python`). Cargo applies a build script's link arguments only to
//! its own package, so every package whose binaries embed Python (this one's tests, the
//! `soma` CLI, soma-bench) `include!`s `build-support/libpython_rpath.rs` in its build.rs
//! to get an rpath to libpython's folder.

mod convert;
mod error;
mod handler;
mod host;
mod interpreter;
mod metrics_client;
mod tf_client;

pub use error::{HandlerError, PyHostError};
pub use host::{HandlerHost, HandlerSpec};
pub use interpreter::init_python;
