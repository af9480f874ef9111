//! `evaluate`: score a trained model on a dataset (usually the test or validation split) next to
//! baselines computed on the same rows, per slice and per forecast step, then apply gates (value
//! thresholds, "beat this baseline", and change thresholds against another model). The outcome,
//! `blessed` with the reasons, is an output `branch` can test.

use std::collections::BTreeMap;

use polars::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Kind, ModelArg, Op, Outcome, Param, TaskContext, opt, req};
use crate::data::{self, DatasetRef};
use crate::store::experiments;
use crate::train::metrics::{self, EvalRow};
use crate::train::{self, Loaded, ModelRef, forecast};

pub struct Evaluate;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    model: ModelRef,
    dataset: DatasetRef,
    #[serde(default)]
    slice_by: Option<String>,
    #[serde(default = "week")]
    season: usize,
    #[serde(default)]
    compare: BTreeMap<String, ModelArg>,
    #[serde(default)]
    gates: Vec<Gate>,
    #[serde(default = "test")]
    prefix: String,
}

fn week() -> usize {
    7
}
fn test() -> String {
    "test".into()
}

/// One gate on a metric. Exactly one of min, max, beat, or than + max_worse.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Gate {
    metric: String,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
    /// A baseline or compared model the metric must be better than.
    #[serde(default)]
    beat: Option<String>,
    /// A compared model (e.g. the one serving now) the metric may be at most `max_worse` worse
    /// than, as a fraction (0.05 = 5%).
    #[serde(default)]
    than: Option<String>,
    #[serde(default)]
    max_worse: Option<f64>,
    /// Also apply the gate to every slice.
    #[serde(default)]
    slices: bool,
}

impl Op for Evaluate {
    fn name(&self) -> &'static str {
        "evaluate"
    }
    fn params(&self) -> &'static [Param] {
        const P: &[Param] = &[
            req("model", Kind::Map, "the model, e.g. ${{ tasks.train.outputs.model }}"),
            req("dataset", Kind::Map, "the dataset to score, e.g. ${{ tasks.split.outputs.test }}"),
            opt("slice_by", Kind::String, "a column to slice metrics by (forecasts slice by series)"),
            opt("season", Kind::Int, "period of the seasonal-naive forecast baseline (default 7)"),
            opt(
                "compare",
                Kind::Map,
                "other models scored on the same rows: name → model or models:/NAME@ALIAS (e.g. the one serving)",
            ),
            opt("gates", Kind::List, "[{metric, min|max|beat|than+max_worse, slices}]"),
            opt("prefix", Kind::String, "prefix of the metrics recorded on the model's experiment (default test)"),
        ];
        P
    }
    fn check(&self, with: &Value) -> Vec<String> {
        let mut e = Vec::new();
        if let Some(g) = with.get("gates").filter(|g| !g.to_string().contains("${{")) {
            match serde_json::from_value::<Vec<Gate>>(g.clone()) {
                Ok(gates) => {
                    for g in gates {
                        let n = [g.min.is_some(), g.max.is_some(), g.beat.is_some(), g.than.is_some()]
                            .iter()
                            .filter(|x| **x)
                            .count();
                        if n != 1 || g.than.is_some() != g.max_worse.is_some() {
                            e.push(format!(
                                "gate on `{}` needs exactly one of min, max, beat, or than with max_worse",
                                g.metric
                            ));
                        }
                    }
                }
                Err(err) => e.push(format!("gates: {err}")),
            }
        }
        e
    }

    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String> {
        let p: Params = super::decode("evaluate", with)?;
        let df = data::read(&ctx.data_dir, &p.dataset)?;
        let (_, model) = train::load(&ctx.data_dir, &p.model)?;
        let (mut rows, mut names, classify) = score(&model, &df, &p)?;
        let mut absent = Vec::new();
        for (name, other) in &p.compare {
            let Some(other_ref) = other.resolve(ctx)? else {
                ctx.log.line(&format!(
                    "compare `{name}`: nothing holds {} yet, so gates against it pass",
                    other.describe()
                ));
                absent.push(name.clone());
                continue;
            };
            let (_, m) = train::load(&ctx.data_dir, &other_ref)?;
            let (theirs, _, _) = score(&m, &df, &p)?;
            if theirs.len() != rows.len() {
                return Err(format!("compared model `{name}` scores {} rows, the model {}", theirs.len(), rows.len()));
            }
            for (r, t) in rows.iter_mut().zip(theirs) {
                r.baselines.push(t.pred);
            }
            names.push(name.clone());
        }
        if rows.is_empty() {
            return Err(format!("nothing to score in {} v{}", p.dataset.name, p.dataset.version));
        }
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let report = metrics::report(&rows, &name_refs, classify);
        let reasons = apply_gates(&p.gates, &report, &absent);
        let blessed = reasons.iter().all(|(ok, _)| *ok);

        ctx.log.line(&format!("scored {} predictions of {} v{}", rows.len(), p.dataset.name, p.dataset.version));
        ctx.log.line(&format!("model: {}", fmt_metrics(&report["metrics"])));
        for n in &names {
            ctx.log.line(&format!("{n}: {}", fmt_metrics(&report["baselines"][n])));
        }
        for s in report["per_step"].as_array().into_iter().flatten() {
            let base: Vec<String> = names
                .iter()
                .map(|n| format!("{n} {:.4}", s["baselines"][n]["mae"].as_f64().unwrap_or(f64::NAN)))
                .collect();
            ctx.log.line(&format!(
                "step {}: mae {:.4} | {}",
                s["step"],
                s["metrics"]["mae"].as_f64().unwrap_or(f64::NAN),
                base.join(", ")
            ));
        }
        for (ok, why) in &reasons {
            ctx.log.line(&format!("gate {}: {why}", if *ok { "passed" } else { "FAILED" }));
        }
        ctx.log.line(match (p.gates.is_empty(), blessed) {
            (true, _) => "no gates to check (blessed)",
            (false, true) => "blessed",
            (false, false) => "not blessed",
        });

        if let Some(exp) = p.model.experiment {
            let m: BTreeMap<String, f64> = report["metrics"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| *k != "count")
                .filter_map(|(k, v)| v.as_f64().map(|v| (format!("{}_{k}", p.prefix), v)))
                .collect();
            ctx.store.write_nowait(move |tx| experiments::merge(tx, exp, &m));
        }
        let why: Vec<&str> = reasons.iter().filter(|(ok, _)| !*ok).map(|(_, w)| w.as_str()).collect();
        Ok(Outcome::Done(json!({
            "blessed": blessed,
            "reasons": reasons.iter().map(|(ok, w)| json!({"passed": ok, "gate": w})).collect::<Vec<_>>(),
            "why_not": why,
            "model": p.model,
            "dataset": p.dataset,
            "metrics": report["metrics"],
            "baselines": report["baselines"],
            "slices": report["slices"],
            "per_step": report["per_step"],
        })))
    }
}

