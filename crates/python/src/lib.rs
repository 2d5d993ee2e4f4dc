//! Cortex-style Python handlers, embedded with PyO3.
//!
//! * [`init_python`] starts CPython from the project's virtual environment (once per
//!   process) so the handlers' packages (numpy, tensorflow, ...) are importable without
//!   `PYTHONHOME`.
//! * [`HandlerHost`] loads `handler.py`, checks the `Handler` class as Cortex did, and runs
//!   one `Handler` instance per worker on its own OS thread (Python never runs on the async
//!   runtime's threads). Each call decodes the payload by Content-Type, calls
//!   `handle_async` (plain or `async def`) with the arguments it declares, and returns the
//!   result as JSON. soma accepts any JSON-serialisable result (Cortex required a dict).
//! * `tensorflow_client.predict(...)` runs soma's predict path with the GIL released;
//!   `metrics_client` records Prometheus metrics in the shared registry.
//!
//! The Python half of the contract lives in `glue.py`, embedded in the binary.

mod convert;
mod error;
mod host;
mod interpreter;
mod metrics_client;
mod tf_client;

pub use error::{HandlerError, PyHostError};
pub use host::{HandlerHost, HandlerSpec};
pub use interpreter::init_python;
