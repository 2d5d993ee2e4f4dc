use std::time::Duration;

use serde_yaml::Value;

use crate::walk::{Walker, get};
use crate::{Autoscaling, Compute, Networking, UpdateStrategy, quantity};

pub(crate) fn compute(walker: &mut Walker, value: Option<&Value>) -> Option<Compute> {
    let mut compute = Compute {
        cpu: "200m".into(),
        mem: None,
        gpu: 0,
        inf: 0,
        node_groups: None,
    };
    let Some(value) = value else {
        return Some(compute);
    };
    let before = walker.errors.len();
    let map = walker.mapping(
        &["compute"],
        value,
        &["cpu", "mem", "gpu", "inf", "node_groups"],
    )?;
    if let Some(v) = get(map, "cpu") {
        let text = scalar(v);
        match quantity::cpu_millis(&text) {
            Some(m) if m >= 20.0 => compute.cpu = text,
            Some(_) => walker.error(
                &["compute", "cpu"],
                format!("must be at least 20m (got {text})"),
            ),
            None => walker.error(
                &["compute", "cpu"],
                format!("{text:?} is not a CPU quantity (e.g. 200m, 1, 0.5)"),
            ),
        }
    }
    if let Some(v) = get(map, "mem") {
        let text = scalar(v);
        match quantity::bytes(&text) {
            Some(b) if b >= 20.0 * 1024.0 * 1024.0 => compute.mem = Some(text),
            Some(_) => walker.error(
                &["compute", "mem"],
                format!("must be at least 20Mi (got {text})"),
            ),
            None => walker.error(
                &["compute", "mem"],
                format!("{text:?} is not a memory quantity (e.g. 512Mi, 2Gi)"),
            ),
        }
    }
    compute.gpu = get(map, "gpu")
        .and_then(|v| walker.count(&["compute", "gpu"], v))
        .unwrap_or(0);
    compute.inf = get(map, "inf")
        .and_then(|v| walker.count(&["compute", "inf"], v))
        .unwrap_or(0);
    if compute.gpu > 0 && compute.inf > 0 {
        walker.error(
            &["compute"],
            "gpu and inf resources cannot be used together",
        );
    }
    if compute.inf > 1 {
        walker.error(
            &["compute", "inf"],
            format!(
                "cannot request {} Infs (currently only 1 Inf can be used per API replica, due to AWS's bug: https://github.com/aws/aws-neuron-sdk/issues/110)",
                compute.inf
            ),
        );
    }
    if let Some(v) = get(map, "node_groups") {
        compute.node_groups = node_groups(walker, v);
    }
    (walker.errors.len() == before).then_some(compute)
}

fn node_groups(walker: &mut Walker, value: &Value) -> Option<Vec<String>> {
    let at = ["compute", "node_groups"];
    let Value::Sequence(items) = value else {
        walker.error(&at, "must be a list of node group names");
        return None;
    };
    if items.is_empty() {
        walker.error(&at, "must not be empty (omit it to use all node groups)");
    }
    let mut groups = Vec::new();
    for item in items {
        let name = walker.string(&at, item)?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            walker.error(&at, format!("{name:?}: node group names contain only letters, numbers, underscores and dashes"));
        }
        groups.push(name);
    }
    Some(groups)
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

const AUTOSCALING_KEYS: &[&str] = &[
    "min_replicas",
    "max_replicas",
    "init_replicas",
    "max_replica_concurrency",
    "target_replica_concurrency",
    "window",
    "downscale_stabilization_period",
    "upscale_stabilization_period",
    "max_downscale_factor",
    "max_upscale_factor",
    "downscale_tolerance",
    "upscale_tolerance",
];

