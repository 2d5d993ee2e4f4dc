//! Operations endpoints: `GET /_soma/apis` (per API: state, queue, status counts; what
//! `soma get` shows) and `DELETE /<endpoint>/<id>` (cancel a queued workload).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use soma_jobs::{CancelResult, Status, WorkloadId};

use crate::routes::{ApiRoute, Gateway, json_response};
use crate::{ApiError, ApiState};

/// Path of the per-API summary. Under `/_soma/` so it cannot shadow an API endpoint
/// (Cortex endpoints are DNS-like names).
pub const APIS_PATH: &str = "/_soma/apis";

/// `{"apis": [{"api", "endpoint", "state", "queued", "in_flight",
/// "oldest_queued_age_seconds", "counts": {status: n}}]}`. Counts come from the shared
/// backend, so they are exact whichever process ran the workloads.
pub(crate) async fn apis(State(gateway): State<Arc<Gateway>>) -> Result<Response, ApiError> {
    let mut apis = Vec::new();
    for route in &gateway.config.routes {
        let stats = gateway.backend.queue.stats(&route.api).await?;
        let counts = gateway.backend.states.counts(&route.api).await?;
        let state = match gateway.readiness.get(route.api.as_str()) {
            Some(ApiState::Ready) => "ready".to_string(),
            Some(ApiState::Starting) | None => "starting".to_string(),
            Some(ApiState::Failed(error)) => format!("failed: {error}"),
        };
        let counts: serde_json::Map<String, serde_json::Value> = Status::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), json!(counts.get(*s))))
            .collect();
        apis.push(json!({
            "api": route.api,
            "endpoint": route.endpoint,
            "state": state,
            "queued": stats.queued,
            "in_flight": stats.in_flight,
            "oldest_queued_age_seconds": stats.oldest_queued_age.map(|d| d.as_secs_f64()),
            "counts": counts,
        }));
    }
    Ok(json_response(
        StatusCode::OK,
        json!({ "apis": apis }).to_string(),
    ))
}

/// Cancels a workload no worker has started: 200 `{"id", "status": "cancelled"}`; 409 if it
/// is running (never interrupted) or already final; 404 if unknown.
pub(crate) async fn cancel(
    gateway: &Gateway,
    route: &ApiRoute,
    raw_id: &str,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("id {raw_id} not found"));
    let id = WorkloadId::parse(raw_id).map_err(|_| not_found())?;
    match gateway.backend.cancel(&route.api, &id).await? {
        CancelResult::Cancelled => Ok(json_response(
            StatusCode::OK,
            json!({ "id": id, "status": Status::Cancelled }).to_string(),
        )),
        CancelResult::Running => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("workload {id} is in_progress; running workloads are not interrupted"),
        )),
        CancelResult::AlreadyFinal(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("workload {id} already ended: {status}"),
        )),
        CancelResult::NotFound => Err(not_found()),
    }
}
