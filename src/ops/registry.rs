//! `register` (a trained model becomes the next version of a registered model, with its
//! evaluation and lineage) and `promote` (move an alias to a version, optionally only when its
//! evaluation blessed it). Serving follows the alias at once (hot swap).

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Kind, Op, Outcome, Param, TaskContext, opt, req};
use crate::registry::{self, PRODUCTION};
use crate::serving::Registration;
use crate::train::ModelRef;

pub struct Register;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterParams {
    name: String,
    model: ModelRef,
    #[serde(default)]
    evaluation: Value,
    #[serde(default)]
    metrics: Value,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: Value,
}

fn actor(ctx: &TaskContext) -> String {
    format!("pipeline {} (run {}, task {})", ctx.pipeline, ctx.run_id, ctx.task_id)
}

impl Op for Register {
    fn name(&self) -> &'static str {
        "register"
    }
    fn params(&self) -> &'static [Param] {
        const P: &[Param] = &[
            req("name", Kind::String, "the registered model's name"),
            req("model", Kind::Map, "the trained model, e.g. ${{ tasks.train.outputs.model }}"),
            opt("evaluation", Kind::Map, "an evaluate task's outputs, e.g. ${{ tasks.evaluate.outputs }}"),
            opt("metrics", Kind::Map, "more metrics to keep with the version"),
            opt("description", Kind::String, "a note on this version"),
            opt("tags", Kind::Map, "name → value"),
        ];
        P
    }
    fn check(&self, with: &Value) -> Vec<String> {
        match with.get("name").and_then(Value::as_str).filter(|n| !n.contains("${{")) {
            Some(n) => registry::check_name(n).err().map(|e| e.message).into_iter().collect(),
            None => vec![],
        }
    }

    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String> {
        let p: RegisterParams = super::decode("register", with)?;
        let v = ctx
            .serving
            .register(Registration {
                name: p.name.clone(),
                sha256: p.model.sha256.clone(),
                experiment: p.model.experiment,
                evaluation: p.evaluation,
                metrics: p.metrics,
                description: p.description,
                tags: if p.tags.is_null() { json!({}) } else { p.tags },
                run_id: Some(ctx.run_id),
                task_id: Some(ctx.task_id.clone()),
                map_index: ctx.map_index,
                created_by: actor(ctx),
            })
            .map_err(|e| e.message)?;
        let blessed = match v.blessed {
            Some(true) => "blessed by its evaluation",
            Some(false) => "NOT blessed by its evaluation",
            None => "registered without an evaluation",
        };
        ctx.log.line(&format!("registered {} version {} ({}; {blessed})", v.model, v.version, &v.sha256[..12]));
        Ok(Outcome::Done(json!({
            "name": v.model,
            "version": v.version,
            "uri": format!("models:/{}/{}", v.model, v.version),
            "blessed": v.blessed,
            "sha256": v.sha256,
        })))
    }
}

pub struct Promote;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteParams {
    name: String,
    version: i64,
    #[serde(default = "production")]
    alias: String,
    #[serde(default)]
    require_blessed: bool,
    #[serde(default)]
    reason: String,
}

fn production() -> String {
    PRODUCTION.into()
}

impl Op for Promote {
    fn name(&self) -> &'static str {
        "promote"
    }
    fn params(&self) -> &'static [Param] {
        const P: &[Param] = &[
            req("name", Kind::String, "the registered model"),
            req("version", Kind::Int, "the version, e.g. ${{ tasks.register.outputs.version }}"),
            opt("alias", Kind::String, "the alias to move (default production)"),
            opt("require_blessed", Kind::Bool, "move it only if the version's evaluation blessed it"),
            opt("reason", Kind::String, "why, kept in the alias history"),
        ];
        P
    }
    fn check(&self, with: &Value) -> Vec<String> {
        match with.get("alias").and_then(Value::as_str).filter(|n| !n.contains("${{")) {
            Some(a) => registry::check_alias(a).err().map(|e| e.message).into_iter().collect(),
            None => vec![],
        }
    }

    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String> {
        let p: PromoteParams = super::decode("promote", with)?;
        let v = ctx.store.read(|c| registry::version(c, &p.name, p.version)).map_err(|e| e.message)?;
        if let Some(why) = v.not_blessed().filter(|_| p.require_blessed) {
            ctx.log.line(&format!("{} version {} stays off `{}`: {why}", p.name, p.version, p.alias));
            return Ok(Outcome::Done(json!({
                "promoted": false, "name": p.name, "alias": p.alias, "version": p.version, "why_not": why,
            })));
        }
        let reason = if p.reason.is_empty() {
            if p.require_blessed { "blessed by evaluate".to_string() } else { String::new() }
        } else {
            p.reason.clone()
        };
        let r = ctx.serving.promote(&p.name, &p.alias, p.version, &actor(ctx), &reason).map_err(|e| e.message)?;
        let from = r["from_version"].as_i64();
        ctx.log.line(&match (r["moved"].as_bool(), from) {
            (Some(false), _) => format!("{}@{} already was version {}", p.name, p.alias, p.version),
            (_, Some(f)) => format!("{}@{}: version {f} → {} (serving swapped)", p.name, p.alias, p.version),
            _ => format!("{}@{} → version {} (now serving)", p.name, p.alias, p.version),
        });
        Ok(Outcome::Done(json!({
            "promoted": true, "name": p.name, "alias": p.alias, "version": p.version, "from_version": from,
        })))
    }
}
