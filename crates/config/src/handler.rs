use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use serde_yaml::Value;
use soma_core::ModelLocation;

use crate::walk::{Walker, get};
use crate::{
    Compute, Dependencies, HandlerSpec, HandlerType, LogLevel, ModelSource, ModelsSpec, NamedModel,
    ThreadPools, quantity,
};

const HANDLER_KEYS: &[&str] = &[
    "type",
    "path",
    "models",
    "multi_model_reloading",
    "server_side_batching",
    "protobuf_path",
    "processes_per_replica",
    "threads_per_process",
    "config",
    "python_path",
    "image",
    "tensorflow_serving_image",
    "env",
    "log_level",
    "shm_size",
    "dependencies",
];
const MODELS_KEYS: &[&str] = &[
    "path",
    "paths",
    "dir",
    "signature_key",
    "cache_size",
    "disk_cache_size",
    "intra_op_threads",
    "inter_op_threads",
];
const PATHS_KEYS: &[&str] = &[
    "name",
    "path",
    "signature_key",
    "intra_op_threads",
    "inter_op_threads",
];
/// Cortex's internal name for the model of `models.path`.
const RESERVED_MODEL_NAME: &str = "_cortex_default";

pub(crate) fn handler(
    walker: &mut Walker,
    value: &Value,
    project_dir: &Path,
    compute: Option<&Compute>,
) -> Option<HandlerSpec> {
    let map = walker.mapping(&["handler"], value, HANDLER_KEYS)?;
    let handler_type = match get(map, "type").map(|v| walker.string(&["handler", "type"], v)) {
        None => {
            walker.error(&["handler", "type"], "key must be specified");
            None
        }
        Some(None) => None,
        Some(Some(t)) => match t.as_str() {
            "python" => Some(HandlerType::Python),
            "tensorflow" => Some(HandlerType::TensorFlow),
            "onnx" => {
                walker.error(
                    &["handler", "type"],
                    "the onnx handler type has been replaced by the python handler type; please use the python handler type instead (all onnx models are fully supported by the python handler type)",
                );
                None
            }
            other => {
                walker.error(
                    &["handler", "type"],
                    format!("invalid value {other:?}; must be one of python, tensorflow"),
                );
                None
            }
        },
    };
    let path = handler_path(walker, get(map, "path"), project_dir);
    for key in [
        "multi_model_reloading",
        "server_side_batching",
        "protobuf_path",
    ] {
        if get(map, key).is_some() {
            walker.error(
                &["handler", key],
                format!("{key} key is not supported for AsyncAPI kind"),
            );
        }
    }
    let mut one_only = |key: &str| -> u32 {
        let n = get(map, key)
            .and_then(|v| walker.count(&["handler", key], v))
            .unwrap_or(1);
        if n != 1 {
            walker.error(&["handler", key], format!("{key} key is not supported for AsyncAPI kind (it must be 1: one workload runs at a time per worker)"));
        }
        n
    };
    let processes_per_replica = one_only("processes_per_replica");
    let threads_per_process = one_only("threads_per_process");
    let models = match (get(map, "models"), handler_type) {
        (Some(v), Some(HandlerType::TensorFlow)) => models(walker, v, project_dir),
        (Some(_), Some(HandlerType::Python)) => {
            walker.error(
                &["handler", "models"],
                "models is not a supported field for the python handler type",
            );
            None
        }
        (None, Some(HandlerType::TensorFlow)) => {
            walker.error(
                &["handler"],
                "models field must be defined for the tensorflow handler type",
            );
            None
        }
        _ => None,
    };
    if handler_type == Some(HandlerType::Python) && get(map, "tensorflow_serving_image").is_some() {
        walker.error(
            &["handler", "tensorflow_serving_image"],
            "tensorflow_serving_image is not a supported field for the python handler type",
        );
    }
    let config = config_map(walker, get(map, "config"));
    let python_path = get(map, "python_path").and_then(|v| python_path(walker, v, project_dir));
    let env = env(walker, get(map, "env"));
    let log_level = match get(map, "log_level")
        .and_then(|v| walker.string(&["handler", "log_level"], v))
        .as_deref()
    {
        None | Some("info") => LogLevel::Info,
        Some("debug") => LogLevel::Debug,
        Some("warning") => LogLevel::Warning,
        Some("error") => LogLevel::Error,
        Some(other) => {
            walker.error(
                &["handler", "log_level"],
                format!("invalid value {other:?}; must be one of debug, info, warning, error"),
            );
            LogLevel::Info
        }
    };
    let shm_size = get(map, "shm_size").and_then(|v| shm_size(walker, v, compute));
    let dependencies = dependencies(walker, get(map, "dependencies"));
    let image = get(map, "image").and_then(|v| walker.string(&["handler", "image"], v));
    let tensorflow_serving_image = get(map, "tensorflow_serving_image")
        .and_then(|v| walker.string(&["handler", "tensorflow_serving_image"], v));
    if handler_type == Some(HandlerType::TensorFlow) && models.is_none() {
        return None;
    }
    Some(HandlerSpec {
        handler_type: handler_type?,
        path: path?,
        models,
        config: config?,
        python_path,
        image,
        tensorflow_serving_image,
        env: env?,
        log_level,
        shm_size,
        dependencies: dependencies?,
        processes_per_replica,
        threads_per_process,
    })
}

