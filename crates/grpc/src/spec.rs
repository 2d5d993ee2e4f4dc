//! `ModelSpec` -> which servable answers, with TF Serving's wording for lookup failures.

use std::sync::Arc;

use soma_grpc_proto::tensorflow::serving::{ModelSpec, model_spec::VersionChoice};
use soma_runtime::{ModelHub, Servable, VersionSelector};
use tonic::Status;

use crate::status::{from_runtime, invalid};

/// A request's model name, version choice and signature (`None`: the default).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) version: VersionSelector,
    pub(crate) signature: Option<String>,
}

impl Target {
    pub(crate) fn from_spec(spec: Option<&ModelSpec>) -> Result<Target, Status> {
        let spec = spec.ok_or_else(|| invalid("Missing ModelSpec"))?;
        if spec.name.is_empty() {
            return Err(invalid("Missing model name in request."));
        }
        let version = match &spec.version_choice {
            None => VersionSelector::Latest,
            Some(VersionChoice::Version(v)) => VersionSelector::Number(*v),
            Some(VersionChoice::VersionLabel(label)) => VersionSelector::Label(label.clone()),
        };
        Ok(Target {
            name: spec.name.clone(),
            version,
            signature: Some(spec.signature_name.clone()).filter(|s| !s.is_empty()),
        })
    }

    /// The servable for this request; only AVAILABLE versions are served. A missing one is
    /// NOT_FOUND, worded by the hub as TF Serving words it (`Servable not found for
    /// request: ...`).
    pub(crate) fn resolve(&self, hub: &dyn ModelHub) -> Result<Arc<Servable>, Status> {
        hub.servable(&self.name, &self.version)
            .map_err(|e| from_runtime(&e))
    }
}

/// The `model_spec` of a response: the model's name as the request gave it (TF Serving's
/// servable name; soma's may differ, as `soma serve` names a single-model API's model after
/// the API), the version that answered and the signature.
pub(crate) fn response_spec(name: &str, servable: &Servable, signature: Option<&str>) -> ModelSpec {
    ModelSpec {
        name: name.to_string(),
        version_choice: Some(VersionChoice::Version(servable.version())),
        signature_name: signature.unwrap_or_default().to_string(),
    }
}
