//! `train`: fit a Burn model (`lstm` forecaster or `wide_deep`) on a training split, pick the best
//! epoch on a validation split, and write the model with its preprocessing as one artifact. Each
//! training is a tracked experiment: params, dataset versions, pipeline version, and per-epoch
//! metrics written live. A checkpoint after every epoch lets a retry resume where it stopped.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Kind, Op, Outcome, Param, TaskContext, opt, req};
use crate::data::{self, DatasetRef};
use crate::store::{self, experiments};
use crate::train::{self, EpochReport, Hooks, ModelRef, forecast, wide_deep};

pub struct Train;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    model: String,
    train: DatasetRef,
    validation: DatasetRef,
    #[serde(default)]
    params: Value,
    #[serde(default)]
    tags: Value,
}

pub const MODELS: &[&str] = &["lstm", "wide_deep"];

impl Op for Train {
    fn name(&self) -> &'static str {
        "train"
    }
    fn params(&self) -> &'static [Param] {
        const P: &[Param] = &[
            req("model", Kind::String, "lstm (multi-series forecaster) or wide_deep"),
            req("train", Kind::Map, "the training split, e.g. ${{ tasks.split.outputs.train }}"),
            req("validation", Kind::Map, "the validation split (best epoch and early stopping)"),
            opt("params", Kind::Map, "model hyperparameters (see docs/TRAINING.md)"),
            opt("tags", Kind::Map, "free-form tags stored with the experiment"),
        ];
        P
    }
    fn check(&self, with: &Value) -> Vec<String> {
        let mut e = Vec::new();
        let model = with.get("model").and_then(Value::as_str).unwrap_or("");
        if !model.contains("${{") && !MODELS.contains(&model) {
            e.push(format!("model must be one of {}, got `{model}`", MODELS.join(", ")));
            return e;
        }
        if let Some(p) = with.get("params").filter(|p| !p.to_string().contains("${{")) {
            let err = match model {
                "lstm" => serde_json::from_value::<forecast::LstmParams>(p.clone()).err(),
                "wide_deep" => serde_json::from_value::<wide_deep::WideDeepParams>(p.clone()).err(),
                _ => None,
            };
            if let Some(err) = err {
                e.push(format!("params for {model}: {err}"));
            }
        }
        e
    }

    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String> {
        let p: Params = super::decode("train", with)?;
        let bad = |e: serde_json::Error| format!("params for {}: {e}", p.model);
        // The params as the trainer sees them, defaults filled in: what the experiment records.
        let (lstm, wd, resolved) = match p.model.as_str() {
            "lstm" => {
                let x: forecast::LstmParams = serde_json::from_value(p.params.clone()).map_err(bad)?;
                let v = serde_json::to_value(&x).map_err(|e| e.to_string())?;
                (Some(x), None, v)
            }
            "wide_deep" => {
                let x: wide_deep::WideDeepParams = serde_json::from_value(p.params.clone()).map_err(bad)?;
                let v = serde_json::to_value(&x).map_err(|e| e.to_string())?;
                (None, Some(x), v)
            }
            other => return Err(format!("model must be one of {}, got `{other}`", MODELS.join(", "))),
        };
        let tr = data::read(&ctx.data_dir, &p.train)?;
        let va = data::read(&ctx.data_dir, &p.validation)?;
        ctx.log.line(&format!(
            "training {} on {} v{} ({} rows), validating on {} v{} ({} rows)",
            p.model,
            p.train.name,
            p.train.version,
            tr.height(),
            p.validation.name,
            p.validation.version,
            va.height()
        ));
        let new = experiments::NewExperiment {
            run_id: ctx.run_id,
            task_id: ctx.task_id.clone(),
            map_index: ctx.map_index,
            parent_id: None,
            kind: "train".into(),
            model: Some(p.model.clone()),
            params: resolved.clone(),
            tags: if p.tags.is_null() { json!({}) } else { p.tags.clone() },
            datasets: json!({"train": p.train, "validation": p.validation}),
        };
        let exp = ctx.store.write(move |tx| experiments::open(tx, &new, store::now_us())).map_err(|e| e.message)?;

        let log = ctx.log.clone();
        let db = ctx.store.clone();
        let mut on_epoch = |r: &EpochReport| {
            log.line(&format!(
                "epoch {}: train_loss {:.5} val_loss {:.5} ({:.0} samples/s, {:.1}s)",
                r.epoch, r.train_loss, r.val_loss, r.samples_per_s, r.seconds
            ));
            let m: BTreeMap<String, f64> = [
                ("train_loss".to_string(), r.train_loss),
                ("val_loss".to_string(), r.val_loss),
                ("samples_per_s".to_string(), r.samples_per_s),
            ]
            .into();
            let step = r.epoch as i64;
            db.write_nowait(move |tx| experiments::log_metrics(tx, exp, step, &m, store::now_us()));
        };
        let log2 = ctx.log.clone();
        let db2 = ctx.store.clone();
        let mut on_resume = |epoch: usize| {
            log2.line(&format!("resuming from the checkpoint after epoch {epoch}"));
            db2.write_nowait(move |tx| experiments::truncate_history(tx, exp, epoch as i64));
        };
        let stop = ctx.stop.clone();
        let stopped = move || stop.reason().map(|r| format!("{r:?}").to_lowercase());
        let checkpoint = train::checkpoint_path(&ctx.data_dir, ctx.run_id, &ctx.task_id, ctx.map_index);
        let hooks = Hooks {
            checkpoint: checkpoint.clone(),
            on_epoch: &mut on_epoch,
            on_resume: &mut on_resume,
            stopped: &stopped,
        };

        let result = match (lstm, wd) {
            (Some(lp), _) => forecast::train(&lp, &tr, &va, hooks).map(|t| {
                let extra = json!({"train_windows": t.train_windows, "validation_windows": t.val_windows});
                let digest = train::weights_digest(&t.fitted.model);
                (t.header, t.weights, t.fitted.history, t.fitted.best_epoch, t.fitted.resumed_from, extra, digest)
            }),
            (_, Some(wp)) => wide_deep::train(&wp, &tr, &va, hooks).map(|t| {
                let extra = json!({"train_rows": tr.height(), "validation_rows": va.height()});
                let digest = train::weights_digest(&t.fitted.model);
                (t.header, t.weights, t.fitted.history, t.fitted.best_epoch, t.fitted.resumed_from, extra, digest)
            }),
            _ => unreachable!("one family was decoded above"),
        };
        let (mut header, weights, history, best_epoch, resumed_from, extra, digest) = match result {
            Ok(x) => x,
            Err(e) => {
                // Interrupted trainings stay "running" for their retry; real failures are final.
                if ctx.stop.reason().is_none() {
                    ctx.store.write_nowait(move |tx| {
                        experiments::finish(tx, exp, "failed", &BTreeMap::new(), None, store::now_us())
                    });
                }
                return Err(e);
            }
        };
        header["experiment"] = json!(exp);
        header["datasets"] = json!({"train": p.train, "validation": p.validation});
        header["trained_at"] = json!(store::now_us());
        let weights_sha256 = digest;
        header["weights_sha256"] = json!(weights_sha256);
        let bytes = train::pack(header, &[("weights", &weights)]);
        let path = ctx.artifacts_dir.join("model.mlbox");
        std::fs::write(&path, &bytes).map_err(|e| format!("cannot write the model: {e}"))?;
        let sha = crate::artifacts::sha256_file(&path).map_err(|e| e.to_string())?;
        let best = history.iter().find(|r| r.epoch == best_epoch).cloned();
        let mut summary: BTreeMap<String, f64> = BTreeMap::new();
        if let Some(b) = &best {
            summary.insert("best_val_loss".into(), b.val_loss);
            summary.insert("best_epoch".into(), b.epoch as f64);
        }
        summary.insert("epochs_run".into(), history.len() as f64);
        let (s2, sha2) = (summary.clone(), sha.clone());
        ctx.store
            .write(move |tx| experiments::finish(tx, exp, "success", &s2, Some(&sha2), store::now_us()))
            .map_err(|e| e.message)?;
        let _ = std::fs::remove_file(&checkpoint);
        ctx.log.line(&format!(
            "best epoch {best_epoch} of {} (val_loss {:.5}); model {} ({} KiB), experiment {exp}",
            history.len(),
            best.as_ref().map(|b| b.val_loss).unwrap_or(f64::NAN),
            &sha[..12],
            bytes.len() / 1024
        ));
        let model = ModelRef { sha256: sha, kind: p.model.clone(), experiment: Some(exp) };
        Ok(Outcome::Done(json!({
            "model": model,
            "experiment": exp,
            "weights_sha256": weights_sha256,
            "best_epoch": best_epoch,
            "val_loss": best.map(|b| b.val_loss),
            "epochs_run": history.len(),
            "resumed_from_epoch": resumed_from,
            "data": extra,
        })))
    }
}
