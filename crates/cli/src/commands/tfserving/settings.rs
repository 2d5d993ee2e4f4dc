//! What the flags ask for, checked: [`Settings::from_args`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use soma_core::runner::ThreadPools;
use soma_grpc::GrpcOptions;
use soma_runtime::ConcurrencyLimit;
use soma_runtime::batching::BatchOptions;
use soma_runtime::hub::ModelConfig;
use soma_serving::{parse_platform_config, parse_session_config};

use super::args::{Args, refuse_flags_the_platform_config_sets, refuse_switched_on};
use super::files::{read_config_file, read_flag_file, read_monitoring_config, read_ssl_config};

/// The source of the batching parameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Batching {
    /// --enable_batching, with the --batching_parameters_file to read when serving starts,
    /// or without one (TF Serving's defaults).
    Flags(Option<PathBuf>),
    /// The --platform_config_file's `batching_parameters`.
    Platform(BatchOptions),
}

/// What the flags ask for, checked.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) grpc_port: u16,
    /// --grpc_socket_path: gRPC on a Unix socket too.
    pub(crate) grpc_socket: Option<PathBuf>,
    pub(crate) grpc: GrpcOptions,
    pub(crate) rest_port: Option<u16>,
    pub(crate) rest_timeout: Duration,
    /// --rest_api_enable_cors_support.
    pub(crate) rest_cors: bool,
    /// --rest_api_num_threads: at most this many REST inference requests at once.
    pub(crate) rest_max_concurrent: Option<usize>,
    /// --rest_api_io_threads and --rest_api_busy_poll_micros.
    pub(crate) rest_threading: soma_net::Threading,
    pub(crate) models: Vec<ModelConfig>,
    pub(crate) config_file: Option<PathBuf>,
    pub(crate) config_file_poll: Option<Duration>,
    pub(crate) fs_poll: Duration,
    /// --num_load_threads: at most this many versions load at once.
    pub(crate) load_limit: Option<usize>,
    /// --max_num_load_retries and --load_retry_interval_micros.
    pub(crate) load_retries: (u32, Duration),
    pub(crate) threads: ThreadPools,
    pub(crate) allow_labels_for_unavailable: bool,
    /// Where the batching parameters come from, when batching is on.
    pub(crate) batching: Option<Batching>,
    /// Recorded warm-up requests are replayed, this many times each; `None`: not replayed.
    pub(crate) warmup_iterations: Option<u32>,
    /// Where the REST port also serves the Prometheus metrics (--monitoring_config_file).
    pub(crate) prometheus_path: Option<String>,
    /// --enable_per_model_batching_parameters.
    pub(crate) per_model_batching: bool,
    /// --saved_model_tags, split.
    pub(crate) saved_model_tags: Vec<String>,
    /// --tensorflow_session_config_file, read and encoded, with --mixed_precision's rewrite.
    pub(crate) session_config: Option<Arc<[u8]>>,
}

/// The serving threads of one front end from its two flags (`names`): one per core and
/// [`soma_net::Threading::DEFAULT_BUSY_POLL`] unless given; polling needs threads of their own.
fn threading(
    threads: Option<usize>,
    busy_poll_micros: Option<u64>,
    names: (&str, &str),
) -> anyhow::Result<soma_net::Threading> {
    let (threads_flag, poll_flag) = names;
    if busy_poll_micros.is_some_and(|m| m > 0) && threads == Some(0) {
        anyhow::bail!("{poll_flag} needs serving threads of its own: drop {threads_flag}=0");
    }
    let busy_poll = busy_poll_micros.map_or(
        soma_net::Threading::DEFAULT_BUSY_POLL,
        Duration::from_micros,
    );
    let per_core = soma_net::Threading::per_core(busy_poll);
    Ok(soma_net::Threading {
        threads: threads.unwrap_or(per_core.threads),
        ..per_core
    })
}

/// "Never again" for a poll interval of 0 (tokio intervals need a finite period).
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

