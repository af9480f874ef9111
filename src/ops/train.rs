//! `train`: fit a Burn model (`lstm` forecaster or `wide_deep`) on a training split, pick the best
//! epoch on a validation split, and write the model with its preprocessing as one artifact. Each
//! training is a tracked experiment: params, dataset versions, pipeline version, and per-epoch
//! metrics written live. A checkpoint after every epoch lets a retry resume where it stopped.
//!
//! [`fit_and_save`] is the whole of one training; `tune` calls it once per trial.

use std::collections::BTreeMap;
use std::path::PathBuf;

use polars::prelude::DataFrame;
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

/// Load-time check of a model name and its params (skipped where templates are still unrendered).
pub fn check_model(model: &str, params: Option<&Value>) -> Vec<String> {
    if model.contains("${{") {
        return Vec::new();
    }
    if !MODELS.contains(&model) {
        return vec![format!("model must be one of {}, got `{model}`", MODELS.join(", "))];
    }
    match params.filter(|p| !p.to_string().contains("${{")) {
        Some(p) => resolve(model, p).err().into_iter().collect(),
        None => Vec::new(),
    }
}

/// The params as the trainer sees them, defaults filled in: what the experiment records.
pub fn resolve(model: &str, params: &Value) -> Result<Value, String> {
    let params = if params.is_null() { json!({}) } else { params.clone() };
    let bad = |e: serde_json::Error| format!("params for {model}: {e}");
    match model {
        "lstm" => serde_json::to_value(serde_json::from_value::<forecast::LstmParams>(params).map_err(bad)?),
        "wide_deep" => serde_json::to_value(serde_json::from_value::<wide_deep::WideDeepParams>(params).map_err(bad)?),
        other => return Err(format!("model must be one of {}, got `{other}`", MODELS.join(", "))),
    }
    .map_err(|e| e.to_string())
}

/// One training, from resolved params to a recorded model.
pub struct Job<'a> {
    pub model: &'a str,
    pub params: &'a Value,
    pub train: (&'a DatasetRef, &'a DataFrame),
    pub validation: (&'a DatasetRef, &'a DataFrame),
    pub experiment: i64,
    pub checkpoint: PathBuf,
    /// The model file's name in the task's artifacts dir.
    pub file: String,
    /// Prefix of this training's log lines ("" for a plain train task, "trial 3: " in tune).
    pub label: String,
}

pub struct Saved {
    pub model: ModelRef,
    pub weights_sha256: String,
    pub best_epoch: usize,
    pub best_val_loss: Option<f64>,
    pub epochs_run: usize,
    pub resumed_from: Option<usize>,
    pub data: Value,
}

