//! `autoscaling`: Cortex's defaults, ranges and cross-field rules.

use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::walk::{Walker, get, with};
use crate::{Autoscaling, duration};

const KEYS: &[&str] = &[
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
const AT: &[&str] = &["autoscaling"];
const MAX_REPLICA_CONCURRENCY: u32 = 30_000;

pub(crate) fn autoscaling(walker: &mut Walker, value: Option<&Value>) -> Option<Autoscaling> {
    let empty = Mapping::new();
    let map = match value {
        Some(v) => walker.mapping(AT, v, KEYS)?,
        None => &empty,
    };
    let mark = walker.mark();
    let mut fields = Fields { walker, map };
    // soma (like Cortex from v0.36 for AsyncAPI) allows scaling to zero.
    let min_replicas = fields.int("min_replicas", 0, None);
    let max_replicas = fields.int("max_replicas", 1, None);
    let init_replicas = fields.int("init_replicas", 1, None);
    let max_replica_concurrency =
        fields.int("max_replica_concurrency", 1, Some(MAX_REPLICA_CONCURRENCY));
    let target_replica_concurrency = fields.float("target_replica_concurrency", Bound::Above(0.0));
    let window = fields.duration("window");
    let downscale_stabilization_period = fields.duration("downscale_stabilization_period");
    let upscale_stabilization_period = fields.duration("upscale_stabilization_period");
    let max_downscale_factor = fields.float("max_downscale_factor", Bound::Unit);
    let max_upscale_factor = fields.float("max_upscale_factor", Bound::Above(1.0));
    let downscale_tolerance = fields.float("downscale_tolerance", Bound::Unit);
    let upscale_tolerance = fields.float("upscale_tolerance", Bound::AtLeast(0.0));

    let min_replicas = min_replicas.unwrap_or(1);
    let max_replicas = max_replicas.unwrap_or(100);
    // Default: min_replicas, but at least 1 so that an API that may scale to zero still
    // starts with a worker (soma runs init_replicas workers).
    // (A default init_replicas is not compared again: min_replicas' error says it all.)
    let init_given = init_replicas.is_some();
    let init_replicas = init_replicas.unwrap_or(min_replicas.max(1));
    let max_replica_concurrency = max_replica_concurrency.unwrap_or(1024);
    // Cortex: processes_per_replica × threads_per_process, always 1 for AsyncAPI.
    let target_replica_concurrency = target_replica_concurrency.unwrap_or(1.0);
    let window = window.unwrap_or(Duration::from_secs(60));
    if min_replicas > max_replicas {
        walker.error(
            &with(AT, "min_replicas"),
            format!(
                "min_replicas cannot be greater than max_replicas ({min_replicas} > {max_replicas})"
            ),
        );
    }
    if init_given && init_replicas > max_replicas {
        walker.error(
            &with(AT, "init_replicas"),
            format!("init_replicas cannot be greater than max_replicas ({init_replicas} > {max_replicas})"),
        );
    }
    if init_given && init_replicas < min_replicas {
        walker.error(
            &with(AT, "init_replicas"),
            format!(
                "init_replicas cannot be less than min_replicas ({init_replicas} < {min_replicas})"
            ),
        );
    }
    if target_replica_concurrency > f64::from(max_replica_concurrency) {
        walker.error(
            &with(AT, "target_replica_concurrency"),
            format!("target_replica_concurrency cannot be greater than max_replica_concurrency ({target_replica_concurrency} > {max_replica_concurrency})"),
        );
    }
    let ten = Duration::from_secs(10);
    if window < ten {
        walker.error(
            &with(AT, "window"),
            format!(
                "{} must be greater than or equal to 10s",
                duration::format(window)
            ),
        );
    } else if !window.as_nanos().is_multiple_of(ten.as_nanos()) {
        walker.error(
            &with(AT, "window"),
            format!("{} is not a multiple of 10s", duration::format(window)),
        );
    }
    if !walker.clean_since(mark) {
        return None;
    }
    Some(Autoscaling {
        min_replicas,
        max_replicas,
        init_replicas,
        max_replica_concurrency,
        target_replica_concurrency,
        window,
        downscale_stabilization_period: downscale_stabilization_period
            .unwrap_or(Duration::from_secs(300)),
        upscale_stabilization_period: upscale_stabilization_period
            .unwrap_or(Duration::from_secs(60)),
        max_downscale_factor: max_downscale_factor.unwrap_or(0.75),
        max_upscale_factor: max_upscale_factor.unwrap_or(1.5),
        downscale_tolerance: downscale_tolerance.unwrap_or(0.05),
        upscale_tolerance: upscale_tolerance.unwrap_or(0.05),
    })
}

/// Accepted range of a float field.
#[derive(Clone, Copy)]
enum Bound {
    /// `> x`
    Above(f64),
    /// `>= x`
    AtLeast(f64),
    /// `0 <= x < 1`
    Unit,
}

/// The fields of one `autoscaling` map; each reader returns `None` when the field is
/// absent or invalid (the error is recorded).
struct Fields<'w, 'm> {
    walker: &'w mut Walker,
    map: &'m Mapping,
}

impl Fields<'_, '_> {
    fn int(&mut self, key: &str, min: u32, max: Option<u32>) -> Option<u32> {
        let at = with(AT, key);
        let v = get(self.map, key)?;
        let n = self.walker.int(&at, v)?;
        if n < i64::from(min) {
            let message = if min == 0 {
                format!("{n} must be greater than or equal to 0")
            } else {
                format!("{n} must be greater than {}", min - 1)
            };
            self.walker.error(&at, message);
            return None;
        }
        let max = max.unwrap_or(u32::MAX);
        if n > i64::from(max) {
            self.walker
                .error(&at, format!("{n} must be less than or equal to {max}"));
            return None;
        }
        u32::try_from(n).ok()
    }

    fn float(&mut self, key: &str, bound: Bound) -> Option<f64> {
        let at = with(AT, key);
        let x = self.walker.float(&at, get(self.map, key)?)?;
        let problem = match bound {
            Bound::Above(b) if x <= b => Some(format!("{x} must be greater than {b}")),
            Bound::AtLeast(b) if x < b => Some(format!("{x} must be greater than or equal to {b}")),
            Bound::Unit if x < 0.0 => Some(format!("{x} must be greater than or equal to 0")),
            Bound::Unit if x >= 1.0 => Some(format!("{x} must be less than 1")),
            _ => None,
        };
        match problem {
            Some(message) => {
                self.walker.error(&at, message);
                None
            }
            None => Some(x),
        }
    }

    fn duration(&mut self, key: &str) -> Option<Duration> {
        let at = with(AT, key);
        let v = get(self.map, key)?;
        // Go's ParseDuration accepts a bare 0, which YAML reads as a number.
        if v.as_u64() == Some(0) {
            return Some(Duration::ZERO);
        }
        let text = self.walker.string(&at, v)?;
        let parsed = duration::parse(&text);
        if parsed.is_none() {
            let message = if text.trim().starts_with('-') {
                format!("{text} must be greater than or equal to 0s")
            } else {
                format!("{text:?} is not a valid duration (e.g. 60s, 5m, 1h30m)")
            };
            self.walker.error(&at, message);
        }
        parsed
    }
}
