//! The model registry: registered models, numbered versions (a model file in the content store
//! with its signature, metrics and lineage), aliases that point at versions, and the history of
//! every alias move. Pure store functions; moving an alias so that serving follows is
//! `serving::Serving::promote`.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// The alias served when a request names no version.
pub const PRODUCTION: &str = "production";

#[derive(Debug, Clone, Serialize)]
pub struct Model {
    pub name: String,
    pub description: String,
    pub tags: Value,
    pub created_at: i64,
    pub updated_at: i64,
    pub latest_version: Option<i64>,
    pub aliases: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub model: String,
    pub version: i64,
    pub sha256: String,
    pub kind: String,
    pub signature: Value,
    pub metrics: Value,
    /// What the evaluate task decided, if the version was registered with an evaluation.
    pub blessed: Option<bool>,
    pub evaluation: Value,
    pub lineage: Value,
    pub description: String,
    pub tags: Value,
    pub run_id: Option<i64>,
    pub task_id: Option<String>,
    pub archived: bool,
    pub archived_at: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    /// Aliases pointing at this version now.
    pub aliases: Vec<String>,
}

/// One alias move (`to_version` None: the alias was removed).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AliasMove {
    pub model: String,
    pub alias: String,
    pub from_version: Option<i64>,
    pub to_version: Option<i64>,
    pub actor: String,
    pub reason: String,
    pub at: i64,
}

/// What to register.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    pub model: String,
    pub sha256: String,
    pub kind: String,
    pub signature: Value,
    pub metrics: Value,
    pub blessed: Option<bool>,
    pub evaluation: Value,
    pub lineage: Value,
    pub description: String,
    pub tags: Value,
    /// The registering task: a retry of it finds the version it made instead of adding one.
    pub run_id: Option<i64>,
    pub task_id: Option<String>,
    pub map_index: i64,
    pub created_by: String,
}

/// Model names: what fits in a URL path segment and a file name.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "`{name}` is not a valid model name: use letters, digits, `.`, `_` and `-` (start with a letter or digit, at most 128)"
        )))
    }
}

/// Alias names: lower-case words, never a number (so `name/3` and `name@alias` cannot be confused).
pub fn check_alias(alias: &str) -> Result<()> {
    let ok = !alias.is_empty()
        && alias.len() <= 64
        && alias.starts_with(|c: char| c.is_ascii_lowercase())
        && alias.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "`{alias}` is not a valid alias: use lower-case letters, digits, `_` and `-`, starting with a letter"
        )))
    }
}

/// Which version of a model: by alias or by number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Alias(String),
    Version(i64),
}

/// A model reference as users write it: `NAME` (its production alias), `NAME@ALIAS`,
/// `NAME/VERSION`, each optionally prefixed `models:/` (MLflow's URI form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelUri {
    pub name: String,
    pub selector: Selector,
}

impl ModelUri {
    pub fn parse(s: &str) -> Result<ModelUri> {
        let t = s.strip_prefix("models:/").unwrap_or(s);
        let (name, selector) = if let Some((n, a)) = t.split_once('@') {
            check_alias(a)?;
            (n, Selector::Alias(a.to_string()))
        } else if let Some((n, v)) = t.split_once('/') {
            let v: i64 = v.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
                Error::bad_request(format!("`{s}`: the version after `/` must be a number like 3 (or use NAME@ALIAS)"))
            })?;
            (n, Selector::Version(v))
        } else {
            (t, Selector::Alias(PRODUCTION.to_string()))
        };
        check_name(name)?;
        Ok(ModelUri { name: name.to_string(), selector })
    }
}

impl std::fmt::Display for ModelUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.selector {
            Selector::Alias(a) => write!(f, "{}@{a}", self.name),
            Selector::Version(v) => write!(f, "{}/{v}", self.name),
        }
    }
}

