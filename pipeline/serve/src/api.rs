//! The HTTP API: versioned JSON over the [`PersonaStore`], with bearer-token auth, validated
//! parameters and limits.
//!
//! | route | answers |
//! |---|---|
//! | `GET /` | the dashboard ([`crate::dashboard`]; its script and style at `/dashboard.js` and `/dashboard.css`; no auth: the page holds no data, and asks for a token if the API needs one) |
//! | `GET /healthz` | the process is up (no auth) |
//! | `GET /readyz` | the store is loaded (no auth; 503 until then) |
//! | `GET /metrics` | Prometheus: requests and latency per route (no auth) |
//! | `GET /openapi.json` | the OpenAPI 3.1 document of all this ([`crate::openapi`]; no auth) |
//! | `GET /v1/users/{id}` | the user's latest view ([`PersonaStore::user`]) |
//! | `GET /v1/users/{id}/history?from&to` | the user's kept windows in the range |
//! | `POST /v1/users/{id}/feedback` | a service's report of the user ([`crate::feedback`]): 202 |
//! | `POST /v1/users:batchGet` | `{"ids": [...]}` (at most [`MAX_BATCH_IDS`]): `users`, `missing` |
//! | `GET /v1/segments` | each segment's latest profile |
//! | `GET /v1/personas` | the latest window's personas |
//! | `GET /v1/drift?from&to` | drift events and their scaling recommendations |
//! | `GET /v1/timeline?points` | the dashboard's series: resonance, segment sizes, forecast error per window, in at most `points` buckets; the persona map ([`crate::timeline`]) |
//! | `GET /v1/tables` | the tables, their columns, and whether the run has them |
//! | `GET /v1/tables/{table}?from&to&user&segment&columns&format&limit` | a table, streamed ([`crate::download`]) |
//!
//! Times (`from`, `to`) are epoch milliseconds or RFC 3339. A bad request gets 400 and
//! `{"error": {"status": 400, "parameter": "...", "message": "..."}}`; an unknown user 404.

use crate::metrics::RouteMetrics;
use crate::store::PersonaStore;
use axum::body::Body;
use axum::extract::MatchedPath;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Most ids in one `batchGet`.
pub const MAX_BATCH_IDS: usize = 1_000;
/// Largest request body accepted, bytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Longest user id accepted, bytes.
pub const MAX_USER_ID_BYTES: usize = 512;
/// Requests served at once by default; more get 503.
pub const DEFAULT_MAX_CONCURRENT: usize = 1_024;

/// Every route, as its pattern (the metrics' `route` label).
pub const ROUTES: [&str; 17] = [
    "/",
    "/dashboard.js",
    "/dashboard.css",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/v1/users/{id}",
    "/v1/users/{id}/history",
    "/v1/users/{id}/feedback",
    "/v1/users:batchGet",
    "/v1/segments",
    "/v1/personas",
    "/v1/drift",
    "/v1/timeline",
    "/v1/tables",
    "/v1/tables/{table}",
];

/// Downloads streamed at once by default; more get 503.
pub const DEFAULT_MAX_DOWNLOADS: usize = 4;
/// Bytes a download buffers before handing them to the connection.
pub const DOWNLOAD_CHUNK_BYTES: usize = 256 * 1024;

/// What the API serves, and how.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The bearer token every `/v1` request must carry; `None`: no auth (loopback only, which
    /// [`crate::api::check_bind`] enforces).
    pub token: Option<String>,
    /// Requests served at once; more get 503.
    pub max_concurrent: usize,
    /// Downloads streamed at once; more get 503.
    pub max_downloads: usize,
    /// The run's output directory, for `/v1/tables` (`None`: no downloads).
    pub outputs: Option<std::path::PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            token: None,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_downloads: DEFAULT_MAX_DOWNLOADS,
            outputs: None,
        }
    }
}

/// The API's shared state.
#[derive(Debug)]
pub struct AppState {
    /// The store.
    pub store: Arc<PersonaStore>,
    /// Set once the store is loaded (or the job has emitted its first window).
    pub ready: AtomicBool,
    config: ApiConfig,
    permits: Semaphore,
    downloads: Arc<Semaphore>,
    metrics: RouteMetrics,
    feedback: Option<Arc<crate::feedback::FeedbackLog>>,
    openapi: String,
}

impl AppState {
    /// Whether `/v1` needs a token.
    pub fn has_token(&self) -> bool {
        self.config.token.is_some()
    }

