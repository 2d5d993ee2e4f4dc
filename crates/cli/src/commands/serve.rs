use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use soma_server::ServeOptions;

use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The cortex.yaml whose APIs to run.
    pub(crate) config: PathBuf,

    #[command(flatten)]
    pub(crate) backend: super::scale::BackendArgs,

    /// Address of the HTTP gateway.
    #[arg(long, env = "SOMA_LISTEN", default_value = "127.0.0.1:8888")]
    listen: SocketAddr,

    /// Where the queue, workload states, payloads and results are stored (default:
    /// `.soma/data` beside the cortex.yaml).
    #[arg(long, env = "SOMA_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Largest accepted request body, e.g. `32MiB`, `512KiB` or a number of bytes.
    #[arg(long, env = "SOMA_BODY_LIMIT", default_value = "32MiB", value_parser = parse_size)]
    body_limit: usize,

    /// How long finished workloads and their results are kept.
    #[arg(long, env = "SOMA_RETENTION", default_value = "7days", value_parser = positive_duration)]
    retention: Duration,

    /// After SIGINT/SIGTERM, how long running workloads may take to finish.
    #[arg(long, env = "SOMA_GRACE", default_value = "60s", value_parser = humantime::parse_duration)]
    grace: Duration,

    /// A fixed number of workers per API. Without it each API autoscales between its
    /// `autoscaling.min_replicas` and `max_replicas` (capped by --max-workers), starting at
    /// `init_replicas`, following the queue length like Cortex.
    #[arg(long, env = "SOMA_WORKERS", value_parser = at_least_one)]
    workers: Option<usize>,

    /// Most workers an autoscaled API gets in this process.
    #[arg(long, env = "SOMA_MAX_WORKERS", default_value_t = ServeOptions::DEFAULT_MAX_WORKERS, value_parser = at_least_one)]
    max_workers: usize,

    /// How often the autoscaler decides (Cortex: 10s).
    #[arg(long, env = "SOMA_AUTOSCALE_EVERY", default_value = "10s", value_parser = positive_duration)]
    autoscale_every: Duration,

    /// How long a running workload is held before it may be delivered again (renewed while
    /// the handler runs; after a crash it is the redelivery delay).
    #[arg(long, env = "SOMA_LEASE", default_value = "60s", value_parser = positive_duration)]
    lease: Duration,

    /// Workloads each worker slot claims ahead while it runs one, so that claiming overlaps
    /// the handler. Default: 2 on Redis (a claim costs network round trips), 0 on the
    /// embedded backend. Prefetched workloads wait for their slot even if another one is
    /// idle: use 0 for long-running workloads.
    #[arg(long, env = "SOMA_PREFETCH", value_parser = parse_prefetch)]
    prefetch: Option<usize>,

    /// How often model folders are polled for new and removed version folders.
    #[arg(long, env = "SOMA_MODEL_POLL_INTERVAL", default_value = "1s", value_parser = positive_duration)]
    model_poll_interval: Duration,

    /// Also serve TF Serving's gRPC API (PredictionService, ModelService) on this address.
    #[arg(long, env = "SOMA_GRPC_LISTEN", value_name = "ADDR")]
    grpc_listen: Option<std::net::SocketAddr>,

    /// The largest gRPC request or response message, in bytes; a larger request gets
    /// RESOURCE_EXHAUSTED. Default: TF Serving's, 2147483647.
    #[arg(long, env = "SOMA_GRPC_MAX_MESSAGE_BYTES", value_name = "BYTES", default_value_t = i32::MAX as usize)]
    grpc_max_message_bytes: usize,

    /// Send an HTTP/2 PING on each gRPC connection this often; a client that does not answer
    /// within 20 s is disconnected.
    #[arg(long, env = "SOMA_GRPC_KEEPALIVE_INTERVAL", value_name = "DURATION", value_parser = positive_duration)]
    grpc_keepalive_interval: Option<Duration>,

    /// Ask gRPC connections older than this to go away (GOAWAY), so clients reconnect and
    /// spread over the replicas behind a load balancer; running requests finish.
    #[arg(long, env = "SOMA_GRPC_MAX_CONNECTION_AGE", value_name = "DURATION", value_parser = positive_duration)]
    grpc_max_connection_age: Option<Duration>,

    /// With --grpc-max-connection-age: close an aged connection this long after its GOAWAY,
    /// failing the requests still running on it. Default: they finish.
    #[arg(long, env = "SOMA_GRPC_MAX_CONNECTION_AGE_GRACE", value_name = "DURATION", value_parser = humantime::parse_duration, requires = "grpc_max_connection_age")]
    grpc_max_connection_age_grace: Option<Duration>,

    /// Serve gRPC over TLS with this certificate chain (PEM file); needs --grpc-tls-key.
    #[arg(
        long,
        env = "SOMA_GRPC_TLS_CERT",
        value_name = "FILE",
        requires = "grpc_tls_key"
    )]
    grpc_tls_cert: Option<PathBuf>,

    /// The private key (PEM file, unencrypted) of --grpc-tls-cert.
    #[arg(
        long,
        env = "SOMA_GRPC_TLS_KEY",
        value_name = "FILE",
        requires = "grpc_tls_cert"
    )]
    grpc_tls_key: Option<PathBuf>,

    /// With --grpc-tls-cert: require every gRPC client to present a certificate signed by
    /// this CA (PEM file).
    #[arg(
        long,
        env = "SOMA_GRPC_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "grpc_tls_cert"
    )]
    grpc_tls_client_ca: Option<PathBuf>,

    /// The project's Python environment (a venv with the handlers' packages).
    #[arg(long, env = "SOMA_PYTHON_ENV", value_name = "DIR")]
    python_env: Option<PathBuf>,
}

