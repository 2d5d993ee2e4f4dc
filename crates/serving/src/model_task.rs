//! One background task per model: polls its base path and loads/unloads versions.
//!
//! All changes to a model go through its task (polls and config updates alike), so two
//! loads of the same model never race; requests only read the shared [`ModelState`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use soma_core::ErrorKind;
use soma_repository::{
    CachedVersion, DiscoveredModel, ModelCache, RepositoryEvent, Validator, WatchSource, Watcher,
};
use soma_runtime::batching::BatchOptions;
use soma_runtime::hub::ModelConfig;
use soma_runtime::{RuntimeError, Servable, ServableState};
use soma_tensorflow::TensorFlow;
use tokio::sync::{mpsc, oneshot};

use crate::state::{ModelState, VersionEntry};
use crate::{ManagedModel, ManagerOptions, policy};

pub(crate) type Models = Arc<RwLock<BTreeMap<String, ModelState>>>;

/// The watcher of one model's base path.
fn watcher(name: &str, location: soma_core::ModelLocation, options: &ManagerOptions) -> Watcher {
    Watcher::with_settings(
        [WatchSource::model(name.to_string(), location)],
        // TF Serving's rule: a SavedModel without variables is a version too.
        Validator::SavedModel,
        options.poll_interval,
        options.s3.clone(),
    )
}

/// What the manager asks of a model's task; each gets an answer once applied.
#[derive(Debug)]
pub(crate) enum Command {
    /// New policy, labels or base path (the config's, parsed).
    Configure(
        ModelConfig,
        soma_core::ModelLocation,
        oneshot::Sender<Result<(), RuntimeError>>,
    ),
    /// Unload every version and stop.
    Stop(oneshot::Sender<()>),
}

#[derive(Debug)]
pub(crate) struct ModelTask {
    spec: ManagedModel,
    /// Where its versions are (the base path, parsed).
    location: soma_core::ModelLocation,
    /// Versions removed from storage since the last apply: their downloaded copies are
    /// deleted once they are not loaded.
    gone: BTreeSet<i64>,
    options: Arc<ManagerOptions>,
    models: Models,
    watcher: Watcher,
    cache: Arc<ModelCache>,
    /// Versions whose files changed since they were loaded: loaded again on the next apply.
    stale: BTreeSet<i64>,
    /// The last listing problem and its kind, reported when the model has no version at all.
    problem: Option<(ErrorKind, String)>,
    /// Moved to a base path with no versions yet: the old versions serve until it has some.
    moved_to_empty: bool,
    /// The base path lists no versions while some are loaded (said once per such spell).
    serving_without_versions: bool,
    /// Versions whose fetch failed in a way that may pass (storage unreachable, a disk
    /// error): tried again when due, from the task's loop, so that the model's commands (a
    /// reload, a removal) are answered in the meantime. Such a version shows LOADING.
    retrying: BTreeMap<i64, Retry>,
    /// Versions whose fetches failed through the whole retry budget: each gets another
    /// round, with the whole budget, at the instant given (storage that comes back after
    /// longer than the budget must not leave a version failed until a restart).
    revisit: BTreeMap<i64, Instant>,
}

/// A version's next fetch.
#[derive(Debug, Clone)]
struct Retry {
    due: Instant,
    /// Tries left after the one due.
    left: u32,
    /// Why the last try failed.
    error: String,
}

impl ModelTask {
    pub(crate) fn new(
        spec: ManagedModel,
        location: soma_core::ModelLocation,
        options: Arc<ManagerOptions>,
        models: Models,
        cache: Arc<ModelCache>,
    ) -> ModelTask {
        let watcher = watcher(&spec.config.name, location.clone(), &options);
        ModelTask {
            location,
            gone: BTreeSet::new(),
            spec,
            options,
            models,
            watcher,
            cache,
            stale: BTreeSet::new(),
            problem: None,
            moved_to_empty: false,
            serving_without_versions: false,
            retrying: BTreeMap::new(),
            revisit: BTreeMap::new(),
        }
    }

