//! Datasets: Parquet files in the content store, addressed by SHA-256, with a version record per
//! name (`datasets` table). Ops produce them into their artifacts dir and hand a [`DatasetRef`]
//! on through their outputs; downstream ops read them back by hash.

pub mod stats;

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::{self, Store};

/// What a task's outputs carry to point at a dataset version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatasetRef {
    pub name: String,
    pub version: i64,
    pub sha256: String,
    pub rows: i64,
}

/// Column name → type, as recorded with each version.
pub fn schema_json(df: &DataFrame) -> Value {
    Value::Object(df.schema().iter().map(|(n, t)| (n.to_string(), json!(t.to_string()))).collect())
}

/// Write `df` as zstd Parquet into `dir/file`; returns the path and the file's SHA-256.
pub fn write_parquet(df: &mut DataFrame, dir: &Path, file: &str) -> Result<(PathBuf, String), String> {
    let path = dir.join(file);
    let f = File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    ParquetWriter::new(f)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(df)
        .map_err(|e| format!("writing Parquet failed: {e}"))?;
    let sha = crate::artifacts::sha256_file(&path).map_err(|e| format!("cannot hash {}: {e}", path.display()))?;
    Ok((path, sha))
}

/// Write `df` as the next version of dataset `name`: Parquet into `dir` (the task's artifacts
/// dir, which the executor moves into the content store) and a version record. Returns the
/// reference and the schema.
pub fn save(
    df: &mut DataFrame,
    name: &str,
    source: &str,
    dir: &Path,
    store: &Store,
    run: (i64, &str),
) -> Result<(DatasetRef, Value), String> {
    let schema = schema_json(df);
    let (_, sha) = write_parquet(df, dir, &format!("{name}.parquet"))?;
    let r = record(store, name, &sha, df.height() as i64, &schema, source, run)?;
    Ok((r, schema))
}

