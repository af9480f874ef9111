//! `forecast`: run a trained forecaster past the end of every series of a dataset and store the
//! next `horizon` steps as a dataset. Outputs the per-series return over the horizon, so a
//! `branch` can act on it (the crypto demo's trade signal).

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Kind, Op, Outcome, Param, TaskContext, req};
use crate::data::{self, DatasetRef};
use crate::train::{self, Loaded, ModelRef};

pub struct Forecast;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    model: ModelRef,
    dataset: DatasetRef,
    name: String,
}

impl Op for Forecast {
    fn name(&self) -> &'static str {
        "forecast"
    }
    fn params(&self) -> &'static [Param] {
        const P: &[Param] = &[
            req("model", Kind::Map, "an lstm model, e.g. ${{ tasks.train.outputs.model }}"),
            req("dataset", Kind::Map, "the history to forecast from (its last window per series)"),
            req("name", Kind::String, "the forecasts dataset's name"),
        ];
        P
    }

    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String> {
        let p: Params = super::decode("forecast", with)?;
        let (_, model) = train::load(&ctx.data_dir, &p.model)?;
        let Loaded::Lstm(m) = model else {
            return Err("forecast needs an lstm model".into());
        };
        let df = data::read(&ctx.data_dir, &p.dataset)?;
        let recs = m.forecast(&df)?;
        if recs.is_empty() {
            return Err(format!(
                "no series in {} v{} has a full window of {} steps",
                p.dataset.name, p.dataset.version, m.spec.window
            ));
        }
        let mut out = super::predict::forecast_frame(&recs)?;
        let source =
            format!("forecast of {} v{} by model {}", p.dataset.name, p.dataset.version, &p.model.sha256[..12]);
        let run = (ctx.run_id, ctx.task_id.as_str());
        let (r, _) = data::save(&mut out, &p.name, &source, &ctx.artifacts_dir, &ctx.store, run)?;
        let h = m.net.horizon;
        let mut per_series = serde_json::Map::new();
        for rec in recs.iter().filter(|r| r["step"].as_u64() == Some(h as u64)) {
            let key = rec["series"].as_str().unwrap_or("").to_string();
            ctx.log.line(&format!(
                "{key}: last {:.2} on {} → {:.2} in {h} steps ({:+.2}%)",
                rec["last"].as_f64().unwrap_or(0.0),
                rec["from"].as_str().unwrap_or(""),
                rec["forecast"].as_f64().unwrap_or(0.0),
                rec["return"].as_f64().unwrap_or(0.0) * 100.0
            ));
            per_series.insert(key, json!({"last": rec["last"], "forecast": rec["forecast"], "return": rec["return"]}));
        }
        let returns: Vec<f64> = per_series.values().filter_map(|v| v["return"].as_f64()).collect();
        Ok(Outcome::Done(json!({
            "dataset": r,
            "horizon": h,
            "series": per_series,
            "max_return": returns.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            "min_return": returns.iter().copied().fold(f64::INFINITY, f64::min),
            "forecasts": recs,
        })))
    }
}
