//! [`ModelManager`]: owns the model tasks and answers the front ends' [`ModelHub`] calls.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use soma_core::ModelLocation;
use soma_repository::ModelCache;
use soma_runtime::hub::{BoxFuture, ModelConfig, servable_not_found};
use soma_runtime::{
    ModelHub, RuntimeError, Servable, ServableState, VersionSelector, VersionStatus,
};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::model_task::{Command, ModelTask, Models};
use crate::state::ModelState;
use crate::{ManagedModel, ManagerOptions};

/// The live set of models (see the crate docs).
#[derive(Debug)]
pub struct ModelManager {
    options: Arc<ManagerOptions>,
    models: Models,
    cache: Arc<ModelCache>,
    /// The running model tasks; the lock also serialises reloads.
    tasks: Mutex<BTreeMap<String, Running>>,
    /// The last state of models taken out of the list, every version `END`: as in TF
    /// Serving, their status still answers (until a model of that name is served again).
    retired: std::sync::Mutex<BTreeMap<String, ModelState>>,
}

#[derive(Debug)]
struct Running {
    spec: ManagedModel,
    commands: mpsc::Sender<Command>,
}

impl ModelManager {
    pub fn new(options: ManagerOptions) -> ModelManager {
        let cache = ModelCache::with_settings(options.cache_dir.clone(), options.s3.clone());
        ModelManager {
            options: Arc::new(options),
            models: Arc::default(),
            cache: Arc::new(cache),
            tasks: Mutex::new(BTreeMap::new()),
            retired: std::sync::Mutex::default(),
        }
    }

