//! `soma serve` also serves its APIs' models on the TF Serving REST paths, and a version
//! folder uploaded while it runs goes live for REST and the Python handlers alike.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Soma, project, version_states, wait_until as wait};
use serde_json::{Value, json};
use soma_testkit::{
    assert_outputs_match, copy_dir, expected_cases, fixtures, repo_root, run_python,
};

const LATEST_PY: &str = r#"
class Handler:
    def __init__(self, tensorflow_client, config):
        self.client = tensorflow_client

    def handle_async(self, payload):
        return self.client.predict(payload)
"#;

fn states(soma: &Soma, model: &str) -> Vec<(String, String)> {
    version_states(&soma.get_json(&format!("/v1/models/{model}")).1)
}

#[test]
fn rest_and_handlers_share_the_live_versions() {
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repo_dir.path().join("iris");
    copy_dir(&fixtures().join("iris/1"), &repo.join("1"));
    let yaml = format!(
        "- name: live\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: latest.py\n    models:\n      path: {}\n\
         - name: named\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: latest.py\n    models:\n      paths:\n        - name: two\n          path: {}\n          signature_key: triple\n",
        repo.display(),
        fixtures().join("two_signatures").display(),
    );
    let dir = project(&[("cortex.yaml", &yaml), ("latest.py", LATEST_PY)]);
    let soma = Soma::serve(
        &dir.path().join("cortex.yaml"),
        &dir.path().join("data"),
        &["--model-poll-interval", "200ms"],
    );
    soma.wait_ready(Duration::from_secs(120));

    let iris = expected_cases(&fixtures().join("iris"));
    let case = |version: i64| {
        iris.iter()
            .find(|c| c.version == version && c.signature == "serving_default")
            .unwrap()
    };
    let rest_predict = |model: &str, body: Value| {
        let r = soma
            .request(
                "POST",
                &format!("/v1/models/{model}:predict"),
                &[],
                body.to_string().as_bytes(),
            )
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice::<Value>(&r.body).unwrap()["outputs"].clone()
    };
    let handler_predict = |inputs: &serde_json::Map<String, Value>| {
        let id = soma.submit(
            "/live",
            "application/json",
            Value::Object(inputs.clone()).to_string().as_bytes(),
        );
        let done = soma.wait_final("/live", &id, Duration::from_secs(30));
        assert_eq!(done["status"], "completed", "{done}");
        done["result"].as_object().unwrap().clone()
    };

    assert_eq!(states(&soma, "live"), [("1".into(), "AVAILABLE".into())]);
    let out = rest_predict("live", json!({"inputs": case(1).inputs}));
    assert_outputs_match(
        &serde_json::Map::from_iter([("output_0".to_string(), out)]),
        &case(1).outputs,
        "REST v1",
    );
    assert_outputs_match(
        &handler_predict(&case(1).inputs),
        &case(1).outputs,
        "handler v1",
    );
    // Named models are `<api>.<model>`.
    let two = rest_predict(
        "named.two",
        json!({"signature_name": "triple", "inputs": [[1.0, -2.0]]}),
    );
    assert_eq!(two, json!([[3.0, -6.0]]));

    // Upload version 2: both front ends move to it.
    copy_dir(&fixtures().join("iris/2"), &repo_dir.path().join("staging"));
    std::fs::rename(repo_dir.path().join("staging"), repo.join("2")).unwrap();
    wait("version 2 over REST", || {
        states(&soma, "live")
            == [
                ("2".into(), "AVAILABLE".into()),
                ("1".into(), "AVAILABLE".into()),
            ]
    });
    assert_outputs_match(
        &handler_predict(&case(2).inputs),
        &case(2).outputs,
        "handler v2",
    );
    // Remove version 1: unloaded.
    std::fs::remove_dir_all(repo.join("1")).unwrap();
    wait("version 1 unloaded", || {
        states(&soma, "live") == [("2".into(), "AVAILABLE".into()), ("1".into(), "END".into())]
    });
    let (code, _) = soma.get_json("/v2/health/ready");
    assert_eq!(code, 200);

    // A version whose recorded warm-up request (TF Serving's warm-up file) fails never
    // goes live.
    let records = repo_dir.path().join("records");
    let script = repo_root().join("crates/grpc/tests/support/warmup_records.py");
    run_python(&script, &[records.as_os_str()]);
    let staging = repo_dir.path().join("staging");
    copy_dir(&fixtures().join("iris/9"), &staging);
    std::fs::create_dir_all(staging.join("assets.extra")).unwrap();
    std::fs::copy(
        records.join("iris_bad_input"),
        staging.join("assets.extra/tf_serving_warmup_requests"),
    )
    .unwrap();
    std::fs::rename(&staging, repo.join("3")).unwrap();
    wait("version 3 to fail its warm-up", || {
        states(&soma, "live").contains(&("3".into(), "END".into()))
    });
    let (_, status) = soma.get_json("/v1/models/live/versions/3");
    let message = status["model_version_status"][0]["status"]["error_message"].to_string();
    assert!(
        message.contains("tf_serving_warmup_requests: record 2 failed"),
        "{message}"
    );
    assert_outputs_match(
        &handler_predict(&case(2).inputs),
        &case(2).outputs,
        "handler v2 after the failed v3",
    );
}

