use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;

use crate::walk::{Walker, get};
use crate::{ApiKind, ApiSpec, handler, resources};

const API_KEYS: &[&str] = &[
    "name",
    "kind",
    "handler",
    "compute",
    "autoscaling",
    "update_strategy",
    "networking",
];
const KINDS: &[&str] = &[
    "RealtimeAPI",
    "BatchAPI",
    "TaskAPI",
    "AsyncAPI",
    "TrafficSplitter",
];

/// One API of the list; `None` if it has errors (they are in `walker`).
pub(crate) fn parse_api(
    walker: &mut Walker,
    index: usize,
    item: &Value,
    project_dir: &Path,
) -> Option<ApiSpec> {
    let before = walker.errors.len();
    let position = format!("API #{}", index + 1);
    let serde_yaml::Value::Mapping(map) = item else {
        walker.error(
            &[&position],
            format!("must be a map, found {}", crate::walk::describe(item)),
        );
        return None;
    };
    let name = match get(map, "name") {
        Some(v) => walker.string(&[&position, "name"], v),
        None => {
            walker.error(&[&position, "name"], "key must be specified");
            None
        }
    };
    let kind_text = match get(map, "kind") {
        Some(v) => walker.string(&[&position, "kind"], v),
        None => {
            walker.error(&[&position, "kind"], "key must be specified");
            None
        }
    };
    let label = name.clone().unwrap_or_else(|| position.clone());
    walker.api = Some(format!(
        "{label} ({})",
        kind_text.as_deref().unwrap_or("unknown kind")
    ));
    // Unknown keys are reported once the API's name labels the errors.
    walker.mapping(&[], item, API_KEYS);
    if let Some(name) = &name {
        check_name(walker, name);
    }
    let kind = match kind_text.as_deref() {
        Some("AsyncAPI") => Some(ApiKind::AsyncApi),
        Some(other) if KINDS.contains(&other) => {
            walker.error(
                &["kind"],
                format!("kind {other} is not supported by soma (only AsyncAPI)"),
            );
            None
        }
        Some(other) => {
            walker.error(
                &["kind"],
                format!(
                    "invalid value {other:?}; must be one of {}",
                    KINDS.join(", ")
                ),
            );
            None
        }
        None => None,
    };
    let compute = resources::compute(walker, get(map, "compute"));
    let handler = match get(map, "handler") {
        Some(v) => handler::handler(walker, v, project_dir, compute.as_ref()),
        None => {
            walker.error(&["handler"], "key must be specified");
            None
        }
    };
    let autoscaling = resources::autoscaling(walker, get(map, "autoscaling"));
    let update_strategy = resources::update_strategy(walker, get(map, "update_strategy"));
    let networking = resources::networking(
        walker,
        get(map, "networking"),
        name.as_deref().unwrap_or(""),
    );
    if walker.errors.len() != before {
        return None;
    }
    Some(ApiSpec {
        name: name?,
        kind: kind?,
        handler: handler?,
        compute: compute?,
        autoscaling: autoscaling?,
        update_strategy: update_strategy?,
        networking: networking?,
    })
}

/// DNS-1035 label, at most 42 characters, not starting with "b-" (Cortex's rule).
fn check_name(walker: &mut Walker, name: &str) {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        walker.error(
            &["name"],
            "must contain only lower case letters, numbers, and dashes, start with a letter, and cannot end with a dash",
        );
    }
    if name.len() > 42 {
        walker.error(
            &["name"],
            format!("must be no more than 42 characters (got {})", name.len()),
        );
    }
    if name.starts_with("b-") {
        walker.error(&["name"], "cannot start with \"b-\"");
    }
}

/// Rules between APIs: unique names, unique endpoints.
pub(crate) fn check_across_apis(walker: &mut Walker, apis: &[ApiSpec]) {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut endpoints: BTreeMap<&str, &str> = BTreeMap::new();
    for api in apis {
        walker.api = Some(format!("{} ({})", api.name, api.kind));
        *names.entry(&api.name).or_default() += 1;
        if names[api.name.as_str()] == 2 {
            walker.error(&["name"], "an API with this name is defined more than once");
        }
        if let Some(other) = endpoints.insert(&api.networking.endpoint, &api.name)
            && other != api.name
        {
            walker.error(
                &["networking", "endpoint"],
                format!("{} is already used by API {other}", api.networking.endpoint),
            );
        }
    }
    walker.api = None;
}
