//! Reads a Cortex `cortex.yaml`, validates all of it the way Cortex v0.35 validated the
//! AsyncAPI kind, and applies Cortex's defaults.
//!
//! The file is a YAML list of APIs. A single mapping at the top level is accepted as a
//! list of one API; an empty file or list is an error ("no API is defined").
//!
//! Every problem is reported, not only the first, each located like Cortex's messages:
//! `cortex.yaml: iris (AsyncAPI): handler: models: path: <message>` (file, `name (kind)` of
//! the API, field path, message; see [`ConfigError`]). Unknown keys are rejected at every
//! level (`key "x" is not supported`), as are wrong types (`invalid type (expected integer,
//! found the string "a")`) and the fields AsyncAPI does not allow. YAML `null` counts as
//! absent.
//!
//! # Accepted schema (defaults in brackets)
//! * `name` (required; DNS-1035, ≤ 42 characters, not starting with `b-`, unique in the
//!   file); `kind` (required; `AsyncAPI` — `RealtimeAPI`, `BatchAPI`, `TaskAPI` and
//!   `TrafficSplitter` are recognised and rejected as not supported by soma).
//! * `handler` (required):
//!   * `type` (required): `python` | `tensorflow` (`onnx` gets Cortex's replacement message);
//!   * `path` (required): a `.py` file inside the project folder (the folder of the
//!     cortex.yaml); `.pickle` handlers are not supported by soma;
//!   * `models`: required for `tensorflow`, forbidden for `python`: exactly one of `path`,
//!     `paths` (a list of {`name` ([a-zA-Z0-9_-], not `_cortex_default`, unique), `path`,
//!     `signature_key`}) or `dir`; plus `signature_key` (the default for every model);
//!     `cache_size` / `disk_cache_size` are rejected (RealtimeAPI only);
//!   * `config` [{}] (a map with string keys), `python_path` (a project sub-folder),
//!     `image`, `tensorflow_serving_image` (tensorflow only), `env` [{}] (strings; no
//!     `CORTEX_` names), `log_level` [info: debug | info | warning | error], `shm_size`
//!     (a quantity, ≤ `compute.mem`), `dependencies` [{pip: requirements.txt, conda:
//!     conda-packages.txt, shell: dependencies.sh}];
//!   * `processes_per_replica`, `threads_per_process` [1; AsyncAPI allows only 1];
//!   * `multi_model_reloading`, `protobuf_path` are rejected; `server_side_batching` (a
//!     RealtimeAPI field in Cortex) is accepted, for the handler or per `models.paths` entry.
//! * `compute`: `cpu` [200m; a quantity ≥ 20m: `1`, `0.5`, `500m`], `mem` (≥ 20Mi: `Ki`,
//!   `Mi`, `Gi`, `k`/`K`, `M`, `G`, plain bytes), `gpu` [0], `inf` [0; at most 1, not with
//!   `gpu`], `node_groups` [any; a non-empty list of [a-zA-Z0-9_-] names].
//! * `autoscaling`: `min_replicas` [1], `max_replicas` [100, ≥ 1], `init_replicas`
//!   [`min_replicas`, at least 1], `max_replica_concurrency` [1024, 1..=30000],
//!   `target_replica_concurrency` [1, > 0, ≤ max_replica_concurrency], `window` [60s; ≥ 10s,
//!   a multiple of 10s], `downscale_stabilization_period` [5m],
//!   `upscale_stabilization_period` [1m], `max_downscale_factor` [0.75; 0 ≤ x < 1],
//!   `max_upscale_factor` [1.5; > 1], `downscale_tolerance` [0.05; 0 ≤ x < 1],
//!   `upscale_tolerance` [0.05; ≥ 0]; min ≤ init ≤ max. Durations are Go durations (`60s`,
//!   `5m`, `1h30m`, `1.5h`).
//! * `update_strategy`: `max_surge`, `max_unavailable` [25%; an integer or `N%` with N in
//!   0..=100; not both zero].
//! * `networking.endpoint` [`/<name>`; letters, digits, `_-./`, no `//`, not `/`, ≤ 1000
//!   characters; canonicalized to a leading `/` and no trailing `/`; unique among the APIs].
//!
//! # soma extensions and choices
//! * Model paths may be local folders — absolute, or relative to the cortex.yaml's folder,
//!   or `file://` — as well as `s3://bucket/prefix/` (parsed by
//!   [`soma_core::ModelLocation::parse`]).
//! * `models.intra_op_threads` / `models.inter_op_threads` (non-negative integers) size
//!   TensorFlow's thread pools for every model of the API; `inter_op_threads` on a `paths`
//!   entry overrides it for that model (`intra_op_threads` there is an error: TensorFlow makes
//!   one intra-op pool per process). 0 means TensorFlow's own default pool; unset leaves the
//!   choice to the model runner (see [`ThreadPools`]).
//! * `autoscaling.min_replicas` may be 0 (Cortex allowed scale-to-zero for AsyncAPI from
//!   v0.36; v0.35 required > 0). `init_replicas` still defaults to `min_replicas` but at
//!   least 1 and must be ≥ 1 (soma starts `init_replicas` workers).
//! * Endpoints `/healthz`, `/readyz`, `/metrics` and those under `/_soma` are reserved by
//!   the soma gateway, `.` and `..` segments are refused (clients remove them), and
//!   an endpoint exactly one segment below another API's endpoint is rejected (it would be
//!   shadowed by the other API's `GET <endpoint>/<id>` poll route).
//! * Docker image references (`image`, `tensorflow_serving_image`) are checked for syntax
//!   only; soma does not pull them.

