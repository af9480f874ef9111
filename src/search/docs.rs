//! What each kind of thing looks like as a search document, read from the store and the logs.

use std::fmt::Write as _;
use std::io::Read;

use rusqlite::Connection;
use serde_json::Value;

use super::{Item, Op, Sources};
use crate::error::Result;
use crate::logs::LogKey;
use crate::store::{pipelines, runs};

/// Lines of a log per document: a hit is a passage with context, and 100k log lines make ~2k
/// documents rather than 100k near-identical one-line hits.
const LOG_LINES: usize = 50;
const LOG_BYTES: usize = 8 * 1024;
/// Only the first this-many bytes of one attempt's log are indexed.
const LOG_MAX: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Doc {
    pub kind: &'static str,
    /// Unique key: `run:42`, `log:42:train:-1:1:0`, `version:taxi/3`...
    pub id: String,
    /// Keys of what this document belongs to (deleting a run deletes its logs).
    pub parents: Vec<String>,
    pub title: String,
    pub body: String,
    /// When it happened (µs since the epoch).
    pub ts: i64,
    /// Its page in the UI.
    pub url: String,
    /// Logs: the first line of this chunk (1-based).
    pub line: Option<u64>,
}

pub(super) fn build(item: &Item, src: &Sources) -> Result<Vec<Op>> {
    src.store.read(|c| match item {
        Item::Pipeline(name) => Ok(match pipelines::get(c, name)? {
            Some(p) => vec![Op::Upsert(pipeline(&p))],
            None => vec![Op::Delete(format!("pipeline:{name}"))],
        }),
        Item::Run(id) => Ok(match runs::get(c, *id)? {
            Some(r) => vec![Op::Upsert(run(c, &r)?)],
            None => deleted_run(*id),
        }),
        Item::Log(key) => log(c, src, key),
        Item::RunDatasets(id) => datasets(c, Some(*id)),
        Item::Model(name) => model(c, name),
        Item::RunAll(id) => run_all(c, src, *id),
        Item::DeleteRun(id) => Ok(deleted_run(*id)),
    })
}

