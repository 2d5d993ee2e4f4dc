//! `soma serve` end to end: the real binary, the embedded database, CPython handlers.

mod common;

use std::time::Duration;

use common::{Soma, project};
use serde_json::json;
use soma_testkit::{parse_answers, raw_post, send_raw};

const ECHO_YAML: &str = r#"
- name: echo
  kind: AsyncAPI
  handler:
    type: python
    path: handler.py
    python_path: lib
    config:
      greeting: hello
    env:
      ECHO_ENV: from-env
  networking:
    endpoint: /tools/echo
"#;

const ECHO_PY: &str = r#"
import os
import time

from helpers import describe


class Handler:
    def __init__(self, metrics_client, config):
        self.greeting = config["greeting"]
        self.metrics = metrics_client

    async def handle_async(self, request_id, payload):
        if isinstance(payload, dict) and payload.get("sleep"):
            time.sleep(payload["sleep"])
        if payload == "raise":
            raise ValueError("asked to fail")
        if payload == "junk":
            return object()
        if payload == "exit" or isinstance(payload, dict) and payload.get("exit"):
            os._exit(3)  # as a crash in native code would take the process down
        self.metrics.increment("echo_calls", tags={"kind": type(payload).__name__})
        return {
            "kind": describe(payload),
            "payload": payload if not isinstance(payload, bytes) else len(payload),
            "request_id": request_id,
            "greeting": self.greeting,
            "env": os.environ.get("ECHO_ENV"),
        }
"#;

const HELPERS_PY: &str = "def describe(value):\n    return type(value).__name__\n";

fn echo_project() -> tempfile::TempDir {
    project(&[
        ("cortex.yaml", ECHO_YAML),
        ("handler.py", ECHO_PY),
        ("lib/helpers.py", HELPERS_PY),
    ])
}

#[test]
fn python_handler_round_trips_every_payload_type() {
    let dir = echo_project();
    let soma = serve_ready(&dir, &["--workers", "2"]);

    let id = soma.submit(
        "/tools/echo",
        "application/json",
        br#"{"a": [1, 2.5, "x"]}"#,
    );
    let done = soma.wait_final("/tools/echo", &id, Duration::from_secs(30));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["result"],
        json!({"kind": "dict", "payload": {"a": [1, 2.5, "x"]}, "request_id": id, "greeting": "hello", "env": "from-env"})
    );
    assert!(done["timestamp"].as_str().is_some());

    let id = soma.submit(
        "/tools/echo",
        "text/plain; charset=utf-8",
        "héllo".as_bytes(),
    );
    let done = soma.wait_final("/tools/echo", &id, Duration::from_secs(30));
    assert_eq!(done["result"]["kind"], "str");
    assert_eq!(done["result"]["payload"], "héllo");

    let id = soma.submit("/tools/echo", "application/octet-stream", &[0, 1, 2, 255]);
    let done = soma.wait_final("/tools/echo", &id, Duration::from_secs(30));
    assert_eq!(done["result"]["kind"], "bytes");
    assert_eq!(done["result"]["payload"], 4);

    let metrics = soma.request("GET", "/metrics", &[], b"").unwrap().text();
    assert!(metrics.contains("echo_calls{kind=\"dict\"} 1"), "{metrics}");
    assert!(
        metrics.contains("soma_async_workloads_total{api_name=\"echo\",status=\"completed\"} 3"),
        "{metrics}"
    );
}

#[test]
fn failures_are_reported_and_the_process_stays_up() {
    let dir = echo_project();
    let soma = serve_ready(&dir, &[]);

    let id = soma.submit("/tools/echo", "text/plain", b"raise");
    let done = soma.wait_final("/tools/echo", &id, Duration::from_secs(30));
    assert_eq!(done["status"], "failed");
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .contains("ValueError: asked to fail"),
        "{done}"
    );

    let id = soma.submit("/tools/echo", "text/plain", b"junk");
    let done = soma.wait_final("/tools/echo", &id, Duration::from_secs(30));
    assert_eq!(done["status"], "failed");
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .contains("not JSON-serialisable"),
        "{done}"
    );

    let bad_json = soma.submit("/tools/echo", "application/json", b"{not json");
    let done = soma.wait_final("/tools/echo", &bad_json, Duration::from_secs(30));
    assert_eq!(done["status"], "failed");
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .contains("could not be decoded to JSON"),
        "{done}"
    );

    let r = soma.request("POST", "/tools/echo", &[], b"{}").unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/json"));

    let id = soma.submit("/tools/echo", "application/json", b"{}");
    assert_eq!(
        soma.wait_final("/tools/echo", &id, Duration::from_secs(30))["status"],
        "completed"
    );
}

