//! `predict`: batch inference. A dataset in, the same rows with the model's prediction out, as a
//! new dataset. It calls the same prediction function as online serving, so batch and online
//! answers for the same rows are equal. A forecaster gives its next steps per series instead.

use polars::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Kind, ModelArg, Op, Outcome, Param, TaskContext, opt, req};
use crate::data::{self, DatasetRef};
use crate::train::{self, Loaded};

pub struct Predict;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    model: ModelArg,
    dataset: DatasetRef,
    name: String,
    #[serde(default)]
    column: Option<String>,
}

/// The dataset with the model's predictions: a `prediction` (or `probability`) column for
/// wide&deep, one row per (series, step) for a forecaster.
pub fn predict_frame(model: &Loaded, df: &DataFrame, column: Option<&str>) -> Result<DataFrame, String> {
    match model {
        Loaded::WideDeep(m) => {
            let pred = m.predict(df)?;
            let name = column.unwrap_or(if m.head.classify { "probability" } else { "prediction" });
            let mut out = df.clone();
            out.with_column(Column::new(name.into(), pred)).map_err(|e| e.to_string())?;
            Ok(out)
        }
        Loaded::Lstm(m) => forecast_frame(&m.forecast(df)?),
    }
}

/// Forecast records (series, from, step, last, forecast, return) as a dataset.
pub fn forecast_frame(recs: &[Value]) -> Result<DataFrame, String> {
    let col = |k: &str| recs.iter().map(|r| r[k].clone()).collect::<Vec<Value>>();
    let strs = |k: &str| col(k).iter().map(|v| v.as_str().unwrap_or("").to_string()).collect::<Vec<_>>();
    let nums = |k: &str| col(k).iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect::<Vec<_>>();
    let steps: Vec<i64> = col("step").iter().map(|v| v.as_i64().unwrap_or(0)).collect();
    df!(
        "series" => strs("series"),
        "from" => strs("from"),
        "step" => steps,
        "last" => nums("last"),
        "forecast" => nums("forecast"),
        "return" => nums("return"),
    )
    .map_err(|e| e.to_string())
}

impl Op for Predict {
    fn name(&self) -> &'static str {
        "predict"
    }
    fn params(&self) -> &'static [Param] {
        const P: &[Param] = &[
            req("model", Kind::Any, "${{ tasks.train.outputs.model }} or a registry reference models:/NAME@ALIAS"),
            req("dataset", Kind::Map, "the rows to predict"),
            req("name", Kind::String, "the output dataset's name"),
            opt("column", Kind::String, "the prediction column's name (default prediction)"),
        ];
        P
    }

    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String> {
        let p: Params = super::decode("predict", with)?;
        let mref =
            p.model.resolve(ctx)?.ok_or_else(|| format!("{}: no version holds that alias yet", p.model.describe()))?;
        let (_, model) = train::load(&ctx.data_dir, &mref)?;
        let df = data::read(&ctx.data_dir, &p.dataset)?;
        let mut out = predict_frame(&model, &df, p.column.as_deref())?;
        let source = format!("predictions of {} on {} v{}", p.model.describe(), p.dataset.name, p.dataset.version);
        let run = (ctx.run_id, ctx.task_id.as_str());
        let (r, _) = data::save(&mut out, &p.name, &source, &ctx.artifacts_dir, &ctx.store, run)?;
        ctx.log.line(&format!("{} rows in, {} rows out → {} v{}", df.height(), out.height(), r.name, r.version));
        Ok(Outcome::Done(json!({"dataset": r, "rows": out.height(), "model": mref})))
    }
}
