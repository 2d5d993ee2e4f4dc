//! The REST API over a real ModelManager and real TensorFlow, request by request, compared
//! with what TF Serving answers (bodies and status codes from its sources and docs).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value, json};
use soma_core::json::quote_non_finite_tokens;
use soma_rest::{RestOptions, router};
use soma_runtime::hub::ModelConfig;
use soma_runtime::{ModelHub, ModelSet, StaticHub, VersionPolicy};
use soma_serving::{ManagerOptions, ModelManager};
use soma_testkit::{
    HttpConnection, HttpResponse, assert_outputs_match, expected_cases, fixtures, http,
    parse_answers, raw_post, send_raw,
};

const MODELS: [&str; 8] = [
    "iris",
    "iris_plain",
    "multi_io",
    "all_dtypes",
    "two_signatures",
    "predict_and_other",
    "ambiguous",
    "mlp1024",
];

struct Server {
    addr: String,
    _runtime: tokio::runtime::Runtime,
    _cache: tempfile::TempDir,
}

/// One server for the whole file: every fixture model, iris with all its versions and a
/// label `stable` on version 2.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cache = tempfile::tempdir().unwrap();
        let manager = ModelManager::new(ManagerOptions::new(cache.path().to_path_buf()));
        let configs = MODELS
            .iter()
            .map(|name| ModelConfig {
                name: name.to_string(),
                base_path: fixtures().join(name).display().to_string(),
                policy: if *name == "iris" {
                    VersionPolicy::All
                } else {
                    VersionPolicy::Latest(1)
                },
                labels: if *name == "iris" {
                    BTreeMap::from([("stable".to_string(), 2)])
                } else {
                    BTreeMap::new()
                },
            })
            .collect();
        runtime.block_on(manager.reload(configs)).unwrap();
        let options = RestOptions {
            body_limit: 1 << 20,
            ..RestOptions::default()
        };
        let hub: Arc<dyn ModelHub> = Arc::new(manager);
        let app = router(Arc::clone(&hub), options.clone());
        // As `soma tfserving` serves it: POSTs on a kept-alive connection take the quick
        // lane, the others hyper and the router; `post` sends each request both ways.
        let lane = soma_rest::predict_lane(hub, options);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let threading = soma_rest::Threading {
            threads: 2,
            busy_poll: Duration::ZERO,
            idle_timeout: None,
        };
        let shutdown = std::future::pending();
        runtime.spawn(soma_rest::serve_on_threads(
            listener, app, lane, threading, shutdown,
        ));
        Server {
            addr,
            _runtime: runtime,
            _cache: cache,
        }
    })
}

fn get(path: &str) -> HttpResponse {
    http(&server().addr, "GET", path, &[], b"").unwrap()
}

/// `body` posted twice: on a kept-alive connection (the quick lane answers if the request
/// is small) and with `Connection: close` (hyper and the router answer); the two answers
/// must be the same.
fn post(path: &str, body: &str) -> HttpResponse {
    post_bytes(path, body.as_bytes())
}

/// [`post`] of any bytes.
fn post_bytes(path: &str, body: &[u8]) -> HttpResponse {
    let headers = [("Content-Type", "application/json")];
    let addr = &server().addr;
    let mut connection = HttpConnection::connect(addr).unwrap();
    let kept_alive = connection.request("POST", path, &headers, body).unwrap();
    let closed = http(addr, "POST", path, &headers, body).unwrap();
    let head = |r: &HttpResponse| {
        let header = |name| r.header(name).map(str::to_owned);
        (r.status, header("content-type"), header("content-length"))
    };
    assert_eq!(head(&kept_alive), head(&closed), "{path}");
    assert_eq!(kept_alive.text(), closed.text(), "{path}");
    kept_alive
}

/// Parses a TF Serving body (bare NaN/Infinity allowed).
fn parse(response: &HttpResponse) -> Value {
    serde_json::from_str(&quote_non_finite_tokens(&response.text()))
        .unwrap_or_else(|e| panic!("{e}: {}", response.text()))
}

