//! `soma tfserving` end to end: the real binary with TF Serving's flags, over HTTP.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use soma_testkit::{
    copy_dir, expected_cases, fixtures, free_port, http, repo_root, run_python, run_python_code,
};

use common::{version_states, wait_until};

struct Server {
    child: Child,
    addr: String,
    grpc: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str], cache: &Path) -> Server {
    start_logging(args, cache, "2", Stdio::null())
}

/// [`start`], with TensorFlow's log level (`TF_CPP_MIN_LOG_LEVEL`) and stderr chosen.
fn start_logging(args: &[&str], cache: &Path, tf_log_level: &str, stderr: Stdio) -> Server {
    let port = free_port();
    let grpc_port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_soma"))
        .arg("tfserving")
        .arg(format!("--rest_api_port={port}"))
        .arg(format!("--port={grpc_port}"))
        .args(args)
        .env("SOMA_CACHE_DIR", cache)
        .env("TF_CPP_MIN_LOG_LEVEL", tf_log_level)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let server = Server {
        child,
        addr: format!("127.0.0.1:{port}"),
        grpc: format!("127.0.0.1:{grpc_port}"),
    };
    wait_for(&server, "ready", |s| get(s, "/v2/health/ready").0 == 200);
    server
}

/// Runs `soma tfserving <args>` to its end (for runs that stop at start-up or print and
/// exit): its exit code, stdout and stderr.
fn run_to_exit(args: &[&str], cache: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_soma"))
        .arg("tfserving")
        .args(args)
        .env("SOMA_CACHE_DIR", cache)
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// Serves iris with server-side batching of these `BatchingParameters`.
fn start_batched_iris(parameters: &str, work: &Path) -> Server {
    let batching = work.join("batching.pbtxt");
    std::fs::write(&batching, parameters).unwrap();
    start(
        &[
            "--model_name=iris",
            &format!("--model_base_path={}", fixtures().join("iris").display()),
            "--enable_batching",
            &format!("--batching_parameters_file={}", batching.display()),
            "--enable_grpc_healthcheck_service",
        ],
        work,
    )
}

fn get(server: &Server, path: &str) -> (u16, Value) {
    match http(&server.addr, "GET", path, &[], b"") {
        Ok(r) => (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        ),
        Err(_) => (0, Value::Null),
    }
}

fn predict(server: &Server, model: &str) -> (u16, String) {
    let body = br#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#;
    let r = http(
        &server.addr,
        "POST",
        &format!("/v1/models/{model}:predict"),
        &[],
        body,
    )
    .unwrap();
    (r.status, r.text())
}

fn wait_for(server: &Server, what: &str, mut done: impl FnMut(&Server) -> bool) {
    wait_until(what, || done(server));
}

fn versions(server: &Server, model: &str) -> Vec<(String, String)> {
    version_states(&get(server, &format!("/v1/models/{model}")).1)
}

/// Waits until `version` of `model` has failed (END), then returns its status error:
/// (`error_code`, `error_message`).
fn failed_version(server: &Server, model: &str, version: i64) -> (String, String) {
    let end = (version.to_string(), "END".to_string());
    wait_for(server, &format!("{model} version {version} to fail"), |s| {
        versions(s, model).contains(&end)
    });
    let (_, status) = get(server, &format!("/v1/models/{model}/versions/{version}"));
    let error = &status["model_version_status"][0]["status"];
    let text = |field: &str| error[field].as_str().unwrap_or_default().to_string();
    (text("error_code"), text("error_message"))
}

#[test]
fn single_model_mode_swaps_versions_under_load_and_reports_broken_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("iris");
    copy_dir(&fixtures().join("iris/1"), &repo.join("1"));
    let base = format!("--model_base_path={}", repo.display());
    let server = start(
        &[
            "--model_name=iris",
            &base,
            "--file_system_poll_wait_seconds=1",
        ],
        &tmp.path().join("cache"),
    );
    assert_eq!(predict(&server, "iris").0, 200);

    // A client predicts in a loop over HTTP while versions come and go.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (addr, stop) = (server.addr.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let body = br#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#;
                match http(&addr, "POST", "/v1/models/iris:predict", &[], body) {
                    Ok(r) if r.status == 200 => ok += 1,
                    Ok(r) => failed.push(r.text()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        })
    };
    copy_dir(&fixtures().join("iris/2"), &tmp.path().join("staging"));
    std::fs::rename(tmp.path().join("staging"), repo.join("2")).unwrap();
    wait_for(&server, "version 2", |s| {
        versions(s, "iris") == [("2".into(), "AVAILABLE".into()), ("1".into(), "END".into())]
    });
    std::fs::remove_dir_all(repo.join("1")).unwrap();
    // A broken version 3 (loads, fails its warm-up) leaves version 2 serving.
    copy_dir(
        &fixtures().join("invalid/keras_saved_model_save/1"),
        &tmp.path().join("staging"),
    );
    std::fs::rename(tmp.path().join("staging"), repo.join("3")).unwrap();
    let (code, message) = failed_version(&server, "iris", 3);
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = client.join().unwrap();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok > 10, "only {ok} requests");

    assert_eq!(code, "FAILED_PRECONDITION");
    assert!(
        message.contains("failed its warm-up prediction"),
        "{message}"
    );
    let (_, latest) = get(&server, "/v1/models/iris/metadata");
    assert_eq!(latest["model_spec"]["version"], "2");
}

