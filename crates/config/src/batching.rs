//! `server_side_batching`: Cortex's RealtimeAPI field, which soma also accepts for AsyncAPI
//! (for the whole `handler`, or per entry of `models.paths`).

use serde_yaml::Value;

use crate::walk::{Walker, get, with};
use crate::{BatchInterval, ServerSideBatching, duration};

const KEYS: &[&str] = &["max_batch_size", "batch_interval"];
/// Cortex's range for `max_batch_size`.
const MAX_BATCH_SIZE: (i64, i64) = (2, 1024);

/// Parses the mapping at `at`; `None` (with errors recorded) if it is invalid.
pub(crate) fn server_side_batching(
    walker: &mut Walker,
    at: &[&str],
    value: &Value,
) -> Option<ServerSideBatching> {
    let map = walker.mapping(at, value, KEYS)?;
    let mark = walker.mark();
    let max_batch_size = walker.required(map, at, "max_batch_size").and_then(|v| {
        let path = with(at, "max_batch_size");
        let n = walker.int(&path, v)?;
        let (min, max) = MAX_BATCH_SIZE;
        if n < min {
            walker.error(&path, format!("{n} must be greater than or equal to {min}"));
            return None;
        }
        if n > max {
            walker.error(&path, format!("{n} must be less than or equal to {max}"));
            return None;
        }
        usize::try_from(n).ok()
    });
    let batch_interval = walker
        .required(map, at, "batch_interval")
        .and_then(|v| interval(walker, &with(at, "batch_interval"), v));
    if !walker.clean_since(mark) {
        return None;
    }
    Some(ServerSideBatching {
        max_batch_size: max_batch_size?,
        batch_interval: batch_interval?,
    })
}

/// A Go duration greater than zero, or `auto` (soma extension).
fn interval(walker: &mut Walker, at: &[&str], value: &Value) -> Option<BatchInterval> {
    let text = walker.string(at, value)?;
    if text == "auto" {
        return Some(BatchInterval::Auto);
    }
    match duration::parse(&text) {
        Some(d) if !d.is_zero() => Some(BatchInterval::Fixed(d)),
        Some(_) => {
            walker.error(at, format!("{text} must be greater than 0s"));
            None
        }
        None => {
            walker.error(
                at,
                format!("{text:?} is not a valid duration (e.g. 5ms, 100us) or \"auto\""),
            );
            None
        }
    }
}

/// `server_side_batching` of `map`, if present.
pub(crate) fn optional(
    walker: &mut Walker,
    at: &[&str],
    map: &serde_yaml::Mapping,
) -> Option<ServerSideBatching> {
    let value = get(map, "server_side_batching")?;
    server_side_batching(walker, &with(at, "server_side_batching"), value)
}