/// Refused when the config is validated, so `soma validate` catches it before a deploy.
#[test]
fn an_endpoint_under_the_rest_paths_is_refused() {
    let yaml = "- name: bad\n  kind: AsyncAPI\n  handler:\n    type: python\n    path: h.py\n  networking:\n    endpoint: /v1/models/x\n";
    let dir = project(&[
        ("cortex.yaml", yaml),
        ("h.py", "class Handler:\n    pass\n"),
    ]);
    for command in [&["serve", "--listen", "127.0.0.1:0"][..], &["validate"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_soma"))
            .arg(command[0])
            .arg(dir.path().join("cortex.yaml"))
            .args(&command[1..])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{command:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "bad (AsyncAPI): networking: endpoint: /v1/models/x lies under the TF Serving \
                 REST paths"
            ),
            "{command:?}: {stderr}"
        );
    }
}

/// `--grpc-listen`: TF Serving's official Python client predicts on an API's model; a request
/// over `--grpc-max-message-bytes` is RESOURCE_EXHAUSTED; reloading the model list is refused
/// (it comes from cortex.yaml); the calls are counted on `/metrics`.
#[test]
fn serve_speaks_grpc_with_the_official_client_and_refuses_reloads() {
    let yaml = format!(
        "- name: iris\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: latest.py\n    models:\n      path: {}\n",
        fixtures().join("iris").display()
    );
    let dir = project(&[("cortex.yaml", &yaml), ("latest.py", LATEST_PY)]);
    let grpc = format!("127.0.0.1:{}", soma_testkit::free_port());
    let soma = Soma::serve(
        &dir.path().join("cortex.yaml"),
        &dir.path().join("data"),
        &[
            "--grpc-listen",
            &grpc,
            "--grpc-max-message-bytes",
            "4096",
            "--grpc-keepalive-interval",
            "30s",
            "--grpc-max-connection-age",
            "1h",
            "--grpc-max-connection-age-grace",
            "10m",
        ],
    );
    soma.wait_ready(Duration::from_secs(120));
    let script = r#"
import json, sys, grpc, numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, model_management_pb2, model_service_pb2_grpc, prediction_service_pb2_grpc
channel = grpc.insecure_channel(sys.argv[1])
request = predict_pb2.PredictRequest()
request.model_spec.name = "iris"
request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)))
response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
out = {"version": response.model_spec.version.value, "name": response.model_spec.name}
metadata = get_model_metadata_pb2.GetModelMetadataRequest()
metadata.model_spec.name = "iris"
metadata.metadata_field.append("signature_def")
answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(metadata, timeout=30)
out["metadata_name"] = answer.model_spec.name
big = predict_pb2.PredictRequest()
big.model_spec.name = "iris"
big.inputs["x"].CopyFrom(tf.make_tensor_proto(np.zeros([500, 4], np.float32)))
try:
    prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(big, timeout=30)
    out["big"] = "OK"
