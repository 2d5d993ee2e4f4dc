//! `soma-bench floor` on the real TensorFlow runtime: it loads a fixture, calls it from
//! several threads and reports throughput with zero errors; bad arguments are refused.

use std::process::Command;

use soma_testkit::fixtures;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_soma-bench"))
        .args(args)
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .expect("soma-bench runs")
}

#[test]
fn floor_measures_the_iris_fixture_from_several_threads() {
    let body = concat!(env!("CARGO_MANIFEST_DIR"), "/data/iris.json");
    let base = fixtures().join("iris");
    let out = bench(&[
        "floor",
        base.to_str().unwrap(),
        "--body",
        body,
        "--threads",
        "3",
        "--seconds",
        "0.3",
        "--warmup",
        "0.1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The highest version of the base path, 3 threads, no failed call.
    let line = stdout.lines().next().unwrap();
    assert!(
        line.starts_with("floor ") && line.contains("iris/10 c=3: "),
        "{line}"
    );
    assert!(
        line.ends_with("errors 0 of ") || line.contains(" errors 0 of "),
        "{line}"
    );
    let rate: f64 = line
        .split(": ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rate > 0.0, "{line}");
}

#[test]
fn a_body_that_does_not_fit_the_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("wide.json");
    std::fs::write(&body, r#"{"instances": [[1.0, 2.0]]}"#).unwrap();
    let model = fixtures().join("iris");
    let out = bench(&[
        "floor",
        model.to_str().unwrap(),
        "--body",
        body.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("input 'x': expected shape (-1, 4) but the value has shape (1, 2)"),
        "{stderr}"
    );
}
