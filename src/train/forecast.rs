//! The LSTM forecaster family: training over windows of several series, the model artifact
//! (network + window spec + per-series normalization), multi-step forecasts, and evaluation rows
//! with the naive and seasonal-naive baselines.

use std::collections::BTreeMap;

use burn::prelude::*;
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::metrics::EvalRow;
use super::models::Forecaster;
use super::windows::{Series, SeriesNorm, WindowSpec};
use super::{Fit, FitConfig, Fitted, Rng, floats, gather_f32, to_vec};

/// `train` parameters for `model: lstm`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LstmParams {
    #[serde(default)]
    pub series: Option<String>,
    pub time: String,
    pub target: String,
    #[serde(default = "log_return")]
    pub features: Vec<String>,
    #[serde(default = "d_window")]
    pub window: usize,
    #[serde(default = "d_horizon")]
    pub horizon: usize,
    #[serde(default = "d_hidden")]
    pub hidden: usize,
    #[serde(default = "one")]
    pub layers: usize,
    #[serde(default)]
    pub dropout: f64,
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

fn log_return() -> Vec<String> {
    vec!["log_return".into()]
}
fn d_window() -> usize {
    30
}
fn d_horizon() -> usize {
    10
}
fn d_hidden() -> usize {
    32
}
fn one() -> usize {
    1
}
fn d_epochs() -> usize {
    20
}
fn d_batch() -> usize {
    128
}
fn d_lr() -> f64 {
    1e-3
}
fn d_patience() -> usize {
    5
}

/// Network shape, stored in the artifact.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Net {
    pub features: usize,
    pub hidden: usize,
    pub layers: usize,
    pub horizon: usize,
}

impl Net {
    pub fn make(&self, device: &Device) -> Forecaster {
        Forecaster::new(self.features, self.hidden, self.layers, self.horizon, device)
    }
}

/// A trained forecaster with everything needed to use it.
pub struct LstmModel {
    pub spec: WindowSpec,
    pub norms: BTreeMap<String, SeriesNorm>,
    pub net: Net,
    pub model: Forecaster,
}

/// Stacked windows of several series: inputs [n, W, F] and targets [n, H], row-major.
pub struct Stack {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub n: usize,
}

/// Every window of every series the norms know, in series order: what training and validation see.
pub fn stack(spec: &WindowSpec, df: &DataFrame, norms: &BTreeMap<String, SeriesNorm>) -> Result<Stack, String> {
    let mut s = Stack { x: vec![], y: vec![], n: 0 };
    for series in spec.series(df)? {
        let Some(norm) = norms.get(&series.key) else { continue };
        for w in spec.windows(&series, norm) {
            s.x.extend(w.x);
            s.y.extend(w.y);
            s.n += 1;
        }
    }
    Ok(s)
}

/// Per-series normalization, from the training split only.
pub fn fit_norms(spec: &WindowSpec, train: &DataFrame) -> Result<BTreeMap<String, SeriesNorm>, String> {
    Ok(spec.series(train)?.iter().map(|s| (s.key.clone(), spec.fit_norm(s))).collect())
}

impl LstmParams {
    pub fn spec(&self) -> WindowSpec {
        WindowSpec {
            series_column: self.series.clone(),
            time_column: self.time.clone(),
            target: self.target.clone(),
            features: self.features.clone(),
            window: self.window,
            horizon: self.horizon,
        }
    }
}

pub struct Trained {
    pub header: Value,
    pub weights: Vec<u8>,
    pub fitted: Fitted<Forecaster>,
    pub train_windows: usize,
    pub val_windows: usize,
}

