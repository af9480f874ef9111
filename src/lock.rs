//! The data dir lock: one process at a time owns `mlbox.db`. The owner writes its HTTP address
//! into the lock file, so other mlbox commands on the same data dir talk to it over HTTP
//! instead of opening SQLite themselves; that is how "database is locked" never happens.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub pid: u32,
    pub addr: String,
    /// `serve`, or `cli` for a one-shot command that holds it for its own duration.
    pub kind: String,
    /// The server speaks HTTPS.
    #[serde(default)]
    pub tls: bool,
}

/// Held for the life of the owning process; the OS drops the lock if the process dies.
pub struct DataDirLock {
    file: File,
}

pub enum Acquire {
    Owned(DataDirLock),
    /// Another process owns the data dir; `None` if it has not published its address yet.
    HeldBy(Option<LockInfo>),
}

pub fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join("mlbox.lock")
}

pub fn acquire(data_dir: &Path) -> std::io::Result<Acquire> {
    std::fs::create_dir_all(data_dir)?;
    let path = lock_path(data_dir);
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(Acquire::Owned(DataDirLock { file })),
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            file.read_to_string(&mut text)?;
            Ok(Acquire::HeldBy(serde_json::from_str(&text).ok()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

impl DataDirLock {
    /// Publish who holds the lock and where to reach it.
    pub fn publish(&mut self, info: &LockInfo) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(serde_json::to_string(info).unwrap_or_default().as_bytes())?;
        self.file.sync_data()
    }
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}
