//! Worker slots of one API: a fixed count (`--workers`) or Cortex-style autoscaling between
//! the API's `min_replicas` and `max_replicas` (capped by `--max-workers`).

use std::sync::Arc;

use soma_config::ApiSpec;
use soma_jobs::ApiName;
use soma_worker::{
    Autoscaler, AutoscalerParams, AutoscalerTiming, WorkerOptions, WorkerPool, WorkloadHandler,
    run_autoscaler,
};
use tokio::sync::watch;

use crate::ServeOptions;
use crate::serve::Shared;

/// How many worker slots (and handler threads) the API gets: the fixed count, or the most
/// the autoscaler may use.
pub(crate) fn capacity(api: &ApiSpec, options: &ServeOptions) -> usize {
    match options.workers {
        Some(fixed) => fixed.max(1),
        None => {
            let a = &api.autoscaling;
            (a.max_replicas as usize)
                .min(options.max_workers)
                .max(a.init_replicas as usize)
                .max(1)
        }
    }
}

pub(crate) fn params(api: &ApiSpec, capacity: usize) -> AutoscalerParams {
    let a = &api.autoscaling;
    let max = u32::try_from(capacity).unwrap_or(u32::MAX);
    AutoscalerParams {
        min_replicas: a.min_replicas.min(max),
        max_replicas: max,
        init_replicas: a.init_replicas,
        target_replica_concurrency: a.target_replica_concurrency,
        window: a.window,
        downscale_stabilization_period: a.downscale_stabilization_period,
        upscale_stabilization_period: a.upscale_stabilization_period,
        max_downscale_factor: a.max_downscale_factor,
        max_upscale_factor: a.max_upscale_factor,
        downscale_tolerance: a.downscale_tolerance,
        upscale_tolerance: a.upscale_tolerance,
    }
}

/// Starts the API's workers: fixed, or following an autoscaler task.
pub(crate) fn spawn_workers(
    api: &ApiSpec,
    name: ApiName,
    handler: Arc<dyn WorkloadHandler>,
    capacity: usize,
    shared: &Shared,
) -> WorkerPool {
    let options = WorkerOptions {
        workers: capacity,
        lease: shared.options.lease,
        renew_every: shared.options.lease / 4,
        poll_interval: shared.options.poll_interval,
        prefetch: shared.options.prefetch,
        crash_isolation: shared.crash_isolation.clone(),
        ..WorkerOptions::default()
    };
    if shared.options.workers.is_some() {
        let _ = shared.metrics.gauge_set(
            "soma_async_worker_slots",
            "Worker slots the autoscaler allows.",
            &[("api_name", name.as_str())],
            capacity as f64,
        );
        return WorkerPool::spawn(
            name,
            shared.backend.clone(),
            handler,
            options,
            shared.metrics.clone(),
            shared.wake.clone(),
            shared.stop.clone(),
        );
    }
    let autoscaler = Autoscaler::new(params(api, capacity), std::time::Instant::now());
    let (slots, active) = watch::channel(autoscaler.current() as usize);
    let timing = AutoscalerTiming {
        decide_every: shared.options.autoscale_every,
        sample_every: (shared.options.autoscale_every / 10)
            .max(std::time::Duration::from_millis(100)),
    };
    tokio::spawn(run_autoscaler(
        name.clone(),
        shared.backend.clone(),
        autoscaler,
        timing,
        slots,
        shared.metrics.clone(),
        shared.stop.clone(),
    ));
    WorkerPool::spawn_scaled(
        name,
        shared.backend.clone(),
        handler,
        options,
        shared.metrics.clone(),
        shared.wake.clone(),
        active,
        shared.stop.clone(),
    )
}