/// Train on `train`, choose the best epoch on `validation`. Normalization is fitted per series
/// on `train` only.
pub fn train(
    p: &LstmParams,
    train: &DataFrame,
    validation: &DataFrame,
    hooks: super::Hooks<'_>,
) -> Result<Trained, String> {
    if p.window < 2 || p.horizon < 1 || p.features.is_empty() {
        return Err("window must be ≥ 2, horizon ≥ 1, and features non-empty".into());
    }
    let spec = p.spec();
    let norms = fit_norms(&spec, train)?;
    let tr = stack(&spec, train, &norms)?;
    let va = stack(&spec, validation, &norms)?;
    if tr.n == 0 {
        return Err(format!(
            "no training windows: each series needs more than window + horizon = {} rows",
            p.window + p.horizon
        ));
    }
    if va.n == 0 {
        return Err("no validation windows: the validation split is shorter than window + horizon".into());
    }
    let net = Net { features: p.features.len(), hidden: p.hidden, layers: p.layers, horizon: p.horizon };
    let config = FitConfig {
        epochs: p.epochs,
        batch_size: p.batch_size,
        learning_rate: p.learning_rate,
        seed: p.seed,
        patience: p.patience,
    };
    let (w, f, h) = (p.window, p.features.len(), p.horizon);
    let (dropout, hidden) = (p.dropout as f32, p.hidden);
    let train_dev = super::device().autodiff();
    let batch_loss = |m: &Forecaster, rows: &[usize], rng: &mut Rng| -> Tensor<1> {
        let b = rows.len();
        let x = floats(gather_f32(&tr.x, w * f, rows), [b, w, f], &train_dev);
        let y = floats(gather_f32(&tr.y, h, rows), [b, h], &train_dev);
        let masks: Option<Vec<Tensor<2>>> = (dropout > 0.0).then(|| {
            let keep = 1.0 - dropout;
            (0..m.layers())
                .map(|_| {
                    let mask: Vec<f32> =
                        (0..b * hidden).map(|_| if rng.unit() < keep { 1.0 / keep } else { 0.0 }).collect();
                    floats(mask, [b, hidden], &train_dev)
                })
                .collect()
        });
        let pred = m.forward(x, masks.as_deref());
        (pred - y).square().mean()
    };
    let eval_dev = super::device();
    let val_loss = |m: &Forecaster| mse_windows(m, &va, w, f, h, &eval_dev);
    let make = |d: &Device| net.make(d);
    let fitted = super::fit(Fit {
        config: &config,
        train_rows: tr.n,
        checkpoint: hooks.checkpoint,
        make: &make,
        batch_loss: &batch_loss,
        val_loss: &val_loss,
        on_epoch: hooks.on_epoch,
        on_resume: hooks.on_resume,
        stopped: hooks.stopped,
    })?;
    let weights = super::to_bytes(&fitted.model)?;
    let header = json!({
        "format": "mlbox-model",
        "kind": "lstm",
        "spec": spec,
        "norms": norms,
        "net": net,
        "fit": config,
        "signature": {
            "inputs": [{"name": "window", "datatype": "FP32", "shape": [-1, p.window, p.features.len()],
                        "features": p.features, "series": norms.keys().collect::<Vec<_>>()}],
            "outputs": [{"name": "log_return", "datatype": "FP32", "shape": [-1, p.horizon]}],
        },
    });
    Ok(Trained { header, weights, fitted, train_windows: tr.n, val_windows: va.n })
}

fn mse_windows(m: &Forecaster, s: &Stack, w: usize, f: usize, h: usize, device: &Device) -> f64 {
    let mut sum = 0.0;
    for start in (0..s.n).step_by(1024) {
        let rows: Vec<usize> = (start..(start + 1024).min(s.n)).collect();
        let x = floats(gather_f32(&s.x, w * f, &rows), [rows.len(), w, f], device);
        let pred = to_vec(m.forward(x, None));
        let y = gather_f32(&s.y, h, &rows);
        sum += pred.iter().zip(&y).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>();
    }
    sum / (s.n * h).max(1) as f64
}

