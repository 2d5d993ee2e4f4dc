//! `soma validate` and `soma predict` end to end: the real binary, real TensorFlow, local
//! folders and a real S3-compatible server (moto).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Map, Value};
use soma_testkit::{
    MotoServer, assert_outputs_match, copy_dir, expected_cases, fixtures, repo_root, run_python,
    run_python_code,
};

fn soma(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_soma"));
    command
        .args(args)
        .env("SOMA_LOG", "warn")
        .env("TF_CPP_MIN_LOG_LEVEL", "2");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run soma")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn predict_json(args: &[&str], env: &[(&str, String)]) -> Map<String, Value> {
    let out = soma(args, env);
    assert!(
        out.status.success(),
        "soma {args:?} failed:\n{}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).expect("JSON outputs")
}

fn input_arg(inputs: &Map<String, Value>) -> String {
    Value::Object(inputs.clone()).to_string()
}

#[test]
fn validate_prints_apis_models_versions_and_signatures() {
    let config = repo_root().join("examples/iris/cortex.yaml");
    let out = soma(&["validate", config.to_str().unwrap()], &[]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("iris (AsyncAPI)"), "{text}");
    assert!(
        text.contains("versions: 1, 2, 9, 10 (latest: 10)"),
        "{text}"
    );
    assert!(text.contains("signature 'serving_default'"), "{text}");
    assert!(text.contains("x"), "{text}");
    assert!(text.contains("float32  (-1, 4)"), "{text}");
}

#[test]
fn predict_uses_the_numerically_latest_version_and_matches_python() {
    let config = repo_root().join("examples/iris/cortex.yaml");
    let cases = expected_cases(&fixtures().join("iris"));
    for version in [10, 9] {
        let case = cases
            .iter()
            .find(|c| c.version == version && c.signature == "serving_default")
            .unwrap();
        let input = input_arg(&case.inputs);
        let version_arg = version.to_string();
        let mut args = vec!["predict", config.to_str().unwrap(), "--input", &input];
        if version == 9 {
            args.extend(["--version", &version_arg]);
        }
        let outputs = predict_json(&args, &[]);
        assert_outputs_match(&outputs, &case.outputs, &format!("iris v{version}"));
    }
}

#[test]
fn predict_on_a_model_folder_with_several_dtypes() {
    let dir = fixtures().join("multi_io");
    for case in expected_cases(&dir) {
        let input = input_arg(&case.inputs);
        let outputs = predict_json(&["predict", dir.to_str().unwrap(), "--input", &input], &[]);
        assert_outputs_match(&outputs, &case.outputs, "multi_io");
    }
}

#[test]
fn bad_requests_and_missing_tensorflow_are_clear_errors() {
    let config = repo_root().join("examples/iris/cortex.yaml");
    let out = soma(
        &[
            "predict",
            config.to_str().unwrap(),
            "--input",
            r#"{"x": [5.1, 3.5, 1.4, 0.2]}"#,
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("input 'x': expected shape (-1, 4) but the value has shape (4,)"),
        "{}",
        stderr(&out)
    );

    let out = soma(
        &[
            "predict",
            config.to_str().unwrap(),
            "--version",
            "3",
            "--input",
            r#"{"x": [[1, 2, 3, 4]]}"#,
        ],
        &[],
    );
    assert!(
        stderr(&out).contains("has no version 3; available versions: [1, 2, 9, 10]"),
        "{}",
        stderr(&out)
    );

    let out = soma(
        &[
            "predict",
            config.to_str().unwrap(),
            "--input",
            r#"{"x": [[1, 2, 3, 4]]}"#,
        ],
        &[("SOMA_TENSORFLOW_LIB", "/nonexistent/tf".into())],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/tf/libtensorflow_cc.so.2"),
        "{}",
        stderr(&out)
    );

    let out = soma(
        &["validate", config.to_str().unwrap()],
        &[("SOMA_TENSORFLOW_LIB", "/nonexistent/tf".into())],
    );
    assert!(
        out.status.success(),
        "validate needs no TensorFlow: {}",
        stderr(&out)
    );

    // An API without models: nothing to predict with, and said so.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("handler.py"), "class Handler: pass\n").unwrap();
    let python_api = dir.path().join("cortex.yaml");
    std::fs::write(
        &python_api,
        "- name: py\n  kind: AsyncAPI\n  handler:\n    type: python\n    path: handler.py\n",
    )
    .unwrap();
    let out = soma(
        &["predict", python_api.to_str().unwrap(), "--input", "{}"],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("API 'py' has no models (handler type python)"),
        "{}",
        stderr(&out)
    );
}

/// Every invalid model folder of a `models.dir` is reported, not only the first.
#[test]
fn validate_reports_every_broken_model_of_a_models_dir() {
    let zoo = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("iris/1"), &zoo.path().join("good/1"));
    for broken in ["a_bad", "b_bad"] {
        copy_dir(
            &fixtures().join("iris/1"),
            &zoo.path().join(broken).join("1"),
        );
        std::fs::remove_file(zoo.path().join(broken).join("1/variables/variables.index")).unwrap();
    }
    let yaml = format!(
        "- name: zoo\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: handler.py\n    models:\n      dir: {}\n",
        zoo.path().display()
    );
    let dir = common::project(&[
        ("handler.py", "class Handler:\n    pass\n"),
        ("cortex.yaml", &yaml),
    ]);
    let config = dir.path().join("cortex.yaml");
    let out = soma(&["validate", config.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let text = stderr(&out);
    for broken in ["a_bad", "b_bad"] {
        let line = format!("cortex.yaml: zoo (AsyncAPI): handler: models: dir: model {broken}: ");
        assert!(text.contains(&line), "{text}");
    }
}

#[test]
fn validate_reports_config_and_layout_errors_and_load_catches_unrunnable_models() {
    let dir = common::project(&[
        ("handler.py", "class Handler:\n    pass\n"),
        (
            "cortex.yaml",
            "- name: mixed\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: handler.py\n    models:\n      path: MIXED\n",
        ),
    ]);
    let yaml = std::fs::read_to_string(dir.path().join("cortex.yaml")).unwrap();
    let mixed = fixtures().join("invalid/mixed");
    std::fs::write(
        dir.path().join("cortex.yaml"),
        yaml.replace("MIXED", mixed.to_str().unwrap()),
    )
    .unwrap();
    let config = dir.path().join("cortex.yaml");
    let out = soma(&["validate", config.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    // Errors about a model location name the field that gives it, as config errors do.
    let located = "cortex.yaml: mixed (AsyncAPI): handler: models: path: ";
    assert!(
        stderr(&out).contains(located) && stderr(&out).contains("invalid TensorFlow model path"),
        "{}",
        stderr(&out)
    );
    let missing = dir.path().join("nowhere");
    std::fs::write(&config, yaml.replace("MIXED", missing.to_str().unwrap())).unwrap();
    let out = soma(&["validate", config.to_str().unwrap()], &[]);
    assert!(
        stderr(&out).contains(&format!("{located}{} does not exist", missing.display())),
        "{}",
        stderr(&out)
    );

    let keras = fixtures().join("invalid/keras_saved_model_save");
    std::fs::write(&config, yaml.replace("MIXED", keras.to_str().unwrap())).unwrap();
    let out = soma(&["validate", "--load", config.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("model.export(path)"),
        "{}",
        stderr(&out)
    );

    // A graph with another export's variables (a copy in progress): named as such, not
    // as a Keras export.
    let mixed = dir.path().join("mixed");
    std::fs::create_dir_all(mixed.join("1")).unwrap();
    std::fs::copy(
        fixtures().join("iris/1/saved_model.pb"),
        mixed.join("1/saved_model.pb"),
    )
    .unwrap();
    copy_dir(
        &fixtures().join("mlp1024/1/variables"),
        &mixed.join("1/variables"),
    );
    std::fs::write(&config, yaml.replace("MIXED", mixed.to_str().unwrap())).unwrap();
    let out = soma(&["validate", "--load", config.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("may come from different exports")
            && !stderr(&out).contains("model.export(path)"),
        "{}",
        stderr(&out)
    );

    // Models that refuse zeros but take ones (an input check, one-based ids into a table):
    // they load, as in TF Serving.
    let refusing = dir.path().join("refusing");
    let script = r#"
import sys, tensorflow as tf
class Positive(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def serve(self, x):
        tf.debugging.assert_positive(x, message="x must be positive")
        return {"y": tf.math.log(x)}
class OneBased(tf.Module):
    def __init__(self):
        self.table = tf.Variable(tf.random.uniform([10, 3]))
    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
    def serve(self, ids):
        return {"y": tf.gather(self.table, ids - 1)}
for name, m in [("positive", Positive()), ("one_based", OneBased())]:
    tf.saved_model.save(m, f"{sys.argv[1]}/{name}/1", signatures={"serving_default": m.serve})
"#;
    run_python_code(script, &[refusing.as_os_str()]);
    for name in ["positive", "one_based"] {
        let model = refusing.join(name);
        std::fs::write(&config, yaml.replace("MIXED", model.to_str().unwrap())).unwrap();
        let out = soma(&["validate", "--load", config.to_str().unwrap()], &[]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    }

    // A version whose recorded warm-up request fails (TF Serving's warm-up file).
    let records = dir.path().join("records");
    let script = repo_root().join("crates/grpc/tests/support/warmup_records.py");
    run_python(&script, &[records.as_os_str()]);
    let iris = dir.path().join("iris");
    copy_dir(&fixtures().join("iris/1"), &iris.join("1"));
    std::fs::create_dir_all(iris.join("1/assets.extra")).unwrap();
    std::fs::copy(
        records.join("iris_bad_input"),
        iris.join("1/assets.extra/tf_serving_warmup_requests"),
    )
    .unwrap();
    std::fs::write(&config, yaml.replace("MIXED", iris.to_str().unwrap())).unwrap();
    let out = soma(&["validate", "--load", config.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("tf_serving_warmup_requests: record 2 failed"),
        "{}",
        stderr(&out)
    );

    std::fs::write(&config, "- name: Bad_Name\n  kind: AsyncAPI\n").unwrap();
    let out = soma(&["validate", config.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cortex.yaml"), "{}", stderr(&out));
}

/// The three `models` forms, first on local folders, then over S3.
fn three_forms_yaml(iris: &str, multi: &str, zoo: &str) -> String {
    format!(
        "- name: single\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: handler.py\n    models:\n      path: {iris}\n\
         - name: named\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: handler.py\n    models:\n      paths:\n        - name: iris\n          path: {iris}\n        - name: multi\n          path: {multi}\n\
         - name: folder\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: handler.py\n    models:\n      dir: {zoo}\n"
    )
}

fn check_three_forms(config: &Path, env: &[(&str, String)]) {
    let config = config.to_str().unwrap();
    let iris = expected_cases(&fixtures().join("iris"));
    let v10 = iris
        .iter()
        .find(|c| c.version == 10 && c.signature == "serving_default")
        .unwrap();
    let v2 = iris
        .iter()
        .find(|c| c.version == 2 && c.signature == "serving_default")
        .unwrap();
    let multi = &expected_cases(&fixtures().join("multi_io"))[0];

    let out = predict_json(
        &[
            "predict",
            config,
            "--api",
            "single",
            "--input",
            &input_arg(&v10.inputs),
        ],
        env,
    );
    assert_outputs_match(&out, &v10.outputs, "single");
    let out = predict_json(
        &[
            "predict",
            config,
            "--api",
            "named",
            "--model",
            "multi",
            "--input",
            &input_arg(&multi.inputs),
        ],
        env,
    );
    assert_outputs_match(&out, &multi.outputs, "named multi");
    let out = predict_json(
        &[
            "predict",
            config,
            "--api",
            "folder",
            "--model",
            "iris",
            "--input",
            &input_arg(&v2.inputs),
        ],
        env,
    );
    assert_outputs_match(&out, &v2.outputs, "dir iris latest = 2");

    let out = soma(&["validate", config], env);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("model multi <-"), "{text}");
    assert!(text.contains("model multi_io <-"), "{text}");
}

#[test]
fn the_three_models_forms_work_locally() {
    let dir = common::project(&[("handler.py", "class Handler:\n    pass\n")]);
    let f = fixtures();
    let yaml = three_forms_yaml(
        f.join("iris").to_str().unwrap(),
        f.join("multi_io").to_str().unwrap(),
        f.join("zoo").to_str().unwrap(),
    );
    std::fs::write(dir.path().join("cortex.yaml"), yaml).unwrap();
    check_three_forms(&dir.path().join("cortex.yaml"), &[]);
}

#[test]
fn the_three_models_forms_work_over_s3() {
    let moto = MotoServer::start();
    moto.create_bucket("models");
    let f = fixtures();
    for version in ["1", "2", "9", "10"] {
        moto.upload_dir(
            &f.join("iris").join(version),
            "models",
            &format!("iris/{version}"),
        );
    }
    moto.upload_dir(&f.join("multi_io/1"), "models", "multi_io/1");
    moto.upload_dir(&f.join("zoo"), "models", "zoo");
    let dir = common::project(&[("handler.py", "class Handler:\n    pass\n")]);
    let yaml = three_forms_yaml(
        "s3://models/iris/",
        "s3://models/multi_io",
        "s3://models/zoo/",
    );
    std::fs::write(dir.path().join("cortex.yaml"), yaml).unwrap();
    let mut env: Vec<(&str, String)> = moto.env();
    env.push((
        "SOMA_CACHE_DIR",
        dir.path().join("cache").to_string_lossy().into_owned(),
    ));
    check_three_forms(&dir.path().join("cortex.yaml"), &env);
    assert!(
        dir.path().join("cache").is_dir(),
        "S3 models are downloaded to the cache"
    );

    // TensorFlow's own S3 variables, as TF Serving deployments with MinIO set them, into a
    // fresh cache.
    let endpoint = moto.endpoint();
    let tf_style: Vec<(&str, String)> = env
        .iter()
        .filter(|(k, _)| *k != "AWS_ENDPOINT_URL" && *k != "SOMA_CACHE_DIR")
        .cloned()
        .chain([
            ("S3_ENDPOINT", endpoint.trim_start_matches("http://").into()),
            ("S3_USE_HTTPS", "0".into()),
            (
                "SOMA_CACHE_DIR",
                dir.path().join("cache2").to_string_lossy().into_owned(),
            ),
        ])
        .collect();
    check_three_forms(&dir.path().join("cortex.yaml"), &tf_style);
}

#[test]
fn inferentia_models_validate_but_do_not_run_here() {
    let neuron = fixtures().join("neuron");
    let yaml = format!(
        "- name: inf\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: handler.py\n    models:\n      path: {}\n  compute:\n    inf: 1\n",
        neuron.display()
    );
    let dir = common::project(&[
        ("handler.py", "class Handler:\n    pass\n"),
        ("cortex.yaml", &yaml),
    ]);
    let config = dir.path().join("cortex.yaml");
    let out = soma(&["validate", config.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "only saved_model.pb is needed for Neuron: {}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("versions: 1 (latest: 1)"),
        "{}",
        stdout(&out)
    );
    let out = soma(
        &[
            "predict",
            config.to_str().unwrap(),
            "--input",
            r#"{"x": [[1, 2, 3, 4]]}"#,
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Inferentia (Neuron) model"),
        "{}",
        stderr(&out)
    );
    // Without compute.inf the same folder is an invalid TensorFlow layout.
    std::fs::write(&config, yaml.replace("  compute:\n    inf: 1\n", "")).unwrap();
    let out = soma(&["validate", config.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("variables/variables.index"),
        "{}",
        stderr(&out)
    );
}
