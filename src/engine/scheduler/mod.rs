//! The scheduler thread: owns every active run's task states, decides what runs next by trigger
//! rules, keeps one timer heap (retries, sensor pokes, cron ticks), and starts queued runs within
//! `max_active_runs`. It sleeps until a message or the next timer: no polling loop.

mod cron;
mod foreach;
mod stop;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::executor::{Executor, Job, Report};
use super::state::{Decision, State, decide};
use super::{Deps, Event, Msg};
use crate::error::Result;
use crate::ops::StopSignal;
use crate::pipeline::template::Context;
use crate::pipeline::{self, Plan};
use crate::store::{self, runs};

struct Unit {
    ti: i64,
    map_index: i64,
    state: State,
    try_number: u32,
    max_tries: u32,
    outputs: Option<Value>,
    item: Option<Value>,
    /// Submitted to the executor and not yet reported back.
    in_flight: bool,
    /// When a retry (µs) is due, as stored.
    next_try_at: Option<i64>,
    stop: StopSignal,
    first_poke_at: Option<Instant>,
}

impl Unit {
    fn from_row(r: &runs::TaskRow) -> Unit {
        // A sensor waiting between pokes is `running` with a next poke time; its timeout counts
        // from when its first poke started.
        let first_poke_at = (r.state == "running" && r.next_try_at.is_some())
            .then(|| r.started_at.map(|s| Duration::from_micros((store::now_us() - s).max(0) as u64)))
            .flatten()
            .and_then(|ago| Instant::now().checked_sub(ago));
        Unit {
            ti: r.id,
            map_index: r.map_index,
            state: State::parse(&r.state),
            try_number: r.try_number,
            max_tries: r.max_tries,
            outputs: r.outputs.clone(),
            item: r.item.clone(),
            in_flight: false,
            next_try_at: r.next_try_at,
            stop: StopSignal::default(),
            first_poke_at,
        }
    }
}

struct Node {
    main: Unit,
    items: Vec<Unit>,
    expanded: bool,
}

struct RunState {
    pipeline: String,
    plan: Arc<Plan>,
    ctx: Context,
    nodes: Vec<Node>,
    cancelling: bool,
    started: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Re-queue a unit (retry or sensor poke): run, task index, map index.
    Unit(i64, usize, i64),
    Cron,
}

pub(crate) struct Scheduler {
    deps: Deps,
    rx: mpsc::Receiver<Msg>,
    events: broadcast::Sender<Event>,
    executor: Executor,
    runs: HashMap<i64, RunState>,
    /// Runs created but held back by `max_active_runs`, per pipeline, oldest first.
    waiting: HashMap<String, VecDeque<i64>>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    plans: HashMap<String, Arc<Plan>>,
    cron: HashMap<String, cron::CronEntry>,
    draining: Option<Instant>,
}