/// Predict on iris ([[5.1, 3.5, 1.4, 0.2]]) with the official gRPC client at argv[1];
/// prints the scores as a JSON list.
const GRPC_IRIS_CLIENT: &str = r#"
import json, sys, grpc, numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

request = predict_pb2.PredictRequest()
request.model_spec.name = "iris"
request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)))
stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(sys.argv[1]))
print(json.dumps([float(v) for v in stub.Predict(request, timeout=30).outputs["output_0"].float_val]))
"#;

#[test]
fn saved_model_tags_choose_the_metagraph_and_a_mismatch_says_which_tags_there_are() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("iris");
    copy_dir(&fixtures().join("iris_serve_gpu/1"), &repo.join("1"));
    let base = format!("--model_base_path={}", repo.display());

    // Its only MetaGraph is tagged {serve, gpu}: with the default `serve` nothing loads, and
    // the process stops (as TF Serving does) saying which tags the model has.
    let (code, _, stderr) = run_to_exit(
        &["--rest_api_port=0", "--port=0", &base],
        &tmp.path().join("a"),
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("the MetaGraphs in it are tagged {gpu, serve}"),
        "{stderr}"
    );

    let server = start(
        &[
            "--model_name=iris",
            &base,
            "--saved_model_tags=serve,gpu",
            "--file_system_poll_wait_seconds=1",
        ],
        &tmp.path().join("b"),
    );
    let case = &expected_cases(&fixtures().join("iris_serve_gpu"))[0];
    let row: [f32; 4] = serde_json::from_value(case.inputs["x"][0].clone()).unwrap();
    let want: Vec<f64> = case.outputs["output_0"]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let got = iris_scores(&server, row);
    // The official gRPC client gets the same answer.
    let over_grpc: Vec<f64> =
        serde_json::from_slice(&run_python_code(GRPC_IRIS_CLIENT, &[&server.grpc])).unwrap();
    for scores in [&got, &over_grpc] {
        assert_eq!(scores.len(), want.len());
        for (g, w) in scores.iter().zip(&want) {
            assert!(
                (g - w).abs() < 1e-6,
                "{scores:?} vs Python TensorFlow's {want:?}"
            );
        }
    }

    // A new version tagged only `serve` fails with the tags it has; version 1 keeps serving.
    copy_dir(&fixtures().join("iris/2"), &tmp.path().join("staging"));
    std::fs::rename(tmp.path().join("staging"), repo.join("2")).unwrap();
    let (code, message) = failed_version(&server, "iris", 2);
    assert_eq!(code, "NOT_FOUND", "{message}");
    assert!(
        message.contains("the MetaGraphs in it are tagged {serve}"),
        "{message}"
    );
    assert_eq!(
        versions(&server, "iris"),
        [("2".into(), "END".into()), ("1".into(), "AVAILABLE".into())]
    );
    assert_eq!(iris_scores(&server, row), got);
}

/// Warm-up files written by TensorFlow and the official TF Serving messages.
fn warmup_records(out: &Path) {
    let script = repo_root().join("crates/grpc/tests/support/warmup_records.py");
    run_python(&script, &[out.as_os_str()]);
}

/// A copy of an iris version with `records` as its assets.extra/tf_serving_warmup_requests.
fn iris_version_with_warmup(version: i64, records: &Path, to: &Path) {
    copy_dir(&fixtures().join(format!("iris/{version}")), to);
    let assets = to.join("assets.extra");
    std::fs::create_dir_all(&assets).unwrap();
    std::fs::copy(records, assets.join("tf_serving_warmup_requests")).unwrap();
}

#[test]
fn recorded_warmup_requests_gate_new_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let records = tmp.path().join("records");
    warmup_records(&records);
    let repo = tmp.path().join("iris");
    iris_version_with_warmup(1, &records.join("iris_predict"), &repo.join("1"));
    let base = format!("--model_base_path={}", repo.display());
    let args = [
        "--model_name=iris",
        &base,
        "--file_system_poll_wait_seconds=1",
    ];
    let server = start(&args, &tmp.path().join("cache"));
    assert_eq!(
        versions(&server, "iris"),
        [("1".into(), "AVAILABLE".into())]
    );

    // Version 2's recorded request names an input iris does not have: its load fails and
    // version 1 keeps serving.
    let staging = tmp.path().join("staging");
    iris_version_with_warmup(2, &records.join("iris_bad_input"), &staging);
    std::fs::rename(&staging, repo.join("2")).unwrap();
    let (_, message) = failed_version(&server, "iris", 2);
    assert_eq!(predict(&server, "iris").0, 200);
    let (_, latest) = get(&server, "/v1/models/iris/metadata");
    assert_eq!(latest["model_spec"]["version"], "1");
    assert!(
        message.contains("tf_serving_warmup_requests: record 2 failed") && message.contains("nope"),
        "{message}"
    );
    drop(server);

    // --enable_model_warmup=false does not read the files: version 2 serves.
    let server = start(
        &[&args[..], &["--enable_model_warmup=false"]].concat(),
        &tmp.path().join("cache"),
    );
    assert_eq!(
        versions(&server, "iris"),
        [("2".into(), "AVAILABLE".into())]
    );
}

