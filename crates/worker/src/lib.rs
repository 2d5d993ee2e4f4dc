//! Async workers: each one claims a workload, runs the API's handler on it, and stores the
//! outcome, one workload at a time (as Cortex's replicas did).
//!
//! Delivery is at-least-once: a worker holds a lease on the workload and renews it while the
//! handler runs; if the process dies, the lease runs out and another worker (or the restarted
//! process) runs the workload again. The final status is written once
//! (`soma_jobs::Backend::complete` is conditional), so a redelivered workload never ends with
//! two results.

mod handler;
mod pool;

pub use handler::{HandlerFailure, Workload, WorkloadHandler};
pub use pool::{WorkerOptions, WorkerPool};