fn assert_error(response: HttpResponse, status: u16, message: &str) {
    assert_eq!(
        (response.status, response.text()),
        (status, format!("{{ \"error\": {} }}", json!(message))),
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
}

#[test]
fn model_status_is_tf_servings_json() {
    let response = get("/v1/models/iris/versions/2");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.text(),
        "{\n \"model_version_status\": [\n  {\n   \"version\": \"2\",\n   \"state\": \"AVAILABLE\",\n   \"status\": {\n    \"error_code\": \"OK\",\n    \"error_message\": \"\"\n   }\n  }\n ]\n}\n"
    );
    let all = parse(&get("/v1/models/iris"));
    let versions: Vec<&str> = all["model_version_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    // Newest first, as TF Serving lists them.
    assert_eq!(versions, ["10", "9", "2", "1"]);
    let labelled = parse(&get("/v1/models/iris/labels/stable"));
    assert_eq!(labelled["model_version_status"][0]["version"], "2");
    // Case-insensitive paths, as TF Serving's regexes.
    assert_eq!(get("/V1/MODELS/iris/VERSIONS/9").status, 200);
    // Outside the API: a JSON 404 that says where the API is.
    for (response, request) in [
        (get("/nope"), "GET /nope"),
        (
            post("/v2/models/iris/infer", "{}"),
            "POST /v2/models/iris/infer",
        ),
    ] {
        assert_error(
            response,
            404,
            &format!(
                "Not found: {request}: TF Serving's REST API is under /v1/models, health \
                 checks are /v2/health/live and /v2/health/ready, metrics /metrics"
            ),
        );
    }

    assert_error(
        get("/v1/models/nope"),
        404,
        "Could not find any versions of model nope",
    );
    assert_error(
        get("/v1/models/iris/versions/3"),
        404,
        "Could not find version 3 of model iris",
    );
    assert_error(
        get("/v1/models/iris/labels/canary"),
        400,
        "Unrecognized servable version label: canary",
    );
    assert_error(get("/v1/models"), 400, "Missing model name in request.");
    assert_error(
        get("/v1/models/iris/versions/x"),
        400,
        "Malformed request: GET /v1/models/iris/versions/x",
    );
}

#[test]
fn metadata_is_tf_servings_hand_glued_json() {
    let response = get("/v1/models/two_signatures/metadata");
    assert_eq!(response.status, 200);
    let tensor = |name: &str| {
        format!(
            "{{\n     \"dtype\": \"DT_FLOAT\",\n     \"tensor_shape\": {{\n      \"dim\": [\n       {{\n        \"size\": \"-1\",\n        \"name\": \"\"\n       }},\n       {{\n        \"size\": \"2\",\n        \"name\": \"\"\n       }}\n      ],\n      \"unknown_rank\": false\n     }},\n     \"name\": \"{name}\"\n    }}"
        )
    };
    let signature = |input: &str, output: &str| {
        format!(
            "{{\n   \"inputs\": {{\n    \"x\": {}\n   }},\n   \"outputs\": {{\n    \"y\": {}\n   }},\n   \"method_name\": \"tensorflow/serving/predict\",\n   \"defaults\": {{}}\n  }}",
            tensor(input),
            tensor(output)
        )
    };
    let text = response.text();
    let outputs: Value = parse(&response);
    let out = |sig: &str| {
        outputs["metadata"]["signature_def"]["signature_def"][sig]["outputs"]["y"]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // TensorFlow's own init op is listed too, as TF Serving lists every stored signature.
    let init_op = "{\n   \"inputs\": {},\n   \"outputs\": {\n    \"__saved_model_init_op\": {\n     \"dtype\": \"DT_INVALID\",\n     \"tensor_shape\": {\n      \"dim\": [],\n      \"unknown_rank\": true\n     },\n     \"name\": \"NoOp\"\n    }\n   },\n   \"method_name\": \"\",\n   \"defaults\": {}\n  }";
    let expected = format!(
        "{{\n\"model_spec\":{{\n \"name\": \"two_signatures\",\n \"signature_name\": \"\",\n \"version\": \"1\"\n}}\n,\n\"metadata\": {{\"signature_def\": {{\n \"signature_def\": {{\n  \"__saved_model_init_op\": {init_op},\n  \"serving_default\": {},\n  \"triple\": {}\n }}\n}}\n}}\n}}\n",
        signature("serving_default_x:0", &out("serving_default")),
        signature("triple_x:0", &out("triple")),
    );
    assert_eq!(text, expected);
    assert_error(
        get("/v1/models/nope/metadata"),
        404,
        "Servable not found for request: Latest(nope)",
    );
    assert_error(
        get("/v1/models/iris/versions/3/metadata"),
        404,
        "Servable not found for request: Specific(iris, 3)",
    );
}

#[test]
fn row_format_response_bytes_match_tf_serving() {
    let response = post(
        "/v1/models/two_signatures:predict",
        r#"{"instances": [[1.0, -2.0], [0.5, 3]]}"#,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.text(),
        "{\n    \"predictions\": [[2.0, -4.0], [1.0, 6.0]\n    ]\n}"
    );
    let columnar = post(
        "/v1/models/two_signatures:predict",
        r#"{"signature_name": "triple", "inputs": {"x": [[1.0, -2.0]]}}"#,
    );
    assert_eq!(
        columnar.text(),
        "{\n    \"outputs\": [\n        [\n            3.0,\n            -6.0\n        ]\n    ]\n}"
    );
    // Bare NaN/Infinity tokens in and out.
    let response = post(
        "/v1/models/two_signatures:predict",
        r#"{"instances": [[NaN, -Infinity]]}"#,
    );
    assert_eq!(
        response.text(),
        "{\n    \"predictions\": [[NaN, -Infinity]\n    ]\n}"
    );
    // Scores as TF Serving prints float32: six digits when they read back, else nine
    // (the shortest decimals that read back are 0.9726865, 0.024584923, 0.0027286054).
    let iris = post(
        "/v1/models/iris:predict",
        r#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#,
    );
    assert_eq!(
        iris.text(),
        "{\n    \"predictions\": [[0.972686529, 0.0245849229, 0.00272860541]\n    ]\n}"
    );
}

/// The inputs of an expected case in row format (each input split along dimension 0).
fn as_instances(inputs: &Map<String, Value>) -> Option<Value> {
    let rows = inputs.values().next()?.as_array()?.len();
    let mut instances = Vec::new();
    for row in 0..rows {
        let mut object = Map::new();
        for (name, value) in inputs {
            let items = value.as_array()?;
            if items.len() != rows {
                return None;
            }
            object.insert(name.clone(), items[row].clone());
        }
        instances.push(Value::Object(object));
    }
    Some(Value::Array(instances))
}

#[test]
fn every_fixture_case_equals_tensorflow_in_both_formats() {
    let mut checked = 0;
    for model in MODELS {
        for case in expected_cases(&fixtures().join(model)) {
            let path = if model == "iris" {
                format!("/v1/models/iris/versions/{}:predict", case.version)
            } else {
                format!("/v1/models/{model}:predict")
            };
            let context = format!("{model} v{} {}", case.version, case.signature);
            let body = json!({"signature_name": case.signature, "inputs": case.inputs});
            let response = post(&path, &body.to_string());
            assert_eq!(response.status, 200, "{context}: {}", response.text());
            let outputs = parse(&response)["outputs"].clone();
            let actual = match outputs {
                Value::Object(map) if case.outputs.len() > 1 => map,
                single => {
                    let name = case.outputs.keys().next().unwrap().clone();
                    Map::from_iter([(name, single)])
                }
            };
            assert_outputs_match(&actual, &case.outputs, &format!("{context} columnar"));

            let Some(instances) = as_instances(&case.inputs) else {
                continue;
            };
            let instances = match (case.inputs.len(), instances) {
                (1, Value::Array(rows)) => Value::Array(
                    rows.into_iter()
                        .map(|r| r.as_object().unwrap().values().next().unwrap().clone())
                        .collect(),
                ),
                (_, rows) => rows,
            };
            let body = json!({"signature_name": case.signature, "instances": instances});
            let response = post(&path, &body.to_string());
            assert_eq!(response.status, 200, "{context}: {}", response.text());
            let rows = parse(&response)["predictions"].as_array().unwrap().clone();
            let mut actual = Map::new();
            for name in case.outputs.keys() {
                let column = if case.outputs.len() == 1 {
                    rows.clone()
                } else {
                    rows.iter().map(|r| r[name].clone()).collect()
                };
                actual.insert(name.clone(), Value::Array(column));
            }
            assert_outputs_match(&actual, &case.outputs, &format!("{context} row"));
            checked += 1;
        }
    }
    assert!(
        checked >= 16,
        "only {checked} cases checked in both formats"
    );
}

#[test]
fn predict_errors_are_tf_servings() {
    let iris = "/v1/models/iris:predict";
    let multi = "/v1/models/multi_io:predict";
    assert_error(
        post(iris, ""),
        400,
        "JSON Parse error: The document is empty",
    );
    let bad = post(iris, "{\"instances\": [");
    assert_eq!(bad.status, 400);
    assert!(
        parse(&bad)["error"]
            .as_str()
            .unwrap()
            .starts_with("JSON Parse error: ")
    );
    assert_error(post(iris, "[1]"), 400, "JSON Parse error: Is not object");
    // A key given twice would mean one thing to soma and another to TF Serving: refused.
    assert_error(
        post(iris, r#"{"instances": [[1,2,3,4]], "instances": []}"#),
        400,
        "JSON Parse error: the key \"instances\" appears twice in one object at line 1 column 43",
    );
    assert_error(
        post(iris, r#"{"instances": [[1,2,3,4]], "inputs": [[1,2,3,4]]}"#),
        400,
        "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
    );
    assert_error(post(iris, "{}"), 400, "Missing 'inputs' or 'instances' key");
    assert_error(
        post(iris, r#"{"instances": {"x": 1}}"#),
        400,
        "Excepting 'instances' to be an list/array",
    );
    assert_error(
        post(iris, r#"{"instances": []}"#),
        400,
        "No values in 'instances' array",
    );
    assert_error(
        post(iris, r#"{"signature_name": 3, "instances": [[1,2,3,4]]}"#),
        400,
        "'signature_name' key must be a string value.",
    );
    assert_error(
        post(
            iris,
            r#"{"signature_name": "nope", "instances": [[1,2,3,4]]}"#,
        ),
        400,
        "Serving signature key \"nope\" not found.",
    );
    // predict_and_other has no serving_default: TF Serving needs the name.
    assert_error(
        post(
            "/v1/models/predict_and_other:predict",
            r#"{"instances": [[1,2]]}"#,
        ),
        400,
        "Serving signature key \"serving_default\" not found.",
    );
    assert_error(
        post(multi, r#"{"instances": [[1,2,3]]}"#),
        400,
        "instances is a plain list, but expecting list of objects as multiple input tensors required as per tensorinfo_map",
    );
    assert_error(
        post(
            multi,
            r#"{"instances": [{"features": [1,2,3], "ids": 1, "names": "a", "z": 1}]}"#,
        ),
        400,
        "Failed to process element: 0 key: z of 'instances' list. Error: JSON object: does not have named input: z",
    );
    assert_error(
        post(multi, r#"{"instances": [{"features": [1,2,3], "ids": 1}]}"#),
        400,
        "Failed to process element: 0 of 'instances' list. JSON object: {\"features\":[1,2,3],\"ids\":1} must only have keys: features,ids,names",
    );
    assert_error(
        post(
            multi,
            r#"{"instances": [{"features": [1,2,3], "ids": 1, "names": "a"}, [1]]}"#,
        ),
        400,
        "Expecting object but got list at item 1 of input list",
    );
    assert_error(
        post(iris, r#"{"instances": [[1,2,3,4], {"x": [1,2,3,4]}]}"#),
        400,
        "Expecting value/list but got object at item 1 of input list",
    );
    assert_error(
        post(multi, r#"{"inputs": [[1,2,3]]}"#),
        400,
        "inputs is a plain value/list, but expecting an object as multiple input tensors required as per tensorinfo_map",
    );
    assert_error(
        post(multi, r#"{"inputs": {"features": [[1,2,3]], "ids": [1]}}"#),
        400,
        "Missing named input: names in 'inputs' object.",
    );
    let wrong_type = post(iris, r#"{"instances": [["a", 2, 3, 4]]}"#);
    assert_eq!(wrong_type.status, 400, "{}", wrong_type.text());
    assert!(
        wrong_type.text().contains("input 'x'"),
        "{}",
        wrong_type.text()
    );

    assert_error(
        post("/v1/models/nope:predict", r#"{"instances": [1]}"#),
        404,
        "Servable not found for request: Latest(nope)",
    );
    assert_error(
        post(
            "/v1/models/iris/versions/3:predict",
            r#"{"instances": [1]}"#,
        ),
        404,
        "Servable not found for request: Specific(iris, 3)",
    );
    assert_error(
        post(
            "/v1/models/iris/labels/canary:predict",
            r#"{"instances": [1]}"#,
        ),
        400,
        "Unrecognized servable version label: canary",
    );
    let labelled = post(
        "/v1/models/iris/labels/stable:predict",
        r#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#,
    );
    assert_eq!(labelled.status, 200);
    assert_error(
        post("/v1/models/iris", "{}"),
        400,
        "Malformed request: POST /v1/models/iris",
    );
    assert_error(
        post("/v1/models/iris:classify", r#"{"examples": [{"x": 1}]}"#),
        400,
        "No classification inputs found in SignatureDef: expected an input named \"inputs\"",
    );
    assert_error(
        post("/v1/models/iris:regress", r#"{"examples": [{"x": 1}]}"#),
        400,
        "No regression inputs found in SignatureDef: expected an input named \"inputs\"",
    );
    let big = format!("{{\"instances\": [{}]}}", "1,".repeat(1 << 20));
    let response = post(iris, &big);
    assert_eq!(response.status, 413, "{}", response.text());
    assert!(
        response
            .text()
            .contains("larger than the limit of 1048576 bytes")
    );
}

/// A body whose Content-Length is over the limit is refused from the head alone: the
/// client is answered 413 without sending (or the server reading) the body.
#[test]
fn a_declared_length_over_the_limit_is_refused_before_the_body() {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(&server().addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: soma\r\n\
              Content-Type: application/json\r\nContent-Length: 300000000\r\n\r\n{",
        )
        .unwrap();
    let mut answer = vec![0; 4096];
    let n = stream
        .read(&mut answer)
        .expect("an answer before the body was sent");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("larger than the limit of 1048576 bytes"),
        "{answer}"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn post_encoded(path: &str, encoding: &str, body: &[u8]) -> HttpResponse {
    let headers = [
        ("Content-Type", "application/json"),
        ("Content-Encoding", encoding),
    ];
    http(&server().addr, "POST", path, &headers, body).unwrap()
}

#[test]
fn gzip_request_bodies_are_inflated_as_tf_serving_does() {
    let iris = "/v1/models/iris:predict";
    // Large enough to be inflated off the async threads, too.
    for rows in [1, 4000] {
        // Rows that differ, so that gzip cannot shrink them to nothing.
        let row = |i: usize| {
            let v = |k: usize| (i * 7919 + k * 104_729) % 100_003;
            format!("[{}e-4, {}e-4, {}e-4, {}e-4]", v(1), v(2), v(3), v(4))
        };
        let body = format!(
            "{{\"instances\": [{}]}}",
            (0..rows).map(row).collect::<Vec<_>>().join(",")
        );
        let plain = post(iris, &body);
        assert_eq!(plain.status, 200, "{}", plain.text());
        let compressed = gzip(body.as_bytes());
        assert_eq!(compressed.len() > 1024, rows > 1);
        let zipped = post_encoded(iris, "gzip", &compressed);
        assert_eq!((zipped.status, zipped.text()), (200, plain.text()));
    }
    let classify = post_encoded(
        "/v1/models/iris:classify",
        "gzip",
        &gzip(br#"{"examples": [{"x": [1, 2, 3, 4]}]}"#),
    );
    assert_eq!(
        classify.status, 400,
        "reached the signature check, inflated"
    );
    assert!(
        classify.text().contains("No classification inputs found"),
        "{}",
        classify.text()
    );

    // The limit (1 MiB here) holds for the inflated body: a bomb is refused, not inflated.
    let bomb = gzip(format!("{{\"instances\": [{}]}}", " ".repeat(4 << 20)).as_bytes());
    assert!(
        bomb.len() > 1024 && bomb.len() < 16 * 1024,
        "{}",
        bomb.len()
    );
    let response = post_encoded(iris, "gzip", &bomb);
    assert_eq!(response.status, 413, "{}", response.text());
    assert!(
        response
            .text()
            .contains("larger than the limit of 1048576 bytes once decompressed"),
        "{}",
        response.text()
    );
    assert_error(
        post_encoded(iris, "gzip", b"{\"instances\": [[1,2,3,4]]}"),
        400,
        "cannot decompress the gzip request body: invalid gzip header",
    );
    assert_error(
        post_encoded(iris, "br", b"..."),
        415,
        "Content-Encoding 'br' is not supported: send the body as is, or compressed with gzip",
    );
}

#[test]
fn health_and_metrics() {
    let live = get("/v2/health/live");
    assert_eq!((live.status, live.text()), (200, "{\"live\":true}".into()));
    let ready = get("/v2/health/ready");
    assert_eq!(
        (ready.status, ready.text()),
        (200, "{\"ready\":true}".into())
    );
    post(
        "/v1/models/iris:predict",
        r#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#,
    );
    post(
        "/v1/models/not-served-here:predict",
        r#"{"instances": [1]}"#,
    );
    let metrics = get("/metrics").text();
    // A model that is not served is counted without its name: clients cannot add series.
    assert!(!metrics.contains("not-served-here"), "{metrics}");
    assert!(
        metrics.contains(
            ":tensorflow:serving:request_count{API=\"predict\",entrypoint=\"REST\",model_name=\"\",status=\"NOT_FOUND\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            ":tensorflow:serving:request_count{API=\"predict\",entrypoint=\"REST\",model_name=\"iris\",status=\"OK\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            ":tensorflow:serving:request_latency_count{API=\"predict\",entrypoint=\"REST\",model_name=\"iris\"} "
        ),
        "{metrics}"
    );
    assert_eq!(get("/elsewhere").status, 404);
}

#[tokio::test]
async fn an_empty_hub_is_not_ready() {
    let hub: Arc<dyn ModelHub> = Arc::new(StaticHub::new(Arc::new(ModelSet::new("x", false))));
    let app = router(hub, RestOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let response = tokio::task::spawn_blocking(move || {
        http(&addr, "GET", "/v2/health/ready", &[], b"").unwrap()
    })
    .await
    .unwrap();
    assert_eq!(response.status, 503);
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_when_asked_for_and_not_otherwise() {
    let hub: Arc<dyn ModelHub> = Arc::new(StaticHub::new(Arc::new(ModelSet::new("x", false))));
    let options = RestOptions {
        cors: true,
        ..RestOptions::default()
    };
    // As `soma tfserving` serves it: the quick lane must leave CORS requests to the router.
    let app = router(Arc::clone(&hub), options.clone());
    let lane = soma_rest::predict_lane(hub, options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let threading = soma_rest::Threading {
        threads: 1,
        busy_poll: Duration::ZERO,
        idle_timeout: None,
    };
    let shutdown = std::future::pending();
    tokio::spawn(soma_rest::serve_on_threads(
        listener, app, lane, threading, shutdown,
    ));
    let (preflight, answer, kept_alive, closed) = tokio::task::spawn_blocking(move || {
        let origin = ("Origin", "https://app.example.com");
        let preflight = http(
            &addr,
            "OPTIONS",
            "/v1/models/iris:predict",
            &[
                origin,
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "content-type,content-encoding",
                ),
            ],
            b"",
        )
        .unwrap();
        let answer = http(&addr, "POST", "/v1/models/iris:predict", &[origin], b"{}").unwrap();
        let kept_alive = HttpConnection::connect(&addr)
            .unwrap()
            .request("POST", "/v1/models/iris:predict", &[origin], b"{}")
            .unwrap();
        // The shared server of the other tests runs without CORS.
        let closed = http(
            &server().addr,
            "POST",
            "/v1/models/iris:predict",
            &[origin],
            br#"{"instances": [[1, 2, 3, 4]]}"#,
        )
        .unwrap();
        (preflight, answer, kept_alive, closed)
    })
    .await
    .unwrap();

    assert_eq!(preflight.status, 200);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    let methods = preflight.header("access-control-allow-methods").unwrap();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let headers = preflight.header("access-control-allow-headers").unwrap();
    assert!(
        headers.contains("content-type") && headers.contains("content-encoding"),
        "{headers}"
    );
    // Errors carry the header too, so that a page can read them.
    assert_eq!(answer.status, 404, "{}", answer.text());
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
    assert_eq!(kept_alive.status, 404, "{}", kept_alive.text());
    assert_eq!(kept_alive.header("access-control-allow-origin"), Some("*"));

    assert_eq!(closed.status, 200);
    assert_eq!(closed.header("access-control-allow-origin"), None);
}

/// The router with `options`, serving fixture `dir`'s latest version as `name`, on hyper
/// alone (`axum::serve`) on a fresh port: its address, and the cache it loaded into.
async fn serve_model(name: &str, dir: &str, options: RestOptions) -> (String, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let manager = ModelManager::new(ManagerOptions::new(cache.path().to_path_buf()));
    let config = ModelConfig {
        name: name.into(),
        base_path: fixtures().join(dir).display().to_string(),
        policy: VersionPolicy::Latest(1),
        labels: BTreeMap::new(),
    };
    manager.reload(vec![config]).await.unwrap();
    let app = router(Arc::new(manager), options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_prediction_times_out_with_504() {
    let options = RestOptions {
        timeout: Duration::from_millis(1),
        ..RestOptions::default()
    };
    let (addr, _cache) = serve_model("mlp", "mlp1024", options).await;
    // 512 rows of 1024 values: parsing and running take far longer than 1 ms.
    let row: Vec<f32> = (0..1024).map(|i| i as f32 / 1024.0).collect();
    let body = json!({"instances": vec![row; 512]}).to_string();
    let response = tokio::task::spawn_blocking(move || {
        http(
            &addr,
            "POST",
            "/v1/models/mlp:predict",
            &[],
            body.as_bytes(),
        )
        .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        (response.status, response.text()),
        (
            504,
            "{ \"error\": \"Request timed out after 1 ms\" }".to_string()
        )
    );
}

/// Sends `request` on a new connection to `addr` and returns the first bytes of the answer
/// (within 10 s).
async fn first_answer(addr: String, request: &'static [u8]) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut answer = vec![0; 4096];
        let n = stream.read(&mut answer).expect("an answer");
        String::from_utf8_lossy(&answer[..n]).into_owned()
    })
    .await
    .unwrap()
}

/// A body whose length cannot be known (its Transfer-Encoding does not end with chunked) gets
/// 400 with a JSON error, and the connection closes (RFC 9112 §6.3): on soma's serving
/// threads, as `soma tfserving` serves REST.
#[test]
fn a_body_that_cannot_be_delimited_gets_400_and_the_connection_closes() {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(&server().addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: soma\r\n\
              Transfer-Encoding: identity\r\n\r\n{\"instances\": [[1, 2, 3, 4]]}",
        )
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(
        answer.contains("content-type: application/json\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with(
            "{ \"error\": \"Transfer-Encoding 'identity' does not end with chunked, so the \
             body's length cannot be known: send the body chunked or with a Content-Length \
             (compressed: Content-Encoding: gzip)\" }"
        ),
        "{answer}"
    );
}

/// A body that stops arriving gets 408 after the idle timeout, with TF Serving's error JSON,
/// instead of holding the connection for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408() {
    let manager = ModelManager::new(ManagerOptions::new(std::env::temp_dir()));
    let options = RestOptions {
        idle_timeout: Some(Duration::from_millis(300)),
        ..RestOptions::default()
    };
    let app = router(Arc::new(manager), options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let started = std::time::Instant::now();
    let answer = first_answer(
        addr,
        b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: soma\r\n\
          Content-Length: 100\r\n\r\n{\"instances\":",
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.ends_with("{ \"error\": \"the request body stalled: no bytes for 300 ms\" }"),
        "{answer}"
    );
}

/// iris served with `budget` and `timeout`; its address.
async fn serve_iris_with_budget(
    budget: &soma_rest::DecodeBudget,
    timeout: Duration,
) -> (String, tempfile::TempDir) {
    let options = RestOptions {
        timeout,
        decode_budget: Some(budget.clone()),
        ..RestOptions::default()
    };
    serve_model("iris", "iris", options).await
}

/// ~22 KB of iris rows: over the quick lane's 16 KiB, so it takes its share of the budget.
fn rows_over_the_quick_lane() -> String {
    let body = json!({"instances": vec![[5.1, 3.5, 1.4, 0.2]; 1000]}).to_string();
    assert!(body.len() > 16 * 1024);
    body
}

/// POSTs `body` to iris's `:predict` from a blocking thread.
fn send_to_iris(addr: String, body: String) -> tokio::task::JoinHandle<HttpResponse> {
    tokio::task::spawn_blocking(move || {
        http(
            &addr,
            "POST",
            "/v1/models/iris:predict",
            &[],
            body.as_bytes(),
        )
        .unwrap()
    })
}

/// A body over the quick lane's size waits for the decode budget once it is read; past its
/// deadline it gets 504, and it is answered once the budget is free again, which a client
/// sending its body slowly does not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_wait_for_the_decode_budget() {
    let budget = soma_rest::DecodeBudget::new(64 * 1024);
    let (addr, _cache) = serve_iris_with_budget(&budget, Duration::from_millis(300)).await;
    let body = rows_over_the_quick_lane();
    let everything = budget.reserve(64 * 1024).await;
    let waited = send_to_iris(addr.clone(), body.clone()).await.unwrap();
    let timed_out = "{ \"error\": \"Request timed out after 300 ms\" }";
    assert_eq!((waited.status, waited.text()), (504, timed_out.to_string()));
    drop(everything);
    // A client that declares a large body and sends it slowly (here: not at all) holds none
    // of the budget while it does: the budget is taken once a body has been read.
    let raw = addr.clone();
    let _slow = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(&raw).unwrap();
        stream
            .write_all(
                b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: soma\r\n\
                  Content-Length: 100000\r\n\r\n{",
            )
            .unwrap();
        stream
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answered = send_to_iris(addr, body).await.unwrap();
    assert_eq!(answered.status, 200, "{}", answered.text());
    assert_eq!(
        parse(&answered)["predictions"].as_array().unwrap().len(),
        1000
    );
}

/// A large request holding the decode budget (being decoded or run, for seconds when it is
/// tens of megabytes) does not hold up the smaller ones behind it: they have a share of
/// the budget of their own.
#[tokio::test]
async fn a_large_body_does_not_hold_up_small_ones() {
    // 4 MiB: bodies up to 64 KiB draw on their own MiB of it.
    let budget = soma_rest::DecodeBudget::new(4 << 20);
    let (addr, _cache) = serve_iris_with_budget(&budget, Duration::from_millis(2000)).await;
    let large = budget.reserve(100 << 20).await;
    // Held up, it would get a 504 once its deadline passed.
    let answered = send_to_iris(addr, rows_over_the_quick_lane())
        .await
        .unwrap();
    assert_eq!(answered.status, 200, "{}", answered.text());
    drop(large);
}

/// A gzip body is inflated under the decode budget, not before it: one that inflates past
/// the body limit waits for the budget like any large body (here past its deadline: 504)
/// instead of being inflated while the budget is taken, so concurrent bombs cannot take
/// the server past its memory. Once the budget is free it gets its 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_are_inflated_under_the_decode_budget() {
    let budget = soma_rest::DecodeBudget::new(64 * 1024);
    let options = RestOptions {
        timeout: Duration::from_millis(300),
        decode_budget: Some(budget.clone()),
        body_limit: 1 << 20,
        ..RestOptions::default()
    };
    let (addr, _cache) = serve_model("iris", "iris", options).await;
    let bomb = gzip(&vec![b' '; 4 << 20]);
    assert!(bomb.len() < 16 * 1024);
    let send = |addr: String, body: Vec<u8>| {
        tokio::task::spawn_blocking(move || {
            http(
                &addr,
                "POST",
                "/v1/models/iris:predict",
                &[("Content-Encoding", "gzip")],
                &body,
            )
            .unwrap()
        })
    };
    let everything = budget.reserve(64 * 1024).await;
    let waited = send(addr.clone(), bomb.clone()).await.unwrap();
    assert_eq!(waited.status, 504, "{}", waited.text());
    drop(everything);
    let refused = send(addr, bomb).await.unwrap();
    assert_eq!(refused.status, 413, "{}", refused.text());
}

/// What RFC 9112 requires and hyper lets through is refused with TF Serving's error JSON:
/// no `Host` in an HTTP/1.1 request or two (400), a transfer coding other than chunked (501).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_lets_through_are_refused_as_rfc_9112_says() {
    let (addr, _cache) = serve_model("iris", "iris", RestOptions::default()).await;
    let no_host = first_answer(
        addr.clone(),
        b"POST /v1/models/iris:predict HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await;
    assert!(no_host.starts_with("HTTP/1.1 400"), "{no_host}");
    assert!(no_host.contains("must have a Host header"), "{no_host}");
    let two_hosts = first_answer(
        addr.clone(),
        b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await;
    assert!(two_hosts.starts_with("HTTP/1.1 400"), "{two_hosts}");
    assert!(two_hosts.contains("one Host header, not 2"), "{two_hosts}");
    let gzip_chunked = first_answer(
        addr,
        b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: soma\r\n\
          Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    )
    .await;
    assert!(gzip_chunked.starts_with("HTTP/1.1 501"), "{gzip_chunked}");
    assert!(
        gzip_chunked.contains("Transfer-Encoding 'gzip, chunked' is not supported"),
        "{gzip_chunked}"
    );
}

/// Damaged copies of valid requests (seeded: bytes changed, runs cut, repeated or inserted,
/// the tail cut; 2,000 of them, a third after a valid request on the same connection, so
/// that the quick lane and hyper both read them, and the hand-off between them) never hang
/// the server, crash it or get a server error: each gets HTTP answers that are not 5xx (but
/// 505 for an HTTP version that is not 1.x), or its connection closed. Every request is
/// sent and then the client's side ended (a half-close): the valid ones are answered so.
/// Afterwards the server answers as before.
#[test]
fn damaged_requests_are_refused_or_answered_and_the_server_serves_on() {
    let addr = &server().addr;
    const JSON: &str = "application/json";
    let predict = r#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#;
    let before = post("/v1/models/iris:predict", predict);
    assert_eq!(before.status, 200);
    let valid = [
        raw_post("/v1/models/iris:predict", JSON, predict.as_bytes()),
        raw_post(
            "/v1/models/iris/versions/2:predict",
            JSON,
            br#"{"signature_name": "serving_default", "inputs": {"x": [[5.1, 3.5, 1.4, 0.2]]}}"#,
        ),
        raw_post(
            "/v1/models/all_dtypes:predict",
            JSON,
            br#"{"inputs": {"in_float16": [1.5], "in_bfloat16": [-2.0], "in_float32": [NaN],
                "in_float64": [-Infinity], "in_int8": [-128], "in_int16": [7], "in_int32": [7],
                "in_int64": [9223372036854775807], "in_uint8": [255], "in_uint16": [7],
                "in_uint32": [7], "in_uint64": [18446744073709551615], "in_bool": [true],
                "in_string": [{"b64": "aMOpbGxv"}]}}"#,
        ),
        b"GET /v1/models/iris/labels/stable/metadata HTTP/1.1\r\nHost: soma\r\n\r\n".to_vec(),
        format!(
            "POST /v1/models/iris:predict HTTP/1.1\r\nHost: soma\r\nTransfer-Encoding: \
             chunked\r\n\r\n{:x}\r\n{predict}\r\n0\r\n\r\n",
            predict.len()
        )
        .into_bytes(),
    ];
    let statuses = |raw: &[u8], context: &str| -> Vec<u16> {
        let answers = parse_answers(raw).unwrap_or_else(|e| panic!("{e}; {context}"));
        answers.iter().map(|a| a.status).collect()
    };
    let ten_seconds = Duration::from_secs(10);
    for request in &valid {
        let context = String::from_utf8_lossy(request);
        let answer = send_raw(addr, request, ten_seconds).expect("an answer");
        assert_eq!(statuses(&answer, &context), [200], "{context}");
    }
    let seed = 0x5eed_2026_1207;
    let mut mutator = soma_testkit::Mutator::new(seed);
    let mut seen = BTreeMap::<u16, usize>::new();
    for case in 0..2000 {
        let original = mutator.below(valid.len());
        let damaged = mutator.mutate(&valid[original]);
        let after_valid = mutator.below(3) == 0;
        let bytes = if after_valid {
            [valid[0].as_slice(), &damaged].concat()
        } else {
            damaged
        };
        let context = format!(
            "seed {seed:#x}, case {case}: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        let answer = send_raw(addr, &bytes, ten_seconds)
            .unwrap_or_else(|| panic!("no answer and no close within 10 s; {context}"));
        let found = statuses(&answer, &context);
        if after_valid {
            assert_eq!(found.first(), Some(&200), "{context}");
        }
        for status in found {
            assert!(status < 500 || status == 505, "{status}; {context}");
            *seen.entry(status).or_default() += 1;
        }
    }
    eprintln!("statuses of the damaged requests' answers: {seen:?}");
    // Most damage is refused; some (a digit changed) leaves a request that still works.
    assert!(seen.keys().any(|s| (400..500).contains(s)), "{seen:?}");
    let after = post("/v1/models/iris:predict", predict);
    assert_eq!((after.status, after.text()), (200, before.text()));
}

/// Damaged JSON bodies of valid predictions (seeded changes, cuts, repeats and noise, in
/// requests framed right) get the same answer from the quick lane and from hyper, and it is
/// a prediction or a 4xx with TF Serving's `{"error": ...}` body, never a server error.
#[test]
fn damaged_json_bodies_get_a_json_error_or_a_prediction() {
    let bodies = [
        r#"{"instances": [[5.1, 3.5, 1.4, 0.2], [6.0, 2.2, 5.0, 1.5]]}"#,
        r#"{"signature_name": "serving_default", "inputs": {"x": [[5.1, 3.5, 1.4, 0.2]]}}"#,
        r#"{"instances": [{"x": [5.1, 3.5, 1.4, 0.2]}]}"#,
    ];
    let seed = 0x5eed_2026_1207;
    let mut mutator = soma_testkit::Mutator::new(seed);
    let mut seen = BTreeMap::<u16, usize>::new();
    for case in 0..500 {
        let original = mutator.below(bodies.len());
        let damaged = mutator.mutate(bodies[original].as_bytes());
        let context = format!(
            "seed {seed:#x}, case {case}: {:?}",
            String::from_utf8_lossy(&damaged)
        );
        let answer = post_bytes("/v1/models/iris:predict", &damaged);
        match answer.status {
            200 => {
                let answer = parse(&answer);
                let result = answer.get("predictions").or(answer.get("outputs"));
                assert!(result.is_some(), "{context}: {answer}");
            }
            400..500 => {
                let error = parse(&answer);
                assert!(error["error"].is_string(), "{context}: {error}");
                assert_eq!(answer.header("content-type"), Some("application/json"));
            }
            status => panic!("{status} {}; {context}", answer.text()),
        }
        *seen.entry(answer.status).or_default() += 1;
    }
    eprintln!("statuses of the damaged bodies' answers: {seen:?}");
    assert!(seen.contains_key(&400), "{seen:?}");
}