/// Damaged copies of valid requests to the async API (a submission of each payload type, a
/// chunked one, a status poll; seeded as the REST and gRPC servers' tests are) never hang
/// or crash `soma serve`, and it loses nothing it accepted: each gets answers that are not
/// server errors, or a close, and every submission answered with an id reaches a final
/// state.
#[test]
fn damaged_requests_lose_no_accepted_workload() {
    let dir = echo_project();
    let soma = serve_ready(&dir, &["--workers", "2"]);
    let known = soma.submit("/tools/echo", "application/json", b"{}");
    let json = br#"{"a": [1, 2.5, "x"]}"#;
    let valid = [
        raw_post("/tools/echo", "application/json", json),
        raw_post(
            "/tools/echo",
            "text/plain; charset=utf-8",
            "héllo".as_bytes(),
        ),
        raw_post("/tools/echo", "application/octet-stream", &[0, 1, 2, 255]),
        format!("GET /tools/echo/{known} HTTP/1.1\r\nHost: soma\r\n\r\n").into_bytes(),
        format!(
            "POST /tools/echo HTTP/1.1\r\nHost: soma\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            json.len(),
            String::from_utf8_lossy(json)
        )
        .into_bytes(),
    ];
    let seed = 0x5eed_2026_1207;
    let mut mutator = soma_testkit::Mutator::new(seed);
    let mut accepted = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for case in 0..500 {
        let original = mutator.below(valid.len());
        let damaged = mutator.mutate(&valid[original]);
        let context = format!(
            "seed {seed:#x}, case {case}: {:?}",
            String::from_utf8_lossy(&damaged)
        );
        let raw = send_raw(&soma.addr, &damaged, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no answer and no close within 10 s; {context}"));
        for answer in parse_answers(&raw).unwrap_or_else(|e| panic!("{e}; {context}")) {
            assert!(
                answer.status < 500 || answer.status == 505,
                "{answer:?}; {context}"
            );
            *statuses.entry(answer.status).or_default() += 1;
            let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            // A submission's answer is its id alone; a status poll's has the status too.
            if let Some(id) = body["id"].as_str().filter(|_| body.get("status").is_none()) {
                accepted.push(id.to_string());
            }
        }
    }
    eprintln!("statuses: {statuses:?}; accepted: {}", accepted.len());
    assert!(
        !accepted.is_empty() && statuses.contains_key(&400),
        "{statuses:?}"
    );
    for id in &accepted {
        let done = soma.wait_final("/tools/echo", id, Duration::from_secs(60));
        assert!(
            ["completed", "failed"].contains(&done["status"].as_str().unwrap_or("")),
            "{done}"
        );
    }
}

#[test]
fn a_handler_that_cannot_start_leaves_the_api_not_ready() {
    let dir = project(&[
        (
            "cortex.yaml",
            "- name: broken\n  kind: AsyncAPI\n  handler:\n    type: python\n    path: handler.py\n",
        ),
        (
            "handler.py",
            "class Handler:\n    def __init__(self, config):\n        raise RuntimeError('no database')\n\n    def handle_async(self, payload):\n        return payload\n",
        ),
    ]);
    let soma = Soma::serve(
        &dir.path().join("cortex.yaml"),
        &dir.path().join("data"),
        &[],
    );
    let id = soma.submit("/broken", "application/json", b"{}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = soma.get_json("/readyz");
        assert_eq!(status, 503);
        if body["apis"]["broken"]["state"] == "failed" {
            assert!(
                body["apis"]["broken"]["error"]
                    .as_str()
                    .unwrap()
                    .contains("no database"),
                "{body}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, body) = soma.get_json(&format!("/broken/{id}"));
    assert_eq!(
        body["status"], "in_queue",
        "accepted work waits for a working handler"
    );
}

#[test]
fn sigkill_mid_run_loses_nothing() {
    let dir = echo_project();
    let config = dir.path().join("cortex.yaml");
    let data = dir.path().join("data");
    let soma = Soma::serve(&config, &data, &["--workers", "2", "--lease", "2s"]);
    soma.wait_ready(Duration::from_secs(60));
    let ids: Vec<String> = (0..30)
        .map(|i| {
            soma.submit(
                "/tools/echo",
                "application/json",
                format!(r#"{{"sleep": 0.05, "n": {i}}}"#).as_bytes(),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    soma.kill();

    let soma = Soma::serve(&config, &data, &["--workers", "2", "--lease", "2s"]);
    for (i, id) in ids.iter().enumerate() {
        let done = soma.wait_final("/tools/echo", id, Duration::from_secs(60));
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["result"]["payload"]["n"], i);
    }
}

/// A payload that takes the process down on every delivery (`os._exit` in the handler),
/// with workloads prefetched behind it when it first does: after its third delivery it is
/// failed, and they, delivered again, run (without the rule that a redelivered workload runs
/// alone, they were held at each of its crashes and failed with it).
#[test]
fn a_payload_that_kills_the_process_fails_alone() {
    let dir = echo_project();
    let args = ["--workers", "1", "--prefetch", "2", "--lease", "1s"];
    let soma = serve_ready(&dir, &args);
    let json = "application/json";
    // While the first sleeps, the others queue; the crash is claimed next with two behind it.
    soma.submit("/tools/echo", json, br#"{"sleep": 1.0}"#);
    let exit = soma.submit("/tools/echo", json, br#""exit""#);
    let others = [
        soma.submit("/tools/echo", json, br#"{"n": 1}"#),
        soma.submit("/tools/echo", json, br#"{"n": 2}"#),
    ];
    crash_three_times(soma, &dir, &args, &exit, &others);
}

/// The same with a workload running in another worker slot at the first crash.
#[test]
fn a_payload_that_kills_the_process_fails_alone_among_workers() {
    let dir = echo_project();
    let args = ["--workers", "2", "--lease", "1s"];
    let soma = serve_ready(&dir, &args);
    let json = "application/json";
    let other = soma.submit("/tools/echo", json, br#"{"sleep": 2.0}"#);
    // The idle slot claims it at once: it sleeps first, so that the process answers its POST
    // before it goes down.
    let exit = soma.submit("/tools/echo", json, br#"{"sleep": 0.3, "exit": true}"#);
    crash_three_times(soma, &dir, &args, &exit, &[other]);
}

/// `soma serve` of the project in `dir` (data in `dir/data`), once it is ready.
fn serve_ready(dir: &tempfile::TempDir, args: &[&str]) -> Soma {
    let soma = Soma::serve(
        &dir.path().join("cortex.yaml"),
        &dir.path().join("data"),
        args,
    );
    soma.wait_ready(Duration::from_secs(60));
    soma
}

/// Waits for `soma` to be taken down by `exit` three times, restarting it with `args` after
/// each, and checks that `exit` failed and `others` completed.
fn crash_three_times(
    mut soma: Soma,
    dir: &tempfile::TempDir,
    args: &[&str],
    exit: &str,
    others: &[String],
) {
    let (config, data) = (dir.path().join("cortex.yaml"), dir.path().join("data"));
    for crash in 1..=3 {
        assert!(
            soma.wait_exit(Duration::from_secs(60)),
            "crash {crash}: the process outlived the payload"
        );
        // Restarted at once, while the leases of the workloads it held (`--lease 1s`) still
        // run: they come back together when the leases run out, and must still be claimed
        // one at a time. At start-up, before it answers: the payload may take it down again.
        soma = Soma::spawn_serve(&config, &data, args);
    }
    soma.wait_ready(Duration::from_secs(60));
    let failed = soma.wait_final("/tools/echo", exit, Duration::from_secs(60));
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("gave up after 3 deliveries"), "{failed}");
    for id in others {
        let done = soma.wait_final("/tools/echo", id, Duration::from_secs(60));
        assert_eq!(done["status"], "completed", "{done}");
    }
}

#[test]
fn sigterm_finishes_running_work_and_keeps_the_rest() {
    let dir = echo_project();
    let config = dir.path().join("cortex.yaml");
    let data = dir.path().join("data");
    let soma = Soma::serve(&config, &data, &["--workers", "1"]);
    soma.wait_ready(Duration::from_secs(60));
    let running = soma.submit("/tools/echo", "application/json", br#"{"sleep": 1.0}"#);
    std::thread::sleep(Duration::from_millis(300));
    let queued = soma.submit("/tools/echo", "application/json", br#"{"n": 2}"#);
    let log = soma.log.clone();
    assert!(soma.terminate(), "soma should exit cleanly on SIGTERM");
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains(&running) && l.contains("processing complete")),
        "the running workload should finish within the grace period:\n{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.contains(&queued) && l.contains("processing workload")),
        "the queued workload should not start after SIGTERM:\n{text}"
    );

    let soma = Soma::serve(&config, &data, &["--workers", "1"]);
    let done = soma.wait_final("/tools/echo", &queued, Duration::from_secs(60));
    assert_eq!(done["status"], "completed");
}

#[test]
fn the_iris_example_runs_tensorflow_from_its_handler() {
    let config = soma_testkit::repo_root().join("examples/iris/cortex.yaml");
    let data = tempfile::tempdir().unwrap();
    let soma = Soma::serve(&config, &data.path().join("data"), &[]);
    soma.wait_ready(Duration::from_secs(120));
    let sample =
        std::fs::read(soma_testkit::repo_root().join("examples/iris/sample.json")).unwrap();
    let id = soma.submit("/iris", "application/json", &sample);
    let done = soma.wait_final("/iris", &id, Duration::from_secs(30));
    assert_eq!(done["status"], "completed", "{done}");
    let label = done["result"]["label"].as_str().unwrap();
    assert!(
        ["setosa", "versicolor", "virginica"].contains(&label),
        "{done}"
    );
    let probabilities = done["result"]["probabilities"].as_array().unwrap();
    assert_eq!(probabilities.len(), 3);
    let total: f64 = probabilities.iter().map(|p| p.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-5, "{done}");

    let id = soma.submit("/iris", "application/json", br#"{"x": [[1, 2]]}"#);
    let done = soma.wait_final("/iris", &id, Duration::from_secs(30));
    assert_eq!(done["status"], "failed");
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .contains("expected shape (-1, 4)"),
        "{done}"
    );
}

const ZOO_PY: &str = r#"
class Handler:
    def __init__(self, tensorflow_client, config):
        self.client = tensorflow_client

    def handle_async(self, payload):
        return self.client.predict(
            payload["inputs"], model_name=payload["model"], model_version=payload.get("version")
        )
"#;

#[test]
fn several_apis_and_models_chosen_from_the_payload() {
    let fixtures = soma_testkit::fixtures();
    let yaml = format!(
        "{ECHO_YAML}- name: zoo\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: zoo.py\n    models:\n      dir: {}\n\
         - name: named\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: zoo.py\n    models:\n      paths:\n        - name: iris\n          path: {}\n        - name: two\n          path: {}\n          signature_key: triple\n",
        fixtures.join("zoo").display(),
        fixtures.join("iris").display(),
        fixtures.join("two_signatures").display(),
    );
    let dir = project(&[
        ("cortex.yaml", &yaml),
        ("handler.py", ECHO_PY),
        ("lib/helpers.py", HELPERS_PY),
        ("zoo.py", ZOO_PY),
    ]);
    let soma = Soma::serve(
        &dir.path().join("cortex.yaml"),
        &dir.path().join("data"),
        &[],
    );
    soma.wait_ready(Duration::from_secs(120));

    let iris = soma_testkit::expected_cases(&fixtures.join("iris"));
    let multi = soma_testkit::expected_cases(&fixtures.join("multi_io"));
    let triple = soma_testkit::expected_cases(&fixtures.join("two_signatures"));
    let checks = [
        (
            "/zoo",
            "iris",
            Some(1),
            iris.iter()
                .find(|c| c.version == 1 && c.signature == "serving_default")
                .unwrap(),
        ),
        (
            "/zoo",
            "iris",
            None,
            iris.iter()
                .find(|c| c.version == 2 && c.signature == "serving_default")
                .unwrap(),
        ),
        ("/zoo", "multi_io", None, &multi[0]),
        (
            "/named",
            "iris",
            Some(10),
            iris.iter()
                .find(|c| c.version == 10 && c.signature == "serving_default")
                .unwrap(),
        ),
        (
            "/named",
            "two",
            None,
            triple.iter().find(|c| c.signature == "triple").unwrap(),
        ),
    ];
    for (endpoint, model, version, case) in checks {
        let payload = json!({"model": model, "version": version, "inputs": case.inputs});
        let id = soma.submit(endpoint, "application/json", payload.to_string().as_bytes());
        let done = soma.wait_final(endpoint, &id, Duration::from_secs(30));
        assert_eq!(done["status"], "completed", "{done}");
        let outputs = done["result"].as_object().unwrap();
        soma_testkit::assert_outputs_match(
            outputs,
            &case.outputs,
            &format!("{endpoint} {model} {version:?}"),
        );
    }
    let id = soma.submit(
        "/zoo",
        "application/json",
        br#"{"model": "nope", "inputs": {}}"#,
    );
    let done = soma.wait_final("/zoo", &id, Duration::from_secs(30));
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .contains("'nope' wasn't found"),
        "{done}"
    );
    let id = soma.submit("/tools/echo", "application/json", b"{}");
    assert_eq!(
        soma.wait_final("/tools/echo", &id, Duration::from_secs(30))["status"],
        "completed"
    );
}

#[test]
fn a_thousand_workloads_survive_sigkill_and_retention_removes_them_later() {
    let dir = echo_project();
    let config = dir.path().join("cortex.yaml");
    let data = dir.path().join("data");
    let args = ["--workers", "2", "--lease", "2s", "--retention", "15s"];
    let soma = Soma::serve(&config, &data, &args);
    soma.wait_ready(Duration::from_secs(60));
    let ids: Vec<String> = (0..1000)
        .map(|i| {
            soma.submit(
                "/tools/echo",
                "application/json",
                format!(r#"{{"n": {i}}}"#).as_bytes(),
            )
        })
        .collect();
    soma.kill();

    let soma = Soma::serve(&config, &data, &args);
    for (i, id) in ids.iter().enumerate() {
        let done = soma.wait_final("/tools/echo", id, Duration::from_secs(120));
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(
            done["result"]["payload"]["n"], i,
            "each id has its own result"
        );
    }
    // Retention runs at start-up and then every retention period (capped at 10 min).
    drop(soma);
    std::thread::sleep(Duration::from_secs(16));
    let soma = Soma::serve(&config, &data, &args);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = soma.get_json(&format!("/tools/echo/{}", ids[0]));
        if status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expired workloads should be gone"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, _) = soma.get_json(&format!("/tools/echo/{}", ids[999]));
    assert_eq!(status, 404);
}

#[test]
fn a_burst_of_ten_thousand_small_workloads_all_complete() {
    let dir = echo_project();
    let soma = serve_ready(&dir, &["--workers", "2"]);
    let ids: Vec<String> = std::thread::scope(|scope| {
        let chunks: Vec<_> = (0..4)
            .map(|t| {
                let soma = &soma;
                scope.spawn(move || {
                    (0..2500)
                        .map(|i| {
                            soma.submit(
                                "/tools/echo",
                                "text/plain",
                                format!("{}", t * 2500 + i).as_bytes(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(ids.len(), 10_000);
    for id in &ids {
        let done = soma.wait_final("/tools/echo", id, Duration::from_secs(300));
        assert_eq!(done["status"], "completed", "{done}");
    }
    let metrics = soma.request("GET", "/metrics", &[], b"").unwrap().text();
    assert!(
        metrics
            .contains("soma_async_workloads_total{api_name=\"echo\",status=\"completed\"} 10000"),
        "{metrics}"
    );
}
