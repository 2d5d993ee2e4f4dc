//! `soma tfserving`: a drop-in for `tensorflow_model_server`, taking its flags as it spells
//! them (`--rest_api_port=8501 --model_name=iris --model_base_path=/models/iris`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use soma_grpc::GrpcOptions;
use soma_grpc::warmup::TfServingWarmup;
use soma_rest::RestOptions;
use soma_runtime::batching::BatchOptions;
use soma_runtime::{ConcurrencyLimit, ModelHub, RecordedWarmup};
use soma_serving::{ManagerOptions, ModelManager, parse_batching_parameters};

use crate::GlobalArgs;

mod args;
mod files;
mod settings;

pub(crate) use args::{Args, explain_unsupported_flag};
use files::{read_config_file, read_flag_file};
use settings::{Batching, Settings};

/// `tensorflow_model_server --version`'s two lines, with soma as the model server.
fn print_version(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    println!("TensorFlow ModelServer: soma {}", env!("CARGO_PKG_VERSION"));
    let tf = soma_tensorflow::TensorFlow::global(global.tensorflow_lib.as_deref())?;
    println!("TensorFlow Library: {}", tf.version());
    Ok(ExitCode::SUCCESS)
}

/// Binds `path`, replacing a socket left there by an earlier run (but no other file).
fn bind_unix_socket(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        anyhow::ensure!(
            meta.file_type().is_socket(),
            "--grpc_socket_path {} exists and is not a socket",
            path.display()
        );
        std::fs::remove_file(path)
            .with_context(|| format!("cannot replace the stale socket {}", path.display()))?;
    }
    tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on {} (--grpc_socket_path)", path.display()))
}

