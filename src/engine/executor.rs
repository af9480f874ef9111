//! The executor: a bounded pool of worker threads, apart from tokio, so CPU-heavy tasks never
//! stall HTTP. A task takes `threads` slots; a worker records the attempt, runs the op, saves
//! outputs and artifacts, and reports back to the scheduler.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::broadcast;

use super::{Deps, Event, Msg, State};
use crate::artifacts;
use crate::logs::LogKey;
use crate::ops::{Op, Outcome, StopReason, StopSignal, TaskContext};
use crate::store::{self, runs};

/// Outputs above this size fail the task: large data belongs in artifacts.
pub const MAX_OUTPUTS: usize = 64 * 1024;

pub(crate) struct Job {
    pub run_id: i64,
    pub pipeline: String,
    pub task_idx: usize,
    pub task_id: String,
    pub map_index: i64,
    pub ti: i64,
    /// The attempt number this job is (1-based).
    pub try_number: u32,
    pub max_tries: u32,
    /// A repeated sensor poke: the attempt is already recorded as running.
    pub poke: bool,
    pub first_poke_at: Instant,
    pub op: Arc<dyn Op>,
    pub with: Value,
    pub threads: usize,
    pub timeout: Option<Duration>,
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    pub stop: StopSignal,
}

/// What happened to a job, for the scheduler.
pub(crate) struct Report {
    pub run_id: i64,
    pub task_idx: usize,
    pub map_index: i64,
    pub state: State,
    pub try_number: u32,
    pub outputs: Option<Value>,
    pub follow: Option<Vec<String>>,
    pub retry_at: Option<Instant>,
    pub poke_after: Option<Duration>,
    pub first_poke_at: Instant,
}

struct Queue {
    jobs: VecDeque<Job>,
    free: usize,
    closed: bool,
}

struct Shared {
    q: Mutex<Queue>,
    cv: Condvar,
}

pub(crate) struct Executor {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub slots: usize,
}

impl Executor {
    pub fn start(deps: &Deps, reply: mpsc::Sender<Msg>, events: broadcast::Sender<Event>) -> Executor {
        let slots = deps.slots.max(1);
        let shared = Arc::new(Shared {
            q: Mutex::new(Queue { jobs: VecDeque::new(), free: slots, closed: false }),
            cv: Condvar::new(),
        });
        let threads = (0..slots)
            .map(|i| {
                let shared = shared.clone();
                let deps = deps.clone();
                let reply = reply.clone();
                let events = events.clone();
                std::thread::Builder::new()
                    .name(format!("mlbox-worker-{i}"))
                    .spawn(move || worker(shared, deps, reply, events))
                    .expect("spawning a worker thread")
            })
            .collect();
        Executor { shared, threads, slots }
    }

    pub fn submit(&self, mut job: Job) {
        job.threads = job.threads.clamp(1, self.slots);
        if let Ok(mut q) = self.shared.q.lock() {
            q.jobs.push_back(job);
        }
        self.shared.cv.notify_all();
    }

    /// Take the not-yet-started jobs of one run out of the queue.
    pub fn take_run(&self, run_id: i64) -> Vec<Job> {
        let Ok(mut q) = self.shared.q.lock() else { return Vec::new() };
        let (taken, kept): (Vec<Job>, Vec<Job>) = q.jobs.drain(..).partition(|j| j.run_id == run_id);
        q.jobs = kept.into();
        taken
    }

    /// Drop jobs not yet started (their instances stay `queued` in the store) and stop the
    /// workers once they finish what they are running.
    pub fn close(&self) -> Vec<Job> {
        let dropped = match self.shared.q.lock() {
            Ok(mut q) => {
                q.closed = true;
                q.jobs.drain(..).collect()
            }
            Err(_) => Vec::new(),
        };
        self.shared.cv.notify_all();
        dropped
    }

    /// Wait for the workers, but not forever: one stuck in an op that ignores its stop signal is
    /// left behind (the process is exiting; recovery handles its attempt at the next start).
    pub fn join(self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for t in self.threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("A worker thread is still busy at exit; leaving it");
            }
        }
    }
}

