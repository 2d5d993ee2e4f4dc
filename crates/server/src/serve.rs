use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use soma_config::{ApiSpec, Config};
use soma_gateway::{ApiRoute, ApiState, Gateway, GatewayConfig, Readiness, router};
use soma_jobs::{ApiName, Backend, EmbeddedBackend, JobsError};
use soma_metrics::Registry;
use soma_worker::{CrashIsolation, WorkerPool};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::{error, info};

use soma_grpc::GrpcOptions;
use soma_rest::RestOptions;
use soma_runtime::ModelHub;
use soma_serving::{ManagerOptions, ModelManager};

use crate::{Role, ServeOptions, live_models, python_handler};

/// Why `soma serve` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the data directory {path}: {source}{}", lock_hint(source))]
    Storage { path: PathBuf, source: JobsError },
    #[error("API '{api}': {source}")]
    ApiName { api: String, source: JobsError },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// What every API's start-up task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    project_dir: PathBuf,
    pub(crate) options: ServeOptions,
    pub(crate) backend: Backend,
    pub(crate) metrics: Registry,
    readiness: Readiness,
    pub(crate) wake: Arc<Notify>,
    pub(crate) stop: watch::Receiver<bool>,
    models: Arc<ModelManager>,
    /// One for all APIs: a redelivered workload runs with nothing else held in the process.
    pub(crate) crash_isolation: CrashIsolation,
}

/// Runs every API of `config` until `shutdown` resolves, then stops accepting requests, lets
/// running workloads finish within the grace period and leaves the rest queued.
pub async fn serve(
    config: Config,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let backend = EmbeddedBackend::open(&options.data_dir)
        .await
        .map_err(|source| ServeError::Storage {
            path: options.data_dir.clone(),
            source,
        })?;
    serve_with(config, options, backend, Role::Both, shutdown).await
}

