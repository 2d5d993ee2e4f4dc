//! `handler`: everything but `handler.models` (see `models.rs`).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_yaml::Value;

use crate::walk::{Walker, get, with};
use crate::{Compute, Dependencies, HandlerSpec, HandlerType, LogLevel, Memory, models, quantity};

const KEYS: &[&str] = &[
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
const AT: &[&str] = &["handler"];

/// `handler`; `None` if it has errors. `compute` is `None` when it is invalid (then
/// `shm_size` is not compared with it).
pub(crate) fn handler(
    walker: &mut Walker,
    value: &Value,
    project_dir: &Path,
    compute: Option<&Compute>,
) -> Option<HandlerSpec> {
    let mark = walker.mark();
    let map = walker.mapping(AT, value, KEYS)?;
    let handler_type = walker
        .required(map, AT, "type")
        .and_then(|v| handler_type(walker, v));
    let path = walker
        .required(map, AT, "path")
        .and_then(|v| handler_path(walker, v, project_dir));
    for key in ["multi_model_reloading", "protobuf_path"] {
        if get(map, key).is_some() {
            walker.error(
                &with(AT, key),
                format!("{key} key is not supported for AsyncAPI kind"),
            );
        }
    }
    let processes_per_replica = only_one(walker, map, "processes_per_replica");
    let threads_per_process = only_one(walker, map, "threads_per_process");
    let models = match (get(map, "models"), handler_type) {
        (Some(v), Some(HandlerType::TensorFlow)) => models::models(walker, v, project_dir),
        (Some(_), Some(HandlerType::Python)) => {
            walker.error(
                &["handler", "models"],
                "models is not a supported field for the python handler type",
            );
            None
        }
        (None, Some(HandlerType::TensorFlow)) => {
            walker.error(
                AT,
                "models field must be defined for the tensorflow handler type",
            );
            None
        }
        _ => None,
    };
    let tensorflow_serving_image = get(map, "tensorflow_serving_image")
        .and_then(|v| docker_image(walker, "tensorflow_serving_image", v));
    if handler_type == Some(HandlerType::Python) && tensorflow_serving_image.is_some() {
        walker.error(
            &["handler", "tensorflow_serving_image"],
            "tensorflow_serving_image is not a supported field for the python handler type",
        );
    }
    let image = get(map, "image").and_then(|v| docker_image(walker, "image", v));
    let config = config_map(walker, get(map, "config"));
    let python_path = get(map, "python_path").and_then(|v| python_path(walker, v, project_dir));
    let env = env(walker, get(map, "env"));
    let log_level = match get(map, "log_level") {
        None => Some(LogLevel::Info),
        Some(v) => walker
            .one_of(
                &["handler", "log_level"],
                v,
                &["debug", "info", "warning", "error"],
            )
            .map(|level| match level {
                "debug" => LogLevel::Debug,
                "warning" => LogLevel::Warning,
                "error" => LogLevel::Error,
                _ => LogLevel::Info,
            }),
    };
    let shm_size = get(map, "shm_size").and_then(|v| shm_size(walker, v, compute));
    let dependencies = dependencies(walker, get(map, "dependencies"));
    let server_side_batching = crate::batching::optional(walker, AT, map);
    if !walker.clean_since(mark) {
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
        log_level: log_level?,
        shm_size,
        dependencies: dependencies?,
        processes_per_replica,
        threads_per_process,
        server_side_batching,
    })
}

fn handler_type(walker: &mut Walker, value: &Value) -> Option<HandlerType> {
    let at = ["handler", "type"];
    if value.as_str() == Some("onnx") {
        walker.error(
            &at,
            "the onnx handler type has been replaced by the python handler type; please use the python handler type instead (all onnx models are fully supported by the python handler type)",
        );
        return None;
    }
    match walker.one_of(&at, value, &["python", "tensorflow"])? {
        "python" => Some(HandlerType::Python),
        _ => Some(HandlerType::TensorFlow),
    }
}

/// `processes_per_replica` / `threads_per_process`: default 1, and AsyncAPI allows only 1.
fn only_one(walker: &mut Walker, map: &serde_yaml::Mapping, key: &str) -> u32 {
    let at = with(AT, key);
    match get(map, key).and_then(|v| walker.uint(&at, v, 1)) {
        Some(n) if n > 1 => {
            walker.error(
                &at,
                format!(
                    "{key} key is not supported for AsyncAPI kind (an AsyncAPI replica runs one workload at a time; raise autoscaling.max_replicas instead)"
                ),
            );
            n
        }
        _ => 1,
    }
}

/// A project-relative path that stays inside the project (no `..` above it).
fn inside_project(text: &str) -> bool {
    let path = Path::new(text);
    if path.is_absolute() || text.starts_with('~') {
        return false;
    }
    let mut depth: usize = 0;
    for component in path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::ParentDir if depth == 0 => return false,
            Component::ParentDir => depth -= 1,
            _ => {}
        }
    }
    true
}

