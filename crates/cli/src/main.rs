//! The `soma` command line: a thin layer over the library crates.

mod commands;
mod logging;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: per-thread free lists suit the many small, short-lived
/// allocations of request handling. Built with mimalloc's `override` feature, the binary also
/// exports `malloc`/`free`/`posix_memalign`/..., so TensorFlow and libpython, which the dynamic
/// linker resolves against the executable first, allocate from mimalloc too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// TensorFlow models as asynchronous prediction APIs, from a Cortex `cortex.yaml`.
#[derive(Debug, Parser)]
#[command(name = "soma", version)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every command.
#[derive(Debug, clap::Args)]
struct GlobalArgs {
    /// TensorFlow C library: `libtensorflow_cc.so.2` or the folder that holds it. By default
    /// soma looks in the project's Python environment (`$VIRTUAL_ENV`, then `.venv`).
    #[arg(long, global = true, env = "SOMA_TENSORFLOW_LIB", value_name = "PATH")]
    tensorflow_lib: Option<PathBuf>,

    /// Where models downloaded from S3 are cached.
    #[arg(long, global = true, env = "SOMA_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive list.
    #[arg(
        long,
        global = true,
        env = "SOMA_LOG",
        default_value = "info",
        value_name = "LEVEL"
    )]
    log_level: String,

    /// Log format.
    #[arg(long, global = true, env = "SOMA_LOG_FORMAT", default_value = "human")]
    log_format: logging::LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a cortex.yaml and print every API with its models, versions and signatures.
    Validate(commands::validate::Args),
    /// Run one prediction on a model of a cortex.yaml, or on a model folder, and print the
    /// outputs as JSON.
    Predict(commands::predict::Args),
    /// Run every API of a cortex.yaml: HTTP gateway, durable queue, workers, Python handlers
    /// and TensorFlow, in one process.
    Serve(commands::serve::Args),
    /// Serve models like TensorFlow Serving's `tensorflow_model_server`, with its flags
    /// (`--rest_api_port`, `--model_name`, `--model_base_path`, `--model_config_file`, ...).
    // A flag given twice takes its last value, as TF Serving reads its command line (its
    // Docker image passes `--port`, `--rest_api_port` and the model flags before the user's).
    #[command(args_override_self = true)]
    Tfserving(commands::tfserving::Args),
    /// Run only the HTTP gateway of a cortex.yaml's APIs (no Python, no TensorFlow), on the
    /// shared Redis + S3 backend; `soma worker` processes run the workloads.
    Gateway(commands::serve::Args),
    /// Run only the workers (handlers, models) of a cortex.yaml's APIs, on the shared
    /// Redis + S3 backend; HTTP serves /healthz, /readyz, /metrics and TF Serving's REST API
    /// for the APIs' models (gRPC too with --grpc-listen), no workload submissions.
    Worker(commands::serve::Args),
    /// Show every API of a running soma (workers, queue, in flight, completed/failed, p50
    /// processing time), or one workload with `soma get <api> <id>`.
    Get(commands::ops::GetArgs),
    /// Cancel a queued workload (`cancelled`); a running one is not interrupted.
    Delete(commands::ops::DeleteArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => match commands::tfserving::explain_unsupported_flag(&error) {
            Some(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(2);
            }
            None => error.exit(),
        },
    };
    logging::init(&cli.global.log_level, cli.global.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Validate(args) => commands::validate::run(args, &cli.global).await,
            Command::Predict(args) => commands::predict::run(args, &cli.global).await,
            Command::Serve(args) => commands::serve::run(args, &cli.global).await,
            Command::Tfserving(args) => commands::tfserving::run(args, &cli.global).await,
            Command::Get(args) => commands::ops::get(args),
            Command::Delete(args) => commands::ops::delete(args),
            Command::Gateway(args) => {
                commands::scale::run(args, &cli.global, soma_server::Role::Gateway).await
            }
            Command::Worker(args) => {
                commands::scale::run(args, &cli.global, soma_server::Role::Worker).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", report::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
