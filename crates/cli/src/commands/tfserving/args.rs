//! The command line: TF Serving's flags as it spells them, and the ones soma refuses.

use std::path::PathBuf;

/// TF Serving's model server flags (the common ones; anything else is rejected).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Print the version of soma and of the TensorFlow library, and exit.
    #[arg(long = "version", default_value_t = false)]
    pub(super) version: bool,

    /// gRPC port (TF Serving's default 8500).
    #[arg(long = "port", default_value_t = 8500, value_name = "PORT")]
    pub(super) port: u16,

    /// gRPC channel arguments, `key=value,...`; `grpc.max_receive_message_length` and
    /// `grpc.max_send_message_length` set the message size limit (default: 2 GiB - 1);
    /// `grpc.keepalive_time_ms`, `grpc.keepalive_timeout_ms` and `grpc.max_connection_age_ms`
    /// set keepalive pings and connection age.
    #[arg(
        long = "grpc_channel_arguments",
        default_value = "",
        value_name = "ARGS"
    )]
    pub(super) grpc_channel_arguments: String,

    /// REST port; 0 (the default, as in TF Serving) turns REST off.
    #[arg(long = "rest_api_port", default_value_t = 0, value_name = "PORT")]
    pub(super) rest_api_port: u16,

    /// Answer CORS preflights and add CORS headers, so that web pages of any origin can
    /// call the REST API.
    #[arg(long = "rest_api_enable_cors_support", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(super) rest_api_enable_cors_support: bool,

    /// soma's own: threads that serve REST connections, each with its own connections (0:
    /// the shared runtime). Default: one per core.
    #[arg(long = "rest_api_io_threads", value_name = "N")]
    pub(super) rest_api_io_threads: Option<usize>,

    /// soma's own: after a REST thread reads a request or sends an answer, it keeps polling
    /// its connections for this many microseconds instead of sleeping, so a client's next
    /// request is read without a wake-up; 0: off. Default 30; needs REST threads of their own.
    #[arg(long = "rest_api_busy_poll_micros", value_name = "MICROS")]
    pub(super) rest_api_busy_poll_micros: Option<u64>,

    /// soma's own: threads that serve gRPC TCP connections, each with its own connections;
    /// the requests of a connection that carries many at once move to the least busy
    /// thread (0: the shared runtime). Default: one per core.
    #[arg(long = "grpc_io_threads", value_name = "N")]
    pub(super) grpc_io_threads: Option<usize>,

    /// soma's own: as --rest_api_busy_poll_micros, for the gRPC threads. Default 30; needs
    /// gRPC threads of their own.
    #[arg(long = "grpc_busy_poll_micros", value_name = "MICROS")]
    pub(super) grpc_busy_poll_micros: Option<u64>,

    /// soma's own: request bytes the gRPC port holds at once, over all its connections
    /// (bodies received, until each request is answered); a request that would go past it
    /// fails with RESOURCE_EXHAUSTED. Default 2 GiB; never less than one largest message.
    #[arg(long = "grpc_max_request_bytes_in_flight", value_name = "BYTES")]
    pub(super) grpc_max_request_bytes_in_flight: Option<usize>,

    /// soma's own: a REST connection that sends nothing for this many seconds while the
    /// server waits for a request (idle between requests, or stalled inside one) is closed.
    /// Default 75 (longer than load balancers' idle timeouts); 0: never.
    #[arg(long = "rest_api_idle_timeout_seconds", value_name = "SECONDS")]
    pub(super) rest_api_idle_timeout_seconds: Option<u64>,

    /// Milliseconds a REST request may take before it fails with 504.
    #[arg(
        long = "rest_api_timeout_in_ms",
        default_value_t = 30_000,
        value_name = "MS"
    )]
    pub(super) rest_api_timeout_in_ms: u64,

    /// The model's name in single-model mode.
    #[arg(long = "model_name", default_value = "default", value_name = "NAME")]
    pub(super) model_name: String,

    /// The model's folder (version sub-folders) in single-model mode: local or s3://.
    #[arg(long = "model_base_path", value_name = "PATH")]
    pub(super) model_base_path: Option<String>,

    /// A text-proto `model_config_list` (instead of --model_name/--model_base_path).
    #[arg(long = "model_config_file", value_name = "FILE")]
    pub(super) model_config_file: Option<PathBuf>,

    /// Seconds between re-reads of --model_config_file; 0 reads it once.
    #[arg(
        long = "model_config_file_poll_wait_seconds",
        default_value_t = 0,
        value_name = "SECONDS"
    )]
    pub(super) model_config_file_poll_wait_seconds: u64,

    /// Seconds between polls of each base path for new or removed versions; 0 polls only
    /// at start (so does a negative value, which TF Serving reserves for its tests).
    #[arg(
        long = "file_system_poll_wait_seconds",
        default_value_t = 1,
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    pub(super) file_system_poll_wait_seconds: i64,

    // The flags a --platform_config_file replaces are `Option`s, unset unless given, so that
    // one given beside the file is refused even at its default value.
    /// The tags of the MetaGraph to load from each SavedModel, comma-separated; a MetaGraph
    /// is loaded when its tag set is exactly this one. Default: serve.
    #[arg(long = "saved_model_tags", value_name = "TAGS")]
    pub(super) saved_model_tags: Option<String>,

    /// TensorFlow intra-op threads per model; 0 (the default) lets soma/TensorFlow choose.
    #[arg(long = "tensorflow_intra_op_parallelism", value_name = "N")]
    pub(super) tensorflow_intra_op_parallelism: Option<u32>,

    /// TensorFlow inter-op threads per model; 0 (the default) lets soma/TensorFlow choose.
    #[arg(long = "tensorflow_inter_op_parallelism", value_name = "N")]
    pub(super) tensorflow_inter_op_parallelism: Option<u32>,

    /// TensorFlow threads per model for both pools, unless the two flags above set them.
    /// Default 0.
    #[arg(long = "tensorflow_session_parallelism", value_name = "N")]
    pub(super) tensorflow_session_parallelism: Option<u32>,

    /// A text-proto TF Serving `PlatformConfigMap`: the "tensorflow" platform's
    /// `SavedModelBundleSourceAdapterConfig` sets the session config, batching, tags and
    /// warm-up instead of their flags.
    #[arg(long = "platform_config_file", value_name = "FILE")]
    pub(super) platform_config_file: Option<PathBuf>,

    /// A text-proto TensorFlow session `ConfigProto`, applied to every model's session; the
    /// thread flags above override its thread fields.
    #[arg(long = "tensorflow_session_config_file", value_name = "FILE")]
    pub(super) tensorflow_session_config_file: Option<PathBuf>,

    /// `bfloat16`: TensorFlow runs the models' float32 math in bfloat16 where its oneDNN
    /// mixed precision pass finds it safe. Default: off.
    #[arg(long = "mixed_precision", value_name = "MODE")]
    pub(super) mixed_precision: Option<String>,

    /// At most N REST inference requests are processed at once; 0: no limit.
    #[arg(long = "rest_api_num_threads", default_value_t = 0, value_name = "N")]
    pub(super) rest_api_num_threads: usize,

    /// At most N gRPC inference requests are processed at once; 0: no limit.
    #[arg(long = "grpc_max_threads", default_value_t = 0, value_name = "N")]
    pub(super) grpc_max_threads: usize,

    /// Let version labels point at versions that are not (yet) available.
    #[arg(long = "allow_version_labels_for_unavailable_models", default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set,
          value_name = "BOOL")]
    pub(super) allow_version_labels_for_unavailable_models: bool,

    /// Server-side batching of predict requests. Default: false.
    #[arg(long = "enable_batching", num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(super) enable_batching: Option<bool>,

    /// A text-proto `BatchingParameters` file (with --enable_batching).
    #[arg(long = "batching_parameters_file", value_name = "FILE")]
    pub(super) batching_parameters_file: Option<PathBuf>,

    /// With --enable_batching: batch each version by the `batching_params.pbtxt` in its
    /// folder; versions without one are not batched. Default: false.
    #[arg(long = "enable_per_model_batching_parameters", num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(super) enable_per_model_batching_parameters: Option<bool>,

    /// A text-proto `MonitoringConfig`: `prometheus_config { enable: true path: "..." }`
    /// also serves the Prometheus metrics on that path of the REST port.
    #[arg(long = "monitoring_config_file", value_name = "FILE")]
    pub(super) monitoring_config_file: Option<PathBuf>,

    /// At most N model versions load (TensorFlow's load and the warm-up) at once, over
    /// every model; 0: no limit.
    #[arg(long = "num_load_threads", default_value_t = 0, value_name = "N")]
    pub(super) num_load_threads: usize,

    /// Accepted for compatibility: soma frees a version when its last request ends, with no
    /// thread pool to size.
    #[arg(long = "num_unload_threads", default_value_t = 0, value_name = "N")]
    pub(super) num_unload_threads: usize,

    /// How often fetching a version is retried when storage or the disk fails in a way that
    /// may pass (a broken model is not retried).
    #[arg(long = "max_num_load_retries", default_value_t = 5, value_name = "N")]
    pub(super) max_num_load_retries: u32,

    /// Microseconds between those retries.
    #[arg(
        long = "load_retry_interval_micros",
        default_value_t = 60_000_000,
        value_name = "MICROS"
    )]
    pub(super) load_retry_interval_micros: u64,

    /// Also serve gRPC on this Unix socket (a stale socket file there is replaced).
    #[arg(long = "grpc_socket_path", value_name = "PATH")]
    pub(super) grpc_socket_path: Option<PathBuf>,

    /// A text-proto `SSLConfig` (`server_key`, `server_cert`, `custom_ca`, `client_verify`,
    /// PEM texts in strings): gRPC on --port and --grpc_socket_path speaks TLS, and with
    /// `client_verify: true` requires client certificates signed by `custom_ca`.
    #[arg(long = "ssl_config_file", value_name = "FILE")]
    pub(super) ssl_config_file: Option<PathBuf>,

    /// Also serve gRPC's health checking service (grpc.health.v1.Health) on --port.
    #[arg(long = "enable_grpc_healthcheck_service", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(super) enable_grpc_healthcheck_service: bool,

    /// Require a signature's method_name to fit the API running it (Classify:
    /// tensorflow/serving/classify, ...). Off, as in TF Serving, TensorFlow 2 models (whose
    /// signatures all say tensorflow/serving/predict) can be classified and regressed.
    #[arg(long = "enable_signature_method_name_check", default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set,
          value_name = "BOOL")]
    pub(super) enable_signature_method_name_check: bool,

    /// Accepted, no effect: TF Serving flushes TensorFlow's file system caches after loads;
    /// soma downloads S3 models itself and TensorFlow reads local files.
    #[arg(long = "flush_filesystem_caches", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL",
          hide = true)]
    pub(super) _flush_filesystem_caches: bool,

    /// Accepted, no effect: soma keeps no MetaGraphDef after loading (only the signatures),
    /// which is the memory this saves in TF Serving.
    #[arg(long = "remove_unused_fields_from_bundle_metagraph", default_value_t = true,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set,
          value_name = "BOOL", hide = true)]
    pub(super) _remove_unused_fields_from_bundle_metagraph: bool,

    /// Accepted: soma lets TensorFlow compile `jit_compile` functions with XLA, as TF
    /// Serving does with `true`; `false` does not refuse them.
    #[arg(long = "xla_cpu_compilation_enabled", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL",
          hide = true)]
    pub(super) _xla_cpu_compilation_enabled: bool,

    /// TF Serving features soma does not have, accepted when off (as scripts often spell
    /// out): the profiler service, Google ALTS credentials, TF Lite models.
    #[arg(long = "enable_profiler", num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set, value_name = "BOOL", hide = true)]
    pub(super) enable_profiler: Option<bool>,
    /// TF Serving's GPU memory share: `0` (its default, and no effect) is accepted, as launch
    /// lines copied from GPU deployments often carry it.
    #[arg(
        long = "per_process_gpu_memory_fraction",
        value_name = "FRACTION",
        hide = true
    )]
    pub(super) per_process_gpu_memory_fraction: Option<f64>,
    #[arg(long = "use_alts_credentials", num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set, value_name = "BOOL", hide = true)]
    pub(super) use_alts_credentials: Option<bool>,
    #[arg(long = "prefer_tflite_model", num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set, value_name = "BOOL", hide = true)]
    pub(super) prefer_tflite_model: Option<bool>,
    #[arg(long = "use_tflite_model", num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set, value_name = "BOOL", hide = true)]
    pub(super) use_tflite_model: Option<bool>,
    /// Accepted, no effect without TF Lite.
    #[arg(long = "num_tflite_pools", value_name = "N", hide = true)]
    pub(super) _num_tflite_pools: Option<u32>,
    #[arg(
        long = "num_tflite_interpreters_per_pool",
        value_name = "N",
        hide = true
    )]
    pub(super) _num_tflite_interpreters_per_pool: Option<u32>,

    /// Replay each version's assets.extra/tf_serving_warmup_requests before it serves.
    /// Default: true.
    #[arg(long = "enable_model_warmup", num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(super) enable_model_warmup: Option<bool>,

    /// How often each warm-up record is run. Default 1.
    #[arg(
        long = "num_request_iterations_for_warmup",
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub(super) num_request_iterations_for_warmup: Option<u32>,
}

