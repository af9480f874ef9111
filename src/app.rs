//! Wiring and lifecycle: `App::open` takes the data dir lock, opens the store, starts the engine
//! and loads the pipelines dir; `App::shutdown` stops them in reverse order. The pipeline and run
//! operations here are what the HTTP API and the CLI share.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::Config;
use crate::engine::{self, Deps, Engine};
use crate::error::{Code, Error, Result};
use crate::lock::{self, DataDirLock, LockInfo};
use crate::logs::LogHub;
use crate::ops::Registry;
use crate::pipeline::schedule::Schedule;
use crate::pipeline::{self, Plan};
use crate::store::{self, Store, pipelines, runs};

pub struct App {
    pub config: Config,
    pub store: Store,
    pub engine: Engine,
    pub logs: LogHub,
    pub ops: Registry,
    pub serving: crate::serving::Serving,
    pub search: crate::search::Search,
    pub auth: crate::auth::Auth,
    /// Held by a backup or a deletion of runs, so they never overlap.
    pub maintenance: Mutex<()>,
    /// Cancelled when the process starts shutting down: long-lived streams end on it.
    pub stopping: tokio_util::sync::CancellationToken,
    lock: Mutex<DataDirLock>,
}

/// What a pipeline upsert did.
#[derive(Debug, serde::Serialize)]
pub struct Upserted {
    pub name: String,
    pub result: pipelines::Upsert,
}

impl App {
    /// Open the data dir this process now owns. `cron`: create runs from schedules.
    pub fn open(config: Config, lock: DataDirLock, cron: bool) -> Result<App> {
        let data_dir = &config.data_dir;
        for sub in ["artifacts", "logs", "tmp"] {
            std::fs::create_dir_all(data_dir.join(sub))?;
        }
        // Work dirs of attempts that died with a previous process.
        let _ = std::fs::remove_dir_all(data_dir.join("tmp"));
        std::fs::create_dir_all(data_dir.join("tmp"))?;
        let store = Store::open(&data_dir.join("mlbox.db"))?;
        let auth = crate::auth::Auth::open(&store, config.auth, config.tls.is_some())?;
        let logs = LogHub::new(data_dir.join("logs"));
        let ops = Registry::builtin();
        let serving = crate::serving::Serving::open(
            store.clone(),
            data_dir.clone(),
            config.prediction_log_rate,
            config.prediction_log_keep,
        )?;
        // Search opens before the engine starts: if it cannot, nothing is left running.
        let search = crate::search::Search::open(
            &data_dir.join("search").join("v1"),
            crate::search::Sources { store: store.clone(), logs_dir: logs.dir().to_path_buf() },
        )?;
        let engine = Engine::start(Deps {
            store: store.clone(),
            logs: logs.clone(),
            ops: ops.clone(),
            data_dir: data_dir.clone(),
            serving: serving.clone(),
            slots: config.slots,
            cron,
        })?;
        follow(&search, &engine, &serving)?;
        // Catch up on what the index may have missed: changes in the last moments before a crash
        // or a stop, and events of the engine's first moments, before `follow` subscribed.
        let recent = store.read(|c| {
            let mut ids: Vec<i64> = runs::active(c)?.iter().map(|r| r.id).collect();
            ids.extend(runs::list(c, &runs::RunFilter { limit: 50, ..Default::default() })?.iter().map(|r| r.id));
            Ok(ids)
        })?;
        for id in recent {
            search.update(crate::search::Item::RunAll(id));
        }
        let lock = Mutex::new(lock);
        Ok(App {
            config,
            store,
            engine,
            logs,
            ops,
            serving,
            search,
            auth,
            maintenance: Mutex::new(()),
            stopping: Default::default(),
            lock,
        })
    }

    /// Tell other mlbox processes where this one listens.
    pub fn publish(&self, addr: &str, kind: &str) -> Result<()> {
        // The local token is in place before anyone learns where to send it.
        self.auth.write_local_token(&self.config.data_dir)?;
        let tls = self.config.tls.is_some() && kind == "serve";
        let info = LockInfo { pid: std::process::id(), addr: addr.to_string(), kind: kind.to_string(), tls };
        self.lock.lock().map_err(Error::internal)?.publish(&info)?;
        Ok(())
    }

