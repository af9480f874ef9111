//! Schedules: which pipelines have a cron, when their next interval ends, and creating the
//! scheduled runs (with catchup, or only the latest missed interval).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{Scheduler, Timer, us_to_dt};
use crate::pipeline::{self, schedule::Schedule};
use crate::store::pipelines;

pub(super) struct CronEntry {
    pub schedule: Schedule,
    pub next_logical: i64,
    pub catchup: bool,
}

impl Scheduler {
    // ---- schedules --------------------------------------------------------------------------

    pub(super) fn reload_cron(&mut self) {
        if !self.deps.cron {
            return;
        }
        let rows = match self.deps.store.read(pipelines::list) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "Cannot load pipelines for scheduling");
                return;
            }
        };
        self.cron.clear();
        for p in rows {
            let (Some(sched), Some(next), false) = (&p.schedule, p.next_logical, p.paused) else {
                continue;
            };
            let Ok(schedule) = Schedule::parse(sched) else {
                continue;
            };
            let catchup = self.plan_for(&p.yaml, &p.spec_hash).map(|pl| pl.spec.catchup).unwrap_or(false);
            self.cron.insert(p.name.clone(), CronEntry { schedule, next_logical: next, catchup });
        }
        self.cron_tick();
    }

    /// Create the runs whose intervals have ended, then arm the timer for the next one.
    pub(super) fn cron_tick(&mut self) {
        let now = Utc::now();
        let names: Vec<String> = self.cron.keys().cloned().collect();
        let mut next_fire: Option<DateTime<Utc>> = None;
        for name in names {
            let entry = &self.cron[&name];
            let mut due = Vec::new();
            let mut d = us_to_dt(entry.next_logical);
            if let (Schedule::Cron(c), false) = (&entry.schedule, entry.catchup)
                && let Ok(p1) = c.find_previous_occurrence(&now, false)
                && let Ok(p0) = c.find_previous_occurrence(&p1, false)
                && p0 > d
            {
                // Without catchup only the latest complete interval runs, however many were missed.
                d = p0;
            }
            let mut next_after_d = match &entry.schedule {
                Schedule::Once => Some(d),
                s => s.next_after(d),
            };
            while let Some(end) = next_after_d {
                if end > now || due.len() >= 1000 {
                    break;
                }
                due.push(d);
                d = end;
                next_after_d = match &entry.schedule {
                    Schedule::Once => None,
                    s => s.next_after(d),
                };
            }
            if !entry.catchup && due.len() > 1 {
                due.drain(..due.len() - 1);
            }
            let finished = matches!(entry.schedule, Schedule::Once) && next_after_d.is_none();
            if !due.is_empty() {
                self.create_scheduled(&name, &due);
                let new_next = (!finished).then_some(d.timestamp_micros());
                let n = name.clone();
                let _ = self.deps.store.write(move |tx| pipelines::set_next_logical(tx, &n, new_next));
                match new_next {
                    Some(v) => {
                        if let Some(e) = self.cron.get_mut(&name) {
                            e.next_logical = v;
                        }
                    }
                    None => {
                        self.cron.remove(&name);
                        continue;
                    }
                }
            }
            if let Some(end) = next_after_d {
                next_fire = Some(next_fire.map_or(end, |f| f.min(end)));
            }
        }
        self.timers.retain(|Reverse((_, t))| *t != Timer::Cron);
        if let Some(at) = next_fire {
            let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            self.timers.push(Reverse((Instant::now() + wait, Timer::Cron)));
        }
    }

    fn create_scheduled(&mut self, name: &str, dates: &[DateTime<Utc>]) {
        let row = match self.deps.store.read(|c| pipelines::get(c, name)) {
            Ok(Some(r)) => r,
            _ => return,
        };
        let Ok(plan) = self.plan_for(&row.yaml, &row.spec_hash) else {
            return;
        };
        let params = match pipeline::params::resolve(&plan.spec.params, &BTreeMap::new()) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(pipeline = name, error = %e, "Cannot schedule a run");
                return;
            }
        };
        for d in dates {
            match crate::engine::create_run(
                &self.deps.store,
                &plan,
                &row.yaml,
                "schedule",
                d.timestamp_micros(),
                params.clone(),
            ) {
                Ok(Some(id)) => {
                    tracing::info!(pipeline = name, run = id, logical_date = %d, "Scheduled run created");
                    self.emit_run(id, name, "queued", None);
                    self.start_run(id);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(pipeline = name, error = %e, "Cannot create a scheduled run")
                }
            }
        }
    }
}
