//! The bridge between a decoded [`Batch`] and a model family: each family's signature, its
//! online prediction (through the same functions batch prediction uses), and a smoke-test input.

use std::collections::BTreeMap;

use super::signature::{Batch, Column, DType, Field, Output, Signature};
use crate::train::Loaded;
use crate::train::tabular::{Trip, parse_time};
use crate::train::windows::Series;

/// The inputs and outputs a model takes and gives.
pub fn signature(m: &Loaded) -> Signature {
    match m {
        Loaded::WideDeep(w) => {
            let c = &w.prep.columns;
            Signature {
                inputs: vec![
                    Field::scalar(&c.time, DType::Bytes).doc("pickup time, YYYY-MM-DD HH:MM:SS"),
                    Field::scalar(&c.pickup, DType::Int64).doc("pickup taxi zone, 1-265"),
                    Field::scalar(&c.dropoff, DType::Int64).doc("dropoff taxi zone, 1-265"),
                    Field::scalar(&c.passengers, DType::Fp64).nullable().doc("passengers (null: unknown)"),
                ],
                outputs: vec![Field::scalar(if w.head.classify { "probability" } else { "prediction" }, DType::Fp64)],
            }
        }
        Loaded::Lstm(l) => {
            let spec = &l.spec;
            let mut inputs = Vec::new();
            if let Some(s) = &spec.series_column {
                inputs.push(Field::scalar(s, DType::Bytes).doc("which series (as in training)"));
            }
            for c in spec.raw_columns() {
                if c == spec.time_column || Some(&c) == spec.series_column.as_ref() {
                    continue;
                }
                inputs.push(
                    Field::seq(&c, DType::Fp64, -1).doc("the most recent values, oldest first, at least one window"),
                );
            }
            let h = l.net.horizon as i64;
            Signature {
                inputs,
                outputs: vec![
                    Field::seq("forecast", DType::Fp64, h).doc("the next values of the target"),
                    Field::seq("return", DType::Fp64, h).doc("forecast / last value - 1"),
                ],
            }
        }
    }
}

/// Predict every record of a batch decoded against `signature(m)`. An error names the record.
pub fn predict(m: &Loaded, b: &Batch) -> Result<Vec<Output>, String> {
    b.check()?;
    match m {
        Loaded::WideDeep(w) => {
            let c = &w.prep.columns;
            let (times, pu, dr, pas) =
                (b.text(&c.time), b.ints(&c.pickup), b.ints(&c.dropoff), b.floats(&c.passengers));
            let mut trips = Vec::with_capacity(b.rows);
            for i in 0..b.rows {
                let t = parse_time(&times[i]).ok_or_else(|| {
                    format!(
                        "record {i}: field `{}` must be a time like 2019-03-14 08:30:00, got {:?}",
                        c.time, times[i]
                    )
                })?;
                trips.push(Trip::new(Some(t), pu[i], dr[i], Some(pas[i])));
            }
            let name = if w.head.classify { "probability" } else { "prediction" };
            Ok(vec![Output { name: name.into(), per_row: 1, data: w.predict_trips(&trips) }])
        }
        Loaded::Lstm(l) => {
            let spec = &l.spec;
            let h = l.net.horizon;
            let (mut fc, mut ret) = (Vec::with_capacity(b.rows * h), Vec::with_capacity(b.rows * h));
            for i in 0..b.rows {
                let key = spec.series_column.as_ref().map(|s| b.text(s)[i].clone()).unwrap_or_default();
                let mut columns = BTreeMap::new();
                for (name, col) in &b.columns {
                    if let Column::FloatSeq(v) = col {
                        columns.insert(name.clone(), v[i].clone());
                    }
                }
                let target = columns.get(&spec.target).cloned().unwrap_or_default();
                let n = target.len();
                if let Some((c, _)) = columns.iter().find(|(_, v)| v.len() != n) {
                    return Err(format!("record {i}: `{c}` must have as many values as `{}` ({n})", spec.target));
                }
                let s = Series { key, times: vec![String::new(); n], target, columns };
                let prices = l.forecast_series(&s).map_err(|e| format!("record {i}: {e}"))?;
                let last = s.target[n - 1];
                ret.extend(prices.iter().map(|p| p / last - 1.0));
                fc.extend(prices);
            }
            Ok(vec![
                Output { name: "forecast".into(), per_row: h, data: fc },
                Output { name: "return".into(), per_row: h, data: ret },
            ])
        }
    }
}

/// A valid one-record input for the smoke test a version must pass before it is served: built
/// from what the model learned (a zone pair seen in training, a known series).
pub fn example(m: &Loaded) -> Batch {
    let mut columns = BTreeMap::new();
    match m {
        Loaded::WideDeep(w) => {
            let c = &w.prep.columns;
            let (p, q) = w
                .prep
                .pair_distance
                .keys()
                .next()
                .and_then(|k| k.split_once('-'))
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                .unwrap_or((1, 1));
            columns.insert(c.time.clone(), Column::Text(vec!["2019-03-14 08:30:00".into()]));
            columns.insert(c.pickup.clone(), Column::Int(vec![p]));
            columns.insert(c.dropoff.clone(), Column::Int(vec![q]));
            columns.insert(c.passengers.clone(), Column::Float(vec![1.0]));
        }
        Loaded::Lstm(l) => {
            let spec = &l.spec;
            if let Some(s) = &spec.series_column {
                columns.insert(s.clone(), Column::Text(vec![l.norms.keys().next().cloned().unwrap_or_default()]));
            }
            // A gently rising series, one step longer than a window.
            let path: Vec<f64> = (0..=spec.window).map(|i| 100.0 * (1.0 + 0.001 * i as f64)).collect();
            for f in signature(m).inputs.iter().filter(|f| !f.shape.is_empty()) {
                columns.insert(f.name.clone(), Column::FloatSeq(vec![path.clone()]));
            }
        }
    }
    Batch { rows: 1, columns }
}