fn handler_path(walker: &mut Walker, value: Option<&Value>, project_dir: &Path) -> Option<PathBuf> {
    let at = ["handler", "path"];
    let Some(value) = value else {
        walker.error(&at, "key must be specified");
        return None;
    };
    let text = walker.string(&at, value)?;
    if text.ends_with(".pickle") {
        walker.error(&at, "pickled handlers (.pickle) are not supported by soma; point handler.path at a .py file");
        return None;
    }
    if !text.ends_with(".py") {
        walker.error(&at, format!("{text}: must be a .py file"));
        return None;
    }
    if !project_dir.join(&text).is_file() {
        walker.error(
            &at,
            format!(
                "{text}: file does not exist in the project folder {}",
                project_dir.display()
            ),
        );
        return None;
    }
    Some(PathBuf::from(text))
}

fn python_path(walker: &mut Walker, value: &Value, project_dir: &Path) -> Option<PathBuf> {
    let at = ["handler", "python_path"];
    let text = walker.string(&at, value)?;
    let path = Path::new(&text);
    if path.is_absolute() || text.starts_with('~') {
        walker.error(&at, format!("{text}: must be a relative path"));
        return None;
    }
    if path.components().all(|c| c == Component::CurDir) {
        walker.error(&at, format!("{text}: is the project folder, which is on the Python path already; remove python_path"));
        return None;
    }
    if !project_dir.join(path).is_dir() {
        walker.error(
            &at,
            format!(
                "{text}: folder does not exist in the project folder {}",
                project_dir.display()
            ),
        );
        return None;
    }
    Some(path.to_path_buf())
}

fn config_map(
    walker: &mut Walker,
    value: Option<&Value>,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let Some(value) = value else {
        return Some(serde_json::Map::new());
    };
    if !value.is_mapping() {
        walker.error(&["handler", "config"], "must be a map with string keys");
        return None;
    }
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        Ok(_) | Err(_) => {
            walker.error(
                &["handler", "config"],
                "must be a map with string keys and JSON-compatible values",
            );
            None
        }
    }
}

