//! `tune`: grid or random search over a model's params. Trials run in parallel inside the task's
//! executor slots (`threads`); each is a tracked experiment whose parent is the tune experiment;
//! the best by the chosen metric is kept and its model is the task's `model` output. A retry
//! reuses trials that already finished.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::{Value, json};

use super::train::{self as tr, Job, Saved};
use super::{Kind, Op, Outcome, Param, TaskContext, opt, req};
use crate::data::DatasetRef;
use crate::store::{self, experiments};
use crate::train::{ModelRef, Rng};

pub struct Tune;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    model: String,
    train: DatasetRef,
    validation: DatasetRef,
    #[serde(default)]
    params: serde_json::Map<String, Value>,
    space: BTreeMap<String, Value>,
    #[serde(default = "grid")]
    search: String,
    #[serde(default)]
    trials: Option<usize>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    parallel: Option<usize>,
}

fn grid() -> String {
    "grid".into()
}

/// Most trials a tune task runs.
pub const MAX_TRIALS: usize = 256;

/// One dimension of the search space: a list of values, or a range `{min, max, log?, int?}`.
#[derive(Debug, Clone)]
enum Dim {
    Values(Vec<Value>),
    Range { min: f64, max: f64, log: bool, int: bool },
}

fn dim(name: &str, v: &Value) -> Result<Dim, String> {
    match v {
        Value::Array(a) if !a.is_empty() => Ok(Dim::Values(a.clone())),
        Value::Object(o) => {
            let num = |k: &str| o.get(k).and_then(Value::as_f64);
            let (Some(min), Some(max)) = (num("min"), num("max")) else {
                return Err(format!("space.{name}: a range needs numeric min and max"));
            };
            let log = o.get("log").and_then(Value::as_bool).unwrap_or(false);
            if min > max || (log && min <= 0.0) {
                return Err(format!("space.{name}: need min ≤ max (and min > 0 with log: true)"));
            }
            Ok(Dim::Range { min, max, log, int: o.get("int").and_then(Value::as_bool).unwrap_or(false) })
        }
        _ => Err(format!("space.{name} must be a non-empty list of values or {{min, max, log, int}}")),
    }
}

/// The trials' param overrides, in order.
fn trials(space: &BTreeMap<String, Value>, search: &str, n: Option<usize>, seed: u64) -> Result<Vec<Value>, String> {
    let dims: Vec<(String, Dim)> =
        space.iter().map(|(k, v)| dim(k, v).map(|d| (k.clone(), d))).collect::<Result<_, _>>()?;
    if dims.is_empty() {
        return Err("space is empty: name at least one param to search".into());
    }
    match search {
        "grid" => {
            let mut out = vec![serde_json::Map::new()];
            for (k, d) in &dims {
                let Dim::Values(vals) = d else {
                    return Err(format!(
                        "space.{k}: grid search needs a list of values (ranges are for random search)"
                    ));
                };
                out = out
                    .into_iter()
                    .flat_map(|m| {
                        vals.iter().map(move |v| {
                            let mut m = m.clone();
                            m.insert(k.clone(), v.clone());
                            m
                        })
                    })
                    .take(MAX_TRIALS + 1)
                    .collect();
            }
            if out.len() > MAX_TRIALS || n.is_some_and(|n| out.len() > n) {
                return Err(format!(
                    "the grid has more than {} points; shrink the space",
                    n.unwrap_or(MAX_TRIALS).min(MAX_TRIALS)
                ));
            }
            Ok(out.into_iter().map(Value::Object).collect())
        }
        "random" => {
            let n = n.ok_or("random search needs `trials`")?;
            if n == 0 || n > MAX_TRIALS {
                return Err(format!("trials must be 1..={MAX_TRIALS}"));
            }
            let mut rng = Rng::new(seed);
            Ok((0..n)
                .map(|_| {
                    let mut m = serde_json::Map::new();
                    for (k, d) in &dims {
                        let v = match d {
                            Dim::Values(vals) => vals[(rng.next_u64() % vals.len() as u64) as usize].clone(),
                            Dim::Range { min, max, log, int } => {
                                let u = f64::from(rng.unit());
                                let x = if *log {
                                    (min.ln() + u * (max.ln() - min.ln())).exp()
                                } else {
                                    min + u * (max - min)
                                };
                                if *int { json!(x.round() as i64) } else { json!(x) }
                            }
                        };
                        m.insert(k.clone(), v);
                    }
                    Value::Object(m)
                })
                .collect())
        }
        other => Err(format!("search must be grid or random, got `{other}`")),
    }
}

