use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};
use soma_core::VersionSpec;

use crate::{Prediction, RuntimeError, Servable};

/// Cortex's internal name for the model of `handler.models.path`.
pub const SINGLE_MODEL_NAME: &str = "_cortex_default";

type Versions = BTreeMap<i64, Arc<Servable>>;

/// Every loaded model version of one API.
///
/// Reads take a short read lock to clone an `Arc<Servable>`; the prediction itself runs
/// without any lock held, so versions can be added and removed while requests are running.
#[derive(Debug)]
pub struct ModelSet {
    api: String,
    single: bool,
    models: RwLock<BTreeMap<String, Versions>>,
    /// Versions that failed to load, with why: a request for one says so.
    failures: RwLock<BTreeMap<(String, i64), String>>,
}

impl ModelSet {
    /// `single` is true for `models.path`: requests may then omit (or give any) model name.
    pub fn new(api: impl Into<String>, single: bool) -> ModelSet {
        ModelSet {
            api: api.into(),
            single,
            models: RwLock::new(BTreeMap::new()),
            failures: RwLock::new(BTreeMap::new()),
        }
    }

    pub fn api(&self) -> &str {
        &self.api
    }

    pub fn is_single(&self) -> bool {
        self.single
    }

    /// Adds (or replaces) one model version.
    pub fn insert(&self, servable: Arc<Servable>) {
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        models
            .entry(servable.model().to_string())
            .or_default()
            .insert(servable.version(), servable);
    }

    /// Records that `version` of `model` failed to load (`None`: the failure no longer
    /// stands, its files changed or went), for the error of a request that asks for it.
    pub fn note_failure(&self, model: &str, version: i64, failure: Option<&str>) {
        let mut failures = self.failures.write().unwrap_or_else(|e| e.into_inner());
        let key = (model.to_string(), version);
        match failure {
            Some(why) => failures.insert(key, why.to_string()),
            None => failures.remove(&key),
        };
    }

    /// Removes one model version; in-flight predictions keep their `Arc` until they finish.
    pub fn remove(&self, model: &str, version: i64) -> Option<Arc<Servable>> {
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        let versions = models.get_mut(model)?;
        let removed = versions.remove(&version);
        if versions.is_empty() {
            models.remove(model);
        }
        removed
    }

