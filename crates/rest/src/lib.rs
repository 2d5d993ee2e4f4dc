//! TensorFlow Serving's REST API over any [`ModelHub`], byte-compatible with
//! `tensorflow_model_server --rest_api_port` for the common requests.
//!
//! * `GET /v1/models/{m}[/versions/{v}|/labels/{l}]`: `GetModelStatusResponse` as JSON;
//!   `.../metadata`: the model spec and its `signature_def` map (`status.rs`).
//! * `POST ...:predict`: row (`instances`) and columnar (`inputs`) formats, responses
//!   `predictions` / `outputs` written with a port of rapidjson's pretty writer so that the
//!   bytes match TF Serving's (`writer.rs`); `{"b64": ...}` in, and out for outputs whose alias
//!   ends in `_bytes`; bare `NaN`/`Infinity` tokens in and out. Values go through
//!   `soma_core::json`, the same codec as every other soma API, except float32 and float64
//!   outputs, printed as TF Serving prints them (`decimal.rs`).
//! * `POST ...:classify` / `:regress` are answered for classification / regression
//!   signatures, checked as TF Serving checks them (`soma_runtime::signature_method`).
//! * Errors are `{ "error": "..." }` with the HTTP code from [`error::http_status`], the one
//!   place that maps status codes.
//! * `GET /v2/health/live`, `/v2/health/ready` (every model has an AVAILABLE version) and
//!   `/metrics` (Prometheus).
//! * Bodies sent with `Content-Encoding: gzip` are inflated before parsing, as TF Serving's
//!   HTTP layer does (`encoding.rs`); CORS answers only if [`RestOptions::cors`].
//!
//! Predictions run on tokio's blocking threads (TensorFlow calls block), bounded by
//! [`RestOptions::timeout`] (TF Serving's `--rest_api_timeout_in_ms`), except small requests
//! to a model whose runs take microseconds ([`soma_runtime::Servable::runs_quickly`]): those
//! are answered in place, because the hand-off to another thread would cost more than the
//! prediction. [`serve_on_threads`] serves the router on one thread per core, each keeping
//! its own connections (`threads.rs` says why), and answers small predictions in the quick
//! lane, without hyper ([`PredictLane`], `quick_lane.rs`).

mod budget;
mod classify;
mod deadline;
mod decimal;
mod document;
mod encoding;
pub mod error;
mod path;
mod predict;
mod quick_lane;
mod status;
mod threads;
mod writer;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use soma_core::ErrorKind;
use soma_metrics::{Entrypoint, Registry};
use soma_runtime::{ConcurrencyLimit, ModelHub, VersionSelector};

use crate::encoding::BodyEncoding;
use crate::error::{RestError, json_response};
use crate::path::Route;

pub use budget::DecodeBudget;
pub use quick_lane::{NoQuickLane, QUICK_BODY_LIMIT, QuickLane};
pub use soma_net::Threading;
pub use threads::serve_on_threads;

/// Limits and shared services of the REST front end.
#[derive(Debug, Clone)]
pub struct RestOptions {
    /// Largest accepted request body (413 beyond it).
    pub body_limit: usize,
    /// How much request body (over the quick lane's 16 KiB) may be decoded at once, for
    /// all requests together: see [`DecodeBudget`]. `None`: no bound.
    pub decode_budget: Option<DecodeBudget>,
    /// How long a prediction may take (504 beyond it); TF Serving's default is 30 s.
    pub timeout: Duration,
    /// A request body that sends nothing for this long gets 408, so a client that stops
    /// mid-body does not hold its connection (heads and idle connections are the serving
    /// threads', [`Threading::idle_timeout`]). `None`: wait for ever.
    pub idle_timeout: Option<Duration>,
    pub metrics: Registry,
    /// Another path for the Prometheus metrics of [`router`] besides `/metrics` (TF
    /// Serving's `--monitoring_config_file`, e.g. `/monitoring/prometheus/metrics`); must
    /// not be one of the API's own paths.
    pub prometheus_path: Option<String>,
    /// At most this many inference requests are processed at once; the others wait, within
    /// their timeout (TF Serving's `--rest_api_num_threads`). `None`: no limit.
    pub max_concurrent: Option<ConcurrencyLimit>,
    /// Let web pages of any origin call the API (TF Serving's
    /// `--rest_api_enable_cors_support`): CORS headers on every answer, and preflight
    /// `OPTIONS` requests answered.
    pub cors: bool,
    /// Check that a signature's `method_name` fits the API that runs it (TF Serving's
    /// `--enable_signature_method_name_check`, off by default; see
    /// [`soma_runtime::signature_method`]).
    pub check_signature_method_names: bool,
}

