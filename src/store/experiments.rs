//! Experiment tracking: one experiment per training task instance (and per tuning trial), with its
//! params, tags, the dataset versions it read, the pipeline version, a step-wise metric history,
//! and its final metrics.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use crate::error::Result;

#[derive(Debug, Clone, Serialize)]
pub struct Experiment {
    pub id: i64,
    pub run_id: i64,
    pub task_id: String,
    pub map_index: i64,
    pub parent_id: Option<i64>,
    pub pipeline: String,
    pub spec_hash: String,
    pub kind: String,
    pub model: Option<String>,
    pub params: Value,
    pub tags: Value,
    pub datasets: Value,
    pub metrics: BTreeMap<String, f64>,
    pub artifact: Option<String>,
    pub state: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

const COLS: &str = "e.id, e.run_id, e.task_id, e.map_index, e.parent_id, e.pipeline, e.spec_hash, e.kind, e.model, \
                    e.params, e.tags, e.datasets, e.metrics, e.artifact, e.state, e.created_at, e.finished_at";

fn row(r: &rusqlite::Row) -> rusqlite::Result<Experiment> {
    let json = |i: usize| -> rusqlite::Result<Value> {
        let s: String = r.get(i)?;
        Ok(serde_json::from_str(&s).unwrap_or(Value::Null))
    };
    let metrics: String = r.get(12)?;
    Ok(Experiment {
        id: r.get(0)?,
        run_id: r.get(1)?,
        task_id: r.get(2)?,
        map_index: r.get(3)?,
        parent_id: r.get(4)?,
        pipeline: r.get(5)?,
        spec_hash: r.get(6)?,
        kind: r.get(7)?,
        model: r.get(8)?,
        params: json(9)?,
        tags: json(10)?,
        datasets: json(11)?,
        metrics: serde_json::from_str(&metrics).unwrap_or_default(),
        artifact: r.get(13)?,
        state: r.get(14)?,
        created_at: r.get(15)?,
        finished_at: r.get(16)?,
    })
}

/// What a trainer declares when it starts.
#[derive(Debug, Clone)]
pub struct NewExperiment {
    pub run_id: i64,
    pub task_id: String,
    pub map_index: i64,
    pub parent_id: Option<i64>,
    pub kind: String,
    pub model: Option<String>,
    pub params: Value,
    pub tags: Value,
    pub datasets: Value,
}

/// The experiment of a task instance, created on its first try and reused by retries (so a resumed
/// training keeps one history).
pub fn open(c: &Connection, e: &NewExperiment, now: i64) -> Result<i64> {
    let existing: Option<i64> = c
        .query_row(
            "SELECT id FROM experiments WHERE run_id = ?1 AND task_id = ?2 AND map_index = ?3 AND parent_id IS ?4",
            params![e.run_id, e.task_id, e.map_index, e.parent_id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = existing {
        c.execute("UPDATE experiments SET state = 'running', finished_at = NULL WHERE id = ?1", [id])?;
        return Ok(id);
    }
    let (pipeline, spec_hash): (String, String) =
        c.query_row("SELECT pipeline, spec_hash FROM runs WHERE id = ?1", [e.run_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    c.execute(
        "INSERT INTO experiments (run_id, task_id, map_index, parent_id, pipeline, spec_hash, kind, model, params, tags, datasets, state, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'running', ?12)",
        params![
            e.run_id,
            e.task_id,
            e.map_index,
            e.parent_id,
            pipeline,
            spec_hash,
            e.kind,
            e.model,
            e.params.to_string(),
            e.tags.to_string(),
            e.datasets.to_string(),
            now
        ],
    )?;
    Ok(c.last_insert_rowid())
}

/// Record metric values at a step; the latest value of each key also goes into `metrics`.
pub fn log_metrics(c: &Connection, id: i64, step: i64, values: &BTreeMap<String, f64>, now: i64) -> Result<()> {
    let mut st = c.prepare_cached(
        "INSERT OR REPLACE INTO metric_points (experiment_id, key, step, value, ts) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (k, v) in values.iter().filter(|(_, v)| v.is_finite()) {
        st.execute(params![id, k, step, v, now])?;
    }
    merge(c, id, values)
}

pub fn merge(c: &Connection, id: i64, values: &BTreeMap<String, f64>) -> Result<()> {
    let cur: String = c.query_row("SELECT metrics FROM experiments WHERE id = ?1", [id], |r| r.get(0))?;
    let mut m: BTreeMap<String, f64> = serde_json::from_str(&cur).unwrap_or_default();
    m.extend(values.iter().filter(|(_, v)| v.is_finite()).map(|(k, v)| (k.clone(), *v)));
    c.execute(
        "UPDATE experiments SET metrics = ?2 WHERE id = ?1",
        params![id, serde_json::to_string(&m).unwrap_or_default()],
    )?;
    Ok(())
}

/// Drop history past `step` (a resumed training rewinds to its checkpoint).
pub fn truncate_history(c: &Connection, id: i64, after_step: i64) -> Result<()> {
    c.execute("DELETE FROM metric_points WHERE experiment_id = ?1 AND step > ?2", params![id, after_step])?;
    Ok(())
}

/// Final state, summary metrics and the model artifact.
pub fn finish(
    c: &Connection,
    id: i64,
    state: &str,
    metrics: &BTreeMap<String, f64>,
    artifact: Option<&str>,
    now: i64,
) -> Result<()> {
    merge(c, id, metrics)?;
    c.execute(
        "UPDATE experiments SET state = ?2, artifact = coalesce(?3, artifact), finished_at = ?4 WHERE id = ?1",
        params![id, state, artifact, now],
    )?;
    Ok(())
}

pub fn get(c: &Connection, id: i64) -> Result<Option<Experiment>> {
    let sql = format!("SELECT {COLS} FROM experiments e WHERE e.id = ?1");
    Ok(c.query_row(&sql, [id], row).optional()?)
}

/// Filter and order for [`list`]. Params and metrics are addressed as `params.lr`, `metrics.rmse`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub pipeline: Option<String>,
    pub run_ids: Vec<i64>,
    pub parent_id: Option<i64>,
    /// (field, op, value) with op one of = != < <= > >=.
    pub conditions: Vec<(String, String, Value)>,
    pub order_by: Option<String>,
    pub descending: bool,
    pub limit: u32,
}

/// A `params.x` / `metrics.x` / plain column reference as SQL, or None if it names nothing.
fn field_sql(field: &str) -> Option<String> {
    let safe =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if let Some(k) = field.strip_prefix("params.").filter(|k| safe(k)) {
        return Some(format!("json_extract(e.params, '$.\"{k}\"')"));
    }
    if let Some(k) = field.strip_prefix("metrics.").filter(|k| safe(k)) {
        return Some(format!("json_extract(e.metrics, '$.\"{k}\"')"));
    }
    match field {
        "id" | "run_id" | "task_id" | "pipeline" | "kind" | "model" | "state" | "created_at" | "finished_at" => {
            Some(format!("e.{field}"))
        }
        _ => None,
    }
}

pub fn list(c: &Connection, f: &Filter) -> Result<Vec<Experiment>> {
    let mut sql = format!("SELECT {COLS} FROM experiments e WHERE 1=1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(p) = &f.pipeline {
        args.push(p.clone().into());
        sql += &format!(" AND e.pipeline = ?{}", args.len());
    }
    if !f.run_ids.is_empty() {
        let ids: Vec<String> = f.run_ids.iter().map(i64::to_string).collect();
        sql += &format!(" AND e.run_id IN ({})", ids.join(","));
    }
    if let Some(p) = f.parent_id {
        args.push(p.into());
        sql += &format!(" AND e.parent_id = ?{}", args.len());
    }
    for (field, op, value) in &f.conditions {
        let col = field_sql(field).ok_or_else(|| crate::error::Error::bad_request(unknown_field(field)))?;
        if !["=", "!=", "<", "<=", ">", ">="].contains(&op.as_str()) {
            return Err(crate::error::Error::bad_request(format!("unknown comparison `{op}`")));
        }
        // Bind what json_extract returns for the stored value: integers as integers, booleans as
        // 1/0, other numbers as reals; columns of text compare as text.
        let text_column = !field.starts_with("params.")
            && !field.starts_with("metrics.")
            && !matches!(field.as_str(), "id" | "run_id" | "created_at" | "finished_at");
        args.push(match value {
            _ if text_column => match value {
                Value::String(s) => s.clone().into(),
                Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
                    format!("{}", n.as_f64().unwrap_or(0.0) as i64).into()
                }
                other => other.to_string().into(),
            },
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9e15 => (f as i64).into(),
                Some(f) => f.into(),
                None => 0.0.into(),
            },
            Value::String(s) if s == "true" => 1i64.into(),
            Value::String(s) if s == "false" => 0i64.into(),
            Value::String(s) => s.clone().into(),
            other => other.to_string().into(),
        });
        sql += &format!(" AND {col} {op} ?{}", args.len());
    }
    match &f.order_by {
        Some(field) => {
            let col = field_sql(field).ok_or_else(|| crate::error::Error::bad_request(unknown_field(field)))?;
            let dir = if f.descending { "DESC" } else { "ASC" };
            sql += &format!(" ORDER BY {col} IS NULL, {col} {dir}, e.id DESC");
        }
        None => sql += " ORDER BY e.id DESC",
    }
    sql += &format!(" LIMIT {}", f.limit.clamp(1, 1000));
    let mut st = c.prepare(&sql)?;
    Ok(st.query_map(rusqlite::params_from_iter(args), row)?.collect::<rusqlite::Result<_>>()?)
}

fn unknown_field(field: &str) -> String {
    format!(
        "cannot filter or sort by `{field}`; use params.NAME, metrics.NAME, pipeline, model, state, run_id or created_at"
    )
}

/// One metric's history, downsampled to at most `max_points` (evenly spaced, always keeping the
/// last point).
pub fn history(c: &Connection, id: i64, key: &str, max_points: usize) -> Result<Vec<(i64, f64)>> {
    let mut st =
        c.prepare_cached("SELECT step, value FROM metric_points WHERE experiment_id = ?1 AND key = ?2 ORDER BY step")?;
    let all: Vec<(i64, f64)> =
        st.query_map(params![id, key], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    Ok(downsample(all, max_points))
}

/// The metric keys an experiment has a history for.
pub fn history_keys(c: &Connection, id: i64) -> Result<Vec<String>> {
    let mut st = c.prepare_cached("SELECT DISTINCT key FROM metric_points WHERE experiment_id = ?1 ORDER BY key")?;
    Ok(st.query_map([id], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?)
}

pub fn downsample(all: Vec<(i64, f64)>, max_points: usize) -> Vec<(i64, f64)> {
    let n = all.len();
    if max_points == 0 || n <= max_points {
        return all;
    }
    if max_points == 1 {
        return vec![all[n - 1]];
    }
    (0..max_points).map(|i| all[i * (n - 1) / (max_points - 1)]).collect()
}

#[cfg(test)]
mod tests {
    use super::downsample;

    #[test]
    fn downsampling_keeps_ends_and_count() {
        let all: Vec<(i64, f64)> = (0..1000).map(|i| (i, i as f64)).collect();
        let d = downsample(all.clone(), 10);
        assert_eq!(d.len(), 10);
        assert_eq!((d[0].0, d[9].0), (0, 999));
        assert_eq!(downsample(all.clone(), 5000).len(), 1000);
    }
}
