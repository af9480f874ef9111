//! Open Inference Protocol v2 (REST), as KServe, Triton and MLServer speak it: health, server
//! and model metadata, model readiness, inference, and the model repository extension. Errors are
//! `{"error": "..."}` as the protocol says. A request without a version is served by the model's
//! `production` alias.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::models::{ready, run_batch};
use super::{AppState, blocking};
use crate::error::Error;
use crate::registry::{self, ModelUri, Selector};
use crate::serving::{log, signature};

/// An error in the protocol's shape.
pub struct OipError(pub StatusCode, pub String);

impl From<Error> for OipError {
    fn from(e: Error) -> Self {
        OipError(e.code.status(), e.message)
    }
}

impl IntoResponse for OipError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

type R<T> = Result<T, OipError>;

fn uri(name: &str, version: Option<&str>) -> R<ModelUri> {
    registry::check_name(name).map_err(|_| OipError(StatusCode::NOT_FOUND, format!("no registered model `{name}`")))?;
    let selector = match version {
        None => Selector::Alias(registry::PRODUCTION.into()),
        Some(v) => Selector::Version(
            v.parse()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| OipError(StatusCode::BAD_REQUEST, format!("version `{v}` must be a number like 3")))?,
        ),
    };
    Ok(ModelUri { name: name.to_string(), selector })
}

pub async fn server_metadata() -> Json<Value> {
    Json(json!({"name": "mlbox", "version": env!("CARGO_PKG_VERSION"), "extensions": ["model_repository"]}))
}

pub async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

/// Ready once the store answers (models that failed to load are reported per model).
pub async fn server_ready(State(app): State<AppState>) -> R<Json<Value>> {
    blocking(move || app.store.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))).await?;
    Ok(Json(json!({"ready": true})))
}

async fn metadata(app: AppState, u: ModelUri) -> R<Json<Value>> {
    let r = ready(&app, u.clone()).await?;
    let name = u.name.clone();
    let versions = blocking(move || app.store.read(|c| registry::versions(c, &name))).await?;
    let versions: Vec<String> = versions.iter().filter(|v| !v.archived).map(|v| v.version.to_string()).rev().collect();
    Ok(Json(json!({
        "name": r.model,
        "versions": versions,
        "platform": format!("mlbox_{}", r.kind),
        "inputs": signature::Signature::oip_tensors(&r.signature.inputs),
        "outputs": signature::Signature::oip_tensors(&r.signature.outputs),
        "parameters": {"version": r.version.to_string()},
    })))
}

pub async fn model_metadata(State(app): State<AppState>, Path(name): Path<String>) -> R<Json<Value>> {
    metadata(app, uri(&name, None)?).await
}

pub async fn version_metadata(State(app): State<AppState>, Path((name, v)): Path<(String, String)>) -> R<Json<Value>> {
    metadata(app, uri(&name, Some(&v))?).await
}

async fn readiness(app: AppState, u: ModelUri) -> R<Json<Value>> {
    let r = ready(&app, u).await?;
    Ok(Json(json!({"name": r.model, "version": r.version.to_string(), "ready": true})))
}

pub async fn model_ready(State(app): State<AppState>, Path(name): Path<String>) -> R<Json<Value>> {
    readiness(app, uri(&name, None)?).await
}

pub async fn version_ready(State(app): State<AppState>, Path((name, v)): Path<(String, String)>) -> R<Json<Value>> {
    readiness(app, uri(&name, Some(&v))?).await
}

async fn infer(app: AppState, u: ModelUri, body: Bytes) -> R<Json<Value>> {
    let started = Instant::now();
    let r = ready(&app, u).await?;
    let req: signature::InferRequest = serde_json::from_slice(&body).map_err(|e| {
        OipError(StatusCode::BAD_REQUEST, format!("invalid inference request: {e} (expected {{\"inputs\": [{{\"name\", \"shape\", \"datatype\", \"data\"}}]}})"))
    })?;
    let result = match signature::decode_tensors(&r.signature, &req.inputs) {
        Ok(batch) => {
            let rows = batch.rows;
            run_batch(&r, batch).await.map_err(OipError::from).and_then(|outs| {
                signature::encode_tensors(&outs, rows, req.outputs.as_deref())
                    .map_err(|e| OipError(StatusCode::BAD_REQUEST, e))
                    .map(|t| (rows, t))
            })
        }
        Err(e) => Err(OipError(StatusCode::BAD_REQUEST, e)),
    };
    let rows = result.as_ref().map(|(n, _)| *n).unwrap_or(0);
    let reply = result.map(|(_, outputs)| {
        let mut v = json!({"model_name": r.model, "model_version": r.version.to_string(), "outputs": outputs});
        if let Some(id) = &req.id {
            v["id"] = json!(id);
        }
        v
    });
    let entry = log::Entry {
        model: &r.model,
        version: r.version,
        endpoint: "v2/infer",
        status: reply.as_ref().map(|_| 200).unwrap_or_else(|e| e.0.as_u16()),
        latency_us: started.elapsed().as_micros() as u64,
    };
    app.serving.log().record(&r.stats, entry, rows, || {
        let request = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (request, reply.as_ref().map(Value::clone).unwrap_or_else(|e| json!({"error": e.1})))
    });
    reply.map(Json)
}

pub async fn model_infer(State(app): State<AppState>, Path(name): Path<String>, body: Bytes) -> R<Json<Value>> {
    infer(app, uri(&name, None)?, body).await
}

pub async fn version_infer(
    State(app): State<AppState>,
    Path((name, v)): Path<(String, String)>,
    body: Bytes,
) -> R<Json<Value>> {
    infer(app, uri(&name, Some(&v))?, body).await
}

/// `POST /v2/repository/index`: every registered model and whether it serves.
pub async fn repository_index(State(app): State<AppState>) -> R<Json<Value>> {
    Ok(Json(Value::Array(blocking(move || app.serving.index()).await?)))
}

pub async fn repository_load(State(app): State<AppState>, Path(name): Path<String>) -> R<Json<Value>> {
    Ok(Json(blocking(move || app.serving.set_loaded(&name, true)).await?))
}

pub async fn repository_unload(State(app): State<AppState>, Path(name): Path<String>) -> R<Json<Value>> {
    Ok(Json(blocking(move || app.serving.set_loaded(&name, false)).await?))
}
