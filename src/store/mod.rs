//! The SQLite metadata store: one writer thread with a queue, a small pool of readers, migrations.
//!
//! Only the process that holds the data dir lock opens this store, so SQLite never sees two
//! writers. The writer groups queued jobs into one transaction (each job in its own savepoint, so
//! each stays all-or-nothing) and answers each job only after the commit: a caller that got `Ok`
//! knows its change is in the WAL.

pub mod experiments;
pub mod pipelines;
pub mod runs;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, Transaction};

use crate::error::{Error, Result};

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_datasets.sql"),
    include_str!("migrations/0003_tracking.sql"),
    include_str!("migrations/0004_registry.sql"),
    include_str!("migrations/0005_datasets_by_run.sql"),
    include_str!("migrations/0006_auth.sql"),
];
const READERS: usize = 4;
const MAX_BATCH: usize = 128;

/// A queued write: runs on the writer thread, says whether it succeeded, and hands back the reply
/// to send once the transaction's fate is known (`Some(reason)` if the commit failed).
type Reply = Box<dyn FnOnce(Option<String>) + Send>;
type Job = Box<dyn FnOnce(&Transaction) -> (bool, Reply) + Send>;

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    readers: Mutex<Vec<Connection>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Microseconds since the Unix epoch: the store's one time unit.
pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

fn open_conn(path: &Path, write: bool) -> rusqlite::Result<Connection> {
    let flags = if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    // busy_timeout first so even the pragmas below wait instead of failing.
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    if write {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Apply every migration newer than the file's `user_version`, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<usize> {
    let current: usize = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    let mut applied = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        applied += 1;
    }
    Ok(applied)
}

/// The schema version this binary writes.
pub fn schema_version() -> usize {
    MIGRATIONS.len()
}

impl Store {
    /// Open (creating if needed) the database file, migrate it and start the writer thread.
    pub fn open(path: &Path) -> Result<Store> {
        let mut conn =
            open_conn(path, true).map_err(|e| Error::internal(format!("cannot open {}: {e}", path.display())))?;
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found as usize > MIGRATIONS.len() {
            return Err(Error::conflict(format!(
                "{} was written by a newer mlbox (schema {found}, this binary knows {}): upgrade mlbox",
                path.display(),
                MIGRATIONS.len()
            )));
        }
        let applied = migrate(&mut conn)?;
        if applied > 0 {
            tracing::info!(applied, path = %path.display(), "Applied migrations");
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let handle = std::thread::Builder::new()
            .name("mlbox-db-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(Error::internal)?;
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Mutex::new(Some(tx)),
                readers: Mutex::new(Vec::new()),
                writer_thread: Mutex::new(Some(handle)),
            }),
        })
    }

    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<T> + Send + 'static,
        reply: impl FnOnce(Result<T>) + Send + 'static,
    ) -> Result<()> {
        let job: Job = Box::new(move |tx| {
            let result = f(tx);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |commit_error| match commit_error {
                None => reply(result),
                Some(e) => reply(Err(Error::internal(format!("commit failed: {e}")))),
            });
            (ok, reply)
        });
        let closed = || Error::new(crate::error::Code::Unavailable, "the store is shutting down; retry shortly");
        let guard = self.inner.writer.lock().map_err(Error::internal)?;
        match guard.as_ref() {
            Some(sender) => sender.send(job).map_err(|_| closed()),
            None => Err(closed()),
        }
    }

    /// Run `f` in a write transaction on the writer thread and wait for the commit (blocking).
    pub fn write<T: Send + 'static>(&self, f: impl FnOnce(&Transaction) -> Result<T> + Send + 'static) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(f, move |r| {
            let _ = tx.send(r);
        })?;
        rx.recv().map_err(|_| Error::internal("writer thread stopped"))?
    }

    /// Queue a write without waiting for it. Writes commit in the order they were queued, so a
    /// later write that is waited on implies this one is durable too; failures are logged.
    pub fn write_nowait(&self, f: impl FnOnce(&Transaction) -> Result<()> + Send + 'static) {
        let submitted = self.submit(f, |r| {
            if let Err(e) = r {
                tracing::error!(error = %e, "A queued store write failed");
            }
        });
        if let Err(e) = submitted {
            tracing::error!(error = %e, "A store write could not be queued");
        }
    }

    /// Run `f` on a pooled read-only connection (blocking; cheap for indexed queries).
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.inner.readers.lock().map_err(Error::internal)?.pop();
        let conn = match conn {
            Some(c) => c,
            None => open_conn(&self.inner.path, false)?,
        };
        let out = f(&conn);
        let mut pool = self.inner.readers.lock().map_err(Error::internal)?;
        if pool.len() < READERS {
            pool.push(conn);
        }
        out
    }

    /// Stop the writer after it drains its queue; later writes fail with `unavailable`.
    pub fn close(&self) {
        if let Ok(mut w) = self.inner.writer.lock() {
            w.take();
        }
        if let Some(h) = self.inner.writer_thread.lock().ok().and_then(|mut h| h.take()) {
            let _ = h.join();
        }
        if let Ok(mut r) = self.inner.readers.lock() {
            r.clear();
        }
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        run_batch(&mut conn, batch);
    }
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
}

/// Each job runs inside a savepoint of one shared transaction, so a failed job rolls back alone.
/// Replies wait for the commit: nobody hears "done" for a change that is not yet in the WAL.
fn run_batch(conn: &mut Connection, batch: Vec<Job>) {
    let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!(error = %e, "Cannot begin a write transaction");
            return;
        }
    };
    for job in batch {
        if let Err(e) = tx.execute_batch("SAVEPOINT job") {
            tracing::error!(error = %e, "Cannot open a savepoint");
            continue;
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&tx))) {
            Ok((ok, reply)) => {
                let sql = if ok { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
                if let Err(e) = tx.execute_batch(sql) {
                    tracing::error!(error = %e, "Cannot close a savepoint");
                }
                replies.push(reply);
            }
            Err(_) => {
                tracing::error!("A store write panicked; its changes were rolled back");
                let _ = tx.execute_batch("ROLLBACK TO job; RELEASE job");
            }
        }
    }
    let commit_error = tx.commit().err().map(|e| e.to_string());
    if let Some(e) = &commit_error {
        tracing::error!(error = %e, "Commit failed");
    }
    for reply in replies {
        reply(commit_error.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_from_an_empty_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut conn = Connection::open(&path).unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), MIGRATIONS.len());
        assert_eq!(migrate(&mut conn).unwrap(), 0, "a second open applies nothing");
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v as usize, schema_version());
        for table in ["pipelines", "runs", "task_instances", "task_attempts", "artifacts", "datasets"] {
            let n: i64 =
                conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = ?1", [table], |r| r.get(0)).unwrap();
            assert_eq!(n, 1, "{table} exists");
        }
    }

    #[test]
    fn writer_commits_in_order_and_a_failed_job_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("w.db")).unwrap();
        store.write(|tx| Ok(tx.execute_batch("CREATE TABLE t (v INTEGER UNIQUE)")?)).unwrap();
        for i in 0..50 {
            store.write_nowait(move |tx| Ok(tx.execute("INSERT INTO t VALUES (?1)", [i]).map(|_| ())?));
        }
        let dup = store.write(|tx| Ok(tx.execute("INSERT INTO t VALUES (7)", []).map(|_| ())?));
        assert!(dup.is_err(), "a unique violation is an error");
        let n: i64 = store.write(|tx| Ok(tx.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).unwrap();
        assert_eq!(n, 50);
        store.close();
        assert!(store.write(|_| Ok(())).is_err(), "writes after close fail clearly");
    }
}
