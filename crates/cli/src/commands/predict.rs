use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use serde_json::{Map, Value};
use soma_core::{ModelLocation, VersionSpec};
use soma_runtime::ModelSet;

use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A cortex.yaml, or a model folder (a SavedModel, or integer version folders of them).
    target: PathBuf,

    /// The API of the cortex.yaml to use (required when it has several).
    #[arg(long)]
    api: Option<String>,

    /// Model name, for APIs with `models.paths` or `models.dir`.
    #[arg(long)]
    model: Option<String>,

    /// Model version: "latest" (the highest) or a number.
    #[arg(long, default_value = "latest")]
    version: VersionSpec,

    /// Signature key; defaults to the model's chosen signature.
    #[arg(long)]
    signature: Option<String>,

    /// Inputs as a JSON object `{"input_name": nested list | scalar | string | {"b64": ...}}`,
    /// or `@file.json`, or `-` for standard input.
    #[arg(long, value_name = "JSON|@FILE|-")]
    input: String,
}

pub(crate) async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let inputs = read_inputs(&args.input)?;
    let options = super::model_options(global);
    let set: Arc<ModelSet> = if args.target.is_dir() {
        let location = ModelLocation::Local(std::path::absolute(&args.target)?);
        soma_models::load_location(&location, args.signature.as_deref(), &options).await?
    } else {
        let config = super::load_config(&args.target)?;
        let api = match (&args.api, config.apis.as_slice()) {
            (Some(name), apis) => apis
                .iter()
                .find(|a| &a.name == name)
                .with_context(|| format!("no API named '{name}' in {}", args.target.display()))?,
            (None, [only]) => only,
            (None, apis) => {
                let names: Vec<&str> = apis.iter().map(|a| a.name.as_str()).collect();
                bail!(
                    "{} has several APIs; choose one with --api: {}",
                    args.target.display(),
                    names.join(", ")
                )
            }
        };
        if api.handler.models.is_none() {
            bail!(
                "API '{}' has no models (handler type {}): soma predict runs an API's \
                 TensorFlow models",
                api.name,
                api.handler.handler_type
            );
        }
        soma_models::load_api(api, &options).await?
    };
    let set_for_task = Arc::clone(&set);
    let prediction = tokio::task::spawn_blocking(move || {
        set_for_task.predict_json(
            args.model.as_deref(),
            args.version,
            args.signature.as_deref(),
            &inputs,
        )
    })
    .await??;
    tracing::info!(
        model = %prediction.model,
        version = prediction.version,
        signature = %prediction.signature,
        "prediction done"
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&Value::Object(prediction.outputs_json()))?
    );
    Ok(ExitCode::SUCCESS)
}

fn read_inputs(arg: &str) -> anyhow::Result<Map<String, Value>> {
    let text = if arg == "-" {
        let mut buffer = String::new();
        std::io::stdin()
            .read_to_string(&mut buffer)
            .context("reading inputs from stdin")?;
        buffer
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("reading inputs from {path}"))?
    } else {
        arg.to_string()
    };
    match serde_json::from_str(&text).context("--input is not valid JSON")? {
        Value::Object(map) => Ok(map),
        other => bail!(
            "--input must be a JSON object of input name -> value, got {}",
            match other {
                Value::Array(_) => "a list",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                _ => "a scalar",
            }
        ),
    }
}
