//! Worker slots that follow the queue, with Cortex's autoscaling algorithm and parameters
//! (reference `cortex-asyncapi.md` §1.4, v0.35 `pkg/operator/lib/autoscaler`), applied to the
//! worker slots of one process instead of Kubernetes replicas.
//!
//! [`Autoscaler`] is the pure part: it is fed samples of the queue length (queued +
//! in-flight, as Cortex's `cortex_async_queue_length`) and asked for a decision, each time
//! with the current instant, so tests drive it with a fake clock. [`run_autoscaler`] is the
//! driver: it samples the backend, decides every 10 s (Cortex's period) and publishes the
//! slot count the [`WorkerPool`](crate::WorkerPool) follows.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use soma_jobs::{ApiName, Backend};
use soma_metrics::Registry;
use tokio::sync::watch;
use tracing::{info, warn};

/// Cortex's `autoscaling` fields that drive the decision (same names and meaning).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoscalerParams {
    /// 0 allows scaling to zero (Cortex ≥ v0.36 for async APIs).
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub init_replicas: u32,
    /// Queue length one slot is expected to handle (1 for async APIs).
    pub target_replica_concurrency: f64,
    /// Samples averaged for each decision.
    pub window: Duration,
    /// A lower count is applied only if every recommendation in this period was that low.
    pub downscale_stabilization_period: Duration,
    /// A higher count is applied only if every recommendation in this period was that high.
    pub upscale_stabilization_period: Duration,
    pub max_downscale_factor: f64,
    pub max_upscale_factor: f64,
    pub downscale_tolerance: f64,
    pub upscale_tolerance: f64,
}

/// The decision state of one API. Pure: time comes in as arguments.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    params: AutoscalerParams,
    started: Instant,
    current: u32,
    /// (when, queue length) within the last `window`.
    samples: VecDeque<(Instant, f64)>,
    /// (when, recommendation) within the longest stabilisation period.
    recommendations: VecDeque<(Instant, u32)>,
}

impl Autoscaler {
    /// Starts at `init_replicas` (clamped to the min..=max range).
    pub fn new(params: AutoscalerParams, now: Instant) -> Autoscaler {
        let current = params.init_replicas.clamp(
            params.min_replicas,
            params.max_replicas.max(params.min_replicas),
        );
        Autoscaler {
            params,
            started: now,
            current,
            samples: VecDeque::new(),
            recommendations: VecDeque::new(),
        }
    }

    /// The slot count currently applied.
    pub fn current(&self) -> u32 {
        self.current
    }

    /// Records one observation of the queue length (queued + in flight).
    pub fn observe(&mut self, now: Instant, queue_length: f64) {
        self.samples.push_back((now, queue_length));
        let window = self.params.window;
        while let Some((t, _)) = self.samples.front() {
            if now.saturating_duration_since(*t) > window {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// Cortex's decision: the new slot count (also kept as [`current`](Self::current)). With
    /// no sample in the window, nothing changes.
    pub fn decide(&mut self, now: Instant) -> u32 {
        let window = self.params.window;
        let in_window: Vec<f64> = self
            .samples
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= window)
            .map(|(_, v)| *v)
            .collect();
        if in_window.is_empty() {
            return self.current;
        }
        let average = in_window.iter().sum::<f64>() / in_window.len() as f64;
        let recommendation = self.recommend(average);
        self.recommendations.push_back((now, recommendation));
        let keep = self
            .params
            .downscale_stabilization_period
            .max(self.params.upscale_stabilization_period);
        while let Some((t, _)) = self.recommendations.front() {
            if now.saturating_duration_since(*t) > keep {
                self.recommendations.pop_front();
            } else {
                break;
            }
        }

        // Stabilisation limits moves in its own direction only: a high floor never raises
        // the count and a low ceiling never lowers it.
        let mut request = recommendation;
        let current = self.current;
        let p = &self.params;
        if request < current {
            if now.saturating_duration_since(self.started) < p.downscale_stabilization_period {
                // No downscale before a full period of history exists.
                request = current;
            } else if let Some(floor) = self.max_since(now, p.downscale_stabilization_period) {
                request = request.max(floor.min(current));
            }
        }
        if request > current
            && let Some(ceiling) = self.min_since(now, p.upscale_stabilization_period)
        {
            request = request.min(ceiling.max(current));
        }
        self.current = request;
        request
    }

    /// The recommendation before stabilisation: target, tolerance band, step limits, range.
    fn recommend(&self, average: f64) -> u32 {
        let p = &self.params;
        let current = f64::from(self.current);
        let raw = average / p.target_replica_concurrency;
        let mut recommendation = raw.ceil();
        if raw < current && raw > current * (1.0 - p.downscale_tolerance) {
            recommendation = current;
        }
        if raw > current && raw < current * (1.0 + p.upscale_tolerance) {
            recommendation = current;
        }
        // A step of one is always allowed, larger steps are limited by the factors.
        let lowest = (current - 1.0).min((current * p.max_downscale_factor).ceil());
        let highest = (current + 1.0).max((current * p.max_upscale_factor).ceil());
        recommendation = recommendation.clamp(lowest.max(0.0), highest);
        let min = f64::from(p.min_replicas);
        let max = f64::from(p.max_replicas.max(p.min_replicas));
        // In range, so the conversion is exact.
        recommendation.clamp(min, max) as u32
    }

    fn max_since(&self, now: Instant, period: Duration) -> Option<u32> {
        self.recommendations
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= period)
            .map(|(_, r)| *r)
            .max()
    }

    fn min_since(&self, now: Instant, period: Duration) -> Option<u32> {
        self.recommendations
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= period)
            .map(|(_, r)| *r)
            .min()
    }
}