fn worker(shared: Arc<Shared>, deps: Deps, reply: mpsc::Sender<Msg>, events: broadcast::Sender<Event>) {
    loop {
        let job = {
            let Ok(mut q) = shared.q.lock() else { return };
            loop {
                if q.closed {
                    return;
                }
                // Head of line first, so a task wanting many slots is not starved by small ones.
                if let Some(front) = q.jobs.front()
                    && front.threads <= q.free
                {
                    let job = q.jobs.pop_front().expect("front exists");
                    q.free -= job.threads;
                    crate::metrics::get().busy.fetch_add(job.threads, std::sync::atomic::Ordering::Relaxed);
                    break job;
                }
                q = match shared.cv.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
        };
        let threads = job.threads;
        let report = run_job(job, &deps, &events);
        if let Ok(mut q) = shared.q.lock() {
            q.free += threads;
            crate::metrics::get().busy.fetch_sub(threads, std::sync::atomic::Ordering::Relaxed);
        }
        shared.cv.notify_all();
        if reply.send(Msg::Report(report)).is_err() {
            return;
        }
    }
}

fn event(job: &Job, state: State, at: i64, duration_ms: Option<f64>, error: Option<String>) -> Event {
    if let Some(ms) = duration_ms {
        crate::metrics::get().task_finished(&job.pipeline, state.as_str(), ms / 1e3);
    }
    Event {
        kind: "task",
        run_id: job.run_id,
        pipeline: job.pipeline.clone(),
        task_id: Some(job.task_id.clone()),
        map_index: (job.map_index >= 0).then_some(job.map_index),
        state: state.as_str(),
        at,
        try_number: Some(job.try_number),
        duration_ms,
        error,
    }
}

fn retry_delay(job: &Job) -> Duration {
    let factor = 2u32.saturating_pow(job.try_number.saturating_sub(1).min(20));
    job.retry_delay.saturating_mul(factor).min(job.max_retry_delay)
}

fn run_job(job: Job, deps: &Deps, events: &broadcast::Sender<Event>) -> Report {
    let started = Instant::now();
    let started_us = store::now_us();
    let mut report = Report {
        run_id: job.run_id,
        task_idx: job.task_idx,
        map_index: job.map_index,
        state: State::Running,
        try_number: job.try_number,
        outputs: None,
        follow: None,
        retry_at: None,
        poke_after: None,
        first_poke_at: job.first_poke_at,
    };
    // Cancelled while it waited in the queue: never start it.
    if job.stop.reason() == Some(StopReason::Cancelled) {
        report.state = State::Cancelled;
        // The try was counted when it was queued; a poke never counts one.
        report.try_number = if job.poke { job.try_number } else { job.try_number.saturating_sub(1) };
        let (ti, poke, try_number) = (job.ti, job.poke, job.try_number);
        let _ = deps.store.write(move |tx| {
            let update = runs::TiUpdate { state: "cancelled", finished_at: Some(started_us), ..Default::default() };
            runs::update_ti(tx, ti, &update)?;
            // A sensor between pokes has an open attempt to close.
            match poke {
                true => runs::finish_attempt(tx, ti, try_number, "cancelled", started_us, None),
                false => Ok(()),
            }
        });
        let _ = events.send(event(&job, State::Cancelled, started_us, None, None));
        return report;
    }
    // Same flag as the scheduler holds (cancel, shutdown), plus this attempt's deadline.
    // A sensor's task timeout counts from its first poke, not from each poke.
    let since = if job.poke { job.first_poke_at } else { started };
    let stop = job.stop.with_deadline(job.timeout.map(|t| since + t));

    let key = LogKey {
        run_id: job.run_id,
        task_id: job.task_id.clone(),
        map_index: job.map_index,
        try_number: job.try_number,
    };
    if !job.poke {
        let (ti, try_number) = (job.ti, job.try_number);
        deps.store.write_nowait(move |tx| {
            runs::update_ti(
                tx,
                ti,
                &runs::TiUpdate {
                    state: "running",
                    try_number: Some(try_number),
                    started_at: Some(started_us),
                    ..Default::default()
                },
            )?;
            runs::start_attempt(tx, ti, try_number, started_us)
        });
        let _ = events.send(event(&job, State::Running, started_us, None, None));
    }
    let work = deps
        .data_dir
        .join("tmp")
        .join(format!("run-{}", job.run_id))
        .join(format!("ti-{}-try-{}", job.ti, job.try_number));
    let log = deps.logs.sink(key);
    let artifacts_dir = work.join("artifacts");
    // Only ops that run programs get a work dir; the rest (noop, branch) skip the file system.
    if job.op.uses_files()
        && let Err(e) = std::fs::create_dir_all(&artifacts_dir)
    {
        let err = Err(format!("cannot create the artifacts dir: {e}"));
        return finish(job, deps, events, report, started, err, true);
    }
    let ctx = TaskContext {
        run_id: job.run_id,
        pipeline: job.pipeline.clone(),
        task_id: job.task_id.clone(),
        map_index: job.map_index,
        try_number: job.try_number,
        artifacts_dir: artifacts_dir.clone(),
        outputs_file: work.join("outputs.json"),
        first_poke_at: job.first_poke_at,
        log: log.clone(),
        stop: stop.clone(),
        store: deps.store.clone(),
        data_dir: deps.data_dir.clone(),
        serving: deps.serving.clone(),
        threads: job.threads,
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.op.run(&ctx, &job.with)))
        .unwrap_or_else(|_| Err("the op panicked (a bug in mlbox: please report it)".into()));
    let result = match (result, stop.reason()) {
        (Err(e), Some(StopReason::TimedOut)) => {
            Err(format!("timed out after {:?}: {e}", job.timeout.unwrap_or_default()))
        }
        (r, _) => r,
    };
    // Outputs over the limit fail the same way on every try: retrying them is pointless.
    let retryable = match &result {
        Ok(Outcome::Done(o) | Outcome::Branch { outputs: o, .. }) => o.to_string().len() <= MAX_OUTPUTS,
        _ => true,
    };
    let result = result.and_then(|outcome| match outcome {
        Outcome::Done(outputs) => save_outputs(&job, deps, &artifacts_dir, outputs).map(|o| (o, None, None)),
        Outcome::Branch { outputs, follow } => {
            save_outputs(&job, deps, &artifacts_dir, outputs).map(|o| (o, Some(follow), None))
        }
        Outcome::Poke(_) if stop.reason() == Some(StopReason::TimedOut) => {
            Err(format!("timed out after {:?} waiting", job.timeout.unwrap_or_default()))
        }
        Outcome::Poke(after) => Ok((Value::Null, None, Some(after))),
    });
    let poking = matches!(result, Ok((_, _, Some(_))));
    if let Err(e) = &result {
        log.line(&format!("mlbox: task failed: {e}"));
    }
    if !poking {
        log.finish();
    }
    if job.op.uses_files() {
        let _ = std::fs::remove_dir_all(&work);
    }
    finish(job, deps, events, report_with_stop(report, &stop), started, result, retryable)
}

