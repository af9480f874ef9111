//! `/api/v1/pipelines`: list, get, create/update from YAML, validate, pause, trigger, backfill.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, blocking, json_body};
use crate::error::Error;
use crate::store::{pipelines, runs};

fn yaml_text(body: &Bytes) -> Result<String, Error> {
    let text =
        std::str::from_utf8(body).map_err(|_| Error::bad_request("the pipeline body must be UTF-8 YAML text"))?;
    if text.trim().is_empty() {
        return Err(Error::bad_request("empty body: send the pipeline YAML"));
    }
    Ok(text.to_string())
}

pub async fn list(State(app): State<AppState>) -> Result<Json<Value>, Error> {
    let rows = blocking(move || app.store.read(pipelines::list)).await?;
    Ok(Json(json!({ "pipelines": rows })))
}

pub async fn get(State(app): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, Error> {
    blocking(move || {
        let row = app.pipeline(&name)?;
        let recent = app.store.read(|c| runs::list(c, &runs::RunFilter { pipeline: Some(name.clone()), limit: 20, ..Default::default() }))?;
        let plan = app.validate(&name, &row.yaml).ok();
        let tasks: Vec<Value> = plan
            .map(|p| {
                p.spec
                    .tasks
                    .iter()
                    .map(|t| json!({"id": t.id, "op": t.op, "depends_on": t.depends_on.iter().map(|d| &d.0).collect::<Vec<_>>()}))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Json(json!({"pipeline": row, "yaml": row.yaml, "tasks": tasks, "recent_runs": recent})))
    })
    .await
}

pub async fn upsert(State(app): State<AppState>, body: Bytes) -> Result<(StatusCode, Json<Value>), Error> {
    let yaml = yaml_text(&body)?;
    blocking(move || {
        let r = app.upsert_pipeline("request body", &yaml, "api")?;
        let status = if r.result == pipelines::Upsert::Created { StatusCode::CREATED } else { StatusCode::OK };
        Ok((status, Json(json!(r))))
    })
    .await
}

pub async fn validate(State(app): State<AppState>, body: Bytes) -> Result<Json<Value>, Error> {
    let yaml = yaml_text(&body)?;
    blocking(move || {
        let plan = app.validate("request body", &yaml)?;
        Ok(Json(json!({"valid": true, "name": plan.spec.name, "tasks": plan.spec.tasks.len()})))
    })
    .await
}

pub async fn pause(State(app): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, Error> {
    blocking(move || app.set_paused(&name, true).map(|_| Json(json!({"name": name, "paused": true})))).await
}

pub async fn unpause(State(app): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, Error> {
    blocking(move || app.set_paused(&name, false).map(|_| Json(json!({"name": name, "paused": false})))).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(default)]
    params: BTreeMap<String, Value>,
    #[serde(default)]
    logical_date: Option<String>,
}

fn parse_when(s: &str, what: &str) -> Result<chrono::DateTime<chrono::Utc>, Error> {
    crate::pipeline::validate::parse_date(s)
        .ok_or_else(|| Error::bad_request(format!("{what} {s:?} must be YYYY-MM-DD or an RFC 3339 time")))
}

pub async fn trigger(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), Error> {
    let b: TriggerBody = json_body(&body)?;
    let when = b.logical_date.as_deref().map(|s| parse_when(s, "logical_date")).transpose()?;
    blocking(move || {
        let id = app.trigger(&name, &b.params, when, "manual")?;
        Ok((StatusCode::CREATED, Json(json!({"run_id": id}))))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillBody {
    from: String,
    to: String,
}

pub async fn backfill(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), Error> {
    let b: BackfillBody = json_body(&body)?;
    let (from, to) = (parse_when(&b.from, "from")?, parse_when(&b.to, "to")?);
    blocking(move || {
        let ids = app.backfill(&name, from, to)?;
        Ok((StatusCode::CREATED, Json(json!({"run_ids": ids}))))
    })
    .await
}