impl LstmModel {
    pub fn load(header: &Value, weights: &[u8]) -> Result<LstmModel, String> {
        let spec: WindowSpec = serde_json::from_value(header["spec"].clone()).map_err(|e| format!("bad model: {e}"))?;
        let norms = serde_json::from_value(header["norms"].clone()).map_err(|e| format!("bad model: {e}"))?;
        let net: Net = serde_json::from_value(header["net"].clone()).map_err(|e| format!("bad model: {e}"))?;
        let model = super::from_bytes(net.make(&super::device()), weights)?;
        Ok(LstmModel { spec, norms, net, model })
    }

    /// Predicted normalized log returns for windows (row-major [n, W, F]).
    fn predict(&self, x: &[f32], n: usize) -> Vec<f32> {
        let (w, f) = (self.spec.window, self.net.features);
        let device = super::device();
        let mut out = Vec::with_capacity(n * self.net.horizon);
        for start in (0..n).step_by(1024) {
            let rows: Vec<usize> = (start..(start + 1024).min(n)).collect();
            let t = floats(gather_f32(x, w * f, &rows), [rows.len(), w, f], &device);
            out.extend(to_vec(self.model.forward(t, None)));
        }
        out
    }

    /// Forecast the next `horizon` steps after the last row of every known series.
    pub fn forecast(&self, df: &DataFrame) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        for s in self.spec.series(df)? {
            let Ok(prices) = self.forecast_series(&s) else { continue };
            let t = s.target.len() - 1;
            let last = s.target[t];
            for (k, price) in prices.iter().enumerate() {
                out.push(json!({
                    "series": s.key, "from": s.times[t], "step": k + 1, "last": last,
                    "forecast": price, "return": price / last - 1.0,
                }));
            }
        }
        Ok(out)
    }

    /// The next `horizon` values after the last step of one series: the one forecasting path of
    /// the `forecast` op and of online serving.
    pub fn forecast_series(&self, s: &Series) -> Result<Vec<f64>, String> {
        let norm = self.norms.get(&s.key).ok_or_else(|| {
            let known: Vec<&str> = self.norms.keys().map(String::as_str).collect();
            format!("unknown series `{}`; the model knows {}", s.key, known.join(", "))
        })?;
        let feats = self.spec.feature_matrix(s);
        let t = s.target.len().checked_sub(1).ok_or("the series is empty")?;
        let x = self.spec.input_at(&feats, norm, t).ok_or_else(|| {
            let need = self.spec.window + usize::from(self.spec.features.iter().any(|f| f == "log_return"));
            format!(
                "the last {} steps must all be present and finite (at least {need} values of `{}`)",
                self.spec.window, self.spec.target
            )
        })?;
        let last = s.target[t];
        if !(last.is_finite() && last > 0.0) {
            return Err(format!("the last value of `{}` must be a positive number", self.spec.target));
        }
        let pred = self.predict(&x, 1);
        Ok(pred.iter().map(|r| last * (f64::from(*r) * norm.return_std).exp()).collect())
    }

    /// One evaluation row per (window, horizon step): the true value, the model's, and the
    /// baselines' (naive last value, seasonal naive with period `season`).
    pub fn eval_rows(&self, df: &DataFrame, season: usize) -> Result<Vec<EvalRow>, String> {
        let mut rows = Vec::new();
        let h = self.net.horizon;
        for s in self.spec.series(df)? {
            let Some(norm) = self.norms.get(&s.key) else { continue };
            let wins = self.spec.windows(&s, norm);
            let x: Vec<f32> = wins.iter().flat_map(|w| w.x.iter().copied()).collect();
            let pred = self.predict(&x, wins.len());
            for (i, w) in wins.iter().enumerate() {
                let last = s.target[w.t];
                for k in 1..=h {
                    let back = season * k.div_ceil(season);
                    let seasonal = if w.t + k >= back { s.target[w.t + k - back] } else { last };
                    rows.push(EvalRow {
                        slice: s.key.clone(),
                        step: k,
                        y: s.target[w.t + k],
                        pred: last * (f64::from(pred[i * h + k - 1]) * norm.return_std).exp(),
                        baselines: vec![last, seasonal],
                    });
                }
            }
        }
        Ok(rows)
    }
}

