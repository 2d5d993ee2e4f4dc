//! `ModelSpec` -> which servable answers, with TF Serving's wording for lookup failures.

use std::sync::Arc;

use soma_core::ErrorKind;
use soma_grpc_proto::tensorflow::serving::{ModelSpec, model_spec::VersionChoice};
use soma_runtime::{ModelHub, Servable, VersionSelector};
use tonic::Status;

use crate::status::{from_runtime, invalid, status};

/// A request's model name, version choice and signature (`None`: the default).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) version: VersionSelector,
    pub(crate) signature: Option<String>,
}

/// How TF Serving begins the message of a request for a servable it does not have.
const NOT_FOUND: &str = "Servable not found for request:";

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
    /// NOT_FOUND with TF Serving's `Servable not found for request: ...` text.
    pub(crate) fn resolve(&self, hub: &dyn ModelHub) -> Result<Arc<Servable>, Status> {
        hub.servable(&self.name, &self.version)
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound if !e.to_string().starts_with(NOT_FOUND) => status(
                    ErrorKind::NotFound,
                    format!("{NOT_FOUND} {}; {e}", self.request_text()),
                ),
                _ => from_runtime(&e),
            })
    }

    /// TF Serving's rendering of a servable request: `Latest(iris)`, `Specific(iris, 2)`.
    fn request_text(&self) -> String {
        match &self.version {
            VersionSelector::Latest => format!("Latest({})", self.name),
            VersionSelector::Number(v) => format!("Specific({}, {v})", self.name),
            VersionSelector::Label(l) => format!("Label({}, {l})", self.name),
        }
    }
}

/// The `model_spec` of a response: the served name, version and signature.
pub(crate) fn response_spec(servable: &Servable, signature: Option<&str>) -> ModelSpec {
    ModelSpec {
        name: servable.model().to_string(),
        version_choice: Some(VersionChoice::Version(servable.version())),
        signature_name: signature.unwrap_or_default().to_string(),
    }
}