    /// Model names with their loaded versions, ascending.
    pub fn list(&self) -> Vec<(String, Vec<i64>)> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        models
            .iter()
            .map(|(name, versions)| (name.clone(), versions.keys().copied().collect()))
            .collect()
    }

    /// Finds the servable for a request, following Cortex's rules: with a single model the
    /// name is optional; otherwise it is required. "latest" is the highest loaded version.
    pub fn resolve(
        &self,
        model: Option<&str>,
        version: VersionSpec,
    ) -> Result<Arc<Servable>, RuntimeError> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        let names = || {
            let quoted: Vec<String> = models.keys().map(|k| format!("'{k}'")).collect();
            format!("[{}]", quoted.join(", "))
        };
        let (name, versions) = if self.single {
            models.iter().next().ok_or_else(|| {
                RuntimeError::NotFound(format!("API '{}': its model is not loaded", self.api))
            })?
        } else {
            let Some(name) = model else {
                return Err(RuntimeError::InvalidInput(format!(
                    "model_name was not specified, choose one of the following: {}",
                    names()
                )));
            };
            models.get_key_value(name).ok_or_else(|| {
                RuntimeError::NotFound(format!(
                    "model '{name}' wasn't found in the list of available models: {}",
                    names()
                ))
            })?
        };
        let found = match version {
            VersionSpec::Latest => versions.values().next_back(),
            VersionSpec::Number(n) => versions.get(&n),
        };
        found.cloned().ok_or_else(|| {
            let available: Vec<String> = versions.keys().map(i64::to_string).collect();
            // A single model's name is soma's own (`_cortex_default`), not the user's.
            let model = match self.single {
                true => "the model".to_string(),
                false => format!("model '{name}'"),
            };
            let failures = self.failures.read().unwrap_or_else(|e| e.into_inner());
            let failure = match version {
                VersionSpec::Number(n) => failures.get(&(name.clone(), n)),
                VersionSpec::Latest => None,
            };
            match failure {
                Some(why) => RuntimeError::NotFound(format!(
                    "{model} version {version} failed to load: {why}; available versions: [{}]",
                    available.join(", ")
                )),
                None => RuntimeError::NotFound(format!(
                    "{model} has no version {version}; available versions: [{}]",
                    available.join(", ")
                )),
            }
        })
    }

    /// Resolves the model version and predicts from JSON inputs.
    pub fn predict_json(
        &self,
        model: Option<&str>,
        version: VersionSpec,
        signature: Option<&str>,
        inputs: &Map<String, Value>,
    ) -> Result<Prediction, RuntimeError> {
        self.resolve(model, version)?
            .predict_json(signature, inputs)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fake::Doubler;

    fn servable(model: &str, version: i64) -> Arc<Servable> {
        Arc::new(Servable::new(model, version, Box::new(Doubler::new()), None).unwrap())
    }

    fn inputs(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn latest_is_the_numerically_highest_version() {
        let set = ModelSet::new("api", false);
        for v in [1, 2, 9, 10] {
            set.insert(servable("iris", v));
        }
        assert_eq!(
            set.resolve(Some("iris"), VersionSpec::Latest)
                .unwrap()
                .version(),
            10
        );
        assert_eq!(
            set.resolve(Some("iris"), VersionSpec::Number(9))
                .unwrap()
                .version(),
            9
        );
        let err = set
            .resolve(Some("iris"), VersionSpec::Number(3))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "model 'iris' has no version 3; available versions: [1, 2, 9, 10]"
        );
        // A version that failed to load says so.
        set.note_failure("iris", 3, Some("bad files"));
        let err = set
            .resolve(Some("iris"), VersionSpec::Number(3))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "model 'iris' version 3 failed to load: bad files; available versions: [1, 2, 9, 10]"
        );
        set.note_failure("iris", 3, None);
        let err = set
            .resolve(Some("iris"), VersionSpec::Number(3))
            .unwrap_err();
        assert!(err.to_string().contains("has no version 3"), "{err}");
        set.remove("iris", 10);
        assert_eq!(
            set.resolve(Some("iris"), VersionSpec::Latest)
                .unwrap()
                .version(),
            9
        );
    }

    #[test]
    fn named_models_need_a_known_name() {
        let set = ModelSet::new("api", false);
        set.insert(servable("a", 1));
        set.insert(servable("b", 1));
        let err = set.resolve(None, VersionSpec::Latest).unwrap_err();
        assert_eq!(
            err.to_string(),
            "model_name was not specified, choose one of the following: ['a', 'b']"
        );
        let err = set.resolve(Some("c"), VersionSpec::Latest).unwrap_err();
        assert_eq!(err.kind(), soma_core::ErrorKind::NotFound);
        assert!(
            err.to_string()
                .contains("'c' wasn't found in the list of available models: ['a', 'b']")
        );
    }

    #[test]
    fn single_model_ignores_the_name() {
        let set = ModelSet::new("api", true);
        set.insert(servable(SINGLE_MODEL_NAME, 1));
        assert!(set.resolve(None, VersionSpec::Latest).is_ok());
        assert!(set.resolve(Some("anything"), VersionSpec::Latest).is_ok());
        let missing = set.resolve(None, VersionSpec::Number(7)).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "the model has no version 7; available versions: [1]"
        );
    }

    #[test]
    fn predict_checks_inputs_and_keeps_shapes() {
        let set = ModelSet::new("api", true);
        set.insert(servable(SINGLE_MODEL_NAME, 1));
        let p = set
            .predict_json(
                None,
                VersionSpec::Latest,
                None,
                &inputs(json!({"x": [[1, 2.5], [3, 4]]})),
            )
            .unwrap();
        assert_eq!(p.signature, "serving_default");
        assert_eq!(
            Value::Object(p.outputs_json()),
            json!({"y": [[2.0, 5.0], [6.0, 8.0]]})
        );

        let missing = set
            .predict_json(None, VersionSpec::Latest, None, &Map::new())
            .unwrap_err();
        assert_eq!(
            missing.to_string(),
            "missing input 'x' for model '_cortex_default' version 1 signature 'serving_default', \
             which takes: x (float32, (-1, 2))"
        );
        let unknown = set
            .predict_json(
                None,
                VersionSpec::Latest,
                None,
                &inputs(json!({"x": [[1, 2]], "z": 1})),
            )
            .unwrap_err();
        assert!(
            unknown.to_string().starts_with("unknown input 'z'"),
            "{unknown}"
        );
        let shape = set
            .predict_json(
                None,
                VersionSpec::Latest,
                None,
                &inputs(json!({"x": [1, 2]})),
            )
            .unwrap_err();
        assert_eq!(shape.kind(), soma_core::ErrorKind::InvalidArgument);
        let sig = set
            .predict_json(
                None,
                VersionSpec::Latest,
                Some("nope"),
                &inputs(json!({"x": [[1, 2]]})),
            )
            .unwrap_err();
        assert!(
            sig.to_string().contains(
                "no signature 'nope'; available: broken, picky, serving_default, stubborn"
            )
        );
    }

    #[test]
    fn tensor_inputs_are_checked_too() {
        let s = servable("m", 1);
        let mut good = BTreeMap::new();
        good.insert(
            "x".to_string(),
            soma_core::Tensor::from_slice(vec![1, 2], &[1f32, 2.0]).unwrap(),
        );
        assert!(s.predict(None, &good).is_ok());
        let mut wrong = BTreeMap::new();
        wrong.insert(
            "x".to_string(),
            soma_core::Tensor::from_slice(vec![1, 2], &[1i64, 2]).unwrap(),
        );
        let err = s.predict(None, &wrong).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input 'x': expected dtype float32 but got int64"
        );
    }

    #[test]
    fn engine_failures_keep_their_kind_and_warm_up_explains_re_export() {
        let s = Servable::new("m", 1, Box::new(Doubler::new()), Some("broken")).unwrap();
        let err = s.warm_up().unwrap_err();
        assert!(
            err.to_string()
                .contains("failed its warm-up prediction: variable not initialised")
        );
        assert!(err.to_string().contains("model.export(path)"));
        let err = s
            .predict_json(None, &inputs(json!({"x": [[1, 2]]})))
            .unwrap_err();
        assert_eq!(err.kind(), soma_core::ErrorKind::FailedPrecondition);
    }

    #[test]
    fn numbers_refused_are_tried_again_with_ones_then_fail_with_the_hint() {
        // (A string input that refuses the empty string is excused: tf2_classifier's
        // tests load such a model in TensorFlow.)
        let picky = Servable::new("m", 1, Box::new(Doubler::new()), Some("picky")).unwrap();
        picky.warm_up().unwrap();
        let stubborn = Servable::new("m", 1, Box::new(Doubler::new()), Some("stubborn")).unwrap();
        let err = stubborn.warm_up().unwrap_err().to_string();
        assert!(err.contains("two or more, please"), "{err}");
        assert!(err.contains("may come from different exports"), "{err}");
        assert!(err.contains("tf_serving_warmup_requests"), "{err}");
    }
}
