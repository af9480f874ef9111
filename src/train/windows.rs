//! Sliding windows for the multi-series forecaster, and the per-series normalization fitted on the
//! training split only.
//!
//! At time t (the window's last step) the input is features at t-W+1..=t and the targets are the
//! log returns ln(x[t+k] / x[t]) for k = 1..=H. Nothing at or after t+1 enters the input, and a
//! window is built only where all of t+1..=t+H lie in the same dataset (so a training window never
//! reaches into the validation period).

use std::collections::BTreeMap;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

/// One series' observations in time order.
#[derive(Debug, Clone)]
pub struct Series {
    pub key: String,
    /// The time column as text (ISO), for output records.
    pub times: Vec<String>,
    /// The forecast target (e.g. close price); must be > 0.
    pub target: Vec<f64>,
    /// Raw columns named by features (`log:volume` reads `volume`).
    pub columns: BTreeMap<String, Vec<f64>>,
}

/// How raw series become model inputs: stored in the model artifact.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WindowSpec {
    pub series_column: Option<String>,
    pub time_column: String,
    pub target: String,
    /// `log_return` (of the target), `log:COL` (ln(1 + COL)), or `COL` (raw).
    pub features: Vec<String>,
    pub window: usize,
    pub horizon: usize,
}

/// Per-series scale: feature (mean, std) and the std of one-step target log returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeriesNorm {
    pub features: Vec<(f64, f64)>,
    pub return_std: f64,
}

impl WindowSpec {
    /// The raw columns a dataset must have.
    pub fn raw_columns(&self) -> Vec<String> {
        let mut cols = vec![self.time_column.clone(), self.target.clone()];
        cols.extend(self.series_column.clone());
        for f in &self.features {
            if f == "log_return" {
                continue;
            }
            let c = f.strip_prefix("log:").unwrap_or(f).to_string();
            if !cols.contains(&c) {
                cols.push(c);
            }
        }
        cols
    }