    /// Load every `*.yaml`/`*.yml` in `dir`. A bad file is reported and skipped; the others load.
    pub fn load_dir(&self, dir: &Path) -> Vec<(String, Result<Upserted>)> {
        let mut files: Vec<_> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                return vec![(
                    dir.display().to_string(),
                    Err(Error::bad_request(format!("cannot read {}: {e}", dir.display()))),
                )];
            }
        };
        files.retain(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"));
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let name = p.display().to_string();
                let r = std::fs::read_to_string(&p)
                    .map_err(|e| Error::bad_request(format!("cannot read {name}: {e}")))
                    .and_then(|yaml| self.upsert_pipeline(&name, &yaml, "file"));
                (name, r)
            })
            .collect()
    }

    /// Validate a spec; the error lists every problem with its line and column.
    pub fn validate(&self, file: &str, yaml: &str) -> Result<Plan> {
        pipeline::load(file, yaml, &self.ops).map_err(|e| {
            let details = serde_json::to_value(&e.errors).unwrap_or(Value::Null);
            Error::new(Code::InvalidSpec, e.to_string())
                .with_details(serde_json::json!({"file": e.file, "errors": details}))
        })
    }

    /// Create or update a pipeline from YAML.
    pub fn upsert_pipeline(&self, file: &str, yaml: &str, source: &str) -> Result<Upserted> {
        let plan = self.validate(file, yaml)?;
        let spec = &plan.spec;
        let next_logical = first_logical(&plan, Utc::now());
        let timing = |p: &Plan| {
            (
                p.spec.schedule.as_ref().map(|s| s.0.clone()),
                p.spec.start_date.as_ref().map(|s| s.0.clone()),
                p.spec.catchup,
            )
        };
        let old = self.store.read(|c| pipelines::get(c, &spec.name))?;
        let reschedule = old.is_some_and(|o| {
            pipeline::load("old", &o.yaml, &self.ops).map(|p| timing(&p) != timing(&plan)).unwrap_or(true)
        });
        let (name, yaml, hash, desc, sched, source) = (
            spec.name.clone(),
            yaml.to_string(),
            engine::spec_hash(yaml),
            spec.description.clone(),
            spec.schedule.as_ref().map(|(s, _)| s.clone()),
            source.to_string(),
        );
        let n = name.clone();
        let result = self.store.write(move |tx| {
            let p = pipelines::NewPipeline {
                name: &n,
                yaml: &yaml,
                spec_hash: &hash,
                description: &desc,
                schedule: sched.as_deref(),
                source: &source,
                next_logical,
                reschedule,
            };
            pipelines::upsert(tx, &p, store::now_us())
        })?;
        if result != pipelines::Upsert::Unchanged {
            tracing::info!(pipeline = %name, ?result, "Pipeline saved");
            self.engine.pipelines_changed();
            self.search.update(crate::search::Item::Pipeline(name.clone()));
        }
        Ok(Upserted { name, result })
    }

    pub fn pipeline(&self, name: &str) -> Result<pipelines::PipelineRow> {
        self.store
            .read(|c| pipelines::get(c, name))?
            .ok_or_else(|| Error::not_found(format!("no pipeline named `{name}`; `mlbox pipelines list` shows them")))
    }

    pub fn set_paused(&self, name: &str, paused: bool) -> Result<()> {
        self.pipeline(name)?;
        let n = name.to_string();
        self.store.write(move |tx| pipelines::set_paused(tx, &n, paused, store::now_us()))?;
        self.engine.pipelines_changed();
        Ok(())
    }

    /// Start a run of a registered pipeline with the given params (checked against their types).
    pub fn trigger(
        &self,
        name: &str,
        given: &BTreeMap<String, Value>,
        logical_date: Option<DateTime<Utc>>,
        trigger: &str,
    ) -> Result<i64> {
        let row = self.pipeline(name)?;
        let plan = self.validate(name, &row.yaml)?;
        let params = pipeline::params::resolve(&plan.spec.params, given).map_err(Error::invalid_param)?;
        let logical = logical_date.unwrap_or_else(Utc::now).timestamp_micros();
        let id = engine::create_run(&self.store, &plan, &row.yaml, trigger, logical, params)?
            .ok_or_else(|| Error::conflict(format!("a run of `{name}` for that logical date exists already")))?;
        self.engine.start_run(id);
        Ok(id)
    }

    /// Create runs for every schedule interval with a logical date in `[from, to]`.
    pub fn backfill(&self, name: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<i64>> {
        if to < from {
            return Err(Error::bad_request("--to is before --from"));
        }
        let row = self.pipeline(name)?;
        let plan = self.validate(name, &row.yaml)?;
        let Some((sched, _)) = &plan.spec.schedule else {
            return Err(Error::bad_request(format!(
                "`{name}` has no schedule, so it has no intervals to backfill; trigger it instead"
            )));
        };
        let schedule = Schedule::parse(sched).map_err(Error::bad_request)?;
        let params = pipeline::params::resolve(&plan.spec.params, &BTreeMap::new()).map_err(Error::invalid_param)?;
        let mut dates = Vec::new();
        let mut d = schedule.first_at_or_after(from);
        while let Some(t) = d {
            if t > to || dates.len() >= 10_000 {
                break;
            }
            dates.push(t);
            d = schedule.next_after(t);
        }
        let mut ids = Vec::new();
        for t in dates {
            if let Some(id) =
                engine::create_run(&self.store, &plan, &row.yaml, "backfill", t.timestamp_micros(), params.clone())?
            {
                self.engine.start_run(id);
                ids.push(id);
            }
        }
        Ok(ids)
    }

    pub fn run(&self, id: i64) -> Result<runs::RunRow> {
        self.store
            .read(|c| runs::get(c, id))?
            .ok_or_else(|| Error::not_found(format!("no run {id}; `mlbox runs list` shows them")))
    }

    pub fn cancel(&self, id: i64) -> Result<()> {
        let run = self.run(id)?;
        if !matches!(run.state.as_str(), "queued" | "running") {
            return Err(Error::conflict(format!(
                "run {id} is {} already; only queued or running runs can be cancelled",
                run.state
            )));
        }
        self.engine.cancel(id);
        Ok(())
    }

    /// Re-run the failed and not-run tasks of a finished run, reusing successful outputs.
    pub fn resume(&self, id: i64) -> Result<usize> {
        let run = self.run(id)?;
        match run.state.as_str() {
            "failed" | "cancelled" => {}
            "success" => {
                return Err(Error::conflict(format!("run {id} succeeded; there is nothing to resume")));
            }
            s => {
                return Err(Error::conflict(format!("run {id} is {s}; resume works on failed or cancelled runs")));
            }
        }
        let plan = self.validate("run spec", &run.yaml)?;
        let retries: BTreeMap<String, u32> = plan.spec.tasks.iter().map(|t| (t.id.clone(), t.retries)).collect();
        let n =
            self.store.write(move |tx| runs::reset_for_resume(tx, id, &|t| retries.get(t).copied().unwrap_or(0)))?;
        self.engine.start_run(id);
        Ok(n)
    }

    pub fn shutdown(&self, grace: Duration) {
        self.stopping.cancel();
        self.engine.shutdown(grace);
        self.search.stop();
        self.store.close();
    }
}