impl Args {
    /// The settings given that only a process running workers uses (they load models, run
    /// handlers and serve TF Serving's APIs): a gateway alone ignores them.
    pub(crate) fn worker_settings_given(&self) -> Vec<&'static str> {
        [
            ("--workers", self.workers.is_some()),
            ("--prefetch", self.prefetch.is_some()),
            ("--python-env", self.python_env.is_some()),
            ("--grpc-listen", self.grpc_listen.is_some()),
            ("--grpc-tls-cert", self.grpc_tls_cert.is_some()),
            (
                "--grpc-keepalive-interval",
                self.grpc_keepalive_interval.is_some(),
            ),
            (
                "--grpc-max-connection-age",
                self.grpc_max_connection_age.is_some(),
            ),
            (
                "--grpc-max-connection-age-grace",
                self.grpc_max_connection_age_grace.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }
}

pub(crate) async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(&args.config)?;
    let options = options(&args, &config, global)?;
    match args.backend.backend {
        super::scale::BackendKind::Embedded => {
            soma_server::serve(config, options, shutdown_signal())
                .await
                .context("soma serve")?;
        }
        super::scale::BackendKind::Redis => {
            let backend = args.backend.connect_remote().await?;
            let role = soma_server::Role::Both;
            soma_server::serve_with(config, options, backend, role, shutdown_signal())
                .await
                .context("soma serve")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn options(
    args: &Args,
    config: &soma_config::Config,
    global: &GlobalArgs,
) -> anyhow::Result<ServeOptions> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| config.project_dir.join(".soma").join("data"));
    Ok(ServeOptions {
        listen: args.listen,
        data_dir,
        body_limit: args.body_limit,
        retention: args.retention,
        grace: args.grace,
        workers: args.workers,
        max_workers: args.max_workers,
        autoscale_every: args.autoscale_every,
        // On Redis, idle workers block on the queue's wake list, so submissions of other
        // processes wake them at once; the poll is only a fallback (e.g. for workloads whose
        // lease expired, which no push announces).
        poll_interval: Duration::from_secs(1),
        // A claim on Redis costs two round trips, more than the iris handler takes: two
        // claims in flight keep the slot busy. The embedded claim is a local transaction.
        prefetch: args.prefetch.unwrap_or(match args.backend.backend {
            super::scale::BackendKind::Embedded => 0,
            super::scale::BackendKind::Redis => 2,
        }),
        lease: args.lease,
        python_env: args.python_env.clone(),
        models: super::model_options(global),
        model_poll_interval: args.model_poll_interval,
        grpc_listen: args.grpc_listen,
        grpc_max_message_bytes: args.grpc_max_message_bytes,
        grpc_keepalive_interval: args.grpc_keepalive_interval,
        grpc_max_connection_age: args.grpc_max_connection_age,
        grpc_max_connection_age_grace: args.grpc_max_connection_age_grace,
        grpc_tls: grpc_tls(args)?,
    })
}

/// The checked TLS settings of --grpc-tls-cert, --grpc-tls-key and --grpc-tls-client-ca;
/// errors name the flag and its file.
fn grpc_tls(args: &Args) -> anyhow::Result<Option<soma_grpc::TlsSettings>> {
    use soma_grpc::tls::TlsPart;
    let (Some(cert), Some(key)) = (&args.grpc_tls_cert, &args.grpc_tls_key) else {
        return Ok(None);
    };
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {flag} {}", path.display()))
    };
    let cert_pem = read("--grpc-tls-cert", cert)?;
    let key_pem = read("--grpc-tls-key", key)?;
    let ca_pem = match &args.grpc_tls_client_ca {
        Some(ca) => Some(read("--grpc-tls-client-ca", ca)?),
        None => None,
    };
    let settings =
        soma_grpc::TlsSettings::new(&cert_pem, &key_pem, ca_pem.as_deref()).map_err(|e| {
            let (flag, path) = match e.part() {
                Some(TlsPart::PrivateKey) => ("--grpc-tls-key", key),
                Some(TlsPart::ClientCa) => (
                    "--grpc-tls-client-ca",
                    args.grpc_tls_client_ca.as_ref().unwrap_or(cert),
                ),
                Some(TlsPart::ServerCertificate) | None => ("--grpc-tls-cert", cert),
            };
            anyhow::anyhow!("{flag} {}: {e}", path.display())
        })?;
    Ok(Some(settings))
}