pub const BASELINES: [&str; 2] = ["naive", "seasonal_naive"];

#[cfg(test)]
mod tests {
    use super::*;

    fn crypto() -> DataFrame {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-data/crypto/daily_ohlcv.parquet");
        let df = ParquetReader::new(std::fs::File::open(path).unwrap()).finish().unwrap();
        let mut ctx = polars::sql::SQLContext::new();
        ctx.register("p", df.lazy());
        ctx.execute(
            "SELECT symbol, date, AVG(close) AS close, AVG(volume) AS volume FROM p \
             WHERE exchange = 'coinbase-pro' AND close > 0 GROUP BY symbol, date ORDER BY date, symbol",
        )
        .and_then(|l| l.collect())
        .unwrap()
    }

    fn fit(p: &LstmParams, tr: &DataFrame, va: &DataFrame) -> Trained {
        let dir = tempfile::tempdir().unwrap();
        let hooks = super::super::Hooks {
            checkpoint: dir.path().join("c"),
            on_epoch: &mut |_| {},
            on_resume: &mut |_| {},
            stopped: &|| None,
        };
        train(p, tr, va, hooks).unwrap()
    }

    /// No look-ahead through normalization: the scales come from the training split alone, so
    /// wild values in the validation split (the future) leave them — and the first epoch's
    /// weights — exactly as they were.
    #[test]
    fn normalization_never_sees_the_validation_split() {
        let df = crypto();
        let n = df.height();
        let (tr, va) = (df.slice(0, n * 8 / 10), df.slice((n * 8 / 10) as i64, n / 10));
        let p: LstmParams = serde_json::from_value(serde_json::json!({
            "series": "symbol", "time": "date", "target": "close", "features": ["log_return", "log:volume"],
            "window": 10, "horizon": 3, "hidden": 4, "epochs": 1, "batch_size": 256, "seed": 1
        }))
        .unwrap();
        let a = fit(&p, &tr, &va);
        let poisoned =
            va.clone().lazy().with_columns([col("close") * lit(1000.0), col("volume") * lit(1e6)]).collect().unwrap();
        let b = fit(&p, &tr, &poisoned);
        assert_eq!(a.header["norms"], b.header["norms"]);
        assert_ne!(a.fitted.history[0].val_loss, b.fitted.history[0].val_loss, "the poison did reach validation");
        assert_eq!(super::super::weights_digest(&a.fitted.model), super::super::weights_digest(&b.fitted.model));
        // And the normalization is exactly what the training rows alone give.
        let spec: WindowSpec = serde_json::from_value(a.header["spec"].clone()).unwrap();
        for s in spec.series(&tr).unwrap() {
            assert_eq!(a.header["norms"][&s.key], serde_json::to_value(spec.fit_norm(&s)).unwrap());
        }
    }
}

#[cfg(test)]
mod stacked {
    use super::*;
    use crate::train::models::Forecaster;

    #[test]
    fn stacked_layers_with_dropout_masks_run_forward_and_backward() {
        let dev = crate::train::device().autodiff();
        let m = Forecaster::new(2, 6, 2, 3, &dev);
        let x = floats(vec![0.1; 4 * 5 * 2], [4, 5, 2], &dev);
        let masks = vec![floats(vec![2.0; 4 * 6], [4, 6], &dev), floats(vec![0.0; 4 * 6], [4, 6], &dev)];
        let y = m.forward(x.clone(), Some(&masks));
        assert_eq!(y.dims(), [4, 3]);
        let _ = y.sum().backward();
        // With the last layer fully dropped the head sees zeros: the output is its bias alone.
        let a = to_vec(m.forward(x.clone(), Some(&masks)));
        let zero_in = to_vec(m.forward(floats(vec![9.0; 4 * 5 * 2], [4, 5, 2], &dev), Some(&masks)));
        assert_eq!(a, zero_in);
    }
}