#[test]
fn config_file_mode_reloads_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("models.config");
    let entry_at = |name: &str, path: &Path| {
        format!(
            "config {{ name: '{name}' base_path: '{}' model_platform: 'tensorflow' }}\n",
            path.display()
        )
    };
    let entry = |name: &str, model: &str| entry_at(name, &fixtures().join(model));
    std::fs::write(
        &config,
        format!("model_config_list {{\n{}}}\n", entry("a", "iris")),
    )
    .unwrap();
    let flag = format!("--model_config_file={}", config.display());
    let monitoring = tmp.path().join("monitoring.config");
    std::fs::write(
        &monitoring,
        "prometheus_config {\n  enable: true,\n  path: \"/monitoring/prometheus/metrics\"\n}\n",
    )
    .unwrap();
    let monitoring = format!("--monitoring_config_file={}", monitoring.display());
    let server = start(
        &[
            &flag,
            "--model_config_file_poll_wait_seconds=1",
            &monitoring,
        ],
        &tmp.path().join("cache"),
    );
    assert_eq!(predict(&server, "a").0, 200);
    assert_eq!(predict(&server, "b").0, 404);
    // TF Serving's Prometheus path (--monitoring_config_file) serves the same metrics.
    let metrics = http(
        &server.addr,
        "GET",
        "/monitoring/prometheus/metrics",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(metrics.status, 200);
    let version_10 = fixtures().join("iris/10").display().to_string();
    for line in [
        r#":tensorflow:serving:request_count{API="predict",entrypoint="REST",model_name="a",status="OK"} 1"#.to_string(),
        // The models' own metrics are on the same page: the run, and the version's load.
        r#":tensorflow:serving:runtime_latency_count{API="Predict",model_name="a",runtime="TF1"} 1"#.to_string(),
        format!(
            r#":tensorflow:cc:saved_model:load_attempt_count{{model_path="{version_10}",status="success"}} 1"#
        ),
    ] {
        assert!(metrics.text().contains(&line), "{line} not in\n{}", metrics.text());
    }
    std::fs::write(
        &config,
        format!("model_config_list {{\n{}}}\n", entry("b", "iris_plain")),
    )
    .unwrap();
    wait_for(&server, "model b", |s| predict(s, "b").0 == 200);
    wait_for(&server, "model a to go", |s| predict(s, "a").0 == 404);
    // An emptied file (a tool rewriting it in place) leaves the model list as it is, as
    // TF Serving refuses that transition; it does not unload every model.
    std::fs::write(&config, "").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(predict(&server, "b").0, 200);
    // A reload that failed (a base path not there yet) is tried again at every poll while
    // the file stays as it is, as TF Serving reloads at every poll: the model comes once
    // its folder does.
    let later = tmp.path().join("later");
    std::fs::write(
        &config,
        format!(
            "model_config_list {{\n{}{}}}\n",
            entry("b", "iris_plain"),
            entry_at("c", &later)
        ),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(predict(&server, "c").0, 404);
    copy_dir(&fixtures().join("iris_plain"), &later);
    wait_for(&server, "model c", |s| predict(s, "c").0 == 200);
    assert_eq!(predict(&server, "b").0, 200);
}

#[test]
fn version_prints_the_server_and_the_tensorflow_library() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run_to_exit(&["--version"], tmp.path());
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(
        lines[0],
        format!("TensorFlow ModelServer: soma {}", env!("CARGO_PKG_VERSION"))
    );
    // The wheel's library, as setup.sh pins it (2.x).
    assert!(lines[1].starts_with("TensorFlow Library: 2."), "{stdout}");
}

#[test]
fn unknown_flags_and_bad_configs_stop_the_process_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run_to_exit(
        &["--model_base_path=/m", "--enable_model_warmup_typo"],
        tmp.path(),
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("unexpected argument '--enable_model_warmup_typo' found"),
        "{stderr}"
    );
    // A TF Serving flag soma does not implement says so, and what to do instead.
    let (code, _, stderr) = run_to_exit(
        &[
            "--model_base_path=/m",
            "--thread_pool_factory_config_file=/t",
        ],
        tmp.path(),
    );
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        "error: --thread_pool_factory_config_file is a TF Serving flag that soma tfserving does \
         not support: TensorFlow runs on its own intra-op pool and the calling thread; size the \
         pool with --tensorflow_intra_op_parallelism\n"
    );
    // A switch for a feature soma lacks is refused when on.
    let (code, _, stderr) = run_to_exit(
        &["--model_base_path=/m", "--use_alts_credentials=true"],
        tmp.path(),
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("--use_alts_credentials=true is a TF Serving feature soma does not have"),
        "{stderr}"
    );
    let missing = format!("--model_base_path={}", tmp.path().join("nothing").display());
    let (code, _, stderr) = run_to_exit(&["--rest_api_port=1", &missing], tmp.path());
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("loading the models") && stderr.contains("model default: "),
        "{stderr}"
    );
}

