//! The contract between the synchronous protocol front ends (TF Serving REST and gRPC) and
//! whatever owns the live set of models.
//!
//! The protocol crates only see [`ModelHub`]: find a servable for a request, report version
//! states, apply a new model list. The real implementation (repository watcher, version
//! policy, load/warm-up/unload) lives elsewhere; [`StaticHub`] serves a fixed [`ModelSet`]
//! and is what protocol tests use when they do not exercise reloading.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use soma_core::{ErrorKind, VersionSpec};

use crate::{ModelSet, RuntimeError, Servable};

/// TF Serving's `ServableState` (names and order as in `get_model_status.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServableState {
    Start,
    Loading,
    Available,
    Unloading,
    End,
}

impl ServableState {
    /// The enum value on the wire (`ModelVersionStatus.State`).
    pub fn code(self) -> i32 {
        match self {
            ServableState::Start => 10,
            ServableState::Loading => 20,
            ServableState::Available => 30,
            ServableState::Unloading => 40,
            ServableState::End => 50,
        }
    }

    /// TF Serving's JSON spelling, e.g. `AVAILABLE`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServableState::Start => "START",
            ServableState::Loading => "LOADING",
            ServableState::Available => "AVAILABLE",
            ServableState::Unloading => "UNLOADING",
            ServableState::End => "END",
        }
    }
}

/// The state of one model version; `error` is set when loading failed (state `END`), or
/// when loading its changed files failed while the files loaded before serve on (state
/// `AVAILABLE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStatus {
    pub version: i64,
    pub state: ServableState,
    pub error: Option<(ErrorKind, String)>,
}

/// How a request names a version: TF Serving's `version` / `version_label`, or neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSelector {
    Latest,
    Number(i64),
    Label(String),
}

/// A request for a servable the hub does not have, worded as TF Serving words it
/// (`Servable not found for request: Latest(iris)` / `Specific(iris, 3)`): every hub answers
/// a missing model or version with this, so clients that match TF Serving's text work.
pub fn servable_not_found(model: &str, selector: &VersionSelector) -> RuntimeError {
    let request = match selector {
        VersionSelector::Latest => format!("Latest({model})"),
        VersionSelector::Number(n) => format!("Specific({model}, {n})"),
        VersionSelector::Label(label) => format!("Label({model}, {label})"),
    };
    RuntimeError::NotFound(format!("Servable not found for request: {request}"))
}

impl From<VersionSpec> for VersionSelector {
    fn from(spec: VersionSpec) -> VersionSelector {
        match spec {
            VersionSpec::Latest => VersionSelector::Latest,
            VersionSpec::Number(n) => VersionSelector::Number(n),
        }
    }
}

/// TF Serving's `model_version_policy`. The default is `Latest(1)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    Latest(u32),
    All,
    Specific(BTreeSet<i64>),
}

impl Default for VersionPolicy {
    fn default() -> VersionPolicy {
        VersionPolicy::Latest(1)
    }
}

/// One entry of TF Serving's `model_config_list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    pub name: String,
    /// A local folder or an `s3://bucket/prefix`.
    pub base_path: String,
    pub policy: VersionPolicy,
    pub labels: BTreeMap<String, i64>,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the synchronous front ends need from the model owner.
