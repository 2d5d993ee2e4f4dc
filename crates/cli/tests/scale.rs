//! `soma gateway` + `soma worker` processes on a real Redis (`redis-server`, append-only on)
//! and S3 (`moto_server`): crash of a worker, outage of Redis, start-up checks.

mod common;

use std::collections::HashSet;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Soma, project};
use soma_testkit::{MotoServer, RedisServer};

const BUCKET: &str = "soma-scale";
const ENDPOINT: &str = "/echo";

const ECHO_YAML: &str =
    "- name: echo\n  kind: AsyncAPI\n  handler:\n    type: python\n    path: handler.py\n";

const ECHO_PY: &str = r#"
import time


class Handler:
    def __init__(self, metrics_client, config):
        pass

    def handle_async(self, request_id, payload):
        time.sleep(payload.get("sleep", 0))
        return {"n": payload["n"], "request_id": request_id}
"#;

struct Cluster {
    redis: RedisServer,
    _moto: MotoServer,
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
}

impl Cluster {
    fn start() -> Cluster {
        let redis = RedisServer::start();
        let moto = MotoServer::start();
        moto.create_bucket(BUCKET);
        let dir = project(&[("cortex.yaml", ECHO_YAML), ("handler.py", ECHO_PY)]);
        let mut env = moto.env();
        env.extend([
            ("SOMA_BACKEND", "redis".to_string()),
            ("SOMA_REDIS_URL", redis.url()),
            ("SOMA_S3_URL", format!("s3://{BUCKET}/deploy")),
        ]);
        Cluster {
            redis,
            _moto: moto,
            dir,
            env,
        }
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("cortex.yaml")
    }

    /// A gateway pointed at a Python environment and TensorFlow library that do not exist: it
    /// must work anyway, since it never initialises Python or loads TensorFlow.
    fn spawn_gateway(&self) -> Soma {
        let log = self.dir.path().join("gateway");
        let mut env = self.env.clone();
        env.push(("SOMA_PYTHON_ENV", "/nonexistent/venv".into()));
        env.push((
            "SOMA_TENSORFLOW_LIB",
            "/nonexistent/libtensorflow_cc.so.2".into(),
        ));
        Soma::start("gateway", &self.config(), &log, &[], &env)
    }

    fn spawn(&self, command: &str, name: &str, extra: &[&str]) -> Soma {
        let log = self.dir.path().join(name);
        Soma::start(command, &self.config(), &log, extra, &self.env)
    }

