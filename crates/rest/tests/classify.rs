//! `:classify` and `:regress` against a TF1-style SavedModel with those signatures (written
//! by real TensorFlow at test time), compared with TensorFlow's own results.

use std::sync::Arc;

mod common;

use common::post_json;
use serde_json::{Value, json};
use soma_rest::{RestOptions, router};
use soma_runtime::ModelHub;
use soma_runtime::hub::ModelConfig;
use soma_serving::{ManagerOptions, ModelManager};
use soma_testkit::{repo_root, run_python};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_and_regress_match_tensorflow() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("cls");
    let script = repo_root().join("crates/rest/tests/support/classify_model.py");
    let stdout = run_python(&script, &[model.as_os_str()]);
    let expected: Value = serde_json::from_slice(&stdout).unwrap();

    let addr = serve(
        "cls",
        &model,
        &tmp.path().join("cache"),
        RestOptions::default(),
    )
    .await;

    let post = |path: &'static str, body: Value| post_json(&addr, path, body);
    let examples = json!([{"x": [1.0, 2.0]}, {"x": [3.0, -1.0], "w": [2.0]}]);
    for (case, body) in [
        ("plain", json!({"examples": examples})),
        (
            "context",
            json!({"context": {"w": 3.0}, "examples": examples}),
        ),
    ] {
        let want = &expected[case];
        let response = post("/v1/models/cls:classify", body.clone()).await;
        assert_eq!(response.status, 200, "{}", response.text());
        let got: Value = serde_json::from_slice(&response.body).unwrap();
        for (row, results) in got["results"].as_array().unwrap().iter().enumerate() {
            for (k, pair) in results.as_array().unwrap().iter().enumerate() {
                assert_eq!(pair[0], want["classes"][row][k], "{case}");
                let score = pair[1].as_f64().unwrap() as f32;
                assert_eq!(
                    score,
                    want["scores"][row][k].as_f64().unwrap() as f32,
                    "{case}"
                );
            }
        }
        let mut regress = body;
        regress["signature_name"] = json!("regress");
        let response = post("/v1/models/cls:regress", regress).await;
        assert_eq!(response.status, 200, "{}", response.text());
        let got: Value = serde_json::from_slice(&response.body).unwrap();
        let values: Vec<f32> = got["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let want: Vec<f32> = want["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(values, want, "{case}");
    }
    // The response layout is TF Serving's.
    let response = post(
        "/v1/models/cls:regress",
        json!({"signature_name": "regress", "examples": [{"x": [1.0, 2.0]}]}),
    )
    .await;
    assert_eq!(response.text(), "{\n    \"results\": [3.0]\n}");
    // Predict-style calls on a classify signature, and bad examples.
    let response = post(
        "/v1/models/cls:classify",
        json!({"examples": [{"x": [1.0, 2.0]}], "context": [1]}),
    )
    .await;
    assert_eq!(
        (response.status, response.text()),
        (
            400,
            "{ \"error\": \"Example must be JSON object but got JSON array\" }".to_string()
        )
    );
    let response = post("/v1/models/cls:classify", json!({"instances": [1]})).await;
    assert_eq!(
        response.text(),
        "{ \"error\": \"When method is classify, key 'examples' is expected and was not found\" }"
    );
    let response = post(
        "/v1/models/cls:regress",
        json!({"examples": [{"x": [1.0, 2.0]}]}),
    )
    .await;
    assert_eq!(
        response.text(),
        "{ \"error\": \"Expected one output Tensor.\" }"
    );
}

/// Serves the model in `dir` as `name` over REST with `options`; the server's address.
async fn serve(
    name: &str,
    dir: &std::path::Path,
    cache: &std::path::Path,
    options: RestOptions,
) -> String {
    let manager = ModelManager::new(ManagerOptions::new(cache.to_path_buf()));
    let config = ModelConfig {
        name: name.into(),
        base_path: dir.display().to_string(),
        policy: Default::default(),
        labels: Default::default(),
    };
    manager.reload(vec![config]).await.unwrap();
    let app = router(Arc::new(manager) as Arc<dyn ModelHub>, options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// [`serve`]s the model in `dir` as `tf2`, with the method name check `on` or off.
async fn serve_tf2(dir: &std::path::Path, cache: &std::path::Path, on: bool) -> String {
    let options = RestOptions {
        check_signature_method_names: on,
        ..RestOptions::default()
    };
    serve("tf2", dir, cache, options).await
}

/// A native TensorFlow 2 classifier (its signatures' method_name is
/// `tensorflow/serving/predict`): `:classify` and `:regress` answer as TensorFlow does with
/// the method name check off, TF Serving's default, and are refused when it is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tf2_classifier_is_served_unless_method_names_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tf2");
    let expected = soma_testkit::tf2_classifier(&model);
    let examples: Vec<Value> = expected["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| json!({"x": x}))
        .collect();
    let off = serve_tf2(&model, &tmp.path().join("cache"), false).await;
    let response = post_json(
        &off,
        "/v1/models/tf2:classify",
        json!({"examples": examples}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let got: Value = serde_json::from_slice(&response.body).unwrap();
    for (row, results) in got["results"].as_array().unwrap().iter().enumerate() {
        for (k, pair) in results.as_array().unwrap().iter().enumerate() {
            assert_eq!(pair[0], expected["classes"][row][k]);
            let (score, want) = (
                pair[1].as_f64().unwrap(),
                expected["scores"][row][k].as_f64().unwrap(),
            );
            assert!(
                (score - want).abs() < 1e-6,
                "{score} vs TensorFlow's {want}"
            );
        }
    }
    let body = json!({"signature_name": "regress_x", "examples": examples});
    let response = post_json(&off, "/v1/models/tf2:regress", body.clone()).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let got: Value = serde_json::from_slice(&response.body).unwrap();
    for (value, want) in got["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["regress"].as_array().unwrap())
    {
        assert!(
            (value.as_f64().unwrap() - want.as_f64().unwrap()).abs() < 1e-6,
            "{got}"
        );
    }

    let on = serve_tf2(&model, &tmp.path().join("cache"), true).await;
    let response = post_json(
        &on,
        "/v1/models/tf2:classify",
        json!({"examples": examples}),
    )
    .await;
    assert_eq!(
        (response.status, response.text()),
        (
            400,
            "{ \"error\": \"Expected classification signature method_name to be \
             tensorflow/serving/classify. Was: tensorflow/serving/predict\" }"
                .to_string()
        )
    );
    let response = post_json(&on, "/v1/models/tf2:regress", body).await;
    assert_eq!(response.status, 400, "{}", response.text());
}
