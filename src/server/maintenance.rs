//! `/api/v1/admin/backup`, `/api/v1/admin/gc` and `DELETE /api/v1/runs/{id}`: the HTTP side of
//! `maintenance`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, blocking};
use crate::error::Error;

/// `POST /api/v1/admin/backup`: a consistent backup of the data dir, as a tar download.
pub async fn backup(State(app): State<AppState>) -> Result<impl IntoResponse, Error> {
    let a = app.clone();
    let b = blocking(move || crate::maintenance::backup(&a)).await?;
    let file = tokio::fs::File::open(&b.path).await?;
    // The open file keeps its data: the name can go now, so nothing is left behind.
    if let Some(dir) = b.path.parent() {
        let _ = tokio::fs::remove_dir_all(dir).await;
    }
    let name = format!("mlbox-backup-{}.tar", chrono::Utc::now().format("%Y%m%d-%H%M%S"));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (header::CONTENT_LENGTH, b.bytes.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
            (header::HeaderName::from_static("x-mlbox-files"), b.files.to_string()),
        ],
        axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    ))
}

#[derive(Deserialize)]
pub struct GcQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/admin/gc[?dry_run=true]`: apply retention and drop unreferenced artifact files.
pub async fn gc(State(app): State<AppState>, Query(q): Query<GcQuery>) -> Result<Json<Value>, Error> {
    let freed = blocking(move || crate::maintenance::gc(&app, q.dry_run)).await?;
    Ok(Json(json!(freed)))
}

/// `DELETE /api/v1/runs/{id}[?dry_run=true]`: a finished run, its logs and the artifacts only it used.
pub async fn delete_run(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<GcQuery>,
) -> Result<Json<Value>, Error> {
    let freed = blocking(move || crate::maintenance::delete_runs(&app, &[id], q.dry_run)).await?;
    Ok(Json(json!(freed)))
}
