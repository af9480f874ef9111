//! Stopping work: cancelling a run, and draining everything on shutdown.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Scheduler, State};
use crate::engine::Msg;
use crate::ops::StopReason;
use crate::store;

impl Scheduler {
    pub(super) fn cancel(&mut self, run_id: i64) {
        for q in self.waiting.values_mut() {
            q.retain(|&id| id != run_id);
        }
        let Some(run) = self.runs.get_mut(&run_id) else {
            // Not active here (queued behind max_active_runs, or left by an old process).
            let now = store::now_us();
            let done = self.deps.store.write(move |tx| {
                tx.execute("UPDATE task_attempts SET state = 'cancelled', finished_at = ?2 WHERE state = 'running' AND ti_id IN (SELECT id FROM task_instances WHERE run_id = ?1)", rusqlite::params![run_id, now])?;
                tx.execute("UPDATE task_instances SET state = 'cancelled', finished_at = ?2 WHERE run_id = ?1 AND state NOT IN ('success', 'failed', 'skipped', 'upstream_failed', 'cancelled')", rusqlite::params![run_id, now])?;
                let n = tx.execute("UPDATE runs SET state = 'cancelled', finished_at = ?2 WHERE id = ?1 AND state IN ('queued', 'running')", rusqlite::params![run_id, now])?;
                let pipeline: Option<String> = tx.query_row("SELECT pipeline FROM runs WHERE id = ?1", [run_id], |r| r.get(0)).ok();
                Ok((n, pipeline))
            });
            if let Ok((1, Some(p))) = done {
                self.emit_run(run_id, &p, "cancelled", None);
            }
            return;
        };
        run.cancelling = true;
        // Jobs still waiting for a slot never start: they are cancelled here, not when a slot frees.
        for job in self.executor.take_run(run_id) {
            let n = &mut run.nodes[job.task_idx];
            let u = if job.map_index < 0 { &mut n.main } else { &mut n.items[job.map_index as usize] };
            u.in_flight = false;
        }
        let mut to_cancel = Vec::new();
        for (i, n) in run.nodes.iter().enumerate() {
            let units = std::iter::once(&n.main).chain(n.items.iter());
            for u in units {
                if u.in_flight {
                    u.stop.stop(StopReason::Cancelled);
                } else if !(u.state.is_terminal() || u.map_index < 0 && n.expanded) {
                    to_cancel.push((i, u.map_index));
                }
            }
        }
        for (i, m) in to_cancel {
            self.set_unit(run_id, i, m, State::Cancelled, None, Some("cancelled".into()));
            if m >= 0 {
                self.aggregate(run_id, i);
            }
        }
        for i in 0..self.runs.get(&run_id).map_or(0, |r| r.nodes.len()) {
            self.aggregate(run_id, i);
        }
        self.maybe_finish(run_id);
    }

    // ---- shutdown ---------------------------------------------------------------------------

    pub(super) fn shutdown(&mut self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        self.draining = Some(deadline);
        let dropped = self.executor.close();
        for job in dropped {
            // Never started: it stays queued (or poking) in the store and runs after a restart.
            if let Some(run) = self.runs.get_mut(&job.run_id) {
                let n = &mut run.nodes[job.task_idx];
                let u = if job.map_index < 0 { &mut n.main } else { &mut n.items[job.map_index as usize] };
                u.in_flight = false;
            }
        }
        let in_flight = |s: &Scheduler| {
            s.runs.values().any(|r| r.nodes.iter().any(|n| n.main.in_flight || n.items.iter().any(|u| u.in_flight)))
        };
        if in_flight(self) {
            tracing::info!(grace_s = grace.as_secs_f64(), "Waiting for running tasks to finish");
        }
        // After the grace period, stopped tasks get one last window to report; then we go.
        let last_call = deadline + Duration::from_secs(30);
        let mut stopped = false;
        while in_flight(self) {
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() && !stopped {
                tracing::warn!("Grace period over: stopping the tasks still running");
                for r in self.runs.values() {
                    for n in &r.nodes {
                        for u in std::iter::once(&n.main).chain(n.items.iter()).filter(|u| u.in_flight) {
                            u.stop.stop(StopReason::Shutdown);
                        }
                    }
                }
                stopped = true;
            }
            let wait = if stopped { last_call.saturating_duration_since(Instant::now()) } else { wait };
            if stopped && wait.is_zero() {
                tracing::warn!("Tasks did not stop in time; leaving them to the next start's recovery");
                break;
            }
            match self.rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(Msg::Report(r)) => self.on_report(r),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        true
    }
}