/// Resolves on the first SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// A duration that a timer runs on: zero would make it spin (or, for tokio's intervals,
/// panic in the task that owns it), so it is refused here with the flag's name.
fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be longer than zero".to_string());
    }
    Ok(duration)
}

/// A count of workers: zero would serve nothing (it used to start one without a word).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a number of workers")),
    }
}

/// The most workloads a worker slot may claim ahead: each holds its payload in memory,
/// and a million took a test server to 3 GB and seconds per workload.
const MAX_PREFETCH: usize = 256;

fn parse_prefetch(text: &str) -> Result<usize, String> {
    let n: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of workloads"))?;
    if n > MAX_PREFETCH {
        return Err(format!("at most {MAX_PREFETCH} workloads per worker slot"));
    }
    Ok(n)
}

/// `32MiB`, `512KiB`, `1GB`, `1000` → bytes.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    match number.checked_mul(factor) {
        // Every request with a body would get 413.
        Some(0) => Err("must be at least one byte".to_string()),
        Some(size) => Ok(size),
        None => Err(format!("{text:?} is too large")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser as _;

    use super::parse_size;
    use crate::{Cli, Command};

    /// `soma serve cortex.yaml` with `flags`: its gRPC connection ages, or clap's error.
    fn ages(flags: &[&str]) -> Result<(Option<Duration>, Option<Duration>), String> {
        let cli = Cli::try_parse_from(["soma", "serve", "cortex.yaml"].iter().chain(flags))
            .map_err(|e| e.to_string())?;
        let Command::Serve(args) = cli.command else {
            unreachable!()
        };
        Ok((
            args.grpc_max_connection_age,
            args.grpc_max_connection_age_grace,
        ))
    }

    /// Timers' durations of zero, zero workers, and prefetches that would hold millions of
    /// payloads, are refused at start-up with the flag's name (a zero lease panicked every worker, a
    /// zero retention the sweeper).
    #[test]
    fn zero_timer_durations_workers_and_huge_prefetches_are_refused() {
        let parse = |flags: &[&str]| {
            Cli::try_parse_from(["soma", "serve", "cortex.yaml"].iter().chain(flags))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        for flag in [
            "--lease=0s",
            "--retention=0s",
            "--autoscale-every=0ms",
            "--model-poll-interval=0s",
            "--grpc-keepalive-interval=0s",
            "--grpc-max-connection-age=0s",
        ] {
            let err = parse(&[flag]).unwrap_err();
            let name = flag.split('=').next().unwrap();
            assert!(err.contains(name), "{err}");
            assert!(err.contains("must be longer than zero"), "{err}");
        }
        assert!(parse(&["--lease=1ms", "--grace=0s", "--prefetch=256"]).is_ok());
        for flag in ["--workers=0", "--max-workers=0"] {
            let err = parse(&[flag]).unwrap_err();
            assert!(err.contains("must be at least 1"), "{err}");
        }
        let err = parse(&["--prefetch=1000000"]).unwrap_err();
        assert!(
            err.contains("at most 256 workloads per worker slot"),
            "{err}"
        );
    }

    #[test]
    fn a_connection_age_grace_needs_an_age() {
        let minute = Duration::from_secs(60);
        assert_eq!(ages(&[]), Ok((None, None)));
        assert_eq!(
            ages(&[
                "--grpc-max-connection-age=1h",
                "--grpc-max-connection-age-grace=1m"
            ]),
            Ok((Some(minute * 60), Some(minute)))
        );
        let alone = ages(&["--grpc-max-connection-age-grace=1m"]).unwrap_err();
        assert!(
            alone.contains("--grpc-max-connection-age <DURATION>"),
            "{alone}"
        );
    }

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2 kb"), Ok(2000));
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("MiB").is_err());
        assert_eq!(
            parse_size("0KiB"),
            Err("must be at least one byte".to_string())
        );
    }
}
