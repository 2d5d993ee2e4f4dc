//! Every validation rule, with the exact message and field path it reports.

use serde_yaml::Value;
use soma_config::{ConfigError, parse};

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("handler.py"), "class Handler: pass\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "").unwrap();
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    dir
}

/// A valid tensorflow API, as YAML, to be edited by `set`.
fn tf_api() -> Value {
    serde_yaml::from_str(
        "name: iris\nkind: AsyncAPI\nhandler:\n  type: tensorflow\n  path: handler.py\n  models:\n    path: s3://bucket/iris/\n",
    )
    .unwrap()
}

/// `api` with `yaml` (a YAML value) at the dotted `path`; `~` removes the key.
fn set(mut api: Value, path: &str, yaml: &str) -> Value {
    let keys: Vec<&str> = path.split('.').collect();
    let (last, parents) = keys.split_last().unwrap();
    let mut node = &mut api;
    for key in parents {
        if node.get(*key).is_none_or(Value::is_null) {
            node[*key] = Value::Mapping(Default::default());
        }
        node = node.get_mut(*key).unwrap();
    }
    let map = node.as_mapping_mut().unwrap();
    if yaml == "~" {
        map.remove(*last);
    } else {
        map.insert((*last).into(), serde_yaml::from_str(yaml).unwrap());
    }
    api
}

fn python_api() -> Value {
    let api = set(tf_api(), "handler.type", "python");
    set(api, "handler.models", "~")
}

fn to_yaml(apis: &[Value]) -> String {
    serde_yaml::to_string(&apis).unwrap()
}

/// Errors of `yaml` in a fresh project, with the temp-dir prefix of the file removed.
fn errors_of(yaml: &str) -> Vec<String> {
    let dir = project();
    match parse(yaml, &dir.path().join("cortex.yaml")) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(relative).collect(),
    }
}

fn relative(e: &ConfigError) -> String {
    let mut e = e.clone();
    e.file = e.file.file_name().unwrap().into();
    e.to_string()
}