/// TF Serving's official Python client (`tensorflow-serving-api`) against the gRPC port of
/// `soma tfserving` with batching on: Predict, GetModelMetadata, GetModelStatus, then
/// HandleReloadConfigRequest swaps the model list on the live manager.
const OFFICIAL_CLIENT: &str = r#"
import json, sys, grpc, numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (predict_pb2, get_model_metadata_pb2, get_model_status_pb2,
    model_management_pb2, model_service_pb2_grpc, prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

addr, multi_io, broken = sys.argv[1], sys.argv[2], sys.argv[3]
channel = grpc.insecure_channel(addr)
predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
models = model_service_pb2_grpc.ModelServiceStub(channel)
out = {}

request = predict_pb2.PredictRequest()
request.model_spec.name = "iris"
request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)))
response = predictions.Predict(request, timeout=30)
out["iris_version"] = response.model_spec.version.value
out["iris_outputs"] = sorted(response.outputs.keys())
# The same request compressed, as a client sending large tensors would.
for name, algorithm in (("gzip", grpc.Compression.Gzip), ("deflate", grpc.Compression.Deflate)):
    zipped = predictions.Predict(request, timeout=30, compression=algorithm)
    out[name] = list(zipped.outputs["output_0"].float_val) == list(response.outputs["output_0"].float_val)

# What a client is told about a model or a label the server does not have.
def error_of(name, label=None):
    bad = predict_pb2.PredictRequest()
    bad.CopyFrom(request)
    bad.model_spec.name = name
    if label:
        bad.model_spec.version_label = label
    try:
        predictions.Predict(bad, timeout=30)
        return "OK"
    except grpc.RpcError as e:
        return [e.code().name, e.details()]
out["unknown_model"] = error_of("nope")
out["unknown_label"] = error_of("iris", "zzz")

meta = get_model_metadata_pb2.GetModelMetadataRequest()
meta.model_spec.name = "iris"
meta.metadata_field.append("signature_def")
out["metadata_type"] = predictions.GetModelMetadata(meta, timeout=30).metadata["signature_def"].type_url

status = get_model_status_pb2.GetModelStatusRequest()
status.model_spec.name = "iris"
out["status"] = [(v.version, v.state) for v in models.GetModelStatus(status, timeout=30).model_version_status]

reload = model_management_pb2.ReloadConfigRequest()
config = model_server_config_pb2.ModelServerConfig()
entry = config.model_config_list.config.add()
entry.name = "multi"
entry.base_path = multi_io
entry.model_platform = "tensorflow"
reload.config.CopyFrom(config)
out["reload"] = models.HandleReloadConfigRequest(reload, timeout=60).status.error_code

try:
    predictions.Predict(request, timeout=30)
    out["iris_after"] = "OK"
except grpc.RpcError as e:
    out["iris_after"] = e.code().name
status.model_spec.name = "multi"
out["multi_status"] = [v.state for v in models.GetModelStatus(status, timeout=30).model_version_status]

# A reload that adds a model which fails to load: an error, and the server stays SERVING
# for gRPC health checks (as TF Serving's), so a probe does not take "multi" away too.
entry = config.model_config_list.config.add()
entry.name = "broken"
entry.base_path = broken
entry.model_platform = "tensorflow"
reload.config.CopyFrom(config)
try:
    models.HandleReloadConfigRequest(reload, timeout=60)
    out["reload_broken"] = "OK"
except grpc.RpcError as e:
    out["reload_broken"] = e.code().name
health = health_pb2_grpc.HealthStub(channel)
out["health"] = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
print(json.dumps(out))
"#;

#[test]
fn the_official_grpc_client_predicts_and_reloads_the_model_list() {
    let work = tempfile::tempdir().unwrap();
    let server = start_batched_iris(
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 500 }\n",
        work.path(),
    );
    let multi_io = fixtures().join("multi_io");
    let broken = fixtures().join("invalid/keras_saved_model_save");
    let args = [
        server.grpc.as_ref(),
        multi_io.as_os_str(),
        broken.as_os_str(),
    ];
    let out: Value = serde_json::from_slice(&run_python_code(OFFICIAL_CLIENT, &args)).unwrap();
    assert_eq!(out["iris_version"], 10, "latest is the numerically highest");
    assert_eq!(out["iris_outputs"], serde_json::json!(["output_0"]));
    assert_eq!(
        (&out["gzip"], &out["deflate"]),
        (&Value::Bool(true), &Value::Bool(true))
    );
    assert_eq!(
        out["metadata_type"],
        "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    );
    assert_eq!(
        out["status"],
        serde_json::json!([[10, 30]]),
        "v10 AVAILABLE"
    );
    assert_eq!(
        out["unknown_model"],
        serde_json::json!(["NOT_FOUND", "Servable not found for request: Latest(nope)"])
    );
    assert_eq!(
        out["unknown_label"],
        serde_json::json!([
            "INVALID_ARGUMENT",
            "Unrecognized servable version label: zzz"
        ])
    );
    assert_eq!(out["reload"], 0, "reload OK");
    assert_eq!(out["iris_after"], "NOT_FOUND", "iris left the model list");
    assert_eq!(out["multi_status"], serde_json::json!([30]));
    assert_eq!(out["reload_broken"], "FAILED_PRECONDITION");
    assert_eq!(out["health"], 1, "SERVING");
    // REST's readiness follows every model (Triton's meaning): not ready.
    assert_eq!(get(&server, "/v2/health/ready").0, 503);
}

