//! `validate`: per-column statistics and an inferred schema for a dataset version, then anomalies
//! against a saved schema and a baseline (the previous validated version of the same dataset, or
//! another dataset such as the training split). Anomalies fail the task or only warn, per setting;
//! the statistics are stored for the API and UI either way.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Kind, Op, Outcome, Param, TaskContext, opt, req};
use crate::data::stats::{self, Rules};
use crate::data::{self, DatasetRef};

pub struct Validate;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    input: DatasetRef,
    #[serde(default)]
    baseline: Option<Value>,
    #[serde(default)]
    schema: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    rules: Option<Value>,
    #[serde(default = "warn")]
    on_anomaly: String,
}

fn warn() -> String {
    "warn".into()
}

impl Op for Validate {
    fn name(&self) -> &'static str {
        "validate"
    }
    fn params(&self) -> &'static [Param] {
        const P: &[Param] = &[
            req("input", Kind::Map, "the dataset to check, e.g. ${{ tasks.load.outputs.dataset }}"),
            opt("baseline", Kind::Any, "previous (default: the last validated version), none, or a dataset"),
            opt("schema", Kind::Map, "expected columns: name → type (or {type, nullable})"),
            opt("rules", Kind::Map, "thresholds: null_rate_jump, psi, linf, new_categories, skip_drift"),
            opt("on_anomaly", Kind::String, "fail or warn (default)"),
        ];
        P
    }
    fn check(&self, with: &Value) -> Vec<String> {
        let mut e = Vec::new();
        match with.get("on_anomaly").and_then(Value::as_str) {
            None | Some("fail" | "warn") => {}
            Some(s) if s.contains("${{") => {}
            Some(s) => e.push(format!("on_anomaly must be fail or warn, got `{s}`")),
        }
        match with.get("baseline") {
            None | Some(Value::Object(_)) => {}
            Some(Value::String(s)) if s == "previous" || s == "none" || s.contains("${{") => {}
            Some(other) => e.push(format!("baseline must be previous, none or a dataset, got {other}")),
        }
        if let Some(r) = with.get("rules").filter(|r| !r.to_string().contains("${{"))
            && let Err(err) = serde_json::from_value::<Rules>(r.clone())
        {
            e.push(format!("rules: {err}"));
        }
        e
    }

    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String> {
        let p: Params = super::decode("validate", with)?;
        let rules: Rules = match &p.rules {
            Some(r) => serde_json::from_value(r.clone()).map_err(|e| format!("rules: {e}"))?,
            None => Rules::default(),
        };
        let df = data::read(&ctx.data_dir, &p.input)?;
        let (baseline, label) = match &p.baseline {
            None => previous(ctx, &p.input)?,
            Some(Value::String(s)) if s == "previous" => previous(ctx, &p.input)?,
            Some(Value::String(s)) if s == "none" => (None, None),
            Some(v) => {
                let r: DatasetRef =
                    serde_json::from_value(v.clone()).map_err(|e| format!("baseline is not a dataset: {e}"))?;
                let base = stats::profile(&data::read(&ctx.data_dir, &r)?, None)?;
                (Some(base), Some(format!("{} v{}", r.name, r.version)))
            }
        };
        let cur = stats::profile(&df, baseline.as_ref())?;
        let mut anomalies = Vec::new();
        if let Some(schema) = &p.schema {
            anomalies.extend(stats::check_schema(schema, &cur));
        }
        if let Some(base) = &baseline {
            anomalies.extend(stats::compare(base, &cur, &rules));
        }
        let run = (ctx.run_id, ctx.task_id.as_str());
        data::save_stats(&ctx.store, &p.input, &cur, &anomalies, label.clone(), run)?;

        ctx.log.line(&format!(
            "dataset {} v{}: {} rows, {} columns; baseline: {}",
            p.input.name,
            p.input.version,
            cur.rows,
            cur.columns.len(),
            label.as_deref().unwrap_or("none")
        ));
        for c in &cur.columns {
            let range = match (&c.min, &c.max) {
                (Some(lo), Some(hi)) => format!(" range {lo}..{hi}"),
                _ => String::new(),
            };
            ctx.log.line(&format!(
                "  {} ({}): {} nulls, {} distinct{range}{}",
                c.name,
                c.dtype,
                c.nulls,
                c.distinct,
                c.mean.map(|m| format!(", mean {m:.4}")).unwrap_or_default()
            ));
        }
        for a in &anomalies {
            ctx.log.line(&format!("anomaly [{}] {}", a.kind, a.message));
        }
        if anomalies.is_empty() {
            ctx.log.line("no anomalies");
        } else if p.on_anomaly == "fail" {
            let first: Vec<&str> = anomalies.iter().take(3).map(|a| a.message.as_str()).collect();
            return Err(format!("{} anomalies (on_anomaly: fail): {}", anomalies.len(), first.join("; ")));
        }
        Ok(Outcome::Done(json!({
            "dataset": p.input,
            "ok": anomalies.is_empty(),
            "anomaly_count": anomalies.len(),
            "anomalies": anomalies,
            "baseline": label,
            "schema": cur.schema(),
        })))
    }
}

/// The statistics of the last validated version before this one, if any.
fn previous(ctx: &TaskContext, r: &DatasetRef) -> Result<(Option<stats::Stats>, Option<String>), String> {
    let (name, version) = (r.name.clone(), r.version);
    let prev = ctx.store.read(move |c| data::previous_stats(c, &name, version)).map_err(|e| e.message)?;
    Ok(match prev {
        Some((v, s)) => (Some(s), Some(format!("{} v{v}", r.name))),
        None => (None, None),
    })
}
