//! The shared, lock-protected view of every model's versions that requests read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use soma_core::ErrorKind;
use soma_runtime::hub::{ModelConfig, servable_not_found};
use soma_runtime::{RuntimeError, Servable, ServableState, VersionSelector, VersionStatus};

/// One version as requests and status calls see it.
#[derive(Debug, Clone)]
pub(crate) struct VersionEntry {
    pub(crate) state: ServableState,
    pub(crate) error: Option<(ErrorKind, String)>,
    /// Set only while `AVAILABLE`.
    pub(crate) servable: Option<Arc<Servable>>,
}

impl VersionEntry {
    pub(crate) fn new(state: ServableState) -> VersionEntry {
        VersionEntry {
            state,
            error: None,
            servable: None,
        }
    }
}

/// TF Serving's rule for a model's `wanted` labels: each points at a version of `model` (its
/// state now; `None`: a model not served yet) that is AVAILABLE. With
/// `allow_unavailable` (`--allow_version_labels_for_unavailable_models`) a new label may
/// wait for its version, but a label in use moves only to an available version, so that
/// moving it never drops requests (as in TF Serving). Versions in `leaving` are about to
/// be unloaded, and count as unavailable.
pub(crate) fn check_labels(
    name: &str,
    model: Option<&ModelState>,
    wanted: &BTreeMap<String, i64>,
    allow_unavailable: bool,
    leaving: &BTreeSet<i64>,
) -> Result<(), String> {
    for (label, &version) in wanted {
        let moved_from = model
            .and_then(|m| m.labels.get(label))
            .copied()
            .filter(|&old| old != version);
        let may_wait = allow_unavailable && moved_from.is_none();
        let available = model.and_then(|m| m.available(version)).is_some();
        if !may_wait && (!available || leaving.contains(&version)) {
            let why = match moved_from {
                Some(old) if allow_unavailable => format!(
                    "label '{label}' points at version {old}, and a label moves only to an \
                     available version"
                ),
                _ => format!("label '{label}'"),
            };
            return Err(format!(
                "Request to assign label to version {version} of model {name}, which is not \
                 currently available for inference ({why})"
            ));
        }
    }
    Ok(())
}

/// One model: its config, labels in force and versions.
#[derive(Debug, Clone)]
pub(crate) struct ModelState {
    pub(crate) config: ModelConfig,
    /// The labels applied (a config whose labels point at unavailable versions is refused).
    pub(crate) labels: BTreeMap<String, i64>,
    pub(crate) versions: BTreeMap<i64, VersionEntry>,
}

impl ModelState {
    pub(crate) fn new(config: ModelConfig) -> ModelState {
        ModelState {
            config,
            labels: BTreeMap::new(),
            versions: BTreeMap::new(),
        }
    }

    pub(crate) fn available(&self, version: i64) -> Option<&Arc<Servable>> {
        self.versions
            .get(&version)
            .filter(|v| v.state == ServableState::Available)
            .and_then(|v| v.servable.as_ref())
    }

    /// TF Serving's lookup and its error messages (`Servable not found for request: ...`).
    pub(crate) fn servable(
        &self,
        model: &str,
        selector: &VersionSelector,
    ) -> Result<Arc<Servable>, RuntimeError> {
        let found = match selector {
            VersionSelector::Latest => self
                .versions
                .iter()
                .rev()
                .find_map(|(&v, _)| self.available(v)),
            VersionSelector::Number(n) => self.available(*n),
            VersionSelector::Label(label) => {
                // As TF Serving: the label names a version, and the request is then for it.
                let version = *self.labels.get(label).ok_or_else(|| unknown_label(label))?;
                return self
                    .available(version)
                    .cloned()
                    .ok_or_else(|| servable_not_found(model, &VersionSelector::Number(version)));
            }
        };
        found
            .cloned()
            .ok_or_else(|| servable_not_found(model, selector))
    }

    pub(crate) fn status(
        &self,
        model: &str,
        selector: Option<&VersionSelector>,
    ) -> Result<Vec<VersionStatus>, RuntimeError> {
        let status = |(&version, entry): (&i64, &VersionEntry)| VersionStatus {
            version,
            state: entry.state,
            error: entry.error.clone(),
        };
        let version = match selector {
            None if self.versions.is_empty() => {
                return Err(RuntimeError::NotFound(format!(
                    "Could not find any versions of model {model}"
                )));
            }
            // Newest first, as TF Serving lists them (its monitor's version map is sorted
            // with `std::greater`): clients read `model_version_status[0]` as the newest.
            None => return Ok(self.versions.iter().rev().map(status).collect()),
            Some(VersionSelector::Latest) => {
                return self
                    .status(model, None)
                    .map(|all| all.into_iter().take(1).collect());
            }
            Some(VersionSelector::Number(n)) => *n,
            Some(VersionSelector::Label(label)) => {
                *self.labels.get(label).ok_or_else(|| unknown_label(label))?
            }
        };
        self.versions
            .get_key_value(&version)
            .map(|found| vec![status(found)])
            .ok_or_else(|| {
                RuntimeError::NotFound(format!("Could not find version {version} of model {model}"))
            })
    }
}

/// A label the model does not have: a bad request in TF Serving (INVALID_ARGUMENT, HTTP
/// 400), not a missing servable.
fn unknown_label(label: &str) -> RuntimeError {
    RuntimeError::InvalidInput(format!("Unrecognized servable version label: {label}"))
}
