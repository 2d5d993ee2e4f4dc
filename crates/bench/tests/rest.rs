//! `soma-bench rest` against the real FastAPI + uvicorn + TensorFlow peer of
//! `scripts/bench_fastapi.py` (which this also tests): it keeps its connections busy with zero
//! errors, and a model the server does not have is reported, not measured.

mod common;

use common::bench;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use soma_testkit::{fixtures, free_port, http, repo_root, venv_bin};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fastapi(port: u16) -> Server {
    let server = Command::new(venv_bin("python"))
        .arg(repo_root().join("scripts/bench_fastapi.py"))
        .args(["--port", &port.to_string()])
        .arg(format!("iris={}", fixtures().join("iris").display()))
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .spawn()
        .expect("FastAPI peer starts");
    let server = Server(server);
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while http(&addr, "GET", "/docs", &[], b"").is_err() {
        assert!(Instant::now() < deadline, "the FastAPI peer never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

#[test]
fn rest_drives_the_fastapi_peer() {
    let port = free_port();
    let _server = fastapi(port);
    let addr = format!("127.0.0.1:{port}");
    let body = concat!(env!("CARGO_MANIFEST_DIR"), "/data/iris.json");

    let out = bench(&[
        "rest",
        &addr,
        "iris",
        body,
        "--connections",
        "2",
        "--seconds",
        "0.5",
        "--warmup",
        "0.2",
    ]);
    common::measured_rate(&out, "rest iris c=2");

    let out = bench(&["rest", &addr, "nope", body, "--seconds", "0.2"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("POST /v1/models/nope:predict: HTTP 404")
            && stderr.contains("Servable not found for request: Latest(nope)"),
        "{stderr}"
    );
}
