//! `compute`.

use serde_yaml::Value;

use crate::walk::{Walker, get, scalar_text, with};
use crate::{Compute, Cpu, Memory, quantity};

const AT: &[&str] = &["compute"];
/// 20m.
const MIN_CPU_CORES: f64 = 0.02;
const MIN_MEM_BYTES: f64 = 20.0 * 1024.0 * 1024.0;

pub(crate) fn compute(walker: &mut Walker, value: Option<&Value>) -> Option<Compute> {
    let mut compute = Compute {
        cpu: Cpu {
            text: "200m".into(),
            millicores: 200.0,
        },
        mem: None,
        gpu: 0,
        inf: 0,
        node_groups: None,
    };
    let Some(value) = value else {
        return Some(compute);
    };
    let mark = walker.mark();
    let map = walker.mapping(AT, value, &["cpu", "mem", "gpu", "inf", "node_groups"])?;
    if let Some(v) = get(map, "cpu")
        && let Some((text, cores)) = quantity_at_least(walker, "cpu", v, MIN_CPU_CORES, "20m")
    {
        compute.cpu = Cpu {
            text,
            millicores: cores * 1000.0,
        };
    }
    if let Some(v) = get(map, "mem") {
        compute.mem = quantity_at_least(walker, "mem", v, MIN_MEM_BYTES, "20Mi")
            .map(|(text, bytes)| Memory { text, bytes });
    }
    compute.gpu = get(map, "gpu")
        .and_then(|v| walker.uint(&with(AT, "gpu"), v, 0))
        .unwrap_or(0);
    compute.inf = get(map, "inf")
        .and_then(|v| walker.uint(&with(AT, "inf"), v, 0))
        .unwrap_or(0);
    if compute.gpu > 0 && compute.inf > 0 {
        walker.error(AT, "gpu and inf resources cannot be used together");
    }
    if compute.inf > 1 {
        walker.error(
            &with(AT, "inf"),
            format!(
                "cannot request {} Infs (currently only 1 Inf can be used per API replica, due to AWS's bug: https://github.com/aws/aws-neuron-sdk/issues/110)",
                compute.inf
            ),
        );
    }
    if let Some(v) = get(map, "node_groups") {
        compute.node_groups = node_groups(walker, v);
    }
    walker.clean_since(mark).then_some(compute)
}

/// A quantity of at least `min` (in base units); the text as written and its value.
fn quantity_at_least(
    walker: &mut Walker,
    key: &str,
    value: &Value,
    min: f64,
    min_text: &str,
) -> Option<(String, f64)> {
    let at = with(AT, key);
    let Some(text) = scalar_text(value) else {
        walker.type_error(&at, "string or number", value);
        return None;
    };
    match quantity::parse(&text) {
        Some(v) if v >= min => Some((text, v)),
        Some(_) => {
            walker.error(
                &at,
                format!("{text} must be greater than or equal to {min_text}"),
            );
            None
        }
        None => {
            walker.error(
                &at,
                format!("{text:?} is not a valid quantity (e.g. 200m, 1, 0.5, 512Mi, 2Gi)"),
            );
            None
        }
    }
}

fn node_groups(walker: &mut Walker, value: &Value) -> Option<Vec<String>> {
    let at = with(AT, "node_groups");
    let Value::Sequence(items) = value else {
        walker.type_error(&at, "string list", value);
        return None;
    };
    if items.is_empty() {
        walker.error(&at, "must contain at least 1 elements");
        return None;
    }
    let mark = walker.mark();
    let mut groups: Vec<String> = Vec::new();
    for item in items {
        let Some(name) = walker.string(&at, item) else {
            continue;
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            walker.error(
                &at,
                format!("{name:?} must contain only letters, numbers, underscores, and dashes"),
            );
        } else if groups.contains(&name) {
            walker.error(&at, format!("{name:?} is duplicated"));
        }
        groups.push(name);
    }
    walker.clean_since(mark).then_some(groups)
}
