//! Starting a task: one instance, or a `foreach` fan-out with one instance per item whose
//! parent succeeds when every item does.

use serde_json::{Value, json};

use super::{Scheduler, State, Unit};
use crate::ops::StopSignal;
use crate::pipeline::spec::Foreach;
use crate::store::{self, runs};

impl Scheduler {
    /// Run a task whose upstream allows it (`foreach` tasks expand into their items first).
    pub(super) fn start_task(&mut self, run_id: i64, idx: usize) {
        let Some(run) = self.runs.get(&run_id) else {
            return;
        };
        let task = &run.plan.spec.tasks[idx];
        let Some((foreach, _)) = &task.foreach else {
            self.queue_unit(run_id, idx, -1);
            return;
        };
        let node = &run.nodes[idx];
        if !node.expanded {
            let items = match foreach {
                Foreach::List(items) => run.ctx.render(&Value::Array(items.clone())),
                Foreach::Template(t) => run.ctx.render(&Value::String(t.clone())),
            };
            let items = match items {
                Ok(Value::Array(a)) => a,
                Ok(other) => {
                    let msg = format!("foreach must give a list, got {}", other);
                    self.set_unit(run_id, idx, -1, State::Failed, None, Some(msg));
                    return;
                }
                Err(e) => {
                    self.set_unit(run_id, idx, -1, State::Failed, None, Some(format!("foreach: {e}")));
                    return;
                }
            };
            if items.is_empty() {
                self.set_unit(run_id, idx, -1, State::Success, Some(json!({"results": []})), None);
                return;
            }
            let (task_id, max_tries, ti) = (task.id.clone(), task.retries + 1, node.main.ti);
            let its = items.clone();
            let now = store::now_us();
            let ids = self.deps.store.write(move |tx| {
                runs::update_ti(
                    tx,
                    ti,
                    &runs::TiUpdate { state: "running", started_at: Some(now), ..Default::default() },
                )?;
                runs::expand(tx, run_id, &task_id, &its, max_tries)
            });
            let ids = match ids {
                Ok(ids) => ids,
                Err(e) => {
                    self.set_unit(
                        run_id,
                        idx,
                        -1,
                        State::Failed,
                        None,
                        Some(format!("cannot record foreach items: {e}")),
                    );
                    return;
                }
            };
            let Some(run) = self.runs.get_mut(&run_id) else {
                return;
            };
            let node = &mut run.nodes[idx];
            node.expanded = true;
            node.main.state = State::Running;
            node.items = ids
                .into_iter()
                .zip(items)
                .enumerate()
                .map(|(i, (ti, item))| Unit {
                    ti,
                    map_index: i as i64,
                    state: State::Pending,
                    try_number: 0,
                    max_tries,
                    outputs: None,
                    item: Some(item),
                    in_flight: false,
                    next_try_at: None,
                    stop: StopSignal::default(),
                    first_poke_at: None,
                })
                .collect();
        } else {
            let ti = node.main.ti;
            let now = store::now_us();
            self.deps.store.write_nowait(move |tx| {
                runs::update_ti(
                    tx,
                    ti,
                    &runs::TiUpdate { state: "running", started_at: Some(now), ..Default::default() },
                )
            });
            if let Some(run) = self.runs.get_mut(&run_id) {
                run.nodes[idx].main.state = State::Running;
            }
        }
        let pending: Vec<i64> = self.runs[&run_id].nodes[idx]
            .items
            .iter()
            .filter(|u| u.state == State::Pending)
            .map(|u| u.map_index)
            .collect();
        for m in pending {
            self.queue_unit(run_id, idx, m);
        }
        self.aggregate(run_id, idx);
    }

    /// A foreach task is done when all its items are: success if every item succeeded, with
    /// the items' outputs as `results`.
    pub(super) fn aggregate(&mut self, run_id: i64, idx: usize) {
        let Some(run) = self.runs.get(&run_id) else {
            return;
        };
        let node = &run.nodes[idx];
        if !node.expanded || node.main.state.is_terminal() || !node.items.iter().all(|u| u.state.is_terminal()) {
            return;
        }
        let state = if node.items.iter().all(|u| u.state == State::Success) {
            State::Success
        } else if node.items.iter().any(|u| u.state == State::Cancelled) {
            State::Cancelled
        } else {
            State::Failed
        };
        let results: Vec<Value> = node.items.iter().map(|u| u.outputs.clone().unwrap_or(Value::Null)).collect();
        let failed = node.items.iter().filter(|u| u.state != State::Success).count();
        let error =
            (state != State::Success).then(|| format!("{failed} of {} items did not succeed", node.items.len()));
        self.set_unit(run_id, idx, -1, state, Some(json!({ "results": results })), error);
    }
}