    /// The first poll and load; the error names what failed (the model stays registered
    /// so its status shows the failed versions). With `wait_for_retries`, fetches that are
    /// retried are waited out (as TF Serving waits for a new model's versions); without, they
    /// go on in the task's loop and the error says they are pending, so that the caller can
    /// report why the model does not serve yet and no other model waits meanwhile.
    pub(crate) async fn start(&mut self, wait_for_retries: bool) -> Result<(), RuntimeError> {
        let events = self.watcher.poll_once().await;
        self.note(events);
        if self.present().is_empty() {
            self.explain_invalid_versions();
            let message = format!("model {}: {}", self.name(), self.why_no_versions());
            // Storage that cannot be reached says nothing of the versions: try again later.
            return Err(match &self.problem {
                Some((ErrorKind::Unavailable, _)) => RuntimeError::Unavailable(message),
                _ => RuntimeError::NotFound(message),
            });
        }
        let mut errors = Vec::new();
        loop {
            if let Err(e) = self.apply().await {
                errors.push(e.to_string());
            }
            match self.next_retry() {
                Some(due) if wait_for_retries => tokio::time::sleep_until(due.into()).await,
                Some(_) => {
                    errors.extend(self.retrying.iter().map(|(version, retry)| {
                        format!(
                            "version {version}: fetching failed ({}); trying again in {:?}",
                            retry.error, self.options.load_retry_interval
                        )
                    }));
                    break;
                }
                None => break,
            }
        }
        match errors.len() {
            0 => Ok(()),
            _ => Err(RuntimeError::Model(errors.join("; "))),
        }
    }

    /// When the next retried fetch is due.
    fn next_retry(&self) -> Option<Instant> {
        self.retrying.values().map(|r| r.due).min()
    }

    /// When the loop has a retried fetch or another round of one to start.
    fn next_wake(&self) -> Option<Instant> {
        self.next_retry()
            .into_iter()
            .chain(self.revisit.values().copied())
            .min()
    }

