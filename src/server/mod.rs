//! The HTTP API: router, shared state, body limits and the JSON error shape. One file per URL family.

pub mod auth;
mod datasets;
pub mod experiments;
mod maintenance;
mod models;
mod oip;
mod pipelines;
mod runs;
mod sse;
mod streams;
pub mod tls;
mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::app::App;
use crate::error::{Code, Error};

pub type AppState = Arc<App>;

pub fn router(app: AppState) -> Router {
    let limit = app.config.body_limit;
    // Users, tokens and access settings are small JSON bodies: a much smaller limit than the API's.
    let small = 64 * 1024;
    let admin = Router::new()
        .route("/api/v1/me", get(auth::me))
        .route("/api/v1/users", get(auth::list_users).post(auth::add_user))
        .route("/api/v1/users/{name}", put(auth::set_user).delete(auth::remove_user))
        .route("/api/v1/tokens", get(auth::list_tokens).post(auth::create_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(auth::revoke_token))
        .route("/api/v1/audit", get(auth::audit_log))
        .route("/api/v1/models/{name}/access", put(auth::set_access))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(small))
        .layer(DefaultBodyLimit::max(small));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/version", get(version))
        .route("/api/v1/pipelines", get(pipelines::list).post(pipelines::upsert))
        .route("/api/v1/pipelines/validate", post(pipelines::validate))
        .route("/api/v1/pipelines/{name}", get(pipelines::get))
        .route("/api/v1/pipelines/{name}/pause", post(pipelines::pause))
        .route("/api/v1/pipelines/{name}/unpause", post(pipelines::unpause))
        .route("/api/v1/pipelines/{name}/trigger", post(pipelines::trigger))
        .route("/api/v1/pipelines/{name}/backfill", post(pipelines::backfill))
        .route("/api/v1/runs", get(runs::list))
        .route("/api/v1/runs/{id}", get(runs::get).delete(maintenance::delete_run))
        .route("/api/v1/admin/gc", post(maintenance::gc))
        .route("/api/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/api/v1/runs/{id}/resume", post(runs::resume))
        .route("/api/v1/runs/{id}/events", get(sse::run_events))
        .route("/api/v1/runs/{id}/artifacts/{artifact}", get(runs::artifact))
        .route("/api/v1/runs/{id}/tasks/{task}/logs", get(runs::logs))
        .route("/api/v1/runs/{id}/tasks/{task}/logs/follow", get(sse::follow_log))
        .route("/api/v1/datasets", get(datasets::list))
        .route("/api/v1/datasets/{name}", get(datasets::get))
        .route("/api/v1/datasets/{name}/versions/{version}/stats", get(datasets::stats))
        .route("/api/v1/experiments", get(experiments::list))
        .route("/api/v1/experiments/compare", get(experiments::compare))
        .route("/api/v1/experiments/{id}", get(experiments::get))
        .route("/api/v1/experiments/{id}/metrics/{key}", get(experiments::history))
        .route("/api/v1/models", get(models::list))
        .route("/api/v1/models/{name}", get(models::get))
        .route("/api/v1/models/{name}/versions", post(models::register))
        .route("/api/v1/models/{name}/versions/{v}", get(models::version))
        .route("/api/v1/models/{name}/versions/{v}/artifact", get(models::artifact))
        .route("/api/v1/models/{name}/versions/{v}/archive", post(models::archive))
        .route("/api/v1/models/{name}/aliases/{alias}", put(models::set_alias).delete(models::delete_alias))
        .route("/api/v1/models/{name}/history", get(models::history))
        .route("/api/v1/models/{name}/predict", post(models::predict))
        .route("/api/v1/models/{name}/predictions", get(models::predictions))
        .route("/api/v1/serving", get(models::serving))
        .route("/api/v1/events", get(streams::events))
        .route("/api/v1/search", get(search))
        .route("/api/v1/search/reindex", post(reindex))
        .route("/v2", get(oip::server_metadata))
        .route("/v2/health/live", get(oip::live))
        .route("/v2/health/ready", get(oip::server_ready))
        .route("/v2/models/{name}", get(oip::model_metadata))
        .route("/v2/models/{name}/ready", get(oip::model_ready))
        .route("/v2/models/{name}/infer", post(oip::model_infer))
        .route("/v2/models/{name}/versions/{v}", get(oip::version_metadata))
        .route("/v2/models/{name}/versions/{v}/ready", get(oip::version_ready))
        .route("/v2/models/{name}/versions/{v}/infer", post(oip::version_infer))
        .route("/v2/repository/index", post(oip::repository_index))
        .route("/v2/repository/models/{name}/load", post(oip::repository_load))
        .route("/v2/repository/models/{name}/unload", post(oip::repository_unload))
        .merge(ui::routes().layer(tower_http::compression::CompressionLayer::new()))
        .merge(admin)
        .fallback(not_found)
        // A declared Content-Length over the limit is refused before any of the body is read; a chunked
        // body is cut off by the extractors' DefaultBodyLimit once it passes the limit.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(limit))
        .layer(DefaultBodyLimit::max(limit))
        // Streams are long-lived request bodies: no total limit (each line is limited instead).
        .route("/api/v1/streams/{name}", post(streams::stream))
        .layer(axum::middleware::from_fn_with_state(app.clone(), auth::layer))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            app.config.request_timeout,
        ))
        // A backup of a large data dir may take longer than any request should: outside the timeout.
        .route(
            "/api/v1/admin/backup",
            post(maintenance::backup).layer(axum::middleware::from_fn_with_state(app.clone(), auth::layer)),
        )
        // One limit shared by every route: more requests than this wait for a turn.
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(app.config.max_concurrent_requests))
        .layer(axum::middleware::from_fn(http_metrics))
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %req.method(), uri = %req.uri().path(), request_id = %id)
        }))
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(tower_http::request_id::MakeRequestUuid))
        .with_state(app)
}