/// TF Serving flags soma knows but does not implement, and what to do instead.
const UNSUPPORTED_FLAGS: &[(&str, &str)] = &[(
    "--thread_pool_factory_config_file",
    "TensorFlow runs on its own intra-op pool and the calling thread; size the pool with \
     --tensorflow_intra_op_parallelism",
)];

/// TF Serving switches for features soma does not have: accepted when off, refused when on.
pub(super) fn refuse_switched_on(args: &Args) -> anyhow::Result<()> {
    let switches = [
        (
            "--enable_profiler",
            args.enable_profiler,
            "soma has no TensorFlow profiler service; profile the process with perf",
        ),
        (
            "--use_alts_credentials",
            args.use_alts_credentials,
            "Google ALTS is not supported; use --ssl_config_file for TLS",
        ),
        (
            "--prefer_tflite_model",
            args.prefer_tflite_model,
            "soma serves TensorFlow SavedModels, not TF Lite models",
        ),
        (
            "--use_tflite_model",
            args.use_tflite_model,
            "soma serves TensorFlow SavedModels, not TF Lite models",
        ),
    ];
    for (flag, value, instead) in switches {
        if value == Some(true) {
            anyhow::bail!("{flag}=true is a TF Serving feature soma does not have: {instead}");
        }
    }
    if let Some(fraction) = args.per_process_gpu_memory_fraction.filter(|f| *f != 0.0) {
        anyhow::bail!(
            "--per_process_gpu_memory_fraction={fraction}: soma runs TensorFlow on the CPU (the \
             tensorflow-cpu wheel), with no GPU memory to share; drop the flag or give 0"
        );
    }
    Ok(())
}

