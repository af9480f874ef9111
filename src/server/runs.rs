//! `/api/v1/runs`: list with filters and cursor pagination, detail, cancel, resume, task logs.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, blocking};
use crate::error::Error;
use crate::logs::LogKey;
use crate::store::runs;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pipeline: Option<String>,
    state: Option<String>,
    /// Only runs created at or after this time (RFC 3339 or YYYY-MM-DD).
    since: Option<String>,
    until: Option<String>,
    cursor: Option<i64>,
    limit: Option<u32>,
}

const RUN_STATES: &[&str] = &["queued", "running", "success", "failed", "cancelled"];

pub async fn list(State(app): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<Value>, Error> {
    if let Some(s) = &q.state
        && !RUN_STATES.contains(&s.as_str())
    {
        return Err(Error::bad_request(format!("unknown state `{s}`; use one of {}", RUN_STATES.join(", "))));
    }
    let time = |s: &Option<String>, what: &str| -> Result<Option<i64>, Error> {
        s.as_deref()
            .map(|s| {
                crate::pipeline::validate::parse_date(s)
                    .map(|d| d.timestamp_micros())
                    .ok_or_else(|| Error::bad_request(format!("{what} must be YYYY-MM-DD or RFC 3339")))
            })
            .transpose()
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let filter = runs::RunFilter {
        pipeline: q.pipeline,
        state: q.state,
        since: time(&q.since, "since")?,
        until: time(&q.until, "until")?,
        before: q.cursor,
        limit,
    };
    let rows = blocking(move || app.store.read(|c| runs::list(c, &filter))).await?;
    let next = (rows.len() == limit as usize).then(|| rows.last().map(|r| r.id)).flatten();
    Ok(Json(json!({"runs": rows, "next_cursor": next})))
}

pub async fn get(State(app): State<AppState>, Path(id): Path<i64>) -> Result<Json<Value>, Error> {
    blocking(move || {
        let run = app.run(id)?;
        let (tasks, attempts, artifacts) =
            app.store.read(|c| Ok((runs::tasks(c, id)?, runs::attempts(c, id)?, runs::artifacts(c, id)?)))?;
        let tasks: Vec<Value> = tasks
            .into_iter()
            .map(|t| {
                let a: Vec<&runs::AttemptRow> = attempts.iter().filter(|a| a.ti_id == t.id).collect();
                let duration_ms = match (t.started_at, t.finished_at) {
                    (Some(s), Some(f)) => Some((f - s) as f64 / 1000.0),
                    _ => None,
                };
                let mut v = json!(t);
                v["attempts"] = json!(a);
                v["duration_ms"] = json!(duration_ms);
                v
            })
            .collect();
        Ok(Json(json!({"run": run, "tasks": tasks, "artifacts": artifacts})))
    })
    .await
}

pub async fn cancel(State(app): State<AppState>, Path(id): Path<i64>) -> Result<Json<Value>, Error> {
    blocking(move || app.cancel(id).map(|_| Json(json!({"run_id": id, "cancelling": true})))).await
}

pub async fn resume(State(app): State<AppState>, Path(id): Path<i64>) -> Result<Json<Value>, Error> {
    blocking(move || app.resume(id).map(|n| Json(json!({"run_id": id, "reset_tasks": n})))).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    pub map_index: Option<i64>,
    #[serde(rename = "try")]
    pub try_number: Option<u32>,
}

/// Which attempt a log request means (default: the latest try) and whether it has finished.
pub fn resolve_log(app: &crate::app::App, id: i64, task: &str, q: &LogQuery) -> Result<(LogKey, bool), Error> {
    app.run(id)?;
    let map_index = q.map_index.unwrap_or(-1);
    let rows = app.store.read(|c| runs::tasks(c, id))?;
    let ti = rows
        .iter()
        .find(|t| t.task_id == task && t.map_index == map_index)
        .ok_or_else(|| Error::not_found(format!("run {id} has no task `{task}` (map_index {map_index})")))?;
    let try_number = q.try_number.unwrap_or(ti.try_number.max(1));
    let finished = try_number < ti.try_number
        || matches!(
            ti.state.as_str(),
            "success" | "failed" | "skipped" | "upstream_failed" | "cancelled" | "up_for_retry"
        );
    Ok((LogKey { run_id: id, task_id: task.to_string(), map_index, try_number }, finished))
}

pub async fn logs(
    State(app): State<AppState>,
    Path((id, task)): Path<(i64, String)>,
    Query(q): Query<LogQuery>,
) -> Result<impl IntoResponse, Error> {
    blocking(move || {
        let (key, _) = resolve_log(&app, id, &task, &q)?;
        let text = match std::fs::read(key.path(app.logs.dir())) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text))
    })
    .await
}

/// `GET /api/v1/runs/{id}/artifacts/{artifact}`: one of a run's artifacts, as a download.
pub async fn artifact(
    State(app): State<AppState>,
    Path((id, artifact)): Path<(i64, i64)>,
) -> Result<impl IntoResponse, Error> {
    let a = app.clone();
    let row = blocking(move || {
        a.run(id)?;
        let rows = a.store.read(|c| runs::artifacts(c, id))?;
        rows.into_iter()
            .find(|r| r.id == artifact)
            .ok_or_else(|| Error::not_found(format!("run {id} has no artifact {artifact}")))
    })
    .await?;
    let path = crate::artifacts::path_of(&app.config.data_dir, &row.sha256);
    let file = tokio::fs::File::open(&path).await.map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
    // Streamed: an artifact can be larger than is wise to hold in memory.
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    // The name comes from the task's artifact dir; quotes and control characters cannot break
    // out of the header value.
    let name: String =
        row.name.rsplit('/').next().unwrap_or("artifact").chars().filter(|c| !c.is_control() && *c != '"').collect();
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        body,
    ))
}
