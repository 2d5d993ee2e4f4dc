//! Every fixture model served by `soma_grpc::serve` and called with TF Serving's official
//! Python client (`tensorflow-serving-api`, from the project's venv): Predict in three tensor
//! forms and GetModelMetadata against TensorFlow's outputs and signatures, GetModelStatus,
//! Classify/Regress/MultiInference on a tf.Example model generated for the test, the error
//! cases, HandleReloadConfigRequest against a StaticHub (refused) and a hub that
//! records the configs it receives, gRPC's health service with its official client
//! (`grpcio-health-checking`), and soma's .proto contract field by field against the
//! official descriptors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use soma_core::{ErrorKind, ModelLocation};
use soma_grpc::GrpcOptions;
use soma_metrics::Registry;
use soma_models::{ModelEntry, ModelOptions};
use soma_repository::Validator;
use soma_runtime::hub::{BoxFuture, ModelConfig};
use soma_runtime::{
    ModelHub, ModelSet, RuntimeError, Servable, ServableState, StaticHub, VersionPolicy,
    VersionSelector, VersionStatus,
};
use soma_testkit::{expected_cases, fixtures, venv_bin};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// A fixture served under `name`; `expected` names the fixture whose outputs it must give.
struct Fixture {
    name: &'static str,
    dir: &'static str,
    expected: &'static str,
    signature_key: Option<&'static str>,
}

const FIXTURES: &[Fixture] = &[
    fixture("iris", "iris", "iris"),
    fixture("iris_plain", "iris_plain", "iris_plain"),
    fixture("multi_io", "multi_io", "multi_io"),
    fixture("all_dtypes", "all_dtypes", "all_dtypes"),
    fixture("two_signatures", "two_signatures", "two_signatures"),
    fixture(
        "predict_and_other",
        "predict_and_other",
        "predict_and_other",
    ),
    // Neither serving_default nor predict: soma needs to be told its default signature.
    Fixture {
        signature_key: Some("alpha"),
        ..fixture("ambiguous", "ambiguous", "ambiguous")
    },
    fixture("mlp1024", "mlp1024", "mlp1024"),
    fixture("zoo_iris", "zoo/iris", "iris"),
    fixture("zoo_multi_io", "zoo/multi_io", "multi_io"),
];

const fn fixture(name: &'static str, dir: &'static str, expected: &'static str) -> Fixture {
    Fixture {
        name,
        dir,
        expected,
        signature_key: None,
    }
}

async fn load(set: &ModelSet, name: &str, dir: &Path, key: Option<&str>, options: &ModelOptions) {
    let entry = ModelEntry {
        signature_key: key.map(str::to_string),
        ..ModelEntry::new(name, ModelLocation::Local(dir.to_path_buf()))
    };
    soma_models::load_entry(set, &entry, Validator::TensorFlow, options)
        .await
        .unwrap_or_else(|e| panic!("loading {name} from {}: {e}", dir.display()));
}

/// A hub with version states, labels and a reload that records what it was asked to apply.
#[derive(Debug)]
struct RecordingHub {
    models: Arc<ModelSet>,
    labels: BTreeMap<String, i64>,
    extra: Vec<VersionStatus>,
    reloads: Mutex<Vec<Vec<ModelConfig>>>,
}

impl ModelHub for RecordingHub {
    fn models(&self) -> Vec<String> {
        self.models.list().into_iter().map(|(n, _)| n).collect()
    }

    fn servable(
        &self,
        model: &str,
        version: &VersionSelector,
    ) -> Result<Arc<Servable>, RuntimeError> {
        let spec = match version {
            VersionSelector::Latest => soma_core::VersionSpec::Latest,
            VersionSelector::Number(n) => soma_core::VersionSpec::Number(*n),
            VersionSelector::Label(l) => match self.labels.get(l) {
                Some(n) => soma_core::VersionSpec::Number(*n),
                None => return Err(RuntimeError::NotFound(format!("no label {l}"))),
            },
        };
        self.models.resolve(Some(model), spec)
    }

    fn status(
        &self,
        model: &str,
        version: Option<&VersionSelector>,
    ) -> Result<Vec<VersionStatus>, RuntimeError> {
        // Newest first, as the trait asks: the extra versions are newer than the static ones.
        let mut all: Vec<VersionStatus> = self.extra.iter().rev().cloned().collect();
        all.extend(StaticHub::new(Arc::clone(&self.models)).status(model, None)?);
        match version {
            None => Ok(all),
            Some(selector) => {
                let v = self.servable(model, selector)?.version();
                Ok(all.into_iter().filter(|s| s.version == v).collect())
            }
        }
    }