    /// The numeric columns features read (`log:volume` reads `volume`; the target may be one).
    fn feature_sources(&self) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = Vec::new();
        for f in self.features.iter().filter(|f| *f != "log_return") {
            let c = f.strip_prefix("log:").unwrap_or(f).to_string();
            if c == self.time_column || Some(&c) == self.series_column.as_ref() {
                return Err(format!("feature `{f}` reads the time or series column; features must be numeric columns"));
            }
            if !out.contains(&c) {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Split a dataset into series, each sorted by time.
    pub fn series(&self, df: &DataFrame) -> Result<Vec<Series>, String> {
        let sources = self.feature_sources()?;
        for c in self.raw_columns() {
            if df.column(&c).is_err() {
                return Err(format!("the dataset has no column `{c}` (columns: {:?})", df.get_column_names()));
            }
        }
        let mut by: Vec<&str> = self.series_column.iter().map(String::as_str).collect();
        by.push(&self.time_column);
        let sorted =
            df.sort(by, SortMultipleOptions::default().with_maintain_order(true)).map_err(|e| e.to_string())?;
        let floats = |name: &str| crate::data::numeric(&sorted, name, "column");
        let text = |name: &str| -> Result<Vec<String>, String> {
            let c = sorted.column(name).map_err(|e| e.to_string())?;
            let c = c.cast(&DataType::String).map_err(|e| e.to_string())?;
            Ok(c.str().map_err(|e| e.to_string())?.iter().map(|x| x.unwrap_or("").to_string()).collect())
        };
        let keys = match &self.series_column {
            Some(s) => text(s)?,
            None => vec![String::new(); sorted.height()],
        };
        let times = text(&self.time_column)?;
        let target = floats(&self.target)?;
        let mut raw = BTreeMap::new();
        for c in sources {
            let v = floats(&c)?;
            raw.insert(c, v);
        }
        let mut out: Vec<Series> = Vec::new();
        for i in 0..sorted.height() {
            if out.last().is_none_or(|s| s.key != keys[i]) {
                out.push(Series { key: keys[i].clone(), times: vec![], target: vec![], columns: BTreeMap::new() });
            }
            let s = out.last_mut().expect("pushed");
            s.times.push(times[i].clone());
            s.target.push(target[i]);
            for (c, v) in &raw {
                s.columns.entry(c.clone()).or_default().push(v[i]);
            }
        }
        Ok(out)
    }

    /// Feature values of a series at every step (NaN where undefined, e.g. the first log return).
    pub fn feature_matrix(&self, s: &Series) -> Vec<Vec<f64>> {
        self.features
            .iter()
            .map(|f| {
                if f == "log_return" {
                    log_returns(&s.target)
                } else if let Some(c) = f.strip_prefix("log:") {
                    // NaN (a missing value) must stay NaN: `f64::max` would turn it into 0.
                    s.columns[c]
                        .iter()
                        .map(|x| if x.is_finite() { (1.0 + x.max(0.0)).ln() } else { f64::NAN })
                        .collect()
                } else {
                    s.columns[f.as_str()].clone()
                }
            })
            .collect()
    }

    /// Normalization of one series from its training data only.
    pub fn fit_norm(&self, s: &Series) -> SeriesNorm {
        let feats = self.feature_matrix(s);
        let features = feats.iter().map(|f| mean_std(f)).collect();
        let (_, return_std) = mean_std(&log_returns(&s.target));
        SeriesNorm { features, return_std: if return_std > 1e-12 { return_std } else { 1.0 } }
    }

    /// Every complete window of a series: (time index t of the last input step, inputs W×F
    /// row-major, normalized, targets H normalized). Windows with any non-finite value are skipped.
    pub fn windows(&self, s: &Series, norm: &SeriesNorm) -> Vec<Window> {
        let (w, h) = (self.window, self.horizon);
        let feats = self.feature_matrix(s);
        let n = s.target.len();
        let mut out = Vec::new();
        if n < w + h + 1 {
            return out;
        }
        for t in w..n - h {
            if let Some(x) = self.input_at(&feats, norm, t) {
                let y: Vec<f32> =
                    (1..=h).map(|k| ((s.target[t + k] / s.target[t]).ln() / norm.return_std) as f32).collect();
                if y.iter().all(|v| v.is_finite()) {
                    out.push(Window { t, x, y });
                }
            }
        }
        out
    }

    /// The normalized input window ending at t, if every value is finite.
    pub fn input_at(&self, feats: &[Vec<f64>], norm: &SeriesNorm, t: usize) -> Option<Vec<f32>> {
        let w = self.window;
        if t + 1 < w {
            return None;
        }
        let mut x = Vec::with_capacity(w * feats.len());
        for i in t + 1 - w..=t {
            for (f, col) in feats.iter().enumerate() {
                let (m, sd) = norm.features[f];
                let v = ((col[i] - m) / sd) as f32;
                if !v.is_finite() {
                    return None;
                }
                x.push(v);
            }
        }
        Some(x)
    }
}

#[derive(Debug, Clone)]
pub struct Window {
    pub t: usize,
    pub x: Vec<f32>,
    pub y: Vec<f32>,
}

pub fn log_returns(x: &[f64]) -> Vec<f64> {
    let mut r = vec![f64::NAN; x.len()];
    for i in 1..x.len() {
        r[i] = (x[i] / x[i - 1]).ln();
    }
    r
}

/// Mean and standard deviation of the finite values (std 1 when there is no spread).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return (0.0, 1.0);
    }
    let m = f.iter().sum::<f64>() / f.len() as f64;
    let sd = (f.iter().map(|x| (x - m).powi(2)).sum::<f64>() / f.len() as f64).sqrt();
    (m, if sd > 1e-12 { sd } else { 1.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(w: usize, h: usize) -> WindowSpec {
        WindowSpec {
            series_column: Some("coin".into()),
            time_column: "day".into(),
            target: "close".into(),
            features: vec!["log_return".into(), "log:volume".into()],
            window: w,
            horizon: h,
        }
    }

    fn frame(n: usize) -> DataFrame {
        let coin: Vec<&str> = (0..2 * n).map(|i| if i < n { "b" } else { "a" }).collect();
        let day: Vec<i64> = (0..2 * n).map(|i| (i % n) as i64).collect();
        let close: Vec<f64> = (0..2 * n).map(|i| 100.0 + (i as f64 * 0.7).sin() * 5.0 + i as f64).collect();
        let volume: Vec<f64> = (0..2 * n).map(|i| 10.0 + (i % 7) as f64).collect();
        df!("coin" => coin, "day" => day, "close" => close, "volume" => volume).unwrap()
    }

    /// The no-look-ahead property: every input value of the window ending at t is a function of
    /// rows ≤ t only, and the targets are rows t+1..=t+H. Proven by poisoning every row after t and
    /// checking the inputs are unchanged, for every window of every series.
    #[test]
    fn no_window_sees_its_target_period_or_later() {
        let sp = spec(5, 3);
        let series = sp.series(&frame(40)).unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].key, "a", "series are sorted by key then time");
        for s in &series {
            let norm = sp.fit_norm(s);
            let clean = sp.windows(s, &norm);
            assert_eq!(clean.len(), 40 - 5 - 3);
            for w in &clean {
                let mut poisoned = s.clone();
                for i in w.t + 1..poisoned.target.len() {
                    poisoned.target[i] = 1e9;
                    poisoned.columns.get_mut("volume").unwrap()[i] = 1e9;
                }
                let feats = sp.feature_matrix(&poisoned);
                assert_eq!(sp.input_at(&feats, &norm, w.t).as_ref(), Some(&w.x), "window at t={} saw the future", w.t);
                let want: Vec<f32> =
                    (1..=3).map(|k| ((s.target[w.t + k] / s.target[w.t]).ln() / norm.return_std) as f32).collect();
                assert_eq!(w.y, want);
            }
        }
    }