impl Settings {
    pub(crate) fn from_args(args: Args, cwd: &Path) -> anyhow::Result<Settings> {
        let platform = match &args.platform_config_file {
            None => None,
            Some(file) => {
                refuse_flags_the_platform_config_sets(&args)?;
                Some(read_flag_file(
                    "--platform_config_file",
                    file,
                    parse_platform_config,
                )?)
            }
        };
        let absolute = |path: &str| {
            if path.contains("://") || Path::new(path).is_absolute() {
                path.to_string()
            } else {
                cwd.join(path).display().to_string()
            }
        };
        if args.model_config_file.is_some() && args.model_base_path.is_some() {
            // As in TF Serving, whose Docker image always passes --model_name and
            // --model_base_path, so that a config file given after them must win.
            tracing::info!(
                "--model_config_file lists the models: --model_name and --model_base_path are \
                 ignored"
            );
        }
        let models = match (&args.model_config_file, &args.model_base_path) {
            (None, None) => anyhow::bail!(
                "no model to serve: give --model_base_path (with --model_name) or \
                 --model_config_file"
            ),
            (None, Some(base)) => vec![ModelConfig {
                name: args.model_name.clone(),
                base_path: absolute(base),
                policy: Default::default(),
                labels: Default::default(),
            }],
            // As TF Serving, a file without a list starts a server with no models.
            (Some(file), _) => read_config_file(file)?
                .unwrap_or_default()
                .into_iter()
                .map(|m| ModelConfig {
                    base_path: absolute(&m.base_path),
                    ..m
                })
                .collect(),
        };
        refuse_switched_on(&args)?;
        let mut rest_threading = threading(
            args.rest_api_io_threads,
            args.rest_api_busy_poll_micros,
            ("--rest_api_io_threads", "--rest_api_busy_poll_micros"),
        )?;
        if let Some(seconds) = args.rest_api_idle_timeout_seconds {
            // Timers add it to the current instant: a year is far inside what they can.
            if seconds > NEVER.as_secs() {
                anyhow::bail!(
                    "--rest_api_idle_timeout_seconds={seconds} is more than a year ({}); 0 turns \
                     the timeout off",
                    NEVER.as_secs()
                );
            }
            rest_threading.idle_timeout = (seconds > 0).then(|| Duration::from_secs(seconds));
        }
        let grpc_threading = soma_net::Threading {
            // gRPC channels stay open between calls by design; keepalive pings
            // (--grpc_channel_arguments) are their liveness check.
            idle_timeout: None,
            ..threading(
                args.grpc_io_threads,
                args.grpc_busy_poll_micros,
                ("--grpc_io_threads", "--grpc_busy_poll_micros"),
            )?
        };
        if args.port != 0 && args.port == args.rest_api_port {
            anyhow::bail!(
                "--port and --rest_api_port are both {}: gRPC and REST need a port each",
                args.port
            );
        }
        let enable_batching = args.enable_batching.unwrap_or(false);
        let per_model_batching = args.enable_per_model_batching_parameters.unwrap_or(false);
        if args.batching_parameters_file.is_some() && !enable_batching {
            anyhow::bail!("--batching_parameters_file needs --enable_batching");
        }
        if per_model_batching && !enable_batching {
            anyhow::bail!("--enable_per_model_batching_parameters needs --enable_batching");
        }
        let prometheus_path = match &args.monitoring_config_file {
            None => None,
            Some(file) => read_monitoring_config(file)?,
        };
        if prometheus_path.is_some() && args.rest_api_port == 0 {
            anyhow::bail!(
                "--monitoring_config_file enables Prometheus metrics, which are served on the \
                 REST port: give --rest_api_port"
            );
        }
        let mut saved_model_tags = split_tags(args.saved_model_tags.as_deref().unwrap_or("serve"))?;
        let mut session_config = match &args.tensorflow_session_config_file {
            None => None,
            Some(file) => Some(read_flag_file(
                "--tensorflow_session_config_file",
                file,
                parse_session_config,
            )?),
        };
        let onednn = std::env::var("TF_ENABLE_ONEDNN_OPTS").ok();
        if bfloat16_requested(args.mixed_precision.as_deref(), onednn.as_deref())? {
            // Appended, the message merges into the file's (protobuf's rule for a message
            // field given twice): the file's other graph options stay.
            let mut config = session_config.unwrap_or_default();
            config.extend(parse_session_config(BFLOAT16_REWRITE).context("--mixed_precision")?);
            session_config = Some(config);
        }
        let mut batching =
            enable_batching.then(|| Batching::Flags(args.batching_parameters_file.clone()));
        let mut warmup_iterations = args
            .enable_model_warmup
            .unwrap_or(true)
            .then_some(args.num_request_iterations_for_warmup.unwrap_or(1));
        if let Some(platform) = platform {
            session_config =
                (!platform.session_config.is_empty()).then_some(platform.session_config);
            saved_model_tags = platform.saved_model_tags;
            batching = platform.batching.map(Batching::Platform);
            warmup_iterations = platform.warmup_iterations;
        }
        if args.num_unload_threads > 0 {
            tracing::info!(
                "--num_unload_threads has no effect in soma: a version is freed when its last \
                 request ends, on no thread pool"
            );
        }
        let nonzero = |n: Option<u32>| n.filter(|&n| n > 0);
        let both_pools = nonzero(args.tensorflow_session_parallelism);
        Ok(Settings {
            grpc_port: args.port,
            grpc_socket: args.grpc_socket_path.map(|p| cwd.join(p)),
            grpc: GrpcOptions {
                // One limit for every gRPC listener (port and Unix socket).
                max_concurrent: (args.grpc_max_threads > 0)
                    .then(|| ConcurrencyLimit::new(args.grpc_max_threads)),
                // As TF Serving: models load before the port opens.
                health: args
                    .enable_grpc_healthcheck_service
                    .then_some(soma_grpc::HealthReport::WhileRunning),
                check_signature_method_names: args.enable_signature_method_name_check,
                tls: args
                    .ssl_config_file
                    .as_deref()
                    .map(read_ssl_config)
                    .transpose()?,
                threading: grpc_threading,
                max_request_bytes_in_flight: args
                    .grpc_max_request_bytes_in_flight
                    .unwrap_or(soma_grpc::DEFAULT_REQUEST_BYTES_IN_FLIGHT),
                ..grpc_options(&args.grpc_channel_arguments)?
            },
            rest_port: (args.rest_api_port != 0).then_some(args.rest_api_port),
            rest_timeout: Duration::from_millis(args.rest_api_timeout_in_ms),
            rest_cors: args.rest_api_enable_cors_support,
            rest_max_concurrent: (args.rest_api_num_threads > 0)
                .then_some(args.rest_api_num_threads),
            rest_threading,
            models,
            config_file: args.model_config_file,
            config_file_poll: (args.model_config_file_poll_wait_seconds > 0)
                .then(|| Duration::from_secs(args.model_config_file_poll_wait_seconds)),
            load_limit: (args.num_load_threads > 0).then_some(args.num_load_threads),
            load_retries: (
                args.max_num_load_retries,
                Duration::from_micros(args.load_retry_interval_micros),
            ),
            fs_poll: match args.file_system_poll_wait_seconds {
                // TF Serving: negative is for its tests (no poll at all, start-up waits for
                // ever); here it is "only at start", as 0.
                ..=0 => NEVER,
                s => Duration::from_secs(s.unsigned_abs()).min(NEVER),
            },
            threads: ThreadPools {
                intra_op: nonzero(args.tensorflow_intra_op_parallelism).or(both_pools),
                inter_op: nonzero(args.tensorflow_inter_op_parallelism).or(both_pools),
            },
            allow_labels_for_unavailable: args.allow_version_labels_for_unavailable_models,
            batching,
            per_model_batching,
            warmup_iterations,
            prometheus_path,
            saved_model_tags,
            session_config: session_config.map(Arc::from),
        })
    }
}