/// Like [`serve`] on an already opened `backend`, in one [`Role`]: the gateway role mounts
/// the API routes and never starts Python or TensorFlow; the worker role runs the handlers
/// and serves only `/healthz`, `/readyz` and `/metrics`.
pub async fn serve_with(
    config: Config,
    options: ServeOptions,
    backend: Backend,
    role: Role,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let all_routes = config
        .apis
        .iter()
        .map(|api| {
            let name = ApiName::parse(&api.name).map_err(|source| ServeError::ApiName {
                api: api.name.clone(),
                source,
            })?;
            Ok(ApiRoute {
                api: name,
                endpoint: api.networking.endpoint.clone(),
            })
        })
        .collect::<Result<Vec<_>, ServeError>>()?;
    let routes = if role.runs_gateway() {
        all_routes
    } else {
        Vec::new()
    };
    let readiness = Readiness::new();
    for api in &config.apis {
        for note in ignored_by_soma(api, &config.project_dir) {
            tracing::warn!(api = %api.name, "{note}");
        }
        // A gateway alone is ready at once: it only stores and reads workloads.
        let state = if role.runs_workers() {
            ApiState::Starting
        } else {
            ApiState::Ready
        };
        readiness.set(&api.name, state);
    }
    let (stop_tx, stop) = watch::channel(false);
    let metrics = Registry::new();
    let models = Arc::new(ModelManager::new(ManagerOptions {
        tensorflow_lib: options.models.tensorflow_lib.clone(),
        poll_interval: options.model_poll_interval,
        metrics: Some(metrics.clone()),
        // Cortex served models with TF Serving, which replays recorded warm-up requests.
        warmup: Some(Arc::new(soma_grpc::warmup::TfServingWarmup::default())),
        ..ManagerOptions::new(options.models.cache_dir.clone())
    }));
    let hub: Arc<dyn ModelHub> = Arc::new(live_models::CortexHub(Arc::clone(&models)));
    let rest = soma_rest::routes(
        Arc::clone(&hub),
        RestOptions {
            body_limit: options.body_limit,
            metrics: metrics.clone(),
            ..RestOptions::default()
        },
    );
    let shared = Arc::new(Shared {
        project_dir: config.project_dir.clone(),
        options: options.clone(),
        backend: backend.clone(),
        metrics,
        readiness: readiness.clone(),
        wake: Arc::new(Notify::new()),
        stop,
        models,
        crash_isolation: CrashIsolation::default(),
    });
    let gateway = Arc::new(Gateway {
        config: GatewayConfig {
            routes: routes.clone(),
            body_limit: options.body_limit,
        },
        backend: backend.clone(),
        readiness,
        metrics: shared.metrics.clone(),
        work_available: shared.wake.clone(),
    });

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: options.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Http)?;
    for route in &routes {
        println!(
            "soma: API {} -> POST http://{addr}{} , GET http://{addr}{}/<id>",
            route.api, route.endpoint, route.endpoint
        );
    }
    println!(
        "soma: health http://{addr}/healthz , readiness http://{addr}/readyz , metrics http://{addr}/metrics"
    );
    // The models live where the workers run; a gateway alone has none to serve.
    let rest = if role.runs_workers() {
        println!("soma: TF Serving REST API http://{addr}/v1/models/<api>[.<model>]");
        rest
    } else {
        axum::Router::new()
    };
    if let Some(grpc_addr) = options.grpc_listen.filter(|_| role.runs_workers()) {
        let grpc = tokio::net::TcpListener::bind(grpc_addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: grpc_addr,
                source,
            })?;
        println!(
            "soma: TF Serving gRPC API {}",
            grpc.local_addr().map_err(ServeError::Http)?
        );
        let stop = shared.stop.clone();
        let grpc_options = GrpcOptions {
            max_message_bytes: options.grpc_max_message_bytes,
            max_request_bytes_in_flight: soma_grpc::DEFAULT_REQUEST_BYTES_IN_FLIGHT,
            metrics: shared.metrics.clone(),
            keepalive_interval: options.grpc_keepalive_interval,
            keepalive_timeout: None,
            max_connection_age: options.grpc_max_connection_age,
            max_connection_age_grace: options.grpc_max_connection_age_grace,
            stalled_send_timeout: Some(soma_grpc::DEFAULT_STALLED_SEND_TIMEOUT),
            max_concurrent: None,
            // The port opens while the APIs' models may still load.
            health: Some(soma_grpc::HealthReport::WhenModelsAvailable),
            // TF Serving's default: TensorFlow 2 classifiers and regressors work.
            check_signature_method_names: false,
            tls: options.grpc_tls.clone(),
            // Threads of its own, as `soma tfserving`'s; no busy polling: the workers need
            // the cores.
            threading: soma_grpc::Threading::per_core(Duration::ZERO),
        };
        tokio::spawn(async move {
            let serving = soma_grpc::serve(hub, grpc, grpc_options, wait_for_stop(stop));
            if let Err(error) = serving.await {
                tracing::error!(%error, "the gRPC server stopped");
            }
        });
    }

    let mut starting = JoinSet::new();
    if role.runs_workers() {
        for api in config.apis {
            starting.spawn(start_api(api, shared.clone()));
        }
    }
    let retention_stop = shared.stop.clone();
    tokio::spawn(soma_jobs::run_retention(
        backend,
        options.retention,
        Duration::from_secs(600).min(options.retention),
        async move { wait_for_stop(retention_stop).await },
    ));

    // On this runtime, with hyper; connections that send nothing for a while are closed
    // (see `soma_rest::Threading::idle_timeout`).
    let threading = soma_rest::Threading {
        threads: 0,
        busy_poll: Duration::ZERO,
        idle_timeout: Some(soma_rest::Threading::DEFAULT_IDLE_TIMEOUT),
    };
    let shutdown = async move {
        shutdown.await;
        info!("shutting down: no new requests; running workloads get the grace period");
        let _ = stop_tx.send(true);
    };
    let app = router(gateway).merge(rest);
    let http =
        soma_rest::serve_on_threads(listener, app, soma_rest::NoQuickLane, threading, shutdown);
    let served = http.await.map_err(ServeError::Http);

    let mut pools = Vec::new();
    while let Some(started) = starting.join_next().await {
        if let Ok(Some(pool)) = started {
            pools.push(pool);
        }
    }
    let grace = options.grace;
    futures_join(pools.into_iter().map(|pool| pool.drain(grace))).await;
    info!("stopped");
    served
}

