//! Every validation rule, with the exact message and field path it reports.

use std::path::Path;
use std::time::Duration;

use soma_config::{HandlerType, LogLevel, ModelSource, parse};
use soma_core::ModelLocation;

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("handler.py"), "class Handler: pass\n").unwrap();
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    dir
}

/// A valid tensorflow API with `extra` lines appended under `handler:` (4-space indent) or
/// at the API level (2-space indent).
fn api(extra_handler: &str, extra_api: &str) -> String {
    format!(
        "- name: iris\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: handler.py\n    models:\n      path: s3://bucket/iris/\n{extra_handler}{extra_api}"
    )
}

fn errors(yaml: &str) -> Vec<String> {
    let dir = project();
    match parse(yaml, &dir.path().join("cortex.yaml")) {
        Ok(_) => Vec::new(),
        Err(e) => {
            e.0.iter()
                .map(|e| {
                    let text = e.to_string();
                    // Drop the temp-dir file path: "<dir>/cortex.yaml: rest" -> "cortex.yaml: rest".
                    text.rsplit_once("cortex.yaml: ")
                        .map(|(_, rest)| format!("cortex.yaml: {rest}"))
                        .unwrap_or(text)
                })
                .collect()
        }
    }
}

fn assert_error(yaml: &str, expected: &str) {
    let found = errors(yaml);
    assert!(
        found.iter().any(|e| e == expected),
        "expected {expected:?}\nfound {found:#?}"
    );
}

#[test]
fn a_minimal_api_gets_cortex_defaults() {
    let dir = project();
    let config = parse(&api("", ""), &dir.path().join("cortex.yaml")).unwrap();
    let api = &config.apis[0];
    assert_eq!(api.name, "iris");
    assert_eq!(api.kind.to_string(), "AsyncAPI");
    assert_eq!(api.handler.handler_type, HandlerType::TensorFlow);
    assert_eq!(api.handler.log_level, LogLevel::Info);
    assert!(api.handler.config.is_empty());
    assert_eq!(api.handler.dependencies.pip, "requirements.txt");
    assert_eq!(api.compute.cpu, "200m");
    assert_eq!((api.compute.gpu, api.compute.inf), (0, 0));
    let a = &api.autoscaling;
    assert_eq!(
        (
            a.min_replicas,
            a.max_replicas,
            a.init_replicas,
            a.max_replica_concurrency
        ),
        (1, 100, 1, 1024)
    );
    assert_eq!(a.window, Duration::from_secs(60));
    assert_eq!(a.downscale_stabilization_period, Duration::from_secs(300));
    assert_eq!(a.upscale_stabilization_period, Duration::from_secs(60));
    assert_eq!((a.max_downscale_factor, a.max_upscale_factor), (0.75, 1.5));
    assert_eq!(
        (
            a.downscale_tolerance,
            a.upscale_tolerance,
            a.target_replica_concurrency
        ),
        (0.05, 0.05, 1.0)
    );
    assert_eq!(api.update_strategy.max_surge, "25%");
    assert_eq!(api.networking.endpoint, "/iris");
    assert_eq!(config.project_dir, dir.path());
}

#[test]
fn the_three_models_forms_and_local_paths() {
    let dir = project();
    let file = dir.path().join("cortex.yaml");
    let single = parse(
        &api("", "").replace("s3://bucket/iris/", "models/iris"),
        &file,
    )
    .unwrap();
    let ModelSource::Single(loc) = &single.apis[0].handler.models.as_ref().unwrap().source else {
        panic!()
    };
    assert_eq!(loc, &ModelLocation::Local(dir.path().join("models/iris")));

    let named = "- name: a\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: handler.py\n    models:\n      signature_key: predict\n      intra_op_threads: 2\n      paths:\n        - name: iris\n          path: s3://b/iris\n          inter_op_threads: 1\n        - name: other\n          path: /abs/other\n          signature_key: serving_default\n";
    let config = parse(named, &file).unwrap();
    let models = config.apis[0].handler.models.as_ref().unwrap();
    assert_eq!(models.signature_key.as_deref(), Some("predict"));
    assert_eq!(models.threads.intra_op, Some(2));
    let ModelSource::Named(list) = &models.source else {
        panic!()
    };
    assert_eq!(list[0].location.to_string(), "s3://b/iris/");
    assert_eq!(list[0].threads.inter_op, Some(1));
    assert_eq!(list[1].signature_key.as_deref(), Some("serving_default"));

    let dir_form = api("", "").replace("path: s3://bucket/iris/", "dir: s3://bucket/zoo");
    let config = parse(&dir_form, &file).unwrap();
    assert!(matches!(
        config.apis[0].handler.models.as_ref().unwrap().source,
        ModelSource::Dir(_)
    ));
}