impl Op for Tune {
    fn name(&self) -> &'static str {
        "tune"
    }
    fn params(&self) -> &'static [Param] {
        const P: &[Param] = &[
            req("model", Kind::String, "lstm or wide_deep"),
            req("train", Kind::Map, "the training split"),
            req("validation", Kind::Map, "the validation split: trials are ranked by their best val_loss on it"),
            opt("params", Kind::Map, "params every trial shares"),
            req("space", Kind::Map, "param → list of values (grid or random) or {min, max, log, int} (random)"),
            opt("search", Kind::String, "grid (default) or random"),
            opt("trials", Kind::Int, "how many random trials (required for random; a cap for grid)"),
            opt("seed", Kind::Int, "seed of the random search"),
            opt("parallel", Kind::Int, "trials at once (default: the task's threads)"),
        ];
        P
    }
    fn check(&self, with: &Value) -> Vec<String> {
        let model = with.get("model").and_then(Value::as_str).unwrap_or("");
        let mut e = tr::check_model(model, None);
        if with.to_string().contains("${{") {
            return e;
        }
        let space: BTreeMap<String, Value> =
            with.get("space").and_then(|s| serde_json::from_value(s.clone()).ok()).unwrap_or_default();
        let search = with.get("search").and_then(Value::as_str).unwrap_or("grid");
        let n = with.get("trials").and_then(Value::as_u64).map(|n| n as usize);
        match trials(&space, search, n, 0) {
            Ok(ts) if e.is_empty() => {
                if let Some(t) = ts.first() {
                    let mut merged = with.get("params").cloned().unwrap_or(json!({}));
                    for (k, v) in t.as_object().into_iter().flatten() {
                        merged[k] = v.clone();
                    }
                    e.extend(tr::check_model(model, Some(&merged)));
                }
            }
            Ok(_) => {}
            Err(err) => e.push(err),
        }
        e
    }

    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String> {
        let p: Params = super::decode("tune", with)?;
        let plan = trials(&p.space, &p.search, p.trials, p.seed)?;
        let base = Value::Object(p.params.clone());
        let resolved: Vec<Value> = plan
            .iter()
            .map(|t| {
                let mut merged = base.clone();
                for (k, v) in t.as_object().into_iter().flatten() {
                    merged[k] = v.clone();
                }
                tr::resolve(&p.model, &merged)
            })
            .collect::<Result<_, _>>()?;
        let (trd, vad) = tr::read_splits(ctx, &p.model, &p.train, &p.validation)?;
        let splits = (&p.train, &p.validation);
        let parent = tr::open_experiment(
            ctx,
            tr::Tracked {
                slot: ctx.map_index,
                parent: None,
                kind: "tune",
                model: &p.model,
                params: json!({"space": p.space, "search": p.search, "trials": plan.len(), "fixed": base}),
                tags: Value::Null,
                splits,
            },
        )?;
        let parallel = p.parallel.unwrap_or(ctx.threads).clamp(1, plan.len().max(1));
        ctx.log.line(&format!(
            "{} search: {} trials, {parallel} at a time; tune experiment {parent}",
            p.search,
            plan.len()
        ));

        // Open every trial's experiment up front (a retry finds the same ones, and their states).
        let earlier = ctx
            .store
            .read(|c| {
                let f = experiments::Filter {
                    run_ids: vec![ctx.run_id],
                    parent_id: Some(parent),
                    limit: 1000,
                    ..Default::default()
                };
                experiments::list(c, &f)
            })
            .map_err(|e| e.message)?;
        let mut exps = Vec::new();
        for (i, params) in resolved.iter().enumerate() {
            let done = earlier.iter().find(|e| e.map_index == i as i64 && e.state == "success").cloned();
            let reuse = done.filter(|e| {
                e.artifact.as_ref().is_some_and(|sha| crate::artifacts::path_of(&ctx.data_dir, sha).exists())
            });
            let id = match &reuse {
                Some(e) => e.id,
                None => tr::open_experiment(
                    ctx,
                    tr::Tracked {
                        slot: i as i64,
                        parent: Some(parent),
                        kind: "trial",
                        model: &p.model,
                        params: params.clone(),
                        tags: json!({"trial": i}),
                        splits,
                    },
                )?,
            };
            exps.push((id, reuse));
        }

        let results: Mutex<Vec<Option<Result<Value, String>>>> = Mutex::new(vec![None; plan.len()]);
        let next = Mutex::new(0usize);
        std::thread::scope(|s| {
            for _ in 0..parallel {
                s.spawn(|| {
                    loop {
                        let i = {
                            let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                            if *n >= plan.len() || ctx.stop.reason().is_some() {
                                return;
                            }
                            *n += 1;
                            *n - 1
                        };
                        let (exp, reuse) = &exps[i];
                        let label = format!("trial {i}: ");
                        let r = match reuse {
                            Some(e) => {
                                ctx.log.line(&format!("{label}finished in an earlier try; kept"));
                                Ok(json!({
                                    "trial": i, "params": plan[i], "experiment": e.id,
                                    "val_loss": e.metrics.get("best_val_loss"),
                                    "model": ModelRef { sha256: e.artifact.clone().unwrap_or_default(), kind: p.model.clone(), experiment: Some(e.id) },
                                }))
                            }
                            None => {
                                ctx.log.line(&format!("{label}{}", plan[i]));
                                let job = Job {
                                    model: &p.model,
                                    params: &resolved[i],
                                    train: (&p.train, &trd),
                                    validation: (&p.validation, &vad),
                                    experiment: *exp,
                                    checkpoint: crate::train::checkpoint_path(
                                        &ctx.data_dir,
                                        ctx.run_id,
                                        &format!("{}.trial-{i}", ctx.task_id),
                                        ctx.map_index,
                                    ),
                                    file: format!("trial-{i}.mlbox"),
                                    label,
                                };
                                // A panicking trial fails alone instead of taking every trial down.
                                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tr::fit_and_save(ctx, job)))
                                    .unwrap_or_else(|_| Err("the trial panicked (a bug in mlbox: please report it)".into()));
                                r.map(|s: Saved| {
                                    json!({"trial": i, "params": plan[i], "experiment": exp,
                                           "val_loss": s.best_val_loss, "model": s.model, "weights_sha256": s.weights_sha256})
                                })
                            }
                        };
                        results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                    }
                });
            }
        });
        if let Some(why) = ctx.stop.reason() {
            return Err(format!("tuning stopped ({why:?}); finished trials are kept for the retry"));
        }
        let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut table = Vec::new();
        let mut failed = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Some(Ok(v)) => table.push(v),
                Some(Err(e)) => failed.push(format!("trial {i}: {e}")),
                None => failed.push(format!("trial {i}: did not run")),
            }
        }
        let best = table
            .iter()
            .filter(|t| t["val_loss"].as_f64().is_some_and(f64::is_finite))
            .min_by(|a, b| {
                a["val_loss"]
                    .as_f64()
                    .unwrap_or(f64::INFINITY)
                    .total_cmp(&b["val_loss"].as_f64().unwrap_or(f64::INFINITY))
            })
            .cloned();
        let Some(best) = best else {
            ctx.store.write_nowait(move |tx| {
                experiments::finish(tx, parent, "failed", &BTreeMap::new(), None, store::now_us())
            });
            return Err(if failed.is_empty() {
                "no trial reached a finite validation loss".to_string()
            } else {
                format!("no trial finished: {}", failed.join("; "))
            });
        };
        for f in &failed {
            ctx.log.line(f);
        }
        ctx.log.line(&format!(
            "best: trial {} {} (val_loss {:.5}), experiment {}",
            best["trial"],
            best["params"],
            best["val_loss"].as_f64().unwrap_or(f64::NAN),
            best["experiment"]
        ));
        let summary: BTreeMap<String, f64> = [
            ("best_val_loss".to_string(), best["val_loss"].as_f64().unwrap_or(f64::NAN)),
            ("best_trial".to_string(), best["trial"].as_f64().unwrap_or(f64::NAN)),
            ("trials_ok".to_string(), table.len() as f64),
            ("trials_failed".to_string(), failed.len() as f64),
        ]
        .into();
        let sha = best["model"]["sha256"].as_str().map(String::from);
        ctx.store
            .write(move |tx| experiments::finish(tx, parent, "success", &summary, sha.as_deref(), store::now_us()))
            .map_err(|e| e.message)?;
        Ok(Outcome::Done(json!({
            "model": best["model"],
            "best": best,
            "experiment": parent,
            "trials": table,
            "failed": failed,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_the_product_and_random_is_seeded() {
        let space: BTreeMap<String, Value> =
            [("hidden".to_string(), json!([8, 16])), ("layers".to_string(), json!([1, 2, 3]))].into();
        let g = trials(&space, "grid", None, 0).unwrap();
        assert_eq!(g.len(), 6);
        assert_eq!(g[0], json!({"hidden": 8, "layers": 1}));
        assert!(trials(&space, "grid", Some(4), 0).is_err(), "a cap below the grid size is an error");
        let space: BTreeMap<String, Value> =
            [("learning_rate".to_string(), json!({"min": 0.0001, "max": 0.01, "log": true}))].into();
        let a = trials(&space, "random", Some(5), 9).unwrap();
        assert_eq!(a, trials(&space, "random", Some(5), 9).unwrap());
        assert!(a.iter().all(|t| (0.0001..=0.01).contains(&t["learning_rate"].as_f64().unwrap())));
        assert!(trials(&space, "grid", None, 0).is_err(), "ranges need random search");
    }
}