    /// Versions whose new round of fetches is due lose their failure, so that the apply
    /// that follows loads them again.
    fn start_due_rounds(&mut self) {
        let now = Instant::now();
        let due: Vec<i64> = self
            .revisit
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(v, _)| *v)
            .collect();
        for version in due {
            tracing::info!(model = %self.name(), version, "fetching a model version again after its retries ran out");
            self.forget_failure(version);
        }
    }

    /// Polls every interval and answers commands until stopped or the manager is dropped.
    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        // A zero period would make tokio panic (and spin); 10 ms is as fast as it gets.
        let period = self
            .options
            .poll_interval
            .max(std::time::Duration::from_millis(10));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            let retry = self.next_wake();
            let far = Instant::now() + std::time::Duration::from_secs(3600);
            tokio::select! {
                _ = tokio::time::sleep_until(retry.unwrap_or(far).into()), if retry.is_some() => {
                    self.start_due_rounds();
                    if let Err(e) = self.apply().await {
                        tracing::warn!(model = %self.spec.config.name, error = %e, "model update");
                    }
                }
                _ = ticker.tick() => {
                    let events = self.watcher.poll_once().await;
                    if !events.is_empty() {
                        self.note(events);
                        if let Err(e) = self.apply().await {
                            tracing::warn!(model = %self.spec.config.name, error = %e, "model update");
                        }
                    }
                }
                command = commands.recv() => match command {
                    Some(Command::Configure(config, location, reply)) => {
                        let moved = config.base_path != self.spec.config.base_path;
                        self.spec.config = config;
                        let result = match moved {
                            true => self.relocate(location).await,
                            false => self.apply().await,
                        };
                        let _ = reply.send(result);
                    }
                    Some(Command::Stop(reply)) => {
                        self.unload_all();
                        let _ = reply.send(());
                        return;
                    }
                    None => {
                        self.unload_all();
                        return;
                    }
                },
            }
        }
    }

    fn name(&self) -> &str {
        &self.spec.config.name
    }

    /// The model's base path changed: its versions are now the new folder's. Every loaded
    /// version is loaded again from there if the folder has it (the old copy serves until
    /// the new one is ready) and unloaded after the new versions are in if not, so the
    /// model keeps serving throughout. A folder with no versions yet is reported, and the
    /// old versions serve on until versions appear there.
    async fn relocate(&mut self, location: soma_core::ModelLocation) -> Result<(), RuntimeError> {
        tracing::info!(model = %self.name(), base_path = %location, "model moved to a new base path");
        let shown = location.to_string();
        self.watcher = watcher(self.name(), location.clone(), &self.options);
        self.location = location;
        self.problem = None;
        let (loaded, _) = self.loaded_and_failed();
        self.stale.extend(loaded);
        // A new watcher reports every version of the new folder as added, which also clears
        // the old folder's failures of those version numbers.
        let events = self.watcher.poll_once().await;
        self.note(events);
        self.moved_to_empty = self.present().is_empty();
        let applied = self.apply().await;
        if !self.moved_to_empty {
            return applied;
        }
        let why = self.why_no_versions();
        // The move is applied (a reload's error would otherwise read as "nothing changed").
        let mut message = format!(
            "model {}: moved to {shown}, which has no versions yet ({why}); its versions from \
             the previous base path serve until versions appear there",
            self.name()
        );
        if let Err(e) = applied {
            message = format!("{message}; {e}");
        }
        Err(RuntimeError::NotFound(message))
    }

    /// The watcher reports an invalid version folder once it stays so for two polls (a
    /// copy in progress is not an error); a first poll that finds only invalid ones takes
    /// the reason the watcher has not reported yet, so that the error says what is wrong
    /// (`version 1 is missing variables/variables.index`) rather than "no versions".
    fn explain_invalid_versions(&mut self) {
        if self.problem.is_none()
            && let Some(problem) = self.watcher.unsettled_problem(self.name())
        {
            self.problem = Some((ErrorKind::NotFound, problem.to_string()));
        }
    }

    /// Why the base path lists no versions.
    fn why_no_versions(&self) -> String {
        match &self.problem {
            Some((_, problem)) => problem.clone(),
            None => "no version folders (integer names holding saved_model.pb) found".to_string(),
        }
    }

    fn note(&mut self, events: Vec<RepositoryEvent>) {
        for event in events {
            match event {
                RepositoryEvent::VersionChanged { version, .. } => {
                    self.stale.insert(version);
                    self.forget_failure(version);
                }
                RepositoryEvent::VersionAdded { version, .. } => {
                    self.gone.remove(&version);
                    self.forget_failure(version);
                }
                RepositoryEvent::VersionRemoved { version, .. } => {
                    self.gone.insert(version);
                    self.forget_failure(version);
                }
                RepositoryEvent::Error { error, kind, .. } => self.problem = Some((kind, error)),
            }
        }
    }

    /// The version's files changed or went: a failure to load them no longer stands. A
    /// version that failed is forgotten; one that serves keeps serving, its failed reload
    /// no longer reported.
    fn forget_failure(&mut self, version: i64) {
        // New files are fetched at once, with every retry again.
        self.retrying.remove(&version);
        self.revisit.remove(&version);
        if let Some(mirror) = &self.spec.mirror {
            mirror.note_failure(&self.spec.servable_name, version, None);
        }
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        let Some(model) = models.get_mut(self.name()) else {
            return;
        };
        match model.versions.get_mut(&version) {
            Some(entry) if entry.servable.is_some() => entry.error = None,
            // Failed, or waiting for a retried fetch: as if never asked for.
            Some(_) => {
                model.versions.remove(&version);
            }
            None => {}
        }
    }

    fn present(&self) -> BTreeSet<i64> {
        self.watcher
            .model(self.name())
            .map(|m| m.versions.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Loads what the policy wants (newest state of the folder), then applies the labels,
    /// then unloads the rest: a label moved off a version that this change unloads points
    /// at its new version before the old one goes, so no request by label meets a version
    /// already gone (as TF Serving updates its label map before it unloads). Load errors
    /// are kept on their versions and returned.
    async fn apply(&mut self) -> Result<(), RuntimeError> {
        let mut errors = Vec::new();
        self.moved_to_empty &= self.present().is_empty();
        // Moved to a folder with no versions yet: the previous base path's versions serve
        // on, and only the labels are applied.
        let leaving = if self.moved_to_empty {
            BTreeSet::new()
        } else {
            self.load_wanted(&mut errors).await;
            self.unwanted()
        };
        if let Err(e) = self.apply_labels(&leaving) {
            errors.push(e);
        }
        if !self.moved_to_empty {
            self.unload_all_of(&leaving).await;
        }
        self.stop_unwanted_retries();
        match errors.len() {
            0 => Ok(()),
            _ => Err(RuntimeError::Model(errors.join("; "))),
        }
    }

    /// Loads the wanted versions, newest first (and the stale ones again), but for those
    /// whose fetch is retried later.
    async fn load_wanted(&mut self, errors: &mut Vec<String>) {
        loop {
            let present = self.present();
            let (loaded, failed) = self.loaded_and_failed();
            let wanted = policy::wanted(&self.spec.config.policy, &present, &failed);
            let now = Instant::now();
            let next = wanted
                .iter()
                .rev()
                .filter(|v| self.retrying.get(v).is_none_or(|r| r.due <= now))
                .find(|v| {
                    !loaded.contains(v) || self.stale.contains(v) || self.retrying.contains_key(v)
                })
                .copied();
            let Some(version) = next else {
                return;
            };
            self.stale.remove(&version);
            if let Err(e) = self.load(version).await {
                errors.push(e);
            }
        }
    }

    /// Versions waiting for another fetch that the policy no longer wants (a newer version
    /// took their place, the policy changed) are not tried again; one that never loaded
    /// leaves the status, as if never asked for.
    fn stop_unwanted_retries(&mut self) {
        if self.retrying.is_empty() {
            return;
        }
        let (_, failed) = self.loaded_and_failed();
        let wanted = policy::wanted(&self.spec.config.policy, &self.present(), &failed);
        let dropped: Vec<i64> = self
            .retrying
            .keys()
            .filter(|v| !wanted.contains(v))
            .copied()
            .collect();
        for version in dropped {
            tracing::info!(model = %self.name(), version, "no longer wanted: its fetch is not tried again");
            self.forget_failure(version);
        }
    }

    /// The loaded versions the policy does not want (see [`policy::to_unload`]).
    fn unwanted(&self) -> BTreeSet<i64> {
        let (loaded, failed) = self.loaded_and_failed();
        policy::to_unload(&self.spec.config.policy, &self.present(), &failed, &loaded)
            .into_iter()
            .collect()
    }

    /// Unloads `unloaded` (the [`unwanted`](Self::unwanted) versions) and deletes the
    /// downloaded copies no longer of use.
    async fn unload_all_of(&mut self, unloaded: &BTreeSet<i64>) {
        let present = self.present();
        let (loaded, _) = self.loaded_and_failed();
        for &version in unloaded {
            self.unload(version);
        }
        // Gone from storage and not serving: the downloaded copy is of no more use.
        let gone = std::mem::take(&mut self.gone);
        for version in gone {
            if loaded.contains(&version) && !unloaded.contains(&version) {
                self.gone.insert(version);
            } else {
                self.cache.evict(&self.location, version).await;
            }
        }
        self.note_serving_without_versions(present.is_empty() && !loaded.is_empty());
    }

    /// Warns when the base path stops listing versions while some serve (they serve on:
    /// see `policy::to_unload`), and says when versions are back.
    fn note_serving_without_versions(&mut self, now: bool) {
        if now && !self.serving_without_versions {
            tracing::warn!(
                model = %self.name(),
                "the base path lists no versions: the loaded versions serve on until versions \
                 appear there (take the model out of the config to unload it)"
            );
        } else if !now && self.serving_without_versions {
            tracing::info!(model = %self.name(), "the base path lists versions again");
        }
        self.serving_without_versions = now;
    }

    fn loaded_and_failed(&self) -> (BTreeSet<i64>, BTreeSet<i64>) {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        let mut loaded = BTreeSet::new();
        let mut failed = BTreeSet::new();
        if let Some(model) = models.get(self.name()) {
            for (&v, entry) in &model.versions {
                if entry.servable.is_some() {
                    loaded.insert(v);
                } else if entry.error.is_some() {
                    failed.insert(v);
                }
            }
        }
        (loaded, failed)
    }

    fn set_state(&self, version: i64, update: impl FnOnce(&mut VersionEntry)) {
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        let model = models
            .entry(self.name().to_string())
            .or_insert_with(|| ModelState::new(self.spec.config.clone()));
        model.config = self.spec.config.clone();
        let entry = model
            .versions
            .entry(version)
            .or_insert_with(|| VersionEntry::new(ServableState::Start));
        update(entry);
    }

    async fn load(&mut self, version: i64) -> Result<(), String> {
        self.set_state(version, |e| {
            // A reload of a changed version keeps the old one serving until the new is ready.
            if e.servable.is_none() {
                e.state = ServableState::Loading;
                e.error = None;
            }
        });
        let started = Instant::now();
        let loaded = match self.fetch(version).await {
            Ok((model, cached)) => self.load_servable(model, version, cached).await,
            Err((kind, message)) if self.retry_later(version, kind, &message) => return Ok(()),
            Err(failure) => Err(failure),
        };
        self.retrying.remove(&version);
        match loaded {
            Ok(servable) => {
                let servable = Arc::new(servable);
                if let Some(mirror) = &self.spec.mirror {
                    mirror.insert(Arc::clone(&servable));
                }
                self.set_state(version, |e| {
                    e.state = ServableState::Available;
                    e.error = None;
                    e.servable = Some(servable);
                });
                tracing::info!(
                    model = %self.name(),
                    version,
                    millis = started.elapsed().as_millis() as u64,
                    "model version available"
                );
                Ok(())
            }
            Err((kind, message)) => {
                tracing::warn!(model = %self.name(), version, error = %message, "model version failed to load");
                let text = format!("version {version}: {message}");
                if let Some(mirror) = &self.spec.mirror {
                    mirror.note_failure(&self.spec.servable_name, version, Some(&message));
                }
                self.set_state(version, |e| {
                    if e.servable.is_none() {
                        e.state = ServableState::End;
                        e.error = Some((kind, message));
                    } else {
                        // Still AVAILABLE (it serves), with the failure for whoever checks.
                        let message = format!(
                            "the version's files changed and failed to load; the files \
                             loaded before serve on: {message}"
                        );
                        e.error = Some((kind, message));
                    }
                });
                Err(text)
            }
        }
    }

    /// Fetches a version's files (S3 through the cache; a local folder is used in place).
    async fn fetch(
        &self,
        version: i64,
    ) -> Result<(DiscoveredModel, CachedVersion), (ErrorKind, String)> {
        let model = self.watcher.model(self.name()).cloned().ok_or_else(|| {
            (
                ErrorKind::NotFound,
                format!("model {} has no versions", self.name()),
            )
        })?;
        match self.cache.fetch_locked(&model, version).await {
            Ok(cached) => Ok((model, cached)),
            Err(e) => Err((e.kind(), e.to_string())),
        }
    }

    /// Schedules another fetch of `version` after [`ManagerOptions::load_retry_interval`]
    /// when storage or the disk failed in a way that may pass and tries are left (TF
    /// Serving's `--max_num_load_retries`); a model that is broken fails later, in
    /// TensorFlow, and is not retried. When the tries have run out, the version fails and
    /// gets another round one interval later.
    fn retry_later(&mut self, version: i64, kind: ErrorKind, message: &str) -> bool {
        if !matches!(kind, ErrorKind::Unavailable | ErrorKind::Internal) {
            return false;
        }
        let left = self
            .retrying
            .get(&version)
            .map_or(self.options.load_retries, |r| r.left);
        let wait = self.options.load_retry_interval;
        if left == 0 {
            if self.retrying.contains_key(&version) {
                self.revisit.insert(version, Instant::now() + wait);
            }
            return false;
        }
        let retry = Retry {
            due: Instant::now() + wait,
            left: left - 1,
            error: message.to_string(),
        };
        tracing::warn!(model = %self.name(), version, error = %message, retries_left = retry.left, ?wait, "fetching a model version failed; trying again later");
        self.retrying.insert(version, retry);
        true
    }

    async fn load_servable(
        &self,
        model: DiscoveredModel,
        version: i64,
        cached: CachedVersion,
    ) -> Result<Servable, (ErrorKind, String)> {
        let failed = |kind: ErrorKind, e: &dyn std::fmt::Display| (kind, e.to_string());
        let model_path = model
            .version_path(version)
            .unwrap_or_else(|| cached.path.display().to_string());
        let spec = self.spec.clone();
        let options = self.options.clone();
        // Fetching is I/O and not limited; loading and warming up take the CPU.
        let permit = soma_runtime::permit(options.load_limit.as_ref()).await;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // Held while TensorFlow reads the files: no process sharing the cache replaces them.
            let _lock = cached.lock;
            load_blocking(&options, &spec, version, cached.path, &model_path)
        })
        .await
        .map_err(|e| failed(ErrorKind::Internal, &e))?
    }

    fn unload(&self, version: i64) {
        if let Some(mirror) = &self.spec.mirror {
            mirror.remove(&self.spec.servable_name, version);
        }
        // UNLOADING then END: the map's Arc is dropped here; requests that hold a clone
        // finish on it and the model is freed when the last one returns.
        self.set_state(version, |e| e.state = ServableState::Unloading);
        self.set_state(version, |e| {
            e.servable = None;
            e.state = ServableState::End;
        });
        tracing::info!(model = %self.name(), version, "model version unloaded");
    }

    fn unload_all(&self) {
        let (loaded, _) = self.loaded_and_failed();
        for version in loaded {
            self.unload(version);
        }
    }

    /// TF Serving's rule: a label may only point at an AVAILABLE version (unless allowed).
    fn apply_labels(&self, leaving: &BTreeSet<i64>) -> Result<(), String> {
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        let Some(model) = models.get_mut(self.name()) else {
            return Ok(());
        };
        let wanted = &self.spec.config.labels;
        crate::state::check_labels(
            self.name(),
            Some(model),
            wanted,
            self.options.allow_labels_for_unavailable,
            leaving,
        )?;
        model.labels = wanted.clone();
        Ok(())
    }
}