#[test]
fn models_rules() {
    let both = api("", "").replace(
        "      path: s3://bucket/iris/\n",
        "      path: s3://a/\n      paths:\n        - name: x\n          path: s3://b/\n",
    );
    assert_error(
        &both,
        "cortex.yaml: iris (AsyncAPI): handler: models: please specify either the path or paths field (both cannot be specified at the same time)",
    );
    let none = api("", "").replace(
        "      path: s3://bucket/iris/\n",
        "      signature_key: x\n",
    );
    assert_error(
        &none,
        "cortex.yaml: iris (AsyncAPI): handler: models: please specify only one of the following fields \"path\", \"paths\", or \"dir\"",
    );
    let path_dir = api("", "").replace(
        "      path: s3://bucket/iris/\n",
        "      path: s3://a/\n      dir: s3://b/\n",
    );
    assert_error(
        &path_dir,
        "cortex.yaml: iris (AsyncAPI): handler: models: please specify either the path or dir field (both cannot be specified at the same time)",
    );
    let paths_dir = api("", "").replace(
        "      path: s3://bucket/iris/\n",
        "      dir: s3://a/\n      paths:\n        - name: x\n          path: s3://b/\n",
    );
    assert_error(
        &paths_dir,
        "cortex.yaml: iris (AsyncAPI): handler: models: please specify either the paths or dir field (both cannot be specified at the same time)",
    );
    let reserved = api("", "").replace(
        "      path: s3://bucket/iris/\n",
        "      paths:\n        - name: _cortex_default\n          path: s3://b/\n",
    );
    assert_error(
        &reserved,
        "cortex.yaml: iris (AsyncAPI): handler: models: paths: _cortex_default: _cortex_default: is a reserved name; please specify a different model name",
    );
    let dup = api("", "").replace("      path: s3://bucket/iris/\n", "      paths:\n        - name: a\n          path: s3://b/\n        - name: a\n          path: s3://c/\n");
    assert_error(
        &dup,
        "cortex.yaml: iris (AsyncAPI): handler: models: paths: cannot have multiple models with the same name (a)",
    );
    let cache = api("      cache_size: 2\n", "");
    assert_error(
        &cache,
        "cortex.yaml: iris (AsyncAPI): handler: models: cache_size key is not supported for AsyncAPI kind",
    );
    let scheme = api("", "").replace("s3://bucket/iris/", "gs://bucket/iris");
    assert_error(
        &scheme,
        "cortex.yaml: iris (AsyncAPI): handler: models: path: \"gs://bucket/iris\": unsupported scheme; use s3://bucket/prefix/ or a local path",
    );
    let empty_key = api("", "").replace(
        "      path: s3://bucket/iris/\n",
        "      path: s3://bucket/iris/\n      signature_key: \"\"\n",
    );
    assert_error(
        &empty_key,
        "cortex.yaml: iris (AsyncAPI): handler: models: signature_key: must not be empty",
    );
}

