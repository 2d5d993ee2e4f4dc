//! `soma get` and `soma delete` against a running `soma serve`, through the real binary.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Soma, project};

const YAML: &str = "- name: echo\n  kind: AsyncAPI\n  handler:\n    type: python\n    path: handler.py\n  networking:\n    endpoint: /tools/echo\n";

const PY: &str = r#"
import time


class Handler:
    def __init__(self, metrics_client, config):
        pass

    def handle_async(self, request_id, payload):
        time.sleep(payload.get("sleep", 0))
        return {"n": payload["n"]}
"#;

fn soma(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_soma"))
        .args(args)
        .output()
        .expect("run soma")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).to_string()
}

#[test]
fn get_lists_apis_and_workloads_and_delete_cancels_only_queued_work() {
    let dir = project(&[("cortex.yaml", YAML), ("handler.py", PY)]);
    let server = Soma::serve(
        &dir.path().join("cortex.yaml"),
        &dir.path().join("data"),
        &["--workers", "1"],
    );
    server.wait_ready(Duration::from_secs(60));
    let url = format!("http://{}", server.addr);

    let done = server.submit("/tools/echo", "application/json", br#"{"n": 1}"#);
    server.wait_final("/tools/echo", &done, Duration::from_secs(30));
    let running = server.submit(
        "/tools/echo",
        "application/json",
        br#"{"n": 2, "sleep": 3}"#,
    );
    let queued = server.submit("/tools/echo", "application/json", br#"{"n": 3}"#);
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.get_json(&format!("/tools/echo/{running}")).1["status"] != "in_progress" {
        assert!(Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = soma(&["delete", "echo", &queued, "--url", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"cancelled\""),
        "{}",
        text(&out.stdout)
    );
    let out = soma(&["delete", "echo", &running, "--url", &url]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("in_progress"),
        "{}",
        text(&out.stderr)
    );
    let out = soma(&["delete", "nope", &queued, "--url", &url]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no API named \"nope\""),
        "{}",
        text(&out.stderr)
    );

    let out = soma(&["get", "echo", &done, "--url", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(record["status"], "completed");
    assert_eq!(record["result"]["n"], 1);

    let done_running = server.wait_final("/tools/echo", &running, Duration::from_secs(30));
    assert_eq!(
        done_running["status"], "completed",
        "running work is not interrupted"
    );
    let out = soma(&["get", "--url", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("echo "))
        .unwrap_or_else(|| panic!("no echo row:\n{table}"))
        .split_whitespace()
        .collect();
    // API STATE WORKERS QUEUED IN_FLIGHT COMPLETED FAILED CANCELLED P50
    assert_eq!(
        row[..8],
        ["echo", "ready", "1", "0", "0", "2", "0", "1"],
        "{table}"
    );
    assert!(row[8].ends_with('s') && row[8] != "-", "{table}");

    let out = soma(&["get", "--url", "http://127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot connect"),
        "{}",
        text(&out.stderr)
    );
}