pub(crate) async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    if args.version {
        return print_version(global);
    }
    let cwd = std::env::current_dir().context("the current directory")?;
    let settings = Settings::from_args(args, &cwd)?;
    let model_options = super::model_options(global);
    let metrics = soma_metrics::Registry::new();
    let batching = match &settings.batching {
        None => None,
        Some(Batching::Flags(None)) => Some(BatchOptions::default()),
        Some(Batching::Flags(Some(file))) => Some(read_flag_file(
            "--batching_parameters_file",
            file,
            parse_batching_parameters,
        )?),
        Some(Batching::Platform(options)) => Some(options.clone()),
    };
    let manager = Arc::new(ModelManager::new(ManagerOptions {
        tensorflow_lib: model_options.tensorflow_lib,
        poll_interval: settings.fs_poll,
        load_retries: settings.load_retries.0,
        load_retry_interval: settings.load_retries.1,
        load_limit: settings.load_limit.map(ConcurrencyLimit::new),
        threads: settings.threads,
        saved_model_tags: settings.saved_model_tags.clone(),
        session_config: settings.session_config.clone(),
        allow_labels_for_unavailable: settings.allow_labels_for_unavailable,
        metrics: Some(metrics.clone()),
        batching,
        per_model_batching: settings.per_model_batching,
        warmup: settings.warmup_iterations.map(|iterations| {
            Arc::new(TfServingWarmup {
                iterations,
                check_method_names: settings.grpc.check_signature_method_names,
            }) as Arc<dyn RecordedWarmup>
        }),
        ..ManagerOptions::new(model_options.cache_dir)
    }));
    manager
        .reload(settings.models.clone())
        .await
        .context("loading the models")?;
    tracing::info!(models = ?manager.models(), "models loaded");

    let mut servers = tokio::task::JoinSet::new();
    let mut grpc_listeners: Vec<(soma_grpc::GrpcListener, &'static str)> = Vec::new();
    if settings.grpc_port != 0 {
        // TF Serving listens on every interface.
        let addr = SocketAddr::from(([0, 0, 0, 0], settings.grpc_port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--port)"))?;
        let tls = settings.grpc.tls.is_some();
        tracing::info!(%addr, tls, "TF Serving gRPC API listening");
        grpc_listeners.push((listener.into(), "gRPC server"));
    }
    if let Some(path) = &settings.grpc_socket {
        let listener = bind_unix_socket(path)?;
        let tls = settings.grpc.tls.is_some();
        tracing::info!(path = %path.display(), tls, "TF Serving gRPC API listening on a Unix socket");
        grpc_listeners.push((listener.into(), "gRPC server on the Unix socket"));
    }
    for (listener, server) in grpc_listeners {
        let hub = Arc::clone(&manager) as Arc<dyn ModelHub>;
        let grpc = GrpcOptions {
            metrics: metrics.clone(),
            ..settings.grpc.clone()
        };
        servers.spawn(async move {
            soma_grpc::serve(hub, listener, grpc, super::serve::shutdown_signal())
                .await
                .context(server)
        });
    }
    if let (Some(file), Some(every)) = (settings.config_file.clone(), settings.config_file_poll) {
        tokio::spawn(poll_config_file(Arc::clone(&manager), file, every));
    }
    if let Some(rest_port) = settings.rest_port {
        let options = RestOptions {
            timeout: settings.rest_timeout,
            idle_timeout: settings.rest_threading.idle_timeout,
            prometheus_path: settings.prometheus_path.clone(),
            max_concurrent: settings.rest_max_concurrent.map(ConcurrencyLimit::new),
            body_limit: 256 * 1024 * 1024,
            decode_budget: Some(soma_rest::DecodeBudget::new(
                soma_rest::DEFAULT_DECODE_BUDGET,
            )),
            metrics,
            cors: settings.rest_cors,
            check_signature_method_names: settings.grpc.check_signature_method_names,
        };
        let hub = Arc::clone(&manager) as Arc<dyn ModelHub>;
        let app = soma_rest::router(Arc::clone(&hub), options.clone());
        let lane = soma_rest::predict_lane(hub, options);
        let addr = SocketAddr::from(([0, 0, 0, 0], rest_port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--rest_api_port)"))?;
        let threading = settings.rest_threading;
        tracing::info!(%addr, ?threading, "TF Serving REST API listening");
        servers.spawn(async move {
            let shutdown = super::serve::shutdown_signal();
            soma_rest::serve_on_threads(listener, app, lane, threading, shutdown)
                .await
                .context("REST server")
        });
    }
    if servers.is_empty() {
        anyhow::bail!("nothing to serve: --port and --rest_api_port are both 0");
    }
    while let Some(done) = servers.join_next().await {
        done.context("server task")??;
    }
    Ok(ExitCode::SUCCESS)
}

/// TF Serving's `--model_config_file_poll_wait_seconds`: a changed file replaces the model
/// list; a file that does not parse is reported and the running list kept. A reload that
/// failed (a base path not there yet, a label on a version still loading) is tried again
/// at every poll until it applies, as TF Serving reloads the file at every poll; its error
/// is logged again only when it changes.
async fn poll_config_file(manager: Arc<ModelManager>, file: PathBuf, every: Duration) {
    let mut last = std::fs::read_to_string(&file).ok();
    let mut failed: Option<String> = None;
    loop {
        tokio::time::sleep(every).await;
        let text = std::fs::read_to_string(&file).ok();
        if text == last && failed.is_none() {
            continue;
        }
        if text != last {
            failed = None;
        }
        last = text;
        match read_config_file(&file) {
            Ok(Some(models)) => match manager.reload(models).await {
                Ok(()) => {
                    tracing::info!(file = %file.display(), "model config reloaded");
                    failed = None;
                }
                Err(e) => {
                    let error = e.to_string();
                    if failed.as_ref() != Some(&error) {
                        tracing::warn!(%error, "model config reload; trying again at every poll");
                    }
                    failed = Some(error);
                }
            },
            // An emptied file (an editor or a config tool rewriting it in place) does not
            // unload every model: TF Serving refuses the transition too.
            Ok(None) => tracing::warn!(
                file = %file.display(),
                "the model config file has no model_config_list; the model list stays as it is"
            ),
            Err(e) => tracing::warn!(error = crate::report::one_line(&e), "model config file"),
        }
    }
}
