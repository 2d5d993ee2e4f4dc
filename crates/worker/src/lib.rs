//! Async workers: each one claims a workload, runs the API's handler on it, and stores the
//! outcome, one workload at a time (as Cortex's replicas did).
//!
//! Delivery is at-least-once: a worker holds a lease on the workload and renews it while the
//! handler runs; if the process dies, the lease runs out and another worker (or the restarted
//! process) runs the workload again. The final status is written once
//! (`soma_jobs::Backend::complete` is conditional), so a redelivered workload never ends with
//! two results.
//!
//! Waiting and prefetch: an idle worker waits for the in-process wake-up or
//! `Queue::wait_for_push` (Redis: a blocking pop on the API's wake list, so submissions of
//! other processes start at once), with `WorkerOptions::poll_interval` as the fallback. With
//! `WorkerOptions::prefetch` a worker claims its next workloads on background tasks while
//! its handler runs (the claims' round trips overlap the handler); they stay leased, with
//! their leases renewed, until the worker runs them one after the other.
//!
//! Crashes: a redelivered workload runs with nothing else held in the process
//! ([`CrashIsolation`]), so a payload that crashes the process uses up its own deliveries.
//!
//! Autoscaling: a pool has a fixed number of slots, of which [`run_autoscaler`] lets a
//! varying number claim work, following Cortex's algorithm (see [`Autoscaler`]).

mod autoscale;
mod handler;
mod isolation;
mod pool;

pub use autoscale::{Autoscaler, AutoscalerParams, AutoscalerTiming, run_autoscaler};
pub use handler::{HandlerFailure, Workload, WorkloadHandler};
pub use isolation::CrashIsolation;
pub use pool::{WorkerOptions, WorkerPool};