/// A specific message for a TF Serving flag in [`UNSUPPORTED_FLAGS`], where clap would only
/// say it does not know it.
pub(crate) fn explain_unsupported_flag(error: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = arg.split('=').next().unwrap_or(arg);
    let (_, instead) = UNSUPPORTED_FLAGS.iter().find(|(name, _)| *name == flag)?;
    Some(format!(
        "{flag} is a TF Serving flag that soma tfserving does not support: {instead}"
    ))
}

/// Refuses the flags whose settings a --platform_config_file holds instead (its
/// `legacy_config`). TF Serving ignores them next to the file; soma says so, so that a launch
/// script does not silently lose one.
pub(super) fn refuse_flags_the_platform_config_sets(args: &Args) -> anyhow::Result<()> {
    let given = [
        ("--enable_batching", args.enable_batching.is_some()),
        (
            "--batching_parameters_file",
            args.batching_parameters_file.is_some(),
        ),
        (
            "--enable_per_model_batching_parameters",
            args.enable_per_model_batching_parameters.is_some(),
        ),
        (
            "--tensorflow_session_parallelism",
            args.tensorflow_session_parallelism.is_some(),
        ),
        (
            "--tensorflow_intra_op_parallelism",
            args.tensorflow_intra_op_parallelism.is_some(),
        ),
        (
            "--tensorflow_inter_op_parallelism",
            args.tensorflow_inter_op_parallelism.is_some(),
        ),
        (
            "--tensorflow_session_config_file",
            args.tensorflow_session_config_file.is_some(),
        ),
        ("--mixed_precision", args.mixed_precision.is_some()),
        ("--saved_model_tags", args.saved_model_tags.is_some()),
        ("--enable_model_warmup", args.enable_model_warmup.is_some()),
        (
            "--num_request_iterations_for_warmup",
            args.num_request_iterations_for_warmup.is_some(),
        ),
    ];
    match given.iter().find(|(_, set)| *set) {
        Some((flag, _)) => anyhow::bail!(
            "{flag} has no effect with --platform_config_file, whose legacy_config sets the \
             same (TF Serving ignores the flag): drop it, or set it in the file"
        ),
        None => Ok(()),
    }
}
