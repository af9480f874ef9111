//! Runs, task instances and their attempts. Every state change is a single statement group run
//! inside one writer transaction.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use crate::error::Result;

#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub pipeline: String,
    pub state: String,
    pub trigger: String,
    pub logical_date: i64,
    pub params: Value,
    pub spec_hash: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    #[serde(skip)]
    pub yaml: String,
}

const RUN_COLS: &str =
    "id, pipeline, state, trigger, logical_date, params, spec_hash, created_at, started_at, finished_at, error, yaml";

fn run_row(r: &rusqlite::Row) -> rusqlite::Result<RunRow> {
    let params: String = r.get(5)?;
    Ok(RunRow {
        id: r.get(0)?,
        pipeline: r.get(1)?,
        state: r.get(2)?,
        trigger: r.get(3)?,
        logical_date: r.get(4)?,
        params: serde_json::from_str(&params).unwrap_or(Value::Null),
        spec_hash: r.get(6)?,
        created_at: r.get(7)?,
        started_at: r.get(8)?,
        finished_at: r.get(9)?,
        error: r.get(10)?,
        yaml: r.get(11)?,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    pub id: i64,
    pub task_id: String,
    pub map_index: i64,
    pub item: Option<Value>,
    pub state: String,
    pub try_number: u32,
    pub max_tries: u32,
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub next_try_at: Option<i64>,
    pub outputs: Option<Value>,
    pub error: Option<String>,
}

fn task_row(r: &rusqlite::Row) -> rusqlite::Result<TaskRow> {
    let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
    Ok(TaskRow {
        id: r.get(0)?,
        task_id: r.get(1)?,
        map_index: r.get(2)?,
        item: json(r.get(3)?),
        state: r.get(4)?,
        try_number: r.get(5)?,
        max_tries: r.get(6)?,
        queued_at: r.get(7)?,
        started_at: r.get(8)?,
        finished_at: r.get(9)?,
        next_try_at: r.get(10)?,
        outputs: json(r.get(11)?),
        error: r.get(12)?,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    pub ti_id: i64,
    pub try_number: u32,
    pub state: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArtifactRow {
    pub id: i64,
    pub task_id: String,
    pub map_index: i64,
    pub name: String,
    pub sha256: String,
    pub size: i64,
}

pub struct NewRun<'a> {
    pub pipeline: &'a str,
    pub trigger: &'a str,
    pub logical_date: i64,
    pub params: &'a Value,
    pub yaml: &'a str,
    pub spec_hash: &'a str,
    /// (task id, max tries) for every task in the plan.
    pub tasks: Vec<(String, u32)>,
}

/// Insert a queued run with a `pending` instance per task. Returns `None` if a scheduled run
/// for that logical date already exists.
pub fn create(c: &Connection, r: &NewRun, now: i64) -> Result<Option<i64>> {
    let inserted = c.execute(
        "INSERT OR IGNORE INTO runs (pipeline, state, trigger, logical_date, params, yaml, spec_hash, created_at)
         VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7)",
        params![r.pipeline, r.trigger, r.logical_date, r.params.to_string(), r.yaml, r.spec_hash, now],
    )?;
    if inserted == 0 {
        return Ok(None);
    }
    let id = c.last_insert_rowid();
    let mut st = c.prepare_cached(
        "INSERT INTO task_instances (run_id, task_id, map_index, state, max_tries) VALUES (?1, ?2, -1, 'pending', ?3)",
    )?;
    for (task, max_tries) in &r.tasks {
        st.execute(params![id, task, max_tries])?;
    }
    Ok(Some(id))
}

pub fn get(c: &Connection, id: i64) -> Result<Option<RunRow>> {
    let mut st = c.prepare_cached(&format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"))?;
    Ok(st.query_row([id], run_row).optional()?)
}

/// Filters for listing runs; `before` is the cursor (a run id), newest first.
#[derive(Debug, Default, Clone)]
pub struct RunFilter {
    pub pipeline: Option<String>,
    pub state: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before: Option<i64>,
    pub limit: u32,
}

pub fn list(c: &Connection, f: &RunFilter) -> Result<Vec<RunRow>> {
    let sql = format!(
        "SELECT {RUN_COLS} FROM runs WHERE (?1 IS NULL OR pipeline = ?1) AND (?2 IS NULL OR state = ?2)
         AND (?3 IS NULL OR created_at >= ?3) AND (?4 IS NULL OR created_at < ?4) AND (?5 IS NULL OR id < ?5)
         ORDER BY id DESC LIMIT ?6"
    );
    let mut st = c.prepare_cached(&sql)?;
    let rows = st.query_map(params![f.pipeline, f.state, f.since, f.until, f.before, f.limit], run_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Runs the scheduler must pick up again after a start: queued or running.
pub fn active(c: &Connection) -> Result<Vec<RunRow>> {
    let mut st =
        c.prepare_cached(&format!("SELECT {RUN_COLS} FROM runs WHERE state IN ('queued', 'running') ORDER BY id"))?;
    Ok(st.query_map([], run_row)?.collect::<rusqlite::Result<_>>()?)
}

pub fn tasks(c: &Connection, run_id: i64) -> Result<Vec<TaskRow>> {
    let mut st = c.prepare_cached(
        "SELECT id, task_id, map_index, item, state, try_number, max_tries, queued_at, started_at, finished_at, next_try_at, outputs, error
         FROM task_instances WHERE run_id = ?1 ORDER BY id",
    )?;
    Ok(st.query_map([run_id], task_row)?.collect::<rusqlite::Result<_>>()?)
}

pub fn attempts(c: &Connection, run_id: i64) -> Result<Vec<AttemptRow>> {
    let mut st = c.prepare_cached(
        "SELECT a.ti_id, a.try_number, a.state, a.started_at, a.finished_at, a.error FROM task_attempts a
         JOIN task_instances t ON t.id = a.ti_id WHERE t.run_id = ?1 ORDER BY a.ti_id, a.try_number",
    )?;
    let rows = st.query_map([run_id], |r| {
        Ok(AttemptRow {
            ti_id: r.get(0)?,
            try_number: r.get(1)?,
            state: r.get(2)?,
            started_at: r.get(3)?,
            finished_at: r.get(4)?,
            error: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn artifacts(c: &Connection, run_id: i64) -> Result<Vec<ArtifactRow>> {
    let mut st = c.prepare_cached(
        "SELECT id, task_id, map_index, name, sha256, size FROM artifacts WHERE run_id = ?1 ORDER BY id",
    )?;
    let rows = st.query_map([run_id], |r| {
        Ok(ArtifactRow {
            id: r.get(0)?,
            task_id: r.get(1)?,
            map_index: r.get(2)?,
            name: r.get(3)?,
            sha256: r.get(4)?,
            size: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn set_run_state(c: &Connection, id: i64, state: &str, now: i64, error: Option<&str>) -> Result<()> {
    let terminal = matches!(state, "success" | "failed" | "cancelled");
    c.execute(
        "UPDATE runs SET state = ?2, error = ?4,
           started_at = CASE WHEN ?2 = 'running' AND started_at IS NULL THEN ?3 ELSE started_at END,
           finished_at = CASE WHEN ?5 THEN ?3 ELSE NULL END
         WHERE id = ?1",
        params![id, state, now, error, terminal],
    )?;
    Ok(())
}

/// A task instance's state change. Fields left `None` keep their value.
#[derive(Debug, Default, Clone)]
pub struct TiUpdate {
    pub state: &'static str,
    pub try_number: Option<u32>,
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub next_try_at: Option<i64>,
    pub outputs: Option<String>,
    pub error: Option<String>,
    pub max_tries: Option<u32>,
}

pub fn update_ti(c: &Connection, ti: i64, u: &TiUpdate) -> Result<()> {
    let mut st = c.prepare_cached(
        "UPDATE task_instances SET state = ?2, try_number = COALESCE(?3, try_number), queued_at = COALESCE(?4, queued_at),
           started_at = COALESCE(?5, started_at), finished_at = ?6, next_try_at = ?7,
           outputs = COALESCE(?8, outputs), error = ?9, max_tries = COALESCE(?10, max_tries)
         WHERE id = ?1",
    )?;
    st.execute(params![
        ti,
        u.state,
        u.try_number,
        u.queued_at,
        u.started_at,
        u.finished_at,
        u.next_try_at,
        u.outputs,
        u.error,
        u.max_tries
    ])?;
    Ok(())
}

pub fn start_attempt(c: &Connection, ti: i64, try_number: u32, now: i64) -> Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO task_attempts (ti_id, try_number, state, started_at) VALUES (?1, ?2, 'running', ?3)",
    )?
    .execute(params![ti, try_number, now])?;
    Ok(())
}

pub fn finish_attempt(
    c: &Connection,
    ti: i64,
    try_number: u32,
    state: &str,
    now: i64,
    error: Option<&str>,
) -> Result<()> {
    c.prepare_cached(
        "UPDATE task_attempts SET state = ?3, finished_at = ?4, error = ?5 WHERE ti_id = ?1 AND try_number = ?2",
    )?
    .execute(params![ti, try_number, state, now, error])?;
    Ok(())
}

/// Create the per-item instances of a foreach task; returns their ids in item order.
pub fn expand(c: &Connection, run_id: i64, task_id: &str, items: &[Value], max_tries: u32) -> Result<Vec<i64>> {
    let mut st = c.prepare_cached(
        "INSERT INTO task_instances (run_id, task_id, map_index, item, state, max_tries) VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
    )?;
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        st.execute(params![run_id, task_id, i as i64, item.to_string(), max_tries])?;
        ids.push(c.last_insert_rowid());
    }
    Ok(ids)
}

pub fn add_artifact(
    c: &Connection,
    run_id: i64,
    task_id: &str,
    map_index: i64,
    f: &crate::artifacts::Stored,
    now: i64,
) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO artifacts (run_id, task_id, map_index, name, sha256, size, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![run_id, task_id, map_index, f.name, f.sha256, f.size as i64, now])?;
    Ok(())
}

/// After a crash: attempts that were running died with the process. Each becomes a failed
/// attempt; the instance goes to `up_for_retry` if it has tries left, else `failed`.
/// Returns how many instances were recovered.
pub fn recover_interrupted(c: &Connection, now: i64) -> Result<usize> {
    let msg = "the mlbox process stopped while this attempt was running";
    // Sensors waiting between pokes (`next_try_at` set) and foreach parents (their items carry
    // the attempts) were not in the middle of anything.
    const INTERRUPTED: &str = "state = 'running' AND next_try_at IS NULL AND NOT (map_index = -1 AND EXISTS
        (SELECT 1 FROM task_instances c WHERE c.run_id = task_instances.run_id AND c.task_id = task_instances.task_id AND c.map_index >= 0))";
    c.execute(
        &format!(
            "UPDATE task_attempts SET state = 'failed', finished_at = ?1, error = ?2
             WHERE state = 'running' AND ti_id IN (SELECT id FROM task_instances WHERE {INTERRUPTED})"
        ),
        params![now, msg],
    )?;
    let n = c.execute(
        &format!(
            "UPDATE task_instances SET
           state = CASE WHEN try_number < max_tries THEN 'up_for_retry' ELSE 'failed' END,
           next_try_at = CASE WHEN try_number < max_tries THEN ?1 ELSE NULL END,
           finished_at = CASE WHEN try_number < max_tries THEN NULL ELSE ?1 END,
           error = ?2
         WHERE {INTERRUPTED}"
        ),
        params![now, msg],
    )?;
    Ok(n)
}

/// Make a finished run runnable again: failed, upstream-failed and cancelled instances go back
/// to `pending` with fresh retries; successful ones keep their outputs.
pub fn reset_for_resume(c: &Connection, run_id: i64, retries: &dyn Fn(&str) -> u32) -> Result<usize> {
    let rows: Vec<(i64, String, u32)> = {
        let mut st = c.prepare(
            "SELECT id, task_id, try_number FROM task_instances WHERE run_id = ?1 AND state IN ('failed', 'upstream_failed', 'cancelled')",
        )?;
        st.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()?
    };
    for (id, task, tries) in &rows {
        c.execute(
            "UPDATE task_instances SET state = 'pending', max_tries = ?2, error = NULL, finished_at = NULL, next_try_at = NULL WHERE id = ?1",
            params![id, tries + retries(task) + 1],
        )?;
    }
    // A foreach parent whose items are being retried must be re-evaluated too.
    c.execute(
        "UPDATE task_instances SET state = 'pending', finished_at = NULL WHERE run_id = ?1 AND map_index = -1 AND task_id IN
         (SELECT task_id FROM task_instances WHERE run_id = ?1 AND map_index >= 0 AND state = 'pending')",
        [run_id],
    )?;
    c.execute("UPDATE runs SET state = 'queued', finished_at = NULL, error = NULL WHERE id = ?1", [run_id])?;
    Ok(rows.len())
}
