//! `/api/v1/datasets`: the latest version of each dataset, and one dataset's versions.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{AppState, blocking};
use crate::data;
use crate::error::Error;

pub async fn list(State(app): State<AppState>) -> Result<Json<Value>, Error> {
    let rows = blocking(move || app.store.read(data::latest)).await?;
    Ok(Json(json!({ "datasets": rows })))
}

pub async fn get(State(app): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, Error> {
    let n = name.clone();
    let rows = blocking(move || app.store.read(|c| data::versions(c, &n))).await?;
    if rows.is_empty() {
        return Err(Error::not_found(format!("no dataset named `{name}`")));
    }
    Ok(Json(json!({ "name": name, "versions": rows })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    run: Option<i64>,
    task: Option<String>,
}

/// What `validate` recorded for one version: statistics, inferred schema, anomalies. The newest
/// record, or the one of `?task=ID` (and `&run=N`).
pub async fn stats(
    State(app): State<AppState>,
    Path((name, version)): Path<(String, i64)>,
    axum::extract::Query(q): axum::extract::Query<StatsQuery>,
) -> Result<Json<Value>, Error> {
    let n = name.clone();
    let found = blocking(move || app.store.read(|c| data::stats_of(c, &n, version, q.run, q.task.as_deref()))).await?;
    match found {
        Some(v) => Ok(Json(v)),
        None => Err(Error::not_found(format!(
            "no statistics for dataset `{name}` v{version}; a `validate` task computes them"
        ))),
    }
}