fn handler_path(walker: &mut Walker, value: &Value, project_dir: &Path) -> Option<PathBuf> {
    let at = ["handler", "path"];
    let text = walker.string(&at, value)?;
    if text.ends_with(".pickle") {
        walker.error(
            &at,
            format!(
                "{text}: pickled handlers (.pickle) are not supported by soma (they need the Python client's deploy call); point handler.path at a .py file that defines class Handler"
            ),
        );
        return None;
    }
    if !text.ends_with(".py") {
        walker.error(&at, format!("{text}: must be a .py file"));
        return None;
    }
    if !inside_project(&text) {
        walker.error(
            &at,
            format!("{text}: must be a path relative to the project folder (the folder of the cortex.yaml), inside it"),
        );
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
    let text = walker.non_empty(&at, value)?;
    let path = Path::new(&text);
    if path.is_absolute() || text.starts_with('~') {
        walker.error(&at, format!("{text}: must be a relative path"));
        return None;
    }
    if path.components().all(|c| c == Component::CurDir) {
        walker.error(
            &at,
            format!("{text}: is the project folder, which is on the Python path already; remove python_path"),
        );
        return None;
    }
    if !inside_project(&text) {
        walker.error(&at, format!("{text}: must be inside the project folder"));
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

/// `handler.config`: a map with string keys (null is `{}`), handed to the handler as JSON.
fn config_map(
    walker: &mut Walker,
    value: Option<&Value>,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let at = ["handler", "config"];
    let Some(value) = value else {
        return Some(serde_json::Map::new());
    };
    let Value::Mapping(map) = value else {
        walker.type_error(&at, "map", value);
        return None;
    };
    if let Some(key) = map.keys().find(|k| !k.is_string()) {
        walker.error(
            &at,
            format!("non string key found: {}", crate::walk::show(key)),
        );
        return None;
    }
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        Ok(_) | Err(_) => {
            walker.error(
                &at,
                "must be a map whose values can be written as JSON (no tagged values)",
            );
            None
        }
    }
}

fn env(walker: &mut Walker, value: Option<&Value>) -> Option<BTreeMap<String, String>> {
    let at = ["handler", "env"];
    let Some(value) = value else {
        return Some(BTreeMap::new());
    };
    let Value::Mapping(map) = value else {
        walker.type_error(&at, "map of strings to strings", value);
        return None;
    };
    let mark = walker.mark();
    let mut env = BTreeMap::new();
    for (key, v) in map {
        let Some(key) = key.as_str() else {
            walker.error(
                &at,
                format!("non string key found: {}", crate::walk::show(key)),
            );
            continue;
        };
        let Some(v) = walker.string(&with(&at, key), v) else {
            continue;
        };
        if key.starts_with("CORTEX_") {
            walker.error(
                &with(&at, key),
                "environment variables starting with CORTEX_ are reserved",
            );
        }
        env.insert(key.to_string(), v);
    }
    walker.clean_since(mark).then_some(env)
}

fn shm_size(walker: &mut Walker, value: &Value, compute: Option<&Compute>) -> Option<Memory> {
    let at = ["handler", "shm_size"];
    let Some(text) = crate::walk::scalar_text(value) else {
        walker.type_error(&at, "string", value);
        return None;
    };
    let Some(bytes) = quantity::parse(&text) else {
        walker.error(
            &at,
            format!("{text:?} is not a valid quantity (e.g. 64Mi, 1Gi)"),
        );
        return None;
    };
    if let Some(mem) = compute.and_then(|c| c.mem.as_ref())
        && bytes > mem.bytes
    {
        walker.error(
            &at,
            format!("handler.shm_size ({text}) cannot exceed compute.mem ({mem})"),
        );
        return None;
    }
    Some(Memory { text, bytes })
}

fn dependencies(walker: &mut Walker, value: Option<&Value>) -> Option<Dependencies> {
    let at = ["handler", "dependencies"];
    let mut deps = Dependencies {
        pip: "requirements.txt".into(),
        conda: "conda-packages.txt".into(),
        shell: "dependencies.sh".into(),
    };
    let Some(value) = value else {
        return Some(deps);
    };
    let map = walker.mapping(&at, value, &["pip", "conda", "shell"])?;
    let mark = walker.mark();
    for (key, slot) in [
        ("pip", &mut deps.pip),
        ("conda", &mut deps.conda),
        ("shell", &mut deps.shell),
    ] {
        if let Some(v) = get(map, key).and_then(|v| walker.non_empty(&with(&at, key), v)) {
            *slot = v;
        }
    }
    walker.clean_since(mark).then_some(deps)
}

/// A docker image reference: `[registry[:port]/]name[/name...][:tag][@digest]`.
fn docker_image(walker: &mut Walker, key: &str, value: &Value) -> Option<String> {
    let at = with(AT, key);
    let text = walker.string(&at, value)?;
    if !crate::image::valid(&text) {
        walker.error(&at, format!("{text:?} is not a valid docker image path"));
        return None;
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_relative_paths() {
        assert!(inside_project("handler.py"));
        assert!(inside_project("src/../handler.py"));
        assert!(!inside_project("../handler.py"));
        assert!(!inside_project("/abs/handler.py"));
        assert!(!inside_project("~/handler.py"));
    }
}