const UNIX_SOCKET_CLIENT: &str = r#"
import sys
import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

request = predict_pb2.PredictRequest()
request.model_spec.name = "iris"
request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)))
# gRPC's Python and Java clients send the socket's path as the HTTP/2 :authority (which
# hyper's HTTP/2 server refuses); "localhost" is what gRPC-Go and Kubernetes send.
versions = []
for options in [[], [("grpc.default_authority", "localhost")]]:
    channel = grpc.insecure_channel("unix:" + sys.argv[1], options=options)
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    versions.append(str(response.model_spec.version.value))
print(" ".join(versions))
"#;

#[test]
fn grpc_on_a_unix_socket_with_the_official_client() {
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("grpc.sock");
    let args = [
        "--model_name=iris".to_string(),
        format!("--model_base_path={}", fixtures().join("iris").display()),
        format!("--grpc_socket_path={}", socket.display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let predict_over_socket = || {
        let out = run_python_code(UNIX_SOCKET_CLIENT, &[&socket]);
        String::from_utf8_lossy(&out).trim().to_string()
    };
    let server = start(&args, work.path());
    assert_eq!(predict_over_socket(), "10 10");
    drop(server);
    // The killed server left its socket file: the next start replaces it.
    assert!(socket.exists());
    let server = start(&args, work.path());
    assert_eq!(predict_over_socket(), "10 10");
    drop(server);

    // Any other file at the path is not replaced.
    std::fs::remove_file(&socket).unwrap();
    std::fs::write(&socket, "not a socket").unwrap();
    let (code, _, stderr) = run_to_exit(&args, work.path());
    assert_ne!(code, Some(0));
    assert!(stderr.contains("exists and is not a socket"), "{stderr}");
}

const TLS_CLIENT: &str = r#"
import json, sys, grpc, numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

plan = json.load(open(sys.argv[1]))
pem = lambda name: open(plan[name], "rb").read()
request = predict_pb2.PredictRequest()
request.model_spec.name = "iris"
request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([plan["row"]], np.float32)))

def channel(target, with_cert=True, tls=True):
    if not tls:
        return grpc.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pem("ca"),
        private_key=pem("client_key") if with_cert else None,
        certificate_chain=pem("client_cert") if with_cert else None)
    # The certificate names localhost; a Unix socket's authority is its path.
    options = [("grpc.ssl_target_name_override", "localhost"),
               ("grpc.default_authority", "localhost")]
    return grpc.secure_channel(target, credentials, options=options)

def scores(ch):
    response = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request, timeout=30)
    return [float(v) for v in response.outputs["output_0"].float_val]

def failure(ch):
    try:
        scores(ch)
        return "OK"
    except grpc.RpcError as e:
        return e.code().name

status_request = get_model_status_pb2.GetModelStatusRequest()
status_request.model_spec.name = "iris"
status = model_service_pb2_grpc.ModelServiceStub(channel(plan["tcp"])).GetModelStatus(
    status_request, timeout=30)
print(json.dumps({
    "tcp": scores(channel(plan["tcp"])),
    "unix": scores(channel("unix:" + plan["unix"])),
    "states": [v.state for v in status.model_version_status],
    "without_client_cert": failure(channel(plan["tcp"], with_cert=False)),
    "plaintext": failure(channel(plan["tcp"], tls=False)),
}))
"#;

/// `SSLConfig` as a shell script writes it from PEM files: each PEM's base64 body joined
/// onto one line, `\n` only after its BEGIN line and before its END line.
fn ssl_config_one_line(fields: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for (name, pem) in fields {
        let lines: Vec<&str> = pem.lines().collect();
        let (begin, end) = (lines[0], lines[lines.len() - 1]);
        let body = lines[1..lines.len() - 1].concat();
        text.push_str(&format!("{name}: '{begin}\\n{body}\\n{end}'\n"));
    }
    text + "client_verify: true\n"
}