pub trait ModelHub: Send + Sync + 'static {
    /// The names of the models served, sorted.
    fn models(&self) -> Vec<String>;

    /// The name a request's metrics are recorded under: the model's, if it is served;
    /// otherwise `""`, so that clients naming models that do not exist (any string, of any
    /// length) cannot add a series each (an audit grew `/metrics` to 400 MB that way).
    fn metrics_name<'a>(&self, model: &'a str) -> &'a str {
        if self.models().iter().any(|m| m == model) {
            model
        } else {
            ""
        }
    }

    /// The servable that answers a request. Only `AVAILABLE` versions are returned;
    /// `Latest` is the highest available version.
    fn servable(
        &self,
        model: &str,
        version: &VersionSelector,
    ) -> Result<Arc<Servable>, RuntimeError>;

    /// Every known version of `model` (or only `version`), newest first (TF Serving's order).
    /// Unknown model or version: `RuntimeError::NotFound`.
    fn status(
        &self,
        model: &str,
        version: Option<&VersionSelector>,
    ) -> Result<Vec<VersionStatus>, RuntimeError>;

    /// Replaces the served model list (TF Serving's `HandleReloadConfigRequest`): models
    /// not in `models` are unloaded, new ones are loaded. Resolves once the new list is
    /// applied; an error names what could not be applied.
    fn reload(&self, models: Vec<ModelConfig>) -> BoxFuture<'_, Result<(), RuntimeError>>;

    /// Ready to serve: there is at least one model and every model has an `AVAILABLE`
    /// version (REST's `/v2/health/ready`, gRPC's health service).
    fn is_ready(&self) -> bool {
        let models = self.models();
        let available = |model: &String| {
            self.status(model, None)
                .is_ok_and(|versions| versions.iter().any(|v| v.state == ServableState::Available))
        };
        !models.is_empty() && models.iter().all(available)
    }
}

/// A fixed set of loaded models: every loaded version is `AVAILABLE`; reloading is refused.
#[derive(Debug)]
pub struct StaticHub {
    models: Arc<ModelSet>,
}

impl StaticHub {
    pub fn new(models: Arc<ModelSet>) -> StaticHub {
        StaticHub { models }
    }
}

impl ModelHub for StaticHub {
    fn models(&self) -> Vec<String> {
        self.models
            .list()
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    fn servable(
        &self,
        model: &str,
        version: &VersionSelector,
    ) -> Result<Arc<Servable>, RuntimeError> {
        let spec = match version {
            VersionSelector::Latest => VersionSpec::Latest,
            VersionSelector::Number(n) => VersionSpec::Number(*n),
            // cortex.yaml has no labels: every label is unknown, a bad request as in TF
            // Serving.
            VersionSelector::Label(label) => {
                return Err(RuntimeError::InvalidInput(format!(
                    "Unrecognized servable version label: {label} (model '{model}' has no \
                     version labels)"
                )));
            }
        };
        self.models
            .resolve(Some(model), spec)
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => servable_not_found(model, version),
                _ => e,
            })
    }

    fn status(
        &self,
        model: &str,
        version: Option<&VersionSelector>,
    ) -> Result<Vec<VersionStatus>, RuntimeError> {
        let available = |v: i64| VersionStatus {
            version: v,
            state: ServableState::Available,
            error: None,
        };
        match version {
            None => {
                let versions = self
                    .models
                    .list()
                    .into_iter()
                    .find(|(name, _)| name == model)
                    .map(|(_, versions)| versions)
                    .ok_or_else(|| {
                        RuntimeError::NotFound(format!(
                            "Could not find any versions of model {model}"
                        ))
                    })?;
                Ok(versions.into_iter().rev().map(available).collect())
            }
            Some(selector) => Ok(vec![available(self.servable(model, selector)?.version())]),
        }
    }

    fn reload(&self, _models: Vec<ModelConfig>) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async {
            Err(RuntimeError::Unsupported(
                "this server's model list is fixed; reloading the model config is not supported"
                    .to_string(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::Doubler;

    #[test]
    fn a_static_hub_words_a_missing_servable_as_tf_serving() {
        let set = Arc::new(ModelSet::new("api", false));
        set.insert(Arc::new(
            Servable::new("iris", 1, Box::new(Doubler::new()), None).unwrap(),
        ));
        let hub = StaticHub::new(set);
        let message = |model: &str, selector: VersionSelector| {
            let err = hub.servable(model, &selector).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
            err.to_string()
        };
        assert_eq!(
            message("nope", VersionSelector::Latest),
            "Servable not found for request: Latest(nope)"
        );
        assert_eq!(
            message("iris", VersionSelector::Number(3)),
            "Servable not found for request: Specific(iris, 3)"
        );
        assert_eq!(
            hub.servable("iris", &VersionSelector::Latest)
                .unwrap()
                .version(),
            1
        );
    }
}
