//! What the synchronous load generators (`rest`, `grpc`, `floor`) share: their options, the
//! request body, and the closed-loop measurement (every client sends its next request as soon
//! as the previous one answered) with its one-line report.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use soma_core::json::tensor_from_json;
use soma_core::{Tensor, TensorInfo};

/// `--connections N` (or `--threads N`), `--seconds S`, `--warmup S`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadOptions {
    pub clients: usize,
    pub seconds: f64,
    /// Requests before the clock starts (connections opened, pools and caches warm).
    pub warmup: f64,
}

impl LoadOptions {
    /// Parses the flags after the positional arguments; `clients_flag` is `--connections`
    /// or `--threads`.
    pub(crate) fn parse(flags: &[String], clients_flag: &str) -> anyhow::Result<LoadOptions> {
        let mut options = LoadOptions {
            clients: 1,
            seconds: 10.0,
            warmup: 1.0,
        };
        let mut rest = flags.iter();
        while let Some(flag) = rest.next() {
            let value = rest
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            let bad = || format!("{flag}: not a number: {value}");
            match flag.as_str() {
                f if f == clients_flag => options.clients = value.parse().with_context(bad)?,
                "--seconds" => options.seconds = value.parse().with_context(bad)?,
                "--warmup" => options.warmup = value.parse().with_context(bad)?,
                _ => bail!("unknown flag {flag} (expected {clients_flag}, --seconds, --warmup)"),
            }
        }
        if options.clients == 0 || options.seconds <= 0.0 {
            bail!("{clients_flag} and --seconds must be positive");
        }
        Ok(options)
    }
}

/// Removes `flag` and its value (a positive count) from `flags`, for options that only one
/// generator has; the rest go to [`LoadOptions::parse`].
pub(crate) fn take_flag(
    flags: &[String],
    flag: &str,
) -> anyhow::Result<(Option<usize>, Vec<String>)> {
    let Some(at) = flags.iter().position(|f| f == flag) else {
        return Ok((None, flags.to_vec()));
    };
    let value = flags
        .get(at + 1)
        .with_context(|| format!("{flag} needs a value"))?;
    let count = value
        .parse()
        .with_context(|| format!("{flag}: not a number: {value}"))?;
    let mut rest = flags.to_vec();
    rest.drain(at..at + 2);
    Ok((Some(count), rest))
}

/// The `instances` of a TF Serving row-format body (`{"instances": [[...]]}`).
pub(crate) fn instances(body: &[u8]) -> anyhow::Result<Value> {
    let value: Value = serde_json::from_slice(body).context("body is not JSON")?;
    match value.get("instances") {
        Some(rows @ Value::Array(_)) => Ok(rows.clone()),
        _ => bail!("the body needs an \"instances\" list (TF Serving's row format)"),
    }
}

/// The input tensors of a single-input signature from a row-format body.
pub(crate) fn single_input(
    body: &[u8],
    inputs: &BTreeMap<String, TensorInfo>,
) -> anyhow::Result<BTreeMap<String, Tensor>> {
    let [(name, info)] = inputs.iter().collect::<Vec<_>>()[..] else {
        bail!("the load generators send row-format bodies: one input only")
    };
    let tensor = tensor_from_json(name, &instances(body)?, info)?;
    Ok([(name.clone(), tensor)].into())
}

/// One client's measurements after the warm-up.
#[derive(Debug, Default)]
pub(crate) struct ClientResult {
    /// Latencies of successful requests.
    pub latencies: Vec<Duration>,
    pub errors: usize,
    /// The first error, for the report.
    pub first_error: Option<String>,
}

impl ClientResult {
    pub(crate) fn error(&mut self, message: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message());
        }
    }
}

