//! The models' own metrics on the REST port's `/metrics`, as TF Serving keeps them for REST
//! requests: `runtime_latency` of `:predict`, `:classify` and `:regress` runs under the API
//! its predictor, classifier and regressor record (`Predict`, not REST's `predict`), no
//! example counts (TF Serving counts a MultiInference's only), and each version's load.
//! Real TensorFlow runs the iris fixture and a TF1-style classifier written at test time.

use std::sync::Arc;

mod common;

use common::post_json;
use serde_json::json;
use soma_metrics::{LOAD_ATTEMPT_COUNT, LOAD_LATENCY, Registry};
use soma_rest::{RestOptions, router};
use soma_runtime::ModelHub;
use soma_runtime::hub::ModelConfig;
use soma_serving::{ManagerOptions, ModelManager};
use soma_testkit::{fixtures, http, repo_root, run_python};

fn config(name: &str, base_path: &std::path::Path) -> ModelConfig {
    ModelConfig {
        name: name.into(),
        base_path: base_path.display().to_string(),
        policy: Default::default(),
        labels: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_runs_are_timed_under_tf_servings_api_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let cls = tmp.path().join("cls");
    let script = repo_root().join("crates/rest/tests/support/classify_model.py");
    run_python(&script, &[cls.as_os_str()]);
    // One registry for the models' metrics and the front end's, as `soma tfserving` has.
    let metrics = Registry::new();
    let manager = ModelManager::new(ManagerOptions {
        metrics: Some(metrics.clone()),
        ..ManagerOptions::new(tmp.path().join("cache"))
    });
    let iris = fixtures().join("iris");
    manager
        .reload(vec![config("iris", &iris), config("cls", &cls)])
        .await
        .unwrap();
    let options = RestOptions {
        metrics: metrics.clone(),
        ..RestOptions::default()
    };
    let app = router(Arc::new(manager) as Arc<dyn ModelHub>, options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let post = |path: &'static str, body: serde_json::Value| post_json(&addr, path, body);
    // The first on the blocking pool, the others in place once iris is known to be quick.
    for _ in 0..3 {
        let response = post(
            "/v1/models/iris:predict",
            json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
    // Refused before it runs: not timed.
    let refused = post("/v1/models/iris:predict", json!({"instances": [["x"]]})).await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    let examples = json!([{"x": [1.0, 2.0]}, {"x": [3.0, -1.0]}]);
    let classified = post("/v1/models/cls:classify", json!({"examples": examples})).await;
    assert_eq!(classified.status, 200, "{}", classified.text());
    let regressed = post(
        "/v1/models/cls:regress",
        json!({"signature_name": "regress", "examples": examples}),
    )
    .await;
    assert_eq!(regressed.status, 200, "{}", regressed.text());

    let page = http(&addr, "GET", "/metrics", &[], b"").unwrap().text();
    for line in [
        r#":tensorflow:serving:runtime_latency_count{API="Predict",model_name="iris",runtime="TF1"} 3"#,
        r#":tensorflow:serving:runtime_latency_count{API="Classify",model_name="cls",runtime="TF1"} 1"#,
        r#":tensorflow:serving:runtime_latency_count{API="Regress",model_name="cls",runtime="TF1"} 1"#,
        // The front end's own labels are REST's.
        r#":tensorflow:serving:request_latency_count{API="predict",entrypoint="REST",model_name="iris"} 3"#,
    ] {
        assert!(page.contains(line), "{line} not in\n{page}");
    }
    assert!(!page.contains("request_example_count"), "{page}");
    // The latest version of each model was loaded once, under its folder's path.
    let iris_10 = iris.join("10").display().to_string();
    let cls_1 = cls.join("1").display().to_string();
    for path in [&iris_10, &cls_1] {
        let loads = metrics.value(
            LOAD_ATTEMPT_COUNT,
            &[("model_path", path), ("status", "success")],
        );
        assert_eq!(loads, Some(1.0), "{path}: {page}");
        let micros = metrics.value(LOAD_LATENCY, &[("model_path", path)]);
        assert!(micros.is_some_and(|us| us > 0.0), "{path}: {page}");
    }
}