mod api;
mod autoscaling;
mod batching;
mod compute;
mod duration;
mod error;
mod handler;
mod image;
mod models;
mod networking;
mod quantity;
mod shared;
mod spec;
mod walk;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, ConfigErrors};
pub use models::RESERVED_MODEL_NAME;
pub use spec::*;

use crate::walk::Walker;

/// Reads and validates a cortex.yaml file; the project folder is the file's folder.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) => {
            let mut walker = Walker::new(path.to_path_buf());
            walker.error(&[], format!("cannot read the file: {e}"));
            Err(ConfigErrors(walker.errors))
        }
    }
}

/// Validates cortex.yaml text. `file` names it in errors, and its folder (made absolute)
/// is the project folder that handler paths and local model paths are relative to.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let project_dir = project_dir(file);
    let mut walker = Walker::new(file.to_path_buf());
    // A byte-order mark (written by some Windows editors) is not YAML content; Cortex's
    // reader skipped it too.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut root: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            walker.error(&[], format!("invalid YAML: {e}"));
            return Err(ConfigErrors(walker.errors));
        }
    };
    // Merge keys (`<<: *defaults`), which Cortex's YAML reader (go-yaml) resolved, so that
    // files that share an API's settings by anchor read as they did there.
    if let Err(e) = root.apply_merge() {
        walker.error(&[], format!("invalid YAML: {e}"));
        return Err(ConfigErrors(walker.errors));
    }
    let items = match root {
        serde_yaml::Value::Sequence(items) => items,
        map @ serde_yaml::Value::Mapping(_) => vec![map],
        serde_yaml::Value::Null => Vec::new(),
        other => {
            walker.type_error(&[], "list of APIs", &other);
            return Err(ConfigErrors(walker.errors));
        }
    };
    if items.is_empty() {
        walker.error(&[], "no API is defined");
    }
    let mut apis = Vec::new();
    for (index, item) in items.iter().enumerate() {
        if let Some(api) = api::parse_api(&mut walker, index, item, &project_dir) {
            apis.push(api);
        }
        walker.api = None;
    }
    api::check_across_apis(&mut walker, &apis);
    shared::check_env(&mut walker, &apis);
    shared::check_python_paths(&mut walker, &apis, &project_dir);
    if walker.errors.is_empty() {
        Ok(Config {
            file: file.to_path_buf(),
            project_dir,
            apis,
        })
    } else {
        Err(ConfigErrors(walker.errors))
    }
}

fn project_dir(file: &Path) -> PathBuf {
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}