/// A column as numbers, NaN where a value is missing; `what` names it in errors ("target", "column").
pub fn numeric(df: &DataFrame, name: &str, what: &str) -> Result<Vec<f64>, String> {
    let c = df.column(name).map_err(|_| format!("the dataset has no {what} `{name}`"))?;
    let c = c.cast(&DataType::Float64).map_err(|e| format!("{what} `{name}` is not numeric: {e}"))?;
    Ok(c.f64().map_err(|e| e.to_string())?.iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

/// The first `n` rows as JSON records, for outputs, logs and the UI.
pub fn preview(df: &DataFrame, n: usize) -> Value {
    let mut head = df.head(Some(n));
    let mut buf = Vec::new();
    let written = JsonWriter::new(&mut buf).with_json_format(JsonFormat::Json).finish(&mut head);
    match written {
        Ok(()) => serde_json::from_slice(&buf).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Read a dataset version back from the content store.
pub fn read(data_dir: &Path, r: &DatasetRef) -> Result<DataFrame, String> {
    if !crate::artifacts::is_sha256(&r.sha256) {
        return Err(format!("dataset {} v{}: `{}` is not a sha256 (64 hex digits)", r.name, r.version, r.sha256));
    }
    let path = crate::artifacts::path_of(data_dir, &r.sha256);
    let f =
        File::open(&path).map_err(|e| format!("dataset {} v{} is missing from the store ({e})", r.name, r.version))?;
    ParquetReader::new(f).finish().map_err(|e| format!("cannot read dataset {} v{}: {e}", r.name, r.version))
}

/// Record a new version of `name` (the next number after its latest), unless the latest version
/// already has this exact content, in which case that version is returned.
pub fn record(
    store: &Store,
    name: &str,
    sha256: &str,
    rows: i64,
    schema: &Value,
    source: &str,
    run: (i64, &str),
) -> Result<DatasetRef, String> {
    let (name, sha, schema, source, task) =
        (name.to_string(), sha256.to_string(), schema.to_string(), source.to_string(), run.1.to_string());
    let run_id = run.0;
    store
        .write(move |tx| {
            let latest: Option<(i64, String)> = tx
                .query_row(
                    "SELECT version, sha256 FROM datasets WHERE name = ?1 ORDER BY version DESC LIMIT 1",
                    [&name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let version = match latest {
                Some((v, s)) if s == sha => v,
                Some((v, _)) => v + 1,
                None => 1,
            };
            tx.execute(
                "INSERT OR IGNORE INTO datasets (name, version, sha256, rows, schema, source, run_id, task_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![name, version, sha, rows, schema, source, run_id, task, store::now_us()],
            )?;
            Ok(DatasetRef { name: name.clone(), version, sha256: sha.clone(), rows })
        })
        .map_err(|e| e.message)
}

/// One recorded version, as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionRow {
    pub name: String,
    pub version: i64,
    pub sha256: String,
    pub rows: i64,
    pub schema: Value,
    pub source: String,
    pub run_id: Option<i64>,
    pub task_id: Option<String>,
    pub created_at: i64,
}

fn version_row(r: &rusqlite::Row) -> rusqlite::Result<VersionRow> {
    let schema: String = r.get(4)?;
    Ok(VersionRow {
        name: r.get(0)?,
        version: r.get(1)?,
        sha256: r.get(2)?,
        rows: r.get(3)?,
        schema: serde_json::from_str(&schema).unwrap_or(Value::Null),
        source: r.get(5)?,
        run_id: r.get(6)?,
        task_id: r.get(7)?,
        created_at: r.get(8)?,
    })
}

const VERSION_COLS: &str = "name, version, sha256, rows, schema, source, run_id, task_id, created_at";

/// The latest version of every dataset, by name.
pub fn latest(c: &rusqlite::Connection) -> crate::error::Result<Vec<VersionRow>> {
    let sql = format!(
        "SELECT {VERSION_COLS} FROM datasets d WHERE version = (SELECT max(version) FROM datasets WHERE name = d.name) ORDER BY name"
    );
    let mut st = c.prepare_cached(&sql)?;
    Ok(st.query_map([], version_row)?.collect::<rusqlite::Result<_>>()?)
}

/// Every version of one dataset, newest first.
pub fn versions(c: &rusqlite::Connection, name: &str) -> crate::error::Result<Vec<VersionRow>> {
    let sql = format!("SELECT {VERSION_COLS} FROM datasets WHERE name = ?1 ORDER BY version DESC");
    let mut st = c.prepare_cached(&sql)?;
    Ok(st.query_map([name], version_row)?.collect::<rusqlite::Result<_>>()?)
}

/// Store the statistics a `validate` task computed for a dataset version (a retry of the same
/// task replaces its own row).
pub fn save_stats(
    store: &Store,
    r: &DatasetRef,
    stats: &stats::Stats,
    anomalies: &[stats::Anomaly],
    baseline: Option<String>,
    run: (i64, &str),
) -> Result<(), String> {
    let (name, version, task, run_id) = (r.name.clone(), r.version, run.1.to_string(), run.0);
    let (body, schema) = (serde_json::to_string(stats).map_err(|e| e.to_string())?, stats.schema().to_string());
    let anomalies = serde_json::to_string(anomalies).map_err(|e| e.to_string())?;
    store
        .write(move |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO dataset_stats (name, version, stats, schema, anomalies, baseline, run_id, task_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![name, version, body, schema, anomalies, baseline, run_id, task, store::now_us()],
            )?;
            Ok(())
        })
        .map_err(|e| e.message)
}

/// Statistics of the newest validated version of `name` older than `version`.
pub fn previous_stats(
    c: &rusqlite::Connection,
    name: &str,
    version: i64,
) -> crate::error::Result<Option<(i64, stats::Stats)>> {
    let row: Option<(i64, String)> = c
        .query_row(
            "SELECT version, stats FROM dataset_stats WHERE name = ?1 AND version < ?2 ORDER BY version DESC, id DESC LIMIT 1",
            params![name, version],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.and_then(|(v, s)| serde_json::from_str(&s).ok().map(|s| (v, s))))
}

/// What `validate` recorded for one version: statistics, inferred schema, anomalies and baseline.
/// The newest record, or the one a given task made (`task`, optionally with `run`).
pub fn stats_of(
    c: &rusqlite::Connection,
    name: &str,
    version: i64,
    run: Option<i64>,
    task: Option<&str>,
) -> crate::error::Result<Option<Value>> {
    type Row = (String, String, String, Option<String>, i64, Option<i64>, Option<String>);
    let row: Option<Row> = c
        .query_row(
            "SELECT stats, schema, anomalies, baseline, created_at, run_id, task_id FROM dataset_stats
             WHERE name = ?1 AND version = ?2 AND (?3 IS NULL OR run_id = ?3) AND (?4 IS NULL OR task_id = ?4)
             ORDER BY id DESC LIMIT 1",
            params![name, version, run, task],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
        )
        .optional()?;
    Ok(row.map(|(s, sc, a, b, t, run_id, task_id)| {
        json!({
            "run_id": run_id,
            "task_id": task_id,
            "statistics": serde_json::from_str::<Value>(&s).unwrap_or(Value::Null),
            "schema": serde_json::from_str::<Value>(&sc).unwrap_or(Value::Null),
            "anomalies": serde_json::from_str::<Value>(&a).unwrap_or(Value::Null),
            "baseline": b,
            "created_at": t,
        })
    }))
}

pub const FORMATS: &[&str] = &["csv", "parquet", "ndjson"];

/// The format of a data file from its name (or `given`): csv, parquet or ndjson.
pub fn format_of(path: &str, given: Option<&str>) -> Result<&'static str, String> {
    if let Some(f) = given {
        return FORMATS
            .iter()
            .copied()
            .find(|x| *x == f)
            .ok_or_else(|| format!("unknown format `{f}`; use csv, parquet or ndjson"));
    }
    let lower = path.to_ascii_lowercase();
    let lower = lower.split('?').next().unwrap_or("");
    if lower.ends_with(".csv") || lower.ends_with(".tsv") {
        Ok("csv")
    } else if lower.ends_with(".parquet") || lower.ends_with(".pq") {
        Ok("parquet")
    } else if lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
        Ok("ndjson")
    } else {
        Err(format!("cannot tell the format of {path}: set `format` to csv, parquet or ndjson"))
    }
}

/// Read one data file (CSV with a header and dates parsed, Parquet, or NDJSON).
pub fn read_one(path: &Path, format: &str, skip_rows: usize) -> PolarsResult<DataFrame> {
    match format {
        "csv" => CsvReadOptions::default()
            .with_has_header(true)
            .with_skip_rows(skip_rows)
            .with_infer_schema_length(Some(10_000))
            .with_parse_options(CsvParseOptions::default().with_try_parse_dates(true))
            .try_into_reader_with_file_path(Some(path.to_path_buf()))?
            .finish(),
        "parquet" => ParquetReader::new(std::fs::File::open(path)?).finish(),
        _ => JsonReader::new(std::fs::File::open(path)?).with_json_format(JsonFormat::JsonLines).finish(),
    }
}