/// Count and time every request by its route pattern (not its path, so ids do not explode the
/// label set).
async fn http_metrics(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let t0 = std::time::Instant::now();
    let resp = next.run(req).await;
    crate::metrics::get().http(&route, &method, resp.status().as_u16(), t0.elapsed().as_secs_f64());
    resp
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(axum::extract::State(app): axum::extract::State<AppState>) -> Result<Response, Error> {
    let text =
        blocking(move || crate::metrics::get().render(&app.store, &app.config.data_dir, app.config.slots)).await?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response())
}

/// `GET /api/v1/search?q=...&kind=...&limit=&offset=`: hits with highlighted snippets, best first.
async fn search(
    axum::extract::State(app): axum::extract::State<AppState>,
    axum::extract::Query(req): axum::extract::Query<crate::search::Request>,
) -> Result<impl IntoResponse, Error> {
    Ok(axum::Json(blocking(move || app.search.query(&req)).await?))
}

/// `POST /api/v1/search/reindex`: rebuild the index from the store and the logs.
async fn reindex(axum::extract::State(app): axum::extract::State<AppState>) -> Result<impl IntoResponse, Error> {
    let documents = blocking(move || app.search.reindex()).await?;
    Ok(axum::Json(json!({"documents": documents})))
}

async fn version() -> impl IntoResponse {
    axum::Json(json!({"version": env!("CARGO_PKG_VERSION"), "schema": crate::store::schema_version()}))
}

async fn readyz(axum::extract::State(app): axum::extract::State<AppState>) -> Result<impl IntoResponse, Error> {
    let store = app.store.clone();
    tokio::task::spawn_blocking(move || store.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)))
        .await
        .map_err(Error::internal)??;
    Ok("ready")
}

async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/v2") {
        let msg = "no such route; the inference protocol routes are listed in docs/SERVING.md";
        return oip::OipError(StatusCode::NOT_FOUND, msg.into()).into_response();
    }
    Error::not_found("no such route; the API lives under /api/v1 (see docs/API.md)").into_response()
}

/// Framework-made errors (413 from the body limit, 405, a 408 timeout, a rejected path or query)
/// get the same JSON shape, keeping the framework's explanation; under `/v2` the shape is the
/// inference protocol's, `{"error": "..."}`.
async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let oip = req.uri().path().starts_with("/v2");
    let resp = next.run(req).await;
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes().to_vec()).unwrap_or_default();
    // JSON errors and the UI's error pages are already what the client should see.
    let answered = content_type.starts_with(b"application/json") || content_type.starts_with(b"text/html");
    if !(status.is_client_error() || status.is_server_error()) || answered {
        return resp;
    }
    let text = axum::body::to_bytes(resp.into_body(), 16 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            (Code::PayloadTooLarge, "the request body is too large (see body_limit in mlbox.toml)".to_string())
        }
        StatusCode::METHOD_NOT_ALLOWED => (Code::MethodNotAllowed, "method not allowed on this route".to_string()),
        StatusCode::REQUEST_TIMEOUT => (Code::Timeout, "the request took too long".to_string()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (Code::BadRequest, text),
        s if s.is_server_error() => (Code::Internal, "internal error; see the server log".to_string()),
        _ if !text.is_empty() => (Code::BadRequest, text),
        s => (Code::BadRequest, format!("bad request: {}", s.canonical_reason().unwrap_or("error"))),
    };
    let body = if oip {
        json!({"error": message})
    } else {
        json!({"error": {"code": code.as_str(), "message": message, "details": null}})
    };
    (status, axum::Json(body)).into_response()
}

/// Parse a JSON body with an error that says what was wrong; an empty body means `{}`.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { &b"{}"[..] } else { body };
    serde_json::from_slice(body).map_err(|e| Error::bad_request(format!("invalid JSON body: {e}")))
}

/// Run blocking store work off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(Error::internal)?
}