except grpc.RpcError as e:
    out["big"] = e.code().name
reload = model_management_pb2.ReloadConfigRequest()
entry = reload.config.model_config_list.config.add()
entry.name = "other"
entry.base_path = "/models/other"
try:
    model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(reload, timeout=30)
    out["reload"] = "OK"
except grpc.RpcError as e:
    out["reload"] = e.code().name
    out["message"] = e.details()
print(json.dumps(out))
"#;
    let out: Value =
        serde_json::from_slice(&soma_testkit::run_python_code(script, &[&grpc])).unwrap();
    assert_eq!(out["version"], 10);
    // The model's public name (the API's), not soma's internal one for a single model.
    assert_eq!(
        (&out["name"], &out["metadata_name"]),
        (&"iris".into(), &"iris".into())
    );
    assert_eq!(out["big"], "RESOURCE_EXHAUSTED", "{out}");
    assert_eq!(out["reload"], "UNIMPLEMENTED");
    assert!(
        out["message"].as_str().unwrap().contains("cortex.yaml"),
        "{out}"
    );
    let metrics = soma.request("GET", "/metrics", &[], b"").unwrap().text();
    assert!(
        metrics.contains(
            r#":tensorflow:serving:request_count{API="Predict",entrypoint="GRPC",model_name="iris",status="OK"} 1"#
        ),
        "{metrics}"
    );
}

/// `--grpc-tls-cert`, `--grpc-tls-key` and `--grpc-tls-client-ca`: the official client with a
/// certificate from the CA predicts over TLS, without one it is refused; a key that does not
/// belong to the certificate stops start-up naming the flag.
#[test]
fn serve_speaks_grpc_over_mutual_tls() {
    let pki = soma_testkit::TestPki::generate();
    let yaml = format!(
        "- name: iris\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: latest.py\n    models:\n      path: {}\n",
        fixtures().join("iris").display()
    );
    let dir = project(&[("cortex.yaml", &yaml), ("latest.py", LATEST_PY)]);
    let files = [
        ("ca.pem", &pki.ca_cert),
        ("server.pem", &pki.server_cert),
        ("server.key", &pki.server_key),
        ("client.pem", &pki.client_cert),
        ("client.key", &pki.client_key),
        ("other.key", &pki.other_key),
    ];
    let path = |name: &str| pki.write(name, files.iter().find(|f| f.0 == name).unwrap().1);
    let (ca, cert, key) = (path("ca.pem"), path("server.pem"), path("server.key"));
    let grpc = format!("127.0.0.1:{}", soma_testkit::free_port());
    let flags = |key: &Path| {
        vec![
            "--grpc-listen".to_string(),
            grpc.clone(),
            format!("--grpc-tls-cert={}", cert.display()),
            format!("--grpc-tls-key={}", key.display()),
            format!("--grpc-tls-client-ca={}", ca.display()),
        ]
    };

    // A key that does not match: start-up stops before anything listens.
    let other = path("other.key");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_soma"))
        .arg("serve")
        .arg(dir.path().join("cortex.yaml"))
        .args(flags(&other))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "--grpc-tls-cert {}: the certificate and key were refused",
            cert.display()
        )),
        "{stderr}"
    );

    let flags = flags(&key);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let soma = Soma::serve(
        &dir.path().join("cortex.yaml"),
        &dir.path().join("data"),
        &flags,
    );
    soma.wait_ready(Duration::from_secs(120));
    let script = r#"
import json, sys, grpc, numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
target, ca, cert, key = sys.argv[1:5]
read = lambda p: open(p, "rb").read()
request = predict_pb2.PredictRequest()
request.model_spec.name = "iris"
request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)))
def predict(credentials):
    channel = grpc.secure_channel(target, credentials)
    try:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        return response.model_spec.version.value
    except grpc.RpcError as e:
        return e.code().name
