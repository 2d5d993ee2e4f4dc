//! `DELETE /<endpoint>/<id>` (cancel) and `GET /_soma/apis`, in-process over the memory
//! backend.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use soma_gateway::{APIS_PATH, ApiState, Gateway, router};
use soma_jobs::ApiName;
use tower::ServiceExt as _;

fn gateway() -> Arc<Gateway> {
    common::gateway(ApiState::Ready)
}

async fn call(
    gw: &Arc<Gateway>,
    method: &str,
    path: &str,
    body: &'static str,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = router(gw.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn delete_cancels_queued_but_not_running_or_final() {
    let gw = gateway();
    let (_, queued) = call(&gw, "POST", "/team/iris", "{}").await;
    let queued = queued["id"].as_str().unwrap().to_string();
    let (_, running) = call(&gw, "POST", "/team/iris", "{}").await;
    let running = running["id"].as_str().unwrap().to_string();

    // Claim the first-submitted one (FIFO) so it is running; cancel the second.
    let api = ApiName::parse("iris").unwrap();
    let claimed = gw
        .backend
        .claim(&api, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.lease.id.as_str(), queued);
    let (status, body) = call(&gw, "DELETE", &format!("/team/iris/{running}"), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancelled");
    let (_, body) = call(&gw, "GET", &format!("/team/iris/{running}"), "").await;
    assert_eq!(body["status"], "cancelled");
    assert!(
        gw.backend
            .claim(&api, Duration::from_secs(60))
            .await
            .unwrap()
            .is_none(),
        "a cancelled workload is never handed out"
    );

    let (status, body) = call(&gw, "DELETE", &format!("/team/iris/{queued}"), "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("in_progress"),
        "{body}"
    );
    let (status, body) = call(&gw, "DELETE", &format!("/team/iris/{running}"), "").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("already ended: cancelled"),
        "{body}"
    );
    let unknown = "6f1c8a52-9f0e-4d5b-8c1a-2b3c4d5e6f70";
    let (status, _) = call(&gw, "DELETE", &format!("/team/iris/{unknown}"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&gw, "DELETE", "/team/iris", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn apis_summary_has_queue_and_counts() {
    let gw = gateway();
    for _ in 0..3 {
        call(&gw, "POST", "/team/iris", "{}").await;
    }
    let api = ApiName::parse("iris").unwrap();
    gw.backend
        .claim(&api, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let (status, body) = call(&gw, "GET", APIS_PATH, "").await;
    assert_eq!(status, StatusCode::OK);
    let iris = &body["apis"][0];
    assert_eq!(iris["api"], "iris");
    assert_eq!(iris["endpoint"], "/team/iris");
    assert_eq!(iris["state"], "ready");
    assert_eq!(iris["queued"], 2);
    assert_eq!(iris["in_flight"], 1);
    assert!(iris["oldest_queued_age_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(iris["counts"]["in_queue"], 2);
    assert_eq!(iris["counts"]["in_progress"], 1);
    assert_eq!(iris["counts"]["completed"], 0);
}
