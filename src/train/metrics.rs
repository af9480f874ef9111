//! Evaluation metrics over rows of (truth, prediction, baseline predictions): regression metrics
//! (RMSE, MAE, MAPE, R²), classification metrics (AUC, accuracy, log-loss), per slice and per
//! forecast step.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// One scored prediction. `step` is the forecast horizon step (0 for tabular models).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRow {
    pub slice: String,
    pub step: usize,
    pub y: f64,
    pub pred: f64,
    /// One prediction per baseline, in the order the caller names them.
    pub baselines: Vec<f64>,
}

/// Whether larger is better for a metric.
pub fn higher_is_better(metric: &str) -> bool {
    matches!(metric, "r2" | "auc" | "accuracy")
}

pub fn regression(y: &[f64], p: &[f64]) -> BTreeMap<String, f64> {
    let n = y.len().max(1) as f64;
    let mean = y.iter().sum::<f64>() / n;
    let sse: f64 = y.iter().zip(p).map(|(a, b)| (a - b).powi(2)).sum();
    let sst: f64 = y.iter().map(|a| (a - mean).powi(2)).sum();
    let mae = y.iter().zip(p).map(|(a, b)| (a - b).abs()).sum::<f64>() / n;
    let nz: Vec<(f64, f64)> = y.iter().zip(p).filter(|(a, _)| a.abs() > 1e-12).map(|(a, b)| (*a, *b)).collect();
    let mape = nz.iter().map(|(a, b)| ((a - b) / a).abs()).sum::<f64>() / nz.len().max(1) as f64 * 100.0;
    let mut m = BTreeMap::new();
    m.insert("rmse".into(), (sse / n).sqrt());
    m.insert("mae".into(), mae);
    m.insert("mape".into(), mape);
    m.insert("r2".into(), if sst > 0.0 { 1.0 - sse / sst } else { 0.0 });
    m.insert("count".into(), y.len() as f64);
    m
}

/// Labels are 0/1, predictions are probabilities.
pub fn classification(y: &[f64], p: &[f64]) -> BTreeMap<String, f64> {
    let n = y.len().max(1) as f64;
    let acc = y.iter().zip(p).filter(|(a, b)| (**b >= 0.5) == (**a >= 0.5)).count() as f64 / n;
    let ll = -y
        .iter()
        .zip(p)
        .map(|(a, b)| {
            let b = b.clamp(1e-7, 1.0 - 1e-7);
            a * b.ln() + (1.0 - a) * (1.0 - b).ln()
        })
        .sum::<f64>()
        / n;
    let mut m = BTreeMap::new();
    m.insert("auc".into(), auc(y, p));
    m.insert("accuracy".into(), acc);
    m.insert("log_loss".into(), ll);
    m.insert("count".into(), y.len() as f64);
    m
}

/// Area under the ROC curve by the rank-sum formula, with ties given their average rank.
pub fn auc(y: &[f64], p: &[f64]) -> f64 {
    let mut idx: Vec<usize> = (0..y.len()).collect();
    idx.sort_by(|a, b| p[*a].total_cmp(&p[*b]));
    let mut ranks = vec![0.0; y.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && p[idx[j + 1]] == p[idx[i]] {
            j += 1;
        }
        for k in i..=j {
            ranks[idx[k]] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    let pos = y.iter().filter(|a| **a >= 0.5).count() as f64;
    let neg = y.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return 0.5;
    }
    let sum: f64 = y.iter().zip(&ranks).filter(|(a, _)| **a >= 0.5).map(|(_, r)| r).sum();
    (sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// The whole report: overall metrics of the model and of each baseline, the same per slice,
/// and (for forecasts) per horizon step.
pub fn report(rows: &[EvalRow], baselines: &[&str], classify: bool) -> Value {
    let score = |sel: &dyn Fn(&EvalRow) -> bool| -> Value {
        let picked: Vec<&EvalRow> = rows.iter().filter(|r| sel(r)).collect();
        let y: Vec<f64> = picked.iter().map(|r| r.y).collect();
        let f = |p: &[f64]| if classify { classification(&y, p) } else { regression(&y, p) };
        let model = f(&picked.iter().map(|r| r.pred).collect::<Vec<_>>());
        let base: BTreeMap<&str, BTreeMap<String, f64>> = baselines
            .iter()
            .enumerate()
            .map(|(i, name)| (*name, f(&picked.iter().map(|r| r.baselines[i]).collect::<Vec<_>>())))
            .collect();
        json!({"metrics": model, "baselines": base})
    };
    let all = score(&|_| true);
    let slices: BTreeMap<String, Value> = rows
        .iter()
        .map(|r| r.slice.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|s| {
            let v = score(&|r: &EvalRow| r.slice == s);
            (s, v)
        })
        .collect();
    let steps: Vec<usize> =
        rows.iter().map(|r| r.step).collect::<std::collections::BTreeSet<_>>().into_iter().filter(|s| *s > 0).collect();
    let per_step: Vec<Value> = steps
        .iter()
        .map(|k| {
            let mut v = score(&|r: &EvalRow| r.step == *k);
            v["step"] = json!(k);
            v
        })
        .collect();
    json!({"metrics": all["metrics"], "baselines": all["baselines"], "slices": slices, "per_step": per_step})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_metrics_by_hand() {
        let m = regression(&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 3.0, 6.0]);
        assert_eq!(m["mae"], 0.5);
        assert_eq!(m["rmse"], 1.0);
        assert!((m["r2"] - (1.0 - 4.0 / 5.0)).abs() < 1e-12);
        assert!((m["mape"] - 12.5).abs() < 1e-9);
    }

    #[test]
    fn auc_matches_the_pairwise_definition() {
        let y = [0.0, 0.0, 1.0, 1.0, 0.0, 1.0];
        let p = [0.1, 0.4, 0.35, 0.8, 0.8, 0.9];
        // Pairs (pos, neg) where pos > neg, ties count half.
        let (mut good, mut total) = (0.0, 0.0);
        for i in 0..6 {
            for j in 0..6 {
                if y[i] == 1.0 && y[j] == 0.0 {
                    total += 1.0;
                    good += if p[i] > p[j] {
                        1.0
                    } else if p[i] == p[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        assert!((auc(&y, &p) - good / total).abs() < 1e-12);
        let c = classification(&y, &p);
        assert!((c["accuracy"] - 4.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn report_has_slices_steps_and_baselines() {
        let rows: Vec<EvalRow> = (0..8)
            .map(|i| EvalRow {
                slice: if i % 2 == 0 { "a".into() } else { "b".into() },
                step: 1 + i % 2,
                y: i as f64,
                pred: i as f64 + 1.0,
                baselines: vec![0.0],
            })
            .collect();
        let r = report(&rows, &["zero"], false);
        assert_eq!(r["metrics"]["mae"], 1.0);
        assert_eq!(r["baselines"]["zero"]["mae"], 3.5);
        assert_eq!(r["slices"]["a"]["metrics"]["count"], 4.0);
        assert_eq!(r["per_step"].as_array().unwrap().len(), 2);
    }
}
