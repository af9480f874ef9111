//! Keeping a data dir: consistent backups while the server runs, restoring one into a data dir,
//! and retention — deleting old runs with their logs, checkpoints and the artifact files nobody
//! references any more.
//!
//! A backup is a tar file: `mlbox.db` copied with SQLite's online backup API (one consistent
//! snapshot, taken while writers go on), then the content-addressed `artifacts/`, `logs/` and
//! `checkpoints/`, and `MANIFEST.json`. Artifacts are immutable and only retention deletes them,
//! and retention waits while a backup runs, so every file the snapshot references is in the
//! archive. The search index is left out: it is rebuilt on the first start after a restore.

use std::io::{BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};
use serde::Serialize;
use serde_json::json;

use crate::app::App;
use crate::config::Retention;
use crate::error::{Error, Result};
use crate::store::now_us;

/// A finished backup archive in the data dir's `tmp/`, ready to send.
pub struct Backup {
    pub path: PathBuf,
    pub bytes: u64,
    pub files: usize,
}

/// What went into the archive besides the database.
const DIRS: [&str; 3] = ["artifacts", "logs", "checkpoints"];

/// Write a backup of `app`'s data dir (blocking; safe while runs go on).
pub fn backup(app: &App) -> Result<Backup> {
    let _only = app.maintenance.lock().map_err(Error::internal)?;
    let data = &app.config.data_dir;
    let work = data.join("tmp").join(format!("backup-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&work)?;
    let db = work.join("mlbox.db");
    {
        let src = Connection::open_with_flags(data.join("mlbox.db"), OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut dst = Connection::open(&db)?;
        // All pages in one step (-1): one read transaction, so one consistent snapshot.
        let b = rusqlite::backup::Backup::new(&src, &mut dst)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match b.step(-1)? {
                rusqlite::backup::StepResult::Done => break,
                _ if std::time::Instant::now() > deadline => {
                    return Err(Error::new(
                        crate::error::Code::Unavailable,
                        "the database stayed busy for 60 s; retry",
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    let (schema, runs): (i64, i64) = {
        let c = Connection::open(&db)?;
        // The copy is a rollback-journal database, self-contained in one file.
        c.pragma_update(None, "journal_mode", "DELETE")?;
        (
            c.pragma_query_value(None, "user_version", |r| r.get(0))?,
            c.query_row("SELECT count(*) FROM runs", [], |r| r.get(0))?,
        )
    };
    let path = work.join("backup.tar");
    let mut tar = tar::Builder::new(BufWriter::new(std::fs::File::create(&path)?));
    let mut files = 0;
    append_file(&mut tar, &db, "mlbox.db")?;
    for dir in DIRS {
        files += append_tree(&mut tar, &data.join(dir), dir)?;
    }
    let manifest = json!({
        "format": "mlbox-backup/1",
        "mlbox": env!("CARGO_PKG_VERSION"),
        "schema": schema,
        "created_at": now_us(),
        "runs": runs,
        "files": files,
    });
    let text = serde_json::to_vec_pretty(&manifest).map_err(Error::internal)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_mtime((now_us() / 1_000_000) as u64);
    tar.append_data(&mut header, "MANIFEST.json", text.as_slice())?;
    tar.into_inner()?.flush()?;
    std::fs::remove_file(&db)?;
    let bytes = std::fs::metadata(&path)?.len();
    Ok(Backup { path, bytes, files: files + 1 })
}

/// One file, exactly as long as it was when we looked (a log that grows meanwhile is cut there).
fn append_file<W: Write>(tar: &mut tar::Builder<W>, path: &Path, name: &str) -> Result<()> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let mut header = tar::Header::new_gnu();
    header.set_metadata(&meta);
    header.set_size(meta.len());
    tar.append_data(&mut header, name, file.take(meta.len()))?;
    Ok(())
}

/// Every regular file under `dir` (symlinks are never followed), as `name/...`.
fn append_tree<W: Write>(tar: &mut tar::Builder<W>, dir: &Path, name: &str) -> Result<usize> {
    let mut n = 0;
    let mut stack = vec![(dir.to_path_buf(), name.to_string())];
    while let Some((d, prefix)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let child = format!("{prefix}/{}", e.file_name().to_string_lossy());
            if ft.is_dir() {
                stack.push((e.path(), child));
            } else if ft.is_file() {
                match append_file(tar, &e.path(), &child) {
                    Ok(()) => n += 1,
                    // A checkpoint replaced or removed while we walked: it was never needed.
                    Err(_) if !e.path().exists() => {}
                    Err(err) => return Err(err),
                }
            }
        }
    }
    Ok(n)
}

#[derive(Debug, Serialize)]
pub struct Restored {
    pub runs: i64,
    pub model_versions: i64,
    pub files: usize,
    /// Where the data dir's previous contents were moved (with `--force`).
    pub set_aside: Option<PathBuf>,
}

/// Restore `archive` into `data_dir`, which no process may be using. The archive is unpacked
/// beside the data and checked (SQLite integrity, schema version) before anything is replaced;
/// existing data is refused unless `force`, which moves it aside instead of deleting it.
pub fn restore(archive: &Path, data_dir: &Path, force: bool) -> anyhow::Result<Restored> {
    use anyhow::{Context, bail};
    let _lock = match crate::lock::acquire(data_dir)? {
        crate::lock::Acquire::Owned(l) => l,
        crate::lock::Acquire::HeldBy(info) => {
            let who = info.map(|i| format!(" (mlbox {} at {})", i.kind, i.addr)).unwrap_or_default();
            bail!("data dir {} is in use{who}: stop the server before restoring", data_dir.display());
        }
    };
    let has_data = ["mlbox.db", "artifacts", "logs", "checkpoints"].iter().any(|n| data_dir.join(n).exists());
    if has_data && !force {
        bail!(
            "data dir {} already holds data: restore into an empty directory, or pass --force to move the \
             current data aside (nothing is deleted)",
            data_dir.display()
        );
    }
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    let staging = data_dir.join(format!("restore-{stamp}"));
    std::fs::create_dir_all(&staging)?;
    let unpacked = (|| -> anyhow::Result<usize> {
        let file = std::fs::File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
        let mut tar = tar::Archive::new(file);
        let mut files = 0;
        for entry in tar.entries().context("not a tar archive")? {
            let mut entry = entry.context("the archive is damaged")?;
            let path = entry.path()?.into_owned();
            let safe = path.components().all(|c| matches!(c, Component::Normal(_)));
            let top = path.components().next().map(|c| c.as_os_str().to_string_lossy().to_string());
            let known = matches!(top.as_deref(), Some("mlbox.db" | "MANIFEST.json"))
                || DIRS.contains(&top.as_deref().unwrap_or(""));
            if !safe || !known || !entry.header().entry_type().is_file() {
                bail!("{} is not an mlbox backup: unexpected entry {}", archive.display(), path.display());
            }
            entry.unpack_in(&staging)?;
            files += 1;
        }
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(staging.join("MANIFEST.json")).context("the archive has no MANIFEST.json")?,
        )?;
        if manifest["format"] != "mlbox-backup/1" {
            bail!("{} is not an mlbox backup (format {})", archive.display(), manifest["format"]);
        }
        let c = Connection::open_with_flags(staging.join("mlbox.db"), OpenFlags::SQLITE_OPEN_READ_ONLY)
            .context("the archive has no database")?;
        let check: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if check != "ok" {
            bail!("the database in {} is damaged: {check}", archive.display());
        }
        let schema: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if schema as usize > crate::store::schema_version() {
            bail!("the backup was made by a newer mlbox (schema {schema}); upgrade mlbox to restore it");
        }
        Ok(files)
    })();
    let files = match unpacked {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let mut set_aside = None;
    if has_data {
        let aside = data_dir.join(format!("before-restore-{stamp}"));
        std::fs::create_dir_all(&aside)?;
        for name in ["mlbox.db", "mlbox.db-wal", "mlbox.db-shm", "artifacts", "logs", "checkpoints", "search"] {
            let p = data_dir.join(name);
            if p.exists() {
                std::fs::rename(&p, aside.join(name))?;
            }
        }
        set_aside = Some(aside);
    }
    let _ = std::fs::remove_dir_all(data_dir.join("search"));
    // A write-ahead log without its database would be replayed onto the restored one.
    for stray in ["mlbox.db-wal", "mlbox.db-shm"] {
        let _ = std::fs::remove_file(data_dir.join(stray));
    }
    for name in ["mlbox.db", "artifacts", "logs", "checkpoints"] {
        let p = staging.join(name);
        if p.exists() {
            std::fs::rename(&p, data_dir.join(name))?;
        }
    }
    std::fs::remove_dir_all(&staging)?;
    let c = Connection::open(data_dir.join("mlbox.db"))?;
    let runs = c.query_row("SELECT count(*) FROM runs", [], |r| r.get(0))?;
    let model_versions = c.query_row("SELECT count(*) FROM model_versions", [], |r| r.get(0)).unwrap_or(0);
    Ok(Restored { runs, model_versions, files, set_aside })
}

/// What a deletion or a collection freed.
#[derive(Debug, Default, Serialize)]
pub struct Freed {
    pub runs: Vec<i64>,
    pub artifact_files: usize,
    pub log_files: usize,
    pub bytes: u64,
    /// With `dry_run`: nothing was deleted, this is what would be.
    pub dry_run: bool,
}

const FINISHED: &str = "('success', 'failed', 'cancelled')";

/// Content addresses still referenced by a row.
const REFERENCED: &str = "SELECT sha256 FROM artifacts WHERE sha256 = ?1
     UNION ALL SELECT sha256 FROM datasets WHERE sha256 = ?1
     UNION ALL SELECT sha256 FROM model_versions WHERE sha256 = ?1
     UNION ALL SELECT artifact FROM experiments WHERE artifact = ?1 LIMIT 1";

/// Files under `dir` and their total size (symlinks are not followed).
pub fn tree_size(dir: &Path) -> (usize, u64) {
    let Ok(rd) = std::fs::read_dir(dir) else { return (0, 0) };
    rd.flatten().fold((0, 0), |(n, b), e| match e.file_type() {
        Ok(t) if t.is_dir() => {
            let (n2, b2) = tree_size(&e.path());
            (n + n2, b + b2)
        }
        Ok(_) => (n + 1, b + e.metadata().map(|m| m.len()).unwrap_or(0)),
        Err(_) => (n, b),
    })
}

/// Delete finished runs with their logs, checkpoints and the artifact files only they used.
/// A run that is still active, or whose model was registered, is refused.
pub fn delete_runs(app: &App, ids: &[i64], dry_run: bool) -> Result<Freed> {
    let _only = app.maintenance.lock().map_err(Error::internal)?;
    // No task stores files while some are deleted (see `artifacts::STORE_LOCK`).
    let _store = crate::artifacts::STORE_LOCK.write().map_err(Error::internal)?;
    let data = &app.config.data_dir;
    let mut freed = Freed { dry_run, ..Default::default() };
    for &id in ids {
        let (state, registered): (String, i64) = app
            .store
            .read(|c| {
                Ok(c.query_row(&format!("SELECT state, {REGISTERED} FROM runs WHERE id = ?1"), [id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?)
            })
            .map_err(|_| Error::not_found(format!("no run {id}")))?;
        if !matches!(state.as_str(), "success" | "failed" | "cancelled") {
            return Err(Error::conflict(format!("run {id} is {state}: cancel it or let it finish before deleting it")));
        }
        if registered > 0 {
            return Err(Error::conflict(format!(
                "run {id} trained a registered model version and is kept as its lineage"
            )));
        }
        let shas: Vec<String> = app.store.read(|c| {
            let mut st = c.prepare(
                "SELECT sha256 FROM artifacts WHERE run_id = ?1
                 UNION SELECT artifact FROM experiments WHERE run_id = ?1 AND artifact IS NOT NULL",
            )?;
            let rows = st.query_map([id], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(rows)
        })?;
        let logs = data.join("logs").join(format!("run-{id}"));
        let checkpoints = data.join("checkpoints").join(format!("run-{id}"));
        let (n, b) = tree_size(&logs);
        freed.log_files += n;
        freed.bytes += b + tree_size(&checkpoints).1;
        if !dry_run {
            // Checked again in the deleting statement: a resume in between keeps the run.
            let deleted = app.store.write(move |tx| {
                Ok(tx.execute(
                    &format!("DELETE FROM runs WHERE id = ?1 AND state IN {FINISHED} AND {REGISTERED} = 0"),
                    [id],
                )?)
            })?;
            if deleted == 0 {
                return Err(Error::conflict(format!("run {id} changed while it was being deleted; it is kept")));
            }
            app.search.update(crate::search::Item::DeleteRun(id));
            let _ = std::fs::remove_dir_all(&logs);
            let _ = std::fs::remove_dir_all(&checkpoints);
        }
        for sha in shas {
            if !crate::artifacts::is_sha256(&sha) {
                continue;
            }
            // Still used by another run, a dataset or a model (before deletion, this run counts once).
            let uses: i64 = app.store.read(|c| {
                Ok(c.query_row(
                    "SELECT (SELECT count(*) FROM artifacts WHERE sha256 = ?1 AND run_id != ?2)
                          + (SELECT count(*) FROM datasets WHERE sha256 = ?1)
                          + (SELECT count(*) FROM model_versions WHERE sha256 = ?1)
                          + (SELECT count(*) FROM experiments WHERE artifact = ?1 AND run_id != ?2)",
                    params![sha, id],
                    |r| r.get(0),
                )?)
            })?;
            if uses > 0 {
                continue;
            }
            let path = crate::artifacts::path_of(data, &sha);
            if let Ok(m) = std::fs::metadata(&path) {
                freed.artifact_files += 1;
                freed.bytes += m.len();
                if !dry_run {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        freed.runs.push(id);
    }
    Ok(freed)
}

/// How many model versions a run (`?1` or the outer `runs.id`) trained or registered, by the
/// version's `run_id` or the run named in its lineage.
const REGISTERED: &str = "(SELECT count(*) FROM model_versions v
      WHERE v.run_id = runs.id OR json_extract(v.lineage, '$.run_id') = runs.id)";

/// The runs retention would delete: finished, no registered model, beyond the newest
/// `keep_runs` of their pipeline and older than `keep_days` (each rule keeps what it names).
pub fn expired(app: &App, r: &Retention) -> Result<Vec<i64>> {
    if r.keep_runs.is_none() && r.keep_days.is_none() {
        return Ok(Vec::new());
    }
    let keep_runs = r.keep_runs.map(i64::from).unwrap_or(0);
    let cutoff = r.keep_days.map(|d| now_us() - i64::from(d) * 86_400_000_000).unwrap_or(i64::MAX);
    app.store.read(|c| {
        let mut st = c.prepare(&format!(
            "SELECT id FROM (
                 SELECT id, state, created_at,
                        row_number() OVER (PARTITION BY pipeline ORDER BY id DESC) AS newest
                 FROM runs)
             WHERE newest > ?1 AND created_at < ?2 AND state IN {FINISHED}
               AND id NOT IN (SELECT run_id FROM model_versions WHERE run_id IS NOT NULL)
               AND id NOT IN (SELECT json_extract(lineage, '$.run_id') FROM model_versions
                              WHERE json_extract(lineage, '$.run_id') IS NOT NULL)
             ORDER BY id"
        ))?;
        let ids = st.query_map(params![keep_runs, cutoff], |r| r.get(0))?.collect::<rusqlite::Result<Vec<i64>>>()?;
        Ok(ids)
    })
}

/// Apply retention, then remove artifact files no row references (older than an hour, so a
/// task's freshly stored files are never raced).
pub fn gc(app: &App, dry_run: bool) -> Result<Freed> {
    let ids = expired(app, &app.config.retention)?;
    let mut freed = delete_runs(app, &ids, dry_run)?;
    freed.dry_run = dry_run;
    let _only = app.maintenance.lock().map_err(Error::internal)?;
    let _store = crate::artifacts::STORE_LOCK.write().map_err(Error::internal)?;
    let root = app.config.data_dir.join("artifacts").join("sha256");
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for shard in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(shard.path()).into_iter().flatten().flatten() {
            let sha = f.file_name().to_string_lossy().to_string();
            let Ok(meta) = f.metadata() else { continue };
            if !crate::artifacts::is_sha256(&sha) || meta.modified().map(|m| m > hour_ago).unwrap_or(true) {
                continue;
            }
            let s = sha.clone();
            let used = app.store.read(move |c| {
                use rusqlite::OptionalExtension;
                Ok(c.query_row(REFERENCED, [&s], |_| Ok(())).optional()?.is_some())
            })?;
            if !used {
                freed.artifact_files += 1;
                freed.bytes += meta.len();
                if !dry_run {
                    std::fs::remove_file(f.path())?;
                }
            }
        }
    }
    Ok(freed)
}
