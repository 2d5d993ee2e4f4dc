//! `handler.models` (tensorflow handler type).

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml::{Mapping, Value};
use soma_core::ModelLocation;

use crate::walk::{Walker, get, with};
use crate::{ModelSource, ModelsSpec, NamedModel, ThreadPools};

const KEYS: &[&str] = &[
    "path",
    "paths",
    "dir",
    "signature_key",
    "cache_size",
    "disk_cache_size",
    "intra_op_threads",
    "inter_op_threads",
];
const ENTRY_KEYS: &[&str] = &[
    "name",
    "path",
    "signature_key",
    "intra_op_threads",
    "inter_op_threads",
    "server_side_batching",
];
const AT: &[&str] = &["handler", "models"];
/// Cortex's internal name for the model of `models.path`.
pub const RESERVED_MODEL_NAME: &str = "_cortex_default";

pub(crate) fn models(walker: &mut Walker, value: &Value, project_dir: &Path) -> Option<ModelsSpec> {
    let mark = walker.mark();
    let map = walker.mapping(AT, value, KEYS)?;
    for key in ["cache_size", "disk_cache_size"] {
        if get(map, key).is_some() {
            walker.error(AT, format!("{key} key is not supported for AsyncAPI kind"));
        }
    }
    let signature_key =
        get(map, "signature_key").and_then(|v| walker.non_empty(&with(AT, "signature_key"), v));
    let threads = thread_pools(walker, AT, map);
    let source = match (get(map, "path"), get(map, "paths"), get(map, "dir")) {
        (Some(p), None, None) => {
            location(walker, &with(AT, "path"), p, project_dir).map(ModelSource::Single)
        }
        (None, Some(list), None) => named(walker, list, project_dir).map(ModelSource::Named),
        (None, None, Some(d)) => {
            location(walker, &with(AT, "dir"), d, project_dir).map(ModelSource::Dir)
        }
        (Some(_), Some(_), None) => conflict(walker, "path", "paths"),
        (None, Some(_), Some(_)) => conflict(walker, "paths", "dir"),
        (Some(_), None, Some(_)) => conflict(walker, "path", "dir"),
        _ => {
            walker.error(
                AT,
                "please specify only one of the following fields \"path\", \"paths\", or \"dir\"",
            );
            None
        }
    };
    if !walker.clean_since(mark) {
        return None;
    }
    Some(ModelsSpec {
        source: source?,
        signature_key,
        threads,
    })
}

fn conflict<T>(walker: &mut Walker, a: &str, b: &str) -> Option<T> {
    walker.error(
        AT,
        format!(
            "please specify either the {a} or {b} field (both cannot be specified at the same time)"
        ),
    );
    None
}

/// A model path: `s3://bucket/prefix/`, or (soma) a local folder, absolute or relative to
/// the project folder.
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

/// soma extension: `intra_op_threads` / `inter_op_threads`, non-negative integers.
fn thread_pools(walker: &mut Walker, at: &[&str], map: &Mapping) -> ThreadPools {
    let mut field = |key: &str| get(map, key).and_then(|v| walker.uint(&with(at, key), v, 0));
    ThreadPools {
        intra_op: field("intra_op_threads"),
        inter_op: field("inter_op_threads"),
    }
}

/// `models.paths`: a non-empty list of uniquely named models.
fn named(walker: &mut Walker, value: &Value, project_dir: &Path) -> Option<Vec<NamedModel>> {
    let at = with(AT, "paths");
    let Value::Sequence(items) = value else {
        walker.type_error(&at, "list of maps", value);
        return None;
    };
    if items.is_empty() {
        walker.error(&at, "must contain at least 1 elements");
        return None;
    }
    let mark = walker.mark();
    let mut seen = BTreeSet::new();
    let mut models = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let index = index.to_string();
        let Some(map) = walker.mapping(&with(&at, &index), item, ENTRY_KEYS) else {
            continue;
        };
        let name = walker
            .required(map, &with(&at, &index), "name")
            .and_then(|v| walker.string(&with(&with(&at, &index), "name"), v));
        // Errors inside an entry are located by its name, as Cortex did.
        let label = name.clone().unwrap_or(index);
        let here = with(&at, &label);
        if let Some(name) = &name {
            check_name(walker, &here, name);
            if !seen.insert(name.clone()) {
                walker.error(
                    &at,
                    format!("cannot have multiple models with the same name ({name})"),
                );
            }
        }
        let location = walker
            .required(map, &here, "path")
            .and_then(|v| location(walker, &with(&here, "path"), v, project_dir));
        let signature_key = get(map, "signature_key")
            .and_then(|v| walker.non_empty(&with(&here, "signature_key"), v));
        if get(map, "intra_op_threads").is_some() {
            walker.error(
                &with(&here, "intra_op_threads"),
                "cannot be set per model: TensorFlow makes one intra-op thread pool per process, \
                 sized by the first model it loads; set handler.models.intra_op_threads instead",
            );
        }
        let threads = thread_pools(walker, &here, map);
        let server_side_batching = crate::batching::optional(walker, &here, map);
        if let (Some(name), Some(location)) = (name, location) {
            models.push(NamedModel {
                name,
                location,
                signature_key,
                threads,
                server_side_batching,
            });
        }
    }
    walker.clean_since(mark).then_some(models)
}

fn check_name(walker: &mut Walker, at: &[&str], name: &str) {
    if name == RESERVED_MODEL_NAME {
        walker.error(
            at,
            format!(
                "{RESERVED_MODEL_NAME}: is a reserved name; please specify a different model name"
            ),
        );
    } else if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        walker.error(
            &with(at, "name"),
            format!("{name:?} must contain only letters, numbers, underscores, and dashes"),
        );
    }
}
