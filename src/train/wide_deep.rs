//! The wide&deep family: training on the taxi features, the model artifact (network + fitted
//! preprocessing), batch prediction, and evaluation rows with the mean/median baselines.

use burn::nn::loss::BinaryCrossEntropyLossConfig;
use burn::prelude::*;
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::metrics::EvalRow;
use super::models::{WideDeep, WideDeepShape};
use super::tabular::{Columns, DEEP_SIZES, DENSE, Encoded, TabularPrep, Trip, trips};
use super::{Fit, FitConfig, Fitted, Rng, floats, gather_f32, gather_i64, ints, to_vec};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WideDeepParams {
    pub target: String,
    /// regression (default) or classification (label = target > threshold).
    #[serde(default = "regression")]
    pub task: String,
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default)]
    pub columns: Columns,
    #[serde(default = "d_embed")]
    pub embed_dim: usize,
    #[serde(default = "d_mlp")]
    pub mlp: [usize; 2],
    /// false trains the linear (wide-only) model.
    #[serde(default = "yes")]
    pub deep: bool,
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    #[serde(default = "d_lr")]
    pub learning_rate: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "d_patience")]
    pub patience: usize,
}

fn regression() -> String {
    "regression".into()
}
fn d_embed() -> usize {
    8
}
fn d_mlp() -> [usize; 2] {
    [64, 32]
}
fn yes() -> bool {
    true
}
fn d_epochs() -> usize {
    5
}
fn d_batch() -> usize {
    1024
}
fn d_lr() -> f64 {
    2e-3
}
fn d_patience() -> usize {
    3
}

/// Network shape and target scaling, stored in the artifact.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Head {
    pub embed_dim: usize,
    pub mlp: [usize; 2],
    pub deep: bool,
    pub classify: bool,
    pub threshold: Option<f64>,
    /// (mean, std) of the regression target; predictions are mean + std × output.
    pub target_norm: (f64, f64),
    pub target_mean: f64,
    pub target_median: f64,
}

impl Head {
    fn make(&self, device: &Device) -> WideDeep {
        WideDeep::new(
            &WideDeepShape {
                wide_size: TabularPrep::wide_size(),
                deep_sizes: DEEP_SIZES.to_vec(),
                dense: DENSE,
                embed_dim: self.embed_dim,
                mlp: self.mlp,
                deep: self.deep,
            },
            device,
        )
    }
}

pub struct WideDeepModel {
    pub prep: TabularPrep,
    pub head: Head,
    pub target: String,
    pub model: WideDeep,
}

/// Turn per-field deep indices into rows of the one shared embedding table.
pub fn deep_offsets(deep: &mut [i64]) {
    let mut off = [0i64; 4];
    for i in 1..4 {
        off[i] = off[i - 1] + DEEP_SIZES[i - 1] as i64;
    }
    for (i, v) in deep.iter_mut().enumerate() {
        *v += off[i % 4];
    }
}

fn encode(prep: &TabularPrep, df: &DataFrame) -> Result<Encoded, String> {
    let mut e = prep.encode(&trips(df, &prep.columns)?);
    deep_offsets(&mut e.deep);
    Ok(e)
}

fn targets(df: &DataFrame, target: &str) -> Result<Vec<f64>, String> {
    crate::data::numeric(df, target, "target column")
}

/// Targets as the model sees them: 0/1 labels when a threshold is set (a missing target stays
/// missing, never a negative), else unchanged. Training and evaluation both use this.
fn labels(y: Vec<f64>, threshold: Option<f64>) -> Vec<f64> {
    match threshold {
        Some(t) => y
            .into_iter()
            .map(|x| {
                if x.is_nan() {
                    x
                } else if x > t {
                    1.0
                } else {
                    0.0
                }
            })
            .collect(),
        None => y,
    }
}

fn forward_rows(m: &WideDeep, e: &Encoded, rows: &[usize], device: &Device) -> Tensor<2> {
    let b = rows.len();
    let wide = ints(gather_i64(&e.wide, 6, rows), [b, 6], device);
    let deep = ints(gather_i64(&e.deep, 4, rows), [b, 4], device);
    let dense = floats(gather_f32(&e.dense, DENSE, rows), [b, DENSE], device);
    m.forward(wide, deep, dense)
}