print(json.dumps({
    "with_cert": predict(grpc.ssl_channel_credentials(read(ca), read(key), read(cert))),
    "without": predict(grpc.ssl_channel_credentials(read(ca))),
}))
"#;
    let client_cert = path("client.pem");
    let client_key = path("client.key");
    let target = grpc.replace("127.0.0.1", "localhost");
    let args = [
        target.as_ref(),
        ca.as_os_str(),
        client_cert.as_os_str(),
        client_key.as_os_str(),
    ];
    let out: Value = serde_json::from_slice(&soma_testkit::run_python_code(script, &args)).unwrap();
    assert_eq!(out, json!({"with_cert": 10, "without": "UNAVAILABLE"}));
}

#[test]
fn a_broken_version_at_start_up_leaves_the_others_serving() {
    let repo_dir = tempfile::tempdir().unwrap();
    let (good, broken) = (repo_dir.path().join("good"), repo_dir.path().join("broken"));
    // An old version that does not load next to a good latest one; and a model whose only
    // version does not load.
    copy_dir(&fixtures().join("iris/1"), &good.join("1"));
    copy_dir(&fixtures().join("iris/1"), &good.join("2"));
    std::fs::write(good.join("1/saved_model.pb"), b"not a SavedModel").unwrap();
    copy_dir(&fixtures().join("iris/1"), &broken.join("1"));
    std::fs::write(broken.join("1/saved_model.pb"), b"not a SavedModel").unwrap();
    let api = |name: &str, path: &Path| {
        format!(
            "- name: {name}\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: latest.py\n    models:\n      path: {}\n",
            path.display()
        )
    };
    let yaml = api("good", &good) + &api("broken", &broken);
    let dir = project(&[("cortex.yaml", &yaml), ("latest.py", LATEST_PY)]);
    let soma = Soma::serve(
        &dir.path().join("cortex.yaml"),
        &dir.path().join("data"),
        &["--model-poll-interval", "200ms"],
    );
    let body = br#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#;
    let predict = |model: &str| {
        let path = format!("/v1/models/{model}:predict");
        soma.request("POST", &path, &[], body).unwrap()
    };
    let readiness = || soma.get_json("/readyz").1;
    wait("the good API ready", || {
        readiness()["apis"]["good"]["state"] == "ready"
    });
    let states = states(&soma, "good");
    assert_eq!(states[0], ("2".into(), "AVAILABLE".into()), "{states:?}");
    assert_eq!(states[1], ("1".into(), "END".into()), "{states:?}");
    assert_eq!(predict("good").status, 200);
    let id = soma.submit(
        "/good",
        "application/json",
        b"{\"x\": [[5.1, 3.5, 1.4, 0.2]]}",
    );
    let done = soma.wait_final("/good", &id, Duration::from_secs(30));
    assert_eq!(done["status"], "completed", "{done}");

    // The API whose model has no version that loads is not ready and says why; its
    // workloads wait. Fixing the file brings it up without a restart.
    wait("the broken API to say why", || {
        readiness()["apis"]["broken"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("waiting for a version of broken that loads"))
    });
    let id = soma.submit(
        "/broken",
        "application/json",
        b"{\"x\": [[5.1, 3.5, 1.4, 0.2]]}",
    );
    std::fs::copy(
        fixtures().join("iris/1/saved_model.pb"),
        broken.join("1/saved_model.pb"),
    )
    .unwrap();
    wait("the broken API ready once fixed", || {
        readiness()["apis"]["broken"]["state"] == "ready"
    });
    let done = soma.wait_final("/broken", &id, Duration::from_secs(30));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(predict("broken").status, 200);
}

