//! Content-addressed artifact files: `artifacts/sha256/ab/abcdef…`. A file is hashed where the
//! task left it (inside the data dir) and moved into place with a rename, so a reader never sees
//! a half-written artifact.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub struct Stored {
    /// Path relative to the task's artifacts dir, with `/` separators.
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// A well-formed content address: 64 lowercase hex digits (so it can never name another path).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where the content with this hash lives.
pub fn path_of(data_dir: &Path, sha256: &str) -> PathBuf {
    data_dir.join("artifacts").join("sha256").join(&sha256[..2.min(sha256.len())]).join(sha256)
}

/// The SHA-256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    hash_file(path).map(|(h, _)| h)
}

fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((h.finalize().iter().map(|b| format!("{b:02x}")).collect(), size))
}

/// Held shared while files move into the store and their rows are written, and exclusively while
/// files are deleted from it (`maintenance`), so a file is never deleted between the two.
pub static STORE_LOCK: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Move every regular file under `dir` into the content store; returns what was stored. Hold
/// [`STORE_LOCK`] (shared) until the rows naming them are written.
pub fn collect(dir: &Path, data_dir: &Path) -> std::io::Result<Vec<Stored>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let ft = entry.file_type()?;
            let path = entry.path();
            if ft.is_dir() {
                stack.push(path);
                continue;
            }
            if !ft.is_file() {
                continue; // symlinks could point anywhere: never follow them into the store
            }
            let (sha256, size) = hash_file(&path)?;
            let dest = path_of(data_dir, &sha256);
            if !dest.exists() {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::rename(&path, &dest)?;
            }
            // A rename keeps the file's old time; `gc` spares files stored in the last hour.
            let _ = std::fs::File::open(&dest).and_then(|f| f.set_modified(std::time::SystemTime::now()));
            let name = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            out.push(Stored { name, sha256, size });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
