//! The handler host with the real CPython of the project's venv. Python starts once per
//! process, so all cases live in this one test binary (each API name is distinct because
//! handler modules are cached by API).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use soma_core::runner::{ModelRunner, RunError};
use soma_core::{DType, ErrorKind, SignatureDef, Tensor, TensorInfo};
use soma_metrics::Registry;
use soma_python::{HandlerHost, HandlerSpec, PyHostError, init_python};
use soma_runtime::{ModelSet, SINGLE_MODEL_NAME, Servable};

fn python() {
    init_python(None).expect("the project's .venv (run scripts/setup.sh)");
}

fn spec(api: &str, dir: &Path, models: Option<Arc<ModelSet>>) -> HandlerSpec {
    HandlerSpec {
        api: api.to_string(),
        project_dir: dir.to_path_buf(),
        handler_path: "handler.py".into(),
        python_path: None,
        env: BTreeMap::new(),
        config: json!({"greeting": "hi"}).as_object().cloned().unwrap(),
        models,
        metrics: Registry::new(),
        workers: 1,
    }
}

fn project(handler: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("handler.py"), handler).unwrap();
    dir
}

async fn start(api: &str, handler: &str) -> (HandlerHost, tempfile::TempDir) {
    python();
    let dir = project(handler);
    let host = HandlerHost::start(spec(api, dir.path(), None))
        .await
        .expect("start");
    (host, dir)
}

async fn start_error(api: &str, handler: &str) -> String {
    python();
    let dir = project(handler);
    match HandlerHost::start(spec(api, dir.path(), None)).await {
        Err(PyHostError::Init { message, .. }) => message,
        other => panic!("expected an init error, got {other:?}"),
    }
}

#[tokio::test]
async fn arguments_by_name_in_any_order_and_payload_types() {
    let (host, _dir) = start(
        "args-order",
        "class Handler:\n    def __init__(self, metrics_client, config):\n        self.g = config['greeting']\n    \
         def handle_async(self, request_id, payload):\n        return {'g': self.g, 'id': request_id, 'type': type(payload).__name__, 'payload': payload if not isinstance(payload, bytes) else list(payload)}\n",
    )
    .await;
    let out = host
        .handle(
            Bytes::from_static(br#"{"a": [1, 2]}"#),
            "application/json",
            "r1",
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"g": "hi", "id": "r1", "type": "dict", "payload": {"a": [1, 2]}})
    );
    let out = host
        .handle(Bytes::from("héllo"), "text/plain; charset=utf-8", "r2")
        .await
        .unwrap();
    assert_eq!(out["type"], "str");
    assert_eq!(out["payload"], "héllo");
    let out = host
        .handle(Bytes::from_static(&[0, 255]), "image/png", "r3")
        .await
        .unwrap();
    assert_eq!(out["type"], "bytes");
    assert_eq!(out["payload"], json!([0, 255]));
    let err = host
        .handle(Bytes::from_static(b"{nope"), "application/json", "r4")
        .await
        .unwrap_err();
    assert!(
        err.message
            .contains("with content-type application/json, could not be decoded to JSON"),
        "{err}"
    );
}

#[tokio::test]
async fn optional_arguments_may_be_omitted_and_async_def_works() {
    let (host, _dir) = start(
        "async-def",
        "import asyncio\nclass Handler:\n    def __init__(self, config):\n        pass\n    \
         async def handle_async(self):\n        await asyncio.sleep(0.01)\n        return [1, 'two', None, True, 2.5]\n",
    )
    .await;
    let out = host
        .handle(Bytes::new(), "application/octet-stream", "r")
        .await
        .unwrap();
    assert_eq!(out, json!([1, "two", null, true, 2.5]));
}

#[tokio::test]
async fn errors_and_junk_results_fail_the_call_not_the_host() {
    let (host, _dir) = start(
        "raising",
        "class Handler:\n    def __init__(self, config):\n        pass\n    def handle_async(self, payload):\n        \
         if payload == 'junk':\n            return object()\n        if payload == 'nan':\n            return {'x': float('nan')}\n        \
         raise ValueError('bad ' + payload)\n",
    )
    .await;
    let err = host
        .handle(Bytes::from("x"), "text/plain", "r")
        .await
        .unwrap_err();
    assert_eq!(err.message, "ValueError: bad x");
    assert!(
        err.traceback.as_deref().unwrap().contains("Traceback"),
        "{err:?}"
    );
    let err = host
        .handle(Bytes::from("junk"), "text/plain", "r")
        .await
        .unwrap_err();
    assert!(
        err.message
            .starts_with("handler returned object, which is not JSON-serialisable"),
        "{err}"
    );
    let err = host
        .handle(Bytes::from("nan"), "text/plain", "r")
        .await
        .unwrap_err();
    assert!(err.message.contains("not JSON-serialisable"), "{err}");
    let err = host
        .handle(Bytes::from("y"), "text/plain", "r")
        .await
        .unwrap_err();
    assert_eq!(
        err.message, "ValueError: bad y",
        "the host keeps serving after errors"
    );
}

