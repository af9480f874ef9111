//! The engine: a scheduler thread that owns the state of active runs and decides what runs
//! next, and an executor pool of worker threads that runs ops. They talk by messages; a finished
//! task wakes its dependents at once. Nothing polls SQLite for work.

mod executor;
mod scheduler;
mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

pub use state::State;

use crate::error::{Error, Result};
use crate::logs::LogHub;
use crate::ops::Registry;
use crate::pipeline::Plan;
use crate::store::{self, Store, runs};

/// A state change, broadcast to SSE clients and to the CLI following a run.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `run` or `task`.
    pub kind: &'static str,
    pub run_id: i64,
    pub pipeline: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_index: Option<i64>,
    pub state: &'static str,
    pub at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub try_number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub(crate) enum Msg {
    StartRun(i64),
    Cancel(i64),
    PipelinesChanged,
    Report(executor::Report),
    Shutdown(Duration),
}

/// What the engine needs from the app.
#[derive(Clone)]
pub struct Deps {
    pub store: Store,
    pub logs: LogHub,
    pub ops: Registry,
    pub data_dir: PathBuf,
    /// Served models: `register`/`promote` ops move aliases through it, so serving follows.
    pub serving: crate::serving::Serving,
    /// Executor slots (default: number of cores).
    pub slots: usize,
    /// A long-lived owner (`serve`): create runs from schedules and pick up runs an earlier
    /// process left active. Off for one-shot CLI commands.
    pub cron: bool,
}

pub struct Engine {
    tx: mpsc::Sender<Msg>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    events: broadcast::Sender<Event>,
}

impl Engine {
    /// Recover from an unclean stop, then start the scheduler and executor threads.
    pub fn start(deps: Deps) -> Result<Engine> {
        let recovered = deps.store.write(|tx| runs::recover_interrupted(tx, store::now_us()))?;
        if recovered > 0 {
            tracing::warn!(recovered, "Recovered task attempts interrupted by an unclean stop");
        }
        let (events, _) = broadcast::channel(8192);
        let (tx, rx) = mpsc::channel();
        let sched = scheduler::Scheduler::new(deps, tx.clone(), rx, events.clone())?;
        let thread = std::thread::Builder::new()
            .name("mlbox-scheduler".into())
            .spawn(move || sched.run())
            .map_err(Error::internal)?;
        Ok(Engine { tx, thread: Mutex::new(Some(thread)), events })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// A run was created or made runnable again.
    pub fn start_run(&self, id: i64) {
        let _ = self.tx.send(Msg::StartRun(id));
    }

    pub fn cancel(&self, id: i64) {
        let _ = self.tx.send(Msg::Cancel(id));
    }

    /// Pipelines were added, changed, paused or unpaused: recompute schedules.
    pub fn pipelines_changed(&self) {
        let _ = self.tx.send(Msg::PipelinesChanged);
    }

    /// Stop starting tasks, give running ones `grace` to finish, stop the rest, save state.
    pub fn shutdown(&self, grace: Duration) {
        let _ = self.tx.send(Msg::Shutdown(grace));
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

/// Create a queued run of `plan` (its YAML and hash recorded so the run keeps the spec it began
/// with). Returns `None` when a scheduled/backfill run for that logical date exists already.
pub fn create_run(
    store: &Store,
    plan: &Plan,
    yaml: &str,
    trigger: &str,
    logical_date: i64,
    params: BTreeMap<String, Value>,
) -> Result<Option<i64>> {
    let tasks: Vec<(String, u32)> = plan.spec.tasks.iter().map(|t| (t.id.clone(), t.retries + 1)).collect();
    let pipeline = plan.spec.name.clone();
    let yaml = yaml.to_string();
    let hash = spec_hash(&yaml);
    let trigger = trigger.to_string();
    let params = json!(params);
    store.write(move |tx| {
        let new = runs::NewRun {
            pipeline: &pipeline,
            trigger: &trigger,
            logical_date,
            params: &params,
            yaml: &yaml,
            spec_hash: &hash,
            tasks,
        };
        runs::create(tx, &new, store::now_us())
    })
}

/// The content hash of a pipeline's YAML (first 16 hex digits of its SHA-256).
pub fn spec_hash(yaml: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(yaml.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
