//! The handler host with the real CPython of the project's venv. Python starts once per
//! process, so all cases live in this one test binary; they run in parallel on its threads,
//! like several APIs in one soma process. The slow `import tensorflow` runs in a child
//! process (see `a_clean_environment_finds_the_venv`) so it cannot hold up the timing test.

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
         if payload == 'nested':\n            return {'a': [1, {'b': {1, 2}}]}\n        if payload == 'big':\n            return [2 ** 70]\n        \
         if payload == 'cycle':\n            x = []\n            x.append(x)\n            return x\n        \
         if payload == 'keys':\n            return ({1: 'one', None: 0, 'u': 2 ** 64 - 1, 'i': -2 ** 63}, 1.5)\n        \
         if payload == 'exit':\n            import sys\n            sys.exit(3)\n        \
         if payload == 'recurse':\n            x = []\n            for _ in range(100000):\n                x = [x]\n            return repr(x)\n        \
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
    let call = |payload: &'static str| host.handle(Bytes::from(payload), "text/plain", "r");
    assert_eq!(
        call("nested").await.unwrap_err().message,
        r#"handler returned dict, which is not JSON-serialisable: set at ["a"][1]["b"] is not a JSON value"#
    );
    let err = call("big").await.unwrap_err();
    assert!(
        err.message
            .ends_with("the integer 1180591620717411303424 at [0] does not fit in 64 bits"),
        "{err}"
    );
    let err = call("cycle").await.unwrap_err();
    assert!(err.message.contains("nested more than 128 levels"), "{err}");
    assert_eq!(
        call("keys").await.unwrap(),
        json!([{"1": "one", "null": 0, "u": u64::MAX, "i": i64::MIN}, 1.5])
    );
    let err = call("exit").await.unwrap_err();
    assert_eq!(err.message, "SystemExit: 3", "sys.exit must not end soma");
    let err = call("recurse").await.unwrap_err();
    assert!(err.message.starts_with("RecursionError"), "{err}");
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

/// Cortex's documented handler logger imports, and writes Cortex's JSON lines with the
/// `extra` fields flattened.
#[tokio::test]
async fn cortex_logger_is_importable() {
    python();
    let dir = project(
        "import json, logging\nfrom cortex_internal.lib.log import logger\nclass Handler:\n    def __init__(self, config):\n        logger.info('init', extra={'k': 1})\n    \
         def handle_async(self):\n        record = logger.makeRecord('cortex', logging.INFO, 'f', 1, 'done %s', ('now',), None, extra={'k': 1})\n        \
         return json.loads(logger.handlers[0].format(record))\n",
    );
    let host = HandlerHost::start(spec("cortex-log", dir.path(), None))
        .await
        .unwrap();
    let out = host.handle(Bytes::new(), "text/plain", "r").await.unwrap();
    assert_eq!(out["message"], "done now", "{out}");
    assert_eq!(out["levelname"], "INFO", "{out}");
    assert_eq!(out["k"], 1, "{out}");
}

#[tokio::test]
async fn metrics_client_records_and_rejects_reserved_names() {
    python();
    let dir = project(
        "class Handler:\n    def __init__(self, config, metrics_client):\n        self.m = metrics_client\n    \
         def handle_async(self, payload):\n        if payload != 'ok':\n            name, tags = payload.split(' ')\n            self.m.gauge(name, 1, tags={tags: 'v'})\n        \
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
    for (call, expected) in [
        ("soma_x k", "reserved prefix \"soma_\""),
        ("cortex_x k", "reserved prefix \"cortex_\""),
        ("istio_x k", "reserved prefix \"istio_\""),
        (
            ":tensorflow:serving:request_count k",
            "reserved prefix \":tensorflow:\"",
        ),
        (
            "size_count k",
            "would clash with the \"size_count\" series of histogram \"size\"",
        ),
        ("bad-name k", "bad-name"),
        ("1x k", "1x"),
        ("good bad-key", "bad-key"),
    ] {
        let err = host
            .handle(Bytes::from(call), "text/plain", "r")
            .await
            .unwrap_err();
        assert!(err.message.starts_with("ValueError: "), "{call}: {err}");
        assert!(err.message.contains(expected), "{call}: {err}");
    }
    host.handle(Bytes::from("good_name: key"), "text/plain", "r")
        .await
        .unwrap();
    assert!(registry.render().contains("good_name:{key=\"v\"} 1\n"));
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
         try:\n            self.c.predict({'x': np.ones((2, 2), bool)}, model_version=1)\n            out['bools'] = None\n        except ValueError as e:\n            out['bools'] = str(e)\n        \
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
    // numpy would cast booleans to floats; the REST API refuses them, and so does this.
    assert_eq!(
        out["bools"], "input 'x': cannot convert the array to float32: it holds booleans",
        "{out}"
    );
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
        "import time\nclass Handler:\n    def __init__(self, config):\n        pass\n    def handle_async(self):\n        time.sleep(0.2)\n        return {}\n",
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
        started.elapsed() < Duration::from_millis(700),
        "took {:?}",
        started.elapsed()
    );
}

/// Echoes a string input `s` (shape (-1)) as output `s`, with `n` = each string's length
/// plus 2^62 (int64 values must reach Python exactly).
#[derive(Debug)]
struct Echo(BTreeMap<String, SignatureDef>);