/// What `--mixed_precision=bfloat16` sets in every version's session config, as TF Serving
/// does: Grappler's oneDNN pass that runs float32 math in bfloat16 where it is safe.
const BFLOAT16_REWRITE: &str =
    "graph_options { rewrite_options { auto_mixed_precision_onednn_bfloat16: ON } }";

/// `--mixed_precision`: whether the models run in bfloat16. `bfloat16` is TF Serving's one
/// mode, and empty its default (off). The rewrite is one of TensorFlow's oneDNN passes, which
/// TensorFlow leaves out without a word when `TF_ENABLE_ONEDNN_OPTS` (`onednn`) turns
/// oneDNN off, so that pairing is refused rather than serving float32 to a user who asked
/// for bfloat16.
fn bfloat16_requested(mode: Option<&str>, onednn: Option<&str>) -> anyhow::Result<bool> {
    match mode {
        None | Some("") => Ok(false),
        Some("bfloat16") => {
            // TensorFlow reads the variable as a boolean: "0" and "false" turn oneDNN off.
            if let Some(off) = onednn.filter(|v| *v == "0" || v.eq_ignore_ascii_case("false")) {
                anyhow::bail!(
                    "--mixed_precision=bfloat16 needs TensorFlow's oneDNN optimizations, which \
                     TF_ENABLE_ONEDNN_OPTS={off} turns off (TensorFlow would serve float32 \
                     without a word): unset it, or drop the flag"
                );
            }
            Ok(true)
        }
        Some(other) => anyhow::bail!(
            "--mixed_precision={other}: the one mode is bfloat16 (TensorFlow's oneDNN mixed \
             precision on the CPU); leave the flag out to serve the models in their own precision"
        ),
    }
}

/// `--saved_model_tags serve,gpu` → `["serve", "gpu"]`. An empty tag is refused rather than
/// dropped: `serve,` is more likely a typo than a wish.
fn split_tags(flag: &str) -> anyhow::Result<Vec<String>> {
    let tags: Vec<String> = flag.split(',').map(|t| t.trim().to_string()).collect();
    if tags.iter().any(String::is_empty) {
        anyhow::bail!(
            "--saved_model_tags '{flag}' has an empty tag: give the MetaGraph's tags separated \
             by commas, e.g. serve or serve,gpu"
        );
    }
    Ok(tags)
}

/// TF Serving's `--grpc_channel_arguments`: the message size limits (the smaller of the two if
/// both are given), keepalive, connection age and its grace are applied; other arguments are
/// accepted and logged as ignored.
fn grpc_options(arguments: &str) -> anyhow::Result<GrpcOptions> {
    let mut options = GrpcOptions::default();
    let mut limit: Option<usize> = None;
    for argument in arguments
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let Some((key, value)) = argument.split_once('=') else {
            anyhow::bail!("--grpc_channel_arguments: {argument:?} is not key=value");
        };
        let key = key.trim();
        let number = || -> anyhow::Result<i64> {
            value
                .trim()
                .parse()
                .with_context(|| format!("--grpc_channel_arguments: {key} must be an integer"))
        };
        match key {
            "grpc.max_receive_message_length" | "grpc.max_send_message_length" => {
                // gRPC: -1 means unlimited.
                let bytes = usize::try_from(number()?).unwrap_or(i32::MAX as usize);
                limit = Some(limit.map_or(bytes, |l| l.min(bytes)));
            }
            "grpc.keepalive_time_ms" => options.keepalive_interval = millis(number()?),
            "grpc.keepalive_timeout_ms" => options.keepalive_timeout = millis(number()?),
            "grpc.max_connection_age_ms" => options.max_connection_age = millis(number()?),
            // Zero is a grace of none: closed as soon as the GOAWAY is out.
            "grpc.max_connection_age_grace_ms" => {
                let grace = number()?;
                options.max_connection_age_grace =
                    millis(grace).or((grace == 0).then_some(Duration::ZERO));
            }
            other => tracing::warn!(argument = other, "gRPC channel argument ignored"),
        }
    }
    if let Some(limit) = limit {
        options.max_message_bytes = limit;
    }
    Ok(options)
}

