//! Task logs: one file per attempt under `logs/`, plus a broadcast of each chunk so HTTP
//! clients can follow a log live (Server-Sent Events) without polling the file.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

/// Which attempt's log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogKey {
    pub run_id: i64,
    pub task_id: String,
    pub map_index: i64,
    pub try_number: u32,
}

impl LogKey {
    /// `logs/run-7/train/try-1.log`, or `logs/run-7/fetch.3/try-1.log` for foreach item 3.
    pub fn path(&self, logs_dir: &Path) -> PathBuf {
        let task =
            if self.map_index >= 0 { format!("{}.{}", self.task_id, self.map_index) } else { self.task_id.clone() };
        logs_dir.join(format!("run-{}", self.run_id)).join(task).join(format!("try-{}.log", self.try_number))
    }
}

/// A piece of a log as it was written; `eof` marks the end of the attempt.
#[derive(Debug, Clone)]
pub struct LogChunk {
    pub key: LogKey,
    pub offset: u64,
    pub bytes: Arc<[u8]>,
    pub eof: bool,
}

#[derive(Clone)]
pub struct LogHub {
    dir: PathBuf,
    tx: broadcast::Sender<LogChunk>,
}

impl LogHub {
    pub fn new(dir: PathBuf) -> LogHub {
        let (tx, _) = broadcast::channel(4096);
        LogHub { dir, tx }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LogChunk> {
        self.tx.subscribe()
    }

    /// The log of one attempt. The file is created on the first write, so a task that logs
    /// nothing costs no file system work.
    pub fn sink(&self, key: LogKey) -> LogSink {
        let path = key.path(&self.dir);
        LogSink { inner: Arc::new(Mutex::new(Inner { file: None, path, offset: 0 })), key, tx: self.tx.clone() }
    }
}

struct Inner {
    file: Option<File>,
    path: PathBuf,
    offset: u64,
}

impl Inner {
    fn file(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
            self.offset = f.metadata()?.len();
            self.file = Some(f);
        }
        Ok(self.file.as_mut().expect("just opened"))
    }
}

/// Where an op writes its log; cheap to clone, safe to share between threads.
#[derive(Clone)]
pub struct LogSink {
    inner: Arc<Mutex<Inner>>,
    key: LogKey,
    tx: broadcast::Sender<LogChunk>,
}

impl LogSink {
    pub fn write_bytes(&self, bytes: &[u8]) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        match inner.file().and_then(|f| f.write_all(bytes)) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(path = %inner.path.display(), error = %e, "Cannot write a task log");
                return;
            }
        }
        let offset = inner.offset;
        inner.offset += bytes.len() as u64;
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(LogChunk { key: self.key.clone(), offset, bytes: Arc::from(bytes), eof: false });
        }
    }

    pub fn line(&self, text: &str) {
        let mut s = String::with_capacity(text.len() + 1);
        s.push_str(text);
        s.push('\n');
        self.write_bytes(s.as_bytes());
    }

    /// The attempt is over: followers stop after this.
    pub fn finish(&self) {
        let offset = self.inner.lock().map(|i| i.offset).unwrap_or(0);
        let _ = self.tx.send(LogChunk { key: self.key.clone(), offset, bytes: Arc::from(&[][..]), eof: true });
    }
}
