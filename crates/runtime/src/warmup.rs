//! Warm-up requests recorded with a model version, replayed before it serves.
//!
//! soma warms every version up with one zero-valued run of its default signature
//! ([`Servable::warm_up`]). A version may also carry requests recorded by its author (TF
//! Serving's `assets.extra/tf_serving_warmup_requests`); reading them needs the gRPC
//! messages, so the format lives in a protocol crate and reaches the loaders through this
//! trait.

use std::path::Path;

use crate::{RuntimeError, Servable};

/// Replays the warm-up requests recorded in a version's folder.
pub trait RecordedWarmup: Send + Sync + std::fmt::Debug {
    /// Runs the requests recorded in `version_dir` on `servable`: `Ok(None)` if the version
    /// has none, `Ok(Some(n))` once all `n` records ran, an error (which fails the load)
    /// if the file is unreadable or a request fails.
    fn replay(
        &self,
        servable: &Servable,
        version_dir: &Path,
    ) -> Result<Option<usize>, RuntimeError>;
}
