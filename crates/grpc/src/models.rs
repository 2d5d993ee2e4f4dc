//! ModelService messages <-> the hub's version states and model configs.

use std::collections::{BTreeMap, BTreeSet};

use soma_grpc_proto::tensorflow::serving::{
    self as pb, ModelServerConfig, ModelVersionStatus, StatusProto,
    file_system_storage_path_source_config::servable_version_policy::PolicyChoice,
    model_server_config,
};
use soma_runtime::hub::ModelConfig;
use soma_runtime::{VersionPolicy, VersionStatus};
use tonic::{Code, Status};

use crate::status::invalid;

pub(crate) fn version_status(v: &VersionStatus) -> ModelVersionStatus {
    let status = match &v.error {
        None => StatusProto {
            error_code: Code::Ok as i32,
            error_message: String::new(),
        },
        Some((kind, message)) => StatusProto {
            error_code: kind.code(),
            error_message: message.clone(),
        },
    };
    ModelVersionStatus {
        version: v.version,
        state: v.state.code(),
        status: Some(status),
    }
}

/// The model list of a ReloadConfigRequest, checked.
pub(crate) fn model_configs(config: Option<ModelServerConfig>) -> Result<Vec<ModelConfig>, Status> {
    let Some(model_server_config::Config::ModelConfigList(list)) = config.and_then(|c| c.config)
    else {
        return Err(invalid(
            "ServerModelConfig type not supported by HandleReloadConfigRequest. Only \
             ModelConfigList is currently supported",
        ));
    };
    let mut names = BTreeSet::new();
    list.config
        .into_iter()
        .map(|c| {
            if !names.insert(c.name.clone()) {
                return Err(invalid(format!(
                    "Illegal to list model {} multiple times in config list",
                    c.name
                )));
            }
            model_config(c)
        })
        .collect()
}

fn model_config(c: pb::ModelConfig) -> Result<ModelConfig, Status> {
    if c.name.is_empty() {
        return Err(invalid("a model config has no name"));
    }
    if c.base_path.is_empty() {
        return Err(invalid(format!("model {} has no base_path", c.name)));
    }
    if !c.model_platform.is_empty() && c.model_platform != "tensorflow" {
        return Err(invalid(format!(
            "model {}: model_platform '{}' is not supported; soma serves \"tensorflow\"",
            c.name, c.model_platform
        )));
    }
    let policy = match c.model_version_policy.and_then(|p| p.policy_choice) {
        None => VersionPolicy::default(),
        // TF Serving's documented default for num_versions is 1.
        Some(PolicyChoice::Latest(l)) => VersionPolicy::Latest(l.num_versions.max(1)),
        Some(PolicyChoice::All(_)) => VersionPolicy::All,
        Some(PolicyChoice::Specific(s)) if s.versions.is_empty() => {
            return Err(invalid(format!(
                "model {}: model_version_policy specific lists no versions",
                c.name
            )));
        }
        Some(PolicyChoice::Specific(s)) => {
            VersionPolicy::Specific(s.versions.into_iter().collect())
        }
    };
    Ok(ModelConfig {
        name: c.name,
        base_path: c.base_path,
        policy,
        labels: c.version_labels.into_iter().collect::<BTreeMap<_, _>>(),
    })
}