/// The measurement window every client follows: warm-up until `start`, measure until `end`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub(crate) fn new(options: &LoadOptions) -> Window {
        let start = Instant::now() + Duration::from_secs_f64(options.warmup);
        Window {
            start,
            end: start + Duration::from_secs_f64(options.seconds),
        }
    }

    /// Runs `call` in a loop until the window ends, recording calls that started inside it.
    /// `call` returns `Err(message)` for a failed request.
    pub(crate) fn run(&self, mut call: impl FnMut() -> Result<(), String>) -> ClientResult {
        let mut result = ClientResult::default();
        loop {
            let started = Instant::now();
            if started >= self.end {
                return result;
            }
            let outcome = call();
            if started < self.start {
                continue;
            }
            match outcome {
                Ok(()) => result.latencies.push(started.elapsed()),
                Err(message) => result.error(|| message),
            }
        }
    }
}

/// Prints one line: `<label> c=N: R req/s  p50 X ms  p99 Y ms  errors E of T`.
/// Throughput counts successful requests only; errors are always printed.
pub(crate) fn report(label: &str, options: &LoadOptions, clients: Vec<ClientResult>) {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for client in clients {
        latencies.extend(client.latencies);
        errors += client.errors;
        first_error = first_error.or(client.first_error);
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{label} c={}: {:.0} req/s  p50 {:.3} ms  p99 {:.3} ms  errors {errors} of {}",
        options.clients,
        latencies.len() as f64 / options.seconds,
        pct(0.50),
        pct(0.99),
        latencies.len() + errors
    );
    if let Some(message) = first_error {
        println!("  first error: {message}");
    }
}

/// Reads a body file.
pub(crate) fn read_body(path: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(Path::new(path)).with_context(|| format!("reading {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use soma_core::DType;

    fn flags(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn flags_are_parsed_and_unknown_ones_rejected() {
        let o =
            LoadOptions::parse(&flags("--connections 8 --seconds 2.5"), "--connections").unwrap();
        assert_eq!((o.clients, o.seconds, o.warmup), (8, 2.5, 1.0));
        let e = LoadOptions::parse(&flags("--threads 8"), "--connections").unwrap_err();
        assert!(e.to_string().contains("unknown flag --threads"), "{e}");
        let e = LoadOptions::parse(&flags("--seconds"), "--connections").unwrap_err();
        assert!(e.to_string().contains("--seconds needs a value"), "{e}");
        let e = LoadOptions::parse(&flags("--connections 0"), "--connections").unwrap_err();
        assert!(e.to_string().contains("must be positive"), "{e}");
    }

    #[test]
    fn a_generator_specific_flag_is_taken_out() {
        let (channels, rest) = take_flag(
            &flags("--connections 8 --channels 2 --seconds 1"),
            "--channels",
        )
        .unwrap();
        assert_eq!(channels, Some(2));
        assert_eq!(rest, flags("--connections 8 --seconds 1"));
        let (channels, rest) = take_flag(&flags("--connections 8"), "--channels").unwrap();
        assert_eq!((channels, rest), (None, flags("--connections 8")));
        let e = take_flag(&flags("--channels"), "--channels").unwrap_err();
        assert!(e.to_string().contains("--channels needs a value"), "{e}");
        let e = take_flag(&flags("--channels two"), "--channels").unwrap_err();
        assert!(e.to_string().contains("not a number: two"), "{e}");
    }

    #[test]
    fn a_row_body_becomes_the_single_input() {
        let info = TensorInfo {
            tensor_name: "serving_default_x:0".into(),
            dtype: DType::Float,
            shape: Some(vec![-1, 4]),
        };
        let inputs = [("x".to_string(), info)].into();
        let body = br#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#;
        let tensors = single_input(body, &inputs).unwrap();
        assert_eq!(tensors["x"].shape(), &[1, 4]);
        assert!(single_input(br#"{"inputs": [[1]]}"#, &inputs).is_err());
        let short = single_input(br#"{"instances": [[1.0, 2.0]]}"#, &inputs).unwrap_err();
        assert!(short.to_string().contains('x'), "{short}");
    }
}
