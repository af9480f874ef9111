//! `sql`: polars SQL over named upstream datasets (`FROM trips JOIN zones ...`) → a new dataset.

use std::collections::BTreeMap;

use polars::prelude::*;
use polars::sql::SQLContext;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Kind, Op, Outcome, Param, TaskContext, req};
use crate::data::{self, DatasetRef};

pub struct Sql;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    inputs: BTreeMap<String, DatasetRef>,
    query: String,
    name: String,
}

impl Op for Sql {
    fn name(&self) -> &'static str {
        "sql"
    }
    fn params(&self) -> &'static [Param] {
        const P: &[Param] = &[
            req("inputs", Kind::Map, "table name → a dataset, e.g. trips: ${{ tasks.load.outputs.dataset }}"),
            req("query", Kind::String, "a polars SQL query over those table names"),
            req("name", Kind::String, "the result dataset's name"),
        ];
        P
    }
    fn check(&self, with: &Value) -> Vec<String> {
        match with.get("inputs").and_then(Value::as_object) {
            Some(m) if m.is_empty() => vec!["`inputs` is empty: name at least one dataset".into()],
            _ => Vec::new(),
        }
    }
    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String> {
        let p: Params = super::decode("sql", with)?;
        let mut sql = SQLContext::new();
        for (table, r) in &p.inputs {
            let df = data::read(&ctx.data_dir, r)?;
            ctx.log.line(&format!("table {table}: dataset {} v{} ({} rows)", r.name, r.version, df.height()));
            sql.register(table, df.lazy());
        }
        let mut df = sql.execute(&p.query).and_then(|lf| lf.collect()).map_err(|e| format!("query failed: {e}"))?;
        let sources: Vec<String> = p.inputs.values().map(|r| format!("{} v{}", r.name, r.version)).collect();
        let source = format!("sql over {}", sources.join(", "));
        let run = (ctx.run_id, ctx.task_id.as_str());
        let (r, schema) = data::save(&mut df, &p.name, &source, &ctx.artifacts_dir, &ctx.store, run)?;
        let rows = r.rows;
        ctx.log.line(&format!("dataset {} v{}: {rows} rows", r.name, r.version));
        Ok(Outcome::Done(json!({"dataset": r, "rows": rows, "schema": schema, "preview": data::preview(&df, 5)})))
    }
}