    /// Windows never cross from one dataset into the next: a training window's targets stay
    /// inside the training rows. (That normalization reads only the training split is checked
    /// end to end by the trainer's test, which poisons the validation split.)
    #[test]
    fn training_windows_stay_inside_the_training_rows() {
        let sp = spec(5, 3);
        let train = frame(60).head(Some(40)); // series "b", days 0..40
        let s_train = &sp.series(&train).unwrap()[0];
        let wins = sp.windows(s_train, &sp.fit_norm(s_train));
        assert_eq!(wins.len(), 40 - 5 - 3);
        assert!(wins.iter().all(|w| w.t + 3 < 40));
    }

    /// A missing value makes its windows drop out (it is never read as 0), and a feature may
    /// read the target column itself; the time column is refused.
    #[test]
    fn missing_values_skip_windows_and_the_target_can_be_a_feature() {
        let mut sp = spec(5, 3);
        sp.features = vec!["log_return".into(), "log:volume".into(), "close".into()];
        let df = frame(40);
        let mut vol: Vec<Option<f64>> = df.column("volume").unwrap().f64().unwrap().iter().collect();
        vol[10] = None;
        let mut df = df;
        df.with_column(Column::new("volume".into(), vol)).unwrap();
        let series = sp.series(&df).unwrap();
        let b = series.iter().find(|s| s.key == "b").unwrap();
        let wins = sp.windows(b, &sp.fit_norm(b));
        assert!(!wins.is_empty());
        assert!(wins.iter().all(|w| !(w.t - 4..=w.t).contains(&10)), "no window includes the missing volume");
        sp.features = vec!["day".into()];
        assert!(sp.series(&df).unwrap_err().contains("time or series column"));
    }
}