#[test]
fn handler_rules() {
    let base = "- name: p\n  kind: AsyncAPI\n  handler:\n    type: TYPE\n    path: handler.py\n";
    assert_error(
        &base.replace("TYPE", "onnx"),
        "cortex.yaml: p (AsyncAPI): handler: type: the onnx handler type has been replaced by the python handler type; please use the python handler type instead (all onnx models are fully supported by the python handler type)",
    );
    assert_error(
        &base.replace("TYPE", "tensorflow"),
        "cortex.yaml: p (AsyncAPI): handler: models field must be defined for the tensorflow handler type",
    );
    let python_models = format!(
        "{}    models:\n      path: s3://b/\n",
        base.replace("TYPE", "python")
    );
    assert_error(
        &python_models,
        "cortex.yaml: p (AsyncAPI): handler: models: models is not a supported field for the python handler type",
    );
    let python = base.replace("TYPE", "python");
    for (extra, expected) in [
        (
            "    server_side_batching:\n      max_batch_size: 8\n",
            "handler: server_side_batching: server_side_batching key is not supported for AsyncAPI kind",
        ),
        (
            "    multi_model_reloading:\n      path: s3://x/\n",
            "handler: multi_model_reloading: multi_model_reloading key is not supported for AsyncAPI kind",
        ),
        (
            "    protobuf_path: x.proto\n",
            "handler: protobuf_path: protobuf_path key is not supported for AsyncAPI kind",
        ),
        (
            "    env:\n      CORTEX_X: y\n",
            "handler: env: CORTEX_X: environment variables starting with CORTEX_ are reserved",
        ),
        (
            "    log_level: verbose\n",
            "handler: log_level: invalid value \"verbose\"; must be one of debug, info, warning, error",
        ),
        (
            "    python_path: /abs\n",
            "handler: python_path: /abs: must be a relative path",
        ),
        (
            "    python_path: ./\n",
            "handler: python_path: ./: is the project folder, which is on the Python path already; remove python_path",
        ),
        (
            "    tensorflow_serving_image: x\n",
            "handler: tensorflow_serving_image: tensorflow_serving_image is not a supported field for the python handler type",
        ),
        (
            "    config: [1, 2]\n",
            "handler: config: must be a map with string keys",
        ),
        (
            "    unknown_field: 1\n",
            "handler: unknown_field: key is not supported",
        ),
        (
            "    shm_size: 1Gi\n",
            "handler: shm_size: handler.shm_size (1Gi) cannot exceed compute.mem (512Mi)",
        ),
    ] {
        let yaml = format!("{python}{extra}  compute:\n    mem: 512Mi\n");
        assert_error(&yaml, &format!("cortex.yaml: p (AsyncAPI): {expected}"));
    }
    let processes = format!("{python}    processes_per_replica: 2\n");
    assert!(
        errors(&processes)[0]
            .contains("processes_per_replica key is not supported for AsyncAPI kind")
    );
    let missing_file = base
        .replace("TYPE", "python")
        .replace("handler.py", "nope.py");
    assert!(
        errors(&missing_file)[0].contains("handler: path: nope.py: file does not exist"),
        "{:?}",
        errors(&missing_file)
    );
    let pickle = base
        .replace("TYPE", "python")
        .replace("handler.py", "h.pickle");
    assert!(errors(&pickle)[0].contains("not supported by soma"));
    let good = format!(
        "{python}    python_path: lib\n    env:\n      A: b\n    config:\n      k: [1, {{x: y}}]\n"
    );
    let dir = project();
    let config = parse(&good, &dir.path().join("cortex.yaml")).unwrap();
    assert_eq!(config.apis[0].handler.env["A"], "b");
    assert_eq!(
        config.apis[0].handler.config["k"],
        serde_json::json!([1, {"x": "y"}])
    );
}

#[test]
fn api_level_rules() {
    assert_error(
        &api("", "").replace("name: iris", "name: Iris_1"),
        "cortex.yaml: Iris_1 (AsyncAPI): name: must contain only lower case letters, numbers, and dashes, start with a letter, and cannot end with a dash",
    );
    assert_error(
        &api("", "").replace("name: iris", "name: b-iris"),
        "cortex.yaml: b-iris (AsyncAPI): name: cannot start with \"b-\"",
    );
    let long = "a".repeat(43);
    assert_error(
        &api("", "").replace("name: iris", &format!("name: {long}")),
        &format!(
            "cortex.yaml: {long} (AsyncAPI): name: must be no more than 42 characters (got 43)"
        ),
    );
    assert_error(
        &api("", "").replace("kind: AsyncAPI", "kind: RealtimeAPI"),
        "cortex.yaml: iris (RealtimeAPI): kind: kind RealtimeAPI is not supported by soma (only AsyncAPI)",
    );
    assert_error(
        &api("", "").replace("kind: AsyncAPI", "kind: Lambda"),
        "cortex.yaml: iris (Lambda): kind: invalid value \"Lambda\"; must be one of RealtimeAPI, BatchAPI, TaskAPI, AsyncAPI, TrafficSplitter",
    );
    assert_error(
        "- kind: AsyncAPI\n",
        "cortex.yaml: API #1: name: key must be specified",
    );
    assert_error(
        &api("", "  pod:\n    port: 8080\n"),
        "cortex.yaml: iris (AsyncAPI): pod: key is not supported",
    );
    let twice = format!(
        "{}{}",
        api("", ""),
        api("", "  networking:\n    endpoint: /other\n")
    );
    assert_error(
        &twice,
        "cortex.yaml: iris (AsyncAPI): name: an API with this name is defined more than once",
    );
    let clash = format!(
        "{}{}",
        api("", ""),
        api("", "  networking:\n    endpoint: iris/\n").replace("name: iris", "name: other")
    );
    assert_error(
        &clash,
        "cortex.yaml: other (AsyncAPI): networking: endpoint: /iris is already used by API iris",
    );
}