impl Echo {
    fn new() -> Echo {
        let info = |n: &str, dtype| TensorInfo {
            tensor_name: format!("{n}:0"),
            dtype,
            shape: Some(vec![-1]),
        };
        let mut sig = SignatureDef::default();
        sig.inputs.insert("s".into(), info("s", DType::String));
        sig.outputs.insert("n".into(), info("n", DType::Int64));
        sig.outputs.insert("s".into(), info("s", DType::String));
        Echo([("serving_default".to_string(), sig)].into_iter().collect())
    }
}

impl ModelRunner for Echo {
    fn signatures(&self) -> &BTreeMap<String, SignatureDef> {
        &self.0
    }
    fn run(&self, _: &str, inputs: &[&Tensor]) -> Result<Vec<Tensor>, RunError> {
        let strings = inputs[0].strings().unwrap_or_default().to_vec();
        let n: Vec<i64> = strings.iter().map(|s| (1 << 62) + s.len() as i64).collect();
        let shape = inputs[0].shape().to_vec();
        Ok(vec![
            Tensor::from_slice(shape.clone(), &n).unwrap(),
            Tensor::from_strings(shape, strings).unwrap(),
        ])
    }
}

#[tokio::test]
async fn tensorflow_client_strings_bytes_int64_and_latest() {
    python();
    let models = Arc::new(ModelSet::new("tf-strings", true));
    models.insert(Arc::new(
        Servable::new(SINGLE_MODEL_NAME, 3, Box::new(Echo::new()), None).unwrap(),
    ));
    let dir = project(
        "import numpy as np\nclass Handler:\n    def __init__(self, tensorflow_client, config):\n        self.c = tensorflow_client\n    \
         def handle_async(self):\n        out = self.c.predict({'s': ['héllo', b'\\xff\\x00']}, model_version='latest')\n        \
         types = [type(v).__name__ for v in out['s']]\n        \
         arr = self.c.predict({'s': np.array([b'ab', b'c'])}, model_version=3)\n        \
         bad = []\n        for v in ['v2', True, 2 ** 70]:\n            try:\n                self.c.predict({'s': ['x']}, model_version=v)\n                bad.append(None)\n            except ValueError as e:\n                bad.append(str(e))\n        \
         return {'n': out['n'], 'exact': out['n'][0] == 2 ** 62 + 6, 'types': types, 'bytes': list(out['s'][1]), 'numpy_n': arr['n'], 'bad_version': bad}\n",
    );
    let host = HandlerHost::start(spec("tf-strings", dir.path(), Some(models)))
        .await
        .unwrap();
    let out = host.handle(Bytes::new(), "text/plain", "r").await.unwrap();
    let base = 1_i64 << 62;
    assert_eq!(out["n"], json!([base + 6, base + 2]));
    assert_eq!(out["exact"], true);
    assert_eq!(out["types"], json!(["str", "bytes"]));
    assert_eq!(out["bytes"], json!([255, 0]));
    assert_eq!(out["numpy_n"], json!([base + 2, base + 1]));
    // 'v2', and True (a Python int, but not a version); 2**70 is past i64.
    let bad = |i: usize| {
        out["bad_version"][i]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let junk = "model_version must be either a parse-able numeric value or 'latest'";
    assert!(bad(0).contains(junk), "{out}");
    assert!(bad(1).contains(junk), "{out}");
    assert!(bad(2).contains("versions are 64-bit integers"), "{out}");
}

#[tokio::test]
async fn each_host_loads_its_own_module() {
    python();
    let first = project(
        "class Handler:\n    def __init__(self, config):\n        pass\n    def handle_async(self):\n        return 1\n",
    );
    let second = project(
        "class Handler:\n    def __init__(self, config):\n        pass\n    def handle_async(self):\n        return 2\n",
    );
    let a = HandlerHost::start(spec("same-api", first.path(), None))
        .await
        .unwrap();
    let b = HandlerHost::start(spec("same-api", second.path(), None))
        .await
        .unwrap();
    assert_eq!(a.handle(Bytes::new(), "text/plain", "r").await.unwrap(), 1);
    assert_eq!(b.handle(Bytes::new(), "text/plain", "r").await.unwrap(), 2);
}

/// Runs `imports_numpy_and_tensorflow` in a child process started with an empty
/// environment (no VIRTUAL_ENV, no pyenv shims on PATH, no PYTHONHOME): the venv must be
/// found by walking up from the working folder, and libpython through the binary's rpath.
#[test]
fn a_clean_environment_finds_the_venv() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "imports_numpy_and_tensorflow"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/root")
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
#[ignore = "slow (imports TensorFlow); run by a_clean_environment_finds_the_venv"]
async fn imports_numpy_and_tensorflow() {
    assert!(std::env::var_os("VIRTUAL_ENV").is_none());
    let (host, _dir) = start(
        "imports",
        "import sys\nimport numpy as np\nimport tensorflow as tf\nclass Handler:\n    def __init__(self, config):\n        pass\n    \
         def handle_async(self):\n        return {'prefix': sys.prefix, 'tf': tf.__version__, 'sum': float(tf.reduce_sum(tf.constant(np.arange(4.0))))}\n",
    )
    .await;
    // Two calls: eager TensorFlow ops take the GIL through pybind11, which once crashed the
    // process on the call after the one that imported TensorFlow.
    host.handle(Bytes::new(), "text/plain", "r").await.unwrap();
    let out = host.handle(Bytes::new(), "text/plain", "r").await.unwrap();
    assert!(out["prefix"].as_str().unwrap().ends_with(".venv"), "{out}");
    assert!(out["tf"].as_str().unwrap().starts_with("2."), "{out}");
    assert_eq!(out["sum"], 6.0);
}
