//! The gateway's HTTP contract, driven in-process (no socket) over the in-memory backend.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use serde_json::{Value, json};
use soma_gateway::{ApiState, Gateway, router};
use soma_jobs::{ApiName, Outcome};
use tower::ServiceExt as _;

fn gateway() -> Arc<Gateway> {
    common::gateway(ApiState::Starting)
}

async fn call(gw: &Arc<Gateway>, request: Request<Body>) -> (StatusCode, String, Option<String>) {
    let response = router(gw.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        String::from_utf8(body.to_vec()).unwrap(),
        content_type,
    )
}

fn post(path: &str, content_type: Option<&str>, body: &'static str) -> Request<Body> {
    let mut builder = Request::post(path);
    if let Some(ct) = content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    builder.body(Body::from(body)).unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

async fn submit(gw: &Arc<Gateway>, body: &'static str) -> String {
    let (status, text, content_type) =
        call(gw, post("/team/iris", Some("application/json"), body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let value: Value = serde_json::from_str(&text).unwrap();
    value["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn submit_poll_and_complete() {
    let gw = gateway();
    let id = submit(&gw, r#"{"x": 1}"#).await;
    let (status, text, _) = call(&gw, get(&format!("/team/iris/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"id": id, "status": "in_queue"})
    );

    let api = ApiName::parse("iris").unwrap();
    let claimed = gw
        .backend
        .claim(&api, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.payload, Bytes::from_static(br#"{"x": 1}"#));
    assert_eq!(claimed.content_type, "application/json");
    let (_, text, _) = call(&gw, get(&format!("/team/iris/{id}"))).await;
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["status"],
        "in_progress"
    );

    let result = Bytes::from_static(br#"{"label":"setosa"}"#);
    gw.backend
        .complete(&claimed, Outcome::Completed { result })
        .await
        .unwrap();
    let (status, text, _) = call(&gw, get(&format!("/team/iris/{id}/"))).await;
    assert_eq!(status, StatusCode::OK);
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["status"], "completed");
    assert_eq!(value["result"], json!({"label": "setosa"}));
    assert!(
        value["timestamp"].as_str().unwrap().ends_with('Z'),
        "{value}"
    );
}

#[tokio::test]
async fn failed_workloads_carry_their_error() {
    let gw = gateway();
    let id = submit(&gw, "{}").await;
    let api = ApiName::parse("iris").unwrap();
    let claimed = gw
        .backend
        .claim(&api, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let error = "ValueError: bad input".to_string();
    gw.backend
        .complete(&claimed, Outcome::Failed { error })
        .await
        .unwrap();
    let (_, text, _) = call(&gw, get(&format!("/team/iris/{id}"))).await;
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["status"], "failed");
    assert_eq!(value["error"], "ValueError: bad input");
}

#[tokio::test]
async fn request_errors_are_json_with_the_right_code() {
    let gw = gateway();
    let (status, text, content_type) = call(&gw, post("/team/iris", None, "x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        text,
        r#"{"error":"missing Content-Type key in request header"}"#
    );
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let mut latin1 = post("/team/iris", None, "x");
    latin1.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_bytes(b"text/caf\xe9").unwrap(),
    );
    let (status, text, _) = call(&gw, latin1).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        text,
        "{\"error\":\"the Content-Type header is not ASCII text (text/caf\u{fffd}): send a \
         media type such as application/json\"}"
    );

    let mut gzipped = post("/team/iris", Some("application/json"), "{}");
    gzipped
        .headers_mut()
        .insert("content-encoding", "gzip".parse().unwrap());
    let (status, text, _) = call(&gw, gzipped).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{text}");
    assert!(
        text.contains("Content-Encoding 'gzip' is not supported"),
        "{text}"
    );

    let big = "x".repeat(65).leak();
    let (status, text, _) = call(&gw, post("/team/iris", Some("text/plain"), big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains("larger than the limit of 64 bytes"));

    let unknown = "6f1c8a52-9f0e-4d5b-8c1a-2b3c4d5e6f70";
    let (status, text, _) = call(&gw, get(&format!("/team/iris/{unknown}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(text, format!(r#"{{"error":"id {unknown} not found"}}"#));
    let (status, _, _) = call(&gw, get("/team/iris/not-a-uuid")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = call(&gw, get("/elsewhere")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = call(&gw, get("/team/iris")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let gw = gateway();
    assert_eq!(call(&gw, get("/healthz")).await.0, StatusCode::OK);
    let (status, text, _) = call(&gw, get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["apis"]["iris"]["state"],
        "starting"
    );
    gw.readiness
        .set("iris", ApiState::Failed("Handler.__init__ raised".into()));
    let (_, text, _) = call(&gw, get("/readyz")).await;
    assert!(text.contains("Handler.__init__ raised"));
    gw.readiness.set("iris", ApiState::Ready);
    assert_eq!(call(&gw, get("/readyz")).await.0, StatusCode::OK);

    submit(&gw, "{}").await;
    // Errors are counted too, with their codes: an unknown id, a DELETE of one.
    assert_eq!(
        call(&gw, get("/team/iris/nope")).await.0,
        StatusCode::NOT_FOUND
    );
    let delete = Request::builder()
        .method("DELETE")
        .uri("/team/iris/nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&gw, delete).await.0, StatusCode::NOT_FOUND);
    let (status, text, content_type) = call(&gw, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.unwrap().starts_with("text/plain"));
    assert!(
        text.contains("soma_async_queued{api_name=\"iris\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "soma_gateway_requests_total{api_name=\"iris\",code=\"200\",method=\"POST\"} 1"
        ),
        "{text}"
    );
    for method in ["GET", "DELETE"] {
        let line = format!(
            "soma_gateway_requests_total{{api_name=\"iris\",code=\"404\",method=\"{method}\"}} 1"
        );
        assert!(text.contains(&line), "{line}\n{text}");
    }
}

#[tokio::test]
async fn cors_preflight_is_answered() {
    let gw = gateway();
    let request = Request::options("/team/iris")
        .header(header::ORIGIN, "https://app.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Body::empty())
        .unwrap();
    let response = router(gw).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
}
