//! `sensor`: waits for a condition (a file exists, a URL answers 200, an SQL query returns a
//! truthy value, an expression is true). Between pokes it gives its executor slot back.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Kind, Op, Outcome, Param, TaskContext, opt};

pub struct Sensor;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    http: Option<String>,
    #[serde(default)]
    sql: Option<String>,
    #[serde(default)]
    db: Option<String>,
    #[serde(default)]
    condition: Option<Value>,
    #[serde(default)]
    poke_interval: Option<Value>,
    #[serde(default)]
    timeout: Option<Value>,
}

const KINDS: &[&str] = &["file", "http", "sql", "condition"];

impl Sensor {
    fn poke(p: &Params) -> Result<(bool, String), String> {
        if let Some(f) = &p.file {
            return Ok((std::path::Path::new(f).exists(), format!("file {f}")));
        }
        if let Some(url) = &p.http {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .http_status_as_error(false)
                .build()
                .into();
            let ok = agent.get(url).call().map(|r| r.status().as_u16() == 200).unwrap_or(false);
            return Ok((ok, format!("GET {url}")));
        }
        if let Some(sql) = &p.sql {
            let db = p.db.as_deref().ok_or("an `sql` sensor needs `db`: the path of a SQLite file")?;
            let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| format!("cannot open {db}: {e}"))?;
            let v: Option<rusqlite::types::Value> = conn
                .query_row(sql, [], |r| r.get(0))
                .map(Some)
                .or_else(|e| if matches!(e, rusqlite::Error::QueryReturnedNoRows) { Ok(None) } else { Err(e) })
                .map_err(|e| format!("query failed: {e}"))?;
            use rusqlite::types::Value as V;
            let ok = match v {
                None | Some(V::Null) => false,
                Some(V::Integer(i)) => i != 0,
                Some(V::Real(f)) => f != 0.0,
                Some(V::Text(t)) => !t.is_empty() && t != "0",
                Some(V::Blob(b)) => !b.is_empty(),
            };
            return Ok((ok, format!("sql on {db}")));
        }
        if let Some(c) = &p.condition {
            return Ok((super::branch::truthy(c)?, "condition".into()));
        }
        Err(format!("a sensor needs one of: {}", KINDS.join(", ")))
    }
}

impl Op for Sensor {
    fn name(&self) -> &'static str {
        "sensor"
    }
    fn params(&self) -> &'static [Param] {
        const P: &[Param] = &[
            opt("file", Kind::String, "wait until this path exists"),
            opt("http", Kind::String, "wait until GET on this URL answers 200"),
            opt("sql", Kind::String, "wait until this query's first value is truthy (needs `db`)"),
            opt("db", Kind::String, "SQLite file the `sql` query runs on"),
            opt("condition", Kind::Any, "wait until this expression is true (rendered each poke)"),
            opt("poke_interval", Kind::Duration, "time between checks (default 30s)"),
            opt("timeout", Kind::Duration, "give up after this long (default 7d; the task timeout also applies)"),
        ];
        P
    }
    fn check(&self, with: &Value) -> Vec<String> {
        let n = KINDS.iter().filter(|k| with.get(**k).is_some()).count();
        let mut e = Vec::new();
        if n != 1 {
            e.push(format!("a sensor needs exactly one of {}, found {n}", KINDS.join(", ")));
        }
        if with.get("sql").is_some() && with.get("db").is_none() {
            e.push("an `sql` sensor needs `db`: the path of a SQLite file".into());
        }
        e
    }

    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String> {
        let p: Params = super::decode("sensor", with)?;
        let interval = super::duration_param(p.poke_interval.as_ref(), Duration::from_secs(30))?;
        let timeout = super::duration_param(p.timeout.as_ref(), Duration::from_secs(7 * 86400))?;
        let (ok, what) = Self::poke(&p)?;
        if ok {
            ctx.log.line(&format!("sensor: {what} is ready"));
            return Ok(Outcome::Done(json!({"waited_s": ctx.first_poke_at.elapsed().as_secs_f64()})));
        }
        if ctx.first_poke_at.elapsed() >= timeout {
            return Err(format!("sensor timed out after {timeout:?} waiting for {what}"));
        }
        ctx.log.line(&format!("sensor: {what} not ready; next poke in {interval:?}"));
        Ok(Outcome::Poke(interval))
    }
}
