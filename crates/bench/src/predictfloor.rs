//! `soma-bench floor <model-dir> --threads N --seconds S [--body body.json] [--warmup S]`:
//! the floor of the serving benchmarks: one loaded model called in a loop in-process from N
//! threads through soma's predict path (`Servable::predict`, tensors in and out: signature
//! lookup, input checks, `TF_SessionRun`), with no network, no JSON and no batching.
//!
//! `<model-dir>` is a version folder (with `saved_model.pb`) or a base path (its highest
//! numbered version is used). The input is the body's `instances` (default: one row of ones).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use serde_json::json;
use soma_core::runner::ThreadPools;
use soma_models::TfRunner;
use soma_runtime::Servable;
use soma_tensorflow::TensorFlow;

use crate::load::{self, ClientResult, LoadOptions, Window};

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let [dir, flags @ ..] = args else {
        bail!("usage: soma-bench floor <model-dir> --threads N --seconds S [--body body.json]");
    };
    let (body, flags) = body_flag(flags)?;
    let options = LoadOptions::parse(&flags, "--threads")?;
    let dir = version_dir(Path::new(dir))?;
    let tf = TensorFlow::global(None)?;
    // The same thread-pool settings as `soma tfserving` without the thread flags.
    let runner = TfRunner::load(&tf, &dir, ThreadPools::default())?;
    let servable = Servable::new("model", 1, Box::new(runner), None)?;
    let (_, signature) = servable.signature(None)?;
    let body = match body {
        Some(path) => load::read_body(&path)?,
        None => ones_body(&signature.inputs)?,
    };
    let inputs = load::single_input(&body, &signature.inputs)?;
    servable.predict(None, &inputs)?;

    let window = Window::new(&options);
    let servable = Arc::new(servable);
    let clients: Vec<ClientResult> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..options.clients)
            .map(|_| {
                scope.spawn(|| {
                    window.run(|| {
                        servable
                            .predict(None, &inputs)
                            .map(drop)
                            .map_err(|e| e.to_string())
                    })
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("floor thread"))
            .collect()
    });
    load::report(&format!("floor {}", dir.display()), &options, clients);
    Ok(())
}

/// Takes `--body <file>` out of the flags.
fn body_flag(flags: &[String]) -> anyhow::Result<(Option<String>, Vec<String>)> {
    let mut rest = Vec::new();
    let mut body = None;
    let mut iter = flags.iter();
    while let Some(flag) = iter.next() {
        if flag == "--body" {
            body = Some(iter.next().context("--body needs a file")?.clone());
        } else {
            rest.push(flag.clone());
        }
    }
    Ok((body, rest))
}

/// `dir` itself if it holds a SavedModel, else its highest numbered subfolder.
pub(crate) fn version_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.join("saved_model.pb").is_file() {
        return Ok(dir.to_path_buf());
    }
    let mut versions: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, path)| path)
        .with_context(|| format!("{}: no saved_model.pb and no version folder", dir.display()))
}

/// `{"instances": [[1.0, ...]]}` for a single input of shape `[-1, width]`.
fn ones_body(
    inputs: &std::collections::BTreeMap<String, soma_core::TensorInfo>,
) -> anyhow::Result<Vec<u8>> {
    let width = inputs
        .values()
        .next()
        .and_then(|info| info.shape.as_ref()?.get(1).copied())
        .filter(|w| *w > 0)
        .context("no --body given and the input is not [-1, width]")?;
    Ok(serde_json::to_vec(
        &json!({"instances": [vec![1.0; width as usize]]}),
    )?)
}