impl Default for RestOptions {
    fn default() -> RestOptions {
        RestOptions {
            body_limit: 64 * 1024 * 1024,
            decode_budget: Some(DecodeBudget::new(DEFAULT_DECODE_BUDGET)),
            timeout: Duration::from_secs(30),
            idle_timeout: Some(Threading::DEFAULT_IDLE_TIMEOUT),
            metrics: Registry::new(),
            prometheus_path: None,
            max_concurrent: None,
            cors: false,
            check_signature_method_names: false,
        }
    }
}

struct Rest {
    hub: Arc<dyn ModelHub>,
    options: RestOptions,
}

impl Rest {
    fn new(hub: Arc<dyn ModelHub>, options: RestOptions) -> Arc<Rest> {
        Arc::new(Rest { hub, options })
    }
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("models", &self.hub.models())
            .field("options", &self.options)
            .finish()
    }
}

/// The predictions [`router`] answers, in the quick lane of [`serve_on_threads`]:
/// `POST /v1/models/...:predict|classify|regress` with a small, uncompressed body, answered
/// exactly as the router answers them (same code, same metrics). Takes nothing when
/// [`RestOptions::cors`] is on (CORS headers are the router's).
pub fn predict_lane(hub: Arc<dyn ModelHub>, options: RestOptions) -> PredictLane {
    PredictLane(Rest::new(hub, options))
}

/// See [`predict_lane`].
#[derive(Debug)]
pub struct PredictLane(Arc<Rest>);

/// A prediction request's model, version and method, as [`PredictLane`] read them from the
/// path.
#[derive(Debug)]
pub struct InferRoute {
    model: String,
    version: VersionSelector,
    method: path::Method,
}

impl QuickLane for PredictLane {
    type Route = InferRoute;

    fn take(&self, path: &str, body_len: usize) -> Option<Self::Route> {
        let options = &self.0.options;
        if options.cors || body_len > options.body_limit {
            return None;
        }
        match path::parse(&Method::POST, path) {
            Ok(Route::Infer {
                model,
                version,
                method,
            }) => Some(InferRoute {
                model,
                version,
                method,
            }),
            _ => None,
        }
    }

    async fn answer(
        &self,
        InferRoute {
            model,
            version,
            method,
        }: InferRoute,
        body: Vec<u8>,
    ) -> (StatusCode, String) {
        let rest = &*self.0;
        let infer = infer(rest, &model, &version, method, body, BodyEncoding::Identity);
        match recorded(rest, &model, method, infer).await {
            Ok(body) => (StatusCode::OK, body),
            Err(e) => (e.status(), error::error_body(&e.message)),
        }
    }
}

/// The TF Serving paths and the health endpoints, to merge into another router (the
/// `serve` gateway, which has its own `/metrics`).
pub fn routes(hub: Arc<dyn ModelHub>, options: RestOptions) -> Router {
    stateful_routes().with_state(Rest::new(hub, options))
}

fn stateful_routes() -> Router<Arc<Rest>> {
    Router::new()
        .route("/v1/{*path}", any(dispatch))
        .route("/v1/models", any(dispatch))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
}

/// A complete server: [`routes`], `/metrics`, `/v1` paths in any letter case (TF Serving
/// matches them case-insensitively) and a JSON 404 for anything else.
pub fn router(hub: Arc<dyn ModelHub>, options: RestOptions) -> Router {
    let mut routes = stateful_routes();
    let extra = options
        .prometheus_path
        .as_deref()
        .filter(|p| *p != "/metrics");
    let metrics_paths = std::iter::once("/metrics").chain(extra);
    for path in metrics_paths {
        let metrics = options.metrics.clone();
        routes = routes.route(path, get(move || async move { prometheus(&metrics) }));
    }
    let cors = options.cors;
    let router = routes
        .fallback(any_case_v1)
        .with_state(Rest::new(hub, options));
    if cors {
        router.layer(cors_layer())
    } else {
        router
    }
}