fn us_to_dt(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

impl Scheduler {
    pub fn new(
        deps: Deps,
        tx: mpsc::Sender<Msg>,
        rx: mpsc::Receiver<Msg>,
        events: broadcast::Sender<Event>,
    ) -> Result<Scheduler> {
        let executor = Executor::start(&deps, tx, events.clone());
        let mut s = Scheduler {
            deps,
            rx,
            events,
            executor,
            runs: HashMap::new(),
            waiting: HashMap::new(),
            timers: BinaryHeap::new(),
            plans: HashMap::new(),
            cron: HashMap::new(),
            draining: None,
        };
        // Only a long-lived owner picks up runs an earlier process left active; a one-shot CLI
        // command must not start unrelated work.
        if s.deps.cron {
            let active = s.deps.store.read(runs::active)?;
            for run in active {
                s.start_run(run.id);
            }
        }
        s.reload_cron();
        Ok(s)
    }

    pub fn run(mut self) {
        loop {
            let msg = match self.timers.peek() {
                Some(Reverse((at, _))) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    match self.rx.recv_timeout(wait) {
                        Ok(m) => Some(m),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match self.rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                },
            };
            // Due timers fire after every message as well, so a busy channel cannot starve them.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let stop = msg.is_some_and(|m| self.handle(m));
                if !stop {
                    self.fire_timers();
                }
                stop
            }));
            match outcome {
                Ok(true) => break,
                Ok(false) => {}
                Err(_) => {
                    tracing::error!("The scheduler hit a bug handling a message; it keeps going")
                }
            }
        }
        let executor = self.executor;
        executor.close();
        executor.join();
    }

    /// Returns true when the scheduler should stop.
    fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::StartRun(id) => self.start_run(id),
            Msg::Cancel(id) => self.cancel(id),
            Msg::PipelinesChanged => self.reload_cron(),
            Msg::Report(r) => self.on_report(r),
            Msg::Shutdown(grace) => return self.shutdown(grace),
        }
        false
    }

    fn emit_run(&self, run_id: i64, pipeline: &str, state: &'static str, error: Option<String>) {
        let _ = self.events.send(Event {
            kind: "run",
            run_id,
            pipeline: pipeline.to_string(),
            task_id: None,
            map_index: None,
            state,
            at: store::now_us(),
            try_number: None,
            duration_ms: None,
            error,
        });
    }

    fn plan_for(&mut self, yaml: &str, hash: &str) -> std::result::Result<Arc<Plan>, String> {
        if let Some(p) = self.plans.get(hash) {
            return Ok(p.clone());
        }
        let plan = Arc::new(pipeline::load("run spec", yaml, &self.deps.ops).map_err(|e| e.to_string())?);
        self.plans.insert(hash.to_string(), plan.clone());
        Ok(plan)
    }

    // ---- runs -------------------------------------------------------------------------------

    fn start_run(&mut self, id: i64) {
        if self.draining.is_some() || self.runs.contains_key(&id) {
            return;
        }
        let loaded = self.deps.store.read(|c| Ok((runs::get(c, id)?, runs::tasks(c, id)?)));
        let (run, rows) = match loaded {
            Ok((Some(run), rows)) => (run, rows),
            Ok((None, _)) => return,
            Err(e) => {
                tracing::error!(run = id, error = %e, "Cannot load a run");
                return;
            }
        };
        if !matches!(run.state.as_str(), "queued" | "running") {
            return;
        }
        let plan = match self.plan_for(&run.yaml, &run.spec_hash) {
            Ok(p) => p,
            Err(e) => {
                self.fail_run_now(id, &run.pipeline, &format!("the run's pipeline spec no longer loads: {e}"));
                return;
            }
        };
        let active = self.runs.values().filter(|r| r.pipeline == run.pipeline).count();
        if run.state == "queued" && active >= plan.spec.max_active_runs as usize {
            let q = self.waiting.entry(run.pipeline.clone()).or_default();
            if !q.contains(&id) {
                q.push_back(id);
            }
            return;
        }
        let mut nodes: Vec<Node> = Vec::with_capacity(plan.spec.tasks.len());
        let mut by_task: HashMap<&str, (Option<runs::TaskRow>, Vec<runs::TaskRow>)> = HashMap::new();
        for r in &rows {
            let e = by_task.entry(r.task_id.as_str()).or_default();
            if r.map_index < 0 { e.0 = Some(r.clone()) } else { e.1.push(r.clone()) }
        }
        for t in &plan.spec.tasks {
            let Some((Some(main), items)) = by_task.remove(t.id.as_str()) else {
                self.fail_run_now(id, &run.pipeline, &format!("task `{}` has no instance in the store", t.id));
                return;
            };
            let mut items: Vec<Unit> = items.iter().map(Unit::from_row).collect();
            items.sort_by_key(|u| u.map_index);
            nodes.push(Node { expanded: !items.is_empty(), main: Unit::from_row(&main), items });
        }
        let params: BTreeMap<String, Value> = serde_json::from_value(run.params.clone()).unwrap_or_default();
        let logical = us_to_dt(run.logical_date);
        let mut ctx = Context { params, ..Default::default() };
        ctx.run.insert("id".into(), json!(run.id));
        ctx.run.insert("pipeline".into(), json!(run.pipeline));
        ctx.run.insert("logical_date".into(), json!(logical.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
        ctx.run.insert("ds".into(), json!(logical.format("%Y-%m-%d").to_string()));
        for (i, n) in nodes.iter().enumerate() {
            if n.main.state == State::Success {
                ctx.outputs.insert(plan.spec.tasks[i].id.clone(), n.main.outputs.clone().unwrap_or(json!({})));
            }
        }
        let now = store::now_us();
        if run.state == "queued" {
            self.deps.store.write_nowait(move |tx| runs::set_run_state(tx, id, "running", now, None));
            self.emit_run(id, &run.pipeline, "running", None);
        }
        let mut rs =
            RunState { pipeline: run.pipeline.clone(), plan, ctx, nodes, cancelling: false, started: Instant::now() };
        // Re-dispatch what a previous process left queued, and re-arm retries.
        let mut requeue = Vec::new();
        for (i, n) in rs.nodes.iter_mut().enumerate() {
            let parent_running = n.expanded && n.main.state == State::Running;
            let units: Vec<&mut Unit> = if n.expanded { n.items.iter_mut().collect() } else { vec![&mut n.main] };
            for u in units {
                match u.state {
                    State::Queued => requeue.push((i, u.map_index)),
                    State::Pending if parent_running => requeue.push((i, u.map_index)),
                    State::Running if u.first_poke_at.is_some() => {
                        self.timers.push(Reverse((Instant::now(), Timer::Unit(id, i, u.map_index))));
                    }
                    State::UpForRetry => {
                        let wait = u.next_try_at.map_or(0, |t| (t - store::now_us()).max(0));
                        let at = Instant::now() + Duration::from_micros(wait as u64);
                        self.timers.push(Reverse((at, Timer::Unit(id, i, u.map_index))));
                    }
                    _ => {}
                }
            }
        }
        let expanded: Vec<usize> = rs.nodes.iter().enumerate().filter(|(_, n)| n.expanded).map(|(i, _)| i).collect();
        self.runs.insert(id, rs);
        for (i, m) in requeue {
            self.queue_unit(id, i, m);
        }
        // A crash can fall between the last item's write and its parent's: settle parents now.
        for i in expanded {
            self.aggregate(id, i);
        }
        self.advance(id);
    }

    fn fail_run_now(&mut self, id: i64, pipeline: &str, error: &str) {
        tracing::error!(run = id, error, "Run failed before it started");
        let (now, err) = (store::now_us(), error.to_string());
        let _ = self.deps.store.write(move |tx| runs::set_run_state(tx, id, "failed", now, Some(&err)));
        self.emit_run(id, pipeline, "failed", Some(error.to_string()));
    }

    fn set_unit(
        &mut self,
        run_id: i64,
        idx: usize,
        map_index: i64,
        state: State,
        outputs: Option<Value>,
        error: Option<String>,
    ) {
        let Some(run) = self.runs.get_mut(&run_id) else {
            return;
        };
        let node = &mut run.nodes[idx];
        let expanded_parent = map_index < 0 && node.expanded;
        let unit = if map_index < 0 { &mut node.main } else { &mut node.items[map_index as usize] };
        // A sensor between pokes has an open attempt; ending the unit here must close it too.
        let open_attempt =
            (unit.state == State::Running && !expanded_parent && state.is_terminal()).then_some(unit.try_number);
        unit.state = state;
        let ti = unit.ti;
        let now = store::now_us();
        let text = outputs.as_ref().map(Value::to_string);
        if let Some(o) = &outputs {
            unit.outputs = Some(o.clone());
        }
        let err = error.clone();
        self.deps.store.write_nowait(move |tx| {
            runs::update_ti(
                tx,
                ti,
                &runs::TiUpdate {
                    state: state.as_str(),
                    finished_at: state.is_terminal().then_some(now),
                    outputs: text,
                    error: err,
                    started_at: (state == State::Running).then_some(now),
                    ..Default::default()
                },
            )?;
            match open_attempt {
                Some(t) => runs::finish_attempt(tx, ti, t, state.as_str(), now, None),
                None => Ok(()),
            }
        });
        if map_index < 0 && state == State::Success {
            let id = run.plan.spec.tasks[idx].id.clone();
            run.ctx.outputs.insert(id, outputs.unwrap_or(json!({})));
        }
        let task_id = run.plan.spec.tasks[idx].id.clone();
        let _ = self.events.send(Event {
            kind: "task",
            run_id,
            pipeline: run.pipeline.clone(),
            task_id: Some(task_id),
            map_index: (map_index >= 0).then_some(map_index),
            state: state.as_str(),
            at: now,
            try_number: None,
            duration_ms: None,
            error,
        });
    }

    /// Move every pending task whose upstream allows it, in topological order, then finish the
    /// run if nothing is left.
    fn advance(&mut self, run_id: i64) {
        let Some(run) = self.runs.get(&run_id) else {
            return;
        };
        let plan = run.plan.clone();
        if !run.cancelling && self.draining.is_none() {
            for &i in &plan.topo {
                // A nested change (a template error failing a task) can finish the run mid-loop.
                let Some(run) = self.runs.get(&run_id) else {
                    return;
                };
                if run.nodes[i].main.state != State::Pending {
                    continue;
                }
                let task = &plan.spec.tasks[i];
                let skipped_by_branch = plan.upstream[i].iter().any(|&u| {
                    let n = &run.nodes[u];
                    n.main.state == State::Success
                        && n.main.outputs.as_ref().and_then(|o| o.get("follow")).and_then(Value::as_array).is_some_and(
                            |f| {
                                plan.spec.tasks[u].op == "branch"
                                    && !f.iter().any(|x| x.as_str() == Some(task.id.as_str()))
                            },
                        )
                });
                let decision = if skipped_by_branch {
                    Decision::Skip
                } else {
                    let ups: Vec<State> = plan.upstream[i].iter().map(|&u| run.nodes[u].main.state).collect();
                    decide(task.trigger_rule, &ups)
                };
                match decision {
                    Decision::Wait => {}
                    Decision::Skip => self.set_unit(run_id, i, -1, State::Skipped, None, None),
                    Decision::UpstreamFailed => self.set_unit(run_id, i, -1, State::UpstreamFailed, None, None),
                    Decision::Run => self.start_task(run_id, i),
                }
            }
        }
        self.maybe_finish(run_id);
    }

    fn queue_unit(&mut self, run_id: i64, idx: usize, map_index: i64) {
        let ops = self.deps.ops.clone();
        let Some(run) = self.runs.get_mut(&run_id) else {
            return;
        };
        let task = &run.plan.spec.tasks[idx];
        let node = &mut run.nodes[idx];
        let unit = if map_index < 0 { &mut node.main } else { &mut node.items[map_index as usize] };
        let mut ctx = run.ctx.clone();
        ctx.item = unit.item.clone();
        let with = match ctx.render(&task.with) {
            Ok(w) => w,
            Err(e) => {
                let msg = format!("template: {e}");
                self.set_unit(run_id, idx, map_index, State::Failed, None, Some(msg));
                self.after_unit_change(run_id, idx, map_index);
                return;
            }
        };
        let Some(op) = ops.get(&task.op).cloned() else {
            return;
        };
        let poke = unit.state == State::Running && unit.first_poke_at.is_some();
        if !poke {
            unit.try_number += 1;
            unit.state = State::Queued;
            let (ti, now) = (unit.ti, store::now_us());
            self.deps.store.write_nowait(move |tx| {
                runs::update_ti(tx, ti, &runs::TiUpdate { state: "queued", queued_at: Some(now), ..Default::default() })
            });
        }
        unit.in_flight = true;
        let first_poke_at = *unit.first_poke_at.get_or_insert_with(Instant::now);
        let stop = unit.stop.clone();
        let job = Job {
            run_id,
            pipeline: run.pipeline.clone(),
            task_idx: idx,
            task_id: task.id.clone(),
            map_index,
            ti: unit.ti,
            try_number: unit.try_number,
            max_tries: unit.max_tries,
            poke,
            first_poke_at,
            op,
            with,
            threads: task.threads as usize,
            timeout: task.timeout,
            retry_delay: task.retry_delay,
            max_retry_delay: task.max_retry_delay,
            stop,
        };
        self.executor.submit(job);
    }

    fn on_report(&mut self, r: Report) {
        let Some(run) = self.runs.get_mut(&r.run_id) else {
            return;
        };
        let node = &mut run.nodes[r.task_idx];
        let unit = if r.map_index < 0 { &mut node.main } else { &mut node.items[r.map_index as usize] };
        unit.in_flight = false;
        unit.state = r.state;
        unit.try_number = r.try_number;
        if let Some(o) = &r.outputs {
            unit.outputs = Some(o.clone());
        }
        if run.cancelling && matches!(r.state, State::Running | State::UpForRetry) {
            // The cancel came while this attempt was finishing: it must not poke or retry again.
            self.set_unit(r.run_id, r.task_idx, r.map_index, State::Cancelled, None, Some("cancelled".into()));
            self.after_unit_change(r.run_id, r.task_idx, r.map_index);
            return;
        }
        match r.state {
            State::Running => {
                if let Some(after) = r.poke_after {
                    unit.first_poke_at = Some(r.first_poke_at);
                    self.timers.push(Reverse((Instant::now() + after, Timer::Unit(r.run_id, r.task_idx, r.map_index))));
                }
                return;
            }
            State::UpForRetry => {
                unit.first_poke_at = None;
                if let Some(at) = r.retry_at {
                    self.timers.push(Reverse((at, Timer::Unit(r.run_id, r.task_idx, r.map_index))));
                }
                return;
            }
            State::Queued => return, // interrupted by shutdown; picked up at the next start
            State::Success if r.map_index < 0 => {
                let id = run.plan.spec.tasks[r.task_idx].id.clone();
                run.ctx.outputs.insert(id, r.outputs.unwrap_or(json!({})));
            }
            _ => {}
        }
        self.after_unit_change(r.run_id, r.task_idx, r.map_index);
    }

    fn after_unit_change(&mut self, run_id: i64, idx: usize, map_index: i64) {
        if map_index >= 0 {
            self.aggregate(run_id, idx);
        }
        self.advance(run_id);
    }

    fn maybe_finish(&mut self, run_id: i64) {
        let Some(run) = self.runs.get(&run_id) else {
            return;
        };
        let all_done = run.nodes.iter().all(|n| n.main.state.is_terminal() && n.items.iter().all(|u| !u.in_flight));
        if !all_done {
            return;
        }
        let states: Vec<State> = run.nodes.iter().map(|n| n.main.state).collect();
        let state = if run.cancelling {
            "cancelled"
        } else if states.iter().all(|s| matches!(s, State::Success | State::Skipped)) {
            "success"
        } else {
            "failed"
        };
        let failed: Vec<&str> = run
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.main.state == State::Failed)
            .map(|(i, _)| run.plan.spec.tasks[i].id.as_str())
            .collect();
        let error = (!failed.is_empty()).then(|| format!("failed tasks: {}", failed.join(", ")));
        let (pipeline, elapsed) = (run.pipeline.clone(), run.started.elapsed());
        let now = store::now_us();
        let err = error.clone();
        // Waited on: when the run is reported finished, every state change before it is durable.
        if let Err(e) = self.deps.store.write(move |tx| runs::set_run_state(tx, run_id, state, now, err.as_deref())) {
            tracing::error!(run = run_id, error = %e, "Cannot record the end of a run");
        }
        tracing::info!(run = run_id, pipeline = %pipeline, state, elapsed_ms = elapsed.as_millis() as u64, "Run finished");
        self.runs.remove(&run_id);
        self.emit_run(run_id, &pipeline, state, error);
        if let Some(next) = self.waiting.get_mut(&pipeline).and_then(VecDeque::pop_front) {
            self.start_run(next);
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Cron => self.cron_tick(),
                Timer::Unit(run_id, idx, map_index) => {
                    let Some(run) = self.runs.get(&run_id) else {
                        continue;
                    };
                    if run.cancelling || self.draining.is_some() {
                        continue;
                    }
                    let n = &run.nodes[idx];
                    let u = if map_index < 0 { &n.main } else { &n.items[map_index as usize] };
                    if !u.in_flight && matches!(u.state, State::UpForRetry | State::Running) {
                        self.queue_unit(run_id, idx, map_index);
                    }
                }
            }
        }
    }
}
