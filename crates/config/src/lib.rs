//! Reads a Cortex `cortex.yaml` (a list of APIs), validates all of it the way Cortex v0.35
//! did for the AsyncAPI kind, and applies Cortex's defaults.
//!
//! Every problem is reported (not only the first), each located like Cortex's messages:
//! `cortex.yaml: iris (AsyncAPI): handler: models: path: <message>`. Unknown keys are
//! rejected at every level, as are the fields AsyncAPI does not allow.
//!
//! Accepted schema (defaults in brackets):
//! * `name` (DNS-1035, ≤ 42 characters, not starting with `b-`), `kind: AsyncAPI`;
//! * `handler`: `type` (`python` | `tensorflow`), `path` (a `.py` file in the project),
//!   `models` (tensorflow only: exactly one of `path`, `paths` [{`name`, `path`,
//!   `signature_key`}], `dir`; plus `signature_key`), `config` [{}], `python_path`, `image`,
//!   `tensorflow_serving_image` (tensorflow only), `env` [{}] (no `CORTEX_` keys),
//!   `log_level` [info], `shm_size` (≤ `compute.mem`), `dependencies` [{pip:
//!   requirements.txt, conda: conda-packages.txt, shell: dependencies.sh}],
//!   `processes_per_replica` / `threads_per_process` [1; only 1 for AsyncAPI];
//! * `compute`: `cpu` [200m, ≥ 20m], `mem` (≥ 20Mi), `gpu` [0], `inf` [0, ≤ 1, not with gpu],
//!   `node_groups`;
//! * `autoscaling`: `min_replicas` [1], `max_replicas` [100], `init_replicas` [min, at least
//!   1], `max_replica_concurrency` [1024], `target_replica_concurrency` [1], `window` [60s,
//!   a multiple of 10s], `downscale_stabilization_period` [5m], `upscale_stabilization_period`
//!   [1m], `max_downscale_factor` [0.75], `max_upscale_factor` [1.5], `downscale_tolerance`
//!   [0.05], `upscale_tolerance` [0.05];
//! * `update_strategy`: `max_surge`, `max_unavailable` [25%; not both zero];
//! * `networking.endpoint` [/<name>].
//!
//! Beyond Cortex (soma extensions):
//! * model paths may be local folders, absolute or relative to the cortex.yaml, as well as
//!   `s3://bucket/prefix/`;
//! * `models.intra_op_threads` / `models.inter_op_threads` (and the same keys on each `paths`
//!   entry, which win) size TensorFlow's thread pools per model; unset runs a graph's ops in
//!   the calling thread with TensorFlow's default intra-op pool, 0 means TensorFlow's own
//!   default pool, n a pool of n threads;
//! * `autoscaling.min_replicas` may be 0 (Cortex allowed it for AsyncAPI from v0.36).
//!
//! Not supported (clear errors): kinds other than AsyncAPI, and `.pickle` handlers.

mod api;
mod error;
mod handler;
mod quantity;
mod resources;
mod spec;
mod walk;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, ConfigErrors};
pub use spec::*;

use crate::walk::Walker;

/// Reads and validates a cortex.yaml file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            api: None,
            path: Vec::new(),
            message: format!("cannot read the file: {e}"),
        }])),
    }
}

/// Validates cortex.yaml text; `file` names it in errors and locates the project folder.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let project_dir = project_dir(file);
    let mut walker = Walker {
        file: file.to_path_buf(),
        api: None,
        errors: Vec::new(),
    };
    let root: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            walker.error(&[], format!("invalid YAML: {e}"));
            return Err(ConfigErrors(walker.errors));
        }
    };
    let items: Vec<serde_yaml::Value> = match root {
        serde_yaml::Value::Sequence(items) => items,
        map @ serde_yaml::Value::Mapping(_) => vec![map],
        serde_yaml::Value::Null => Vec::new(),
        other => {
            walker.error(
                &[],
                format!("must be a list of APIs, found {}", walk::describe(&other)),
            );
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