    /// `HGET <prefix>:counts:echo <status>` through redis-cli.
    fn count(&self, status: &str) -> u64 {
        let out = std::process::Command::new("redis-cli")
            .args([
                "-p",
                &self.redis.port().to_string(),
                "HGET",
                "soma:counts:echo",
                status,
            ])
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

fn submit_n(gateway: &Soma, from: usize, to: usize) -> Vec<(usize, String)> {
    let body = |n: usize| format!(r#"{{"n": {n}, "sleep": 0.002}}"#);
    std::thread::scope(|scope| {
        let threads = 4;
        let chunks: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (from..to)
                        .filter(|n| n % threads == t)
                        .map(|n| {
                            (
                                n,
                                gateway.submit(ENDPOINT, "application/json", body(n).as_bytes()),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks.into_iter().flat_map(|c| c.join().unwrap()).collect()
    })
}

fn maps_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default()
}

fn wait_all_completed(gateway: &Soma, ids: &[(usize, String)], timeout: Duration) {
    for (n, id) in ids {
        let done = gateway.wait_final(ENDPOINT, id, timeout);
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["result"]["n"], *n, "each id has its own result");
    }
}

/// 1 gateway + 2 workers, 2,000 workloads, one worker SIGKILLed mid-run: every workload
/// ends `completed`, and exactly once (Redis' status counts are changed only by the one
/// transition that wins).
#[test]
fn two_thousand_workloads_survive_a_worker_sigkill() {
    let cluster = Cluster::start();
    let worker_args = ["--workers", "2", "--lease", "2s"];
    let gateway = cluster.spawn_gateway();
    let first = cluster.spawn("worker", "worker-1", &worker_args);
    let second = cluster.spawn("worker", "worker-2", &worker_args);
    first.wait_ready(Duration::from_secs(60));
    second.wait_ready(Duration::from_secs(60));
    assert_eq!(gateway.get_json("/readyz").0, 200);
    // The worker-only setting it was given is named as ignored.
    let log = std::fs::read_to_string(&gateway.log).unwrap();
    assert!(
        log.contains("soma gateway ignores this setting") && log.contains("--python-env"),
        "{log}"
    );

    let mut ids = submit_n(&gateway, 0, 1000);
    // Let the first worker hold some leases, then kill it without warning.
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.log_text().matches("processing complete").count() < 50 {
        assert!(
            Instant::now() < deadline,
            "worker 1 did not start\n{}",
            first.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed_log = first.log.clone();
    first.kill();
    ids.extend(submit_n(&gateway, 1000, 2000));
    assert_eq!(ids.len(), 2000);
    assert_eq!(
        ids.iter().map(|(_, id)| id).collect::<HashSet<_>>().len(),
        2000
    );

    wait_all_completed(&gateway, &ids, Duration::from_secs(300));
    assert_eq!(
        cluster.count("completed"),
        2000,
        "one completion per workload"
    );
    for status in ["in_queue", "in_progress", "failed", "cancelled"] {
        assert_eq!(cluster.count(status), 0, "{status}");
    }
    let killed = std::fs::read_to_string(killed_log).unwrap();
    let done_by_killed = killed.matches("processing complete").count();
    assert!((50..2000).contains(&done_by_killed), "{done_by_killed}");

    // The gateway runs with no usable Python environment or TensorFlow library (see
    // `spawn_gateway`) and never maps TensorFlow.
    let gateway_maps = maps_of(gateway.pid());
    assert!(!gateway_maps.is_empty());
    assert!(
        !gateway_maps.contains("tensorflow"),
        "gateway loaded TensorFlow"
    );
}

/// Redis stopped for a few seconds during a run: the gateway answers 503 while it is down,
/// both processes recover by themselves, and every accepted workload completes.
#[test]
fn a_redis_outage_gives_503_and_loses_no_accepted_workload() {
    let mut cluster = Cluster::start();
    let gateway = cluster.spawn_gateway();
    let worker = cluster.spawn("worker", "worker", &["--workers", "2", "--lease", "3s"]);
    worker.wait_ready(Duration::from_secs(60));

    let accepted = Mutex::new(Vec::new());
    let unavailable = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let body = format!(r#"{{"n": {n}}}"#);
                match gateway.request(
                    "POST",
                    ENDPOINT,
                    &[("Content-Type", "application/json")],
                    body.as_bytes(),
                ) {
                    Ok(r) if r.status == 200 => {
                        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                        accepted
                            .lock()
                            .unwrap()
                            .push((n, v["id"].as_str().unwrap().to_string()));
                    }
                    Ok(r) if r.status == 503 => {
                        unavailable.fetch_add(1, Ordering::SeqCst);
                        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                        assert!(v["error"].as_str().unwrap().contains("unavailable"), "{v}");
                    }
                    Ok(r) => panic!("unexpected answer {}: {}", r.status, r.text()),
                    Err(e) => panic!("gateway down: {e}"),
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        std::thread::sleep(Duration::from_secs(2));
        cluster.redis.stop();
        std::thread::sleep(Duration::from_secs(1));
        // The gateway says it is not ready, and why, while its storage is down.
        let (code, body) = gateway.get_json("/readyz");
        assert_eq!(code, 503, "{body}");
        assert!(body["storage"]["error"].is_string(), "{body}");
        std::thread::sleep(Duration::from_secs(3));
        cluster.redis.restart();
        std::thread::sleep(Duration::from_secs(4));
        stop.store(true, Ordering::SeqCst);
    });
    let accepted = accepted.into_inner().unwrap();
    let failed_over = unavailable.load(Ordering::SeqCst);
    assert!(failed_over > 0, "no 503 while Redis was down");
    let before = accepted.len();
    assert!(before > 100, "too few accepted: {before}");
    // Submissions resumed after the restart (the last accepted came after the 503s).
    wait_all_completed(&gateway, &accepted, Duration::from_secs(120));
    // A 503 may come after Redis applied part of a submission (the reply was lost): such a
    // workload can still run, so a few more completions than accepted ids are legitimate;
    // fewer would mean an accepted one was lost.
    let completed = cluster.count("completed") as usize;
    assert!(
        completed >= accepted.len() && completed <= accepted.len() + failed_over,
        "completed {completed}, accepted {}, 503s {failed_over}",
        accepted.len()
    );
    assert!(
        worker.get_json("/healthz").0 == 200 && gateway.get_json("/healthz").0 == 200,
        "both processes stay up"
    );
}

/// Bad start-ups fail fast with the reason: embedded backend for a split role, no Redis,
/// missing bucket.
#[test]
fn start_up_checks_fail_fast_with_a_clear_message() {
    let cluster = Cluster::start();
    let run = |command: &str, env: &[(&str, String)]| {
        let started = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_soma"))
            .arg(command)
            .arg(cluster.config())
            .args(["--listen", "127.0.0.1:0"])
            .envs(cluster.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run soma");
        assert!(started.elapsed() < Duration::from_secs(20), "not fast");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run("gateway", &[("SOMA_BACKEND", "embedded".into())]);
    assert!(err.contains("only one process can open"), "{err}");
    let port = soma_testkit::free_port();
    let err = run(
        "worker",
        &[(
            "SOMA_REDIS_URL",
            format!("redis://:secret@127.0.0.1:{port}"),
        )],
    );
    assert!(
        err.contains("Redis") && err.contains(&port.to_string()),
        "{err}"
    );
    assert!(!err.contains("secret"), "password leaked: {err}");
    let err = run(
        "gateway",
        &[("SOMA_S3_URL", "s3://no-such-bucket/x".into())],
    );
    assert!(err.contains("no-such-bucket"), "{err}");
    let err = run(
        "serve",
        &[
            ("SOMA_REDIS_URL", String::new()),
            ("SOMA_BACKEND", "redis".into()),
        ],
    );
    assert!(err.contains("SOMA_REDIS_URL"), "{err}");
}

/// `soma serve --backend redis` runs both halves in one process on the shared backend, and a
/// separate gateway on the same backend feeds it.
#[test]
fn serve_on_redis_runs_both_halves_and_takes_work_from_other_gateways() {
    let cluster = Cluster::start();
    let serve = cluster.spawn("serve", "serve", &["--workers", "2"]);
    serve.wait_ready(Duration::from_secs(60));
    let gateway = cluster.spawn_gateway();
    let mut ids = submit_n(&serve, 0, 20);
    ids.extend(submit_n(&gateway, 20, 40));
    wait_all_completed(&serve, &ids, Duration::from_secs(60));
    wait_all_completed(&gateway, &ids, Duration::from_secs(60));
    assert_eq!(cluster.count("completed"), 40);
}
