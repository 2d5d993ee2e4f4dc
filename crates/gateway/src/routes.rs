use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::json;
use soma_jobs::{ApiName, Backend, Status, WorkloadId, WorkloadRecord};
use soma_metrics::Registry;
use tokio::sync::Notify;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{ApiError, ApiState, Readiness};

/// One API reachable through the gateway.
#[derive(Debug, Clone)]
pub struct ApiRoute {
    pub api: ApiName,
    /// Canonical endpoint: leading `/`, no trailing `/` (e.g. `/iris`).
    pub endpoint: String,
}

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub routes: Vec<ApiRoute>,
    /// Largest accepted request body, in bytes (413 beyond it).
    pub body_limit: usize,
}

/// Everything the HTTP handlers share.
#[derive(Debug)]
pub struct Gateway {
    pub config: GatewayConfig,
    pub backend: Backend,
    pub readiness: Readiness,
    pub metrics: Registry,
    /// Woken after each submit so that in-process workers start at once instead of at
    /// their next poll.
    pub work_available: Arc<Notify>,
}

/// The gateway's routes. Endpoints are arbitrary paths from `cortex.yaml`, so they are
/// matched by the fallback handler rather than by the router's path syntax.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(crate::ops::APIS_PATH, get(crate::ops::apis))
        .fallback(dispatch)
        .layer(cors())
        .with_state(gateway)
}

/// CORS as Cortex's gateway configured it: any origin, credentials allowed.
fn cors() -> CorsLayer {
    let headers = [
        "content-type",
        "x-requested-with",
        "user-agent",
        "accept",
        "accept-language",
        "content-language",
        "origin",
    ];
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(headers.map(|h| h.parse().expect("static header name")))
        .expose_headers([header::CONTENT_LENGTH, header::CONTENT_RANGE])
}

async fn dispatch(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let path = request.uri().path().trim_end_matches('/').to_string();
    let method = request.method().clone();
    for route in &gateway.config.routes {
        let response = if path == route.endpoint {
            match method {
                Method::POST => submit(&gateway, route, request).await.into_response(),
                _ => method_not_allowed("POST"),
            }
        } else {
            let Some(id) = path
                .strip_prefix(route.endpoint.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
            else {
                continue;
            };
            if id.contains('/') {
                continue;
            }
            match method {
                Method::GET | Method::HEAD => status(&gateway, route, id).await.into_response(),
                Method::DELETE => crate::ops::cancel(&gateway, route, id)
                    .await
                    .into_response(),
                _ => method_not_allowed("GET, DELETE"),
            }
        };
        // Every answer of an API is counted, errors included.
        count_request(&gateway, route, method.as_str(), response.status());
        return response;
    }
    ApiError::new(StatusCode::NOT_FOUND, format!("no API at {path}")).into_response()
}

async fn submit(
    gateway: &Gateway,
    route: &ApiRoute,
    request: Request,
) -> Result<Response, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .filter(|v| !v.as_bytes().trim_ascii().is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing Content-Type key in request header",
            )
        })?;
    // The handler gets the type as a str; a media type is ASCII by definition.
    let content_type = content_type.to_str().map(str::to_string).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the Content-Type header is not ASCII text ({}): send a media type such as \
                 application/json",
                String::from_utf8_lossy(content_type.as_bytes())
            ),
        )
    })?;
    // The payload is stored and handed to the handler as sent; a compressed one would
    // reach it as bytes it cannot decode, so it is refused with the reason instead.
    if let Some(encoding) = request
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
        .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("identity"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Encoding '{encoding}' is not supported on an async API: send the \
                 payload uncompressed (the handler gets it as sent)"
            ),
        ));
    }
    let body = read_body(request.into_body(), gateway.config.body_limit).await?;
    let id = gateway
        .backend
        .submit(&route.api, &content_type, body)
        .await?;
    gateway.work_available.notify_waiters();
    Ok(json_response(
        StatusCode::OK,
        json!({ "id": id }).to_string(),
    ))
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over_limit {
            too_large()
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
        }
    })
}

async fn status(gateway: &Gateway, route: &ApiRoute, raw_id: &str) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("id {raw_id} not found"));
    let id = WorkloadId::parse(raw_id).map_err(|_| not_found())?;
    let (record, result) = gateway
        .backend
        .status(&route.api, &id)
        .await?
        .ok_or_else(not_found)?;
    Ok(json_response(
        StatusCode::OK,
        status_body(&record, result.as_deref())?,
    ))
}

/// `{"id","status"}` plus `result` + `timestamp` (completed) or `error` + `timestamp`
/// (failed, cancelled). The stored result is already JSON, so it is spliced in unparsed.
fn status_body(record: &WorkloadRecord, result: Option<&[u8]>) -> Result<String, ApiError> {
    let mut body = json!({ "id": record.id, "status": record.status.as_str() });
    let timestamp = record.finished_at.map(|t| t.to_rfc3339());
    match record.status {
        Status::Completed => {
            let raw = result
                .and_then(|r| std::str::from_utf8(r).ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the stored result is missing",
                    )
                })?;
            body["timestamp"] = json!(timestamp);
            let text = body.to_string();
            // `text` ends with '}': insert `"result":<raw>` before it.
            return Ok(format!("{},\"result\":{raw}}}", &text[..text.len() - 1]));
        }
        Status::Failed | Status::Cancelled => {
            body["error"] = json!(record.error);
            body["timestamp"] = json!(timestamp);
        }
        Status::InQueue | Status::InProgress => {}
    }
    Ok(body.to_string())
}

async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    let apis: serde_json::Map<String, serde_json::Value> = gateway
        .readiness
        .snapshot()
        .into_iter()
        .map(|(api, state)| {
            let value = match state {
                ApiState::Starting => json!({"state": "starting"}),
                ApiState::Ready => json!({"state": "ready"}),
                ApiState::Failed(error) => json!({"state": "failed", "error": error}),
            };
            (api, value)
        })
        .collect();
    // Ready also means the storage answers: a gateway on a shared backend that cannot reach
    // Redis would only answer 503 to submissions.
    let storage = match gateway.config.routes.first() {
        Some(route) => gateway.backend.queue.stats(&route.api).await.err(),
        None => None,
    };
    let ready = gateway.readiness.all_ready() && storage.is_none();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({ "ready": ready, "apis": apis });
    if let Some(error) = storage {
        body["storage"] = json!({ "error": error.to_string() });
    }
    json_response(code, body.to_string())
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    // Queue gauges are read at scrape time so they are exact whichever process enqueued.
    for route in &gateway.config.routes {
        let labels = [("api_name", route.api.as_str())];
        if let Ok(stats) = gateway.backend.queue.stats(&route.api).await {
            for (name, help, value) in stats.gauges() {
                let _ = gateway.metrics.gauge_set(name, help, &labels, value);
            }
        }
    }
    let mut response = gateway.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn count_request(gateway: &Gateway, route: &ApiRoute, method: &str, code: StatusCode) {
    let _ = gateway.metrics.counter_add(
        "soma_gateway_requests_total",
        "Gateway requests by API, method and status code.",
        &[
            ("api_name", route.api.as_str()),
            ("method", method),
            ("code", code.as_str()),
        ],
        1.0,
    );
}

pub(crate) fn json_response(code: StatusCode, body: String) -> Response {
    let mut response = (code, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn method_not_allowed(allowed: &'static str) -> Response {
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("use {allowed} here"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}
