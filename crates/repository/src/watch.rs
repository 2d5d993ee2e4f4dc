//! Polling model folders (and `models.dir` folders) for new, changed and removed versions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use soma_core::{ErrorKind, ModelLocation};
use tokio::sync::mpsc;

use crate::discover::{DiscoveredModel, RESERVED_MODEL_NAME, split_dir};
use crate::error::RepositoryError;
use crate::layout::{Layout, Listing, Validator, VersionFiles, analyze, parse_version};
use crate::store::{ModelStore, S3Settings};

/// A folder to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchSource {
    /// One model folder (`models.path`, or an entry of `models.paths`), reported as `name`.
    Model {
        name: String,
        location: ModelLocation,
    },
    /// A `models.dir` folder: each first-level folder is a model named after the folder, so
    /// models appear and disappear with their folders.
    Dir(ModelLocation),
}

impl WatchSource {
    pub fn model(name: impl Into<String>, location: ModelLocation) -> WatchSource {
        WatchSource::Model {
            name: name.into(),
            location,
        }
    }

    pub fn dir(location: ModelLocation) -> WatchSource {
        WatchSource::Dir(location)
    }

    pub fn location(&self) -> &ModelLocation {
        match self {
            WatchSource::Model { location, .. } | WatchSource::Dir(location) => location,
        }
    }
}

/// What changed in the watched folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryEvent {
    /// A new version passed the layout check and stayed the same for two polls. In `dir`
    /// mode a new model shows up as its versions being added.
    VersionAdded { model: String, version: i64 },
    /// A known version disappeared or no longer passes the layout check (a removed model
    /// folder removes all its versions). Never caused by a failed listing.
    VersionRemoved { model: String, version: i64 },
    /// A known version's files, sizes or modification times changed (and settled again).
    VersionChanged { model: String, version: i64 },
    /// Listing failed, or something in the folder is invalid. `model` is `None` for a
    /// problem of a `models.dir` folder itself. Reported once until the text changes.
    Error {
        model: Option<String>,
        error: String,
        /// A listing's failure's own kind (storage unreachable: `Unavailable`);
        /// `InvalidArgument` for what is wrong in the folder.
        kind: ErrorKind,
    },
}

/// Polls model folders, local or on S3.
///
/// The first poll of each source is a snapshot: what exists then is known and yields no
/// events (the caller discovered and loaded it already); when that listing fails, nothing
/// is known, and versions that appear later are added as below. Afterwards:
///
/// * a version is added (or changed) only once it passes the layout check **and** its file
///   list and sizes were identical on two consecutive polls ("settled"), so a version folder
///   still being copied or uploaded is not reported half-written; a copy that pauses longer
///   than the poll interval can still look settled, so copy into a temporary name and rename
///   when possible;
/// * a version is removed as soon as it is gone or stops passing the check (e.g. a file of
///   it was deleted); a version rewritten in place may therefore be removed and re-added;
/// * a listing that fails (network, permissions, a local folder moved away) emits an
///   `Error` and changes nothing: no removals;
/// * a version whose files are invalid and stay so for two polls is reported as an `Error`,
///   as is a layout problem (e.g. a stray file next to version folders); valid versions of
///   such a folder stay served.
#[derive(Debug)]
pub struct Watcher {
    validator: Validator,
    poll_interval: Duration,
    settings: S3Settings,
    sources: Vec<SourceState>,
}

/// The keys and sizes of a version's files: equal on two polls = the version settled.
type Fingerprint = Vec<(String, u64)>;

#[derive(Debug)]
struct SourceState {
    source: WatchSource,
    store: Option<ModelStore>,
    initialized: bool,
    /// Models with the versions reported (or present at the snapshot).
    known: BTreeMap<String, DiscoveredModel>,
    /// Layout and valid versions seen at the previous poll.
    previous_valid: BTreeMap<String, (Layout, BTreeMap<i64, VersionFiles>)>,
    /// Invalid versions seen at the previous poll.
    previous_invalid: BTreeMap<String, BTreeMap<i64, Fingerprint>>,
    /// What is wrong with each model's invalid versions that are not reported yet (they
    /// may be copies in progress).
    unsettled: BTreeMap<String, String>,
    /// The signature of the last error reported per model (`None`: the `models.dir` folder
    /// itself).
    reported: BTreeMap<Option<String>, String>,
}

/// What one poll saw of one model folder.
#[derive(Debug)]
struct Observed {
    location: ModelLocation,
    layout: Layout,
    layout_problem: Option<String>,
    valid: BTreeMap<i64, VersionFiles>,
    invalid: BTreeMap<i64, (String, Fingerprint)>,
}

