use std::path::PathBuf;
use std::process::ExitCode;

use soma_config::{ApiSpec, Config};
use soma_core::{SignatureDef, format_shape};
use soma_models::ModelReport;

use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The cortex.yaml to check.
    config: PathBuf,

    /// Also load every model version with TensorFlow and run one warm-up prediction, which
    /// catches models that load but cannot run.
    #[arg(long)]
    load: bool,
}

pub(crate) async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(&args.config)?;
    let options = super::model_options(global);
    let mut failed = false;
    println!("{}: {} API(s)", args.config.display(), config.apis.len());
    for api in &config.apis {
        print_api(api, &config);
        if api.handler.models.is_none() {
            continue;
        }
        let result = if args.load {
            soma_models::load_api(api, &options).await.map(|set| {
                println!("  loaded and warmed up: {}", describe_loaded(&set.list()));
            })
        } else {
            Ok(())
        };
        match result.and(soma_models::inspect_api(api, &options).await) {
            Ok(reports) => reports.iter().for_each(print_model),
            Err(error) => {
                failed = true;
                for e in error.each() {
                    eprintln!(
                        "{}: {} ({}): {e}",
                        args.config.display(),
                        api.name,
                        api.kind
                    );
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_api(api: &ApiSpec, config: &Config) {
    println!("\n{} ({})", api.name, api.kind);
    println!("  endpoint: {}", api.networking.endpoint);
    println!(
        "  handler:  {} (type {}) in {}",
        api.handler.path.display(),
        api.handler.handler_type,
        config.project_dir.display()
    );
}

fn print_model(report: &ModelReport) {
    let versions: Vec<String> = report
        .versions
        .iter()
        .map(|v| v.version.to_string())
        .collect();
    println!("  model {} <- {}", report.name, report.location);
    println!(
        "    versions: {} (latest: {})",
        versions.join(", "),
        versions.last().map_or("none", String::as_str)
    );
    // Versions usually share one signature; print each distinct one once.
    let mut previous: Option<&SignatureDef> = None;
    for version in &report.versions {
        let Some(signature) = version.signatures.get(&version.chosen) else {
            continue;
        };
        if previous == Some(signature) {
            continue;
        }
        previous = Some(signature);
        let others: Vec<&str> = version
            .signatures
            .keys()
            .filter(|k| **k != version.chosen)
            .map(String::as_str)
            .collect();
        println!(
            "    version {}: signature '{}' ({}){}",
            version.version,
            version.chosen,
            signature.method_name,
            if others.is_empty() {
                String::new()
            } else {
                format!("; also: {}", others.join(", "))
            }
        );
        for (direction, tensors) in [
            ("input ", &signature.inputs),
            ("output", &signature.outputs),
        ] {
            for (name, info) in tensors {
                println!(
                    "      {direction} {name:<16} {:<8} {}",
                    info.dtype.name(),
                    format_shape(info.shape.as_deref())
                );
            }
        }
    }
}

fn describe_loaded(models: &[(String, Vec<i64>)]) -> String {
    let parts: Vec<String> = models
        .iter()
        .map(|(name, versions)| format!("{name} {versions:?}"))
        .collect();
    parts.join(", ")
}
