//! `split`: train / validation / test datasets by ratio (a seeded shuffle), by time (sorted by a
//! time column, so the test set is the latest rows: forecasting never trains on the future), or
//! by a hash of a key column (the same key always lands in the same split).

use polars::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Kind, Op, Outcome, Param, TaskContext, opt, req};
use crate::data::{self, DatasetRef};

pub struct Split;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    input: DatasetRef,
    name: String,
    #[serde(default = "ratio")]
    by: String,
    #[serde(default = "default_fractions")]
    fractions: Vec<f64>,
    #[serde(default)]
    column: Option<String>,
    #[serde(default)]
    seed: u64,
}

fn ratio() -> String {
    "ratio".into()
}
fn default_fractions() -> Vec<f64> {
    vec![0.8, 0.1, 0.1]
}

const PARTS: [&str; 3] = ["train", "validation", "test"];

/// A well-mixed 64-bit hash (splitmix64): stable across runs and platforms.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn bytes_hash(seed: u64, b: &[u8]) -> u64 {
    b.iter().fold(mix(seed), |h, &c| mix(h ^ u64::from(c)))
}

/// Which part a value in [0, 1) falls in, given cumulative fractions.
fn part_of(u: f64, fr: &[f64; 3]) -> usize {
    if u < fr[0] {
        0
    } else if u < fr[0] + fr[1] {
        1
    } else {
        2
    }
}

fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl Op for Split {
    fn name(&self) -> &'static str {
        "split"
    }
    fn params(&self) -> &'static [Param] {
        const P: &[Param] = &[
            req("input", Kind::Map, "the dataset to split, e.g. ${{ tasks.load.outputs.dataset }}"),
            req("name", Kind::String, "base name: datasets NAME_train, NAME_validation, NAME_test"),
            opt("by", Kind::String, "ratio (default, seeded shuffle), time or hash"),
            opt("fractions", Kind::List, "train, validation, test fractions (default [0.8, 0.1, 0.1])"),
            opt("column", Kind::String, "the time column (by: time) or key column (by: hash)"),
            opt("seed", Kind::Int, "seed of the ratio shuffle and the key hash (default 0)"),
        ];
        P
    }
    fn check(&self, with: &Value) -> Vec<String> {
        let mut e = Vec::new();
        match with.get("by").and_then(Value::as_str) {
            None | Some("ratio") => {}
            Some("time" | "hash") if with.get("column").is_none() => {
                e.push("by: time and by: hash need `column`".into())
            }
            Some("time" | "hash") => {}
            Some(b) if b.contains("${{") => {}
            Some(b) => e.push(format!("by must be ratio, time or hash, got `{b}`")),
        }
        if let Some(f) = with.get("fractions").and_then(Value::as_array) {
            let nums: Vec<f64> = f.iter().filter_map(Value::as_f64).collect();
            if nums.len() != 3 || nums.iter().any(|x| *x < 0.0) || (nums.iter().sum::<f64>() - 1.0).abs() > 1e-6 {
                e.push("fractions must be three numbers ≥ 0 (train, validation, test) that sum to 1".into());
            }
        }
        e
    }

    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String> {
        let p: Params = super::decode("split", with)?;
        if p.fractions.len() != 3 || (p.fractions.iter().sum::<f64>() - 1.0).abs() > 1e-6 {
            return Err("fractions must be three numbers (train, validation, test) that sum to 1".into());
        }
        let fr = [p.fractions[0], p.fractions[1], p.fractions[2]];
        let df = data::read(&ctx.data_dir, &p.input)?;
        let n = df.height();
        let column = |what: &str| p.column.clone().ok_or_else(|| format!("by: {what} needs `column`"));
        let mut parts: [Vec<IdxSize>; 3] = Default::default();
        let df = match p.by.as_str() {
            "ratio" => {
                for i in 0..n {
                    parts[part_of(unit(mix(p.seed ^ mix(i as u64))), &fr)].push(i as IdxSize);
                }
                df
            }
            "time" => {
                let col = column("time")?;
                let sorted = df
                    .sort([col.as_str()], SortMultipleOptions::default().with_maintain_order(true))
                    .map_err(|e| format!("cannot sort by `{col}`: {e}"))?;
                let train_end = (n as f64 * fr[0]).round() as usize;
                let val_end = ((n as f64 * (fr[0] + fr[1])).round() as usize).max(train_end);
                for i in 0..n {
                    let k = if i < train_end {
                        0
                    } else if i < val_end {
                        1
                    } else {
                        2
                    };
                    parts[k].push(i as IdxSize);
                }
                sorted
            }
            "hash" => {
                let col = column("hash")?;
                let keys = df
                    .column(&col)
                    .map_err(|_| format!("no column `{col}`"))?
                    .cast(&DataType::String)
                    .map_err(|e| e.to_string())?;
                let keys = keys.str().map_err(|e| e.to_string())?;
                for (i, k) in keys.iter().enumerate() {
                    let h = bytes_hash(p.seed, k.unwrap_or("").as_bytes());
                    parts[part_of(unit(h), &fr)].push(i as IdxSize);
                }
                df
            }
            other => return Err(format!("by must be ratio, time or hash, got `{other}`")),
        };
        let mut out = serde_json::Map::new();
        for (k, idx) in parts.into_iter().enumerate() {
            let name = format!("{}_{}", p.name, PARTS[k]);
            let mut part = df.take(&IdxCa::from_vec("idx".into(), idx)).map_err(|e| e.to_string())?;
            let source = format!("split of {} v{} by {}", p.input.name, p.input.version, p.by);
            let run = (ctx.run_id, ctx.task_id.as_str());
            let (r, _) = data::save(&mut part, &name, &source, &ctx.artifacts_dir, &ctx.store, run)?;
            let rows = r.rows;
            ctx.log.line(&format!("{}: {rows} rows (dataset {} v{})", PARTS[k], r.name, r.version));
            out.insert(PARTS[k].to_string(), json!(r));
        }
        Ok(Outcome::Done(Value::Object(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_map_to_parts_and_hashes_are_stable() {
        let fr = [0.8, 0.1, 0.1];
        assert_eq!(part_of(0.0, &fr), 0);
        assert_eq!(part_of(0.85, &fr), 1);
        assert_eq!(part_of(0.95, &fr), 2);
        assert_eq!(bytes_hash(7, b"zone-132"), bytes_hash(7, b"zone-132"));
        assert_ne!(bytes_hash(7, b"zone-132"), bytes_hash(8, b"zone-132"));
        let u: Vec<f64> = (0..10_000).map(|i| unit(mix(i))).collect();
        let train = u.iter().filter(|x| part_of(**x, &fr) == 0).count();
        assert!((7_700..8_300).contains(&train), "a seeded shuffle keeps the ratio: {train}");
    }
}