impl Watcher {
    /// A watcher using S3 settings from the environment.
    pub fn new(
        sources: impl IntoIterator<Item = WatchSource>,
        validator: Validator,
        poll_interval: Duration,
    ) -> Watcher {
        Watcher::with_settings(sources, validator, poll_interval, S3Settings::default())
    }

    /// A watcher with explicit S3 settings.
    pub fn with_settings(
        sources: impl IntoIterator<Item = WatchSource>,
        validator: Validator,
        poll_interval: Duration,
        settings: S3Settings,
    ) -> Watcher {
        let sources = sources
            .into_iter()
            .map(|source| SourceState {
                source,
                store: None,
                initialized: false,
                known: BTreeMap::new(),
                previous_valid: BTreeMap::new(),
                previous_invalid: BTreeMap::new(),
                unsettled: BTreeMap::new(),
                reported: BTreeMap::new(),
            })
            .collect();
        Watcher {
            validator,
            poll_interval,
            settings,
            sources,
        }
    }

    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// The models currently considered present, with the versions reported so far (what a
    /// caller needs for [`ModelCache::fetch`](crate::ModelCache::fetch)).
    pub fn models(&self) -> impl Iterator<Item = (&str, &DiscoveredModel)> {
        self.sources
            .iter()
            .flat_map(|s| s.known.iter().map(|(name, model)| (name.as_str(), model)))
    }

    /// One model of [`models`](Watcher::models).
    pub fn model(&self, name: &str) -> Option<&DiscoveredModel> {
        self.sources.iter().find_map(|s| s.known.get(name))
    }

    /// What is wrong with a model's invalid version folders that the last poll saw but has
    /// not reported (an invalid version is reported once it stays so for two polls): for a
    /// caller that must say now why a model has no valid version.
    pub fn unsettled_problem(&self, name: &str) -> Option<&str> {
        self.sources
            .iter()
            .find_map(|s| s.unsettled.get(name).map(String::as_str))
    }

    /// Lists every source once and returns what changed since the previous poll.
    pub async fn poll_once(&mut self) -> Vec<RepositoryEvent> {
        let mut events = Vec::new();
        for source in &mut self.sources {
            source
                .poll(self.validator, &self.settings, &mut events)
                .await;
        }
        events
    }

    /// Polls in a background task every `poll_interval` (the first poll, the snapshot,
    /// right away) and sends the events. The task stops when the receiver is dropped.
    /// Events name models only: to fetch an added version, discover the model's location
    /// again (for a `dir` source, `dir.join(model)`).
    pub fn spawn(mut self) -> mpsc::Receiver<RepositoryEvent> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(self.poll_interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = tx.closed() => return,
                }
                for event in self.poll_once().await {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }
}

impl SourceState {
    /// The error key of problems of the source as a whole.
    fn source_key(&self) -> Option<String> {
        match &self.source {
            WatchSource::Model { name, .. } => Some(name.clone()),
            WatchSource::Dir(_) => None,
        }
    }

    async fn list(&mut self, settings: &S3Settings) -> Result<Listing, RepositoryError> {
        let store = match &self.store {
            Some(store) => store,
            None => {
                let store = ModelStore::open(self.source.location(), settings).await?;
                self.store.insert(store)
            }
        };
        // A local folder is listed by its path every time: one moved away and created
        // again is found without opening it anew.
        store.list().await
    }