#[test]
fn compute_autoscaling_update_and_networking_rules() {
    for (extra, expected) in [
        (
            "  compute:\n    cpu: 10m\n",
            "compute: cpu: must be at least 20m (got 10m)",
        ),
        (
            "  compute:\n    mem: 10Mi\n",
            "compute: mem: must be at least 20Mi (got 10Mi)",
        ),
        (
            "  compute:\n    gpu: 1\n    inf: 1\n",
            "compute: gpu and inf resources cannot be used together",
        ),
        (
            "  compute:\n    inf: 2\n",
            "compute: inf: cannot request 2 Infs (currently only 1 Inf can be used per API replica, due to AWS's bug: https://github.com/aws/aws-neuron-sdk/issues/110)",
        ),
        (
            "  compute:\n    gpu: -1\n",
            "compute: gpu: must be greater than or equal to 0 (got -1)",
        ),
        (
            "  compute:\n    node_groups: []\n",
            "compute: node_groups: must not be empty (omit it to use all node groups)",
        ),
        (
            "  autoscaling:\n    min_replicas: 5\n    max_replicas: 2\n",
            "autoscaling: min_replicas: min_replicas cannot be greater than max_replicas (5 > 2)",
        ),
        (
            "  autoscaling:\n    init_replicas: 200\n",
            "autoscaling: init_replicas: init_replicas cannot be greater than max_replicas (200 > 100)",
        ),
        (
            "  autoscaling:\n    min_replicas: 3\n    init_replicas: 2\n",
            "autoscaling: init_replicas: init_replicas cannot be less than min_replicas (2 < 3)",
        ),
        (
            "  autoscaling:\n    window: 15s\n",
            "autoscaling: window: must be at least 10s and a multiple of 10s (got 15s)",
        ),
        (
            "  autoscaling:\n    max_upscale_factor: 1\n",
            "autoscaling: max_upscale_factor: must be greater than 1",
        ),
        (
            "  autoscaling:\n    max_downscale_factor: 1\n",
            "autoscaling: max_downscale_factor: must be greater than or equal to 0 and less than 1",
        ),
        (
            "  autoscaling:\n    downscale_tolerance: 1.5\n",
            "autoscaling: downscale_tolerance: must be greater than or equal to 0 and less than 1",
        ),
        (
            "  autoscaling:\n    upscale_tolerance: -0.1\n",
            "autoscaling: upscale_tolerance: must be greater than or equal to 0",
        ),
        (
            "  autoscaling:\n    max_replica_concurrency: 30001\n",
            "autoscaling: max_replica_concurrency: must be between 1 and 30000 (got 30001)",
        ),
        (
            "  autoscaling:\n    max_replica_concurrency: 4\n    target_replica_concurrency: 8\n",
            "autoscaling: target_replica_concurrency: target_replica_concurrency cannot be greater than max_replica_concurrency (8 > 4)",
        ),
        (
            "  autoscaling:\n    window: soon\n",
            "autoscaling: window: \"soon\" is not a duration (use e.g. 60s, 5m, 1h)",
        ),
        (
            "  update_strategy:\n    max_surge: 0\n    max_unavailable: 0%\n",
            "update_strategy: max_surge and max_unavailable cannot both be zero",
        ),
        (
            "  update_strategy:\n    max_surge: 120%\n",
            "update_strategy: max_surge: \"120%\" must be an integer or a percentage between 0% and 100%",
        ),
        (
            "  networking:\n    endpoint: /\n",
            "networking: endpoint: cannot be \"/\"",
        ),
        (
            "  networking:\n    endpoint: a//b\n",
            "networking: endpoint: \"a//b\" cannot contain adjacent slashes",
        ),
        (
            "  networking:\n    endpoint: a b\n",
            "networking: endpoint: \"a b\" may contain only letters, numbers, '_', '-', '.' and '/'",
        ),
    ] {
        assert_error(
            &api("", extra),
            &format!("cortex.yaml: iris (AsyncAPI): {expected}"),
        );
    }
    let dir = project();
    let config = parse(
        &api(
            "",
            "  autoscaling:\n    min_replicas: 0\n  networking:\n    endpoint: team/iris/\n",
        ),
        &dir.path().join("cortex.yaml"),
    )
    .unwrap();
    assert_eq!(
        config.apis[0].autoscaling.init_replicas, 1,
        "scale-to-zero APIs still start one worker"
    );
    assert_eq!(config.apis[0].networking.endpoint, "/team/iris");
}

#[test]
fn malformed_yaml_and_several_errors_at_once() {
    let found = errors("- name: iris\n  kind: [AsyncAPI\n");
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("cortex.yaml: invalid YAML:") && found[0].contains("line"),
        "{found:?}"
    );
    let found = errors("name: x\n");
    assert!(!found.is_empty());
    let found = errors(&api(
        "",
        "  compute:\n    cpu: 1m\n  autoscaling:\n    window: 5s\n",
    ));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        parse("", Path::new("cortex.yaml"))
            .unwrap_err()
            .to_string()
            .contains("no API is defined")
    );
}
