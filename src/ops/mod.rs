//! Ops: what a task does. One trait, a registry of ops by name, and typed parameters that are
//! checked when a spec is loaded. Adding an op = one file here + one line in [`Registry::builtin`].

mod branch;
mod evaluate;
mod forecast;
mod http;
mod ingest;
mod noop;
mod predict;
mod registry;
mod sensor;
mod shell;
mod split;
mod sql;
mod train;
mod tune;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::logs::LogSink;

pub use predict::predict_frame;

/// The type of one op parameter. Template strings (`${{ }}`) are accepted for any type at load
/// time and checked again after rendering, when the op deserializes its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Int,
    Float,
    Bool,
    Duration,
    Map,
    List,
    Any,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Int => "a whole number",
            Kind::Float => "a number",
            Kind::Bool => "true or false",
            Kind::Duration => "a duration like 30s or 5m",
            Kind::Map => "a mapping",
            Kind::List => "a list",
            Kind::Any => "any value",
        }
    }

    fn accepts(self, v: &Value) -> bool {
        if let Value::String(s) = v
            && s.contains("${{")
        {
            return true;
        }
        match self {
            Kind::String => v.is_string(),
            Kind::Int => v.is_i64() || v.is_u64(),
            Kind::Float => v.is_number(),
            Kind::Bool => v.is_boolean(),
            Kind::Duration => {
                v.is_number() || v.as_str().is_some_and(|s| crate::pipeline::spec::parse_duration(s).is_some())
            }
            Kind::Map => v.is_object(),
            Kind::List => v.is_array(),
            Kind::Any => true,
        }
    }
}

/// One parameter an op takes under `with`.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub doc: &'static str,
}

pub const fn req(name: &'static str, kind: Kind, doc: &'static str) -> Param {
    Param { name, kind, required: true, doc }
}
pub const fn opt(name: &'static str, kind: Kind, doc: &'static str) -> Param {
    Param { name, kind, required: false, doc }
}

/// How an op invocation ended (errors are `Err(String)` with a message for the task log).
#[derive(Debug)]
pub enum Outcome {
    /// Finished; these are the task's outputs.
    Done(Value),
    /// A branch finished and chose these downstream tasks; the other direct downstream tasks are skipped.
    Branch { outputs: Value, follow: Vec<String> },
    /// Not yet (a sensor): release the executor slot and call again after this long.
    Poke(Duration),
}

/// Why a running task should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    TimedOut,
    Shutdown,
}

/// Shared flag the engine sets to ask a running task to stop; ops check it between steps.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    flag: Arc<AtomicU8>,
    deadline: Option<Instant>,
}

impl StopSignal {
    pub fn new(deadline: Option<Instant>) -> Self {
        StopSignal { flag: Arc::default(), deadline }
    }
    /// The same flag with an attempt's own deadline.
    pub fn with_deadline(&self, deadline: Option<Instant>) -> Self {
        StopSignal { flag: self.flag.clone(), deadline }
    }
    pub fn stop(&self, reason: StopReason) {
        let code = match reason {
            StopReason::Cancelled => 1,
            StopReason::TimedOut => 2,
            StopReason::Shutdown => 3,
        };
        let _ = self.flag.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
    }
    pub fn reason(&self) -> Option<StopReason> {
        match self.flag.load(Ordering::SeqCst) {
            1 => Some(StopReason::Cancelled),
            2 => Some(StopReason::TimedOut),
            3 => Some(StopReason::Shutdown),
            _ if self.deadline.is_some_and(|d| Instant::now() >= d) => Some(StopReason::TimedOut),
            _ => None,
        }
    }
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// Everything an op may use while it runs.
pub struct TaskContext {
    pub run_id: i64,
    pub pipeline: String,
    pub task_id: String,
    pub map_index: i64,
    pub try_number: u32,
    /// A private directory; files left here become the task's artifacts.
    pub artifacts_dir: PathBuf,
    /// A JSON file the task may write; its object becomes the task's outputs.
    pub outputs_file: PathBuf,
    /// When the first attempt of a poking op started (sensor timeouts count from here).
    pub first_poke_at: Instant,
    pub log: LogSink,
    pub stop: StopSignal,
    /// The metadata store, for ops that record what they made (dataset versions).
    pub store: crate::store::Store,
    /// Executor slots this task holds (`threads` in the spec): ops that can work in parallel use this many.
    pub threads: usize,
    /// The data dir: the content store of artifacts and datasets lives under it.
    pub data_dir: PathBuf,
    /// Model serving, for ops that move aliases (`promote`) or resolve `models:/` references.
    pub serving: crate::serving::Serving,
}

pub trait Op: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn params(&self) -> &'static [Param];
    /// Extra load-time checks on the raw `with` (templates not yet rendered).
    fn check(&self, _with: &Value) -> Vec<String> {
        Vec::new()
    }
    /// Tasks this op may choose to run (branch ops); checked to be direct downstream tasks.
    fn branch_targets(&self, _with: &Value) -> Vec<String> {
        Vec::new()
    }
    /// Whether the op needs `$MLBOX_ARTIFACTS` and `$MLBOX_OUTPUTS` (a work dir per attempt).
    fn uses_files(&self) -> bool {
        true
    }
    /// Run once with rendered parameters. Long-running ops must check `ctx.stop` regularly.
    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String>;
}