/// Loads one version from `dir`, stored at `model_path` (its name in the load metrics).
fn load_blocking(
    options: &ManagerOptions,
    spec: &ManagedModel,
    version: i64,
    dir: PathBuf,
    model_path: &str,
) -> Result<Servable, (ErrorKind, String)> {
    let failed = |e: RuntimeError| (e.kind(), e.to_string());
    let tf = TensorFlow::global(options.tensorflow_lib.as_deref())
        .map_err(|e| (e.kind(), e.to_string()))?;
    let tags: Vec<&str> = options
        .saved_model_tags
        .iter()
        .map(String::as_str)
        .collect();
    let record = soma_models::LoadRecord {
        metrics: options.metrics.as_ref(),
        model_path,
    };
    let runner = record
        .load(|| {
            soma_models::TfRunner::load_tagged(
                &tf,
                &dir,
                &tags,
                spec.threads,
                options.session_config.as_ref(),
            )
        })
        .map_err(|e| (e.kind(), e.to_string()))?;
    let mut key = spec.signature_key.clone();
    if key.is_none() && spec.any_signature {
        let sigs = soma_core::runner::ModelRunner::signatures(&runner);
        let label = format!("model '{}' version {version}", spec.servable_name);
        if soma_runtime::choose_signature(sigs, None, &label).is_err() {
            key = sigs.keys().next().cloned();
        }
    }
    let servable = Servable::new(
        &spec.servable_name,
        version,
        Box::new(runner),
        key.as_deref(),
    )
    .map_err(|e| (e.kind(), e.to_string()))?;
    // Labelled with the name requests use (for a cortex.yaml API's `models.path`, the API's
    // name, not `_cortex_default`).
    let servable = record.with_run_metrics(servable, &spec.config.name);
    // Before batching is on: a warm-up run needs no batch.
    let recorded = record
        .warm_up(&servable, &dir, options.warmup.as_deref())
        .map_err(failed)?;
    if let Some(records) = recorded {
        tracing::info!(model = %spec.servable_name, version, records, "warm-up requests replayed");
    }
    let batching = match &spec.batching {
        Some(_) if options.per_model_batching => version_batching(&dir)?,
        common => common.clone(),
    };
    match batching {
        Some(batching) => servable
            .with_batching(batching, options.metrics.clone())
            .map_err(failed),
        None => Ok(servable),
    }
}