impl Version {
    /// Why this version may not take an alias that requires a blessing (None: it was blessed).
    pub fn not_blessed(&self) -> Option<String> {
        match self.blessed {
            Some(true) => None,
            Some(false) => {
                let reasons = self.evaluation["why_not"].as_array().cloned().unwrap_or_default();
                let reasons: Vec<&str> = reasons.iter().filter_map(Value::as_str).collect();
                Some(format!("its evaluation did not bless it ({})", reasons.join("; ")))
            }
            None => Some("it was registered without an evaluation".to_string()),
        }
    }
}

fn json_col(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Value> {
    let s: Option<String> = r.get(i)?;
    Ok(s.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or(Value::Null))
}

const VCOLS: &str = "model, version, sha256, kind, signature, metrics, blessed, evaluation, lineage, description, \
                     tags, run_id, task_id, archived_at, created_by, created_at";

fn version_row(r: &rusqlite::Row) -> rusqlite::Result<Version> {
    let archived_at: Option<i64> = r.get(13)?;
    Ok(Version {
        model: r.get(0)?,
        version: r.get(1)?,
        sha256: r.get(2)?,
        kind: r.get(3)?,
        signature: json_col(r, 4)?,
        metrics: json_col(r, 5)?,
        blessed: r.get::<_, Option<i64>>(6)?.map(|b| b != 0),
        evaluation: json_col(r, 7)?,
        lineage: json_col(r, 8)?,
        description: r.get(9)?,
        tags: json_col(r, 10)?,
        run_id: r.get(11)?,
        task_id: r.get(12)?,
        archived: archived_at.is_some(),
        archived_at,
        created_by: r.get(14)?,
        created_at: r.get(15)?,
        aliases: Vec::new(),
    })
}

fn aliases_of(c: &Connection, model: &str) -> Result<BTreeMap<String, i64>> {
    let mut st = c.prepare_cached("SELECT alias, version FROM model_aliases WHERE model = ?1")?;
    let rows = st.query_map([model], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn with_aliases(mut v: Version, aliases: &BTreeMap<String, i64>) -> Version {
    v.aliases = aliases.iter().filter(|(_, n)| **n == v.version).map(|(a, _)| a.clone()).collect();
    v
}

fn model_row(c: &Connection, r: &rusqlite::Row) -> Result<Model> {
    let name: String = r.get(0)?;
    let aliases = aliases_of(c, &name)?;
    Ok(Model {
        description: r.get(1)?,
        tags: json_col(r, 2)?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
        latest_version: r.get(5)?,
        aliases,
        name,
    })
}

const MCOLS: &str = "m.name, m.description, m.tags, m.created_at, m.updated_at, \
                     (SELECT MAX(version) FROM model_versions v WHERE v.model = m.name)";

pub fn list(c: &Connection) -> Result<Vec<Model>> {
    let mut st = c.prepare(&format!("SELECT {MCOLS} FROM models m ORDER BY m.name"))?;
    let mut rows = st.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(model_row(c, r)?);
    }
    Ok(out)
}

pub fn get(c: &Connection, name: &str) -> Result<Model> {
    let mut st = c.prepare(&format!("SELECT {MCOLS} FROM models m WHERE m.name = ?1"))?;
    let mut rows = st.query([name])?;
    match rows.next()? {
        Some(r) => model_row(c, r),
        None => Err(Error::not_found(format!("no registered model `{name}` (see GET /api/v1/models)"))),
    }
}

pub fn versions(c: &Connection, name: &str) -> Result<Vec<Version>> {
    let aliases = aliases_of(c, name)?;
    let mut st = c.prepare(&format!("SELECT {VCOLS} FROM model_versions WHERE model = ?1 ORDER BY version DESC"))?;
    let rows = st.query_map([name], version_row)?;
    Ok(rows.map(|r| r.map(|v| with_aliases(v, &aliases))).collect::<rusqlite::Result<_>>()?)
}

pub fn version(c: &Connection, name: &str, version: i64) -> Result<Version> {
    get(c, name)?;
    let v = c
        .query_row(
            &format!("SELECT {VCOLS} FROM model_versions WHERE model = ?1 AND version = ?2"),
            params![name, version],
            version_row,
        )
        .optional()?
        .ok_or_else(|| Error::not_found(format!("model `{name}` has no version {version}")))?;
    Ok(with_aliases(v, &aliases_of(c, name)?))
}

/// The version a reference points at now.
pub fn resolve(c: &Connection, uri: &ModelUri) -> Result<Version> {
    match &uri.selector {
        Selector::Version(v) => version(c, &uri.name, *v),
        Selector::Alias(a) => {
            let m = get(c, &uri.name)?;
            let v = m.aliases.get(a).ok_or_else(|| {
                Error::new(
                    crate::error::Code::Unavailable,
                    format!("no version of model `{}` has the alias `{a}`; promote one first", uri.name),
                )
            })?;
            version(c, &uri.name, *v)
        }
    }
}

/// Register a version (creating the model on first use). A retry of the same task with the same
/// file gets the version it registered before.
pub fn register(tx: &Transaction, n: &NewVersion, now: i64) -> Result<Version> {
    check_name(&n.model)?;
    if let (Some(run), Some(task)) = (n.run_id, &n.task_id) {
        let found: Option<i64> = tx
            .query_row(
                "SELECT version FROM model_versions WHERE model = ?1 AND run_id = ?2 AND task_id = ?3 \
                 AND map_index = ?4 AND sha256 = ?5",
                params![n.model, run, task, n.map_index, n.sha256],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(v) = found {
            return version(tx, &n.model, v);
        }
    }
    tx.execute(
        "INSERT INTO models (name, created_at, updated_at) VALUES (?1, ?2, ?2) \
         ON CONFLICT (name) DO UPDATE SET updated_at = excluded.updated_at",
        params![n.model, now],
    )?;
    let next: i64 =
        tx.query_row("SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE model = ?1", [&n.model], |r| {
            r.get(0)
        })?;
    let text = |v: &Value, empty: &str| if v.is_null() { empty.to_string() } else { v.to_string() };
    tx.execute(
        "INSERT INTO model_versions (model, version, sha256, kind, signature, metrics, blessed, evaluation, lineage, \
         description, tags, run_id, task_id, map_index, created_by, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            n.model,
            next,
            n.sha256,
            n.kind,
            text(&n.signature, "{}"),
            text(&n.metrics, "{}"),
            n.blessed.map(i64::from),
            (!n.evaluation.is_null()).then(|| n.evaluation.to_string()),
            text(&n.lineage, "{}"),
            n.description,
            text(&n.tags, "{}"),
            n.run_id,
            n.task_id,
            n.map_index,
            n.created_by,
            now,
        ],
    )?;
    version(tx, &n.model, next)
}

/// Point `alias` at `to` (None: remove the alias), recording who, when and why. Refuses an
/// archived or unknown version. Returns the move, or None if the alias already pointed there.
pub fn set_alias(
    tx: &Transaction,
    model: &str,
    alias: &str,
    to: Option<i64>,
    actor: &str,
    reason: &str,
    now: i64,
) -> Result<Option<AliasMove>> {
    check_alias(alias)?;
    let m = get(tx, model)?;
    if let Some(v) = to {
        let ver = version(tx, model, v)?;
        if ver.archived {
            return Err(Error::conflict(format!(
                "version {v} of `{model}` is archived and cannot take an alias; unarchive it first"
            )));
        }
    }
    let from = m.aliases.get(alias).copied();
    if from == to {
        return Ok(None);
    }
    if to.is_none() && from.is_none() {
        return Err(Error::not_found(format!("model `{model}` has no alias `{alias}`")));
    }
    match to {
        Some(v) => tx.execute(
            "INSERT INTO model_aliases (model, alias, version, updated_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
            params![model, alias, v, now],
        )?,
        None => tx.execute("DELETE FROM model_aliases WHERE model = ?1 AND alias = ?2", params![model, alias])?,
    };
    let mv = AliasMove {
        model: model.to_string(),
        alias: alias.to_string(),
        from_version: from,
        to_version: to,
        actor: actor.to_string(),
        reason: reason.to_string(),
        at: now,
    };
    tx.execute(
        "INSERT INTO alias_history (model, alias, from_version, to_version, actor, reason, at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![mv.model, mv.alias, mv.from_version, mv.to_version, mv.actor, mv.reason, mv.at],
    )?;
    tx.execute("UPDATE models SET updated_at = ?2 WHERE name = ?1", params![model, now])?;
    Ok(Some(mv))
}

/// Archive (or bring back) a version. A version an alias points at cannot be archived.
pub fn set_archived(tx: &Transaction, model: &str, v: i64, archived: bool, now: i64) -> Result<Version> {
    let ver = version(tx, model, v)?;
    if archived && !ver.aliases.is_empty() {
        return Err(Error::conflict(format!(
            "version {v} of `{model}` holds the alias(es) {}; move them to another version before archiving",
            ver.aliases.join(", ")
        )));
    }
    tx.execute(
        "UPDATE model_versions SET archived_at = ?3 WHERE model = ?1 AND version = ?2",
        params![model, v, archived.then_some(now)],
    )?;
    version(tx, model, v)
}

const MOVE_COLS: &str = "model, alias, from_version, to_version, actor, reason, at";

fn move_row(r: &rusqlite::Row) -> rusqlite::Result<AliasMove> {
    Ok(AliasMove {
        model: r.get(0)?,
        alias: r.get(1)?,
        from_version: r.get(2)?,
        to_version: r.get(3)?,
        actor: r.get(4)?,
        reason: r.get(5)?,
        at: r.get(6)?,
    })
}

/// Alias moves, newest first (`alias` None: every alias of the model).
pub fn history(c: &Connection, model: &str, alias: Option<&str>, limit: u32) -> Result<Vec<AliasMove>> {
    get(c, model)?;
    let mut st = c.prepare(
        &format!("SELECT {MOVE_COLS} FROM alias_history WHERE model = ?1 AND (?2 IS NULL OR alias = ?2) ORDER BY at DESC, id DESC LIMIT ?3"),
    )?;
    let rows = st.query_map(params![model, alias, limit], move_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Which version the alias pointed at, at time `at` (µs): the last move at or before it.
pub fn alias_at(c: &Connection, model: &str, alias: &str, at: i64) -> Result<Option<AliasMove>> {
    get(c, model)?;
    Ok(c.query_row(
        &format!(
            "SELECT {MOVE_COLS} FROM alias_history WHERE model = ?1 AND alias = ?2 AND at <= ?3 \
             ORDER BY at DESC, id DESC LIMIT 1"
        ),
        params![model, alias, at],
        move_row,
    )
    .optional()?)
}

/// Every (model, alias, version) now: what serving loads at start.
pub fn all_aliases(c: &Connection) -> Result<Vec<(String, String, i64)>> {
    let mut st = c.prepare("SELECT model, alias, version FROM model_aliases ORDER BY model, alias")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, crate::store::Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::store::Store::open(&dir.path().join("t.db")).unwrap();
        (dir, s)
    }

    fn new(model: &str, sha: &str, run: Option<i64>) -> NewVersion {
        NewVersion {
            model: model.into(),
            sha256: sha.into(),
            kind: "wide_deep".into(),
            run_id: run,
            task_id: run.map(|_| "register".into()),
            map_index: -1,
            created_by: "test".into(),
            ..Default::default()
        }
    }

    #[test]
    fn uris_parse_and_refuse_ambiguity() {
        let p = |s: &str| ModelUri::parse(s);
        assert_eq!(p("taxi").unwrap().selector, Selector::Alias("production".into()));
        assert_eq!(p("models:/taxi@staging").unwrap().selector, Selector::Alias("staging".into()));
        assert_eq!(p("taxi/3").unwrap().selector, Selector::Version(3));
        assert!(p("taxi/x").unwrap_err().message.contains("must be a number"));
        assert!(p("taxi@3").is_err(), "an alias is never a number");
        assert!(p("../etc").is_err());
        assert_eq!(p("taxi/3").unwrap().to_string(), "taxi/3");
    }

    #[test]
    fn versions_count_aliases_move_with_history_and_archived_versions_refuse_them() {
        let (_d, s) = store();
        let v1 = s.write(|tx| register(tx, &new("taxi", "a", None), 10)).unwrap();
        let v2 = s.write(|tx| register(tx, &new("taxi", "b", None), 20)).unwrap();
        assert_eq!((v1.version, v2.version), (1, 2));
        let m1 = s.write(|tx| set_alias(tx, "taxi", "production", Some(1), "ann", "first", 100)).unwrap().unwrap();
        assert_eq!((m1.from_version, m1.to_version), (None, Some(1)));
        assert!(s.write(|tx| set_alias(tx, "taxi", "production", Some(1), "ann", "again", 150)).unwrap().is_none());
        s.write(|tx| set_alias(tx, "taxi", "production", Some(2), "bob", "better", 200)).unwrap();
        s.read(|c| {
            assert_eq!(alias_at(c, "taxi", "production", 99)?, None);
            assert_eq!(alias_at(c, "taxi", "production", 150)?.unwrap().to_version, Some(1));
            assert_eq!(alias_at(c, "taxi", "production", 200)?.unwrap().to_version, Some(2));
            let h = history(c, "taxi", Some("production"), 10)?;
            assert_eq!(h.len(), 2);
            assert_eq!((h[0].actor.as_str(), h[0].from_version), ("bob", Some(1)));
            assert_eq!(version(c, "taxi", 2)?.aliases, vec!["production"]);
            Ok(())
        })
        .unwrap();
        let e = s.write(|tx| set_archived(tx, "taxi", 2, true, 300)).unwrap_err();
        assert!(e.message.contains("holds the alias"), "{e}");
        s.write(|tx| set_archived(tx, "taxi", 1, true, 300)).unwrap();
        let e = s.write(|tx| set_alias(tx, "taxi", "production", Some(1), "ann", "", 400)).unwrap_err();
        assert!(e.message.contains("archived"), "{e}");
        let e = s.write(|tx| set_alias(tx, "taxi", "production", Some(9), "ann", "", 400)).unwrap_err();
        assert!(e.message.contains("no version 9"), "{e}");
        // The refused moves changed nothing.
        assert_eq!(s.read(|c| get(c, "taxi")).unwrap().aliases["production"], 2);
    }

    #[test]
    fn a_retried_register_task_gets_its_version_back() {
        let (_d, s) = store();
        let run = s
            .write(|tx| {
                tx.execute(
                    "INSERT INTO pipelines (name, yaml, spec_hash, created_at, updated_at) VALUES ('p', '', '', 0, 0)",
                    [],
                )?;
                tx.execute(
                    "INSERT INTO runs (pipeline, state, trigger, logical_date, params, yaml, spec_hash, created_at) \
                     VALUES ('p', 'running', 'manual', 0, '{}', '', '', 0)",
                    [],
                )?;
                Ok(Some(tx.last_insert_rowid()))
            })
            .unwrap();
        let a = s.write(move |tx| register(tx, &new("m", "x", run), 1)).unwrap();
        let b = s.write(move |tx| register(tx, &new("m", "x", run), 2)).unwrap();
        assert_eq!(a.version, b.version);
        let c = s.write(move |tx| register(tx, &new("m", "y", run), 3)).unwrap();
        assert_eq!(c.version, a.version + 1, "a different file is a new version");
    }
}