pub(crate) fn autoscaling(walker: &mut Walker, value: Option<&Value>) -> Option<Autoscaling> {
    let empty = serde_yaml::Mapping::new();
    let map = match value {
        Some(v) => walker.mapping(&["autoscaling"], v, AUTOSCALING_KEYS)?,
        None => &empty,
    };
    let before = walker.errors.len();
    let mut count = |key: &str, default: u32| {
        get(map, key)
            .and_then(|v| walker.count(&["autoscaling", key], v))
            .unwrap_or(default)
    };
    let min_replicas = count("min_replicas", 1);
    let max_replicas = count("max_replicas", 100);
    let init_replicas = count("init_replicas", min_replicas.max(1));
    let max_replica_concurrency = count("max_replica_concurrency", 1024);
    let mut number = |key: &str, default: f64| {
        get(map, key)
            .and_then(|v| walker.float(&["autoscaling", key], v))
            .unwrap_or(default)
    };
    let target_replica_concurrency = number("target_replica_concurrency", 1.0);
    let max_downscale_factor = number("max_downscale_factor", 0.75);
    let max_upscale_factor = number("max_upscale_factor", 1.5);
    let downscale_tolerance = number("downscale_tolerance", 0.05);
    let upscale_tolerance = number("upscale_tolerance", 0.05);
    let mut duration = |key: &str, default: u64| {
        get(map, key)
            .and_then(|v| walker.duration(&["autoscaling", key], v))
            .unwrap_or(Duration::from_secs(default))
    };
    let window = duration("window", 60);
    let downscale_stabilization_period = duration("downscale_stabilization_period", 300);
    let upscale_stabilization_period = duration("upscale_stabilization_period", 60);

    if max_replicas == 0 {
        walker.error(&["autoscaling", "max_replicas"], "must be greater than 0");
    }
    if min_replicas > max_replicas {
        walker.error(
            &["autoscaling", "min_replicas"],
            format!(
                "min_replicas cannot be greater than max_replicas ({min_replicas} > {max_replicas})"
            ),
        );
    }
    if init_replicas > max_replicas {
        walker.error(&["autoscaling", "init_replicas"], format!("init_replicas cannot be greater than max_replicas ({init_replicas} > {max_replicas})"));
    }
    if init_replicas < min_replicas {
        walker.error(
            &["autoscaling", "init_replicas"],
            format!(
                "init_replicas cannot be less than min_replicas ({init_replicas} < {min_replicas})"
            ),
        );
    }
    if max_replica_concurrency == 0 || max_replica_concurrency > 30_000 {
        walker.error(
            &["autoscaling", "max_replica_concurrency"],
            format!("must be between 1 and 30000 (got {max_replica_concurrency})"),
        );
    }
    if target_replica_concurrency <= 0.0 {
        walker.error(
            &["autoscaling", "target_replica_concurrency"],
            "must be greater than 0",
        );
    } else if target_replica_concurrency > f64::from(max_replica_concurrency) {
        walker.error(
            &["autoscaling", "target_replica_concurrency"],
            format!("target_replica_concurrency cannot be greater than max_replica_concurrency ({target_replica_concurrency} > {max_replica_concurrency})"),
        );
    }
    if window < Duration::from_secs(10) || window.as_millis() % 10_000 != 0 {
        walker.error(
            &["autoscaling", "window"],
            format!(
                "must be at least 10s and a multiple of 10s (got {})",
                humantime::format_duration(window)
            ),
        );
    }
    if !(0.0..1.0).contains(&max_downscale_factor) {
        walker.error(
            &["autoscaling", "max_downscale_factor"],
            "must be greater than or equal to 0 and less than 1",
        );
    }
    if max_upscale_factor <= 1.0 {
        walker.error(
            &["autoscaling", "max_upscale_factor"],
            "must be greater than 1",
        );
    }
    if !(0.0..1.0).contains(&downscale_tolerance) {
        walker.error(
            &["autoscaling", "downscale_tolerance"],
            "must be greater than or equal to 0 and less than 1",
        );
    }
    if upscale_tolerance < 0.0 {
        walker.error(
            &["autoscaling", "upscale_tolerance"],
            "must be greater than or equal to 0",
        );
    }
    (walker.errors.len() == before).then_some(Autoscaling {
        min_replicas,
        max_replicas,
        init_replicas,
        max_replica_concurrency,
        target_replica_concurrency,
        window,
        downscale_stabilization_period,
        upscale_stabilization_period,
        max_downscale_factor,
        max_upscale_factor,
        downscale_tolerance,
        upscale_tolerance,
    })
}

pub(crate) fn update_strategy(
    walker: &mut Walker,
    value: Option<&Value>,
) -> Option<UpdateStrategy> {
    let empty = serde_yaml::Mapping::new();
    let map = match value {
        Some(v) => walker.mapping(&["update_strategy"], v, &["max_surge", "max_unavailable"])?,
        None => &empty,
    };
    let mut field = |key: &str| -> Option<(String, f64)> {
        let Some(v) = get(map, key) else {
            return Some(("25%".into(), 25.0));
        };
        let text = scalar(v);
        let parsed = match text.strip_suffix('%') {
            Some(p) => p.parse::<f64>().ok().filter(|p| (0.0..=100.0).contains(p)),
            None => text.parse::<u32>().ok().map(f64::from),
        };
        match parsed {
            Some(n) => Some((text, n)),
            None => {
                walker.error(
                    &["update_strategy", key],
                    format!("{text:?} must be an integer or a percentage between 0% and 100%"),
                );
                None
            }
        }
    };
    let (max_surge, surge) = field("max_surge")?;
    let (max_unavailable, unavailable) = field("max_unavailable")?;
    if surge == 0.0 && unavailable == 0.0 {
        walker.error(
            &["update_strategy"],
            "max_surge and max_unavailable cannot both be zero",
        );
        return None;
    }
    Some(UpdateStrategy {
        max_surge,
        max_unavailable,
    })
}

pub(crate) fn networking(
    walker: &mut Walker,
    value: Option<&Value>,
    name: &str,
) -> Option<Networking> {
    let endpoint = match value {
        None => format!("/{name}"),
        Some(v) => {
            let map = walker.mapping(&["networking"], v, &["endpoint"])?;
            match get(map, "endpoint") {
                None => format!("/{name}"),
                Some(e) => {
                    let text = walker.string(&["networking", "endpoint"], e)?;
                    endpoint(walker, &text)?
                }
            }
        }
    };
    Some(Networking { endpoint })
}

fn endpoint(walker: &mut Walker, text: &str) -> Option<String> {
    let at = ["networking", "endpoint"];
    if text.len() > 1000 {
        walker.error(&at, "must be no more than 1000 characters");
        return None;
    }
    if !text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
    {
        walker.error(
            &at,
            format!("{text:?} may contain only letters, numbers, '_', '-', '.' and '/'"),
        );
        return None;
    }
    if text.contains("//") {
        walker.error(&at, format!("{text:?} cannot contain adjacent slashes"));
        return None;
    }
    let trimmed = text.trim_matches('/');
    if trimmed.is_empty() {
        walker.error(&at, "cannot be \"/\"");
        return None;
    }
    let canonical = format!("/{trimmed}");
    if ["/healthz", "/readyz", "/metrics"].contains(&canonical.as_str()) {
        walker.error(&at, format!("{canonical} is reserved by soma's gateway"));
        return None;
    }
    Some(canonical)
}
