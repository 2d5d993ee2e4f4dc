//! An API's models through the shared [`ModelManager`]: the same live versions for the
//! Python handlers' `tensorflow_client` (the API's [`ModelSet`], kept in step) and for the
//! TF Serving REST paths.

use std::sync::Arc;
use std::time::Duration;

use soma_config::ApiSpec;
use soma_runtime::hub::{BoxFuture, ModelConfig, VersionSelector, VersionStatus};
use soma_runtime::{ModelHub, ModelSet, RuntimeError, Servable, ServableState, VersionPolicy};
use soma_serving::{ManagedModel, ModelManager};

/// The TF Serving name of an API's model: the API's name for `models.path`, else
/// `<api>.<model>` (a `.` cannot occur in API names, so names never collide).
pub(crate) fn hub_name(api: &str, model: &str, single: bool) -> String {
    if single {
        api.to_string()
    } else {
        format!("{api}.{model}")
    }
}

/// Registers every model of `api` with the manager (every version folder served, as
/// Cortex did) and returns the API's model set once every model has a version that serves.
///
/// Versions that fail to load are reported (in the log and the model status) and do not
/// stop the API, as while it runs: a restart of a server that served must not take it down
/// for an old broken folder. A model none of whose versions loads, or whose base path is
/// missing, empty or unreachable, holds the API back (`waiting` is told why) until one
/// loads; its folder is still polled, so a fixed or new version, or storage back up, is
/// picked up without a restart. A model that could not be registered at all (a base path
/// that does not parse) fails the API: its models are removed again and the error says why.
///
/// A `models.dir` whose listing fails (the directory not there yet, storage unreachable)
/// holds the API back the same way, listed again every `interval`, instead of failing it
/// until a restart. Its invalid model folders are left out with a warning while the others
/// serve (as Cortex's runtime skipped them); one with none valid waits the same way.
pub(crate) async fn load(
    api: &ApiSpec,
    manager: &ModelManager,
    interval: Duration,
    waiting: impl Fn(String),
) -> Result<Arc<ModelSet>, String> {
    let listed = api
        .handler
        .models
        .as_ref()
        .is_some_and(|m| matches!(m.source, soma_config::ModelSource::Dir(_)));
    let mut told = None;
    let (entries, single) = loop {
        match soma_models::serving_entries(api).await {
            Ok(found) => {
                for error in &found.broken {
                    tracing::warn!(api = %api.name, %error, "model folder left out of models.dir");
                }
                break (found.entries, found.single);
            }
            Err(e) if listed => {
                let message = format!("{e}; listing models.dir again");
                if told.as_ref() != Some(&message) {
                    tracing::error!(api = %api.name, error = %message, "API not ready");
                    waiting(message.clone());
                    told = Some(message);
                }
                tokio::time::sleep(interval).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let set = Arc::new(ModelSet::new(&api.name, single));
    let models = managed(api, entries, &set, single);
    let names: Vec<String> = models.iter().map(|m| m.config.name.clone()).collect();
    let Err(error) = manager.add(models).await else {
        return Ok(set);
    };
    let mut told = false;
    loop {
        let mut unserved = Vec::new();
        for name in &names {
            match manager.status(name, None) {
                Ok(versions) if versions.iter().any(|v| v.state == ServableState::Available) => {}
                Ok(_) => unserved.push(name.as_str()),
                // No version yet: its base path is watched until one appears.
                Err(_) if manager.watches(name).await => unserved.push(name.as_str()),
                Err(_) => {
                    manager.remove(&names).await;
                    return Err(error.to_string());
                }
            }
        }
        if unserved.is_empty() {
            break;
        }
        if !told {
            let message = format!(
                "{error}; waiting for a version of {} that loads",
                unserved.join(", ")
            );
            tracing::error!(api = %api.name, error = %message, "API not ready");
            waiting(message);
            told = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if told {
        // It waited: what failed at start-up has passed or been replaced.
        tracing::info!(api = %api.name, start_up_error = %error, "a version of every model serves now");
    } else {
        tracing::warn!(
            api = %api.name, %error,
            "versions failed to load; the API serves the others (the model status has the errors)"
        );
    }
    Ok(set)
}

/// Every version folder of each entry served (as Cortex did), mirrored into `set`.
fn managed(
    api: &ApiSpec,
    entries: Vec<soma_models::ModelEntry>,
    set: &Arc<ModelSet>,
    single: bool,
) -> Vec<ManagedModel> {
    entries
        .into_iter()
        .map(|entry| ManagedModel {
            config: ModelConfig {
                name: hub_name(&api.name, &entry.name, single),
                base_path: entry.location.to_string(),
                policy: VersionPolicy::All,
                labels: Default::default(),
            },
            servable_name: entry.name,
            signature_key: entry.signature_key,
            any_signature: false,
            threads: entry.threads,
            batching: entry.batching,
            mirror: Some(Arc::clone(set)),
        })
        .collect()
}

/// For an API with `models.dir`: lists the directory every `interval` and serves the model
/// folders that appear in it, as Cortex's live reloading did (for the handlers'
/// `tensorflow_client` and on the REST/gRPC paths). A listing that fails or finds a model
/// folder not yet complete (being copied) is tried again at the next poll. A model folder
/// that disappears keeps its loaded versions serving, as an emptied version folder does
/// (an S3 prefix deleted to be uploaded again must not take the model down).
pub(crate) async fn watch_dir(
    api: ApiSpec,
    manager: Arc<ModelManager>,
    set: Arc<ModelSet>,
    interval: Duration,
) {
    let mut last_error = None;
    let mut left_out = Vec::new();
    loop {
        tokio::time::sleep(interval).await;
        let entries = match soma_models::serving_entries(&api).await {
            Ok(found) => {
                // Each broken folder is said once, until its problem changes.
                let broken: Vec<String> = found.broken.iter().map(|e| e.to_string()).collect();
                for error in broken.iter().filter(|e| !left_out.contains(*e)) {
                    tracing::warn!(api = %api.name, %error, "model folder left out of models.dir");
                }
                left_out = broken;
                found.entries
            }
            Err(e) => {
                let error = e.to_string();
                if last_error.as_ref() != Some(&error) {
                    tracing::debug!(api = %api.name, %error, "models.dir listing; trying again");
                    last_error = Some(error);
                }
                continue;
            }
        };
        last_error = None;
        let served = manager.models();
        let new: Vec<_> = entries
            .into_iter()
            .filter(|e| !served.contains(&hub_name(&api.name, &e.name, false)))
            .collect();
        if new.is_empty() {
            continue;
        }
        let names: Vec<String> = new.iter().map(|e| e.name.clone()).collect();
        tracing::info!(api = %api.name, models = ?names, "new model folders in models.dir");
        if let Err(e) = manager.add(managed(&api, new, &set, false)).await {
            tracing::warn!(api = %api.name, error = %e, "loading new models of models.dir");
        }
    }
}

/// The manager as the TF Serving front ends of `soma serve` see it: the model list comes
/// from cortex.yaml, so TF Serving's `HandleReloadConfigRequest` (which replaces the whole
/// list) is refused instead of unloading the APIs' models. New versions still go live.
#[derive(Debug)]
pub(crate) struct CortexHub(pub(crate) Arc<ModelManager>);

impl ModelHub for CortexHub {
    fn models(&self) -> Vec<String> {
        self.0.models()
    }

    fn servable(
        &self,
        model: &str,
        version: &VersionSelector,
    ) -> Result<Arc<Servable>, RuntimeError> {
        self.0.servable(model, version)
    }

    fn status(
        &self,
        model: &str,
        version: Option<&VersionSelector>,
    ) -> Result<Vec<VersionStatus>, RuntimeError> {
        self.0.status(model, version)
    }

    fn reload(&self, _models: Vec<ModelConfig>) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async {
            Err(RuntimeError::Unsupported(
                "soma serve takes its models from cortex.yaml; reloading the model config \
                 is only supported by soma tfserving (new versions in the model folders go \
                 live by themselves)"
                    .to_string(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(hub_name("iris", "_cortex_default", true), "iris");
        assert_eq!(hub_name("zoo", "iris", false), "zoo.iris");
    }
}
