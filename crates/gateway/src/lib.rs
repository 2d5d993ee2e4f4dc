//! The async gateway, as in Cortex's AsyncAPI (reference `cortex-asyncapi.md` §3):
//!
//! * `POST /<endpoint>` with any body and a Content-Type → `{"id": "<uuid>"}`, answered only
//!   once the workload is durably stored;
//! * `GET /<endpoint>/<id>` → `{"id", "status"}`, plus `result` and `timestamp` when
//!   `completed`, and `error` and `timestamp` when `failed` (Cortex gave no error text);
//! * `GET /healthz` (liveness), `GET /readyz` (ready once every API's handler initialised),
//!   `GET /metrics` (Prometheus).
//! * `DELETE /<endpoint>/<id>` cancels a queued workload (409 if it already runs: running
//!   work is not interrupted); `GET /_soma/apis`: per-API state, queue and status counts.
//!
//! Errors are JSON `{"error": "..."}` with the status code from one mapping
//! ([`error::status_for`]). The gateway needs no Python and no TensorFlow.

mod error;
mod ops;
mod readiness;
mod routes;

pub use error::{ApiError, status_for};
pub use ops::APIS_PATH;
pub use readiness::{ApiState, Readiness};
pub use routes::{ApiRoute, Gateway, GatewayConfig, router};
