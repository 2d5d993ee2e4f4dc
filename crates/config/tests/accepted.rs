//! What valid files become: Cortex's defaults, the three `models` forms, soma's extensions.

use std::path::Path;
use std::time::Duration;

use soma_config::{
    ApiKind, BatchInterval, Config, HandlerType, IntOrPercent, LogLevel, ModelSource,
    ServerSideBatching, ThreadPools, parse,
};
use soma_core::ModelLocation;

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("handler.py"), "class Handler: pass\n").unwrap();
    std::fs::create_dir_all(dir.path().join("lib/inner")).unwrap();
    dir
}

fn ok(dir: &Path, yaml: &str) -> Config {
    parse(yaml, &dir.join("cortex.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

const TF: &str = "- name: iris\n  kind: AsyncAPI\n  handler:\n    type: tensorflow\n    path: handler.py\n    models:\n";

#[test]
fn a_minimal_api_gets_cortex_v035_defaults() {
    let dir = project();
    let config = ok(dir.path(), &format!("{TF}      path: s3://bucket/iris\n"));
    assert_eq!(config.project_dir, dir.path());
    assert_eq!(config.file, dir.path().join("cortex.yaml"));
    let [api] = config.apis.as_slice() else {
        panic!()
    };
    assert_eq!(api.name, "iris");
    assert_eq!(api.kind, ApiKind::AsyncApi);
    let h = &api.handler;
    assert_eq!(h.handler_type, HandlerType::TensorFlow);
    assert_eq!(h.path, Path::new("handler.py"));
    assert_eq!(h.log_level, LogLevel::Info);
    assert!(h.config.is_empty() && h.env.is_empty());
    assert_eq!(
        (
            h.python_path.as_ref(),
            h.image.as_ref(),
            h.shm_size.as_ref()
        ),
        (None, None, None)
    );
    assert_eq!(
        (
            h.dependencies.pip.as_str(),
            h.dependencies.conda.as_str(),
            h.dependencies.shell.as_str()
        ),
        ("requirements.txt", "conda-packages.txt", "dependencies.sh")
    );
    assert_eq!((h.processes_per_replica, h.threads_per_process), (1, 1));
    let models = h.models.as_ref().unwrap();
    assert_eq!(models.signature_key, None);
    assert_eq!(models.threads, ThreadPools::default());
    let c = &api.compute;
    assert_eq!((c.cpu.text.as_str(), c.cpu.millicores), ("200m", 200.0));
    assert_eq!(
        (c.mem.as_ref(), c.gpu, c.inf, c.node_groups.as_ref()),
        (None, 0, 0, None)
    );
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
    assert_eq!(a.target_replica_concurrency, 1.0);
    assert_eq!(a.window, Duration::from_secs(60));
    assert_eq!(a.downscale_stabilization_period, Duration::from_secs(300));
    assert_eq!(a.upscale_stabilization_period, Duration::from_secs(60));
    assert_eq!((a.max_downscale_factor, a.max_upscale_factor), (0.75, 1.5));
    assert_eq!((a.downscale_tolerance, a.upscale_tolerance), (0.05, 0.05));
    assert_eq!(api.update_strategy.max_surge, IntOrPercent::Percent(25));
    assert_eq!(
        api.update_strategy.max_unavailable,
        IntOrPercent::Percent(25)
    );
    assert_eq!(api.networking.endpoint, "/iris");
}

#[test]
fn models_path_accepts_s3_and_local_folders() {
    let dir = project();
    let cases = [
        (
            "s3://bucket/iris",
            ModelLocation::S3 {
                bucket: "bucket".into(),
                prefix: "iris/".into(),
            },
        ),
        (
            "models/iris/",
            ModelLocation::Local(dir.path().join("models/iris")),
        ),
        (
            "./models/../iris",
            ModelLocation::Local(dir.path().join("iris")),
        ),
        ("/abs/iris", ModelLocation::Local("/abs/iris".into())),
        ("file:///abs/iris", ModelLocation::Local("/abs/iris".into())),
    ];
    for (written, expected) in cases {
        let config = ok(dir.path(), &format!("{TF}      path: {written}\n"));
        let source = &config.apis[0].handler.models.as_ref().unwrap().source;
        let ModelSource::Single(location) = source else {
            panic!("{source:?}")
        };
        assert_eq!(location, &expected, "{written}");
    }
}

#[test]
fn models_paths_with_signature_keys_and_thread_pools() {
    let dir = project();
    let yaml = format!(
        "{TF}      signature_key: predict\n      intra_op_threads: 2\n      inter_op_threads: 0\n      paths:\n        - name: iris\n          path: s3://b/iris\n          inter_op_threads: 1\n        - name: other-model_2\n          path: local/other\n          signature_key: serving_default\n"
    );
    let config = ok(dir.path(), &yaml);
    let models = config.apis[0].handler.models.as_ref().unwrap();
    assert_eq!(models.signature_key.as_deref(), Some("predict"));
    assert_eq!(
        models.threads,
        ThreadPools {
            intra_op: Some(2),
            inter_op: Some(0)
        }
    );
    let ModelSource::Named(list) = &models.source else {
        panic!()
    };
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0].name.as_str(), list[0].location.to_string().as_str()),
        ("iris", "s3://b/iris/")
    );
    assert_eq!(list[0].signature_key, None);
    assert_eq!(
        list[0].threads,
        ThreadPools {
            intra_op: None,
            inter_op: Some(1)
        }
    );
    assert_eq!(list[1].name, "other-model_2");
    assert_eq!(
        list[1].location,
        ModelLocation::Local(dir.path().join("local/other"))
    );
    assert_eq!(list[1].signature_key.as_deref(), Some("serving_default"));
    assert_eq!(list[1].threads, ThreadPools::default());
}

