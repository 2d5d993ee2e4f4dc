use soma_config::{
    ApiSpec, BatchInterval, ModelSource, ServerSideBatching, ThreadPools as ConfigThreads,
};
use soma_core::ModelLocation;
use soma_core::runner::ThreadPools;
use soma_repository::Validator;
use soma_runtime::SINGLE_MODEL_NAME;
use soma_runtime::batching::{BatchOptions, BatchWindow};

use crate::ModelsError;

/// One model named by an API, with everything needed to load it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    pub name: String,
    pub location: ModelLocation,
    pub signature_key: Option<String>,
    pub threads: ThreadPools,
    /// Server-side batching (`server_side_batching`), if enabled for this model.
    pub batching: Option<BatchOptions>,
    /// Where cortex.yaml gives the location (`handler: models: path`), for errors about
    /// it; empty when it comes from elsewhere.
    pub field: String,
}

impl ModelEntry {
    /// `name` at `location` with the defaults: the model's default signature, TensorFlow's
    /// own thread pools, no batching.
    pub fn new(name: impl Into<String>, location: ModelLocation) -> ModelEntry {
        ModelEntry {
            name: name.into(),
            location,
            signature_key: None,
            threads: ThreadPools::default(),
            batching: None,
            field: String::new(),
        }
    }
}

/// The models of an API: one for `models.path`, one per entry of `models.paths`, and one per
/// sub-folder of `models.dir` (which needs a listing, hence async). Returns the entries and
/// whether the API uses the single-model form. An invalid `models.dir` sub-folder fails the
/// call (Cortex's deploy-time check); several fail it together
/// ([`ModelsError::Several`]), so that every one is reported.
pub async fn entries(api: &ApiSpec) -> Result<(Vec<ModelEntry>, bool), ModelsError> {
    let (entries, single, mut broken) = listed(api).await?;
    match broken.len() {
        0 => Ok((entries, single)),
        1 => Err(broken.remove(0)),
        _ => Err(ModelsError::Several(broken)),
    }
}

/// The models a server serves for an API: as [`entries`], except that an invalid
/// `models.dir` sub-folder is left out and returned with its error beside the others (as
/// Cortex's runtime skipped the `dir` models that failed), unless no sub-folder is valid.
pub async fn serving_entries(api: &ApiSpec) -> Result<ServingEntries, ModelsError> {
    let (entries, single, mut broken) = listed(api).await?;
    if entries.is_empty() && !broken.is_empty() {
        return Err(broken.swap_remove(0));
    }
    Ok(ServingEntries {
        entries,
        single,
        broken,
    })
}

/// What [`serving_entries`] found.
#[derive(Debug)]
pub struct ServingEntries {
    pub entries: Vec<ModelEntry>,
    /// The API uses the single-model form (`models.path`).
    pub single: bool,
    /// The `models.dir` sub-folders left out, each with why.
    pub broken: Vec<ModelsError>,
}

async fn listed(api: &ApiSpec) -> Result<(Vec<ModelEntry>, bool, Vec<ModelsError>), ModelsError> {
    let Some(models) = &api.handler.models else {
        return Ok((Vec::new(), false, Vec::new()));
    };
    let default_threads = threads(&models.threads);
    let api_batching = api.handler.server_side_batching;
    let entry = |name: &str,
                 location: &ModelLocation,
                 key: Option<&String>,
                 t: ThreadPools,
                 field: String| ModelEntry {
        name: name.to_string(),
        location: location.clone(),
        signature_key: key.or(models.signature_key.as_ref()).cloned(),
        threads: t,
        batching: api_batching.map(batch_options),
        field,
    };
    let mut broken = Vec::new();
    let (list, single) = match &models.source {
        ModelSource::Single(location) => (
            vec![entry(
                SINGLE_MODEL_NAME,
                location,
                None,
                default_threads,
                "handler: models: path".to_string(),
            )],
            true,
        ),
        ModelSource::Named(named) => {
            let list = named
                .iter()
                .map(|m| {
                    let own = threads(&m.threads);
                    let t = ThreadPools {
                        intra_op: own.intra_op.or(default_threads.intra_op),
                        inter_op: own.inter_op.or(default_threads.inter_op),
                    };
                    let field = format!("handler: models: paths: {}: path", m.name);
                    let mut e = entry(&m.name, &m.location, m.signature_key.as_ref(), t, field);
                    if let Some(own) = m.server_side_batching {
                        e.batching = Some(batch_options(own));
                    }
                    e
                })
                .collect();
            (list, false)
        }
        ModelSource::Dir(dir) => {
            const DIR: &str = "handler: models: dir";
            let settings = soma_repository::S3Settings::default();
            let found = soma_repository::discover_dir_each(dir, validator(api), &settings)
                .await
                .map_err(|source| ModelsError::at(DIR, source))?;
            let mut list = Vec::with_capacity(found.len());
            for (name, model) in found {
                match model {
                    Ok(_) => {
                        let field = format!("{DIR} ({name})");
                        list.push(entry(&name, &dir.join(&name), None, default_threads, field));
                    }
                    Err(source) => broken.push(ModelsError::at(DIR, source)),
                }
            }
            (list, false)
        }
    };
    Ok((list, single, broken))
}

/// Inferentia APIs (`compute.inf > 0`) only need `saved_model.pb` in each version.
pub(crate) fn validator(api: &ApiSpec) -> Validator {
    if api.compute.inf > 0 {
        Validator::Neuron
    } else {
        Validator::TensorFlow
    }
}

fn threads(config: &ConfigThreads) -> ThreadPools {
    ThreadPools {
        intra_op: config.intra_op,
        inter_op: config.inter_op,
    }
}

/// Cortex's two batching fields; the rest keeps TF Serving's defaults. Cortex's
/// `batch_interval` is the longest wait for a batch to fill.
pub fn batch_options(config: ServerSideBatching) -> BatchOptions {
    BatchOptions {
        max_batch_size: config.max_batch_size,
        window: match config.batch_interval {
            BatchInterval::Fixed(d) => BatchWindow::Fixed(d),
            BatchInterval::Auto => BatchWindow::Auto,
        },
        ..BatchOptions::default()
    }
}