/// A gRPC channel argument in milliseconds; gRPC spells "never" as `INT_MAX` (its default for
/// these), and 0 or less turns the setting off here.
fn millis(value: i64) -> Option<Duration> {
    (1..i64::from(i32::MAX))
        .contains(&value)
        .then(|| Duration::from_millis(value as u64))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::commands::tfserving::explain_unsupported_flag;
    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let cli = Cli::try_parse_from(["soma", "tfserving"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        let Command::Tfserving(args) = cli.command else {
            unreachable!()
        };
        Settings::from_args(args, Path::new("/work")).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn tf_serving_flags_as_spelled_by_tf_serving() {
        let s = parse(&[
            "--port=9000",
            "--rest_api_port",
            "8501",
            "--model_name=iris",
            "--model_base_path=models/iris",
            "--file_system_poll_wait_seconds=5",
            "--rest_api_timeout_in_ms=1500",
            "--tensorflow_intra_op_parallelism=2",
            "--enable_batching",
            "--allow_version_labels_for_unavailable_models=true",
        ])
        .unwrap();
        assert_eq!(s.grpc_port, 9000);
        assert_eq!(s.rest_port, Some(8501));
        assert_eq!(s.rest_timeout, Duration::from_millis(1500));
        assert_eq!(s.fs_poll, Duration::from_secs(5));
        let once = parse(&["--model_base_path=/m", "--file_system_poll_wait_seconds=-1"]);
        assert_eq!(once.unwrap().fs_poll, NEVER);
        assert_eq!(s.models[0].name, "iris");
        assert_eq!(s.models[0].base_path, "/work/models/iris");
        assert_eq!(s.threads.intra_op, Some(2));
        assert_eq!(s.threads.inter_op, None);
        assert_eq!(s.batching, Some(Batching::Flags(None)));
        assert!(!s.per_model_batching);
        assert!(s.allow_labels_for_unavailable);
        assert!(!s.grpc.check_signature_method_names, "TF Serving's default");
        assert!(s.rest_threading.threads >= 1, "one per core by default");
        assert_eq!(s.rest_threading.busy_poll, Duration::from_micros(30));
        let shared = parse(&["--model_base_path=/m", "--rest_api_io_threads=0"]).unwrap();
        assert_eq!(shared.rest_threading.threads, 0);
        let polling = parse(&["--model_base_path=/m", "--rest_api_busy_poll_micros=100"]);
        assert_eq!(
            polling.unwrap().rest_threading.busy_poll,
            Duration::from_micros(100)
        );
        let both = parse(&[
            "--model_base_path=/m",
            "--rest_api_io_threads=0",
            "--rest_api_busy_poll_micros=100",
        ]);
        assert!(
            both.unwrap_err()
                .contains("needs serving threads of its own")
        );
        let idle = |flags: &[&str]| {
            let mut args = vec!["--model_base_path=/m"];
            args.extend_from_slice(flags);
            parse(&args).map(|s| s.rest_threading.idle_timeout)
        };
        assert_eq!(idle(&[]), Ok(Some(Duration::from_secs(75))));
        assert_eq!(
            s.grpc.threading.idle_timeout, None,
            "gRPC channels idle by design"
        );
        assert_eq!(
            idle(&["--rest_api_idle_timeout_seconds=5"]),
            Ok(Some(Duration::from_secs(5)))
        );
        assert_eq!(idle(&["--rest_api_idle_timeout_seconds=0"]), Ok(None));
        let forever = idle(&["--rest_api_idle_timeout_seconds=18446744073709551615"]);
        assert!(forever.unwrap_err().contains("more than a year"));
        let shared_idle = idle(&[
            "--rest_api_io_threads=0",
            "--rest_api_idle_timeout_seconds=5",
        ]);
        assert_eq!(shared_idle, Ok(Some(Duration::from_secs(5))));
        assert!(
            s.grpc.threading.threads >= 1,
            "gRPC too: one per core by default"
        );
        assert_eq!(s.grpc.threading.busy_poll, Duration::from_micros(30));
        let grpc = parse(&[
            "--model_base_path=/m",
            "--grpc_io_threads=3",
            "--grpc_busy_poll_micros=0",
        ])
        .unwrap();
        assert_eq!(grpc.grpc.threading.threads, 3);
        assert!(grpc.grpc.threading.busy_poll.is_zero());
        assert_eq!(grpc.rest_threading.busy_poll, Duration::from_micros(30));
        let grpc_shared = parse(&[
            "--model_base_path=/m",
            "--grpc_io_threads=0",
            "--grpc_busy_poll_micros=5",
        ]);
        let message = "--grpc_busy_poll_micros needs serving threads of its own: drop \
                       --grpc_io_threads=0";
        assert!(grpc_shared.unwrap_err().contains(message));
        let checked = parse(&[
            "--model_base_path=/m",
            "--enable_signature_method_name_check",
        ]);
        assert!(checked.unwrap().grpc.check_signature_method_names);
        let per_model = parse(&[
            "--model_base_path=/m",
            "--enable_batching",
            "--enable_per_model_batching_parameters",
        ]);
        assert!(per_model.unwrap().per_model_batching);

        let defaults = parse(&["--model_base_path=s3://bucket/m"]).unwrap();
        assert_eq!(defaults.grpc_port, 8500);
        assert_eq!(defaults.rest_port, None);
        assert_eq!(defaults.models[0].name, "default");
        assert_eq!(defaults.models[0].base_path, "s3://bucket/m");
        assert_eq!(defaults.fs_poll, Duration::from_secs(1));
        assert_eq!(defaults.rest_timeout, Duration::from_secs(30));
        assert_eq!(defaults.batching, None);
        assert_eq!(defaults.warmup_iterations, Some(1));
        assert_eq!(defaults.rest_max_concurrent, None);
        assert!(!defaults.rest_cors);
        let cors = parse(&[
            "--model_base_path=/m",
            "--rest_api_enable_cors_support=true",
        ]);
        assert!(cors.unwrap().rest_cors);
        assert_eq!(defaults.load_retries, (5, Duration::from_secs(60)));
        assert_eq!(defaults.load_limit, None);
        let loads = parse(&[
            "--model_base_path=/m",
            "--num_load_threads=2",
            "--num_unload_threads=2",
        ]);
        assert_eq!(loads.unwrap().load_limit, Some(2));
        let retries = parse(&[
            "--model_base_path=/m",
            "--max_num_load_retries=0",
            "--load_retry_interval_micros=250000",
        ]);
        assert_eq!(
            retries.unwrap().load_retries,
            (0, Duration::from_millis(250))
        );
        assert!(defaults.grpc.max_concurrent.is_none());

        let pools = parse(&[
            "--model_base_path=/m",
            "--tensorflow_session_parallelism=3",
            "--tensorflow_inter_op_parallelism=1",
            "--rest_api_num_threads=16",
            "--grpc_max_threads=8",
        ])
        .unwrap();
        assert_eq!(
            (pools.threads.intra_op, pools.threads.inter_op),
            (Some(3), Some(1))
        );
        assert_eq!(pools.rest_max_concurrent, Some(16));
        assert_eq!(
            pools
                .grpc
                .max_concurrent
                .as_ref()
                .map(ConcurrencyLimit::size),
            Some(8)
        );
        assert_eq!(pools.grpc.health, None);
        let health = parse(&["--model_base_path=/m", "--enable_grpc_healthcheck_service"]);
        assert_eq!(
            health.unwrap().grpc.health,
            Some(soma_grpc::HealthReport::WhileRunning)
        );

        let warmup = |flags: &[&str]| {
            parse(&[&["--model_base_path=/m"], flags].concat()).map(|s| s.warmup_iterations)
        };
        assert_eq!(warmup(&["--enable_model_warmup=false"]), Ok(None));
        assert_eq!(
            warmup(&["--num_request_iterations_for_warmup=3"]),
            Ok(Some(3))
        );
        let zero = warmup(&["--num_request_iterations_for_warmup=0"]).unwrap_err();
        assert!(zero.contains("0 is not in 1.."), "{zero}");

        assert_eq!(defaults.saved_model_tags, ["serve"]);
        let tags = |flag: &str| parse(&["--model_base_path=/m", flag]).map(|s| s.saved_model_tags);
        assert_eq!(
            tags("--saved_model_tags=serve, gpu").unwrap(),
            ["serve", "gpu"]
        );
        let empty = tags("--saved_model_tags=serve,").unwrap_err();
        assert!(
            empty.starts_with("--saved_model_tags 'serve,' has an empty tag"),
            "{empty}"
        );
        assert!(tags("--saved_model_tags=").is_err());
    }

    #[test]
    fn monitoring_config_file_sets_the_prometheus_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("monitoring.config");
        let flag = format!("--monitoring_config_file={}", file.display());
        let with = |text: &str, rest_port: &str| {
            std::fs::write(&file, text).unwrap();
            parse(&["--model_base_path=/m", rest_port, &flag]).map(|s| s.prometheus_path)
        };
        let enabled =
            "prometheus_config { enable: true, path: \"/monitoring/prometheus/metrics\" }";
        assert_eq!(
            with(enabled, "--rest_api_port=8501"),
            Ok(Some("/monitoring/prometheus/metrics".into()))
        );
        assert_eq!(
            with(
                "prometheus_config { enable: false }",
                "--rest_api_port=8501"
            ),
            Ok(None)
        );
        let no_rest = with(enabled, "--port=8500").unwrap_err();
        assert!(no_rest.contains("give --rest_api_port"), "{no_rest}");
        let api_path = with(
            "prometheus_config { enable: true path: \"/v1/metrics\" }",
            "--rest_api_port=8501",
        )
        .unwrap_err();
        assert!(api_path.contains("under the API's own"), "{api_path}");
        let typo = with(
            "prometheus_config { enabled: true }",
            "--rest_api_port=8501",
        )
        .unwrap_err();
        assert!(
            typo.starts_with(&format!(
                "{}: line 1, column 21: unknown field 'enabled'",
                file.display()
            )),
            "{typo}"
        );
    }

    #[test]
    fn unsupported_tf_serving_flags_say_what_to_do_instead() {
        let explain = |args: &[&str]| {
            let error = Cli::try_parse_from(["soma", "tfserving"].iter().chain(args)).unwrap_err();
            explain_unsupported_flag(&error)
        };
        assert_eq!(
            explain(&[
                "--model_base_path=/m",
                "--thread_pool_factory_config_file=/t"
            ])
            .as_deref(),
            Some(
                "--thread_pool_factory_config_file is a TF Serving flag that soma tfserving \
                 does not support: TensorFlow runs on its own intra-op pool and the calling \
                 thread; size the pool with --tensorflow_intra_op_parallelism"
            )
        );
        let gpu = parse(&[
            "--model_base_path=/m",
            "--per_process_gpu_memory_fraction",
            "0.5",
        ]);
        assert!(gpu.unwrap_err().contains("on the CPU"));
        // TF Serving's default, which does nothing, is accepted.
        assert!(
            parse(&[
                "--model_base_path=/m",
                "--per_process_gpu_memory_fraction=0"
            ])
            .is_ok()
        );
        // Not a TF Serving flag: clap's own message stands.
        assert_eq!(explain(&["--grpc_max_thread=4"]), None);
        assert_eq!(explain(&["--port=http"]), None);
    }

    /// `SSLConfig` text with `\n` escapes, as `json.dumps` writes PEM texts.
    fn ssl_config(fields: &[(&str, &str)], client_verify: bool) -> String {
        let mut text = String::new();
        for (name, pem) in fields {
            text.push_str(&format!("{name}: \"{}\"\n", pem.replace('\n', "\\n")));
        }
        text + &format!("client_verify: {client_verify}\n")
    }

    #[test]
    fn ssl_config_file_turns_on_tls_for_grpc() {
        let pki = soma_testkit::TestPki::generate();
        let with_ssl = |text: &str| {
            let file = pki.write("ssl.config", text);
            parse(&[
                "--model_base_path=/m",
                &format!("--ssl_config_file={}", file.display()),
            ])
        };
        let cert = ("server_cert", pki.server_cert.as_str());
        let key = ("server_key", pki.server_key.as_str());
        let ca = ("custom_ca", pki.ca_cert.as_str());

        let tls = with_ssl(&ssl_config(&[key, cert], false)).unwrap().grpc.tls;
        assert!(!tls.unwrap().client_certificates_required());
        // custom_ca alone asks nothing of clients (as in TF Serving); client_verify does.
        let tls = with_ssl(&ssl_config(&[key, cert, ca], false))
            .unwrap()
            .grpc
            .tls;
        assert!(!tls.unwrap().client_certificates_required());
        let tls = with_ssl(&ssl_config(&[key, cert, ca], true))
            .unwrap()
            .grpc
            .tls;
        assert!(tls.unwrap().client_certificates_required());
        assert!(parse(&["--model_base_path=/m"]).unwrap().grpc.tls.is_none());

        let error = with_ssl(&ssl_config(&[cert], false)).unwrap_err();
        assert!(
            error.ends_with("ssl.config: server_key is missing: gRPC over TLS needs the server's certificate and key"),
            "{error}"
        );
        let error = with_ssl(&ssl_config(&[key, cert], true)).unwrap_err();
        assert!(
            error.contains("client_verify is true but custom_ca is missing"),
            "{error}"
        );
        let error =
            with_ssl(&ssl_config(&[("server_key", &pki.other_key), cert], false)).unwrap_err();
        assert!(
            error.contains(
                "ssl.config: server_cert and server_key: the certificate and key were refused"
            ),
            "{error}"
        );
        let error = with_ssl(&ssl_config(&[key, cert, ("custom_ca", "junk")], true)).unwrap_err();
        assert!(
            error.contains("ssl.config: custom_ca: the client CA: no certificate in it"),
            "{error}"
        );
        let error = with_ssl("server_key: 'a'\nserver_key: 'b'\n").unwrap_err();
        assert!(
            error.contains("ssl.config: line 2, column 1: 'server_key' is given twice"),
            "{error}"
        );
        let error =
            parse(&["--model_base_path=/m", "--ssl_config_file=/no/such.config"]).unwrap_err();
        assert!(
            error.starts_with("cannot read --ssl_config_file /no/such.config"),
            "{error}"
        );
    }

    #[test]
    fn every_tf_serving_flag_is_accepted_or_refused_by_name() {
        // Accepted: no effect in soma, or already soma's behaviour.
        for flag in [
            "--flush_filesystem_caches=false",
            "--remove_unused_fields_from_bundle_metagraph=true",
            "--xla_cpu_compilation_enabled=true",
            "--enable_profiler=false",
            "--use_alts_credentials=false",
            "--prefer_tflite_model=false",
            "--use_tflite_model=false",
            "--num_tflite_pools=4",
            "--num_tflite_interpreters_per_pool=1",
        ] {
            parse(&["--model_base_path=/m", flag]).unwrap_or_else(|e| panic!("{flag}: {e}"));
        }
        let profiler = parse(&["--model_base_path=/m", "--enable_profiler"]).unwrap_err();
        assert!(
            profiler
                .starts_with("--enable_profiler=true is a TF Serving feature soma does not have"),
            "{profiler}"
        );
        let tflite = parse(&["--model_base_path=/m", "--prefer_tflite_model=true"]).unwrap_err();
        assert!(tflite.contains("not TF Lite models"), "{tflite}");
        let explain = |flag: &str| {
            let error = Cli::try_parse_from(["soma", "tfserving", "--model_base_path=/m", flag])
                .unwrap_err();
            explain_unsupported_flag(&error).unwrap_or_else(|| panic!("{flag}: {error}"))
        };
        assert!(explain("--thread_pool_factory_config_file=/t.config").contains("intra-op pool"));
    }

    /// TF Serving's Docker image runs `tensorflow_model_server --port=8500
    /// --rest_api_port=8501 --model_name=... --model_base_path=... "$@"`: the user's flags
    /// come last and must win, and a config file replaces the single model.
    #[test]
    fn the_docker_image_command_line_works() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("models.config");
        std::fs::write(
            &config,
            "model_config_list { config { name: 'a' base_path: '/models/a' } }",
        )
        .unwrap();
        let s = parse(&[
            "--port=8500",
            "--rest_api_port=8501",
            "--model_name=model",
            "--model_base_path=/models/model",
            "--rest_api_port=9001",
            "--port=9000",
            &format!("--model_config_file={}", config.display()),
            "--enable_batching",
            "--enable_batching=false",
        ])
        .unwrap();
        assert_eq!((s.grpc_port, s.rest_port), (9000, Some(9001)));
        let models: Vec<_> = s.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(models, ["a"]);
        assert_eq!(s.batching, None);
    }

    #[test]
    fn bad_flags_are_rejected_with_a_message() {
        let unknown = parse(&["--model_base_path=/m", "--grpc_max_thread=4"]).unwrap_err();
        assert!(
            unknown.contains("unexpected argument '--grpc_max_thread' found"),
            "{unknown}"
        );
        let port = parse(&["--model_base_path=/m", "--rest_api_port=http"]).unwrap_err();
        assert!(
            port.contains("invalid value 'http' for '--rest_api_port <PORT>'"),
            "{port}"
        );
        assert_eq!(
            parse(&[]).unwrap_err(),
            "no model to serve: give --model_base_path (with --model_name) or --model_config_file"
        );
        assert_eq!(
            parse(&[
                "--model_base_path=/m",
                "--port=8500",
                "--rest_api_port=8500"
            ])
            .unwrap_err(),
            "--port and --rest_api_port are both 8500: gRPC and REST need a port each"
        );
        assert_eq!(
            parse(&["--model_base_path=/m", "--batching_parameters_file=/b"]).unwrap_err(),
            "--batching_parameters_file needs --enable_batching"
        );
        assert_eq!(
            parse(&[
                "--model_base_path=/m",
                "--enable_per_model_batching_parameters"
            ])
            .unwrap_err(),
            "--enable_per_model_batching_parameters needs --enable_batching"
        );
    }

    #[test]
    fn grpc_channel_arguments_set_limits_keepalive_and_connection_age() {
        let s = parse(&[
            "--model_base_path=/m",
            "--grpc_channel_arguments=grpc.max_receive_message_length=4096, \
             grpc.max_send_message_length=8192,grpc.keepalive_time_ms=30000,\
             grpc.keepalive_timeout_ms=5000,grpc.max_connection_age_ms=600000,\
             grpc.max_connection_age_grace_ms=1000,grpc.so_reuseport=1",
        ])
        .unwrap();
        assert_eq!(s.grpc.max_message_bytes, 4096);
        assert_eq!(s.grpc.keepalive_interval, Some(Duration::from_secs(30)));
        assert_eq!(s.grpc.keepalive_timeout, Some(Duration::from_secs(5)));
        assert_eq!(s.grpc.max_connection_age, Some(Duration::from_secs(600)));
        assert_eq!(
            s.grpc.max_connection_age_grace,
            Some(Duration::from_secs(1))
        );

        let unlimited = parse(&[
            "--model_base_path=/m",
            "--grpc_channel_arguments=grpc.max_send_message_length=-1",
        ])
        .unwrap();
        assert_eq!(unlimited.grpc.max_message_bytes, i32::MAX as usize);
        // The byte budget is never less than one largest message and its prefix.
        let budget = parse(&[
            "--model_base_path=/m",
            "--grpc_channel_arguments=grpc.max_receive_message_length=4096",
            "--grpc_max_request_bytes_in_flight=100",
        ])
        .unwrap();
        assert_eq!(budget.grpc.max_request_bytes_in_flight, 100);
        assert_eq!(budget.grpc.request_bytes_budget(), 4101);
        assert_eq!(unlimited.grpc.request_bytes_budget(), i32::MAX as usize + 5);
        let never = parse(&[
            "--model_base_path=/m",
            "--grpc_channel_arguments=grpc.keepalive_time_ms=2147483647",
        ])
        .unwrap();
        // INT_MAX is gRPC's "never".
        assert_eq!(never.grpc.keepalive_interval, None);
        let grace = |ms: &str| {
            let arguments =
                format!("--grpc_channel_arguments=grpc.max_connection_age_grace_ms={ms}");
            parse(&["--model_base_path=/m", &arguments])
                .unwrap()
                .grpc
                .max_connection_age_grace
        };
        assert_eq!(grace("0"), Some(Duration::ZERO));
        assert_eq!(grace("2147483647"), None);
        let defaults = parse(&["--model_base_path=/m"]).unwrap();
        assert_eq!(defaults.grpc.keepalive_interval, None);
        assert_eq!(defaults.grpc.max_connection_age, None);

        let bad = parse(&[
            "--model_base_path=/m",
            "--grpc_channel_arguments=grpc.keepalive_time_ms=soon",
        ])
        .unwrap_err();
        assert!(
            bad.contains("grpc.keepalive_time_ms must be an integer"),
            "{bad}"
        );
        let bad = parse(&[
            "--model_base_path=/m",
            "--grpc_channel_arguments=grpc.keepalive_time_ms",
        ])
        .unwrap_err();
        assert!(bad.contains("is not key=value"), "{bad}");
    }

    #[test]
    fn config_file_errors_name_the_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("models.config");
        std::fs::write(
            &file,
            "model_config_list {\n  config { name: 'a' base_path: 'rel/a' }\n}\n",
        )
        .unwrap();
        let flag = format!("--model_config_file={}", file.display());
        let s = parse(&[&flag]).unwrap();
        assert_eq!(s.models[0].base_path, "/work/rel/a");
        std::fs::write(&file, "model_config_list {\n  config { nam: 'a' }\n}\n").unwrap();
        assert_eq!(
            parse(&[&flag]).unwrap_err(),
            format!(
                "{}: line 2, column 12: unknown field 'nam' in config (expected name, \
                 base_path, model_platform, model_version_policy, version_labels)",
                file.display()
            )
        );
    }

    #[test]
    fn mixed_precision_bfloat16_adds_the_rewrite_to_the_session_config() {
        let rewrite = parse_session_config(BFLOAT16_REWRITE).unwrap();
        let bf16 = parse(&["--model_base_path=/m", "--mixed_precision=bfloat16"]).unwrap();
        assert_eq!(bf16.session_config.as_deref(), Some(rewrite.as_slice()));
        // After the file's settings, which stay (protobuf merges the two graph_options).
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("session.config");
        let text = "graph_options { rewrite_options { remapping: OFF } }";
        std::fs::write(&file, text).unwrap();
        let with_file = parse(&[
            "--model_base_path=/m",
            &format!("--tensorflow_session_config_file={}", file.display()),
            "--mixed_precision=bfloat16",
        ])
        .unwrap();
        let expected = [parse_session_config(text).unwrap(), rewrite].concat();
        assert_eq!(
            with_file.session_config.as_deref(),
            Some(expected.as_slice())
        );
        // TF Serving's default (empty) is off; any other mode is refused.
        let off = parse(&["--model_base_path=/m", "--mixed_precision="]).unwrap();
        assert_eq!(off.session_config, None);
        let fp16 = parse(&["--model_base_path=/m", "--mixed_precision=float16"]).unwrap_err();
        assert!(
            fp16.starts_with("--mixed_precision=float16: the one mode is bfloat16"),
            "{fp16}"
        );
        // oneDNN turned off would drop the rewrite without a word: refused.
        for off in ["0", "false", "FALSE"] {
            let error = bfloat16_requested(Some("bfloat16"), Some(off)).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains(&format!("which TF_ENABLE_ONEDNN_OPTS={off} turns off")),
                "{error}"
            );
        }
        for on in [None, Some("1"), Some("true")] {
            assert!(bfloat16_requested(Some("bfloat16"), on).unwrap(), "{on:?}");
        }
        // --platform_config_file's legacy_config holds the session config instead.
        let platform = parse(&[
            "--model_base_path=/m",
            "--platform_config_file=/p.config",
            "--mixed_precision=bfloat16",
        ])
        .unwrap_err();
        assert!(
            platform.starts_with("--mixed_precision has no effect with --platform_config_file"),
            "{platform}"
        );
    }
}