/// (rule, API, the one expected error).
fn cases() -> Vec<(&'static str, Value, &'static str)> {
    let tf = tf_api;
    let py = python_api;
    vec![
        // API level
        (
            "name required",
            set(tf(), "name", "~"),
            "cortex.yaml: api at index 0 (AsyncAPI): name: must be defined",
        ),
        (
            "kind required",
            set(tf(), "kind", "~"),
            "cortex.yaml: iris (unknown kind): kind: must be defined",
        ),
        (
            "handler required",
            set(tf(), "handler", "~"),
            "cortex.yaml: iris (AsyncAPI): handler: must be defined",
        ),
        (
            "name DNS-1035",
            set(tf(), "name", "Iris_1"),
            "cortex.yaml: Iris_1 (AsyncAPI): name: \"Iris_1\" must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
        ),
        (
            "name not ending in a dash",
            set(tf(), "name", "iris-"),
            "cortex.yaml: iris- (AsyncAPI): name: \"iris-\" must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
        ),
        (
            "name max 42",
            set(tf(), "name", &"a".repeat(43)),
            "cortex.yaml: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa (AsyncAPI): name: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" must be no more than 42 characters",
        ),
        (
            "name not b-",
            set(tf(), "name", "b-iris"),
            "cortex.yaml: b-iris (AsyncAPI): name: \"b-iris\" cannot start with \"b-\"",
        ),
        (
            "name is a string",
            set(tf(), "name", "[a]"),
            "cortex.yaml: api at index 0 (AsyncAPI): name: invalid type (expected string, found a list)",
        ),
        (
            "other kinds",
            set(tf(), "kind", "RealtimeAPI"),
            "cortex.yaml: iris (RealtimeAPI): kind: kind RealtimeAPI is not supported by soma (only AsyncAPI)",
        ),
        (
            "unknown kind",
            set(tf(), "kind", "Lambda"),
            "cortex.yaml: iris (Lambda): kind: invalid value (got \"Lambda\", must be \"RealtimeAPI\", \"BatchAPI\", \"TaskAPI\", \"AsyncAPI\", or \"TrafficSplitter\")",
        ),
        (
            "unknown API key",
            set(tf(), "pod", "{port: 8080}"),
            "cortex.yaml: iris (AsyncAPI): key \"pod\" is not supported",
        ),
        // handler
        (
            "handler is a map",
            set(tf(), "handler", "3"),
            "cortex.yaml: iris (AsyncAPI): handler: invalid type (expected map, found the number 3)",
        ),
        (
            "unknown handler key",
            set(py(), "handler.predictor", "x"),
            "cortex.yaml: iris (AsyncAPI): handler: key \"predictor\" is not supported",
        ),
        (
            "type required",
            set(py(), "handler.type", "~"),
            "cortex.yaml: iris (AsyncAPI): handler: type: must be defined",
        ),
        (
            "type onnx",
            set(py(), "handler.type", "onnx"),
            "cortex.yaml: iris (AsyncAPI): handler: type: the onnx handler type has been replaced by the python handler type; please use the python handler type instead (all onnx models are fully supported by the python handler type)",
        ),
        (
            "type values",
            set(py(), "handler.type", "pytorch"),
            "cortex.yaml: iris (AsyncAPI): handler: type: invalid value (got \"pytorch\", must be \"python\" or \"tensorflow\")",
        ),
        (
            "path required",
            set(py(), "handler.path", "~"),
            "cortex.yaml: iris (AsyncAPI): handler: path: must be defined",
        ),
        (
            "path .py",
            set(py(), "handler.path", "notes.txt"),
            "cortex.yaml: iris (AsyncAPI): handler: path: notes.txt: must be a .py file",
        ),
        (
            "path .pickle",
            set(py(), "handler.path", "h.pickle"),
            "cortex.yaml: iris (AsyncAPI): handler: path: h.pickle: pickled handlers (.pickle) are not supported by soma (they need the Python client's deploy call); point handler.path at a .py file that defines class Handler",
        ),
        (
            "path inside the project",
            set(py(), "handler.path", "../handler.py"),
            "cortex.yaml: iris (AsyncAPI): handler: path: ../handler.py: must be a path relative to the project folder (the folder of the cortex.yaml), inside it",
        ),
        (
            "models required for tensorflow",
            set(tf(), "handler.models", "~"),
            "cortex.yaml: iris (AsyncAPI): handler: models field must be defined for the tensorflow handler type",
        ),
        (
            "models forbidden for python",
            set(py(), "handler.models", "{path: s3://b/}"),
            "cortex.yaml: iris (AsyncAPI): handler: models: models is not a supported field for the python handler type",
        ),
        (
            "multi_model_reloading",
            set(py(), "handler.multi_model_reloading", "{path: s3://x/}"),
            "cortex.yaml: iris (AsyncAPI): handler: multi_model_reloading: multi_model_reloading key is not supported for AsyncAPI kind",
        ),
        (
            "server_side_batching without batch_interval",
            set(
                tf_api(),
                "handler.server_side_batching",
                "{max_batch_size: 8}",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: server_side_batching: batch_interval: must be defined",
        ),
        (
            "server_side_batching max_batch_size below 2",
            set(
                tf_api(),
                "handler.server_side_batching",
                "{max_batch_size: 1, batch_interval: 1ms}",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: server_side_batching: max_batch_size: 1 must be greater than or equal to 2",
        ),
        (
            "server_side_batching max_batch_size above 1024",
            set(
                tf_api(),
                "handler.server_side_batching",
                "{max_batch_size: 2000, batch_interval: 1ms}",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: server_side_batching: max_batch_size: 2000 must be less than or equal to 1024",
        ),
        (
            "server_side_batching batch_interval zero",
            set(
                tf_api(),
                "handler.server_side_batching",
                "{max_batch_size: 8, batch_interval: 0s}",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: server_side_batching: batch_interval: 0s must be greater than 0s",
        ),
        (
            "server_side_batching batch_interval not a duration",
            set(
                tf_api(),
                "handler.server_side_batching",
                "{max_batch_size: 8, batch_interval: soon}",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: server_side_batching: batch_interval: \"soon\" is not a valid duration (e.g. 5ms, 100us) or \"auto\"",
        ),
        (
            "server_side_batching unknown key",
            set(
                tf_api(),
                "handler.server_side_batching",
                "{max_batch_size: 8, batch_interval: auto, size: 3}",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: server_side_batching: key \"size\" is not supported",
        ),
        (
            "protobuf_path",
            set(py(), "handler.protobuf_path", "x.proto"),
            "cortex.yaml: iris (AsyncAPI): handler: protobuf_path: protobuf_path key is not supported for AsyncAPI kind",
        ),
        (
            "processes_per_replica > 1",
            set(py(), "handler.processes_per_replica", "2"),
            "cortex.yaml: iris (AsyncAPI): handler: processes_per_replica: processes_per_replica key is not supported for AsyncAPI kind (an AsyncAPI replica runs one workload at a time; raise autoscaling.max_replicas instead)",
        ),
        (
            "threads_per_process > 1",
            set(py(), "handler.threads_per_process", "4"),
            "cortex.yaml: iris (AsyncAPI): handler: threads_per_process: threads_per_process key is not supported for AsyncAPI kind (an AsyncAPI replica runs one workload at a time; raise autoscaling.max_replicas instead)",
        ),
        (
            "threads_per_process >= 1",
            set(py(), "handler.threads_per_process", "0"),
            "cortex.yaml: iris (AsyncAPI): handler: threads_per_process: 0 must be greater than or equal to 1",
        ),
        (
            "processes_per_replica integer",
            set(py(), "handler.processes_per_replica", "one"),
            "cortex.yaml: iris (AsyncAPI): handler: processes_per_replica: invalid type (expected integer, found the string \"one\")",
        ),
        (
            "config is a map",
            set(py(), "handler.config", "[1, 2]"),
            "cortex.yaml: iris (AsyncAPI): handler: config: invalid type (expected map, found a list)",
        ),
        (
            "config string keys",
            set(py(), "handler.config", "{1: a}"),
            "cortex.yaml: iris (AsyncAPI): handler: config: non string key found: 1",
        ),
        (
            "python_path relative",
            set(py(), "handler.python_path", "/abs"),
            "cortex.yaml: iris (AsyncAPI): handler: python_path: /abs: must be a relative path",
        ),
        (
            "python_path not ~",
            set(py(), "handler.python_path", "~/lib"),
            "cortex.yaml: iris (AsyncAPI): handler: python_path: ~/lib: must be a relative path",
        ),
        (
            "python_path not ./",
            set(py(), "handler.python_path", "./"),
            "cortex.yaml: iris (AsyncAPI): handler: python_path: ./: is the project folder, which is on the Python path already; remove python_path",
        ),
        (
            "python_path exists",
            set(py(), "handler.python_path", "src"),
            "cortex.yaml: iris (AsyncAPI): handler: python_path: src: folder does not exist in the project folder PROJECT",
        ),
        (
            "python_path inside",
            set(py(), "handler.python_path", "../lib"),
            "cortex.yaml: iris (AsyncAPI): handler: python_path: ../lib: must be inside the project folder",
        ),
        (
            "env CORTEX_",
            set(py(), "handler.env", "{CORTEX_X: y}"),
            "cortex.yaml: iris (AsyncAPI): handler: env: CORTEX_X: environment variables starting with CORTEX_ are reserved",
        ),
        (
            "env strings",
            set(py(), "handler.env", "{A: 1}"),
            "cortex.yaml: iris (AsyncAPI): handler: env: A: invalid type (expected string, found the number 1)",
        ),
        (
            "env is a map",
            set(py(), "handler.env", "[A]"),
            "cortex.yaml: iris (AsyncAPI): handler: env: invalid type (expected map of strings to strings, found a list)",
        ),
        (
            "log_level values",
            set(py(), "handler.log_level", "verbose"),
            "cortex.yaml: iris (AsyncAPI): handler: log_level: invalid value (got \"verbose\", must be \"debug\", \"info\", \"warning\", or \"error\")",
        ),
        (
            "shm_size quantity",
            set(py(), "handler.shm_size", "lots"),
            "cortex.yaml: iris (AsyncAPI): handler: shm_size: \"lots\" is not a valid quantity (e.g. 64Mi, 1Gi)",
        ),
        (
            "shm_size <= mem",
            set(set(py(), "handler.shm_size", "1Gi"), "compute.mem", "512Mi"),
            "cortex.yaml: iris (AsyncAPI): handler: shm_size: handler.shm_size (1Gi) cannot exceed compute.mem (512Mi)",
        ),
        (
            "dependencies keys",
            set(py(), "handler.dependencies", "{npm: x}"),
            "cortex.yaml: iris (AsyncAPI): handler: dependencies: key \"npm\" is not supported",
        ),
        (
            "dependencies non-empty",
            set(py(), "handler.dependencies", "{pip: ''}"),
            "cortex.yaml: iris (AsyncAPI): handler: dependencies: pip: cannot be empty",
        ),
        (
            "tensorflow_serving_image python",
            set(
                py(),
                "handler.tensorflow_serving_image",
                "tensorflow/serving:2.3.0",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: tensorflow_serving_image: tensorflow_serving_image is not a supported field for the python handler type",
        ),
        (
            "image syntax",
            set(py(), "handler.image", "Not An Image"),
            "cortex.yaml: iris (AsyncAPI): handler: image: \"Not An Image\" is not a valid docker image path",
        ),
        // models
        (
            "models none of the three",
            set(tf(), "handler.models", "{signature_key: x}"),
            "cortex.yaml: iris (AsyncAPI): handler: models: please specify only one of the following fields \"path\", \"paths\", or \"dir\"",
        ),
        (
            "models all three",
            set(
                tf(),
                "handler.models",
                "{path: s3://a/, paths: [{name: x, path: s3://b/}], dir: s3://c/}",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: models: please specify only one of the following fields \"path\", \"paths\", or \"dir\"",
        ),
        (
            "models path+paths",
            set(
                tf(),
                "handler.models",
                "{path: s3://a/, paths: [{name: x, path: s3://b/}]}",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: models: please specify either the path or paths field (both cannot be specified at the same time)",
        ),
        (
            "models paths+dir",
            set(
                tf(),
                "handler.models",
                "{dir: s3://a/, paths: [{name: x, path: s3://b/}]}",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: models: please specify either the paths or dir field (both cannot be specified at the same time)",
        ),
        (
            "models path+dir",
            set(tf(), "handler.models", "{path: s3://a/, dir: s3://b/}"),
            "cortex.yaml: iris (AsyncAPI): handler: models: please specify either the path or dir field (both cannot be specified at the same time)",
        ),
        (
            "models cache_size",
            set(tf(), "handler.models.cache_size", "2"),
            "cortex.yaml: iris (AsyncAPI): handler: models: cache_size key is not supported for AsyncAPI kind",
        ),
        (
            "models disk_cache_size",
            set(tf(), "handler.models.disk_cache_size", "2"),
            "cortex.yaml: iris (AsyncAPI): handler: models: disk_cache_size key is not supported for AsyncAPI kind",
        ),
        (
            "models unknown key",
            set(tf(), "handler.models.version", "1"),
            "cortex.yaml: iris (AsyncAPI): handler: models: key \"version\" is not supported",
        ),
        (
            "model path scheme",
            set(tf(), "handler.models.path", "gs://x"),
            "cortex.yaml: iris (AsyncAPI): handler: models: path: \"gs://x\": unsupported scheme; use s3://bucket/prefix/ or a local path",
        ),
        (
            "model path bucket",
            set(tf(), "handler.models.path", "s3:///x"),
            "cortex.yaml: iris (AsyncAPI): handler: models: path: \"s3:///x\": an S3 path needs a bucket (e.g. s3://bucket/my-dir/)",
        ),
        (
            "model dir scheme",
            set(
                set(tf(), "handler.models.path", "~"),
                "handler.models.dir",
                "gs://x",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: models: dir: \"gs://x\": unsupported scheme; use s3://bucket/prefix/ or a local path",
        ),
        (
            "signature_key non-empty",
            set(tf(), "handler.models.signature_key", "''"),
            "cortex.yaml: iris (AsyncAPI): handler: models: signature_key: cannot be empty",
        ),
        (
            "paths non-empty",
            set(
                set(tf(), "handler.models.path", "~"),
                "handler.models.paths",
                "[]",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: models: paths: must contain at least 1 elements",
        ),
        (
            "paths is a list",
            set(
                set(tf(), "handler.models.path", "~"),
                "handler.models.paths",
                "{a: b}",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: models: paths: invalid type (expected list of maps, found a map)",
        ),
        (
            "paths name required",
            set(
                set(tf(), "handler.models.path", "~"),
                "handler.models.paths",
                "[{path: s3://b/}]",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: models: paths: 0: name: must be defined",
        ),
        (
            "paths path required",
            set(
                set(tf(), "handler.models.path", "~"),
                "handler.models.paths",
                "[{name: a}]",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: models: paths: a: path: must be defined",
        ),
        (
            "paths name characters",
            set(
                set(tf(), "handler.models.path", "~"),
                "handler.models.paths",
                "[{name: a.b, path: s3://b/}]",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: models: paths: a.b: name: \"a.b\" must contain only letters, numbers, underscores, and dashes",
        ),
        (
            "paths reserved name",
            set(
                set(tf(), "handler.models.path", "~"),
                "handler.models.paths",
                "[{name: _cortex_default, path: s3://b/}]",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: models: paths: _cortex_default: _cortex_default: is a reserved name; please specify a different model name",
        ),
        (
            "paths unique names",
            set(
                set(tf(), "handler.models.path", "~"),
                "handler.models.paths",
                "[{name: a, path: s3://b/}, {name: a, path: s3://c/}]",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: models: paths: cannot have multiple models with the same name (a)",
        ),
        (
            "paths signature_key non-empty",
            set(
                set(tf(), "handler.models.path", "~"),
                "handler.models.paths",
                "[{name: a, path: s3://b/, signature_key: ''}]",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: models: paths: a: signature_key: cannot be empty",
        ),
        (
            "paths entry keys",
            set(
                set(tf(), "handler.models.path", "~"),
                "handler.models.paths",
                "[{name: a, path: s3://b/, cache: 1}]",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: models: paths: 0: key \"cache\" is not supported",
        ),
        (
            "threads non-negative",
            set(tf(), "handler.models.intra_op_threads", "-1"),
            "cortex.yaml: iris (AsyncAPI): handler: models: intra_op_threads: -1 must be greater than or equal to 0",
        ),
        (
            "paths threads integer",
            set(
                set(tf(), "handler.models.path", "~"),
                "handler.models.paths",
                "[{name: a, path: s3://b/, inter_op_threads: many}]",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: models: paths: a: inter_op_threads: invalid type (expected integer, found the string \"many\")",
        ),
        (
            "paths intra-op threads are per process",
            set(
                set(tf(), "handler.models.path", "~"),
                "handler.models.paths",
                "[{name: a, path: s3://b/, intra_op_threads: 4}]",
            ),
            "cortex.yaml: iris (AsyncAPI): handler: models: paths: a: intra_op_threads: cannot be set per model: TensorFlow makes one intra-op thread pool per process, sized by the first model it loads; set handler.models.intra_op_threads instead",
        ),
        // compute
        (
            "cpu >= 20m",
            set(tf(), "compute.cpu", "10m"),
            "cortex.yaml: iris (AsyncAPI): compute: cpu: 10m must be greater than or equal to 20m",
        ),
        (
            "cpu quantity",
            set(tf(), "compute.cpu", "fast"),
            "cortex.yaml: iris (AsyncAPI): compute: cpu: \"fast\" is not a valid quantity (e.g. 200m, 1, 0.5, 512Mi, 2Gi)",
        ),
        (
            "mem >= 20Mi",
            set(tf(), "compute.mem", "10Mi"),
            "cortex.yaml: iris (AsyncAPI): compute: mem: 10Mi must be greater than or equal to 20Mi",
        ),
        (
            "gpu >= 0",
            set(tf(), "compute.gpu", "-1"),
            "cortex.yaml: iris (AsyncAPI): compute: gpu: -1 must be greater than or equal to 0",
        ),
        (
            "inf >= 0",
            set(tf(), "compute.inf", "-2"),
            "cortex.yaml: iris (AsyncAPI): compute: inf: -2 must be greater than or equal to 0",
        ),
        (
            "gpu with inf",
            set(set(tf(), "compute.gpu", "1"), "compute.inf", "1"),
            "cortex.yaml: iris (AsyncAPI): compute: gpu and inf resources cannot be used together",
        ),
        (
            "inf <= 1",
            set(tf(), "compute.inf", "2"),
            "cortex.yaml: iris (AsyncAPI): compute: inf: cannot request 2 Infs (currently only 1 Inf can be used per API replica, due to AWS's bug: https://github.com/aws/aws-neuron-sdk/issues/110)",
        ),
        (
            "node_groups non-empty",
            set(tf(), "compute.node_groups", "[]"),
            "cortex.yaml: iris (AsyncAPI): compute: node_groups: must contain at least 1 elements",
        ),
        (
            "node_groups names",
            set(tf(), "compute.node_groups", "[a b]"),
            "cortex.yaml: iris (AsyncAPI): compute: node_groups: \"a b\" must contain only letters, numbers, underscores, and dashes",
        ),
        (
            "node_groups unique",
            set(tf(), "compute.node_groups", "[ng, ng]"),
            "cortex.yaml: iris (AsyncAPI): compute: node_groups: \"ng\" is duplicated",
        ),
        (
            "compute keys",
            set(tf(), "compute.disk", "1Gi"),
            "cortex.yaml: iris (AsyncAPI): compute: key \"disk\" is not supported",
        ),
        // autoscaling
        (
            "min_replicas >= 0",
            set(tf(), "autoscaling.min_replicas", "-1"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: min_replicas: -1 must be greater than or equal to 0",
        ),
        (
            "max_replicas > 0",
            set(tf(), "autoscaling.max_replicas", "0"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: max_replicas: 0 must be greater than 0",
        ),
        (
            "init_replicas > 0",
            set(
                set(tf(), "autoscaling.min_replicas", "0"),
                "autoscaling.init_replicas",
                "0",
            ),
            "cortex.yaml: iris (AsyncAPI): autoscaling: init_replicas: 0 must be greater than 0",
        ),
        (
            "min <= max",
            set(
                set(tf(), "autoscaling.min_replicas", "5"),
                "autoscaling.max_replicas",
                "2",
            ),
            "cortex.yaml: iris (AsyncAPI): autoscaling: min_replicas: min_replicas cannot be greater than max_replicas (5 > 2)",
        ),
        (
            "init <= max",
            set(tf(), "autoscaling.init_replicas", "200"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: init_replicas: init_replicas cannot be greater than max_replicas (200 > 100)",
        ),
        (
            "init >= min",
            set(
                set(tf(), "autoscaling.min_replicas", "3"),
                "autoscaling.init_replicas",
                "2",
            ),
            "cortex.yaml: iris (AsyncAPI): autoscaling: init_replicas: init_replicas cannot be less than min_replicas (2 < 3)",
        ),
        (
            "max_replica_concurrency <= 30000",
            set(tf(), "autoscaling.max_replica_concurrency", "30001"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: max_replica_concurrency: 30001 must be less than or equal to 30000",
        ),
        (
            "max_replica_concurrency > 0",
            set(tf(), "autoscaling.max_replica_concurrency", "0"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: max_replica_concurrency: 0 must be greater than 0",
        ),
        (
            "target_replica_concurrency > 0",
            set(tf(), "autoscaling.target_replica_concurrency", "0"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: target_replica_concurrency: 0 must be greater than 0",
        ),
        (
            "target <= max concurrency",
            set(
                set(tf(), "autoscaling.max_replica_concurrency", "4"),
                "autoscaling.target_replica_concurrency",
                "8",
            ),
            "cortex.yaml: iris (AsyncAPI): autoscaling: target_replica_concurrency: target_replica_concurrency cannot be greater than max_replica_concurrency (8 > 4)",
        ),
        (
            "window >= 10s",
            set(tf(), "autoscaling.window", "5s"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: window: 5s must be greater than or equal to 10s",
        ),
        (
            "window multiple of 10s",
            set(tf(), "autoscaling.window", "15s"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: window: 15s is not a multiple of 10s",
        ),
        (
            "window duration",
            set(tf(), "autoscaling.window", "soon"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: window: \"soon\" is not a valid duration (e.g. 60s, 5m, 1h30m)",
        ),
        (
            "window is a string",
            set(tf(), "autoscaling.window", "60"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: window: invalid type (expected string, found the number 60)",
        ),
        (
            "stabilization >= 0",
            set(tf(), "autoscaling.downscale_stabilization_period", "-5m"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: downscale_stabilization_period: -5m must be greater than or equal to 0s",
        ),
        (
            "upscale stabilization duration",
            set(tf(), "autoscaling.upscale_stabilization_period", "1 minute"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: upscale_stabilization_period: \"1 minute\" is not a valid duration (e.g. 60s, 5m, 1h30m)",
        ),
        (
            "max_downscale_factor < 1",
            set(tf(), "autoscaling.max_downscale_factor", "1"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: max_downscale_factor: 1 must be less than 1",
        ),
        (
            "max_downscale_factor >= 0",
            set(tf(), "autoscaling.max_downscale_factor", "-0.5"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: max_downscale_factor: -0.5 must be greater than or equal to 0",
        ),
        (
            "max_upscale_factor > 1",
            set(tf(), "autoscaling.max_upscale_factor", "1"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: max_upscale_factor: 1 must be greater than 1",
        ),
        (
            "downscale_tolerance < 1",
            set(tf(), "autoscaling.downscale_tolerance", "1.5"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: downscale_tolerance: 1.5 must be less than 1",
        ),
        (
            "upscale_tolerance >= 0",
            set(tf(), "autoscaling.upscale_tolerance", "-0.1"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: upscale_tolerance: -0.1 must be greater than or equal to 0",
        ),
        (
            "factor is a number",
            set(tf(), "autoscaling.max_upscale_factor", "big"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: max_upscale_factor: invalid type (expected float, found the string \"big\")",
        ),
        (
            "autoscaling keys",
            set(tf(), "autoscaling.target", "1"),
            "cortex.yaml: iris (AsyncAPI): autoscaling: key \"target\" is not supported",
        ),
        // update_strategy
        (
            "surge and unavailable not both zero",
            set(
                set(tf(), "update_strategy.max_surge", "0"),
                "update_strategy.max_unavailable",
                "0%",
            ),
            "cortex.yaml: iris (AsyncAPI): update_strategy: max_surge and max_unavailable cannot both be zero",
        ),
        (
            "percent <= 100",
            set(tf(), "update_strategy.max_surge", "120%"),
            "cortex.yaml: iris (AsyncAPI): update_strategy: max_surge: \"120%\" must be a non-negative integer or a percentage between 0% and 100% (e.g. 25%)",
        ),
        (
            "int >= 0",
            set(tf(), "update_strategy.max_unavailable", "-1"),
            "cortex.yaml: iris (AsyncAPI): update_strategy: max_unavailable: \"-1\" must be a non-negative integer or a percentage between 0% and 100% (e.g. 25%)",
        ),
        (
            "update_strategy keys",
            set(tf(), "update_strategy.type", "Recreate"),
            "cortex.yaml: iris (AsyncAPI): update_strategy: key \"type\" is not supported",
        ),
        // networking
        (
            "endpoint not /",
            set(tf(), "networking.endpoint", "/"),
            "cortex.yaml: iris (AsyncAPI): networking: endpoint: \"/\" is not allowed (an endpoint cannot be \"/\")",
        ),
        (
            "endpoint no //",
            set(tf(), "networking.endpoint", "a//b"),
            "cortex.yaml: iris (AsyncAPI): networking: endpoint: \"a//b\" cannot contain adjacent slashes",
        ),
        (
            "endpoint characters",
            set(tf(), "networking.endpoint", "a b"),
            "cortex.yaml: iris (AsyncAPI): networking: endpoint: \"a b\" must contain only letters, numbers, underscores, dashes, periods, and slashes",
        ),
        (
            "endpoint length",
            set(tf(), "networking.endpoint", &"a".repeat(1001)),
            "cortex.yaml: iris (AsyncAPI): networking: endpoint: \"aaaaaaaaaaaaaaaaaaaa\"... must be no more than 1000 characters",
        ),
        (
            "endpoint reserved",
            set(tf(), "networking.endpoint", "/metrics/"),
            "cortex.yaml: iris (AsyncAPI): networking: endpoint: /metrics is reserved by the soma gateway (it serves /healthz, /readyz, /metrics)",
        ),
        (
            "endpoint under /_soma",
            set(tf(), "networking.endpoint", "/_SOMA/apis"),
            "cortex.yaml: iris (AsyncAPI): networking: endpoint: /_SOMA/apis lies under /_soma, which the soma gateway serves itself",
        ),
        (
            "endpoint dot segments",
            set(tf(), "networking.endpoint", "/a/../b"),
            "cortex.yaml: iris (AsyncAPI): networking: endpoint: \"/a/../b\" cannot contain \".\" or \"..\" path segments (HTTP clients remove them before sending, so the endpoint could not be reached)",
        ),
        (
            "networking keys",
            set(tf(), "networking.api_gateway", "none"),
            "cortex.yaml: iris (AsyncAPI): networking: key \"api_gateway\" is not supported",
        ),
    ]
}

#[test]
fn each_rule_reports_one_error_with_its_exact_path_and_message() {
    let mut failures = Vec::new();
    let cases = cases();
    for (rule, api, expected) in &cases {
        let dir = project();
        let yaml = to_yaml(std::slice::from_ref(api));
        let found: Vec<String> = match parse(&yaml, &dir.path().join("cortex.yaml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(relative).collect(),
        };
        let expected = expected.replace("PROJECT", &dir.path().display().to_string());
        if found != [expected.clone()] {
            failures.push(format!(
                "{rule}:\n  expected {expected:?}\n  found    {found:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rules failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn errors_carry_the_api_and_the_field_path_as_data() {
    let dir = project();
    let yaml = to_yaml(&[set(tf_api(), "handler.models.path", "gs://x")]);
    let errors = parse(&yaml, &dir.path().join("cortex.yaml")).unwrap_err();
    let [e] = errors.0.as_slice() else {
        panic!("{errors}")
    };
    assert_eq!(e.file, dir.path().join("cortex.yaml"));
    assert_eq!(e.api.as_deref(), Some("iris (AsyncAPI)"));
    assert_eq!(e.path, ["handler", "models", "path"]);
    assert_eq!(
        e.message,
        "\"gs://x\": unsupported scheme; use s3://bucket/prefix/ or a local path"
    );
}

#[test]
fn rules_between_apis() {
    let other = set(tf_api(), "name", "other");
    let found = errors_of(&to_yaml(&[
        tf_api(),
        set(tf_api(), "networking.endpoint", "/x"),
    ]));
    assert_eq!(
        found,
        [
            "cortex.yaml: iris (AsyncAPI): name: \"iris\" is defined more than once (API names must be unique)"
        ]
    );
    let found = errors_of(&to_yaml(&[
        tf_api(),
        set(other.clone(), "networking.endpoint", "iris/"),
    ]));
    assert_eq!(
        found,
        ["cortex.yaml: other (AsyncAPI): networking: endpoint: /iris is already used by API iris"]
    );
    let found = errors_of(&to_yaml(&[
        tf_api(),
        set(other.clone(), "networking.endpoint", "/iris/v2"),
    ]));
    assert_eq!(
        found,
        [
            "cortex.yaml: other (AsyncAPI): networking: endpoint: /iris/v2 clashes with /iris of API iris (the gateway polls workloads at <endpoint>/<id>)"
        ]
    );
    assert!(
        errors_of(&to_yaml(&[
            tf_api(),
            set(other, "networking.endpoint", "/iris/v2/x")
        ]))
        .is_empty()
    );
}

#[test]
fn several_errors_are_all_reported_in_schema_order() {
    let api = set(tf_api(), "compute.cpu", "1m");
    let api = set(api, "autoscaling.window", "5s");
    let api = set(api, "handler.log_level", "loud");
    let api = set(api, "surprise", "1");
    let second = set(set(tf_api(), "name", "b"), "kind", "BatchAPI");
    let found = errors_of(&to_yaml(&[api, second]));
    assert_eq!(
        found,
        [
            "cortex.yaml: iris (AsyncAPI): key \"surprise\" is not supported",
            "cortex.yaml: iris (AsyncAPI): handler: log_level: invalid value (got \"loud\", must be \"debug\", \"info\", \"warning\", or \"error\")",
            "cortex.yaml: iris (AsyncAPI): compute: cpu: 1m must be greater than or equal to 20m",
            "cortex.yaml: iris (AsyncAPI): autoscaling: window: 5s must be greater than or equal to 10s",
            "cortex.yaml: b (BatchAPI): kind: kind BatchAPI is not supported by soma (only AsyncAPI)",
        ]
    );
}

#[test]
fn malformed_or_misshapen_files() {
    let found = errors_of("- name: iris\n  kind: [AsyncAPI\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("cortex.yaml: invalid YAML: ") && found[0].contains("line 3"),
        "{found:?}"
    );
    assert_eq!(errors_of(""), ["cortex.yaml: no API is defined"]);
    assert_eq!(errors_of("[]"), ["cortex.yaml: no API is defined"]);
    assert_eq!(
        errors_of("just text"),
        ["cortex.yaml: invalid type (expected list of APIs, found the string \"just text\")"]
    );
    assert_eq!(
        errors_of("- 3\n"),
        ["cortex.yaml: api at index 0: invalid type (expected map, found the number 3)"]
    );
    let missing = tempfile::tempdir().unwrap().path().join("nope.yaml");
    let e = soma_config::load(&missing).unwrap_err();
    assert!(
        e.to_string().contains("nope.yaml: cannot read the file: "),
        "{e}"
    );
}

/// Every API runs in one Python interpreter: an environment variable two APIs set to
/// different values, or a module found in two APIs' `python_path` folders, would silently
/// reach the other API; such a file is refused. The same value, or the same folder, is fine.
#[test]
fn apis_share_one_interpreter() {
    let other = set(tf_api(), "name", "other");
    let other = set(other, "networking.endpoint", "/other");
    let found = errors_of(&to_yaml(&[
        set(tf_api(), "handler.env", "{WHO: a, SAME: x}"),
        set(other.clone(), "handler.env", "{WHO: b, SAME: x}"),
    ]));
    assert_eq!(
        found,
        [
            "cortex.yaml: other (AsyncAPI): handler: env: WHO: API iris sets WHO to another value, and os.environ is shared: soma runs every API of a cortex.yaml in one Python interpreter; run such APIs in separate soma processes (a cortex.yaml each)"
        ]
    );

    let dir = project();
    for folder in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join(folder).join("pkg")).unwrap();
        std::fs::write(dir.path().join(folder).join("helper.py"), "").unwrap();
    }
    std::fs::write(dir.path().join("a/only_a.py"), "").unwrap();
    let yaml = to_yaml(&[
        set(tf_api(), "handler.python_path", "a"),
        set(other.clone(), "handler.python_path", "b"),
    ]);
    let found: Vec<String> = match parse(&yaml, &dir.path().join("cortex.yaml")) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(relative).collect(),
    };
    let clash = |name: &str| {
        format!(
            "cortex.yaml: other (AsyncAPI): handler: python_path: module {name} is in b and in API iris's a, and imported modules are shared (both APIs would get the one imported first): rename one, or soma runs every API of a cortex.yaml in one Python interpreter; run such APIs in separate soma processes (a cortex.yaml each)"
        )
    };
    assert_eq!(found, [clash("helper"), clash("pkg")]);
    let same = to_yaml(&[
        set(tf_api(), "handler.python_path", "a"),
        set(other, "handler.python_path", "./a"),
    ]);
    parse(&same, &dir.path().join("cortex.yaml")).unwrap_or_else(|e| panic!("{e}"));

    // The project folder is on every API's path: a module there that one API's folder also
    // has would reach the other API from that folder.
    std::fs::write(dir.path().join("only_a.py"), "").unwrap();
    let found: Vec<String> = match parse(&same, &dir.path().join("cortex.yaml")) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(relative).collect(),
    };
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with(
            "cortex.yaml: iris (AsyncAPI): handler: python_path: module only_a is in a and in the project folder, which every API has on its path"
        ),
        "{found:?}"
    );
}