#[test]
fn grpc_over_tls_with_client_certificates_for_the_official_client() {
    let pki = soma_testkit::TestPki::generate();
    let work = tempfile::tempdir().unwrap();
    let config = pki.write(
        "ssl.config",
        &ssl_config_one_line(&[
            ("server_key", &pki.server_key),
            ("server_cert", &pki.server_cert),
            ("custom_ca", &pki.ca_cert),
        ]),
    );
    let socket = work.path().join("grpc.sock");
    let server = start(
        &[
            "--model_name=iris",
            &format!("--model_base_path={}", fixtures().join("iris").display()),
            &format!("--ssl_config_file={}", config.display()),
            &format!("--grpc_socket_path={}", socket.display()),
        ],
        work.path(),
    );
    // The latest version serves (TF Serving's default policy): compare with its outputs.
    let cases = expected_cases(&fixtures().join("iris"));
    let latest = cases.iter().map(|c| c.version).max().unwrap();
    let case = cases.iter().find(|c| c.version == latest).unwrap();
    let paths = serde_json::json!({
        "ca": pki.write("ca.crt", &pki.ca_cert),
        "client_cert": pki.write("client.crt", &pki.client_cert),
        "client_key": pki.write("client.key", &pki.client_key),
    });
    let plan = serde_json::json!({
        "tcp": server.grpc,
        "unix": socket,
        "row": case.inputs["x"][0],
        "ca": paths["ca"], "client_cert": paths["client_cert"], "client_key": paths["client_key"],
    });
    let plan_file = work.path().join("plan.json");
    std::fs::write(&plan_file, plan.to_string()).unwrap();
    let out: Value = serde_json::from_slice(&run_python_code(TLS_CLIENT, &[&plan_file])).unwrap();

    let want = &case.outputs["output_0"]["values"];
    for over in ["tcp", "unix"] {
        let got = out[over].as_array().unwrap();
        assert_eq!(got.len(), 3, "{out}");
        for (g, w) in got.iter().zip(want.as_array().unwrap()) {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!(
                (g - w).abs() < 1e-6,
                "{over}: {out} vs Python TensorFlow's {want}"
            );
        }
    }
    // GetModelStatus over TLS: the latest version AVAILABLE (state 30).
    assert_eq!(out["states"], serde_json::json!([30]), "{out}");
    assert_eq!(out["without_client_cert"], "UNAVAILABLE", "{out}");
    assert_eq!(out["plaintext"], "UNAVAILABLE", "{out}");
    // REST stays plain HTTP, as in TF Serving.
    assert_eq!(get(&server, "/v1/models/iris").0, 200);
}

#[test]
fn a_bad_batching_parameters_file_stops_the_process_with_its_line() {
    let work = tempfile::tempdir().unwrap();
    let batching = work.path().join("batching.pbtxt");
    std::fs::write(&batching, "num_batch_threads { value: 0 }\n").unwrap();
    let (code, _, stderr) = run_to_exit(
        &[
            "--rest_api_port=0",
            "--port=0",
            "--model_name=iris",
            &format!("--model_base_path={}", fixtures().join("iris").display()),
            "--enable_batching",
            &format!("--batching_parameters_file={}", batching.display()),
        ],
        work.path(),
    );
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("line 1, column 1: num_batch_threads must be positive"),
        "{stderr}"
    );
}

/// `--tensorflow_session_config_file` reaches TensorFlow: with `log_device_placement: true`
/// TensorFlow's placer logs the device of every op of the model, and without the file it
/// does not. A file TensorFlow would not read stops start-up with its line and column.
#[test]
fn the_session_config_file_configures_tensorflow() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("session.config");
    std::fs::write(
        &config,
        "# TensorFlow's ConfigProto, as TF Serving reads it\n\
         log_device_placement: true\n\
         graph_options { rewrite_options { remapping: OFF } }\n",
    )
    .unwrap();
    let model = format!("--model_base_path={}", fixtures().join("iris").display());
    let config_flag = format!("--tensorflow_session_config_file={}", config.display());
    let mut answers = Vec::new();
    for with_config in [true, false] {
        let log = work.path().join(format!("stderr-{with_config}.log"));
        let mut args = vec!["--model_name=iris", model.as_str()];
        if with_config {
            args.push(&config_flag);
        }
        let server = start_logging(
            &args,
            work.path(),
            "0",
            std::fs::File::create(&log).unwrap().into(),
        );
        let (status, answer) = predict(&server, "iris");
        assert_eq!(status, 200, "{answer}");
        answers.push(answer);
        drop(server);
        let stderr = std::fs::read_to_string(&log).unwrap();
        let placed = stderr
            .lines()
            .filter(|l| l.contains("placer.cc") && l.contains("/device:CPU:0"))
            .count();
        assert_eq!(
            placed > 0,
            with_config,
            "ops placed in the log with the config: {with_config}; {placed} lines"
        );
    }
    assert_eq!(answers[0], answers[1]);

    std::fs::write(
        &config,
        "graph_options {\n  rewrite_options { remapping: MAYBE }\n}\n",
    )
    .unwrap();
    let (code, _, stderr) = run_to_exit(&["--model_name=iris", &model, &config_flag], work.path());
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!(
            "--tensorflow_session_config_file {}: line 2, column 32: value 'MAYBE' was not \
             found for enum 'tensorflow.RewriterConfig.Toggle'",
            config.display()
        )),
        "{stderr}"
    );
}