    async fn poll(
        &mut self,
        validator: Validator,
        settings: &S3Settings,
        events: &mut Vec<RepositoryEvent>,
    ) {
        let listing = match self.list(settings).await {
            Ok(listing) => listing,
            Err(e) => {
                let key = self.source_key();
                let signature = failure_signature(&e);
                self.report_as(key, Some((signature, e.to_string())), e.kind(), events);
                // A first listing that fails is the snapshot: the caller found nothing, so
                // what appears once storage lists is reported as added.
                self.initialized = true;
                return;
            }
        };
        let observed = match &self.source {
            WatchSource::Model { name, location } => {
                BTreeMap::from([(name.clone(), observe(location, &listing, validator))])
            }
            WatchSource::Dir(location) => {
                let (models, files) = split_dir(&listing);
                let mut problems = Vec::new();
                if !files.is_empty() {
                    problems.push(format!(
                        "{} directly in the models directory (ignored; every entry must be a model folder)",
                        files.join(", ")
                    ));
                }
                let mut observed = BTreeMap::new();
                for (name, sub) in models {
                    if name == RESERVED_MODEL_NAME {
                        problems.push(format!(
                            "{RESERVED_MODEL_NAME}: is a reserved name (ignored)"
                        ));
                        continue;
                    }
                    let model = observe(&location.join(&name), &sub, validator);
                    observed.insert(name, model);
                }
                let problem =
                    (!problems.is_empty()).then(|| format!("{location}: {}", problems.join("; ")));
                self.report(None, problem, events);
                observed
            }
        };

        // Errors of each model: layout problems at once, invalid versions once settled.
        let names: BTreeSet<String> = observed
            .keys()
            .chain(self.reported.keys().flatten())
            .cloned()
            .collect();
        self.unsettled.clear();
        for name in names {
            let problem = observed.get(&name).and_then(|o| {
                let before = self.previous_invalid.get(&name);
                let mut problems: Vec<String> = o.layout_problem.iter().cloned().collect();
                let mut unsettled = Vec::new();
                for (version, (problem, files)) in &o.invalid {
                    match before.and_then(|b| b.get(version)) == Some(files) {
                        true => problems.push(problem.clone()),
                        false => unsettled.push(problem.clone()),
                    }
                }
                if !unsettled.is_empty() {
                    let text = format!("{}: {}", o.location, unsettled.join("; "));
                    self.unsettled.insert(name.clone(), text);
                }
                (!problems.is_empty()).then(|| format!("{}: {}", o.location, problems.join("; ")))
            });
            self.report(Some(name), problem, events);
        }

        if self.initialized {
            self.diff(&observed, validator, events);
        } else {
            self.initialized = true;
            self.known = observed
                .iter()
                .filter(|(_, o)| !o.valid.is_empty())
                .map(|(name, o)| (name.clone(), o.model(o.valid.clone(), validator)))
                .collect();
        }
        self.previous_valid = observed
            .iter()
            .map(|(name, o)| (name.clone(), (o.layout, o.valid.clone())))
            .collect();
        self.previous_invalid = observed
            .into_iter()
            .map(|(name, o)| {
                let files = o.invalid.into_iter().map(|(v, (_, f))| (v, f)).collect();
                (name, files)
            })
            .collect();
    }

    fn diff(
        &mut self,
        observed: &BTreeMap<String, Observed>,
        validator: Validator,
        events: &mut Vec<RepositoryEvent>,
    ) {
        let names: BTreeSet<String> = self.known.keys().chain(observed.keys()).cloned().collect();
        let empty = BTreeMap::new();
        for name in names {
            let seen = observed.get(&name);
            let valid = seen.map_or(&empty, |o| &o.valid);
            // The same files under another layout are other files (root vs `1/`).
            let previous = match (self.previous_valid.get(&name), seen) {
                (Some((layout, versions)), Some(o)) if *layout == o.layout => versions,
                _ => &empty,
            };
            let mut versions = match (self.known.remove(&name), seen) {
                // A model that switched between versioned and non-versioned: its old
                // versions live elsewhere, so they all go and the new ones come back settled.
                (Some(known), Some(o)) if known.layout != o.layout => {
                    for &version in known.versions.keys() {
                        events.push(RepositoryEvent::VersionRemoved {
                            model: name.clone(),
                            version,
                        });
                    }
                    BTreeMap::new()
                }
                (Some(known), _) => known.versions,
                (None, _) => BTreeMap::new(),
            };
            for (&version, files) in valid {
                let settled = previous
                    .get(&version)
                    .is_some_and(|before| before.files == files.files);
                if !settled {
                    continue;
                }
                let model = name.clone();
                match versions.get(&version) {
                    None => events.push(RepositoryEvent::VersionAdded { model, version }),
                    Some(known) if known != files => {
                        events.push(RepositoryEvent::VersionChanged { model, version })
                    }
                    Some(_) => continue,
                }
                versions.insert(version, files.clone());
            }
            let gone: Vec<i64> = versions
                .keys()
                .filter(|v| !valid.contains_key(v))
                .copied()
                .collect();
            for version in gone {
                versions.remove(&version);
                events.push(RepositoryEvent::VersionRemoved {
                    model: name.clone(),
                    version,
                });
            }
            if let (Some(o), false) = (seen, versions.is_empty()) {
                self.known.insert(name, o.model(versions, validator));
            }
        }
    }

    /// Emits `error` unless it was the last one reported for `key`; `None` clears it.
    fn report(
        &mut self,
        key: Option<String>,
        error: Option<String>,
        events: &mut Vec<RepositoryEvent>,
    ) {
        let error = error.map(|text| (text.clone(), text));
        self.report_as(key, error, ErrorKind::InvalidArgument, events);
    }

