//! The `pipelines` table: registered specs, pause flags and the next scheduled logical date.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::Result;

#[derive(Debug, Clone, Serialize)]
pub struct PipelineRow {
    pub name: String,
    pub description: String,
    pub schedule: Option<String>,
    pub paused: bool,
    pub source: String,
    pub spec_hash: String,
    /// Logical date (µs) of the next scheduled run, if any.
    pub next_logical: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(skip)]
    pub yaml: String,
}

const COLS: &str = "name, description, schedule, paused, source, spec_hash, next_logical, created_at, updated_at, yaml";

fn row(r: &rusqlite::Row) -> rusqlite::Result<PipelineRow> {
    Ok(PipelineRow {
        name: r.get(0)?,
        description: r.get(1)?,
        schedule: r.get(2)?,
        paused: r.get(3)?,
        source: r.get(4)?,
        spec_hash: r.get(5)?,
        next_logical: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        yaml: r.get(9)?,
    })
}

pub fn list(c: &Connection) -> Result<Vec<PipelineRow>> {
    let mut st = c.prepare_cached(&format!("SELECT {COLS} FROM pipelines ORDER BY name"))?;
    Ok(st.query_map([], row)?.collect::<rusqlite::Result<_>>()?)
}

pub fn get(c: &Connection, name: &str) -> Result<Option<PipelineRow>> {
    let mut st = c.prepare_cached(&format!("SELECT {COLS} FROM pipelines WHERE name = ?1"))?;
    Ok(st.query_row([name], row).optional()?)
}

/// What an upsert did, so callers can say "created" or "updated" or "unchanged".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Upsert {
    Created,
    Updated,
    Unchanged,
}

pub struct NewPipeline<'a> {
    pub name: &'a str,
    pub yaml: &'a str,
    pub spec_hash: &'a str,
    pub description: &'a str,
    pub schedule: Option<&'a str>,
    pub source: &'a str,
    /// Computed by the caller for a new or re-scheduled pipeline.
    pub next_logical: Option<i64>,
    /// The schedule, start date or catchup changed: take `next_logical` as the new start.
    pub reschedule: bool,
}

pub fn upsert(c: &Connection, p: &NewPipeline, now: i64) -> Result<Upsert> {
    let existing: Option<(String, Option<String>)> = c
        .query_row("SELECT spec_hash, schedule FROM pipelines WHERE name = ?1", [p.name], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    match existing {
        None => {
            c.execute(
                "INSERT INTO pipelines (name, yaml, spec_hash, description, schedule, source, next_logical, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                params![p.name, p.yaml, p.spec_hash, p.description, p.schedule, p.source, p.next_logical, now],
            )?;
            Ok(Upsert::Created)
        }
        Some((hash, _)) if hash == p.spec_hash => Ok(Upsert::Unchanged),
        Some((_, schedule)) => {
            let reschedule = p.reschedule || schedule.as_deref() != p.schedule;
            c.execute(
                "UPDATE pipelines SET yaml = ?2, spec_hash = ?3, description = ?4, schedule = ?5, source = ?6, updated_at = ?7,
                 next_logical = CASE WHEN ?8 THEN ?9 ELSE next_logical END WHERE name = ?1",
                params![p.name, p.yaml, p.spec_hash, p.description, p.schedule, p.source, now, reschedule, p.next_logical],
            )?;
            Ok(Upsert::Updated)
        }
    }
}

pub fn set_paused(c: &Connection, name: &str, paused: bool, now: i64) -> Result<bool> {
    Ok(c.execute("UPDATE pipelines SET paused = ?2, updated_at = ?3 WHERE name = ?1", params![name, paused, now])? == 1)
}

pub fn set_next_logical(c: &Connection, name: &str, next: Option<i64>) -> Result<()> {
    c.execute("UPDATE pipelines SET next_logical = ?2 WHERE name = ?1", params![name, next])?;
    Ok(())
}