/// `--mixed_precision=bfloat16` has TensorFlow run the model's float32 math in bfloat16, as
/// TF Serving's flag does: every output of the 1024-wide MLP is then a bfloat16 value (the
/// low 16 bits of its float32 are 0) within bfloat16's precision of Python TensorFlow's
/// float32 answer, which soma gives exactly without the flag.
#[test]
fn mixed_precision_bfloat16_runs_the_model_in_bfloat16() {
    let work = tempfile::tempdir().unwrap();
    let model_dir = fixtures().join("mlp1024");
    let case = expected_cases(&model_dir).remove(0);
    let want: Vec<f32> =
        serde_json::from_value(case.outputs["output_0"]["values"].clone()).unwrap();
    let body = serde_json::json!({"signature_name": case.signature, "instances": case.inputs["x"]});
    let model = format!("--model_base_path={}", model_dir.display());
    for bfloat16 in [false, true] {
        let mut args = vec!["--model_name=mlp", model.as_str()];
        if bfloat16 {
            args.push("--mixed_precision=bfloat16");
        }
        let server = start(&args, work.path());
        let r = http(
            &server.addr,
            "POST",
            "/v1/models/mlp:predict",
            &[],
            body.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let answer: Value = serde_json::from_slice(&r.body).unwrap();
        let got: Vec<Vec<f32>> = serde_json::from_value(answer["predictions"].clone()).unwrap();
        let got = &got[0];
        assert_eq!(got.len(), want.len());
        if !bfloat16 {
            assert_eq!(got, &want);
            continue;
        }
        let not_bfloat16 = got.iter().filter(|v| v.to_bits() & 0xffff != 0).count();
        assert_eq!(
            not_bfloat16, 0,
            "outputs that are not bfloat16 values: {got:?}"
        );
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0f32, f32::max);
        // bfloat16 keeps 8 significant bits: three 1024-wide layers stay within a few
        // hundredths of float32 on these outputs (|values| < 2).
        assert!(worst < 0.05, "largest difference from float32: {worst}");
    }
}

/// `--platform_config_file` (TF Serving's `PlatformConfigMap`) configures the session,
/// batching and warm-up of every model instead of their flags; a flag it overrides is
/// refused, and a field soma does not apply stops start-up with its line and column.
#[test]
fn the_platform_config_file_sets_the_session_config_and_batching() {
    let work = tempfile::tempdir().unwrap();
    let platform = work.path().join("platform.config");
    let write_legacy_config = |fields: &str| {
        std::fs::write(
            &platform,
            format!(
                "platform_configs {{\n  key: \"tensorflow\"\n  value {{\n    \
                 source_adapter_config {{\n      [type.googleapis.com/tensorflow.serving.\
                 SavedModelBundleSourceAdapterConfig] {{\n        legacy_config {{\n{fields}\n\
                 \x20       }}\n      }}\n    }}\n  }}\n}}\n"
            ),
        )
        .unwrap();
    };
    write_legacy_config(
        "session_config { log_device_placement: true }\n\
         batching_parameters { max_batch_size { value: 8 } batch_timeout_micros { value: 1000 } }\n\
         enable_model_warmup: true",
    );
    let model = format!("--model_base_path={}", fixtures().join("iris").display());
    let platform_flag = format!("--platform_config_file={}", platform.display());
    let log = work.path().join("stderr.log");
    let server = start_logging(
        &["--model_name=iris", &model, &platform_flag],
        work.path(),
        "0",
        std::fs::File::create(&log).unwrap().into(),
    );
    let (status, answer) = predict(&server, "iris");
    assert_eq!(status, 200, "{answer}");
    let (_, batched_runs) = batch_size_sum_and_count(&server);
    assert!(batched_runs >= 1.0, "the prediction was not batched");
    drop(server);
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("placer.cc") && l.contains("/device:CPU:0")),
        "the session config's log_device_placement did not reach TensorFlow"
    );

    // The flags the file overrides are refused next to it, even at their default values
    // (--enable_model_warmup=true beside a legacy_config without warm-up would be lost).
    for (flag, name) in [
        ("--enable_batching", "--enable_batching"),
        ("--enable_model_warmup=true", "--enable_model_warmup"),
        ("--saved_model_tags=serve", "--saved_model_tags"),
        (
            "--tensorflow_session_parallelism=0",
            "--tensorflow_session_parallelism",
        ),
    ] {
        let (code, _, stderr) = run_to_exit(
            &["--model_name=iris", &model, &platform_flag, flag],
            work.path(),
        );
        assert_eq!(code, Some(1), "{flag}");
        assert!(
            stderr.contains(&format!(
                "{name} has no effect with --platform_config_file, whose legacy_config sets the \
                 same"
            )),
            "{flag}: {stderr}"
        );
    }
    write_legacy_config("enable_session_metadata: true");
    let (code, _, stderr) =
        run_to_exit(&["--model_name=iris", &model, &platform_flag], work.path());
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!(
            "--platform_config_file {}: line 7, column 1: field 'enable_session_metadata' not \
             found for message 'tensorflow.serving.SessionBundleConfig'",
            platform.display()
        )),
        "{stderr}"
    );
}