/// Keep the search index current: forward the engine's state changes (a run's state, a finished
/// attempt's log) and the registry's events to the index writer. If a forwarder falls behind
/// and misses events, the index is rebuilt.
fn follow(search: &crate::search::Search, engine: &Engine, serving: &crate::serving::Serving) -> Result<()> {
    use crate::search::Item;
    use tokio::sync::broadcast::error::RecvError;
    fn forward<T: Clone + Send + 'static>(
        name: &str,
        mut rx: tokio::sync::broadcast::Receiver<T>,
        search: crate::search::Search,
        items: impl Fn(T) -> Vec<Item> + Send + 'static,
    ) -> Result<()> {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                loop {
                    match rx.blocking_recv() {
                        Ok(ev) => items(ev).into_iter().for_each(|i| search.update(i)),
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "The search index missed events; rebuilding it");
                            let _ = search.reindex();
                        }
                        Err(RecvError::Closed) => return,
                    }
                }
            })
            .map(|_| ())
            .map_err(Error::internal)
    }
    forward("search-engine", engine.subscribe(), search.clone(), |ev: engine::Event| {
        let mut items = vec![Item::Run(ev.run_id)];
        match (ev.kind, &ev.task_id, ev.try_number) {
            ("run", _, _) if matches!(ev.state, "success" | "failed" | "cancelled") => {
                items.push(Item::RunDatasets(ev.run_id))
            }
            ("task", Some(task), Some(try_number)) if !matches!(ev.state, "queued" | "running" | "scheduled") => items
                .push(Item::Log(crate::logs::LogKey {
                    run_id: ev.run_id,
                    task_id: task.clone(),
                    map_index: ev.map_index.unwrap_or(-1),
                    try_number,
                })),
            _ => {}
        }
        items
    })?;
    forward("search-registry", serving.subscribe(), search.clone(), |ev: serde_json::Value| {
        ev.get("model").and_then(|m| m.as_str()).map(|m| vec![Item::Model(m.to_string())]).unwrap_or_default()
    })
}

/// The first logical date a scheduled pipeline should run for. With catchup, the first tick at
/// or after `start_date`; without, the latest complete interval (as Airflow does), or the first
/// tick after `start_date` if that is later.
pub fn first_logical(plan: &Plan, now: DateTime<Utc>) -> Option<i64> {
    let (sched, _) = plan.spec.schedule.as_ref()?;
    let schedule = Schedule::parse(sched).ok()?;
    let start = plan.spec.start_date.as_ref().and_then(|(s, _)| pipeline::validate::parse_date(s));
    if matches!(schedule, Schedule::Once) {
        return Some(start.unwrap_or(now).timestamp_micros());
    }
    let from_start = start.and_then(|s| schedule.first_at_or_after(s));
    if plan.spec.catchup
        && let Some(s) = from_start
    {
        return Some(s.timestamp_micros());
    }
    // Latest complete interval: the tick two ticks back from now.
    let Schedule::Cron(c) = &schedule else {
        return None;
    };
    let p1 = c.find_previous_occurrence(&now, false).ok()?;
    let p0 = c.find_previous_occurrence(&p1, false).ok()?;
    match from_start {
        Some(s) if s > p0 => Some(s.timestamp_micros()),
        _ => Some(p0.timestamp_micros()),
    }
}

/// Acquire the data dir for this process, or say who holds it.
pub fn acquire(data_dir: &Path) -> Result<lock::Acquire> {
    lock::acquire(data_dir).map_err(|e| Error::bad_request(format!("cannot use data dir {}: {e}", data_dir.display())))
}