/// The file in a version's folder that holds its own batching parameters (TF Serving's
/// name, read with `--enable_per_model_batching_parameters`).
const VERSION_BATCHING_FILE: &str = "batching_params.pbtxt";

/// A version's own batching parameters; `None` (not batched) without the file. A file that
/// does not parse fails the load, naming the file, line and column.
fn version_batching(dir: &Path) -> Result<Option<BatchOptions>, (ErrorKind, String)> {
    let path = dir.join(VERSION_BATCHING_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err((
                ErrorKind::FailedPrecondition,
                format!("cannot read {}: {e}", path.display()),
            ));
        }
    };
    crate::parse_batching_parameters(&text)
        .map(Some)
        .map_err(|e| {
            (
                ErrorKind::InvalidArgument,
                format!("{}: {e}", path.display()),
            )
        })
}

#[cfg(test)]
mod tests {
    use soma_runtime::batching::BatchWindow;

    use super::*;

    #[test]
    fn a_version_without_its_own_batching_file_is_not_batched() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(version_batching(dir.path()), Ok(None));

        std::fs::write(
            dir.path().join(VERSION_BATCHING_FILE),
            "max_batch_size { value: 8 }\nbatch_timeout_micros: auto\n",
        )
        .unwrap();
        let options = version_batching(dir.path()).unwrap().unwrap();
        assert_eq!(options.max_batch_size, 8);
        assert_eq!(options.window, BatchWindow::Auto);

        std::fs::write(
            dir.path().join(VERSION_BATCHING_FILE),
            "max_batch_size { value: 8 }\nmax_batch_sizes: 3\n",
        )
        .unwrap();
        let (kind, message) = version_batching(dir.path()).unwrap_err();
        assert_eq!(kind, ErrorKind::InvalidArgument);
        assert!(
            message.starts_with(&format!(
                "{}: line 2, column 1: unknown field 'max_batch_sizes'",
                dir.path().join(VERSION_BATCHING_FILE).display()
            )),
            "{message}"
        );
    }
}
