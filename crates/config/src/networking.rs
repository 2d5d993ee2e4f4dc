//! `networking` and `update_strategy`.

use serde_yaml::{Mapping, Value};

use crate::walk::{Walker, get, scalar_text, with};
use crate::{IntOrPercent, Networking, UpdateStrategy};

/// Paths the soma gateway serves itself.
const RESERVED_ENDPOINTS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// `networking.endpoint`, canonical (leading `/`, no trailing `/`); default `/<name>`.
pub(crate) fn networking(
    walker: &mut Walker,
    value: Option<&Value>,
    name: &str,
) -> Option<Networking> {
    let default = format!("/{name}");
    let Some(value) = value else {
        return Some(Networking { endpoint: default });
    };
    let map = walker.mapping(&["networking"], value, &["endpoint"])?;
    let endpoint = match get(map, "endpoint") {
        None => default,
        Some(v) => {
            let text = walker.string(&["networking", "endpoint"], v)?;
            endpoint(walker, &text)?
        }
    };
    Some(Networking { endpoint })
}

fn endpoint(walker: &mut Walker, text: &str) -> Option<String> {
    let at = ["networking", "endpoint"];
    if text.len() > 1000 {
        walker.error(
            &at,
            format!(
                "{:?}... must be no more than 1000 characters",
                &text[..text.floor_char_boundary(20)]
            ),
        );
        return None;
    }
    if !text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
    {
        walker.error(
            &at,
            format!("{text:?} must contain only letters, numbers, underscores, dashes, periods, and slashes"),
        );
        return None;
    }
    if text.contains("//") {
        walker.error(&at, format!("{text:?} cannot contain adjacent slashes"));
        return None;
    }
    let trimmed = text.trim_matches('/');
    if trimmed.is_empty() {
        walker.error(
            &at,
            format!("{text:?} is not allowed (an endpoint cannot be \"/\")"),
        );
        return None;
    }
    if trimmed
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        walker.error(
            &at,
            format!(
                "{text:?} cannot contain \".\" or \"..\" path segments (HTTP clients remove \
                 them before sending, so the endpoint could not be reached)"
            ),
        );
        return None;
    }
    let canonical = format!("/{trimmed}");
    if under(&canonical, "/_soma") {
        walker.error(
            &at,
            format!("{canonical} lies under /_soma, which the soma gateway serves itself"),
        );
        return None;
    }
    if under_tf_serving_paths(&canonical) {
        walker.error(
            &at,
            format!(
                "{canonical} lies under the TF Serving REST paths (/v1/..., /v2/health/...) \
                 that soma serves on the same port; choose another endpoint"
            ),
        );
        return None;
    }
    if RESERVED_ENDPOINTS.contains(&canonical.as_str()) {
        walker.error(
            &at,
            format!(
                "{canonical} is reserved by the soma gateway (it serves {})",
                RESERVED_ENDPOINTS.join(", ")
            ),
        );
        return None;
    }
    Some(canonical)
}

/// Whether an endpoint would be shadowed by the TF Serving REST API (`/v1/models/...`) or
/// its health paths (`/v2/health/live`, `/v2/health/ready`), which soma serves on the
/// gateway's port. Paths match without regard to case, as the router's do.
fn under_tf_serving_paths(endpoint: &str) -> bool {
    under(endpoint, "/v1") || under(endpoint, "/v2/health")
}

/// Whether `endpoint` is `root` or a path under it, without regard to case.
fn under(endpoint: &str, root: &str) -> bool {
    let lower = endpoint.to_ascii_lowercase();
    lower == root
        || lower
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `update_strategy`: `max_surge` / `max_unavailable`, each an integer or `N%` (0–100),
/// default `25%`, not both zero.
pub(crate) fn update_strategy(
    walker: &mut Walker,
    value: Option<&Value>,
) -> Option<UpdateStrategy> {
    let at = ["update_strategy"];
    let empty = Mapping::new();
    let map = match value {
        Some(v) => walker.mapping(&at, v, &["max_surge", "max_unavailable"])?,
        None => &empty,
    };
    let max_surge = int_or_percent(walker, map, "max_surge");
    let max_unavailable = int_or_percent(walker, map, "max_unavailable");
    let (max_surge, max_unavailable) = (max_surge?, max_unavailable?);
    if max_surge.is_zero() && max_unavailable.is_zero() {
        walker.error(&at, "max_surge and max_unavailable cannot both be zero");
        return None;
    }
    Some(UpdateStrategy {
        max_surge,
        max_unavailable,
    })
}

fn int_or_percent(walker: &mut Walker, map: &Mapping, key: &str) -> Option<IntOrPercent> {
    let at = with(&["update_strategy"], key);
    let Some(value) = get(map, key) else {
        return Some(IntOrPercent::Percent(25));
    };
    let Some(text) = scalar_text(value) else {
        walker.type_error(&at, "integer or percentage", value);
        return None;
    };
    let parsed = match text.trim().strip_suffix('%') {
        Some(p) => p
            .parse::<u32>()
            .ok()
            .filter(|p| *p <= 100)
            .map(IntOrPercent::Percent),
        None => text.trim().parse::<u32>().ok().map(IntOrPercent::Int),
    };
    if parsed.is_none() {
        walker.error(
            &at,
            format!("{text:?} must be a non-negative integer or a percentage between 0% and 100% (e.g. 25%)"),
        );
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::under_tf_serving_paths;

    #[test]
    fn tf_serving_paths_shadow_only_what_lies_under_them() {
        for shadowed in ["/v1", "/V1/models/x", "/v2/health", "/v2/health/ready"] {
            assert!(under_tf_serving_paths(shadowed), "{shadowed}");
        }
        for free in ["/v1x", "/v2", "/v2/healthy", "/iris", "/team/v1"] {
            assert!(!under_tf_serving_paths(free), "{free}");
        }
    }
}