#[test]
fn a_model_folder_added_to_models_dir_is_served() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path().join("zoo");
    copy_dir(&fixtures().join("iris/1"), &dir.join("first/1"));
    let yaml = format!(
        "- name: zoo\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: named.py\n    models:\n      dir: {}\n",
        dir.display()
    );
    let named = "class Handler:\n    def __init__(self, tensorflow_client, config):\n        self.client = tensorflow_client\n\n    \
                 def handle_async(self, payload):\n        return self.client.predict({'x': payload['x']}, model_name=payload['model'])\n";
    let project_dir = project(&[("cortex.yaml", &yaml), ("named.py", named)]);
    let soma = Soma::serve(
        &project_dir.path().join("cortex.yaml"),
        &project_dir.path().join("data"),
        &["--model-poll-interval", "200ms"],
    );
    soma.wait_ready(Duration::from_secs(120));
    // Copied under another name, then renamed into place, as a deployment would.
    copy_dir(&fixtures().join("iris/1"), &repo.path().join("staging/1"));
    std::fs::rename(repo.path().join("staging"), dir.join("second")).unwrap();
    wait("the new model to serve", || {
        states(&soma, "zoo.second") == [("1".to_string(), "AVAILABLE".to_string())]
    });
    let payload = br#"{"model": "second", "x": [[5.1, 3.5, 1.4, 0.2]]}"#;
    let id = soma.submit("/zoo", "application/json", payload);
    let done = soma.wait_final("/zoo", &id, Duration::from_secs(30));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(states(&soma, "zoo.first")[0].1, "AVAILABLE");
}

#[test]
fn a_broken_model_folder_at_start_up_is_left_out_until_it_is_whole() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path().join("zoo");
    copy_dir(&fixtures().join("iris/1"), &dir.join("good/1"));
    // A model folder being uploaded: its version has no variables yet.
    std::fs::create_dir_all(dir.join("half/1")).unwrap();
    std::fs::copy(
        fixtures().join("iris/1/saved_model.pb"),
        dir.join("half/1/saved_model.pb"),
    )
    .unwrap();
    let yaml = format!(
        "- name: zoo\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: latest.py\n    models:\n      dir: {}\n",
        dir.display()
    );
    let project_dir = project(&[("cortex.yaml", &yaml), ("latest.py", LATEST_PY)]);
    let soma = Soma::serve(
        &project_dir.path().join("cortex.yaml"),
        &project_dir.path().join("data"),
        &["--model-poll-interval", "200ms"],
    );
    // The valid model serves at once (as Cortex's runtime skipped failing `dir` models);
    // a restart does not take the API down for one broken folder.
    soma.wait_ready(Duration::from_secs(120));
    assert_eq!(states(&soma, "zoo.good")[0].1, "AVAILABLE");
    assert_eq!(soma.get_json("/v1/models/zoo.half").0, 404);
    // The upload completes: the folder is served too.
    copy_dir(
        &fixtures().join("iris/1/variables"),
        &dir.join("half/1/variables"),
    );
    wait("the completed model to serve", || {
        soma.get_json("/v1/models/zoo.half").0 == 200
            && states(&soma, "zoo.half")[0].1 == "AVAILABLE"
    });
}

/// A `models.path` folder missing at start-up (a deployment that uploads the model after
/// starting soma) holds the API back, saying why, until the folder and a version appear.
#[test]
fn a_models_path_folder_that_appears_later_brings_the_api_up() {
    let repo = tempfile::tempdir().unwrap();
    let folder = repo.path().join("iris");
    let yaml = format!(
        "- name: late\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: latest.py\n    models:\n      path: {}\n",
        folder.display()
    );
    let project_dir = project(&[("cortex.yaml", &yaml), ("latest.py", LATEST_PY)]);
    let soma = Soma::serve(
        &project_dir.path().join("cortex.yaml"),
        &project_dir.path().join("data"),
        &["--model-poll-interval", "200ms"],
    );
    let readiness = || soma.get_json("/readyz").1;
    wait("the API to say why it waits", || {
        readiness()["apis"]["late"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not exist") && e.contains("waiting for a version"))
    });
    copy_dir(&fixtures().join("iris/1"), &repo.path().join("staging/1"));
    std::fs::rename(repo.path().join("staging"), &folder).unwrap();
    wait("the API ready", || {
        readiness()["apis"]["late"]["state"] == "ready"
    });
    assert_eq!(states(&soma, "late")[0].1, "AVAILABLE");
}