/// How often [`run_autoscaler`] samples and decides.
#[derive(Debug, Clone, Copy)]
pub struct AutoscalerTiming {
    pub sample_every: Duration,
    /// Cortex decided every 10 s.
    pub decide_every: Duration,
}

impl Default for AutoscalerTiming {
    fn default() -> AutoscalerTiming {
        AutoscalerTiming {
            sample_every: Duration::from_secs(1),
            decide_every: Duration::from_secs(10),
        }
    }
}

/// Samples the queue of `api`, decides on the slot count and publishes it on `slots` until
/// `shutdown` turns true. Also publishes the queue gauges on `metrics` (a worker process has
/// no gateway routes that would). Storage errors skip a sample.
pub async fn run_autoscaler(
    api: ApiName,
    backend: Backend,
    mut autoscaler: Autoscaler,
    timing: AutoscalerTiming,
    slots: watch::Sender<usize>,
    metrics: Registry,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut samples = tokio::time::interval(timing.sample_every);
    samples.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_decision = Instant::now();
    let labels = [("api_name", api.as_str())];
    while !*shutdown.borrow() {
        tokio::select! {
            _ = samples.tick() => {}
            _ = shutdown.changed() => continue,
        }
        match backend.queue.stats(&api).await {
            Ok(stats) => {
                autoscaler.observe(Instant::now(), (stats.queued + stats.in_flight) as f64);
                for (name, help, value) in stats.gauges() {
                    let _ = metrics.gauge_set(name, help, &labels, value);
                }
            }
            Err(error) => warn!(%api, %error, "autoscaler cannot read the queue length"),
        }
        if last_decision.elapsed() >= timing.decide_every {
            last_decision = Instant::now();
            let before = autoscaler.current();
            let after = autoscaler.decide(last_decision);
            if after != before {
                info!(%api, from = before, to = after, "autoscaling worker slots");
            }
            slots.send_replace(after as usize);
            let _ = metrics.gauge_set(
                "soma_async_worker_slots",
                "Worker slots the autoscaler allows.",
                &labels,
                f64::from(after),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> AutoscalerParams {
        // Cortex's defaults, with min_replicas 0 (scale to zero).
        AutoscalerParams {
            min_replicas: 0,
            max_replicas: 8,
            init_replicas: 1,
            target_replica_concurrency: 1.0,
            window: Duration::from_secs(60),
            downscale_stabilization_period: Duration::from_secs(300),
            upscale_stabilization_period: Duration::from_secs(60),
            max_downscale_factor: 0.75,
            max_upscale_factor: 1.5,
            downscale_tolerance: 0.05,
            upscale_tolerance: 0.05,
        }
    }

    /// A fake clock: `t(s)` is `s` seconds after the start.
    struct Clock(Instant);
    impl Clock {
        fn t(&self, secs: u64) -> Instant {
            self.0 + Duration::from_secs(secs)
        }
    }

    /// Feeds `queue` every second and decides every 10 s from `from` to `to` (seconds).
    fn run(a: &mut Autoscaler, clock: &Clock, from: u64, to: u64, queue: f64) -> Vec<u32> {
        let mut decisions = Vec::new();
        for s in from..to {
            a.observe(clock.t(s), queue);
            if s % 10 == 9 {
                decisions.push(a.decide(clock.t(s)));
            }
        }
        decisions
    }

    #[test]
    fn no_samples_no_change() {
        let clock = Clock(Instant::now());
        let mut a = Autoscaler::new(params(), clock.t(0));
        assert_eq!(a.decide(clock.t(100)), 1);
    }

    #[test]
    fn scales_up_under_backlog_within_step_limits_and_max() {
        let clock = Clock(Instant::now());
        let mut p = params();
        p.upscale_stabilization_period = Duration::ZERO;
        let mut a = Autoscaler::new(p, clock.t(0));
        // ×1.5 per decision (rounded up, at least +1), capped at max_replicas 8.
        let decisions = run(&mut a, &clock, 0, 60, 100.0);
        assert_eq!(decisions, vec![2, 3, 5, 8, 8, 8]);
    }

    #[test]
    fn upscale_waits_for_the_stabilisation_period() {
        let clock = Clock(Instant::now());
        let mut a = Autoscaler::new(params(), clock.t(0));
        // Cortex's 60 s upscale period: a count is applied only once every recommendation
        // of the last 60 s was at least that high, so each step up takes a minute.
        let decisions = run(&mut a, &clock, 0, 200, 100.0);
        assert_eq!(decisions[..7], [2, 2, 2, 2, 2, 2, 2], "{decisions:?}");
        assert_eq!(decisions[7], 3, "{decisions:?}");
        assert_eq!(*decisions.last().unwrap(), 5, "{decisions:?}");
    }

    #[test]
    fn scales_down_only_after_the_downscale_period_then_to_zero_and_back() {
        let clock = Clock(Instant::now());
        let mut p = params();
        p.upscale_stabilization_period = Duration::ZERO;
        p.downscale_stabilization_period = Duration::from_secs(30);
        p.window = Duration::from_secs(10);
        let mut a = Autoscaler::new(p, clock.t(0));
        run(&mut a, &clock, 0, 60, 100.0);
        assert_eq!(a.current(), 8);
        // The queue drains at t=60 s: the 10 s window still averages the backlog at t=69,
        // the first low recommendation comes at t=79, and the count stays until 30 s of
        // recommendations were all lower.
        let decisions = run(&mut a, &clock, 60, 110, 0.0);
        assert_eq!(decisions, vec![8, 8, 8, 8, 6], "{decisions:?}");
        let decisions = run(&mut a, &clock, 110, 600, 0.0);
        // Steps down of at most ×0.75 (or 1), each after its own stabilisation period.
        let mut steps = vec![6];
        steps.extend(decisions.iter().copied());
        steps.dedup();
        assert_eq!(steps, vec![6, 5, 4, 3, 2, 1, 0], "{decisions:?}");
        assert_eq!(a.current(), 0, "scaled to zero");
        // Work arrives: back from zero at the next decision.
        let decisions = run(&mut a, &clock, 600, 630, 3.0);
        assert_eq!(decisions, vec![1, 2, 3], "{decisions:?}");
    }

    #[test]
    fn tolerance_band_keeps_the_count() {
        let clock = Clock(Instant::now());
        let mut p = params();
        p.init_replicas = 4;
        p.upscale_stabilization_period = Duration::ZERO;
        let mut a = Autoscaler::new(p, clock.t(0));
        // 4.1 queued for 4 slots is within 5 %: no change.
        assert!(run(&mut a, &clock, 0, 60, 4.1).iter().all(|d| *d == 4));
        assert_eq!(run(&mut a, &clock, 60, 70, 5.0), vec![5]);
    }
}