/// Deserialize rendered op parameters, with an error that names the op.
pub fn decode<T: serde::de::DeserializeOwned>(op: &str, with: &Value) -> Result<T, String> {
    serde_json::from_value(with.clone()).map_err(|e| format!("{op}: bad parameters after rendering templates: {e}"))
}

/// A model as an op parameter: a training task's output (`${{ tasks.train.outputs.model }}`) or
/// a registry reference (`models:/NAME@ALIAS`, `models:/NAME/VERSION`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum ModelArg {
    Ref(crate::train::ModelRef),
    Uri(String),
}

impl ModelArg {
    /// The model file to load. `Ok(None)`: a registry alias that no version holds yet.
    pub fn resolve(&self, ctx: &TaskContext) -> Result<Option<crate::train::ModelRef>, String> {
        let uri = match self {
            ModelArg::Ref(r) => return Ok(Some(r.clone())),
            ModelArg::Uri(s) => crate::registry::ModelUri::parse(s).map_err(|e| e.message)?,
        };
        match ctx.store.read(|c| crate::registry::resolve(c, &uri)) {
            Ok(v) => Ok(Some(crate::train::ModelRef {
                sha256: v.sha256,
                kind: v.kind,
                experiment: v.lineage["experiment"].as_i64(),
            })),
            // An alias nothing holds yet (or of a model not registered yet): absent, not an error.
            Err(e)
                if matches!(uri.selector, crate::registry::Selector::Alias(_))
                    && matches!(e.code, crate::error::Code::Unavailable | crate::error::Code::NotFound) =>
            {
                Ok(None)
            }
            Err(e) => Err(format!("{uri}: {}", e.message)),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ModelArg::Ref(r) => format!("model {}", &r.sha256[..r.sha256.len().min(12)]),
            ModelArg::Uri(s) => s.clone(),
        }
    }
}

/// The ops mlbox knows, by name.
#[derive(Clone)]
pub struct Registry {
    ops: BTreeMap<&'static str, Arc<dyn Op>>,
}

impl Registry {
    pub fn builtin() -> Registry {
        let mut r = Registry { ops: BTreeMap::new() };
        r.add(noop::Noop);
        r.add(shell::Shell);
        r.add(http::Http);
        r.add(sensor::Sensor);
        r.add(branch::Branch);
        r.add(ingest::Ingest);
        r.add(sql::Sql);
        r.add(split::Split);
        r.add(validate::Validate);
        r.add(train::Train);
        r.add(evaluate::Evaluate);
        r.add(forecast::Forecast);
        r.add(tune::Tune);
        r.add(registry::Register);
        r.add(registry::Promote);
        r.add(predict::Predict);
        r
    }

    pub fn add(&mut self, op: impl Op) {
        self.ops.insert(op.name(), Arc::new(op));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Op>> {
        self.ops.get(name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.ops.keys().copied().collect()
    }

    /// Load-time check of `with` against the op's declared parameters plus its own checks.
    pub fn check_params(&self, op: &Arc<dyn Op>, with: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        let params = op.params();
        let Some(obj) = with.as_object() else {
            return vec!["`with` must be a mapping".into()];
        };
        for (key, value) in obj {
            match params.iter().find(|p| p.name == key) {
                None => {
                    let names: Vec<&str> = params.iter().map(|p| p.name).collect();
                    errors.push(format!(
                        "unknown parameter `{key}`; {} takes: {}",
                        op.name(),
                        if names.is_empty() { "no parameters".to_string() } else { names.join(", ") }
                    ));
                }
                Some(p) if !p.kind.accepts(value) => {
                    errors.push(format!("type mismatch: `{key}` must be {}, got {value}", p.kind.name()))
                }
                Some(_) => {}
            }
        }
        for p in params.iter().filter(|p| p.required) {
            if !obj.contains_key(p.name) {
                errors.push(format!("missing parameter `{}` ({}): {}", p.name, p.kind.name(), p.doc));
            }
        }
        if errors.is_empty() {
            errors.extend(op.check(with));
        }
        errors
    }
}

/// A duration parameter: a number of seconds or a string like `30s`.
pub fn duration_param(v: Option<&Value>, default: Duration) -> Result<Duration, String> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => {
            n.as_f64().filter(|f| *f >= 0.0).map(Duration::from_secs_f64).ok_or_else(|| format!("bad duration {n}"))
        }
        Some(Value::String(s)) => {
            crate::pipeline::spec::parse_duration(s).ok_or_else(|| format!("bad duration {s:?}; use 30s, 5m, 2h"))
        }
        Some(other) => Err(format!("bad duration {other}")),
    }
}
