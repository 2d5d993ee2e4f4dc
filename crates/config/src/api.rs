//! One API of the list, and the rules between APIs.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;

use crate::walk::{Walker, get};
use crate::{ApiKind, ApiSpec, autoscaling, compute, handler, networking};

const KEYS: &[&str] = &[
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
const MAX_NAME_LEN: usize = 42;

/// One API of the list; `None` if it has errors (they are in `walker`).
pub(crate) fn parse_api(
    walker: &mut Walker,
    index: usize,
    item: &Value,
    project_dir: &Path,
) -> Option<ApiSpec> {
    let mark = walker.mark();
    let position = format!("api at index {index}");
    let Value::Mapping(map) = item else {
        walker.type_error(&[&position], "map", item);
        return None;
    };
    // The API's identity labels every later error: "name (kind)".
    let name = get(map, "name").and_then(Value::as_str).map(str::to_string);
    let kind_text = get(map, "kind").and_then(Value::as_str).map(str::to_string);
    walker.api = Some(format!(
        "{} ({})",
        name.as_deref().unwrap_or(&position),
        kind_text.as_deref().unwrap_or("unknown kind")
    ));
    walker.mapping(&[], item, KEYS);
    let name = walker
        .required(map, &[], "name")
        .and_then(|v| walker.string(&["name"], v))
        .filter(|name| check_name(walker, name));
    let kind = walker
        .required(map, &[], "kind")
        .and_then(|v| kind(walker, v));
    // compute is read first (shm_size is checked against compute.mem) but its errors are
    // reported after the handler's, in the order of the file's schema.
    let compute_mark = walker.mark();
    let compute = compute::compute(walker, get(map, "compute"));
    let compute_errors = walker.errors.split_off(compute_mark);
    let handler = walker
        .required(map, &[], "handler")
        .and_then(|v| handler::handler(walker, v, project_dir, compute.as_ref()));
    walker.errors.extend(compute_errors);
    let autoscaling = autoscaling::autoscaling(walker, get(map, "autoscaling"));
    let update_strategy = networking::update_strategy(walker, get(map, "update_strategy"));
    let networking = networking::networking(
        walker,
        get(map, "networking"),
        name.as_deref().unwrap_or(""),
    );
    if !walker.clean_since(mark) {
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

fn kind(walker: &mut Walker, value: &Value) -> Option<ApiKind> {
    match walker.one_of(&["kind"], value, KINDS)? {
        "AsyncAPI" => Some(ApiKind::AsyncApi),
        other => {
            walker.error(
                &["kind"],
                format!("kind {other} is not supported by soma (only AsyncAPI)"),
            );
            None
        }
    }
}

/// DNS-1035 label, at most 42 characters, not starting with "b-" (Cortex's rules).
fn check_name(walker: &mut Walker, name: &str) -> bool {
    let mark = walker.mark();
    let dns1035 = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !dns1035 {
        walker.error(
            &["name"],
            format!("{name:?} must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"),
        );
    }
    if name.len() > MAX_NAME_LEN {
        walker.error(
            &["name"],
            format!("{name:?} must be no more than {MAX_NAME_LEN} characters"),
        );
    }
    if name.starts_with("b-") {
        walker.error(&["name"], format!("{name:?} cannot start with \"b-\""));
    }
    walker.clean_since(mark)
}

/// Rules between APIs: unique names; unique endpoints, none directly below another (the
/// gateway serves `GET <endpoint>/<id>` for polling, which would shadow it).
pub(crate) fn check_across_apis(walker: &mut Walker, apis: &[ApiSpec]) {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut endpoints: BTreeMap<&str, &str> = BTreeMap::new();
    for api in apis {
        walker.api = Some(format!("{} ({})", api.name, api.kind));
        let count = names.entry(&api.name).or_default();
        *count += 1;
        if *count == 2 {
            walker.error(
                &["name"],
                format!(
                    "{:?} is defined more than once (API names must be unique)",
                    api.name
                ),
            );
            continue;
        }
        let endpoint = api.networking.endpoint.as_str();
        if let Some(other) = endpoints.get(endpoint) {
            walker.error(
                &["networking", "endpoint"],
                format!("{endpoint} is already used by API {other}"),
            );
            continue;
        }
        for (taken, other) in &endpoints {
            let below = |a: &str, b: &str| {
                a.strip_prefix(b)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|rest| !rest.contains('/'))
            };
            if below(endpoint, taken) || below(taken, endpoint) {
                walker.error(
                    &["networking", "endpoint"],
                    format!("{endpoint} clashes with {taken} of API {other} (the gateway polls workloads at <endpoint>/<id>)"),
                );
            }
        }
        endpoints.insert(endpoint, &api.name);
    }
    walker.api = None;
}