/// Rows per forward pass at prediction time. The CPU matrix kernels round differently for
/// different batch heights, so a row's prediction would depend on how many rows came with it.
/// Every prediction runs in a batch of exactly this many rows (the last one padded), so one
/// record online and the same row in a million-row batch get the same bits.
pub const PREDICT_ROWS: usize = 16;

/// Raw model outputs (normalized target or logit) for every encoded row.
fn outputs(m: &WideDeep, e: &Encoded, device: &Device) -> Vec<f32> {
    let mut out = Vec::with_capacity(e.rows + PREDICT_ROWS);
    for start in (0..e.rows).step_by(PREDICT_ROWS) {
        let end = (start + PREDICT_ROWS).min(e.rows);
        let rows: Vec<usize> = (start..start + PREDICT_ROWS).map(|i| i.min(end - 1)).collect();
        out.extend(&to_vec(forward_rows(m, e, &rows, device))[..end - start]);
    }
    out
}

pub struct Trained {
    pub header: Value,
    pub weights: Vec<u8>,
    pub fitted: Fitted<WideDeep>,
}

pub fn train(
    p: &WideDeepParams,
    train: &DataFrame,
    validation: &DataFrame,
    hooks: super::Hooks<'_>,
) -> Result<Trained, String> {
    let classify = match p.task.as_str() {
        "regression" => false,
        "classification" => true,
        other => return Err(format!("task must be regression or classification, got `{other}`")),
    };
    let prep = TabularPrep::fit(train, p.columns.clone())?;
    // Rows with no target are left out of training and validation.
    let keep = |df: &DataFrame| -> Result<(Encoded, Vec<f64>), String> {
        let y = labels(targets(df, &p.target)?, p.threshold);
        let e = encode(&prep, df)?;
        let rows: Vec<usize> = (0..e.rows).filter(|i| y[*i].is_finite()).collect();
        let sub = Encoded {
            rows: rows.len(),
            wide: gather_i64(&e.wide, 6, &rows),
            deep: gather_i64(&e.deep, 4, &rows),
            dense: gather_f32(&e.dense, DENSE, &rows),
        };
        Ok((sub, rows.iter().map(|i| y[*i]).collect()))
    };
    let (tr, ytr) = keep(train)?;
    let (va, yva) = keep(validation)?;
    if tr.rows == 0 || va.rows == 0 {
        return Err("the training and validation splits both need rows with a target".into());
    }
    if classify && ytr.iter().any(|y| *y != 0.0 && *y != 1.0) {
        return Err("classification needs a 0/1 target, or `threshold` to turn the target into one".into());
    }
    let (mean, sd) = super::windows::mean_std(&ytr);
    let mut sorted = ytr.clone();
    sorted.sort_by(f64::total_cmp);
    let head = Head {
        embed_dim: p.embed_dim,
        mlp: p.mlp,
        deep: p.deep,
        classify,
        threshold: p.threshold,
        target_norm: if classify { (0.0, 1.0) } else { (mean, sd) },
        target_mean: mean,
        target_median: sorted[sorted.len() / 2],
    };
    let norm_y =
        |y: &[f64]| -> Vec<f32> { y.iter().map(|v| ((v - head.target_norm.0) / head.target_norm.1) as f32).collect() };
    let (ytr_n, yva_n) = (norm_y(&ytr), norm_y(&yva));
    let config = FitConfig {
        epochs: p.epochs,
        batch_size: p.batch_size,
        learning_rate: p.learning_rate,
        seed: p.seed,
        patience: p.patience,
    };
    let train_dev = super::device().autodiff();
    let bce = BinaryCrossEntropyLossConfig::new().with_logits(true).init(&train_dev);
    let batch_loss = |m: &WideDeep, rows: &[usize], _: &mut Rng| -> Tensor<1> {
        let out = forward_rows(m, &tr, rows, &train_dev);
        let y = gather_f32(&ytr_n, 1, rows);
        if classify {
            let labels: Vec<i64> = y.iter().map(|v| *v as i64).collect();
            bce.forward(out, ints(labels, [rows.len(), 1], &train_dev))
        } else {
            (out - floats(y, [rows.len(), 1], &train_dev)).square().mean()
        }
    };
    let eval_dev = super::device();
    let val_loss = |m: &WideDeep| -> f64 {
        let out = outputs(m, &va, &eval_dev);
        let n = out.len().max(1) as f64;
        if classify {
            out.iter()
                .zip(&yva_n)
                .map(|(z, y)| {
                    let pr = (1.0 / (1.0 + (-f64::from(*z)).exp())).clamp(1e-7, 1.0 - 1e-7);
                    -(f64::from(*y) * pr.ln() + (1.0 - f64::from(*y)) * (1.0 - pr).ln())
                })
                .sum::<f64>()
                / n
        } else {
            out.iter().zip(&yva_n).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>() / n
        }
    };
    let make = |d: &Device| head.make(d);
    let fitted = super::fit(Fit {
        config: &config,
        train_rows: tr.rows,
        checkpoint: hooks.checkpoint,
        make: &make,
        batch_loss: &batch_loss,
        val_loss: &val_loss,
        on_epoch: hooks.on_epoch,
        on_resume: hooks.on_resume,
        stopped: hooks.stopped,
    })?;
    let weights = super::to_bytes(&fitted.model)?;
    let c = &prep.columns;
    let header = json!({
        "format": "mlbox-model",
        "kind": "wide_deep",
        "target": p.target,
        "prep": prep,
        "head": head,
        "fit": config,
        "signature": {
            "inputs": [
                {"name": c.time, "datatype": "BYTES", "shape": [-1], "doc": "pickup time, YYYY-MM-DD HH:MM:SS"},
                {"name": c.pickup, "datatype": "INT64", "shape": [-1]},
                {"name": c.dropoff, "datatype": "INT64", "shape": [-1]},
                {"name": c.passengers, "datatype": "FP64", "shape": [-1]},
            ],
            "outputs": [{"name": if classify { "probability" } else { "prediction" }, "datatype": "FP64", "shape": [-1]}],
        },
    });
    Ok(Trained { header, weights, fitted })
}