#[tokio::test]
async fn start_up_errors_use_cortex_messages() {
    let message = start_error("init-raises", "class Handler:\n    def __init__(self, config):\n        raise RuntimeError('no database')\n    def handle_async(self):\n        pass\n").await;
    assert_eq!(message, "RuntimeError: no database");
    let message = start_error("bad-arg", "class Handler:\n    def __init__(self, config, model):\n        pass\n    def handle_async(self):\n        pass\n").await;
    assert_eq!(
        message,
        r#"class Handler: invalid signature for method "__init__": "model" is not a supported argument"#
    );
    let message = start_error("missing-arg", "class Handler:\n    def __init__(self):\n        pass\n    def handle_async(self):\n        pass\n").await;
    assert_eq!(
        message,
        r#"class Handler: invalid signature for method "__init__": "config" is a required argument, but was not provided"#
    );
    let message = start_error("no-class", "class Predictor:\n    pass\n").await;
    assert_eq!(message, "Handler class is not defined in handler.py");
    let message = start_error(
        "twice",
        "class Handler:\n    pass\nclass Handler:\n    pass\n",
    )
    .await;
    assert!(
        message.starts_with("multiple definitions for Handler class found"),
        "{message}"
    );
    let message = start_error("bad-handle", "class Handler:\n    def __init__(self, config):\n        pass\n    def handle_async(self, body):\n        pass\n").await;
    assert!(
        message.contains(r#""body" is not a supported argument"#),
        "{message}"
    );
    let message = start_error("syntax", "class Handler(:\n").await;
    assert!(message.starts_with("SyntaxError"), "{message}");
}

#[tokio::test]
async fn env_python_path_and_site_packages() {
    python();
    let dir = project(
        "import os\nimport numpy\nfrom helper import VALUE\nclass Handler:\n    def __init__(self, config):\n        pass\n    \
         def handle_async(self):\n        return {'env': os.environ['SOMA_TEST_ENV'], 'helper': VALUE, 'numpy': numpy.__version__}\n",
    );
    std::fs::create_dir_all(dir.path().join("lib")).unwrap();
    std::fs::write(dir.path().join("lib/helper.py"), "VALUE = 42\n").unwrap();
    let mut spec = spec("env-path", dir.path(), None);
    spec.python_path = Some("lib".into());
    spec.env.insert("SOMA_TEST_ENV".into(), "yes".into());
    let host = HandlerHost::start(spec).await.unwrap();
    let out = host.handle(Bytes::new(), "text/plain", "r").await.unwrap();
    assert_eq!(out["env"], "yes");
    assert_eq!(out["helper"], 42);
    assert!(out["numpy"].as_str().unwrap().starts_with('2'), "{out}");
}

#[tokio::test]
async fn metrics_client_records_and_rejects_reserved_names() {
    python();
    let dir = project(
        "class Handler:\n    def __init__(self, config, metrics_client):\n        self.m = metrics_client\n    \
         def handle_async(self, payload):\n        if payload == 'reserved':\n            self.m.gauge('soma_x', 1)\n        \
         self.m.increment('calls', tags={'kind': 'a'})\n        self.m.gauge('temperature', 21.5)\n        self.m.histogram('size', 3)\n        return {}\n",
    );
    let registry = Registry::new();
    let mut spec = spec("metrics", dir.path(), None);
    spec.metrics = registry.clone();
    let host = HandlerHost::start(spec).await.unwrap();
    host.handle(Bytes::from("ok"), "text/plain", "r")
        .await
        .unwrap();
    let text = registry.render();
    assert!(text.contains("calls{kind=\"a\"} 1\n"), "{text}");
    assert!(text.contains("temperature 21.5\n"), "{text}");
    assert!(text.contains("size_count 1\n"), "{text}");
    let err = host
        .handle(Bytes::from("reserved"), "text/plain", "r")
        .await
        .unwrap_err();
    assert!(err.message.contains("reserved prefix"), "{err}");
}

/// Doubles a float32 input `x` of shape (-1, 2) into `y`.
#[derive(Debug)]
struct Doubler(BTreeMap<String, SignatureDef>);

impl Doubler {
    fn new() -> Doubler {
        let info = |n: &str| TensorInfo {
            tensor_name: format!("{n}:0"),
            dtype: DType::Float,
            shape: Some(vec![-1, 2]),
        };
        let mut sig = SignatureDef::default();
        sig.inputs.insert("x".into(), info("x"));
        sig.outputs.insert("y".into(), info("y"));
        Doubler([("serving_default".to_string(), sig)].into_iter().collect())
    }
}

impl ModelRunner for Doubler {
    fn signatures(&self) -> &BTreeMap<String, SignatureDef> {
        &self.0
    }
    fn run(&self, _: &str, inputs: &[&Tensor]) -> Result<Vec<Tensor>, RunError> {
        let x = inputs[0]
            .to_vec::<f32>()
            .map_err(|e| RunError::new(ErrorKind::Internal, e.to_string()))?;
        let y: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
        Ok(vec![
            Tensor::from_slice(inputs[0].shape().to_vec(), &y).unwrap(),
        ])
    }
}

#[tokio::test]
async fn tensorflow_client_predicts_from_lists_numpy_and_versions() {
    python();
    let models = Arc::new(ModelSet::new("tf", true));
    for version in [1, 2] {
        models.insert(Arc::new(
            Servable::new(SINGLE_MODEL_NAME, version, Box::new(Doubler::new()), None).unwrap(),
        ));
    }
    let dir = project(
        "import numpy as np\nclass Handler:\n    def __init__(self, tensorflow_client, config):\n        self.c = tensorflow_client\n    \
         def handle_async(self, payload):\n        out = {}\n        out['list'] = self.c.predict({'x': [[1, 2.5]]})['y']\n        \
         out['numpy'] = self.c.predict({'x': np.array([[1.0, 2.0], [3.0, 4.0]])}, model_version=1)['y']\n        \
         out['str_version'] = self.c.predict({'x': [[1, 1]]}, model_version='2')['y']\n        \
         try:\n            self.c.predict({'x': [1, 2]})\n        except ValueError as e:\n            out['shape_error'] = str(e)\n        \
         try:\n            self.c.predict({'x': [[1, 2]]}, model_version=7)\n        except ValueError as e:\n            out['version_error'] = str(e)\n        \
         try:\n            self.c.predict({'z': [[1, 2]]})\n        except ValueError as e:\n            out['name_error'] = str(e)\n        return out\n",
    );
    let host = HandlerHost::start(spec("tf-client", dir.path(), Some(models)))
        .await
        .unwrap();
    let out = host.handle(Bytes::new(), "text/plain", "r").await.unwrap();
    assert_eq!(out["list"], json!([[2.0, 5.0]]));
    assert_eq!(out["numpy"], json!([[2.0, 4.0], [6.0, 8.0]]));
    assert_eq!(out["str_version"], json!([[2.0, 2.0]]));
    assert!(
        out["shape_error"]
            .as_str()
            .unwrap()
            .contains("expected shape (-1, 2)"),
        "{out}"
    );
    assert!(
        out["version_error"]
            .as_str()
            .unwrap()
            .contains("available versions: [1, 2]"),
        "{out}"
    );
    assert!(
        out["name_error"]
            .as_str()
            .unwrap()
            .contains("unknown input 'z'"),
        "{out}"
    );
}

#[tokio::test]
async fn workers_run_handlers_in_parallel() {
    python();
    let dir = project(
        "import time\nclass Handler:\n    def __init__(self, config):\n        pass\n    def handle_async(self):\n        time.sleep(0.3)\n        return {}\n",
    );
    let mut spec = spec("parallel", dir.path(), None);
    spec.workers = 4;
    let host = Arc::new(HandlerHost::start(spec).await.unwrap());
    let started = Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let host = Arc::clone(&host);
            tokio::spawn(async move {
                host.handle(Bytes::new(), "text/plain", &i.to_string())
                    .await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(
            call.await.unwrap().unwrap(),
            Value::Object(Default::default())
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "took {:?}",
        started.elapsed()
    );
}
