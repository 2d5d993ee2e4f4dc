//! Polling a model folder for new, changed and removed versions.

use std::collections::BTreeMap;
use std::time::Duration;

use soma_core::ModelLocation;
use tokio::sync::mpsc;

use crate::error::RepositoryError;
use crate::layout::{Validator, VersionFiles, analyze};
use crate::store::{ModelStore, S3Settings};

/// What changed in a watched model folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryEvent {
    /// A new version passed the layout check and stayed the same for two polls.
    VersionAdded { version: i64 },
    /// A known version disappeared (or no longer passes the layout check).
    VersionRemoved { version: i64 },
    /// A known version's files, sizes or modification times changed (and settled again).
    VersionChanged { version: i64 },
    /// Listing failed or the folder's layout is invalid; nothing was removed because of it.
    Error { message: String },
}

/// Polls one model folder (local or S3).
///
/// The first [`poll_once`](Watcher::poll_once) takes the initial snapshot and returns no
/// events: versions present then are considered known (the caller discovered them already).
/// Afterwards a version is reported only once it passes the layout check *and* its file list
/// and sizes were identical on two consecutive polls, so half-copied folders are not loaded.
#[derive(Debug)]
pub struct Watcher {
    location: ModelLocation,
    validator: Validator,
    poll_interval: Duration,
    settings: S3Settings,
    store: Option<ModelStore>,
    initialized: bool,
    /// Versions reported (or present at the initial snapshot).
    known: BTreeMap<i64, VersionFiles>,
    /// Valid versions seen at the previous poll.
    previous: BTreeMap<i64, VersionFiles>,
    last_error: Option<String>,
}

impl Watcher {
    /// A watcher using S3 settings from the environment.
    pub fn new(location: ModelLocation, validator: Validator, poll_interval: Duration) -> Watcher {
        Watcher::with_settings(location, validator, poll_interval, S3Settings::default())
    }

    /// A watcher with explicit S3 settings.
    pub fn with_settings(
        location: ModelLocation,
        validator: Validator,
        poll_interval: Duration,
        settings: S3Settings,
    ) -> Watcher {
        Watcher {
            location,
            validator,
            poll_interval,
            settings,
            store: None,
            initialized: false,
            known: BTreeMap::new(),
            previous: BTreeMap::new(),
            last_error: None,
        }
    }

    /// The versions currently considered present.
    pub fn versions(&self) -> &BTreeMap<i64, VersionFiles> {
        &self.known
    }

    /// Lists the folder once and returns what changed since the previous poll. A listing
    /// failure is returned as `Err` (and as an `Error` event by [`spawn`](Watcher::spawn));
    /// it never causes removals.
    pub async fn poll_once(&mut self) -> Result<Vec<RepositoryEvent>, RepositoryError> {
        let store = match &self.store {
            Some(store) => store,
            None => {
                let store = ModelStore::open(&self.location, &self.settings).await?;
                self.store.insert(store)
            }
        };
        let listing = match store.list().await {
            Ok(listing) => listing,
            Err(e) => {
                if matches!(self.location, ModelLocation::Local(_)) {
                    // Re-open next time (the folder may be re-created).
                    self.store = None;
                }
                return Err(e);
            }
        };
        let analysis = analyze(&listing, self.validator);
        let mut events = Vec::new();
        let layout_error = analysis
            .layout
            .as_ref()
            .err()
            .filter(|_| !listing.is_empty())
            .map(|problem| format!("{}: {problem}", self.location));
        if layout_error != self.last_error {
            if let Some(message) = &layout_error {
                events.push(RepositoryEvent::Error {
                    message: message.clone(),
                });
            }
            self.last_error = layout_error;
        }
        let current: BTreeMap<i64, VersionFiles> = analysis
            .versions
            .into_iter()
            .filter_map(|(v, r)| r.ok().map(|files| (v, files)))
            .collect();
        if !self.initialized {
            self.initialized = true;
            self.known = current.clone();
            self.previous = current;
            return Ok(events);
        }
        for (version, files) in &current {
            let settled = self
                .previous
                .get(version)
                .is_some_and(|before| before.files == files.files);
            if !settled {
                continue;
            }
            match self.known.get(version) {
                None => events.push(RepositoryEvent::VersionAdded { version: *version }),
                Some(known) if known != files => {
                    events.push(RepositoryEvent::VersionChanged { version: *version })
                }
                Some(_) => continue,
            }
            self.known.insert(*version, files.clone());
        }
        let removed: Vec<i64> = self
            .known
            .keys()
            .filter(|v| !current.contains_key(v))
            .copied()
            .collect();
        for version in removed {
            self.known.remove(&version);
            events.push(RepositoryEvent::VersionRemoved { version });
        }
        self.previous = current;
        Ok(events)
    }

    /// Polls in a background task every `poll_interval` (the first poll, the snapshot,
    /// right away) and sends the events. The task stops when the receiver is dropped.
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
                let events = match self.poll_once().await {
                    Ok(events) => events,
                    Err(e) => {
                        tracing::warn!(model = %self.location, error = %e, "model folder poll failed");
                        vec![RepositoryEvent::Error {
                            message: e.to_string(),
                        }]
                    }
                };
                for event in events {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }
}