impl WideDeepModel {
    pub fn load(header: &Value, weights: &[u8]) -> Result<WideDeepModel, String> {
        let prep: TabularPrep =
            serde_json::from_value(header["prep"].clone()).map_err(|e| format!("bad model: {e}"))?;
        let head: Head = serde_json::from_value(header["head"].clone()).map_err(|e| format!("bad model: {e}"))?;
        let target = header["target"].as_str().unwrap_or("").to_string();
        let model = super::from_bytes(head.make(&super::device()), weights)?;
        Ok(WideDeepModel { prep, head, target, model })
    }

    /// Predictions in target units (or probabilities) for every row.
    pub fn predict(&self, df: &DataFrame) -> Result<Vec<f64>, String> {
        Ok(self.predict_trips(&trips(df, &self.prep.columns)?))
    }

    /// The one prediction path: batch (`predict`, a dataset's rows) and online serving (records
    /// decoded into trips) both end here, so they compute the same thing.
    pub fn predict_trips(&self, rows: &[Trip]) -> Vec<f64> {
        let mut e = self.prep.encode(rows);
        deep_offsets(&mut e.deep);
        let out = outputs(&self.model, &e, &super::device());
        let (m, s) = self.head.target_norm;
        out.into_iter()
            .map(|z| if self.head.classify { 1.0 / (1.0 + (-f64::from(z)).exp()) } else { m + s * f64::from(z) })
            .collect()
    }

    /// Baselines: the training mean and median (the base rate for classification).
    pub fn baselines(&self) -> (Vec<&'static str>, Vec<f64>) {
        if self.head.classify {
            (vec!["base_rate"], vec![self.head.target_mean])
        } else {
            (vec!["mean", "median"], vec![self.head.target_mean, self.head.target_median])
        }
    }

    /// Truth for every row (NaN where missing), labels when classifying.
    pub fn truth(&self, df: &DataFrame) -> Result<Vec<f64>, String> {
        Ok(labels(targets(df, &self.target)?, self.head.threshold))
    }

    pub fn eval_rows(&self, df: &DataFrame, slices: &[String]) -> Result<Vec<EvalRow>, String> {
        let y = self.truth(df)?;
        let pred = self.predict(df)?;
        let (_, base) = self.baselines();
        Ok((0..y.len())
            .filter(|i| y[*i].is_finite())
            .map(|i| EvalRow {
                slice: slices.get(i).cloned().unwrap_or_default(),
                step: 0,
                y: y[i],
                pred: pred[i],
                baselines: base.clone(),
            })
            .collect())
    }
}