    /// [`report`](Self::report) with an explicit `(signature, text)`: an error is emitted
    /// unless the last one reported for `key` had the same signature.
    fn report_as(
        &mut self,
        key: Option<String>,
        error: Option<(String, String)>,
        kind: ErrorKind,
        events: &mut Vec<RepositoryEvent>,
    ) {
        match error {
            Some((signature, error)) if self.reported.get(&key) != Some(&signature) => {
                tracing::warn!(model = key.as_deref().unwrap_or(""), %error, "model watcher");
                self.reported.insert(key.clone(), signature);
                events.push(RepositoryEvent::Error {
                    model: key,
                    error,
                    kind,
                });
            }
            Some(_) => {}
            None => {
                if let Some(previous) = self.reported.remove(&key)
                    && previous.starts_with(LISTING_FAILED)
                {
                    tracing::info!(
                        model = key.as_deref().unwrap_or(""),
                        "model watcher: the base path lists again"
                    );
                }
            }
        }
    }
}

const LISTING_FAILED: &str = "listing failed";

/// What a failed listing is reported once for. Storage messages differ on every attempt
/// (timings, request ids), so not the message: its kind, the storage's error class and the
/// HTTP status it carries, so that a 403 after a 503 is reported too.
fn failure_signature(error: &RepositoryError) -> String {
    let (class, message) = match error {
        RepositoryError::Storage { source, .. } => {
            let class = match source {
                object_store::Error::NotFound { .. } => "not found",
                object_store::Error::PermissionDenied { .. } => "permission denied",
                object_store::Error::Unauthenticated { .. } => "unauthenticated",
                _ => "storage",
            };
            (class, source.to_string())
        }
        other => ("local", other.to_string()),
    };
    let status = message
        .split(|c: char| !c.is_ascii_digit())
        .find(|digits| {
            digits.len() == 3 && digits.parse::<u16>().is_ok_and(|n| (400..600).contains(&n))
        })
        .unwrap_or("");
    format!("{LISTING_FAILED}: {} {class} {status}", error.kind())
}

impl Observed {
    fn model(
        &self,
        versions: BTreeMap<i64, VersionFiles>,
        validator: Validator,
    ) -> DiscoveredModel {
        DiscoveredModel {
            location: self.location.clone(),
            layout: self.layout,
            validator,
            versions,
        }
    }
}

fn observe(location: &ModelLocation, listing: &Listing, validator: Validator) -> Observed {
    let analysis = analyze(listing, validator);
    // An empty folder is a normal state between uploads: its versions are simply gone.
    let layout_problem = analysis
        .layout
        .as_ref()
        .err()
        .filter(|_| !listing.is_empty())
        .cloned();
    // Versions reported next to a layout problem are version folders.
    let layout = analysis.layout.unwrap_or(Layout::Versioned);
    let mut valid = BTreeMap::new();
    let mut invalid = BTreeMap::new();
    for (version, result) in analysis.versions {
        match result {
            Ok(files) => {
                valid.insert(version, files);
            }
            Err(problem) => {
                let files = listing
                    .iter()
                    .filter(|(key, _)| {
                        layout == Layout::NonVersioned
                            || key.split('/').next().map(parse_version) == Some(Ok(Some(version)))
                    })
                    .map(|(key, meta)| (key.clone(), meta.size))
                    .collect();
                invalid.insert(version, (problem, files));
            }
        }
    }
    Observed {
        location: location.clone(),
        layout,
        layout_problem,
        valid,
        invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(message: &str) -> RepositoryError {
        RepositoryError::Storage {
            location: "s3://models/iris".into(),
            source: object_store::Error::Generic {
                store: "S3",
                source: message.to_string().into(),
            },
        }
    }

    #[test]
    fn failures_are_reported_once_per_class_and_status_not_per_attempt() {
        let unavailable = |id: &str| {
            storage(&format!(
                "Server returned non-2xx status code: 503 Service Unavailable, request {id} after 12ms"
            ))
        };
        assert_eq!(
            failure_signature(&unavailable("a1")),
            failure_signature(&unavailable("b2"))
        );
        let denied = storage("Server returned non-2xx status code: 403 Forbidden: AccessDenied");
        assert_ne!(
            failure_signature(&unavailable("a1")),
            failure_signature(&denied)
        );
        let missing = RepositoryError::NotFound {
            location: "/models/iris".into(),
        };
        assert!(failure_signature(&missing).starts_with(LISTING_FAILED));
    }
}
