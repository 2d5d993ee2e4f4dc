//! `soma-bench floor` on the real TensorFlow runtime: it loads a fixture, calls it from
//! several threads and reports throughput with zero errors; bad arguments are refused.

mod common;

use common::bench;
use soma_testkit::fixtures;

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
    // The highest version of the base path, 3 threads, no failed call.
    let iris = fixtures().join("iris/10");
    common::measured_rate(&out, &format!("floor {} c=3", iris.display()));
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