/// Train, write the model file, and record the experiment's outcome.
pub fn fit_and_save(ctx: &TaskContext, job: Job<'_>) -> Result<Saved, String> {
    let exp = job.experiment;
    let (log, db, label) = (ctx.log.clone(), ctx.store.clone(), job.label.clone());
    let mut on_epoch = |r: &EpochReport| {
        log.line(&format!(
            "{label}epoch {}: train_loss {:.5} val_loss {:.5} ({:.0} samples/s, {:.1}s)",
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
    let (log2, db2, label2) = (ctx.log.clone(), ctx.store.clone(), job.label.clone());
    let mut on_resume = |epoch: usize| {
        log2.line(&format!("{label2}resuming from the checkpoint after epoch {epoch}"));
        db2.write_nowait(move |tx| experiments::truncate_history(tx, exp, epoch as i64));
    };
    let stop = ctx.stop.clone();
    let stopped = move || stop.reason().map(|r| format!("{r:?}").to_lowercase());
    let hooks = Hooks {
        checkpoint: job.checkpoint.clone(),
        on_epoch: &mut on_epoch,
        on_resume: &mut on_resume,
        stopped: &stopped,
    };
    let bad = |e: serde_json::Error| format!("params for {}: {e}", job.model);
    let (tr, va) = (job.train.1, job.validation.1);
    let result = match job.model {
        "lstm" => {
            let p: forecast::LstmParams = serde_json::from_value(job.params.clone()).map_err(bad)?;
            forecast::train(&p, tr, va, hooks).map(|t| {
                let data = json!({"train_windows": t.train_windows, "validation_windows": t.val_windows});
                let digest = train::weights_digest(&t.fitted.model);
                (t.header, t.weights, t.fitted.history, t.fitted.best_epoch, t.fitted.resumed_from, data, digest)
            })
        }
        _ => {
            let p: wide_deep::WideDeepParams = serde_json::from_value(job.params.clone()).map_err(bad)?;
            wide_deep::train(&p, tr, va, hooks).map(|t| {
                let data = json!({"train_rows": tr.height(), "validation_rows": va.height()});
                let digest = train::weights_digest(&t.fitted.model);
                (t.header, t.weights, t.fitted.history, t.fitted.best_epoch, t.fitted.resumed_from, data, digest)
            })
        }
    };
    let (mut header, weights, history, best_epoch, resumed_from, data, digest) = match result {
        Ok(x) => x,
        Err(e) => {
            // Interrupted trainings stay "running" for their retry; real failures are final.
            if ctx.stop.reason().is_none() {
                ctx.store.write_nowait(move |tx| {
                    experiments::finish(tx, exp, "failed", &BTreeMap::new(), None, store::now_us())
                });
            }
            return Err(format!("{}{e}", job.label));
        }
    };
    header["experiment"] = json!(exp);
    header["datasets"] = json!({"train": job.train.0, "validation": job.validation.0});
    header["weights_sha256"] = json!(digest);
    header["trained_at"] = json!(store::now_us());
    let bytes = train::pack(header, &[("weights", &weights)]);
    let path = ctx.artifacts_dir.join(&job.file);
    std::fs::write(&path, &bytes).map_err(|e| format!("cannot write the model: {e}"))?;
    let sha = crate::artifacts::sha256_file(&path).map_err(|e| e.to_string())?;
    let best = history.iter().find(|r| r.epoch == best_epoch).cloned();
    let mut summary: BTreeMap<String, f64> = BTreeMap::new();
    if let Some(b) = &best {
        summary.insert("best_val_loss".into(), b.val_loss);
        summary.insert("best_epoch".into(), b.epoch as f64);
    }
    summary.insert("epochs_run".into(), history.len() as f64);
    let sha2 = sha.clone();
    ctx.store
        .write(move |tx| experiments::finish(tx, exp, "success", &summary, Some(&sha2), store::now_us()))
        .map_err(|e| e.message)?;
    let _ = std::fs::remove_file(&job.checkpoint);
    ctx.log.line(&format!(
        "{}best epoch {best_epoch} of {} (val_loss {:.5}); model {} ({} KiB), experiment {exp}",
        job.label,
        history.len(),
        best.as_ref().map(|b| b.val_loss).unwrap_or(f64::NAN),
        &sha[..12],
        bytes.len() / 1024
    ));
    Ok(Saved {
        model: ModelRef { sha256: sha, kind: job.model.to_string(), experiment: Some(exp) },
        weights_sha256: digest,
        best_epoch,
        best_val_loss: best.map(|b| b.val_loss),
        epochs_run: history.len(),
        resumed_from,
        data,
    })
}

/// Open (or, on a retry, reopen) the experiment of a training in this task. `slot` is the task's
/// map index, or a trial's number under `parent`.
pub struct Tracked<'a> {
    pub slot: i64,
    pub parent: Option<i64>,
    pub kind: &'a str,
    pub model: &'a str,
    pub params: Value,
    pub tags: Value,
    pub splits: (&'a DatasetRef, &'a DatasetRef),
}

pub fn open_experiment(ctx: &TaskContext, t: Tracked<'_>) -> Result<i64, String> {
    let new = experiments::NewExperiment {
        run_id: ctx.run_id,
        task_id: ctx.task_id.clone(),
        map_index: t.slot,
        parent_id: t.parent,
        kind: t.kind.into(),
        model: Some(t.model.into()),
        params: t.params,
        tags: if t.tags.is_null() { json!({}) } else { t.tags },
        datasets: json!({"train": t.splits.0, "validation": t.splits.1}),
    };
    ctx.store.write(move |tx| experiments::open(tx, &new, store::now_us())).map_err(|e| e.message)
}

/// Read the two splits and say so in the log.
pub fn read_splits(
    ctx: &TaskContext,
    model: &str,
    tr: &DatasetRef,
    va: &DatasetRef,
) -> Result<(DataFrame, DataFrame), String> {
    let (a, b) = (data::read(&ctx.data_dir, tr)?, data::read(&ctx.data_dir, va)?);
    ctx.log.line(&format!(
        "training {model} on {} v{} ({} rows), validating on {} v{} ({} rows)",
        tr.name,
        tr.version,
        a.height(),
        va.name,
        va.version,
        b.height()
    ));
    Ok((a, b))
}

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
        check_model(with.get("model").and_then(Value::as_str).unwrap_or(""), with.get("params"))
    }

    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String> {
        let p: Params = super::decode("train", with)?;
        let resolved = resolve(&p.model, &p.params)?;
        let (tr, va) = read_splits(ctx, &p.model, &p.train, &p.validation)?;
        let exp = open_experiment(
            ctx,
            Tracked {
                slot: ctx.map_index,
                parent: None,
                kind: "train",
                model: &p.model,
                params: resolved.clone(),
                tags: p.tags.clone(),
                splits: (&p.train, &p.validation),
            },
        )?;
        let s = fit_and_save(
            ctx,
            Job {
                model: &p.model,
                params: &resolved,
                train: (&p.train, &tr),
                validation: (&p.validation, &va),
                experiment: exp,
                checkpoint: train::checkpoint_path(&ctx.data_dir, ctx.run_id, &ctx.task_id, ctx.map_index),
                file: "model.mlbox".into(),
                label: String::new(),
            },
        )?;
        Ok(Outcome::Done(json!({
            "model": s.model,
            "experiment": exp,
            "weights_sha256": s.weights_sha256,
            "best_epoch": s.best_epoch,
            "val_loss": s.best_val_loss,
            "epochs_run": s.epochs_run,
            "resumed_from_epoch": s.resumed_from,
            "data": s.data,
        })))
    }
}