/// Any origin may call the API from a browser, with the headers a prediction needs; no
/// credentials (the API has no cookies or authentication of its own).
fn cors_layer() -> tower_http::cors::CorsLayer {
    use tower_http::cors::{Any, CorsLayer};
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE, header::CONTENT_ENCODING])
        .max_age(Duration::from_secs(24 * 3600))
}

async fn any_case_v1(state: State<Arc<Rest>>, request: Request) -> Response {
    if request
        .uri()
        .path()
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("/v1/"))
    {
        dispatch(state, request).await
    } else {
        not_found(request.method(), request.uri().path()).into_response()
    }
}

/// A path outside the API: 404, with an error that says where the API is (TF Serving sends
/// an empty 404 here; a client that reads every error as JSON gets one it can parse).
fn not_found(method: &Method, path: &str) -> RestError {
    let mut error = RestError::new(
        soma_core::ErrorKind::NotFound,
        format!(
            "Not found: {method} {path}: TF Serving's REST API is under /v1/models, health \
             checks are /v2/health/live and /v2/health/ready, metrics /metrics"
        ),
    );
    error.http = Some(StatusCode::NOT_FOUND);
    error
}

fn prometheus(metrics: &Registry) -> Response {
    let mut response = metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn live() -> Response {
    json_response(StatusCode::OK, "{\"live\":true}".into())
}

/// Ready once every model has an AVAILABLE version (and there is at least one model).
async fn ready(State(rest): State<Arc<Rest>>) -> Response {
    let ready = rest.hub.is_ready();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(code, format!("{{\"ready\":{ready}}}"))
}

async fn dispatch(State(rest): State<Arc<Rest>>, request: Request) -> Response {
    // The request taken apart, not extracted piece by piece: extracting the headers would
    // copy them.
    let (parts, body) = request.into_parts();
    if let Err(e) = check_framing(&parts) {
        return e.into_response();
    }
    match handle(&rest, &parts.method, parts.uri.path(), &parts.headers, body).await {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => e.into_response(),
    }
}

/// What RFC 9112 requires of a request's head that hyper lets through: an HTTP/1.1 request
/// names its `Host`, once (400 otherwise, §3.2), and a body in a transfer coding the server
/// does not know gets 501 (§6.1: hyper de-chunks `gzip, chunked` and passes the gzip on as is).
fn check_framing(parts: &axum::http::request::Parts) -> Result<(), RestError> {
    let hosts = parts.headers.get_all(header::HOST).iter().count();
    if parts.version == axum::http::Version::HTTP_11 && hosts == 0 {
        return Err(RestError::invalid(
            "an HTTP/1.1 request must have a Host header",
        ));
    }
    if hosts > 1 {
        return Err(RestError::invalid(format!(
            "a request must have one Host header, not {hosts}"
        )));
    }
    for value in parts.headers.get_all(header::TRANSFER_ENCODING) {
        let codings = String::from_utf8_lossy(value.as_bytes());
        if !codings.trim().eq_ignore_ascii_case("chunked") {
            let mut error = RestError::invalid(format!(
                "Transfer-Encoding '{codings}' is not supported: send the body chunked or \
                 with a Content-Length (compressed: Content-Encoding: gzip)"
            ));
            error.http = Some(StatusCode::NOT_IMPLEMENTED);
            return Err(error);
        }
    }
    Ok(())
}

async fn handle(
    rest: &Rest,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<String, RestError> {
    match path::parse(method, path)? {
        Route::Status { model, version } => {
            let versions = rest.hub.status(&model, version.as_ref())?;
            Ok(status::status_json(&versions))
        }
        Route::Metadata { model, version } => {
            let servable = rest.hub.servable(&model, &version)?;
            Ok(status::metadata_json(&model, &servable))
        }
        Route::Infer {
            model,
            version,
            method,
        } => {
            let infer = async {
                let encoding = BodyEncoding::of(headers)?;
                // Read before the decode budget is reserved: a client that sends its body
                // slowly must not hold the budget while it does.
                let body = read_body(body, &rest.options).await?;
                infer(rest, &model, &version, method, body, encoding).await
            };
            recorded(rest, &model, method, infer).await
        }
    }
}

/// `body` predicted, classified or regressed.
async fn infer(
    rest: &Rest,
    model: &str,
    version: &VersionSelector,
    method: path::Method,
    body: Vec<u8>,
    encoding: BodyEncoding,
) -> Result<String, RestError> {
    let servable = rest.hub.servable(model, version)?;
    let deadline = std::time::Instant::now() + rest.options.timeout;
    // Held until the prediction ends (moved into the blocking task if there is one).
    let permit = match &rest.options.max_concurrent {
        None => None,
        Some(limit) => match tokio::time::timeout_at(deadline.into(), limit.acquire()).await {
            Ok(permit) => Some(permit),
            Err(_) => return Err(timed_out(rest.options.timeout)),
        },
    };
    // Held, like `permit`, until the answer is written. A compressed body is inflated
    // under it, so concurrent small bombs cannot take the server past its memory.
    let (body, reservation) = match encoding {
        BodyEncoding::Identity => {
            let reservation = reserve(rest, body.len(), deadline).await?;
            (body, reservation)
        }
        BodyEncoding::Gzip => inflate_reserved(rest, body, deadline).await?,
    };
    // Parsing, a TensorFlow run of at most `QUICK_RUN` and printing take less than handing
    // the work to another thread and back would.
    let small = body.len() <= INLINE_BODY_LIMIT;
    let check = rest.options.check_signature_method_names;
    if small && method == path::Method::Predict && servable.may_answer_now() {
        return predict::predict_in_place(&servable, &body, check).await;
    }
    let in_place = small && servable.runs_quickly();
    let run = move || {
        let _permit = permit;
        let _reservation = reservation;
        match method {
            path::Method::Predict => predict::predict(&servable, &body, deadline, check),
            path::Method::Classify => classify::classify(&servable, &body, check),
            path::Method::Regress => classify::regress(&servable, &body, check),
        }
    };
    if in_place {
        return run();
    }
    let task = tokio::task::spawn_blocking(run);
    // The deadline, not a fresh timeout: time spent waiting for a permit counts.
    match tokio::time::timeout_at(deadline.into(), task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(RestError::new(
            ErrorKind::Internal,
            format!("the prediction task failed: {join}"),
        )),
        Err(_) => Err(timed_out(rest.options.timeout)),
    }
}

/// A gzip body inflated under a reservation of the decode budget: first for the size its
/// trailer announces (at least the compressed size); a body that inflates to more (a
/// trailer that lies, concatenated members) gives that back and is inflated again under a
/// reservation of the body limit, so it runs alone when the limit is above the budget.
async fn inflate_reserved(
    rest: &Rest,
    body: Vec<u8>,
    deadline: std::time::Instant,
) -> Result<(Vec<u8>, Option<tokio::sync::OwnedSemaphorePermit>), RestError> {
    let limit = rest.options.body_limit;
    let announced = encoding::gzip_announced_len(&body).clamp(body.len(), limit);
    let body = Arc::new(body);
    let caps = if announced < limit {
        vec![announced, limit]
    } else {
        vec![limit]
    };
    for cap in caps {
        let reservation = reserve(rest, cap, deadline).await?;
        let compressed = Arc::clone(&body);
        let inflate = move || encoding::inflate_gzip(&compressed, cap);
        let inflated = if body.len() <= INLINE_GZIP_LIMIT {
            inflate()?
        } else {
            // Inflating megabytes takes milliseconds: not on an async thread.
            tokio::task::spawn_blocking(inflate)
                .await
                .map_err(|join| {
                    RestError::new(
                        ErrorKind::Internal,
                        format!("the decompression task failed: {join}"),
                    )
                })??
        };
        if let Some(inflated) = inflated {
            return Ok((inflated, reservation));
        }
    }
    Err(encoding::too_large_inflated(limit))
}

/// Reserves `bytes` from the decode budget, if there is one and the body is larger than
/// the quick lane's; waits until `deadline` at most (then DEADLINE_EXCEEDED).
async fn reserve(
    rest: &Rest,
    bytes: usize,
    deadline: std::time::Instant,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, RestError> {
    match &rest.options.decode_budget {
        Some(budget) if bytes > INLINE_BODY_LIMIT => {
            match tokio::time::timeout_at(deadline.into(), budget.reserve(bytes)).await {
                Ok(reservation) => Ok(Some(reservation)),
                Err(_) => Err(timed_out(rest.options.timeout)),
            }
        }
        _ => Ok(None),
    }
}

fn timed_out(timeout: Duration) -> RestError {
    RestError::new(
        ErrorKind::DeadlineExceeded,
        format!("Request timed out after {} ms", timeout.as_millis()),
    )
}

/// The default [`RestOptions::decode_budget`]: 64 MiB of bodies decoded together, which
/// took ~2.4 GB at the peak in the audit's measurements (35–40× for dense JSON arrays);
/// a body larger than the large bodies' 48 MiB, up to the body limit, runs alone among
/// them (bodies up to 1 MiB keep the other 16 MiB: [`DecodeBudget`]).
pub const DEFAULT_DECODE_BUDGET: usize = 64 << 20;

/// Requests up to this size on a [quick](soma_runtime::Servable::runs_quickly) model are
/// answered on the async thread that read them (JSON parsing is ~1 µs per 100 bytes).
const INLINE_BODY_LIMIT: usize = 16 * 1024;

/// Gzip bodies up to this size are inflated on the async thread that read them. Deflate
/// expands at most ~1,000×, so this bounds the work to about a megabyte (a millisecond),
/// where a 16 KiB body could hold a bomb of 16 MB.
const INLINE_GZIP_LIMIT: usize = 1024;

/// Reads the whole body, up to the body limit (413 beyond); 408 if it stalls for the idle
/// timeout.
async fn read_body(body: Body, options: &RestOptions) -> Result<Vec<u8>, RestError> {
    use http_body_util::BodyExt as _;
    let limit = options.body_limit;
    let too_large = || {
        let mut error = RestError::invalid(format!(
            "the request body is larger than the limit of {limit} bytes"
        ));
        error.http = Some(StatusCode::PAYLOAD_TOO_LARGE);
        error
    };
    // A Content-Length over the limit is refused before a byte of the body is read.
    let declared = axum::body::HttpBody::size_hint(&body).lower();
    if declared > limit as u64 {
        return Err(too_large());
    }
    let mut body = std::pin::pin!(http_body_util::Limited::new(body, limit));
    // Sized once from the Content-Length: growing a large body by doubling maps fresh pages
    // several times over, which is most of a large request's time on a VM.
    let mut bytes = Vec::with_capacity(declared as usize);
    loop {
        let frame = match deadline::within(options.idle_timeout, body.frame()).await {
            Some(None) => return Ok(bytes),
            Some(Some(frame)) => frame,
            None => {
                let stall = options.idle_timeout.unwrap_or_default();
                let mut error = RestError::new(
                    ErrorKind::DeadlineExceeded,
                    format!(
                        "the request body stalled: no bytes for {} ms",
                        stall.as_millis()
                    ),
                );
                error.http = Some(StatusCode::REQUEST_TIMEOUT);
                return Err(error);
            }
        };
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
            Err(e) => {
                return Err(RestError::invalid(format!(
                    "cannot read the request body: {e}"
                )));
            }
        }
    }
}

/// `infer`'s result, its outcome and duration recorded in the metrics.
async fn recorded(
    rest: &Rest,
    model: &str,
    method: path::Method,
    infer: impl Future<Output = Result<String, RestError>>,
) -> Result<String, RestError> {
    let started = Instant::now();
    let result = infer.await;
    record(rest, model, method, &result, started);
    result
}

fn record(
    rest: &Rest,
    model: &str,
    method: path::Method,
    result: &Result<String, RestError>,
    started: Instant,
) {
    let api = match method {
        path::Method::Predict => "predict",
        path::Method::Classify => "classify",
        path::Method::Regress => "regress",
    };
    let status = match result {
        Ok(_) => "OK",
        Err(e) => e.kind.as_str(),
    };
    // A success names a served model; only a failure may name anything at all.
    let model = match result {
        Ok(_) => model,
        Err(_) => rest.hub.metrics_name(model),
    };
    rest.options
        .metrics
        .record_request(Entrypoint::Rest, model, api, status, started.elapsed());
}