/// Sum and count of the `soma_batch_size` histogram on `/metrics`.
fn batch_size_sum_and_count(server: &Server) -> (f64, f64) {
    let r = http(&server.addr, "GET", "/metrics", &[], b"").unwrap();
    let text = r.text();
    let value = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    (value("soma_batch_size_sum"), value("soma_batch_size_count"))
}

fn iris_scores(server: &Server, row: [f32; 4]) -> Vec<f64> {
    let body = serde_json::json!({ "instances": [row] }).to_string();
    let r = http(
        &server.addr,
        "POST",
        "/v1/models/iris:predict",
        &[],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let answer: Value = serde_json::from_slice(&r.body).unwrap();
    answer["predictions"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[test]
fn auto_batching_merges_concurrent_rest_requests_and_gives_each_its_own_row() {
    let work = tempfile::tempdir().unwrap();
    let server = start_batched_iris(
        "max_batch_size { value: 64 }\nbatch_timeout_micros: auto\n",
        work.path(),
    );
    let row =
        |client: usize, i: usize| [4.0 + client as f32 * 0.25, 3.0 + i as f32 * 0.1, 1.4, 0.2];
    const CLIENTS: usize = 16;
    const EACH: usize = 40;
    // Each row's answer alone, one request at a time.
    let alone: Vec<Vec<Vec<f64>>> = (0..CLIENTS)
        .map(|c| (0..EACH).map(|i| iris_scores(&server, row(c, i))).collect())
        .collect();
    let before = batch_size_sum_and_count(&server);

    // The same rows from 16 clients at once: every answer is its own row's.
    std::thread::scope(|scope| {
        for (c, expected) in alone.iter().enumerate() {
            let server = &server;
            scope.spawn(move || {
                for (i, expected) in expected.iter().enumerate() {
                    let got = iris_scores(server, row(c, i));
                    assert_eq!(got.len(), expected.len());
                    for (g, e) in got.iter().zip(expected) {
                        // A batch may round differently from a run of one row.
                        assert!(
                            (g - e).abs() <= 1e-6,
                            "client {c} row {i}: {got:?} vs {expected:?}"
                        );
                    }
                }
            });
        }
    });
    let after = batch_size_sum_and_count(&server);
    let (rows, runs) = (after.0 - before.0, after.1 - before.1);
    assert!(
        rows <= (CLIENTS * EACH) as f64 && runs < rows,
        "{rows} rows in {runs} batched runs for {} requests: none were merged",
        CLIENTS * EACH
    );
}

/// A model's batched runs (`soma_batch_size_count`).
fn batches_of(server: &Server, model: &str) -> f64 {
    let text = http(&server.addr, "GET", "/metrics", &[], b"")
        .unwrap()
        .text();
    text.lines()
        .filter(|l| {
            l.starts_with("soma_batch_size_count") && l.contains(&format!("model_name=\"{model}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn per_model_batching_parameters_come_from_each_version_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let (batched, plain) = (tmp.path().join("batched"), tmp.path().join("plain"));
    copy_dir(&fixtures().join("iris/1"), &batched.join("1"));
    copy_dir(&fixtures().join("iris/1"), &plain.join("1"));
    std::fs::write(
        batched.join("1/batching_params.pbtxt"),
        // A window, so even one request at a time runs as a (recorded) batch.
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n",
    )
    .unwrap();
    let config = tmp.path().join("models.config");
    std::fs::write(
        &config,
        format!(
            "model_config_list {{\n\
             config {{ name: 'batched' base_path: '{}' }}\n\
             config {{ name: 'plain' base_path: '{}' }}\n}}\n",
            batched.display(),
            plain.display()
        ),
    )
    .unwrap();
    let server = start(
        &[
            &format!("--model_config_file={}", config.display()),
            "--enable_batching",
            "--enable_per_model_batching_parameters",
            "--file_system_poll_wait_seconds=1",
        ],
        &tmp.path().join("cache"),
    );
    for _ in 0..3 {
        assert_eq!(predict(&server, "batched").0, 200);
        assert_eq!(predict(&server, "plain").0, 200);
    }
    assert_eq!(batches_of(&server, "batched"), 3.0);
    assert_eq!(
        batches_of(&server, "plain"),
        0.0,
        "a version without the file"
    );

    // A version whose file does not parse fails to load, naming the file; 1 keeps serving.
    copy_dir(&fixtures().join("iris/2"), &tmp.path().join("staging"));
    std::fs::write(
        tmp.path().join("staging/batching_params.pbtxt"),
        "max_batch_size { value: 16 }\nbatch_timeout: 5\n",
    )
    .unwrap();
    std::fs::rename(tmp.path().join("staging"), batched.join("2")).unwrap();
    let (code, message) = failed_version(&server, "batched", 2);
    assert_eq!(code, "INVALID_ARGUMENT", "{message}");
    assert!(
        message
            .contains("2/batching_params.pbtxt: line 2, column 1: unknown field 'batch_timeout'"),
        "{message}"
    );
    assert_eq!(predict(&server, "batched").0, 200);
    assert_eq!(
        versions(&server, "batched"),
        [("2".into(), "END".into()), ("1".into(), "AVAILABLE".into())]
    );
}
