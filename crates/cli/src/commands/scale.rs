//! `soma gateway` and `soma worker`: the two halves of `soma serve` as separate processes
//! sharing a Redis + S3 backend, and the backend choice all three commands share.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use soma_jobs::{Backend, RemoteSettings};
use soma_server::Role;

use super::serve;
use crate::GlobalArgs;

/// Where the queue, states and payloads live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BackendKind {
    /// One redb file in the data directory; one process only (`soma serve`).
    Embedded,
    /// Redis (queue and states) + S3 (payloads), shared by any number of processes.
    Redis,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BackendArgs {
    /// Storage backend. `redis` reads SOMA_REDIS_URL, SOMA_S3_URL, ... (or the `jobs`
    /// section of --settings).
    #[arg(long, env = "SOMA_BACKEND", default_value = "embedded")]
    pub(crate) backend: BackendKind,

    /// YAML file whose `jobs` section configures the Redis + S3 backend (redis_url,
    /// redis_key_prefix, s3_url, s3_endpoint, s3_region, inline_payload_bytes); SOMA_* variables
    /// override it.
    #[arg(long, env = "SOMA_SETTINGS", value_name = "FILE")]
    pub(crate) settings: Option<PathBuf>,
}

#[derive(Debug, serde::Deserialize)]
struct SettingsFile {
    #[serde(default)]
    jobs: RemoteSettings,
}

impl BackendArgs {
    /// Connects to Redis + S3, failing fast with the reason when either is unreachable.
    pub(crate) async fn connect_remote(&self) -> anyhow::Result<Backend> {
        let file = match &self.settings {
            Some(path) => read_settings(path)?,
            None => RemoteSettings::default(),
        };
        let config = file
            .with_env(|var| std::env::var(var).ok())
            .resolve()
            .context("the redis backend is not configured")?;
        tracing::info!(redis = %config.redis_url, bucket = %config.bucket, prefix = %config.s3_prefix, "connecting to the Redis + S3 backend");
        soma_jobs::connect_remote(&config).await.map_err(|e| {
            // The question only helps when a server did not answer, not when one answered
            // that it cannot serve (e.g. a Redis Cluster node).
            let hint = match e.kind() {
                soma_core::ErrorKind::Unavailable => {
                    "; is Redis running and does the bucket exist?"
                }
                _ => "",
            };
            anyhow::Error::new(e).context(format!(
                "cannot use the Redis + S3 backend (Redis {}, bucket s3://{}){hint}",
                config.redis_url, config.bucket
            ))
        })
    }
}

fn read_settings(path: &Path) -> anyhow::Result<RemoteSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the settings file {}", path.display()))?;
    let file: SettingsFile = serde_yaml::from_str(&text)
        .with_context(|| format!("invalid settings file {}", path.display()))?;
    Ok(file.jobs)
}

/// Runs `role` on the Redis + S3 backend (the embedded one cannot be shared).
pub(crate) async fn run(
    args: serve::Args,
    global: &GlobalArgs,
    role: Role,
) -> anyhow::Result<ExitCode> {
    let command = match role {
        Role::Gateway => "soma gateway",
        _ => "soma worker",
    };
    if args.backend.backend == BackendKind::Embedded {
        bail!(
            "{command} needs --backend redis (or SOMA_BACKEND=redis): the embedded backend is \
             a database file that only one process can open, so separate gateway and worker \
             processes could not share it; use `soma serve` for a single process"
        );
    }
    if role == Role::Gateway {
        for flag in args.worker_settings_given() {
            // Warned, not refused: deployments often share one environment file between
            // gateways and workers.
            tracing::warn!(
                setting = flag,
                "soma gateway ignores this setting (or its SOMA_ variable): only workers \
                 load models, run handlers and serve TF Serving's APIs"
            );
        }
    }
    let config = super::load_config(&args.config)?;
    let backend = args.backend.connect_remote().await?;
    let options = serve::options(&args, &config, global)?;
    soma_server::serve_with(config, options, backend, role, serve::shutdown_signal())
        .await
        .context(command)?;
    Ok(ExitCode::SUCCESS)
}