    fn reload(&self, models: Vec<ModelConfig>) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            if let Some(bad) = models.iter().find(|m| m.name == "broken") {
                return Err(RuntimeError::NotFound(format!(
                    "model {}: {} does not exist",
                    bad.name, bad.base_path
                )));
            }
            self.reloads.lock().unwrap().push(models);
            Ok(())
        })
    }
}

async fn start(
    hub: Arc<dyn ModelHub>,
    options: GrpcOptions,
) -> (u16, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        soma_grpc::serve(hub, listener, options, async {
            stopped.await.ok();
        })
        .await
        .expect("gRPC server");
    });
    (port, stop, server)
}

fn manifest_signatures() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(fixtures().join("MANIFEST.json")).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    manifest["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| {
            Some((
                f["path"].as_str()?.to_string(),
                f.get("signatures")?.clone(),
            ))
        })
        .collect()
}

fn python(script: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(venv_bin("python"));
    command
        .arg(script)
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

fn reload_configs() -> Vec<ModelConfig> {
    vec![
        ModelConfig {
            name: "iris".into(),
            base_path: "/models/iris".into(),
            policy: VersionPolicy::Specific(BTreeSet::from([1, 2])),
            labels: BTreeMap::from([("stable".to_string(), 1)]),
        },
        ModelConfig {
            name: "census".into(),
            base_path: "s3://bucket/census".into(),
            policy: VersionPolicy::All,
            labels: BTreeMap::new(),
        },
        ModelConfig {
            name: "mlp".into(),
            base_path: "/models/mlp".into(),
            policy: VersionPolicy::Latest(2),
            labels: BTreeMap::new(),
        },
    ]
}

fn config_json(c: &ModelConfig) -> Value {
    let policy = match &c.policy {
        VersionPolicy::Latest(n) => json!(n),
        VersionPolicy::All => json!("all"),
        VersionPolicy::Specific(v) => json!(v),
    };
    json!({"name": c.name, "base_path": c.base_path, "policy": policy, "labels": c.labels})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn official_tensorflow_serving_client_against_every_fixture() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tfs_client.py");
    let work = tempfile::tempdir().unwrap();
    let options = ModelOptions {
        tensorflow_lib: None,
        cache_dir: work.path().join("cache"),
        metrics: None,
        warmup: None,
    };

    // A tf.Example classifier/regressor, written by TensorFlow for this test.
    let census = work.path().join("census");
    let made = python(&script)
        .arg("make-classifier")
        .arg(&census)
        .stdout(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let set = Arc::new(ModelSet::new("grpc", false));
    for f in FIXTURES {
        load(
            &set,
            f.name,
            &fixtures().join(f.dir),
            f.signature_key,
            &options,
        )
        .await;
    }
    load(&set, "census", &census, None, &options).await;
    let versions: BTreeMap<String, Vec<i64>> = set.list().into_iter().collect();

    let signatures = manifest_signatures();
    let mut predict_cases = 0;
    let models: Vec<Value> = FIXTURES
        .iter()
        .map(|f| {
            let expected_dir = fixtures().join(f.expected);
            let served = &versions[f.name];
            predict_cases += expected_cases(&expected_dir)
                .iter()
                .filter(|c| served.contains(&c.version))
                .count();
            json!({
                "name": f.name,
                "dir": fixtures().join(f.dir),
                "versions": served,
                "expected": PathBuf::from(format!("{}.expected.json", expected_dir.display())),
                "signatures": signatures.get(f.expected),
            })
        })
        .collect();
    assert!(
        predict_cases > 20,
        "only {predict_cases} expected cases found"
    );

    let hub: Arc<dyn ModelHub> = Arc::new(StaticHub::new(Arc::clone(&set)));
    let metrics = Registry::new();
    // The main server is on serving threads, as `soma tfserving` runs it; the recording
    // server below on the test's runtime.
    let main_options = GrpcOptions {
        max_message_bytes: MAX_MESSAGE_BYTES,
        metrics: metrics.clone(),
        health: Some(soma_grpc::HealthReport::WhileRunning),
        threading: soma_grpc::Threading {
            threads: 2,
            busy_poll: std::time::Duration::ZERO,
            idle_timeout: None,
        },
        ..GrpcOptions::default()
    };
    let (port, stop, server) = start(hub, main_options).await;

    let iris = Arc::new(ModelSet::new("recording", false));
    load(&iris, "iris", &fixtures().join("iris"), None, &options).await;
    let labels = BTreeMap::from([("stable".to_string(), 1), ("canary".to_string(), 2)]);
    let extra = vec![
        VersionStatus {
            version: 11,
            state: ServableState::Loading,
            error: None,
        },
        VersionStatus {
            version: 12,
            state: ServableState::End,
            error: Some((
                ErrorKind::FailedPrecondition,
                "version 12 failed its warm-up".into(),
            )),
        },
    ];
    let recording = Arc::new(RecordingHub {
        models: Arc::clone(&iris),
        labels: labels.clone(),
        extra: extra.clone(),
        reloads: Mutex::new(Vec::new()),
    });
    let (reload_port, stop_reload, reload_server) = start(
        Arc::clone(&recording) as Arc<dyn ModelHub>,
        GrpcOptions::default(),
    )
    .await;
    // Newest first, as TF Serving lists them.
    let mut reload_status = vec![
        json!([12, "END", 9, "version 12 failed its warm-up"]),
        json!([11, "LOADING", 0, ""]),
    ];
    reload_status.extend(
        versions["iris"]
            .iter()
            .rev()
            .map(|v| json!([v, "AVAILABLE", 0, ""])),
    );

    let mut plan = json!({
        "port": port,
        "reload_port": reload_port,
        "max_message_bytes": MAX_MESSAGE_BYTES,
        "models": models,
        "classifier": {
            "name": "census",
            "expected": PathBuf::from(format!("{}.expected.json", census.display())),
        },
        "reload_configs": reload_configs().iter().map(config_json).collect::<Vec<_>>(),
        "reload_status": reload_status,
        "labels": labels,
    });
    let descriptors = work.path().join("descriptors.bin");
    std::fs::write(&descriptors, soma_grpc_proto::FILE_DESCRIPTOR_SET).unwrap();
    plan["descriptors"] = json!(descriptors);
    let plan_path = work.path().join("plan.json");
    std::fs::write(&plan_path, serde_json::to_vec_pretty(&plan).unwrap()).unwrap();

    let run = python(&script)
        .arg("run")
        .arg(&plan_path)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the Python client reported failures:\n{stdout}\n--- stderr ---\n{stderr}"
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    println!("{summary}");
    let counts = &summary["counts"];
    assert_eq!(
        counts["predict cases"],
        json!(predict_cases * 3),
        "{summary}"
    );
    assert_eq!(
        counts["metadata calls"],
        json!(
            versions
                .iter()
                .filter(|(n, _)| *n != "census")
                .map(|(_, v)| v.len())
                .sum::<usize>()
        )
    );
    assert!(counts["error cases"].as_u64().unwrap() >= 25, "{summary}");
    for key in [
        "classify",
        "regress",
        "multi_inference",
        "reload",
        "labels",
        "broadcast",
        "health",
    ] {
        assert!(
            counts[key].as_u64().unwrap_or(0) >= 1,
            "{key} not checked: {summary}"
        );
    }
    assert_eq!(*recording.reloads.lock().unwrap(), vec![reload_configs()]);

    // Every inference call of the official client was counted, by API and status.
    let requests = |api: &str, ok: bool| -> u64 {
        let api = format!("API=\"{api}\",entrypoint=\"GRPC\"");
        metrics
            .render()
            .lines()
            .filter(|l| l.starts_with(":tensorflow:serving:request_count{") && l.contains(&api))
            .filter(|l| l.contains("status=\"OK\"") == ok)
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert!(
        requests("Predict", true) >= counts["predict cases"].as_u64().unwrap(),
        "{}",
        metrics.render()
    );
    assert!(requests("Predict", false) >= 1, "{}", metrics.render());
    for api in ["Classify", "Regress", "MultiInference"] {
        assert!(requests(api, true) >= 1, "{api}: {}", metrics.render());
    }

    stop.send(()).unwrap();
    stop_reload.send(()).unwrap();
    server.await.unwrap();
    reload_server.await.unwrap();
}
