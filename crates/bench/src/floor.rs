//! `soma-bench async-floor <cortex.yaml> <payload.json> [calls]`: the same handler called in
//! a loop in-process (models loaded, `Handler` constructed, no gateway, no queue): the floor
//! for the end-to-end numbers.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use soma_models::ModelOptions;
use soma_python::{HandlerHost, HandlerSpec, init_python};

use crate::asyncload::{ms, percentiles};

pub(crate) async fn run(config: &Path, payload: &[u8], calls: usize) -> anyhow::Result<()> {
    let config = soma_config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let api = config.apis.first().context("no API")?;
    let options = ModelOptions {
        tensorflow_lib: None,
        cache_dir: std::env::temp_dir().join("soma-bench-cache"),
        metrics: None,
        warmup: None,
    };
    let models = match api.handler.models {
        Some(_) => Some(soma_models::load_api(api, &options).await?),
        None => None,
    };
    init_python(None)?;
    let host = HandlerHost::start(HandlerSpec {
        api: api.name.clone(),
        project_dir: config.project_dir.clone(),
        handler_path: api.handler.path.clone(),
        python_path: api.handler.python_path.clone(),
        env: api.handler.env.clone(),
        config: api.handler.config.clone(),
        models: models.map(|m| Arc::clone(&m)),
        metrics: soma_metrics::Registry::new(),
        workers: 1,
    })
    .await?;
    let body = Bytes::copy_from_slice(payload);
    for _ in 0..calls / 10 {
        host.handle(body.clone(), "application/json", "warm-up")
            .await?;
    }
    let started = Instant::now();
    let mut latencies: Vec<Duration> = Vec::with_capacity(calls);
    for _ in 0..calls {
        let call = Instant::now();
        host.handle(body.clone(), "application/json", "bench")
            .await?;
        latencies.push(call.elapsed());
    }
    let total = started.elapsed();
    let (p50, p99) = percentiles(latencies);
    println!(
        "floor (handler in a loop in-process, {calls} calls): {:.0} calls/s, p50 {:.3} ms, p99 {:.3} ms",
        calls as f64 / total.as_secs_f64(),
        ms(p50),
        ms(p99)
    );
    Ok(())
}