#[test]
fn models_dir_with_s3_and_local_folders() {
    let dir = project();
    for (written, expected) in [
        (
            "s3://b/zoo",
            ModelLocation::S3 {
                bucket: "b".into(),
                prefix: "zoo/".into(),
            },
        ),
        ("zoo", ModelLocation::Local(dir.path().join("zoo"))),
    ] {
        let config = ok(dir.path(), &format!("{TF}      dir: {written}\n"));
        let source = &config.apis[0].handler.models.as_ref().unwrap().source;
        assert!(
            matches!(source, ModelSource::Dir(l) if *l == expected),
            "{source:?}"
        );
    }
}

#[test]
fn every_field_set_by_hand() {
    let dir = project();
    let yaml = "- name: echo\n  kind: AsyncAPI\n  handler:\n    type: python\n    path: handler.py\n    python_path: lib/inner/\n    image: quay.io/team/python-handler:0.35.0\n    env:\n      A: b\n    config:\n      k: [1, {x: y}]\n      n: ~\n    log_level: debug\n    shm_size: 64Mi\n    dependencies:\n      pip: reqs.txt\n    processes_per_replica: 1\n    threads_per_process: 1\n  compute:\n    cpu: 1.5\n    mem: 1G\n    gpu: 1\n    node_groups: [gpu-ng, cpu_ng]\n  autoscaling:\n    min_replicas: 0\n    max_replicas: 4\n    max_replica_concurrency: 8\n    target_replica_concurrency: 2.5\n    window: 1m30s\n    downscale_stabilization_period: 0\n    upscale_stabilization_period: 1.5h\n    max_downscale_factor: 0\n    max_upscale_factor: 3\n    downscale_tolerance: 0.1\n    upscale_tolerance: 0\n  update_strategy:\n    max_surge: 0\n    max_unavailable: 100%\n  networking:\n    endpoint: team/echo/\n";
    let config = ok(dir.path(), yaml);
    let api = &config.apis[0];
    let h = &api.handler;
    assert_eq!(h.handler_type, HandlerType::Python);
    assert!(h.models.is_none());
    assert_eq!(h.python_path.as_deref(), Some(Path::new("lib/inner/")));
    assert_eq!(
        h.image.as_deref(),
        Some("quay.io/team/python-handler:0.35.0")
    );
    assert_eq!(h.env["A"], "b");
    assert_eq!(h.config["k"], serde_json::json!([1, {"x": "y"}]));
    assert_eq!(h.config["n"], serde_json::Value::Null);
    assert_eq!(h.log_level, LogLevel::Debug);
    assert_eq!(
        h.shm_size.as_ref().map(|m| m.bytes),
        Some(64.0 * 1024.0 * 1024.0)
    );
    assert_eq!(
        (h.dependencies.pip.as_str(), h.dependencies.shell.as_str()),
        ("reqs.txt", "dependencies.sh")
    );
    let c = &api.compute;
    assert_eq!(c.cpu.millicores, 1500.0);
    assert_eq!(
        c.mem.as_ref().map(|m| (m.text.as_str(), m.bytes)),
        Some(("1G", 1e9))
    );
    assert_eq!(c.gpu, 1);
    assert_eq!(
        c.node_groups.as_deref(),
        Some(&["gpu-ng".to_string(), "cpu_ng".to_string()][..])
    );
    let a = &api.autoscaling;
    assert_eq!(
        (a.min_replicas, a.max_replicas, a.init_replicas),
        (0, 4, 1),
        "scale-to-zero still starts one worker"
    );
    assert_eq!(a.target_replica_concurrency, 2.5);
    assert_eq!(a.window, Duration::from_secs(90));
    assert_eq!(a.downscale_stabilization_period, Duration::ZERO);
    assert_eq!(a.upscale_stabilization_period, Duration::from_secs(5400));
    assert_eq!((a.max_downscale_factor, a.max_upscale_factor), (0.0, 3.0));
    assert_eq!((a.downscale_tolerance, a.upscale_tolerance), (0.1, 0.0));
    assert_eq!(api.update_strategy.max_surge, IntOrPercent::Int(0));
    assert_eq!(api.update_strategy.max_unavailable.to_string(), "100%");
    assert_eq!(api.networking.endpoint, "/team/echo");
}