    /// Replaces the model list: models not in `models` are unloaded, new ones are loaded
    /// (resolves once their first versions are AVAILABLE or failed), and models whose
    /// loading settings stayed the same get their new policy, labels and base path from their
    /// task, which keeps serving while it loads (a moved model's new versions are loaded
    /// before its old ones are unloaded).
    ///
    /// A list that cannot be applied as a whole changes nothing, as TF Serving's
    /// `ReloadConfig` checks labels before it loads or unloads a model: a name given twice,
    /// a base path that does not parse, a label on a version not available now (on a reload;
    /// the first list's labels are checked once its versions have loaded), or a new model
    /// whose base path has no versions or cannot be listed (those started for it are stopped
    /// again; storage that cannot be reached is UNAVAILABLE, not NOT_FOUND). Past that,
    /// the error lists every version that failed to load; the rest is applied regardless.
    pub async fn apply(&self, models: Vec<ManagedModel>) -> Result<(), RuntimeError> {
        let mut tasks = self.tasks.lock().await;
        let wanted = self.validate(&tasks, models)?;
        let mut errors = Vec::new();
        // New models first: one that cannot start undoes the others, before anything that
        // serves is touched.
        let mut started = Vec::new();
        for (name, Checked { spec, location }) in &wanted {
            if tasks.contains_key(name) {
                continue;
            }
            let (commands, loaded) = self.start(spec.clone(), location.clone(), true).await;
            let running = Running {
                spec: spec.clone(),
                commands,
            };
            tasks.insert(name.clone(), running);
            started.push(name.clone());
            match loaded {
                Err(e @ (RuntimeError::NotFound(_) | RuntimeError::Unavailable(_))) => {
                    for name in &started {
                        self.stop(&mut tasks, name).await;
                    }
                    return Err(e);
                }
                Err(e) => errors.push(e.to_string()),
                Ok(()) => {}
            }
        }
        let stale: Vec<String> = tasks
            .iter()
            .filter(|(name, running)| {
                wanted
                    .get(*name)
                    .is_none_or(|w| !running.spec.same_loading(&w.spec))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            self.stop(&mut tasks, &name).await;
        }
        for (name, Checked { spec, location }) in wanted {
            if started.contains(&name) {
                continue;
            }
            let result = match tasks.get_mut(&name) {
                Some(running) => {
                    let result = configure(running, spec.config.clone(), location).await;
                    running.spec = spec;
                    result
                }
                // Its loading settings changed: started afresh.
                None => {
                    let (commands, loaded) = self.start(spec.clone(), location, true).await;
                    tasks.insert(name.clone(), Running { spec, commands });
                    loaded
                }
            };
            if let Err(e) = result {
                errors.push(e.to_string());
            }
        }
        match errors.len() {
            0 => Ok(()),
            _ => Err(RuntimeError::Model(errors.join("; "))),
        }
    }

    /// The checks of [`apply`](Self::apply) that come before any change: the models by name,
    /// each with its parsed base path.
    fn validate(
        &self,
        tasks: &BTreeMap<String, Running>,
        models: Vec<ManagedModel>,
    ) -> Result<BTreeMap<String, Checked>, RuntimeError> {
        let mut wanted = BTreeMap::new();
        for spec in models {
            let name = spec.config.name.clone();
            let location = parse_location(&spec)?;
            if wanted
                .insert(name.clone(), Checked { spec, location })
                .is_some()
            {
                return Err(RuntimeError::InvalidInput(format!(
                    "model {name} is configured more than once"
                )));
            }
        }
        // The first list's labels are checked once its versions load (TF Serving refuses
        // them outright unless --allow_version_labels_for_unavailable_models).
        if !tasks.is_empty() {
            let models = self.models.read().unwrap_or_else(|e| e.into_inner());
            for (name, Checked { spec, .. }) in &wanted {
                crate::state::check_labels(
                    name,
                    models.get(name),
                    &spec.config.labels,
                    self.options.allow_labels_for_unavailable,
                    &std::collections::BTreeSet::new(),
                )
                .map_err(RuntimeError::Model)?;
            }
        }
        Ok(wanted)
    }

    /// Adds models next to the ones served (`soma serve` adds each API's models). A name
    /// already served is refused; the others are added even if one fails to load (the
    /// error lists the failures; such a model stays registered with its failed versions).
    /// Fetches retried after a storage failure are not waited for: the error says they
    /// are pending, and they go on in the background.
    pub async fn add(&self, models: Vec<ManagedModel>) -> Result<(), RuntimeError> {
        let mut tasks = self.tasks.lock().await;
        if let Some(taken) = models.iter().find(|m| tasks.contains_key(&m.config.name)) {
            return Err(RuntimeError::InvalidInput(format!(
                "model {} is already served",
                taken.config.name
            )));
        }
        let mut errors = Vec::new();
        for spec in models {
            let name = spec.config.name.clone();
            // A model whose base path does not parse is not started.
            let location = match parse_location(&spec) {
                Ok(location) => location,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            // Retried fetches go on in the background: the caller learns why the model does
            // not serve yet, and the next model starts meanwhile.
            let (commands, loaded) = self.start(spec.clone(), location, false).await;
            tasks.insert(name, Running { spec, commands });
            if let Err(e) = loaded {
                errors.push(e.to_string());
            }
        }
        match errors.len() {
            0 => Ok(()),
            _ => Err(RuntimeError::Model(errors.join("; "))),
        }
    }

    /// Whether `name` has a task watching its base path, versions or not (one added while
    /// its base path was missing, empty or unreachable waits for versions there).
    pub async fn watches(&self, name: &str) -> bool {
        self.tasks.lock().await.contains_key(name)
    }

    /// Unloads and forgets the named models (unknown names are ignored).
    pub async fn remove(&self, names: &[String]) {
        let mut tasks = self.tasks.lock().await;
        for name in names {
            self.stop(&mut tasks, name).await;
        }
    }

    async fn stop(&self, tasks: &mut BTreeMap<String, Running>, name: &str) {
        if let Some(running) = tasks.remove(name) {
            let (tx, rx) = oneshot::channel();
            if running.commands.send(Command::Stop(tx)).await.is_ok() {
                let _ = rx.await;
            }
        }
        let removed = self
            .models
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(mut state) = removed {
            state.labels.clear();
            for entry in state.versions.values_mut() {
                entry.state = ServableState::End;
                entry.servable = None;
            }
            self.retired().insert(name.to_string(), state);
        }
    }

    fn retired(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ModelState>> {
        self.retired.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a model's task after its first poll and load, and returns its command channel
    /// and how the load went; one whose versions fail to load is started all the same (its
    /// status shows why).
    async fn start(
        &self,
        spec: ManagedModel,
        location: ModelLocation,
        wait_for_retries: bool,
    ) -> (mpsc::Sender<Command>, Result<(), RuntimeError>) {
        self.retired().remove(&spec.config.name);
        let mut task = ModelTask::new(
            spec,
            location,
            Arc::clone(&self.options),
            Arc::clone(&self.models),
            Arc::clone(&self.cache),
        );
        let started = task.start(wait_for_retries).await;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(task.run(rx));
        (tx, started)
    }

    fn read<T>(
        &self,
        model: &str,
        f: impl FnOnce(&crate::state::ModelState) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        match models.get(model) {
            Some(state) => f(state),
            None => Err(RuntimeError::NotFound(format!(
                "Could not find any versions of model {model}"
            ))),
        }
    }
}

/// A model of a list that passed [`ModelManager::validate`], with its parsed base path.
struct Checked {
    spec: ManagedModel,
    location: ModelLocation,
}

fn parse_location(spec: &ManagedModel) -> Result<ModelLocation, RuntimeError> {
    ModelLocation::parse(&spec.config.base_path, Path::new("/")).map_err(|e| {
        RuntimeError::InvalidInput(format!("model {}: base_path {e}", spec.config.name))
    })
}

async fn configure(
    running: &Running,
    config: ModelConfig,
    location: ModelLocation,
) -> Result<(), RuntimeError> {
    let (tx, rx) = oneshot::channel();
    let gone = || RuntimeError::Model(format!("model {}: its task stopped", config.name));
    running
        .commands
        .send(Command::Configure(config.clone(), location, tx))
        .await
        .map_err(|_| gone())?;
    rx.await.map_err(|_| gone())?
}

impl ModelHub for ModelManager {
    fn models(&self) -> Vec<String> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        models.keys().cloned().collect()
    }

    fn servable(
        &self,
        model: &str,
        version: &VersionSelector,
    ) -> Result<Arc<Servable>, RuntimeError> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        match models.get(model) {
            Some(state) => state.servable(model, version),
            None => Err(servable_not_found(model, version)),
        }
    }

    fn status(
        &self,
        model: &str,
        version: Option<&VersionSelector>,
    ) -> Result<Vec<VersionStatus>, RuntimeError> {
        self.read(model, |state| state.status(model, version))
            .or_else(|e| match self.retired().get(model) {
                Some(state) => state.status(model, version),
                None => Err(e),
            })
    }

    fn reload(&self, models: Vec<ModelConfig>) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            let threads = self.options.threads;
            let specs = models
                .into_iter()
                .map(|config| ManagedModel {
                    threads,
                    batching: self.options.batching.clone(),
                    ..ManagedModel::new(config)
                })
                .collect();
            self.apply(specs).await
        })
    }
}