/// Loads the API's models, starts its handler, then its workers. A failure leaves the API
/// not ready (visible on `/readyz` and in the log); its workloads stay queued.
async fn start_api(api: ApiSpec, shared: Arc<Shared>) -> Option<WorkerPool> {
    let name = api.name.clone();
    let workers = crate::scaling::capacity(&api, &shared.options);
    let started = async {
        let models = match api.handler.models {
            // Inferentia APIs: load_api explains why they cannot run here.
            Some(_) if api.compute.inf > 0 => Some(
                soma_models::load_api(&api, &shared.options.models)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            Some(ref models) => {
                let waiting = |message| shared.readiness.set(&api.name, ApiState::Failed(message));
                let interval = shared.options.model_poll_interval;
                let set = live_models::load(&api, &shared.models, interval, waiting).await?;
                if matches!(models.source, soma_config::ModelSource::Dir(_)) {
                    tokio::spawn(live_models::watch_dir(
                        api.clone(),
                        Arc::clone(&shared.models),
                        Arc::clone(&set),
                        shared.options.model_poll_interval,
                    ));
                }
                Some(set)
            }
            None => None,
        };
        python_handler::start(
            &api,
            &shared.project_dir,
            models,
            workers,
            shared.options.python_env.as_deref(),
            shared.metrics.clone(),
        )
        .await
    };
    let stop = shared.stop.clone();
    let handler = tokio::select! {
        handler = started => handler,
        () = wait_for_stop(stop) => return None,
    };
    match handler {
        Ok(handler) => {
            info!(api = %name, workers, "API ready");
            shared.readiness.set(&name, ApiState::Ready);
            let api_name = ApiName::parse(&name).ok()?;
            Some(crate::scaling::spawn_workers(
                &api, api_name, handler, workers, &shared,
            ))
        }
        Err(message) => {
            error!(api = %name, error = %message, "API failed to start; it stays not ready");
            shared.readiness.set(&name, ApiState::Failed(message));
            None
        }
    }
}

async fn wait_for_stop(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

async fn futures_join(futures: impl Iterator<Item = impl Future<Output = ()> + Send + 'static>) {
    let mut set = JoinSet::new();
    for future in futures {
        set.spawn(future);
    }
    while set.join_next().await.is_some() {}
}

/// The embedded store's file is locked by one process at a time.
fn lock_hint(error: &JobsError) -> &'static str {
    match error.to_string().contains("Database already open") {
        true => " (is another soma serve using this data directory? give each its own --data-dir)",
        false => "",
    }
}

/// What a Cortex deployment of `api` did that soma does not, said at start-up (README,
/// "Where a handler sees a difference from Cortex").
fn ignored_by_soma(api: &ApiSpec, project_dir: &std::path::Path) -> Vec<String> {
    let handler = &api.handler;
    let mut notes = Vec::new();
    let deps = &handler.dependencies;
    for (file, what) in [
        (&deps.pip, "pip requirements"),
        (&deps.conda, "conda packages"),
        (&deps.shell, "a dependencies script"),
    ] {
        if project_dir.join(file).is_file() {
            notes.push(format!(
                "{file} ({what}) is not installed or run by soma: install what it needs into \
                 the Python environment soma uses (--python-env)"
            ));
        }
    }
    if project_dir.join(".env").is_file() {
        notes.push(
            ".env is not read by soma: put the variables in handler.env or soma's environment"
                .to_string(),
        );
    }
    if let Some(image) = &handler.image {
        notes.push(format!(
            "handler.image {image} is ignored: handlers run in soma's own Python"
        ));
    }
    if api.compute.gpu > 0 {
        notes.push("compute.gpu is ignored: soma runs TensorFlow on the CPU".to_string());
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cortex's dependency files, `.env`, `handler.image` and `compute.gpu` are named at
    /// start-up; an API with none of them gets no note.
    #[test]
    fn what_soma_ignores_is_said() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("handler.py"), "class Handler: pass\n").unwrap();
        let yaml =
            "- name: a\n  kind: AsyncAPI\n  handler:\n    type: python\n    path: handler.py\n";
        let config = soma_config::parse(yaml, &dir.path().join("cortex.yaml")).unwrap();
        assert!(ignored_by_soma(&config.apis[0], dir.path()).is_empty());

        for file in ["requirements.txt", "dependencies.sh", ".env"] {
            std::fs::write(dir.path().join(file), "").unwrap();
        }
        let yaml = format!("{yaml}    image: my/image:1\n  compute:\n    gpu: 1\n");
        let config = soma_config::parse(&yaml, &dir.path().join("cortex.yaml")).unwrap();
        let notes = ignored_by_soma(&config.apis[0], dir.path());
        let starts: Vec<&str> = notes.iter().map(|n| n.split(' ').next().unwrap()).collect();
        assert_eq!(
            starts,
            [
                "requirements.txt",
                "dependencies.sh",
                ".env",
                "handler.image",
                "compute.gpu"
            ],
            "{notes:?}"
        );
    }
}
