//! `/api/v1/experiments`: tracked training runs filtered and sorted by params and metrics, one
//! experiment with its metric keys, a metric's history (downsampled), and a side-by-side compare.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, blocking};
use crate::error::Error;
use crate::store::experiments::{self, Experiment, Filter};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pipeline: Option<String>,
    /// Comma-separated pipeline run ids.
    runs: Option<String>,
    /// Comma-separated conditions: `params.hidden=64,metrics.rmse<5.5`.
    #[serde(rename = "where")]
    filter: Option<String>,
    /// A field to sort by: `metrics.rmse`, `params.lr`, `created_at`...; `-metrics.rmse` sorts descending.
    order: Option<String>,
    limit: Option<u32>,
    parent: Option<i64>,
}

fn ids(s: &str, what: &str) -> Result<Vec<i64>, Error> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| x.trim().parse().map_err(|_| Error::bad_request(format!("`{x}` in {what} is not a number"))))
        .collect()
}

/// `field<op>value`, where value parses as a number when it can.
impl ListQuery {
    /// The query the UI's experiments page sends.
    pub fn new(pipeline: Option<String>, filter: Option<String>, order: Option<String>, limit: u32) -> ListQuery {
        ListQuery { pipeline, filter, order, limit: Some(limit), ..Default::default() }
    }
}

pub fn parse_condition(c: &str) -> Result<(String, String, Value), Error> {
    for op in [">=", "<=", "!=", "=", "<", ">"] {
        if let Some((field, value)) = c.split_once(op) {
            let value = value.trim();
            let v = value.parse::<f64>().map(|n| json!(n)).unwrap_or_else(|_| json!(value));
            return Ok((field.trim().to_string(), op.to_string(), v));
        }
    }
    Err(Error::bad_request(format!("condition `{c}` has no comparison; write e.g. metrics.rmse<5 or params.hidden=64")))
}

pub fn filter_of(q: ListQuery) -> Result<Filter, Error> {
    let conditions = match &q.filter {
        Some(w) => w.split(',').filter(|c| !c.trim().is_empty()).map(parse_condition).collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let (order_by, descending) = match q.order {
        Some(o) => match o.strip_prefix('-') {
            Some(f) => (Some(f.to_string()), true),
            None => (Some(o), false),
        },
        None => (None, false),
    };
    Ok(Filter {
        pipeline: q.pipeline,
        run_ids: q.runs.as_deref().map(|r| ids(r, "runs")).transpose()?.unwrap_or_default(),
        parent_id: q.parent,
        conditions,
        order_by,
        descending,
        limit: q.limit.unwrap_or(100),
    })
}

pub async fn list(State(app): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<Value>, Error> {
    let f = filter_of(q)?;
    let rows = blocking(move || app.store.read(|c| experiments::list(c, &f))).await?;
    Ok(Json(json!({ "experiments": rows })))
}

pub async fn get(State(app): State<AppState>, Path(id): Path<i64>) -> Result<Json<Value>, Error> {
    let found = blocking(move || {
        app.store.read(|c| Ok(experiments::get(c, id)?.map(|e| (e, experiments::history_keys(c, id)))))
    })
    .await?;
    match found {
        Some((e, keys)) => Ok(Json(json!({ "experiment": e, "history_keys": keys? }))),
        None => Err(Error::not_found(format!("no experiment {id}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    max_points: Option<usize>,
}

pub async fn history(
    State(app): State<AppState>,
    Path((id, key)): Path<(i64, String)>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, Error> {
    let max = q.max_points.unwrap_or(1000).clamp(1, 100_000);
    let k = key.clone();
    let (exists, points) = blocking(move || {
        app.store.read(|c| Ok((experiments::get(c, id)?.is_some(), experiments::history(c, id, &k, max)?)))
    })
    .await?;
    if !exists {
        return Err(Error::not_found(format!("no experiment {id}")));
    }
    let points: Vec<Value> = points.into_iter().map(|(s, v)| json!({"step": s, "value": v})).collect();
    Ok(Json(json!({ "experiment": id, "key": key, "points": points })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareQuery {
    /// Comma-separated experiment ids.
    ids: Option<String>,
    /// Comma-separated pipeline run ids: every experiment in them.
    runs: Option<String>,
}

pub async fn compare(State(app): State<AppState>, Query(q): Query<CompareQuery>) -> Result<Json<Value>, Error> {
    let exp_ids = q.ids.as_deref().map(|s| ids(s, "ids")).transpose()?.unwrap_or_default();
    let run_ids = q.runs.as_deref().map(|s| ids(s, "runs")).transpose()?.unwrap_or_default();
    if exp_ids.is_empty() && run_ids.is_empty() {
        return Err(Error::bad_request("name experiments (?ids=1,2) or pipeline runs (?runs=3,4) to compare"));
    }
    let rows = blocking(move || {
        app.store.read(|c| {
            let mut out = Vec::new();
            for id in &exp_ids {
                out.push(experiments::get(c, *id)?.ok_or_else(|| Error::not_found(format!("no experiment {id}")))?);
            }
            if !run_ids.is_empty() {
                let f = Filter { run_ids: run_ids.clone(), limit: 1000, ..Default::default() };
                let mut found = experiments::list(c, &f)?;
                for r in &run_ids {
                    if !found.iter().any(|e| e.run_id == *r) {
                        return Err(Error::not_found(format!(
                            "run {r} has no tracked experiments (no train task ran)"
                        )));
                    }
                }
                found.reverse();
                out.extend(found);
            }
            Ok(out)
        })
    })
    .await?;
    Ok(Json(comparison(&rows)))
}

/// Params (with a flag on those that differ) and metrics side by side.
pub fn comparison(rows: &[Experiment]) -> Value {
    let mut param_keys = BTreeSet::new();
    let mut metric_keys = BTreeSet::new();
    for e in rows {
        if let Some(p) = e.params.as_object() {
            param_keys.extend(p.keys().cloned());
        }
        metric_keys.extend(e.metrics.keys().cloned());
    }
    let params: BTreeMap<String, Value> = param_keys
        .into_iter()
        .map(|k| {
            let values: Vec<Value> = rows.iter().map(|e| e.params.get(&k).cloned().unwrap_or(Value::Null)).collect();
            let differs = values.windows(2).any(|w| w[0] != w[1]);
            (k, json!({"values": values, "differs": differs}))
        })
        .collect();
    let metrics: BTreeMap<String, Value> = metric_keys
        .into_iter()
        .map(|k| {
            let values: Vec<Option<f64>> = rows.iter().map(|e| e.metrics.get(&k).copied()).collect();
            (k, json!({"values": values}))
        })
        .collect();
    let heads: Vec<Value> = rows
        .iter()
        .map(|e| {
            json!({"id": e.id, "run_id": e.run_id, "task_id": e.task_id, "map_index": e.map_index,
                   "pipeline": e.pipeline, "model": e.model, "state": e.state, "datasets": e.datasets})
        })
        .collect();
    json!({ "experiments": heads, "params": params, "metrics": metrics })
}
