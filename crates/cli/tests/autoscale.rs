//! Autoscaling of worker slots inside one `soma serve` process (Cortex's algorithm), through
//! the real binary: `min_replicas: 0` scales to zero when idle and back when work arrives.

mod common;

use std::time::{Duration, Instant};

use common::{Soma, project};

const YAML: &str = "- name: echo
  kind: AsyncAPI
  handler:
    type: python
    path: handler.py
  autoscaling:
    min_replicas: 0
    init_replicas: 1
    max_replicas: 4
    window: 10s
    downscale_stabilization_period: 0s
    upscale_stabilization_period: 0s
";

const PY: &str = r#"
class Handler:
    def __init__(self, metrics_client, config):
        pass

    def handle_async(self, request_id, payload):
        return {"n": payload["n"]}
"#;

fn slots(soma: &Soma) -> Option<f64> {
    let text = soma.request("GET", "/metrics", &[], b"").ok()?.text();
    text.lines()
        .find(|l| l.starts_with("soma_async_worker_slots{api_name=\"echo\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn wait_slots(soma: &Soma, want: impl Fn(f64) -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !slots(soma).is_some_and(&want) {
        assert!(
            Instant::now() < deadline,
            "slots never {what}: {:?}\n{}",
            slots(soma),
            soma.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn min_replicas_zero_scales_to_zero_and_back() {
    let dir = project(&[("cortex.yaml", YAML), ("handler.py", PY)]);
    let soma = Soma::serve(
        &dir.path().join("cortex.yaml"),
        &dir.path().join("data"),
        &["--autoscale-every", "1s"],
    );
    soma.wait_ready(Duration::from_secs(60));
    wait_slots(&soma, |s| s == 0.0, "0 when idle");
    // Nothing claims work at zero slots: a workload waits until the autoscaler reacts.
    std::thread::sleep(Duration::from_secs(1));
    let ids: Vec<String> = (0..20)
        .map(|n| {
            soma.submit(
                "/echo",
                "application/json",
                format!(r#"{{"n": {n}}}"#).as_bytes(),
            )
        })
        .collect();
    for (n, id) in ids.iter().enumerate() {
        let done = soma.wait_final("/echo", id, Duration::from_secs(30));
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["result"]["n"], n);
    }
    assert!(
        soma.log_text().contains("autoscaling worker slots"),
        "{}",
        soma.log_text()
    );
    wait_slots(&soma, |s| s == 0.0, "back to 0 after the work");
    let metrics = soma.request("GET", "/metrics", &[], b"").unwrap().text();
    for gauge in [
        "soma_async_queued{api_name=\"echo\"} 0",
        "soma_async_in_flight{api_name=\"echo\"} 0",
        "soma_async_oldest_queued_age_seconds{api_name=\"echo\"} 0",
    ] {
        assert!(metrics.contains(gauge), "{gauge} missing:\n{metrics}");
    }
}