fn report_with_stop(mut r: Report, stop: &StopSignal) -> Report {
    if let Some(reason) = stop.reason() {
        r.state = match reason {
            StopReason::Cancelled => State::Cancelled,
            StopReason::Shutdown => State::Queued,
            StopReason::TimedOut => State::Running,
        };
    }
    r
}

type Result3 = Result<(Value, Option<Vec<String>>, Option<Duration>), String>;

fn save_outputs(job: &Job, deps: &Deps, artifacts_dir: &std::path::Path, outputs: Value) -> Result<Value, String> {
    let size = outputs.to_string().len();
    if size > MAX_OUTPUTS {
        return Err(format!(
            "outputs are {size} bytes; the limit is {MAX_OUTPUTS} (64 KiB): write large data as files to $MLBOX_ARTIFACTS instead"
        ));
    }
    let _storing = artifacts::STORE_LOCK.read().map_err(|e| e.to_string())?;
    let files =
        artifacts::collect(artifacts_dir, &deps.data_dir).map_err(|e| format!("saving artifacts failed: {e}"))?;
    if !files.is_empty() {
        let (run, task, map) = (job.run_id, job.task_id.clone(), job.map_index);
        deps.store
            .write(move |tx| {
                let now = store::now_us();
                for f in &files {
                    runs::add_artifact(tx, run, &task, map, f, now)?;
                }
                Ok(())
            })
            .map_err(|e| e.message)?;
    }
    Ok(outputs)
}

fn finish(
    job: Job,
    deps: &Deps,
    events: &broadcast::Sender<Event>,
    mut report: Report,
    started: Instant,
    result: Result3,
    retryable: bool,
) -> Report {
    let now = store::now_us();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let (ti, try_number, max_tries) = (job.ti, job.try_number, job.max_tries);
    match result {
        Ok((_, _, Some(after))) => {
            report.state = State::Running;
            report.poke_after = Some(after);
            // Durable "waiting between pokes", so a restart re-arms the poke instead of failing it.
            let next = now + after.as_micros() as i64;
            deps.store.write_nowait(move |tx| {
                runs::update_ti(
                    tx,
                    ti,
                    &runs::TiUpdate { state: "running", next_try_at: Some(next), ..Default::default() },
                )
            });
            return report;
        }
        Ok((outputs, follow, None)) => {
            report.state = State::Success;
            let text = outputs.to_string();
            report.outputs = Some(outputs);
            report.follow = follow;
            deps.store.write_nowait(move |tx| {
                runs::update_ti(
                    tx,
                    ti,
                    &runs::TiUpdate {
                        state: "success",
                        finished_at: Some(now),
                        outputs: Some(text),
                        ..Default::default()
                    },
                )?;
                runs::finish_attempt(tx, ti, try_number, "success", now, None)
            });
            let _ = events.send(event(&job, State::Success, now, Some(ms), None));
        }
        Err(error) => {
            let state = match report.state {
                State::Cancelled => State::Cancelled,
                State::Queued => State::Queued,
                _ if retryable && job.try_number < job.max_tries => State::UpForRetry,
                _ => State::Failed,
            };
            let delay = retry_delay(&job);
            report.state = state;
            let attempt_state = match state {
                State::Queued => "interrupted",
                State::Cancelled => "cancelled",
                _ => "failed",
            };
            let next_try_at = (state == State::UpForRetry).then(|| now + delay.as_micros() as i64);
            report.retry_at = (state == State::UpForRetry).then(|| Instant::now() + delay);
            let err = error.clone();
            deps.store.write_nowait(move |tx| {
                let update = runs::TiUpdate {
                    state: state.as_str(),
                    // An interrupted attempt keeps its record but not its cost: one more try.
                    max_tries: (state == State::Queued).then_some(max_tries + 1),
                    finished_at: state.is_terminal().then_some(now),
                    next_try_at,
                    error: Some(err.clone()),
                    ..Default::default()
                };
                runs::update_ti(tx, ti, &update)?;
                runs::finish_attempt(tx, ti, try_number, attempt_state, now, Some(&err))
            });
            let _ = events.send(event(&job, state, now, Some(ms), Some(error)));
        }
    }
    report
}