/// A run's document, every attempt's log, the datasets it wrote.
fn run_all(c: &Connection, src: &Sources, id: i64) -> Result<Vec<Op>> {
    let Some(r) = runs::get(c, id)? else { return Ok(deleted_run(id)) };
    let mut ops = vec![Op::Upsert(run(c, &r)?)];
    let mut stmt = c.prepare_cached(
        "SELECT ti.task_id, ti.map_index, a.try_number FROM task_attempts a
         JOIN task_instances ti ON ti.id = a.ti_id WHERE ti.run_id = ?1 ORDER BY ti.id, a.try_number",
    )?;
    let keys = stmt
        .query_map([id], |r| {
            Ok(LogKey { run_id: id, task_id: r.get(0)?, map_index: r.get(1)?, try_number: r.get(2)? })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for key in keys {
        ops.extend(log(c, src, &key)?);
    }
    ops.extend(datasets(c, Some(id))?);
    Ok(ops)
}

/// Every document, for a rebuild, handed to `sink` a run at a time (a run's logs can be MBs).
pub(super) fn everything(src: &Sources, sink: &mut dyn FnMut(Vec<Op>)) -> Result<()> {
    let (pipelines, ids) = src.store.read(|c| {
        let ops: Vec<Op> = pipelines::list(c)?.iter().map(|p| Op::Upsert(pipeline(p))).collect();
        let mut stmt = c.prepare("SELECT id FROM runs ORDER BY id")?;
        let ids = stmt.query_map([], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((ops, ids))
    })?;
    sink(pipelines);
    for id in ids {
        sink(src.store.read(|c| run_all(c, src, id))?);
    }
    src.store.read(|c| {
        for m in crate::registry::list(c)? {
            sink(model(c, &m.name)?);
        }
        // Datasets no run owns any more (their run was deleted).
        sink(datasets(c, None)?);
        Ok(())
    })
}

fn deleted_run(id: i64) -> Vec<Op> {
    vec![Op::Delete(format!("run:{id}")), Op::DeleteChildren(format!("run:{id}"))]
}

fn tags_of(yaml: &str) -> Vec<String> {
    crate::pipeline::spec::parse(yaml).0.map(|p| p.tags).unwrap_or_default()
}

fn pipeline(p: &pipelines::PipelineRow) -> Doc {
    let tags = tags_of(&p.yaml);
    let mut body = String::new();
    let _ = writeln!(body, "{}", p.description);
    if !tags.is_empty() {
        let _ = writeln!(body, "tags: {}", tags.join(", "));
    }
    if let Some(s) = &p.schedule {
        let _ = writeln!(body, "schedule: {s}");
    }
    body.push_str(&p.yaml);
    Doc {
        kind: "pipeline",
        id: format!("pipeline:{}", p.name),
        parents: vec![],
        title: p.name.clone(),
        body,
        ts: p.updated_at,
        url: format!("/pipelines/{}", p.name),
        line: None,
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn run(c: &Connection, r: &runs::RunRow) -> Result<Doc> {
    let mut body = format!("run {} of {}: {} ({})\n", r.id, r.pipeline, r.state, r.trigger);
    if let Value::Object(params) = &r.params
        && !params.is_empty()
    {
        let list: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", scalar(v))).collect();
        let _ = writeln!(body, "params: {}", list.join(" "));
    }
    let tags = tags_of(&r.yaml);
    if !tags.is_empty() {
        let _ = writeln!(body, "tags: {}", tags.join(", "));
    }
    if let Some(e) = &r.error {
        let _ = writeln!(body, "error: {e}");
    }
    for t in runs::tasks(c, r.id)? {
        if let Some(e) = &t.error {
            let _ = writeln!(body, "{} {}: {e}", label(&t.task_id, t.map_index), t.state);
        }
    }
    Ok(Doc {
        kind: "run",
        id: format!("run:{}", r.id),
        parents: vec![format!("pipeline:{}", r.pipeline)],
        title: format!("{} run {}", r.pipeline, r.id),
        body,
        ts: r.created_at,
        url: format!("/runs/{}", r.id),
        line: None,
    })
}

fn label(task: &str, map_index: i64) -> String {
    if map_index >= 0 { format!("{task}[{map_index}]") } else { task.to_string() }
}

/// One attempt's log as documents of `LOG_LINES` lines (or `LOG_BYTES`), replacing any earlier
/// documents of that attempt.
fn log(c: &Connection, src: &Sources, key: &LogKey) -> Result<Vec<Op>> {
    let attempt = format!("attempt:{}:{}:{}:{}", key.run_id, key.task_id, key.map_index, key.try_number);
    let mut ops = vec![Op::DeleteChildren(attempt.clone())];
    let Some(r) = runs::get(c, key.run_id)? else { return Ok(ops) };
    let text = match std::fs::File::open(key.path(&src.logs_dir)) {
        Ok(f) => {
            let mut bytes = Vec::new();
            f.take(LOG_MAX).read_to_end(&mut bytes)?;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ops),
        Err(e) => return Err(e.into()),
    };
    let task = label(&key.task_id, key.map_index);
    let title = format!("{} run {} · {task} · try {}", r.pipeline, key.run_id, key.try_number);
    let url =
        format!("/runs/{}?task={}&map_index={}&try={}#log", key.run_id, key.task_id, key.map_index, key.try_number);
    let (mut chunk, mut lines, mut first, mut n) = (String::new(), 0usize, 1u64, 0usize);
    let mut line_no = 0u64;
    let mut emit = |chunk: &mut String, first: u64, n: &mut usize| {
        ops.push(Op::Upsert(Doc {
            kind: "log",
            id: format!("log:{}:{}:{}:{}:{n}", key.run_id, key.task_id, key.map_index, key.try_number),
            parents: vec![format!("run:{}", key.run_id), attempt.clone()],
            title: title.clone(),
            body: std::mem::take(chunk),
            ts: r.created_at,
            url: url.clone(),
            line: Some(first),
        }));
        *n += 1;
    };
    for l in text.lines() {
        line_no += 1;
        if lines == 0 {
            first = line_no;
        }
        chunk.push_str(l);
        chunk.push('\n');
        lines += 1;
        if lines >= LOG_LINES || chunk.len() >= LOG_BYTES {
            emit(&mut chunk, first, &mut n);
            lines = 0;
        }
    }
    if lines > 0 {
        emit(&mut chunk, first, &mut n);
    }
    Ok(ops)
}

/// Dataset versions: those a run wrote, or (`None`) those no run owns.
fn datasets(c: &Connection, run: Option<i64>) -> Result<Vec<Op>> {
    let sql = match run {
        Some(_) => "SELECT name, version, rows, schema, source, created_at FROM datasets WHERE run_id = ?1 ORDER BY id",
        None => {
            "SELECT name, version, rows, schema, source, created_at FROM datasets WHERE run_id IS NULL AND ?1 IS NULL ORDER BY id"
        }
    };
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map([run], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut ops = Vec::new();
    for row in rows {
        let (name, version, nrows, schema, source, created_at) = row?;
        let columns: Vec<String> = match serde_json::from_str::<Value>(&schema) {
            Ok(Value::Object(m)) => m.iter().map(|(k, v)| format!("{k} ({})", scalar(v))).collect(),
            _ => vec![],
        };
        ops.push(Op::Upsert(Doc {
            kind: "dataset",
            id: format!("dataset:{name}/{version}"),
            parents: vec![],
            title: format!("{name} v{version}"),
            body: format!("columns: {}\nrows: {nrows}\nsource: {source}\n", columns.join(", ")),
            ts: created_at,
            url: format!("/datasets/{name}?version={version}"),
            line: None,
        }));
    }
    Ok(ops)
}

/// A model and its versions.
fn model(c: &Connection, name: &str) -> Result<Vec<Op>> {
    let key = format!("model:{name}");
    let mut ops = vec![Op::DeleteChildren(key.clone())];
    let m = match crate::registry::get(c, name) {
        Ok(m) => m,
        Err(e) if e.code == crate::error::Code::NotFound => {
            ops.push(Op::Delete(key));
            return Ok(ops);
        }
        Err(e) => return Err(e),
    };
    let tags = |v: &Value| match v {
        Value::Object(m) => m.iter().map(|(k, v)| format!("{k}={}", scalar(v))).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    };
    let aliases: Vec<String> = m.aliases.iter().map(|(a, v)| format!("{a} → v{v}")).collect();
    ops.push(Op::Upsert(Doc {
        kind: "model",
        id: key.clone(),
        parents: vec![],
        title: m.name.clone(),
        body: format!("{}\ntags: {}\naliases: {}\n", m.description, tags(&m.tags), aliases.join(", ")),
        ts: m.updated_at,
        url: format!("/models/{}", m.name),
        line: None,
    }));
    for v in crate::registry::versions(c, name)? {
        let mut body = format!("{} version {} ({})\n", v.model, v.version, v.kind);
        if !v.description.is_empty() {
            let _ = writeln!(body, "{}", v.description);
        }
        if !v.aliases.is_empty() {
            let _ = writeln!(body, "aliases: {}", v.aliases.join(", "));
        }
        let _ = writeln!(body, "tags: {}", tags(&v.tags));
        match v.blessed {
            Some(true) => body.push_str("blessed\n"),
            Some(false) => body.push_str("not blessed\n"),
            None => {}
        }
        if v.archived {
            body.push_str("archived\n");
        }
        if let Some(run) = v.run_id {
            let _ = writeln!(body, "run {run} task {}", v.task_id.as_deref().unwrap_or(""));
        }
        let _ = writeln!(body, "by {}", v.created_by);
        ops.push(Op::Upsert(Doc {
            kind: "version",
            id: format!("version:{}/{}", v.model, v.version),
            parents: vec![key.clone()],
            title: format!("{} v{}", v.model, v.version),
            body,
            ts: v.created_at,
            url: format!("/models/{}/versions/{}", v.model, v.version),
            line: None,
        }));
    }
    Ok(ops)
}