fn env(walker: &mut Walker, value: Option<&Value>) -> Option<BTreeMap<String, String>> {
    let Some(value) = value else {
        return Some(BTreeMap::new());
    };
    let Value::Mapping(map) = value else {
        walker.error(&["handler", "env"], "must be a map of strings");
        return None;
    };
    let mut env = BTreeMap::new();
    for (key, v) in map {
        let (Some(key), Some(v)) = (key.as_str(), scalar_string(v)) else {
            walker.error(&["handler", "env"], "must be a map of strings");
            return None;
        };
        if key.starts_with("CORTEX_") {
            walker.error(
                &["handler", "env", key],
                "environment variables starting with CORTEX_ are reserved",
            );
        }
        env.insert(key.to_string(), v);
    }
    Some(env)
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn shm_size(walker: &mut Walker, value: &Value, compute: Option<&Compute>) -> Option<String> {
    let at = ["handler", "shm_size"];
    let text = scalar_string(value)?;
    let Some(size) = quantity::bytes(&text) else {
        walker.error(
            &at,
            format!("{text:?} is not a memory quantity (e.g. 64Mi)"),
        );
        return None;
    };
    if let Some(mem) = compute.and_then(|c| c.mem.as_deref())
        && quantity::bytes(mem).is_some_and(|m| size > m)
    {
        walker.error(
            &at,
            format!("handler.shm_size ({text}) cannot exceed compute.mem ({mem})"),
        );
    }
    Some(text)
}

fn dependencies(walker: &mut Walker, value: Option<&Value>) -> Option<Dependencies> {
    let mut deps = Dependencies {
        pip: "requirements.txt".into(),
        conda: "conda-packages.txt".into(),
        shell: "dependencies.sh".into(),
    };
    let Some(value) = value else {
        return Some(deps);
    };
    let map = walker.mapping(
        &["handler", "dependencies"],
        value,
        &["pip", "conda", "shell"],
    )?;
    for (key, slot) in [
        ("pip", &mut deps.pip),
        ("conda", &mut deps.conda),
        ("shell", &mut deps.shell),
    ] {
        if let Some(v) =
            get(map, key).and_then(|v| walker.string(&["handler", "dependencies", key], v))
        {
            *slot = v;
        }
    }
    Some(deps)
}

fn models(walker: &mut Walker, value: &Value, project_dir: &Path) -> Option<ModelsSpec> {
    let base = ["handler", "models"];
    let map = walker.mapping(&base, value, MODELS_KEYS)?;
    for key in ["cache_size", "disk_cache_size"] {
        if get(map, key).is_some() {
            walker.error(
                &base,
                format!("{key} key is not supported for AsyncAPI kind"),
            );
        }
    }
    let signature_key = get(map, "signature_key")
        .and_then(|v| signature_key(walker, &["handler", "models", "signature_key"], v));
    let threads = thread_pools(walker, &base, map);
    let (path, paths, dir) = (get(map, "path"), get(map, "paths"), get(map, "dir"));
    let source = match (path, paths, dir) {
        (Some(p), None, None) => location(walker, &["handler", "models", "path"], p, project_dir)
            .map(ModelSource::Single),
        (None, Some(list), None) => named_models(walker, list, project_dir).map(ModelSource::Named),
        (None, None, Some(d)) => {
            location(walker, &["handler", "models", "dir"], d, project_dir).map(ModelSource::Dir)
        }
        (Some(_), Some(_), None) => conflict(
            walker,
            "please specify either the path or paths field (both cannot be specified at the same time)",
        ),
        (None, Some(_), Some(_)) => conflict(
            walker,
            "please specify either the paths or dir field (both cannot be specified at the same time)",
        ),
        (Some(_), None, Some(_)) => conflict(
            walker,
            "please specify either the path or dir field (both cannot be specified at the same time)",
        ),
        _ => conflict(
            walker,
            "please specify only one of the following fields \"path\", \"paths\", or \"dir\"",
        ),
    }?;
    Some(ModelsSpec {
        source,
        signature_key,
        threads,
    })
}

fn conflict<T>(walker: &mut Walker, message: &str) -> Option<T> {
    walker.error(&["handler", "models"], message);
    None
}

fn location(
    walker: &mut Walker,
    at: &[&str],
    value: &Value,
    project_dir: &Path,
) -> Option<ModelLocation> {
    let text = walker.string(at, value)?;
    match ModelLocation::parse(&text, project_dir) {
        Ok(location) => Some(location),
        Err(e) => {
            walker.error(at, e.to_string());
            None
        }
    }
}

fn signature_key(walker: &mut Walker, at: &[&str], value: &Value) -> Option<String> {
    let key = walker.string(at, value)?;
    if key.trim().is_empty() {
        walker.error(at, "must not be empty");
        return None;
    }
    Some(key)
}

fn thread_pools(walker: &mut Walker, base: &[&str], map: &serde_yaml::Mapping) -> ThreadPools {
    let mut field = |key: &str| {
        let mut at = base.to_vec();
        at.push(key);
        get(map, key).and_then(|v| walker.count(&at, v))
    };
    ThreadPools {
        intra_op: field("intra_op_threads"),
        inter_op: field("inter_op_threads"),
    }
}

fn named_models(walker: &mut Walker, value: &Value, project_dir: &Path) -> Option<Vec<NamedModel>> {
    let Value::Sequence(items) = value else {
        walker.error(&["handler", "models", "paths"], "must be a list");
        return None;
    };
    if items.is_empty() {
        walker.error(
            &["handler", "models", "paths"],
            "must contain at least one model",
        );
        return None;
    }
    let before = walker.errors.len();
    let mut seen = BTreeSet::new();
    let mut models = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let position = format!("#{}", index + 1);
        let Some(map) =
            walker.mapping(&["handler", "models", "paths", &position], item, PATHS_KEYS)
        else {
            continue;
        };
        let name = match get(map, "name") {
            Some(v) => walker.string(&["handler", "models", "paths", &position, "name"], v),
            None => {
                walker.error(
                    &["handler", "models", "paths", &position, "name"],
                    "key must be specified",
                );
                None
            }
        };
        let Some(name) = name else { continue };
        let at_name = ["handler", "models", "paths", name.as_str()];
        if name == RESERVED_MODEL_NAME {
            walker.error(&at_name, format!("{RESERVED_MODEL_NAME}: is a reserved name; please specify a different model name"));
        } else if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            walker.error(
                &at_name,
                "name must contain only letters, numbers, underscores and dashes",
            );
        }
        if !seen.insert(name.clone()) {
            walker.error(
                &["handler", "models", "paths"],
                format!("cannot have multiple models with the same name ({name})"),
            );
        }
        let location = match get(map, "path") {
            Some(v) => location(
                walker,
                &["handler", "models", "paths", name.as_str(), "path"],
                v,
                project_dir,
            ),
            None => {
                walker.error(
                    &["handler", "models", "paths", name.as_str(), "path"],
                    "key must be specified",
                );
                None
            }
        };
        let signature_key = get(map, "signature_key").and_then(|v| {
            signature_key(
                walker,
                &["handler", "models", "paths", name.as_str(), "signature_key"],
                v,
            )
        });
        let threads = thread_pools(walker, &at_name, map);
        if let Some(location) = location {
            models.push(NamedModel {
                name,
                location,
                signature_key,
                threads,
            });
        }
    }
    (walker.errors.len() == before).then_some(models)
}