    /// State over `store`.
    pub fn new(store: Arc<PersonaStore>, config: ApiConfig) -> Arc<Self> {
        let feedback = config
            .outputs
            .as_deref()
            .map(|o| Arc::new(crate::feedback::FeedbackLog::new(o)));
        let openapi =
            crate::openapi::document_with_example(store.any_user().as_deref()).to_string();
        Arc::new(AppState {
            store,
            ready: AtomicBool::new(false),
            permits: Semaphore::new(config.max_concurrent.max(1)),
            downloads: Arc::new(Semaphore::new(config.max_downloads.max(1))),
            config,
            metrics: RouteMetrics::new(&ROUTES),
            feedback,
            openapi,
        })
    }
}

/// A request the API refuses: status, the parameter at fault (if one is) and why.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    parameter: Option<String>,
    message: String,
}

impl ApiError {
    fn bad(parameter: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            parameter: Some(parameter.to_string()),
            message: message.into(),
        }
    }

    fn not_found(parameter: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            parameter: Some(parameter.to_string()),
            message: message.into(),
        }
    }

    fn status(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            parameter: None,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {
                "status": self.status.as_u16(),
                "parameter": self.parameter,
                "message": self.message,
            }
        });
        let mut r = (self.status, json_body(body.to_string())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"personaflow\""),
            );
        }
        r
    }
}

fn json_body(body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Byte strings equal, in time that depends on their lengths only (not on where they differ).
///
/// ```
/// use personaflow_serve::api::constant_time_eq;
/// assert!(constant_time_eq(b"secret", b"secret"));
/// assert!(!constant_time_eq(b"secret", b"secreT"));
/// assert!(!constant_time_eq(b"secret", b"secret2"));
/// ```
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses to serve without a token anywhere but on loopback.
pub fn check_bind(addr: &std::net::SocketAddr, token: Option<&str>) -> crate::Result<()> {
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(crate::Error::NoTokenOffLoopback {
            addr: addr.to_string(),
        });
    }
    Ok(())
}

async fn auth(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.config.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), token.as_bytes()));
        if !ok {
            return ApiError::status(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer <token>)",
            )
            .into_response();
        }
    }
    next.run(request).await
}

async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let response = next.run(request).await;
    state.metrics.observe(
        route.as_deref().unwrap_or(crate::metrics::UNMATCHED),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Errors axum answers itself (a body over the limit, a method the route lacks, a body that
/// is not JSON) in the API's JSON error shape.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parameter, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            Some("body".to_string()),
            format!("the body is over {MAX_BODY_BYTES} bytes"),
        ),
        StatusCode::METHOD_NOT_ALLOWED => (None, "the route does not take this method".into()),
        _ => (
            None,
            status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase(),
        ),
    };
    ApiError {
        status,
        parameter,
        message,
    }
    .into_response()
}

async fn limit(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    match state.permits.try_acquire() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::status(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight; retry",
        )
        .into_response(),
    }
}