#[test]
fn nulls_mean_defaults_and_a_single_mapping_is_one_api() {
    let dir = project();
    let yaml = "name: iris\nkind: AsyncAPI\nhandler:\n  type: python\n  path: handler.py\n  config: ~\n  env: ~\ncompute: ~\nautoscaling: ~\nnetworking:\n  endpoint: ~\n";
    let config = ok(dir.path(), yaml);
    let api = &config.apis[0];
    assert!(api.handler.config.is_empty());
    assert_eq!(api.compute.cpu.text, "200m");
    assert_eq!(api.autoscaling.max_replicas, 100);
    assert_eq!(api.networking.endpoint, "/iris");
}

#[test]
fn load_reads_the_file_and_uses_its_folder_as_the_project() {
    let dir = project();
    let file = dir.path().join("cortex.yaml");
    std::fs::write(&file, "- name: a\n  kind: AsyncAPI\n  handler:\n    type: python\n    path: handler.py\n- name: b\n  kind: AsyncAPI\n  handler:\n    type: python\n    path: handler.py\n").unwrap();
    let config = soma_config::load(&file).unwrap();
    assert_eq!(config.project_dir, dir.path());
    let endpoints: Vec<&str> = config
        .apis
        .iter()
        .map(|a| a.networking.endpoint.as_str())
        .collect();
    assert_eq!(endpoints, ["/a", "/b"]);
}

#[test]
fn server_side_batching_for_the_api_and_per_model() {
    let dir = project();
    let yaml = format!(
        "{TF}      paths:\n        - name: a\n          path: s3://b/a\n        - name: b\n          path: s3://b/b\n          server_side_batching: {{max_batch_size: 64, batch_interval: auto}}\n    server_side_batching:\n      max_batch_size: 8\n      batch_interval: 2ms\n"
    );
    let config = ok(dir.path(), &yaml);
    let handler = &config.apis[0].handler;
    assert_eq!(
        handler.server_side_batching,
        Some(ServerSideBatching {
            max_batch_size: 8,
            batch_interval: BatchInterval::Fixed(Duration::from_millis(2)),
        })
    );
    let ModelSource::Named(list) = &handler.models.as_ref().unwrap().source else {
        panic!()
    };
    assert_eq!(list[0].server_side_batching, None);
    assert_eq!(
        list[1].server_side_batching,
        Some(ServerSideBatching {
            max_batch_size: 64,
            batch_interval: BatchInterval::Auto,
        })
    );
}

/// YAML merge keys, which Cortex's reader resolved: APIs that share settings by anchor.
#[test]
fn merge_keys_share_settings_between_apis() {
    let dir = project();
    let yaml = "- &base\n  name: a\n  kind: AsyncAPI\n  handler: {type: python, path: handler.py}\n  \
                networking: {endpoint: /first}\n- <<: *base\n  name: b\n  networking: {endpoint: /second}\n";
    let config = ok(dir.path(), yaml);
    let names: Vec<(&str, &str)> = config
        .apis
        .iter()
        .map(|a| (a.name.as_str(), a.networking.endpoint.as_str()))
        .collect();
    assert_eq!(names, [("a", "/first"), ("b", "/second")]);
    assert_eq!(config.apis[1].handler.path, Path::new("handler.py"));
}

/// A file saved with a UTF-8 byte-order mark (some Windows editors write one) reads as
/// the same file without it.
#[test]
fn a_byte_order_mark_is_not_content() {
    let dir = project();
    let yaml = format!("{TF}      path: s3://bucket/iris\n");
    let with_mark = parse(&format!("\u{feff}{yaml}"), &dir.path().join("cortex.yaml"));
    let with_mark = with_mark.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        format!("{with_mark:?}"),
        format!("{:?}", ok(dir.path(), &yaml))
    );
}