/// The model's scored rows, the names of its built-in baselines, and whether it classifies.
fn score(model: &Loaded, df: &DataFrame, p: &Params) -> Result<(Vec<EvalRow>, Vec<String>, bool), String> {
    Ok(match model {
        Loaded::Lstm(m) => {
            if p.season == 0 {
                return Err("season must be ≥ 1".into());
            }
            let rows = m.eval_rows(df, p.season)?;
            (rows, forecast::BASELINES.iter().map(|s| s.to_string()).collect(), false)
        }
        Loaded::WideDeep(m) => {
            let slices = match &p.slice_by {
                Some(c) => {
                    let col = df.column(c).map_err(|_| format!("slice_by: the dataset has no column `{c}`"))?;
                    let col = col.cast(&DataType::String).map_err(|e| e.to_string())?;
                    col.str().map_err(|e| e.to_string())?.iter().map(|x| x.unwrap_or("null").to_string()).collect()
                }
                None => Vec::new(),
            };
            let rows = m.eval_rows(df, &slices)?;
            let (names, _) = m.baselines();
            (rows, names.iter().map(|s| s.to_string()).collect(), m.head.classify)
        }
    })
}

fn fmt_metrics(m: &Value) -> String {
    m.as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != "count")
        .map(|(k, v)| format!("{k} {:.4}", v.as_f64().unwrap_or(f64::NAN)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn better(metric: &str, a: f64, b: f64) -> bool {
    if metrics::higher_is_better(metric) { a > b } else { a < b }
}

/// Each gate's verdict on the whole set (and on each slice when asked), with a sentence.
fn apply_gates(gates: &[Gate], report: &Value, absent: &[String]) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    for g in gates {
        let mut scopes = vec![("all rows".to_string(), report.clone())];
        if g.slices {
            for (s, v) in report["slices"].as_object().into_iter().flatten() {
                scopes.push((format!("slice {s}"), v.clone()));
            }
        }
        for (scope, r) in scopes {
            let m = &g.metric;
            let Some(v) = r["metrics"][m].as_f64() else {
                out.push((false, format!("{scope}: no metric `{m}`")));
                continue;
            };
            let (ok, text) = if let Some(min) = g.min {
                (v >= min, format!("{scope}: {m} {v:.4} ≥ {min}"))
            } else if let Some(max) = g.max {
                (v <= max, format!("{scope}: {m} {v:.4} ≤ {max}"))
            } else if let Some(t) = g.than.as_ref().or(g.beat.as_ref()).filter(|t| absent.contains(t)) {
                (true, format!("{scope}: nothing serves as `{t}` yet, so {m} has nothing to beat"))
            } else if let Some(b) = &g.beat {
                match r["baselines"][b][m].as_f64() {
                    Some(bv) => (better(m, v, bv), format!("{scope}: {m} {v:.4} beats {b} {bv:.4}")),
                    None => (false, format!("{scope}: no baseline `{b}`")),
                }
            } else if let (Some(t), Some(worse)) = (&g.than, g.max_worse) {
                match r["baselines"][t][m].as_f64() {
                    Some(tv) => {
                        let limit = if metrics::higher_is_better(m) { tv * (1.0 - worse) } else { tv * (1.0 + worse) };
                        let ok = if metrics::higher_is_better(m) { v >= limit } else { v <= limit };
                        (ok, format!("{scope}: {m} {v:.4} within {:.0}% of {t} {tv:.4}", worse * 100.0))
                    }
                    None => (false, format!("{scope}: no compared model `{t}`")),
                }
            } else {
                (false, format!("{scope}: gate on `{m}` has no condition"))
            };
            out.push((ok, text));
        }
    }
    out
}