/// The router: every route, auth on `/v1`, limits on everything.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/users/{id}", get(user))
        .route("/v1/users/{id}/history", get(history))
        .route("/v1/users/{id}/feedback", post(feedback))
        .route("/v1/users:batchGet", post(batch_get))
        .route("/v1/segments", get(segments))
        .route("/v1/personas", get(personas))
        .route("/v1/drift", get(drift))
        .route("/v1/timeline", get(timeline))
        .route("/v1/tables", get(tables))
        .route("/v1/tables/{table}", get(download))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/", get(|| async { crate::dashboard::page() }))
        .route(
            "/dashboard.js",
            get(|| async { crate::dashboard::script() }),
        )
        .route(
            "/dashboard.css",
            get(|| async { crate::dashboard::style() }),
        )
        .route(
            "/healthz",
            get(|| async { json_body("{\"status\":\"ok\"}".into()) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(v1)
        .fallback(|| async { ApiError::status(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn openapi(State(state): State<Arc<AppState>>) -> Response {
    json_body(state.openapi.clone())
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut r = Response::new(Body::from(state.metrics.render()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        json_body(format!(
            "{{\"status\":\"ready\",\"users\":{}}}",
            state.store.users()
        ))
    } else {
        ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "loading").into_response()
    }
}

fn check_user_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_USER_ID_BYTES {
        return Err(ApiError::bad(
            "id",
            format!("a user id is 1 to {MAX_USER_ID_BYTES} bytes"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(ApiError::bad("id", "a user id has no control characters"));
    }
    Ok(())
}

async fn user(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_user_id(&id)?;
    state
        .store
        .user(&id)
        .map(json_body)
        .ok_or_else(|| ApiError::not_found("id", format!("no user {id:?} in the store")))
}

/// A time parameter: epoch milliseconds or RFC 3339.
fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    crate::download::parse_time(name, value).map_err(|e| ApiError::bad(name, e.message))
}

/// `from` and `to` (inclusive) from `query`, which may hold nothing else.
fn time_range(query: &HashMap<String, String>) -> Result<(i64, i64), ApiError> {
    if let Some(k) = query.keys().find(|k| *k != "from" && *k != "to") {
        return Err(ApiError::bad(k, "unknown parameter (expected from, to)"));
    }
    let from = query
        .get("from")
        .map(|v| parse_time("from", v))
        .transpose()?
        .unwrap_or(i64::MIN);
    let to = query
        .get("to")
        .map(|v| parse_time("to", v))
        .transpose()?
        .unwrap_or(i64::MAX);
    if from > to {
        return Err(ApiError::bad("from", "from is after to"));
    }
    Ok((from, to))
}

async fn history(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_user_id(&id)?;
    let (from, to) = time_range(&query)?;
    let windows = state
        .store
        .history(&id, from, to)
        .ok_or_else(|| ApiError::not_found("id", format!("no user {id:?} in the store")))?;
    Ok(json_body(format!(
        "{{\"user_id\":{},\"history_windows\":{},\"windows\":[{}]}}",
        serde_json::to_string(&id).expect("a string"),
        state.store.config().history_windows,
        windows.join(",")
    )))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn feedback(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    use crate::feedback::{FeedbackReport, FLUSH_ROWS};
    check_user_id(&id)?;
    let log = state.feedback.clone().ok_or_else(|| {
        ApiError::status(
            StatusCode::NOT_FOUND,
            "this server has no output directory to append feedback to",
        )
    })?;
    let report: FeedbackReport = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(
            "body",
            format!("expected {{\"source\": \"...\", \"qoe\": 0.9, ...}}: {e}"),
        )
    })?;
    let report = report
        .validate(now_ms())
        .map_err(|e| ApiError::bad(e.field, e.message))?;
    if !state.store.contains(&id) {
        return Err(ApiError::not_found(
            "id",
            format!("no user {id:?} in the store"),
        ));
    }
    let pending = log.append(&id, report);
    if pending >= FLUSH_ROWS {
        tokio::task::spawn_blocking(move || {
            if let Err(e) = log.flush() {
                eprintln!("personaflow: warning: writing service feedback: {e}");
            }
        });
    }
    let mut r = json_body("{\"accepted\":true}".into());
    *r.status_mut() = StatusCode::ACCEPTED;
    Ok(r)
}

async fn batch_get(
    State(state): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct BatchGet {
        ids: Vec<String>,
    }
    let req: BatchGet = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("ids", format!("expected {{\"ids\": [\"...\"]}}: {e}")))?;
    if req.ids.len() > MAX_BATCH_IDS {
        return Err(ApiError::bad(
            "ids",
            format!("{} ids; at most {MAX_BATCH_IDS} per request", req.ids.len()),
        ));
    }
    for id in &req.ids {
        check_user_id(id).map_err(|e| ApiError::bad("ids", e.message))?;
    }
    let mut found = Vec::with_capacity(req.ids.len());
    let mut missing = Vec::new();
    for id in &req.ids {
        match state.store.user(id) {
            Some(v) => found.push(v),
            None => missing.push(id.as_str()),
        }
    }
    Ok(json_body(format!(
        "{{\"users\":[{}],\"missing\":{}}}",
        found.join(","),
        serde_json::to_string(&missing).expect("strings")
    )))
}

fn list(name: &str, rows: &[Box<str>]) -> Response {
    json_body(format!("{{\"{name}\":[{}]}}", rows.join(",")))
}

async fn segments(State(state): State<Arc<AppState>>) -> Response {
    list("segments", &state.store.segments())
}

async fn personas(State(state): State<Arc<AppState>>) -> Response {
    list("personas", &state.store.personas())
}

async fn drift(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (from, to) = time_range(&query)?;
    let (drift, scaling) = state.store.drift(from, to);
    Ok(json_body(format!(
        "{{\"drift\":[{}],\"scaling\":[{}]}}",
        drift.join(","),
        scaling.join(",")
    )))
}

async fn timeline(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    use crate::timeline::{DEFAULT_POINTS, MAX_POINTS};
    if let Some(k) = query.keys().find(|k| *k != "points") {
        return Err(ApiError::bad(k, "unknown parameter (expected points)"));
    }
    let points = match query.get("points") {
        None => DEFAULT_POINTS,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|p| (1..=MAX_POINTS).contains(p))
            .ok_or_else(|| ApiError::bad("points", format!("1 to {MAX_POINTS}")))?,
    };
    let store = state.store.clone();
    let body = tokio::task::spawn_blocking(move || {
        let series = store.timeline(points);
        let mut v = serde_json::to_value(&series).expect("serialisable");
        v["latest_window_end"] = serde_json::json!(store.latest_window_end());
        v["users"] = serde_json::json!(store.users());
        v["example_user"] = serde_json::json!(store.any_user());
        v.to_string()
    })
    .await
    .map_err(|e| ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(json_body(body))
}

async fn tables(State(state): State<Arc<AppState>>) -> Response {
    let tables: Vec<serde_json::Value> = personaflow_io::tables::Table::ALL
        .iter()
        .map(|t| {
            let available = state
                .config
                .outputs
                .as_ref()
                .is_some_and(|o| o.join(t.name()).is_dir());
            let columns: Vec<serde_json::Value> = t
                .schema()
                .fields()
                .iter()
                .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string()}))
                .collect();
            serde_json::json!({"name": t.name(), "available": available, "columns": columns})
        })
        .collect();
    json_body(serde_json::json!({ "tables": tables }).to_string())
}

/// A `Write` that hands what is written to a channel in chunks (the body of a streamed
/// response); fails once the receiver (the connection) is gone.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<axum::body::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = axum::body::Bytes::from(std::mem::take(&mut self.buf));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= DOWNLOAD_CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

async fn download(
    State(state): State<Arc<AppState>>,
    Path(table): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    use crate::download::{write_download, DownloadQuery};
    let q = DownloadQuery::parse(&table, &query).map_err(|e| ApiError {
        status: if e.not_found {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        },
        parameter: Some(e.parameter),
        message: e.message,
    })?;
    let outputs = state.config.outputs.clone().ok_or_else(|| {
        ApiError::status(StatusCode::NOT_FOUND, "this server has no output directory")
    })?;
    let permit = state.downloads.clone().try_acquire_owned().map_err(|_| {
        ApiError::status(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many downloads in flight; retry",
        )
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let format = q.format;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(DOWNLOAD_CHUNK_BYTES),
        };
        let result = write_download(&outputs, &q, &mut w)
            .map_err(|e| e.to_string())
            .and_then(|_| {
                use std::io::Write as _;
                w.flush().map_err(|e| e.to_string())
            });
        if let Err(e) = result {
            // Aborts the response: the client sees a truncated transfer, not a short file.
            tx.blocking_send(Err(std::io::Error::other(e))).ok();
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{table}.{}\"",
        format.extension()
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// Serves `state` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    // Buffered feedback is written every FLUSH_INTERVAL_MS, and once more at the end.
    let flusher = state.feedback.clone().map(|log| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(
                crate::feedback::FLUSH_INTERVAL_MS,
            ));
            loop {
                tick.tick().await;
                let log = log.clone();
                let flushed = tokio::task::spawn_blocking(move || log.flush()).await;
                if let Ok(Err(e)) = flushed {
                    eprintln!("personaflow: warning: writing service feedback: {e}");
                }
            }
        })
    });
    // Answers are small and go out whole: no Nagle delay waiting for an ACK.
    use axum::serve::ListenerExt as _;
    let listener = listener.tap_io(|tcp| {
        tcp.set_nodelay(true).ok();
    });
    let served = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| crate::Error::Serve { addr, source });
    if let Some(f) = flusher {
        f.abort();
    }
    if let Some(log) = state.feedback.clone() {
        tokio::task::spawn_blocking(move || log.flush())
            .await
            .map_err(|e| crate::Error::Serve {
                addr: "feedback".into(),
                source: std::io::Error::other(e),
            })??;
    }
    served
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use axum::http::Request as HttpRequest;
    use http_body_util::BodyExt;
    use personaflow_io::tables::{ProfileRow, Table, TableRow};
    use tower::ServiceExt;

    fn state(token: Option<&str>) -> Arc<AppState> {
        let store = Arc::new(PersonaStore::new(StoreConfig::default()));
        let row = ProfileRow {
            window_end: 60_000,
            user_id: "u1".into(),
            embedder: "e".into(),
            embedding: vec![0.1],
            anomaly_score: Some(0.3),
            history_windows: 0,
            events: 2,
            authenticated: false,
            segment: None,
            device: None,
            os: None,
            country: None,
        };
        store
            .apply(Table::Profiles, &ProfileRow::to_batch(&[row]))
            .unwrap();
        let s = AppState::new(
            store,
            ApiConfig {
                token: token.map(String::from),
                ..ApiConfig::default()
            },
        );
        s.ready.store(true, Ordering::Release);
        s
    }

    async fn call(
        state: Arc<AppState>,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = HttpRequest::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = router(state)
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn users_are_found_missing_ones_are_404_and_bad_ids_400() {
        let s = state(None);
        let (st, v) = call(s.clone(), "GET", "/v1/users/u1", None, "").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["user_id"], "u1");
        let (st, v) = call(s.clone(), "GET", "/v1/users/nobody", None, "").await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert_eq!(v["error"]["parameter"], "id");
        let (st, v) = call(s.clone(), "GET", "/v1/users/a%01b", None, "").await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        let (st, _) = call(s.clone(), "GET", "/v1/users/..%2F..%2Fetc", None, "").await;
        assert_eq!(st, StatusCode::NOT_FOUND, "a name, never a path");
    }

    #[tokio::test]
    async fn the_token_is_required_when_set() {
        let s = state(Some("t0k"));
        assert_eq!(
            call(s.clone(), "GET", "/v1/users/u1", None, "").await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(s.clone(), "GET", "/v1/users/u1", Some("t0K"), "")
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(s.clone(), "GET", "/v1/users/u1", Some("t0k"), "")
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(call(s, "GET", "/healthz", None, "").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn batch_get_splits_found_and_missing_and_limits_the_ids() {
        let s = state(None);
        let (st, v) = call(
            s.clone(),
            "POST",
            "/v1/users:batchGet",
            None,
            r#"{"ids":["u1","u2"]}"#,
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["users"].as_array().unwrap().len(), 1);
        assert_eq!(v["missing"], serde_json::json!(["u2"]));
        let many = serde_json::json!({ "ids": vec!["x"; MAX_BATCH_IDS + 1] }).to_string();
        let (st, v) = call(s.clone(), "POST", "/v1/users:batchGet", None, &many).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["parameter"], "ids");
        let (st, _) = call(s, "POST", "/v1/users:batchGet", None, "{\"idz\":[]}").await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn time_ranges_are_validated_by_name() {
        let s = state(None);
        let (st, v) = call(s.clone(), "GET", "/v1/drift?from=yesterday", None, "").await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["parameter"], "from");
        let (st, v) = call(s.clone(), "GET", "/v1/drift?from=10&to=5", None, "").await;
        assert_eq!(
            (st, &v["error"]["parameter"]),
            (StatusCode::BAD_REQUEST, &"from".into())
        );
        let (st, v) = call(s.clone(), "GET", "/v1/drift?form=1", None, "").await;
        assert_eq!(
            (st, &v["error"]["parameter"]),
            (StatusCode::BAD_REQUEST, &"form".into())
        );
        let (st, v) = call(
            s,
            "GET",
            "/v1/users/u1/history?from=1970-01-01T00:00:00Z&to=60000",
            None,
            "",
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["windows"].as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn metrics_count_requests_per_route_and_status() {
        let s = state(None);
        call(s.clone(), "GET", "/v1/users/u1", None, "").await;
        call(s.clone(), "GET", "/v1/users/nobody", None, "").await;
        call(s.clone(), "GET", "/nowhere", None, "").await;
        let resp = router(s)
            .oneshot(HttpRequest::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let text = String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        for line in [
            "personaflow_http_requests_total{route=\"/v1/users/{id}\",status=\"200\"} 1",
            "personaflow_http_requests_total{route=\"/v1/users/{id}\",status=\"404\"} 1",
            "personaflow_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
            "personaflow_http_request_duration_seconds_count{route=\"/v1/users/{id}\"} 2",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[tokio::test]
    async fn errors_axum_answers_itself_come_in_the_json_shape() {
        let s = state(None);
        let huge = format!("{{\"ids\":[\"{}\"]}}", "x".repeat(MAX_BODY_BYTES));
        let (st, v) = call(s.clone(), "POST", "/v1/users:batchGet", None, &huge).await;
        assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(v["error"]["parameter"], "body");
        let (st, v) = call(s, "DELETE", "/v1/users/u1", None, "").await;
        assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(v["error"]["status"], 405);
    }

    #[test]
    fn no_token_only_on_loopback() {
        let lo: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(check_bind(&lo, None).is_ok());
        assert!(check_bind(&any, None).is_err());
        assert!(check_bind(&any, Some("t")).is_ok());
    }
}
