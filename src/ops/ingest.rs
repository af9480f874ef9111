//! `ingest`: read CSV, Parquet or NDJSON from a path, a glob or an http(s) URL; rename columns and
//! override types; drop or fail on bad rows; write a Parquet dataset and record its version.
//!
//! A bad row is one where a type override could not convert a non-empty value.

use std::collections::BTreeMap;
use std::path::PathBuf;

use polars::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Kind, Op, Outcome, Param, TaskContext, opt, req};
use crate::data;

pub struct Ingest;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    source: String,
    name: String,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
    #[serde(default)]
    types: BTreeMap<String, String>,
    #[serde(default = "drop")]
    bad_rows: String,
    #[serde(default)]
    skip_rows: usize,
}

fn drop() -> String {
    "drop".into()
}

const TYPES: &[&str] = &["string", "int", "float", "bool", "date", "datetime"];

fn dtype(name: &str) -> Option<DataType> {
    Some(match name {
        "string" => DataType::String,
        "int" => DataType::Int64,
        "float" => DataType::Float64,
        "bool" => DataType::Boolean,
        "date" => DataType::Date,
        "datetime" => DataType::Datetime(TimeUnit::Microseconds, None),
        _ => return None,
    })
}

/// The files a source names: one path, every match of a glob, or a download of a URL.
fn resolve(source: &str, ctx: &TaskContext) -> Result<Vec<PathBuf>, String> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let dest = ctx.artifacts_dir.parent().unwrap_or(&ctx.artifacts_dir).join("download");
        let mut resp = ureq::get(source).call().map_err(|e| format!("GET {source} failed: {e}"))?;
        let mut file = std::fs::File::create(&dest).map_err(|e| e.to_string())?;
        let mut reader = resp.body_mut().as_reader();
        let n = std::io::copy(&mut reader, &mut file).map_err(|e| format!("download of {source} failed: {e}"))?;
        ctx.log.line(&format!("downloaded {n} bytes from {source}"));
        return Ok(vec![dest]);
    }
    if source.contains(['*', '?', '[']) {
        let mut files: Vec<PathBuf> = glob::glob(source)
            .map_err(|e| format!("bad glob {source:?}: {e}"))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!("no file matches {source}"));
        }
        return Ok(files);
    }
    let p = PathBuf::from(source);
    if !p.is_file() {
        return Err(format!("{source} is not a file (relative paths start at the server's working directory)"));
    }
    Ok(vec![p])
}

impl Op for Ingest {
    fn name(&self) -> &'static str {
        "ingest"
    }
    fn params(&self) -> &'static [Param] {
        const P: &[Param] = &[
            req("source", Kind::String, "a file path, a glob (data/*.csv) or an http(s) URL"),
            req("name", Kind::String, "the dataset's name; each run records a new version"),
            opt("format", Kind::String, "csv, parquet or ndjson (default: from the file extension)"),
            opt("rename", Kind::Map, "old column name → new name"),
            opt("types", Kind::Map, "column → string, int, float, bool, date or datetime"),
            opt("bad_rows", Kind::String, "drop (default) or fail: rows where a type override cannot convert a value"),
            opt("skip_rows", Kind::Int, "lines to skip before a CSV header (a banner line)"),
        ];
        P
    }
    fn check(&self, with: &Value) -> Vec<String> {
        let mut e = Vec::new();
        // Templated values are checked again after rendering, in `run`.
        let literal = |key: &str| with.get(key).and_then(Value::as_str).filter(|v| !v.contains("${{"));
        if let Some(f) = literal("format")
            && !data::FORMATS.contains(&f)
        {
            e.push(format!("unknown format `{f}`; use csv, parquet or ndjson"));
        }
        for (col, t) in with.get("types").and_then(Value::as_object).into_iter().flatten() {
            if !t.as_str().is_some_and(|t| TYPES.contains(&t) || t.contains("${{")) {
                e.push(format!("type of `{col}` must be one of {}, got {t}", TYPES.join(", ")));
            }
        }
        if let Some(b) = literal("bad_rows")
            && b != "drop"
            && b != "fail"
        {
            e.push(format!("bad_rows must be drop or fail, got `{b}`"));
        }
        e
    }

    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String> {
        let p: Params = super::decode("ingest", with)?;
        if p.bad_rows != "drop" && p.bad_rows != "fail" {
            return Err(format!("bad_rows must be drop or fail, got `{}`", p.bad_rows));
        }
        let format = data::format_of(&p.source, p.format.as_deref())?;
        let files = resolve(&p.source, ctx)?;
        let mut df: Option<DataFrame> = None;
        for f in &files {
            let part =
                data::read_one(f, format, p.skip_rows).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            ctx.log.line(&format!("read {} rows from {}", part.height(), f.display()));
            match df.as_mut() {
                None => df = Some(part),
                Some(all) => {
                    all.vstack_mut_owned(part)
                        .map_err(|e| format!("{} does not match the earlier files: {e}", f.display()))?;
                }
            }
            if ctx.stop.reason().is_some() {
                return Err("stopped".into());
            }
        }
        let mut df = df.ok_or("no input files")?;
        for (old, new) in &p.rename {
            df.rename(old, new.as_str().into()).map_err(|_| format!("rename: there is no column `{old}`"))?;
        }
        let total = df.height();
        let mut bad = BooleanChunked::full("bad".into(), false, total);
        for (col, t) in &p.types {
            let dt = dtype(t).ok_or_else(|| format!("unknown type `{t}` for `{col}`"))?;
            let before = df.column(col).map_err(|_| format!("types: there is no column `{col}`"))?.clone();
            let after = before.cast(&dt).map_err(|e| format!("cannot convert `{col}` to {t}: {e}"))?;
            let failed = &before.is_not_null() & &after.is_null();
            let n = failed.sum().unwrap_or(0);
            if n > 0 {
                ctx.log.line(&format!("{n} values of `{col}` are not a valid {t}"));
            }
            bad = &bad | &failed;
            df.with_column(after).map_err(|e| e.to_string())?;
        }
        let n_bad = bad.sum().unwrap_or(0) as usize;
        if n_bad > 0 {
            if p.bad_rows == "fail" {
                return Err(format!(
                    "{n_bad} of {total} rows have values that do not convert to their declared types (bad_rows: fail)"
                ));
            }
            df = df.filter(&!&bad).map_err(|e| e.to_string())?;
            ctx.log.line(&format!("dropped {n_bad} of {total} rows with values that do not convert (bad_rows: drop)"));
        }
        let run = (ctx.run_id, ctx.task_id.as_str());
        let (r, schema) = data::save(&mut df, &p.name, &p.source, &ctx.artifacts_dir, &ctx.store, run)?;
        let rows = r.rows;
        ctx.log.line(&format!("dataset {} v{}: {rows} rows, sha256 {}", r.name, r.version, r.sha256));
        Ok(Outcome::Done(json!({"dataset": r, "rows": rows, "dropped": n_bad, "schema": schema, "files": files.len()})))
    }
}
